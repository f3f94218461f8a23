//! The message handler under arbitrary input: the real [`Server`] (rmcp's service loop, this
//! crate's handlers and stdio framing, an in-process [`Front`] on a temporary runtime
//! directory) over an in-memory pipe, fed arbitrary byte lines, arbitrary JSON values and
//! mutated requests — wrong types for `id`/`method`/`params`, huge numbers, deep nesting,
//! unknown methods, `tools/call` of unknown tools, `sandbox_list`, `sandbox_destroy` of random
//! ids, requests before `initialize`. After every case the server must still answer `ping`
//! and `tools/list`, every line it wrote must be a JSON-RPC message, every line that is not
//! JSON must have had its one `-32700` and every line over the cap its one "too large", and
//! nothing may have panicked.
//!
//! No sandbox is made: a call of a tool that would make one always carries an unknown
//! argument, which the tool refuses before anything else (every tool's arguments deny unknown
//! fields); the test checks the session holds none after each case.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use luminaguard_core::Config;
use luminaguard_core::config::ConfigLayer;
use luminaguard_front::Choice;
use proptest::prelude::*;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use super::*;
use crate::stdio::{Classified, Lines, classify};

/// The fuzzed server's line cap: small, so that lines over it are cheap to make.
const CAP: usize = 4096;

/// Tools that would make or use a sandbox if their arguments were good.
const TOUCHING: &[&str] = &[
    RUN_COMMAND,
    READ_FILE,
    WRITE_FILE,
    LIST_FILES,
    DELETE_FILE,
    SANDBOX_CREATE,
];

/// The argument no tool takes.
const UNKNOWN_ARG: &str = "zz_fuzz_unknown";

static PANICS: AtomicUsize = AtomicUsize::new(0);

struct Fixture {
    _dir: tempfile::TempDir,
    rt: tokio::runtime::Runtime,
    config: Config,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        // Counts panics anywhere: rmcp runs each request's handler in a task of its own, where
        // a panic would only show as a request never answered.
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, Ordering::SeqCst);
            previous(info);
        }));
        let dir = tempfile::tempdir().unwrap();
        let toml = format!(
            "runtime_dir = {:?}\naudit_dir = {:?}\npolicy = \"default\"\n[defaults]\nbackend = \"process\"\n",
            dir.path().join("rt"),
            dir.path().join("audit"),
        );
        let layer = ConfigLayer::from_toml(&toml, std::path::Path::new("fuzz.toml")).unwrap();
        let config = Config::resolve(0, None, [layer]).unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        Fixture {
            _dir: dir,
            rt,
            config,
        }
    })
}

/// Makes a request that would touch a sandbox harmless: an argument no tool takes.
fn defang(v: &mut Value) {
    let Some(o) = v.as_object_mut() else { return };
    if o.get("method") != Some(&json!("tools/call")) {
        return;
    }
    let Some(params) = o.get_mut("params").and_then(Value::as_object_mut) else {
        return;
    };
    let touching = params
        .get("name")
        .and_then(Value::as_str)
        .is_some_and(|n| TOUCHING.contains(&n));
    if !touching {
        return;
    }
    match params.get_mut("arguments") {
        Some(Value::Object(args)) => {
            args.insert(UNKNOWN_ARG.into(), json!(true));
        }
        Some(_) => {} // not an object: not a call rmcp takes
        None => {
            params.insert("arguments".into(), json!({ UNKNOWN_ARG: true }));
        }
    }
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("jsonrpc".to_owned()),
        Just("id".to_owned()),
        Just("method".to_owned()),
        Just("params".to_owned()),
        Just("result".to_owned()),
        Just("error".to_owned()),
        Just("name".to_owned()),
        Just("arguments".to_owned()),
        Just("_meta".to_owned()),
        "[a-zA-Z_]{0,8}",
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>().prop_filter_map("a finite number", |f| {
            serde_json::Number::from_f64(f).map(Value::Number)
        }),
        Just(json!("2.0")),
        "[ -~]{0,12}".prop_map(Value::String),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map(key(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn id() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        4 => any::<i64>().prop_map(|n| Some(json!(n))),
        4 => "[a-z0-9]{0,8}".prop_map(|s| Some(json!(s))),
        1 => Just(None),
        1 => Just(Some(Value::Null)),
        1 => Just(Some(json!(u64::MAX))),
        1 => Just(Some(json!(1.5))),
        1 => json_value().prop_map(Some),
    ]
}

fn method() -> impl Strategy<Value = Value> {
    prop_oneof![
        6 => prop::sample::select(vec![
            "ping", "tools/list", "tools/call", "tools/call", "tools/call", "resources/list",
            "resources/read", "prompts/get", "prompts/list", "logging/setLevel",
            "completion/complete", "server/discover", "initialize",
            "notifications/cancelled", "notifications/initialized", "notifications/progress",
            "notifications/roots/list_changed", "elicitation/create", "sampling/createMessage",
        ])
        .prop_map(|m| json!(m)),
        2 => "[a-z/_]{0,16}".prop_map(|m| json!(m)),
        1 => json_value(),
    ]
}

fn tool_name() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => Just(json!(SANDBOX_LIST)),
        3 => Just(json!(SANDBOX_DESTROY)),
        3 => prop::sample::select(TOUCHING.to_vec()).prop_map(|n| json!(n)),
        2 => "[a-z_]{0,12}".prop_map(|n| json!(n)),
        1 => json_value(),
    ]
}

