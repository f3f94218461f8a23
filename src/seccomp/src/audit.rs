//! The audit of denied system calls.
//!
//! A profile's EPERM answers are turned into `SECCOMP_RET_USER_NOTIF`, installed with a listener
//! (`SECCOMP_FILTER_FLAG_NEW_LISTENER`). A supervisor thread receives each denied call, records
//! it, and answers EPERM — so the sandboxed program sees exactly what a plain errno filter would
//! give it, and the sandbox learns who tried what. The record is bounded: the last
//! [`AuditLog::CAPACITY`] denials, plus a count per system call and of everything dropped.
//!
//! Failing closed: if the supervisor is gone (its fd closed), the kernel answers every call that
//! would have notified with ENOSYS — still denied.

use std::collections::{BTreeMap, VecDeque};
use std::os::fd::{AsRawFd, OwnedFd};

use serde::{Deserialize, Serialize};

/// One denied system call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Denial {
    /// Milliseconds since the Unix epoch.
    pub unix_ms: u64,
    /// Pid as seen by the supervisor (inside the sandbox's PID namespace).
    pub pid: u32,
    /// The process's command name, when it could still be read.
    pub comm: String,
    pub syscall: String,
    /// The first argument, which tells e.g. which socket family was asked for.
    pub arg0: u64,
}

/// A bounded record of denials.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditLog {
    /// The most recent denials, oldest first.
    pub recent: VecDeque<Denial>,
    /// Every denial ever seen, by system call name.
    pub counts: BTreeMap<String, u64>,
    /// Denials no longer in `recent`.
    pub dropped: u64,
}

impl AuditLog {
    pub const CAPACITY: usize = 256;

    pub fn record(&mut self, d: Denial) {
        *self.counts.entry(d.syscall.clone()).or_default() += 1;
        if self.recent.len() == Self::CAPACITY {
            self.recent.pop_front();
            self.dropped += 1;
        }
        self.recent.push_back(d);
    }

    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }
}

/// Errors serving the listener.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("seccomp notification listener failed: {0}")]
    Listener(std::io::Error),
}

/// Receives denials on `listener` until it fails, answering each EPERM and handing it to
/// `record`. Blocking: run it on a thread of its own, which must never itself make a denied call.
pub fn supervise(listener: &OwnedFd, mut record: impl FnMut(Denial)) -> Result<(), AuditError> {
    let fd = listener.as_raw_fd();
    loop {
        // SAFETY: seccomp_notif is plain data; the kernel requires it zeroed before RECV.
        let mut notif: libc::seccomp_notif = unsafe { std::mem::zeroed() };
        // SAFETY: RECV writes one seccomp_notif into the valid, exclusively borrowed `notif`.
        let rc = unsafe { libc::ioctl(fd, libc::SECCOMP_IOCTL_NOTIF_RECV, &raw mut notif) };
        if rc < 0 {
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                // Interrupted, or the caller died before we picked its call up.
                Some(libc::EINTR | libc::ENOENT) => continue,
                _ => return Err(AuditError::Listener(e)),
            }
        }
        // Recorded before the answer: by the time the denied call returns in the sandbox, its
        // record exists (and the caller still does, for its name).
        record(Denial {
            unix_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            pid: notif.pid,
            comm: comm(notif.pid),
            syscall: crate::names::name(i64::from(notif.data.nr)),
            arg0: notif.data.args[0],
        });
        let resp = libc::seccomp_notif_resp {
            id: notif.id,
            val: 0,
            error: -libc::EPERM,
            flags: 0,
        };
        // SAFETY: SEND reads one seccomp_notif_resp from the valid `resp`.
        let rc = unsafe { libc::ioctl(fd, libc::SECCOMP_IOCTL_NOTIF_SEND, &raw const resp) };
        if rc < 0 {
            let e = std::io::Error::last_os_error();
            // ENOENT: the caller was killed while waiting; its call is moot.
            if e.raw_os_error() != Some(libc::ENOENT) {
                return Err(AuditError::Listener(e));
            }
        }
    }
}

fn comm(pid: u32) -> String {
    #[allow(clippy::disallowed_methods)] // a few bytes from procfs, on the supervisor thread
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim_end().to_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn denial(syscall: &str) -> Denial {
        Denial {
            unix_ms: 0,
            pid: 1,
            comm: "x".into(),
            syscall: syscall.into(),
            arg0: 0,
        }
    }

    #[test]
    fn log_is_bounded_and_counts_everything() {
        let mut log = AuditLog::default();
        for i in 0..(AuditLog::CAPACITY + 10) {
            log.record(denial(if i % 2 == 0 { "mount" } else { "ptrace" }));
        }
        assert_eq!(log.recent.len(), AuditLog::CAPACITY);
        assert_eq!(log.dropped, 10);
        assert_eq!(log.total(), (AuditLog::CAPACITY + 10) as u64);
        assert_eq!(log.counts["mount"], (AuditLog::CAPACITY as u64 + 10) / 2);
    }
}
