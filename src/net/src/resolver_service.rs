//! The DNS-pinning [`resolver`](crate::resolver) as a process of its own, one per sandbox whose
//! policy names domains.
//!
//! ```text
//!  sandbox netns           router netns (lgr-…)                      uplink netns (host)
//!  resolv.conf ──udp/tcp──▶ 10.255.255.1:53  (listening sockets)       resolver process:
//!  nameserver 10.255.255.1   input chain admits port 53 from sbx0      upstream queries leave
//!                            dns_* sets ◀── nft (pins) ───────────────  from here
//! ```
//!
//! The process ([`main`], the hidden `luminaguard dns-resolver` subcommand) starts as root and
//! single-threaded, joins the router namespace with `setns` just long enough to bind its UDP and
//! TCP sockets on the router's inner address — sockets stay in the namespace they were made in —
//! and to fork the [pin helper](crate::pin_helper), which stays there with `CAP_NET_ADMIN` only.
//! It then moves to the uplink namespace for good, so its upstream queries take the host's path
//! to the host's resolver, which the sandbox itself can never reach, and drops every privilege
//! (user `nobody`, no capabilities, `no_new_privs`) before it reads a single query. Only then
//! does it start its (single-threaded) runtime and report `ready` on stdout.
//!
//! [`spawn`] starts it from a backend: it returns as soon as the process exists, so that the
//! caller records its pid (for destroy and the garbage collector) before waiting on
//! [`Pending::ready`]. The process has its own process group (a terminal's ^C is not for it),
//! no stdin, and its log in a file in the sandbox's runtime directory; it lives until the
//! sandbox is destroyed.

use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use luminaguard_core::NetworkPolicy;
use nix::sched::CloneFlags;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncBufReadExt;

use crate::pin_helper::HelperPinner;
use crate::plan::FirewallPlan;
use crate::resolver::{NamePolicy, Resolver, ResolverConfig, Upstream};
use crate::topology::{Egress, ROUTER_INNER_ADDR, Uplink};

/// The port the resolver serves on.
pub const PORT: u16 = 53;
/// The hidden subcommand of the `luminaguard` binary that runs [`main`].
pub const SUBCOMMAND: &str = "dns-resolver";
/// How long the process may take to bind its sockets and say `ready`.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);
const READY: &str = "ready";

/// Everything the resolver process needs, passed as JSON on its command line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceConfig {
    /// The sandbox's id, for logs.
    pub sandbox: String,
    /// Where the listening sockets are made (`/run/netns/<name>`).
    pub router_netns: String,
    /// The router table whose `dns_*` sets the answers are pinned into.
    pub table: String,
    /// The address served on (the router's inner address: the sandbox's gateway).
    pub listen: Ipv4Addr,
    /// Where the process lives and asks upstream from.
    pub uplink: Uplink,
    pub upstream: SocketAddr,
    /// The sandbox's policy: which names are answered.
    pub policy: NetworkPolicy,
    /// Ranges never pinned (the plan's always-denied ranges, the host's own addresses included).
    pub always_denied: Vec<IpNet>,
    /// The user and group both halves run as once set up; `None`: `nobody` (see
    /// [`crate::pin_helper`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as: Option<(u32, u32)>,
}

impl ServiceConfig {
    /// The resolver for a sandbox's egress path, asking `upstream`.
    pub fn for_egress(
        sandbox: &str,
        egress: &Egress,
        policy: &NetworkPolicy,
        uplink: &Uplink,
        upstream: SocketAddr,
    ) -> Self {
        Self {
            sandbox: sandbox.to_owned(),
            router_netns: egress.names.router_netns.clone(),
            table: egress.names.table.clone(),
            listen: ROUTER_INNER_ADDR,
            uplink: uplink.clone(),
            upstream,
            policy: policy.clone(),
            always_denied: egress.plan.always_denied.clone(),
            run_as: None,
        }
    }

