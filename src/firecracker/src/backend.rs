//! The Firecracker backend: one Firecracker microVM per sandbox, its agent reached over hybrid
//! vsock. Structured like the QEMU backend (`luminaguard-qemu`): every resource is named in the
//! sandbox's `meta.json` before it exists, and a failed create removes everything the record
//! names.
//!
//! 1. the sandbox directory and record (`backend: "firecracker"`, `accel: "kvm"`,
//!    `agent_vsock_port: 1024`);
//! 2. as root: the VMM's own uid/gid (recorded as `vmm_uid`), owner of the sandbox directory
//!    in direct mode;
//! 3. direct mode: the cgroup (guest RAM + VMM overhead, PIDs, CPU), unless the request says
//!    without. Jailer mode ([`FirecrackerBackend::with_jailer`]): the same limits as the
//!    jailer's `--cgroup` keys; the jail is planned and its chroot
//!    (`<runtime root>/jail/<exec-file-name>/<vm id>`, recorded as `chroot`) and the jailer's
//!    cgroup directories (`cgroup_dirs`) recorded before anything exists;
//! 4. Firecracker, spawned into the cgroup as that uid — or by the jailer, chrooted, in a new
//!    PID namespace — ([`crate::launch::spawn`]), with the seccomp filter if one is set
//!    ([`FirecrackerBackend::with_seccomp_filter`], [`FirecrackerBackend::with_custom_seccomp`]),
//!    and recorded as `init` (the real Firecracker: in jailer mode the pid from the jailer's pid
//!    file) and as `owner` for a long-lived sandbox, before it is configured; its stdout goes to
//!    a console keeper that bounds `console.log` (`luminaguard_backend::console`), recorded in
//!    `helpers` with it;
//! 5. configuration, `InstanceStart` and the agent's handshake ([`crate::launch::Spawned::boot`]).
//!
//! Removal (`destroy`, `gc`, a failed create) works from the record alone: kill `init`, remove
//! the cgroups, the chroot and the sandbox directory.
//!
//! Templates ([`crate::template`]): [`FirecrackerBackend::create_template`] boots a disposable
//! sandbox, snapshots it and removes it; a backend [`FirecrackerBackend::with_template`] then
//! creates every sandbox by restoring that snapshot instead of booting (step 5 becomes `PUT
//! /snapshot/load`, resume, the agent, and the guest kernel's reseed with fresh entropy), after
//! checking that the template holds the VM the request asks for.
//!
//! Not wired into the backend: a scratch disk (the guest's writable layer is the tmpfs
//! `luminaguard.scratch_mb` sizes, as under QEMU).

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::vmm::Vmm;
use luminaguard_backend::network::MicrovmNetwork;
use luminaguard_backend::resolver::DnsOptions;
use luminaguard_backend::{Backend, BackendError, CreateRequest, ProcessRef, Sandbox, SandboxMeta};
use luminaguard_cgroup::{Cgroup, Limits};
use luminaguard_core::ByteSize;
use luminaguard_image::store::{ArtifactKind, Image};
use luminaguard_net::Uplink;
use luminaguard_net::topology::{ROUTER_INNER_ADDR, SANDBOX_ADDR};
use luminaguard_protocol::{AGENT_VSOCK_PORT, Client, ClientOptions};

use crate::boot_args::KernelArgs;
use crate::jailer::{CgroupVersion, JailCgroups, JailerConfig};
use crate::launch::Launched;
use crate::launch::{
    self, LaunchConfig, LaunchError, LaunchNet, LaunchTimings, Lifetime, RunAs, Timeouts, VmId,
};
use crate::models::{LogLevel, MachineConfiguration};
use crate::seccomp::{self, SeccompError};
use crate::snapshot::RestoreFrom;
use crate::template::{NetShape, Template, TemplateManifest, Wanted};

const NAME: &str = "firecracker";
/// The step a failure to make a template is reported at.
const TEMPLATE_STEP: &str = "make the template";

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
    jailer: Option<JailerConfig>,
    client: ClientOptions,
    timeouts: Timeouts,
    entropy: bool,
    uplink: Uplink,
    dns: Option<DnsOptions>,
    template: Option<Template>,
}

