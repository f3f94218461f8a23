//! A sandbox's egress path, built and torn down:
//!
//! ```text
//!  sandbox netns (lgn-…)        router netns (lgr-…)                       uplink netns (host)
//!  eth0 10.255.255.2/30 ─veth─ sbx0 10.255.255.1/30   up0 B/30 ─veth─ lgu… A/30 → world
//!                               table inet lg…: policy-drop forward/input/output, the plan's
//!                               stages, masquerade out of up0           table inet luminaguard
//!                                                                        (shared): NAT, nothing in
//!                                                                        but replies
//! ```
//!
//! A microVM gets no sandbox namespace: its inner link is a tap device named `sbx0` in the router
//! namespace ([`SandboxLink::Tap`], see [`crate::tap`]), so the router table's rules apply
//! unchanged and the guest configures `10.255.255.2/30` on its virtio NIC itself.
//!
//! The inner link's addresses are the same for every sandbox (each pair of namespaces holds one
//! sandbox only); the uplink's /30 (A, B) is allocated from a pool, unique in the uplink
//! namespace, under a lock. The sandbox never holds a capability over the router namespace: the
//! firewall sits outside anything it can reach.
//!
//! Creation runs [`Step`]s in order; if one fails, everything already made is removed and the
//! error names the step. [`remove`] deletes objects by name and succeeds for objects already
//! gone, so destroy, rollback and the garbage collector share it.

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use ipnet::{IpNet, Ipv4Net};
use luminaguard_core::{NetworkPolicy, SandboxId};
use serde::{Deserialize, Serialize};

use crate::cmd::{CmdError, Netns};
use crate::names::{NetNames, inner};
use crate::nft::{self, Interfaces};
use crate::plan::{FirewallPlan, PlanError};
use crate::tap::{self, FrameFormat, TapError, TapOwner};

/// The sandbox's address on its inner link.
pub const SANDBOX_ADDR: Ipv4Addr = Ipv4Addr::new(10, 255, 255, 2);
/// The router's address on the inner link: the sandbox's gateway.
pub const ROUTER_INNER_ADDR: Ipv4Addr = Ipv4Addr::new(10, 255, 255, 1);
const INNER_PREFIX: u8 = 30;

/// Where sandboxes' traffic leaves towards the world.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Uplink {
    /// A named network namespace (`/run/netns/<name>`) standing in for the host, e.g. one routed
    /// through a VPN — or, in tests, a fake internet; `None`: the host's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
    /// The range uplink /30s are taken from; [`DEFAULT_POOL`] when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<Ipv4Net>,
}

/// Default uplink address pool: 16384 /30 links.
pub const DEFAULT_POOL: Ipv4Net = match Ipv4Net::new(Ipv4Addr::new(10, 200, 0, 0), 16) {
    Ok(n) => n,
    Err(_) => panic!("constant pool"),
};

impl Uplink {
    fn ns(&self) -> Netns<'_> {
        Netns::from_option(self.netns.as_deref())
    }

    fn pool(&self) -> Ipv4Net {
        self.pool.unwrap_or(DEFAULT_POOL)
    }
}

/// How the sandbox is attached to its router namespace.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SandboxLink {
    /// A process sandbox: a namespace of its own (`lgn-…`) holding `eth0`, a veth pair's end.
    #[default]
    Veth,
    /// A microVM: a persistent tap device `sbx0` in the router namespace, owned by the VMM's
    /// identity; no sandbox namespace. The guest addresses its NIC itself.
    Tap(TapOwner),
}

/// The steps of [`create`], in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    CheckForwarding,
    AllocateUplink,
    CreateNamespaces,
    CreateUplink,
    /// Tap only: the tap device in the router namespace.
    CreateTap,
    CreateRouterLinks,
    /// Veth only: the sandbox namespace's address and route.
    ConfigureSandbox,
    EnableRouting,
    RouterFirewall,
    UplinkFirewall,
}

impl Step {
    pub const ALL: [Self; 10] = [
        Self::CheckForwarding,
        Self::AllocateUplink,
        Self::CreateNamespaces,
        Self::CreateUplink,
        Self::CreateTap,
        Self::CreateRouterLinks,
        Self::ConfigureSandbox,
        Self::EnableRouting,
        Self::RouterFirewall,
        Self::UplinkFirewall,
    ];