    /// The names the resolver answers.
    fn name_policy(&self) -> Result<NamePolicy, ServiceError> {
        let plan = FirewallPlan::compile(&self.policy, &[])
            .map_err(|e| ServiceError::Config(e.to_string()))?
            .ok_or_else(|| ServiceError::Config("the policy allows no network".into()))?;
        let mut names = NamePolicy::from_plan(&plan);
        names.always_denied.clone_from(&self.always_denied);
        Ok(names)
    }
}

/// Whether a policy needs the resolver: it names a domain, to allow or to deny.
pub fn needs_resolver(policy: &NetworkPolicy) -> bool {
    use luminaguard_core::network::{EgressRule, Host};
    let NetworkPolicy::Egress { allow, deny } = policy else {
        return false;
    };
    allow.iter().chain(deny).any(|rule| {
        matches!(
            rule,
            EgressRule::Domain(_)
                | EgressRule::HostPort {
                    host: Host::Domain(_),
                    ..
                }
        )
    })
}

/// The `resolv.conf` a sandbox behind the resolver gets.
pub fn sandbox_resolv_conf() -> String {
    format!(
        "# LuminaGuard: this sandbox's names are resolved, and its domain allowlist enforced, \
         by its resolver.\nnameserver {ROUTER_INNER_ADDR}\noptions edns0\n"
    )
}

/// Why the resolver process could not start or serve.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("bad resolver configuration: {0}")]
    Config(String),
    #[error("no upstream DNS resolver: {0}")]
    NoUpstream(String),
    #[error("cannot open network namespace {path}: {source}")]
    OpenNetns {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot enter {what}: {source}")]
    Setns {
        what: String,
        source: nix::errno::Errno,
    },
    #[error("cannot listen for DNS on {addr} ({proto}): {source}")]
    Bind {
        addr: SocketAddr,
        proto: &'static str,
        source: std::io::Error,
    },
    #[error("cannot drop the resolver's privileges: {0}")]
    Privileges(#[from] crate::pin_helper::PrivError),
    #[error("cannot start the pin helper: {0}")]
    PinHelper(std::io::Error),
    #[error("cannot start the resolver's runtime: {0}")]
    Runtime(std::io::Error),
    #[error("the resolver stopped serving: {0}")]
    Serve(#[from] crate::resolver::ResolverError),
    #[error("cannot start the resolver process {exe}: {source}")]
    Spawn {
        exe: PathBuf,
        source: std::io::Error,
    },
    #[error("the resolver process did not become ready ({reason}); its log ends: {log}")]
    NotReady { reason: String, log: String },
}

/// The upstream resolver for an uplink: the first `nameserver` of its `resolv.conf` —
/// `/etc/netns/<name>/resolv.conf` for a named uplink namespace when that exists (the
/// convention `ip netns exec` follows), else `/etc/resolv.conf` — on port 53.
pub async fn upstream_for(uplink: &Uplink) -> Result<SocketAddr, ServiceError> {
    let mut candidates = Vec::new();
    if let Some(ns) = &uplink.netns {
        candidates.push(Path::new("/etc/netns").join(ns).join("resolv.conf"));
    }
    candidates.push(PathBuf::from("/etc/resolv.conf"));
    for path in &candidates {
        let text = match tokio::fs::read_to_string(path).await {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(ServiceError::NoUpstream(format!(
                    "cannot read {}: {e}",
                    path.display()
                )));
            }
        };
        return first_nameserver(&text)
            .map(|ip| SocketAddr::new(ip, PORT))
            .ok_or_else(|| {
                ServiceError::NoUpstream(format!(
                    "{} names no nameserver; set one there or name the upstream explicitly",
                    path.display()
                ))
            });
    }
    Err(ServiceError::NoUpstream(format!(
        "none of {} exists",
        candidates
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )))
}

/// The first `nameserver` address of a `resolv.conf` (a scoped IPv6 one, `fe80::1%eth0`, is
/// skipped: its scope means nothing in another namespace).
pub fn first_nameserver(resolv_conf: &str) -> Option<std::net::IpAddr> {
    resolv_conf.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("nameserver"), Some(addr)) => addr.parse().ok(),
            _ => None,
        }
    })
}

