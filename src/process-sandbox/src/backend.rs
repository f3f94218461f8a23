//! The process sandbox as a [`Backend`]: a runtime directory and record, cgroup limits, the init
//! launched into fresh namespaces, and the agent's handshake.

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use luminaguard_backend::console::{ConsoleLimits, PendingConsole};
use luminaguard_backend::resolver::{self, DnsOptions};
use luminaguard_backend::seccomp_watch::SeccompWatch;
use luminaguard_backend::{
    Backend, BackendError, CreateRequest, ProcessRef, Sandbox, SandboxMeta, VmmIdentity,
};
use luminaguard_cgroup::Limits;
use luminaguard_core::ByteSize;
use luminaguard_core::runtime::SandboxFile;
use luminaguard_net::Uplink;
use luminaguard_net::resolver_service;
use luminaguard_protocol::{Client, ClientError, ClientOptions};

use crate::init::{InitConfig, WorkspaceSource};
use crate::launch::{AgentChannel, Identity, Launch, Launched, launch};

const NAME: &str = "process";
/// How long the sandbox's agent may take to answer the handshake.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs sandboxes as processes in fresh namespaces. `agent` is a binary with the `sandbox-init`
/// subcommand (the `luminaguard` binary itself, or `luminaguard-agent`).
#[derive(Debug, Clone)]
pub struct ProcessBackend {
    agent: PathBuf,
    client: ClientOptions,
    uplink: Uplink,
    dns: Option<DnsOptions>,
}

/// A sandbox's network, ready for its init.
#[derive(Debug)]
struct Network {
    /// The namespace the init joins.
    netns: OwnedFd,
    /// Shown as the sandbox's `/etc/resolv.conf` (a policy naming domains).
    resolv_conf: Option<PathBuf>,
}

impl ProcessBackend {
    pub fn new(agent: PathBuf, client: ClientOptions) -> Self {
        Self {
            agent,
            client,
            uplink: Uplink::default(),
            dns: None,
        }
    }

    /// Lets policies name domains: each such sandbox gets a DNS-pinning resolver, the process
    /// `exe dns-resolver` (see [`luminaguard_net::resolver_service`]), asking `upstream` (or,
    /// when `None`, the uplink's `resolv.conf` nameserver). Without this, a policy naming a
    /// domain is refused.
    pub fn with_resolver(mut self, exe: PathBuf, upstream: Option<SocketAddr>) -> Self {
        self.dns = Some(DnsOptions { exe, upstream });
        self
    }

    /// Where sandboxes with an egress policy send their traffic (default: the host's own
    /// network namespace).
    pub fn with_uplink(mut self, uplink: Uplink) -> Self {
        self.uplink = uplink;
        self
    }
}

fn setup(step: &'static str, reason: impl std::fmt::Display) -> BackendError {
    BackendError::Setup {
        backend: NAME,
        step,
        reason: reason.to_string(),
    }
}

impl Backend for ProcessBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn create(&self, req: CreateRequest) -> Result<Sandbox, BackendError> {
        let (dir, mut meta) = luminaguard_backend::begin_create(&req, NAME, |_| {}).await?;
        match self.start(&req, &dir, &mut meta).await {
            Ok((client, link)) => {
                let sandbox = Sandbox::new(req.id, dir, meta, client);
                Ok(match link {
                    Some(link) => sandbox.with_creator_link(link),
                    None => sandbox,
                })
            }
            Err(e) => {
                luminaguard_backend::abandon_create(dir, meta).await;
                Err(e)
            }
        }
    }
}

