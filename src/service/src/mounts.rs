//! Read-only host mounts ([`ReadOnlyMount`]): each host path resolved and checked when a
//! sandbox is made, for the caller it is made for.
//!
//! - resolved (every link followed): a directory or a regular file; the resolved path is what
//!   the spec records and what the sandbox's init opens (with no link allowed on the way);
//! - never a file the process sandbox masks (`/etc/shadow`, `/etc/ssh`, … see
//!   `luminaguard_sandbox_init::init::MASKED_FILES`), nor anything containing one (`/etc`, `/`)
//!   — not even for root: the mask would be bypassed through the mount;
//! - never LuminaGuard's own state, inside it or a parent of it (the workspace rule
//!   [`WorkspacePolicy::check_protected`]: a sandbox must not read the runtime directory's
//!   sockets or the audit log);
//! - for a caller other than root and this service's user (a daemon serving other users): only
//!   a path that caller could open for reading itself. The kernel decides, on a short-lived
//!   thread of its own whose file system identity is the caller's (uid, primary gid and the
//!   user's groups): every directory on the way searchable, the target readable, ACLs and all.

use std::path::{Path, PathBuf};

use luminaguard_core::workspace::Rule;
use luminaguard_core::{ReadOnlyMount, WorkspacePolicy};
use luminaguard_process_sandbox::init::{MASKED_DIRS, MASKED_FILES};

/// Why a host path cannot be mounted.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("mount {host}: cannot resolve it: {source}")]
    Resolve {
        host: PathBuf,
        source: std::io::Error,
    },
    #[error("mount {host} (resolves to {resolved}): neither a directory nor a regular file")]
    NotDirOrFile { host: PathBuf, resolved: PathBuf },
    #[error(
        "mount {host} (resolves to {resolved}): {how} {masked}, which the sandbox masks (never \
         mountable, not even by root)"
    )]
    Masked {
        host: PathBuf,
        resolved: PathBuf,
        how: &'static str,
        masked: &'static str,
    },
    #[error("mount {host} (resolves to {resolved}) refused: {rule}")]
    Protected {
        host: PathBuf,
        resolved: PathBuf,
        rule: Rule,
    },
    #[error(
        "mount {host} (resolves to {resolved}) refused: uid {uid} cannot read it itself ({source}); \
         a caller may only mount what it could read"
    )]
    NotReadable {
        host: PathBuf,
        resolved: PathBuf,
        uid: u32,
        source: std::io::Error,
    },
    #[error("mount {host}: a caller other than the service's user must give an absolute path")]
    Relative { host: PathBuf },
    #[error("checking mount {host} as uid {uid}: {reason}")]
    Check {
        host: PathBuf,
        uid: u32,
        reason: String,
    },
}

impl MountError {
    /// Refused for who asked (rather than for what was asked).
    pub fn is_forbidden(&self) -> bool {
        matches!(
            self,
            Self::Masked { .. } | Self::Protected { .. } | Self::NotReadable { .. }
        )
    }
}

/// How `path` stands to a masked path, if they overlap.
fn masked(path: &Path) -> Option<(&'static str, &'static str)> {
    MASKED_FILES.iter().chain(MASKED_DIRS.iter()).find_map(|m| {
        if path == Path::new(m) {
            Some(("it is", *m))
        } else if path.starts_with(m) {
            Some(("it lies inside", *m))
        } else if Path::new(m).starts_with(path) {
            Some(("it contains", *m))
        } else {
            None
        }
    })
}

/// `mounts` with each host path resolved and checked (see the module): `reader` is the
/// `(uid, gid)` that must be able to read each one itself, `None` for root or the service's own
/// user. Blocking.
pub fn resolve_blocking(
    mounts: &[ReadOnlyMount],
    protected: &WorkspacePolicy,
    reader: Option<(u32, u32)>,
) -> Result<Vec<ReadOnlyMount>, MountError> {
    mounts
        .iter()
        .map(|m| {
            let host = &m.host;
            if reader.is_some() && !host.is_absolute() {
                return Err(MountError::Relative { host: host.clone() });
            }
            let resolved = std::fs::canonicalize(host).map_err(|source| MountError::Resolve {
                host: host.clone(),
                source,
            })?;
            let meta = std::fs::metadata(&resolved).map_err(|source| MountError::Resolve {
                host: host.clone(),
                source,
            })?;
            if !(meta.is_dir() || meta.is_file()) {
                return Err(MountError::NotDirOrFile {
                    host: host.clone(),
                    resolved,
                });
            }
            if let Some((how, masked)) = masked(&resolved) {
                return Err(MountError::Masked {
                    host: host.clone(),
                    resolved,
                    how,
                    masked,
                });
            }
            if let Err(rule) = protected.check_protected_blocking(&resolved) {
                return Err(MountError::Protected {
                    host: host.clone(),
                    resolved,
                    rule,
                });
            }
            if let Some((uid, gid)) = reader {
                readable_as(&resolved, uid, gid).map_err(|e| match e {
                    AsError::Open(source) => MountError::NotReadable {
                        host: host.clone(),
                        resolved: resolved.clone(),
                        uid,
                        source,
                    },
                    AsError::Identity(reason) => MountError::Check {
                        host: host.clone(),
                        uid,
                        reason,
                    },
                })?;
            }
            Ok(ReadOnlyMount {
                host: resolved,
                at: m.at.clone(),
            })
        })
        .collect()
}

enum AsError {
    /// The kernel refused the open: the user cannot read it.
    Open(std::io::Error),
    /// The check itself could not be made (fail closed).
    Identity(String),
}