fn arguments() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        1 => Just(None),
        2 => "[a-z0-9-]{0,20}".prop_map(|id| Some(json!({ "sandbox_id": id }))),
        1 => Just(Some(json!({}))),
        3 => json_value().prop_map(Some),
    ]
}

fn params() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        1 => Just(None),
        3 => (tool_name(), arguments()).prop_map(|(name, args)| {
            let mut p = json!({ "name": name });
            if let Some(a) = args {
                p["arguments"] = a;
            }
            Some(p)
        }),
        2 => json_value().prop_map(Some),
        // Deep nesting (serde_json stops at 128 levels).
        1 => (100usize..200).prop_map(|depth| {
            let mut v = json!(1);
            for _ in 0..depth {
                v = json!({ "a": v });
            }
            Some(v)
        }),
    ]
}

/// A request, built whole then maybe mutated.
fn request() -> impl Strategy<Value = Value> {
    (
        id(),
        method(),
        params(),
        prop_oneof![4 => Just(json!("2.0")), 1 => json_value()],
    )
        .prop_map(|(id, method, params, jsonrpc)| {
            let mut o = serde_json::Map::new();
            o.insert("jsonrpc".into(), jsonrpc);
            if let Some(id) = id {
                o.insert("id".into(), id);
            }
            o.insert("method".into(), method);
            if let Some(p) = params {
                o.insert("params".into(), p);
            }
            Value::Object(o)
        })
}

/// How a line's text is changed after it is made.
#[derive(Debug, Clone)]
enum Mutation {
    None,
    Truncate(usize),
    Flip(usize, u8),
    Insert(usize, u8),
    Crlf,
    Bom,
    Huge,
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        8 => Just(Mutation::None),
        1 => any::<usize>().prop_map(Mutation::Truncate),
        1 => (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Mutation::Flip(at, b)),
        1 => (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Mutation::Insert(at, b)),
        1 => Just(Mutation::Crlf),
        1 => Just(Mutation::Bom),
        1 => Just(Mutation::Huge),
    ]
}

fn mutate(mut line: Vec<u8>, m: &Mutation) -> Vec<u8> {
    let at = |i: usize, len: usize| i % (len + 1);
    match *m {
        Mutation::None => {}
        Mutation::Truncate(i) => line.truncate(at(i, line.len())),
        Mutation::Flip(i, b) if !line.is_empty() => {
            let i = i % line.len();
            line[i] = b;
        }
        Mutation::Flip(..) => {}
        Mutation::Insert(i, b) => line.insert(at(i, line.len()), b),
        Mutation::Crlf => line.push(b'\r'),
        Mutation::Bom => {
            line.splice(0..0, *b"\xEF\xBB\xBF");
        }
        // Over the cap: padding inside a string, so it would be JSON if it were taken.
        Mutation::Huge => {
            let pad = format!("{{\"pad\":\"{}\",\"x\":", "p".repeat(CAP));
            line.splice(0..0, pad.into_bytes());
            line.push(b'}');
        }
    }
    line
}

