//! The Approval Cliff over HTTP: the Diff Cards waiting for a person (`GET /v1/approvals`),
//! one card (`GET /v1/approvals/{id}`, `?wait=true` to block until it is answered), the answer
//! (`POST /v1/approvals/{id}`), and a speculative sandbox's card made on request
//! (`POST /v1/sandboxes/{id}/review`). The service decides who may see and answer a card (its
//! owner, or root) and applies an approved one; these handlers only translate.

use axum::extract::{Extension, Path, Query, State};
use luminaguard_api::types::{ActionView, ApprovalView, CardView, DecideBody, ErrorBody};
use luminaguard_service::review::{Card, Deciding};
use luminaguard_service::{Answer, Approval, Caller};
use serde::Deserialize;

use crate::AppState;
use crate::api::{JsonBody, sandbox_id};
use crate::error::ApiError;

/// A card as the API shows it.
pub fn card_view(c: &Card) -> CardView {
    CardView {
        approval: c.approval.clone(),
        sandbox: c.sandbox.to_string(),
        workspace: Some(c.workspace.display().to_string()),
        action: None,
        changes: serde_json::to_value(&c.changes).unwrap_or_default(),
        text: c.text.clone(),
        asked: c.asked.clone(),
        output_head: c.output_head.clone(),
        output_cut: c.output_cut,
        network_attempts: c.network_attempts.clone(),
        policy_digest: c.policy_digest.clone(),
        expires_unix_ms: c.expires_unix_ms,
    }
}

/// An approval as the API shows it.
pub fn approval_view(a: &Approval) -> ApprovalView {
    ApprovalView {
        id: a.id.clone(),
        user: a.user,
        state: a
            .outcome
            .as_ref()
            .map_or("pending", luminaguard_service::Outcome::state)
            .to_owned(),
        requested_unix_ms: a.requested_unix_ms,
        always: a.always.clone(),
        card: CardView {
            approval: Some(a.id.clone()),
            sandbox: a.sandbox.to_string(),
            workspace: a.workspace.as_ref().map(|w| w.display().to_string()),
            action: a.action.as_ref().map(|x| ActionView {
                kind: x.kind.clone(),
                argv: x.argv.clone(),
                path: x.path.clone(),
                network: x.network.clone(),
                tool: x
                    .tool
                    .as_ref()
                    .map(|t| luminaguard_api::types::ToolCallBody {
                        server: t.server.clone(),
                        tool: t.tool.clone(),
                        arguments: t.arguments.clone(),
                    }),
                unpreviewable: x.unpreviewable.clone(),
            }),
            changes: serde_json::to_value(&a.changes).unwrap_or_default(),
            text: a.text.clone(),
            asked: a.asked.clone(),
            output_head: a.output_head.clone(),
            output_cut: a.output_cut,
            network_attempts: a.network_attempts.clone(),
            policy_digest: a.policy_digest.clone(),
            expires_unix_ms: a.expires_unix_ms,
        },
        outcome: a
            .outcome
            .as_ref()
            .and_then(|o| serde_json::to_value(o).ok()),
        outcome_text: a.outcome.as_ref().map(ToString::to_string),
    }
}

/// An approval id from a path: anything not of the form is not looked up.
fn approval_id(id: &str) -> Result<&str, ApiError> {
    if luminaguard_service::approvals::is_id(id) {
        Ok(id)
    } else {
        Err(ApiError::not_found(format!("no approval {id:?}")))
    }
}

/// The Diff Cards waiting for an answer that the caller may see (root: all), oldest first.
#[utoipa::path(get, path = "/v1/approvals",
    responses((status = 200, body = Vec<ApprovalView>)))]
pub async fn list(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> axum::Json<Vec<ApprovalView>> {
    let list = st.service.approvals(&caller).await;
    axum::Json(list.iter().map(approval_view).collect())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitQuery {
    #[serde(default)]
    wait: bool,
}

/// One approval, waiting or answered not long ago; with `wait=true`, the answer comes once it
/// is decided (or expired, or withdrawn).
#[utoipa::path(get, path = "/v1/approvals/{id}",
    params(("id" = String, Path), ("wait" = Option<bool>, Query)),
    responses((status = 200, body = ApprovalView), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Query(q): Query<WaitQuery>,
) -> Result<axum::Json<ApprovalView>, ApiError> {
    let id = approval_id(&id)?;
    let a = if q.wait {
        st.service.wait_approval(&caller, id).await?
    } else {
        st.service.approval(&caller, id).await?
    };
    Ok(axum::Json(approval_view(&a)))
}

/// Answer an approval: `approve` applies exactly the card's change set (all of it, or nothing
/// if the workspace changed since); `deny` applies nothing. Answered once: a second answer is
/// a conflict.
#[utoipa::path(post, path = "/v1/approvals/{id}", params(("id" = String, Path)),
    request_body = DecideBody,
    responses((status = 200, body = ApprovalView), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn decide(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<DecideBody>,
) -> Result<axum::Json<ApprovalView>, ApiError> {
    let id = approval_id(&id)?;
    let answer = match (body.decision.as_str(), body.scope.as_deref()) {
        ("approve", None | Some("once")) => Answer::Approve,
        ("approve", Some("session")) => Answer::ApproveForSession,
        ("approve", Some("always")) => Answer::ApproveAlways,
        ("deny", None | Some("once")) => Answer::Deny,
        ("approve" | "deny", Some(other)) => {
            return Err(ApiError::bad_request(format!(
                "scope {other:?}: say \"once\", \"session\" or \"always\" (approve only)"
            )));
        }
        (other, _) => {
            return Err(ApiError::bad_request(format!(
                "decision {other:?}: say \"approve\" or \"deny\""
            )));
        }
    };
    if body.reason.as_ref().is_some_and(|r| r.len() > 4096) {
        return Err(ApiError::bad_request("reason: at most 4096 bytes"));
    }
    let a = st
        .service
        .answer(
            Deciding {
                caller: &caller,
                via: "api",
            },
            id,
            answer,
            body.reason,
            body.digest.as_deref(),
        )
        .await?;
    Ok(axum::Json(approval_view(&a)))
}

/// The Diff Card of what a speculative sandbox's commands changed so far, put up for an answer
/// (replacing its earlier card).
#[utoipa::path(post, path = "/v1/sandboxes/{id}/review", params(("id" = String, Path)),
    responses((status = 200, body = CardView), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn review(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<axum::Json<CardView>, ApiError> {
    let id = sandbox_id(&id)?;
    let card = st.service.review(&caller, &id).await?;
    Ok(axum::Json(card_view(&card)))
}
