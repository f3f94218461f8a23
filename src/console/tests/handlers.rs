//! Every handler as a hostile browser or client meets it: nothing without a session, no
//! session without a one-time link, no change without the session's CSRF token and the
//! console's own Origin, no answer for another Host (DNS rebinding), and the security headers
//! on every response.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)] // test code

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use luminaguard_console::{Console, router};
use luminaguard_core::config::{Config, ConfigLayer};
use luminaguard_service::Service;
use tower::ServiceExt;

const HOST: &str = "127.0.0.1:8787";

struct Fixture {
    _dir: tempfile::TempDir,
    console: Arc<Console>,
    app: axum::Router,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "runtime_dir = {:?}\naudit_dir = {:?}\n[defaults]\nbackend = \"process\"\n",
        dir.path().join("rt"),
        dir.path().join("audit")
    );
    let layer = ConfigLayer::from_toml(&toml, std::path::Path::new("t.toml")).unwrap();
    let config = Config::resolve(0, None, [layer]).unwrap();
    let service = Service::new(config).unwrap();
    let console = Console::new(service, None, HOST.parse().unwrap());
    let app = router(Arc::clone(&console));
    Fixture {
        _dir: dir,
        console,
        app,
    }
}

struct Reply {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: String,
}

fn send(app: &axum::Router, req: Request<Body>) -> Reply {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let resp = app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        Reply {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    })
}

fn get(path: &str, cookie: Option<&str>) -> Request<Body> {
    let mut b = Request::get(path).header(header::HOST, HOST);
    if let Some(c) = cookie {
        b = b.header(header::COOKIE, c);
    }
    b.body(Body::empty()).unwrap()
}

fn post(path: &str, cookie: Option<&str>, origin: Option<&str>, form: &str) -> Request<Body> {
    let mut b = Request::post(path)
        .header(header::HOST, HOST)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    if let Some(c) = cookie {
        b = b.header(header::COOKIE, c);
    }
    if let Some(o) = origin {
        b = b.header(header::ORIGIN, o);
    }
    b.body(Body::from(form.to_owned())).unwrap()
}

/// Logs in as root with a fresh link: the cookie to send, and the page's CSRF token.
fn log_in(f: &Fixture) -> (String, String) {
    log_in_as(f, 0)
}

/// Logs in as `uid` with a fresh link.
fn log_in_as(f: &Fixture, uid: u32) -> (String, String) {
    let url = f.console.login_url(uid, uid).unwrap();
    let path = url.strip_prefix(&format!("http://{HOST}")).unwrap();
    let r = send(&f.app, get(path, None));
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let set = r.headers[header::SET_COOKIE].to_str().unwrap().to_owned();
    let cookie = set.split(';').next().unwrap().to_owned();
    let page = send(&f.app, get("/approvals", Some(&cookie)));
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let at = page.body.find("name=\"csrf\" value=\"").unwrap() + 19;
    let csrf = page.body[at..at + 64].to_owned();
    (cookie, csrf)
}

#[test]
fn nothing_without_a_session_and_the_headers_always() {
    let f = fixture();
    for path in [
        "/",
        "/approvals",
        "/approvals/events",
        "/assets/console.css",
        "/assets/console.js",
        "/login?token=00",
        "/login",
        "/tasks",
        "/tasks/task-0123456789ab",
        "/tasks/task-0123456789ab/events",
    ] {
        let r = send(&f.app, get(path, None));
        assert!(
            r.status == StatusCode::UNAUTHORIZED || r.status == StatusCode::BAD_REQUEST,
            "{path}: {}",
            r.status
        );
        let csp = r.headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"));
        assert_eq!(r.headers[header::X_FRAME_OPTIONS], "DENY");
        assert_eq!(r.headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    }
    // `/` only redirects; everything it leads to answers 401 above.
    let r = send(&f.app, get("/approvals", Some("lg_session=0123")));
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.body.contains("luminaguard console url"));
    let r = send(
        &f.app,
        post(
            "/tasks/task-0123456789ab/cancel",
            None,
            Some(&format!("http://{HOST}")),
            "csrf=00",
        ),
    );
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

/// The agent tasks pages with a session, on a daemon that runs no tasks (the end-to-end test
/// with tasks is in src/cli/tests/agent.rs): it says so; a task page is a clean 404, whatever
/// the id; a cancel needs the CSRF token before anything else.
#[test]
fn agent_task_pages_without_tasks() {
    let f = fixture();
    let (cookie, csrf) = log_in(&f);
    let r = send(&f.app, get("/tasks", Some(&cookie)));
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains("runs no agent tasks"), "{}", r.body);
    assert!(r.body.contains("href=\"/tasks\""));
    for id in [
        "task-0123456789ab",
        "..%2F..%2Fetc",
        "%00",
        "x".repeat(5000).as_str(),
    ] {
        let r = send(&f.app, get(&format!("/tasks/{id}"), Some(&cookie)));
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{id}: {}", r.body);
    }
    let own = format!("http://{HOST}");
    let cancel = |form: &str| {
        send(
            &f.app,
            post(
                "/tasks/task-0123456789ab/cancel",
                Some(&cookie),
                Some(&own),
                form,
            ),
        )
        .status
    };
    assert_eq!(cancel("csrf=00"), StatusCode::FORBIDDEN);
    assert_eq!(cancel(&format!("csrf={csrf}")), StatusCode::NOT_FOUND);
}

