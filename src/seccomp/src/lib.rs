//! Seccomp profiles for LuminaGuard sandboxes.
//!
//! A profile is data: fragments in seccompiler's JSON format (`profiles/<fragment>.json`), each
//! mapping filter names to filters. A profile lists its fragments; rules of filters with the same
//! name are concatenated (their actions must agree), so the network rules are one fragment per
//! network mode instead of a copy of everything else:
//!
//! | profile | fragments |
//! | --- | --- |
//! | `default` | `base` (everything but sockets), `net-none` (only `AF_UNIX` sockets) |
//! | `network` | `base`, `net-egress` (`AF_UNIX`/`AF_INET`/`AF_INET6`; never raw or packet) |
//!
//! Every filter of a profile is installed, in name order; the kernel runs them all and the
//! strictest answer wins, which lets one profile give different errnos to different syscalls
//! (EPERM for what is forbidden, ENOSYS for `clone3` so libc falls back to the filterable
//! `clone`).
//!
//! Profiles are compiled once, in the parent, with [`Profile::load`]; [`Profile::apply`] only
//! makes the `prctl`/`seccomp` system calls, so it is safe to call in a forked child before
//! `exec` (e.g. from `CommandExt::pre_exec`).

pub mod audit;
mod names;
pub mod record;

use std::collections::BTreeMap;
use std::os::fd::{FromRawFd, OwnedFd};

use seccompiler::{BpfProgram, TargetArch};

/// Profile fragments, compiled into the binary from `profiles/`.
const FRAGMENTS: &[(&str, &str)] = &[
    ("base", include_str!("../profiles/base.json")),
    ("net-none", include_str!("../profiles/net-none.json")),
    ("net-egress", include_str!("../profiles/net-egress.json")),
];

/// Built-in profiles and their fragments.
const PROFILES: &[(&str, &[&str])] = &[
    ("default", &["base", "net-none"]),
    ("network", &["base", "net-egress"]),
];

/// Merges fragments into one seccompiler JSON document: filters with the same name have their
/// rules concatenated, which is only allowed when their actions agree.
fn merge(profile: &str, fragments: &[&str]) -> Result<Vec<u8>, SeccompError> {
    let compile = |reason: String| SeccompError::Compile {
        profile: profile.to_owned(),
        reason,
    };
    let mut merged = serde_json::Map::new();
    for name in fragments {
        let (_, text) = FRAGMENTS
            .iter()
            .find(|(n, _)| n == name)
            .ok_or_else(|| compile(format!("no fragment {name:?}")))?;
        let serde_json::Value::Object(filters) =
            serde_json::from_str(text).map_err(|e| compile(format!("fragment {name}: {e}")))?
        else {
            return Err(compile(format!("fragment {name} is not a JSON object")));
        };
        for (filter, body) in filters {
            match merged.get_mut(&filter) {
                None => {
                    merged.insert(filter, body);
                }
                Some(existing) => {
                    for key in ["mismatch_action", "match_action"] {
                        if existing.get(key) != body.get(key) {
                            return Err(compile(format!(
                                "fragment {name}: filter {filter:?} has a different {key}"
                            )));
                        }
                    }
                    let rules = body.get("filter").and_then(|f| f.as_array()).cloned();
                    match (
                        existing.get_mut("filter").and_then(|f| f.as_array_mut()),
                        rules,
                    ) {
                        (Some(into), Some(rules)) => into.extend(rules),
                        _ => {
                            return Err(compile(format!(
                                "fragment {name}: filter {filter:?} has no rule list"
                            )));
                        }
                    }
                }
            }
        }
    }
    serde_json::to_vec(&merged).map_err(|e| compile(e.to_string()))
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
    /// Compiles a built-in profile.
    pub fn load(name: &str) -> Result<Self, SeccompError> {
        let (_, fragments) = PROFILES
            .iter()
            .find(|(n, _)| *n == name)
            .ok_or_else(|| SeccompError::Unknown(name.to_owned()))?;
        Self::from_json(name, &merge(name, fragments)?)
    }

    /// Compiles a profile from seccompiler JSON.
    pub fn from_json(name: &str, json: &[u8]) -> Result<Self, SeccompError> {
        let arch = TargetArch::try_from(std::env::consts::ARCH)
            .map_err(|e| SeccompError::Arch(format!("{e:?}")))?;
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

    /// Sets `no_new_privs` and installs every filter on the calling thread. Allocates nothing on
    /// success, so it may run between `fork` and `exec`.
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
    /// a denied call blocks. `None` when the profile denies nothing with EPERM.
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

    #[test]
    fn builtin_profiles_compile() {
        for name in Profile::builtin_names() {
            let p = Profile::load(name).unwrap();
            assert_eq!(p.filters.keys().collect::<Vec<_>>(), ["deny", "enosys"]);
        }
    }

    #[test]
    fn bad_profiles_are_refused_with_the_reason() {
        assert!(matches!(
            Profile::load("nope"),
            Err(SeccompError::Unknown(_))
        ));
        let err = Profile::from_json("typo", br#"{"f":{"mismatch_action":"allow","match_action":{"errno":1},"filter":[{"syscall":"ptrace_typo"}]}}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("typo"), "{err}");
        assert!(matches!(
            Profile::from_json("empty", b"{}"),
            Err(SeccompError::Empty(_))
        ));
    }
}
