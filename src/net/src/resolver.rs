//! The DNS-pinning resolver behind domain allowlists.
//!
//! A sandbox whose policy names domains (`api.example.com:443`, `*.example.com`) asks this
//! resolver, and only this resolver, for addresses. For each query:
//!
//! - a name matching one of the plan's allowed patterns ([`FirewallPlan::domains`]) and none of
//!   its denied ones ([`FirewallPlan::denied_domains`]) is forwarded to the upstream resolver;
//!   every A/AAAA record of the answer that belongs to the asked name (directly or through its
//!   CNAME chain) is **pinned** — added, with a timeout, to the router table's resolver sets
//!   (`dns_net4`/`dns_net6`, or `dns_port4`/`dns_port6` as `addr . port` when the allow entry
//!   names a port) — and only once the pin succeeded is the answer sent. If pinning fails the
//!   sandbox gets SERVFAIL: it never learns an address the firewall would not let it reach.
//! - any other name gets **REFUSED** (RFC 1035: refused for policy reasons; NXDOMAIN would claim
//!   the name does not exist, which this resolver does not know) and upstream is not contacted.
//!   An answer whose CNAME chain runs through a denied name is refused too, and nothing of it is
//!   pinned.
//! - addresses the firewall's earlier stages decide anyway — the always-denied ranges (private,
//!   loopback, metadata, the host's own addresses: DNS rebinding) and the user's deny list — are
//!   passed through to the sandbox unchanged but **not pinned**: the firewall drops them before
//!   the resolver's stage is reached, so pinning them would only fill the sets.
//! - pin timeouts are the answer's smallest TTL (along the chain) clamped to
//!   [`ResolverConfig::min_ttl`]..=[`ResolverConfig::max_ttl`] (30 s to 1 h by default); the
//!   TTLs sent to the sandbox are capped at the pin's, so a well-behaved client never uses an
//!   address longer than the firewall admits it. An address pinned earlier with at least half
//!   of the new TTL left is not pinned again; the answer's TTLs are capped at what is left of
//!   that pin instead (so repeated lookups cost one nft transaction per half-TTL, not one per
//!   query). Otherwise the answer refreshes its pins: add, delete, add with the new timeout, in
//!   one nft transaction (nft sets keep one timeout per element).
//! - malformed queries get FORMERR when they carry at least a query header (the id), and are
//!   dropped otherwise; responses are never answered (no loops, no reflection); opcodes other
//!   than QUERY get NOTIMP; questions of a class other than IN get REFUSED.
//! - at most [`ResolverConfig::max_in_flight`] queries are handled at once (the rest are
//!   dropped: the client retries); each upstream exchange has a timeout, after which the sandbox
//!   gets SERVFAIL. Each exchange uses a fresh upstream socket (new source port) and a random
//!   query id, and only a response from the upstream address with that id and the same question
//!   is accepted.
//!
//! Served over UDP ([`Resolver::serve_udp`]) and TCP ([`Resolver::serve_tcp`]); a UDP answer too
//! large for the client's buffer is sent truncated (TC) so that the client asks again over TCP,
//! and a truncated answer from upstream is asked for again over TCP.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData};
use ipnet::IpNet;
use luminaguard_core::network::DomainPattern;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::cmd::{CmdError, Netns};
use crate::plan::{Dest, DomainAllow, FirewallPlan};

/// Largest datagram read from a client or from upstream.
const MAX_DATAGRAM: usize = 4096;
/// Largest EDNS payload asked of upstream (the DNS flag day 2020 value).
const UPSTREAM_PAYLOAD: u16 = 1232;
/// Longest CNAME chain followed inside one answer.
const MAX_CHAIN: usize = 16;

/// One address to admit, and the TCP/UDP port it is admitted for (`None`: any).
pub type PinAddr = (IpAddr, Option<u16>);

/// Why addresses could not be pinned.
#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error("cannot pin {addrs} in nftables table inet {table}: {source}")]
    Nft {
        table: String,
        addrs: String,
        source: CmdError,
    },
}

/// Why the resolver stopped serving.
#[derive(Debug, thiserror::Error)]
pub enum ResolverError {
    #[error("DNS resolver: cannot receive queries on {local}: {source}")]
    Receive { local: String, source: io::Error },
    #[error("DNS resolver: cannot accept TCP connections on {local}: {source}")]
    Accept { local: String, source: io::Error },
}

/// Why an upstream exchange failed (the sandbox gets SERVFAIL).
#[derive(Debug, thiserror::Error)]
enum UpstreamError {
    #[error("cannot open a socket towards upstream resolver {addr}: {source}")]
    Socket { addr: SocketAddr, source: io::Error },
    #[error("cannot exchange a query with upstream resolver {addr}: {source}")]
    Io { addr: SocketAddr, source: io::Error },
    #[error("cannot encode the query for upstream resolver {addr}: {message}")]
    Encode { addr: SocketAddr, message: String },
    #[error("upstream resolver {addr} did not answer within {after:?}")]
    Timeout { addr: SocketAddr, after: Duration },
}

/// Admits resolved addresses through the firewall, for a time.
pub trait Pinner: fmt::Debug + Send + Sync + 'static {
    /// Admits every address for `ttl`; returns only once the firewall admits them.
    fn pin(
        &self,
        addrs: &[PinAddr],
        ttl: Duration,
    ) -> impl Future<Output = Result<(), PinError>> + Send;
}

/// Pins into the resolver sets of a router table (see [`crate::nft::render`]) with `nft`.
#[derive(Debug, Clone)]
pub struct NftPinner {
    netns: Option<String>,
    table: String,
}

impl NftPinner {
    /// Pins into table `inet <table>` in network namespace `netns` (`None`: the caller's own).
    pub fn new(netns: Option<String>, table: String) -> Self {
        Self { netns, table }
    }
}

/// The `nft -f` script pinning `addrs` for `ttl` in `table`: for each element, add (so that the
/// delete cannot fail), delete, add with the timeout — one transaction, so the element's
/// timeout is refreshed and no packet sees it missing.
pub fn pin_script(table: &str, addrs: &[PinAddr], ttl: Duration) -> String {
    let secs = ttl.as_secs().max(1);
    let mut s = String::new();
    for (addr, port) in addrs {
        let (set, elem) = match (addr, port) {
            (IpAddr::V4(_), None) => ("dns_net4", addr.to_string()),
            (IpAddr::V6(_), None) => ("dns_net6", addr.to_string()),
            (IpAddr::V4(_), Some(p)) => ("dns_port4", format!("{addr} . {p}")),
            (IpAddr::V6(_), Some(p)) => ("dns_port6", format!("{addr} . {p}")),
        };
        s.push_str(&format!("add element inet {table} {set} {{ {elem} }}\n"));
        s.push_str(&format!("delete element inet {table} {set} {{ {elem} }}\n"));
        s.push_str(&format!(
            "add element inet {table} {set} {{ {elem} timeout {secs}s }}\n"
        ));
    }
    s
}

