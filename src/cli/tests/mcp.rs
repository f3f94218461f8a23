//! `luminaguard mcp serve` driven by a real MCP client from another project: the official
//! Python SDK (`mcp`, installed by scripts/setup into /var/cache/luminaguard/python-mcp), whose
//! scripts are in tests/mcp/. In-process and through the daemon; the session's sandbox is gone
//! when the client disconnects, and when the server is killed.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)] // test code

#[path = "mcp/common.rs"]
mod common;

use common::*;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use luminaguard_testkit::{privileged, text};
use serde_json::{Value, json};

/// The server's command line, as the client launches it.
fn server(e: &Env, daemon: bool) -> Vec<String> {
    let mut argv = vec![BIN.to_owned(), "--runtime-dir".into(), path(&e.rt)];
    if !daemon {
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

fn client(python: &Path, e: &Env, mode: &str, daemon: bool) -> Command {
    client_of(python, "client.py", e, mode, daemon, &[])
}

/// Client `script` in `mode`, launching the server with `serve_flags` added.
fn client_of(
    python: &Path,
    script: &str,
    e: &Env,
    mode: &str,
    daemon: bool,
    serve_flags: &[&str],
) -> Command {
    let mut argv = server(e, daemon);
    argv.extend(serve_flags.iter().map(|s| (*s).to_owned()));
    let mut cmd = Command::new(python);
    cmd.arg(scripts().join(script))
        .arg(mode)
        .env("LG_SERVER", serde_json::to_string(&argv).unwrap())
        .env("LUMINAGUARD_AUDIT_DIR", &e.audit)
        .env_remove("LUMINAGUARD_POLICY")
        .stdin(Stdio::null());
    cmd
}

/// The workspace's file `rel` holds `content` (a write that was to happen, happened).
fn written(e: &Env, rel: &str, content: &str) {
    assert_eq!(
        std::fs::read_to_string(e.ws.join(rel)).unwrap_or_default(),
        content,
        "{rel}"
    );
}

/// The workspace has no file `rel` (a write that was not to happen, did not).
fn not_written(e: &Env, rel: &str) {
    assert!(!e.ws.join(rel).exists(), "{rel} was written");
}

/// A client run in the background, its stderr watched: what `pick` finds in a line is sent on
/// the channel; the whole stderr comes back when it ends.
struct Watched {
    child: std::process::Child,
    found: std::sync::mpsc::Receiver<String>,
    reader: std::thread::JoinHandle<String>,
}

impl Watched {
    fn spawn(mut cmd: Command, pick: fn(&str) -> Option<String>) -> Self {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, found) = std::sync::mpsc::channel();
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let reader = std::thread::spawn(move || {
            let mut all = String::new();
            for line in stderr.lines() {
                let line = line.unwrap();
                if let Some(x) = pick(&line) {
                    let _ = tx.send(x);
                }
                all.push_str(&line);
                all.push('\n');
            }
            all
        });
        Self {
            child,
            found,
            reader,
        }
    }

    /// The first thing found, within `limit` (else the client is killed and its stderr shown).
    fn first(&mut self, what: &str, limit: Duration) -> String {
        match self.found.recv_timeout(limit) {
            Ok(x) => x,
            Err(_) => {
                let _ = self.child.kill();
                let _ = self.child.wait();
                let reader = std::mem::replace(&mut self.reader, std::thread::spawn(String::new));
                panic!("{what}:\n{}", reader.join().unwrap());
            }
        }
    }

    /// The client's summary, once it has ended.
    fn summary(self) -> Value {
        let mut out = self.child.wait_with_output().unwrap();
        out.stderr = self.reader.join().unwrap().into_bytes();
        summary(&out)
    }
}

#[test]
fn a_python_client_lists_validates_and_calls_every_tool_in_process() {
    if !privileged("the MCP test") {
        return;
    }
    let Some(py) = python() else { return };
    let e = env();
    let s = summary(&client(&py, &e, "tools", false).output().unwrap());
    assert_eq!(s["sandboxes"].as_array().unwrap().len(), 2, "{s}");
    // The session's sandboxes went with the session.
    assert_eq!(sandboxes(&e), Vec::<String>::new());
    // Every command is on the audit log, by the MCP front-end.
    let records = records(&e);
    let execs: Vec<&Value> = records
        .iter()
        .filter(|r| r["event"]["type"] == "exec")
        .collect();
    assert!(execs.len() >= 10, "{records:?}");
    assert!(
        execs.iter().all(|r| r["actor"]["kind"] == "mcp"),
        "{execs:?}"
    );
    // … and names the session and its client (the Python SDK says it is `mcp`).
    let session = execs[0]["actor"]["session"].as_str().unwrap_or_default();
    assert!(
        session.starts_with("mcp-") && session.contains(" mcp/"),
        "{session:?}"
    );
    assert!(
        execs.iter().all(|r| r["actor"]["session"] == session),
        "one session, one name: {execs:?}"
    );
    assert!(
        execs
            .iter()
            .any(|r| r["event"]["decision"]["verdict"] == "deny"
                && r["event"]["decision"]["rule"]["id"] == "rm-root"),
        "the denied command is on the record"
    );
    let verify = lg(&e, &["audit", "verify"]);
    assert!(verify.status.success(), "{}", text(&verify.stderr));
}

#[test]
fn a_client_with_elicitation_approves_one_write_and_denies_another() {
    if !privileged("the MCP test") {
        return;
    }
    let Some(py) = python() else { return };
    let e = env();
    let s = summary(&client(&py, &e, "elicit", false).output().unwrap());
    assert_eq!(s["asked"].as_array().unwrap().len(), 4, "{s}");
    written(&e, ".git/approved.txt", "yes\n");
    not_written(&e, ".git/denied.txt");
    written(&e, ".git/one.txt", "one\n");
    not_written(&e, ".git/two.txt");
    assert_eq!(sandboxes(&e), Vec::<String>::new());
    let approvals: Vec<Value> = records(&e)
        .into_iter()
        .filter(|r| r["event"]["type"] == "approve")
        .collect();
    assert_eq!(approvals.len(), 2, "{approvals:?}");
    assert_eq!(approvals[0]["event"]["by"]["via"], "mcp-elicitation");
}

#[test]
fn bad_json_rpc_gets_errors_and_the_server_keeps_serving() {
    if !privileged("the MCP test") {
        return;
    }
    let Some(py) = python() else { return };
    let e = env();
    let s = summary(&client(&py, &e, "raw", false).output().unwrap());
    // Each bad line got its one JSON-RPC error, with the id when it could be read.
    assert_eq!(
        s["answered"],
        json!([
            [null, -32700],
            [null, -32700],
            [null, -32700],
            [null, -32600],
            [null, -32600],
            [5, -32600],
            ["six", -32600],
            [7, -32602],
            [null, -32600]
        ]),
        "{s}"
    );
}

/// Through a running daemon, a client without elicitation: the asked write waits until a
/// person approves it with `luminaguard approvals approve`; the session's sandbox is the
/// daemon's while it lasts, and gone once the client disconnects.
#[test]
fn through_the_daemon_a_client_without_elicitation_waits_for_a_person() {
    if !privileged("the MCP test") {
        return;
    }
    let Some(py) = python() else { return };
    let e = env();
    let _d = daemon(&e);
    // The server says where to answer once it has seen the card (as the CLI does).
    let mut client = Watched::spawn(client(&py, &e, "wait", true), |line| {
        line.contains("waiting for a person to answer approval")
            .then(String::new)
    });
    client.first(
        "the server did not say it waits for a person",
        Duration::from_secs(60),
    );
    let mut approval = None;
    wait_until(
        "the asked write waits in the approvals",
        Duration::from_secs(60),
        || {
            let out = lg(&e, &["approvals", "ls", "--json"]);
            let list: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
            approval = list.first().cloned();
            approval.is_some()
        },
    );
    let a = approval.unwrap();
    let sandbox = a["card"]["sandbox"].as_str().unwrap().to_owned();
    assert_eq!(sandboxes(&e), vec![sandbox.clone()], "the daemon's sandbox");
    not_written(&e, ".git/waited.txt");
    let yes = lg(&e, &["approvals", "approve", a["id"].as_str().unwrap()]);
    assert!(yes.status.success(), "{}", text(&yes.stderr));
    let s = client.summary();
    assert_eq!(s["sandboxes"][0], sandbox.as_str());
    written(&e, ".git/waited.txt", "approved\n");
    assert_eq!(
        sandboxes(&e),
        Vec::<String>::new(),
        "left after the session"
    );
    // The daemon's records of the session's requests name the session and its client.
    let writes: Vec<Value> = records(&e)
        .into_iter()
        .filter(|r| r["event"]["type"] == "write")
        .collect();
    assert_eq!(writes.len(), 1, "{writes:?}");
    assert_eq!(writes[0]["actor"]["kind"], "daemon");
    let session = writes[0]["actor"]["session"].as_str().unwrap_or_default();
    assert!(
        session.starts_with("mcp-") && session.contains('/'),
        "{:?}",
        writes[0]["actor"]
    );
}

/// A client of the stateless 2026-07-28 revision (no `initialize`, no requests from the server):
/// the card comes as an input-required result; the approved write happens, the denied one
/// does not; a client that cannot be asked is refused.
#[test]
fn a_stateless_client_answers_cards_through_input_required_results() {
    if !privileged("the MCP test") {
        return;
    }
    let Some(py) = python_modern() else { return };
    let e = env();
    let s = summary(
        &client_of(&py, "client_modern.py", &e, "stateless", false, &[])
            .output()
            .unwrap(),
    );
    assert_eq!(s["asked"].as_array().unwrap().len(), 2, "{s}");
    written(&e, ".git/approved.txt", "yes\n");
    not_written(&e, ".git/denied.txt");
    not_written(&e, ".git/unasked.txt");
    assert_eq!(sandboxes(&e), Vec::<String>::new());
    let records = records(&e);
    let approved: Vec<&Value> = records
        .iter()
        .filter(|r| r["event"]["type"] == "approve")
        .collect();
    assert_eq!(approved.len(), 1, "{approved:?}");
    assert_eq!(approved[0]["event"]["by"]["via"], "mcp-elicitation");
    // The session is named after the client, which said who it is on its requests.
    assert!(
        approved[0]["actor"]["session"]
            .as_str()
            .is_some_and(|s| s.starts_with("mcp-")),
        "{:?}",
        approved[0]["actor"]
    );
}

/// A call a person keeps waiting answers `pending_approval` (before the host would give up),
/// and `approval_wait` resumes that very call once the person approved; progress notices come
/// while output arrives and while a person is awaited.
#[test]
fn a_call_kept_waiting_answers_pending_and_approval_wait_resumes_it() {
    if !privileged("the MCP test") {
        return;
    }
    let Some(py) = python() else { return };
    let e = env();
    let _d = daemon(&e);
    let mut client = Watched::spawn(
        client_of(
            &py,
            "client.py",
            &e,
            "pending",
            true,
            &["--pending-after", "3"],
        ),
        |line| line.strip_prefix("pending ").map(str::to_owned),
    );
    let id = client.first(
        "the call did not answer pending_approval",
        Duration::from_secs(90),
    );
    not_written(&e, ".git/later.txt");
    let shown = lg(&e, &["approvals", "show", &id, "--json"]);
    assert!(shown.status.success(), "{}", text(&shown.stderr));
    let yes = lg(&e, &["approvals", "approve", &id]);
    assert!(yes.status.success(), "{}", text(&yes.stderr));
    let s = client.summary();
    assert_eq!(s["approval"], id.as_str());
    written(&e, ".git/later.txt", "later\n");
    assert_eq!(
        sandboxes(&e),
        Vec::<String>::new(),
        "left after the session"
    );
}

/// A server killed with SIGKILL (no goodbye, no cleanup of its own) leaves no sandbox: through
/// the daemon, its held run's connection closes; in-process, the sandbox lived as long as it.
#[test]
fn a_killed_server_leaves_no_sandbox() {
    if !privileged("the MCP test") {
        return;
    }
    let e = env();
    let d = daemon(&e);
    for through_daemon in [true, false] {
        let argv = server(&e, through_daemon);
        let mut child = Command::new(&argv[0])
            .args(&argv[1..])
            .env("LUMINAGUARD_AUDIT_DIR", &e.audit)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut send = |v: Value| {
            writeln!(stdin, "{v}").unwrap();
            stdin.flush().unwrap();
        };
        let mut recv = || {
            let mut line = String::new();
            stdout.read_line(&mut line).unwrap();
            serde_json::from_str::<Value>(&line).unwrap()
        };
        send(
            json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "killer", "version": "0"}}}),
        );
        assert!(recv()["result"].is_object());
        send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
        send(
            json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
            "name": "run_command", "arguments": {"command": "echo up"}}}),
        );
        let r = recv();
        assert_eq!(r["result"]["structuredContent"]["stdout"], "up\n", "{r}");
        let id = r["result"]["structuredContent"]["sandbox_id"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(sandboxes(&e), vec![id.clone()]);
        child.kill().unwrap();
        child.wait().unwrap();
        wait_until(
            &format!("sandbox {id} gone after its server was killed (daemon: {through_daemon})"),
            Duration::from_secs(15),
            || {
                // In-process, what the dead sandbox left is collected by the next gc (as
                // every command that creates one does first); it no longer runs at once.
                if !through_daemon {
                    let _ = lg(&e, &["--no-daemon", "gc"]);
                }
                sandboxes(&e).is_empty()
            },
        );
    }
    drop(d);
}

