//! What MCP adds to the exec path, side by side in one run (process backend, in-process
//! service): `run_command` of `echo hi` through `luminaguard mcp serve` on stdio (JSON-RPC
//! line in, result line out; the session's sandbox warm), against the same command through the
//! service as a library (what the server calls), against a bare fork+exec of `echo hi`. The
//! first call of a session (its sandbox made) is reported separately, cold; and through a
//! running daemon, the first call of a session served from its warm pool (`mcp serve --pool
//! fast`) beside the first call through the same daemon without a pool (its sandbox made cold).
//!
//! `cargo bench -p luminaguard --bench mcp [-- --quick]` (root). Medians; figures are printed,
//! never asserted.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)] // bench code

#[path = "common/peer.rs"]
mod peer;

use std::process::{Command, Stdio};
use std::time::Instant;

use luminaguard_core::Config;
use luminaguard_core::config::ConfigLayer;
use luminaguard_service::{Caller, CreateOptions, ExecOptions, ExecOutput, Service};
use luminaguard_testkit::daemon::Daemon;
use luminaguard_testkit::{median, ms};
use peer::Peer;
use serde_json::{Value, json};

const LG: &str = env!("CARGO_BIN_EXE_luminaguard");

/// `luminaguard mcp serve` on a pipe, initialized.
struct Server(Peer);

impl Server {
    /// In-process (no daemon), as a host would start it.
    fn start(rt: &std::path::Path) -> Self {
        Self::start_with(
            rt,
            &[
                "--no-daemon",
                "--policy",
                "permissive",
                "mcp",
                "serve",
                "--backend",
                "process",
            ],
        )
    }

    /// With `args` after `--runtime-dir RT`.
    fn start_with(rt: &std::path::Path, args: &[&str]) -> Self {
        let mut cmd = Command::new(LG);
        cmd.arg("--runtime-dir")
            .arg(rt)
            .args(args)
            .env("LUMINAGUARD_AUDIT_DIR", rt.with_extension("audit"));
        Self(Peer::start(cmd))
    }

    /// One `run_command` of `echo hi`, checked.
    fn echo(&mut self) {
        let r = self.0.call("run_command", json!({"argv": ["echo", "hi"]}));
        assert_eq!(r["structuredContent"]["stdout"], "hi\n", "{r}");
    }

    fn stop(self) {
        self.0.stop();
    }
}

