//! The backends this service can run, made for a request: the backend `spec.backend` names
//! (`auto` picks, see [`crate::pick`]), with the image or template asked for, the uplink and DNS
//! settings of the host. No front-end constructs a backend; this module does, for all of them.

use luminaguard_backend::{Backend, BackendError, CreateRequest, Sandbox};
use luminaguard_core::{BackendChoice, RuntimeDir, SandboxId, SandboxSpec};
use luminaguard_firecracker::FirecrackerBackend;
use luminaguard_process_sandbox::backend::ProcessBackend;
use luminaguard_protocol::ClientOptions;
use luminaguard_qemu::{Accel, GuestImage, QemuBackend};

use crate::host::{HostSettings, SECCOMP_CACHE};
use crate::pick::HostFacts;
use crate::{Service, ServiceError};

impl Service {
    /// Before a Diff Card of a microVM sandbox is made: brings the guest's review layer to
    /// `<sandbox dir>/review/upper`, where the process sandbox's layer is, so that the card is
    /// scanned, approved and applied alike ([`luminaguard_backend::review_layer::fetch_layer`]:
    /// the guest is not trusted; at most the review's layer size and the scan's entry limit).
    /// Nothing to do for a process sandbox, whose layer is a host tmpfs already.
    pub(crate) async fn fetch_review_layer(&self, id: &SandboxId) -> Result<(), ServiceError> {
        let (dir, meta) = luminaguard_backend::record(&self.runtime, id).await?;
        let Some(layer) = meta.spec.as_ref().and_then(|s| s.review) else {
            return Ok(());
        };
        let backend = match meta.backend.as_str() {
            "process" => return Ok(()),
            "qemu" => "qemu",
            "firecracker" => "firecracker",
            _ => "microvm",
        };
        let entry = self.connection(id).await?;
        let max_entries = luminaguard_review::Limits::default().max_entries;
        luminaguard_backend::review_layer::fetch_layer(
            entry.sandbox.client(),
            backend,
            &dir,
            u64::try_from(max_entries).unwrap_or(u64::MAX),
            layer.bytes(),
        )
        .await?;
        Ok(())
    }
}

/// One of the backends this binary can run.
#[derive(Debug)]
pub enum AnyBackend {
    Process(Box<ProcessBackend>),
    Qemu(Box<QemuBackend>),
    Firecracker(Box<FirecrackerBackend>),
}

impl Backend for AnyBackend {
    fn name(&self) -> &'static str {
        match self {
            Self::Process(b) => b.name(),
            Self::Qemu(b) => b.name(),
            Self::Firecracker(b) => b.name(),
        }
    }

    async fn create(&self, request: CreateRequest) -> Result<Sandbox, BackendError> {
        match self {
            Self::Process(b) => b.create(request).await,
            Self::Qemu(b) => b.create(request).await,
            Self::Firecracker(b) => b.create(request).await,
        }
    }
}

fn client_options(spec: &SandboxSpec) -> ClientOptions {
    ClientOptions {
        default_exec_timeout: spec.limits.exec_timeout,
        ..Default::default()
    }
}

