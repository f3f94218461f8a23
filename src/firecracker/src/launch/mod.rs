//! The launch sequence: spawn Firecracker (directly or through the jailer), wait for its API
//! socket, configure the VM (or load a snapshot), start it, and wait for the guest agent.
//!
//! 1. **prepare**: check the configuration (ids, paths, socket path lengths, files that must
//!    exist), create the log and metrics files; in jailer mode (**jail**) build the chroot and
//!    hard-link (or copy) the kernel, initrd, root file system, scratch disk and seccomp filter
//!    into it;
//! 2. **spawn** the console keeper ([`console`]: Firecracker's stdout is a socket it reads,
//!    keeping `console.log` bounded), then `firecracker --api-sock <dir>/fc.sock --id <id>
//!    [--seccomp-filter <bpf>]` (never `--no-seccomp`), or `jailer … -- --api-sock fc.sock
//!    [--seccomp-filter seccomp.bpf]` and then (**jailer**) read the real Firecracker pid from
//!    the jailer's pid file, open a pidfd on it, and move the keeper into the jailer's cgroup;
//! 3. **api-socket**: connect as soon as the socket accepts, within a deadline — the one
//!    connection every later request uses;
//! 4. **configure**: logger, metrics, machine-config, boot-source, the root
//!    drive (`is_read_only: true`), the scratch drive (read-write) if any, vsock, entropy — or,
//!    for a restore, `PUT /snapshot/load` ([`crate::snapshot`]);
//! 5. **ready-listener**, 6. **instance-start**, 7. **agent**: the ready signal on
//!    `agent.sock_1025`, `CONNECT 1024`, the protocol handshake.
//!
//! Paths Firecracker is given for per-VM files (logs, metrics, vsock, scratch disk) are relative
//! to its working directory: the sandbox directory in direct mode, the chroot's `/` in jailer
//! mode. So a snapshot taken of one VM names the same files relative to the next VM's
//! directory, which is what Firecracker's snapshot docs require of a restore.
//!
//! Every step after the spawn is raced against Firecracker exiting. A failure at any step kills
//! Firecracker (if it runs), removes the sockets made so far and, in jailer mode, the whole
//! chroot and the jailer's cgroups, and lets the console keeper finish (killing it if it does
//! not); the error names the step and carries the cause.

mod configure;
pub mod console;
mod process;
mod types;

use std::time::Instant;

pub use self::configure::tail;
pub(crate) use self::configure::{connect_api, explain, racing, teardown, wait_for_agent};
pub use self::console::ConsoleKeeper;
pub use self::process::argv;
pub use self::types::*;

use crate::client::ApiClient;
use crate::jailer::Jail;
use crate::vmm::Vmm;

/// Launches a VM: [`spawn`], then [`Spawned::boot`]. See the module docs for the steps.
pub async fn launch(cfg: &LaunchConfig) -> Result<Launched, LaunchError> {
    spawn(cfg).await?.boot(cfg).await
}

/// What runs after the spawn.
pub(crate) enum Steps<'a> {
    /// Configure from scratch and `InstanceStart`.
    Boot,
    /// `PUT /snapshot/load` and resume.
    Restore(&'a crate::snapshot::RestoreFrom),
}

/// Firecracker, started (steps 1 and 2) but not yet configured: the caller can record its pid
/// before anything else happens, then [`Spawned::boot`] it or [`Spawned::abort`] it.
#[derive(Debug)]
pub struct Spawned {
    pub(crate) vmm: Vmm,
    pub(crate) files: VmFiles,
    pub(crate) jail: Option<Jail>,
    pub(crate) console: Option<ConsoleKeeper>,
    pub(crate) t0: Instant,
}

/// In jailer mode, the jail [`spawn`] will build for `cfg` — its chroot and the jailer's cgroup
/// directories — without creating anything, so a caller can record them first; `None` in
/// direct mode.
pub async fn plan_jail(cfg: &LaunchConfig) -> Result<Option<Jail>, LaunchError> {
    let Some(j) = &cfg.jailer else {
        return Ok(None);
    };
    process::plan_jail(cfg, j)
        .await
        .map(Some)
        .map_err(|(step, cause)| LaunchError {
            vm_id: cfg.vm_id.to_string(),
            step,
            cause,
        })
}

