//! The sandbox service: the one sandbox manager every caller goes through — the CLI now; the
//! daemon, the MCP server and gateway, and the agent loop as they come. A front-end parses what
//! its user said into these library types, calls the service, and renders the answer; it never
//! constructs a backend or a `CreateRequest` itself, so whatever the service enforces (the spec
//! validated, the workspace checked, leftovers collected before a create) no caller can skip.
//!
//! - [`Service::create`] makes a sandbox from the configured defaults and a [`CreateOptions`]:
//!   the spec validated, the workspace resolved and checked, the backend picked (`auto`) and
//!   made for the host ([`backends`]), with the image or template asked for;
//! - [`Service::attach`], [`Service::list`], [`Service::destroy`], [`Service::gc`],
//!   [`Service::seccomp_audit`] work from the sandboxes' records;
//! - errors are [`ServiceError`]s with a stable [`ErrorCode`].

pub mod backends;
mod error;
pub mod host;
pub mod pick;
pub mod templates;

use std::path::PathBuf;
use std::time::Duration;

use luminaguard_backend::{Backend, CreateRequest, GcReport, Listing, Sandbox};
use luminaguard_core::network::EgressRule;
use luminaguard_core::{
    BackendChoice, ByteSize, Config, NetworkPolicy, RuntimeDir, SandboxId, SandboxSpec, Workspace,
};
use luminaguard_protocol::ClientOptions;
use luminaguard_protocol::message::SeccompAudit;

pub use backends::AnyBackend;
pub use error::{ErrorCode, ServiceError};
pub use host::HostSettings;

/// What a caller asks for when it creates a sandbox: each `None` takes the configured default.
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    /// The sandbox's id (generated when `None`).
    pub id: Option<SandboxId>,
    /// Outlives the creating process (`sandbox create`), until removed or its lifetime ends;
    /// otherwise it lives as long as its creator (`run`).
    pub persistent: bool,
    /// Host directory shared read-write at `/workspace`, as the caller named it (resolved and
    /// checked here).
    pub workspace: Option<PathBuf>,
    pub memory: Option<ByteSize>,
    pub pids: Option<u32>,
    pub cpus: Option<u32>,
    /// Default per-command timeout.
    pub timeout: Option<Duration>,
    pub lifetime: Option<Duration>,
    /// Without memory, PID and CPU limits — only ever on explicit request.
    pub no_cgroup: bool,
    pub backend: Option<BackendChoice>,
    /// A guest image: digest or unique prefix (default: the newest).
    pub image: Option<String>,
    /// Restore from this template instead of booting (Firecracker).
    pub template: Option<String>,
    /// Egress allowed; empty: no network at all.
    pub net_allow: Vec<EgressRule>,
    /// Egress never allowed, whatever `net_allow` says.
    pub net_deny: Vec<EgressRule>,
}

/// The sandbox manager.
#[derive(Debug, Clone)]
pub struct Service {
    config: Config,
    runtime: RuntimeDir,
    host: HostSettings,
}

impl Service {
    /// A service for `config` on this host (see [`HostSettings::from_env`]).
    pub fn new(config: Config) -> Result<Self, ServiceError> {
        Self::with_host(config, HostSettings::from_env()?)
    }

