//! The resolver's nft pinner against a real router table, in a network namespace the test
//! creates and removes (never the host's). Needs root and the `nft`/`ip` programs.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)] // test code

use std::net::SocketAddr;
use std::process::Command;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use luminaguard_core::NetworkPolicy;
use luminaguard_net::cmd::Netns as Ns;
use luminaguard_net::nft::{self, Interfaces};
use luminaguard_net::resolver::{
    NamePolicy, NftPinner, Pinner, Resolver, ResolverConfig, Upstream,
};
use luminaguard_net::{FirewallPlan, NetNames};
use serde_json::Value;
use tokio::net::UdpSocket;

struct Netns(String);

impl Netns {
    fn new() -> Self {
        let name = format!("lgtest-dns-{}", std::process::id());
        let st = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .unwrap();
        assert!(st.success(), "ip netns add {name}");
        Self(name)
    }

    /// The elements of set `set` of `table`, as nft's JSON shows them.
    fn elements(&self, table: &str, set: &str) -> Vec<Value> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.0, "nft", "-j", "list", "set"])
            .args(["inet", table, set])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|i| i.get("set"))
            .flat_map(|s| s["elem"].as_array().cloned().unwrap_or_default())
            .collect()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// The timeout (seconds) of the element whose value prints as `val`, if present.
fn timeout_of(elems: &[Value], val: &str) -> Option<u64> {
    elems.iter().find_map(|e| {
        let inner = &e["elem"];
        (inner["val"].to_string().contains(val)).then(|| inner["timeout"].as_u64().unwrap())
    })
}

#[tokio::test]
async fn pins_land_in_the_router_sets_with_a_timeout() {
    if !luminaguard_testkit::privileged("nftables in a scratch network namespace") {
        return;
    }
    let ns = Netns::new();
    let names = NetNames::for_sandbox(&"task-dns".parse().unwrap());
    let policy: NetworkPolicy = serde_json::from_value(serde_json::json!({
        "mode": "egress",
        "allow": ["*.example.com:443", "api.example.org"],
        "deny": [],
    }))
    .unwrap();
    let plan = FirewallPlan::compile(&policy, &[]).unwrap().unwrap();
    let ifs = Interfaces {
        from_sandbox: "sbx0",
        uplink: "up0",
    };
    nft::apply(Ns::Named(&ns.0), &names.table, &plan, &ifs)
        .await
        .unwrap();
    let pinner = NftPinner::new(Some(ns.0.clone()), names.table.clone());

    // Directly: each kind of set, with the timeout asked for.
    pinner
        .pin(
            &[
                ("198.51.100.10".parse().unwrap(), None),
                ("198.51.100.11".parse().unwrap(), Some(443)),
                ("2001:db8::5".parse().unwrap(), None),
            ],
            Duration::from_secs(300),
        )
        .await
        .unwrap();
    let net4 = ns.elements(&names.table, "dns_net4");
    assert_eq!(timeout_of(&net4, "198.51.100.10"), Some(300), "{net4:?}");
    let port4 = ns.elements(&names.table, "dns_port4");
    assert_eq!(timeout_of(&port4, "198.51.100.11"), Some(300), "{port4:?}");
    assert!(port4[0].to_string().contains("443"), "{port4:?}");
    let net6 = ns.elements(&names.table, "dns_net6");
    assert_eq!(timeout_of(&net6, "2001:db8::5"), Some(300), "{net6:?}");

    // Pinning again refreshes the timeout of the same element (no error, no duplicate).
    pinner
        .pin(
            &[("198.51.100.10".parse().unwrap(), None)],
            Duration::from_secs(120),
        )
        .await
        .unwrap();
    let net4 = ns.elements(&names.table, "dns_net4");
    assert_eq!(net4.len(), 1, "{net4:?}");
    assert_eq!(timeout_of(&net4, "198.51.100.10"), Some(120), "{net4:?}");

    // Through the resolver: a query for an allowed name lands its answer in the port set.
    let upstream = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let upstream_addr = upstream.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            let (n, peer) = upstream.recv_from(&mut buf).await.unwrap();
            let q = Message::from_vec(&buf[..n]).unwrap();
            let mut r = Message::response(q.metadata.id, OpCode::Query);
            r.queries = q.queries.clone();
            r.answers = vec![Record::from_rdata(
                q.queries[0].name().clone(),
                90,
                RData::A(A("203.0.113.77".parse().unwrap())),
            )];
            upstream.send_to(&r.to_vec().unwrap(), peer).await.unwrap();
        }
    });
    let resolver = Arc::new(Resolver::new(
        NamePolicy::from_plan(&plan),
        pinner,
        Upstream::new(upstream_addr),
        ResolverConfig::default(),
    ));
    let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let server_addr: SocketAddr = server.local_addr().unwrap();
    tokio::spawn(resolver.serve_udp(server));
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut m = Message::new(77, MessageType::Query, OpCode::Query);
    m.add_query(Query::query(
        Name::from_str("www.example.com.").unwrap(),
        RecordType::A,
    ));
    client
        .send_to(&m.to_vec().unwrap(), server_addr)
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), client.recv(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let reply = Message::from_vec(&buf[..n]).unwrap();
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    let port4 = ns.elements(&names.table, "dns_port4");
    // 90 s TTL, within the clamp: pinned for 90 s on port 443 only.
    assert_eq!(timeout_of(&port4, "203.0.113.77"), Some(90), "{port4:?}");

    // A table that does not exist: the error names it, and the resolver would answer SERVFAIL.
    let missing = NftPinner::new(Some(ns.0.clone()), "lgmissing".into());
    let err = missing
        .pin(
            &[("198.51.100.12".parse().unwrap(), None)],
            Duration::from_secs(60),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("lgmissing"), "{err}");
    assert!(err.to_string().contains("198.51.100.12"), "{err}");

    nft::remove(Ns::Named(&ns.0), &names.table).await.unwrap();
}
