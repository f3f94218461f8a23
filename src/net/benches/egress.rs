//! Cost of a sandbox's egress path — namespaces, links, addresses and both nftables tables —
//! created and removed, with 0, 100 and 500 other sandboxes' paths live beside it.
//!
//! `cargo bench -p luminaguard-net --bench egress [-- --quick]` (root). Runs against a fake
//! uplink namespace (see `luminaguard_testkit::netlab`), never the host's.
//!
//! The anchor, measured in the same run: the same kernel objects made the plainest way a shell
//! script would — `ip netns add` ×2, one veth pair, `nft -f` of an equivalent one-rule table —
//! so the ratio says what our steps (address allocation, the plan's sets, the uplink table,
//! rollback bookkeeping) add.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)] // bench code

use std::process::Command;
use std::time::{Duration, Instant};

use luminaguard_core::{NetworkPolicy, SandboxId};
use luminaguard_net::Uplink;
use luminaguard_net::topology::{self, Options};
use luminaguard_testkit::netlab::{FakeInternet, SERVER};
use luminaguard_testkit::{median, ms};

fn sh(args: &[&str], stdin: Option<&str>) {
    use std::io::Write;
    let mut child = Command::new(args[0])
        .args(&args[1..])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    if let (Some(mut p), Some(s)) = (child.stdin.take(), stdin) {
        p.write_all(s.as_bytes()).unwrap();
    }
    assert!(child.wait().unwrap().success(), "{args:?}");
}

/// The anchor: the same objects, made and removed with the fewest commands.
fn plain_cycle(uplink_ns: &str) -> Duration {
    let start = Instant::now();
    sh(&["ip", "netns", "add", "lgbench-r"], None);
    sh(&["ip", "netns", "add", "lgbench-s"], None);
    sh(
        &[
            "ip",
            "-n",
            uplink_ns,
            "link",
            "add",
            "lgbench0",
            "type",
            "veth",
            "peer",
            "name",
            "up0",
            "netns",
            "lgbench-r",
        ],
        None,
    );
    sh(
        &["ip", "netns", "exec", "lgbench-r", "nft", "-f", "-"],
        Some(
            "table inet t {\n chain forward {\n type filter hook forward priority filter; policy drop;\n ip daddr 198.51.100.10 tcp dport 80 accept\n }\n}\n",
        ),
    );
    sh(&["ip", "-n", uplink_ns, "link", "del", "lgbench0"], None);
    sh(&["ip", "netns", "del", "lgbench-s"], None);
    sh(&["ip", "netns", "del", "lgbench-r"], None);
    start.elapsed()
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    if !luminaguard_testkit::privileged("network egress") {
        return;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let net = FakeInternet::new();
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
        "mode": "egress", "allow": [format!("{SERVER}:80"), "203.0.113.0/24"], "deny": ["203.0.113.7"]
    }))
    .unwrap();
    let id = |s: String| -> SandboxId { s.parse().unwrap() };
    let rounds = if quick { 5 } else { 20 };
    let scales: &[usize] = if quick { &[0, 100] } else { &[0, 100, 500] };

    println!("egress path set-up + teardown, medians of {rounds} (ours vs plain ip/nft commands)");
    println!(
        "{:>12} {:>10} {:>10} {:>10} {:>8}",
        "live others", "setup ms", "teardown", "plain ms", "ratio"
    );
    let mut live = Vec::new();
    for &scale in scales {
        rt.block_on(async {
            while live.len() < scale {
                let eg =
                    topology::create(&id(format!("bench-live-{}", live.len())), &policy, &opts)
                        .await
                        .unwrap();
                live.push(eg);
            }
        });
        let (mut setup, mut teardown, mut plain) = (Vec::new(), Vec::new(), Vec::new());
        for r in 0..rounds {
            rt.block_on(async {
                let t = Instant::now();
                let eg = topology::create(&id(format!("bench-{r}")), &policy, &opts)
                    .await
                    .unwrap();
                setup.push(t.elapsed());
                let t = Instant::now();
                topology::remove(&eg.names, &uplink).await.unwrap();
                teardown.push(t.elapsed());
            });
            plain.push(plain_cycle(&net.host));
        }
        let ours = median(setup.clone()) + median(teardown.clone());
        let anchor = median(plain);
        println!(
            "{:>12} {:>10.1} {:>10.1} {:>10.1} {:>7.2}x",
            scale,
            ms(median(setup)),
            ms(median(teardown)),
            ms(anchor),
            ours.as_secs_f64() / anchor.as_secs_f64()
        );
    }
    rt.block_on(async {
        for eg in &live {
            topology::remove(&eg.names, &uplink).await.unwrap();
        }
    });
}
