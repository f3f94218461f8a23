//! Snapshots: pause → `PUT /snapshot/create` (full) → resume, and a new VM restored from one
//! with `PUT /snapshot/load`.
//!
//! What a snapshot is here: `vm.snap` (the microVM state), `vm.mem` (all guest memory) and,
//! when the VM has one, `scratch.img` — a copy (a reflink where the file system can, else a
//! byte copy) of the scratch disk taken while the VM is paused, so disk and memory agree.
//! Firecracker's docs: disk contents are not part of a snapshot, and a restore must find the
//! files the VM used "at the same relative paths". Per-VM paths given to Firecracker are
//! relative to its working directory (see [`crate::launch`]), so a restore in a new sandbox
//! directory (or a new chroot) opens that sandbox's own files; the scratch disk is copied
//! again for each restore and never shared read-write between two VMs. The vsock device's
//! `uds_path` is relative too, and is also named in `vsock_override` where the API has it
//! (Firecracker ≥ 1.16.0).
//!
//! A restored guest is made a new machine before it is used: its kernel gets fresh entropy and
//! reseeds its CRNG ([`reseed`]: VMGenID would do it only in a kernel with `CONFIG_VMGENID`,
//! which the project's image lacks), and its wall clock is set to the host's ([`set_clock`]: it
//! would otherwise resume at the snapshot's time). Either failing fails the restore. Nothing
//! reseeds user-space generators that cached randomness before the snapshot.
//!
//! Vsock: Firecracker resets the guest's vsock transport at `SnapshotCreate`, which closes every
//! connection when the VM runs again — the agent connection of the snapshotted VM included. The
//! agent's listening socket survives; [`create`] reconnects, and a restored VM is reached with
//! `CONNECT 1024` (no ready signal: the agent sent it on its first boot).

use std::path::{Path, PathBuf};
use std::time::Instant;

use luminaguard_protocol::Client;

use crate::client::{ApiClient, ApiError};
use crate::launch::{
    self, Cause, LaunchConfig, LaunchError, LaunchTimings, Launched, SCRATCH_FILE, Step,
    VSOCK_SOCKET, VmFiles,
};
use crate::models::{
    MemoryBackend, MemoryBackendType, SnapshotCreateParams, SnapshotLoadParams, SnapshotType,
    VmState, VsockOverride,
};
use crate::vmm::Vmm;

/// The microVM state file.
pub const STATE_FILE: &str = "vm.snap";
/// The guest memory file.
pub const MEMORY_FILE: &str = "vm.mem";

/// Why a snapshot could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot of firecracker {vm_id}: cannot {what}: {source}")]
    Api {
        vm_id: String,
        what: &'static str,
        source: ApiError,
    },
    #[error("snapshot of firecracker {vm_id}: cannot {what} {}: {source}", path.display())]
    Io {
        vm_id: String,
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "snapshot of firecracker {vm_id}: the VM was resumed but its agent is unreachable: {cause}"
    )]
    Agent { vm_id: String, cause: Cause },
}

/// A full snapshot on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub state: PathBuf,
    pub memory: PathBuf,
    /// The scratch disk as it was when the VM was paused.
    pub scratch: Option<PathBuf>,
}

impl Snapshot {
    /// The snapshot files in `dir`.
    pub fn in_dir(dir: &Path, scratch: bool) -> Self {
        Self {
            state: dir.join(STATE_FILE),
            memory: dir.join(MEMORY_FILE),
            scratch: scratch.then(|| dir.join(SCRATCH_FILE)),
        }
    }
}

/// Copies `src` to `dst` (which must not exist): a reflink (`FICLONE`, shares blocks
/// copy-on-write) where the file system supports it, else a byte copy.
pub async fn clone_file(src: &Path, dst: &Path) -> std::io::Result<()> {
    let (src, dst) = (src.to_owned(), dst.to_owned());
    tokio::task::spawn_blocking(move || {
        use std::os::fd::AsRawFd;
        let from = std::fs::File::open(&src)?;
        let to = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&dst)?;
        /// `_IOW(0x94, 9, int)`.
        const FICLONE: libc::c_ulong = 0x4004_9409;
        // SAFETY: FICLONE takes the source fd as its argument; both fds are open.
        let r = unsafe { libc::ioctl(to.as_raw_fd(), FICLONE, from.as_raw_fd()) };
        if r == 0 {
            return Ok(());
        }
        drop(to);
        #[allow(clippy::disallowed_methods)] // inside spawn_blocking
        std::fs::copy(&src, &dst).map(|_| ())
    })
    .await
    .map_err(std::io::Error::other)?
}

