//! The daemon's cost, side by side in one run (process backend):
//!
//! - create → first exec (`/bin/true`) → destroy: in-process (the service as a library), over
//!   the API (the Rust client on the socket), and from a warm pool over the API;
//! - one exec in a running sandbox: in-process against over the API (the API's overhead);
//! - the whole user-visible command, `luminaguard run --pool fast -- /bin/true` through the
//!   daemon, against `bwrap --unshare-all --die-with-parent --ro-bind / / --dev /dev --proc
//!   /proc /bin/true` and against a cold `luminaguard --no-daemon run -- /bin/true`;
//! - 50 concurrent clients, each exec'ing `/bin/true` in its own sandbox: execs/s, p50, p99.
//!
//! `cargo bench -p luminaguard --bench daemon [-- --quick]` (root; needs `bwrap`). Medians;
//! ratios are ours / anchor (lower is better). Figures are printed, never asserted.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)] // bench code

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use luminaguard_api::client::Client;
use luminaguard_api::types::{CreateSandbox, ExecBody, ExecEvent};
use luminaguard_core::Config;
use luminaguard_core::config::ConfigLayer;
use luminaguard_service::{Caller, CreateOptions, ExecOptions, ExecOutput, Service};
use luminaguard_testkit::daemon::Daemon;
use luminaguard_testkit::{median, ms};

const LG: &str = env!("CARGO_BIN_EXE_luminaguard");

const CONFIG: &str = "log = \"error\"\n[defaults]\nbackend = \"process\"\n\
                      [pools.fast]\nsize = 4\n";

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

fn p(v: &mut [Duration], q: f64) -> Duration {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * q).round() as usize;
    v[i]
}

/// Runs `/bin/true` over the API in sandbox `id`; panics unless it exits 0.
async fn api_true(client: &Client, id: &str) {
    let body = ExecBody {
        argv: vec!["/bin/true".into()],
        ..ExecBody::default()
    };
    let mut events = client.exec(id, &body).await.unwrap();
    while let Some(e) = events.next().await.unwrap() {
        if let ExecEvent::Exit(x) = e {
            assert_eq!(x.code, Some(0));
            return;
        }
    }
    panic!("no exit");
}

