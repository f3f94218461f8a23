//! The agent loop's own cost per tool call, side by side with its anchor in one run: a task
//! of N steps against a scripted provider in this process (OpenAI's streamed wire format, each
//! answer one `shell` call of `true`), run through the real loop — client, assembler,
//! transcript, the step's audit record, the tool through the front into a process sandbox, the
//! next request — against the same command exec'd directly through the front in the same
//! sandbox setup (the anchor: what the sandbox itself costs).
//!
//! Per step the provider sees the gap between finishing one answer and receiving the next
//! request; the gap minus the anchor's exec is the loop's overhead (goal: ≤ 2 ms).
//!
//! `cargo bench -p luminaguard-agent-loop --bench loop_overhead [-- --quick]` (root: process
//! sandboxes). Medians; figures are printed, never asserted.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)] // bench code

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use luminaguard_agent_loop::launch::{Launch, prepare};
use luminaguard_agent_loop::task::{Limits, Observer};
use luminaguard_agent_loop::tools::ToolLimits;
use luminaguard_agent_loop::{Entry, ModelConfig, Retry, Store};
use luminaguard_core::config::{Config, ConfigLayer};
use luminaguard_front::Front;
use luminaguard_llm::Provider;
use luminaguard_service::{Caller, CreateOptions, ExecOptions, Service};
use luminaguard_testkit::{median, ms};

/// When each request arrived and each answer was handed over.
#[derive(Default)]
struct Clock {
    arrived: Vec<Instant>,
    answered: Vec<Instant>,
}

/// One streamed answer: a `shell` call of `true` (the last, `steps`-th, a plain answer).
fn answer(n: usize, last: bool) -> Bytes {
    let chunk = |delta: serde_json::Value, finish: Option<&str>| {
        format!(
            "data: {}\n\n",
            serde_json::json!({"id": "b", "object": "chat.completion.chunk", "created": 0,
                "model": "bench", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        )
    };
    let mut body = chunk(
        serde_json::json!({"role": "assistant", "content": ""}),
        None,
    );
    if last {
        body += &chunk(serde_json::json!({"content": "done"}), None);
        body += &chunk(serde_json::json!({}), Some("stop"));
    } else {
        body += &chunk(
            serde_json::json!({"tool_calls": [{"index": 0, "id": format!("call_{n}"), "type": "function",
                "function": {"name": "shell", "arguments": ""}}]}),
            None,
        );
        body += &chunk(
            serde_json::json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"command\": \"true\"}"}}]}),
            None,
        );
        body += &chunk(serde_json::json!({}), Some("tool_calls"));
    }
    body += "data: {\"id\":\"b\",\"object\":\"chat.completion.chunk\",\"created\":0,\"model\":\"bench\",\"choices\":[],\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":5,\"total_tokens\":15}}\n\ndata: [DONE]\n\n";
    Bytes::from(body)
}

/// The scripted provider: answers `steps` requests, noting the times.
async fn provider(steps: usize, clock: Arc<Mutex<Clock>>) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let clock = Arc::clone(&clock);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let clock = Arc::clone(&clock);
                        async move {
                            let arrived = Instant::now();
                            let _ = req.into_body().collect().await;
                            let n = {
                                let mut c = clock.lock().unwrap();
                                c.arrived.push(arrived);
                                c.arrived.len()
                            };
                            let body = answer(n, n >= steps);
                            let resp = hyper::Response::builder()
                                .header("content-type", "text/event-stream")
                                .body(Full::new(body))
                                .unwrap();
                            clock.lock().unwrap().answered.push(Instant::now());
                            Ok::<_, Infallible>(resp)
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    port
}

struct Quiet;

impl Observer for Quiet {
    fn text(&mut self, _: &str) {}
    fn entry(&mut self, _: &Entry) {}
}

fn main() -> std::process::ExitCode {
    // The service starts its sandboxes' first process as this very binary (as it does
    // `luminaguard`): serve that role as the CLI does.
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("sandbox-init") {
        return luminaguard_agent::sandbox_init_main(&args[2]);
    }
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: the agent loop bench needs root (process sandboxes)");
        return std::process::ExitCode::SUCCESS;
    }
    let quick = std::env::args().any(|a| a == "--quick");
    let steps = if quick { 20 } else { 200 };
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        "version = 1\ndefault = \"ask\"\n\n[[rule]]\nid = \"all\"\ndecision = \"allow\"\nreason = \"the bench's commands\"\nexec = [\"re:.*\", \"**\"]\nexamples = [\"true\"]\n",
    )
    .unwrap();
    let toml = format!(
        "runtime_dir = {:?}\naudit_dir = {:?}\npolicy = {:?}\n[defaults]\nbackend = \"process\"\n",
        dir.path().join("rt"),
        dir.path().join("audit"),
        policy
    );
    let layer = ConfigLayer::from_toml(&toml, std::path::Path::new("bench.toml")).unwrap();
    let config = Config::resolve(0, None, [layer]).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let service = Service::new(config.clone()).unwrap();
        service.prepare_runtime().await.unwrap();
        service.open_audit().await.unwrap();
        let front = Front::Local(Box::new(service), Caller::current());

        // The anchor: the same command through the front, in a sandbox held the same way.
        let held = front.hold(CreateOptions::default()).await.unwrap();
        let mut direct = Vec::new();
        for _ in 0..steps {
            let started = Instant::now();
            let opts = ExecOptions {
                argv: vec!["sh".into(), "-c".into(), "true".into()],
                cwd: Some("/workspace".into()),
                ..ExecOptions::default()
            };
            let mut exec = front.exec(held.id(), opts).await.unwrap();
            while exec.next().await.unwrap().is_some() {}
            direct.push(started.elapsed());
        }
        front.release(held).await.unwrap();

        let clock = Arc::new(Mutex::new(Clock::default()));
        let port = provider(steps, Arc::clone(&clock)).await;
        let store = Store::new(dir.path().join("tasks"));
        let launch = Launch {
            model: ModelConfig {
                provider: Provider::OpenAi,
                model: "bench".into(),
                base_url: format!("http://127.0.0.1:{port}/v1"),
                api_key: None,
                max_tokens: 256,
            },
            retry: Retry::default(),
            limits: Limits {
                max_steps: u32::try_from(steps).unwrap() + 1,
                ..Limits::default()
            },
            tool_limits: ToolLimits::default(),
            sandbox: CreateOptions::default(),
            title: "bench".into(),
            uid: None,
            mcp: None,
        };
        let mut task = prepare(&front, &store, launch).await.unwrap();
        let summary = task
            .run(&mut Quiet, "bench", std::future::pending())
            .await
            .unwrap();
        task.release().await;
        assert_eq!(summary.steps as usize, steps, "{summary:?}");
        let c = clock.lock().unwrap();
        let gaps: Vec<Duration> = c
            .answered
            .iter()
            .zip(c.arrived.iter().skip(1))
            .map(|(a, b)| b.duration_since(*a))
            .collect();
        let gap = median(gaps);
        let anchor = median(direct);
        println!("agent loop, {steps} steps of `shell true` (medians):");
        println!(
            "  answer handed over → next request arrived: {:.2} ms",
            ms(gap)
        );
        println!(
            "  the same exec directly through the front (anchor): {:.2} ms",
            ms(anchor)
        );
        println!(
            "  the loop's own overhead per tool call: {:.2} ms (goal ≤ 2 ms); ratio {:.2}",
            ms(gap.saturating_sub(anchor)),
            gap.as_secs_f64() / anchor.as_secs_f64()
        );
    });
    std::process::ExitCode::SUCCESS
}