#[test]
fn a_link_logs_in_once_with_a_strict_cookie() {
    let f = fixture();
    let url = f.console.login_url(0, 0).unwrap();
    let path = url
        .strip_prefix(&format!("http://{HOST}"))
        .unwrap()
        .to_owned();
    let r = send(&f.app, get(&path, None));
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.headers[header::LOCATION], "/approvals");
    let set = r.headers[header::SET_COOKIE].to_str().unwrap();
    assert!(set.starts_with("lg_session="), "{set}");
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    let again = send(&f.app, get(&path, None));
    assert_eq!(
        again.status,
        StatusCode::UNAUTHORIZED,
        "a link is good once"
    );
    let (cookie, csrf) = log_in(&f);
    let page = send(&f.app, get("/approvals", Some(&cookie)));
    assert!(page.body.contains("Nothing waits for you"));
    assert_eq!(csrf.len(), 64);
}

#[test]
fn another_host_is_refused_dns_rebinding() {
    let f = fixture();
    let (cookie, _) = log_in(&f);
    for host in ["evil.example:8787", "127.0.0.1:9999", "127.0.0.1", ""] {
        let req = Request::get("/approvals")
            .header(header::HOST, host)
            .header(header::COOKIE, &cookie)
            .body(Body::empty())
            .unwrap();
        let r = send(&f.app, req);
        assert_eq!(r.status, StatusCode::MISDIRECTED_REQUEST, "{host}");
    }
    let req = Request::get("/approvals")
        .header(header::HOST, "localhost:8787")
        .header(header::COOKIE, &cookie)
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&f.app, req).status, StatusCode::OK);
}