/// One line: a newline in it would make two.
fn one_line(mut line: Vec<u8>) -> Vec<u8> {
    for b in &mut line {
        if *b == b'\n' {
            *b = b' ';
        }
    }
    line
}

/// One line of input.
fn line() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        2 => proptest::collection::vec(any::<u8>(), 0..64),
        2 => json_value().prop_map(|mut v| {
            defang(&mut v);
            v.to_string().into_bytes()
        }),
        5 => (request(), mutation()).prop_map(|(mut v, m)| {
            defang(&mut v);
            mutate(v.to_string().into_bytes(), &m)
        }),
    ]
    .prop_map(one_line)
}

/// What the server owes a line in answer: (parse errors, too large).
fn owed(line: &[u8]) -> (usize, usize) {
    if line.len() > CAP {
        return (0, 1);
    }
    let l = line.strip_suffix(b"\r").unwrap_or(line);
    let l = l.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(l);
    if l.iter().all(u8::is_ascii_whitespace) {
        return (0, 0);
    }
    (usize::from(serde_json::from_slice::<Value>(l).is_err()), 0)
}

/// Whether a line may be sent before `initialize`: rmcp's handshake takes requests then (and
/// answers the ones it cannot serve yet), but a notification or response ends the session —
/// and an `initialize` would be the handshake itself.
fn before_initialize_ok(line: &[u8]) -> bool {
    if line.len() > CAP {
        return true;
    }
    match classify(line) {
        Classified::Message(m) => match *m {
            rmcp::model::JsonRpcMessage::Request(r) => {
                !matches!(r.request, rmcp::model::ClientRequest::InitializeRequest(_))
            }
            _ => false,
        },
        _ => true,
    }
}

