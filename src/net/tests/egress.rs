//! Sandbox egress paths built for real against a fake internet in namespaces the tests create
//! (see `luminaguard_testkit::netlab`): packets are sent from the sandbox's network namespace and
//! the test checks which ones arrive. Needs root and `ip`/`nft`/`sysctl`; required in CI.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)] // test code

use std::path::PathBuf;
use std::process::Command;

use luminaguard_core::{NetworkPolicy, SandboxId};
use luminaguard_net::topology::{self, Options, Step};
use luminaguard_net::{NetNames, Uplink};
use luminaguard_testkit::netlab::{
    FakeInternet, HOST_ADDR, METADATA, NEIGHBOUR, OTHER, SERVER, UDP_PORT, ping_reaches,
    tcp_reaches, udp_reaches,
};
use luminaguard_testkit::privileged;

fn policy(allow: &[&str], deny: &[&str]) -> NetworkPolicy {
    serde_json::from_value(serde_json::json!({"mode": "egress", "allow": allow, "deny": deny}))
        .unwrap()
}

fn id(s: &str) -> SandboxId {
    s.parse().unwrap()
}

struct Lab {
    net: FakeInternet,
    uplink: Uplink,
    lock: PathBuf,
    _dir: tempfile::TempDir,
}

impl Lab {
    fn new() -> Self {
        let net = FakeInternet::new();
        let uplink = Uplink {
            netns: Some(net.host.clone()),
            pool: None,
        };
        let dir = tempfile::tempdir().unwrap();
        Self {
            lock: dir.path().join("net.lock"),
            net,
            uplink,
            _dir: dir,
        }
    }

    /// The sandbox's names, with any objects an earlier, aborted run of the test left removed.
    fn fresh(&self, sid: &SandboxId) -> NetNames {
        let names = NetNames::for_sandbox(sid);
        for ns in [&names.router_netns, &names.sandbox_netns] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        names
    }

    fn opts(&self, fail_at: Option<Step>) -> Options<'_> {
        Options {
            uplink: &self.uplink,
            lock: &self.lock,
            fail_at,
        }
    }

    /// Which of this sandbox's objects still exist.
    fn remaining(&self, names: &NetNames) -> Vec<String> {
        let mut left = Vec::new();
        for ns in [&names.router_netns, &names.sandbox_netns] {
            if std::path::Path::new("/run/netns").join(ns).exists() {
                left.push(format!("netns {ns}"));
            }
        }
        let link = Command::new("ip")
            .args([
                "-n",
                &self.net.host,
                "link",
                "show",
                "dev",
                &names.uplink_host,
            ])
            .output()
            .unwrap();
        if link.status.success() {
            left.push(format!("link {}", names.uplink_host));
        }
        let table = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.net.host,
                "nft",
                "list",
                "table",
                "inet",
            ])
            .arg(&names.table)
            .output()
            .unwrap();
        if table.status.success() {
            left.push(format!("table {}", names.table));
        }
        left
    }
}

#[tokio::test]
async fn an_allowed_host_port_is_reached_and_nothing_else() {
    if !privileged("egress firewall tests") {
        return;
    }
    let lab = Lab::new();
    let sid = id("egress-hostport");
    lab.fresh(&sid);
    let eg = topology::create(
        &sid,
        &policy(&[&format!("{SERVER}:80")], &[]),
        &lab.opts(None),
    )
    .await
    .unwrap();
    let ns = eg.names.sandbox_netns.clone();
    assert!(tcp_reaches(&ns, SERVER, 80), "the allowed host:port");
    assert!(
        udp_reaches(&ns, SERVER, UDP_PORT),
        "host:port admits UDP too"
    );
    assert!(
        !tcp_reaches(&ns, SERVER, 81),
        "another port of the allowed host"
    );
    assert!(!tcp_reaches(&ns, NEIGHBOUR, 80), "another host, same port");
    assert!(!tcp_reaches(&ns, OTHER, 80), "another network");
    assert!(!tcp_reaches(&ns, METADATA, 80), "cloud metadata");
    assert!(!tcp_reaches(&ns, HOST_ADDR, 80), "the host's own address");
    assert!(
        !tcp_reaches(&ns, eg.addrs.host, 80),
        "the host's end of the uplink"
    );
    assert!(!ping_reaches(&ns, SERVER), "ICMP is not a TCP/UDP port");
    topology::remove(&eg.names, &lab.uplink).await.unwrap();
    assert_eq!(lab.remaining(&eg.names), Vec::<String>::new());
}