#[test]
fn a_change_needs_the_origin_and_the_csrf_token() {
    let f = fixture();
    let (cookie, csrf) = log_in(&f);
    let own = format!("http://{HOST}");
    let form = format!("csrf={csrf}&decision=approve");
    // No Origin, a foreign one, a look-alike.
    for origin in [
        None,
        Some("http://evil.example"),
        Some("https://127.0.0.1:8787"),
        Some("null"),
    ] {
        let r = send(
            &f.app,
            post(
                "/approvals/ap-0000000000000000",
                Some(&cookie),
                origin,
                &form,
            ),
        );
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{origin:?}");
    }
    // The right Origin, a wrong or missing token.
    for bad in [
        "csrf=00&decision=approve",
        "decision=approve",
        &format!("csrf={}&decision=approve", "0".repeat(64)),
    ] {
        let r = send(
            &f.app,
            post(
                "/approvals/ap-0000000000000000",
                Some(&cookie),
                Some(&own),
                bad,
            ),
        );
        assert!(
            r.status == StatusCode::FORBIDDEN || r.status == StatusCode::UNPROCESSABLE_ENTITY,
            "{bad}: {}",
            r.status
        );
    }
    // Right Origin and token, no session.
    let r = send(
        &f.app,
        post("/approvals/ap-0000000000000000", None, Some(&own), &form),
    );
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // All right: the service answers (no such approval).
    let r = send(
        &f.app,
        post(
            "/approvals/ap-0000000000000000",
            Some(&cookie),
            Some(&own),
            &form,
        ),
    );
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
    let r = send(
        &f.app,
        post(
            "/approvals/ap-0000000000000000",
            Some(&cookie),
            Some(&own),
            &format!("csrf={csrf}&decision=maybe"),
        ),
    );
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    // Logging out ends the session.
    let r = send(
        &f.app,
        post(
            "/logout",
            Some(&cookie),
            Some(&own),
            &format!("csrf={csrf}"),
        ),
    );
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(
        r.headers[header::SET_COOKIE]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    assert_eq!(
        send(&f.app, get("/approvals", Some(&cookie))).status,
        StatusCode::UNAUTHORIZED
    );
}

/// The new pages and the form, each with a request that would be accepted with a session.
const NEW_GETS: [&str; 4] = [
    "/sandboxes",
    "/audit",
    "/audit?sandbox=a&actor=0&decision=deny",
    "/sandboxes/sb-1/destroy",
];

#[test]
fn the_sandbox_and_audit_pages_need_a_session_and_their_own_host() {
    let f = fixture();
    for path in NEW_GETS {
        let r = send(&f.app, get(path, None));
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{path}");
        assert!(r.headers.contains_key(header::CONTENT_SECURITY_POLICY));
    }
    let own = format!("http://{HOST}");
    let (cookie, csrf) = log_in(&f);
    let r = send(
        &f.app,
        post(
            "/sandboxes/sb-1/destroy",
            None,
            Some(&own),
            &format!("csrf={csrf}"),
        ),
    );
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    for path in NEW_GETS {
        let req = Request::get(path)
            .header(header::HOST, "evil.example:8787")
            .header(header::COOKIE, &cookie)
            .body(Body::empty())
            .unwrap();
        assert_eq!(
            send(&f.app, req).status,
            StatusCode::MISDIRECTED_REQUEST,
            "{path}"
        );
    }
    let req = Request::post("/sandboxes/sb-1/destroy")
        .header(header::HOST, "evil.example:8787")
        .header(header::COOKIE, &cookie)
        .header(header::ORIGIN, "http://evil.example:8787")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(format!("csrf={csrf}")))
        .unwrap();
    assert_eq!(send(&f.app, req).status, StatusCode::MISDIRECTED_REQUEST);
    // With the session: the pages, linked from every page's nav.
    for path in ["/sandboxes", "/audit"] {
        let r = send(&f.app, get(path, Some(&cookie)));
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.body);
        for link in [
            "href=\"/approvals\"",
            "href=\"/sandboxes\"",
            "href=\"/audit\"",
        ] {
            assert!(r.body.contains(link), "{path} lacks {link}");
        }
        assert!(!r.body.contains("style="), "{path}: no inline style (CSP)");
    }
    assert!(
        send(&f.app, get("/sandboxes", Some(&cookie)))
            .body
            .contains("No sandboxes.")
    );
}

#[test]
fn destroying_needs_the_origin_and_the_csrf_token() {
    let f = fixture();
    let (cookie, csrf) = log_in(&f);
    let own = format!("http://{HOST}");
    let path = "/sandboxes/sb-1/destroy";
    let form = format!("csrf={csrf}");
    for origin in [None, Some("http://evil.example"), Some("null")] {
        let r = send(&f.app, post(path, Some(&cookie), origin, &form));
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{origin:?}");
    }
    for bad in ["", "csrf=00", &format!("csrf={}", "0".repeat(64))] {
        let r = send(&f.app, post(path, Some(&cookie), Some(&own), bad));
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{bad:?}: {}", r.body);
    }
    // All right: the service answers (no such sandbox).
    let r = send(&f.app, post(path, Some(&cookie), Some(&own), &form));
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
    assert!(r.body.contains("sb-1"), "{}", r.body);
}

#[test]
fn hostile_sandbox_ids_are_a_clean_4xx() {
    let f = fixture();
    let (cookie, csrf) = log_in(&f);
    let own = format!("http://{HOST}");
    let long = "a".repeat(5000);
    for id in [
        "..%2Fx",
        "%2E%2E",
        "..",
        "a%2Fb",
        "%00",
        "%C3%A9t%C3%A9",
        "%F0%9F%92%A3",
        "%FF%FE",
        "-rf",
        long.as_str(),
    ] {
        let path = format!("/sandboxes/{id}/destroy");
        let page = send(&f.app, get(&path, Some(&cookie)));
        let form = send(
            &f.app,
            post(&path, Some(&cookie), Some(&own), &format!("csrf={csrf}")),
        );
        for (what, r) in [("GET", page), ("POST", form)] {
            assert!(
                r.status == StatusCode::BAD_REQUEST || r.status == StatusCode::NOT_FOUND,
                "{what} {}: {}",
                &id[..id.len().min(40)],
                r.status
            );
            assert!(r.body.len() < 2000, "the answer does not echo a long id");
        }
    }
    let r = send(&f.app, get("/sandboxes/..%2Fx/destroy", Some(&cookie)));
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.body.contains("invalid sandbox id"), "{}", r.body);
}

