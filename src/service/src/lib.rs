//! The sandbox service: the one sandbox manager every caller goes through — the CLI, the
//! daemon, and the MCP server and gateway and the agent loop as they come. A front-end parses
//! what its user said into these library types, calls the service, and renders the answer; it
//! never constructs a backend or a `CreateRequest` itself, so whatever the service enforces
//! (the owner rule, the spec validated, the workspace checked, leftovers collected before a
//! create) no caller can skip.
//!
//! - every method acts for a [`Caller`] and names its [`Action`], which [`Service::admit`]
//!   judges first: a caller sees and touches only its own sandboxes (root: all); shared state
//!   (templates) is the service user's;
//! - [`Service::create`] makes a sandbox from the configured defaults and a [`CreateOptions`]
//!   (spec validated, workspace resolved and checked, backend picked and made for the host);
//! - [`Service::exec`] runs a command with the sandbox's recorded defaults and reports how it
//!   ended ([`exec`]); [`Service::read_file`] and [`Service::write_file`] stream files;
//! - [`Service::get`], [`Service::list`], [`Service::destroy`], [`Service::gc`],
//!   [`Service::expire`], [`Service::seccomp_audit`] work from the sandboxes' records;
//! - errors are [`ServiceError`]s with a stable [`ErrorCode`].

mod action;
pub mod agent_event;
mod always;
pub mod approvals;
pub mod ask;
mod attempts;
mod audit;
pub mod auditlog;
pub mod backends;
mod caller;
mod error;
pub mod events;
pub mod exec;
mod files;
pub mod host;
pub mod inspect;
mod live;
pub mod mounts;
pub mod pick;
pub mod pools;
pub mod put;
pub mod review;
pub mod templates;
pub mod tool_call;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use luminaguard_backend::{Backend, BackendError, CreateRequest, Sandbox};
use luminaguard_core::network::EgressRule;
use luminaguard_core::{
    BackendChoice, ByteSize, Config, NetworkPolicy, ReadOnlyMount, RuntimeDir, SandboxId,
    SandboxSpec, Workspace,
};
use luminaguard_protocol::ClientOptions;
use luminaguard_protocol::message::SeccompAudit;

pub use action::Action;
pub use approvals::{Answer, Approval, Decider, Outcome};
pub use backends::AnyBackend;
pub use caller::Caller;
pub use error::{ErrorCode, ServiceError};
pub use events::{Event, EventKind};
pub use exec::{Exec, ExecOptions, ExecOutput, ExitReport, Stdin};
pub use host::HostSettings;
pub use luminaguard_backend::{GcReport, Listing, SandboxState};

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
    /// Host directories or files shown read-only in the sandbox (process backend only), after
    /// any the configuration's defaults name: resolved and checked here for the caller (see
    /// [`mounts`]).
    pub mounts: Vec<ReadOnlyMount>,
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
    /// Take a ready sandbox from this warm pool (its settings; any given here must match).
    pub pool: Option<String>,
    /// A speculative run: the workspace is an overlay, the real one is changed only by
    /// [`Service::answer`] approving its card. No network during it.
    pub review: bool,
}

/// An egress rule as the policy's network action: its host (address, range or domain
/// pattern) and port (0: any).
fn net_action(rule: &EgressRule) -> luminaguard_policy::Action {
    use luminaguard_core::network::Host;
    let (host, port) = match rule {
        EgressRule::Cidr(net) => (net.to_string(), 0),
        EgressRule::HostPort {
            host: Host::Ip(ip),
            port,
        } => (ip.to_string(), *port),
        EgressRule::HostPort {
            host: Host::Domain(d),
            port,
        } => (d.to_string(), *port),
        EgressRule::Domain(d) => (d.to_string(), 0),
    };
    luminaguard_policy::Action::Net { host, port }
}