impl ProcessBackend {
    /// The sandbox's cgroup with the spec's limits (see [`luminaguard_backend::create_cgroup`]),
    /// with what to do about it when rootless.
    async fn create_cgroup(
        &self,
        req: &CreateRequest,
        dir: &Path,
        meta: &mut SandboxMeta,
    ) -> Result<luminaguard_cgroup::Cgroup, BackendError> {
        let spec = &req.spec;
        let limits = Limits {
            memory_bytes: spec.memory.bytes(),
            pids: u64::from(spec.limits.pids),
            cpus: Some(spec.vcpus),
        };
        match luminaguard_backend::create_cgroup(&req.id, dir, meta, limits).await {
            Err(BackendError::Cgroup(e)) if !nix::unistd::geteuid().is_root() => Err(setup(
                "create the cgroup",
                format!(
                    "{e} — a rootless sandbox needs a cgroup v2 subtree delegated to this user; \
                     without one, --no-cgroup runs it with no memory, PID or CPU limits"
                ),
            )),
            other => other,
        }
    }

    /// For an egress policy: records the uplink, builds the sandbox's egress path (and, for a
    /// policy naming domains, starts its resolver) and opens the network namespace its init
    /// joins. `None` for no network (the init gets a new, empty one).
    async fn create_network(
        &self,
        req: &CreateRequest,
        dir: &Path,
        meta: &mut SandboxMeta,
        cgroup: Option<&luminaguard_cgroup::Cgroup>,
    ) -> Result<Option<Network>, BackendError> {
        let policy = &req.spec.network;
        if policy.is_none() {
            return Ok(None);
        }
        if !nix::unistd::geteuid().is_root() {
            return Err(setup(
                "set up network egress",
                "it needs root (it creates network namespaces, veth links and nftables tables); \
                 run as root or without a network policy",
            ));
        }
        // Known before anything is built: a host without a resolver fails at once.
        let dns = resolver::plan(NAME, self.dns.as_ref(), policy, &self.uplink).await?;
        meta.net = Some(self.uplink.clone());
        meta.save(dir).await?;
        let opts = luminaguard_net::topology::Options {
            uplink: &self.uplink,
            lock: &req.runtime.root().join("net.lock"),
            fail_at: None,
        };
        let egress = luminaguard_net::topology::create(&req.id, policy, &opts)
            .await
            .map_err(|e| setup("set up network egress", e))?;
        let resolv_conf = match dns {
            None => None,
            Some(planned) => {
                let resolv_conf = dir.join(SandboxFile::ResolvConf.file_name());
                tokio::fs::write(&resolv_conf, resolver_service::sandbox_resolv_conf())
                    .await
                    .map_err(|e| {
                        setup(
                            "start the DNS resolver",
                            format!("writing {}: {e}", resolv_conf.display()),
                        )
                    })?;
                resolver::start(NAME, &planned, &egress, dir, meta, cgroup).await?;
                Some(resolv_conf)
            }
        };
        let netns = egress
            .open_sandbox_netns()
            .await
            .map_err(|e| setup("open the sandbox's network namespace", e))?;
        Ok(Some(Network { netns, resolv_conf }))
    }

