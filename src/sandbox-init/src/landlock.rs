//! Landlock: read-only everywhere, writable only where the sandbox may write.
//!
//! The ruleset is built in the parent ([`FsPolicy::prepare`] opens every path, so a missing path
//! is an error there, with its name) and enforced on the sandbox's first process with
//! [`PreparedLandlock::restrict_self`], which every later process inherits and cannot undo.
//!
//! [`Enforcement::Required`] fails closed when the kernel enforces no Landlock at all. Older
//! kernels enforce only part of the rights requested (for instance no `truncate` control before
//! ABI 3); that is reported as [`Outcome::Partial`], not hidden.

use std::path::{Path, PathBuf};

use std::os::fd::{OwnedFd, RawFd};

use landlock::{
    ABI, Access, AccessFs, PathBeneath, PathFd, Ruleset, RulesetAttr, RulesetCreated,
    RulesetCreatedAttr, RulesetStatus, Scope,
};

/// The newest filesystem ABI this code asks for (V5 adds device ioctls).
const FS_ABI: ABI = ABI::V5;

/// Whether the sandbox may start without Landlock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enforcement {
    /// Refuse to start when the kernel enforces nothing.
    Required,
    /// Use what the kernel offers; report what it did not.
    BestEffort,
}

/// Which paths the sandbox may read and which it may also write.
#[derive(Debug, Clone)]
pub struct FsPolicy {
    /// Readable and executable, never writable.
    pub read_only: Vec<PathBuf>,
    /// Everything, including create, remove, truncate.
    pub read_write: Vec<PathBuf>,
    pub enforcement: Enforcement,
}

/// Why Landlock could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LandlockError {
    #[error("landlock: cannot create the ruleset: {0}")]
    Create(String),
    #[error("landlock: cannot add a rule for {path:?}: {reason}")]
    Rule { path: PathBuf, reason: String },
    #[error("landlock: cannot restrict the process: {0}")]
    Restrict(String),
    /// Required, but the kernel enforces none of it.
    #[error(
        "landlock is required but this kernel does not enforce it (disabled, or older than 5.13)"
    )]
    NotEnforced,
}

/// What the kernel enforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Full,
    /// Some requested rights are not known to this kernel and are not restricted.
    Partial,
    /// Nothing is enforced (only possible with [`Enforcement::BestEffort`]).
    None,
}

/// A ruleset ready to be enforced in the child.
#[derive(Debug)]
pub struct PreparedLandlock {
    ruleset: RulesetCreated,
    enforcement: Enforcement,
}

fn add(
    ruleset: RulesetCreated,
    path: &Path,
    access: landlock::BitFlags<AccessFs>,
) -> Result<RulesetCreated, LandlockError> {
    let rule_err = |reason: String| LandlockError::Rule {
        path: path.to_owned(),
        reason,
    };
    let fd = PathFd::new(path).map_err(|e| rule_err(e.to_string()))?;
    ruleset
        .add_rule(PathBeneath::new(fd, access))
        .map_err(|e| rule_err(e.to_string()))
}

impl FsPolicy {
    /// Opens every path and builds the ruleset. Runs in the parent.
    pub fn prepare(&self) -> Result<PreparedLandlock, LandlockError> {
        // Scoped (ABI 6, best effort on older kernels): a restricted process can neither signal
        // nor reach an abstract Unix socket of a process outside its domain — such as the
        // sandbox's PID 1, which applies the ruleset to the commands it starts, not to itself.
        let mut ruleset = Ruleset::default()
            .handle_access(AccessFs::from_all(FS_ABI))
            .and_then(|r| r.scope(Scope::Signal | Scope::AbstractUnixSocket))
            .and_then(|r| r.create())
            .map_err(|e| LandlockError::Create(e.to_string()))?;
        for path in &self.read_only {
            ruleset = add(ruleset, path, AccessFs::from_read(FS_ABI))?;
        }
        for path in &self.read_write {
            ruleset = add(ruleset, path, AccessFs::from_all(FS_ABI))?;
        }
        Ok(PreparedLandlock {
            ruleset,
            enforcement: self.enforcement,
        })
    }
}

impl PreparedLandlock {
    /// The ruleset's descriptor, for [`restrict_with`] in each process that must be confined —
    /// the commands a sandbox's PID 1 starts — rather than in the caller. `None` when this
    /// kernel enforces no Landlock and that is acceptable ([`Enforcement::BestEffort`]).
    pub fn into_fd(self) -> Result<Option<OwnedFd>, LandlockError> {
        let fd: Option<OwnedFd> = self.ruleset.into();
        if fd.is_none() && self.enforcement == Enforcement::Required {
            return Err(LandlockError::NotEnforced);
        }
        Ok(fd)
    }

    /// Enforces the ruleset on the calling process (and so on everything it starts). Also sets
    /// `no_new_privs`. Call in the sandbox's first process before it runs anything untrusted.
    pub fn restrict_self(self) -> Result<Outcome, LandlockError> {
        let status = self
            .ruleset
            .restrict_self()
            .map_err(|e| LandlockError::Restrict(e.to_string()))?;
        let outcome = match status.ruleset {
            RulesetStatus::FullyEnforced => Outcome::Full,
            RulesetStatus::PartiallyEnforced => Outcome::Partial,
            RulesetStatus::NotEnforced => Outcome::None,
        };
        if outcome == Outcome::None && self.enforcement == Enforcement::Required {
            return Err(LandlockError::NotEnforced);
        }
        Ok(outcome)
    }
}

/// Confines the calling process with the ruleset `fd` (from [`PreparedLandlock::into_fd`]):
/// `no_new_privs`, then `landlock_restrict_self`. Async-signal-safe (two system calls), so it
/// can run between `fork` and `exec`. Each call starts a new, nested domain: processes confined
/// by separate calls can neither signal nor trace one another, nor anything outside.
pub fn restrict_with(fd: RawFd) -> std::io::Result<()> {
    // SAFETY: prctl and landlock_restrict_self with integer arguments only.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
            || libc::syscall(libc::SYS_landlock_restrict_self, fd, 0u32) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}
