//! Agent tasks the daemon runs (`/v1/agent/tasks`, docs/agent.md). The agent loop is not this
//! crate's: the binary hands the daemon an [`AgentHost`] (luminaguard-agent-loop's), and these
//! routes are its API — so the loop stays one implementation, run by the CLI or here, and every
//! tool call of a task the daemon runs goes through this daemon's service like any client's.

use std::future::Future;
use std::pin::Pin;

use axum::body::Body;
use axum::extract::{Extension, Path, State};
use axum::http::{StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use luminaguard_api::types::{AgentTaskBody, AgentTaskDetail, AgentTaskView, ErrorBody};
use luminaguard_service::{Caller, CreateOptions, Service};

use crate::AppState;
use crate::api::JsonBody;
use crate::error::ApiError;

/// What an [`AgentHost`] answers.
pub type HostFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, ApiError>> + Send + 'a>>;

/// A task's entries as they are written: one NDJSON line each, ending after its `finished`.
pub type EntryStream = Pin<Box<dyn futures_util::Stream<Item = Bytes> + Send>>;

/// Runs agent tasks for the daemon's callers. Every method is for `caller`: another user's
/// task is `not-found` (root sees all).
pub trait AgentHost: Send + Sync + std::fmt::Debug + 'static {
    /// Starts a task whose sandbox is made from `sandbox` by `service` for `caller`; it runs
    /// on after the request.
    fn start<'a>(
        &'a self,
        service: Service,
        caller: Caller,
        body: AgentTaskBody,
        sandbox: CreateOptions,
    ) -> HostFuture<'a, AgentTaskView>;
    /// The caller's tasks, newest first.
    fn list<'a>(&'a self, caller: &'a Caller) -> HostFuture<'a, Vec<AgentTaskView>>;
    /// One task and its transcript.
    fn get<'a>(&'a self, caller: &'a Caller, id: &'a str) -> HostFuture<'a, AgentTaskDetail>;
    /// A task's entries: those written so far, then each as it is written, until it ends.
    fn events<'a>(&'a self, caller: &'a Caller, id: &'a str) -> HostFuture<'a, EntryStream>;
    /// Stops a running task (its sandbox destroyed, its transcript ended `interrupted`).
    fn cancel<'a>(&'a self, caller: &'a Caller, id: &'a str) -> HostFuture<'a, ()>;
}

fn host(st: &AppState) -> Result<&dyn AgentHost, ApiError> {
    st.agents.as_deref().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "host-unsupported",
            "this daemon runs no agent tasks",
        )
    })
}

/// Start an agent task: its sandbox is made as `POST /v1/sandboxes` would (for the caller,
/// under this daemon's policy), and the task runs on after the answer. `201` with the task.
#[utoipa::path(post, path = "/v1/agent/tasks", request_body = AgentTaskBody,
    responses((status = 201, body = AgentTaskView), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn start(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    JsonBody(mut body): JsonBody<AgentTaskBody>,
) -> Result<(StatusCode, axum::Json<AgentTaskView>), ApiError> {
    let host = host(&st)?;
    let sandbox = crate::api::options(body.sandbox.take().unwrap_or_default(), false);
    let view = host
        .start(st.service.clone(), caller, body, sandbox)
        .await?;
    Ok((StatusCode::CREATED, axum::Json(view)))
}

/// The caller's agent tasks (root: everyone's), newest first.
#[utoipa::path(get, path = "/v1/agent/tasks",
    responses((status = 200, body = Vec<AgentTaskView>)))]
pub async fn list(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<axum::Json<Vec<AgentTaskView>>, ApiError> {
    Ok(axum::Json(host(&st)?.list(&caller).await?))
}

/// One agent task and its transcript.
#[utoipa::path(get, path = "/v1/agent/tasks/{id}", params(("id" = String, Path)),
    responses((status = 200, body = AgentTaskDetail), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<axum::Json<AgentTaskDetail>, ApiError> {
    Ok(axum::Json(host(&st)?.get(&caller, &id).await?))
}

/// An agent task's transcript entries as NDJSON: those written so far, then each as it is
/// written, until the task's `finished` entry.
#[utoipa::path(get, path = "/v1/agent/tasks/{id}/events", params(("id" = String, Path)),
    responses((status = 200, content_type = "application/x-ndjson", body = Object),
        (status = 404, body = ErrorBody)))]
pub async fn events(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let stream = host(&st)?.events(&caller, &id).await?;
    let body = Body::from_stream(futures_util::StreamExt::map(
        stream,
        Ok::<_, std::io::Error>,
    ));
    let mut resp = Response::new(body);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/x-ndjson"),
    );
    Ok(resp)
}

/// Stop a running agent task: its sandbox is destroyed and its transcript ends
/// `interrupted`. `409` for a task that has ended.
#[utoipa::path(delete, path = "/v1/agent/tasks/{id}", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn cancel(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    host(&st)?.cancel(&caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