impl FirecrackerBackend {
    /// `firecracker`: the binary. Firecracker's built-in seccomp filters apply unless
    /// [`FirecrackerBackend::with_seccomp_filter`] names a compiled one.
    pub fn new(firecracker: PathBuf, image: GuestImage, client: ClientOptions) -> Self {
        Self {
            firecracker,
            image,
            seccomp_filter: None,
            jailer: None,
            client,
            timeouts: Timeouts::default(),
            entropy: true,
            uplink: Uplink::default(),
            dns: None,
            template: None,
        }
    }

    /// Creates every sandbox by restoring `template` (see [`crate::template`]) instead of
    /// booting; a request for another VM than the template holds is refused. `None`: boot.
    pub fn with_template(mut self, template: Option<Template>) -> Self {
        self.template = template;
        self
    }

    /// Where sandboxes with an egress policy reach the world (the host's own namespace by
    /// default; see `luminaguard_net::Uplink`).
    pub fn with_uplink(mut self, uplink: Uplink) -> Self {
        self.uplink = uplink;
        self
    }

    /// Lets policies name domains: the sandbox gets a DNS-pinning resolver (see
    /// `luminaguard_backend::resolver`), the process `exe dns-resolver`, asking `upstream` (or
    /// the uplink's `resolv.conf` nameserver). Without this, a policy naming a domain is
    /// refused.
    pub fn with_resolver(mut self, exe: PathBuf, upstream: Option<std::net::SocketAddr>) -> Self {
        self.dns = Some(DnsOptions { exe, upstream });
        self
    }

    /// A BPF file from the same release's `seccompiler-bin`, for `--seccomp-filter` (in jailer
    /// mode linked into the chroot). `None`: Firecracker's built-in filters.
    pub fn with_seccomp_filter(mut self, filter: Option<PathBuf>) -> Self {
        self.seccomp_filter = filter;
        self
    }

    /// Compiles LuminaGuard's custom policy ([`seccomp::POLICY_X86_64`]) with `seccompiler`
    /// (the `seccompiler-bin` of the same release as the firecracker binary;
    /// [`seccomp::find_seccompiler`] finds it) into `cache_dir` — once per policy and compiler,
    /// later calls find the cached file — and runs every VMM with it.
    pub async fn with_custom_seccomp(
        self,
        seccompiler: &Path,
        cache_dir: &Path,
    ) -> Result<Self, SeccompError> {
        let bpf = seccomp::compile(seccompiler, seccomp::POLICY_X86_64, cache_dir).await?;
        tracing::debug!(bpf = %bpf.display(), "custom seccomp filter");
        Ok(self.with_seccomp_filter(Some(bpf)))
    }

    /// Starts every VMM through `jailer` (the same release's `jailer` binary) with
    /// [`JailerConfig::new`]'s defaults: a new PID namespace, not daemonized (so the guest
    /// console still reaches `console.log`). Needs root. `None`: direct mode.
    pub fn with_jailer(self, jailer: Option<PathBuf>) -> Self {
        self.with_jailer_config(jailer.map(JailerConfig::new))
    }

    /// [`FirecrackerBackend::with_jailer`] with every option. Per sandbox, the backend sets
    /// `cgroups` (from the request's limits, for the host's cgroup version) and `chroot_base`
    /// (`<runtime root>/jail`); whatever they hold here is replaced.
    pub fn with_jailer_config(mut self, jailer: Option<JailerConfig>) -> Self {
        self.jailer = jailer;
        self
    }

    /// The seccomp filter every VMM gets (`None`: Firecracker's built-in filters).
    pub fn seccomp_filter(&self) -> Option<&Path> {
        self.seccomp_filter.as_deref()
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
        let (launched, _) = self
            .start_vm(req, dir, meta, self.template.as_ref())
            .await?;
        tracing::debug!(id = %req.id, pid = launched.pid, timings = ?launched.timings, restored = self.template.is_some(), "firecracker sandbox ready");
        let Launched {
            vmm,
            agent,
            timings,
            ..
        } = launched;
        reap(req.id.to_string(), vmm);
        Ok((agent, timings))
    }

