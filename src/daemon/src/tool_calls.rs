//! The MCP gateway's calls: judged before they are forwarded to a server in a sandbox, and
//! recorded when they end; and the agent loop's steps, recorded before their calls run. The
//! gateway forwards its calls itself; these routes are where the service's policy, Approval
//! Cliff and audit log see them.

use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use luminaguard_api::types::{ErrorBody, ToolCallBody, ToolCallCleared};
use luminaguard_service::Caller;
use luminaguard_service::agent_event::AgentEvent;
use luminaguard_service::tool_call::{ToolCall, ToolEvent};

use crate::AppState;
use crate::api::{JsonBody, sandbox_id};
use crate::error::ApiError;

/// Judge an MCP tool call before it is forwarded to the server in the sandbox: allowed, it is
/// cleared at once; asked about, the request waits for a person's answer on an action card;
/// denied (by the policy or the person), `403` with the rule or the person's reason.
#[utoipa::path(post, path = "/v1/sandboxes/{id}/tool-calls",
    params(("id" = String, Path)),
    request_body = ToolCallBody,
    responses((status = 200, body = ToolCallCleared), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 413, body = ErrorBody)))]
pub async fn judge(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<ToolCallBody>,
) -> Result<axum::Json<ToolCallCleared>, ApiError> {
    let id = sandbox_id(&id)?;
    let call = ToolCall {
        server: body.server,
        tool: body.tool,
        arguments: body.arguments,
    };
    let cleared = st.service.judge_tool_call(&caller, &id, &call).await?;
    Ok(axum::Json(ToolCallCleared {
        verdict: cleared.verdict,
        reason: cleared.reason,
        approval: cleared.approval,
    }))
}

/// Record what the gateway saw of a server's tools: how a judged call ended (`result`), a call
/// refused before it was judged (`refused`), a tool pinned (`pinned`) or found changed
/// (`pin-changed`). The body is one event, tagged by `event`.
#[utoipa::path(post, path = "/v1/sandboxes/{id}/tool-events",
    params(("id" = String, Path)),
    request_body(content = Object, description = "A tool event: `{\"event\": \"result\", \"server\", \"tool\", \"approval\", \"duration_ms\", \"result_bytes\", \"is_error\", \"failed\", \"redacted\"}`, `{\"event\": \"refused\", \"server\", \"tool\", \"reason\"}`, `{\"event\": \"pinned\", \"server\", \"tool\", \"sha256\"}` or `{\"event\": \"pin-changed\", \"server\", \"tool\", \"changed\", \"pinned\", \"served\"}`"),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn record(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    JsonBody(event): JsonBody<ToolEvent>,
) -> Result<StatusCode, ApiError> {
    let id = sandbox_id(&id)?;
    st.service.record_tool_event(&caller, &id, &event).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Record an agent task's event: a model's answer before the calls it proposes run
/// (`step`: its tool calls with their arguments' digests, its tokens) or how the task ended
/// (`finished`). The caller must own the sandbox the task runs in.
#[utoipa::path(post, path = "/v1/sandboxes/{id}/agent-events",
    params(("id" = String, Path)),
    request_body(content = Object, description = "An agent event: `{\"event\": \"step\", \"task\", \"step\", \"provider\", \"model\", \"stop_reason\", \"input_tokens\", \"output_tokens\", \"text_sha256\", \"text_bytes\", \"tool_calls\": [{\"id\", \"tool\", \"arguments_sha256\", \"malformed\"}]}` or `{\"event\": \"finished\", \"task\", \"status\", \"steps\", \"input_tokens\", \"output_tokens\"}`"),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn record_agent(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    JsonBody(event): JsonBody<AgentEvent>,
) -> Result<StatusCode, ApiError> {
    let id = sandbox_id(&id)?;
    st.service.record_agent_event(&caller, &id, &event).await?;
    Ok(StatusCode::NO_CONTENT)
}