    /// Everything after the record exists; on error the caller removes what the record names.
    /// Returns the connection and the creator link (see [`Sandbox::with_creator_link`]).
    async fn start(
        &self,
        req: &CreateRequest,
        dir: &Path,
        meta: &mut SandboxMeta,
    ) -> Result<(Client, Option<OwnedFd>), BackendError> {
        let spec = &req.spec;
        // Nothing in a sandbox is host root: as root, its uid 0 is an unprivileged uid of its
        // own, which also owns its directory (the init builds its root in there).
        let identity = if nix::unistd::geteuid().is_root() {
            Some(
                luminaguard_backend::vmm_identity::claim_identity(
                    &req.runtime,
                    &req.id,
                    dir,
                    meta,
                    None,
                    true,
                )
                .await?,
            )
        } else {
            None
        };
        let staging = dir.join("root");
        tokio::fs::create_dir(&staging)
            .await
            .map_err(|e| setup("create the staging root", e))?;

        let cgroup = if req.without_cgroup {
            tracing::warn!(id = %req.id, "no cgroup limits: memory, PIDs and CPU are not capped");
            None
        } else {
            Some(self.create_cgroup(req, dir, meta).await?)
        };
        let network = self.create_network(req, dir, meta, cgroup.as_ref()).await?;
        let (netns, resolv_conf) = match network {
            Some(n) => (Some(n.netns), n.resolv_conf),
            None => (None, None),
        };
        // As root, the workspace is an idmapped mount of the very directory that was checked
        // (opened once, with no link anywhere on the way): its owner is the sandbox's uid 0
        // inside, and what the sandbox writes there belongs to that owner on the host.
        // Rootless, the init binds it (the sandbox runs as its owner).
        let (workspace, workspace_fd) = match (&req.workspace, &identity) {
            (None, _) => (WorkspaceSource::Scratch, None),
            (Some(ws), None) => (WorkspaceSource::Bind(ws.path().to_owned()), None),
            (Some(ws), Some(who)) => {
                let (path, ids) = (ws.path().to_owned(), (who.uid, who.gid));
                let tree = tokio::task::spawn_blocking(move || {
                    let handle = luminaguard_backend::hostfs::open_dir_no_links(&path)
                        .map_err(|e| setup("open the workspace", e))?;
                    crate::idmap::idmapped_workspace(&handle, &path, ids)
                        .map_err(|e| setup("mount the workspace", e))
                })
                .await??;
                (WorkspaceSource::Mount, Some(tree))
            }
        };
        let review = match (spec.review, &req.workspace, &identity) {
            (None, _, _) => None,
            (Some(size), Some(_), Some(who)) => {
                Some(review_layer(dir, size, who.uid, who.gid).await?)
            }
            (Some(_), None, _) => {
                return Err(setup(
                    "set up the review layer",
                    "a speculative run needs a workspace to preview changes to",
                ));
            }
            (Some(_), Some(_), None) => {
                return Err(setup(
                    "set up the review layer",
                    "a speculative run needs root (its private layer is a tmpfs the host mounts)",
                ));
            }
        };
        let init = InitConfig {
            review,
            staging_root: staging,
            workspace,
            scratch_size: scratch_size(spec, cgroup.is_some()),
            hostname: "luminaguard".into(),
            open_files: spec.limits.open_files,
            file_size: spec.limits.file_size.bytes(),
            landlock_required: true,
            // Sockets of the inet families only where there is a network to use them on.
            seccomp_profile: if netns.is_some() {
                "network"
            } else {
                "default"
            }
            .into(),
            lifetime_ms: u64::try_from(spec.lifetime.as_millis()).ok(),
            resolv_conf,
            mounts: spec.mounts.clone(),
        };
        // The keeper is forked while the init starts: the init's ends of its pairs exist at
        // once, and what the init writes or hands over waits in them until the keeper reads.
        let (keeper, monitor) = self
            .start_keeper(dir, identity.as_ref(), req.persistent)
            .await?;
        let console = match &keeper {
            Keeper::Process(pending) => pending
                .vmm_end
                .try_clone()
                .map_err(|e| setup("start the keeper", e))?,
            Keeper::Thread(end) => end.try_clone().map_err(|e| setup("start the keeper", e))?,
        };
        let sock = dir.join(SandboxFile::AgentSocket.file_name());
        let channel = if req.persistent {
            let listener = tokio::net::UnixListener::bind(&sock)
                .and_then(|l| l.into_std())
                .map_err(|e| setup("bind the agent socket", e))?;
            AgentChannel::Detached {
                listener: OwnedFd::from(listener),
            }
        } else {
            AgentChannel::Pair
        };
        let agent = self.agent.clone();
        let ids = identity
            .as_ref()
            .map_or(Identity::Caller, |w| Identity::Mapped {
                uid: w.uid,
                gid: w.gid,
            });
        let launched = tokio::task::spawn_blocking(move || {
            launch(Launch {
                agent: &agent,
                config: &init,
                cgroup: cgroup.as_ref(),
                channel,
                netns: netns.as_ref(),
                identity: ids,
                console,
                monitor,
                workspace: workspace_fd,
            })
        })
        .await?
        .map_err(|e| setup("launch the sandbox init", e))?;
        let pid = launched.pid;
        // Reap the init whenever it ends, on a plain thread: a runtime's blocking pool would keep
        // a short-lived caller (`sandbox create`) from exiting while the sandbox lives on.
        std::thread::Builder::new()
            .name(format!("lg-reap-{pid}"))
            .spawn(move || nix::sys::wait::waitpid(pid, None))
            .map_err(|e| setup("start the init's reaper thread", e))?;
        meta.init = ProcessRef::of(pid.as_raw());
        if meta.init.is_none() {
            return Err(setup("start the sandbox init", "it exited at once"));
        }
        meta.save(dir).await?;

        let stream = match launched.socket {
            Some(s) => s
                .set_nonblocking(true)
                .and_then(|()| tokio::net::UnixStream::from_std(s)),
            None => tokio::net::UnixStream::connect(&sock).await,
        }
        .map_err(|e| setup("connect to the agent", e))?;
        let handshake =
            tokio::time::timeout(READY_TIMEOUT, Client::connect(stream, self.client.clone()));
        let ready = tokio::select! {
            ready = handshake => ready.unwrap_or(Err(ClientError::Timeout {
                what: "handshake",
                after: READY_TIMEOUT,
            })),
            // It never got as far as the init: say where it stopped, at once.
            e = Launched::failed_before_exec(launched.before_exec) => {
                return Err(setup("launch the sandbox init", e));
            }
        };
        // The keeper has been starting alongside; recorded once it runs (a creator killed
        // before that leaves a keeper that ends by itself when the init's ends close).
        if let Keeper::Process(pending) = keeper {
            let (process, _keeper) = pending
                .keeper()
                .await
                .map_err(|e| setup("start the keeper", e))?;
            meta.helpers.push(process);
            meta.save(dir).await?;
        }
        let client = match ready {
            Ok(client) => client,
            Err(source) => {
                return Err(BackendError::Agent {
                    id: req.id.to_string(),
                    source,
                    log: luminaguard_backend::log_tail(
                        &dir.join(SandboxFile::ConsoleLog.file_name()),
                        4096,
                    )
                    .await,
                });
            }
        };
        // Until the creator hands it over (`Sandbox::hand_over`, once it has told its own
        // caller the id), the sandbox lives only as long as the creator: the link stays open
        // until then, and a creator killed before that point leaves a sandbox that ends by
        // itself (its link closes) and that gc collects.
        Ok((client, Some(launched.creator)))
    }

