//! The browser harness (`luminaguard_testkit::browser`) against a page served here: headless
//! Chromium loads it, runs its script (a file, under a CSP that forbids inline scripts, as the
//! web console will be served), is clicked and typed into, holds its HttpOnly cookie away from
//! the page's scripts, and takes a screenshot; afterwards no process of it is left. Required
//! in CI (scripts/setup installs Chromium and chromedriver), skipped with a message elsewhere.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)] // test code

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use luminaguard_testkit::browser::{Browser, browser_available};
use luminaguard_testkit::live_processes_matching;

const PAGE: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>harness</title></head>
<body>
<h1 id="greeting">Hello</h1>
<form id="f" onsubmit="return false">
  <label>Name <input id="name" name="name" value="placeholder"></label>
  <button id="go" type="button">Greet</button>
</form>
<script src="/app.js"></script>
</body></html>
"#;

const APP_JS: &str = r#"document.getElementById("go").addEventListener("click", () => {
  const name = document.getElementById("name").value;
  document.getElementById("greeting").textContent = "Hello, " + name + "!";
  const done = document.createElement("p");
  done.id = "done";
  done.textContent = "clicked";
  document.body.appendChild(done);
});
"#;

/// Serves PAGE at / (with its cookie) and APP_JS at /app.js, each connection on a thread of
/// its own (Chromium opens speculative connections it may never send on). Returns the base URL.
fn serve() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || answer(conn));
        }
    });
    format!("http://{addr}")
}

fn answer(conn: TcpStream) {
    conn.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
        return;
    }
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
            break;
        }
    }
    let path = request_line.split_whitespace().nth(1).unwrap_or("");
    let (status, extra, kind, body) = match path {
        "/" => (
            "200 OK",
            "Set-Cookie: s=1; HttpOnly; SameSite=Strict; Path=/\r\n",
            "text/html; charset=utf-8",
            PAGE,
        ),
        "/app.js" => ("200 OK", "", "text/javascript", APP_JS),
        _ => ("404 Not Found", "", "text/plain", "not found"),
    };
    let mut conn = conn;
    let _ = write!(
        conn,
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\n\
         Content-Security-Policy: default-src 'self'\r\n{extra}Connection: close\r\n\r\n{body}",
        body.len()
    );
}

#[test]
fn drives_a_page_in_headless_chromium() {
    if !browser_available() {
        return;
    }
    let base = serve();
    let out = tempfile::tempdir().unwrap();

    let t0 = Instant::now();
    let b = Browser::start();
    let started = t0.elapsed();
    b.goto(&format!("{base}/"));
    b.wait_for("#go", Duration::from_secs(10));
    let loaded = t0.elapsed();
    eprintln!(
        "browser: started in {:.0} ms, page loaded after {:.0} ms",
        started.as_secs_f64() * 1e3,
        loaded.as_secs_f64() * 1e3
    );

    assert_eq!(b.title(), "harness");
    assert_eq!(b.current_url(), format!("{base}/"));
    // The client itself, for what the helpers do not cover: the window is as asked for.
    let (_, _, width, height) = b.with(|c| async move { c.get_window_rect().await.unwrap() });
    assert_eq!((width, height), (1280, 900));
    assert_eq!(b.text_of("#greeting"), "Hello");
    assert!(!b.exists("#done"));

    b.fill("#name", "Ada");
    b.click("#go");
    b.wait_for("#done", Duration::from_secs(10));
    assert_eq!(
        b.wait_for_text("#greeting", "Ada", Duration::from_secs(10)),
        "Hello, Ada!"
    );
    assert!(
        b.page_source().contains("Hello, Ada!"),
        "the source is the DOM as the script left it"
    );

    let cookies = b.cookies();
    let s = cookies
        .iter()
        .find(|c| c.name == "s")
        .unwrap_or_else(|| panic!("no cookie s: {cookies:?}"));
    assert_eq!(s.value, "1");
    assert!(s.http_only, "{s:?}");
    assert_eq!(s.same_site.as_deref(), Some("Strict"), "{s:?}");
    // HttpOnly as a page observes it: the cookie is not in document.cookie.
    let visible = b.execute("return document.cookie;");
    assert_eq!(visible, serde_json::json!(""), "{visible}");
    assert_eq!(b.execute("return 6 * 7;"), serde_json::json!(42));

    let shot = out.path().join("page.png");
    b.screenshot(&shot);
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "not a PNG: {} bytes",
        png.len()
    );

    // Every process of the browser names its directory (profile, crash reporter database).
    let dir = b.dir().display().to_string();
    let running = live_processes_matching(&[&dir]);
    eprintln!("browser: {} processes name {dir}", running.len());
    assert!(
        running.iter().any(|(_, c)| c.contains("--type=renderer")),
        "{running:?}"
    );
    drop(b);
    // SIGKILLed on drop; give the kernel a moment to finish them.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut left = live_processes_matching(&[&dir]);
    while !left.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        left = live_processes_matching(&[&dir]);
    }
    assert!(left.is_empty(), "left running after drop: {left:?}");
}
