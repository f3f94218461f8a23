//! The policy as an attacker meets it, through every caller path there is — the CLI in-process,
//! the CLI through the daemon, the daemon's API — and the audit trail each leaves: a denied
//! command never runs however it is wrapped; an asked one never changes the workspace without
//! a person; every decision is on a log that verifies, and an edit to it is caught.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)] // test code

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use luminaguard_testkit::daemon::Daemon;
use luminaguard_testkit::{privileged, text};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_luminaguard");

struct Env {
    _dir: tempfile::TempDir,
    rt: PathBuf,
    audit: PathBuf,
    ws: PathBuf,
}

fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    std::fs::create_dir_all(ws.join("data")).unwrap();
    std::fs::write(ws.join("data/keep.txt"), "precious\n").unwrap();
    Env {
        rt: dir.path().join("rt"),
        audit: dir.path().join("audit"),
        ws,
        _dir: dir,
    }
}

/// `luminaguard ARGS` in a session without a terminal, with this test's audit log and the
/// default policy.
fn lg(e: &Env, args: &[&str]) -> Output {
    Command::new("setsid")
        .arg("-w")
        .arg(BIN)
        .arg("--runtime-dir")
        .arg(&e.rt)
        .args(args)
        .env("LUMINAGUARD_AUDIT_DIR", &e.audit)
        .env_remove("LUMINAGUARD_POLICY")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn tree(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    for e in walk(root) {
        let body = if e.is_file() {
            std::fs::read(&e).unwrap()
        } else {
            b"<dir>".to_vec()
        };
        out.insert(e.strip_prefix(root).unwrap().to_owned(), body);
    }
    out
}

fn walk(p: &Path) -> Vec<PathBuf> {
    let mut all = vec![p.to_owned()];
    if p.is_dir() && !p.is_symlink() {
        for e in std::fs::read_dir(p).unwrap() {
            all.extend(walk(&e.unwrap().path()));
        }
    }
    all
}

/// Every way of running `rm -rf /workspace` a model might write.
const DENIED: &[&[&str]] = &[
    &["rm", "-rf", "/workspace"],
    &["/bin/rm", "-rf", "/workspace"],
    &["sh", "-c", "ls; rm -rf /workspace"],
    &["bash", "-c", "true && rm -fr /workspace/"],
    &["env", "FOO=1", "rm", "-rf", "/workspace"],
    &["timeout", "5", "rm", "-r", "-f", "/workspace"],
    &["sh", "-c", "echo /workspace | xargs rm -rf /workspace"],
    &[
        "nice",
        "-n",
        "5",
        "sh",
        "-c",
        "cd / && rm -rf workspace /workspace",
    ],
    &["sh", "-c", "x=$(rm -rf /workspace); echo $x"],
];

#[test]
fn a_denied_command_never_runs_whatever_wraps_it() {
    if !privileged("the policy test") {
        return;
    }
    let e = env();
    let before = tree(&e.ws);
    let ws = e.ws.to_str().unwrap();
    for argv in DENIED {
        let mut args = vec!["run", "--workspace", ws, "--"];
        args.extend_from_slice(argv);
        let out = lg(&e, &args);
        assert!(!out.status.success(), "{argv:?} ran");
        assert!(
            text(&out.stderr).contains("denied by policy"),
            "{argv:?}: {}",
            text(&out.stderr)
        );
        assert_eq!(tree(&e.ws), before, "{argv:?} changed the workspace");
    }
    // A long-lived sandbox: the same refusal for `sandbox exec`.
    let out = lg(
        &e,
        &["sandbox", "create", "--name", "long", "--workspace", ws],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    for argv in DENIED {
        let mut args = vec!["sandbox", "exec", "long", "--"];
        args.extend_from_slice(argv);
        let out = lg(&e, &args);
        assert!(
            !out.status.success() && text(&out.stderr).contains("denied by policy"),
            "{argv:?}: {}",
            text(&out.stderr)
        );
    }
    assert_eq!(tree(&e.ws), before);
    assert!(lg(&e, &["sandbox", "rm", "long"]).status.success());

    // The daemon's API refuses them as well, with the stable code.
    let d = Daemon::start(
        Path::new(BIN),
        &e.rt.with_file_name("drt"),
        &format!(
            "log = \"error\"\naudit_dir = \"{}\"\n[defaults]\nbackend = \"process\"\n",
            e.audit.display()
        ),
    );
    for argv in DENIED {
        let body = serde_json::json!({"argv": argv, "sandbox": {"workspace": ws}}).to_string();
        let out = Command::new("curl")
            .args(["-sS", "--unix-socket"])
            .arg(&d.socket)
            .args(["-w", "\n%{http_code}", "-d", &body, "http://lg/v1/run"])
            .output()
            .unwrap();
        let reply = text(&out.stdout);
        assert!(
            reply.ends_with("\n403") && reply.contains("\"forbidden\""),
            "{argv:?}: {reply}"
        );
    }
    drop(d);
    assert_eq!(tree(&e.ws), before);

    // Every refusal is on the audit log, with the rule that decided.
    let ls = lg(&e, &["audit", "ls", "--json"]);
    let denied = text(&ls.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|r| r["event"]["decision"]["verdict"] == "deny")
        .count();
    assert_eq!(denied, DENIED.len() * 3, "{}", text(&ls.stdout));
}

#[test]
fn an_asked_command_on_a_workspace_changes_nothing_without_a_person() {
    if !privileged("the policy test") {
        return;
    }
    let e = env();
    let before = tree(&e.ws);
    let ws = e.ws.to_str().unwrap();
    // A script written to the workspace and then run: the policy cannot see it, so it asks;
    // with nobody at a terminal, nothing it did reaches the workspace.
    for script in [
        "printf 'rm -r /workspace/data\\n' > /workspace/do.sh; sh /workspace/do.sh",
        "printf '#!/bin/sh\\nrm -r /workspace/data\\n' > /workspace/x; chmod +x /workspace/x; /workspace/x",
        "ln -s /bin/rm /workspace/del; /workspace/del -r /workspace/data",
    ] {
        let out = lg(&e, &["run", "--workspace", ws, "--", "sh", "-c", script]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{script}: {err}");
        assert!(err.contains("runs as a review"), "{script}: {err}");
        assert!(err.contains("nothing was applied"), "{script}: {err}");
        assert_eq!(tree(&e.ws), before, "{script} changed the workspace");
    }
    // A long-lived sandbox writes its workspace directly: an asked command is held, not run.
    std::fs::write(e.ws.join("do.sh"), "rm -r /workspace/data\n").unwrap();
    let before = tree(&e.ws);
    let out = lg(
        &e,
        &["sandbox", "create", "--name", "long", "--workspace", ws],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = lg(
        &e,
        &["sandbox", "exec", "long", "--", "sh", "/workspace/do.sh"],
    );
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("held for a person's approval"), "{err}");
    assert_eq!(tree(&e.ws), before, "a held command changed the workspace");
    assert!(lg(&e, &["sandbox", "rm", "long"]).status.success());
}

#[test]
fn the_audit_log_verifies_and_an_edit_to_it_is_caught() {
    if !privileged("the policy test") {
        return;
    }
    let e = env();
    for argv in [&["echo", "one"][..], &["sh", "-c", "exit 3"]] {
        let mut args = vec!["run", "--"];
        args.extend_from_slice(argv);
        lg(&e, &args);
    }
    let ls = lg(&e, &["audit", "ls", "--json"]);
    let records: Vec<Value> = text(&ls.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: Vec<&str> = records
        .iter()
        .map(|r| r["event"]["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "create", "exec", "exit", "destroy", "create", "exec", "exit", "destroy"
        ]
    );
    assert_eq!(records[6]["event"]["report"]["code"], 3);
    assert_eq!(records[1]["event"]["decision"]["verdict"], "allow");
    let out = lg(&e, &["audit", "verify"]);
    assert!(out.status.success(), "{}", text(&out.stdout));
    let proof = lg(&e, &["audit", "prove", "5"]);
    let proof: Value = serde_json::from_slice(&proof.stdout).unwrap();
    assert_eq!(proof["seq"], 5);
    assert!(
        proof["checkpoint"]
            .as_str()
            .unwrap()
            .contains("luminaguard/audit")
    );

    // Someone rewrites what a command was.
    let seg = e.audit.join("audit-000000.jsonl");
    let edited = std::fs::read_to_string(&seg)
        .unwrap()
        .replacen("\"one\"", "\"two\"", 1);
    std::fs::write(&seg, edited).unwrap();
    let out = lg(&e, &["audit", "verify"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains("line 2, seq 1"),
        "{}",
        text(&out.stdout)
    );
}

/// `luminaguard ARGS` started in the background, as `lg` runs it.
fn lg_spawn(e: &Env, args: &[&str]) -> std::process::Child {
    Command::new("setsid")
        .arg("-w")
        .arg(BIN)
        .arg("--runtime-dir")
        .arg(&e.rt)
        .args(args)
        .env("LUMINAGUARD_AUDIT_DIR", &e.audit)
        .env_remove("LUMINAGUARD_POLICY")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Reads `child`'s stderr on a thread until a line contains `needle` (returned: the whole
/// stderr, once the child has ended).
fn stderr_until(child: &mut std::process::Child, needle: &str) -> std::thread::JoinHandle<String> {
    use std::io::BufRead;
    let err = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let needle = needle.to_owned();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        let mut lines = std::io::BufReader::new(err);
        let mut line = String::new();
        while lines.read_line(&mut line).unwrap_or(0) > 0 {
            if line.contains(&needle) {
                let _ = tx.send(());
            }
            all.push_str(&line);
            line.clear();
        }
        all
    });
    rx.recv_timeout(std::time::Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("never said {:?}", "where to answer"));
    reader
}

/// A daemon on `e`'s runtime directory (what `lg` finds) with the default policy.
fn daemon(e: &Env) -> Daemon {
    Daemon::start(
        Path::new(BIN),
        &e.rt,
        &format!(
            "audit_dir = \"{}\"\n[defaults]\nbackend = \"process\"\n",
            e.audit.display()
        ),
    )
}

/// The first approval waiting, once there is one.
fn first_approval(e: &Env) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let out = lg(e, &["approvals", "ls", "--json"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let list: Value = serde_json::from_slice(&out.stdout).unwrap();
        if let Some(a) = list.as_array().unwrap().first() {
            return a.clone();
        }
        assert!(std::time::Instant::now() < deadline, "no approval came up");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn records(e: &Env) -> Vec<Value> {
    let ls = lg(e, &["audit", "ls", "--json"]);
    text(&ls.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Network cannot be previewed: a destination the policy asks about is put to a person before
/// the sandbox exists, one it denies is refused — and with nobody to ask, nothing is made.
#[test]
fn a_network_is_given_only_once_a_person_approves_it() {
    if !privileged("the policy test") {
        return;
    }
    let e = env();
    // In this process with no terminal: nobody to ask.
    let out = lg(&e, &["run", "--net", "192.0.2.1:80", "--", "true"]);
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("held for a person's approval"), "{err}");
    assert!(err.contains("192.0.2.1:80"), "{err}");
    // A policy that denies it: refused, whatever the terminal.
    let deny = e.rt.with_extension("deny.toml");
    std::fs::write(
        &deny,
        "version = 1\ndefault = \"ask\"\n[[rule]]\nid = \"no-net\"\ndecision = \"deny\"\n\
         reason = \"no network here\"\nnet = [\"*\"]\nexamples = [\"192.0.2.1:80\"]\n",
    )
    .unwrap();
    let out = lg(
        &e,
        &[
            "--policy",
            deny.to_str().unwrap(),
            "run",
            "--net",
            "192.0.2.1:80",
            "--",
            "true",
        ],
    );
    let err = text(&out.stderr);
    assert!(
        err.contains("denied by policy: network to 192.0.2.1:80"),
        "{err}"
    );
    assert!(err.contains("no network here"), "{err}");

    // Through the daemon the create waits for an answer; denied, nothing is made.
    let mut d = daemon(&e);
    let child = lg_spawn(
        &e,
        &[
            "sandbox",
            "create",
            "--name",
            "netbox",
            "--net",
            "192.0.2.1:80",
        ],
    );
    let a = first_approval(&e);
    assert_eq!(a["card"]["action"]["kind"], "network", "{a}");
    assert_eq!(a["card"]["action"]["network"][0], "192.0.2.1:80", "{a}");
    assert!(
        a["card"]["text"]
            .as_str()
            .unwrap()
            .contains("cannot be previewed"),
        "{a}"
    );
    let id = a["id"].as_str().unwrap();
    let no = lg(&e, &["approvals", "deny", id, "--reason", "not that host"]);
    assert!(no.status.success(), "{}", text(&no.stderr));
    let out = child.wait_with_output().unwrap();
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("not that host"), "{err}");
    let ls = lg(&e, &["sandbox", "ls", "--json"]);
    assert_eq!(
        text(&ls.stdout).trim(),
        "[]",
        "a denied network's sandbox was made"
    );
    let types: Vec<String> = records(&e)
        .iter()
        .filter(|r| r["event"]["sandbox"] == "netbox")
        .map(|r| r["event"]["type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(types, ["network", "ask", "decline"], "{types:?}");
    d.stop();
}

/// A long-lived sandbox writes its workspace directly, so an asked command cannot be
/// previewed: through the daemon it waits for a person, and runs only once approved.
#[test]
fn through_the_daemon_an_asked_command_on_a_direct_workspace_runs_only_once_approved() {
    if !privileged("the policy test") {
        return;
    }
    let e = env();
    let ws = e.ws.to_str().unwrap();
    std::fs::write(e.ws.join("do.sh"), "rm -r /workspace/data\n").unwrap();
    let before = tree(&e.ws);
    let mut d = daemon(&e);
    let out = lg(
        &e,
        &["sandbox", "create", "--name", "long", "--workspace", ws],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let exec = ["sandbox", "exec", "long", "--", "sh", "/workspace/do.sh"];

    let mut child = lg_spawn(&e, &exec);
    let a = first_approval(&e);
    // While it waits, it says where to answer.
    let told = format!(
        "waiting for a person to answer approval {}",
        a["id"].as_str().unwrap()
    );
    let stderr = stderr_until(&mut child, &told);
    assert_eq!(a["card"]["action"]["kind"], "exec", "{a}");
    assert_eq!(a["card"]["action"]["argv"][1], "/workspace/do.sh", "{a}");
    assert_eq!(
        tree(&e.ws),
        before,
        "the command ran before it was answered"
    );
    let no = lg(&e, &["approvals", "deny", a["id"].as_str().unwrap()]);
    assert!(no.status.success(), "{}", text(&no.stderr));
    let status = child.wait().unwrap();
    let err = stderr.join().unwrap();
    assert!(!status.success(), "{err}");
    assert!(err.contains("a person was asked"), "{err}");
    assert_eq!(
        tree(&e.ws),
        before,
        "a denied command changed the workspace"
    );

    let child = lg_spawn(&e, &exec);
    let a = first_approval(&e);
    let yes = lg(&e, &["approvals", "approve", a["id"].as_str().unwrap()]);
    assert!(yes.status.success(), "{}", text(&yes.stderr));
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        !e.ws.join("data").exists(),
        "the approved command did not run"
    );
    let approvals: Vec<Value> = records(&e)
        .into_iter()
        .filter(|r| r["event"]["type"] == "approve")
        .collect();
    assert_eq!(approvals.len(), 1, "{approvals:?}");
    assert_eq!(approvals[0]["event"]["action"]["kind"], "exec");

    // Approved for the session: the same command runs again in this sandbox without asking;
    // another command still asks.
    std::fs::write(
        e.ws.join("again.sh"),
        "echo again >> /workspace/count.txt\n",
    )
    .unwrap();
    let again = ["sandbox", "exec", "long", "--", "sh", "/workspace/again.sh"];
    let child = lg_spawn(&e, &again);
    let a = first_approval(&e);
    let yes = lg(
        &e,
        &[
            "approvals",
            "approve",
            a["id"].as_str().unwrap(),
            "--for-session",
        ],
    );
    assert!(yes.status.success(), "{}", text(&yes.stderr));
    assert!(child.wait_with_output().unwrap().status.success());
    let out = lg(&e, &again);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        std::fs::read_to_string(e.ws.join("count.txt")).unwrap(),
        "again\nagain\n"
    );
    let granted: Vec<Value> = records(&e)
        .into_iter()
        .filter(|r| r["event"]["type"] == "approve" && r["event"]["scope"] == "session")
        .collect();
    assert_eq!(granted.len(), 2, "{granted:?}");
    assert_eq!(granted[1]["event"]["granted_by"], a["id"]);
    let other = lg_spawn(
        &e,
        &["sandbox", "exec", "long", "--", "sh", "/workspace/do.sh"],
    );
    let a2 = first_approval(&e);
    assert_ne!(a2["id"], a["id"]);
    assert!(
        lg(&e, &["approvals", "deny", a2["id"].as_str().unwrap()])
            .status
            .success()
    );
    assert!(!other.wait_with_output().unwrap().status.success());
    assert!(lg(&e, &["sandbox", "rm", "long"]).status.success());
    d.stop();
}

/// *Always*: the entry is shown first, then appended to the policy file, which decides from
/// then on — exactly that command runs without asking, nothing else does; a preset cannot take
/// one.
#[test]
fn approved_always_adds_exactly_that_action_to_the_policy_file() {
    if !privileged("the policy test") {
        return;
    }
    let e = env();
    let ws = e.ws.to_str().unwrap();
    std::fs::write(
        e.ws.join("again.sh"),
        "echo again >> /workspace/count.txt\n",
    )
    .unwrap();
    let file = e.rt.with_extension("policy.toml");
    let shown = lg(&e, &["policy", "show"]);
    std::fs::write(&file, &shown.stdout).unwrap();
    let mut d = Daemon::start(
        Path::new(BIN),
        &e.rt,
        &format!(
            "audit_dir = \"{}\"\npolicy = \"{}\"\n[defaults]\nbackend = \"process\"\n",
            e.audit.display(),
            file.display()
        ),
    );
    assert!(
        lg(
            &e,
            &["sandbox", "create", "--name", "long", "--workspace", ws]
        )
        .status
        .success()
    );
    let again = ["sandbox", "exec", "long", "--", "sh", "/workspace/again.sh"];
    let child = lg_spawn(&e, &again);
    let a = first_approval(&e);
    let id = a["id"].as_str().unwrap();
    let entry = a["always"].as_str().unwrap();
    assert!(
        entry.contains("exec = [\"sh\", \"/workspace/again.sh\"]"),
        "{entry}"
    );
    let show = lg(&e, &["approvals", "show", id]);
    assert!(
        text(&show.stdout).contains("Approving it always adds to"),
        "{}",
        text(&show.stdout)
    );
    let yes = lg(&e, &["approvals", "approve", id, "--always"]);
    assert!(yes.status.success(), "{}", text(&yes.stderr));
    assert!(child.wait_with_output().unwrap().status.success());
    let policy = std::fs::read_to_string(&file).unwrap();
    assert!(
        policy.starts_with(&text(&shown.stdout)),
        "the file was rewritten, not appended to"
    );
    assert!(policy.contains(&format!("approval = \"{id}\"")), "{policy}");
    assert!(policy.contains("by = \"uid 0 via api\""), "{policy}");
    // The file is a policy that checks, and it allows exactly that command.
    let check = lg(
        &e,
        &[
            "--policy",
            file.to_str().unwrap(),
            "policy",
            "check",
            "--",
            "sh",
            "/workspace/again.sh",
        ],
    );
    assert!(
        text(&check.stdout).starts_with("allow"),
        "{}",
        text(&check.stdout)
    );
    // The daemon decides by it already: the same command runs without asking …
    let out = lg(&e, &again);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        std::fs::read_to_string(e.ws.join("count.txt")).unwrap(),
        "again\nagain\n"
    );
    // … and another still asks.
    let other = lg_spawn(
        &e,
        &[
            "sandbox",
            "exec",
            "long",
            "--",
            "sh",
            "/workspace/again.sh",
            "x",
        ],
    );
    let a2 = first_approval(&e);
    assert!(
        lg(&e, &["approvals", "deny", a2["id"].as_str().unwrap()])
            .status
            .success()
    );
    assert!(!other.wait_with_output().unwrap().status.success());
    let always: Vec<Value> = records(&e)
        .into_iter()
        .filter(|r| r["event"]["type"] == "approve" && r["event"]["scope"] == "always")
        .collect();
    assert_eq!(always.len(), 1, "{always:?}");
    assert!(lg(&e, &["sandbox", "rm", "long"]).status.success());
    d.stop();

    // Under a preset there is no file to add to: refused, and the card stays answerable.
    let mut d = daemon(&e);
    let e2 = &e;
    assert!(
        lg(
            e2,
            &["sandbox", "create", "--name", "long2", "--workspace", ws]
        )
        .status
        .success()
    );
    let child = lg_spawn(
        e2,
        &[
            "sandbox",
            "exec",
            "long2",
            "--",
            "sh",
            "/workspace/again.sh",
        ],
    );
    let a = first_approval(e2);
    assert!(a.get("always").is_none(), "{a}");
    let id = a["id"].as_str().unwrap();
    let no = lg(e2, &["approvals", "approve", id, "--always"]);
    assert!(!no.status.success());
    assert!(text(&no.stderr).contains("preset"), "{}", text(&no.stderr));
    assert!(lg(e2, &["approvals", "deny", id]).status.success());
    assert!(!child.wait_with_output().unwrap().status.success());
    assert!(lg(e2, &["sandbox", "rm", "long2"]).status.success());
    d.stop();
}

/// *Always* writes the daemon's policy file, which is the operator's: another user who may
/// answer their own card (it is theirs) is refused `scope: always` (`403`), the file is not
/// touched, and the card stays answerable once.
#[test]
fn another_user_cannot_write_the_daemons_policy_by_approving_always() {
    use luminaguard_testkit::http::{curl_as, reply};
    if !privileged("the policy test") {
        return;
    }
    let e = env();
    let file = e.rt.with_extension("policy.toml");
    std::fs::write(&file, lg(&e, &["policy", "show"]).stdout).unwrap();
    let before = std::fs::read(&file).unwrap();
    // `nogroup` exists on every Debian; its members (by primary gid here) may connect.
    let mut d = Daemon::start(
        Path::new(BIN),
        &e.rt,
        &format!(
            "audit_dir = \"{}\"\npolicy = \"{}\"\n[daemon]\ngroup = \"nogroup\"\n\
             [defaults]\nbackend = \"process\"\n",
            e.audit.display(),
            file.display()
        ),
    );
    let sock = d.socket.clone();
    let alice = Some((1000, 65534));
    let ws = e.rt.with_extension("alice-ws");
    std::fs::create_dir(&ws).unwrap();
    std::fs::write(ws.join("again.sh"), "echo again >> /workspace/count.txt\n").unwrap();
    for p in [&ws, &ws.join("again.sh")] {
        std::os::unix::fs::chown(p, Some(1000), Some(1000)).unwrap();
    }
    let body = format!(r#"{{"name":"al","workspace":"{}"}}"#, ws.display());
    let r = reply(curl_as(
        &sock,
        "POST",
        "/v1/sandboxes",
        Some(body.as_bytes()),
        alice,
    ));
    assert_eq!(r.status, 201, "{}", r.body);
    // Her asked command waits for an answer (her request with it).
    let exec_sock = sock.clone();
    let exec = std::thread::spawn(move || {
        reply(curl_as(
            &exec_sock,
            "POST",
            "/v1/sandboxes/al/exec",
            Some(br#"{"argv":["sh","/workspace/again.sh"]}"#),
            alice,
        ))
    });
    let a = first_approval(&e);
    let id = a["id"].as_str().unwrap().to_owned();
    assert!(a["always"].is_string(), "root could approve it always: {a}");
    let path = format!("/v1/approvals/{id}");
    let r = reply(curl_as(
        &sock,
        "POST",
        &path,
        Some(br#"{"decision":"approve","scope":"always"}"#),
        alice,
    ));
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("only root or uid"), "{}", r.body);
    assert_eq!(
        std::fs::read(&file).unwrap(),
        before,
        "the policy file changed"
    );
    // Still hers to answer, once.
    let r = reply(curl_as(
        &sock,
        "POST",
        &path,
        Some(br#"{"decision":"approve"}"#),
        alice,
    ));
    assert_eq!(r.status, 200, "{}", r.body);
    let ran = exec.join().unwrap();
    assert_eq!(ran.status, 200, "{}", ran.body);
    assert_eq!(
        std::fs::read_to_string(ws.join("count.txt")).unwrap(),
        "again\n"
    );
    assert_eq!(
        std::fs::read(&file).unwrap(),
        before,
        "the policy file changed"
    );
    let r = reply(curl_as(&sock, "DELETE", "/v1/sandboxes/al", None, alice));
    assert!(r.status < 300, "{}", r.body);
    d.stop();
}
