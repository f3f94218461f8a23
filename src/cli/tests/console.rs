//! The web console through a real daemon (`luminaguard daemon --console`), driven over HTTP
//! as a browser would be: `luminaguard console url` logs in once; a Diff Card made by a real
//! `run --review` through the daemon is on the approvals page; approved there, the workspace
//! changes and the audit log records the console's answer; denied, nothing changes; a foreign
//! Origin or a missing CSRF token changes nothing. (The real-browser tests, Chromium over
//! WebDriver, stand on the same daemon.)
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)] // test code

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use luminaguard_testkit::daemon::Daemon;
use luminaguard_testkit::{privileged, text};

const BIN: &str = env!("CARGO_BIN_EXE_luminaguard");

/// `curl` as a browser: the status, the headers and the body.
fn curl(args: &[&str]) -> (u16, String, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "30", "-D", "-", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .unwrap();
    let all = text(&out.stdout);
    let (rest, code) = all.rsplit_once('\n').unwrap();
    let (head, body) = rest.split_once("\r\n\r\n").unwrap_or((rest, ""));
    (
        code.trim().parse().unwrap_or(0),
        head.to_owned(),
        body.to_owned(),
    )
}

fn lg(rt: &Path, audit: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("--runtime-dir")
        .arg(rt)
        .args(args)
        .env("LUMINAGUARD_AUDIT_DIR", audit)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// A free loopback port.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{what}: not within 60s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn approvals_are_decided_in_the_console() {
    if !privileged("the console through the daemon") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (rt, audit, ws) = (
        dir.path().join("rt"),
        dir.path().join("audit"),
        dir.path().join("ws"),
    );
    std::fs::create_dir_all(&ws).unwrap();
    let port = free_port();
    let host = format!("127.0.0.1:{port}");
    let _daemon = Daemon::start_with(
        Path::new(BIN),
        &rt,
        &{
            let file = dir.path().join("daemon.toml");
            std::fs::write(
                &file,
                format!(
                    "audit_dir = \"{}\"\n[defaults]\nbackend = \"process\"\n",
                    audit.display()
                ),
            )
            .unwrap();
            file
        },
        |cmd| {
            cmd.args(["--console", &host]);
        },
    );
    // Nothing answers without a session.
    let (code, head, _) = curl(&[&format!("http://{host}/approvals")]);
    assert_eq!(code, 401);
    assert!(
        head.to_ascii_lowercase()
            .contains("content-security-policy")
    );
    // The link, through the daemon's socket, for this user.
    let out = lg(&rt, &audit, &["console", "url"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let url = text(&out.stdout).trim().to_owned();
    assert!(
        url.starts_with(&format!("http://{host}/login?token=")),
        "{url}"
    );
    let (code, head, _) = curl(&[&url]);
    assert_eq!(code, 303, "{head}");
    let cookie = head
        .lines()
        .find_map(|l| {
            l.strip_prefix("set-cookie: ")
                .or_else(|| l.strip_prefix("Set-Cookie: "))
        })
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    assert_eq!(curl(&[&url]).0, 401, "a link is good once");

    // A real speculative run through the daemon waits on its Diff Card.
    let review = |script: &str| {
        Command::new("setsid")
            .arg(BIN)
            .arg("--runtime-dir")
            .arg(&rt)
            .args([
                "run",
                "--review",
                "--workspace",
                ws.to_str().unwrap(),
                "--",
                "sh",
                "-c",
                script,
            ])
            .env("LUMINAGUARD_AUDIT_DIR", &audit)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let page = |cookie: &str| {
        curl(&[
            "-H",
            &format!("Cookie: {cookie}"),
            &format!("http://{host}/approvals"),
        ])
    };
    let pending = |cookie: &str| -> Option<(String, String, String)> {
        let (code, _, body) = page(cookie);
        assert_eq!(code, 200);
        let at = body.find("<article class=\"card\" id=\"")? + 26;
        let id = body[at..at + 19].to_owned();
        let c = body.find("name=\"csrf\" value=\"")? + 19;
        let csrf = body[c..c + 64].to_owned();
        let d = body.find("name=\"digest\" value=\"")? + 21;
        let digest = body[d..].split('"').next()?.to_owned();
        Some((id, csrf, digest))
    };
    let decide = |cookie: &str, origin: &str, form: &str, id: &str| {
        curl(&[
            "-H",
            &format!("Cookie: {cookie}"),
            "-H",
            &format!("Origin: {origin}"),
            "--data",
            form,
            &format!("http://{host}/approvals/{id}"),
        ])
    };
    let own = format!("http://{host}");

    let run = review("echo approved > note.txt");
    let mut found = None;
    wait_until("the card on the page", || {
        found = pending(&cookie);
        found.is_some()
    });
    let (id, csrf, digest) = found.unwrap();
    assert!(id.starts_with("ap-"), "{id}");
    let (_, _, body) = page(&cookie);
    assert!(
        body.contains("note.txt"),
        "the card shows the change: {body}"
    );
    // Refused: a foreign Origin, a missing token.
    let form = format!("csrf={csrf}&digest={digest}&decision=approve");
    assert_eq!(decide(&cookie, "http://evil.example", &form, &id).0, 403);
    assert_eq!(
        decide(
            &cookie,
            &own,
            &format!("digest={digest}&decision=approve"),
            &id
        )
        .0 / 100,
        4
    );
    assert!(!ws.join("note.txt").exists());
    // Approved in the console: the run applies it.
    let (code, head, _) = decide(&cookie, &own, &form, &id);
    assert_eq!(code, 303, "{head}");
    let out = run.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        std::fs::read_to_string(ws.join("note.txt")).unwrap(),
        "approved\n"
    );

    // Denied in the console: nothing changes.
    let run = review("echo denied > other.txt");
    let mut found = None;
    wait_until("the second card", || {
        found = pending(&cookie);
        found.is_some()
    });
    let (id2, csrf, digest) = found.unwrap();
    let form = format!("csrf={csrf}&digest={digest}&decision=deny&reason=not+today");
    assert_eq!(decide(&cookie, &own, &form, &id2).0, 303);
    let out = run.wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(!ws.join("other.txt").exists());
    assert!(pending(&cookie).is_none(), "a decided card leaves the page");

    // The audit log names the console as where each answer came from.
    let ls = lg(&rt, &audit, &["audit", "ls", "--json"]);
    let log = text(&ls.stdout);
    let answers: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| r["event"]["approval"] == id.as_str() || r["event"]["approval"] == id2.as_str())
        .filter(|r| r.to_string().contains("\"console\""))
        .collect();
    assert!(answers.len() >= 2, "{log}");
    assert!(log.contains("not today"));
}

/// `curl` to the daemon's API over its socket, as the test's user: the status and the body.
fn api(sock: &Path, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args([
        "-sS",
        "--max-time",
        "60",
        "-w",
        "\n%{http_code}",
        "-X",
        method,
    ])
    .arg("--unix-socket")
    .arg(sock);
    if let Some(b) = body {
        cmd.args(["-H", "Content-Type: application/json", "--data", b]);
    }
    let out = cmd.arg(format!("http://lg{path}")).output().unwrap();
    let all = text(&out.stdout);
    let (body, code) = all.rsplit_once('\n').unwrap();
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

#[test]
fn sandboxes_are_listed_and_destroyed_in_the_console_and_the_audit_page_shows_it() {
    if !privileged("the console through the daemon") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (rt, audit) = (dir.path().join("rt"), dir.path().join("audit"));
    let port = free_port();
    let host = format!("127.0.0.1:{port}");
    let file = dir.path().join("daemon.toml");
    std::fs::write(
        &file,
        format!(
            "audit_dir = \"{}\"\n[defaults]\nbackend = \"process\"\n",
            audit.display()
        ),
    )
    .unwrap();
    let daemon = Daemon::start_with(Path::new(BIN), &rt, &file, |cmd| {
        cmd.args(["--console", &host]);
    });
    let sock = daemon.socket.clone();
    let out = lg(&rt, &audit, &["console", "url"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (code, head, _) = curl(&[text(&out.stdout).trim()]);
    assert_eq!(code, 303, "{head}");
    let cookie = head
        .lines()
        .find_map(|l| {
            l.strip_prefix("set-cookie: ")
                .or_else(|| l.strip_prefix("Set-Cookie: "))
        })
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let page = |path: &str| {
        let (code, _, body) = curl(&[
            "-H",
            &format!("Cookie: {cookie}"),
            &format!("http://{host}{path}"),
        ]);
        assert_eq!(code, 200, "{path}: {body}");
        body
    };
    let own = format!("http://{host}");
    let destroy = |origin: &str, form: &str| {
        curl(&[
            "-H",
            &format!("Cookie: {cookie}"),
            "-H",
            &format!("Origin: {origin}"),
            "--data",
            form,
            &format!("http://{host}/sandboxes/cons-1/destroy"),
        ])
    };

    // A sandbox made through the daemon's API is on the page, with its cgroup's figures.
    let (code, body) = api(&sock, "POST", "/v1/sandboxes", Some(r#"{"name":"cons-1"}"#));
    assert_eq!(code, 201, "{body}");
    let list = page("/sandboxes");
    assert!(list.contains("id=\"sb-cons-1\""), "{list}");
    assert!(
        list.contains(" of "),
        "memory and processes against limits: {list}"
    );
    assert!(!list.contains("no cgroup"), "{list}");
    assert!(list.contains("href=\"/sandboxes/cons-1/destroy\""));

    // Destroy: a confirmation page, then the form it holds.
    let confirm = page("/sandboxes/cons-1/destroy");
    assert!(
        confirm.contains("Destroy sandbox <code>cons-1</code>?"),
        "{confirm}"
    );
    let c = confirm.find("name=\"csrf\" value=\"").unwrap() + 19;
    let csrf = confirm[c..c + 64].to_owned();
    let form = format!("csrf={csrf}");
    assert_eq!(destroy("http://evil.example", &form).0, 403);
    assert_eq!(destroy(&own, "csrf=00").0, 403);
    assert!(
        page("/sandboxes").contains("id=\"sb-cons-1\""),
        "refused: still there"
    );
    let (code, head, body) = destroy(&own, &form);
    assert_eq!(code, 303, "{head}{body}");
    assert!(
        head.to_ascii_lowercase().contains("location: /sandboxes"),
        "{head}"
    );

    // Gone from the page and from the daemon's API.
    assert!(!page("/sandboxes").contains("cons-1"));
    let (code, body) = api(&sock, "GET", "/v1/sandboxes", None);
    assert_eq!(code, 200, "{body}");
    assert!(!body.contains("cons-1"), "{body}");
    assert_eq!(api(&sock, "GET", "/v1/sandboxes/cons-1", None).0, 404);

    // The audit page shows the destroy, by the console, and the log verifies.
    let mut audit_page = String::new();
    wait_until("the destroy on the audit page", || {
        audit_page = page("/audit?sandbox=cons-1&actor=console");
        audit_page.contains("<td>destroy</td>")
    });
    assert!(audit_page.contains("class=\"verify ok\""), "{audit_page}");
    assert!(audit_page.contains("hash chain intact"), "{audit_page}");
    assert!(!audit_page.contains("<td>create</td>"), "filtered by actor");
    let both = page("/audit?sandbox=cons-1");
    assert!(
        both.contains("<td>create</td>") && both.contains("<td>destroy</td>"),
        "{both}"
    );
}
