//! The pages and the forms they post. Every page needs a session; every form carries the
//! session's CSRF token and is refused without it.

use std::sync::Arc;

use askama::Template;
use axum::Router;
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use luminaguard_service::{Answer, Caller};
use serde::Deserialize;

use crate::Console;
use crate::auth::{COOKIE, Session, cookie, same};

pub(crate) fn routes() -> Router<Arc<Console>> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/approvals") }))
        .route("/login", get(login))
        .route("/logout", post(logout))
        .route("/approvals", get(approvals))
        .route("/approvals/{id}", post(decide))
        .route("/assets/console.css", get(css))
}

/// What a page without a session answers.
#[derive(Template)]
#[template(path = "unauthorized.html")]
struct Unauthorized;

fn unauthorized() -> Response {
    let body = Unauthorized.render().unwrap_or_default();
    (StatusCode::UNAUTHORIZED, Html(body)).into_response()
}

fn forbidden(why: &str) -> Response {
    (StatusCode::FORBIDDEN, format!("refused: {why}")).into_response()
}

/// The request's session: its cookie's id and the session.
fn session(console: &Console, headers: &HeaderMap) -> Option<(String, Session)> {
    let id = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|h| cookie(h, COOKIE))?;
    let s = console.sessions.get(id)?;
    Some((id.to_owned(), s))
}

/// Whom the service hears from: the session's user, named `console` on the records.
fn caller(s: &Session) -> Caller {
    Caller {
        uid: s.uid,
        gid: s.gid,
        pid: None,
        session: Some("console".into()),
    }
}

#[derive(Deserialize)]
struct LoginQuery {
    token: String,
}

/// The login link: a session, its cookie, then the approvals.
async fn login(State(console): State<Arc<Console>>, Query(q): Query<LoginQuery>) -> Response {
    let Some((id, _)) = console.sessions.login(&q.token) else {
        return unauthorized();
    };
    let cookie = format!("{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/");
    let mut resp = Redirect::to("/approvals").into_response();
    if let Ok(v) = cookie.parse() {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: String,
}

async fn logout(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    Form(f): Form<CsrfForm>,
) -> Response {
    let Some((id, s)) = session(&console, &headers) else {
        return unauthorized();
    };
    if !same(&f.csrf, &s.csrf) {
        return forbidden("the form's CSRF token is not this session's");
    }
    console.sessions.logout(&id);
    let mut resp = unauthorized();
    if let Ok(v) = format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0").parse() {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

/// One waiting approval as the page shows it.
struct Row {
    id: String,
    kind: &'static str,
    sandbox: String,
    text: String,
    asked: Vec<String>,
    digest: String,
    expires_unix_ms: u64,
    network: Vec<String>,
}

#[derive(Template)]
#[template(path = "approvals.html")]
struct ApprovalsPage {
    csrf: String,
    rows: Vec<Row>,
}

async fn approvals(State(console): State<Arc<Console>>, headers: HeaderMap) -> Response {
    let Some((_, s)) = session(&console, &headers) else {
        return unauthorized();
    };
    let mut list = console.service.approvals(&caller(&s)).await;
    // Newest first.
    list.sort_by_key(|a| std::cmp::Reverse(a.requested_unix_ms));
    let rows = list
        .into_iter()
        .map(|a| Row {
            kind: if a.action.is_some() {
                "Action"
            } else {
                "Diff Card"
            },
            digest: a.changes.digest.clone(),
            id: a.id,
            sandbox: a.sandbox.to_string(),
            text: a.text,
            asked: a.asked,
            expires_unix_ms: a.expires_unix_ms,
            network: a.network_attempts,
        })
        .collect();
    let page = ApprovalsPage { csrf: s.csrf, rows };
    match page.render() {
        Ok(body) => Html(body).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

#[derive(Deserialize)]
struct DecideForm {
    csrf: String,
    /// `approve` or `deny`.
    decision: String,
    #[serde(default)]
    reason: String,
    /// The change set the person was shown (empty for an action).
    #[serde(default)]
    digest: String,
}

async fn decide(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Form<DecideForm>,
) -> Response {
    let Some((_, s)) = session(&console, &headers) else {
        return unauthorized();
    };
    if !same(&f.csrf, &s.csrf) {
        return forbidden("the form's CSRF token is not this session's");
    }
    let answer = match f.decision.as_str() {
        "approve" => Answer::Approve,
        "deny" => Answer::Deny,
        _ => return (StatusCode::BAD_REQUEST, "decision: approve or deny").into_response(),
    };
    let reason = Some(f.reason.trim().to_owned()).filter(|r| !r.is_empty());
    let caller = caller(&s);
    let by = luminaguard_service::review::Deciding {
        caller: &caller,
        via: "console",
    };
    let digest = Some(f.digest.as_str()).filter(|d| !d.is_empty());
    match console
        .service
        .answer(by, &id, answer, reason, digest)
        .await
    {
        Ok(_) => Redirect::to("/approvals").into_response(),
        Err(e) => {
            let status = luminaguard_daemon::error::status(e.code());
            (status, format!("{}: {e}", e.code().as_str())).into_response()
        }
    }
}

async fn css(State(console): State<Arc<Console>>, headers: HeaderMap) -> Response {
    // Every asset behind the session too: without the link, nothing of the console answers.
    if session(&console, &headers).is_none() {
        return unauthorized();
    }
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("../assets/console.css"),
    )
        .into_response()
}