/// A resolver process started, not yet known to serve.
#[derive(Debug)]
pub struct Pending {
    child: tokio::process::Child,
    pid: u32,
    log: PathBuf,
}

/// Starts `exe dns-resolver <config>` with its log in `log`. Returns once the process exists.
pub async fn spawn(
    exe: &Path,
    config: &ServiceConfig,
    log: &Path,
) -> Result<Pending, ServiceError> {
    let json = serde_json::to_string(config).map_err(|e| ServiceError::Config(e.to_string()))?;
    let spawn_err = |source| ServiceError::Spawn {
        exe: exe.to_owned(),
        source,
    };
    let log_file = tokio::fs::File::create(log)
        .await
        .map_err(spawn_err)?
        .into_std()
        .await;
    let mut cmd = tokio::process::Command::new(exe);
    cmd.arg(SUBCOMMAND)
        .arg(json)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log_file);
    // SAFETY: detach_from_caller makes only async-signal-safe system calls.
    unsafe {
        // A session of its own (not only a process group): the resolver parses a sandbox's
        // queries, and must never hold the caller's terminal or stray descriptors.
        cmd.pre_exec(|| luminaguard_core::child::detach_from_caller(&[]));
    }
    let child = cmd.spawn().map_err(spawn_err)?;
    let pid = child.id().ok_or_else(|| ServiceError::NotReady {
        reason: "it exited at once".into(),
        log: String::new(),
    })?;
    Ok(Pending {
        child,
        pid,
        log: log.to_owned(),
    })
}

impl Pending {
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Waits (at most [`READY_TIMEOUT`]) for the process to say it serves; returns the pid of
    /// its [pin helper](crate::pin_helper). On failure the process is killed and the error
    /// quotes the end of its log.
    pub async fn ready(mut self) -> Result<u32, ServiceError> {
        let outcome = match self.child.stdout.take() {
            Some(out) => {
                let mut line = String::new();
                let mut reader = tokio::io::BufReader::new(out);
                match tokio::time::timeout(READY_TIMEOUT, reader.read_line(&mut line)).await {
                    Ok(Ok(0)) => Err("it exited".to_owned()),
                    Ok(Ok(_)) => match line.trim().strip_prefix(READY).map(str::trim) {
                        Some(helper) => helper
                            .parse::<u32>()
                            .map_err(|_| format!("it said {:?}", line.trim())),
                        None => Err(format!("it said {:?}", line.trim())),
                    },
                    Ok(Err(e)) => Err(format!("reading its output: {e}")),
                    Err(_) => Err(format!("no answer within {READY_TIMEOUT:?}")),
                }
            }
            None => Err("its output is not connected".to_owned()),
        };
        match outcome {
            Ok(helper) => Ok(helper),
            Err(reason) => {
                let _ = self.child.start_kill();
                let _ = self.child.wait().await;
                let log = tokio::fs::read(&self.log).await.unwrap_or_default();
                let tail = log.len().saturating_sub(2048);
                Err(ServiceError::NotReady {
                    reason,
                    log: String::from_utf8_lossy(log.get(tail..).unwrap_or_default())
                        .trim()
                        .to_owned(),
                })
            }
        }
    }
}

/// The resolver process's entry point (`luminaguard dns-resolver <config json>`).
pub fn main(config_json: &str) -> ExitCode {
    match serve(config_json) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "DNS resolver");
            eprintln!("luminaguard dns-resolver: {e}");
            ExitCode::from(1)
        }
    }
}

fn open_netns(path: PathBuf) -> Result<OwnedFd, ServiceError> {
    std::fs::File::open(&path)
        .map(OwnedFd::from)
        .map_err(|source| ServiceError::OpenNetns { path, source })
}

fn enter(fd: &OwnedFd, what: &str) -> Result<(), ServiceError> {
    nix::sched::setns(fd, CloneFlags::CLONE_NEWNET).map_err(|source| ServiceError::Setns {
        what: what.to_owned(),
        source,
    })
}