/// The backend for `spec`: `spec.backend`, with `image` for a microVM; with `template`,
/// Firecracker restoring that template.
///
/// `auto`: Firecracker with KVM, else QEMU with KVM, else the process sandbox
/// ([`crate::pick::auto_backend`]; QEMU under TCG runs only when asked for by name).
pub async fn backend(
    host: &HostSettings,
    runtime: &RuntimeDir,
    spec: &SandboxSpec,
    image: Option<&str>,
    template: Option<&str>,
) -> Result<AnyBackend, ServiceError> {
    let client = client_options(spec);
    if let Some(name) = template {
        if !spec.mounts.is_empty() {
            return Err(ServiceError::HostUnsupported(format!(
                "{} (a template restores a Firecracker microVM)",
                luminaguard_backend::MOUNTS_NEED_PROCESS
            )));
        }
        if spec.review.is_some() {
            return Err(ServiceError::HostUnsupported(
                "a speculative run (--review) needs the process backend for now, not a template"
                    .into(),
            ));
        }
        if !matches!(
            spec.backend,
            BackendChoice::Auto | BackendChoice::Firecracker
        ) {
            return Err(ServiceError::InvalidSpec(format!(
                "--template restores a Firecracker snapshot: it cannot run with --backend {}",
                spec.backend
            )));
        }
        let template = crate::templates::open(runtime, name).await?;
        return Ok(AnyBackend::Firecracker(Box::new(
            firecracker_for(host, spec, image)
                .await?
                .with_template(Some(template)),
        )));
    }
    let choice = match spec.backend {
        BackendChoice::Auto => {
            let facts = host_facts(host, image).await?;
            let (pick, why) = crate::pick::auto_backend(facts);
            tracing::info!(backend = %pick, "auto: {why}");
            pick
        }
        other => other,
    };
    // Only the process sandbox shows host paths: refused before anything starts.
    if !spec.mounts.is_empty() && !matches!(choice, BackendChoice::Process | BackendChoice::Auto) {
        let hint = if spec.backend == BackendChoice::Auto {
            format!(" (auto picked {choice} here: pick --backend process)")
        } else {
            String::new()
        };
        return Err(ServiceError::HostUnsupported(format!(
            "{}{hint}",
            luminaguard_backend::MOUNTS_NEED_PROCESS
        )));
    }
    // The process sandbox and QEMU (a copy of the workspace in the guest, see
    // `luminaguard_backend::review_layer`) preview a workspace; Firecracker would run the
    // command on the real one.
    if spec.review.is_some()
        && !matches!(
            choice,
            BackendChoice::Process | BackendChoice::Auto | BackendChoice::Qemu
        )
    {
        return Err(ServiceError::HostUnsupported(format!(
            "a speculative run (--review) needs the process or qemu backend for now, not {choice}"
        )));
    }
    match choice {
        BackendChoice::Process | BackendChoice::Auto => Ok(AnyBackend::Process(Box::new(
            ProcessBackend::new(host.exe.clone(), client)
                .with_uplink(host.uplink.clone())
                .with_resolver(host.exe.clone(), host.dns_upstream),
        ))),
        BackendChoice::Qemu => Ok(AnyBackend::Qemu(Box::new(
            qemu_backend(host, image, client)
                .await?
                .with_uplink(host.uplink.clone())
                .with_resolver(host.exe.clone(), host.dns_upstream),
        ))),
        BackendChoice::Firecracker => Ok(AnyBackend::Firecracker(Box::new(
            firecracker_for(host, spec, image).await?,
        ))),
    }
}

/// What `auto` decides on (see [`crate::pick`]). The image and the programs are only looked
/// for where KVM can run a guest.
pub async fn host_facts(
    host: &HostSettings,
    image: Option<&str>,
) -> Result<HostFacts, ServiceError> {
    use luminaguard_firecracker::tools;
    let kvm = tokio::task::spawn_blocking(luminaguard_qemu::kvm::probe).await?;
    let mut facts = HostFacts {
        kvm: kvm.is_usable(),
        image: false,
        vmlinux: false,
        firecracker: false,
        qemu: false,
    };
    if !facts.kvm {
        return Ok(facts);
    }
    let (reference, host2) = (image.map(str::to_owned), host.clone());
    let (image, qemu) = tokio::task::spawn_blocking(move || {
        let p = &host2.programs;
        let qemu =
            luminaguard_qemu::find_program(luminaguard_qemu::host::QEMU_PROGRAM, p.qemu.as_deref())
                .is_some()
                && luminaguard_qemu::find_program(
                    luminaguard_qemu::host::VHOST_PROGRAM,
                    p.vhost_device_vsock.as_deref(),
                )
                .is_some();
        host2.find_image(reference.as_deref()).map(|i| (i, qemu))
    })
    .await??;
    facts.qemu = qemu;
    facts.image = image.is_some();
    facts.vmlinux = image.as_ref().is_some_and(|i| {
        i.artifact_path(luminaguard_image::store::ArtifactKind::Vmlinux)
            .is_some()
    });
    facts.firecracker = tools::find_tool(
        host.programs.firecracker.as_deref(),
        tools::FIRECRACKER,
        None,
    )
    .await
    .is_some();
    Ok(facts)
}

/// The Firecracker backend for `spec` with `image` (see [`firecracker_backend`]), its egress
/// uplink and DNS resolver.
pub async fn firecracker_for(
    host: &HostSettings,
    spec: &SandboxSpec,
    image: Option<&str>,
) -> Result<FirecrackerBackend, ServiceError> {
    Ok(firecracker_backend(host, image, client_options(spec))
        .await?
        .with_uplink(host.uplink.clone())
        .with_resolver(host.exe.clone(), host.dns_upstream))
}

/// No image to boot: say how to make one.
fn no_image() -> ServiceError {
    ServiceError::HostUnsupported("no image: run `luminaguard image build`".into())
}