#[tokio::test]
async fn everything_open_still_never_reaches_private_metadata_or_the_host() {
    if !privileged("egress firewall tests") {
        return;
    }
    let lab = Lab::new();
    let sid = id("egress-open");
    lab.fresh(&sid);
    let eg = topology::create(
        &sid,
        &policy(&["0.0.0.0/0"], &[&format!("{NEIGHBOUR}")]),
        &lab.opts(None),
    )
    .await
    .unwrap();
    let ns = eg.names.sandbox_netns.clone();
    assert!(tcp_reaches(&ns, SERVER, 81));
    assert!(tcp_reaches(&ns, OTHER, 80));
    assert!(ping_reaches(&ns, OTHER), "a CIDR admits ICMP");
    assert!(!tcp_reaches(&ns, NEIGHBOUR, 80), "the deny list wins");
    assert!(!tcp_reaches(&ns, METADATA, 80), "metadata needs naming");
    assert!(!udp_reaches(&ns, METADATA, UDP_PORT));
    assert!(!tcp_reaches(&ns, HOST_ADDR, 80), "the host's own address");
    assert!(
        !tcp_reaches(&ns, eg.addrs.host, 80),
        "the host's end of the uplink"
    );
    topology::remove(&eg.names, &lab.uplink).await.unwrap();
}

#[tokio::test]
async fn naming_the_metadata_endpoint_is_what_opens_it() {
    if !privileged("egress firewall tests") {
        return;
    }
    let lab = Lab::new();
    let sid = id("egress-metadata");
    lab.fresh(&sid);
    let eg = topology::create(
        &sid,
        &policy(&[&format!("{METADATA}:80")], &[]),
        &lab.opts(None),
    )
    .await
    .unwrap();
    let ns = eg.names.sandbox_netns.clone();
    assert!(tcp_reaches(&ns, METADATA, 80));
    assert!(!tcp_reaches(&ns, SERVER, 80));
    topology::remove(&eg.names, &lab.uplink).await.unwrap();
}

/// The firewall is what blocks and what admits: take its pieces away and watch the probes change.
#[tokio::test]
async fn the_firewall_is_on_the_packet_path() {
    if !privileged("egress firewall tests") {
        return;
    }
    let lab = Lab::new();
    let sid = id("egress-onpath");
    lab.fresh(&sid);
    let eg = topology::create(
        &sid,
        &policy(&[&format!("{SERVER}:80")], &[]),
        &lab.opts(None),
    )
    .await
    .unwrap();
    let (ns, router, table) = (
        eg.names.sandbox_netns.clone(),
        eg.names.router_netns.clone(),
        eg.names.table.clone(),
    );
    assert!(tcp_reaches(&ns, SERVER, 80) && !tcp_reaches(&ns, SERVER, 81));
    let nft = |args: &[&str]| {
        let st = Command::new("ip")
            .args(["netns", "exec", &router, "nft"])
            .args(args)
            .status()
            .unwrap();
        assert!(st.success(), "nft {args:?}");
    };
    // Without the jump into the stages, the forward hook's policy drops even the allowed port.
    nft(&["flush", "chain", "inet", &table, "forward"]);
    assert!(!tcp_reaches(&ns, SERVER, 80), "the jump is what admits");
    // With the forward hook's policy turned to accept, the router forwards anything: the blocked
    // port opens.
    nft(&[
        "add",
        "chain",
        "inet",
        &table,
        "forward",
        "{ policy accept; }",
    ]);
    assert!(tcp_reaches(&ns, SERVER, 81), "the policy is what blocks");
    // Without the router's table (its NAT with it), the uplink's table drops what arrives with
    // the sandbox's own source address: it is on the path too.
    nft(&["delete", "table", "inet", &table]);
    assert!(
        !tcp_reaches(&ns, SERVER, 80),
        "the uplink's anti-spoofing rule"
    );
    topology::remove(&eg.names, &lab.uplink).await.unwrap();
    assert_eq!(lab.remaining(&eg.names), Vec::<String>::new());
}

