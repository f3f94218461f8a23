//! A pseudo-terminal standing in for a user's terminal, for tests that check nothing a sandbox
//! runs can reach the terminal of whoever started it.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

/// A pseudo-terminal pair: (master, slave).
pub fn pty() -> (OwnedFd, OwnedFd) {
    let p = nix::pty::openpty(None, None).unwrap_or_else(|e| panic!("openpty: {e}"));
    (p.master, p.slave)
}

/// Sets `cmd` up as a shell in that terminal would run it: the slave as stdin, stdout and
/// stderr, and as the controlling terminal of a session of its own.
pub fn on_terminal<'a>(cmd: &'a mut Command, slave: &OwnedFd) -> &'a mut Command {
    let fd = slave.as_raw_fd();
    let dup = || slave.try_clone().unwrap_or_else(|e| panic!("dup: {e}"));
    cmd.stdin(dup()).stdout(dup()).stderr(dup());
    // SAFETY: setsid and ioctl are async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 || libc::ioctl(fd, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd
}

fn nonblocking(fd: &OwnedFd) {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    let flags = fcntl(fd, FcntlArg::F_GETFL).unwrap_or(0);
    let _ = fcntl(
        fd,
        FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK),
    );
}

/// What a user's shell would read next from its terminal (injected input), without waiting.
pub fn pending_input(slave: &OwnedFd) -> Vec<u8> {
    nonblocking(slave);
    let mut buf = [0u8; 256];
    match nix::unistd::read(slave, &mut buf) {
        Ok(n) => buf.get(..n).unwrap_or_default().to_vec(),
        Err(_) => Vec::new(),
    }
}

/// Everything the terminal displayed so far, without waiting.
pub fn drain(master: &OwnedFd) -> String {
    nonblocking(master);
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = nix::unistd::read(master, &mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(buf.get(..n).unwrap_or_default());
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A process's session id and controlling terminal (`tty_nr`, 0 for none), from the host.
pub fn session_and_tty(pid: i32) -> (i32, i32) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let num = |i: usize| fields.get(i).and_then(|s| s.parse().ok()).unwrap_or(-1);
    // After the command: state, ppid, pgrp, session, tty_nr.
    (num(3), num(4))
}