fn show(addrs: &[PinAddr]) -> String {
    let list: Vec<String> = addrs
        .iter()
        .map(|(a, p)| match p {
            Some(p) => format!("{a} port {p}"),
            None => a.to_string(),
        })
        .collect();
    list.join(", ")
}

impl Pinner for NftPinner {
    async fn pin(&self, addrs: &[PinAddr], ttl: Duration) -> Result<(), PinError> {
        if addrs.is_empty() {
            return Ok(());
        }
        let script = pin_script(&self.table, addrs, ttl);
        let netns = Netns::from_option(self.netns.as_deref());
        crate::cmd::run(netns, "nft", &["-f", "-"], Some(&script))
            .await
            .map(drop)
            .map_err(|source| PinError::Nft {
                table: self.table.clone(),
                addrs: show(addrs),
                source,
            })
    }
}

/// Which names the resolver answers, and which addresses it never pins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamePolicy {
    pub domains: Vec<DomainAllow>,
    pub denied_domains: Vec<DomainPattern>,
    /// Decided by the firewall's earlier stages: never pinned.
    pub always_denied: Vec<IpNet>,
    pub user_deny: Vec<Dest>,
}

impl NamePolicy {
    pub fn from_plan(plan: &FirewallPlan) -> Self {
        Self {
            domains: plan.domains.clone(),
            denied_domains: plan.denied_domains.clone(),
            always_denied: plan.always_denied.clone(),
            user_deny: plan.user_deny.clone(),
        }
    }

    /// The ports answers for `name` are admitted on (`None` in the list: any port), or `None`
    /// when the name is not allowed (no pattern matches, or a denied one does).
    pub fn allowed(&self, name: &Name) -> Option<Vec<Option<u16>>> {
        let labels = labels(name);
        if self.denied(&labels) {
            return None;
        }
        let mut ports: Vec<Option<u16>> = self
            .domains
            .iter()
            .filter(|d| pattern_matches(&d.pattern, &labels))
            .map(|d| d.port)
            .collect();
        if ports.is_empty() {
            return None;
        }
        if ports.contains(&None) {
            // Any port covers every named one.
            return Some(vec![None]);
        }
        ports.sort_unstable();
        ports.dedup();
        Some(ports)
    }

    fn denied(&self, labels: &[Vec<u8>]) -> bool {
        self.denied_domains
            .iter()
            .any(|p| pattern_matches(p, labels))
    }

    /// Whether the firewall decides `addr` (on `port`) before the resolver's stage.
    fn decided_earlier(&self, addr: IpAddr, port: Option<u16>) -> bool {
        self.always_denied.iter().any(|n| n.contains(&addr))
            || self.user_deny.iter().any(|d| d.matches(addr, port))
    }
}

/// The labels of `name`, lower-cased, most specific first (raw bytes: a label holding a `.` can
/// never equal a pattern's label).
fn labels(name: &Name) -> Vec<Vec<u8>> {
    name.iter().map(<[u8]>::to_ascii_lowercase).collect()
}

/// `example.com` matches that name only; `*.example.com` matches its subdomains only (not
/// `example.com` itself), as `luminaguard_core::network::DomainPattern` documents.
fn pattern_matches(pattern: &DomainPattern, labels: &[Vec<u8>]) -> bool {
    let want: Vec<&[u8]> = pattern.name.split('.').map(str::as_bytes).collect();
    if pattern.wildcard {
        if labels.len() <= want.len() {
            return false;
        }
    } else if labels.len() != want.len() {
        return false;
    }
    let tail = &labels[labels.len() - want.len()..];
    tail.iter().zip(&want).all(|(a, b)| a.as_slice() == *b)
}

/// Tuning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolverConfig {
    pub upstream_timeout: Duration,
    pub max_in_flight: usize,
    pub min_ttl: Duration,
    pub max_ttl: Duration,
    /// How long a TCP client may stay silent before its connection is closed.
    pub tcp_idle: Duration,
}

impl Default for ResolverConfig {
    fn default() -> Self {
        Self {
            upstream_timeout: Duration::from_secs(5),
            max_in_flight: 64,
            min_ttl: Duration::from_secs(30),
            max_ttl: Duration::from_secs(3600),
            tcp_idle: Duration::from_secs(10),
        }
    }
}

/// Opens an unconnected UDP socket to reach the given upstream address from (in whichever
/// network namespace the caller chooses: the uplink's).
pub type BindUpstream = Arc<dyn Fn(SocketAddr) -> io::Result<std::net::UdpSocket> + Send + Sync>;

/// Opens an unconnected TCP socket to reach the given upstream address from (used when a UDP
/// answer comes back truncated).
pub type BindUpstreamTcp = Arc<dyn Fn(SocketAddr) -> io::Result<TcpSocket> + Send + Sync>;

/// The upstream resolver: its address and how to open a socket towards it.
#[derive(Clone)]
pub struct Upstream {
    addr: SocketAddr,
    bind: BindUpstream,
    bind_tcp: BindUpstreamTcp,
}

