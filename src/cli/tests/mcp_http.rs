//! `luminaguard mcp serve --http`: MCP's streamable HTTP transport, driven by the official
//! Python SDK (`streamable_http_client`, the scripts in tests/mcp/) and by curl as an attacker
//! would: the bearer token, the unix socket's peer credentials, Origin, one sandbox per MCP
//! session and none left after a session or the server ends.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)] // test code

#[path = "mcp/common.rs"]
mod common;

use common::*;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use luminaguard_testkit::{privileged, text};
use serde_json::{Value, json};

/// Where scripts/setup installs the MCP Inspector (`LUMINAGUARD_TEST_INSPECTOR` overrides it).
const INSPECTOR: &str = "/var/cache/luminaguard/mcp-inspector/node_modules/.bin/mcp-inspector";

/// How long a client script or the Inspector may take.
const CLIENT_LIMIT: Duration = Duration::from_secs(120);

fn inspector() -> Option<PathBuf> {
    let p = std::env::var_os("LUMINAGUARD_TEST_INSPECTOR")
        .map_or_else(|| PathBuf::from(INSPECTOR), PathBuf::from);
    prerequisite(&format!("the MCP Inspector ({})", p.display()), p.exists()).then_some(p)
}

/// The JSON the Inspector's CLI printed on stdout (its stderr has schema warnings).
fn inspected(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "the inspector failed:\n{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out.stdout)))
}

/// `mcp serve`'s command line (without `--http`).
fn serve_argv(e: &Env, through_daemon: bool) -> Vec<String> {
    let mut argv = vec!["--runtime-dir".to_owned(), path(&e.rt)];
    if !through_daemon {
        argv.extend(["--no-daemon".into(), "--policy".into(), path(&e.policy)]);
    }
    argv.extend([
        "mcp".into(),
        "serve".into(),
        "--backend".into(),
        "process".into(),
        "--workspace".into(),
        path(&e.ws),
    ]);
    argv
}

/// A running `mcp serve --http`: stopped with SIGTERM when dropped.
struct Server {
    child: Option<Child>,
    /// `http://127.0.0.1:PORT/mcp`, or `http://localhost/mcp` on a unix socket.
    url: String,
    token: Option<String>,
    socket: Option<PathBuf>,
}