#[tokio::test]
async fn lookalike_and_longest_ids_get_their_own_working_objects() {
    if !privileged("egress firewall tests") {
        return;
    }
    let lab = Lab::new();
    let long = format!("{}z", "x".repeat(63));
    let allow = policy(&[&format!("{SERVER}:80")], &[]);
    let mut made = Vec::new();
    for s in ["task-1", "task_1", long.as_str()] {
        lab.fresh(&id(s));
        made.push(
            topology::create(&id(s), &allow, &lab.opts(None))
                .await
                .unwrap(),
        );
    }
    assert_ne!(made[0].names.table, made[1].names.table);
    assert_ne!(made[0].addrs, made[1].addrs, "uplink addresses are unique");
    for eg in &made {
        assert!(
            tcp_reaches(&eg.names.sandbox_netns, SERVER, 80),
            "{}",
            eg.names.table
        );
        assert!(!tcp_reaches(&eg.names.sandbox_netns, SERVER, 81));
    }
    for eg in &made {
        topology::remove(&eg.names, &lab.uplink).await.unwrap();
        assert_eq!(lab.remaining(&eg.names), Vec::<String>::new());
    }
}

#[tokio::test]
async fn a_failure_at_any_step_leaves_nothing_behind() {
    if !privileged("egress firewall tests") {
        return;
    }
    let lab = Lab::new();
    let sid = id("egress-inject");
    let names = lab.fresh(&sid);
    let allow = policy(&[&format!("{SERVER}:80")], &[]);
    for step in Step::ALL {
        let err = topology::create(&sid, &allow, &lab.opts(Some(step)))
            .await
            .expect_err("an injected failure must fail the set-up");
        assert!(err.to_string().contains(&step.to_string()), "{err}");
        assert_eq!(lab.remaining(&names), Vec::<String>::new(), "after {step}");
    }
    // And a real one: an uplink namespace that does not forward.
    Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.net.host,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=0",
        ])
        .status()
        .unwrap();
    let err = topology::create(&sid, &allow, &lab.opts(None))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("net.ipv4.ip_forward"), "{err}");
    assert_eq!(lab.remaining(&names), Vec::<String>::new());
}

#[tokio::test]
async fn gc_finds_and_removes_leftovers_of_dead_sandboxes_only() {
    if !privileged("egress firewall tests") {
        return;
    }
    let lab = Lab::new();
    let allow = policy(&[&format!("{SERVER}:80")], &[]);
    let (live, dead) = (id("gc-live"), id("gc-dead"));
    lab.fresh(&live);
    lab.fresh(&dead);
    let kept = topology::create(&live, &allow, &lab.opts(None))
        .await
        .unwrap();
    let lost = topology::create(&dead, &allow, &lab.opts(None))
        .await
        .unwrap();
    let found = topology::leftovers(std::slice::from_ref(&live), &lab.uplink)
        .await
        .unwrap();
    // Other tests run in parallel: only assert about this test's two sandboxes.
    assert!(found.netns.contains(&lost.names.router_netns));
    assert!(found.netns.contains(&lost.names.sandbox_netns));
    assert!(!found.netns.contains(&kept.names.router_netns));
    assert_eq!(found.links, vec![lost.names.uplink_host.clone()]);
    assert_eq!(found.registered, vec![lost.names.uplink_host.clone()]);
    let mine = topology::Leftovers {
        netns: vec![
            lost.names.router_netns.clone(),
            lost.names.sandbox_netns.clone(),
        ],
        ..found
    };
    topology::remove_leftovers(&mine, &lab.uplink)
        .await
        .unwrap();
    assert_eq!(lab.remaining(&lost.names), Vec::<String>::new());
    assert!(
        tcp_reaches(&kept.names.sandbox_netns, SERVER, 80),
        "the live one still works"
    );
    topology::remove(&kept.names, &lab.uplink).await.unwrap();
}

/// 500 create/remove cycles leave no namespace, link or table.
#[tokio::test]
async fn five_hundred_cycles_leave_nothing() {
    if !privileged("egress firewall tests") {
        return;
    }
    let lab = Lab::new();
    let allow = policy(&[&format!("{SERVER}:80")], &["203.0.113.0/24"]);
    let cycles: usize = std::env::var("LUMINAGUARD_NET_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    for i in 0..cycles {
        let sid = id(&format!("cycle-{i}"));
        lab.fresh(&sid);
        let eg = topology::create(&sid, &allow, &lab.opts(None))
            .await
            .unwrap_or_else(|e| panic!("cycle {i}: {e}"));
        topology::remove(&eg.names, &lab.uplink)
            .await
            .unwrap_or_else(|e| panic!("cycle {i}: {e}"));
    }
    let found = topology::leftovers(&[], &lab.uplink).await.unwrap();
    assert!(
        found.links.is_empty() && found.registered.is_empty(),
        "{found:?}"
    );
    for i in 0..cycles {
        let names = NetNames::for_sandbox(&id(&format!("cycle-{i}")));
        assert_eq!(lab.remaining(&names), Vec::<String>::new(), "cycle {i}");
    }
}