/// The sandbox manager. Cheap to clone; clones share the connections to sandboxes.
#[derive(Debug, Clone)]
pub struct Service {
    config: Config,
    runtime: RuntimeDir,
    host: HostSettings,
    /// The user this service runs as: workspaces of other callers must be their own.
    euid: u32,
    live: Arc<live::Live>,
    events: Arc<events::Bus>,
    pools: Arc<pools::Pools>,
    /// Diff Cards waiting for a person's answer.
    approvals: Arc<approvals::Approvals>,
    audit: Arc<audit::Audit>,
    /// What every command is judged by before it runs (`config.policy`).
    /// Replaced whole when a person approves an action *always* (an entry added to its file).
    policy: Arc<std::sync::RwLock<Arc<luminaguard_policy::Policy>>>,
    /// Held while the policy file is rewritten.
    policy_write: Arc<tokio::sync::Mutex<()>>,
    /// How this front-end asks the person at its terminal, if it can.
    asker: Arc<std::sync::OnceLock<ask::Asker>>,
    /// Other processes can answer this service's approvals (it is the daemon).
    remote_approvals: Arc<std::sync::atomic::AtomicBool>,
}

/// A sandbox just created, not yet given to its caller. [`Pending::commit`] makes it the
/// caller's (a long-lived one then outlives this process); dropped instead, it ends — a caller
/// that fails or is killed before it has told its user the id leaves nothing running.
#[derive(Debug)]
pub struct Pending {
    service: Service,
    sandbox: Sandbox,
    /// The creating caller's front-end session, for the record the commit writes.
    session: Option<Arc<str>>,
}

impl Pending {
    pub fn id(&self) -> &SandboxId {
        &self.sandbox.id
    }

    /// Its record as created.
    pub fn meta(&self) -> &luminaguard_backend::state::SandboxMeta {
        &self.sandbox.meta
    }

    /// Removes it now (rather than letting it end on its own when dropped).
    pub async fn discard(self) -> Result<(), ServiceError> {
        Ok(self.sandbox.destroy().await?)
    }

    /// Hands the sandbox over (a long-lived one now lives as long as its init or VMM) and keeps
    /// its connection for the caller's requests.
    pub async fn commit(mut self) -> Result<SandboxId, ServiceError> {
        let meta = &self.sandbox.meta;
        let caller = Caller {
            uid: meta.user.unwrap_or(self.service.euid),
            gid: 0,
            pid: None,
            session: self.session.clone(),
            front: None,
        };
        let spec = meta.spec.as_ref();
        // Queued, not waited for: the sandbox changes nothing by existing, and whatever runs in
        // it waits for its own record, which is durable only after this one (one queue, in
        // order).
        self.service
            .audit
            .note(
                &caller,
                serde_json::json!({
                    "type": "create",
                    "sandbox": self.sandbox.id,
                    "backend": meta.backend,
                    "persistent": meta.persistent,
                    "workspace": meta.workspace,
                    "mounts": spec.map(|s| &s.mounts),
                    "network": spec.map(|s| &s.network),
                    "review": spec.is_some_and(|s| s.review.is_some()),
                }),
            )
            .await;
        self.sandbox.hand_over().await?;
        let id = self.sandbox.id.clone();
        let (user, backend) = (self.sandbox.meta.user, self.sandbox.meta.backend.clone());
        if self
            .service
            .live
            .insert(live::Entry::new(self.sandbox, true))
            .is_none()
        {
            return Err(ServiceError::Backend(BackendError::NotFound(
                id.to_string(),
            )));
        }
        self.service
            .events
            .send(EventKind::Created, &id, user, &backend);
        Ok(id)
    }
}

impl Service {
    /// A service for `config` on this host (see [`HostSettings::from_config`]).
    pub fn new(config: Config) -> Result<Self, ServiceError> {
        let host = HostSettings::from_config(&config)?;
        Self::with_host(config, host)
    }