impl Server {
    /// Starts a server on `listen` (`127.0.0.1:0` or `unix:PATH`) and waits until it serves.
    fn start(e: &Env, through_daemon: bool, listen: &str, extra: &[&str]) -> Self {
        let mut child = Command::new(BIN)
            .args(serve_argv(e, through_daemon))
            .args(["--http", listen])
            .args(extra)
            .env("LUMINAGUARD_AUDIT_DIR", &e.audit)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let url = loop {
            let line = lines
                .next()
                .unwrap_or_else(|| panic!("the server exited before serving"))
                .unwrap();
            assert!(
                !line.contains(&"0".repeat(64)),
                "nothing like a token on stderr"
            );
            if let Some(rest) = line.strip_prefix("luminaguard: serving MCP on ") {
                break match rest.strip_prefix("unix:") {
                    Some(_) => "http://localhost/mcp".to_owned(),
                    None => rest.to_owned(),
                };
            }
        };
        // The rest of its stderr, to the test's (read, so the server never blocks on it).
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                eprintln!("[server] {line}");
            }
        });
        let socket = listen.strip_prefix("unix:").map(PathBuf::from);
        let token = if socket.is_none() {
            let file = extra.iter().position(|a| *a == "--token-file").map_or_else(
                || e.rt.join("mcp-http.token"),
                |i| PathBuf::from(extra[i + 1]),
            );
            Some(std::fs::read_to_string(file).unwrap().trim().to_owned())
        } else {
            None
        };
        Self {
            child: Some(child),
            url,
            token,
            socket,
        }
    }

    fn pid(&self) -> i32 {
        i32::try_from(self.child.as_ref().unwrap().id()).unwrap()
    }

    /// SIGTERM; returns its exit status.
    fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap()),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the server did not stop within 30 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The Python client in `mode`, against this server.
    fn client(&self, py: &Path, e: &Env, mode: &str) -> Command {
        self.client_of(py, e, "client.py", mode)
    }

    /// Client `script` in `mode`, against this server.
    fn client_of(&self, py: &Path, e: &Env, script: &str, mode: &str) -> Command {
        let mut cmd = Command::new(py);
        cmd.arg(scripts().join(script))
            .arg(mode)
            .env("LG_URL", &self.url)
            .env("LUMINAGUARD_AUDIT_DIR", &e.audit)
            .stdin(Stdio::null());
        if let Some(t) = &self.token {
            cmd.env("LG_TOKEN", t);
        }
        if let Some(s) = &self.socket {
            cmd.env("LG_UDS", s);
        }
        cmd
    }

    /// A POST of `body` with these headers (the token unless `token` says otherwise).
    fn post(
        &self,
        token: Option<&str>,
        session: Option<&str>,
        extra: &[&str],
        body: &Value,
    ) -> Reply {
        let mut args: Vec<String> = vec![
            "-H".into(),
            "content-type: application/json".into(),
            "-H".into(),
            "accept: application/json, text/event-stream".into(),
            "--data-binary".into(),
            body.to_string(),
        ];
        if let Some(t) = token {
            args.extend(["-H".into(), format!("Authorization: Bearer {t}")]);
        }
        if let Some(s) = session {
            args.extend(["-H".into(), format!("Mcp-Session-Id: {s}")]);
        }
        for h in extra {
            args.extend(["-H".into(), (*h).to_owned()]);
        }
        self.curl("POST", &args, None)
    }

    fn curl(&self, method: &str, args: &[String], as_user: Option<u32>) -> Reply {
        let mut cmd = match as_user {
            Some(uid) => {
                let mut c = Command::new("setpriv");
                c.args([
                    format!("--reuid={uid}"),
                    format!("--regid={uid}"),
                    "--clear-groups".into(),
                    "curl".into(),
                ]);
                c
            }
            None => Command::new("curl"),
        };
        cmd.args(["-sS", "-i", "--max-time", "30", "-X", method]);
        if let Some(s) = &self.socket {
            cmd.arg("--unix-socket").arg(s);
        }
        let out = cmd.args(args).arg(&self.url).output().unwrap();
        Reply::parse(&out)
    }

    /// An initialized MCP session: its `Mcp-Session-Id`.
    fn session(&self, client: &str) -> String {
        let token = self.token.as_deref();
        let r = self.post(
            token,
            None,
            &[],
            &json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                "protocolVersion": "2025-11-25", "capabilities": {},
                "clientInfo": {"name": client, "version": "0"}}}),
        );
        assert_eq!(r.status, 200, "{r:?}");
        let id = r.header("mcp-session-id").unwrap().to_owned();
        let r = self.post(
            token,
            Some(&id),
            &["MCP-Protocol-Version: 2025-11-25"],
            &json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        );
        assert_eq!(r.status, 202, "{r:?}");
        id
    }

    /// `run_command` of `command` in session `id`: the structured result.
    fn run(&self, session: &str, command: &str) -> Value {
        let r = self.post(
            self.token.as_deref(),
            Some(session),
            &["MCP-Protocol-Version: 2025-11-25"],
            &json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
                "name": "run_command", "arguments": {"command": command}}}),
        );
        assert_eq!(r.status, 200, "{r:?}");
        r.message()["result"]["structuredContent"].clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap()),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = child.wait();
        }
    }
}

/// An HTTP response as curl -i printed it.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn parse(out: &Output) -> Self {
        let all = text(&out.stdout);
        let (head, body) = all.split_once("\r\n\r\n").unwrap_or((&all, ""));
        let mut lines = head.lines();
        let status = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        Self {
            status,
            headers,
            body: body.to_owned(),
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The JSON-RPC response in the body (plain JSON, or the SSE event that carries it).
    fn message(&self) -> Value {
        if let Ok(v) = serde_json::from_str(&self.body) {
            return v;
        }
        self.body
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
            .find(|v| v.get("id").is_some())
            .unwrap_or_else(|| panic!("no JSON-RPC response in {self:?}"))
    }
}