/// Runs one session on `before` (sent before `initialize`) and `after` lines; checks it.
async fn session_case(before: Vec<Vec<u8>>, after: Vec<Vec<u8>>) -> Result<(), TestCaseError> {
    let f = fixture();
    let panics = PANICS.load(Ordering::SeqCst);
    let front = Front::open(
        f.config.clone(),
        &Choice {
            never: true,
            system_too: false,
        },
    )
    .await
    .unwrap();
    let hub = Hub::new(front, Settings::default());
    let (client, server_end) = tokio::io::duplex(64 << 10);
    let (sr, sw) = tokio::io::split(server_end);
    let server = hub.stdio_server();
    let serving = tokio::spawn(async move {
        let running = server
            .serve(Lines::new(sr, sw, CAP))
            .await
            .map_err(|e| e.to_string())?;
        running.waiting().await.map_err(|e| e.to_string())?;
        Ok::<(), String>(())
    });
    let (cr, mut cw) = tokio::io::split(client);
    // Everything the server writes, as it comes (so that it is never blocked on us).
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
    let reader = tokio::spawn(async move {
        let mut lines = BufReader::new(cr);
        loop {
            let mut l = Vec::new();
            if lines.read_until(b'\n', &mut l).await.unwrap_or(0) == 0 {
                return;
            }
            if tx.send(l).is_err() {
                return;
            }
        }
    });
    let mut replies: Vec<Value> = Vec::new();
    let mut next = async || -> Value {
        let l = rx.recv().await.expect("the server closed its end");
        let v: Value = serde_json::from_slice(&l)
            .unwrap_or_else(|e| panic!("the server wrote a line that is not JSON ({e}): {l:?}"));
        assert_eq!(v["jsonrpc"], "2.0", "not JSON-RPC: {v}");
        v
    };
    let mut owed_parse = 0;
    let mut owed_large = 0;
    let send_all = async |cw: &mut tokio::io::WriteHalf<tokio::io::DuplexStream>,
                          lines: &[Vec<u8>]| {
        for l in lines {
            cw.write_all(l).await.unwrap();
            cw.write_all(b"\n").await.unwrap();
        }
    };
    for l in before.iter().chain(&after) {
        let (p, t) = owed(l);
        owed_parse += p;
        owed_large += t;
    }
    send_all(&mut cw, &before).await;
    let init = json!({"jsonrpc": "2.0", "id": "probe-init", "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "fuzz", "version": "0"}}});
    send_all(&mut cw, &[init.to_string().into_bytes()]).await;
    loop {
        let v = next().await;
        if v["id"] == "probe-init" {
            prop_assert_eq!(&v["result"]["serverInfo"]["name"], "luminaguard", "{}", v);
            break;
        }
        replies.push(v);
    }
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    send_all(&mut cw, &[initialized.to_string().into_bytes()]).await;
    send_all(&mut cw, &after).await;
    let probes = [
        json!({"jsonrpc": "2.0", "id": "probe-ping", "method": "ping"}),
        json!({"jsonrpc": "2.0", "id": "probe-list", "method": "tools/list", "params": {}}),
    ];
    send_all(&mut cw, probes.map(|p| p.to_string().into_bytes()).as_ref()).await;
    let (mut ping, mut list) = (None, None);
    while ping.is_none() || list.is_none() {
        let v = next().await;
        match v["id"].as_str() {
            Some("probe-ping") => ping = Some(v),
            Some("probe-list") => list = Some(v),
            _ => replies.push(v),
        }
    }
    let (ping, list) = (ping.unwrap(), list.unwrap());
    prop_assert_eq!(&ping["result"], &json!({}), "ping: {}", ping);
    prop_assert_eq!(
        list["result"]["tools"].as_array().map(Vec::len),
        Some(tools::all(false).len()),
        "tools/list: {}",
        list
    );
    let code = |v: &Value| v["error"]["code"].as_i64();
    let parse_errors: Vec<&Value> = replies.iter().filter(|v| code(v) == Some(-32700)).collect();
    let too_large: Vec<&Value> = replies
        .iter()
        .filter(|v| {
            code(v) == Some(-32600)
                && v["error"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("too large"))
        })
        .collect();
    prop_assert_eq!(parse_errors.len(), owed_parse, "{:?}", replies);
    prop_assert_eq!(too_large.len(), owed_large, "{:?}", replies);
    for v in parse_errors.iter().chain(&too_large) {
        prop_assert_eq!(&v["id"], &Value::Null, "{}", v);
    }
    prop_assert_eq!(hub.sandbox_count().await, 0, "a fuzzed call made a sandbox");
    // The client goes: the session ends cleanly.
    cw.shutdown().await.unwrap();
    let ended = serving.await;
    prop_assert!(ended.is_ok(), "the session's task panicked: {:?}", ended);
    prop_assert!(
        matches!(ended, Ok(Ok(()))),
        "the session failed: {:?}",
        ended
    );
    let _ = reader.await;
    hub.stop().await;
    prop_assert_eq!(PANICS.load(Ordering::SeqCst), panics, "something panicked");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(256),
        ..ProptestConfig::default()
    })]

    /// Whatever a client sends, the server answers what JSON-RPC says it must, keeps
    /// serving, and does not panic.
    #[test]
    fn the_server_survives_any_input_and_keeps_serving(
        before in proptest::collection::vec(line(), 0..4),
        after in proptest::collection::vec(line(), 0..12),
    ) {
        // Before `initialize` only what the handshake takes; the rest is sent after.
        let (before, moved): (Vec<_>, Vec<_>) =
            before.into_iter().partition(|l| before_initialize_ok(l));
        let after: Vec<Vec<u8>> = moved.into_iter().chain(after).collect();
        let f = fixture();
        // A hang guard only (a case takes milliseconds): a wedged server fails the case with
        // its input, rather than hanging the test run.
        let done = f.rt.block_on(async {
            tokio::time::timeout(
                std::time::Duration::from_secs(120),
                session_case(before, after),
            )
            .await
        });
        match done {
            Ok(r) => r?,
            Err(_) => prop_assert!(false, "the server stopped answering"),
        }
    }
}
