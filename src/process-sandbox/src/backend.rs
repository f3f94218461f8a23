//! The process sandbox as a [`Backend`]: a runtime directory and record, cgroup limits, the init
//! launched into fresh namespaces, and the agent's handshake.

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use luminaguard_backend::resolver::{self, DnsOptions};
use luminaguard_backend::{Backend, BackendError, CreateRequest, ProcessRef, Sandbox, SandboxMeta};
use luminaguard_cgroup::Limits;
use luminaguard_core::ByteSize;
use luminaguard_core::runtime::SandboxFile;
use luminaguard_net::Uplink;
use luminaguard_net::resolver_service;
use luminaguard_protocol::{Client, ClientError, ClientOptions};

use crate::init::InitConfig;
use crate::launch::{AgentChannel, launch};

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
            Ok(client) => Ok(Sandbox::new(req.id, dir, meta, client)),
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
    async fn start(
        &self,
        req: &CreateRequest,
        dir: &Path,
        meta: &mut SandboxMeta,
    ) -> Result<Client, BackendError> {
        let spec = &req.spec;
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
        let init = InitConfig {
            staging_root: staging,
            workspace: req.workspace.as_ref().map(|w| w.path().to_owned()),
            workspace_size: spec.scratch.bytes(),
            tmp_size: (spec.scratch.bytes() / 4).max(ByteSize::MIB),
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
        };
        let sock = dir.join(SandboxFile::AgentSocket.file_name());
        let channel = if req.persistent {
            let listener = tokio::net::UnixListener::bind(&sock)
                .and_then(|l| l.into_std())
                .map_err(|e| setup("bind the agent socket", e))?;
            let log = tokio::fs::File::create(dir.join(SandboxFile::ConsoleLog.file_name()))
                .await
                .map_err(|e| setup("create the sandbox log", e))?
                .into_std()
                .await;
            AgentChannel::Detached {
                listener: OwnedFd::from(listener),
                log: OwnedFd::from(log),
            }
        } else {
            AgentChannel::Pair
        };
        let agent = self.agent.clone();
        let launched = tokio::task::spawn_blocking(move || {
            launch(&agent, &init, cgroup.as_ref(), channel, netns.as_ref())
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
        if req.persistent {
            // From now on the sandbox lives as long as its init, not as long as its creator.
            meta.owner = meta.init.unwrap_or(meta.owner);
        }
        meta.save(dir).await?;

        let stream = match launched.socket {
            Some(s) => s
                .set_nonblocking(true)
                .and_then(|()| tokio::net::UnixStream::from_std(s)),
            None => tokio::net::UnixStream::connect(&sock).await,
        }
        .map_err(|e| setup("connect to the agent", e))?;
        let ready =
            tokio::time::timeout(READY_TIMEOUT, Client::connect(stream, self.client.clone()))
                .await
                .unwrap_or(Err(ClientError::Timeout {
                    what: "handshake",
                    after: READY_TIMEOUT,
                }));
        match ready {
            Ok(client) => Ok(client),
            Err(source) => Err(BackendError::Agent {
                id: req.id.to_string(),
                source,
                // A detached init writes its errors to the log; an attached one to our stderr.
                log: luminaguard_backend::log_tail(
                    &dir.join(SandboxFile::ConsoleLog.file_name()),
                    4096,
                )
                .await,
            }),
        }
    }
}
