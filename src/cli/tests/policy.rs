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