/// Splits a line the way a POSIX shell splits what `mcp config claude-code` prints: bare words
/// and single-quoted ones (with `'\''` for a quote), nothing else.
fn shell_split(line: &str) -> Vec<String> {
    let (mut words, mut cur, mut quoted, mut any) = (Vec::new(), String::new(), false, false);
    for c in line.trim_end().chars() {
        match (c, quoted) {
            ('\'', _) => {
                quoted = !quoted;
                any = true;
            }
            ('\\', false) => {}
            (' ', false) => {
                if any || !cur.is_empty() {
                    words.push(std::mem::take(&mut cur));
                }
                any = false;
            }
            (c, _) => cur.push(c),
        }
    }
    if any || !cur.is_empty() {
        words.push(cur);
    }
    words
}

/// Every host's snippet parses as what that host reads, and the command it names, launched
/// the way the host would, answers an MCP `initialize` — with the workspace made absolute.
#[test]
fn every_host_snippet_parses_and_launches_a_server_that_answers() {
    let rt = tempfile::tempdir().unwrap();
    let cwd = rt.path().join("here");
    std::fs::create_dir(&cwd).unwrap();
    for host in ["claude-code", "claude-desktop", "cursor", "codex", "vscode"] {
        let out = Command::new(BIN)
            .current_dir(&cwd)
            .args([
                "mcp",
                "config",
                host,
                "--",
                "--workspace",
                "ws",
                "--memory",
                "1G",
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{host}: {}", text(&out.stderr));
        let snippet = text(&out.stdout);
        let (command, args): (String, Vec<String>) = match host {
            "claude-code" => {
                let words = shell_split(&snippet);
                let at = words.iter().position(|w| w == "--").unwrap();
                assert_eq!(
                    &words[..at],
                    ["claude", "mcp", "add", "luminaguard"],
                    "{snippet}"
                );
                (words[at + 1].clone(), words[at + 2..].to_vec())
            }
            "codex" => {
                let v: toml::Table = snippet.parse().unwrap();
                let t = &v["mcp_servers"]["luminaguard"];
                let args = t["args"].as_array().unwrap();
                (
                    t["command"].as_str().unwrap().to_owned(),
                    args.iter()
                        .map(|a| a.as_str().unwrap().to_owned())
                        .collect(),
                )
            }
            _ => {
                let v: Value = serde_json::from_str(&snippet).unwrap();
                let key = if host == "vscode" {
                    "servers"
                } else {
                    "mcpServers"
                };
                let e = &v[key]["luminaguard"];
                if host == "vscode" {
                    assert_eq!(e["type"], "stdio", "{snippet}");
                }
                (
                    e["command"].as_str().unwrap().to_owned(),
                    e["args"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|a| a.as_str().unwrap().to_owned())
                        .collect(),
                )
            }
        };
        assert!(Path::new(&command).is_absolute(), "{host}: {command}");
        let ws = cwd.join("ws").display().to_string();
        assert_eq!(
            args,
            ["mcp", "serve", "--workspace", ws.as_str(), "--memory", "1G"],
            "{host}: {snippet}"
        );
        // Launched as the host would, from another directory: it speaks MCP.
        let mut server = Command::new(&command)
            .args(&args)
            .arg("--no-daemon")
            .current_dir(rt.path())
            .env("LUMINAGUARD_AUDIT_DIR", rt.path().join("audit"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdin = server.stdin.take().unwrap();
        let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "snippet-test", "version": "1"}}});
        writeln!(stdin, "{init}").unwrap();
        let mut line = String::new();
        BufReader::new(server.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let reply: Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("{host}: {e}: {line}"));
        assert_eq!(reply["id"], 1, "{host}: {reply}");
        assert!(
            reply["result"]["serverInfo"]["name"].is_string(),
            "{host}: {reply}"
        );
        drop(stdin);
        assert!(
            server.wait().unwrap().success(),
            "{host}: the server did not end cleanly"
        );
    }
}

