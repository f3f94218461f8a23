//! Child processes: one thread spawns them, one thread reaps every child of the agent.
//!
//! As PID 1 (or a child subreaper) the agent inherits every orphan in its sandbox and must reap
//! them all, so it cannot leave reaping to a per-child `wait`. The reaper thread waits for
//! `SIGCHLD` and calls `waitpid(-1, WNOHANG)` until nothing is left, handing each exit status to
//! whoever spawned that pid, and discarding orphans'.
//!
//! Spawning runs on one long-lived thread, holding the same lock the reaper takes around
//! `waitpid`. That closes two races: a child that exits before it is registered is never reaped
//! unclaimed, and when `exec` fails, std's own `waitpid` on the failed child cannot be beaten to it
//! by the reaper. The long-lived thread also makes `PR_SET_PDEATHSIG` mean "the agent died" (the
//! signal fires when the *thread* that forked the child exits).

use std::collections::HashMap;
use std::io;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex, MutexGuard, mpsc as std_mpsc};

use nix::errno::Errno;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use signal_hook::consts::SIGCHLD;
use signal_hook::iterator::Signals;
use tokio::sync::oneshot;

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitReason {
    Code(i32),
    Signal(i32),
}

/// Errors starting the reaper, or spawning through it.
#[derive(Debug, thiserror::Error)]
pub enum ReaperError {
    #[error("cannot install the SIGCHLD handler: {0}")]
    Signals(io::Error),
    #[error("cannot start the {0} thread: {1}")]
    Thread(&'static str, io::Error),
    #[error("the spawner thread has stopped")]
    SpawnerGone,
    #[error("cannot start {program:?}: {source}")]
    Spawn { program: String, source: io::Error },
}

type SpawnJob = (
    Command,
    oneshot::Sender<Result<(Child, oneshot::Receiver<ExitReason>), ReaperError>>,
);

/// Handle to the spawner and reaper threads.
#[derive(Debug)]
pub struct Reaper {
    waiters: Arc<Mutex<HashMap<i32, oneshot::Sender<ExitReason>>>>,
    jobs: Mutex<std_mpsc::Sender<SpawnJob>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Reaper {
    /// Starts both threads. Call once per process.
    pub fn start() -> Result<Arc<Self>, ReaperError> {
        let waiters: Arc<Mutex<HashMap<i32, oneshot::Sender<ExitReason>>>> = Arc::default();
        let mut signals = Signals::new([SIGCHLD]).map_err(ReaperError::Signals)?;
        let reap_waiters = waiters.clone();
        std::thread::Builder::new()
            .name("lg-reaper".into())
            .spawn(move || {
                reap_all(&reap_waiters);
                for _ in signals.forever() {
                    reap_all(&reap_waiters);
                }
            })
            .map_err(|e| ReaperError::Thread("reaper", e))?;

        let (tx, rx) = std_mpsc::channel::<SpawnJob>();
        let spawn_waiters = waiters.clone();
        std::thread::Builder::new()
            .name("lg-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let mut table = lock(&spawn_waiters);
                    let program = cmd.get_program().to_string_lossy().into_owned();
                    #[allow(clippy::disallowed_methods)]
                    // dedicated spawner thread, not an executor
                    let result = match cmd.spawn() {
                        Ok(child) => {
                            let (exit_tx, exit_rx) = oneshot::channel();
                            table.insert(child.id() as i32, exit_tx);
                            Ok((child, exit_rx))
                        }
                        Err(source) => Err(ReaperError::Spawn { program, source }),
                    };
                    drop(table);
                    if let Err(Ok((child, _))) = reply.send(result) {
                        // The requester is gone; nobody will manage this child.
                        let _ = nix::sys::signal::kill(
                            Pid::from_raw(child.id() as i32),
                            nix::sys::signal::SIGKILL,
                        );
                    }
                }
            })
            .map_err(|e| ReaperError::Thread("spawner", e))?;
        Ok(Arc::new(Self {
            waiters,
            jobs: Mutex::new(tx),
        }))
    }

    /// Spawns `cmd`; returns the child (for its pipes and pid — never wait on it) and a receiver
    /// for its exit.
    pub async fn spawn(
        &self,
        cmd: Command,
    ) -> Result<(Child, oneshot::Receiver<ExitReason>), ReaperError> {
        let (tx, rx) = oneshot::channel();
        lock(&self.jobs)
            .send((cmd, tx))
            .map_err(|_| ReaperError::SpawnerGone)?;
        rx.await.map_err(|_| ReaperError::SpawnerGone)?
    }

    /// Children spawned through us that have not been reaped yet.
    pub fn live_children(&self) -> usize {
        lock(&self.waiters).len()
    }
}

fn reap_all(waiters: &Mutex<HashMap<i32, oneshot::Sender<ExitReason>>>) {
    loop {
        let mut table = lock(waiters);
        let (pid, reason) = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => (pid, ExitReason::Code(code)),
            Ok(WaitStatus::Signaled(pid, sig, _)) => (pid, ExitReason::Signal(sig as i32)),
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "waitpid failed");
                return;
            }
        };
        match table.remove(&pid.as_raw()) {
            Some(tx) => drop(tx.send(reason)),
            None => tracing::trace!(pid = pid.as_raw(), ?reason, "reaped an orphan"),
        }
    }
}