impl fmt::Debug for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upstream")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Upstream {
    /// Upstream `addr`, reached from an ephemeral port in the calling thread's network namespace.
    pub fn new(addr: SocketAddr) -> Self {
        Self::with_factory(
            addr,
            Arc::new(|to: SocketAddr| {
                let any: SocketAddr = if to.is_ipv4() {
                    (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
                } else {
                    (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
                };
                std::net::UdpSocket::bind(any)
            }),
            Arc::new(|to: SocketAddr| {
                if to.is_ipv4() {
                    TcpSocket::new_v4()
                } else {
                    TcpSocket::new_v6()
                }
            }),
        )
    }

    /// Upstream `addr`, reached from sockets `bind` and `bind_tcp` open (e.g. in the uplink
    /// namespace).
    pub fn with_factory(addr: SocketAddr, bind: BindUpstream, bind_tcp: BindUpstreamTcp) -> Self {
        Self {
            addr,
            bind,
            bind_tcp,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Asks over UDP; asks again over TCP when the answer comes back truncated.
    async fn exchange(&self, query: &Message, timeout: Duration) -> Result<Message, UpstreamError> {
        let resp = self.exchange_udp(query, timeout).await?;
        if !resp.metadata.truncation {
            return Ok(resp);
        }
        tracing::debug!(upstream = %self.addr, "truncated answer: asking again over TCP");
        self.exchange_tcp(query, timeout).await
    }

    async fn exchange_tcp(
        &self,
        query: &Message,
        timeout: Duration,
    ) -> Result<Message, UpstreamError> {
        let addr = self.addr;
        let io_err = |source| UpstreamError::Io { addr, source };
        let sock =
            (self.bind_tcp)(addr).map_err(|source| UpstreamError::Socket { addr, source })?;
        let mut query = query.clone();
        query.metadata.id = rand::random();
        // Over TCP the answer may be as large as it needs: no EDNS payload limit to ask for.
        query.edns = None;
        let bytes = query.to_vec().map_err(|e| UpstreamError::Encode {
            addr,
            message: e.to_string(),
        })?;
        let wait = async {
            let mut stream = sock.connect(addr).await.map_err(io_err)?;
            write_framed(&mut stream, &bytes).await.map_err(io_err)?;
            loop {
                let data = read_framed(&mut stream).await.map_err(io_err)?;
                if let Some(resp) = answer_to(&query, &data, addr) {
                    return Ok(resp);
                }
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| UpstreamError::Timeout {
                addr,
                after: timeout,
            })?
    }

    async fn exchange_udp(
        &self,
        query: &Message,
        timeout: Duration,
    ) -> Result<Message, UpstreamError> {
        let addr = self.addr;
        let sock_err = |source| UpstreamError::Socket { addr, source };
        let io_err = |source| UpstreamError::Io { addr, source };
        let sock = (self.bind)(addr).map_err(sock_err)?;
        sock.set_nonblocking(true).map_err(sock_err)?;
        let sock = UdpSocket::from_std(sock).map_err(sock_err)?;
        sock.connect(addr).await.map_err(sock_err)?;
        let mut query = query.clone();
        query.metadata.id = rand::random();
        let bytes = query.to_vec().map_err(|e| UpstreamError::Encode {
            addr,
            message: e.to_string(),
        })?;
        let wait = async {
            sock.send(&bytes).await.map_err(io_err)?;
            let mut buf = vec![0u8; MAX_DATAGRAM];
            loop {
                let n = sock.recv(&mut buf).await.map_err(io_err)?;
                let Some(data) = buf.get(..n) else { continue };
                if let Some(resp) = answer_to(&query, data, addr) {
                    return Ok(resp);
                }
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| UpstreamError::Timeout {
                addr,
                after: timeout,
            })?
    }
}

/// `data` from upstream `addr` parsed, when it answers `query`: a response with the query's id
/// and question. Anything else is logged and ignored (the caller keeps waiting).
fn answer_to(query: &Message, data: &[u8], addr: SocketAddr) -> Option<Message> {
    match Message::from_vec(data) {
        Ok(resp)
            if resp.metadata.id == query.metadata.id
                && resp.metadata.message_type == MessageType::Response
                && resp.queries == query.queries =>
        {
            Some(resp)
        }
        Ok(_) => {
            tracing::debug!(upstream = %addr, "ignored a non-matching response");
            None
        }
        Err(e) => {
            tracing::debug!(upstream = %addr, error = %e, "ignored a malformed response");
            None
        }
    }
}

/// The resolver of one sandbox.
#[derive(Debug)]
pub struct Resolver<P: Pinner> {
    policy: NamePolicy,
    pinner: P,
    upstream: Upstream,
    config: ResolverConfig,
    /// Queries (UDP) and connections (TCP) being handled: at most `config.max_in_flight`.
    slots: Arc<Semaphore>,
    /// Elements pinned, and when the firewall lets each go (reckoned from before the pin was
    /// asked for, so never later than the kernel's own timeout).
    pinned: std::sync::Mutex<HashMap<PinAddr, Instant>>,
}

/// How many pinned elements the resolver remembers before it forgets the expired ones.
const PIN_MEMORY: usize = 4096;

impl<P: Pinner> Resolver<P> {
    pub fn new(policy: NamePolicy, pinner: P, upstream: Upstream, config: ResolverConfig) -> Self {
        let slots = Arc::new(Semaphore::new(config.max_in_flight.max(1)));
        Self {
            policy,
            pinner,
            upstream,
            config,
            slots,
            pinned: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// Serves queries arriving on `socket` until receiving fails (or the future is dropped,
    /// which also abandons the queries in flight).
    pub async fn serve_udp(self: Arc<Self>, socket: UdpSocket) -> Result<(), ResolverError> {
        let socket = Arc::new(socket);
        let local = socket
            .local_addr()
            .map_or_else(|_| "its socket".to_owned(), |a| a.to_string());
        let mut tasks = JoinSet::new();
        let mut buf = vec![0u8; MAX_DATAGRAM];
        loop {
            while tasks.try_join_next().is_some() {}
            let (n, peer) =
                socket
                    .recv_from(&mut buf)
                    .await
                    .map_err(|source| ResolverError::Receive {
                        local: local.clone(),
                        source,
                    })?;
            let Ok(slot) = Arc::clone(&self.slots).try_acquire_owned() else {
                tracing::debug!(%peer, "DNS query dropped: too many in flight");
                continue;
            };
            let query = buf.get(..n).unwrap_or_default().to_vec();
            let this = Arc::clone(&self);
            let sock = Arc::clone(&socket);
            tasks.spawn(async move {
                let _slot = slot;
                let Some(reply) = this.handle(&query).await else {
                    return;
                };
                if let Err(e) = sock.send_to(&reply, peer).await {
                    tracing::debug!(%peer, error = %e, "cannot send a DNS reply");
                }
            });
        }
    }

    /// Serves DNS over TCP (RFC 7766: length-prefixed messages) on connections accepted from
    /// `listener`, one query at a time per connection, until accepting fails (or the future is
    /// dropped). Each connection holds one in-flight slot and is closed after
    /// [`ResolverConfig::tcp_idle`] without a query.
    pub async fn serve_tcp(self: Arc<Self>, listener: TcpListener) -> Result<(), ResolverError> {
        let local = listener
            .local_addr()
            .map_or_else(|_| "its socket".to_owned(), |a| a.to_string());
        let mut tasks = JoinSet::new();
        loop {
            while tasks.try_join_next().is_some() {}
            let (stream, peer) =
                listener
                    .accept()
                    .await
                    .map_err(|source| ResolverError::Accept {
                        local: local.clone(),
                        source,
                    })?;
            let Ok(slot) = Arc::clone(&self.slots).try_acquire_owned() else {
                tracing::debug!(%peer, "DNS connection closed: too many in flight");
                continue;
            };
            let this = Arc::clone(&self);
            tasks.spawn(async move {
                let _slot = slot;
                if let Err(e) = this.serve_connection(stream).await {
                    tracing::debug!(%peer, error = %e, "DNS connection ended");
                }
            });
        }
    }

    async fn serve_connection(&self, mut stream: TcpStream) -> io::Result<()> {
        loop {
            let query =
                match tokio::time::timeout(self.config.tcp_idle, read_framed(&mut stream)).await {
                    Ok(Ok(q)) => q,
                    Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
                    Ok(Err(e)) => return Err(e),
                    Err(_) => return Ok(()), // idle
                };
            let Some(reply) = self.reply(&query, usize::from(u16::MAX)).await else {
                continue;
            };
            write_framed(&mut stream, &reply).await?;
        }
    }

    /// The reply to one query datagram (`None`: send nothing).
    pub async fn handle(&self, query: &[u8]) -> Option<Vec<u8>> {
        let limit = match Message::from_vec(query) {
            Ok(req) => req.edns.as_ref().map_or(512, |e| e.max_payload().max(512)),
            Err(_) => 512,
        };
        self.reply(query, usize::from(limit)).await
    }

    /// The reply to one query, truncated (TC) when longer than `limit` bytes.
    async fn reply(&self, query: &[u8], limit: usize) -> Option<Vec<u8>> {
        let req = match Message::from_vec(query) {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(error = %e, "malformed DNS query");
                return raw_error(query, ResponseCode::FormErr);
            }
        };
        if req.metadata.message_type != MessageType::Query {
            return None;
        }
        let reply = self.answer(&req).await;
        let bytes = match reply.to_vec() {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "cannot encode a DNS reply");
                return encode(&error_reply(&req, ResponseCode::ServFail));
            }
        };
        if bytes.len() <= limit {
            return Some(bytes);
        }
        let mut cut = reply.truncate();
        cut.metadata.truncation = true;
        encode(&cut)
    }

    async fn answer(&self, req: &Message) -> Message {
        if req.metadata.op_code != OpCode::Query {
            return error_reply(req, ResponseCode::NotImp);
        }
        let [question] = req.queries.as_slice() else {
            return error_reply(req, ResponseCode::FormErr);
        };
        if question.query_class() != DNSClass::IN {
            return error_reply(req, ResponseCode::Refused);
        }
        let Some(ports) = self.policy.allowed(question.name()) else {
            tracing::info!(name = %question.name(), "DNS query refused by policy");
            return error_reply(req, ResponseCode::Refused);
        };
        let mut forward = Message::new(0, MessageType::Query, OpCode::Query);
        forward.metadata.recursion_desired = true;
        forward.add_query(question.clone());
        if let Some(client) = &req.edns {
            let mut edns = Edns::new();
            edns.set_max_payload(client.max_payload().min(UPSTREAM_PAYLOAD));
            forward.set_edns(edns);
        }
        let resp = match self
            .upstream
            .exchange(&forward, self.config.upstream_timeout)
            .await
        {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(name = %question.name(), error = %e, "DNS upstream failed");
                return error_reply(req, ResponseCode::ServFail);
            }
        };
        let Some(chain) = chain(question.name(), &resp) else {
            tracing::warn!(name = %question.name(), "DNS answer runs through too long a chain");
            return error_reply(req, ResponseCode::ServFail);
        };
        if chain.iter().any(|n| self.policy.denied(&labels(n))) {
            tracing::info!(name = %question.name(), "DNS answer runs through a denied name");
            return error_reply(req, ResponseCode::Refused);
        }
        let (pins, ttl) = self.pins(&chain, &resp, &ports);
        let (fresh, lifetime) = self.still_pinned(&pins, ttl);
        if !fresh.is_empty() {
            let asked = Instant::now();
            if let Err(e) = self.pinner.pin(&fresh, ttl).await {
                tracing::warn!(name = %question.name(), error = %e, "DNS answer not pinned");
                return error_reply(req, ResponseCode::ServFail);
            }
            self.remember(&fresh, asked + ttl);
            tracing::debug!(name = %question.name(), addrs = %show(&fresh), ?ttl, "pinned");
        }
        let mut reply = Message::response(req.metadata.id, OpCode::Query);
        reply.metadata.recursion_desired = req.metadata.recursion_desired;
        reply.metadata.checking_disabled = req.metadata.checking_disabled;
        reply.metadata.recursion_available = true;
        reply.metadata.response_code = resp.metadata.response_code;
        reply.queries = req.queries.clone();
        let cap = u32::try_from(lifetime.as_secs()).unwrap_or(u32::MAX);
        reply.answers = resp
            .answers
            .into_iter()
            .map(|mut r| {
                if !pins.is_empty() {
                    r.ttl = r.ttl.min(cap);
                }
                r
            })
            .collect();
        reply.authorities = resp.authorities;
        reply.additionals = resp.additionals;
        if let Some(client) = &req.edns {
            let mut edns = Edns::new();
            edns.set_max_payload(client.max_payload().min(UPSTREAM_PAYLOAD));
            reply.set_edns(edns);
        }
        reply
    }

    /// Of `pins` (for `ttl`), those that need pinning now — never pinned, or with less than
    /// half of `ttl` left — and how long every answered address stays admitted: `ttl`, or less
    /// when a pin made earlier is reused. An address asked for again and again thus costs one
    /// `nft` transaction per half-TTL, not one per query; the TTLs sent on are capped at what
    /// is left, so a client never holds an address longer than the firewall admits it.
    fn still_pinned(&self, pins: &[PinAddr], ttl: Duration) -> (Vec<PinAddr>, Duration) {
        let now = Instant::now();
        let mut lifetime = ttl;
        let mut fresh = Vec::new();
        let pinned = self.pinned.lock().unwrap_or_else(|e| e.into_inner());
        for p in pins {
            match pinned
                .get(p)
                .map(|until| until.saturating_duration_since(now))
            {
                Some(left) if left >= ttl / 2 => lifetime = lifetime.min(left),
                _ => fresh.push(*p),
            }
        }
        (fresh, lifetime)
    }

    /// Records that `pins` are admitted until `until`.
    fn remember(&self, pins: &[PinAddr], until: Instant) {
        let mut pinned = self.pinned.lock().unwrap_or_else(|e| e.into_inner());
        if pinned.len() + pins.len() > PIN_MEMORY {
            let now = Instant::now();
            pinned.retain(|_, t| *t > now);
        }
        if pinned.len() + pins.len() > PIN_MEMORY {
            // Still full of live pins: forget them all — they are pinned again when asked.
            pinned.clear();
        }
        for p in pins {
            pinned.insert(*p, until);
        }
    }

    /// The addresses to pin for an answer whose chain is `chain`, and for how long.
    fn pins(
        &self,
        chain: &[Name],
        resp: &Message,
        ports: &[Option<u16>],
    ) -> (Vec<PinAddr>, Duration) {
        let mut pins = Vec::new();
        let mut ttl = u32::MAX;
        for r in &resp.answers {
            if !chain.contains(&r.name) {
                continue;
            }
            let addr = match &r.data {
                RData::A(a) => IpAddr::V4(a.0),
                RData::AAAA(a) => IpAddr::V6(a.0),
                RData::CNAME(_) => {
                    ttl = ttl.min(r.ttl);
                    continue;
                }
                _ => continue,
            };
            ttl = ttl.min(r.ttl);
            for port in ports {
                if self.policy.decided_earlier(addr, *port) {
                    tracing::debug!(%addr, "not pinned: decided by an earlier firewall stage");
                } else if !pins.contains(&(addr, *port)) {
                    pins.push((addr, *port));
                }
            }
        }
        let ttl = Duration::from_secs(u64::from(ttl)).clamp(
            self.config.min_ttl,
            self.config.max_ttl.max(self.config.min_ttl),
        );
        (pins, ttl)
    }
}

/// The asked name and every name its CNAME records lead to in `resp` (`None`: longer than
/// [`MAX_CHAIN`]).
fn chain(name: &Name, resp: &Message) -> Option<Vec<Name>> {
    let mut chain = vec![name.clone()];
    loop {
        let mut grew = false;
        for r in &resp.answers {
            let RData::CNAME(target) = &r.data else {
                continue;
            };
            if chain.contains(&r.name) && !chain.contains(&target.0) {
                chain.push(target.0.clone());
                grew = true;
            }
        }
        if !grew {
            return Some(chain);
        }
        if chain.len() > MAX_CHAIN {
            return None;
        }
    }
}

fn error_reply(req: &Message, code: ResponseCode) -> Message {
    let mut reply = Message::error_msg(req.metadata.id, req.metadata.op_code, code);
    reply.metadata.recursion_desired = req.metadata.recursion_desired;
    reply.metadata.recursion_available = true;
    if code != ResponseCode::FormErr {
        reply.queries = req.queries.clone();
    }
    reply
}

fn encode(msg: &Message) -> Option<Vec<u8>> {
    msg.to_vec()
        .inspect_err(|e| tracing::warn!(error = %e, "cannot encode a DNS reply"))
        .ok()
}

/// Reads one length-prefixed DNS message (RFC 1035 4.2.2).
async fn read_framed<S: AsyncRead + Unpin>(stream: &mut S) -> io::Result<Vec<u8>> {
    let len = stream.read_u16().await?;
    let mut buf = vec![0u8; usize::from(len)];
    stream.read_exact(&mut buf).await?;
    Ok(buf)
}

/// Writes one length-prefixed DNS message.
async fn write_framed<S: AsyncWrite + Unpin>(stream: &mut S, msg: &[u8]) -> io::Result<()> {
    let len = u16::try_from(msg.len()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "a DNS message of {} bytes does not fit TCP framing",
                msg.len()
            ),
        )
    })?;
    let mut framed = Vec::with_capacity(msg.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(msg);
    stream.write_all(&framed).await?;
    stream.flush().await
}

/// An error reply to a datagram that does not parse: needs at least the 12-byte header, and is
/// never sent to something that claims to be a response.
fn raw_error(query: &[u8], code: ResponseCode) -> Option<Vec<u8>> {
    let header = query.get(..12)?;
    if header[2] & 0x80 != 0 {
        return None;
    }
    let id = u16::from_be_bytes([header[0], header[1]]);
    encode(&Message::error_msg(id, OpCode::Query, code))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use hickory_proto::op::Query;
    use hickory_proto::rr::rdata::{A, CNAME};
    use hickory_proto::rr::{Record, RecordType};
    use luminaguard_core::NetworkPolicy;
    use proptest::prelude::*;
    use std::str::FromStr;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};

    fn plan(allow: &[&str], deny: &[&str]) -> FirewallPlan {
        let policy = NetworkPolicy::Egress {
            allow: allow.iter().map(|r| r.parse().unwrap()).collect(),
            deny: deny.iter().map(|r| r.parse().unwrap()).collect(),
        };
        FirewallPlan::compile(&policy, &[]).unwrap().unwrap()
    }

    fn name(s: &str) -> Name {
        Name::from_str(s).unwrap()
    }

    #[test]
    fn wildcards_match_subdomains_only_and_deny_wins() {
        let p = NamePolicy::from_plan(&plan(
            &[
                "*.example.com",
                "api.example.org:443",
                "api.example.org:8443",
            ],
            &["*.bad.example.com", "evil.example.com"],
        ));
        assert_eq!(p.allowed(&name("www.example.com.")), Some(vec![None]));
        assert_eq!(p.allowed(&name("a.b.Example.COM")), Some(vec![None]));
        assert_eq!(
            p.allowed(&name("example.com.")),
            None,
            "wildcard: subdomains only"
        );
        assert_eq!(p.allowed(&name("wwwexample.com.")), None);
        assert_eq!(p.allowed(&name("www.example.com.evil.net.")), None);
        assert_eq!(
            p.allowed(&name("api.example.org.")),
            Some(vec![Some(443), Some(8443)])
        );
        assert_eq!(p.allowed(&name("www.api.example.org.")), None);
        // Denied beats the wildcard allow.
        assert_eq!(p.allowed(&name("evil.example.com.")), None);
        assert_eq!(p.allowed(&name("x.bad.example.com.")), None);
        // `*.bad…` denies subdomains only: bad.example.com itself is allowed by the wildcard.
        assert_eq!(p.allowed(&name("bad.example.com.")), Some(vec![None]));
        // A label holding a dot is not two labels.
        let tricky = Name::from_labels(vec![b"www.example".as_slice(), b"com"]).unwrap();
        assert_eq!(p.allowed(&tricky), None);
    }

    #[test]
    fn any_port_subsumes_named_ports() {
        let p = NamePolicy::from_plan(&plan(&["*.example.com", "api.example.com:443"], &[]));
        assert_eq!(p.allowed(&name("api.example.com.")), Some(vec![None]));
    }

    #[test]
    fn pin_script_uses_the_resolver_sets_with_a_timeout() {
        let s = pin_script(
            "lgx",
            &[
                ("198.51.100.10".parse().unwrap(), None),
                ("198.51.100.11".parse().unwrap(), Some(443)),
                ("2001:db8::1".parse().unwrap(), None),
                ("2001:db8::2".parse().unwrap(), Some(80)),
            ],
            Duration::from_secs(300),
        );
        assert!(s.contains("add element inet lgx dns_net4 { 198.51.100.10 timeout 300s }"));
        assert!(s.contains("add element inet lgx dns_port4 { 198.51.100.11 . 443 timeout 300s }"));
        assert!(s.contains("add element inet lgx dns_net6 { 2001:db8::1 timeout 300s }"));
        assert!(s.contains("add element inet lgx dns_port6 { 2001:db8::2 . 80 timeout 300s }"));
        assert!(s.contains("delete element inet lgx dns_net4 { 198.51.100.10 }"));
    }

    // ---- the resolver against a fake upstream and a fake pinner ----

    #[derive(Debug, Clone, PartialEq)]
    enum Event {
        Pinned(Vec<PinAddr>, Duration),
    }

    #[derive(Debug, Default)]
    struct FakePinner {
        events: Arc<Mutex<Vec<Event>>>,
        fail: AtomicBool,
        delay: Duration,
    }

    impl Pinner for FakePinner {
        async fn pin(&self, addrs: &[PinAddr], ttl: Duration) -> Result<(), PinError> {
            tokio::time::sleep(self.delay).await;
            if self.fail.load(Ordering::SeqCst) {
                return Err(PinError::Nft {
                    table: "lgtest".into(),
                    addrs: show(addrs),
                    source: CmdError::Failed {
                        command: "nft -f -".into(),
                        message: "injected".into(),
                    },
                });
            }
            self.events
                .lock()
                .unwrap()
                .push(Event::Pinned(addrs.to_vec(), ttl));
            Ok(())
        }
    }

    /// A fake upstream on 127.0.0.1: answers each query from `records` (name → records) and
    /// counts the queries it got.
    struct FakeUpstream {
        addr: SocketAddr,
        asked: Arc<Mutex<Vec<String>>>,
    }

    async fn fake_upstream(records: Vec<Record>) -> FakeUpstream {
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = sock.local_addr().unwrap();
        let asked = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&asked);
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let (n, peer) = sock.recv_from(&mut buf).await.unwrap();
                let q = Message::from_vec(&buf[..n]).unwrap();
                log.lock().unwrap().push(q.queries[0].name().to_string());
                let mut r = Message::response(q.metadata.id, OpCode::Query);
                r.queries = q.queries.clone();
                r.answers = records.clone();
                sock.send_to(&r.to_vec().unwrap(), peer).await.unwrap();
            }
        });
        FakeUpstream { addr, asked }
    }

    fn a(owner: &str, ip: &str, ttl: u32) -> Record {
        Record::from_rdata(name(owner), ttl, RData::A(A(ip.parse().unwrap())))
    }

    fn cname(owner: &str, target: &str, ttl: u32) -> Record {
        Record::from_rdata(name(owner), ttl, RData::CNAME(CNAME(name(target))))
    }

    fn query(q: &str) -> Vec<u8> {
        let mut m = Message::new(4242, MessageType::Query, OpCode::Query);
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(name(q), RecordType::A));
        m.to_vec().unwrap()
    }

    fn resolver(
        allow: &[&str],
        deny: &[&str],
        upstream: SocketAddr,
        pinner: FakePinner,
    ) -> Resolver<FakePinner> {
        Resolver::new(
            NamePolicy::from_plan(&plan(allow, deny)),
            pinner,
            Upstream::new(upstream),
            ResolverConfig {
                upstream_timeout: Duration::from_millis(500),
                ..ResolverConfig::default()
            },
        )
    }

    /// Serves on a real socket; returns its address.
    async fn serve(r: Resolver<FakePinner>) -> SocketAddr {
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = sock.local_addr().unwrap();
        tokio::spawn(Arc::new(r).serve_udp(sock));
        addr
    }

    async fn ask(server: SocketAddr, q: &str) -> Message {
        let c = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        c.send_to(&query(q), server).await.unwrap();
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), c.recv(&mut buf))
            .await
            .expect("the resolver answers")
            .unwrap();
        Message::from_vec(&buf[..n]).unwrap()
    }

    #[tokio::test]
    async fn a_pin_still_good_is_reused_and_the_answer_capped_at_what_is_left() {
        let up = fake_upstream(vec![a("api.example.com.", "198.51.100.10", 1)]).await;
        let events = Arc::new(Mutex::new(Vec::new()));
        let pinner = FakePinner {
            events: Arc::clone(&events),
            ..FakePinner::default()
        };
        let second = Duration::from_secs(1);
        let r = Resolver::new(
            NamePolicy::from_plan(&plan(&["api.example.com:443"], &[])),
            pinner,
            Upstream::new(up.addr),
            ResolverConfig {
                upstream_timeout: Duration::from_millis(500),
                min_ttl: second,
                max_ttl: second,
                ..ResolverConfig::default()
            },
        );
        let server = serve(r).await;
        let pinned = || events.lock().unwrap().len();
        ask(server, "api.example.com.").await;
        assert_eq!(pinned(), 1);
        // Asked again at once: upstream is asked (answers are not cached), the pin is not.
        let again = ask(server, "api.example.com.").await;
        assert_eq!(
            pinned(),
            1,
            "a pin with more than half its time left is reused"
        );
        assert_eq!(up.asked.lock().unwrap().len(), 2);
        assert!(
            again.answers.iter().all(|r| r.ttl <= 1),
            "{:?}",
            again.answers
        );
        // Once less than half of it is left, the next answer pins again.
        tokio::time::sleep(Duration::from_millis(600)).await;
        ask(server, "api.example.com.").await;
        assert_eq!(pinned(), 2, "a pin about to expire is renewed");
    }

    #[tokio::test]
    async fn allowed_name_is_forwarded_and_pinned_before_the_reply() {
        let up = fake_upstream(vec![
            cname("www.example.com.", "cdn.example.net.", 600),
            a("cdn.example.net.", "198.51.100.10", 7200),
            a("cdn.example.net.", "10.0.0.5", 600), // rebinding: passed through, not pinned
            a("unrelated.example.org.", "203.0.113.9", 600), // not in the chain
        ])
        .await;
        let events = Arc::new(Mutex::new(Vec::new()));
        let pinner = FakePinner {
            events: Arc::clone(&events),
            // The reply must wait for this: were it sent first, the log below would be empty.
            delay: Duration::from_millis(300),
            ..FakePinner::default()
        };
        let server = serve(resolver(&["*.example.com:443"], &[], up.addr, pinner)).await;
        let reply = ask(server, "www.example.com.").await;
        let pinned = events.lock().unwrap().clone();
        assert_eq!(
            pinned,
            vec![Event::Pinned(
                vec![("198.51.100.10".parse().unwrap(), Some(443))],
                Duration::from_secs(600)
            )],
            "pinned before the reply arrived, with the chain's smallest TTL"
        );
        assert_eq!(
            *up.asked.lock().unwrap(),
            vec!["www.example.com.".to_owned()]
        );
        assert_eq!(reply.metadata.id, 4242);
        assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
        assert_eq!(reply.answers.len(), 4, "answers passed through");
        assert!(
            reply.answers.iter().all(|r| r.ttl <= 600),
            "TTLs capped at the pin's"
        );
    }

    #[tokio::test]
    async fn disallowed_and_denied_names_are_refused_without_upstream() {
        let up = fake_upstream(vec![a("x.", "198.51.100.10", 60)]).await;
        let server = serve(resolver(
            &["*.example.com"],
            &["evil.example.com"],
            up.addr,
            FakePinner::default(),
        ))
        .await;
        for q in [
            "other.org.",
            "example.com.",
            "evil.example.com.",
            "EVIL.example.com.",
        ] {
            let reply = ask(server, q).await;
            assert_eq!(reply.metadata.response_code, ResponseCode::Refused, "{q}");
            assert_eq!(reply.metadata.id, 4242);
            assert!(reply.answers.is_empty());
        }
        assert!(
            up.asked.lock().unwrap().is_empty(),
            "upstream was contacted"
        );
    }

    #[tokio::test]
    async fn chain_through_a_denied_name_is_refused_and_not_pinned() {
        let up = fake_upstream(vec![
            cname("www.example.com.", "evil.example.com.", 600),
            a("evil.example.com.", "198.51.100.10", 600),
        ])
        .await;
        let pinner = FakePinner::default();
        let events = Arc::clone(&pinner.events);
        let server = serve(resolver(
            &["*.example.com"],
            &["evil.example.com"],
            up.addr,
            pinner,
        ))
        .await;
        let reply = ask(server, "www.example.com.").await;
        assert_eq!(reply.metadata.response_code, ResponseCode::Refused);
        assert!(events.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn pin_failure_fails_closed() {
        let up = fake_upstream(vec![a("api.example.com.", "198.51.100.10", 5)]).await;
        let pinner = FakePinner::default();
        pinner.fail.store(true, Ordering::SeqCst);
        let server = serve(resolver(&["api.example.com"], &[], up.addr, pinner)).await;
        let reply = ask(server, "api.example.com.").await;
        assert_eq!(reply.metadata.response_code, ResponseCode::ServFail);
        assert!(reply.answers.is_empty(), "no address leaks on a failed pin");
    }

    #[tokio::test]
    async fn short_ttls_are_clamped_up() {
        let up = fake_upstream(vec![a("api.example.com.", "198.51.100.10", 5)]).await;
        let pinner = FakePinner::default();
        let events = Arc::clone(&pinner.events);
        let server = serve(resolver(&["api.example.com"], &[], up.addr, pinner)).await;
        let reply = ask(server, "api.example.com.").await;
        assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
        assert_eq!(
            *events.lock().unwrap(),
            vec![Event::Pinned(
                vec![("198.51.100.10".parse().unwrap(), None)],
                Duration::from_secs(30)
            )]
        );
    }

    #[tokio::test]
    async fn silent_upstream_gives_servfail() {
        // A bound socket that never answers.
        let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let server = serve(resolver(
            &["api.example.com"],
            &[],
            silent.local_addr().unwrap(),
            FakePinner::default(),
        ))
        .await;
        let reply = ask(server, "api.example.com.").await;
        assert_eq!(reply.metadata.response_code, ResponseCode::ServFail);
    }

    #[tokio::test]
    async fn malformed_queries_get_formerr_or_nothing() {
        let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let r = resolver(
            &["*.example.com"],
            &[],
            silent.local_addr().unwrap(),
            FakePinner::default(),
        );
        assert_eq!(r.handle(&[1, 2, 3]).await, None, "shorter than a header");
        let mut bad = query("www.example.com.");
        bad.truncate(bad.len() - 3);
        let reply = Message::from_vec(&r.handle(&bad).await.unwrap()).unwrap();
        assert_eq!(reply.metadata.response_code, ResponseCode::FormErr);
        assert_eq!(reply.metadata.id, 4242);
        // A response is never answered.
        let mut resp = Message::response(7, OpCode::Query);
        resp.add_query(Query::query(name("www.example.com."), RecordType::A));
        assert_eq!(r.handle(&resp.to_vec().unwrap()).await, None);
        // Two questions: FORMERR.
        let mut two = Message::new(9, MessageType::Query, OpCode::Query);
        two.add_query(Query::query(name("a.example.com."), RecordType::A));
        two.add_query(Query::query(name("b.example.com."), RecordType::A));
        let reply = Message::from_vec(&r.handle(&two.to_vec().unwrap()).await.unwrap()).unwrap();
        assert_eq!(reply.metadata.response_code, ResponseCode::FormErr);
    }

    /// A fake upstream answering over UDP with TC set and nothing else, and over TCP in full
    /// (on the same port).
    async fn truncating_upstream(records: Vec<Record>) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let udp = UdpSocket::bind(addr).await.unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let udp_log = Arc::clone(&log);
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let (n, peer) = udp.recv_from(&mut buf).await.unwrap();
                let q = Message::from_vec(&buf[..n]).unwrap();
                udp_log.lock().unwrap().push("udp".to_owned());
                let mut r = Message::response(q.metadata.id, OpCode::Query);
                r.queries = q.queries.clone();
                r.metadata.truncation = true;
                udp.send_to(&r.to_vec().unwrap(), peer).await.unwrap();
            }
        });
        let tcp_log = Arc::clone(&log);
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = tcp.accept().await.unwrap();
                let q = Message::from_vec(&read_framed(&mut stream).await.unwrap()).unwrap();
                tcp_log.lock().unwrap().push("tcp".to_owned());
                let mut r = Message::response(q.metadata.id, OpCode::Query);
                r.queries = q.queries.clone();
                r.answers = records.clone();
                write_framed(&mut stream, &r.to_vec().unwrap())
                    .await
                    .unwrap();
            }
        });
        (addr, log)
    }

    fn many_a(owner: &str, n: u8) -> Vec<Record> {
        (1..=n)
            .map(|i| a(owner, &format!("198.51.100.{i}"), 600))
            .collect()
    }

    #[tokio::test]
    async fn truncated_upstream_answer_is_asked_again_over_tcp() {
        let (up, log) =
            truncating_upstream(vec![a("api.example.com.", "198.51.100.10", 600)]).await;
        let pinner = FakePinner::default();
        let events = Arc::clone(&pinner.events);
        let server = serve(resolver(&["api.example.com"], &[], up, pinner)).await;
        let reply = ask(server, "api.example.com.").await;
        assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
        assert_eq!(reply.answers.len(), 1);
        assert_eq!(
            *log.lock().unwrap(),
            vec!["udp".to_owned(), "tcp".to_owned()]
        );
        assert_eq!(events.lock().unwrap().len(), 1, "the TCP answer was pinned");
    }

    #[tokio::test]
    async fn large_answers_are_truncated_over_udp_and_whole_over_tcp() {
        let up = fake_upstream(many_a("big.example.com.", 60)).await;
        let pinner = FakePinner::default();
        let events = Arc::clone(&pinner.events);
        let r = Arc::new(resolver(&["big.example.com"], &[], up.addr, pinner));
        // UDP without EDNS: 512 bytes at most, so TC and the client retries over TCP.
        let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let udp_addr = udp.local_addr().unwrap();
        tokio::spawn(Arc::clone(&r).serve_udp(udp));
        let reply = ask(udp_addr, "big.example.com.").await;
        assert!(reply.metadata.truncation, "TC set");
        assert!(reply.answers.is_empty());
        // TCP: the whole answer, pinned.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tcp_addr = listener.local_addr().unwrap();
        tokio::spawn(Arc::clone(&r).serve_tcp(listener));
        let mut conn = TcpStream::connect(tcp_addr).await.unwrap();
        for _ in 0..2 {
            // Two queries on one connection.
            write_framed(&mut conn, &query("big.example.com."))
                .await
                .unwrap();
            let reply = Message::from_vec(&read_framed(&mut conn).await.unwrap()).unwrap();
            assert!(!reply.metadata.truncation);
            assert_eq!(reply.answers.len(), 60);
            assert_eq!(reply.metadata.id, 4242);
        }
        let events = events.lock().unwrap();
        let Event::Pinned(addrs, _) = &events[events.len() - 1];
        assert_eq!(addrs.len(), 60);
    }

    #[tokio::test]
    async fn tcp_refuses_disallowed_names_and_survives_garbage() {
        let up = fake_upstream(vec![]).await;
        let r = Arc::new(resolver(
            &["api.example.com"],
            &[],
            up.addr,
            FakePinner::default(),
        ));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tcp_addr = listener.local_addr().unwrap();
        tokio::spawn(Arc::clone(&r).serve_tcp(listener));
        let mut conn = TcpStream::connect(tcp_addr).await.unwrap();
        write_framed(&mut conn, &query("other.org.")).await.unwrap();
        let reply = Message::from_vec(&read_framed(&mut conn).await.unwrap()).unwrap();
        assert_eq!(reply.metadata.response_code, ResponseCode::Refused);
        // Garbage: the connection is answered FORMERR or closed, and the server lives on.
        let mut bad = TcpStream::connect(tcp_addr).await.unwrap();
        write_framed(&mut bad, &[0xff; 40]).await.unwrap();
        drop(bad);
        let mut again = TcpStream::connect(tcp_addr).await.unwrap();
        write_framed(&mut again, &query("other.org."))
            .await
            .unwrap();
        let reply = Message::from_vec(&read_framed(&mut again).await.unwrap()).unwrap();
        assert_eq!(reply.metadata.response_code, ResponseCode::Refused);
        assert!(up.asked.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn queries_beyond_the_in_flight_bound_are_dropped() {
        let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let r = Resolver::new(
            NamePolicy::from_plan(&plan(&["api.example.com"], &[])),
            FakePinner::default(),
            Upstream::new(silent.local_addr().unwrap()),
            ResolverConfig {
                upstream_timeout: Duration::from_millis(800),
                max_in_flight: 1,
                ..ResolverConfig::default()
            },
        );
        let server = serve(r).await;
        // The first query holds the only slot while upstream stays silent.
        let first = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        first
            .send_to(&query("api.example.com."), server)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        // A second one (refused at once were there a slot) gets nothing.
        let second = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        second.send_to(&query("other.org."), server).await.unwrap();
        let mut buf = vec![0u8; 4096];
        let early = tokio::time::timeout(Duration::from_millis(300), second.recv(&mut buf)).await;
        assert!(early.is_err(), "answered beyond the bound");
        // The first gets SERVFAIL after the upstream timeout; then the slot is free again.
        let n = tokio::time::timeout(Duration::from_secs(5), first.recv(&mut buf))
            .await
            .unwrap()
            .unwrap();
        let reply = Message::from_vec(&buf[..n]).unwrap();
        assert_eq!(reply.metadata.response_code, ResponseCode::ServFail);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            ask(server, "other.org.").await.metadata.response_code,
            ResponseCode::Refused
        );
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let reply = rt.block_on(async {
                // Nothing listens on this upstream: a query that parses and is allowed would
                // wait out the (short) timeout and get SERVFAIL.
                let r = Resolver::new(
                    NamePolicy::from_plan(&plan(&["*.example.com"], &[])),
                    FakePinner::default(),
                    Upstream::new("127.0.0.1:9".parse().unwrap()),
                    ResolverConfig { upstream_timeout: Duration::from_millis(50), ..ResolverConfig::default() },
                );
                r.handle(&bytes).await
            });
            if let Some(reply) = reply {
                let m = Message::from_vec(&reply).unwrap();
                prop_assert_eq!(m.metadata.message_type, MessageType::Response);
                prop_assert_eq!(&reply[..2], &bytes[..2], "the reply carries the query's id");
            }
        }
    }
}