/// A client that cancels a call (`notifications/cancelled`) gets its command killed with its
/// process tree; the session and its sandbox serve on.
#[test]
fn a_cancelled_call_kills_its_command_and_the_session_serves_on() {
    if !privileged("the MCP cancellation test") {
        return;
    }
    let e = env();
    let argv = server(&e, false);
    let mut child = Command::new(&argv[0])
        .args(&argv[1..])
        .env("LUMINAGUARD_AUDIT_DIR", &e.audit)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut send = |v: Value| writeln!(stdin, "{v}").unwrap();
    send(
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "cancel-test", "version": "1"}}}),
    );
    let init: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(init["id"], 1, "{init}");
    send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
    // A tree: a shell whose child sleeps.
    send(
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
        "name": "run_command", "arguments": {"command": "sleep 3017 & sleep 3018; wait"}}}),
    );
    wait_until("the command to start", Duration::from_secs(60), || {
        !luminaguard_testkit::live_processes_matching(&["sleep 3018"]).is_empty()
    });
    send(
        json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
        "params": {"requestId": 2, "reason": "the user pressed stop"}}),
    );
    wait_until(
        "the cancelled command's tree to be gone",
        Duration::from_secs(20),
        || luminaguard_testkit::live_processes_matching(&["sleep 301"]).is_empty(),
    );
    // The session serves on, in the same sandbox.
    send(
        json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {
        "name": "run_command", "arguments": {"command": "echo still here"}}}),
    );
    let reply = loop {
        let v: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
        if v["id"] == 3 {
            break v;
        }
    };
    assert_eq!(
        reply["result"]["structuredContent"]["stdout"], "still here\n",
        "{reply}"
    );
    drop(stdin);
    assert!(child.wait().unwrap().success());
}

