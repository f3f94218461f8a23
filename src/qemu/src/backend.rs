//! The QEMU `microvm` backend: one VM per sandbox, its agent reached over hybrid vsock.
//!
//! Order of creation, each step recorded in the sandbox's `meta.json` before the resource it
//! names exists (so `destroy` and `gc` can always find it), and everything removed again when a
//! later step fails:
//!
//! 1. the sandbox directory and record;
//! 2. the cgroup (guest RAM + VMM overhead, PIDs, CPU);
//! 3. `vhost-device-vsock` (recorded in `meta.helpers` as soon as it runs), started inside the
//!    cgroup; while it starts, the console keeper ([`luminaguard_backend::console`], also a
//!    helper), QEMU's
//!    command line and the ready listener; then its vhost-user socket is awaited (inotify);
//! 4. QEMU (recorded as `meta.init`), inside the cgroup, under its own seccomp sandbox, its
//!    serial console going to the keeper;
//! 5. readiness: the agent's ready signal (a guest-initiated vsock connection), then
//!    `CONNECT 1024` through the hybrid-vsock socket and the protocol handshake — raced against
//!    either process exiting, so a VM that dies is reported at once with the tail of its serial
//!    console, not after the boot timeout;
//! 6. for a speculative run (`review` and a workspace), the workspace copied into the guest and
//!    the review overlay mounted at `/workspace` before any command runs
//!    ([`luminaguard_backend::review_layer::copy_workspace_in`]); a failure destroys the VM.
//!
//! Files in the sandbox directory: `agent.sock` (hybrid vsock: what attach dials), `vhost.sock`
//! (vhost-user, QEMU ↔ vhost-device-vsock), `console.log` (the guest's serial console, bounded),
//! `qemu.log` and `vhost.log` (the two processes' stdout and stderr).

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use luminaguard_backend::console::{ConsoleLimits, Keeper, StartedConsole};
use luminaguard_backend::network::MicrovmNetwork;
use luminaguard_backend::resolver::DnsOptions;
use luminaguard_backend::{Backend, BackendError, CreateRequest, ProcessRef, Sandbox, SandboxMeta};
use luminaguard_cgroup::Cgroup;
use luminaguard_core::ByteSize;
use luminaguard_core::runtime::SandboxFile;
use luminaguard_image::store::{ArtifactKind, Image};
use luminaguard_net::Uplink;
use luminaguard_net::tap::FrameFormat;
use luminaguard_net::topology::{ROUTER_INNER_ADDR, SANDBOX_ADDR};
use luminaguard_protocol::{
    AGENT_READY_VSOCK_PORT, AGENT_VSOCK_PORT, Client, ClientError, ClientOptions,
};
use tokio::process::{Child, Command};

use crate::cmdline::{
    Accel, Drive, KernelCmdline, Nic, QemuCommand, SeccompSandbox, Serial, VhostVsock,
};
use crate::watch::DirWatch;

const NAME: &str = "qemu";

/// The file in the runtime root that keeps a measured host TSC frequency for the rest of the
/// host's boot ([`crate::tsc::host_tsc_khz_cached`]).
pub const TSC_CACHE: &str = "host-tsc-khz";
/// The vhost-user socket between QEMU and vhost-device-vsock.
pub const VHOST_SOCKET: &str = "vhost.sock";
/// QEMU's stdout and stderr.
pub const QEMU_LOG: &str = "qemu.log";
/// vhost-device-vsock's stdout and stderr.
pub const VHOST_LOG: &str = "vhost.log";

/// How long the guest may take from QEMU's start to the agent's handshake, by accelerator.
/// TCG boots in about 2 s on an idle machine; several VMs booting at once on 2 cores take longer.
pub const BOOT_TIMEOUT_TCG: Duration = Duration::from_secs(30);
pub const BOOT_TIMEOUT_KVM: Duration = Duration::from_secs(10);
/// How long vhost-device-vsock may take to create its socket.
const VHOST_SOCKET_TIMEOUT: Duration = Duration::from_secs(5);
/// How long `destroy` waits for the guest to power off after the agent acknowledged `Shutdown`.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// The guest's CID. Every VM has its own vhost-device-vsock, so they can all be 3.
const GUEST_CID: u32 = 3;
/// TCG's translation-block cache (QEMU's default is up to 1 GiB, all of it chargeable to the
/// sandbox's cgroup once touched).
pub const TCG_TB_MIB: u64 = 64;
/// Memory the VMM and vhost-device-vsock may use beyond guest RAM: QEMU's own heap and the TCG
/// cache ([`TCG_TB_MIB`]) dominate it. See docs/qemu-backend.md for what was measured.
pub const VMM_MEMORY_OVERHEAD: ByteSize = ByteSize(256 * ByteSize::MIB);
/// Threads of QEMU and vhost-device-vsock together (QEMU: main loop, one per vCPU, RCU, a pool
/// of I/O workers).
pub const VMM_PIDS: u64 = 256;