/// Moves `src` to `dst`: a rename, or a copy and a removal across file systems.
async fn move_file(src: &Path, dst: &Path) -> std::io::Result<()> {
    match tokio::fs::rename(src, dst).await {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            tokio::fs::copy(src, dst).await?;
            tokio::fs::remove_file(src).await
        }
        Err(e) => Err(e),
    }
}

/// Pauses `vm`, takes a full snapshot into `dest` (an existing directory), copies its scratch
/// disk there, resumes it, and reconnects to its agent (the snapshot reset its vsock
/// connections). The VM is resumed whatever failed after the pause.
pub async fn create(
    vm: &mut Launched,
    cfg: &LaunchConfig,
    dest: &Path,
) -> Result<Snapshot, SnapshotError> {
    let vm_id = cfg.vm_id.to_string();
    let api_err = |what, source| SnapshotError::Api {
        vm_id: vm_id.clone(),
        what,
        source,
    };
    let io_err = |what, path: &Path, source| SnapshotError::Io {
        vm_id: vm_id.clone(),
        what,
        path: path.to_owned(),
        source,
    };
    let has_scratch = tokio::fs::metadata(vm.files.root.join(SCRATCH_FILE))
        .await
        .is_ok();
    let snap = Snapshot::in_dir(dest, has_scratch);
    vm.api
        .patch_vm(VmState::Paused)
        .await
        .map_err(|e| api_err("pause the VM", e))?;
    let taken = take(vm, &snap).await;
    let resumed = vm.api.patch_vm(VmState::Resumed).await;
    let (what, path, source) = match taken {
        Ok(()) => {
            resumed.map_err(|e| api_err("resume the VM", e))?;
            let agent = reconnect(cfg, &vm.files, &mut vm.vmm)
                .await
                .map_err(|(_, cause)| SnapshotError::Agent {
                    vm_id: vm_id.clone(),
                    cause,
                })?;
            vm.agent = agent;
            return Ok(snap);
        }
        Err(Taken::Api(e)) => {
            if resumed.is_ok() {
                recover_agent(vm, cfg).await;
            }
            return Err(api_err("create the snapshot", e));
        }
        Err(Taken::Io(what, path, source)) => (what, path, source),
    };
    match resumed {
        Ok(()) => recover_agent(vm, cfg).await,
        Err(e) => tracing::warn!(error = %e, "cannot resume the VM after a failed snapshot"),
    }
    Err(io_err(what, &path, source))
}

/// After a failed `PUT /snapshot/create` (and the resume): the vsock transport may or may not
/// have been reset, so the agent is reached again unless it still answers.
async fn recover_agent(vm: &mut Launched, cfg: &LaunchConfig) {
    let alive = tokio::time::timeout(std::time::Duration::from_secs(1), vm.agent.ping()).await;
    if matches!(alive, Ok(Ok(_))) {
        return;
    }
    match reconnect(cfg, &vm.files, &mut vm.vmm).await {
        Ok(agent) => vm.agent = agent,
        Err((_, cause)) => tracing::warn!(%cause, "agent unreachable after a failed snapshot"),
    }
}

enum Taken {
    Api(ApiError),
    Io(&'static str, PathBuf, std::io::Error),
}

async fn take(vm: &mut Launched, snap: &Snapshot) -> Result<(), Taken> {
    let root = vm.files.root.clone();
    // Firecracker writes the files in its own root; they are moved out afterwards.
    let params = SnapshotCreateParams {
        snapshot_path: PathBuf::from(STATE_FILE),
        mem_file_path: PathBuf::from(MEMORY_FILE),
        snapshot_type: Some(SnapshotType::Full),
    };
    vm.api.create_snapshot(&params).await.map_err(Taken::Api)?;
    if let Some(scratch) = &snap.scratch {
        let src = root.join(SCRATCH_FILE);
        clone_file(&src, scratch)
            .await
            .map_err(|e| Taken::Io("copy the scratch disk", src, e))?;
    }
    for (name, dst) in [(STATE_FILE, &snap.state), (MEMORY_FILE, &snap.memory)] {
        let src = root.join(name);
        move_file(&src, dst)
            .await
            .map_err(|e| Taken::Io("move the snapshot file", src, e))?;
    }
    Ok(())
}

/// Reaches the agent again after its vsock connections were reset.
async fn reconnect(
    cfg: &LaunchConfig,
    files: &VmFiles,
    vmm: &mut Vmm,
) -> Result<Client, (Step, Cause)> {
    launch::wait_for_agent(cfg, files, vmm, None).await
}

/// Where a restore comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreFrom {
    pub snapshot: Snapshot,
    /// Name the vsock socket in `vsock_override` (the API has it from Firecracker 1.16.0).
    pub vsock_override: bool,
}