    /// Boots a disposable sandbox for `req`, snapshots it into `dest` (which must not exist;
    /// its parent must), seals it as a template and removes the sandbox. The template is made
    /// in this backend's mode (jailer or direct), and only restores in that mode.
    pub async fn create_template(
        &self,
        mut req: CreateRequest,
        dest: &Path,
    ) -> Result<Template, BackendError> {
        req.persistent = false;
        tokio::fs::create_dir(dest)
            .await
            .map_err(|e| setup(TEMPLATE_STEP, format!("{}: {e}", dest.display())))?;
        let made = self.snapshot_fresh(&req, dest).await;
        if made.is_err()
            && let Err(e) = tokio::fs::remove_dir_all(dest).await
        {
            tracing::warn!(dest = %dest.display(), error = %e, "cannot remove a failed template");
        }
        made
    }

    async fn snapshot_fresh(
        &self,
        req: &CreateRequest,
        dest: &Path,
    ) -> Result<Template, BackendError> {
        let (dir, mut meta) = luminaguard_backend::begin_create(req, NAME, |m| {
            m.accel = Some("kvm".into());
            m.agent_vsock_port = Some(AGENT_VSOCK_PORT);
        })
        .await?;
        let (mut launched, cfg) = match self.start_vm(req, &dir, &mut meta, None).await {
            Ok(vm) => vm,
            Err(e) => {
                luminaguard_backend::abandon_create(dir, meta).await;
                return Err(e);
            }
        };
        let taken = async {
            let version = launched
                .api
                .version()
                .await
                .map_err(|e| setup(TEMPLATE_STEP, e))?;
            crate::snapshot::create(&mut launched, &cfg, dest)
                .await
                .map_err(|e| setup(TEMPLATE_STEP, e))?;
            Ok::<_, BackendError>(version.firecracker_version)
        }
        .await;
        let Launched { vmm, agent, .. } = launched;
        reap(req.id.to_string(), vmm);
        let sandbox =
            Sandbox::new(req.id.clone(), dir, meta, agent).with_graceful_shutdown(SHUTDOWN_GRACE);
        let removed = sandbox.destroy().await;
        let version = taken?;
        removed?;
        let manifest = TemplateManifest {
            format: crate::template::FORMAT,
            image: self.image.digest.clone(),
            vcpus: cfg.machine.vcpu_count,
            memory_mib: cfg.machine.mem_size_mib,
            scratch_mib: req.spec.scratch.bytes() / ByteSize::MIB,
            network: net_shape(&req.spec.network),
            jailed: self.jailer.is_some(),
            firecracker_version: version,
            created_unix_ms: luminaguard_backend::state::now_unix_ms(),
        };
        Template::seal(dest, manifest)
            .await
            .map_err(|e| setup(TEMPLATE_STEP, e))
    }