/// The files a guest boots from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestImage {
    /// The image's digest, when it comes from the store.
    pub digest: Option<String>,
    /// The kernel QEMU loads (the ELF `vmlinux` when the image has one, else the bzImage).
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// The shared root filesystem, attached read-only as the first virtio-blk drive.
    pub rootfs: Option<PathBuf>,
    /// The guest kernel's release (`uname -r` inside).
    pub kernel_release: String,
}

impl GuestImage {
    /// The boot files of a store image.
    pub fn from_store(image: &Image) -> Result<Self, BackendError> {
        let kernel = image
            .artifact_path(ArtifactKind::Vmlinux)
            .or_else(|| image.artifact_path(ArtifactKind::Kernel))
            .ok_or_else(|| setup("find the image's kernel", "the image has no kernel"))?;
        let initrd = image
            .artifact_path(ArtifactKind::Initramfs)
            .ok_or_else(|| setup("find the image's initramfs", "the image has none"))?;
        Ok(Self {
            digest: Some(image.digest.to_string()),
            kernel,
            initrd,
            rootfs: image.artifact_path(ArtifactKind::Rootfs),
            kernel_release: image.manifest.kernel_release.clone(),
        })
    }
}

/// Runs each sandbox as a QEMU `microvm`.
#[derive(Debug, Clone)]
pub struct QemuBackend {
    qemu: PathBuf,
    vhost: PathBuf,
    image: GuestImage,
    accel: Accel,
    client: ClientOptions,
    boot_timeout: Duration,
    console: ConsoleLimits,
    uplink: Uplink,
    dns: Option<DnsOptions>,
}

/// A guest's NIC: the tap QEMU inherits, and whether a resolver serves the guest's names.
#[derive(Debug)]
struct GuestTap {
    fd: OwnedFd,
    resolver: bool,
}

/// How long each phase of one boot took. The phases on the critical path add up to `total`
/// (up to a few microseconds of bookkeeping):
/// `prepare + setup + vhost_wait + qemu_spawn + boot + dial + handshake`. Ours (the host's own
/// work) are `prepare`, `setup` and `qemu_spawn`; the rest is waiting for vhost-device-vsock,
/// QEMU and the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct BootTimings {
    /// Ours: directory, record, cgroup and the VMM's identity, until vhost-device-vsock is
    /// spawned.
    pub prepare: Duration,
    /// Ours: spawning vhost-device-vsock, then — while it starts — the console keeper, the
    /// records, QEMU's command line and the ready listener.
    pub setup: Duration,
    /// vhost-device-vsock's own start, spawn → its socket exists (overlaps `setup`; for
    /// information).
    pub vhost_start: Duration,
    /// The part of `vhost_start` not hidden behind `setup`: how long QEMU's start waited for the
    /// socket (0 when it was there first).
    pub vhost_wait: Duration,
    /// Ours and the kernel's: forking and exec'ing QEMU (until the spawn call returns).
    pub qemu_spawn: Duration,
    /// QEMU exec'd → the agent's ready signal: QEMU's start, the guest kernel, initramfs and the
    /// agent's start.
    pub boot: Duration,
    /// Ready signal → `CONNECT 1024` answered: one vsock round trip into the guest kernel.
    pub dial: Duration,
    /// The protocol handshake (`Hello` → its reply): one round trip to the guest agent.
    pub handshake: Duration,
    /// Everything, from the call to `create` to a ready sandbox.
    pub total: Duration,
}

impl BootTimings {
    /// The host's own work on the critical path: `prepare + setup + qemu_spawn`, plus whatever
    /// of `total` no phase accounts for.
    pub fn ours(&self) -> Duration {
        let waited = self.vhost_wait + self.boot + self.dial + self.handshake;
        self.total.saturating_sub(waited)
    }
}

fn setup(step: &'static str, reason: impl std::fmt::Display) -> BackendError {
    BackendError::Setup {
        backend: NAME,
        step,
        reason: reason.to_string(),
    }
}

fn with_console(reason: impl std::fmt::Display, console: &str) -> String {
    if console.trim().is_empty() {
        format!("{reason} (the serial console is empty)")
    } else {
        format!(
            "{reason}\n--- last lines of the serial console ---\n{}",
            console.trim_end()
        )
    }
}

