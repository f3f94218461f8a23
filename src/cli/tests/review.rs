//! `luminaguard run --review`: a speculative run against an overlay of the workspace, its Diff
//! Card, and the Approval Cliff at the terminal — approve applies exactly the card, deny or no
//! terminal applies nothing, a workspace changed after the card refuses the whole change set.
//! The terminal is a real pseudo-terminal (`script`), as a person's would be.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)] // test code

use std::io::Read;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use luminaguard_testkit::review::{self, CHANGES, Fixture, fixture, tree};
use luminaguard_testkit::{privileged, text};

const BIN: &str = env!("CARGO_BIN_EXE_luminaguard");

fn args<'a>(f: &'a Fixture, script: &'a str) -> Vec<&'a str> {
    vec![
        "--runtime-dir",
        f.runtime.to_str().unwrap(),
        "run",
        "--backend",
        "process",
        "--review",
        "--workspace",
        f.ws.to_str().unwrap(),
        "--",
        "sh",
        "-c",
        script,
    ]
}

/// Runs the CLI in a session of its own with no controlling terminal.
fn without_terminal(args: &[&str]) -> Output {
    review::without_terminal(BIN, args)
}

/// Runs the CLI on a pseudo-terminal (see [`review::on_terminal`]).
fn on_terminal(args: &[&str], before_answer: impl FnOnce(), answer: &str) -> (Option<i32>, String) {
    review::on_terminal(BIN, args, before_answer, answer)
}

#[test]
fn without_a_terminal_or_with_a_no_the_workspace_stays_byte_identical() {
    if !privileged("the review test") {
        return;
    }
    let f = fixture();
    let before = tree(&f.ws);
    let out = without_terminal(&args(&f, CHANGES));
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(text(&out.stdout), "done\n");
    review::assert_card_lists_changes(&err);
    assert!(err.contains("no terminal to ask"), "{err}");
    assert_eq!(
        tree(&f.ws),
        before,
        "a review without an answer changed the workspace"
    );

    let (code, screen) = on_terminal(&args(&f, CHANGES), || {}, "n\n");
    assert_eq!(code, Some(1), "{screen}");
    assert!(
        screen.contains("denied by uid 0 (terminal): denied at the terminal; nothing was applied"),
        "{screen}"
    );
    assert_eq!(tree(&f.ws), before, "a denied review changed the workspace");
}

#[test]
fn an_approved_card_is_applied_exactly_and_belongs_to_the_workspaces_owner() {
    if !privileged("the review test") {
        return;
    }
    let f = fixture();
    let (code, screen) = on_terminal(&args(&f, CHANGES), || {}, "y\n");
    assert_eq!(code, Some(0), "{screen}");
    assert!(screen.contains("applied"), "{screen}");
    review::assert_changes_applied(&tree(&f.ws), 1000);
}

#[test]
fn a_workspace_changed_after_the_card_refuses_the_whole_change_set() {
    if !privileged("the review test") {
        return;
    }
    let f = fixture();
    let edit = f.ws.join("edit.txt");
    let mut expected = tree(&f.ws);
    let (code, screen) = on_terminal(
        &args(&f, CHANGES),
        || std::fs::write(&edit, "someone else\n").unwrap(),
        "y\n",
    );
    assert_ne!(code, Some(0), "{screen}");
    assert!(screen.contains("nothing was applied"), "{screen}");
    expected.get_mut("edit.txt").unwrap().3 = b"someone else\n".to_vec();
    assert_eq!(
        tree(&f.ws),
        expected,
        "a refused change set was partly applied"
    );
}