/// Runs `cmd` for at most `limit`: a client that hangs fails its test (killed) rather than
/// holding up the suite.
fn bounded(cmd: &mut Command, limit: Duration) -> Output {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if rx.recv_timeout(limit).is_err() {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
    });
    let start = Instant::now();
    let out = child.wait_with_output().unwrap();
    drop(tx);
    watchdog.join().unwrap();
    assert!(
        start.elapsed() < limit,
        "{cmd:?} did not finish within {limit:?}:\n{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    out
}

#[test]
fn over_http_a_python_client_lists_validates_and_calls_every_tool_in_process() {
    if !privileged("the MCP HTTP test") {
        return;
    }
    let Some(py) = python() else { return };
    let e = env();
    let mut server = Server::start(&e, false, "127.0.0.1:0", &[]);
    let s = summary(&bounded(&mut server.client(&py, &e, "tools"), CLIENT_LIMIT));
    assert_eq!(s["sandboxes"].as_array().unwrap().len(), 2, "{s}");
    // The client ends its session (DELETE) on the way out: its sandboxes go with it while the
    // server serves on.
    wait_until(
        "the session's sandboxes gone after its DELETE",
        Duration::from_secs(15),
        || sandboxes(&e).is_empty(),
    );
    assert!(server.stop().success());
    let records = records(&e);
    let execs: Vec<&Value> = records
        .iter()
        .filter(|r| r["event"]["type"] == "exec")
        .collect();
    assert!(execs.len() >= 10, "{execs:?}");
    let session = execs[0]["actor"]["session"].as_str().unwrap_or_default();
    // Every record of the session names it: its sandboxes' creates and destroys too.
    for r in &records {
        assert_eq!(r["actor"]["session"], session, "{r}");
    }
    assert!(
        records.iter().any(|r| r["event"]["type"] == "create"),
        "{records:?}"
    );
    assert!(
        session.starts_with("mcp-") && session.contains(" mcp/"),
        "{session:?}"
    );
    assert!(
        execs
            .iter()
            .all(|r| r["actor"]["kind"] == "mcp" && r["actor"]["session"] == session),
        "{execs:?}"
    );
    let verify = lg(&e, &["audit", "verify"]);
    assert!(verify.status.success(), "{}", text(&verify.stderr));
}

#[test]
fn over_a_unix_socket_a_python_client_calls_every_tool() {
    if !privileged("the MCP HTTP test") {
        return;
    }
    let Some(py) = python() else { return };
    let e = env();
    let sock = e.dir.path().join("mcp.sock");
    let server = Server::start(&e, false, &format!("unix:{}", sock.display()), &[]);
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the socket is its owner's alone");
    let s = summary(&bounded(&mut server.client(&py, &e, "tools"), CLIENT_LIMIT));
    assert_eq!(s["sandboxes"].as_array().unwrap().len(), 2, "{s}");
    wait_until(
        "the session's sandboxes gone",
        Duration::from_secs(15),
        || sandboxes(&e).is_empty(),
    );
    drop(server);
    assert!(
        !sock.exists(),
        "the socket is removed when the server stops"
    );
}

