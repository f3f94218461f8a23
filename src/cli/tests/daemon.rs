//! `luminaguard daemon`, driven the way operators and programs drive it: curl on its socket,
//! raw HTTP from clients that misbehave, other users, crashes and restarts, systemd socket
//! activation. Every test uses the process backend (fast, and the same service path as the
//! microVMs). Root only; required in CI.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)] // test code

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use luminaguard_testkit::daemon::Daemon;
use luminaguard_testkit::{live_processes_matching, privileged, text};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_luminaguard");

/// The configuration every test starts from: the process backend, quiet logs.
const BASE: &str = "log = \"error\"\n[defaults]\nbackend = \"process\"\n";

struct Env {
    _dir: tempfile::TempDir,
    runtime: PathBuf,
}

fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    // Other users reach the socket through this directory (the runtime directory itself is
    // made `0711` by the daemon).
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let runtime = dir.path().join("rt");
    Env { _dir: dir, runtime }
}

fn start(e: &Env, extra: &str) -> Daemon {
    Daemon::start(Path::new(BIN), &e.runtime, &format!("{BASE}{extra}"))
}

use luminaguard_testkit::http::{Reply, curl, curl_as, reply};

fn create(sock: &Path, body: Value) -> String {
    let r = curl(sock, "POST", "/v1/sandboxes", Some(&body.to_string()));
    assert_eq!(r.status, 201, "{}", r.body);
    r.json()["id"].as_str().unwrap().to_owned()
}

fn exec(sock: &Path, id: &str, body: Value) -> Reply {
    curl(
        sock,
        "POST",
        &format!("/v1/sandboxes/{id}/exec"),
        Some(&body.to_string()),
    )
}

fn ids(sock: &Path) -> Vec<String> {
    let r = curl(sock, "GET", "/v1/sandboxes", None);
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect()
}

fn healthy(sock: &Path) {
    let r = curl(sock, "GET", "/v1/health", None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["status"], "ok");
}

/// Polls `cond` until it holds, failing after `limit` with `what`.
fn eventually(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A raw HTTP/1.1 request on a fresh connection, returned open after the request is written.
fn raw(sock: &Path, method: &str, path: &str, body: &str) -> UnixStream {
    let mut s = UnixStream::connect(sock).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nhost: lg\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    s
}

/// Reads from `s` until `needle` has been seen (or the connection ends).
fn read_until(s: &mut UnixStream, needle: &str) -> String {
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !text(&seen).contains(needle) {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
            Err(e) => panic!("reading for {needle:?}: {e}; so far: {}", text(&seen)),
        }
    }
    text(&seen)
}