    /// A service for `config` with the host's settings given.
    pub fn with_host(config: Config, host: HostSettings) -> Result<Self, ServiceError> {
        let runtime = config.runtime()?;
        let pools = Arc::new(pools::Pools::new(&config));
        let audit = Arc::new(audit::Audit::new(config.audit_dir.clone()));
        // Fail closed: a policy that does not load (or lint) leaves no service to run anything.
        let policy = Arc::new(std::sync::RwLock::new(Arc::new(
            luminaguard_policy::Policy::load(&config.policy)?,
        )));
        Ok(Self {
            config,
            runtime,
            host,
            euid: nix::unistd::geteuid().as_raw(),
            live: Arc::default(),
            events: Arc::default(),
            pools,
            approvals: Arc::default(),
            audit,
            policy,
            policy_write: Arc::default(),
            asker: Arc::default(),
            remote_approvals: Arc::default(),
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

    /// Events from now on (see [`events`]).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Makes the runtime directory (or takes it over, if it is ours) before anything else is
    /// put in it (the daemon's socket).
    pub async fn prepare_runtime(&self) -> Result<(), ServiceError> {
        Ok(luminaguard_backend::create_private_dir(self.runtime.root()).await?)
    }

    /// How many sandboxes this service holds a connection to.
    pub fn connected(&self) -> usize {
        self.live.len()
    }

    /// Judges `action` for `caller`, before anything runs: a sandbox the caller may not use is
    /// reported as not existing (whether it does is not the caller's business); shared state is
    /// changed only by the service's own user or root.
    pub async fn admit(&self, caller: &Caller, action: &Action) -> Result<(), ServiceError> {
        if action.is_shared_state() && !(caller.is_root() || caller.uid == self.euid) {
            return Err(ServiceError::Forbidden(format!(
                "only root or uid {} may change templates",
                self.euid
            )));
        }
        if let Some(id) = action.sandbox() {
            // A sandbox this service is connected to has its owner in memory (it never
            // changes); any other is looked up in its record.
            let user = match self.live.get(id) {
                Some(entry) => entry.sandbox.meta.user,
                None => luminaguard_backend::record(&self.runtime, id).await?.1.user,
            };
            if !caller.may_use(user) {
                return Err(ServiceError::Backend(BackendError::NotFound(
                    id.to_string(),
                )));
            }
        }
        tracing::debug!(?caller, ?action, "admitted");
        Ok(())
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
        spec.mounts.extend(opts.mounts.iter().cloned());
        let at_workspace = spec
            .mounts
            .iter()
            .any(|m| m.at == std::path::Path::new(luminaguard_core::spec::WORKSPACE_PATH));
        if at_workspace && opts.workspace.is_some() {
            return Err(ServiceError::InvalidSpec(format!(
                "a mount at {} is a read-only workspace: give it or --workspace, not both",
                luminaguard_core::spec::WORKSPACE_PATH
            )));
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
        if opts.review {
            if opts.workspace.is_none() {
                return Err(ServiceError::InvalidSpec(
                    "a review previews changes to a workspace: give one (--workspace)".into(),
                ));
            }
            // Nothing leaves during a preview.
            spec.network = NetworkPolicy::None;
            spec.review = Some(self.config.review.max_layer);
        }
        spec.validate()?;
        Ok(spec)
    }

    /// What a backend's `create` needs for `opts`, for `caller`: the spec, the workspace
    /// resolved and checked against the system, LuminaGuard's own state and — for a caller
    /// other than this service's user — the caller's ownership (what the sandbox gets is the
    /// resolved path that passed; the create checks it again). Also removes leftovers of dead
    /// sandboxes first (cheap when there are none).
    pub async fn request(
        &self,
        caller: &Caller,
        opts: &CreateOptions,
    ) -> Result<CreateRequest, ServiceError> {
        let spec = self.spec(opts)?;
        let workspace = match &opts.workspace {
            Some(w) => {
                let mut policy = self.host.protected_state(&self.runtime);
                if caller.uid != self.euid {
                    if !w.is_absolute() {
                        return Err(ServiceError::InvalidSpec(format!(
                            "workspace {}: give an absolute path",
                            w.display()
                        )));
                    }
                    policy = policy.owned_by(caller.uid);
                }
                let w = w.clone();
                Some(
                    tokio::task::spawn_blocking(move || Workspace::resolve_blocking(&w, &policy))
                        .await??,
                )
            }
            None => None,
        };
        let mut spec = spec;
        if !spec.mounts.is_empty() {
            // Root and the service's own user may mount what they like (but masked files and
            // LuminaGuard's state); anyone else only what they could read themselves.
            let reader =
                (!caller.is_root() && caller.uid != self.euid).then_some((caller.uid, caller.gid));
            let (asked, protected) = (
                spec.mounts.clone(),
                self.host.protected_state(&self.runtime),
            );
            spec.mounts = tokio::task::spawn_blocking(move || {
                mounts::resolve_blocking(&asked, &protected, reader)
            })
            .await??;
        }
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
            user: Some(caller.uid),
        })
    }

    /// Creates a sandbox for `caller` and returns once its agent answers; it is the caller's
    /// once [`Pending::commit`]ted.
    pub async fn create(
        &self,
        caller: &Caller,
        opts: CreateOptions,
    ) -> Result<Pending, ServiceError> {
        self.admit(
            caller,
            &Action::Create {
                pool: opts.pool.clone(),
            },
        )
        .await?;
        let mut pending = match &opts.pool {
            // A pool's settings, network included, are the operator's.
            Some(pool) => self.take_pooled(caller, pool, &opts).await?,
            None => {
                let mut opts = opts;
                let id = opts.id.get_or_insert_with(SandboxId::generate).clone();
                self.judge_network(caller, &id, &opts.net_allow).await?;
                self.create_unpooled(caller, opts).await?
            }
        };
        pending.session.clone_from(&caller.session);
        Ok(pending)
    }

    /// A new sandbox, made now.
    async fn create_unpooled(
        &self,
        caller: &Caller,
        opts: CreateOptions,
    ) -> Result<Pending, ServiceError> {
        let req = self.request(caller, &opts).await?;
        let backend = backends::backend(
            &self.host,
            &self.runtime,
            &req.spec,
            opts.image.as_deref(),
            opts.template.as_deref(),
        )
        .await?;
        Ok(Pending {
            service: self.clone(),
            sandbox: backend.create(req).await?,
            session: None,
        })
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

    /// The connection to sandbox `id` (admitted already): the one this service holds, or a new
    /// one to a running long-lived sandbox, kept for the next request.
    async fn connection(&self, id: &SandboxId) -> Result<Arc<live::Entry>, ServiceError> {
        if let Some(entry) = self.live.get(id) {
            return Ok(entry);
        }
        let sandbox =
            luminaguard_backend::attach(&self.runtime, id, ClientOptions::default()).await?;
        self.live
            .insert(live::Entry::new(sandbox, false))
            .ok_or_else(|| ServiceError::Backend(BackendError::NotFound(id.to_string())))
    }

    /// Runs a command in sandbox `id` (see [`exec`]).
    pub async fn exec(
        &self,
        caller: &Caller,
        id: &SandboxId,
        opts: ExecOptions,
    ) -> Result<Exec, ServiceError> {
        let action = Action::Exec {
            id: id.clone(),
            argv: opts.argv.clone(),
        };
        self.admit(caller, &action).await?;
        if opts.argv.is_empty() {
            return Err(ServiceError::InvalidSpec(
                "no command to run (empty argv)".into(),
            ));
        }
        let decision = self.decide(&opts.argv, opts.cwd.as_deref());
        self.audit
            .record(
                caller,
                serde_json::json!({
                    "type": "exec",
                    "sandbox": id,
                    "argv": opts.argv,
                    "cwd": opts.cwd,
                    "decision": decision_json(&decision),
                }),
            )
            .await?;
        if decision.verdict == luminaguard_policy::Verdict::Deny {
            return Err(ServiceError::Denied(decision.to_string()));
        }
        if decision.verdict == luminaguard_policy::Verdict::Ask {
            self.hold_unpreviewable(caller, id, Unpreviewable::Exec(&opts.argv), &decision)
                .await?;
        }
        Ok(
            Exec::start(self.connection(id).await?, Arc::clone(&self.events), opts)
                .await?
                .with_audit(exec::ExitAudit {
                    audit: Arc::clone(&self.audit),
                    caller: caller.clone(),
                    sandbox: id.clone(),
                }),
        )
    }

    /// What cannot be previewed is asked about before it runs ([`ask`]): an asked command whose
    /// rule says its effect leaves the sandbox (publishing, pushing, fetching), in a sandbox
    /// that can reach the network; and an asked command on a workspace it would write directly
    /// — not a speculative run, whose changes wait for a card. An ask in a sandbox with no
    /// workspace and no network changes nothing a person keeps, and nothing leaves it: it runs,
    /// its decision on the record.
    async fn hold_unpreviewable(
        &self,
        caller: &Caller,
        id: &SandboxId,
        what: Unpreviewable<'_>,
        decision: &luminaguard_policy::Decision,
    ) -> Result<(), ServiceError> {
        let (_, meta) = luminaguard_backend::record(&self.runtime, id).await?;
        let spec = meta.spec.as_ref();
        let speculative = spec.is_some_and(|s| s.review.is_some());
        let networked = spec.is_some_and(|s| matches!(s.network, NetworkPolicy::Egress { .. }));
        let unpreviewable = if decision.outside && networked {
            format!(
                "its effect leaves the sandbox ({}), and this sandbox can reach the network",
                decision.reason
            )
        } else if speculative {
            // Its card will say why a person is asked.
            self.approvals.note_asked(id, decision.to_string());
            return Ok(());
        } else if meta.workspace.is_some() {
            "this sandbox writes its workspace directly (a review — `luminaguard run \
             --workspace DIR --review` — would show its changes first)"
                .to_owned()
        } else {
            return Ok(());
        };
        self.ask_before(
            caller,
            ask::Ask {
                sandbox: id.clone(),
                user: meta.user,
                workspace: meta.workspace,
                card: approvals::ActionCard {
                    kind: what.kind().into(),
                    argv: match what {
                        Unpreviewable::Exec(argv) => Some(argv.to_vec()),
                        Unpreviewable::Write(_) => None,
                    },
                    path: match what {
                        Unpreviewable::Write(path) => Some(path.to_owned()),
                        Unpreviewable::Exec(_) => None,
                    },
                    tool: None,
                    network: match spec.map(|s| &s.network) {
                        Some(NetworkPolicy::Egress { allow, .. }) => {
                            allow.iter().map(ToString::to_string).collect()
                        }
                        _ => Vec::new(),
                    },
                    unpreviewable,
                },
                asked: vec![decision.to_string()],
                policy_actions: vec![what.policy_action()],
            },
        )
        .await
        .map(drop)
    }

    /// The egress a caller asks for (beyond the configured defaults, which are the operator's)
    /// is judged by the policy's network rules before the sandbox exists: a destination it
    /// denies refuses the create; one it asks about is put to a person first (network cannot
    /// be previewed), and the sandbox gets its network only once approved.
    async fn judge_network(
        &self,
        caller: &Caller,
        id: &SandboxId,
        allow: &[EgressRule],
    ) -> Result<(), ServiceError> {
        let mut asked = Vec::new();
        for rule in allow {
            let decision = self.policy().decide(&net_action(rule));
            self.audit
                .record(
                    caller,
                    serde_json::json!({
                        "type": "network",
                        "sandbox": id,
                        "destination": rule.to_string(),
                        "decision": decision_json(&decision),
                    }),
                )
                .await?;
            match decision.verdict {
                luminaguard_policy::Verdict::Deny => {
                    return Err(ServiceError::Denied(format!(
                        "network to {rule}: {decision}"
                    )));
                }
                luminaguard_policy::Verdict::Ask => asked.push((rule, decision)),
                luminaguard_policy::Verdict::Allow => {}
            }
        }
        if asked.is_empty() {
            return Ok(());
        }
        self.ask_before(
            caller,
            ask::Ask {
                sandbox: id.clone(),
                user: Some(caller.uid),
                workspace: None,
                card: approvals::ActionCard {
                    kind: "network".into(),
                    argv: None,
                    path: None,
                    network: asked.iter().map(|(r, _)| r.to_string()).collect(),
                    tool: None,
                    unpreviewable: "what a command sends over the network cannot be taken \
                        back, so it is asked about before the sandbox can reach it"
                        .into(),
                },
                asked: asked
                    .iter()
                    .map(|(r, d)| format!("network to {r}: {d}"))
                    .collect(),
                policy_actions: asked.iter().map(|(r, _)| net_action(r)).collect(),
            },
        )
        .await
        .map(drop)
    }

    /// What the policy decides for running `argv` (in `cwd`).
    pub fn decide(&self, argv: &[String], cwd: Option<&str>) -> luminaguard_policy::Decision {
        self.policy().decide(&luminaguard_policy::Action::Exec {
            argv: argv.to_vec(),
            cwd: cwd.map(str::to_owned),
        })
    }

    /// The policy in use.
    pub fn policy(&self) -> Arc<luminaguard_policy::Policy> {
        Arc::clone(
            &self
                .policy
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// Opens the audit log now (a daemon, before it serves: verified whole, its directory and
    /// key made) rather than at the first record.
    pub async fn open_audit(&self) -> Result<(), ServiceError> {
        self.audit.open().await
    }

    /// Writes a signed checkpoint over this service's audit records and closes the log (a
    /// short-lived caller, before it exits; the daemon's [`Service::close`] does it too).
    pub async fn close_audit(&self) {
        self.audit.close().await;
    }

    /// Names the session this service's front-end serves (an MCP session and its client) on
    /// its audit records from now on.
    pub fn set_session(&self, session: Option<String>) {
        self.audit.set_session(session);
    }

    /// Names the front-end this service serves (`cli`, `daemon`, `mcp`, …) on its audit
    /// records.
    pub fn set_front_kind(&self, kind: &str) {
        self.audit.set_kind(kind);
        // The daemon's approvals are answered through its API, by other processes; an MCP
        // server's, by the server itself (it puts them to its client's user).
        self.remote_approvals.store(
            kind == "daemon" || kind == "mcp",
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// Sandbox `id` as a listing shows it.
    pub async fn get(&self, caller: &Caller, id: &SandboxId) -> Result<Listing, ServiceError> {
        self.admit(caller, &Action::Get { id: id.clone() }).await?;
        let (_, meta) = luminaguard_backend::record(&self.runtime, id).await?;
        Ok(Listing::new(
            meta,
            luminaguard_backend::state::now_unix_ms(),
        ))
    }

    /// The caller's sandboxes (root: every sandbox), sorted by id.
    pub async fn list(&self, caller: &Caller) -> Result<Vec<Listing>, ServiceError> {
        self.admit(caller, &Action::List).await?;
        let runtime = self.runtime.clone();
        let listing =
            tokio::task::spawn_blocking(move || luminaguard_backend::list_blocking(&runtime))
                .await?;
        let mut listing = listing.map_err(BackendError::from)?;
        listing.retain(|l| caller.may_use(l.user));
        Ok(listing)
    }

    /// How many running sandboxes there are, per backend — every user's, for the daemon's
    /// metrics (numbers only; no caller sees another's sandboxes through this).
    pub async fn census(&self) -> std::collections::BTreeMap<String, u64> {
        let runtime = self.runtime.clone();
        let listing =
            tokio::task::spawn_blocking(move || luminaguard_backend::list_blocking(&runtime))
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default();
        let mut counts = std::collections::BTreeMap::new();
        for l in listing {
            if l.state == SandboxState::Running {
                *counts.entry(l.backend).or_insert(0) += 1;
            }
        }
        counts
    }

    /// Removes sandbox `id`: every process, cgroup and file it has. A microVM is first asked to
    /// power off through its agent (within [`luminaguard_qemu::backend::SHUTDOWN_GRACE`]); then,
    /// and for every other sandbox, whatever the record names is killed and removed. Commands
    /// running in it end (cancelled). A second destroy while one runs is refused.
    pub async fn destroy(&self, caller: &Caller, id: &SandboxId) -> Result<(), ServiceError> {
        self.admit(caller, &Action::Destroy { id: id.clone() })
            .await?;
        let Ok(entry) = self.live.begin_destroy(id) else {
            return Err(ServiceError::Conflict(format!(
                "sandbox {id} is being destroyed already"
            )));
        };
        let result = self.destroy_now(id, entry).await;
        self.live.end_destroy(id);
        self.withdraw_sandbox_approval(id).await;
        if let Ok((user, backend)) = &result {
            self.events.send(EventKind::Destroyed, id, *user, backend);
            self.audit
                .note(
                    caller,
                    serde_json::json!({"type": "destroy", "sandbox": id}),
                )
                .await;
        }
        result.map(drop)
    }

    /// Destroys `id` (its destroy begun in [`live::Live`]); returns whose it was and its
    /// backend, for the event.
    async fn destroy_now(
        &self,
        id: &SandboxId,
        entry: Option<Arc<live::Entry>>,
    ) -> Result<(Option<u32>, String), ServiceError> {
        // The connection this service holds, when no request is using it; else a new one.
        let sandbox = match entry.map(Arc::try_unwrap) {
            Some(Ok(entry)) => Some(entry.sandbox),
            Some(Err(_)) | None => None,
        };
        let (_, meta) = luminaguard_backend::record(&self.runtime, id).await?;
        let whose = (meta.user, meta.backend.clone());
        if meta.accel.is_none() {
            // A process sandbox: nothing to power off; killing it is its shutdown.
            match sandbox {
                Some(s) => s.destroy().await?,
                None => luminaguard_backend::destroy(&self.runtime, id).await?,
            }
            return Ok(whose);
        }
        let sandbox = match sandbox {
            Some(s) => Some(s),
            None => match tokio::time::timeout(
                RM_ATTACH_TIMEOUT,
                luminaguard_backend::attach(&self.runtime, id, ClientOptions::default()),
            )
            .await
            {
                Ok(Ok(sandbox)) => Some(sandbox),
                Ok(Err(e)) => {
                    tracing::debug!(%id, error = %e, "no agent to power off; killing");
                    None
                }
                Err(_) => {
                    tracing::debug!(%id, "agent did not answer in time; killing");
                    None
                }
            },
        };
        match sandbox {
            Some(s) => {
                s.with_graceful_shutdown(luminaguard_qemu::backend::SHUTDOWN_GRACE)
                    .destroy()
                    .await?
            }
            None => luminaguard_backend::destroy(&self.runtime, id).await?,
        }
        Ok(whose)
    }

    /// Removes what sandboxes whose owner died, or whose lifetime ended, left behind; as root
    /// also network objects no record names (a runtime directory removed by hand).
    pub async fn gc(&self, caller: &Caller) -> Result<GcReport, ServiceError> {
        self.admit(caller, &Action::Gc).await?;
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
        Ok(collected.unwrap_or_else(|e| GcReport {
            errors: vec![format!("gc failed: {e}")],
            ..GcReport::default()
        }))
    }

    /// Destroys every sandbox whose lifetime is over (whoever it belongs to: expiry is the
    /// service's own duty, not a caller's request) and returns them; and when the next one
    /// will be due, if any sandbox has a lifetime. A microVM does not stop itself at the end of
    /// its lifetime: this is what ends it.
    pub async fn expire(&self) -> (Vec<SandboxId>, Option<Duration>) {
        let runtime = self.runtime.clone();
        let listing =
            tokio::task::spawn_blocking(move || luminaguard_backend::list_blocking(&runtime))
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default();
        let mut expired = Vec::new();
        let mut next: Option<u64> = None;
        for l in listing {
            let Ok(id) = l.id.parse::<SandboxId>() else {
                continue;
            };
            if l.pool.is_some() {
                // A pool's own: replaced by the pool at its max age.
                continue;
            }
            match l.expires_in_ms {
                Some(0) => {}
                Some(ms) => {
                    next = Some(next.map_or(ms, |n| n.min(ms)));
                    continue;
                }
                None => continue,
            }
            let Ok(entry) = self.live.begin_destroy(&id) else {
                continue;
            };
            match self.destroy_now(&id, entry).await {
                Ok((user, backend)) => {
                    self.events.send(EventKind::Expired, &id, user, &backend);
                    expired.push(id.clone());
                }
                // Gone in the meantime (its own init ended it and a gc removed it).
                Err(ServiceError::Backend(BackendError::NotFound(_))) => {}
                Err(e) => tracing::warn!(%id, error = %e, "destroying an expired sandbox"),
            }
            self.live.end_destroy(&id);
        }
        (expired, next.map(Duration::from_millis))
    }

    /// Lets go of every connection this service holds, as a daemon does when it stops: a
    /// disposable sandbox (a one-shot run still in flight) is destroyed, a long-lived one is left
    /// running for the next service to find; with `destroy_all`, every one is destroyed.
    pub async fn close(&self, destroy_all: bool) {
        self.drain_pools().await;
        // A signed checkpoint over everything so far (the rest of closing adds no records).
        self.audit.close().await;
        let mut doomed: Vec<(SandboxId, Option<Arc<live::Entry>>)> = Vec::new();
        for entry in self.live.drain() {
            if destroy_all || !entry.sandbox.meta.persistent {
                doomed.push((entry.sandbox.id.clone(), Some(entry)));
            }
        }
        if destroy_all {
            // Also those this service never connected to (made before a restart).
            let runtime = self.runtime.clone();
            let listing =
                tokio::task::spawn_blocking(move || luminaguard_backend::list_blocking(&runtime))
                    .await;
            match listing {
                Ok(Ok(listing)) => doomed.extend(
                    listing
                        .into_iter()
                        .filter_map(|l| l.id.parse().ok())
                        .filter(|id| !doomed.iter().any(|(d, _)| d == id))
                        .map(|id| (id, None))
                        .collect::<Vec<_>>(),
                ),
                Ok(Err(e)) => tracing::warn!(error = %e, "listing sandboxes at shutdown"),
                Err(e) => tracing::warn!(error = %e, "listing sandboxes at shutdown"),
            }
        }
        for (id, entry) in doomed {
            if self.live.begin_destroy(&id).is_err() {
                continue;
            }
            match self.destroy_now(&id, entry).await {
                Ok((user, backend)) => self.events.send(EventKind::Destroyed, &id, user, &backend),
                Err(e) => tracing::warn!(%id, error = %e, "destroying a sandbox at shutdown"),
            }
            self.live.end_destroy(&id);
        }
    }

    /// The system calls sandbox `id`'s seccomp policy denied, from the record its host-side
    /// supervisor keeps (readable after its last process is gone, until it is removed).
    pub async fn seccomp_audit(
        &self,
        caller: &Caller,
        id: &SandboxId,
    ) -> Result<SeccompAudit, ServiceError> {
        self.admit(caller, &Action::Audit { id: id.clone() })
            .await?;
        let dir = self.runtime.sandbox_dir(id)?;
        Ok(luminaguard_backend::seccomp_audit(&dir).await?)
    }
}

/// How long `destroy` tries to reach a microVM's agent to power it off before killing it.
const RM_ATTACH_TIMEOUT: Duration = Duration::from_secs(2);

/// A policy decision as the audit log records it.
pub(crate) fn decision_json(decision: &luminaguard_policy::Decision) -> serde_json::Value {
    serde_json::json!({
        "verdict": decision.verdict,
        "risk": decision.risk,
        "reason": decision.reason,
        "rule": decision.rule,
        "policy": decision.policy_digest,
    })
}

/// What an asked action that cannot be previewed is.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Unpreviewable<'a> {
    /// A command.
    Exec(&'a [String]),
    /// A file write (absolute in the sandbox), outside a workspace it could be previewed in.
    Write(&'a str),
}

impl Unpreviewable<'_> {
    fn kind(self) -> &'static str {
        match self {
            Self::Exec(_) => "exec",
            Self::Write(_) => "write",
        }
    }

    /// The policy's action (what approving it *always* adds).
    fn policy_action(self) -> luminaguard_policy::Action {
        match self {
            Self::Exec(argv) => luminaguard_policy::Action::Exec {
                argv: argv.to_vec(),
                cwd: None,
            },
            Self::Write(path) => luminaguard_policy::Action::Write {
                path: path.to_owned(),
            },
        }
    }
}
