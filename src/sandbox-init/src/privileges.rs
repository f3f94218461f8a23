//! Dropping privilege: every capability set emptied (the bounding set too, so nothing can be
//! regained through exec), `no_new_privs`, and resource limits.
//!
//! [`drop_privileges`] makes only `prctl`, `capset` and `setrlimit` system calls, so it can run
//! between `fork` and `exec`.

use caps::CapSet;
use nix::sys::resource::{Resource, setrlimit};

/// Per-process resource limits (soft = hard, so the sandbox cannot raise them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rlimits {
    /// RLIMIT_NOFILE.
    pub open_files: u64,
    /// RLIMIT_FSIZE, bytes.
    pub file_size: u64,
}

/// Why privileges could not be dropped.
#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    #[error("cannot clear the {set} capability set: {reason}")]
    Caps { set: &'static str, reason: String },
    #[error("cannot set no_new_privs: {0}")]
    NoNewPrivs(nix::Error),
    #[error("cannot set {limit}: {source}")]
    Rlimit {
        limit: &'static str,
        source: nix::Error,
    },
}

/// Sets rlimits (core dumps off), empties every capability set, and sets `no_new_privs`.
pub fn drop_privileges(limits: Rlimits) -> Result<(), PrivilegeError> {
    let rl = |limit, res, v| {
        setrlimit(res, v, v).map_err(|source| PrivilegeError::Rlimit { limit, source })
    };
    rl("RLIMIT_CORE", Resource::RLIMIT_CORE, 0)?;
    rl("RLIMIT_NOFILE", Resource::RLIMIT_NOFILE, limits.open_files)?;
    rl("RLIMIT_FSIZE", Resource::RLIMIT_FSIZE, limits.file_size)?;
    // Bounding first (dropping it needs CAP_SETPCAP, which the clears below remove), then ambient,
    // inheritable, permitted and effective.
    for (set, name) in [
        (CapSet::Bounding, "bounding"),
        (CapSet::Ambient, "ambient"),
        (CapSet::Inheritable, "inheritable"),
        (CapSet::Permitted, "permitted"),
        (CapSet::Effective, "effective"),
    ] {
        caps::clear(None, set).map_err(|e| PrivilegeError::Caps {
            set: name,
            reason: e.to_string(),
        })?;
    }
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(PrivilegeError::NoNewPrivs(nix::Error::last()));
    }
    Ok(())
}