    /// Whether a set-up for `link` runs this step.
    pub fn applies_to(self, link: &SandboxLink) -> bool {
        match self {
            Self::CreateTap => matches!(link, SandboxLink::Tap(_)),
            Self::ConfigureSandbox => matches!(link, SandboxLink::Veth),
            _ => true,
        }
    }

    /// The steps a set-up for `link` runs, in order.
    pub fn for_link(link: &SandboxLink) -> impl Iterator<Item = Self> + '_ {
        Self::ALL.into_iter().filter(|s| s.applies_to(link))
    }

    fn describe(self) -> &'static str {
        match self {
            Self::CheckForwarding => "check that the uplink namespace forwards IPv4",
            Self::AllocateUplink => "allocate the uplink's addresses",
            Self::CreateNamespaces => "create the sandbox's network namespaces",
            Self::CreateUplink => "create the uplink veth pair",
            Self::CreateTap => "create the microVM's tap device in the router namespace",
            Self::CreateRouterLinks => "create and address the router's links",
            Self::ConfigureSandbox => "address the sandbox's interface",
            Self::EnableRouting => {
                "enable forwarding and reverse-path filtering in the router namespace"
            }
            Self::RouterFirewall => "load the sandbox's firewall in its router namespace",
            Self::UplinkFirewall => "register the uplink in the uplink namespace's table",
        }
    }
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.describe())
    }
}

/// Why a sandbox's network could not be set up or removed.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("network for sandbox {sandbox}: {step}: {reason}")]
    Setup {
        sandbox: String,
        step: Step,
        reason: String,
    },
    #[error("network for sandbox {sandbox}: {source}")]
    Plan {
        sandbox: String,
        #[source]
        source: PlanError,
    },
    #[error("removing network objects {what}: {reason}")]
    Remove { what: String, reason: String },
}

/// The uplink link's two addresses (a /30).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UplinkAddrs {
    /// In the uplink namespace: the router's gateway.
    pub host: Ipv4Addr,
    /// The router's uplink address (what the sandbox's traffic is masqueraded to).
    pub router: Ipv4Addr,
}

/// A sandbox's egress path, up.
#[derive(Debug)]
pub struct Egress {
    pub names: NetNames,
    pub plan: FirewallPlan,
    pub addrs: UplinkAddrs,
    /// How the sandbox is attached ([`SandboxLink::Veth`] unless made by [`create_with_link`]).
    pub link: SandboxLink,
}

impl Egress {
    /// `/run/netns/<router netns>`: where the sandbox's firewall — and a microVM's tap — live.
    pub fn router_netns_path(&self) -> PathBuf {
        netns_path(&self.names.router_netns)
    }

    /// The name of a microVM's tap device in the router namespace (`sbx0`).
    pub fn tap_name(&self) -> &'static str {
        inner::ROUTER_SANDBOX
    }

    /// Attaches to a microVM's tap device and returns its descriptor: for QEMU's
    /// `-netdev tap,fd=N` (with [`FrameFormat::VnetHdr`]), so that QEMU needs neither the router
    /// namespace nor a capability. The descriptor keeps the router namespace alive while open:
    /// close it once the VMM holds its own copy.
    pub async fn open_tap(&self, format: FrameFormat) -> Result<OwnedFd, TapError> {
        tap::open(&self.router_netns_path(), inner::ROUTER_SANDBOX, format).await
    }

    /// `/run/netns/<sandbox netns>`: what the sandbox's first process joins (veth only: a
    /// microVM has no sandbox namespace).
    pub fn sandbox_netns_path(&self) -> PathBuf {
        netns_path(&self.names.sandbox_netns)
    }

    /// Opens the sandbox's network namespace, for `setns`.
    pub async fn open_sandbox_netns(&self) -> std::io::Result<OwnedFd> {
        let f = tokio::fs::File::open(self.sandbox_netns_path()).await?;
        Ok(OwnedFd::from(f.into_std().await))
    }
}

fn netns_path(name: &str) -> PathBuf {
    Path::new("/run/netns").join(name)
}

/// What [`create`] needs besides the sandbox and its policy.
#[derive(Debug, Clone)]
pub struct Options<'a> {
    pub uplink: &'a Uplink,
    /// A file to lock while allocating uplink addresses (one per runtime directory).
    pub lock: &'a Path,
    /// Tests: fail at this step as if it had failed, to prove the rollback.
    pub fail_at: Option<Step>,
}