/// Starts a new VM from `from`: its own directory (`cfg.dir`), its own copy of the snapshot's
/// scratch disk, its own vsock socket; `PUT /snapshot/load`, resume, and the agent.
/// `cfg.scratch` is ignored (the snapshot's copy is used). `LaunchTimings::total` is
/// restore-to-ready: spawn to a finished handshake.
pub async fn restore(cfg: &LaunchConfig, from: &RestoreFrom) -> Result<Launched, LaunchError> {
    let mut cfg = cfg.clone();
    cfg.scratch = None;
    if let Some(src) = &from.snapshot.scratch {
        let dst = cfg.dir.join(SCRATCH_FILE);
        if let Err(source) = clone_file(src, &dst).await {
            return Err(LaunchError {
                vm_id: cfg.vm_id.to_string(),
                step: Step::Prepare,
                cause: Cause::Io {
                    what: "copy the snapshot's scratch disk",
                    path: src.clone(),
                    source,
                },
            });
        }
        if let Some(who) = &cfg.run_as
            && let Err(source) = std::os::unix::fs::chown(&dst, Some(who.uid), Some(who.gid))
        {
            return Err(LaunchError {
                vm_id: cfg.vm_id.to_string(),
                step: Step::Prepare,
                cause: Cause::Io {
                    what: "chown",
                    path: dst,
                    source,
                },
            });
        }
        cfg.scratch = Some(dst);
    }
    launch::spawn(&cfg).await?.restore(&cfg, from).await
}

impl launch::Spawned {
    /// Restores `from` into this spawned (not yet configured) Firecracker: its state and memory
    /// files are placed in the VM's root — the sandbox directory, or the chroot — as hard
    /// links (copies across file systems), so Firecracker, running as the VMM's user and
    /// possibly chrooted, opens them by relative name and they go when the VM's files go; then
    /// `PUT /snapshot/load`, resume and the agent. Firecracker only reads both files (the
    /// memory file is mapped privately), so one snapshot serves any number of restores; they
    /// must be readable by the VMM's user. On failure everything is torn down.
    pub async fn restore(
        self,
        cfg: &LaunchConfig,
        from: &RestoreFrom,
    ) -> Result<Launched, LaunchError> {
        let mut from = from.clone();
        for (src, name) in [
            (&mut from.snapshot.state, STATE_FILE),
            (&mut from.snapshot.memory, MEMORY_FILE),
        ] {
            let placed = match self.jail() {
                Some(jail) => jail.place(src, name, None).await.map(|_| ()),
                None => crate::jailer::place_file(src, &cfg.dir.join(name), None).await,
            };
            match placed {
                Ok(()) => *src = PathBuf::from(name),
                Err(e) => {
                    self.abort().await;
                    return Err(LaunchError {
                        vm_id: cfg.vm_id.to_string(),
                        step: Step::SnapshotFiles,
                        cause: Cause::Jail(e),
                    });
                }
            }
        }
        self.finish(cfg, launch::Steps::Restore(&from)).await
    }
}

/// The steps after the spawn of a restore: API socket, snapshot-load, resume, agent, reseed,
/// clock.
pub(crate) async fn run_restore(
    cfg: &LaunchConfig,
    from: &RestoreFrom,
    files: &VmFiles,
    vmm: &mut Vmm,
    t0: Instant,
) -> Result<(ApiClient, Client, LaunchTimings), (Step, Cause)> {
    let t = cfg.timeouts;
    let api = launch::racing(
        vmm,
        Step::ApiSocket,
        launch::connect_api(&files.api_socket, t.api_socket, t.request),
    )
    .await?;
    let api_ready = t0.elapsed();
    let t_cfg = Instant::now();
    let load = load_params(from);
    launch::racing(vmm, Step::SnapshotLoad, async {
        api.load_snapshot(&load).await.map_err(Cause::Api)
    })
    .await?;
    launch::racing(vmm, Step::Resume, async {
        api.patch_vm(VmState::Resumed).await.map_err(Cause::Api)
    })
    .await?;
    let configure = t_cfg.elapsed();
    let t_boot = Instant::now();
    let agent = launch::wait_for_agent(cfg, files, vmm, None).await?;
    launch::racing(vmm, Step::Reseed, reseed(&agent)).await?;
    launch::racing(vmm, Step::Clock, set_clock(&agent)).await?;
    Ok((
        api,
        agent,
        LaunchTimings {
            api_ready,
            configure,
            boot: t_boot.elapsed(),
            total: t0.elapsed(),
        },
    ))
}

