//! Every handler as a hostile browser or client meets it: nothing without a session, no
//! session without a one-time link, no change without the session's CSRF token and the
//! console's own Origin, no answer for another Host (DNS rebinding), and the security headers
//! on every response.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

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
    let console = Console::new(service, HOST.parse().unwrap());
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

/// Logs in with a fresh link: the cookie to send, and the page's CSRF token.
fn log_in(f: &Fixture) -> (String, String) {
    let url = f.console.login_url(0, 0).unwrap();
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
        "/approvals",
        "/assets/console.css",
        "/login?token=00",
        "/login",
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
    let r = send(&f.app, get("/approvals", Some("lg_session=0123")));
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.body.contains("luminaguard console url"));
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
