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