/// The groups of user `uid` (its primary `gid` at least).
fn groups_of(uid: u32, gid: u32) -> Vec<libc::gid_t> {
    let mut groups = vec![gid];
    if let Ok(Some(user)) = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        && let Ok(name) = std::ffi::CString::new(user.name)
        && let Ok(list) = nix::unistd::getgrouplist(&name, nix::unistd::Gid::from_raw(gid))
    {
        groups.extend(list.into_iter().map(|g| g.as_raw()));
    }
    groups.sort_unstable();
    groups.dedup();
    groups
}

/// Opens `path` for reading as user `uid` (group `gid` and the user's groups) on a thread of its
/// own that ends right after: its file system identity is changed (`setfsuid`, `setfsgid`, raw
/// `setgroups`: per thread, unlike the C library's wrappers), and dies with it. Changing the
/// file system uid away from 0 drops the capabilities that bypass permission checks, so the
/// kernel judges the open as it would for that user.
fn readable_as(path: &Path, uid: u32, gid: u32) -> Result<(), AsError> {
    let groups = groups_of(uid, gid);
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: raw per-thread credential changes of this thread alone, which ends after
            // the open below; `groups` outlives the call and holds `groups.len()` gids.
            let took = unsafe {
                libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) == 0 && {
                    libc::syscall(libc::SYS_setfsgid, gid);
                    libc::syscall(libc::SYS_setfsuid, uid);
                    // Each returns the previous value: asking again (with an invalid id,
                    // which changes nothing) tells whether the change took.
                    libc::syscall(libc::SYS_setfsgid, u32::MAX) == i64::from(gid)
                        && libc::syscall(libc::SYS_setfsuid, u32::MAX) == i64::from(uid)
                }
            };
            if !took {
                return Err(AsError::Identity(format!(
                    "cannot take the file system identity of uid {uid}: {}",
                    std::io::Error::last_os_error()
                )));
            }
            std::fs::File::open(path).map(drop).map_err(AsError::Open)
        })
        .join()
        .unwrap_or_else(|_| Err(AsError::Identity("the checking thread panicked".into())))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mount(host: &Path) -> ReadOnlyMount {
        ReadOnlyMount {
            host: host.to_owned(),
            at: "/opt/x".into(),
        }
    }

    #[test]
    fn masked_paths_their_contents_and_parents_are_never_mountable() {
        for (p, how) in [
            ("/etc/shadow", "it is"),
            ("/etc/ssh/sshd_config", "it lies inside"),
            ("/etc", "it contains"),
            ("/", "it contains"),
        ] {
            assert_eq!(masked(Path::new(p)).map(|m| m.0), Some(how), "{p}");
        }
        assert_eq!(masked(Path::new("/etc/ssl/certs")), None);
        assert_eq!(masked(Path::new("/etc/shadowx")), None);
        // Even for root (no reader), through a link.
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("etc");
        std::os::unix::fs::symlink("/etc", &link).unwrap();
        let err = resolve_blocking(&[mount(&link)], &WorkspacePolicy::new(), None).unwrap_err();
        assert!(
            matches!(err, MountError::Masked { .. }) && err.to_string().contains("/etc/shadow"),
            "{err}"
        );
    }

    #[test]
    fn the_resolved_path_is_recorded_and_protected_state_refused() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::create_dir(&real).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let got = resolve_blocking(&[mount(&link)], &WorkspacePolicy::new(), None).unwrap();
        assert_eq!(got[0].host, std::fs::canonicalize(&real).unwrap());
        assert_eq!(got[0].at, Path::new("/opt/x"));
        let policy = WorkspacePolicy::new().protect(real.join("rt"), "the runtime directory");
        let err = resolve_blocking(&[mount(&link)], &policy, None).unwrap_err();
        assert!(
            matches!(err, MountError::Protected { .. })
                && err.to_string().contains("contains the runtime directory"),
            "{err}"
        );
        assert!(matches!(
            resolve_blocking(&[mount(&dir.path().join("nope"))], &policy, None),
            Err(MountError::Resolve { .. })
        ));
        assert!(matches!(
            resolve_blocking(&[mount(Path::new("/dev/null"))], &policy, None),
            Err(MountError::NotDirOrFile { .. })
        ));
        assert!(matches!(
            resolve_blocking(&[mount(Path::new("rel"))], &policy, Some((1000, 1000))),
            Err(MountError::Relative { .. })
        ));
    }

    /// As root (CI runs it so, and then it never skips): what another user cannot read is
    /// refused for that user, by the kernel's own check; what it can read passes.
    #[test]
    #[allow(clippy::disallowed_methods)] // a test: blocking is fine
    fn a_user_may_mount_only_what_it_could_read() {
        use std::os::unix::fs::PermissionsExt;
        if !nix::unistd::geteuid().is_root() {
            assert!(std::env::var_os("CI").is_none(), "CI runs this as root");
            eprintln!("skipped: needs root");
            return;
        }
        let nobody = (65534, 65534);
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let open = dir.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
        let closed = dir.path().join("closed");
        std::fs::create_dir(&closed).unwrap();
        std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o700)).unwrap();
        let inner = closed.join("inner");
        std::fs::create_dir(&inner).unwrap();
        std::fs::set_permissions(&inner, std::fs::Permissions::from_mode(0o755)).unwrap();
        let policy = WorkspacePolicy::new();
        resolve_blocking(&[mount(&open)], &policy, Some(nobody)).unwrap();
        for p in [&closed, &inner, &PathBuf::from("/root")] {
            let err = resolve_blocking(&[mount(p)], &policy, Some(nobody)).unwrap_err();
            assert!(
                matches!(err, MountError::NotReadable { uid: 65534, .. }) && err.is_forbidden(),
                "{}: {err}",
                p.display()
            );
        }
        // Root may; and this thread kept its own identity.
        resolve_blocking(&[mount(&inner)], &policy, None).unwrap();
        std::fs::read_dir(&closed).unwrap();
    }
}
