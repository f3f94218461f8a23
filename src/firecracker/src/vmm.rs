//! The Firecracker process, however it was started: our own child (direct launch, or a jailer
//! that execs Firecracker in place), or a process we only know by pid — the jailer's grandchild
//! when it daemonizes, its child in a new PID namespace — tracked through a pidfd.
//!
//! A pidfd names one process for good (no pid reuse), becomes readable when that process
//! exits, and takes signals. Only a child's exit status can be read; for a process that is not
//! ours the status is reported as unknown.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::ExitStatus;

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::process::Child;

/// Why a process could not be tracked.
#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    /// `pidfd_open` failed (the process is gone, or the kernel is older than 5.3).
    #[error("cannot open a pidfd for pid {pid}: {source}")]
    PidfdOpen { pid: u32, source: std::io::Error },
    /// The pidfd could not be registered with the runtime.
    #[error("cannot watch the pidfd of pid {pid}: {source}")]
    Watch { pid: u32, source: std::io::Error },
}

/// Opens a pidfd for `pid`.
pub fn pidfd_open(pid: u32) -> Result<OwnedFd, VmmError> {
    let raw = libc::pid_t::try_from(pid).map_err(|_| VmmError::PidfdOpen {
        pid,
        source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
    })?;
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1; no memory is passed.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, raw, 0) };
    if fd < 0 {
        return Err(VmmError::PidfdOpen {
            pid,
            source: std::io::Error::last_os_error(),
        });
    }
    let fd = i32::try_from(fd).map_err(|_| VmmError::PidfdOpen {
        pid,
        source: std::io::Error::from(std::io::ErrorKind::InvalidData),
    })?;
    // SAFETY: the kernel just returned this fd to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sends `signal` through a pidfd (never to a recycled pid).
pub fn pidfd_signal(fd: &OwnedFd, signal: i32) -> std::io::Result<()> {
    // SAFETY: pidfd_send_signal with a null siginfo and no flags; `fd` is a valid pidfd.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if r < 0 {
        let e = std::io::Error::last_os_error();
        // ESRCH: it has exited already.
        if e.raw_os_error() == Some(libc::ESRCH) {
            return Ok(());
        }
        return Err(e);
    }
    Ok(())
}

/// Whether the process behind a pidfd has exited (the pidfd is readable), without waiting.
fn pidfd_exited(fd: &OwnedFd) -> bool {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, timeout 0: never blocks.
    let n = unsafe { libc::poll(&mut pfd, 1, 0) };
    n > 0 && pfd.revents & (libc::POLLIN | libc::POLLHUP) != 0
}

fn describe(status: std::io::Result<ExitStatus>) -> String {
    status.map_or_else(|e| format!("wait failed: {e}"), |s| s.to_string())
}

/// The status text of a process that is not our child.
pub const UNKNOWN_STATUS: &str = "exit status unknown: not our child";

enum Kind {
    Child(Child),
    Tracked { pidfd: AsyncFd<OwnedFd> },
}

/// A Firecracker process.
pub struct Vmm {
    pid: u32,
    kind: Kind,
    /// Kill it when this handle is dropped (a disposable VM).
    kill_on_drop: bool,
    /// Set once the exit has been seen.
    exited: Option<String>,
}

impl std::fmt::Debug for Vmm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vmm")
            .field("pid", &self.pid)
            .field(
                "tracked_by",
                &match self.kind {
                    Kind::Child(_) => "child",
                    Kind::Tracked { .. } => "pidfd",
                },
            )
            .field("exited", &self.exited)
            .finish()
    }
}

impl Vmm {
    /// Our own child (`kill_on_drop` is the child's own setting).
    pub fn child(child: Child, pid: u32) -> Self {
        Self {
            pid,
            kind: Kind::Child(child),
            kill_on_drop: false,
            exited: None,
        }
    }

    /// A process that is not our child, through a pidfd opened on it.
    pub fn tracked(pid: u32, pidfd: OwnedFd, kill_on_drop: bool) -> Result<Self, VmmError> {
        // SAFETY: an OwnedFd stays open, and is the same fd, for as long as the AsyncFd owns it.
        let pidfd =
            unsafe { AsyncFd::register_with_interest(pidfd, Interest::READABLE) }.map_err(|e| {
                VmmError::Watch {
                    pid,
                    source: e.into_parts().1,
                }
            })?;
        Ok(Self {
            pid,
            kind: Kind::Tracked { pidfd },
            kill_on_drop,
            exited: None,
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Whether the exit status can be known (the process is our child).
    pub fn is_child(&self) -> bool {
        matches!(self.kind, Kind::Child(_))
    }

    /// Waits for the exit; returns its description (`exit status: 0`, `signal: 9 (SIGKILL)`,
    /// or [`UNKNOWN_STATUS`]). Cancel-safe.
    pub async fn wait(&mut self) -> String {
        if let Some(s) = &self.exited {
            return s.clone();
        }
        let status = match &mut self.kind {
            Kind::Child(child) => describe(child.wait().await),
            Kind::Tracked { pidfd } => loop {
                match pidfd.readable().await {
                    Ok(mut guard) => {
                        if pidfd_exited(guard.get_inner()) {
                            break UNKNOWN_STATUS.to_owned();
                        }
                        guard.clear_ready();
                    }
                    Err(e) => break format!("cannot watch pid {}: {e}", self.pid),
                }
            },
        };
        self.exited = Some(status.clone());
        status
    }

    /// The exit, if it has happened; never waits.
    pub fn try_wait(&mut self) -> Option<String> {
        if self.exited.is_some() {
            return self.exited.clone();
        }
        let status = match &mut self.kind {
            Kind::Child(child) => child.try_wait().transpose().map(describe),
            Kind::Tracked { pidfd } => {
                pidfd_exited(pidfd.get_ref()).then(|| UNKNOWN_STATUS.to_owned())
            }
        };
        self.exited.clone_from(&status);
        status
    }

    /// Sends SIGKILL (through the pidfd for a tracked process) unless it has exited.
    pub fn start_kill(&mut self) -> std::io::Result<()> {
        if self.try_wait().is_some() {
            return Ok(());
        }
        match &mut self.kind {
            Kind::Child(child) => child.start_kill(),
            Kind::Tracked { pidfd } => pidfd_signal(pidfd.get_ref(), libc::SIGKILL),
        }
    }
}

impl Drop for Vmm {
    fn drop(&mut self) {
        if self.kill_on_drop
            && let Kind::Tracked { pidfd } = &self.kind
            && let Err(e) = pidfd_signal(pidfd.get_ref(), libc::SIGKILL)
        {
            tracing::warn!(pid = self.pid, error = %e, "cannot kill firecracker on drop");
        }
    }
}