impl QemuBackend {
    /// `qemu`: `qemu-system-x86_64`; `vhost`: `vhost-device-vsock`; `accel`: what the KVM probe
    /// allows ([`crate::kvm::probe`]).
    pub fn new(
        qemu: PathBuf,
        vhost: PathBuf,
        image: GuestImage,
        accel: Accel,
        client: ClientOptions,
    ) -> Self {
        let boot_timeout = match accel {
            Accel::Kvm => BOOT_TIMEOUT_KVM,
            Accel::Tcg => BOOT_TIMEOUT_TCG,
        };
        Self {
            qemu,
            vhost,
            image,
            accel,
            client,
            boot_timeout,
            console: ConsoleLimits::DEFAULT,
            uplink: Uplink::default(),
            dns: None,
        }
    }

    /// Lets policies name domains: the sandbox gets a DNS-pinning resolver (see
    /// `luminaguard_backend::resolver`), the process `exe dns-resolver`, asking `upstream` (or
    /// the uplink's `resolv.conf` nameserver); the guest's `resolv.conf` names it. Without
    /// this, a policy naming a domain is refused.
    pub fn with_resolver(mut self, exe: PathBuf, upstream: Option<std::net::SocketAddr>) -> Self {
        self.dns = Some(DnsOptions { exe, upstream });
        self
    }

    /// Where sandboxes with an egress policy reach the world (the host's own namespace by
    /// default; see `luminaguard_net::Uplink`).
    pub fn with_uplink(mut self, uplink: Uplink) -> Self {
        self.uplink = uplink;
        self
    }

    /// Overrides how large each sandbox's `console.log` may grow (see
    /// [`luminaguard_backend::console`]).
    pub fn with_console_limits(mut self, limits: ConsoleLimits) -> Result<Self, BackendError> {
        self.console = limits
            .check()
            .map_err(|e| setup("bound the console log", e))?;
        Ok(self)
    }

    /// Overrides the boot timeout.
    pub fn with_boot_timeout(mut self, timeout: Duration) -> Self {
        self.boot_timeout = timeout;
        self
    }

    pub fn accel(&self) -> Accel {
        self.accel
    }

    pub fn image(&self) -> &GuestImage {
        &self.image
    }

    /// [`Backend::create`], also returning how long each phase took.
    pub async fn create_timed(
        &self,
        req: CreateRequest,
    ) -> Result<(Sandbox, BootTimings), BackendError> {
        let t0 = Instant::now();
        let accel = self.accel.as_str().to_owned();
        let (dir, mut meta) = luminaguard_backend::begin_create(&req, NAME, |m| {
            m.accel = Some(accel);
            m.agent_vsock_port = Some(AGENT_VSOCK_PORT);
        })
        .await?;
        let (client, timings) = match self.start(&req, &dir, &mut meta, t0).await {
            Ok(ready) => ready,
            Err(e) => {
                luminaguard_backend::abandon_create(dir, meta).await;
                return Err(e);
            }
        };
        let sandbox =
            Sandbox::new(req.id, dir, meta, client).with_graceful_shutdown(SHUTDOWN_GRACE);
        // A speculative run: the workspace goes into the guest as its overlay's lower dir
        // before any command runs (no host directory is shared with a VM).
        if let (Some(layer), Some(ws)) = (req.spec.review, &req.workspace) {
            let copied = luminaguard_backend::review_layer::copy_workspace_in(
                sandbox.client(),
                NAME,
                ws.path(),
                req.spec.scratch.bytes(),
                layer.bytes(),
            )
            .await;
            if let Err(e) = copied {
                if let Err(d) = sandbox.destroy().await {
                    tracing::error!(error = %d, "cleanup after a failed workspace copy");
                }
                return Err(e);
            }
        }
        Ok((sandbox, timings))
    }

    /// The cgroup (see [`luminaguard_backend::create_cgroup`]): guest RAM plus the VMM's
    /// overhead, PIDs for the VMM's threads, CPU quota of the vCPUs.
    async fn create_cgroup(
        &self,
        req: &CreateRequest,
        dir: &Path,
        meta: &mut SandboxMeta,
    ) -> Result<Cgroup, BackendError> {
        let limits = luminaguard_backend::vmm_limits(&req.spec, VMM_MEMORY_OVERHEAD, VMM_PIDS);
        luminaguard_backend::create_cgroup(&req.id, dir, meta, limits).await
    }

