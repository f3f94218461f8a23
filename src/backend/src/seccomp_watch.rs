//! The seccomp supervisor of a process sandbox, outside the sandbox.
//!
//! A process sandbox's seccomp filter turns every denied call into a notification
//! (`SECCOMP_RET_USER_NOTIF`, see `luminaguard_seccomp::audit`) that a supervisor must answer.
//! Whoever holds the listener decides: answering `SECCOMP_USER_NOTIF_FLAG_CONTINUE` lets a denied
//! call run. So the listener must never be where the sandbox's processes can reach it — not in
//! the sandbox's PID 1, whose file descriptors a tenant could take with `pidfd_getfd`.
//!
//! PID 1 installs the filter on itself (the kernel only lets a process filter itself), sends the
//! listener at once over a socket pair to the sandbox's keeper — the host process that already
//! keeps its console ([`crate::console`]), in the host's PID namespace, where nothing in the
//! sandbox can name it — and closes its own copy before it runs anything untrusted. The keeper
//! then answers every notification with `EPERM`, after writing it to the sandbox's record file
//! (`luminaguard_seccomp::record`), which the host reads without asking the sandbox.
//!
//! Everything here runs in the keeper, a process forked from a multi-threaded one: only
//! async-signal-safe system calls on memory allocated before the fork.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use luminaguard_seccomp::record::{RawDenial, Writer};

use crate::console::BoundedLog;

/// What the keeper needs to supervise a sandbox's seccomp listener.
#[derive(Debug)]
pub struct SeccompWatch {
    /// The keeper's end of the socket pair on which the sandbox's PID 1 sends its listener.
    pub handoff: OwnedFd,
    /// The record file (see `luminaguard_seccomp::record`), already started.
    pub record: OwnedFd,
    pub(crate) writer: Writer,
}

impl SeccompWatch {
    /// A watch that receives the listener on `handoff` and records into `record`, an empty file
    /// open for reading and writing.
    pub fn new(handoff: OwnedFd, record: OwnedFd) -> std::io::Result<Self> {
        let writer =
            Writer::create(record.as_raw_fd()).map_err(std::io::Error::from_raw_os_error)?;
        Ok(Self {
            handoff,
            record,
            writer,
        })
    }
}

fn errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

fn close(fd: RawFd) {
    // SAFETY: closing a descriptor this process owns and no longer uses.
    unsafe { libc::close(fd) };
}

/// `parts` joined, NUL-terminated, into `out` (cut short if they do not fit). No allocation.
fn c_path(parts: &[&[u8]], out: &mut [u8; 48]) {
    let mut len = 0;
    for part in parts {
        for b in *part {
            if let Some(slot) = out.get_mut(len) {
                *slot = *b;
                len += 1;
            }
        }
    }
    // Always terminated, even if something above did not fit.
    out[len.min(47)] = 0;
}

/// Writes `/proc/<pid>/<leaf>` NUL-terminated into `out`. No allocation.
fn proc_path(pid: u32, leaf: &[u8], out: &mut [u8; 48]) {
    let mut digits = [0u8; 20];
    let pid = crate::console::decimal(u64::from(pid), &mut digits);
    c_path(&[b"/proc/", pid, b"/", leaf], out);
}

/// Reads up to `buf.len()` bytes of a small procfs file; how many.
fn read_proc(path: &[u8; 48], buf: &mut [u8]) -> usize {
    // SAFETY: `path` is NUL-terminated (see proc_path).
    let fd = unsafe { libc::open(path.as_ptr().cast(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return 0;
    }
    // SAFETY: `buf` is valid for `buf.len()` bytes.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    close(fd);
    usize::try_from(n).unwrap_or(0)
}

/// The process's pid in the innermost PID namespace it is in: the last number of `NSpid:`.
fn inner_pid(status: &[u8]) -> Option<u32> {
    let key = b"\nNSpid:";
    let start = status.windows(key.len()).position(|w| w == key)? + key.len();
    let line = status.get(start..)?;
    let end = line.iter().position(|b| *b == b'\n').unwrap_or(line.len());
    let mut last = None;
    let mut cur: Option<u32> = None;
    for b in line.get(..end)? {
        if b.is_ascii_digit() {
            let d = u32::from(b - b'0');
            cur = Some(cur.unwrap_or(0).saturating_mul(10).saturating_add(d));
        } else if let Some(v) = cur.take() {
            last = Some(v);
        }
    }
    cur.or(last)
}

fn now_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    if unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) } != 0 {
        return 0;
    }
    u64::try_from(ts.tv_sec)
        .unwrap_or(0)
        .saturating_mul(1000)
        .saturating_add(u64::try_from(ts.tv_nsec).unwrap_or(0) / 1_000_000)
}

