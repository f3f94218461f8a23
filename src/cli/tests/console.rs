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

/// The session cookie a login's answer sets, as `name=value`.
fn session_cookie(head: &str) -> String {
    head.lines()
        .find_map(|l| {
            l.strip_prefix("set-cookie: ")
                .or_else(|| l.strip_prefix("Set-Cookie: "))
        })
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned()
}

/// A form posted as a browser would: the session's cookie, an Origin, the body.
fn post_form(cookie: &str, origin: &str, form: &str, url: &str) -> (u16, String, String) {
    curl(&[
        "-H",
        &format!("Cookie: {cookie}"),
        "-H",
        &format!("Origin: {origin}"),
        "--data",
        form,
        url,
    ])
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
    let s = Served::start();
    let (host, ws) = (s.host.clone(), s.ws.clone());
    // Nothing answers without a session.
    let (code, head, _) = curl(&[&format!("http://{host}/approvals")]);
    assert_eq!(code, 401);
    assert!(
        head.to_ascii_lowercase()
            .contains("content-security-policy")
    );
    // The link, through the daemon's socket, for this user.
    let url = s.login_url();
    assert!(
        url.starts_with(&format!("http://{host}/login?token=")),
        "{url}"
    );
    let (code, head, _) = curl(&[&url]);
    assert_eq!(code, 303, "{head}");
    let cookie = session_cookie(&head);
    assert_eq!(curl(&[&url]).0, 401, "a link is good once");

    // A real speculative run through the daemon waits on its Diff Card.
    let review = |script: &str| s.review(script);
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
        post_form(
            cookie,
            origin,
            form,
            &format!("http://{host}/approvals/{id}"),
        )
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
    let ls = s.lg(&["audit", "ls", "--json"]);
    let log = text(&ls.stdout);
    let answers: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| r["event"]["approval"] == id.as_str() || r["event"]["approval"] == id2.as_str())
        .filter(|r| r["actor"]["kind"] == "console" && r["event"]["by"]["via"] == "console")
        .collect();
    assert!(answers.len() >= 2, "{log}");
    assert!(log.contains("not today"));
}

/// A daemon serving the console, with a workspace for `run --review`.
struct Served {
    /// First: dropped (stopped) before its directories go.
    daemon: Daemon,
    _dir: tempfile::TempDir,
    rt: std::path::PathBuf,
    audit: std::path::PathBuf,
    ws: std::path::PathBuf,
    host: String,
}

impl Served {
    fn start() -> Served {
        Self::start_with("")
    }

    /// The same with more `[daemon]` settings (TOML lines).
    fn start_with(daemon: &str) -> Served {
        let dir = tempfile::tempdir().unwrap();
        let (rt, audit, ws) = (
            dir.path().join("rt"),
            dir.path().join("audit"),
            dir.path().join("ws"),
        );
        std::fs::create_dir_all(&ws).unwrap();
        let host = format!("127.0.0.1:{}", free_port());
        let file = dir.path().join("daemon.toml");
        std::fs::write(
            &file,
            format!(
                "audit_dir = \"{}\"\n[defaults]\nbackend = \"process\"\n\
                 [daemon]\nrequest_timeout = \"5s\"\n{daemon}",
                audit.display()
            ),
        )
        .unwrap();
        let daemon = Daemon::start_with(Path::new(BIN), &rt, &file, |cmd| {
            cmd.args(["--console", &host]);
        });
        Served {
            _dir: dir,
            rt,
            audit,
            ws,
            host,
            daemon,
        }
    }

    fn lg(&self, args: &[&str]) -> Output {
        lg(&self.rt, &self.audit, args)
    }