async fn service_echo(service: &Service, caller: &Caller, id: &luminaguard_core::SandboxId) {
    let opts = ExecOptions {
        argv: vec!["echo".into(), "hi".into()],
        ..ExecOptions::default()
    };
    let mut exec = service.exec(caller, id, opts).await.unwrap();
    while let Some(o) = exec.next().await.unwrap() {
        if let ExecOutput::Exit(r) = o {
            assert_eq!(r.code, Some(0));
            return;
        }
    }
    panic!("no exit");
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("the mcp bench needs root (process sandboxes)");
        std::process::exit(1);
    }
    let quick = std::env::args().any(|a| a == "--quick");
    let (rounds, colds) = if quick { (30, 3) } else { (300, 10) };
    let dir = tempfile::tempdir().unwrap();

    // First call of a session: its sandbox is made (cold, no pool).
    let mut first = Vec::new();
    for i in 0..colds {
        let rt = dir.path().join(format!("cold-{i}"));
        let mut s = Server::start(&rt);
        let t = Instant::now();
        s.echo();
        first.push(t.elapsed());
        s.stop();
    }

    // Warm: the same session, call after call.
    let rt = dir.path().join("warm");
    let mut s = Server::start(&rt);
    s.echo();
    let mut mcp = Vec::new();
    for _ in 0..rounds {
        let t = Instant::now();
        s.echo();
        mcp.push(t.elapsed());
    }
    s.stop();

    // The service as a library, in a sandbox of its own.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let lib = rt.block_on(async {
        let toml = format!(
            "runtime_dir = {:?}\npolicy = \"permissive\"\naudit_dir = {:?}\n[defaults]\nbackend = \"process\"\n",
            dir.path().join("lib"),
            dir.path().join("lib-audit")
        );
        let layer = ConfigLayer::from_toml(&toml, std::path::Path::new("bench.toml")).unwrap();
        let config = Config::resolve(0, None, [layer]).unwrap();
        // Sandboxes start `luminaguard sandbox-init`: this program is not it.
        let host = luminaguard_service::HostSettings {
            exe: LG.into(),
            ..luminaguard_service::HostSettings::from_config(&config).unwrap()
        };
        let service = Service::with_host(config, host).unwrap();
        let caller = Caller::current();
        let id = service
            .create(&caller, CreateOptions::default())
            .await
            .unwrap()
            .commit()
            .await
            .unwrap();
        service_echo(&service, &caller, &id).await;
        let mut v = Vec::new();
        for _ in 0..rounds {
            let t = Instant::now();
            service_echo(&service, &caller, &id).await;
            v.push(t.elapsed());
        }
        service.destroy(&caller, &id).await.unwrap();
        service.close_audit().await;
        v
    });

    // A bare fork+exec of the same command.
    let mut bare = Vec::new();
    for _ in 0..rounds {
        let t = Instant::now();
        let out = Command::new("echo").arg("hi").output().unwrap();
        bare.push(t.elapsed());
        assert_eq!(out.stdout, b"hi\n");
    }

    // Through a daemon with a warm pool: the first call of a session served from the pool,
    // beside the first call through the same daemon without one (its sandbox made then).
    let rt_daemon = dir.path().join("daemon");
    let daemon = Daemon::start(
        std::path::Path::new(LG),
        &rt_daemon,
        &format!(
            "log = \"error\"\npolicy = \"permissive\"\naudit_dir = {:?}\n\
             [defaults]\nbackend = \"process\"\n[pools.fast]\nsize = 2\n",
            dir.path().join("daemon-audit")
        ),
    );
    let (mut pooled, mut daemon_cold) = (Vec::new(), Vec::new());
    for _ in 0..colds {
        // Not timed: the pool refills between sessions, as it does between a host's sessions.
        pool_full(&rt_daemon, 2);
        let mut s = Server::start_with(&rt_daemon, &["mcp", "serve", "--pool", "fast"]);
        let t = Instant::now();
        s.echo();
        pooled.push(t.elapsed());
        s.stop();
        pool_full(&rt_daemon, 2);
        let mut s = Server::start_with(&rt_daemon, &["mcp", "serve"]);
        let t = Instant::now();
        s.echo();
        daemon_cold.push(t.elapsed());
        s.stop();
    }
    drop(daemon);

    let (m, l, b, f) = (median(mcp), median(lib), median(bare), median(first));
    let (pf, dc) = (median(pooled), median(daemon_cold));
    println!("mcp bench: {rounds} rounds (medians), process backend, in-process service");
    println!("| | time | beside it | ratio |");
    println!("|---|---|---|---|");
    println!(
        "| run_command echo hi through MCP stdio (warm) | {:.2} ms | service exec {:.2} ms | {:.2} (+{:.2} ms) |",
        ms(m),
        ms(l),
        ms(m) / ms(l),
        ms(m) - ms(l)
    );
    println!(
        "| service exec of echo hi (library) | {:.2} ms | bare fork+exec {:.2} ms | {:.2} |",
        ms(l),
        ms(b),
        ms(l) / ms(b)
    );
    println!(
        "| first call of a session (sandbox made, cold) | {:.2} ms | warm call {:.2} ms | {:.2} |",
        ms(f),
        ms(m),
        ms(f) / ms(m)
    );
    println!(
        "| first call of a session from a daemon's warm pool (mcp serve --pool) | {:.2} ms | first call through the daemon, no pool {:.2} ms | {:.2} |",
        ms(pf),
        ms(dc),
        ms(pf) / ms(dc)
    );
    println!(
        "| first call of a session from a daemon's warm pool | {:.2} ms | in-process warm call {:.2} ms | {:.2} |",
        ms(pf),
        ms(m),
        ms(pf) / ms(m)
    );
}

/// Waits until the daemon on `rt` has `size` sandboxes waiting in its pools.
fn pool_full(rt: &std::path::Path, size: usize) {
    let deadline = Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let out = Command::new(LG)
            .arg("--runtime-dir")
            .arg(rt)
            .args(["sandbox", "ls", "--json"])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "sandbox ls failed");
        let list: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
        let waiting = list.iter().filter(|s| !s["pool"].is_null()).count();
        if waiting >= size {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the pool does not refill: {list:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
