//! `luminaguard run`: a disposable sandbox for one command.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use luminaguard_backend::{Backend, BackendError, CreateRequest, Sandbox};
use luminaguard_core::config::ConfigPaths;
use luminaguard_core::network::EgressRule;
use luminaguard_core::{
    BackendChoice, ByteSize, Config, NetworkPolicy, RuntimeDir, SandboxId, SandboxSpec, Workspace,
    WorkspacePolicy,
};
use luminaguard_firecracker::FirecrackerBackend;
use luminaguard_process_sandbox::backend::ProcessBackend;
use luminaguard_protocol::ClientOptions;
use luminaguard_qemu::{Accel, GuestImage, QemuBackend};

/// Settings shared by every command that creates a sandbox.
#[derive(Debug, Args)]
pub struct SandboxArgs {
    /// Host directory mounted read-write at /workspace (default: an empty tmpfs). Never `/`, a
    /// system directory (or inside or above one), a shared one like /tmp or /home, or
    /// LuminaGuard's own state (docs/configuration.md#workspaces).
    #[arg(long, value_name = "DIR")]
    pub workspace: Option<PathBuf>,
    /// Memory limit (no swap), e.g. 512M.
    #[arg(long)]
    pub memory: Option<ByteSize>,
    /// Most processes/threads at once.
    #[arg(long)]
    pub pids: Option<u32>,
    /// CPU quota in whole CPUs.
    #[arg(long)]
    pub cpus: Option<u32>,
    /// Default per-command timeout: the command's whole process tree is killed after this long.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub timeout: Option<Duration>,
    /// The sandbox is destroyed this long after it starts, whatever it is doing.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub lifetime: Option<Duration>,
    /// Run WITHOUT memory, PID and CPU limits (e.g. rootless where no cgroup is delegated).
    #[arg(long)]
    pub no_cgroup: bool,
    /// Which backend runs the sandbox: auto, process, qemu, firecracker (overrides the
    /// configuration).
    #[arg(long, value_name = "BACKEND")]
    pub backend: Option<BackendChoice>,
    /// Guest image for a microVM backend: a digest or a unique prefix of at least 8 hex digits
    /// (default: the newest image in the store).
    #[arg(long, value_name = "DIGEST")]
    pub image: Option<String>,
    /// Restore the sandbox from template NAME (`luminaguard template create`) instead of
    /// booting it: Firecracker only; the settings must be the template's.
    #[arg(long, value_name = "NAME")]
    pub template: Option<String>,
    /// Allow outbound connections to DEST (repeatable): an address or CIDR (any port, any
    /// protocol), ADDR:PORT (that TCP/UDP port), or a domain — NAME, NAME:PORT, or *.NAME for
    /// its subdomains — resolved by the sandbox's own DNS-pinning resolver, which lets through
    /// only the addresses it answered. Without --net the sandbox has no network at all.
    /// Private, loopback, link-local and cloud-metadata addresses and the host's own stay
    /// unreachable unless a --net entry lies inside them. Needs root.
    #[arg(long = "net", value_name = "DEST")]
    pub net_allow: Vec<EgressRule>,
    /// Never allow DEST (an address, CIDR, ADDR:PORT or domain, as for --net), whatever --net
    /// allows (repeatable).
    #[arg(long = "net-deny", value_name = "DEST", requires = "net_allow")]
    pub net_deny: Vec<EgressRule>,
}

impl SandboxArgs {
    /// The configured defaults with these flags applied, validated.
    pub fn spec(&self, config: &Config) -> anyhow::Result<SandboxSpec> {
        let mut spec = config.defaults.clone();
        if let Some(m) = self.memory {
            spec.memory = m;
        }
        if let Some(p) = self.pids {
            spec.limits.pids = p;
        }
        if let Some(c) = self.cpus {
            spec.vcpus = c;
        }
        if let Some(t) = self.timeout {
            spec.limits.exec_timeout = t;
        }
        if let Some(l) = self.lifetime {
            spec.lifetime = l;
        }
        if let Some(b) = self.backend {
            spec.backend = b;
        }
        if !self.net_allow.is_empty() {
            spec.network = NetworkPolicy::Egress {
                allow: self.net_allow.clone(),
                deny: self.net_deny.clone(),
            };
        }
        spec.validate().context("invalid sandbox settings")?;
        Ok(spec)
    }

