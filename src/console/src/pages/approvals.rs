//! The approvals waiting for the session's user, newest first, and the decisions posted on
//! them.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Form, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use luminaguard_service::Answer;
use serde::Deserialize;

use super::{Authed, render};
use crate::Console;

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

pub(crate) async fn page(State(console): State<Arc<Console>>, who: Authed) -> Response {
    let mut list = console.service.approvals(&who.caller()).await;
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
    render(&ApprovalsPage {
        csrf: who.session.csrf,
        rows,
    })
}

#[derive(Deserialize)]
pub(crate) struct DecideForm {
    csrf: String,
    /// `approve` or `deny`.
    decision: String,
    #[serde(default)]
    reason: String,
    /// The change set the person was shown (empty for an action).
    #[serde(default)]
    digest: String,
}

pub(crate) async fn decide(
    State(console): State<Arc<Console>>,
    who: Authed,
    Path(id): Path<String>,
    Form(f): Form<DecideForm>,
) -> Response {
    if let Err(refused) = who.check(&f.csrf) {
        return refused.into_response();
    }
    let answer = match f.decision.as_str() {
        "approve" => Answer::Approve,
        "deny" => Answer::Deny,
        _ => return (StatusCode::BAD_REQUEST, "decision: approve or deny").into_response(),
    };
    let reason = Some(f.reason.trim().to_owned()).filter(|r| !r.is_empty());
    let caller = who.caller();
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