/// Receives one notification on `listener`, records it, answers `EPERM`. `Err` only when the
/// listener itself failed.
fn answer(listener: RawFd, writer: &mut Writer) -> Result<(), i32> {
    // SAFETY: seccomp_notif is plain data; the kernel requires it zeroed before RECV.
    let mut notif: libc::seccomp_notif = unsafe { std::mem::zeroed() };
    // SAFETY: RECV writes one seccomp_notif into the valid, exclusively borrowed `notif`.
    if unsafe { libc::ioctl(listener, libc::SECCOMP_IOCTL_NOTIF_RECV, &raw mut notif) } < 0 {
        return match errno() {
            // Interrupted, or the caller was killed before we picked its call up.
            libc::EINTR | libc::ENOENT => Ok(()),
            e => Err(e),
        };
    }
    let mut path = [0u8; 48];
    let mut comm = [0u8; 16];
    proc_path(notif.pid, b"comm", &mut path);
    let n = read_proc(&path, &mut comm).min(16);
    // The name ends with a newline.
    if let Some(nl) = comm
        .get(..n)
        .and_then(|c| c.iter().position(|b| *b == b'\n'))
    {
        comm.get_mut(nl..)
            .into_iter()
            .flatten()
            .for_each(|b| *b = 0);
    }
    let mut status = [0u8; 2048];
    proc_path(notif.pid, b"status", &mut path);
    let n = read_proc(&path, &mut status);
    let mut pid = status.get(..n).and_then(inner_pid).unwrap_or(0);
    // Still the same process (its pid was not reused while we read its files)?
    // SAFETY: ID_VALID reads the u64 id.
    if unsafe {
        libc::ioctl(
            listener,
            libc::SECCOMP_IOCTL_NOTIF_ID_VALID,
            &raw const notif.id,
        )
    } != 0
    {
        pid = 0;
        comm = [0u8; 16];
    }
    // A record that cannot be written costs the record, never the answer.
    let _ = writer.record(&RawDenial {
        unix_ms: now_ms(),
        nr: notif.data.nr,
        arg0: notif.data.args[0],
        pid,
        host_pid: notif.pid,
        comm,
    });
    let resp = libc::seccomp_notif_resp {
        id: notif.id,
        val: 0,
        error: -libc::EPERM,
        flags: 0,
    };
    // SAFETY: SEND reads one seccomp_notif_resp from the valid `resp`.
    if unsafe { libc::ioctl(listener, libc::SECCOMP_IOCTL_NOTIF_SEND, &raw const resp) } < 0 {
        // ENOENT: the caller was killed while it waited; its call is moot.
        let e = errno();
        if e != libc::ENOENT && e != libc::EINTR {
            return Err(e);
        }
    }
    Ok(())
}

/// Whether `fd` is a seccomp notification listener (what `/proc/self/fd/<fd>` names).
fn is_listener(fd: RawFd) -> bool {
    let mut path = [0u8; 48];
    let mut digits = [0u8; 20];
    let n = crate::console::decimal(u64::try_from(fd).unwrap_or(0), &mut digits);
    c_path(&[b"/proc/self/fd/", n], &mut path);
    let mut target = [0u8; 64];
    // SAFETY: `path` is NUL-terminated; `target` is valid for its length.
    let n = unsafe { libc::readlink(path.as_ptr().cast(), target.as_mut_ptr().cast(), 64) };
    let want = b"anon_inode:seccomp notify";
    usize::try_from(n).is_ok_and(|n| target.get(..n) == Some(&want[..]))
}

