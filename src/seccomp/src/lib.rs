//! Seccomp profiles for LuminaGuard sandboxes.
//!
//! A profile is data: fragments in seccompiler's JSON format (`profiles/<fragment>.json`), each
//! mapping filter names to filters. A profile lists its fragments; rules of filters with the same
//! name are concatenated (their actions must agree), so the network rules are one fragment per
//! network mode instead of a copy of everything else:
//!
//! | profile | fragments |
//! | --- | --- |
//! | `default` | `base`, the architecture's fragment, `net-none` (only `AF_UNIX` sockets) |
//! | `network` | `base`, the architecture's fragment, `net-egress` (`AF_UNIX`; `AF_INET`/`AF_INET6` stream and datagram) |
//!
//! The `deny` filter is an allowlist: a call it does not list, or lists with arguments that do
//! not match, gets EPERM — so every system call the kernel has or will have is denied unless
//! allowed on purpose. `base` lists what both supported architectures have; `x86_64` adds that
//! architecture's legacy calls (`open`, `fork`, `chmod`, …), which aarch64 never had.
//!
//! Every filter of a profile is installed, in name order; the kernel runs them all and the
//! strictest answer wins, which lets one profile give different errnos to different syscalls
//! (EPERM for what is forbidden, ENOSYS for `clone3` and `openat2` so libc falls back to the
//! filterable `clone` and `openat`).
//!
//! Profiles are compiled once, in the parent, with [`Profile::load`]; [`Profile::apply`] only
//! makes the `prctl`/`seccomp` system calls, so it is safe to call in a forked child before
//! `exec` (e.g. from `CommandExt::pre_exec`).

pub mod audit;
mod format;
mod names;
pub mod record;

use std::collections::BTreeMap;
use std::os::fd::{FromRawFd, OwnedFd};

use seccompiler::{BpfProgram, TargetArch};

use crate::format::Filter;

/// Profile fragments, compiled into the binary from `profiles/`.
const FRAGMENTS: &[(&str, &str)] = &[
    ("base", include_str!("../profiles/base.json")),
    ("x86_64", include_str!("../profiles/x86_64.json")),
    ("net-none", include_str!("../profiles/net-none.json")),
    ("net-egress", include_str!("../profiles/net-egress.json")),
];

/// Built-in profiles and their fragments, on every architecture.
const PROFILES: &[(&str, &[&str])] = &[
    ("default", &["base", "net-none"]),
    ("network", &["base", "net-egress"]),
];

/// The fragment each architecture adds to every profile: its own legacy system calls.
const ARCH_FRAGMENTS: &[(TargetArch, &str)] = &[(TargetArch::x86_64, "x86_64")];

/// A built-in profile as one seccompiler document for `arch`: filters with the same name have
/// their rules concatenated, which is only allowed when their actions agree.
fn document(profile: &str, arch: TargetArch) -> Result<BTreeMap<String, Filter>, SeccompError> {
    let compile = |reason: String| SeccompError::Compile {
        profile: profile.to_owned(),
        reason,
    };
    let (_, fragments) = PROFILES
        .iter()
        .find(|(n, _)| *n == profile)
        .ok_or_else(|| SeccompError::Unknown(profile.to_owned()))?;
    let arch_fragment = ARCH_FRAGMENTS
        .iter()
        .filter(|(a, _)| *a == arch)
        .map(|(_, f)| *f);
    let mut merged: BTreeMap<String, Filter> = BTreeMap::new();
    for name in fragments.iter().copied().chain(arch_fragment) {
        let (_, text) = FRAGMENTS
            .iter()
            .find(|(n, _)| *n == name)
            .ok_or_else(|| compile(format!("no fragment {name:?}")))?;
        let filters: BTreeMap<String, Filter> =
            serde_json::from_str(text).map_err(|e| compile(format!("fragment {name}: {e}")))?;
        for (filter, body) in filters {
            match merged.get_mut(&filter) {
                None => {
                    merged.insert(filter, body);
                }
                Some(existing) => {
                    if existing.mismatch_action != body.mismatch_action
                        || existing.match_action != body.match_action
                    {
                        return Err(compile(format!(
                            "fragment {name}: filter {filter:?} has different actions"
                        )));
                    }
                    existing.filter.extend(body.filter);
                }
            }
        }
    }
    Ok(merged)
}