    /// Builds what [`Backend::create`] needs; also removes leftovers of dead sandboxes first
    /// (cheap when there are none).
    pub async fn request(
        &self,
        config: &Config,
        id: SandboxId,
        persistent: bool,
    ) -> anyhow::Result<CreateRequest> {
        let spec = self.spec(config)?;
        let runtime = config.runtime()?;
        // Resolved and checked once, here; what the sandbox gets is the resolved path that
        // passed (the create checks it again).
        let workspace = match &self.workspace {
            Some(w) => {
                let (w, policy) = (w.clone(), protected_state(&runtime));
                Some(
                    tokio::task::spawn_blocking(move || Workspace::resolve_blocking(&w, &policy))
                        .await??,
                )
            }
            None => None,
        };
        let report = luminaguard_backend::collect_garbage(&runtime).await?;
        for e in &report.errors {
            tracing::warn!("gc: {e}");
        }
        if self.no_cgroup {
            eprintln!(
                "luminaguard: WARNING: --no-cgroup: this sandbox has no memory, PID or CPU limits"
            );
        }
        Ok(CreateRequest {
            id,
            spec,
            workspace,
            persistent,
            without_cgroup: self.no_cgroup,
            runtime,
        })
    }
}

/// What a workspace may not be, contain or lie inside besides the system directories:
/// LuminaGuard's own state — the runtime directory, the image store and Firecracker's compiled
/// seccomp filters beside it, the user's configuration directory. A sandbox that could write
/// these could reach every later sandbox.
pub fn protected_state(runtime: &RuntimeDir) -> WorkspacePolicy {
    let mut policy = WorkspacePolicy::new().protect(runtime.root(), "the runtime directory");
    if let Ok(store) = image_store_root() {
        policy = policy
            .protect(
                store.with_file_name(SECCOMP_CACHE),
                "LuminaGuard's compiled seccomp filters",
            )
            .protect(store, "LuminaGuard's image store");
    }
    let env_path = |k: &str| std::env::var_os(k).map(PathBuf::from);
    let paths = ConfigPaths::standard(
        env_path("XDG_CONFIG_HOME").as_deref(),
        env_path("HOME").as_deref(),
    );
    if let Some(dir) = paths.user.as_deref().and_then(std::path::Path::parent) {
        policy = policy.protect(dir, "LuminaGuard's configuration");
    }
    policy
}

/// Where Firecracker's compiled seccomp filters are cached: beside the image store.
const SECCOMP_CACHE: &str = "firecracker-seccomp";

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

/// Where sandboxes' egress traffic leaves: the host's network namespace, or the named one in
/// `LUMINAGUARD_UPLINK_NETNS` (e.g. one routed through a VPN; the tests' fake internet).
pub fn uplink() -> luminaguard_net::Uplink {
    luminaguard_net::Uplink {
        netns: std::env::var("LUMINAGUARD_UPLINK_NETNS")
            .ok()
            .filter(|s| !s.is_empty()),
        pool: None,
    }
}

/// The upstream resolver sandboxes' resolvers ask: `LUMINAGUARD_DNS_UPSTREAM` (`IP` or
/// `IP:port`), else `None` — the uplink's `resolv.conf` decides.
pub fn dns_upstream() -> anyhow::Result<Option<std::net::SocketAddr>> {
    let Some(value) = std::env::var("LUMINAGUARD_DNS_UPSTREAM")
        .ok()
        .filter(|s| !s.is_empty())
    else {
        return Ok(None);
    };
    let parsed = value.parse::<std::net::SocketAddr>().or_else(|_| {
        value
            .parse::<std::net::IpAddr>()
            .map(|ip| std::net::SocketAddr::new(ip, luminaguard_net::resolver_service::PORT))
    });
    parsed.map(Some).map_err(|_| {
        anyhow::anyhow!("LUMINAGUARD_DNS_UPSTREAM={value:?} is not an IP address or IP:port")
    })
}

/// The image store: `LUMINAGUARD_IMAGE_STORE`, else the default for this user.
pub fn image_store_root() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("LUMINAGUARD_IMAGE_STORE") {
        return Ok(PathBuf::from(dir));
    }
    let env_path = |k: &str| std::env::var_os(k).map(PathBuf::from);
    luminaguard_image::store::default_root(
        nix::unistd::getuid().as_raw(),
        env_path("XDG_DATA_HOME").as_deref(),
        env_path("HOME").as_deref(),
    )
    .context("no image store: set LUMINAGUARD_IMAGE_STORE or HOME")
}

/// The image `reference` names, or the newest one; `None` when the store has none. Blocking.
pub fn find_image(
    reference: Option<&str>,
) -> anyhow::Result<Option<luminaguard_image::store::Image>> {
    let root = image_store_root()?;
    if reference.is_none() && !root.exists() {
        return Ok(None);
    }
    let store = luminaguard_image::Store::open(&root)
        .with_context(|| format!("opening image store {}", root.display()))?;
    let image = match reference {
        Some(r) => store.get(r)?,
        None => match luminaguard_qemu::newest_image(&store)? {
            Some(image) => image,
            None => return Ok(None),
        },
    };
    // Nothing boots from an image whose files no longer match its manifest.
    Ok(Some(store.verify_for_boot(image.digest.as_str())?))
}

