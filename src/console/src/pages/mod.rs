//! The pages and the forms they post. Every page and asset needs a session ([`Authed`]); every
//! form carries the session's CSRF token and is refused without it ([`Authed::check`]).

mod approvals;
mod assets;
mod audit;
mod diff;
mod figures;
mod login;
mod sandboxes;
mod tasks;

use std::sync::Arc;

use askama::Template;
use axum::Router;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use luminaguard_service::Caller;

use crate::Console;
use crate::auth::{COOKIE, Session, cookie, same};

/// How often an open event stream checks its session is still live.
pub(crate) const SESSION_RECHECK: std::time::Duration = std::time::Duration::from_secs(5);

pub(crate) fn routes() -> Router<Arc<Console>> {
    Router::new()
        .route("/", get(|_: Authed| async { Redirect::to("/approvals") }))
        .route("/login", get(login::login))
        .route("/logout", post(login::logout))
        .route("/approvals", get(approvals::page))
        .route("/approvals/events", get(approvals::events))
        .route("/approvals/{id}", post(approvals::decide))
        // Sandboxes and the audit log.
        .route("/sandboxes", get(sandboxes::page))
        .route(
            "/sandboxes/{id}/destroy",
            get(sandboxes::confirm).post(sandboxes::destroy),
        )
        .route("/audit", get(audit::page))
        // Agent tasks.
        .route("/tasks", get(tasks::list))
        .route("/tasks/{id}", get(tasks::show))
        .route("/tasks/{id}/events", get(tasks::events))
        .route("/tasks/{id}/cancel", post(tasks::cancel))
        .route("/assets/{name}", get(assets::asset))
}

/// What a page without a session answers.
#[derive(Template)]
#[template(path = "unauthorized.html")]
struct Unauthorized;

pub(crate) fn unauthorized() -> Response {
    let body = Unauthorized.render().unwrap_or_default();
    (StatusCode::UNAUTHORIZED, Html(body)).into_response()
}

pub(crate) fn forbidden(why: &str) -> Response {
    (StatusCode::FORBIDDEN, format!("refused: {why}")).into_response()
}

/// A page, rendered; a template that fails to render is the console's fault (500).
pub(crate) fn render(page: &impl Template) -> Response {
    match page.render() {
        Ok(body) => Html(body).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// A form whose CSRF token is not its session's: `403`.
pub(crate) struct CsrfRefused;

impl IntoResponse for CsrfRefused {
    fn into_response(self) -> Response {
        forbidden("the form's CSRF token is not this session's")
    }
}

/// A request that carries a live session; without one the handler is never reached and the
/// answer is `401`.
pub(crate) struct Authed {
    /// The session's id (its cookie's value).
    pub id: String,
    pub session: Session,
}

impl Authed {
    /// Whom the service hears from: the session's user, through the console (the records'
    /// actor kind: set here, not a label a client could choose).
    pub fn caller(&self) -> Caller {
        Caller {
            uid: self.session.uid,
            gid: self.session.gid,
            pid: None,
            session: None,
            front: Some("console"),
        }
    }

    /// The form's CSRF token is this session's.
    pub fn check(&self, csrf: &str) -> Result<(), CsrfRefused> {
        if same(csrf, &self.session.csrf) {
            Ok(())
        } else {
            Err(CsrfRefused)
        }
    }
}

impl FromRequestParts<Arc<Console>> for Authed {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        console: &Arc<Console>,
    ) -> Result<Self, Self::Rejection> {
        let id = parts
            .headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|h| cookie(h, COOKIE))
            .ok_or_else(unauthorized)?;
        let session = console.sessions.get(id).ok_or_else(unauthorized)?;
        Ok(Self {
            id: id.to_owned(),
            session,
        })
    }
}