    /// Everything after the record exists; on error the caller removes what the record names.
    ///
    /// vhost-device-vsock is spawned as early as it can be (it needs the cgroup and its user), so
    /// that its start overlaps the rest of our set-up; QEMU, which fails at once if the
    /// vhost-user socket is not there yet, is spawned the moment inotify reports the socket.
    async fn start(
        &self,
        req: &CreateRequest,
        dir: &Path,
        meta: &mut SandboxMeta,
        t0: Instant,
    ) -> Result<(Client, BootTimings), BackendError> {
        let spec = &req.spec;
        // A VM cannot share a host directory yet; a speculative run gets a copy of it instead
        // (see `create_timed`).
        match (req.workspace.is_some(), spec.review.is_some()) {
            (true, false) => {
                return Err(setup(
                    "share the workspace",
                    "the qemu backend cannot share a host directory yet (no --workspace)",
                ));
            }
            (false, true) => {
                return Err(setup(
                    "set up the review layer",
                    "a speculative run needs a workspace to preview changes to",
                ));
            }
            _ => {}
        }
        // Where the kernel exports no figure it is measured (20 ms) once per boot and cached in
        // the runtime root; either way it runs alongside everything below.
        let tsc_cache = req.runtime.root().join(TSC_CACHE);
        let tsc = tokio::task::spawn_blocking(move || crate::tsc::host_tsc_khz_cached(&tsc_cache));
        let cgroup = if req.without_cgroup {
            tracing::warn!(id = %req.id, "no cgroup limits: the VMM's memory, PIDs and CPU are not capped");
            None
        } else {
            Some(self.create_cgroup(req, dir, meta).await?)
        };
        let cgroup_procs = match &cgroup {
            Some(cg) => luminaguard_backend::open_cgroup_procs(cg).await?,
            None => Vec::new(),
        };

        // The VMM's own unprivileged identity; its sandbox directory becomes its own.
        let kvm_group = match self.accel {
            Accel::Kvm => Some(
                tokio::fs::metadata("/dev/kvm")
                    .await
                    .map(|m| std::os::unix::fs::MetadataExt::gid(&m))
                    .map_err(|e| setup("find /dev/kvm's group", e))?,
            ),
            Accel::Tcg => None,
        };
        let who = luminaguard_backend::vmm_identity::claim_identity(
            &req.runtime,
            &req.id,
            dir,
            meta,
            kvm_group,
            true,
        )
        .await?;
        meta.save(dir).await?;
        let vhost_socket = dir.join(VHOST_SOCKET);
        let uds = dir.join(SandboxFile::AgentSocket.file_name());
        let console = dir.join(SandboxFile::ConsoleLog.file_name());
        let vhost_argv = VhostVsock {
            guest_cid: GUEST_CID,
            socket: vhost_socket.clone(),
            uds: uds.clone(),
        }
        .argv()
        .map_err(|e| setup("build the vhost-device-vsock command line", e))?;
        // Watching before vhost-device-vsock runs: its socket cannot appear unseen.
        let socket_watch =
            DirWatch::new(dir).map_err(|e| setup("watch the sandbox directory", e))?;

        // 3. vhost-device-vsock, and the console keeper alongside on a blocking thread: each
        // spawn waits until the new process has moved into the cgroup, which can take the
        // kernel an RCU grace period.
        let prepare = t0.elapsed();
        tracing::trace!(at = ?prepare, "prepared");
        let t_vhost = Instant::now();
        let keeper = luminaguard_backend::console::start_console(
            &console,
            self.console,
            &cgroup_procs,
            Some(&who),
            None,
        );
        let vhost = spawn(
            &self.vhost,
            &vhost_argv,
            &dir.join(VHOST_LOG),
            &cgroup_procs,
            req.persistent,
            who.clone(),
            &[],
        )
        .await;
        tracing::trace!(at = ?t0.elapsed(), "vhost-device-vsock spawned");
        // Whatever runs is recorded (vhost-device-vsock first), even when the other failed.
        let keeper = keeper.await;
        let vhost_ref = vhost.as_ref().ok().and_then(|v| {
            v.id()
                .and_then(|p| i32::try_from(p).ok().and_then(ProcessRef::of))
        });
        meta.helpers.extend(vhost_ref);
        if let Ok(k) = &keeper {
            meta.helpers.push(k.process);
        }
        meta.save(dir).await?;
        tracing::trace!(at = ?t0.elapsed(), "vhost-device-vsock and console keeper recorded");
        let mut vhost = vhost.map_err(|e| setup("start vhost-device-vsock", e))?;
        let Some(vhost_ref) = vhost_ref else {
            let status = vhost.wait().await.ok();
            return Err(setup(
                "start vhost-device-vsock",
                format!(
                    "it exited at once ({status:?}): {}",
                    luminaguard_backend::log_tail(&dir.join(VHOST_LOG), 2048).await
                ),
            ));
        };
        let StartedConsole {
            vmm_end: serial,
            process: keeper_ref,
            keeper,
        } = keeper.map_err(|e| setup("start the console keeper", e))?;

        // The guest's network path, if its policy asks for one: a tap QEMU inherits.
        let tap = self
            .create_network(req, dir, meta, &who, cgroup.as_ref())
            .await?;

        let tsc = tsc.await?;
        tracing::trace!(at = ?t0.elapsed(), "TSC known");
        let memory_mib = spec.memory.bytes() / ByteSize::MIB;
        let scratch_mib = spec.scratch.bytes() / ByteSize::MIB;
        let qemu_argv = QemuCommand {
            accel: self.accel,
            tcg_tb_mib: (self.accel == Accel::Tcg).then_some(TCG_TB_MIB),
            vcpus: spec.vcpus,
            memory_mib,
            kernel: self.image.kernel.clone(),
            initrd: self.image.initrd.clone(),
            cmdline: KernelCmdline::guest(tsc.map(|(khz, _)| khz), scratch_mib, spec.limits.pids)
                .and_then(|c| match &tap {
                    // The guest's init configures its NIC from this (docs/network.md).
                    Some(_) => c.set(
                        "luminaguard.net",
                        format_args!("{SANDBOX_ADDR}/30,{ROUTER_INNER_ADDR}"),
                    ),
                    None => Ok(c),
                })
                .and_then(|c| match &tap {
                    // And its resolv.conf from this: the sandbox's resolver.
                    Some(t) if t.resolver => c.set("luminaguard.dns", ROUTER_INNER_ADDR),
                    _ => Ok(c),
                })
                .map_err(|e| setup("build the guest kernel command line", e))?,
            drives: self
                .image
                .rootfs
                .iter()
                .map(|p| Drive {
                    id: "root".into(),
                    path: p.clone(),
                    read_only: true,
                })
                .collect(),
            vhost_vsock: Some(vhost_socket.clone()),
            serial: Serial::SocketFd(serial.as_raw_fd()),
            nic: tap.as_ref().map(|t| Nic {
                tap_fd: t.fd.as_raw_fd(),
            }),
            seccomp: SeccompSandbox::STRICT,
        }
        .argv()
        .map_err(|e| setup("build the QEMU command line", e))?;
        // The agent says when it listens by connecting to <uds>_<READY port> (guest-initiated
        // vsock): no polling. The socket must be connectable by the VMM's user.
        let ready_listener = luminaguard_vsock::listen(&uds, AGENT_READY_VSOCK_PORT)
            .map_err(|e| setup("listen for the agent's ready signal", e))?;
        nix::unistd::chown(
            ready_listener.path(),
            Some(nix::unistd::Uid::from_raw(who.uid)),
            None,
        )
        .map_err(|e| setup("give the ready socket to the VMM's user", e))?;
        tracing::trace!(at = ?t0.elapsed(), "ready listener bound");

        // QEMU connects to the vhost-user socket while it starts and exits if there is none.
        let setup_time = t_vhost.elapsed();
        let t_wait = Instant::now();
        tokio::select! {
            seen = socket_watch.appeared(VHOST_SOCKET.as_ref()) => {
                seen.map_err(|e| setup("wait for vhost-device-vsock's socket", e))?;
            }
            status = vhost.wait() => {
                return Err(setup(
                    "wait for vhost-device-vsock's socket",
                    format!(
                        "it exited ({}) before creating {}: {}",
                        status.map_or_else(|e| e.to_string(), |s| s.to_string()),
                        vhost_socket.display(),
                        luminaguard_backend::log_tail(&dir.join(VHOST_LOG), 2048).await
                    ),
                ));
            }
            () = tokio::time::sleep(VHOST_SOCKET_TIMEOUT) => {
                return Err(setup(
                    "wait for vhost-device-vsock's socket",
                    format!("{} did not appear within {VHOST_SOCKET_TIMEOUT:?}", vhost_socket.display()),
                ));
            }
        }
        let vhost_wait = t_wait.elapsed();
        let vhost_start = t_vhost.elapsed();
        socket_watch.close_in_background();
        tracing::trace!(at = ?t0.elapsed(), "vhost socket seen");

        // 4. QEMU.
        let t_qemu = Instant::now();
        let mut qemu = spawn(
            &self.qemu,
            &qemu_argv,
            &dir.join(QEMU_LOG),
            &cgroup_procs,
            req.persistent,
            who,
            &[
                Some(serial.as_raw_fd()),
                tap.as_ref().map(|t| t.fd.as_raw_fd()),
            ]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>(),
        )
        .await
        .map_err(|e| setup("start QEMU", e))?;
        let qemu_spawn = t_qemu.elapsed();
        tracing::trace!(at = ?t0.elapsed(), "QEMU spawned");
        let t_boot = Instant::now();
        // From now on QEMU holds the only writing end: the keeper ends when QEMU does.
        drop(serial);
        // And the only tap descriptor: one held here would keep the router namespace alive.
        drop(tap);
        drop(cgroup_procs);
        meta.init = qemu
            .id()
            .and_then(|p| i32::try_from(p).ok().and_then(ProcessRef::of));
        let Some(init) = meta.init else {
            let status = qemu.wait().await.ok();
            return Err(setup(
                "start QEMU",
                format!(
                    "it exited at once ({status:?}): {}",
                    luminaguard_backend::log_tail(&dir.join(QEMU_LOG), 2048).await
                ),
            ));
        };
        if req.persistent {
            // From now on the sandbox lives as long as its VMM, not as long as its creator.
            meta.owner = init;
        }
        meta.save(dir).await?;
        tracing::trace!(at = ?t0.elapsed(), "QEMU recorded");
        tracing::debug!(id = %req.id, qemu = init.pid, vhost = vhost_ref.pid, console = keeper_ref.pid, accel = %self.accel, "VM starting");

        // 5. Readiness, raced against either process dying.
        let ready = async {
            // Whichever comes first: the agent's ready connection, or (an image whose agent
            // predates it) its "listening" line on the console.
            tokio::select! {
                signal = ready_listener.accept() => {
                    if let Err(e) = signal {
                        tracing::debug!(error = %e, "ready signal lost; dialing anyway");
                    }
                }
                () = wait_for_listening(&console, AGENT_HINT_TIMEOUT) => {}
            }
            let boot = t_boot.elapsed();
            let t_dial = Instant::now();
            let stream = dial_agent(&uds, self.boot_timeout)
                .await
                .map_err(Ready::Dial)?;
            let dial = t_dial.elapsed();
            let t_hs = Instant::now();
            let client = Client::connect(stream, self.client.clone())
                .await
                .map_err(Ready::Handshake)?;
            Ok::<_, Ready>((client, boot, dial, t_hs.elapsed()))
        };
        let outcome = tokio::select! {
            r = tokio::time::timeout(self.boot_timeout, ready) => match r {
                Ok(r) => r,
                Err(_) => Err(Ready::Handshake(ClientError::Timeout {
                    what: "boot and handshake",
                    after: self.boot_timeout,
                })),
            },
            status = qemu.wait() => Err(Ready::Exited {
                what: "QEMU",
                status: status.map_or_else(|e| e.to_string(), |s| s.to_string()),
                log: dir.join(QEMU_LOG),
            }),
            status = vhost.wait() => Err(Ready::Exited {
                what: "vhost-device-vsock",
                status: status.map_or_else(|e| e.to_string(), |s| s.to_string()),
                log: dir.join(VHOST_LOG),
            }),
        };
        let (client, boot, dial, handshake) = match outcome {
            Ok(ok) => ok,
            Err(e) => {
                if matches!(e, Ready::Exited { what: "QEMU", .. }) {
                    // The console's last words (a panic) are still on their way to the file.
                    keeper.finished(CONSOLE_DRAIN).await;
                }
                return Err(e.into_error(req.id.as_str(), &console).await);
            }
        };
        tracing::trace!(at = ?t0.elapsed(), "handshake done");
        watch(req.id.to_string(), qemu, vhost, keeper);
        let timings = BootTimings {
            prepare,
            setup: setup_time,
            vhost_start,
            vhost_wait,
            qemu_spawn,
            boot,
            dial,
            handshake,
            total: t0.elapsed(),
        };
        tracing::debug!(id = %req.id, ?timings, "VM ready");
        Ok((client, timings))
    }

