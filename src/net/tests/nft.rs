//! The rendered ruleset loaded into a real kernel, in a network namespace the test creates and
//! removes (never the host's). Needs root and the `nft`/`ip` programs; required in CI.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)] // test code

use std::process::Command;

use luminaguard_core::NetworkPolicy;
use luminaguard_net::cmd::Netns as Ns;
use luminaguard_net::nft::{self, Interfaces};
use luminaguard_net::{FirewallPlan, NetNames};
use serde_json::Value;

struct Netns(String);

impl Netns {
    fn new() -> Self {
        let name = format!("lgtest-nft-{}", std::process::id());
        let st = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .unwrap();
        assert!(st.success(), "ip netns add {name}");
        Self(name)
    }

    fn nft_json(&self, args: &[&str]) -> Value {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.0, "nft", "-j"])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn items<'a>(v: &'a Value, kind: &str) -> Vec<&'a Value> {
    v["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i.get(kind))
        .collect()
}

#[tokio::test]
async fn ruleset_loads_replaces_atomically_and_is_removed() {
    if !luminaguard_testkit::privileged("nftables in a scratch network namespace") {
        return;
    }
    let ns = Netns::new();
    let names = NetNames::for_sandbox(&"task-1".parse().unwrap());
    let policy: NetworkPolicy = serde_json::from_value(serde_json::json!({
        "mode": "egress",
        "allow": ["198.51.100.0/24", "203.0.113.10:443", "[2001:db8::1]:443",
                  "169.254.169.254:80", "api.example.com:443", "10.0.0.0/8", "10.1.0.0/16"],
        "deny": ["198.51.100.66", "*.evil.example"],
    }))
    .unwrap();
    let plan = FirewallPlan::compile(&policy, &["192.0.2.1".parse().unwrap()])
        .unwrap()
        .unwrap();
    let ifs = Interfaces {
        from_sandbox: "sbx0",
        uplink: "uplink0",
    };
    nft::apply(Ns::Named(&ns.0), &names.table, &plan, &ifs)
        .await
        .unwrap();

    let listed = ns.nft_json(&["list", "table", "inet", &names.table]);
    let chains: Vec<&str> = items(&listed, "chain")
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    for c in ["egress", "forward", "input", "output", "postrouting"] {
        assert!(chains.contains(&c), "chain {c} missing: {chains:?}");
    }
    // Base chains drop by default: the table is only ever in a namespace of its own sandbox.
    for c in items(&listed, "chain") {
        if c.get("hook").is_some() && c["type"] == "filter" {
            assert_eq!(c["policy"], "drop", "{c}");
        }
    }
    let set = |name: &str| -> String {
        items(&listed, "set")
            .into_iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("set {name} missing"))
            .to_string()
    };
    assert!(set("deny_net4").contains("198.51.100.66"));
    assert!(set("allow_net4").contains("198.51.100.0"));
    assert!(set("allow_port4").contains("203.0.113.10"));
    assert!(set("allow_port6").contains("2001:db8::1"));
    // Named explicitly inside always-denied ranges; overlapping ranges were merged (nft refuses
    // overlapping intervals otherwise).
    assert!(set("named_port4").contains("169.254.169.254"));
    assert!(set("named_net4").contains("10.0.0.0"));
    assert!(
        set("never_net4").contains("192.0.2.1"),
        "the host's own address"
    );

    // Re-applying replaces the table in one transaction (no duplicate, no error).
    nft::apply(Ns::Named(&ns.0), &names.table, &plan, &ifs)
        .await
        .unwrap();
    let tables = items(&ns.nft_json(&["list", "tables"]), "table").len();
    assert_eq!(tables, 1);

    // A broken script changes nothing: the old table stays intact.
    let err = nft::run_script(Ns::Named(&ns.0), &names.table, &format!(
        "add table inet {t}\ndelete table inet {t}\ntable inet {t} {{ chain c {{ nonsense }} }}\n",
        t = names.table
    ))
    .await
    .unwrap_err();
    assert!(err.to_string().contains(&names.table), "{err}");
    assert_eq!(
        items(
            &ns.nft_json(&["list", "table", "inet", &names.table]),
            "chain"
        )
        .len(),
        chains.len()
    );

    nft::remove(Ns::Named(&ns.0), &names.table).await.unwrap();
    assert!(items(&ns.nft_json(&["list", "tables"]), "table").is_empty());
    // Removing again is not an error (destroy and gc may both try).
    nft::remove(Ns::Named(&ns.0), &names.table).await.unwrap();
}