/// What the resolver keeps from its privileged start.
struct Opened {
    udp: std::net::UdpSocket,
    tcp: std::net::TcpListener,
    /// The resolver's end of the pin helper's channel.
    pins: std::os::unix::net::UnixDatagram,
    helper: i32,
}

/// In the router namespace: binds the listening sockets and forks the pin helper, which stays
/// there; then moves to the uplink's namespace for good. Must run while the process has one
/// thread: `setns` moves only the calling thread, and the forked helper goes on running Rust.
fn set_up(cfg: &ServiceConfig, uid: u32, gid: u32) -> Result<Opened, ServiceError> {
    let router = open_netns(Path::new("/run/netns").join(&cfg.router_netns))?;
    let uplink = match &cfg.uplink.netns {
        Some(name) => open_netns(Path::new("/run/netns").join(name))?,
        None => open_netns(PathBuf::from("/proc/self/ns/net"))?,
    };
    enter(&router, &format!("network namespace {}", cfg.router_netns))?;
    let made = bind_and_fork(cfg, uid, gid);
    // Back out even when that failed: nothing else may run in the router namespace.
    enter(&uplink, "the uplink network namespace")?;
    let opened = made?;
    for r in [
        opened.udp.set_nonblocking(true),
        opened.tcp.set_nonblocking(true),
    ] {
        r.map_err(ServiceError::Runtime)?;
    }
    Ok(opened)
}

fn bind_and_fork(cfg: &ServiceConfig, uid: u32, gid: u32) -> Result<Opened, ServiceError> {
    let addr = SocketAddr::from((cfg.listen, PORT));
    let bind_err = |proto| {
        move |source| ServiceError::Bind {
            addr,
            proto,
            source,
        }
    };
    let udp = std::net::UdpSocket::bind(addr).map_err(bind_err("udp"))?;
    let tcp = std::net::TcpListener::bind(addr).map_err(bind_err("tcp"))?;
    let (pins, helper_end) = crate::pin_helper::channel().map_err(ServiceError::PinHelper)?;
    let resolver = std::process::id();
    // SAFETY: the process is single-threaded here (no runtime yet; `main` starts none before
    // this), so the child inherits no lock held by another thread and may run ordinary Rust.
    match unsafe { nix::unistd::fork() } {
        Err(e) => Err(ServiceError::PinHelper(e.into())),
        Ok(nix::unistd::ForkResult::Child) => {
            drop((udp, tcp, pins));
            // Its stdout is the starter's readiness pipe: only the resolver speaks there.
            if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
                let _ = nix::unistd::dup2_stdout(&null);
            }
            let resolver = i32::try_from(resolver).unwrap_or(i32::MAX);
            crate::pin_helper::serve(helper_end, &cfg.table, resolver, uid, gid)
        }
        Ok(nix::unistd::ForkResult::Parent { child }) => Ok(Opened {
            udp,
            tcp,
            pins,
            helper: child.as_raw(),
        }),
    }
}

/// `nobody`'s user and group (65534 where the host has no `nobody`).
fn nobody() -> (u32, u32) {
    match nix::unistd::User::from_name("nobody") {
        Ok(Some(u)) => (u.uid.as_raw(), u.gid.as_raw()),
        _ => (crate::pin_helper::NOBODY, crate::pin_helper::NOBODY),
    }
}