/// Builds a process sandbox's egress path for `policy` (an egress policy; `none` needs no
/// network objects at all): [`create_with_link`] with [`SandboxLink::Veth`].
pub async fn create(
    id: &SandboxId,
    policy: &NetworkPolicy,
    opts: &Options<'_>,
) -> Result<Egress, NetError> {
    create_with_link(id, policy, opts, SandboxLink::Veth).await
}

/// Builds the sandbox's egress path for `policy`, attached by `link`. On any failure, removes
/// whatever it made.
pub async fn create_with_link(
    id: &SandboxId,
    policy: &NetworkPolicy,
    opts: &Options<'_>,
    link: SandboxLink,
) -> Result<Egress, NetError> {
    let names = NetNames::for_sandbox(id);
    match build(id, policy, &names, opts, &link).await {
        Ok((plan, addrs)) => Ok(Egress {
            names,
            plan,
            addrs,
            link,
        }),
        Err(e) => {
            if let Err(cleanup) = remove(&names, opts.uplink).await {
                tracing::error!(%id, error = %cleanup, "rolling back a failed network set-up");
            }
            Err(e)
        }
    }
}

async fn build(
    id: &SandboxId,
    policy: &NetworkPolicy,
    names: &NetNames,
    opts: &Options<'_>,
    link: &SandboxLink,
) -> Result<(FirewallPlan, UplinkAddrs), NetError> {
    let fail = |step: Step| {
        move |reason: String| NetError::Setup {
            sandbox: id.to_string(),
            step,
            reason,
        }
    };
    let gate = |step: Step| match opts.fail_at {
        Some(f) if f == step => Err(fail(step)("failure injected for a test".into())),
        _ => Ok(()),
    };
    let uplink = opts.uplink;

    gate(Step::CheckForwarding)?;
    check_forwarding(uplink)
        .await
        .map_err(fail(Step::CheckForwarding))?;

    gate(Step::AllocateUplink)?;
    let lock = take_lock(opts.lock).await.map_err(|e| {
        fail(Step::AllocateUplink)(format!("cannot lock {}: {e}", opts.lock.display()))
    })?;
    let (addrs, host_addrs) = allocate(id, uplink)
        .await
        .map_err(fail(Step::AllocateUplink))?;
    // Under the lock, so that two first sandboxes do not both create it.
    nft::ensure_uplink_table(uplink.ns())
        .await
        .map_err(|e| fail(Step::AllocateUplink)(e.to_string()))?;
    let plan = FirewallPlan::compile(policy, &host_addrs)
        .map_err(|source| NetError::Plan {
            sandbox: id.to_string(),
            source,
        })?
        .ok_or_else(|| fail(Step::AllocateUplink)("the policy allows no network".into()))?;

    gate(Step::CreateNamespaces)?;
    create_namespaces(names, link)
        .await
        .map_err(fail(Step::CreateNamespaces))?;

    gate(Step::CreateUplink)?;
    let made = create_uplink(names, uplink, addrs).await;
    // Its address is on a link now (or the step failed): others may allocate.
    drop(lock);
    made.map_err(fail(Step::CreateUplink))?;

    if let SandboxLink::Tap(owner) = link {
        gate(Step::CreateTap)?;
        tap::create_persistent(
            &netns_path(&names.router_netns),
            inner::ROUTER_SANDBOX,
            *owner,
        )
        .await
        .map_err(|e| fail(Step::CreateTap)(e.to_string()))?;
    }

    gate(Step::CreateRouterLinks)?;
    create_router_links(names, addrs, link)
        .await
        .map_err(fail(Step::CreateRouterLinks))?;

    if *link == SandboxLink::Veth {
        gate(Step::ConfigureSandbox)?;
        configure_sandbox(names)
            .await
            .map_err(fail(Step::ConfigureSandbox))?;
    }

    gate(Step::EnableRouting)?;
    enable_routing(names)
        .await
        .map_err(fail(Step::EnableRouting))?;

    gate(Step::RouterFirewall)?;
    router_firewall(names, &plan)
        .await
        .map_err(fail(Step::RouterFirewall))?;

    gate(Step::UplinkFirewall)?;
    nft::add_uplink(uplink.ns(), &names.uplink_host, addrs.router)
        .await
        .map_err(|e| fail(Step::UplinkFirewall)(e.to_string()))?;
    Ok((plan, addrs))
}

fn cmd_err(e: CmdError) -> String {
    e.to_string()
}

async fn ip(ns: Netns<'_>, args: &[&str]) -> Result<Vec<u8>, String> {
    crate::cmd::run(ns, "ip", args, None).await.map_err(cmd_err)
}

