//! The approvals waiting for the session's user, newest first, and the decisions posted on
//! them.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Form, Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use luminaguard_service::Answer;
use luminaguard_service::approvals::Approval;
use luminaguard_service::events::EventKind;
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;

use super::diff::{SplitRow, split};
use super::{Authed, SESSION_RECHECK, render};
use crate::Console;

/// One waiting approval as the page shows it.
pub(crate) struct Row {
    id: String,
    kind: &'static str,
    sandbox: String,
    /// The card's text a line at a time, with the CSS class of each (as a terminal colours
    /// it: [`luminaguard_review::classify`]).
    lines: Vec<(&'static str, String)>,
    /// The same, side by side (only when the page asks for it).
    split: Option<Vec<SplitRow>>,
    asked: Vec<String>,
    /// The head of the run's output (control characters shown as `\xNN`).
    output: String,
    output_cut: bool,
    digest: String,
    expires_unix_ms: u64,
    expires_rfc3339: String,
    expires_at: String,
    network: Vec<String>,
}

impl Row {
    fn new(a: Approval, view: View) -> Self {
        let expires = std::time::UNIX_EPOCH + std::time::Duration::from_millis(a.expires_unix_ms);
        let expires_rfc3339 = humantime::format_rfc3339_seconds(expires).to_string();
        let expires_at = expires_rfc3339.replace('T', " ").replace('Z', " UTC");
        Self {
            kind: if a.action.is_some() {
                "Action"
            } else {
                "Diff Card"
            },
            digest: a.changes.digest.clone(),
            split: (view == View::Split && a.action.is_none()).then(|| split(&a.text)),
            lines: a
                .text
                .lines()
                .map(|l| (luminaguard_review::classify(l).class(), l.to_owned()))
                .collect(),
            id: a.id,
            sandbox: a.sandbox.to_string(),
            asked: a.asked,
            output: luminaguard_review::path::for_terminal(&a.output_head),
            output_cut: a.output_cut,
            expires_unix_ms: a.expires_unix_ms,
            expires_rfc3339,
            expires_at,
            network: a.network_attempts,
        }
    }
}

/// How the page shows diffs: `?view=unified` (the default) or `?view=split`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum View {
    #[default]
    Unified,
    Split,
}

impl View {
    fn as_str(self) -> &'static str {
        match self {
            Self::Unified => "unified",
            Self::Split => "split",
        }
    }
}

#[derive(Deserialize)]
pub(crate) struct ViewQuery {
    #[serde(default)]
    view: View,
}

#[derive(Template)]
#[template(path = "approvals.html")]
struct ApprovalsPage {
    csrf: String,
    view: &'static str,
    rows: Vec<Row>,
}

/// One card alone: what the live stream sends for a new approval.
#[derive(Template)]
#[template(path = "card.html")]
struct Card {
    csrf: String,
    r: Row,
}

pub(crate) async fn page(
    State(console): State<Arc<Console>>,
    who: Authed,
    Query(q): Query<ViewQuery>,
) -> Response {
    let mut list = console.service.approvals(&who.caller()).await;
    // Newest first.
    list.sort_by_key(|a| std::cmp::Reverse(a.requested_unix_ms));
    render(&ApprovalsPage {
        csrf: who.session.csrf,
        view: q.view.as_str(),
        rows: list.into_iter().map(|a| Row::new(a, q.view)).collect(),
    })
}

/// The approvals as they change, as server-sent events: `card` (a new card's HTML, as the
/// page renders it), `gone` (the id of one answered — here, at a terminal, over MCP — expired
/// or withdrawn), `reload` (events were lost: the page should be fetched again). Only the
/// session's user's approvals; the stream ends when the session does.
pub(crate) async fn events(
    State(console): State<Arc<Console>>,
    who: Authed,
    Query(q): Query<ViewQuery>,
) -> Sse<impl futures_util::Stream<Item = Result<Event, std::convert::Infallible>>> {
    let rx = console.service.subscribe();
    let caller = who.caller();
    let stream = futures_util::stream::unfold(rx, move |mut rx| {
        let (console, caller, sid, csrf) = (
            Arc::clone(&console),
            caller.clone(),
            who.id.clone(),
            who.session.csrf.clone(),
        );
        async move {
            loop {
                // The session is looked at between events, and at least every
                // SESSION_RECHECK: a logged-out (or expired) session's stream ends.
                let next = tokio::time::timeout(SESSION_RECHECK, rx.recv()).await;
                if !console.sessions.alive(&sid) {
                    return None;
                }
                let e = match next {
                    Err(_elapsed) => continue,
                    Ok(Ok(e)) => e,
                    Ok(Err(RecvError::Lagged(_))) => {
                        return Some((Ok(Event::default().event("reload").data("lagged")), rx));
                    }
                    Ok(Err(RecvError::Closed)) => return None,
                };
                if !caller.may_use(e.user) {
                    continue;
                }
                let Some(id) = e.approval else { continue };
                let event = match e.kind {
                    EventKind::ApprovalRequested => {
                        let Ok(a) = console.service.approval(&caller, &id).await else {
                            continue;
                        };
                        if a.outcome.is_some() {
                            continue;
                        }
                        let card = Card {
                            csrf: csrf.clone(),
                            r: Row::new(a, q.view),
                        };
                        match card.render() {
                            Ok(html) => Event::default().event("card").data(html),
                            Err(e) => {
                                tracing::warn!(error = %e, "rendering a live card");
                                Event::default().event("reload").data("render")
                            }
                        }
                    }
                    EventKind::ApprovalDecided => Event::default().event("gone").data(id),
                    _ => continue,
                };
                return Some((Ok(event), rx));
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
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