fn client_options(spec: &SandboxSpec) -> ClientOptions {
    ClientOptions {
        default_exec_timeout: spec.limits.exec_timeout,
        ..Default::default()
    }
}

/// The backend for a request: `spec.backend` (after `--backend`), with `--image` for a
/// microVM; with `--template`, Firecracker restoring that template.
///
/// `auto`: Firecracker with KVM, else QEMU with KVM, else the process sandbox
/// ([`crate::pick::auto_backend`]; QEMU under TCG runs only when asked for by name).
pub async fn backend(req: &CreateRequest, args: &SandboxArgs) -> anyhow::Result<AnyBackend> {
    let spec = &req.spec;
    let image = args.image.as_deref();
    let client = client_options(spec);
    if let Some(name) = &args.template {
        if !matches!(
            spec.backend,
            BackendChoice::Auto | BackendChoice::Firecracker
        ) {
            anyhow::bail!(
                "--template restores a Firecracker snapshot: it cannot run with --backend {}",
                spec.backend
            );
        }
        let template = crate::template::open(&req.runtime, name).await?;
        return Ok(AnyBackend::Firecracker(Box::new(
            firecracker_for(spec, image)
                .await?
                .with_template(Some(template)),
        )));
    }
    let choice = match spec.backend {
        BackendChoice::Auto => {
            let facts = host_facts(image).await?;
            let (pick, why) = crate::pick::auto_backend(facts);
            tracing::info!(backend = %pick, "auto: {why}");
            pick
        }
        other => other,
    };
    match choice {
        BackendChoice::Process | BackendChoice::Auto => {
            let exe = std::env::current_exe()
                .context("finding our own binary to run as the sandbox init")?;
            Ok(AnyBackend::Process(Box::new(
                ProcessBackend::new(exe.clone(), client)
                    .with_uplink(uplink())
                    .with_resolver(exe, dns_upstream()?),
            )))
        }
        BackendChoice::Qemu => {
            let exe = std::env::current_exe()
                .context("finding our own binary to run as the sandbox's DNS resolver")?;
            Ok(AnyBackend::Qemu(Box::new(
                qemu_backend(image, client)
                    .await?
                    .with_uplink(uplink())
                    .with_resolver(exe, dns_upstream()?),
            )))
        }
        BackendChoice::Firecracker => Ok(AnyBackend::Firecracker(Box::new(
            firecracker_for(spec, image).await?,
        ))),
    }
}

/// What `auto` decides on (see [`crate::pick`]). The image and the programs are only looked
/// for where KVM can run a guest.
async fn host_facts(image: Option<&str>) -> anyhow::Result<crate::pick::HostFacts> {
    use luminaguard_firecracker::tools;
    let kvm = tokio::task::spawn_blocking(luminaguard_qemu::kvm::probe).await?;
    let mut facts = crate::pick::HostFacts {
        kvm: kvm.is_usable(),
        image: false,
        vmlinux: false,
        firecracker: false,
        qemu: false,
    };
    if !facts.kvm {
        return Ok(facts);
    }
    let reference = image.map(str::to_owned);
    let found = tokio::task::spawn_blocking(move || {
        let qemu = [
            luminaguard_qemu::host::QEMU_PROGRAM,
            luminaguard_qemu::host::VHOST_PROGRAM,
        ]
        .iter()
        .all(|p| luminaguard_qemu::find_program(p).is_some());
        find_image(reference.as_deref()).map(|i| (i, qemu))
    })
    .await??;
    let (image, qemu) = found;
    facts.qemu = qemu;
    facts.image = image.is_some();
    facts.vmlinux = image.as_ref().is_some_and(|i| {
        i.artifact_path(luminaguard_image::store::ArtifactKind::Vmlinux)
            .is_some()
    });
    facts.firecracker = tools::find_tool(tools::FIRECRACKER_ENV, tools::FIRECRACKER, None)
        .await
        .is_some();
    Ok(facts)
}

/// The Firecracker backend for `spec` with `image` (see [`firecracker_backend`]), its egress
/// uplink and DNS resolver.
pub async fn firecracker_for(
    spec: &SandboxSpec,
    image: Option<&str>,
) -> anyhow::Result<FirecrackerBackend> {
    let exe = std::env::current_exe()
        .context("finding our own binary to run as the sandbox's DNS resolver")?;
    Ok(firecracker_backend(image, client_options(spec))
        .await?
        .with_uplink(uplink())
        .with_resolver(exe, dns_upstream()?))
}