    /// For an egress policy: records the uplink, builds the sandbox's egress path with a tap
    /// device owned by the VMM's identity (`luminaguard_net::topology`, `SandboxLink::Tap`), and
    /// attaches to it for QEMU to inherit (`-netdev tap,fd=N`: QEMU itself stays out of the
    /// router namespace and needs no capability); for a policy naming domains, starts the
    /// sandbox's resolver too. `None` for no policy: no NIC at all.
    async fn create_network(
        &self,
        req: &CreateRequest,
        dir: &Path,
        meta: &mut SandboxMeta,
        who: &VmmIdentity,
        cgroup: Option<&Cgroup>,
    ) -> Result<Option<GuestTap>, BackendError> {
        let net = MicrovmNetwork {
            backend: NAME,
            uplink: &self.uplink,
            dns: self.dns.as_ref(),
        };
        let Some(path) = net.create(req, dir, meta, who, cgroup).await? else {
            return Ok(None);
        };
        let fd = path
            .egress
            .open_tap(FrameFormat::VnetHdr)
            .await
            .map_err(|e| setup("open the microVM's tap device", e))?;
        Ok(Some(GuestTap {
            fd,
            resolver: path.resolver,
        }))
    }
}

/// How long, after QEMU exited, the console keeper may take to write what QEMU sent it last.
const CONSOLE_DRAIN: Duration = Duration::from_secs(1);

