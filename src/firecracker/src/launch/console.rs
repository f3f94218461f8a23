//! The guest's serial console: Firecracker writes it to its stdout, which is one end of a socket
//! pair whose other end a console keeper ([`luminaguard_backend::console`]) reads, keeping
//! `console.log` within [`LaunchConfig::console`] however much the guest prints.
//!
//! In jailer mode the jailer passes its stdout on to the Firecracker it execs, so the same
//! socket reaches it — unless it daemonizes (`--daemonize`): then it points its stdio at
//! `/dev/null` itself, no keeper is started, and `console.log` holds one line saying why it is
//! empty.
//!
//! The pair is the shared module's `SOCK_STREAM` pair, which Firecracker makes non-blocking on
//! its side (v1.16.1 sets `O_NONBLOCK` on its stdout when the serial console goes there): a
//! keeper that lags until the socket's buffer is full costs the guest console bytes (`EAGAIN`,
//! dropped and counted in Firecracker's `uart` metrics), not speed. A keeper that died leaves
//! Firecracker's end without a reader, so its writes fail with `EPIPE` — Firecracker is a Rust
//! program, which ignores `SIGPIPE` — (the first one with `ECONNRESET` if the keeper died with
//! output unread) and its serial device drops the output rather than blocking the guest.

use std::os::fd::OwnedFd;
use std::process::Stdio;
use std::time::Duration;

use luminaguard_backend::ProcessRef;
use luminaguard_backend::console::{Keeper, start_console};

use super::process::open_cgroup_procs;
use super::types::*;
use crate::jailer::Jail;
use crate::vmm;

/// What `console.log` says when a daemonizing jailer sent the console to `/dev/null`.
pub const DAEMONIZED_NOTE: &str = "[luminaguard: the jailer was started with --daemonize, which \
     sends the guest's serial console to /dev/null; nothing is kept here]\n";

/// How long, once Firecracker is gone, the keeper may take to write what it was sent last
/// before it is killed.
pub const CONSOLE_DRAIN: Duration = Duration::from_secs(1);

/// The keeper of a VM's `console.log`.
#[derive(Debug)]
pub struct ConsoleKeeper {
    /// The keeper, by pid and start time. It outlives its creator: record it (a sandbox's
    /// `meta.helpers`) so that `destroy` and `gc` kill it.
    pub process: ProcessRef,
    keeper: Keeper,
}

impl ConsoleKeeper {
    /// Once Firecracker is gone (the keeper's input closed): waits at most `limit` for the keeper
    /// to write what it was sent last and exit, and kills it if it has not.
    pub async fn stop(self, limit: Duration) {
        let process = self.process;
        if self.keeper.finished(limit).await {
            return;
        }
        tracing::warn!(
            pid = process.pid,
            "the console keeper did not finish within {limit:?}; killing it"
        );
        kill(process);
    }
}

/// Kills `process` if it is still that process: a pidfd pins it first, so a recycled pid is
/// never signalled.
fn kill(process: ProcessRef) {
    let Ok(pid) = u32::try_from(process.pid) else {
        return;
    };
    let Ok(fd) = vmm::pidfd_open(pid) else {
        return;
    };
    if process.alive()
        && let Err(e) = vmm::pidfd_signal(&fd, libc::SIGKILL)
    {
        tracing::warn!(pid, error = %e, "cannot kill the console keeper");
    }
}

/// Firecracker's stdout, and the keeper behind it (none for a daemonizing jailer).
pub(super) async fn start(
    cfg: &LaunchConfig,
    files: &VmFiles,
) -> Result<(Stdio, Option<ConsoleKeeper>), (Step, Cause)> {
    if cfg.jailer.as_ref().is_some_and(|j| j.daemonize) {
        tokio::fs::write(&files.console, DAEMONIZED_NOTE)
            .await
            .map_err(|source| {
                (
                    Step::Prepare,
                    Cause::Io {
                        what: "write",
                        path: files.console.clone(),
                        source,
                    },
                )
            })?;
        return Ok((Stdio::null(), None));
    }
    let procs: Vec<OwnedFd> = open_cgroup_procs(cfg).await?;
    let started = start_console(
        &files.console,
        cfg.console,
        &procs,
        cfg.run_as.as_ref(),
        None,
    )
    .await
    .map_err(|e| (Step::Spawn, Cause::Console(e)))?;
    Ok((
        Stdio::from(started.vmm_end),
        Some(ConsoleKeeper {
            process: started.process,
            keeper: started.keeper,
        }),
    ))
}

/// Jailer mode: moves the keeper into the cgroup the jailer made for Firecracker (it did not
/// exist when the keeper started), so the sandbox's limits cover it as they cover Firecracker.
pub(super) async fn join_jail_cgroup(keeper: &ConsoleKeeper, jail: &Jail) -> Result<(), Cause> {
    for dir in &jail.cgroup_dirs {
        let procs = dir.join("cgroup.procs");
        tokio::fs::write(&procs, keeper.process.pid.to_string())
            .await
            .map_err(|source| Cause::Io {
                what: "move the console keeper into",
                path: procs.clone(),
                source,
            })?;
    }
    Ok(())
}