    /// Starts the VM — booted, or restored from `template` — and returns it with the launch
    /// configuration it was started with. On error the caller removes what the record names.
    async fn start_vm(
        &self,
        req: &CreateRequest,
        dir: &Path,
        meta: &mut SandboxMeta,
        template: Option<&Template>,
    ) -> Result<(Launched, LaunchConfig), BackendError> {
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
        if let Some(t) = template {
            // Before anything is built: a restore gives the template's VM, nothing else.
            let want = Wanted {
                image: self.image.digest.as_deref(),
                vcpus,
                memory_mib: spec.memory.bytes() / ByteSize::MIB,
                scratch_mib: spec.scratch.bytes() / ByteSize::MIB,
                network: net_shape(&spec.network),
                jailed: self.jailer.is_some(),
            };
            t.manifest
                .check(&t.dir, &want)
                .map_err(|e| setup("restore the template", e))?;
        }
        if req.without_cgroup {
            tracing::warn!(id = %req.id, "no cgroup limits: the VMM's memory, PIDs and CPU are not capped");
        }
        let jailer = match &self.jailer {
            None => None,
            Some(_) if !nix_is_root() => {
                return Err(setup(
                    "jailer",
                    "the jailer must be started as root (it chroots, makes device nodes and drops to the VMM's uid); run as root or without the jailer",
                ));
            }
            Some(j) => Some(self.jailer_for(req, j).await?),
        };
        let cgroup = if req.without_cgroup || jailer.is_some() {
            None
        } else {
            Some(self.create_cgroup(req, dir, meta).await?)
        };
        let run_as = if nix_is_root() {
            let kvm_group = tokio::fs::metadata("/dev/kvm")
                .await
                .ok()
                .map(|m| std::os::unix::fs::MetadataExt::gid(&m));
            // A jailed VMM never sees the sandbox directory: it is chrooted, and its console
            // and stderr are opened for it by the (root) launch.
            Some(
                luminaguard_backend::vmm_identity::claim_identity(
                    &req.runtime,
                    &req.id,
                    dir,
                    meta,
                    kvm_group,
                    jailer.is_none(),
                )
                .await?,
            )
        } else {
            None
        };
        meta.save(dir).await?;
        let network = self
            .create_network(req, dir, meta, run_as.as_ref(), cgroup.as_ref())
            .await?;
        let mut boot_args =
            KernelArgs::luminaguard_guest(spec.scratch.bytes() / ByteSize::MIB, spec.limits.pids);
        if let Some((_, resolver)) = &network {
            // VM init configures the NIC from these, and its resolv.conf (docs/network.md).
            boot_args = boot_args
                .and_then(|a| {
                    a.param(
                        "luminaguard.net",
                        format_args!("{SANDBOX_ADDR}/30,{ROUTER_INNER_ADDR}"),
                    )
                })
                .and_then(|a| match resolver {
                    true => a.param("luminaguard.dns", ROUTER_INNER_ADDR),
                    false => Ok(a),
                });
        }
        let vm_id = VmId::new(&req.id.short_name()).map_err(|e| setup("name the VM", e))?;
        let cfg = LaunchConfig {
            firecracker: self.firecracker.clone(),
            dir: dir.to_owned(),
            vm_id,
            seccomp_filter: self.seccomp_filter.clone(),
            machine: MachineConfiguration::new(vcpus, spec.memory.bytes() / ByteSize::MIB),
            kernel: self.image.kernel.clone(),
            initrd: Some(self.image.initrd.clone()),
            boot_args: boot_args.map_err(|e| setup("build the guest kernel command line", e))?,
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
            jailer,
            network: network.map(|(net, _)| net),
            console: launch::ConsoleLimits::DEFAULT,
        };
        // Name the jail's chroot and cgroups in the record before the jailer creates them.
        let planned = launch::plan_jail(&cfg).await.map_err(launch_failed)?;
        if let Some(jail) = &planned {
            meta.chroot = Some(jail.own.clone());
            if let Some(version) = jail.cgroup_version {
                meta.cgroup_version = Some(version.number());
                meta.cgroup_dirs = jail.cgroup_dirs.clone();
            }
            meta.save(dir).await?;
        }
        let spawned = launch::spawn(&cfg).await.map_err(launch_failed)?;
        if spawned.jail() != planned.as_ref() {
            spawned.abort().await;
            return Err(setup(
                "jailer",
                "the jail built differs from the one recorded (did the firecracker binary change?)",
            ));
        }
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
        // The console keeper outlives its creator: destroy and gc find it here.
        meta.helpers.extend(spawned.console_keeper());
        if req.persistent {
            // From now on the sandbox lives as long as its VMM, not as long as its creator.
            meta.owner = init;
        }
        if let Err(e) = meta.save(dir).await {
            spawned.abort().await;
            return Err(e.into());
        }
        let launched = match template {
            None => spawned.boot(&cfg).await,
            // The vsock socket keeps its relative name (`agent.sock`), which every release
            // resolves in the new VM's root: no `vsock_override` needed.
            Some(t) => {
                let from = RestoreFrom {
                    snapshot: t.snapshot(),
                    vsock_override: false,
                };
                spawned.restore(&cfg, &from).await
            }
        };
        Ok((launched.map_err(launch_failed)?, cfg))
    }