async fn ip_batch(ns: Netns<'_>, script: &str) -> Result<(), String> {
    crate::cmd::run(ns, "ip", &["-batch", "-"], Some(script))
        .await
        .map(drop)
        .map_err(cmd_err)
}

async fn check_forwarding(uplink: &Uplink) -> Result<(), String> {
    let out = crate::cmd::run(uplink.ns(), "sysctl", &["-n", "net.ipv4.ip_forward"], None)
        .await
        .map_err(cmd_err)?;
    if String::from_utf8_lossy(&out).trim() == "1" {
        return Ok(());
    }
    Err(format!(
        "IPv4 forwarding is off in {} (net.ipv4.ip_forward = 0), so sandbox traffic could not \
         leave it. LuminaGuard does not turn on host-wide routing by itself: enable it \
         (sysctl -w net.ipv4.ip_forward=1, and make sure your FORWARD filtering suits you), or \
         run without network access",
        uplink.ns().describe()
    ))
}

/// An exclusive lock on `path`, held until the returned file is dropped.
async fn take_lock(path: &Path) -> std::io::Result<nix::fcntl::Flock<std::fs::File>> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)?;
        nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| std::io::Error::from(e))
    })
    .await
    .map_err(std::io::Error::other)?
}

/// Every address configured in the uplink namespace, with its prefix length.
async fn uplink_addresses(uplink: &Uplink) -> Result<Vec<IpNet>, String> {
    let out = ip(uplink.ns(), &["-j", "addr", "show"]).await?;
    let v: serde_json::Value = serde_json::from_slice(&out)
        .map_err(|e| format!("cannot read `ip -j addr show` output: {e}"))?;
    let mut nets = Vec::new();
    for link in v.as_array().into_iter().flatten() {
        for a in link["addr_info"].as_array().into_iter().flatten() {
            let (Some(local), Some(len)) = (a["local"].as_str(), a["prefixlen"].as_u64()) else {
                continue;
            };
            let Ok(ip) = local.parse::<IpAddr>() else {
                continue;
            };
            if let Ok(net) = IpNet::new(ip, u8::try_from(len).unwrap_or(32)) {
                nets.push(net);
            }
        }
    }
    Ok(nets)
}

/// A free /30 in the pool (starting at a slot derived from the id, so concurrent creators
/// rarely race for the same one — they also hold the lock), and the uplink namespace's own
/// addresses (always denied to the sandbox).
async fn allocate(id: &SandboxId, uplink: &Uplink) -> Result<(UplinkAddrs, Vec<IpAddr>), String> {
    let existing = uplink_addresses(uplink).await?;
    let pool = uplink.pool();
    if pool.prefix_len() > INNER_PREFIX {
        return Err(format!("uplink pool {pool} is smaller than one /30"));
    }
    let slots = 1u32 << (INNER_PREFIX - pool.prefix_len());
    let start = {
        use sha2::{Digest, Sha256};
        let d = Sha256::digest(id.as_str().as_bytes());
        u32::from_be_bytes([d[0], d[1], d[2], d[3]]) % slots
    };
    let base = u32::from(pool.network());
    for i in 0..slots {
        let slot = (start + i) % slots;
        let net_addr = Ipv4Addr::from(base + slot * 4);
        let Ok(link) = Ipv4Net::new(net_addr, INNER_PREFIX) else {
            continue;
        };
        let taken = existing.iter().any(|n| match n {
            IpNet::V4(n) => n.contains(&link.network()) || link.contains(&n.addr()),
            IpNet::V6(_) => false,
        });
        if !taken {
            let host = Ipv4Addr::from(u32::from(net_addr) + 1);
            let router = Ipv4Addr::from(u32::from(net_addr) + 2);
            let own = existing.iter().map(IpNet::addr).collect();
            return Ok((UplinkAddrs { host, router }, own));
        }
    }
    Err(format!(
        "no free /30 left in the uplink pool {pool} (or it overlaps a network the uplink \
         namespace already has)"
    ))
}

async fn create_namespaces(names: &NetNames, link: &SandboxLink) -> Result<(), String> {
    let script = match link {
        SandboxLink::Veth => format!(
            "netns add {}\nnetns add {}\n",
            names.router_netns, names.sandbox_netns
        ),
        SandboxLink::Tap(_) => format!("netns add {}\n", names.router_netns),
    };
    ip_batch(Netns::Current, &script).await
}