#[test]
fn a_review_needs_a_workspace_and_a_backend_that_can_preview() {
    if !privileged("the review test") {
        return;
    }
    let f = fixture();
    let rt = f.runtime.to_str().unwrap();
    let out = without_terminal(&["--runtime-dir", rt, "run", "--review", "--", "true"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("--workspace"),
        "{}",
        text(&out.stderr)
    );
    let before = tree(&f.ws);
    let ws = f.ws.to_str().unwrap();
    let out = without_terminal(&[
        "--runtime-dir",
        rt,
        "run",
        "--backend",
        "firecracker",
        "--review",
        "--workspace",
        ws,
        "--",
        "sh",
        "-c",
        "echo x > /workspace/keep.txt",
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("needs the process or qemu backend"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(tree(&f.ws), before);
}

#[test]
fn a_card_unanswered_until_it_expires_is_denied_even_if_the_answer_comes_later() {
    if !privileged("the review test") {
        return;
    }
    let f = fixture();
    let config = f.runtime.with_extension("toml");
    std::fs::write(&config, "[review]\ncard_expiry = \"1s\"\n").unwrap();
    let before = tree(&f.ws);
    let mut a = vec!["--config", config.to_str().unwrap()];
    a.extend(args(&f, CHANGES));
    let (code, screen) = on_terminal(
        &a,
        || std::thread::sleep(Duration::from_millis(1500)),
        "y\n",
    );
    assert_ne!(code, Some(0), "{screen}");
    assert!(screen.contains("expired"), "{screen}");
    assert!(screen.contains("nothing was applied"), "{screen}");
    assert_eq!(tree(&f.ws), before, "an expired card was applied");
}

/// From inside a review, the tenant tries to get under the overlay — unmount it (plain, lazy,
/// by raw syscall), remount the workspace — and to fill the private layer; then writes. The
/// real workspace stays byte-identical and the layer's cap holds.
#[test]
fn a_command_cannot_get_under_the_overlay_or_past_the_layers_cap() {
    if !privileged("the review test") {
        return;
    }
    let f = fixture();
    let config = f.runtime.with_extension("toml");
    std::fs::write(&config, "[review]\nmax_layer = \"2M\"\n").unwrap();
    let before = tree(&f.ws);
    let attack = "cd /; umount /workspace 2>/dev/null && echo UNMOUNTED; \
        umount -l /workspace 2>/dev/null && echo LAZY; \
        perl -e 'print syscall(166, \"/workspace\", 2) == 0 ? \"RAW\\n\" : \"\"'; \
        mount -o remount,rw /workspace 2>/dev/null && echo REMOUNTED; \
        echo pwned > /workspace/edit.txt; \
        dd if=/dev/zero of=/workspace/big bs=1M count=8 2>&1 | grep -o 'No space left on device' | head -1; \
        echo done";
    let mut a = vec!["--config", config.to_str().unwrap()];
    a.extend(args(&f, attack));
    let out = without_terminal(&a);
    let stdout = text(&out.stdout);
    assert!(
        stdout.ends_with("done\n"),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    for got_under in ["UNMOUNTED", "LAZY", "RAW", "REMOUNTED"] {
        assert!(!stdout.contains(got_under), "{got_under}: {stdout}");
    }
    assert!(
        stdout.contains("No space left on device"),
        "the layer's cap: {stdout}"
    );
    assert_eq!(tree(&f.ws), before, "the tenant reached the real workspace");
}

// Through the daemon: the card waits in its approvals, where another process answers it.

/// A daemon on the fixture's runtime directory, with its own audit log.
fn daemon(f: &Fixture, extra: &str) -> luminaguard_testkit::daemon::Daemon {
    let audit = f.runtime.with_extension("audit");
    luminaguard_testkit::daemon::Daemon::start(
        Path::new(BIN),
        &f.runtime,
        &format!(
            "audit_dir = \"{}\"\n[daemon]\ngroup = \"nogroup\"\n{extra}",
            audit.display()
        ),
    )
}

/// The CLI against the daemon `d`.
fn cli(d: &luminaguard_testkit::daemon::Daemon, a: &[&str]) -> Output {
    Command::new(BIN)
        .arg("--runtime-dir")
        .arg(&d.runtime)
        .arg("--config")
        .arg(&d.config)
        .args(a)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Starts a review through the daemon with no terminal, and waits for its card to be listed;
/// returns the CLI's process (the caller waits for it) and the approval.
#[allow(clippy::zombie_processes)] // returned to the caller, who waits for it
fn review_waiting(
    f: &Fixture,
    d: &luminaguard_testkit::daemon::Daemon,
    script: &str,
) -> (std::process::Child, serde_json::Value) {
    let mut child = Command::new("setsid")
        .arg(BIN)
        .arg("--config")
        .arg(&d.config)
        .args(args(f, script))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = cli(d, &["approvals", "ls", "--json"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        if let Some(a) = list.as_array().unwrap().first() {
            return (child, a.clone());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("no card came up: {}", text(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn audit_records(d: &luminaguard_testkit::daemon::Daemon) -> Vec<serde_json::Value> {
    let out = cli(d, &["audit", "ls", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn through_the_daemon_a_card_is_approved_from_another_process_once() {
    if !privileged("the review test") {
        return;
    }
    let f = fixture();
    let mut d = daemon(&f, "");
    let mut sse = Command::new("curl")
        .args(["-sSN", "--max-time", "120"])
        .arg("--unix-socket")
        .arg(&d.socket)
        .arg("http://lg/v1/events")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (child, a) = review_waiting(&f, &d, CHANGES);
    let id = a["id"].as_str().unwrap().to_owned();
    assert_eq!(a["state"], "pending");
    assert!(
        a["card"]["text"].as_str().unwrap().contains("+three"),
        "{a}"
    );

    // Someone else on the daemon's socket neither sees nor answers it.
    let other = Some((1001, 65534));
    let theirs = luminaguard_testkit::http::reply(luminaguard_testkit::http::curl_as(
        &d.socket,
        "GET",
        "/v1/approvals",
        None,
        other,
    ));
    assert_eq!((theirs.status, theirs.body.as_str()), (200, "[]"));
    let theirs = luminaguard_testkit::http::reply(luminaguard_testkit::http::curl_as(
        &d.socket,
        "POST",
        &format!("/v1/approvals/{id}"),
        Some(br#"{"decision":"approve"}"#),
        other,
    ));
    assert_eq!(theirs.status, 404, "{}", theirs.body);
    // An answer naming another change set than the card's does nothing.
    let wrong = cli(&d, &["approvals", "approve", &id, "--digest", "00"]);
    assert!(!wrong.status.success());
    assert!(
        text(&wrong.stderr).contains("not 00"),
        "{}",
        text(&wrong.stderr)
    );

    // A Diff Card is approved once, never for a session.
    let session = cli(&d, &["approvals", "approve", &id, "--for-session"]);
    assert!(!session.status.success());
    assert!(
        text(&session.stderr).contains("approved once"),
        "{}",
        text(&session.stderr)
    );
    let shown = cli(&d, &["approvals", "show", &id]);
    assert!(
        text(&shown.stdout).contains("+three"),
        "{}",
        text(&shown.stdout)
    );
    let ok = cli(
        &d,
        &["approvals", "approve", &id, "--reason", "looks right"],
    );
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    assert!(text(&ok.stdout).contains("applied"), "{}", text(&ok.stdout));
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "done\n");
    assert!(
        text(&out.stderr).contains("applied 11 changes"),
        "{}",
        text(&out.stderr)
    );
    let after = tree(&f.ws);
    assert_eq!(after["edit.txt"].3, b"one\ntwo\nthree\n");
    assert!(!after.contains_key("gone.txt"));

    // Once: a second answer changes nothing.
    let again = cli(&d, &["approvals", "deny", &id]);
    assert!(!again.status.success());
    assert!(
        text(&again.stderr).contains("decided already"),
        "{}",
        text(&again.stderr)
    );
    assert_eq!(tree(&f.ws), after);

    // On the record: the card, who approved it through what, what was applied.
    let records = audit_records(&d);
    let of = |t: &str| {
        records
            .iter()
            .find(|r| r["event"]["type"] == t && r["event"]["approval"] == id.as_str())
            .unwrap_or_else(|| panic!("no {t} record: {records:#?}"))
    };
    assert_eq!(
        of("review")["event"]["digest"],
        a["card"]["changes"]["digest"]
    );
    assert_eq!(of("approve")["event"]["by"]["uid"], 0);
    assert_eq!(of("approve")["event"]["by"]["via"], "api");
    assert_eq!(of("apply")["event"]["applied"]["removed"], 4);
    // Live on the event stream.
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let mut stream = sse.stdout.take().unwrap();
    while !text(&seen).contains("event: approval-decided") {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "the event stream ended: {}", text(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    let _ = sse.kill();
    let _ = sse.wait();
    assert!(
        text(&seen).contains("event: approval-requested"),
        "{}",
        text(&seen)
    );
    assert!(
        text(&seen).contains(&format!("\"approval\":\"{id}\"")),
        "{}",
        text(&seen)
    );
    d.stop();
}

#[test]
fn through_the_daemon_deny_expiry_and_a_vanished_asker_apply_nothing() {
    if !privileged("the review test") {
        return;
    }
    let f = fixture();
    let mut d = daemon(&f, "[review]\ncard_expiry = \"3s\"\n");
    let before = tree(&f.ws);

    // Denied.
    let (child, a) = review_waiting(&f, &d, CHANGES);
    let id = a["id"].as_str().unwrap();
    let no = cli(&d, &["approvals", "deny", id, "--reason", "not today"]);
    assert!(no.status.success(), "{}", text(&no.stderr));
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("not today; nothing was applied"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(tree(&f.ws), before, "a denied card changed the workspace");

    // Nobody answers: denied when the card expires.
    let (child, a) = review_waiting(&f, &d, CHANGES);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("expired"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(tree(&f.ws), before, "an expired card changed the workspace");
    let late = cli(&d, &["approvals", "approve", a["id"].as_str().unwrap()]);
    assert!(!late.status.success(), "an expired card was approved");

    // The command that asked is killed: its card is withdrawn, and its sandbox is gone.
    let (mut child, a) = review_waiting(&f, &d, CHANGES);
    let id = a["id"].as_str().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = cli(&d, &["approvals", "show", id, "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        if v["state"] == "withdrawn" {
            break;
        }
        assert!(Instant::now() < deadline, "still {v}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let late = cli(&d, &["approvals", "approve", id]);
    assert!(!late.status.success(), "a withdrawn card was approved");
    assert_eq!(
        tree(&f.ws),
        before,
        "a withdrawn card changed the workspace"
    );
    let ls = cli(&d, &["sandbox", "ls", "--json"]);
    assert_eq!(
        text(&ls.stdout).trim(),
        "[]",
        "the asker's sandbox outlived it"
    );

    let reasons: Vec<String> = audit_records(&d)
        .iter()
        .filter(|r| r["event"]["type"] == "decline")
        .map(|r| r["event"]["reason"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        reasons,
        [
            "not today",
            "timed out",
            "withdrawn: the client that asked went away"
        ]
    );
    d.stop();
}

/// The command under review goes looking for the daemon, to approve its own card: the
/// daemon's socket is not in its world.
#[test]
fn a_command_under_review_cannot_reach_the_daemon_to_approve_itself() {
    if !privileged("the review test") {
        return;
    }
    let f = fixture();
    let mut d = daemon(&f, "[review]\ncard_expiry = \"5s\"\n");
    let before = tree(&f.ws);
    let sock = d.socket.display().to_string();
    let attack = format!(
        "echo pwned > /workspace/edit.txt; \
         for s in {sock} /run/luminaguard/api.sock; do [ -e \"$s\" ] && echo SEEN $s; done; \
         perl -MIO::Socket::UNIX -e 'for (@ARGV) {{ print \"CONNECTED $_\\n\" if \
           IO::Socket::UNIX->new(Peer => $_) }}' {sock} /run/luminaguard/api.sock; \
         echo done"
    );
    let (child, _) = review_waiting(&f, &d, &attack);
    let out = child.wait_with_output().unwrap();
    let stdout = text(&out.stdout);
    assert_eq!(stdout, "done\n", "{}", text(&out.stderr));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(tree(&f.ws), before);
    d.stop();
}

/// A preview has no network: what the command tried is refused, and the card says so — by
/// program and socket family — even when it changed nothing.
#[test]
fn a_preview_reaches_nothing_and_its_card_says_what_it_tried() {
    if !privileged("the review test") {
        return;
    }
    let f = fixture();
    let before = tree(&f.ws);
    let reach = "perl -MIO::Socket::INET -e 'print IO::Socket::INET->new(PeerAddr => \"192.0.2.1:80\", Timeout => 2) ? \"CONNECTED\\n\" : \"refused\\n\"'";
    let out = without_terminal(&args(&f, &format!("{reach}; echo x > /workspace/n")));
    let err = text(&out.stderr);
    assert_eq!(text(&out.stdout), "refused\n", "{err}");
    assert!(err.contains("Network during the preview"), "{err}");
    assert!(err.contains("perl: socket(AF_INET) ×1, refused"), "{err}");
    assert_eq!(tree(&f.ws), before);
    // Nothing changed, but it tried: the card still says so.
    let out = without_terminal(&args(&f, reach));
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("perl: socket(AF_INET) ×1, refused"), "{err}");
    assert!(err.contains("changed nothing"), "{err}");
}