#[test]
fn two_sessions_get_their_own_sandboxes_and_their_own_questions() {
    if !privileged("the MCP HTTP test") {
        return;
    }
    let Some(py) = python() else { return };
    let e = env();
    let d = daemon(&e);
    for through_daemon in [false, true] {
        let mut server = Server::start(&e, through_daemon, "127.0.0.1:0", &[]);
        let s = summary(&bounded(&mut server.client(&py, &e, "pair"), CLIENT_LIMIT));
        let asked = &s["asked"];
        assert!(
            asked["a"][0].as_str().unwrap().contains("from-a.txt")
                && asked["b"][0].as_str().unwrap().contains("from-b.txt"),
            "each question went to its own session (daemon: {through_daemon}): {s}"
        );
        assert_eq!(
            std::fs::read_to_string(e.ws.join(".git/from-a.txt")).unwrap(),
            "a\n"
        );
        assert!(
            !e.ws.join(".git/from-b.txt").exists(),
            "the denied write did not land"
        );
        std::fs::remove_file(e.ws.join(".git/from-a.txt")).unwrap();
        wait_until(
            &format!("both sessions' sandboxes gone (daemon: {through_daemon})"),
            Duration::from_secs(15),
            || sandboxes(&e).is_empty(),
        );
        assert!(server.stop().success());
    }
    drop(d);
    // In-process, each session's records name it: two sessions, two names, and each approval
    // by elicitation is its own session's.
    let records = records(&e);
    let names: std::collections::BTreeSet<&str> = records
        .iter()
        .filter(|r| r["actor"]["kind"] == "mcp" && r["event"]["type"] == "exec")
        .filter_map(|r| r["actor"]["session"].as_str())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

#[test]
fn without_the_token_or_from_a_foreign_origin_nothing_is_served() {
    if !privileged("the MCP HTTP test") {
        return;
    }
    let e = env();
    let server = Server::start(&e, false, "127.0.0.1:0", &[]);
    let token = server.token.clone().unwrap();
    let mode = std::fs::metadata(e.rt.join("mcp-http.token"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "attacker", "version": "0"}}});
    let call = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
        "name": "run_command", "arguments": {"command": "touch /workspace/pwned"}}});
    let wrong = format!("{}x", &token[..token.len() - 1]);
    for (what, t) in [
        ("no token", None),
        ("a wrong token", Some(wrong.as_str())),
        ("an empty token", Some("")),
        ("a prefix of the token", Some(&token[..32])),
    ] {
        for body in [&init, &call] {
            let r = server.post(t, None, &[], body);
            assert_eq!(r.status, 401, "{what}: {r:?}");
            assert!(
                r.header("www-authenticate")
                    .is_some_and(|h| h.starts_with("Bearer")),
                "{what}: {r:?}"
            );
        }
    }
    // A session made with the token is no way in without it either.
    let id = server.session("owner");
    let r = server.post(
        None,
        Some(&id),
        &["MCP-Protocol-Version: 2025-11-25"],
        &call,
    );
    assert_eq!(r.status, 401, "{r:?}");
    // A browser page elsewhere (DNS rebinding or a cross-origin POST) is refused, token or not;
    // so is a Host that is not loopback.
    for h in ["Origin: http://evil.example", "Origin: http://localhost:1"] {
        let r = server.post(Some(&token), None, &[h], &init);
        assert_eq!(r.status, 403, "{h}: {r:?}");
    }
    let r = server.post(Some(&token), None, &["Host: evil.example"], &init);
    assert_eq!(r.status, 403, "{r:?}");
    // A body beyond the cap (16 MiB) is refused, whatever it holds.
    let huge = json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {
        "name": "write_file", "arguments": {"path": "big", "content": "y".repeat(17 << 20)}}});
    let body = e.dir.path().join("huge.json");
    std::fs::write(&body, huge.to_string()).unwrap();
    let r = server.curl(
        "POST",
        &[
            "-H".into(),
            format!("Authorization: Bearer {token}"),
            "-H".into(),
            "content-type: application/json".into(),
            "-H".into(),
            "accept: application/json, text/event-stream".into(),
            "-H".into(),
            "Expect:".into(),
            "--data-binary".into(),
            format!("@{}", body.display()),
        ],
        None,
    );
    assert_eq!(r.status, 413, "{}", r.status);
    // A page of the server's own origin may call it.
    let own = server.url.trim_end_matches("/mcp").to_owned();
    let r = server.post(Some(&token), None, &[&format!("Origin: {own}")], &init);
    assert_eq!(r.status, 200, "{r:?}");
    assert!(sandboxes(&e).is_empty(), "no sandbox was made");
    assert!(!e.ws.join("pwned").exists());
}

