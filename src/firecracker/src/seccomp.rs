//! seccomp for the VMM. Firecracker is never started with `--no-seccomp`.
//!
//! - **Built-in** (the default): without `--seccomp-filter`, Firecracker installs the filters
//!   compiled into its binary — per thread (vmm, api, vcpu), derived from its
//!   `resources/seccomp/<arch>-unknown-linux-musl.json`.
//! - **Custom**: [`POLICY_X86_64`] (`src/firecracker/seccomp/x86_64.json`), in seccompiler's
//!   JSON input format: Firecracker v1.16.1's x86_64 default with every `io_uring_*` rule removed
//!   (LuminaGuard's drives use the default `Sync` I/O engine, so the VMM never needs io_uring).
//!   It is compiled by the user's `seccompiler-bin` — the one of the same release as their
//!   Firecracker, because the BPF file is that release's bitcode serialization — into
//!   `<cache>/seccomp-<digest>.bpf` (the digest covers the policy and the compiler), and passed
//!   with `--seccomp-filter`.
//!
//! `seccompiler-bin` is looked for in `LUMINAGUARD_SECCOMPILER`, next to the `firecracker`
//! binary, then on `PATH`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::Digest as _;

/// The custom policy for x86_64, in seccompiler's input format.
pub const POLICY_X86_64: &str = include_str!("../seccomp/x86_64.json");
/// The program's file name.
pub const SECCOMPILER: &str = "seccompiler-bin";
/// The threads Firecracker filters separately.
pub const THREADS: [&str; 3] = ["vmm", "api", "vcpu"];

/// Why the custom filter could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("the seccomp policy is not seccompiler JSON: {0}")]
    Policy(serde_json::Error),
    #[error("cannot {what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} failed ({status}) compiling {}: {stderr}", compiler.display(), input.display())]
    Compile {
        compiler: PathBuf,
        input: PathBuf,
        status: String,
        stderr: String,
    },
}

/// One thread's filter, in seccompiler's input format.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThreadFilter {
    /// What happens to a syscall no rule matches (`"trap"`, `{"errno": 1}`, …).
    pub default_action: serde_json::Value,
    /// What happens to one a rule matches.
    pub filter_action: serde_json::Value,
    pub filter: Vec<SyscallRule>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyscallRule {
    pub syscall: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<ArgCondition>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArgCondition {
    pub index: u8,
    #[serde(rename = "type")]
    pub kind: String,
    pub op: serde_json::Value,
    pub val: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// A whole policy: thread name → filter.
pub type Policy = BTreeMap<String, ThreadFilter>;

/// Parses a policy.
pub fn parse_policy(json: &str) -> Result<Policy, SeccompError> {
    serde_json::from_str(json).map_err(SeccompError::Policy)
}

/// Which filter Firecracker runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilterInForce {
    /// No `--seccomp-filter`: the filters built into the Firecracker binary.
    BuiltIn,
    /// `--seccomp-filter <bpf>`, compiled from LuminaGuard's policy.
    Custom { bpf: PathBuf },
}

impl std::fmt::Display for FilterInForce {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::BuiltIn => f.write_str("Firecracker's built-in default filters (per thread)"),
            Self::Custom { bpf } => write!(
                f,
                "LuminaGuard's policy (Firecracker's default without io_uring), compiled to {}",
                bpf.display()
            ),
        }
    }
}

/// `seccompiler-bin`: `explicit` (`host.seccompiler`), else next to `firecracker`, else on
/// `PATH`. Only files that exist are returned.
pub async fn find_seccompiler(
    explicit: Option<&Path>,
    firecracker: Option<&Path>,
) -> Option<PathBuf> {
    crate::tools::find_tool(explicit, SECCOMPILER, firecracker).await
}

/// The cached BPF file's name for `policy` compiled by `compiler`.
pub fn cached_name(policy: &str, compiler: &Path) -> String {
    let mut h = sha2::Sha256::new();
    h.update(policy.as_bytes());
    h.update([0]);
    h.update(compiler.as_os_str().as_encoded_bytes());
    let digest = h.finalize();
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("seccomp-{hex}.bpf")
}