/// How much of the console [`wait_for_listening`] reads: the line comes early in a boot
/// (about 2 KiB of console with `quiet`); a guest that floods its console is not read further.
const CONSOLE_HINT_MAX: u64 = 64 * 1024;

/// Whether a console holds the agent's `listening … vsock:<port>` line (the agent logs it through
/// `tracing`, possibly with colour codes between the words).
fn console_says_listening(console: &[u8], port: u32) -> bool {
    let needle = format!("vsock:{port}");
    let followed = format!("{needle} ");
    String::from_utf8_lossy(console).lines().any(|l| {
        l.contains(" listening") && (l.trim_end().ends_with(&needle) || l.contains(&followed))
    })
}

/// The first `max` bytes of the file at `path`.
async fn read_head(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    tokio::fs::File::open(path)
        .await?
        .take(max)
        .read_to_end(&mut buf)
        .await?;
    Ok(buf)
}

/// How long to wait for the agent's "listening" line on the console before dialing anyway.
pub const AGENT_HINT_TIMEOUT: Duration = Duration::from_secs(20);

/// Waits (polling the console log, 2 ms doubling to 20 ms) until the guest agent has logged that
/// it listens on its vsock port, or `limit` passes.
///
/// Why: every `CONNECT` that reaches the guest before the agent listens is answered with a reset,
/// and under vhost-device-vsock 0.3.0 a burst of such resets sometimes leaves the VM's vsock
/// device stuck for good — no later `CONNECT` is ever answered (seen in about 1 boot in 10 with
/// four VMs booting at once under TCG). Dialing only once the agent listens avoids the burst.
/// The line is a hint, not trusted: a guest that prints it early only makes us dial earlier.
async fn wait_for_listening(console: &Path, limit: Duration) {
    let start = Instant::now();
    let mut pause = Duration::from_millis(2);
    while start.elapsed() < limit {
        if let Ok(text) = read_head(console, CONSOLE_HINT_MAX).await
            && console_says_listening(&text, AGENT_VSOCK_PORT)
        {
            tracing::trace!(elapsed = ?start.elapsed(), "the agent says it listens");
            return;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(20));
    }
    tracing::debug!(
        ?limit,
        "no listening line from the agent on the console; dialing anyway"
    );
}