    /// A one-time login link, through the daemon's socket.
    fn login_url(&self) -> String {
        let out = self.lg(&["console", "url"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout).trim().to_owned()
    }

    /// The daemon's API socket.
    fn socket(&self) -> std::path::PathBuf {
        self.daemon.socket.clone()
    }

    /// Logs in with a new link as curl would: the session cookie (`name=value`).
    fn login(&self) -> String {
        let (code, head, _) = curl(&[&self.login_url()]);
        assert_eq!(code, 303, "{head}");
        session_cookie(&head)
    }

    /// `run --review -- sh -c SCRIPT` in the workspace, through the daemon: it waits on its
    /// Diff Card.
    fn review(&self, script: &str) -> std::process::Child {
        Command::new("setsid")
            .arg(BIN)
            .arg("--runtime-dir")
            .arg(&self.rt)
            .args(["run", "--review", "--workspace"])
            .arg(&self.ws)
            .args(["--", "sh", "-c", script])
            .env("LUMINAGUARD_AUDIT_DIR", &self.audit)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// The ids of the approvals waiting, through the daemon (as the CLI sees them).
    fn waiting(&self) -> Vec<String> {
        let out = self.lg(&["approvals", "ls", "--json"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|a| a["id"].as_str().unwrap().to_owned())
            .collect()
    }
}

/// The run's end, within a minute (a test that fails does not hang).
fn finished(mut child: std::process::Child) -> Output {
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("the run did not end within 60s: {}", text(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// Where a test's screenshots go: under the test's output directory, and also into
/// `$LUMINAGUARD_SCREENSHOTS` when it is set (scripts/screenshots, for docs/console.md).
fn screenshot(b: &luminaguard_testkit::browser::Browser, name: &str) {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    b.screenshot(&path);
    eprintln!("screenshot: {}", path.display());
    if let Some(docs) = std::env::var_os("LUMINAGUARD_SCREENSHOTS") {
        std::fs::copy(&path, Path::new(&docs).join(name)).unwrap();
    }
}

/// The whole approvals flow in headless Chromium: log in with the link; a card made by a
/// real `run --review` appears without a reload and is approved with the keyboard (the
/// workspace changes); another is denied with a reason (nothing changes); one answered at
/// the CLI leaves the open page by itself; the countdown runs; a narrow window needs no
/// sideways scrolling; the audit log has the console's answers.
#[test]
fn approvals_in_a_real_browser() {
    use luminaguard_testkit::browser::{Browser, browser_available};
    if !privileged("the console in a browser") || !browser_available() {
        return;
    }
    let s = Served::start();
    let b = Browser::start();
    let wait = Duration::from_secs(60);
    // Without the link: the login page, 401.
    b.goto(&format!("http://{}/approvals", s.host));
    assert!(b.text_of("main").contains("luminaguard console url"));
    b.goto(&s.login_url());
    b.wait_for_text("h1", "Approvals", wait);
    let session = b
        .cookies()
        .into_iter()
        .find(|c| c.name == "lg_session")
        .unwrap();
    assert!(session.http_only, "{session:?}");
    assert_eq!(session.same_site.as_deref(), Some("Strict"));
    assert_eq!(b.execute("return document.cookie"), "");
    b.wait_for_text("#live", "Live", wait);
    assert!(b.text_of("#none").contains("Nothing waits"));
    // This page is never reloaded until the first decision: a mark on it would go.
    b.execute("window.__same_page = 1");

    // 1. A card appears live, and is approved from the keyboard.
    let run =
        s.review("printf 'hello\\nworld\\n' > note.txt; echo wrote the note; echo on stderr >&2");
    b.wait_for(".card", wait);
    assert_eq!(b.execute("return window.__same_page"), 1, "no reload");
    let id = b.execute("return document.querySelector('.card').id");
    let id = id.as_str().unwrap().to_owned();
    assert!(id.starts_with("ap-"), "{id}");
    let card = b.text_of(&format!("#{id}"));
    assert!(card.contains("note.txt"), "{card}");
    assert!(card.contains("+hello"), "the diff is shown: {card}");
    assert!(
        b.exists(&format!("#{id} pre.diff .ins")),
        "diff lines are styled"
    );
    let output = b.text_of(&format!("#{id} details.output pre"));
    assert!(
        output.contains("wrote the note") && output.contains("on stderr"),
        "the run's output head: {output}"
    );
    assert!(!b.exists("#none:not([hidden])"));
    // The countdown runs, from the card's own expiry.
    let left = b.wait_for_text(&format!("#{id} .left"), "in ", wait);
    assert!(left.contains(':'), "{left}");
    screenshot(&b, "approvals-pending.png");
    // Side by side: the same card, before and after in two columns.
    b.click("a[href='/approvals?view=split']");
    b.wait_for(&format!("#{id} table.split"), wait);
    assert!(
        b.text_of(&format!("#{id} table.split td.ins"))
            .contains("hello")
    );
    assert!(b.text_of(".views").contains("side by side"));
    screenshot(&b, "approvals-split.png");
    b.fill(&format!("#reason-{id}"), "looks right");
    b.press(&format!("#{id} button.approve"), "\u{E007}"); // Enter
    let out = finished(run);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        std::fs::read_to_string(s.ws.join("note.txt")).unwrap(),
        "hello\nworld\n"
    );
    b.wait_for_text("#none", "Nothing waits", wait);

    // 2. Another, denied with a reason: nothing changes.
    let run = s.review("echo no > other.txt");
    b.wait_for(".card", wait);
    let id2 = b.execute("return document.querySelector('.card').id");
    let id2 = id2.as_str().unwrap().to_owned();
    b.fill(&format!("#reason-{id2}"), "not today");
    b.click(&format!("#{id2} button.deny"));
    let out = finished(run);
    assert!(!out.status.success());
    assert!(!s.ws.join("other.txt").exists());

    // 3. One answered elsewhere (the CLI) leaves the open page by itself.
    b.wait_for_text("#none", "Nothing waits", wait);
    b.execute("window.__same_page = 2");
    let run = s.review("printf 'from the cli\\033[2J\\n'; echo cli > cli.txt");
    b.wait_for(".card", wait);
    let id3 = s.waiting().pop().unwrap();
    assert!(b.exists(&format!("#{id3}")));
    // The CLI shows the run's output too, its escape sequence defused.
    let shown = s.lg(&["approvals", "show", &id3]);
    let shown = text(&shown.stdout);
    assert!(shown.contains("the command's output:"), "{shown}");
    assert!(shown.contains("from the cli\\x1b[2J"), "{shown}");
    assert!(!shown.contains('\x1b'), "{shown}");
    let out = s.lg(&["approvals", "deny", &id3, "--reason", "from the terminal"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    wait_until("the card answered at the CLI to leave the page", || {
        !b.exists(&format!("#{id3}"))
    });
    assert_eq!(b.execute("return window.__same_page"), 2, "no reload");
    let _ = finished(run);

    // A narrow window: the page fits; only a long diff line scrolls, in its own box.
    let run = s.review("echo 'a rather long line of text that would not fit a phone screen at all, not even sideways' > wide.txt");
    b.wait_for(".card", wait);
    b.resize(390, 844);
    let fits = b.execute(
        "return document.documentElement.scrollWidth <= document.documentElement.clientWidth",
    );
    assert_eq!(fits, true, "the page scrolls sideways in a narrow window");
    screenshot(&b, "approvals-narrow.png");
    b.resize(1280, 900);
    let id4 = s.waiting().pop().unwrap();
    assert!(s.lg(&["approvals", "deny", &id4]).status.success());
    let _ = finished(run);

    // The audit log names the console for the two answers given there.
    let ls = s.lg(&["audit", "ls", "--json"]);
    let log = text(&ls.stdout);
    for (a, words) in [(&id, "looks right"), (&id2, "not today")] {
        assert!(
            log.lines().any(|l| l.contains(a.as_str())
                && l.contains("\"kind\":\"console\"")
                && l.contains(words)),
            "{a} answered in the console, {words:?}: {log}"
        );
    }

    // The sandboxes page: one that exists is there, one destroyed is not; destroyed from the
    // page (its confirmation, then the button), it goes.
    let sock = s.socket();
    for name in ["live-1", "gone-1"] {
        let (code, body) = api(
            &sock,
            "POST",
            "/v1/sandboxes",
            Some(&format!(r#"{{"name":"{name}"}}"#)),
        );
        assert_eq!(code, 201, "{body}");
    }
    assert_eq!(
        api(&sock, "DELETE", "/v1/sandboxes/gone-1", None).0 / 100,
        2
    );
    b.goto(&format!("http://{}/sandboxes", s.host));
    b.wait_for("#sb-live-1", wait);
    assert!(!b.exists("#sb-gone-1"), "a destroyed sandbox is not listed");
    let row = b.text_of("#sb-live-1");
    assert!(row.contains("process") && row.contains(" of "), "{row}");
    screenshot(&b, "sandboxes.png");
    b.click("a[href='/sandboxes/live-1/destroy']");
    b.wait_for_text("h1", "Destroy sandbox", wait);
    b.click("form.confirm button");
    b.wait_for_text("h1", "Sandboxes", wait);
    assert!(!b.exists("#sb-live-1"));
    assert_eq!(api(&sock, "GET", "/v1/sandboxes/live-1", None).0, 404);

    // The audit page: verified, and the console's answers on it.
    b.goto(&format!("http://{}/audit", s.host));
    b.wait_for(".verify.ok", wait);
    let page = b.text_of("main");
    assert!(
        page.contains("looks right") && page.contains("not today"),
        "{page}"
    );
    screenshot(&b, "audit.png");
}

/// A request to the daemon's API over its socket, as the test's user: the status and body.
fn api(sock: &Path, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let r = luminaguard_testkit::http::curl(sock, method, path, body);
    (r.status, r.body)
}

#[test]
fn sandboxes_are_listed_and_destroyed_in_the_console_and_the_audit_page_shows_it() {
    if !privileged("the console through the daemon") {
        return;
    }
    let s = Served::start();
    let (host, sock) = (s.host.clone(), s.socket());
    let cookie = s.login();
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
        post_form(
            &cookie,
            origin,
            form,
            &format!("http://{host}/sandboxes/cons-1/destroy"),
        )
    };

    // A sandbox made through the daemon's API is on the page, with its cgroup's figures.
    // Made by an API client that labels its session `console` (see the records below).
    let made = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "60",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ])
        .args(["-X", "POST", "-H", "x-luminaguard-session: console"])
        .args([
            "-H",
            "content-type: application/json",
            "--data",
            r#"{"name":"cons-1"}"#,
        ])
        .arg("--unix-socket")
        .arg(&sock)
        .arg("http://lg/v1/sandboxes")
        .output()
        .unwrap();
    assert_eq!(text(&made.stdout), "201", "{}", text(&made.stderr));
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
    // (`actor` matches a kind or a session label: here both name the console.)
    let by_daemon = page("/audit?sandbox=cons-1&actor=daemon");
    assert!(
        by_daemon.contains("<td>create</td>") && !by_daemon.contains("<td>destroy</td>"),
        "filtered by actor: {by_daemon}"
    );
    // On the records, the console is the actor's kind, which the daemon sets; an API client
    // that labels its session `console` is still the daemon's kind, its label a session.
    let log = text(&s.lg(&["audit", "ls", "--json"]).stdout);
    let kinds = |t: &str| -> Vec<(String, String)> {
        log.lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|r| r["event"]["type"] == t && r["event"]["sandbox"] == "cons-1")
            .map(|r| {
                (
                    r["actor"]["kind"].as_str().unwrap_or_default().to_owned(),
                    r["actor"]["session"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                )
            })
            .collect()
    };
    assert_eq!(
        kinds("create"),
        [("daemon".to_owned(), "console".to_owned())],
        "{log}"
    );
    assert_eq!(
        kinds("destroy"),
        [("console".to_owned(), String::new())],
        "{log}"
    );
    let both = page("/audit?sandbox=cons-1");
    assert!(
        both.contains("<td>create</td>") && both.contains("<td>destroy</td>"),
        "{both}"
    );
}

/// Hostile clients of the console's port: bytes that are not HTTP, a header line of 1 MiB,
/// a connection that sends half a request and waits, a form body of 8 MiB with a good session
/// and Origin, a thousand pipelined requests with made-up cookies. Each gets a clear refusal
/// or a closed connection; afterwards the console still serves its pages and the daemon its
/// API.
#[test]
fn hostile_clients_of_the_console_change_nothing() {
    use std::io::{Read, Write};
    if !privileged("the console through the daemon") {
        return;
    }
    let s = Served::start();
    let (host, sock) = (s.host.clone(), s.socket());
    let cookie = s.login();
    let connect = || {
        let c = std::net::TcpStream::connect(&host).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        c
    };
    let raw = |bytes: &[u8]| -> String {
        let mut c = connect();
        // The server may close before reading everything: that is a refusal too.
        let _ = c.write_all(bytes);
        let mut out = Vec::new();
        let _ = c.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    };
    let junk: Vec<u8> = (0..4096u32).map(|i| (i * 7919 % 251) as u8).collect();
    let answer = raw(&junk);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 400"),
        "{answer}"
    );
    let long = format!(
        "GET /approvals HTTP/1.1\r\nHost: {host}\r\nX-Long: {}\r\n\r\n",
        "a".repeat(1 << 20)
    );
    let answer = raw(long.as_bytes());
    assert!(
        answer.is_empty()
            || answer.starts_with("HTTP/1.1 431")
            || answer.starts_with("HTTP/1.1 400"),
        "{}",
        &answer[..answer.len().min(200)]
    );
    // Half a request, left open while the rest goes on (a slow-loris client).
    let mut half = connect();
    half.write_all(b"GET /approvals HTTP/1.1\r\nHost: ")
        .unwrap();
    // A body far over what a form needs.
    let big = s.ws.with_file_name("big.form");
    std::fs::write(&big, format!("csrf={}", "0".repeat(8 << 20))).unwrap();
    let (code, _, _) = curl(&[
        "-H",
        &format!("Cookie: {cookie}"),
        "-H",
        &format!("Origin: http://{host}"),
        "-H",
        "Content-Type: application/x-www-form-urlencoded",
        "--data-binary",
        &format!("@{}", big.display()),
        &format!("http://{host}/approvals/ap-0123456789abcdef"),
    ]);
    assert_eq!(code, 413, "an 8 MiB form");
    // A thousand made-up sessions, pipelined on one connection: a 401 each.
    let mut c = connect();
    let many: String = (0..1000)
        .map(|i| {
            format!(
                "GET /approvals HTTP/1.1\r\nHost: {host}\r\nCookie: lg_session={i:064x}\r\n\r\n"
            )
        })
        .collect();
    c.write_all(many.as_bytes()).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 65536];
    let answers = |got: &[u8], what: &str| String::from_utf8_lossy(got).matches(what).count();
    while answers(&got, "HTTP/1.1 401") < 1000 {
        let n = c.read(&mut buf).unwrap();
        assert!(n > 0, "closed after {} answers", answers(&got, "HTTP/1.1 "));
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(answers(&got, "HTTP/1.1 "), 1000, "only 401s");
    // Still serving: the console its pages, the daemon its API.
    let (code, _, body) = curl(&[
        "-H",
        &format!("Cookie: {cookie}"),
        &format!("http://{host}/approvals"),
    ]);
    assert_eq!(code, 200, "{body}");
    assert_eq!(api(&sock, "GET", "/v1/health", None).0, 200);
    // The half request is cut off once the head timeout (here 5 s) passes.
    let held = Instant::now();
    let mut rest = Vec::new();
    let _ = half.read_to_end(&mut rest);
    assert!(
        held.elapsed() < Duration::from_secs(25),
        "the half request was held {:?}",
        held.elapsed()
    );
}

/// Anyone on the machine can connect to the console before it asks for a session. A flood of
/// idle connections must not take the daemon's descriptors (its API's accepts would fail with
/// them): beyond `max_connections` they wait unaccepted, and the API answers throughout.
/// (Once they go, the queue drains at the head timeout's pace: not waited for here.)
#[test]
fn a_flood_of_connections_does_not_starve_the_daemon() {
    if !privileged("the console through the daemon") {
        return;
    }
    let s = Served::start_with("max_connections = 32\n");
    let pid = s.daemon.child.id().to_string();
    // The daemon gets 512 descriptors; the flood is more.
    let limited = Command::new("prlimit")
        .args(["--nofile=512:512", "--pid", &pid])
        .status()
        .unwrap();
    assert!(limited.success());
    let fds = || {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .count()
    };
    let before = fds();
    let flood: Vec<std::net::TcpStream> = (0..700)
        .map(|_| std::net::TcpStream::connect(&s.host).unwrap())
        .collect();
    // Until the daemon has taken what it will: its descriptors stop changing.
    let mut last = (fds(), 0);
    wait_until("the daemon's descriptors to settle", || {
        let now = fds();
        last = if now == last.0 {
            (now, last.1 + 1)
        } else {
            (now, 0)
        };
        now >= before + 16 && last.1 >= 5
    });
    let (code, body) = api(&s.socket(), "GET", "/v1/health", None);
    assert_eq!(code, 200, "the API while the console is flooded: {body}");
    assert!(fds() < 512, "the flood took the daemon's descriptors");
    drop(flood);
}