/// A sandbox's record, as a backend writes it, owned by `uid`, with no cgroup and no
/// process (so nothing can be destroyed by accident).
fn fake_sandbox(f: &Fixture, id: &str, uid: u32) {
    use std::os::unix::fs::DirBuilderExt;
    let dir = f._dir.path().join("rt").join("sandboxes").join(id);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let meta = serde_json::json!({
        "id": id, "backend": "process",
        "owner": {"pid": std::process::id(), "start": 0},
        "persistent": true, "init": null, "cgroup_version": null,
        "created_unix_ms": now - 90_000, "expires_unix_ms": now + 3_600_000,
        "user": uid,
    });
    std::fs::write(dir.join("meta.json"), meta.to_string()).unwrap();
}

#[test]
fn each_user_sees_only_their_sandboxes_and_another_s_is_not_found() {
    let f = fixture();
    fake_sandbox(&f, "mine-1", 1000);
    fake_sandbox(&f, "theirs-1", 1001);
    let (c1000, _) = log_in_as(&f, 1000);
    let r = send(&f.app, get("/sandboxes", Some(&c1000)));
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(
        r.body.contains("mine-1") && !r.body.contains("theirs-1"),
        "{}",
        r.body
    );
    assert!(r.body.contains("uid 1000"));
    assert!(
        r.body.contains("no cgroup"),
        "the reason there are no figures"
    );
    assert!(r.body.contains("href=\"/sandboxes/mine-1/destroy\""));
    assert!(r.body.contains("<caption") && r.body.contains("scope=\"col\""));
    let confirm = send(&f.app, get("/sandboxes/mine-1/destroy", Some(&c1000)));
    assert_eq!(confirm.status, StatusCode::OK);
    assert!(
        confirm
            .body
            .contains("Destroy sandbox <code>mine-1</code>?")
    );
    assert!(
        confirm
            .body
            .contains("action=\"/sandboxes/mine-1/destroy\"")
    );
    assert!(confirm.body.contains("href=\"/sandboxes\">Cancel"));
    // Another user's: not found, as through the API, whether looked at or destroyed.
    let other = send(&f.app, get("/sandboxes/theirs-1/destroy", Some(&c1000)));
    assert_eq!(other.status, StatusCode::NOT_FOUND, "{}", other.body);
    let (c1000b, csrf) = log_in_as(&f, 1000);
    let r = send(
        &f.app,
        post(
            "/sandboxes/theirs-1/destroy",
            Some(&c1000b),
            Some(&format!("http://{HOST}")),
            &format!("csrf={csrf}"),
        ),
    );
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
    assert!(
        f._dir
            .path()
            .join("rt/sandboxes/theirs-1/meta.json")
            .exists()
    );
    // Root sees both.
    let (root, _) = log_in(&f);
    let r = send(&f.app, get("/sandboxes", Some(&root)));
    assert!(r.body.contains("mine-1") && r.body.contains("theirs-1"));
}

/// A log in the fixture's audit dir with these records, closed (signed).
fn write_log(f: &Fixture, records: &[(u32, serde_json::Value)]) {
    use luminaguard_audit::{Actor, AuditConfig, AuditLog};
    let log = AuditLog::open_blocking(AuditConfig::new(f._dir.path().join("audit"))).unwrap();
    for (uid, event) in records {
        let actor = Actor {
            uid: *uid,
            kind: if *uid == 0 { "console" } else { "daemon" }.into(),
            session: None,
        };
        log.append_blocking(actor, event.clone()).unwrap();
    }
    log.close_blocking().unwrap();
}

fn rows(body: &str) -> usize {
    body.matches("<th scope=\"row\">").count()
}