    /// Starts the sandbox's keeper (see `luminaguard_backend::console` and
    /// `luminaguard_backend::seccomp_watch`); returns it, and the init's end of the pair it
    /// hands its seccomp listener over on.
    ///
    /// A sandbox that lives as long as its creator (`persistent` false) is kept by a thread of
    /// the creator's: no fork on the create's path. One that outlives it gets a keeper process
    /// of its own, run as the sandbox's identity and forked while the init starts; the caller
    /// records it once it runs. Either stays in the creator's cgroup, not the sandbox's: on
    /// cgroup v1 moving a process costs an RCU grace period (5–13 ms here) and a second move
    /// would wait behind the init's, on the create's critical path. What it spends is bounded by
    /// what the sandbox does inside its own limits (one record and one answer per denied call;
    /// console bytes into a file of bounded size), and a keeper process is killed by pid like
    /// any helper.
    async fn start_keeper(
        &self,
        dir: &Path,
        who: Option<&VmmIdentity>,
        persistent: bool,
    ) -> Result<(Keeper, OwnedFd), BackendError> {
        let record = dir.join(SandboxFile::SeccompRecord.file_name());
        let record = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&record)
            .await
            .map_err(|e| setup("create the seccomp record", e))?
            .into_std()
            .await;
        let (keeper_end, init_end) = std::os::unix::net::UnixStream::pair()
            .map_err(|e| setup("create the handoff pair", e))?;
        let watch = SeccompWatch::new(OwnedFd::from(keeper_end), OwnedFd::from(record))
            .map_err(|e| setup("start the seccomp record", e))?;
        let console = dir.join(SandboxFile::ConsoleLog.file_name());
        let keeper = if persistent {
            Keeper::Process(
                luminaguard_backend::console::spawn_console(
                    &console,
                    ConsoleLimits::DEFAULT,
                    &[],
                    who,
                    Some(watch),
                )
                .map_err(|e| setup("start the keeper", e))?,
            )
        } else {
            Keeper::Thread(
                tokio::task::spawn_blocking(move || {
                    luminaguard_backend::console::keep_in_thread(
                        &console,
                        ConsoleLimits::DEFAULT,
                        watch,
                    )
                })
                .await?
                .map_err(|e| setup("start the keeper", e))?,
            )
        };
        Ok((keeper, OwnedFd::from(init_end)))
    }
}