/// How long one `CONNECT` attempt may go unanswered before it is abandoned and retried.
pub const CONNECT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(1);

/// Connects to the guest agent's vsock port through `uds`, retrying until `limit`.
///
/// Unlike [`luminaguard_vsock::connect_with_retry`], each attempt has its own deadline
/// ([`CONNECT_ATTEMPT_TIMEOUT`]): a `CONNECT` sent while the guest's vsock driver is still
/// starting can go unanswered for good (vhost-device-vsock 0.3.0 neither replies nor closes;
/// seen here about once in ten TCG boots, with the agent already listening), and only a fresh
/// connection gets through.
async fn dial_agent(
    uds: &Path,
    limit: Duration,
) -> Result<tokio::net::UnixStream, luminaguard_vsock::DialError> {
    let start = Instant::now();
    let mut pause = Duration::from_millis(1);
    let mut attempts: u32 = 0;
    loop {
        attempts = attempts.saturating_add(1);
        let left = limit.saturating_sub(start.elapsed());
        let err = match luminaguard_vsock::connect(
            uds,
            AGENT_VSOCK_PORT,
            left.min(CONNECT_ATTEMPT_TIMEOUT),
        )
        .await
        {
            Ok(s) => {
                tracing::debug!(attempts, elapsed = ?start.elapsed(), "guest agent reached over vsock");
                return Ok(s.into_stream());
            }
            Err(e) => e,
        };
        let retry =
            err.is_transient() || matches!(err, luminaguard_vsock::DialError::Timeout { .. });
        tracing::trace!(attempts, elapsed = ?start.elapsed(), error = %err, "vsock: agent not reached yet");
        if !retry || start.elapsed() >= limit {
            return Err(luminaguard_vsock::DialError::GaveUp {
                path: uds.to_owned(),
                port: AGENT_VSOCK_PORT,
                attempts,
                waited: start.elapsed(),
                last: Box::new(err),
            });
        }
        tokio::time::sleep(pause.min(limit.saturating_sub(start.elapsed()))).await;
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// Why a VM did not become ready.
enum Ready {
    Dial(luminaguard_vsock::DialError),
    Handshake(ClientError),
    Exited {
        what: &'static str,
        status: String,
        log: PathBuf,
    },
}

impl Ready {
    async fn into_error(self, id: &str, console: &Path) -> BackendError {
        let console_tail = luminaguard_backend::console_tail(console, 4096).await;
        match self {
            Self::Handshake(source) => BackendError::Agent {
                id: id.to_owned(),
                source,
                log: console_tail,
            },
            Self::Dial(e) => setup(
                "reach the guest agent over vsock",
                with_console(e, &console_tail),
            ),
            Self::Exited { what, status, log } => {
                let own = luminaguard_backend::log_tail(&log, 2048).await;
                let own = if own.trim().is_empty() {
                    String::new()
                } else {
                    format!("; its output: {}", own.trim_end())
                };
                setup(
                    "boot the VM",
                    with_console(
                        format!("{what} exited ({status}) before the guest agent answered{own}"),
                        &console_tail,
                    ),
                )
            }
        }
    }
}

/// Once QEMU exits, nothing can reach the guest any more; vhost-device-vsock would keep running
/// and keep the host's connections open (they would hang rather than fail). So a task waits for
/// QEMU and then kills vhost-device-vsock: clients see EOF at once. The task lives as long as
/// the caller's runtime; the records still name both processes for `destroy` and `gc`.
///
/// vhost-device-vsock is stopped only once the console keeper has written QEMU's last output (or
/// [`CONSOLE_DRAIN`] passed): whoever sees the connection close and reads the console then finds
/// the guest's last words in it.
fn watch(id: String, mut qemu: Child, mut vhost: Child, keeper: Keeper) {
    tokio::spawn(async move {
        let status = qemu.wait().await;
        let drained = keeper.finished(CONSOLE_DRAIN).await;
        tracing::debug!(%id, ?status, drained, "QEMU exited; stopping vhost-device-vsock");
        let _ = vhost.start_kill();
        let _ = vhost.wait().await;
    });
}

pub use luminaguard_backend::{VMM_ID_BASE, VMM_ID_RANGE, VmmIdentity};

/// Starts `program` with `args`: stdin from /dev/null, stdout and stderr appended to `log`, in
/// the cgroup whose `cgroup.procs` files are `cgroup_procs` before it runs a single instruction
/// of its own. A `detached` process gets its own session (it outlives its creator); otherwise it
/// is killed when the thread that started it exits (the creator died: no orphaned VM). `inherit`
/// names descriptors the program keeps (their close-on-exec flags are cleared in the child).
async fn spawn(
    program: &Path,
    args: &[String],
    log: &Path,
    cgroup_procs: &[OwnedFd],
    detached: bool,
    who: VmmIdentity,
    inherit: &[RawFd],
) -> std::io::Result<Child> {
    let out = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .await?
        .into_std()
        .await;
    let err = out.try_clone()?;
    let fds: Vec<i32> = cgroup_procs.iter().map(AsRawFd::as_raw_fd).collect();
    let inherit = inherit.to_vec();
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err));
    // SAFETY: the closure runs in the child between fork and exec; `enter_helper` makes only
    // async-signal-safe system calls, on memory allocated before the fork.
    unsafe {
        cmd.pre_exec(move || {
            // Cgroups while still root, then unprivileged from here on.
            luminaguard_core::child::enter_helper(&luminaguard_core::child::HelperSetup {
                netns: None,
                cgroup_procs: &fds,
                keep: &inherit,
                user: Some(luminaguard_core::child::Credentials {
                    uid: who.uid,
                    gid: who.gid,
                    groups: &who.supplementary,
                }),
                die_with_parent: !detached,
            })
        });
    }
    cmd.spawn().map_err(|e| {
        std::io::Error::new(e.kind(), format!("cannot run {}: {e}", program.display()))
    })
}

impl Backend for QemuBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn create(&self, req: CreateRequest) -> Result<Sandbox, BackendError> {
        self.create_timed(req).await.map(|(sandbox, _)| sandbox)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agents_listening_line_is_recognised_plain_and_coloured() {
        let plain =
            b"[    0.29] PCI: Fatal\n2026-11-22T20:44:20Z  INFO listening addr=vsock:1024\n";
        assert!(console_says_listening(plain, 1024));
        let coloured = b"\x1b[2m2026\x1b[0m \x1b[32m INFO\x1b[0m listening \x1b[3maddr\x1b[0m\x1b[2m=\x1b[0mvsock:1024\r\n";
        assert!(console_says_listening(coloured, 1024));
        assert!(!console_says_listening(
            b"INFO listening addr=vsock:10240\n",
            1024
        ));
        assert!(!console_says_listening(
            b"INFO listening addr=unix:/x\n",
            1024
        ));
        assert!(!console_says_listening(b"vm-init: root ready\n", 1024));
        assert!(!console_says_listening(b"", 1024));
    }
}