/// The peak resident memory of process `pid` (`VmHWM`), in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    kib << 10
}

/// A command that prints 1 GiB: the result keeps the head and the tail with the count of what
/// was dropped between, and the server's memory stays bounded — the output is streamed through
/// with back-pressure (the protocol's per-exec buffer: 64 chunks of at most 64 KiB) and kept
/// as `--output-limit` bytes (64 KiB: 32 KiB head, 32 KiB tail), never gathered.
#[test]
fn a_command_that_prints_a_gib_gets_a_truncated_result_in_bounded_memory() {
    if !privileged("the MCP 1 GiB output test") {
        return;
    }
    const GIB: u64 = 1 << 30;
    const HALF: usize = 32 << 10;
    let e = env();
    let argv = server(&e, false);
    let mut child = Command::new(&argv[0])
        .args(&argv[1..])
        .env("LUMINAGUARD_AUDIT_DIR", &e.audit)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut call = |id: u64, method: &str, params: Value| -> Value {
        writeln!(
            stdin,
            "{}",
            json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
        )
        .unwrap();
        loop {
            let v: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
            if v["id"] == id {
                return v;
            }
        }
    };
    let init = call(
        1,
        "initialize",
        json!({"protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "gib-test", "version": "1"}}),
    );
    assert_eq!(init["id"], 1, "{init}");
    // The session's sandbox made, a small command run: the server's size before the GiB.
    let small = call(
        2,
        "tools/call",
        json!({"name": "run_command", "arguments": {"command": "echo small"}}),
    );
    assert_eq!(
        small["result"]["structuredContent"]["stdout"], "small\n",
        "{small}"
    );
    let before = peak_rss(child.id());
    let big = call(
        3,
        "tools/call",
        json!({"name": "run_command", "arguments": {
            "command": format!("head -c {GIB} /dev/zero | tr '\\0' x; echo END"),
            "timeout": 3600}}),
    );
    // Read while the server still runs (its session holds the sandbox until stdin closes).
    let after = peak_rss(child.id());
    let r = &big["result"]["structuredContent"];
    assert_eq!(
        r["exit_code"],
        0,
        "{}",
        &big.to_string()[..2000.min(big.to_string().len())]
    );
    assert_eq!(r["truncated"], true);
    let stdout = r["stdout"].as_str().unwrap();
    let dropped = GIB + 4 - 2 * HALF as u64; // + "END\n"
    let marker = format!("\n[... {dropped} bytes of output dropped here ...]\n");
    assert_eq!(
        stdout.len(),
        2 * HALF + marker.len(),
        "head + marker + tail: {}",
        &stdout[HALF - 10..HALF + 100]
    );
    assert_eq!(&stdout[..HALF], "x".repeat(HALF));
    assert_eq!(&stdout[HALF..HALF + marker.len()], marker);
    assert_eq!(
        &stdout[HALF + marker.len()..],
        format!("{}END\n", "x".repeat(HALF - 4))
    );
    eprintln!(
        "server peak RSS: {:.1} MiB after a small command, {:.1} MiB after 1 GiB of output",
        before as f64 / f64::from(1 << 20),
        after as f64 / f64::from(1 << 20)
    );
    // Far below the GiB: the process's own size, plus what is in flight.
    assert!(after < 200 << 20, "peak RSS {after} bytes");
    assert!(
        after - before < 32 << 20,
        "the GiB grew the server by {} bytes",
        after - before
    );
    drop(stdin);
    assert!(child.wait().unwrap().success());
}
