//! What the MCP gateway adds to a tool call, side by side in one run: `server-everything`'s
//! `echo` through `luminaguard mcp gateway` (the server in a process sandbox, the call scanned
//! for secrets, judged by the policy, forwarded, its result scanned and recorded on the audit
//! log) against the same server started directly on the host over stdio (no sandbox, nothing
//! in between). Also the server's cold start — from starting the process to its tools listed —
//! both ways; and, when `LUMINAGUARD_BENCH_NODE_IMAGE` names an image with Node.js and the
//! servers (docs/mcp-gateway.md says how to build one), in a QEMU microVM.
//!
//! `cargo bench -p luminaguard --bench mcp_gateway [-- --quick]` (root; the servers that
//! scripts/setup installs). Medians; figures are printed, never asserted.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)] // bench code

#[path = "../tests/mcp/gateway_policy.rs"]
mod gateway_policy;
#[path = "common/peer.rs"]
mod peer;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use luminaguard_testkit::{median, ms};
use peer::Peer;
use serde_json::json;

const LG: &str = env!("CARGO_BIN_EXE_luminaguard");
const NODE_SERVERS: &str = "/var/cache/luminaguard/mcp-servers/node";
const EVERYTHING: &str = "node_modules/@modelcontextprotocol/server-everything/dist/index.js";

/// The gateway's policy: the server's launch named, its calls allowed.
fn bench_policy() -> String {
    use gateway_policy::{EVERYTHING_SERVER, HEAD, HOLD, TOOL_CALLS};
    [HEAD, EVERYTHING_SERVER, HOLD, TOOL_CALLS].concat()
}

/// `luminaguard mcp gateway` with `server-everything` on `backend` (and `extra` keys).
fn gateway(dir: &Path, name: &str, backend: &str, extra: &str) -> Command {
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(
        &config,
        format!(
            "[servers.everything]\ncommand = [\"node\", \"/opt/mcp/node/{EVERYTHING}\", \"stdio\"]\n\
             backend = \"{backend}\"\n{extra}\n"
        ),
    )
    .unwrap();
    let policy = dir.join("policy.toml");
    std::fs::write(&policy, bench_policy()).unwrap();
    let mut cmd = Command::new(LG);
    cmd.arg("--runtime-dir")
        .arg(dir.join(format!("{name}-rt")))
        .args(["--no-daemon", "--policy"])
        .arg(&policy)
        .args(["mcp", "gateway"])
        .arg(&config)
        .arg("--pins")
        .arg(dir.join(format!("{name}-pins.json")))
        .env("LUMINAGUARD_AUDIT_DIR", dir.join(format!("{name}-audit")));
    cmd
}

/// The server on the host, over stdio.
fn direct() -> Command {
    let mut cmd = Command::new("node");
    cmd.arg(Path::new(NODE_SERVERS).join(EVERYTHING))
        .arg("stdio");
    cmd
}

/// From starting `cmd` to its tools listed (the server up and answering).
fn cold_start(cmd: Command) -> Duration {
    let t = Instant::now();
    let mut p = Peer::start(cmd);
    let tools = p.request("tools/list", json!({}));
    let took = t.elapsed();
    assert!(
        tools["result"]["tools"]
            .as_array()
            .is_some_and(|t| t.len() > 1),
        "{tools}"
    );
    p.stop();
    took
}

/// `rounds` echo calls through `p`, each timed.
fn echoes(p: &mut Peer, tool: &str, rounds: usize) -> Vec<Duration> {
    let mut v = Vec::with_capacity(rounds);
    for i in 0..rounds {
        let t = Instant::now();
        let r = p.call(tool, json!({"message": format!("m{i}")}));
        v.push(t.elapsed());
        assert_eq!(r["content"][0]["text"], format!("Echo: m{i}"), "{r}");
    }
    v
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("the mcp_gateway bench needs root (process sandboxes)");
        std::process::exit(1);
    }
    if !Path::new(NODE_SERVERS).join(EVERYTHING).exists() {
        eprintln!(
            "the mcp_gateway bench needs the servers scripts/setup installs ({NODE_SERVERS})"
        );
        std::process::exit(1);
    }
    let quick = std::env::args().any(|a| a == "--quick");
    let (rounds, colds) = if quick { (50, 3) } else { (500, 10) };
    let dir = tempfile::tempdir().unwrap();
    let mount = format!("mounts = [{{ host = \"{NODE_SERVERS}\", at = \"/opt/mcp/node\" }}]");

    let mut gw = Peer::start(gateway(dir.path(), "warm", "process", &mount));
    gw.request("tools/list", json!({}));
    echoes(&mut gw, "everything__echo", 5);
    let through = echoes(&mut gw, "everything__echo", rounds);
    gw.stop();

    let mut d = Peer::start(direct());
    echoes(&mut d, "echo", 5);
    let bare = echoes(&mut d, "echo", rounds);
    d.stop();

    let (mut cold_gw, mut cold_direct) = (Vec::new(), Vec::new());
    for i in 0..colds {
        cold_gw.push(cold_start(gateway(
            dir.path(),
            &format!("cold-{i}"),
            "process",
            &mount,
        )));
        cold_direct.push(cold_start(direct()));
    }
    let vm = std::env::var("LUMINAGUARD_BENCH_NODE_IMAGE")
        .ok()
        .map(|image| {
            (0..colds.min(3))
                .map(|i| {
                    cold_start(gateway(
                        dir.path(),
                        &format!("vm-{i}"),
                        "qemu",
                        &format!("image = \"{image}\"\nmemory = \"512M\""),
                    ))
                })
                .collect::<Vec<_>>()
        });

    let (g, b) = (median(through), median(bare));
    let (cg, cd) = (median(cold_gw), median(cold_direct));
    println!("mcp_gateway bench: {rounds} calls (medians), server-everything's echo");
    println!("| | time | beside it | ratio |");
    println!("|---|---|---|---|");
    println!(
        "| echo through the gateway (process sandbox) | {:.2} ms | the server directly on stdio {:.2} ms | {:.2} (+{:.2} ms) |",
        ms(g),
        ms(b),
        ms(g) / ms(b),
        ms(g) - ms(b)
    );
    println!(
        "| cold start to tools listed, gateway (process sandbox) | {:.0} ms | the server directly {:.0} ms | {:.2} |",
        ms(cg),
        ms(cd),
        ms(cg) / ms(cd)
    );
    match vm {
        Some(v) => {
            let cv = median(v);
            println!(
                "| cold start to tools listed, gateway (QEMU microVM, TCG) | {:.0} ms | the server directly {:.0} ms | {:.2} |",
                ms(cv),
                ms(cd),
                ms(cv) / ms(cd)
            );
        }
        None => println!(
            "(microVM cold start not measured: set LUMINAGUARD_BENCH_NODE_IMAGE to an image with \
             Node.js and the servers, see docs/mcp-gateway.md)"
        ),
    }
}
