//! Logging in with a one-time link, and out.

use std::sync::Arc;

use axum::extract::{Form, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::{Authed, unauthorized};
use crate::Console;
use crate::auth::COOKIE;

#[derive(Deserialize)]
pub(crate) struct LoginQuery {
    token: String,
}

/// The login link: a session, its cookie, then the approvals.
pub(crate) async fn login(
    State(console): State<Arc<Console>>,
    Query(q): Query<LoginQuery>,
) -> Response {
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
pub(crate) struct CsrfForm {
    pub csrf: String,
}

pub(crate) async fn logout(
    State(console): State<Arc<Console>>,
    who: Authed,
    Form(f): Form<CsrfForm>,
) -> Response {
    if let Err(refused) = who.check(&f.csrf) {
        return refused.into_response();
    }
    console.sessions.logout(&who.id);
    let mut resp = unauthorized();
    if let Ok(v) = format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0").parse() {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}