/// Compiles `policy` for x86_64 with `compiler` into `cache_dir` (created if needed), unless
/// the file for this policy and compiler is there already. Returns the BPF file.
pub async fn compile(
    compiler: &Path,
    policy: &str,
    cache_dir: &Path,
) -> Result<PathBuf, SeccompError> {
    parse_policy(policy)?;
    let io = |what, path: &Path| {
        let path = path.to_owned();
        move |source| SeccompError::Io { what, path, source }
    };
    tokio::fs::create_dir_all(cache_dir)
        .await
        .map_err(io("create", cache_dir))?;
    let name = cached_name(policy, compiler);
    let bpf = cache_dir.join(&name);
    if tokio::fs::metadata(&bpf).await.is_ok() {
        tracing::debug!(bpf = %bpf.display(), "seccomp filter cached");
        return Ok(bpf);
    }
    let input = cache_dir.join(name.replace(".bpf", ".json"));
    let partial = cache_dir.join(format!("{name}.{}.partial", std::process::id()));
    tokio::fs::write(&input, policy)
        .await
        .map_err(io("write", &input))?;
    let out = tokio::process::Command::new(compiler)
        .arg("--target-arch")
        .arg("x86_64")
        .arg("--input-file")
        .arg(&input)
        .arg("--output-file")
        .arg(&partial)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(io("run", compiler))?;
    let made = tokio::fs::metadata(&partial)
        .await
        .is_ok_and(|m| m.len() > 0);
    if !out.status.success() || !made {
        let _ = tokio::fs::remove_file(&partial).await;
        return Err(SeccompError::Compile {
            compiler: compiler.to_owned(),
            input,
            status: if out.status.success() {
                "no output file".into()
            } else {
                out.status.to_string()
            },
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    // Renamed into place whole, so a concurrent user never sees half a file.
    tokio::fs::rename(&partial, &bpf)
        .await
        .map_err(io("rename", &partial))?;
    Ok(bpf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        parse_policy(POLICY_X86_64).unwrap()
    }

    fn syscalls<'a>(p: &'a Policy, thread: &str) -> Vec<&'a str> {
        p[thread]
            .filter
            .iter()
            .map(|r| r.syscall.as_str())
            .collect()
    }

    #[test]
    fn every_thread_is_filtered_and_unmatched_syscalls_trap() {
        let p = policy();
        assert_eq!(
            p.keys().map(String::as_str).collect::<Vec<_>>(),
            ["api", "vcpu", "vmm"]
        );
        for t in THREADS {
            assert_eq!(p[t].default_action, "trap", "{t}");
            assert_eq!(p[t].filter_action, "allow", "{t}");
            assert!(!p[t].filter.is_empty(), "{t}");
        }
        // It round-trips through the typed form (nothing unknown, nothing lost).
        let again: serde_json::Value = serde_json::to_value(&p).unwrap();
        let raw: serde_json::Value = serde_json::from_str(POLICY_X86_64).unwrap();
        assert_eq!(again, raw);
    }

    #[test]
    fn the_api_socket_and_vsock_keep_what_they_need() {
        let p = policy();
        // The API thread: its Unix socket, accept, reads, writes, epoll.
        let api = syscalls(&p, "api");
        for s in [
            "socket",
            "accept4",
            "read",
            "write",
            "close",
            "recvfrom",
            "epoll_ctl",
            "epoll_pwait",
            "fcntl",
            "futex",
        ] {
            assert!(api.contains(&s), "api lacks {s}");
        }
        // The socket rule is for AF_UNIX stream sockets.
        let socket = p["api"]
            .filter
            .iter()
            .find(|r| r.syscall == "socket")
            .unwrap();
        let args = socket.args.as_ref().unwrap();
        assert!(
            args.iter()
                .any(|a| a.index == 0 && a.val == libc::AF_UNIX as u64)
        );
        // The VMM thread runs the vsock device: host-initiated connections are accepted on
        // uds_path, guest-initiated ones connect to <uds_path>_<port>.
        let vmm = syscalls(&p, "vmm");
        for s in [
            "socket",
            "connect",
            "accept4",
            "read",
            "write",
            "readv",
            "writev",
            "recvfrom",
            "recvmsg",
            "sendmsg",
            "epoll_ctl",
            "epoll_pwait",
            "eventfd2",
            "close",
        ] {
            assert!(vmm.contains(&s), "vmm lacks {s}");
        }
        let vcpu = syscalls(&p, "vcpu");
        assert!(vcpu.contains(&"ioctl") && vcpu.contains(&"write"));
    }

    #[test]
    fn what_the_vmm_must_not_do_stays_denied() {
        let p = policy();
        for t in THREADS {
            for s in syscalls(&p, t) {
                assert!(
                    !s.starts_with("io_uring")
                        && !matches!(
                            s,
                            "ptrace"
                                | "mount"
                                | "kexec_load"
                                | "bpf"
                                | "keyctl"
                                | "execve"
                                | "clone3"
                                | "setns"
                                | "unshare"
                                | "init_module"
                        ),
                    "{t} allows {s}"
                );
            }
        }
    }

    #[test]
    fn the_cache_name_follows_policy_and_compiler() {
        let a = cached_name("{}", Path::new("/a/seccompiler-bin"));
        assert_eq!(a, cached_name("{}", Path::new("/a/seccompiler-bin")));
        assert_ne!(a, cached_name("{ }", Path::new("/a/seccompiler-bin")));
        assert_ne!(a, cached_name("{}", Path::new("/b/seccompiler-bin")));
        assert!(a.starts_with("seccomp-") && a.ends_with(".bpf"));
    }
}