/// Errors loading or installing a profile.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// No built-in profile has that name.
    #[error("unknown seccomp profile {0:?} (built in: default, network)")]
    Unknown(String),
    /// The profile does not compile (bad JSON, unknown syscall name, bad condition).
    #[error("seccomp profile {profile:?} does not compile: {reason}")]
    Compile { profile: String, reason: String },
    /// The profile has no filters.
    #[error("seccomp profile {0:?} has no filters")]
    Empty(String),
    /// This architecture has no seccompiler support.
    #[error("seccomp is not supported on this architecture: {0}")]
    Arch(String),
    /// The kernel refused a filter.
    #[error("installing seccomp filter {filter:?} failed: {reason}")]
    Apply { filter: String, reason: String },
}

/// A compiled profile, ready to install.
#[derive(Debug, Clone)]
pub struct Profile {
    name: String,
    /// Filter name → BPF, installed in this (name) order.
    filters: BTreeMap<String, BpfProgram>,
    /// The first filter that answers EPERM, rewritten to notify a supervisor instead (see
    /// [`audit`]); installed in place of the original by [`Profile::apply_audited`].
    audited: Option<(String, Vec<libc::sock_filter>)>,
}

fn native_arch() -> Result<TargetArch, SeccompError> {
    TargetArch::try_from(std::env::consts::ARCH).map_err(|e| SeccompError::Arch(format!("{e:?}")))
}

/// `BPF_RET | BPF_K`: return the constant `k`.
const BPF_RET_K: u16 = 0x06;
const RET_EPERM: u32 = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;

/// `bpf` with every "return EPERM" turned into "notify the listener", if it has any.
fn notifying(bpf: &BpfProgram) -> Option<Vec<libc::sock_filter>> {
    let is_eperm = |i: &seccompiler::sock_filter| i.code == BPF_RET_K && i.k == RET_EPERM;
    bpf.iter().any(is_eperm).then(|| {
        bpf.iter()
            .map(|i| libc::sock_filter {
                code: i.code,
                jt: i.jt,
                jf: i.jf,
                k: if is_eperm(i) {
                    libc::SECCOMP_RET_USER_NOTIF
                } else {
                    i.k
                },
            })
            .collect()
    })
}

impl Profile {
    /// Compiles a built-in profile for this machine.
    pub fn load(name: &str) -> Result<Self, SeccompError> {
        Self::load_for(name, native_arch()?)
    }

    /// Compiles a built-in profile for `arch` (tests compile every supported architecture).
    fn load_for(name: &str, arch: TargetArch) -> Result<Self, SeccompError> {
        let json =
            serde_json::to_vec(&document(name, arch)?).map_err(|e| SeccompError::Compile {
                profile: name.to_owned(),
                reason: e.to_string(),
            })?;
        Self::from_json_for(name, &json, arch)
    }

    /// Compiles a profile from seccompiler JSON, for this machine.
    pub fn from_json(name: &str, json: &[u8]) -> Result<Self, SeccompError> {
        Self::from_json_for(name, json, native_arch()?)
    }

