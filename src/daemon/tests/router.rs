//! The API's request parsing, fuzzed: arbitrary methods, paths, query strings and bodies (raw
//! bytes and near-valid JSON) through the real router and service. Whatever arrives, the
//! answer is a well-formed JSON error with a stable code — never a 500, never a panic — and
//! the daemon keeps serving. The service's default backend is Firecracker, which this host
//! cannot run, so no request the fuzzer makes valid starts a sandbox.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::sync::OnceLock;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use luminaguard_core::config::{Config, ConfigLayer};
use luminaguard_daemon::{AppState, api};
use luminaguard_service::{Caller, Service};
use proptest::prelude::*;
use tower::ServiceExt;

struct Fixture {
    _dir: tempfile::TempDir,
    rt: tokio::runtime::Runtime,
    router: axum::Router,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let toml = format!(
            "runtime_dir = {:?}\n[defaults]\nbackend = \"firecracker\"\n[daemon]\nmax_body = \"16K\"\n",
            dir.path().join("rt")
        );
        let layer = ConfigLayer::from_toml(&toml, std::path::Path::new("fuzz.toml")).unwrap();
        let config = Config::resolve(0, None, [layer]).unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let router = rt.block_on(async {
            let service = Service::new(config).unwrap();
            service.prepare_runtime().await.unwrap();
            api::router(AppState::new(service))
        });
        Fixture {
            _dir: dir,
            rt,
            router,
        }
    })
}

/// Sends one request as a non-root caller; returns status and body.
fn send(method: Method, uri: &str, body: Vec<u8>) -> Option<(StatusCode, Vec<u8>)> {
    let f = fixture();
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .body(Body::from(body))
        .ok()?;
    let mut req = req;
    req.extensions_mut().insert(Caller {
        uid: 4242,
        gid: 4242,
        pid: None,
        session: None,
        front: None,
    });
    f.rt.block_on(async {
        let resp = f.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        Some((status, bytes.to_vec()))
    })
}

fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("v1".to_owned()),
        Just("sandboxes".to_owned()),
        Just("exec".to_owned()),
        Just("files".to_owned()),
        Just("execs".to_owned()),
        Just("stdin".to_owned()),
        Just("run".to_owned()),
        Just("approvals".to_owned()),
        Just("review".to_owned()),
        Just("ap-0123456789abcdef".to_owned()),
        Just("..".to_owned()),
        Just("%2e%2e%2f".to_owned()),
        Just("%00".to_owned()),
        Just("x".repeat(300)),
        "[a-zA-Z0-9_-]{0,12}",
        "[^/?#]{0,8}".prop_map(|s| s.bytes().map(|b| format!("%{b:02X}")).collect()),
    ]
}

fn uri() -> impl Strategy<Value = String> {
    (
        proptest::collection::vec(segment(), 0..6),
        proptest::option::of("[a-z=&%0-9./]{0,24}"),
    )
        .prop_map(|(segs, q)| {
            let mut u = format!("/{}", segs.join("/"));
            if let Some(q) = q {
                u.push('?');
                u.push_str(&q);
            }
            u
        })
}

/// A JSON value of the kinds requests use, or wrong ones.
fn value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        "[ -~]{0,12}"
            .prop_filter("never a backend this host runs", |s| s != "process"
                && s != "auto")
            .prop_map(Value::String),
        Just(Value::String("512M".into())),
        Just(Value::String("10s".into())),
        Just(Value::String("approve".into())),
        Just(Value::String("deny".into())),
    ];
    leaf.prop_recursive(2, 8, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
        ]
    })
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    let keys = prop_oneof![
        Just("name"),
        Just("backend"),
        Just("memory"),
        Just("pids"),
        Just("timeout"),
        Just("lifetime"),
        Just("workspace"),
        Just("net"),
        Just("argv"),
        Just("stdin"),
        Just("stdin_stream"),
        Just("env"),
        Just("cwd"),
        Just("sandbox"),
        Just("review"),
        Just("decision"),
        Just("reason"),
        Just("digest"),
        Just("bogus"),
    ];
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..64),
        proptest::collection::btree_map(keys, value(), 0..5).prop_map(|m| {
            let m: serde_json::Map<_, _> = m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
            serde_json::to_vec(&m).unwrap()
        }),
        Just(vec![b' '; 20_000]),
    ]
}

fn method() -> impl Strategy<Value = Method> {
    prop_oneof![
        Just(Method::GET),
        Just(Method::POST),
        Just(Method::PUT),
        Just(Method::DELETE),
        Just(Method::PATCH),
        Just(Method::OPTIONS),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn any_request_gets_an_answer_with_a_stable_code_and_never_a_500(
        m in method(), u in uri(), b in body()
    ) {
        let Some((status, bytes)) = send(m.clone(), &u, b) else {
            // Not a request hyper would ever hand over (an invalid URI).
            return Ok(());
        };
        prop_assert!(status != StatusCode::INTERNAL_SERVER_ERROR,
            "{m} {u}: 500 {}", String::from_utf8_lossy(&bytes));
        if !status.is_success() {
            let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
                TestCaseError::fail(format!("{m} {u}: {status}: not JSON ({e}): {}",
                    String::from_utf8_lossy(&bytes)))
            })?;
            prop_assert!(v["error"].as_str().is_some_and(|c| !c.is_empty()), "{m} {u}: {v}");
            prop_assert!(v["detail"].as_str().is_some(), "{m} {u}: {v}");
        }
    }
}

#[test]
fn the_router_still_answers_after_the_fuzzing() {
    let (status, _) = send(Method::GET, "/v1/health", Vec::new()).unwrap();
    assert_eq!(status, StatusCode::OK);
    let (status, body) = send(Method::GET, "/v1/sandboxes", Vec::new()).unwrap();
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
}
