//! The Firecracker backend: one Firecracker microVM per sandbox, its agent reached over hybrid
//! vsock. Structured like the QEMU backend (`luminaguard-qemu`): every resource is named in the
//! sandbox's `meta.json` before it exists, and a failed create removes everything the record
//! names.
//!
//! 1. the sandbox directory and record (`backend: "firecracker"`, `accel: "kvm"`,
//!    `agent_vsock_port: 1024`);
//! 2. the cgroup (guest RAM + VMM overhead, PIDs, CPU), unless the request says without;
//! 3. as root: the VMM's own uid/gid (recorded as `vmm_uid`), owner of the sandbox directory;
//! 4. Firecracker, spawned into the cgroup as that uid ([`crate::launch::spawn`]) and recorded as
//!    `init` (and `owner` for a long-lived sandbox) before it is configured;
//! 5. configuration, `InstanceStart` and the agent's handshake ([`crate::launch::Spawned::boot`]).
//!
//! Not yet wired into the backend (the launch has them: [`crate::jailer`], [`crate::snapshot`],
//! [`crate::seccomp`]): jailer mode, snapshots, the compiled custom seccomp filter; nor
//! networking or a scratch disk (the guest's writable layer is the tmpfs
//! `luminaguard.scratch_mb` sizes, as under QEMU).

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::vmm::Vmm;
use luminaguard_backend::{Backend, BackendError, CreateRequest, ProcessRef, Sandbox, SandboxMeta};
use luminaguard_cgroup::{Cgroup, Limits};
use luminaguard_core::ByteSize;
use luminaguard_image::store::{ArtifactKind, Image};
use luminaguard_protocol::{AGENT_VSOCK_PORT, Client, ClientOptions};

use crate::boot_args::KernelArgs;
use crate::launch::{
    self, LaunchConfig, LaunchError, LaunchTimings, Lifetime, RunAs, Timeouts, VmId,
};
use crate::models::{LogLevel, MachineConfiguration};

const NAME: &str = "firecracker";

/// How long `destroy` waits for the guest to power off after the agent acknowledged `Shutdown`.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// Memory Firecracker may use beyond guest RAM. Firecracker documents under 5 MiB of its own;
/// this is a bound with room for its API and vCPU threads, not a measurement (none was possible
/// here: no usable KVM).
pub const VMM_MEMORY_OVERHEAD: ByteSize = ByteSize(64 * ByteSize::MIB);
/// Threads of Firecracker: the API thread, the VMM thread, one per vCPU.
pub const VMM_PIDS: u64 = 64;

/// The files a guest boots from. Firecracker needs the ELF `vmlinux` on x86_64, and the root
/// file system is required: it is attached read-only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestImage {
    pub digest: Option<String>,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub rootfs: PathBuf,
}

fn setup(step: &'static str, reason: impl std::fmt::Display) -> BackendError {
    BackendError::Setup {
        backend: NAME,
        step,
        reason: reason.to_string(),
    }
}

fn launch_failed(e: LaunchError) -> BackendError {
    setup(e.step.as_str(), e.cause)
}

impl GuestImage {
    /// The boot files of a store image.
    pub fn from_store(image: &Image) -> Result<Self, BackendError> {
        let kernel = image.artifact_path(ArtifactKind::Vmlinux).ok_or_else(|| {
            setup(
                "find the image's vmlinux",
                "the image has no uncompressed ELF kernel, which Firecracker needs",
            )
        })?;
        let initrd = image
            .artifact_path(ArtifactKind::Initramfs)
            .ok_or_else(|| setup("find the image's initramfs", "the image has none"))?;
        let rootfs = image
            .artifact_path(ArtifactKind::Rootfs)
            .ok_or_else(|| setup("find the image's root file system", "the image has none"))?;
        Ok(Self {
            digest: Some(image.digest.to_string()),
            kernel,
            initrd,
            rootfs,
        })
    }
}

/// Runs each sandbox as a Firecracker microVM.
#[derive(Debug, Clone)]
pub struct FirecrackerBackend {
    firecracker: PathBuf,
    image: GuestImage,
    seccomp_filter: Option<PathBuf>,
    client: ClientOptions,
    timeouts: Timeouts,
    entropy: bool,
}