    fn from_json_for(name: &str, json: &[u8], arch: TargetArch) -> Result<Self, SeccompError> {
        let map =
            seccompiler::compile_from_json(json, arch).map_err(|e| SeccompError::Compile {
                profile: name.to_owned(),
                reason: e.to_string(),
            })?;
        if map.is_empty() || map.values().any(Vec::is_empty) {
            return Err(SeccompError::Empty(name.to_owned()));
        }
        let filters: BTreeMap<String, BpfProgram> = map.into_iter().collect();
        let audited = filters
            .iter()
            .find_map(|(f, bpf)| notifying(bpf).map(|n| (f.clone(), n)));
        Ok(Self {
            name: name.to_owned(),
            filters,
            audited,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Names of the built-in profiles.
    pub fn builtin_names() -> impl Iterator<Item = &'static str> {
        PROFILES.iter().map(|(n, _)| *n)
    }

    /// Sets `no_new_privs` and installs every filter on the calling thread, in name order:
    /// `deny`, then `enosys`. Two things rest on that order. Each filter is installed under the
    /// ones before it, so `deny` must allow `seccomp` and `prctl` (it does). And for a call both
    /// answer with an errno (`clone3`, `openat2`: EPERM from `deny`, ENOSYS from `enosys`), the
    /// kernel returns the newest filter's answer — ENOSYS, which makes libc fall back. Allocates
    /// nothing on success, so it may run between `fork` and `exec`.
    pub fn apply(&self) -> Result<(), SeccompError> {
        for (filter, bpf) in &self.filters {
            seccompiler::apply_filter(bpf).map_err(|e| SeccompError::Apply {
                filter: filter.clone(),
                reason: e.to_string(),
            })?;
        }
        Ok(())
    }
}

impl Profile {
    /// Like [`Profile::apply`], but the calls the profile denies with EPERM are reported to the
    /// returned listener, which a supervisor must serve ([`audit::supervise`]) — until it does,
    /// a denied call blocks. `None` when the profile denies nothing with EPERM. (`clone3` and
    /// `openat2` still get ENOSYS: an errno outranks a notification.)
    pub fn apply_audited(&self) -> Result<Option<OwnedFd>, SeccompError> {
        let mut listener = None;
        for (filter, bpf) in &self.filters {
            let apply_err = |reason: String| SeccompError::Apply {
                filter: filter.clone(),
                reason,
            };
            match &self.audited {
                Some((name, notify)) if name == filter => {
                    listener =
                        Some(install_with_listener(notify).map_err(|e| apply_err(e.to_string()))?);
                }
                _ => seccompiler::apply_filter(bpf).map_err(|e| apply_err(e.to_string()))?,
            }
        }
        Ok(listener)
    }
}

fn install_with_listener(bpf: &[libc::sock_filter]) -> std::io::Result<OwnedFd> {
    let len = u16::try_from(bpf.len()).map_err(|_| std::io::Error::other("filter too long"))?;
    let prog = libc::sock_fprog {
        len,
        filter: bpf.as_ptr().cast_mut(),
    };
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `prog` points at `bpf`, valid for the call; the kernel copies the program.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            libc::SECCOMP_FILTER_FLAG_NEW_LISTENER,
            &raw const prog,
        )
    };
    let fd = i32::try_from(fd).unwrap_or(-1);
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{Action, Rule};

    /// What no profile may ever allow, whatever its arguments (docs/seccomp.md).
    const NEVER: &[&str] = &[
        "ptrace",
        "process_vm_readv",
        "process_vm_writev",
        "kcmp",
        "pidfd_getfd",
        "process_madvise",
        "mount",
        "umount2",
        "pivot_root",
        "chroot",
        "fsopen",
        "fsconfig",
        "fsmount",
        "fspick",
        "move_mount",
        "open_tree",
        "mount_setattr",
        "unshare",
        "setns",
        "kexec_load",
        "kexec_file_load",
        "init_module",
        "finit_module",
        "delete_module",
        "create_module",
        "bpf",
        "perf_event_open",
        "keyctl",
        "add_key",
        "request_key",
        "io_uring_setup",
        "io_uring_enter",
        "io_uring_register",
        "userfaultfd",
        "reboot",
        "swapon",
        "swapoff",
        "acct",
        "quotactl",
        "quotactl_fd",
        "settimeofday",
        "clock_settime",
        "clock_adjtime",
        "adjtimex",
        "syslog",
        "vhangup",
        "iopl",
        "ioperm",
        "modify_ldt",
        "open_by_handle_at",
        "name_to_handle_at",
        "lookup_dcookie",
        "uselib",
        "fanotify_init",
        "fanotify_mark",
        "nfsservctl",
        "sethostname",
        "setdomainname",
        "mbind",
        "set_mempolicy",
        "get_mempolicy",
        "migrate_pages",
        "move_pages",
        "lsm_set_self_attr",
        // Answered ENOSYS by the `enosys` filter; the allowlist must not let them through.
        "clone3",
        "openat2",
    ];

    /// Calls the allowlist admits only with some arguments.
    const ARG_FILTERED: &[&str] = &[
        "clone",
        "ioctl",
        "socket",
        "socketpair",
        "personality",
        "chmod",
        "fchmod",
        "fchmodat",
        "fchmodat2",
        "open",
        "openat",
        "creat",
        "mknod",
        "mknodat",
    ];