async fn create_uplink(names: &NetNames, uplink: &Uplink, a: UplinkAddrs) -> Result<(), String> {
    let link = &names.uplink_host;
    ip_batch(
        uplink.ns(),
        &format!(
            "link add {link} type veth peer name {up} netns {router}\n\
             addr add {host}/{INNER_PREFIX} dev {link}\n\
             link set {link} up\n",
            up = inner::ROUTER_UPLINK,
            router = names.router_netns,
            host = a.host,
        ),
    )
    .await
}

async fn create_router_links(
    names: &NetNames,
    a: UplinkAddrs,
    link: &SandboxLink,
) -> Result<(), String> {
    // A microVM's `sbx0` exists already (the tap); a process sandbox's is made here, its peer
    // going straight into the sandbox namespace.
    let veth = match link {
        SandboxLink::Veth => format!(
            "link add {} type veth peer name {} netns {}\n",
            inner::ROUTER_SANDBOX,
            inner::SANDBOX,
            names.sandbox_netns
        ),
        SandboxLink::Tap(_) => String::new(),
    };
    ip_batch(
        Netns::Named(&names.router_netns),
        &format!(
            "{veth}\
             addr add {router}/{INNER_PREFIX} dev {up}\n\
             addr add {ROUTER_INNER_ADDR}/{INNER_PREFIX} dev {sbx}\n\
             link set lo up\n\
             link set {up} up\n\
             link set {sbx} up\n\
             route add default via {host} dev {up}\n",
            sbx = inner::ROUTER_SANDBOX,
            up = inner::ROUTER_UPLINK,
            router = a.router,
            host = a.host,
        ),
    )
    .await
}

async fn configure_sandbox(names: &NetNames) -> Result<(), String> {
    ip_batch(
        Netns::Named(&names.sandbox_netns),
        &format!(
            "addr add {SANDBOX_ADDR}/{INNER_PREFIX} dev {eth}\n\
             link set lo up\n\
             link set {eth} up\n\
             route add default via {ROUTER_INNER_ADDR} dev {eth}\n",
            eth = inner::SANDBOX,
        ),
    )
    .await
}

async fn enable_routing(names: &NetNames) -> Result<(), String> {
    // Namespace-local: the router namespace forwards; the host's setting is not touched.
    // Strict reverse-path filtering: a packet from the sandbox whose source address is not
    // reachable back through the sandbox's link (anything but the inner /30) is dropped on
    // arrival. A process cannot forge one (no raw sockets); a microVM's guest writes whole frames.
    crate::cmd::run(
        Netns::Named(&names.router_netns),
        "sysctl",
        &[
            "-qw",
            "net.ipv4.ip_forward=1",
            "net.ipv4.conf.all.rp_filter=1",
        ],
        None,
    )
    .await
    .map(drop)
    .map_err(cmd_err)
}

async fn router_firewall(names: &NetNames, plan: &FirewallPlan) -> Result<(), String> {
    let ifs = Interfaces {
        from_sandbox: inner::ROUTER_SANDBOX,
        uplink: inner::ROUTER_UPLINK,
    };
    nft::apply(Netns::Named(&names.router_netns), &names.table, plan, &ifs)
        .await
        .map_err(|e| e.to_string())
}

/// Removes every network object of the sandbox named by `names` — its uplink table, its uplink
/// link (which takes the router's end with it) and both namespaces. Objects already gone are
/// not an error; every object is tried even when one fails, and the first failure is returned.
pub async fn remove(names: &NetNames, uplink: &Uplink) -> Result<(), NetError> {
    let mut first: Option<NetError> = None;
    let mut fail = |what: String, reason: String| {
        first.get_or_insert(NetError::Remove { what, reason });
    };
    // A missing uplink namespace (a test's fake one, already gone) holds nothing to remove.
    if uplink_ns_exists(uplink).await
        && let Err(e) = nft::remove_uplink(uplink.ns(), &names.uplink_host).await
    {
        fail(
            format!(
                "uplink {} in table {}",
                names.uplink_host,
                nft::UPLINK_TABLE
            ),
            e.to_string(),
        );
    }
    if let Err(e) = ip(uplink.ns(), &["link", "del", &names.uplink_host]).await
        && link_exists(uplink, &names.uplink_host).await
    {
        fail(format!("link {}", names.uplink_host), e);
    }
    for ns in [&names.sandbox_netns, &names.router_netns] {
        if let Err(e) = ip(Netns::Current, &["netns", "del", ns]).await
            && tokio::fs::try_exists(netns_path(ns)).await.unwrap_or(true)
        {
            fail(format!("network namespace {ns}"), e);
        }
    }
    first.map_or(Ok(()), Err)
}