    /// A service for `config` with the host's settings given.
    pub fn with_host(config: Config, host: HostSettings) -> Result<Self, ServiceError> {
        let runtime = config.runtime()?;
        Ok(Self {
            config,
            runtime,
            host,
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn runtime(&self) -> &RuntimeDir {
        &self.runtime
    }

    pub fn host(&self) -> &HostSettings {
        &self.host
    }

    /// The configured defaults with `opts` applied, validated.
    pub fn spec(&self, opts: &CreateOptions) -> Result<SandboxSpec, ServiceError> {
        let mut spec = self.config.defaults.clone();
        if let Some(m) = opts.memory {
            spec.memory = m;
        }
        if let Some(p) = opts.pids {
            spec.limits.pids = p;
        }
        if let Some(c) = opts.cpus {
            spec.vcpus = c;
        }
        if let Some(t) = opts.timeout {
            spec.limits.exec_timeout = t;
        }
        if let Some(l) = opts.lifetime {
            spec.lifetime = l;
        }
        if let Some(b) = opts.backend {
            spec.backend = b;
        }
        if !opts.net_allow.is_empty() {
            spec.network = NetworkPolicy::Egress {
                allow: opts.net_allow.clone(),
                deny: opts.net_deny.clone(),
            };
        } else if !opts.net_deny.is_empty() {
            return Err(ServiceError::InvalidSpec(
                "a network deny list needs an allow list (--net) to narrow".into(),
            ));
        }
        spec.validate()?;
        Ok(spec)
    }

    /// What a backend's `create` needs for `opts`: the spec, the workspace resolved and checked
    /// against the system and LuminaGuard's own state (what the sandbox gets is the resolved
    /// path that passed; the create checks it again). Also removes leftovers of dead sandboxes
    /// first (cheap when there are none).
    pub async fn request(&self, opts: &CreateOptions) -> Result<CreateRequest, ServiceError> {
        let spec = self.spec(opts)?;
        let workspace = match &opts.workspace {
            Some(w) => {
                let (w, policy) = (w.clone(), self.host.protected_state(&self.runtime));
                Some(
                    tokio::task::spawn_blocking(move || Workspace::resolve_blocking(&w, &policy))
                        .await??,
                )
            }
            None => None,
        };
        let report = luminaguard_backend::collect_garbage(&self.runtime).await?;
        for e in &report.errors {
            tracing::warn!("gc: {e}");
        }
        if opts.no_cgroup {
            tracing::warn!("no cgroup limits: memory, PIDs and CPU are not capped");
        }
        Ok(CreateRequest {
            id: opts.id.clone().unwrap_or_else(SandboxId::generate),
            spec,
            workspace,
            persistent: opts.persistent,
            without_cgroup: opts.no_cgroup,
            runtime: self.runtime.clone(),
        })
    }

    /// Creates a sandbox and returns once its agent answers. A persistent one is handed over
    /// only by [`Sandbox::hand_over`] — until then it ends with the caller.
    pub async fn create(&self, opts: CreateOptions) -> Result<Sandbox, ServiceError> {
        let req = self.request(&opts).await?;
        let backend = backends::backend(
            &self.host,
            &self.runtime,
            &req.spec,
            opts.image.as_deref(),
            opts.template.as_deref(),
        )
        .await?;
        Ok(backend.create(req).await?)
    }

    /// The Firecracker backend for `spec` (template making).
    pub async fn firecracker_for(
        &self,
        spec: &SandboxSpec,
        image: Option<&str>,
    ) -> Result<luminaguard_firecracker::FirecrackerBackend, ServiceError> {
        backends::firecracker_for(&self.host, spec, image).await
    }

    /// What `auto` would decide on here.
    pub async fn host_facts(&self, image: Option<&str>) -> Result<pick::HostFacts, ServiceError> {
        backends::host_facts(&self.host, image).await
    }

    /// A connection to the running, long-lived sandbox `id`.
    pub async fn attach(&self, id: &SandboxId) -> Result<Sandbox, ServiceError> {
        Ok(luminaguard_backend::attach(&self.runtime, id, ClientOptions::default()).await?)
    }

    /// Every sandbox, sorted by id.
    pub async fn list(&self) -> Result<Vec<Listing>, ServiceError> {
        let runtime = self.runtime.clone();
        let listing =
            tokio::task::spawn_blocking(move || luminaguard_backend::list_blocking(&runtime))
                .await?;
        Ok(listing.map_err(luminaguard_backend::BackendError::from)?)
    }

    /// Removes sandbox `id`: every process, cgroup and file it has. A microVM is first asked to
    /// power off through its agent (within [`luminaguard_qemu::backend::SHUTDOWN_GRACE`]); then,
    /// and for every other sandbox, whatever the record names is killed and removed.
    pub async fn destroy(&self, id: &SandboxId) -> Result<(), ServiceError> {
        let vm = self
            .list()
            .await?
            .iter()
            .any(|l| l.id == id.as_str() && l.accel.is_some());
        if vm {
            let attached = tokio::time::timeout(
                RM_ATTACH_TIMEOUT,
                luminaguard_backend::attach(&self.runtime, id, ClientOptions::default()),
            )
            .await;
            match attached {
                Ok(Ok(sandbox)) => {
                    return Ok(sandbox
                        .with_graceful_shutdown(luminaguard_qemu::backend::SHUTDOWN_GRACE)
                        .destroy()
                        .await?);
                }
                Ok(Err(e)) => tracing::debug!(%id, error = %e, "no agent to power off; killing"),
                Err(_) => tracing::debug!(%id, "agent did not answer in time; killing"),
            }
        }
        Ok(luminaguard_backend::destroy(&self.runtime, id).await?)
    }

    /// Removes what sandboxes whose owner died, or whose lifetime ended, left behind; as root
    /// also network objects no record names (a runtime directory removed by hand).
    pub async fn gc(&self) -> GcReport {
        let (runtime, uplink) = (self.runtime.clone(), self.host.uplink.clone());
        let collected = tokio::task::spawn_blocking(move || {
            let mut report = luminaguard_backend::gc::collect(&runtime);
            if nix::unistd::geteuid().is_root() {
                match luminaguard_backend::gc::collect_network(&runtime, &uplink) {
                    Ok(removed) => report.removed.extend(removed),
                    Err(e) => report.errors.push(e),
                }
            }
            report
        })
        .await;
        collected.unwrap_or_else(|e| GcReport {
            errors: vec![format!("gc failed: {e}")],
            ..GcReport::default()
        })
    }

    /// The system calls sandbox `id`'s seccomp policy denied, from the record its host-side
    /// supervisor keeps (readable after its last process is gone, until it is removed).
    pub async fn seccomp_audit(&self, id: &SandboxId) -> Result<SeccompAudit, ServiceError> {
        let dir = self.runtime.sandbox_dir(id)?;
        if !tokio::fs::try_exists(&dir).await.unwrap_or(false) {
            return Err(ServiceError::NotFound(format!(
                "sandbox {id} does not exist"
            )));
        }
        Ok(luminaguard_backend::seccomp_audit(&dir).await?)
    }
}

/// How long `destroy` tries to reach a microVM's agent to power it off before killing it.
const RM_ATTACH_TIMEOUT: Duration = Duration::from_secs(2);