#[test]
fn a_unix_socket_serves_only_its_owner_and_root() {
    if !privileged("the MCP HTTP test") {
        return;
    }
    let e = env();
    let sock = e.dir.path().join("mcp.sock");
    let server = Server::start(&e, false, &format!("unix:{}", sock.display()), &[]);
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "nobody", "version": "0"}}});
    let args = |body: &Value| -> Vec<String> {
        vec![
            "-H".into(),
            "content-type: application/json".into(),
            "-H".into(),
            "accept: application/json, text/event-stream".into(),
            "--data-binary".into(),
            body.to_string(),
        ]
    };
    // As made (0600 in a 0700 directory), nobody else can even connect.
    let r = server.curl("POST", &args(&init), Some(65534));
    assert_eq!(r.status, 0, "{r:?}");
    // Loosened (as a careless chmod would), the peer's credentials still keep them out.
    std::fs::set_permissions(e.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).unwrap();
    let r = server.curl("POST", &args(&init), Some(65534));
    assert_eq!(r.status, 403, "{r:?}");
    assert!(r.body.contains("uid 65534 may not use"), "{r:?}");
    // Root (the server's own user here) is served.
    let id = server.session("root");
    let out = server.run(&id, "echo up");
    assert_eq!(out["stdout"], "up\n", "{out}");
    // A stale socket is replaced; a file that is not a socket is not.
    drop(server);
    std::fs::write(&sock, "not a socket").unwrap();
    let refused = bounded(
        Command::new(BIN)
            .args(serve_argv(&e, false))
            .args(["--http", &format!("unix:{}", sock.display())])
            .stdin(Stdio::null()),
        Duration::from_secs(30),
    );
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains("is not a socket"),
        "{}",
        text(&refused.stderr)
    );
    assert_eq!(std::fs::read_to_string(&sock).unwrap(), "not a socket");
}

#[test]
fn a_public_address_needs_http_public_and_a_shared_token_file_is_refused() {
    if !privileged("the MCP HTTP test") {
        return;
    }
    let e = env();
    let out = bounded(
        Command::new(BIN)
            .args(serve_argv(&e, false))
            .args(["--http", "0.0.0.0:0"])
            .stdin(Stdio::null()),
        Duration::from_secs(30),
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("--http-public"),
        "{}",
        text(&out.stderr)
    );
    assert!(!e.rt.join("mcp-http.token").exists(), "no token made");
    // With --http-public it serves there, loudly, still behind the token.
    let public = Server::start(&e, false, "0.0.0.0:0", &["--http-public"]);
    let id = public.session("public");
    assert_eq!(public.run(&id, "echo public")["stdout"], "public\n");
    let r = public.post(
        None,
        None,
        &[],
        &json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "x", "version": "0"}}}),
    );
    assert_eq!(r.status, 401, "{r:?}");
    drop(public);
    let file = e.dir.path().join("token");
    std::fs::write(&file, "0123456789abcdef0123456789abcdef").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
    let out = bounded(
        Command::new(BIN)
            .args(serve_argv(&e, false))
            .args(["--http", "127.0.0.1:0", "--token-file", &path(&file)])
            .stdin(Stdio::null()),
        Duration::from_secs(30),
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("lets others read it"),
        "{}",
        text(&out.stderr)
    );
    // Owner-only, it is the token.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let server = Server::start(&e, false, "127.0.0.1:0", &["--token-file", &path(&file)]);
    assert_eq!(
        server.token.as_deref(),
        Some("0123456789abcdef0123456789abcdef")
    );
    let id = server.session("token-file");
    assert_eq!(server.run(&id, "echo ok")["stdout"], "ok\n");
}