    fn allowlist(profile: &str, arch: TargetArch) -> Vec<Rule> {
        let doc = document(profile, arch).unwrap();
        let deny = &doc["deny"];
        assert_eq!(deny.mismatch_action, Action::Errno(libc::EPERM as u32));
        assert_eq!(deny.match_action, Action::Allow);
        deny.filter.clone()
    }

    #[test]
    fn builtin_profiles_compile_for_every_supported_architecture() {
        for arch in [TargetArch::x86_64, TargetArch::aarch64] {
            for name in Profile::builtin_names() {
                let p = Profile::load_for(name, arch)
                    .unwrap_or_else(|e| panic!("{name} for {arch:?}: {e}"));
                assert_eq!(p.filters.keys().collect::<Vec<_>>(), ["deny", "enosys"]);
                // The allowlist's denials are what the audit rewrites to notifications.
                assert_eq!(p.audited.as_ref().map(|(f, _)| f.as_str()), Some("deny"));
            }
        }
        Profile::load("default").unwrap();
    }

    #[test]
    fn no_profile_allows_what_must_stay_denied() {
        for arch in [TargetArch::x86_64, TargetArch::aarch64] {
            for name in Profile::builtin_names() {
                for rule in allowlist(name, arch) {
                    assert!(
                        !NEVER.contains(&rule.syscall.as_str()),
                        "{name}: {} must never be allowed",
                        rule.syscall
                    );
                }
            }
        }
    }

    /// seccompiler drops a rule without conditions for a call that also has conditional rules,
    /// and a rule without conditions alone would allow every argument: either way, a filtered
    /// call must have only conditional rules.
    #[test]
    fn argument_filtered_calls_have_only_conditional_rules() {
        for name in Profile::builtin_names() {
            let rules = allowlist(name, TargetArch::x86_64);
            for call in ARG_FILTERED {
                let of_call: Vec<&Rule> = rules.iter().filter(|r| r.syscall == *call).collect();
                assert!(!of_call.is_empty(), "{name}: {call} is not allowed at all");
                assert!(
                    of_call.iter().all(|r| !r.args.is_empty()),
                    "{name}: {call} has a rule without conditions"
                );
            }
            for rule in &rules {
                assert!(
                    rule.args.is_empty() || ARG_FILTERED.contains(&rule.syscall.as_str()),
                    "{name}: {} has conditions: add it to ARG_FILTERED and the docs",
                    rule.syscall
                );
            }
        }
    }

    #[test]
    fn bad_profiles_are_refused_with_the_reason() {
        assert!(matches!(
            Profile::load("nope"),
            Err(SeccompError::Unknown(_))
        ));
        let typo = BTreeMap::from([(
            "f",
            Filter {
                mismatch_action: Action::Allow,
                match_action: Action::Errno(1),
                filter: vec![Rule {
                    syscall: "ptrace_typo".into(),
                    comment: None,
                    args: Vec::new(),
                }],
            },
        )]);
        let err = Profile::from_json("typo", &serde_json::to_vec(&typo).unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.contains("typo"), "{err}");
        let empty: BTreeMap<String, Filter> = BTreeMap::new();
        assert!(matches!(
            Profile::from_json("empty", &serde_json::to_vec(&empty).unwrap()),
            Err(SeccompError::Empty(_))
        ));
    }

    /// docs/seccomp.md names every call a fragment lists and every call that must stay denied.
    #[test]
    fn the_docs_name_every_call_the_profiles_decide() {
        let docs = include_str!("../../../docs/seccomp.md");
        for (fragment, json) in FRAGMENTS {
            let filters: BTreeMap<String, Filter> = serde_json::from_str(json).unwrap();
            for rule in filters.values().flat_map(|f| &f.filter) {
                let name = format!("`{}`", rule.syscall);
                assert!(docs.contains(&name), "{fragment}: document {name}");
            }
        }
        for call in NEVER {
            assert!(docs.contains(&format!("`{call}`")), "document {call}");
        }
    }

    #[test]
    fn fragments_are_parsed_strictly() {
        // A misspelt key must not silently drop a condition (which would widen the allowlist).
        let bad = r#"{"syscall": "ioctl", "arg": []}"#;
        assert!(serde_json::from_str::<Rule>(bad).is_err());
    }
}