#[test]
fn the_api_creates_runs_streams_files_and_destroys_over_its_socket() {
    if !privileged("the daemon test") {
        return;
    }
    let e = env();
    let d = start(&e, "");
    let sock = &d.socket;
    let mode = std::fs::metadata(sock).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o660, "the socket is group-shared only");
    healthy(sock);

    let id = create(sock, json!({"name": "api-1", "memory": "256M"}));
    assert_eq!(id, "api-1");
    let view = curl(sock, "GET", "/v1/sandboxes/api-1", None).json();
    assert_eq!(view["backend"], "process");
    assert_eq!(view["persistent"], true);
    assert_eq!(view["user"], 0);
    // The same name again is a conflict, and the first one is untouched.
    let dup = curl(sock, "POST", "/v1/sandboxes", Some(r#"{"name":"api-1"}"#));
    assert_eq!(
        (dup.status, dup.json()["error"].as_str()),
        (409, Some("conflict"))
    );

    // Output, exit codes, stdin, env, cwd.
    let (out, exit) = exec(
        sock,
        &id,
        json!({"argv": ["sh", "-c", "echo hello; exit 3"]}),
    )
    .exec();
    assert_eq!((out.as_str(), exit["code"].as_i64()), ("hello\n", Some(3)));
    let (out, _) = exec(
        sock,
        &id,
        json!({"argv": ["sh", "-c", "cat; echo $GREETING; pwd"], "stdin": "from stdin\n",
               "env": {"GREETING": "hi"}, "cwd": "/tmp"}),
    )
    .exec();
    assert_eq!(out, "from stdin\nhi\n/tmp\n");
    // State persists between execs of a long-lived sandbox.
    exec(
        sock,
        &id,
        json!({"argv": ["sh", "-c", "echo kept > /tmp/state"]}),
    )
    .exec();
    let (out, _) = exec(sock, &id, json!({"argv": ["cat", "/tmp/state"]})).exec();
    assert_eq!(out, "kept\n");
    // A missing program is 127 with the reason, not a bare failure.
    let (_, exit) = exec(sock, &id, json!({"argv": ["no-such-program"]})).exec();
    assert_eq!(exit["code"], 127);
    assert!(
        exit["error"].as_str().unwrap().contains("no-such-program"),
        "{exit}"
    );
    // Binary output arrives intact (base64 where it is not UTF-8).
    let r = exec(sock, &id, json!({"argv": ["printf", "\\377\\000ok"]}));
    let chunk = r
        .events()
        .into_iter()
        .find(|e| e["event"] == "stdout")
        .unwrap();
    assert!(chunk.get("data_base64").is_some(), "{chunk}");

    // Files both ways, binary-safe.
    let payload: Vec<u8> = (0..=255u8).cycle().take(300_000).collect();
    let put = Command::new("curl")
        .args([
            "-sS",
            "-w",
            "\n%{http_code}",
            "-X",
            "PUT",
            "--data-binary",
            "@-",
        ])
        .arg("--unix-socket")
        .arg(sock)
        .arg("http://lg/v1/sandboxes/api-1/files?path=/tmp/blob&mode=640")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut put = put;
    put.stdin.take().unwrap().write_all(&payload).unwrap();
    let put = reply(put.wait_with_output().unwrap());
    assert_eq!(put.status, 200, "{}", put.body);
    assert_eq!(put.json()["bytes"], 300_000);
    let got = Command::new("curl")
        .args(["-sS", "--fail"])
        .arg("--unix-socket")
        .arg(sock)
        .arg("http://lg/v1/sandboxes/api-1/files?path=/tmp/blob")
        .output()
        .unwrap();
    assert!(got.status.success(), "{}", text(&got.stderr));
    assert!(got.stdout == payload, "the file came back different");
    let (out, _) = exec(
        sock,
        &id,
        json!({"argv": ["stat", "-c", "%a %s", "/tmp/blob"]}),
    )
    .exec();
    assert_eq!(out, "640 300000\n");
    let missing = curl(
        sock,
        "GET",
        "/v1/sandboxes/api-1/files?path=/tmp/nope",
        None,
    );
    assert_eq!(missing.status, 404, "{}", missing.body);

    // A one-shot run: its sandbox exists for the command only.
    let r = curl(
        sock,
        "POST",
        "/v1/run",
        Some(&json!({"argv": ["sh", "-c", "echo once; hostname"]}).to_string()),
    );
    let (out, exit) = r.exec();
    assert!(out.starts_with("once\n"), "{out}");
    assert_eq!(exit["code"], 0);
    let run_id = r.events()[0]["sandbox"].as_str().unwrap().to_owned();
    assert!(
        !ids(sock).contains(&run_id),
        "the run's sandbox outlived it"
    );

    // Seccomp denials are on the sandbox's record.
    let audit = curl(sock, "GET", "/v1/sandboxes/api-1/audit", None);
    assert_eq!(audit.status, 200, "{}", audit.body);
    assert_eq!(audit.json()["enabled"], true);

    let gone = curl(sock, "DELETE", "/v1/sandboxes/api-1", None);
    assert_eq!(gone.status, 204, "{}", gone.body);
    let again = curl(sock, "GET", "/v1/sandboxes/api-1", None);
    assert_eq!(
        (again.status, again.json()["error"].as_str()),
        (404, Some("not-found"))
    );
    assert!(ids(sock).is_empty());
    assert!(
        !e.runtime.join("sandboxes/api-1").exists(),
        "the record outlived the sandbox"
    );
}

#[test]
fn malformed_hostile_and_oversized_requests_get_clear_errors_and_nothing_is_lost() {
    if !privileged("the daemon test") {
        return;
    }
    let e = env();
    let mut d = start(&e, "[daemon]\nmax_body = \"64K\"\n");
    let sock = d.socket.clone();
    let id = create(&sock, json!({"name": "survivor"}));
    let big = format!(
        r#"{{"argv": ["true"], "stdin": "{}"}}"#,
        "x".repeat(100_000)
    );
    let cases: &[(&str, &str, Option<&str>, u16, &str)] = &[
        (
            "POST",
            "/v1/sandboxes",
            Some("{not json"),
            400,
            "bad-request",
        ),
        (
            "POST",
            "/v1/sandboxes",
            Some(r#"{"nmae":"x"}"#),
            400,
            "bad-request",
        ),
        (
            "POST",
            "/v1/sandboxes",
            Some(r#"{"memory": true}"#),
            400,
            "bad-request",
        ),
        (
            "POST",
            "/v1/sandboxes",
            Some(r#"{"memory": "lots"}"#),
            400,
            "bad-request",
        ),
        (
            "POST",
            "/v1/sandboxes",
            Some(r#"{"name": "../../etc"}"#),
            400,
            "bad-request",
        ),
        (
            "POST",
            "/v1/sandboxes",
            Some(r#"{"backend": "docker"}"#),
            400,
            "bad-request",
        ),
        (
            "POST",
            "/v1/sandboxes",
            Some(r#"{"workspace": "relative/dir"}"#),
            422,
            "invalid-spec",
        ),
        (
            "POST",
            "/v1/sandboxes",
            Some(r#"{"workspace": "/no/such/dir"}"#),
            422,
            "invalid-spec",
        ),
        (
            "POST",
            "/v1/sandboxes",
            Some(r#"{"pool": "nope"}"#),
            404,
            "not-found",
        ),
        (
            "GET",
            "/v1/sandboxes/..%2F..%2Fetc",
            None,
            400,
            "bad-request",
        ),
        ("GET", "/v1/sandboxes/nobody-here", None, 404, "not-found"),
        (
            "DELETE",
            "/v1/sandboxes/nobody-here",
            None,
            404,
            "not-found",
        ),
        (
            "POST",
            "/v1/sandboxes/survivor/exec",
            Some(r#"{"argv": []}"#),
            400,
            "bad-request",
        ),
        (
            "POST",
            "/v1/sandboxes/survivor/exec",
            Some(r#"{"argv": "ls"}"#),
            400,
            "bad-request",
        ),
        (
            "POST",
            "/v1/sandboxes/survivor/exec",
            Some(&big),
            413,
            "too-large",
        ),
        (
            "GET",
            "/v1/sandboxes/survivor/files",
            None,
            400,
            "bad-request",
        ),
        (
            "GET",
            "/v1/sandboxes/survivor/files?path=relative",
            None,
            422,
            "invalid-spec",
        ),
        (
            "PUT",
            "/v1/sandboxes/survivor/execs/nope/stdin",
            Some(""),
            404,
            "not-found",
        ),
        ("GET", "/v1/nothing-here", None, 404, "not-found"),
        ("PATCH", "/v1/sandboxes", Some("{}"), 405, "bad-request"),
    ];
    for (method, path, body, status, code) in cases {
        let r = curl(&sock, method, path, *body);
        let what = format!("{method} {path} {:?}", body.map(|b| &b[..b.len().min(60)]));
        assert_eq!(r.status, *status, "{what}: {}", r.body);
        let err = r.json();
        assert_eq!(err["error"], *code, "{what}: {}", r.body);
        assert!(
            err["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{what}: no detail: {}",
            r.body
        );
    }
    // Bytes that are not HTTP at all, a request head that never ends, a connection cut in
    // the middle of a body: each costs only its own connection.
    let mut garbage = UnixStream::connect(&sock).unwrap();
    garbage
        .write_all(b"\x00\x01\x02 NOT HTTP \xff\r\n\r\n")
        .unwrap();
    let answer = read_until(&mut garbage, "\r\n\r\n");
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 400"),
        "{answer}"
    );
    let mut huge_head = UnixStream::connect(&sock).unwrap();
    let _ = huge_head
        .write_all(format!("GET /v1/health HTTP/1.1\r\nx: {}\r\n", "a".repeat(1 << 20)).as_bytes());
    drop(huge_head);
    let mut half = UnixStream::connect(&sock).unwrap();
    half.write_all(b"POST /v1/sandboxes HTTP/1.1\r\nhost: lg\r\ncontent-length: 500\r\n\r\n{\"na")
        .unwrap();
    drop(half);

    // The daemon is still there, and so is the sandbox.
    healthy(&sock);
    let (out, _) = exec(&sock, &id, json!({"argv": ["echo", "still here"]})).exec();
    assert_eq!(out, "still here\n");
    assert_eq!(ids(&sock), vec!["survivor".to_owned()]);
    let metrics = curl(&sock, "GET", "/metrics", None);
    assert!(
        metrics
            .body
            .contains("luminaguard_api_errors_total{code=\"bad-request\"}"),
        "{}",
        metrics.body
    );
    assert!(d.child.try_wait().unwrap().is_none(), "the daemon died");
    assert!(d.stop().success());
}

#[test]
fn a_client_that_goes_away_takes_its_command_and_its_run_sandbox_with_it() {
    if !privileged("the daemon test") {
        return;
    }
    let e = env();
    let d = start(&e, "");
    let sock = &d.socket;
    let id = create(sock, json!({"name": "dropped"}));

    let mut s = raw(
        sock,
        "POST",
        &format!("/v1/sandboxes/{id}/exec"),
        r#"{"argv": ["sh", "-c", "exec sleep 4101"]}"#,
    );
    read_until(&mut s, "\"started\"");
    assert_eq!(live_processes_matching(&["sleep", "4101"]).len(), 1);
    drop(s);
    eventually(
        Duration::from_secs(20),
        "the command outlived its client",
        || live_processes_matching(&["sleep", "4101"]).is_empty(),
    );
    // The sandbox itself stays: only the command belonged to the connection.
    let (out, _) = exec(sock, &id, json!({"argv": ["echo", "ok"]})).exec();
    assert_eq!(out, "ok\n");

    let mut s = raw(
        sock,
        "POST",
        "/v1/run",
        r#"{"argv": ["sh", "-c", "exec sleep 4102"]}"#,
    );
    let head = read_until(&mut s, "\"started\"");
    assert!(head.contains("\"sandbox\""), "{head}");
    drop(s);
    eventually(
        Duration::from_secs(20),
        "the run's command outlived its client",
        || live_processes_matching(&["sleep", "4102"]).is_empty(),
    );
    eventually(
        Duration::from_secs(20),
        "the run's sandbox outlived its client",
        || ids(sock) == vec![id.clone()],
    );
}

#[test]
fn a_stalled_client_is_cut_off_while_others_are_served() {
    if !privileged("the daemon test") {
        return;
    }
    let e = env();
    let d = start(&e, "[daemon]\nrequest_timeout = \"1s\"\n");
    let sock = &d.socket;
    let id = create(sock, json!({"name": "busy"}));
    // A request head that never ends.
    let mut slow_head = UnixStream::connect(sock).unwrap();
    slow_head
        .write_all(b"GET /v1/health HTTP/1.1\r\nhost: lg\r\n")
        .unwrap();
    // A file upload whose body stops arriving.
    let mut slow_body = UnixStream::connect(sock).unwrap();
    slow_body
        .write_all(
            b"PUT /v1/sandboxes/busy/files?path=/tmp/f HTTP/1.1\r\nhost: lg\r\ncontent-length: 1000\r\n\r\nfirst bytes",
        )
        .unwrap();
    // Others are served meanwhile.
    healthy(sock);
    let (out, _) = exec(sock, &id, json!({"argv": ["echo", "served"]})).exec();
    assert_eq!(out, "served\n");
    // Both stalled connections end, the body with an error that says why.
    let head = read_until(&mut slow_head, "\r\n\r\n");
    assert!(
        head.is_empty() || head.starts_with("HTTP/1.1 408"),
        "{head}"
    );
    let body = read_until(&mut slow_body, "}");
    assert!(
        body.contains("408") || body.contains("stalled") || body.is_empty(),
        "{body}"
    );
    // The half-written file was not left in place.
    let (out, _) = exec(
        sock,
        &id,
        json!({"argv": ["sh", "-c", "ls /tmp/f 2>&1 || true"]}),
    )
    .exec();
    assert!(out.contains("No such file"), "{out}");
    healthy(sock);
}

#[test]
fn users_see_and_touch_only_their_own_sandboxes_and_workspaces() {
    if !privileged("the daemon test") {
        return;
    }
    let e = env();
    // `nogroup` exists on every Debian; its members (by primary gid here) may connect.
    let d = start(&e, "[daemon]\ngroup = \"nogroup\"\n");
    let sock = &d.socket;
    let alice = Some((1000, 65534));
    let bob = Some((1001, 65534));
    let as_user = |who, method, path: &str, body: Option<String>| {
        reply(curl_as(
            sock,
            method,
            path,
            body.as_deref().map(str::as_bytes),
            who,
        ))
    };

    // Alice's workspace is hers; root's directory is not.
    let ws = e.runtime.with_extension("alice-ws");
    std::fs::create_dir(&ws).unwrap();
    std::os::unix::fs::chown(&ws, Some(1000), Some(1000)).unwrap();
    let foreign = e.runtime.with_extension("root-ws");
    std::fs::create_dir(&foreign).unwrap();
    let r = as_user(
        alice,
        "POST",
        "/v1/sandboxes",
        Some(json!({"name": "alices", "workspace": ws}).to_string()),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()["user"], 1000);
    let r = as_user(
        alice,
        "POST",
        "/v1/sandboxes",
        Some(json!({"name": "stolen", "workspace": foreign}).to_string()),
    );
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.body.contains("owned"), "{}", r.body);
    let r = as_user(
        alice,
        "POST",
        "/v1/sandboxes/alices/exec",
        Some(json!({"argv": ["sh", "-c", "echo mine > /workspace/f; id -u"]}).to_string()),
    );
    r.exec();
    assert_eq!(std::fs::read_to_string(ws.join("f")).unwrap(), "mine\n");

    // Bob sees none of it, and cannot tell it exists.
    let r = as_user(bob, "GET", "/v1/sandboxes", None);
    assert_eq!(r.json(), json!([]));
    for (method, path, body) in [
        ("GET", "/v1/sandboxes/alices", None),
        ("DELETE", "/v1/sandboxes/alices", None),
        (
            "POST",
            "/v1/sandboxes/alices/exec",
            Some(r#"{"argv":["true"]}"#.to_owned()),
        ),
        ("GET", "/v1/sandboxes/alices/files?path=/workspace/f", None),
        (
            "PUT",
            "/v1/sandboxes/alices/files?path=/workspace/f",
            Some("bob was here".to_owned()),
        ),
        ("GET", "/v1/sandboxes/alices/audit", None),
    ] {
        let r = as_user(bob, method, path, body);
        assert_eq!(r.status, 404, "bob: {method} {path}: {}", r.body);
    }
    // Bob's own sandbox is his; root sees both.
    let r = as_user(
        bob,
        "POST",
        "/v1/sandboxes",
        Some(json!({"name": "bobs"}).to_string()),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let r = as_user(alice, "GET", "/v1/sandboxes", None);
    let mine: Vec<_> = r
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].clone())
        .collect();
    assert_eq!(mine, vec![json!("alices")]);
    let mut all = ids(sock);
    all.sort();
    assert_eq!(all, vec!["alices".to_owned(), "bobs".to_owned()]);
    // Anyone may collect the dead; nobody's gc touches a live sandbox.
    let r = as_user(bob, "POST", "/v1/gc", Some("{}".to_owned()));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        ids(sock).len(),
        2,
        "bob's gc touched someone else's sandbox"
    );

    // A user outside the group cannot even connect.
    let out = curl_as(sock, "GET", "/v1/health", None, Some((1002, 1002)));
    assert!(
        !out.status.success(),
        "uid 1002 got in: {}",
        text(&out.stdout)
    );
    assert_eq!(std::fs::read_to_string(ws.join("f")).unwrap(), "mine\n");
}

#[test]
fn a_crashed_daemon_restarts_finds_long_lived_sandboxes_and_collects_one_shot_ones() {
    if !privileged("the daemon test") {
        return;
    }
    let e = env();
    let mut d = start(&e, "");
    let id = create(&d.socket, json!({"name": "lives-on"}));
    exec(
        &d.socket,
        &id,
        json!({"argv": ["sh", "-c", "echo before > /tmp/mark"]}),
    )
    .exec();
    let mut s = raw(
        &d.socket,
        "POST",
        "/v1/run",
        r#"{"argv": ["sh", "-c", "exec sleep 4103"]}"#,
    );
    let head = read_until(&mut s, "\"started\"");
    let run_id = head
        .split("\"sandbox\":\"")
        .nth(1)
        .and_then(|t| t.split('"').next())
        .unwrap()
        .to_owned();
    d.kill();
    drop(s);

    let d = d.restart();
    let sock = &d.socket;
    let (out, _) = exec(sock, &id, json!({"argv": ["cat", "/tmp/mark"]})).exec();
    assert_eq!(out, "before\n", "the long-lived sandbox lost its state");
    eventually(
        Duration::from_secs(30),
        "the dead daemon's run sandbox was not collected",
        || !ids(sock).contains(&run_id) && !e.runtime.join("sandboxes").join(&run_id).exists(),
    );
    eventually(
        Duration::from_secs(20),
        "the dead daemon's command lives on",
        || live_processes_matching(&["sleep", "4103"]).is_empty(),
    );
    assert_eq!(ids(sock), vec![id]);
}

#[test]
fn sigterm_lets_running_commands_finish_and_keeps_or_destroys_sandboxes_as_configured() {
    if !privileged("the daemon test") {
        return;
    }
    let e = env();
    let mut d = start(&e, "");
    let id = create(&d.socket, json!({"name": "kept"}));
    let mut s = raw(
        &d.socket,
        "POST",
        &format!("/v1/sandboxes/{id}/exec"),
        r#"{"argv": ["sh", "-c", "sleep 1; echo finished"]}"#,
    );
    read_until(&mut s, "\"started\"");
    let status = d.stop();
    assert!(status.success(), "{status:?}");
    let rest = read_until(&mut s, "\"exit\"");
    assert!(
        rest.contains("finished"),
        "the command was cut short: {rest}"
    );
    assert!(!d.socket.exists(), "the socket outlived the daemon");
    // Kept across a restart by default …
    let mut d = d.restart();
    assert_eq!(ids(&d.socket), vec![id.clone()]);
    d.stop();

    // … destroyed at stop with `destroy_on_exit`.
    let mut d = start(&e, "[daemon]\ndestroy_on_exit = true\n");
    assert_eq!(ids(&d.socket), vec![id.clone()]);
    assert!(d.stop().success());
    assert!(
        !e.runtime.join("sandboxes").join(&id).exists(),
        "destroy_on_exit left the sandbox"
    );
}

#[test]
fn systemd_socket_activation_serves_the_socket_it_is_given() {
    if !privileged("the daemon test") {
        return;
    }
    let e = env();
    std::fs::create_dir_all(&e.runtime).unwrap();
    let path = e.runtime.with_extension("activated.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    use std::os::fd::AsRawFd;
    let fd = listener.as_raw_fd();
    let config = e.runtime.with_extension("toml");
    std::fs::write(&config, BASE).unwrap();
    let mut d = Daemon::start_with(Path::new(BIN), &e.runtime, &config, |cmd| {
        // systemd's protocol: the socket is fd 3, LISTEN_FDS=1, LISTEN_PID the daemon's pid
        // (the shell's, which `exec`s the daemon).
        let program = cmd.get_program().to_owned();
        let args: Vec<_> = cmd.get_args().map(|a| a.to_owned()).collect();
        *cmd = {
            let mut sh = Command::new("sh");
            sh.arg("-c")
                .arg("LISTEN_PID=$$ LISTEN_FDS=1 exec \"$0\" \"$@\"")
                .arg(program)
                .args(args)
                .env("NOTIFY_SOCKET", e.runtime.with_extension("notify"))
                .stdin(Stdio::null());
            // SAFETY: dup2 and fcntl are async-signal-safe; it only touches the child's descriptor table.
            unsafe {
                sh.pre_exec(move || {
                    // (When `fd` is 3 already, dup2 is a no-op: clear close-on-exec anyway.)
                    if libc::dup2(fd, 3) < 0 || libc::fcntl(3, libc::F_SETFD, 0) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            sh
        };
    });
    drop(listener);
    // It serves the socket it was given, and does not make one of its own.
    healthy(&path);
    assert!(!e.runtime.join("api.sock").exists());
    let id = create(&path, json!({}));
    let (out, _) = exec(&path, &id, json!({"argv": ["echo", "activated"]})).exec();
    assert_eq!(out, "activated\n");
    assert!(d.stop().success());
    // The socket is systemd's: it stays for the next activation.
    assert!(path.exists());
}

#[test]
fn events_stream_what_happens_and_metrics_count_it() {
    if !privileged("the daemon test") {
        return;
    }
    let e = env();
    let d = start(&e, "");
    let sock = &d.socket;
    let mut sse = Command::new("curl")
        .args(["-sSN", "--max-time", "60"])
        .arg("--unix-socket")
        .arg(sock)
        .arg("http://lg/v1/events")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stream = sse.stdout.take().unwrap();
    // The subscription is live once the response has begun; a first sandbox proves it.
    let id = create(sock, json!({"name": "watched", "lifetime": "2s"}));
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !text(&seen).contains("event: expired") {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "the event stream ended: {}", text(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    let _ = sse.kill();
    let _ = sse.wait();
    let seen = text(&seen);
    assert!(seen.contains("event: created"), "{seen}");
    assert!(seen.contains(&format!("\"sandbox\":\"{id}\"")), "{seen}");
    // Expiry happened when the lifetime ended, not at some later gc.
    assert!(ids(sock).is_empty());
    let metrics = curl(sock, "GET", "/metrics", None).body;
    for line in [
        "luminaguard_sandbox_events_total{kind=\"created\"} 1",
        "luminaguard_sandbox_events_total{kind=\"expired\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} missing:\n{metrics}");
    }
    let doc = curl(sock, "GET", "/v1/openapi.json", None).json();
    assert!(doc["paths"]["/v1/sandboxes/{id}/exec"].is_object(), "{doc}");
}

/// `luminaguard ARGS` with `stdin`, on runtime directory `rt`.
fn cli(rt: &Path, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(BIN)
        .arg("--runtime-dir")
        .arg(rt)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn the_cli_says_and_exits_the_same_through_the_daemon_as_without_it() {
    if !privileged("the daemon test") {
        return;
    }
    let e = env();
    let d = start(&e, "");
    let local_rt = e.runtime.with_extension("local");
    let host = e.runtime.with_extension("files");
    std::fs::create_dir_all(host.join("out-daemon")).unwrap();
    std::fs::create_dir_all(host.join("out-local")).unwrap();
    let blob: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(host.join("blob"), &blob).unwrap();
    std::fs::set_permissions(host.join("blob"), std::fs::Permissions::from_mode(0o640)).unwrap();
    let blob_path = host.join("blob").to_str().unwrap().to_owned();

    // Each step: arguments (`{out}` is a host directory of that side's own), stdin.
    let steps: &[(&[&str], &[u8])] = &[
        (
            &["run", "--", "sh", "-c", "echo out; echo err >&2; exit 7"],
            b"",
        ),
        (&["run", "--", "cat"], b"piped\nthrough\n"),
        (&["run", "--", "no-such-program", "x"], b""),
        (&["run", "--timeout", "1s", "--", "sleep", "30"], b""),
        (&["run", "--json", "--", "true"], b""),
        (&["sandbox", "create", "--name", "same"], b""),
        (&["sandbox", "create", "--name", "same"], b""),
        (
            &[
                "sandbox",
                "exec",
                "same",
                "--",
                "sh",
                "-c",
                "cat > /tmp/f; wc -c < /tmp/f",
            ],
            b"some input",
        ),
        (
            &[
                "sandbox",
                "exec",
                "-e",
                "A=1",
                "--cwd",
                "/tmp",
                "same",
                "--",
                "sh",
                "-c",
                "echo $A; pwd; cat f",
            ],
            b"",
        ),
        (&["sandbox", "cp", &blob_path, "same:/tmp/"], b""),
        (
            &[
                "sandbox",
                "exec",
                "same",
                "--",
                "stat",
                "-c",
                "%s %a",
                "/tmp/blob",
            ],
            b"",
        ),
        (&["sandbox", "cp", "same:/tmp/blob", "{out}"], b""),
        (&["sandbox", "cp", "same:/tmp", "{out}"], b""),
        (&["sandbox", "cp", "same:/tmp/missing", "{out}"], b""),
        (&["sandbox", "exec", "nobody", "--", "true"], b""),
        (&["sandbox", "audit", "same"], b""),
        (&["sandbox", "rm", "same", "nobody"], b""),
        (&["sandbox", "ls"], b""),
    ];
    for (args, stdin) in steps {
        let side = |rt: &Path, flag: Option<&str>, out: &str| {
            let out_dir = host.join(out);
            let out_dir = out_dir.to_str().unwrap().to_owned();
            let mut full: Vec<&str> = flag.into_iter().collect();
            full.extend(
                args.iter()
                    .map(|a| if *a == "{out}" { out_dir.as_str() } else { a }),
            );
            let o = cli(rt, &full, stdin);
            let masked = |b: &[u8]| {
                text(b)
                    .replace(&out_dir, "{out}")
                    .lines()
                    .map(|l| {
                        // Durations differ run to run.
                        l.split("\"duration_ms\":").next().unwrap().to_owned()
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            (o.status.code(), masked(&o.stdout), masked(&o.stderr))
        };
        let via_daemon = side(&e.runtime, None, "out-daemon");
        let local = side(&local_rt, Some("--no-daemon"), "out-local");
        assert_eq!(
            via_daemon,
            local,
            "`luminaguard {}` differs",
            args.join(" ")
        );
    }
    // Same bytes and mode copied out both ways.
    for side in ["out-daemon", "out-local"] {
        let got = host.join(side).join("blob");
        assert!(
            std::fs::read(&got).unwrap() == blob,
            "{side}: the copy differs"
        );
        let mode = std::fs::metadata(&got).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640 & !0o022, "{side}");
    }
    // And the daemon really served the first side.
    let metrics = curl(&d.socket, "GET", "/metrics", None).body;
    let served: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("luminaguard_sandbox_events_total{kind=\"created\"} "))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        served >= 6,
        "the daemon created {served} sandboxes:\n{metrics}"
    );
}

/// The pool members a root caller sees (id → pool).
fn pooled(sock: &Path) -> Vec<String> {
    let r = curl(sock, "GET", "/v1/sandboxes", None);
    r.json()
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s.get("pool").is_some())
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect()
}

fn pool_ready(sock: &Path, pool: &str) -> u64 {
    let metrics = curl(sock, "GET", "/metrics", None).body;
    let line = format!("luminaguard_pool_ready{{pool=\"{pool}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(line.as_str()))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[test]
fn warm_pools_hand_out_ready_sandboxes_once_refill_and_refuse_other_settings() {
    if !privileged("the daemon test") {
        return;
    }
    let e = env();
    let mut d = start(
        &e,
        "[daemon]\ngroup = \"nogroup\"\n[pools.fast]\nsize = 2\nmemory = \"256M\"\nlifetime = \"5m\"\n",
    );
    let sock = d.socket.clone();
    eventually(Duration::from_secs(60), "the pool never filled", || {
        pooled(&sock).len() == 2 && pool_ready(&sock, "fast") == 2
    });
    let mut seen: std::collections::BTreeSet<String> = pooled(&sock).into_iter().collect();
    let ls = cli(&e.runtime, &["sandbox", "ls"], b"");
    assert_eq!(
        text(&ls.stdout).matches(" pooled ").count(),
        2,
        "{}",
        text(&ls.stdout)
    );

    // `run --pool`: served by a ready member, which is gone afterwards and replaced.
    let out = cli(
        &e.runtime,
        &[
            "run",
            "--pool",
            "fast",
            "--",
            "sh",
            "-c",
            "echo from the pool",
        ],
        b"",
    );
    assert_eq!(
        (out.status.code(), text(&out.stdout).as_str()),
        (Some(0), "from the pool\n"),
        "{}",
        text(&out.stderr)
    );
    eventually(Duration::from_secs(60), "the pool was not refilled", || {
        pooled(&sock).len() == 2
    });
    let now: std::collections::BTreeSet<String> = pooled(&sock).into_iter().collect();
    assert_eq!(
        now.difference(&seen).count(),
        1,
        "exactly one new member: {seen:?} → {now:?}"
    );
    let used: Vec<String> = seen.difference(&now).cloned().collect();
    assert_eq!(used.len(), 1);
    assert!(!ids(&sock).contains(&used[0]), "the used member lives on");
    seen.extend(now);

    // `sandbox create --pool`: a long-lived sandbox of the caller's, never one handed out before.
    let out = cli(&e.runtime, &["sandbox", "create", "--pool", "fast"], b"");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mine = text(&out.stdout).trim().to_owned();
    assert!(seen.contains(&mine), "not a pool member: {mine}");
    assert_ne!(mine, used[0], "a member was handed out twice");
    let view = curl(&sock, "GET", &format!("/v1/sandboxes/{mine}"), None).json();
    assert_eq!(
        (view["persistent"].as_bool(), view.get("pool")),
        (Some(true), None),
        "{view}"
    );
    let exp = view["expires_in_ms"].as_u64().unwrap();
    assert!(
        exp > 240_000 && exp <= 300_000,
        "the pool's lifetime starts at hand-out: {exp}"
    );
    exec(
        &sock,
        &mine,
        json!({"argv": ["sh", "-c", "echo kept > /tmp/k"]}),
    )
    .exec();
    let (out, _) = exec(&sock, &mine, json!({"argv": ["cat", "/tmp/k"]})).exec();
    assert_eq!(out, "kept\n");

    // Another user's request is served too, as theirs; the pool stays invisible to them.
    let r = reply(curl_as(
        &sock,
        "POST",
        "/v1/sandboxes",
        Some(br#"{"pool":"fast"}"#),
        Some((1000, 65534)),
    ));
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()["user"], 1000);
    let theirs = reply(curl_as(
        &sock,
        "GET",
        "/v1/sandboxes",
        None,
        Some((1000, 65534)),
    ))
    .json();
    assert_eq!(theirs.as_array().unwrap().len(), 1, "{theirs}");

    // Settings that are not the pool's are refused, not served from it.
    for (args, why) in [
        (vec!["--memory", "512M"], "memory 512M (the pool's: 256M)"),
        (vec!["--lifetime", "1h"], "lifetime 1h"),
        (vec!["--net", "1.1.1.1"], "net 1.1.1.1"),
        (vec!["--workspace", "/srv"], "workspace /srv"),
    ] {
        let mut full = vec!["run", "--pool", "fast"];
        full.extend(args.iter().copied());
        full.extend(["--", "true"]);
        let out = cli(&e.runtime, &full, b"");
        assert_eq!(out.status.code(), Some(1), "{full:?}");
        assert!(
            text(&out.stderr).contains(why),
            "{full:?}: {}",
            text(&out.stderr)
        );
    }
    // Repeating the pool's own settings is fine.
    let out = cli(
        &e.runtime,
        &["run", "--pool", "fast", "--memory", "256M", "--", "true"],
        b"",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = cli(&e.runtime, &["run", "--pool", "nope", "--", "true"], b"");
    assert!(
        text(&out.stderr).contains("no pool named nope"),
        "{}",
        text(&out.stderr)
    );
    let out = cli(
        &e.runtime,
        &["--no-daemon", "run", "--pool", "fast", "--", "true"],
        b"",
    );
    assert!(
        text(&out.stderr).contains("kept by the daemon"),
        "{}",
        text(&out.stderr)
    );

    // Stopping the daemon destroys what waits in the pool, not what was handed out.
    eventually(Duration::from_secs(60), "the pool was not refilled", || {
        pooled(&sock).len() == 2
    });
    let waiting = pooled(&sock);
    assert!(d.stop().success());
    for id in &waiting {
        assert!(
            !e.runtime.join("sandboxes").join(id).exists(),
            "pool member {id} outlived the daemon"
        );
    }
    let out = cli(
        &e.runtime,
        &["sandbox", "exec", &mine, "--", "cat", "/tmp/k"],
        b"",
    );
    assert_eq!(text(&out.stdout), "kept\n", "{}", text(&out.stderr));
}

#[test]
fn the_default_run_pool_serves_plain_runs_and_leaves_other_settings_alone() {
    if !privileged("the daemon test") {
        return;
    }
    let e = env();
    let d = start(
        &e,
        "[daemon]\ngroup = \"nogroup\"\nrun_pool = \"fast\"\n[pools.fast]\nsize = 1\nmemory = \"256M\"\n",
    );
    let sock = d.socket.clone();
    eventually(Duration::from_secs(60), "the pool never filled", || {
        pool_ready(&sock, "fast") == 1
    });
    let first = pooled(&sock);
    assert_eq!(first.len(), 1);

    // Settings the pool does not give: made as usual, not refused, and the pool is untouched.
    let out = cli(
        &e.runtime,
        &["run", "--memory", "512M", "--", "sh", "-c", "echo cold"],
        b"",
    );
    assert_eq!(
        (out.status.code(), text(&out.stdout).as_str()),
        (Some(0), "cold\n"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        pooled(&sock),
        first,
        "a run with other settings took the member"
    );

    // A plain run takes the ready member (it is gone, and a new one replaces it).
    let out = cli(&e.runtime, &["run", "--", "sh", "-c", "echo warm"], b"");
    assert_eq!(
        (out.status.code(), text(&out.stdout).as_str()),
        (Some(0), "warm\n"),
        "{}",
        text(&out.stderr)
    );
    assert!(!ids(&sock).contains(&first[0]), "the member was not used");
    eventually(Duration::from_secs(60), "the pool was not refilled", || {
        pool_ready(&sock, "fast") == 1
    });
    // Long-lived sandboxes never come from the run pool unasked.
    let second = pooled(&sock);
    let out = cli(&e.runtime, &["sandbox", "create"], b"");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let made = text(&out.stdout).trim().to_owned();
    assert!(
        !second.contains(&made),
        "sandbox create took the run pool's member"
    );
    assert_eq!(pooled(&sock), second);
}

/// The ready members by pool, oldest first within a pool as listed.
fn pools_of(sock: &Path) -> std::collections::BTreeMap<String, Vec<String>> {
    let mut by = std::collections::BTreeMap::<String, Vec<String>>::new();
    for s in curl(sock, "GET", "/v1/sandboxes", None)
        .json()
        .as_array()
        .unwrap()
    {
        if let Some(pool) = s.get("pool").and_then(Value::as_str) {
            by.entry(pool.to_owned())
                .or_default()
                .push(s["id"].as_str().unwrap().to_owned());
        }
    }
    by
}

#[test]
fn sighup_reloads_the_pools_a_shrunk_or_removed_pool_loses_members_a_bad_file_changes_nothing() {
    if !privileged("the daemon test") {
        return;
    }
    let e = env();
    let d = start(
        &e,
        "[daemon]\ngroup = \"nogroup\"\n[pools.fast]\nsize = 2\n[pools.slow]\nsize = 1\nmemory = \"256M\"\n",
    );
    let sock = d.socket.clone();
    eventually(Duration::from_secs(60), "the pools never filled", || {
        pool_ready(&sock, "fast") == 2 && pool_ready(&sock, "slow") == 1
    });
    let before = pools_of(&sock);
    let hup = |d: &Daemon| {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(d.child.id()).unwrap()),
            nix::sys::signal::Signal::SIGHUP,
        )
        .unwrap();
    };

    // A file that does not load: the daemon keeps serving with the pools it has.
    std::fs::write(&d.config, "[pools.fast]\nsize = \"many\"\n").unwrap();
    hup(&d);
    let out = cli(&e.runtime, &["run", "--pool", "fast", "--", "true"], b"");
    assert!(out.status.success(), "{}", text(&out.stderr));
    eventually(Duration::from_secs(60), "the pool was not refilled", || {
        pool_ready(&sock, "fast") == 2
    });
    let kept = pools_of(&sock);
    assert_eq!(kept["slow"], before["slow"]);

    // fast shrinks to 1, slow goes, other comes; run_pool now names other.
    std::fs::write(
        &d.config,
        format!(
            "{BASE}[daemon]\ngroup = \"nogroup\"\nrun_pool = \"other\"\n[pools.fast]\nsize = 1\n[pools.other]\nsize = 1\npids = 64\n"
        ),
    )
    .unwrap();
    hup(&d);
    eventually(
        Duration::from_secs(60),
        "the reload was not applied",
        || {
            let now = pools_of(&sock);
            now.get("fast").map(Vec::len) == Some(1)
                && now.get("other").map(Vec::len) == Some(1)
                && !now.contains_key("slow")
        },
    );
    let now = pools_of(&sock);
    assert!(
        kept["fast"].contains(&now["fast"][0]),
        "a kept member was remade"
    );
    let live = ids(&sock);
    assert!(
        !live.contains(&before["slow"][0]),
        "the removed pool's member lives on"
    );
    assert_eq!(pool_ready(&sock, "slow"), 0);
    // The new run_pool serves a plain run.
    let out = cli(&e.runtime, &["run", "--", "true"], b"");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        !ids(&sock).contains(&now["other"][0]),
        "run_pool was not reloaded"
    );
}

#[test]
fn pool_members_past_their_max_age_are_replaced() {
    if !privileged("the daemon test") {
        return;
    }
    let e = env();
    let d = start(&e, "[pools.short]\nsize = 1\nmax_age = \"2s\"\n");
    let sock = &d.socket;
    eventually(Duration::from_secs(60), "the pool never filled", || {
        pooled(sock).len() == 1
    });
    let first = pooled(sock)[0].clone();
    eventually(
        Duration::from_secs(60),
        "the member was not replaced",
        || {
            let now = pooled(sock);
            now.len() == 1 && now[0] != first
        },
    );
    assert!(
        !e.runtime.join("sandboxes").join(&first).exists(),
        "the old member was left"
    );
}

/// Open descriptors and threads of process `pid`.
fn footprint(pid: i32) -> (usize, usize) {
    let count = |d: &str| {
        std::fs::read_dir(format!("/proc/{pid}/{d}"))
            .unwrap()
            .count()
    };
    (count("fd"), count("task"))
}

#[test]
fn fifty_concurrent_clients_leave_nothing_behind() {
    if !privileged("the daemon test") {
        return;
    }
    let e = env();
    let d = start(&e, "");
    let client = luminaguard_api::client::Client::new(&d.socket);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let round = |n: usize| {
        rt.block_on(async {
            let mut tasks = Vec::new();
            for i in 0..n {
                let client = client.clone();
                tasks.push(tokio::spawn(async move {
                    use luminaguard_api::types::{CreateSandbox, ExecBody, ExecEvent};
                    let v = client.create(&CreateSandbox::default()).await?;
                    let body = ExecBody {
                        argv: vec!["sh".into(), "-c".into(), format!("echo {i}; cat")],
                        stdin: Some(format!("in {i}\n")),
                        ..ExecBody::default()
                    };
                    let mut events = client.exec(&v.id, &body).await?;
                    let mut out = Vec::new();
                    let mut code = None;
                    while let Some(ev) = events.next().await? {
                        match ev {
                            ExecEvent::Stdout(c) => out.extend(c.bytes().unwrap()),
                            ExecEvent::Exit(x) => code = x.code,
                            _ => {}
                        }
                    }
                    client.destroy(&v.id).await?;
                    Ok::<_, luminaguard_api::client::ClientError>((i, text(&out), code))
                }));
            }
            for t in tasks {
                let (i, out, code) = t.await.unwrap().unwrap();
                assert_eq!((out, code), (format!("{i}\nin {i}\n"), Some(0)));
            }
        })
    };
    // A first round warms up what is made once (runtimes, pools of threads, caches).
    round(10);
    let before = footprint(d.pid());
    round(50);
    round(50);
    // Everything a request holds is let go once it is answered.
    eventually(
        Duration::from_secs(20),
        "descriptors or threads leaked",
        || {
            let now = footprint(d.pid());
            now.0 <= before.0 && now.1 <= before.1 + 4
        },
    );
    assert!(ids(&d.socket).is_empty());
    let left: Vec<_> = std::fs::read_dir(e.runtime.join("sandboxes"))
        .map(|r| r.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "records left: {left:?}");
    let rt_text = e.runtime.to_str().unwrap().to_owned();
    assert!(
        live_processes_matching(&["sandbox-init", &rt_text]).is_empty(),
        "sandbox processes left"
    );
    let metrics = curl(&d.socket, "GET", "/metrics", None).body;
    assert!(metrics.contains("luminaguard_connections 1\n"), "{metrics}");
}

/// One-shot runs with a workspace started all at once: every one comes up and answers, and no
/// helper is left. (Each workspace is an idmapped mount made with a helper in a user namespace
/// of its own; helpers that waited for a pipe's end of file held each other's write ends and
/// hung — `idmap::tests::concurrent_mapping_namespaces_never_wait_on_each_other` makes that
/// race every time; here it was seen in about one run in twenty.)
#[test]
fn concurrent_runs_with_workspaces_all_start() {
    if !privileged("the daemon test") {
        return;
    }
    let e = env();
    let d = start(&e, "");
    let ws = e.runtime.with_extension("ws");
    std::fs::create_dir(&ws).unwrap();
    let client = luminaguard_api::client::Client::new(&d.socket);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        for round in 0..8 {
            let mut tasks = Vec::new();
            for i in 0..6 {
                let (client, ws) = (client.clone(), ws.clone());
                tasks.push(tokio::spawn(async move {
                    use luminaguard_api::types::{CreateSandbox, ExecEvent, RunBody};
                    let body = RunBody {
                        argv: vec!["sh".into(), "-c".into(), format!("echo {round}.{i}")],
                        sandbox: CreateSandbox {
                            workspace: Some(ws.to_str().unwrap().to_owned()),
                            ..CreateSandbox::default()
                        },
                        ..RunBody::default()
                    };
                    let run = async {
                        let mut events = client.run(&body).await?;
                        let mut out = Vec::new();
                        while let Some(ev) = events.next().await? {
                            if let ExecEvent::Stdout(c) = ev {
                                out.extend(c.bytes().unwrap());
                            }
                        }
                        Ok::<_, luminaguard_api::client::ClientError>(text(&out))
                    };
                    let out = tokio::time::timeout(Duration::from_secs(60), run)
                        .await
                        .unwrap_or_else(|_| panic!("run {round}.{i} hung"))
                        .unwrap();
                    assert_eq!(out, format!("{round}.{i}\n"));
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
        }
    });
    healthy(&d.socket);
    let left = live_processes_matching(&["daemon", e.runtime.to_str().unwrap()]);
    assert!(left.len() <= 1, "helpers left: {left:?}");
}

#[test]
fn the_systemd_units_verify_and_name_the_socket_the_cli_looks_for() {
    if !privileged("the daemon test") {
        return;
    }
    let units = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../dist/systemd");
    let dir = tempfile::tempdir().unwrap();
    for unit in ["luminaguard.service", "luminaguard.socket"] {
        let text = std::fs::read_to_string(units.join(unit)).unwrap();
        // systemd-analyze checks that ExecStart's program exists: point it at this build.
        let text = text.replace("/usr/local/bin/luminaguard", BIN);
        std::fs::write(dir.path().join(unit), text).unwrap();
    }
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(dir.path().join("luminaguard.socket"))
        .arg(dir.path().join("luminaguard.service"))
        .output()
        .expect("systemd-analyze (scripts/setup installs systemd)");
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    // The socket is where root's daemon listens by default, and where users' CLIs look.
    let socket = std::fs::read_to_string(units.join("luminaguard.socket")).unwrap();
    assert!(
        socket.contains("ListenStream=/run/luminaguard/api.sock"),
        "{socket}"
    );
    let shown = Command::new(BIN)
        .args(["config", "show", "--json"])
        .env_remove("LUMINAGUARD_RUNTIME_DIR")
        .env_remove("LUMINAGUARD_DAEMON_SOCKET")
        .output()
        .unwrap();
    let config: Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(
        config["daemon"]["socket"], "/run/luminaguard/api.sock",
        "{config}"
    );
    let service = std::fs::read_to_string(units.join("luminaguard.service")).unwrap();
    assert!(service.contains("Type=notify"), "{service}");
}

/// The MCP gateway's routes as a hostile client would use them: a call the policy denies is a
/// 403 naming the rule; one it asks about waits for a person's answer on a card that shows the
/// server, tool and arguments; oversized and malformed bodies are refused with clear errors;
/// another user's sandbox does not exist for them; what is judged and recorded is on the log.
#[test]
fn the_tool_call_routes_judge_refuse_and_record() {
    if !privileged("the daemon test") {
        return;
    }
    let e = env();
    let policy = e.runtime.with_extension("policy.toml");
    std::fs::write(
        &policy,
        r#"version = 1
default = "ask"

[[rule]]
id = "probe-calls"
decision = "allow"
reason = "the probe's calls"
mcp = { server = "probe", tool = "*" }

[[rule]]
id = "no-danger"
decision = "deny"
reason = "dangerous"
mcp = { server = "probe", tool = "danger" }

[[rule]]
id = "ask-care"
decision = "ask"
reason = "careful"
mcp = { server = "probe", tool = "care" }
"#,
    )
    .unwrap();
    let audit = e.runtime.with_extension("audit");
    // (Top-level keys before BASE's tables.)
    let d = Daemon::start(
        Path::new(BIN),
        &e.runtime,
        &format!(
            "policy = \"{}\"\naudit_dir = \"{}\"\n{BASE}[daemon]\ngroup = \"nogroup\"\n",
            policy.display(),
            audit.display()
        ),
    );
    let sock = &d.socket;
    let id = create(sock, json!({"name": "tc"}));
    let judge = |body: Value| {
        curl(
            sock,
            "POST",
            &format!("/v1/sandboxes/{id}/tool-calls"),
            Some(&body.to_string()),
        )
    };

    let r = judge(json!({"server": "probe", "tool": "echo", "arguments": {"text": "hi"}}));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["verdict"], "allow");
    let r = judge(json!({"server": "probe", "tool": "danger", "arguments": {}}));
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("no-danger"), "{}", r.body);

    // Hostile bodies: each a clear client error, and the daemon serves on.
    let big = "x".repeat(2 << 20);
    for (body, status) in [
        (
            json!({"server": "probe", "tool": "echo", "arguments": {"t": big}}).to_string(),
            413,
        ),
        ("{\"server\": 1}".to_owned(), 400),
        ("not json".to_owned(), 400),
        (json!({"server": "probe"}).to_string(), 400),
    ] {
        let r = curl(
            sock,
            "POST",
            &format!("/v1/sandboxes/{id}/tool-calls"),
            Some(&body),
        );
        assert!(
            r.status == status || (status == 400 && r.status == 422),
            "{}: {} {}",
            &body[..body.len().min(60)],
            r.status,
            r.body
        );
    }
    let r = curl(
        sock,
        "POST",
        &format!("/v1/sandboxes/{id}/tool-events"),
        Some(&json!({"event": "nonsense", "server": "probe", "tool": "x"}).to_string()),
    );
    assert!(
        r.status == 400 || r.status == 422,
        "{} {}",
        r.status,
        r.body
    );
    let r = curl(
        sock,
        "POST",
        "/v1/sandboxes/..%2f..%2fetc/tool-calls",
        Some(&json!({"server": "probe", "tool": "echo"}).to_string()),
    );
    assert!(
        r.status == 400 || r.status == 404,
        "{} {}",
        r.status,
        r.body
    );
    healthy(sock);

    // Another user cannot judge calls in, or put events on, root's sandbox.
    for route in ["tool-calls", "tool-events"] {
        let body = json!({"event": "refused", "server": "probe", "tool": "echo", "reason": "x"});
        let r = reply(curl_as(
            sock,
            "POST",
            &format!("/v1/sandboxes/{id}/{route}"),
            Some(body.to_string().as_bytes()),
            Some((1000, 65534)),
        ));
        assert_eq!(r.status, 404, "{route}: {}", r.body);
    }

    // Asked: the request waits on a card a person answers.
    let mut waiting = raw(
        sock,
        "POST",
        &format!("/v1/sandboxes/{id}/tool-calls"),
        &json!({"server": "probe", "tool": "care", "arguments": {"path": "/etc/hosts"}})
            .to_string(),
    );
    let mut card = Value::Null;
    eventually(Duration::from_secs(10), "the card", || {
        let r = curl(sock, "GET", "/v1/approvals", None);
        card = r
            .json()
            .as_array()
            .unwrap()
            .first()
            .cloned()
            .unwrap_or(Value::Null);
        !card.is_null()
    });
    let action = &card["card"]["action"];
    assert_eq!(action["kind"], "tool-call", "{card}");
    assert_eq!(action["tool"]["server"], "probe");
    assert_eq!(action["tool"]["tool"], "care");
    assert_eq!(action["tool"]["arguments"]["path"], "/etc/hosts");
    let approval = card["id"].as_str().unwrap().to_owned();
    let r = curl(
        sock,
        "POST",
        &format!("/v1/approvals/{approval}"),
        Some(&json!({"decision": "approve"}).to_string()),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let answer = read_until(&mut waiting, "}");
    assert!(answer.contains(" 200 "), "{answer}");
    assert!(
        answer.contains(&approval),
        "cleared under the approval: {answer}"
    );

    let r = curl(
        sock,
        "POST",
        &format!("/v1/sandboxes/{id}/tool-events"),
        Some(
            &json!({"event": "result", "server": "probe", "tool": "care", "approval": approval,
                "duration_ms": 3, "result_bytes": 42, "is_error": false, "redacted": 0})
            .to_string(),
        ),
    );
    assert_eq!(r.status, 204, "{}", r.body);
    drop(d);

    let ls = Command::new(BIN)
        .args(["audit", "ls", "--json"])
        .env("LUMINAGUARD_AUDIT_DIR", &audit)
        .output()
        .unwrap();
    assert!(ls.status.success(), "{}", text(&ls.stderr));
    let records: Vec<Value> = text(&ls.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let judged: Vec<&Value> = records
        .iter()
        .filter(|r| r["event"]["type"] == "tool-call")
        .collect();
    assert_eq!(judged.len(), 3, "echo, danger and care: {judged:?}");
    assert!(records.iter().any(
        |r| r["event"]["type"] == "tool-result" && r["event"]["approval"] == approval.as_str()
    ));
    assert!(
        !records.iter().any(|r| r["event"]["type"] == "tool-refused"),
        "another user's event was not recorded"
    );
}