/// Receives the listener PID 1 sends on `handoff` (one byte with an `SCM_RIGHTS` descriptor).
/// `None` at end of file, or when what arrived is not a seccomp listener.
fn receive_listener(handoff: RawFd) -> Option<RawFd> {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // Room for one descriptor's control message, aligned for cmsghdr.
    let mut control = [0u64; 4];
    // SAFETY: msghdr is plain data; zeroed is a valid value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control);
    let n = loop {
        // SAFETY: `msg` points at `iov` and `control`, both valid for the lengths given.
        let n = unsafe { libc::recvmsg(handoff, &raw mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n >= 0 || errno() != libc::EINTR {
            break n;
        }
    };
    if n <= 0 {
        return None;
    }
    // SAFETY: `msg` was filled in by recvmsg; the CMSG macros stay within msg_control.
    let fd = unsafe {
        let c = libc::CMSG_FIRSTHDR(&raw const msg);
        if c.is_null() || (*c).cmsg_level != libc::SOL_SOCKET || (*c).cmsg_type != libc::SCM_RIGHTS
        {
            return None;
        }
        std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<RawFd>())
    };
    if is_listener(fd) {
        Some(fd)
    } else {
        close(fd);
        None
    }
}

/// The keeper's loop with a seccomp watch: keeps the console read from `console` in `log` (as
/// [`crate::console`]'s plain keeper does) and, once PID 1 has handed over its listener, answers
/// and records every notification. Returns when the console has closed and the listener has no
/// process left to notify for (or never arrived).
pub(crate) fn serve(
    console: RawFd,
    log: &mut BoundedLog,
    buf: &mut [u8],
    scratch: &mut [u8],
    handoff: RawFd,
    writer: &mut Writer,
) {
    let none = libc::pollfd {
        fd: -1,
        events: 0,
        revents: 0,
    };
    let mut fds = [
        libc::pollfd {
            fd: console,
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: handoff,
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    let mut listening = false;
    while fds.iter().any(|p| p.fd >= 0) {
        // SAFETY: `fds` is a valid array of two pollfd.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if n < 0 {
            if errno() == libc::EINTR {
                continue;
            }
            return;
        }
        let [c, s] = &mut fds;
        if c.fd >= 0 && c.revents != 0 {
            // SAFETY: `buf` is valid for `buf.len()` bytes.
            let n = unsafe { libc::read(c.fd, buf.as_mut_ptr().cast(), buf.len()) };
            match usize::try_from(n) {
                Ok(0) => *c = none,
                Ok(n) => {
                    // A failed write drops that output; the keeper carries on.
                    let _ = log.append(buf.get(..n).unwrap_or_default(), scratch);
                }
                Err(_) if errno() == libc::EINTR => {}
                Err(_) => *c = none,
            }
        }
        if s.fd < 0 || s.revents == 0 {
            continue;
        }
        if !listening {
            let got = receive_listener(s.fd);
            close(s.fd);
            *s = match got {
                Some(fd) => {
                    listening = true;
                    libc::pollfd {
                        fd,
                        events: libc::POLLIN,
                        revents: 0,
                    }
                }
                None => none,
            };
        } else if s.revents & libc::POLLIN != 0 {
            if answer(s.fd, writer).is_err() {
                close(s.fd);
                *s = none;
            }
        } else {
            // POLLHUP: every process the filter applied to is gone.
            close(s.fd);
            *s = none;
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_inner_pid_is_the_last_of_nspid() {
        let status = b"Name:\tsh\nPid:\t4242\nNSpid:\t4242\t17\nPPid:\t1\n";
        assert_eq!(super::inner_pid(status), Some(17));
        assert_eq!(super::inner_pid(b"Name:\tx\nNSpid:\t9"), Some(9));
        assert_eq!(super::inner_pid(b"Name:\tx\n"), None);
    }

    #[test]
    fn proc_paths_are_terminated() {
        let mut p = [0u8; 48];
        super::proc_path(4_000_000_000, b"status", &mut p);
        let len = p.iter().position(|b| *b == 0).unwrap_or(48);
        assert_eq!(&p[..len], b"/proc/4000000000/status");
    }
}