/// Firecracker (`LUMINAGUARD_FIRECRACKER`, else on PATH) with the image's `vmlinux`; only where
/// KVM can run a guest — Firecracker has no emulation to fall back on. Under the jailer when
/// root and the jailer is found; with LuminaGuard's seccomp policy when `seccompiler-bin` is
/// found, else Firecracker's built-in filters.
async fn firecracker_backend(
    host: &HostSettings,
    image: Option<&str>,
    client: ClientOptions,
) -> Result<FirecrackerBackend, ServiceError> {
    use luminaguard_firecracker::tools;
    let programs = &host.programs;
    let firecracker = tools::find_tool(programs.firecracker.as_deref(), tools::FIRECRACKER, None)
        .await
        .ok_or_else(|| {
            ServiceError::HostUnsupported(
                "firecracker not found: set host.firecracker (LUMINAGUARD_FIRECRACKER) or put it \
                 on PATH (see docs/firecracker-backend.md)"
                    .into(),
            )
        })?;
    let kvm = tokio::task::spawn_blocking(luminaguard_qemu::kvm::probe).await?;
    if !kvm.is_usable() {
        return Err(ServiceError::HostUnsupported(format!(
            "Firecracker needs KVM that can run a guest, and this host's cannot: {kvm}"
        )));
    }
    let (reference, host2) = (image.map(str::to_owned), host.clone());
    let image = tokio::task::spawn_blocking(move || host2.find_image(reference.as_deref()))
        .await??
        .ok_or_else(no_image)?;
    let guest = luminaguard_firecracker::GuestImage::from_store(&image)
        .map_err(|e| ServiceError::HostUnsupported(e.to_string()))?;
    let mut backend = FirecrackerBackend::new(firecracker.clone(), guest, client);
    // As root, every VMM runs under the jailer (chroot, its own uid, PID namespace, cgroups)
    // when the release's jailer is there; a run without one says so.
    if nix::unistd::geteuid().is_root() {
        let jailer = programs.jailer.as_deref();
        match tools::find_tool(jailer, tools::JAILER, Some(&firecracker)).await {
            Some(jailer) => backend = backend.with_jailer(Some(jailer)),
            None => tracing::warn!(
                "no jailer found (host.jailer, LUMINAGUARD_JAILER, or next to firecracker): \
                 VMMs run unjailed, as an unprivileged uid of their own"
            ),
        }
    }
    // LuminaGuard's own filter when the release's seccompiler-bin is there (a compile failure
    // stops the run); Firecracker's built-in filters otherwise — seccomp is never off.
    if let Some(seccompiler) = luminaguard_firecracker::seccomp::find_seccompiler(
        programs.seccompiler.as_deref(),
        Some(&firecracker),
    )
    .await
    {
        let cache = host.image_store()?.with_file_name(SECCOMP_CACHE);
        backend = backend
            .with_custom_seccomp(&seccompiler, &cache)
            .await
            .map_err(|e| {
                ServiceError::internal("compiling LuminaGuard's seccomp policy for Firecracker", e)
            })?;
    }
    Ok(backend)
}

async fn qemu_backend(
    host: &HostSettings,
    image: Option<&str>,
    client: ClientOptions,
) -> Result<QemuBackend, ServiceError> {
    let (reference, host2) = (image.map(str::to_owned), host.clone());
    let (qemu, vhost, image, kvm) = tokio::task::spawn_blocking(move || {
        let find = |name: &str, explicit: Option<&std::path::Path>| {
            luminaguard_qemu::find_program(name, explicit).ok_or_else(|| {
                ServiceError::HostUnsupported(format!(
                    "{name} not found (at the configured path, on PATH or in ~/.cargo/bin; \
                     scripts/setup-vm installs it)"
                ))
            })
        };
        let p = &host2.programs;
        let qemu = find(luminaguard_qemu::host::QEMU_PROGRAM, p.qemu.as_deref())?;
        let vhost = find(
            luminaguard_qemu::host::VHOST_PROGRAM,
            p.vhost_device_vsock.as_deref(),
        )?;
        let image = host2
            .find_image(reference.as_deref())?
            .ok_or_else(no_image)?;
        Ok::<_, ServiceError>((qemu, vhost, image, luminaguard_qemu::kvm::probe()))
    })
    .await??;
    let accel = if kvm.is_usable() {
        Accel::Kvm
    } else {
        Accel::Tcg
    };
    tracing::debug!(%kvm, %accel, image = %image.digest, "qemu backend");
    let guest =
        GuestImage::from_store(&image).map_err(|e| ServiceError::HostUnsupported(e.to_string()))?;
    Ok(QemuBackend::new(qemu, vhost, guest, accel, client))
}