/// A sandbox's keeper: a process being started, or a thread of the creator's already running
/// (with the end the init's console is written into).
#[derive(Debug)]
enum Keeper {
    Process(PendingConsole),
    Thread(OwnedFd),
}

/// Memory kept out of the scratch tmpfs for the agent and the commands' own pages: a quarter of
/// the limit, between 16 and 128 MiB.
const AGENT_RESERVE_MIN: u64 = 16 << 20;
const AGENT_RESERVE_MAX: u64 = 128 << 20;

/// Mounts a speculative run's private layer: a tmpfs of `size` bytes at
/// `<sandbox dir>/review`, owned by the sandbox's uid, with `upper/` and `work/` for the
/// workspace overlay. Size-capped, so a command cannot fill the host with its changes; its
/// pages count against the sandbox's memory cgroup too. Removed with the sandbox
/// (`luminaguard_backend::gc::remove`).
async fn review_layer(
    dir: &Path,
    size: luminaguard_core::ByteSize,
    uid: u32,
    gid: u32,
) -> Result<PathBuf, BackendError> {
    let layer = dir.join(SandboxFile::Review.file_name());
    let at = layer.clone();
    tokio::task::spawn_blocking(move || -> Result<(), String> {
        let fail = |what: &str, e: &dyn std::fmt::Display| format!("{what}: {e}");
        #[allow(clippy::disallowed_methods)] // blocking by contract (spawn_blocking)
        std::fs::create_dir(&at).map_err(|e| fail("create it", &e))?;
        let data = format!(
            "size={},mode=0700,uid={uid},gid={gid}",
            size.bytes().max(4096)
        );
        nix::mount::mount(
            Some("tmpfs"),
            &at,
            Some("tmpfs"),
            nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
            Some(data.as_str()),
        )
        .map_err(|e| fail("mount its tmpfs", &e))?;
        for sub in ["upper", "work"] {
            let p = at.join(sub);
            #[allow(clippy::disallowed_methods)] // blocking by contract (spawn_blocking)
            std::fs::create_dir(&p).map_err(|e| fail(sub, &e))?;
            nix::unistd::chown(&p, Some(uid.into()), Some(gid.into()))
                .map_err(|e| fail(sub, &e))?;
        }
        Ok(())
    })
    .await?
    .map_err(|e| setup("set up the review layer", e))?;
    Ok(layer)
}

/// The scratch tmpfs's size (`/tmp`, `/dev/shm` and a private workspace together): the spec's
/// scratch, but — with a memory limit, which tmpfs pages count against — never more than the
/// limit less a reserve, so that filling it gives `ENOSPC`, never an out-of-memory kill of the
/// agent.
pub fn scratch_size(spec: &luminaguard_core::SandboxSpec, limited: bool) -> u64 {
    let scratch = spec.scratch.bytes();
    if !limited {
        return scratch;
    }
    let memory = spec.memory.bytes();
    let reserve = (memory / 4).clamp(AGENT_RESERVE_MIN, AGENT_RESERVE_MAX);
    scratch
        .min(memory.saturating_sub(reserve))
        .max(ByteSize::MIB)
}