/// Steps 1 and 2: checks, files (and the jail), the console keeper and the Firecracker process.
pub async fn spawn(cfg: &LaunchConfig) -> Result<Spawned, LaunchError> {
    let fail = |(step, cause): (Step, Cause)| LaunchError {
        vm_id: cfg.vm_id.to_string(),
        step,
        cause,
    };
    let (files, jail) = process::prepare(cfg).await.map_err(fail)?;
    let started = match console::start(cfg, &files).await {
        Ok((stdout, keeper)) => {
            let t0 = Instant::now();
            match process::start(cfg, &files, jail.as_ref(), stdout).await {
                Ok(vmm) => Ok((vmm, keeper, t0)),
                Err(e) => Err((e, keeper)),
            }
        }
        Err(e) => Err((e, None)),
    };
    let (vmm, keeper, t0) = match started {
        Ok(s) => s,
        Err((e, keeper)) => {
            if let Some(keeper) = keeper {
                // Nothing writes to its socket any more: it ends by itself.
                keeper.stop(console::CONSOLE_DRAIN).await;
            }
            if let Some(jail) = &jail
                && let Err(e) = jail.remove().await
            {
                tracing::warn!(error = %e, "cannot remove the jail after a failed spawn");
            }
            return Err(fail(e));
        }
    };
    tracing::debug!(id = %cfg.vm_id, pid = vmm.pid(), console = keeper.as_ref().map(|k| k.process.pid), jailed = jail.is_some(), "firecracker spawned");
    let spawned = Spawned {
        vmm,
        files,
        jail,
        console: keeper,
        t0,
    };
    if let (Some(keeper), Some(jail)) = (&spawned.console, &spawned.jail)
        && let Err(cause) = console::join_jail_cgroup(keeper, jail).await
    {
        spawned.abort().await;
        return Err(fail((Step::Jailer, cause)));
    }
    Ok(spawned)
}

impl Spawned {
    /// Firecracker's pid (the real one, also in jailer mode).
    pub fn pid(&self) -> u32 {
        self.vmm.pid()
    }

    pub fn files(&self) -> &VmFiles {
        &self.files
    }

    /// The jail, in jailer mode.
    pub fn jail(&self) -> Option<&Jail> {
        self.jail.as_ref()
    }

    /// The console keeper (not with a daemonizing jailer): a process to record with Firecracker.
    pub fn console_keeper(&self) -> Option<luminaguard_backend::ProcessRef> {
        self.console.as_ref().map(|k| k.process)
    }

    /// Steps 3 to 7: API socket, configuration, `InstanceStart`, the agent. `cfg` must be the
    /// one given to [`spawn`]. On failure everything is torn down.
    pub async fn boot(self, cfg: &LaunchConfig) -> Result<Launched, LaunchError> {
        self.finish(cfg, Steps::Boot).await
    }

    /// Runs `steps` (after the spawn) and turns the outcome into a [`Launched`] or, after a
    /// teardown, a [`LaunchError`].
    pub(crate) async fn finish(
        mut self,
        cfg: &LaunchConfig,
        steps: Steps<'_>,
    ) -> Result<Launched, LaunchError> {
        let outcome = match steps {
            Steps::Boot => configure::run(cfg, &self.files, &mut self.vmm, self.t0).await,
            Steps::Restore(from) => {
                crate::snapshot::run_restore(cfg, from, &self.files, &mut self.vmm, self.t0).await
            }
        };
        match outcome {
            Ok((api, agent, timings)) => {
                tracing::debug!(id = %cfg.vm_id, pid = self.vmm.pid(), ?timings, "firecracker VM ready");
                Ok(Launched {
                    pid: self.vmm.pid(),
                    vmm: self.vmm,
                    api,
                    agent,
                    files: self.files,
                    jail: self.jail,
                    console: self.console,
                    timings,
                })
            }
            Err((step, cause)) => {
                let cause = explain(cause, &mut self.vmm, &self.files).await;
                let jail = self.jail.as_ref();
                teardown(&mut self.vmm, &self.files, jail, &mut self.console).await;
                Err(LaunchError {
                    vm_id: cfg.vm_id.to_string(),
                    step,
                    cause,
                })
            }
        }
    }

    /// Kills Firecracker, removes its sockets (and the jail) and stops the console keeper,
    /// without booting.
    pub async fn abort(mut self) {
        let jail = self.jail.as_ref();
        teardown(&mut self.vmm, &self.files, jail, &mut self.console).await;
    }
}

impl Launched {
    /// Waits for Firecracker to exit (killing it if `kill`), then removes its sockets and, in
    /// jailer mode, the chroot and the jailer's cgroups, and lets the console keeper write what
    /// it was sent last (killing it if it does not). Returns the exit's description.
    pub async fn stop(mut self, kill: bool) -> String {
        drop(self.agent);
        if kill && let Err(e) = self.vmm.start_kill() {
            tracing::warn!(error = %e, "cannot kill firecracker");
        }
        let status = self.vmm.wait().await;
        let jail = self.jail.as_ref();
        teardown(&mut self.vmm, &self.files, jail, &mut self.console).await;
        status
    }

    /// The API client (pause/resume, snapshots).
    pub fn api(&self) -> &ApiClient {
        &self.api
    }
}