fn serve(config_json: &str) -> Result<(), ServiceError> {
    let cfg: ServiceConfig =
        serde_json::from_str(config_json).map_err(|e| ServiceError::Config(e.to_string()))?;
    let names = cfg.name_policy()?;
    let (uid, gid) = cfg.run_as.unwrap_or_else(nobody);
    let Opened {
        udp,
        tcp,
        pins,
        helper,
    } = set_up(&cfg, uid, gid)?;
    crate::pin_helper::wait_ready(&pins, READY_TIMEOUT / 2).map_err(|why| {
        ServiceError::PinHelper(std::io::Error::other(format!("it did not start: {why}")))
    })?;
    // From here on the process parses the sandbox's queries: it keeps no privilege at all.
    crate::pin_helper::become_user(uid, gid, &[])?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ServiceError::Runtime)?;
    say_ready(helper).map_err(ServiceError::Runtime)?;
    runtime.block_on(async move {
        let udp = tokio::net::UdpSocket::from_std(udp).map_err(ServiceError::Runtime)?;
        let tcp = tokio::net::TcpListener::from_std(tcp).map_err(ServiceError::Runtime)?;
        let pinner = HelperPinner::new(pins, cfg.table.clone()).map_err(ServiceError::PinHelper)?;
        let resolver = Arc::new(Resolver::new(
            names,
            pinner,
            Upstream::new(cfg.upstream),
            ResolverConfig::default(),
        ));
        tracing::info!(sandbox = %cfg.sandbox, upstream = %cfg.upstream, "DNS resolver serving");
        tokio::select! {
            r = Arc::clone(&resolver).serve_udp(udp) => r?,
            r = resolver.serve_tcp(tcp) => r?,
        }
        Ok(())
    })
}

/// Says `ready <pin helper's pid>` on stdout and points stdout at `/dev/null`: the starter's read ends, and a
/// later accidental print can neither block on a full pipe nor die of SIGPIPE. Called once the
/// sockets are bound (queries arriving before the runtime polls them wait in the socket).
fn say_ready(helper: i32) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    out.write_all(format!("{READY} {helper}\n").as_bytes())?;
    out.flush()?;
    let null = std::fs::OpenOptions::new().write(true).open("/dev/null")?;
    nix::unistd::dup2_stdout(&null).map_err(std::io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_nameserver_skips_comments_and_scoped_addresses() {
        let conf = "# generated\nsearch example.com\nnameserver fe80::1%eth0\n\
                    nameserver 10.255.255.53\nnameserver 1.1.1.1\n";
        assert_eq!(
            first_nameserver(conf),
            Some("10.255.255.53".parse().unwrap())
        );
        assert_eq!(first_nameserver("search x\n"), None);
    }

    #[test]
    fn needs_resolver_only_for_domains() {
        let p = |allow: &[&str], deny: &[&str]| NetworkPolicy::Egress {
            allow: allow.iter().map(|s| s.parse().unwrap()).collect(),
            deny: deny.iter().map(|s| s.parse().unwrap()).collect(),
        };
        assert!(!needs_resolver(&NetworkPolicy::None));
        assert!(!needs_resolver(&p(&["198.51.100.10:80"], &[])));
        assert!(needs_resolver(&p(&["api.example.com:443"], &[])));
        assert!(needs_resolver(&p(&["*.example.com"], &[])));
        assert!(needs_resolver(&p(&["0.0.0.0/0"], &["evil.example.com"])));
    }

    #[test]
    fn config_round_trips_and_keeps_host_addresses_unpinned() {
        let policy = NetworkPolicy::Egress {
            allow: vec!["api.example.com:443".parse().unwrap()],
            deny: vec!["bad.example.com".parse().unwrap()],
        };
        let cfg = ServiceConfig {
            sandbox: "task-1".into(),
            router_netns: "lgr-0123".into(),
            table: "lg0123".into(),
            listen: ROUTER_INNER_ADDR,
            uplink: Uplink::default(),
            upstream: "192.0.2.53:53".parse().unwrap(),
            policy,
            always_denied: vec![
                "10.0.0.0/8".parse().unwrap(),
                "192.0.2.1/32".parse().unwrap(),
            ],
            run_as: Some((65534, 65534)),
        };
        let back: ServiceConfig =
            serde_json::from_str(&serde_json::to_string(&cfg).unwrap()).unwrap();
        assert_eq!(back, cfg);
        let names = back.name_policy().unwrap();
        assert_eq!(names.always_denied, cfg.always_denied);
        assert_eq!(names.domains.len(), 1);
        assert_eq!(names.denied_domains.len(), 1);
    }
}
