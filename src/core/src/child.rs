//! How LuminaGuard starts a helper process on the host (a VMM, the jailer, a DNS resolver): never
//! with the caller's terminal, never with a descriptor it did not mean to pass.
//!
//! A helper runs next to hostile input — a guest's devices, a sandbox's DNS queries — so it is
//! treated as a process that may be taken over. Two things it must not inherit from whoever ran
//! `luminaguard`:
//!
//! - **the controlling terminal**: with it, a taken-over helper could open `/dev/tty` and push
//!   input into the user's shell with `TIOCSTI`, or turn its echo off; so every helper starts a
//!   session of its own;
//! - **file descriptors left open by the caller** (`exec 7</etc/shadow; luminaguard run …`):
//!   every descriptor above stderr is closed at exec, but for those the helper is meant to have.

use std::os::fd::RawFd;

/// Between fork and exec (async-signal-safe: `setsid`, `close_range`, `fcntl`): a new session,
/// and every descriptor above stderr marked close-on-exec except those in `keep`, which are
/// cleared of it. Fails if the child cannot get a session of its own (it must not be a process
/// group leader already: do not combine with `process_group`).
pub fn detach_from_caller(keep: &[RawFd]) -> std::io::Result<()> {
    // SAFETY: setsid, close_range and fcntl take integer arguments only.
    unsafe {
        if libc::setsid() < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        ) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
        for &fd in keep {
            if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

/// Between fork and exec (async-signal-safe: `write`): moves the calling process into each
/// cgroup whose `cgroup.procs` is open for writing in `procs` ("0" names the writer).
pub fn join_cgroups(procs: &[RawFd]) -> std::io::Result<()> {
    for &fd in procs {
        // SAFETY: write of one byte from a constant buffer to a descriptor the caller owns.
        if unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) } != 1 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Who a helper runs as: a uid, a gid, exactly these supplementary groups.
#[derive(Debug, Clone, Copy)]
pub struct Credentials<'a> {
    pub uid: u32,
    pub gid: u32,
    pub groups: &'a [u32],
}

/// Between fork and exec (async-signal-safe: `setgroups`, `setresgid`, `setresuid`): drops to
/// `who` for good — supplementary groups first, then the gid, then the uid (after the uid no
/// group could be changed any more; real, effective and saved ids alike, so nothing is left to
/// regain). The kernel clears `PDEATHSIG` on a credential change: set it after this.
pub fn become_user(who: Credentials<'_>) -> std::io::Result<()> {
    // SAFETY: setgroups reads `groups.len()` ids from a live slice; the others take integers.
    let failed = unsafe {
        libc::setgroups(who.groups.len(), who.groups.as_ptr()) != 0
            || libc::setresgid(who.gid, who.gid, who.gid) != 0
            || libc::setresuid(who.uid, who.uid, who.uid) != 0
    };
    if failed {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// How a VMM (or another helper that must not outlive or outrank its sandbox) is set up
/// between fork and exec by [`enter_helper`].
#[derive(Debug, Clone, Copy)]
pub struct HelperSetup<'a> {
    /// A network namespace to enter first, while still privileged.
    pub netns: Option<RawFd>,
    /// `cgroup.procs` of the cgroups to join (also while privileged).
    pub cgroup_procs: &'a [RawFd],
    /// Descriptors above stderr the helper keeps (see [`detach_from_caller`]).
    pub keep: &'a [RawFd],
    /// Drop to these credentials; `None`: stay who the caller is.
    pub user: Option<Credentials<'a>>,
    /// SIGKILL when the creating thread dies (`false` for a helper that outlives its creator).
    pub die_with_parent: bool,
}

/// The one copy of a microVM helper's start: network namespace, cgroups, a session of its own
/// with no stray descriptors, the unprivileged identity, death with its creator — in that
/// order. Async-signal-safe: call it only between fork and exec (`Command::pre_exec`).
pub fn enter_helper(setup: &HelperSetup<'_>) -> std::io::Result<()> {
    if let Some(fd) = setup.netns {
        // SAFETY: setns takes a descriptor and a flag.
        if unsafe { libc::setns(fd, libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    join_cgroups(setup.cgroup_procs)?;
    detach_from_caller(setup.keep)?;
    if let Some(who) = setup.user {
        become_user(who)?;
    }
    if setup.die_with_parent {
        // SAFETY: prctl with integer arguments only.
        if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}