async fn local_true(service: &Service, caller: &Caller, id: &luminaguard_core::SandboxId) {
    let opts = ExecOptions {
        argv: vec!["/bin/true".into()],
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

async fn pool_full(client: &Client) {
    // Not timed: the pool refills between rounds, as it does between a user's commands.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let n = client
            .list()
            .await
            .unwrap()
            .iter()
            .filter(|s| s.pool.is_some())
            .count();
        if n >= 4 {
            return;
        }
        assert!(Instant::now() < deadline, "the pool does not refill");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn long_lived() -> CreateOptions {
    CreateOptions {
        persistent: true,
        ..CreateOptions::default()
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    if !luminaguard_testkit::privileged("the daemon benchmark") {
        return;
    }
    let n = if quick { 10 } else { 100 };
    let dir = tempfile::tempdir().unwrap();
    let rt_dir = dir.path().join("rt");
    let daemon = Daemon::start(Path::new(LG), &rt_dir, CONFIG);
    let client = Client::new(&daemon.socket);
    // The in-process service works in a runtime directory of its own.
    let local_rt = dir.path().join("local");
    let layer = ConfigLayer::from_toml(
        &format!("runtime_dir = {local_rt:?}\n{CONFIG}"),
        Path::new("bench.toml"),
    )
    .unwrap();
    // Sandboxes start `luminaguard sandbox-init`: this program is not it.
    let config = Config::resolve(0, None, [layer]).unwrap();
    let host = luminaguard_service::HostSettings {
        exe: LG.into(),
        ..luminaguard_service::HostSettings::from_config(&config).unwrap()
    };
    let service = Service::with_host(config, host).unwrap();
    let caller = Caller::current();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();

    let (mut inproc, mut api, mut pooled) = (Vec::new(), Vec::new(), Vec::new());
    let (mut exec_local, mut exec_api) = (Vec::new(), Vec::new());
    rt.block_on(async {
        for _ in 0..n {
            // Long-lived, as every sandbox made through the API is.
            let t = Instant::now();
            let id = service
                .create(&caller, long_lived())
                .await
                .unwrap()
                .commit()
                .await
                .unwrap();
            local_true(&service, &caller, &id).await;
            service.destroy(&caller, &id).await.unwrap();
            inproc.push(t.elapsed());

            let t = Instant::now();
            let v = client.create(&CreateSandbox::default()).await.unwrap();
            api_true(&client, &v.id).await;
            client.destroy(&v.id).await.unwrap();
            api.push(t.elapsed());

            pool_full(&client).await;
            let t = Instant::now();
            let v = client
                .create(&CreateSandbox {
                    pool: Some("fast".into()),
                    ..CreateSandbox::default()
                })
                .await
                .unwrap();
            api_true(&client, &v.id).await;
            pooled.push(t.elapsed());
            client.destroy(&v.id).await.unwrap();
        }
        // One exec in a running sandbox, each way.
        let id = service
            .create(&caller, long_lived())
            .await
            .unwrap()
            .commit()
            .await
            .unwrap();
        let v = client.create(&CreateSandbox::default()).await.unwrap();
        for _ in 0..n * 2 {
            let t = Instant::now();
            local_true(&service, &caller, &id).await;
            exec_local.push(t.elapsed());
            let t = Instant::now();
            api_true(&client, &v.id).await;
            exec_api.push(t.elapsed());
        }
        service.destroy(&caller, &id).await.unwrap();
        client.destroy(&v.id).await.unwrap();
    });

    // The whole command, as a user types it.
    let (mut run_pool, mut bwrap, mut cold) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..n {
        rt.block_on(pool_full(&client));
        run_pool.push(time_command(
            Command::new(LG).arg("--runtime-dir").arg(&rt_dir).args([
                "run",
                "--pool",
                "fast",
                "--",
                "/bin/true",
            ]),
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
        cold.push(time_command(
            Command::new(LG).arg("--runtime-dir").arg(&local_rt).args([
                "--no-daemon",
                "run",
                "--",
                "/bin/true",
            ]),
        ));
    }

    // 50 clients, each on its own sandbox, as fast as they can.
    let clients = 50;
    let window = if quick {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(5)
    };
    let (total, mut lat) = rt.block_on(async {
        let mut ids = Vec::new();
        for _ in 0..clients {
            ids.push(client.create(&CreateSandbox::default()).await.unwrap().id);
        }
        let start = Arc::new(tokio::sync::Barrier::new(clients));
        let mut tasks = Vec::new();
        for id in ids.clone() {
            let (client, start) = (client.clone(), Arc::clone(&start));
            tasks.push(tokio::spawn(async move {
                start.wait().await;
                let until = Instant::now() + window;
                let mut lat = Vec::new();
                while Instant::now() < until {
                    let t = Instant::now();
                    api_true(&client, &id).await;
                    lat.push(t.elapsed());
                }
                lat
            }));
        }
        let mut lat = Vec::new();
        for t in tasks {
            lat.extend(t.await.unwrap());
        }
        for id in ids {
            client.destroy(&id).await.unwrap();
        }
        (lat.len(), lat)
    });
    drop(daemon);

    println!("daemon benchmark, process backend, {n} rounds, medians (ratio = ours / anchor)");
    let row = |what: &str, ours: Duration, anchor: Option<(&str, Duration)>| match anchor {
        Some((name, a)) => println!(
            "  {what:<44} {:>8.2} ms   {name:<24} {:>8.2} ms   ratio {:.2}",
            ms(ours),
            ms(a),
            ms(ours) / ms(a)
        ),
        None => println!("  {what:<44} {:>8.2} ms", ms(ours)),
    };
    let (inproc, api, pooled) = (median(inproc), median(api), median(pooled));
    row("create+exec+destroy, in-process", inproc, None);
    row(
        "create+exec+destroy, over the API",
        api,
        Some(("in-process", inproc)),
    );
    row(
        "pool acquire + first exec, over the API",
        pooled,
        Some(("in-process create+exec", inproc)),
    );
    let (el, ea) = (median(exec_local), median(exec_api));
    row("exec /bin/true, over the API", ea, Some(("in-process", el)));
    println!("  API overhead per exec: {:.3} ms", ms(ea) - ms(el));
    let (rp, bw, co) = (median(run_pool), median(bwrap), median(cold));
    row(
        "`luminaguard run --pool fast -- /bin/true`",
        rp,
        Some(("bwrap --unshare-all", bw)),
    );
    row(
        "`luminaguard --no-daemon run -- /bin/true`",
        co,
        Some(("bwrap --unshare-all", bw)),
    );
    let secs = window.as_secs_f64();
    println!(
        "  {clients} clients, own sandboxes, {secs:.0} s: {:.0} execs/s, p50 {:.2} ms, p99 {:.2} ms",
        total as f64 / secs,
        ms(p(&mut lat, 0.5)),
        ms(p(&mut lat, 0.99))
    );
}