/// How many bytes of the host's randomness a restored guest gets (see [`reseed`]).
pub const RESEED_BYTES: usize = 64;

/// Gives a restored guest's kernel [`RESEED_BYTES`] fresh bytes from the host's CSPRNG
/// (`getrandom`) and has it reseed its own at once (`luminaguard_agent::entropy`). Every VM
/// restored from one snapshot starts with the snapshot's kernel random state; VMGenID would
/// reseed it only in a guest kernel with `CONFIG_VMGENID`, which LuminaGuard's image (the
/// Debian cloud kernel) lacks. So this is never skipped: an agent that cannot do it fails the
/// restore.
pub(crate) async fn reseed(agent: &Client) -> Result<(), Cause> {
    use luminaguard_protocol::handshake::capability::RESEED;
    offers(agent, RESEED).map_err(Cause::Reseed)?;
    let mut entropy = vec![0u8; RESEED_BYTES];
    getrandom::fill(&mut entropy).map_err(|e| Cause::Reseed(format!("getrandom: {e}")))?;
    agent
        .reseed(entropy)
        .await
        .map_err(|e| Cause::Reseed(e.to_string()))
}

/// Sets a restored guest's wall clock to the host's: it resumes at the snapshot's time
/// otherwise (plus what its clocksource counted while it ran), which breaks certificate checks
/// and timestamps in the guest.
pub(crate) async fn set_clock(agent: &Client) -> Result<(), Cause> {
    use luminaguard_protocol::handshake::capability::SET_CLOCK;
    offers(agent, SET_CLOCK).map_err(Cause::Clock)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| Cause::Clock(format!("the host's clock is before 1970: {e}")))?;
    let nanos = u64::try_from(now.as_nanos())
        .map_err(|_| Cause::Clock("the host's clock is past 2554".into()))?;
    agent
        .set_clock(nanos)
        .await
        .map_err(|e| Cause::Clock(e.to_string()))
}

/// Whether the agent offered `capability` in its handshake.
fn offers(agent: &Client, capability: &str) -> Result<(), String> {
    match agent.peer().capabilities.iter().any(|c| c == capability) {
        true => Ok(()),
        false => Err(format!(
            "the agent ({}) does not offer {capability}",
            agent.peer().software
        )),
    }
}

/// The body of `PUT /snapshot/load` for a restore.
pub fn load_params(from: &RestoreFrom) -> SnapshotLoadParams {
    SnapshotLoadParams {
        snapshot_path: from.snapshot.state.clone(),
        mem_backend: MemoryBackend {
            backend_type: MemoryBackendType::File,
            backend_path: from.snapshot.memory.clone(),
        },
        track_dirty_pages: None,
        resume_vm: Some(false),
        network_overrides: None,
        vsock_override: from.vsock_override.then(|| VsockOverride {
            uds_path: PathBuf::from(VSOCK_SOCKET),
        }),
    }
}

/// Whether a Firecracker version (`1.16.1`, `v1.16.0-dev`) has `vsock_override` on load.
pub fn has_vsock_override(version: &str) -> bool {
    let v = version.trim().trim_start_matches('v');
    let mut parts = v.split(|c: char| !c.is_ascii_digit());
    let major: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let minor: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    (major, minor) >= (1, 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vsock_override_is_sent_only_where_the_api_has_it() {
        assert!(has_vsock_override("1.16.1"));
        assert!(has_vsock_override("v1.17.0-dev"));
        assert!(has_vsock_override("2.0.0"));
        assert!(!has_vsock_override("1.15.1"));
        assert!(!has_vsock_override("1.9.0"));
        assert!(!has_vsock_override("garbage"));
    }

    #[test]
    fn load_params_resume_separately_and_override_the_vsock_path() {
        let from = RestoreFrom {
            snapshot: Snapshot::in_dir(Path::new("/snap"), true),
            vsock_override: true,
        };
        assert_eq!(
            serde_json::to_value(load_params(&from)).unwrap(),
            serde_json::json!({
                "snapshot_path": "/snap/vm.snap",
                "mem_backend": {"backend_type": "File", "backend_path": "/snap/vm.mem"},
                "resume_vm": false,
                "vsock_override": {"uds_path": "agent.sock"},
            })
        );
        let from = RestoreFrom {
            vsock_override: false,
            ..from
        };
        assert!(serde_json::to_value(load_params(&from)).unwrap()["vsock_override"].is_null());
    }
}