#[test]
fn the_audit_page_filters_scopes_and_verifies() {
    use serde_json::json;
    let f = fixture();
    write_log(
        &f,
        &[
            (1000, json!({"type": "create", "sandbox": "a"})),
            (1001, json!({"type": "create", "sandbox": "b"})),
            (
                1000,
                json!({"type": "exec", "sandbox": "a", "argv": ["<script>alert(1)</script>"],
                       "decision": {"verdict": "deny", "reason": "x".repeat(3000)}}),
            ),
            (0, json!({"type": "destroy", "sandbox": "a"})),
            (1001, json!({"type": "destroy", "sandbox": "b"})),
        ],
    );
    let (root, _) = log_in(&f);
    let page = |cookie: &str, q: &str| {
        let r = send(&f.app, get(&format!("/audit{q}"), Some(cookie)));
        assert_eq!(r.status, StatusCode::OK, "{q}: {}", r.body);
        r.body
    };
    let all = page(&root, "");
    assert!(all.contains("class=\"verify ok\""), "{all}");
    assert!(
        all.contains("Verified:</strong> 5 record(s), hash chain intact"),
        "{all}"
    );
    assert!(all.contains("last checkpoint signed by"), "{all}");
    assert_eq!(rows(&all), 5);
    // Newest first.
    assert!(all.find("<th scope=\"row\">4</th>") < all.find("<th scope=\"row\">0</th>"));
    // Escaped, never markup.
    assert!(!all.contains("<script>alert"), "{all}");
    assert!(all.contains("&#60;script&#62;"), "{all}");
    // Each filter narrows; they combine.
    assert_eq!(rows(&page(&root, "?sandbox=a")), 3);
    assert_eq!(rows(&page(&root, "?decision=deny")), 1);
    assert_eq!(rows(&page(&root, "?actor=1001")), 2);
    assert_eq!(rows(&page(&root, "?actor=console")), 1);
    assert_eq!(rows(&page(&root, "?sandbox=a&actor=1000")), 2);
    assert_eq!(rows(&page(&root, "?sandbox=zz")), 0);
    assert_eq!(rows(&page(&root, "?sandbox=&actor=&decision=")), 5);
    let kept = page(&root, "?sandbox=a%22%3E%3Cb%3E");
    assert!(
        kept.contains("value=\"a&#34;&#62;&#60;b&#62;\""),
        "the form keeps the filter, escaped"
    );
    // The form works without JavaScript: a GET form with a label for every field.
    for id in ["f-sandbox", "f-actor", "f-decision"] {
        assert!(all.contains(&format!("<label for=\"{id}\"")), "{id}");
    }
    assert!(all.contains("<form method=\"get\" action=\"/audit\""));
    // A user reads what they caused and what happened to their sandboxes.
    let (u1000, _) = log_in_as(&f, 1000);
    let mine = page(&u1000, "");
    assert_eq!(rows(&mine), 3, "{mine}");
    assert!(mine.contains("You see the records you caused"));

    // Tampered on disk: red, naming the record.
    let seg = f._dir.path().join("audit").join("audit-000000.jsonl");
    let text = std::fs::read_to_string(&seg).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    lines[1] = lines[1].replace("\"uid\":1001", "\"uid\":1000");
    std::fs::write(&seg, lines.join("\n") + "\n").unwrap();
    let bad = page(&root, "");
    assert!(bad.contains("class=\"verify bad\""), "{bad}");
    assert!(!bad.contains("class=\"verify ok\""));
    assert!(bad.contains("NOT VERIFIED"), "{bad}");
    assert!(
        bad.contains("audit-000000.jsonl line 2, seq 1: edited record"),
        "{bad}"
    );
    assert!(bad.contains("Reading stopped at a bad record"), "{bad}");
}

#[test]
fn no_audit_log_yet_is_said_not_hidden() {
    let f = fixture();
    let (root, _) = log_in(&f);
    let r = send(&f.app, get("/audit", Some(&root)));
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains("Could not verify the log"), "{}", r.body);
    assert!(r.body.contains("0 record(s) match"), "{}", r.body);
}

/// The approvals' event stream is the session's: `401` without it, and an open stream ends
/// once the session is logged out (within the stream's recheck, 5 s), not at the next event.
#[test]
fn the_event_stream_ends_with_its_session() {
    let f = fixture();
    let (cookie, csrf) = log_in(&f);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let resp = f
            .app
            .clone()
            .oneshot(get("/approvals/events", Some(&cookie)))
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()[header::CONTENT_TYPE], "text/event-stream");
        let body = tokio::spawn(resp.into_body().collect());
        let out = f
            .app
            .clone()
            .oneshot(post(
                "/logout",
                Some(&cookie),
                Some(&format!("http://{HOST}")),
                &format!("csrf={csrf}"),
            ))
            .await
            .unwrap();
        assert_eq!(out.status(), StatusCode::UNAUTHORIZED, "logged out");
        let ended = tokio::time::timeout(std::time::Duration::from_secs(20), body).await;
        assert!(ended.is_ok(), "the stream outlived its session");
    });
    assert_eq!(
        send(&f.app, get("/approvals/events", Some(&cookie))).status,
        StatusCode::UNAUTHORIZED
    );
}
