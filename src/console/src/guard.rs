//! What every request passes before a page sees it: the `Host` it names must be the console's
//! own (a DNS-rebinding page's requests name the attacker's host), a state-changing request's
//! `Origin` must be the console's, and every response carries a strict Content-Security-Policy
//! and the headers that keep it out of frames and sniffers.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::Console;

/// No script or style but the console's own, no frames, forms only to itself.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Refuses a request for another host, or a cross-origin state change; adds the security
/// headers to every answer.
pub async fn guard(State(console): State<Arc<Console>>, req: Request, next: Next) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    let mut resp = if !console.hosts.iter().any(|h| h == host) {
        (
            StatusCode::MISDIRECTED_REQUEST,
            "this console answers only for its own address",
        )
            .into_response()
    } else if changes_state(req.method()) && !same_origin(&req, &console.hosts) {
        (
            StatusCode::FORBIDDEN,
            "refused: a change must come from the console's own pages (Origin)",
        )
            .into_response()
    } else {
        next.run(req).await
    };
    let h = resp.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        // Not `no-referrer`: under it a browser's form posts carry `Origin: null`, and the
        // Origin check above would refuse the console's own forms (found by the browser test).
        (header::REFERRER_POLICY, "same-origin"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    resp
}

fn changes_state(m: &Method) -> bool {
    !matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The request's `Origin` is `http://` and one of the console's hosts (a browser sends it on
/// every POST; a missing one is refused).
fn same_origin(req: &Request, hosts: &[String]) -> bool {
    let Some(origin) = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
    else {
        return false;
    };
    origin
        .strip_prefix("http://")
        .is_some_and(|h| hosts.iter().any(|x| x == h))
}