    /// For an egress policy: records the uplink, builds the sandbox's egress path with a tap
    /// `sbx0` owned by the VMM's identity in the router namespace (Firecracker joins that
    /// namespace and opens the tap by name), and for a policy naming domains starts the
    /// sandbox's resolver. `None` for no policy: no NIC at all. The `bool`: a resolver serves
    /// the guest's names.
    async fn create_network(
        &self,
        req: &CreateRequest,
        dir: &Path,
        meta: &mut SandboxMeta,
        who: Option<&RunAs>,
        cgroup: Option<&Cgroup>,
    ) -> Result<Option<(LaunchNet, bool)>, BackendError> {
        let policy = &req.spec.network;
        if policy.is_none() {
            return Ok(None);
        }
        let Some(who) = who else {
            return Err(setup(
                "set up network egress",
                "it needs root (it creates network namespaces, a tap device and nftables \
                 tables); run as root or without a network policy",
            ));
        };
        let net = MicrovmNetwork {
            backend: NAME,
            uplink: &self.uplink,
            dns: self.dns.as_ref(),
        };
        // In jailer mode the VMM's cgroups are the jailer's: the resolver joins none.
        let Some(path) = net.create(req, dir, meta, who, cgroup).await? else {
            return Ok(None);
        };
        let launch = LaunchNet {
            netns: path.egress.router_netns_path(),
            tap: path.egress.tap_name().to_owned(),
        };
        Ok(Some((launch, path.resolver)))
    }

    async fn create_cgroup(
        &self,
        req: &CreateRequest,
        dir: &Path,
        meta: &mut SandboxMeta,
    ) -> Result<Cgroup, BackendError> {
        luminaguard_backend::create_cgroup(&req.id, dir, meta, limits(req)).await
    }

    /// The jailer's options for this sandbox: its cgroup keys (the same limits as direct
    /// mode's cgroup, in the host's version's files) unless the request says without, and the
    /// shared chroot base `<runtime root>/jail` (created 0700: only root passes through it).
    async fn jailer_for(
        &self,
        req: &CreateRequest,
        j: &JailerConfig,
    ) -> Result<JailerConfig, BackendError> {
        let mut j = j.clone();
        j.cgroups = if req.without_cgroup {
            None
        } else {
            let version = tokio::task::spawn_blocking(CgroupVersion::detect).await??;
            Some(JailCgroups::for_limits(version, &limits(req)))
        };
        // Created 0700, or taken over only if it is root's and writable by no one else: the
        // jailer builds every chroot under it.
        let base = luminaguard_backend::create_runtime_subdir(
            &req.runtime,
            luminaguard_backend::JAIL_DIR,
            0o700,
        )
        .await?;
        debug_assert_eq!(base, luminaguard_backend::jail_base(&req.runtime));
        j.chroot_base = Some(base);
        Ok(j)
    }
}

/// The VMM's limits: guest RAM plus [`VMM_MEMORY_OVERHEAD`], [`VMM_PIDS`], a CPU per vCPU.
fn limits(req: &CreateRequest) -> Limits {
    luminaguard_backend::vmm_limits(&req.spec, VMM_MEMORY_OVERHEAD, VMM_PIDS)
}

/// The network a request's guest has (see [`NetShape`]).
fn net_shape(policy: &luminaguard_core::NetworkPolicy) -> NetShape {
    if policy.is_none() {
        NetShape::None
    } else if luminaguard_net::resolver_service::needs_resolver(policy) {
        NetShape::Resolver
    } else {
        NetShape::Addresses
    }
}

fn nix_is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
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
        self.create_timed(req).await.map(|(sandbox, _)| sandbox)
    }
}