async fn uplink_ns_exists(uplink: &Uplink) -> bool {
    match &uplink.netns {
        None => true,
        Some(ns) => tokio::fs::try_exists(netns_path(ns)).await.unwrap_or(true),
    }
}

async fn link_exists(uplink: &Uplink, link: &str) -> bool {
    uplink_ns_exists(uplink).await
        && ip(uplink.ns(), &["link", "show", "dev", link])
            .await
            .is_ok()
}

/// Network objects in the uplink namespace and under `/run/netns` that look like a sandbox's
/// (by prefix) but belong to none of `live`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Leftovers {
    pub netns: Vec<String>,
    pub links: Vec<String>,
    /// Uplinks still registered in the shared uplink table.
    pub registered: Vec<String>,
}

impl Leftovers {
    pub fn is_empty(&self) -> bool {
        self.netns.is_empty() && self.links.is_empty() && self.registered.is_empty()
    }
}

fn is_hashed(name: &str, prefix: &str, len: usize) -> bool {
    name.strip_prefix(prefix).is_some_and(|h| {
        h.len() == len && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
}

/// Finds the network objects of sandboxes that are not in `live`.
pub async fn leftovers(live: &[SandboxId], uplink: &Uplink) -> Result<Leftovers, NetError> {
    let keep: Vec<NetNames> = live.iter().map(NetNames::for_sandbox).collect();
    let listing = |what: &str, reason: String| NetError::Remove {
        what: what.to_owned(),
        reason,
    };
    let mut found = Leftovers::default();
    match tokio::fs::read_dir("/run/netns").await {
        Ok(mut dir) => {
            while let Ok(Some(e)) = dir.next_entry().await {
                let name = e.file_name().to_string_lossy().into_owned();
                let ours = crate::names::NETNS_PREFIXES
                    .iter()
                    .any(|p| is_hashed(&name, p, 20));
                let live = keep
                    .iter()
                    .any(|k| k.router_netns == name || k.sandbox_netns == name);
                if ours && !live {
                    found.netns.push(name);
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(listing("/run/netns", e.to_string())),
    }
    if !uplink_ns_exists(uplink).await {
        return Ok(found);
    }
    let links: serde_json::Value = serde_json::from_slice(
        &ip(uplink.ns(), &["-j", "link", "show"])
            .await
            .map_err(|e| listing("links", e))?,
    )
    .map_err(|e| listing("links", e.to_string()))?;
    for l in links.as_array().into_iter().flatten() {
        if let Some(name) = l["ifname"].as_str()
            && is_hashed(name, crate::names::UPLINK_PREFIX, 12)
            && !keep.iter().any(|k| k.uplink_host == name)
        {
            found.links.push(name.to_owned());
        }
    }
    let registered = nft::uplinks(uplink.ns())
        .await
        .map_err(|e| listing("registered uplinks", e.to_string()))?;
    for (link, _) in registered {
        if !keep.iter().any(|k| k.uplink_host == link) && !found.registered.contains(&link) {
            found.registered.push(link);
        }
    }
    Ok(found)
}

/// Removes what [`leftovers`] found; returns the first failure after trying everything.
pub async fn remove_leftovers(found: &Leftovers, uplink: &Uplink) -> Result<(), NetError> {
    let mut first = None;
    for link in &found.registered {
        if let Err(e) = nft::remove_uplink(uplink.ns(), link).await {
            first.get_or_insert(NetError::Remove {
                what: format!("uplink {link} in table {}", nft::UPLINK_TABLE),
                reason: e.to_string(),
            });
        }
    }
    for l in &found.links {
        if let Err(e) = ip(uplink.ns(), &["link", "del", l]).await
            && link_exists(uplink, l).await
        {
            first.get_or_insert(NetError::Remove {
                what: format!("link {l}"),
                reason: e,
            });
        }
    }
    for ns in &found.netns {
        if let Err(e) = ip(Netns::Current, &["netns", "del", ns]).await {
            first.get_or_insert(NetError::Remove {
                what: format!("network namespace {ns}"),
                reason: e,
            });
        }
    }
    first.map_or(Ok(()), Err)
}
