//! Process sandbox start-up and exec cost, side by side with the anchors in one run.
//!
//! `cargo bench -p luminaguard --bench process_sandbox [-- --quick]` (root; needs `bwrap`).
//!
//! - cold: `luminaguard run -- /bin/true` against
//!   `bwrap --unshare-all --die-with-parent --ro-bind / / --dev /dev --proc /proc /bin/true`;
//! - warm: an exec of `/bin/true` in a running sandbox (through the agent) against a plain host
//!   fork+exec of `/bin/true`.
//!
//! Medians; ratios are ours / anchor (lower is better).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)] // bench code

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use luminaguard_backend::{Backend, CreateRequest};
use luminaguard_core::{BackendChoice, RuntimeDir, SandboxId, SandboxSpec};
use luminaguard_process_sandbox::backend::ProcessBackend;
use luminaguard_protocol::ClientOptions;
use luminaguard_protocol::message::ExecRequest;

use luminaguard_testkit::median;

const LG: &str = env!("CARGO_BIN_EXE_luminaguard");

fn time_command(cmd: &mut Command) -> Duration {
    let start = Instant::now();
    let status = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    let d = start.elapsed();
    assert!(status.success(), "{cmd:?} failed: {status:?}");
    d
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    if !luminaguard_testkit::privileged("the process sandbox") {
        return;
    }
    let n = if quick { 10 } else { 100 };
    let rt_dir = tempfile::tempdir().unwrap();

    let (mut ours, mut bwrap) = (Vec::new(), Vec::new());
    for _ in 0..n {
        ours.push(time_command(
            Command::new(LG)
                .arg("--runtime-dir")
                .arg(rt_dir.path())
                .args(["run", "--", "/bin/true"]),
        ));
        bwrap.push(time_command(Command::new("bwrap").args([
            "--unshare-all",
            "--die-with-parent",
            "--ro-bind",
            "/",
            "/",
            "--dev",
            "/dev",
            "--proc",
            "/proc",
            "/bin/true",
        ])));
    }
    let (cold, cold_anchor) = (median(ours), median(bwrap));

    // Warm: one sandbox, many execs, against host fork+exec.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (warm, warm_anchor) = rt.block_on(async {
        // The sandbox `luminaguard sandbox create` would make (the backend, as root).
        let req = CreateRequest {
            id: SandboxId::generate(),
            spec: SandboxSpec {
                backend: BackendChoice::Process,
                ..Default::default()
            },
            workspace: None,
            persistent: false,
            without_cgroup: false,
            user: None,
            runtime: RuntimeDir::new(rt_dir.path()).unwrap(),
        };
        let sandbox = ProcessBackend::new(LG.into(), ClientOptions::default())
            .create(req)
            .await
            .unwrap();
        let c = sandbox.client();
        let req = ExecRequest {
            argv: vec!["/bin/true".into()],
            timeout_ms: Some(10_000),
            ..Default::default()
        };
        let (mut ours, mut host) = (Vec::new(), Vec::new());
        for _ in 0..n * 5 {
            let start = Instant::now();
            let out = c.exec_output(req.clone(), None).await.unwrap();
            ours.push(start.elapsed());
            assert_eq!(out.status.code, Some(0));
            host.push(
                tokio::task::spawn_blocking(|| time_command(&mut Command::new("/bin/true")))
                    .await
                    .unwrap(),
            );
        }
        sandbox.destroy().await.unwrap();
        (median(ours), median(host))
    });
    rt.shutdown_background();

    println!(
        "process sandbox ({n} cold runs, {} warm execs, median){}",
        n * 5,
        if quick { " [quick]" } else { "" }
    );
    println!(
        "{:<44} {:>12} {:>12} {:>8}",
        "measure", "luminaguard", "anchor", "ratio"
    );
    let row = |name: &str, a: Duration, b: Duration| {
        println!(
            "{name:<44} {:>10.2}ms {:>10.2}ms {:>7.2}x",
            a.as_secs_f64() * 1e3,
            b.as_secs_f64() * 1e3,
            a.as_secs_f64() / b.as_secs_f64()
        );
    };
    row(
        "cold run -- /bin/true  vs  bwrap --unshare-all",
        cold,
        cold_anchor,
    );
    row("warm exec /bin/true  vs  host fork+exec", warm, warm_anchor);
}
