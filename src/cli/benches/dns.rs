//! What a sandbox's DNS costs through its DNS-pinning resolver: the real resolver process
//! (`luminaguard dns-resolver`, with its pin helper) on a real egress path, queried from the
//! sandbox's network namespace.
//!
//! `cargo bench -p luminaguard --bench dns [-- --quick]` (root). Runs against a fake internet
//! with its own DNS server (`luminaguard_testkit::netlab`), never the host's network.
//!
//! Measured, medians over the same run:
//! - **new address**: a query for an allowed name whose address is not pinned yet — forwarded
//!   upstream, its answer pinned into the router table (one `nft` transaction, run by the pin
//!   helper) before the reply;
//! - **pinned address**: the same name asked again — forwarded upstream, the pin reused;
//! - **refused**: a query for a name no rule allows — answered REFUSED without going upstream;
//! - **anchor**: the same query sent straight to the upstream server from the uplink namespace,
//!   as a host without LuminaGuard would; the ratio says what the resolver and its pin add.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)] // bench code

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use luminaguard_core::{NetworkPolicy, SandboxId};
use luminaguard_net::Uplink;
use luminaguard_net::resolver_service::{self, ServiceConfig};
use luminaguard_net::topology::{self, Options, ROUTER_INNER_ADDR};
use luminaguard_testkit::netlab::{FakeInternet, OTHER, SERVER, in_netns};
use luminaguard_testkit::{median, ms};

const BIN: &str = env!("CARGO_BIN_EXE_luminaguard");

/// Sends one query for each of `names` to `server` from network namespace `netns`, one at a
/// time; returns each round trip, and checks every answer has `expect`.
fn query_times(
    netns: &str,
    server: SocketAddr,
    names: Vec<String>,
    expect: ResponseCode,
) -> Vec<Duration> {
    in_netns(netns, move || {
        let sock = UdpSocket::bind("0.0.0.0:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 4096];
        names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let mut q = Message::new(i as u16, MessageType::Query, OpCode::Query);
                q.metadata.recursion_desired = true;
                q.add_query(Query::query(
                    Name::from_ascii(format!("{name}.")).unwrap(),
                    RecordType::A,
                ));
                let bytes = q.to_vec().unwrap();
                let start = Instant::now();
                sock.send_to(&bytes, server).unwrap();
                let n = sock.recv(&mut buf).unwrap();
                let took = start.elapsed();
                let reply = Message::from_vec(&buf[..n]).unwrap();
                assert_eq!(reply.metadata.response_code, expect, "{name}");
                took
            })
            .collect()
    })
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    if !luminaguard_testkit::privileged("network egress") {
        return;
    }
    // Names get addresses from SERVER + 100 on (198.51.100.110…249): inside its /24.
    let rounds = if quick { 20 } else { 140 };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut net = FakeInternet::new();
    // One name per round, each with an address of its own (so each needs a pin of its own).
    let names: Vec<String> = (0..rounds).map(|i| format!("n{i}.allowed.test")).collect();
    let mut zone: Vec<(&str, Ipv4Addr)> = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let i = u32::try_from(i).unwrap();
            (n.as_str(), Ipv4Addr::from(u32::from(SERVER) + 100 + i))
        })
        .collect();
    zone.push(("other.test", OTHER));
    let upstream = net.serve_dns(&zone);
    let uplink = Uplink {
        netns: Some(net.host.clone()),
        pool: None,
    };
    let dir = tempfile::tempdir().unwrap();
    let lock = dir.path().join("net.lock");
    let opts = Options {
        uplink: &uplink,
        lock: &lock,
        fail_at: None,
    };
    let policy: NetworkPolicy = serde_json::from_value(serde_json::json!({
        "mode": "egress", "allow": ["*.allowed.test:80"], "deny": []
    }))
    .unwrap();
    let id: SandboxId = "dns-bench".parse().unwrap();
    let egress = rt.block_on(topology::create(&id, &policy, &opts)).unwrap();
    let config = ServiceConfig::for_egress(id.as_str(), &egress, &policy, &uplink, upstream);
    let log = dir.path().join("resolver.log");
    let helper = rt
        .block_on(async {
            let pending = resolver_service::spawn(BIN.as_ref(), &config, &log).await?;
            let resolver = pending.pid();
            pending.ready().await.map(|h| (resolver, h))
        })
        .unwrap();

    let sandbox = egress.names.sandbox_netns.clone();
    let ours = SocketAddr::from((ROUTER_INNER_ADDR, 53));
    let times = |name: &str| vec![name.to_owned(); rounds];
    let fresh = median(query_times(
        &sandbox,
        ours,
        names.clone(),
        ResponseCode::NoError,
    ));
    let pinned = median(query_times(
        &sandbox,
        ours,
        times(&names[0]),
        ResponseCode::NoError,
    ));
    let refused = median(query_times(
        &sandbox,
        ours,
        times("other.test"),
        ResponseCode::Refused,
    ));
    let anchor = median(query_times(
        &net.host,
        upstream,
        times(&names[0]),
        ResponseCode::NoError,
    ));

    println!("DNS through the sandbox's resolver, medians of {rounds} queries (one at a time)");
    println!("{:>34} {:>9} {:>8}", "", "ms", "ratio");
    println!(
        "{:>34} {:>9.3} {:>7.1}x",
        "new address (upstream + pin)",
        ms(fresh),
        ms(fresh) / ms(anchor)
    );
    println!(
        "{:>34} {:>9.3} {:>7.1}x",
        "pinned address (upstream only)",
        ms(pinned),
        ms(pinned) / ms(anchor)
    );
    println!(
        "{:>34} {:>9.3} {:>7.1}x",
        "refused name (answered locally)",
        ms(refused),
        ms(refused) / ms(anchor)
    );
    println!(
        "{:>34} {:>9.3} {:>8}",
        "anchor: upstream asked directly",
        ms(anchor),
        "1.0x"
    );

    for pid in [helper.0, helper.1] {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    rt.block_on(topology::remove(&egress.names, &uplink))
        .unwrap();
}