/// Firecracker (`LUMINAGUARD_FIRECRACKER`, else on PATH) with the image's `vmlinux`; only where
/// KVM can run a guest — Firecracker has no emulation to fall back on. Under the jailer when
/// root and the jailer is found; with LuminaGuard's seccomp policy when `seccompiler-bin` is
/// found, else Firecracker's built-in filters.
async fn firecracker_backend(
    image: Option<&str>,
    client: ClientOptions,
) -> anyhow::Result<FirecrackerBackend> {
    use luminaguard_firecracker::tools;
    let firecracker = tools::find_tool(tools::FIRECRACKER_ENV, tools::FIRECRACKER, None)
        .await
        .with_context(|| {
            format!(
                "firecracker not found: set {} or put it on PATH (see docs/firecracker-backend.md)",
                tools::FIRECRACKER_ENV
            )
        })?;
    let kvm = tokio::task::spawn_blocking(luminaguard_qemu::kvm::probe).await?;
    anyhow::ensure!(
        kvm.is_usable(),
        "Firecracker needs KVM that can run a guest, and this host's cannot: {kvm}"
    );
    let reference = image.map(str::to_owned);
    let image = tokio::task::spawn_blocking(move || find_image(reference.as_deref()))
        .await??
        .context("no image: run `luminaguard image build`")?;
    let mut backend = FirecrackerBackend::new(
        firecracker.clone(),
        luminaguard_firecracker::GuestImage::from_store(&image)?,
        client,
    );
    // As root, every VMM runs under the jailer (chroot, its own uid, PID namespace, cgroups)
    // when the release's jailer is there; a run without one says so.
    if nix::unistd::geteuid().is_root() {
        match tools::find_tool(tools::JAILER_ENV, tools::JAILER, Some(&firecracker)).await {
            Some(jailer) => backend = backend.with_jailer(Some(jailer)),
            None => tracing::warn!(
                "no jailer found ({} or next to firecracker): VMMs run unjailed, as an \
                 unprivileged uid of their own",
                tools::JAILER_ENV
            ),
        }
    }
    // LuminaGuard's own filter when the release's seccompiler-bin is there (a compile failure
    // stops the run); Firecracker's built-in filters otherwise — seccomp is never off.
    if let Some(seccompiler) =
        luminaguard_firecracker::seccomp::find_seccompiler(Some(&firecracker)).await
    {
        let cache = image_store_root()?.with_file_name(SECCOMP_CACHE);
        backend = backend
            .with_custom_seccomp(&seccompiler, &cache)
            .await
            .context("compiling LuminaGuard's seccomp policy for Firecracker")?;
    }
    Ok(backend)
}

async fn qemu_backend(image: Option<&str>, client: ClientOptions) -> anyhow::Result<QemuBackend> {
    let reference = image.map(str::to_owned);
    let (qemu, vhost, image, kvm) = tokio::task::spawn_blocking(move || {
        let find = |name: &str| {
            luminaguard_qemu::find_program(name).with_context(|| {
                format!(
                    "{name} not found (on PATH or in ~/.cargo/bin; scripts/setup-vm installs it)"
                )
            })
        };
        let qemu = find(luminaguard_qemu::host::QEMU_PROGRAM)?;
        let vhost = find(luminaguard_qemu::host::VHOST_PROGRAM)?;
        let image =
            find_image(reference.as_deref())?.context("no image: run `luminaguard image build`")?;
        anyhow::Ok((qemu, vhost, image, luminaguard_qemu::kvm::probe()))
    })
    .await??;
    let accel = if kvm.is_usable() {
        Accel::Kvm
    } else {
        Accel::Tcg
    };
    tracing::debug!(%kvm, %accel, image = %image.digest, "qemu backend");
    Ok(QemuBackend::new(
        qemu,
        vhost,
        GuestImage::from_store(&image)?,
        accel,
        client,
    ))
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    sandbox: SandboxArgs,
    /// Print the exit status as one JSON line on stderr.
    #[arg(long)]
    json: bool,
    /// The command and its arguments.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    argv: Vec<String>,
}

pub async fn run(args: RunArgs, config: &Config) -> anyhow::Result<ExitCode> {
    let req = args
        .sandbox
        .request(config, SandboxId::generate(), false)
        .await?;
    let sandbox = backend(&req, &args.sandbox)
        .await?
        .create(req)
        .await
        .context("starting the sandbox")?;
    let result = crate::stream::exec_in(
        &sandbox,
        crate::stream::ExecOptions {
            argv: args.argv.clone(),
            env: Vec::new(),
            cwd: "/workspace".into(),
            timeout: None,
            json: args.json,
            fresh: true,
        },
    )
    .await;
    if let Err(e) = sandbox.destroy().await {
        eprintln!("luminaguard: cleanup: {e}");
    }
    result
}