impl FirecrackerBackend {
    /// `firecracker`: the binary. Firecracker's built-in seccomp filters apply unless
    /// [`FirecrackerBackend::with_seccomp_filter`] names a compiled one.
    pub fn new(firecracker: PathBuf, image: GuestImage, client: ClientOptions) -> Self {
        Self {
            firecracker,
            image,
            seccomp_filter: None,
            client,
            timeouts: Timeouts::default(),
            entropy: true,
        }
    }

    /// A BPF file from the same release's `seccompiler-bin`, for `--seccomp-filter`.
    pub fn with_seccomp_filter(mut self, filter: Option<PathBuf>) -> Self {
        self.seccomp_filter = filter;
        self
    }

    pub fn with_timeouts(mut self, timeouts: Timeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    pub fn image(&self) -> &GuestImage {
        &self.image
    }

    /// [`Backend::create`], also returning how long each phase took.
    pub async fn create_timed(
        &self,
        req: CreateRequest,
    ) -> Result<(Sandbox, LaunchTimings), BackendError> {
        let (dir, mut meta) = luminaguard_backend::begin_create(&req, NAME, |m| {
            m.accel = Some("kvm".into());
            m.agent_vsock_port = Some(AGENT_VSOCK_PORT);
        })
        .await?;
        match self.start(&req, &dir, &mut meta).await {
            Ok((client, timings)) => Ok((
                Sandbox::new(req.id, dir, meta, client).with_graceful_shutdown(SHUTDOWN_GRACE),
                timings,
            )),
            Err(e) => {
                luminaguard_backend::abandon_create(dir, meta).await;
                Err(e)
            }
        }
    }

    /// Everything after the record exists; on error the caller removes what the record names.
    async fn start(
        &self,
        req: &CreateRequest,
        dir: &Path,
        meta: &mut SandboxMeta,
    ) -> Result<(Client, LaunchTimings), BackendError> {
        let spec = &req.spec;
        if req.workspace.is_some() {
            return Err(setup(
                "share the workspace",
                "the firecracker backend cannot share a host directory yet (no --workspace)",
            ));
        }
        let vcpus = u8::try_from(spec.vcpus)
            .ok()
            .filter(|v| (1..=crate::models::machine_config::MAX_VCPUS).contains(v))
            .ok_or_else(|| {
                setup(
                    "configure the machine",
                    format!("{} vCPUs: Firecracker runs 1 to 32", spec.vcpus),
                )
            })?;
        let cgroup = if req.without_cgroup {
            tracing::warn!(id = %req.id, "no cgroup limits: the VMM's memory, PIDs and CPU are not capped");
            None
        } else {
            Some(self.create_cgroup(req, dir, meta).await?)
        };
        let run_as = if nix_is_root() {
            let who = self.identity(req).await?;
            meta.vmm_uid = Some(who.uid);
            meta.save(dir).await?;
            std::os::unix::fs::chown(dir, Some(who.uid), Some(who.gid))
                .map_err(|e| setup("give the sandbox directory to the VMM's user", e))?;
            Some(who)
        } else {
            None
        };
        let vm_id = VmId::new(&req.id.short_name()).map_err(|e| setup("name the VM", e))?;
        let cfg = LaunchConfig {
            firecracker: self.firecracker.clone(),
            dir: dir.to_owned(),
            vm_id,
            seccomp_filter: self.seccomp_filter.clone(),
            machine: MachineConfiguration::new(vcpus, spec.memory.bytes() / ByteSize::MIB),
            kernel: self.image.kernel.clone(),
            initrd: Some(self.image.initrd.clone()),
            boot_args: KernelArgs::luminaguard_guest(spec.scratch.bytes() / ByteSize::MIB)
                .map_err(|e| setup("build the guest kernel command line", e))?,
            rootfs: self.image.rootfs.clone(),
            scratch: None,
            entropy: self.entropy,
            log_level: LogLevel::Warning,
            timeouts: self.timeouts,
            client: self.client.clone(),
            lifetime: if req.persistent {
                Lifetime::Detached
            } else {
                Lifetime::DiesWithCreator
            },
            run_as,
            cgroup_procs: cgroup
                .iter()
                .flat_map(|cg| cg.dirs().iter().map(|d| d.join("cgroup.procs")))
                .collect(),
            jailer: None,
        };
        let spawned = launch::spawn(&cfg).await.map_err(launch_failed)?;
        let init = i32::try_from(spawned.pid()).ok().and_then(ProcessRef::of);
        let Some(init) = init else {
            spawned.abort().await;
            return Err(setup(
                "spawn",
                format!(
                    "firecracker exited at once: {}",
                    launch::tail(&dir.join(launch::STDERR_LOG), 2048).await
                ),
            ));
        };
        meta.init = Some(init);
        if req.persistent {
            // From now on the sandbox lives as long as its VMM, not as long as its creator.
            meta.owner = init;
        }
        if let Err(e) = meta.save(dir).await {
            spawned.abort().await;
            return Err(e.into());
        }
        let launched = spawned.boot(&cfg).await.map_err(launch_failed)?;
        tracing::debug!(id = %req.id, pid = launched.pid, timings = ?launched.timings, "firecracker sandbox ready");
        reap(req.id.to_string(), launched.vmm);
        Ok((launched.agent, launched.timings))
    }

    async fn create_cgroup(
        &self,
        req: &CreateRequest,
        dir: &Path,
        meta: &mut SandboxMeta,
    ) -> Result<Cgroup, BackendError> {
        let limits = Limits {
            memory_bytes: req
                .spec
                .memory
                .bytes()
                .saturating_add(VMM_MEMORY_OVERHEAD.bytes()),
            pids: VMM_PIDS,
            cpus: Some(req.spec.vcpus),
        };
        luminaguard_backend::create_cgroup(&req.id, dir, meta, limits).await
    }

    /// The VMM's unprivileged identity: a uid/gid of its own (not one a live VMM of any backend
    /// holds), plus `/dev/kvm`'s group.
    async fn identity(&self, req: &CreateRequest) -> Result<RunAs, BackendError> {
        let runtime = req.runtime.clone();
        let taken =
            tokio::task::spawn_blocking(move || luminaguard_backend::live_vmm_uids(&runtime))
                .await?;
        let kvm_group = tokio::fs::metadata("/dev/kvm")
            .await
            .ok()
            .map(|m| std::os::unix::fs::MetadataExt::gid(&m));
        Ok(vmm_identity(req.id.as_str(), &taken, kvm_group))
    }
}

fn nix_is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// First uid/gid of the range VMMs run as, and its size (the same scheme as the QEMU backend's,
/// so uids are unique across both: `live_vmm_uids` reads every backend's records).
pub const VMM_ID_BASE: u32 = 0x5a00_0000;
pub const VMM_ID_RANGE: u32 = 1 << 20;

/// Derived from a digest of the whole id, moved on while `taken` holds it.
pub fn vmm_identity(id: &str, taken: &[u32], kvm_group: Option<u32>) -> RunAs {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(id.as_bytes());
    let seed = u32::from_le_bytes([digest[0], digest[1], digest[2], digest[3]]);
    let mut offset = seed % VMM_ID_RANGE;
    while taken.contains(&(VMM_ID_BASE + offset)) {
        offset = (offset + 1) % VMM_ID_RANGE;
    }
    let uid = VMM_ID_BASE + offset;
    RunAs {
        uid,
        gid: uid,
        groups: kvm_group.into_iter().collect(),
    }
}

/// Waits for Firecracker so it is reaped when it exits (the guest powered off, or it was
/// killed). For a disposable sandbox the child is killed if this task is dropped with the
/// runtime; the record still names it for `destroy` and `gc`.
fn reap(id: String, mut vmm: Vmm) {
    tokio::spawn(async move {
        let status = vmm.wait().await;
        tracing::debug!(%id, ?status, "firecracker exited");
    });
}

impl Backend for FirecrackerBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn create(&self, req: CreateRequest) -> Result<Sandbox, BackendError> {
        luminaguard_backend::refuse_network(&req, self.name())?;
        self.create_timed(req).await.map(|(sandbox, _)| sandbox)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_are_stable_distinct_and_skip_taken_uids() {
        let a = vmm_identity("task-1", &[], None);
        assert_eq!(a, vmm_identity("task-1", &[], None));
        assert!(a.uid >= VMM_ID_BASE && a.uid < VMM_ID_BASE + VMM_ID_RANGE);
        assert_eq!(a.gid, a.uid);
        assert_ne!(a.uid, vmm_identity("task_1", &[], None).uid);
        let moved = vmm_identity("task-1", &[a.uid], Some(108));
        assert_ne!(moved.uid, a.uid);
        assert_eq!(moved.groups, [108]);
    }
}