#[test]
fn a_deleted_session_loses_its_sandbox_and_sigterm_ends_them_all() {
    if !privileged("the MCP HTTP test") {
        return;
    }
    let e = env();
    let mut server = Server::start(&e, false, "127.0.0.1:0", &[]);
    let (one, two) = (server.session("one"), server.session("two"));
    let a = server.run(&one, "echo one")["sandbox_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let b = server.run(&two, "echo two")["sandbox_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(a, b, "one sandbox per session");
    let mut list = sandboxes(&e);
    list.sort();
    let mut both = vec![a.clone(), b.clone()];
    both.sort();
    assert_eq!(list, both);
    let r = server.curl(
        "DELETE",
        &[
            "-H".into(),
            format!("Authorization: Bearer {}", server.token.as_deref().unwrap()),
            "-H".into(),
            format!("Mcp-Session-Id: {one}"),
            "-H".into(),
            "MCP-Protocol-Version: 2025-11-25".into(),
        ],
        None,
    );
    assert!(r.status < 300, "{r:?}");
    wait_until(
        "the deleted session's sandbox gone",
        Duration::from_secs(15),
        || sandboxes(&e) == vec![b.clone()],
    );
    assert!(server.stop().success(), "a clean exit on SIGTERM");
    assert!(
        sandboxes(&e).is_empty(),
        "every session's sandbox is destroyed before the server exits"
    );
}

#[test]
fn a_killed_http_server_leaves_no_sandbox() {
    if !privileged("the MCP HTTP test") {
        return;
    }
    let e = env();
    let d = daemon(&e);
    for through_daemon in [true, false] {
        let mut server = Server::start(&e, through_daemon, "127.0.0.1:0", &[]);
        let id = server.session("killer");
        let out = server.run(&id, "echo up");
        let sandbox = out["sandbox_id"].as_str().unwrap().to_owned();
        assert_eq!(sandboxes(&e), vec![sandbox.clone()]);
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(server.pid()),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        server.child.take().unwrap().wait().unwrap();
        wait_until(
            &format!("sandbox {sandbox} gone after SIGKILL (daemon: {through_daemon})"),
            Duration::from_secs(15),
            || {
                // In-process, the dead sandbox's record is collected by the next gc.
                if !through_daemon {
                    let _ = lg(&e, &["--no-daemon", "gc"]);
                }
                sandboxes(&e).is_empty()
            },
        );
    }
    drop(d);
}

/// The MCP Inspector's CLI against `mcp serve`: `tools/list` and a `tools/call` of
/// `run_command`, on stdio and over HTTP (the token added by tests/mcp/inspector-auth.cjs; the
/// Inspector without it is refused).
#[test]
fn the_mcp_inspector_lists_and_calls_tools_on_stdio_and_over_http() {
    if !privileged("the MCP HTTP test") {
        return;
    }
    let Some(inspector) = inspector() else { return };
    let e = env();
    let inspect = |target: &[String], method: &[&str]| -> Command {
        let mut cmd = Command::new(&inspector);
        cmd.arg("--cli")
            .args(target)
            .arg("--method")
            .args(method)
            .env("LUMINAGUARD_AUDIT_DIR", &e.audit)
            .env_remove("NODE_OPTIONS")
            .stdin(Stdio::null());
        cmd
    };
    let list = ["tools/list"];
    let call = [
        "tools/call",
        "--tool-name",
        "run_command",
        "--tool-arg",
        "command=echo hi",
    ];
    let check = |listed: &Value, called: &Value, how: &str| {
        let names: Vec<&str> = listed["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        assert_eq!(names.len(), 9, "{how}: {names:?}");
        assert!(names.contains(&"run_command"), "{how}: {names:?}");
        assert_ne!(called["isError"], true, "{how}: {called}");
        assert_eq!(
            called["structuredContent"]["stdout"], "hi\n",
            "{how}: {called}"
        );
    };

    let mut stdio = vec![BIN.to_owned()];
    stdio.extend(serve_argv(&e, false));
    let listed = inspected(&bounded(&mut inspect(&stdio, &list), CLIENT_LIMIT));
    let called = inspected(&bounded(&mut inspect(&stdio, &call), CLIENT_LIMIT));
    check(&listed, &called, "stdio");
    assert!(
        sandboxes(&e).is_empty(),
        "the stdio session's sandbox is gone"
    );

    let server = Server::start(&e, false, "127.0.0.1:0", &[]);
    let http = vec![server.url.clone(), "--transport".into(), "http".into()];
    let refused = bounded(&mut inspect(&http, &list), CLIENT_LIMIT);
    assert!(!refused.status.success(), "no token, no answer");
    let with_token = |method: &[&str]| {
        let mut cmd = inspect(&http, method);
        cmd.env("LG_TOKEN", server.token.as_deref().unwrap()).env(
            "NODE_OPTIONS",
            format!(
                "--require {}",
                scripts().join("inspector-auth.cjs").display()
            ),
        );
        inspected(&bounded(&mut cmd, CLIENT_LIMIT))
    };
    check(&with_token(&list), &with_token(&call), "HTTP");
    // This Inspector leaves without a DELETE: its session (and sandbox) lives until rmcp's
    // idle timeout or the server's end.
    let mut server = server;
    assert!(server.stop().success());
    assert!(
        sandboxes(&e).is_empty(),
        "SIGTERM destroyed the session's sandbox"
    );
}

/// A client of the stateless 2026-07-28 revision (the Python SDK 2.x) over HTTP with the token:
/// its requests carry no session, and its calls still share one sandbox (the token holder's).
#[test]
fn a_stateless_client_over_http_keeps_one_sandbox() {
    if !privileged("the MCP HTTP test") {
        return;
    }
    let py = PathBuf::from(PYTHON_MODERN);
    let ok = Command::new(&py)
        .args(["-c", "import mcp, httpx2"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !prerequisite(&format!("the Python MCP SDK 2.x ({})", py.display()), ok) {
        return;
    }
    let e = env();
    let mut server = Server::start(&e, false, "127.0.0.1:0", &[]);
    let s = summary(&bounded(
        &mut server.client_of(&py, &e, "client_modern.py", "http"),
        CLIENT_LIMIT,
    ));
    let sandbox = s["sandbox"].as_str().unwrap().to_owned();
    assert_eq!(
        sandboxes(&e),
        vec![sandbox],
        "the principal's session keeps it"
    );
    assert!(server.stop().success());
    assert!(sandboxes(&e).is_empty(), "ended with the server");
}

/// `mcp config HOST --url`: the HTTP form of each host's entry, with the server's token; the
/// vscode and cursor entries' URL and headers get an answer from the server.
#[test]
fn config_with_a_url_prints_each_hosts_http_entry() {
    if !privileged("the MCP HTTP test") {
        return;
    }
    let e = env();
    let server = Server::start(&e, false, "127.0.0.1:0", &[]);
    let token = server.token.clone().unwrap();
    for (host, key) in [("vscode", "servers"), ("cursor", "mcpServers")] {
        let out = lg(&e, &["mcp", "config", host, "--url", &server.url]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        let entry = &v[key]["luminaguard"];
        assert_eq!(entry["url"], server.url.as_str(), "{v}");
        let auth = entry["headers"]["Authorization"].as_str().unwrap();
        assert_eq!(auth, format!("Bearer {token}"));
        let r = server.post(
            auth.strip_prefix("Bearer "),
            None,
            &[],
            &json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                "protocolVersion": "2025-11-25", "capabilities": {},
                "clientInfo": {"name": host, "version": "0"}}}),
        );
        assert_eq!(r.status, 200, "{host}: {r:?}");
    }
    let out = lg(&e, &["mcp", "config", "claude-code", "--url", &server.url]);
    assert_eq!(
        text(&out.stdout),
        format!(
            "claude mcp add --transport http luminaguard {} --header 'Authorization: Bearer {token}'\n",
            server.url
        )
    );
    let out = lg(
        &e,
        &["mcp", "config", "claude-desktop", "--url", &server.url],
    );
    assert!(
        !out.status.success(),
        "claude-desktop takes no remote server in its file"
    );
    let out = lg(
        &e,
        &[
            "mcp",
            "config",
            "cursor",
            "--url",
            &server.url,
            "--token-file",
            "/nonexistent",
        ],
    );
    assert!(!out.status.success());
}

/// A client that leaves without a `DELETE`: rmcp ends its session after the idle timeout and
/// drops its service, and the session's sandbox goes with it.
#[test]
fn an_idle_session_is_dropped_and_its_sandbox_destroyed() {
    if !privileged("the MCP HTTP test") {
        return;
    }
    let e = env();
    let server = Server::start(&e, false, "127.0.0.1:0", &["--http-idle-timeout", "2"]);
    let id = server.session("leaver");
    let sandbox = server.run(&id, "echo here")["sandbox_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(sandboxes(&e), vec![sandbox]);
    wait_until(
        "the idle session's sandbox gone",
        Duration::from_secs(15),
        || sandboxes(&e).is_empty(),
    );
    // The session is gone too: its id is unknown now.
    let r = server.post(
        server.token.as_deref(),
        Some(&id),
        &["MCP-Protocol-Version: 2025-11-25"],
        &json!({"jsonrpc": "2.0", "id": 3, "method": "tools/list", "params": {}}),
    );
    assert_eq!(r.status, 404, "{r:?}");
}
