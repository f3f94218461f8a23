//! The routes of API version 1 and the OpenAPI document generated from them. Handlers are thin:
//! parse, call the service (which judges and does everything), render.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{
    DefaultBodyLimit, Extension, FromRequest, FromRequestParts, Path, Query, Request, State,
};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use futures_util::StreamExt;
use luminaguard_api::types::{
    ActionView, ApprovalView, AuditView, CardView, CreateSandbox, DecideBody, DenialView,
    ErrorBody, EventView, ExecBody, ExecEvent, ExitView, GcView, Health, MountBody, RunBody,
    SandboxView, StatView, Written,
};
use luminaguard_core::SandboxId;
use luminaguard_service::{Caller, CreateOptions, ExecOptions};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tokio::io::AsyncReadExt;
use utoipa::OpenApi;

use crate::AppState;
use crate::error::ApiError;
use crate::execs::{self, After, StdinPlan};

/// The OpenAPI document of this API, generated from the handlers and types below.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "LuminaGuard",
        description = "Sandboxes for AI agents' actions: create, run commands, move files, destroy. \
                       Served on a Unix socket; the peer's uid is the caller, and each caller \
                       sees only its own sandboxes."
    ),
    paths(
        health,
        openapi,
        create,
        list,
        get_one,
        destroy,
        exec,
        exec_stdin,
        read_file,
        write_file,
        stat,
        audit,
        run,
        gc,
        events,
        metrics,
        crate::approvals::list,
        crate::approvals::get,
        crate::approvals::decide,
        crate::approvals::review,
        crate::tool_calls::judge,
        crate::tool_calls::record,
        crate::tool_calls::record_agent,
        crate::agent_tasks::start,
        crate::agent_tasks::list,
        crate::agent_tasks::get,
        crate::agent_tasks::events,
        crate::agent_tasks::cancel,
        crate::console_links::login
    ),
    components(schemas(
        Health,
        ErrorBody,
        CreateSandbox,
        MountBody,
        SandboxView,
        ExecBody,
        RunBody,
        ExecEvent,
        ExitView,
        EventView,
        GcView,
        Written,
        StatView,
        AuditView,
        DenialView,
        CardView,
        ActionView,
        ApprovalView,
        DecideBody,
        luminaguard_api::types::ToolCallBody,
        luminaguard_api::types::ToolCallCleared,
        luminaguard_api::types::AgentTaskBody,
        luminaguard_api::types::AgentTaskView,
        luminaguard_api::types::AgentTaskDetail,
        luminaguard_api::types::ConsoleLink,
        luminaguard_api::chunk::Chunk
    ))
)]
#[derive(Debug)]
pub struct ApiDoc;

/// Every route, with its body limits; requests without a route get a JSON 404.
pub fn router(st: AppState) -> Router {
    let json_limit =
        usize::try_from(st.service.config().daemon.max_body.bytes()).unwrap_or(usize::MAX);
    let streamed = Router::new()
        .route("/v1/sandboxes/{id}/files", get(read_file).put(write_file))
        .route("/v1/sandboxes/{id}/execs/{exec}/stdin", put(exec_stdin))
        .layer(DefaultBodyLimit::disable());
    Router::new()
        .route("/v1/health", get(health))
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/sandboxes", post(create).get(list))
        .route("/v1/sandboxes/{id}", get(get_one).delete(destroy))
        .route("/v1/sandboxes/{id}/exec", post(exec))
        .route("/v1/sandboxes/{id}/audit", get(audit))
        .route("/v1/sandboxes/{id}/stat", get(stat))
        .route("/v1/sandboxes/{id}/review", post(crate::approvals::review))
        .route(
            "/v1/sandboxes/{id}/tool-calls",
            post(crate::tool_calls::judge),
        )
        .route(
            "/v1/sandboxes/{id}/tool-events",
            post(crate::tool_calls::record),
        )
        .route(
            "/v1/sandboxes/{id}/agent-events",
            post(crate::tool_calls::record_agent),
        )
        .route(
            "/v1/agent/tasks",
            post(crate::agent_tasks::start).get(crate::agent_tasks::list),
        )
        .route(
            "/v1/agent/tasks/{id}",
            get(crate::agent_tasks::get).delete(crate::agent_tasks::cancel),
        )
        .route(
            "/v1/agent/tasks/{id}/events",
            get(crate::agent_tasks::events),
        )
        .route("/v1/console/login", post(crate::console_links::login))
        .route("/v1/approvals", get(crate::approvals::list))
        .route(
            "/v1/approvals/{id}",
            get(crate::approvals::get).post(crate::approvals::decide),
        )
        .route("/v1/run", post(run))
        .route("/v1/gc", post(gc))
        .route("/v1/events", get(events))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(json_limit))
        .merge(streamed)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(st)
}

async fn not_found(req: Request) -> ApiError {
    ApiError::not_found(format!("no route {} {}", req.method(), req.uri().path()))
}

async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "bad-request",
        format!("{} is not allowed on {}", req.method(), req.uri().path()),
    )
}

/// A JSON body, whatever its content type says (curl's `-d` sends a form type); an empty body
/// is `{}`. Malformed JSON, unknown fields and wrong types are a 400 that says where; a body
/// over the limit a 413.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await.map_err(|rej| {
            let status = rej.status();
            let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
                "too-large"
            } else {
                "bad-request"
            };
            ApiError::new(status, code, rej.body_text())
        })?;
        let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &bytes
        };
        serde_json::from_slice(text)
            .map(JsonBody)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
    }
}

/// A query string, whose errors are JSON like every other.
#[derive(Debug)]
pub struct Params<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(q)| Params(q))
            .map_err(|rej| ApiError::bad_request(rej.body_text()))
    }
}

pub(crate) fn sandbox_id(id: &str) -> Result<SandboxId, ApiError> {
    id.parse()
        .map_err(|e| ApiError::bad_request(format!("invalid sandbox id: {e}")))
}

/// The wire form of a listing (also what `sandbox ls --json` prints without a daemon).
pub fn view(l: luminaguard_service::Listing) -> SandboxView {
    SandboxView {
        id: l.id,
        backend: l.backend,
        accel: l.accel,
        state: l.state.to_string(),
        persistent: l.persistent,
        user: l.user,
        age_ms: l.age_ms,
        expires_in_ms: l.expires_in_ms,
        pool: l.pool,
        mounts: l.mounts.into_iter().map(Into::into).collect(),
    }
}

/// What a create body asks the service for.
pub(crate) fn options(body: CreateSandbox, persistent: bool) -> CreateOptions {
    CreateOptions {
        id: body.name,
        persistent,
        workspace: body.workspace.map(PathBuf::from),
        mounts: body.mounts.into_iter().map(Into::into).collect(),
        memory: body.memory,
        pids: body.pids,
        cpus: body.cpus,
        timeout: body.timeout,
        lifetime: body.lifetime,
        no_cgroup: body.no_cgroup,
        backend: body.backend,
        image: body.image,
        template: body.template,
        net_allow: body.net,
        net_deny: body.net_deny,
        pool: body.pool,
        review: body.review,
    }
}

/// Creates and commits a sandbox for `caller`, timing it.
async fn make(st: &AppState, caller: &Caller, opts: CreateOptions) -> Result<SandboxId, ApiError> {
    let started = Instant::now();
    let pending = st.service.create(caller, opts).await?;
    let id = pending.commit().await?;
    st.metrics
        .create_seconds
        .observe(started.elapsed().as_secs_f64());
    Ok(id)
}

/// The exec settings of a body, and how its stdin is fed.
fn exec_options(body: ExecBody) -> Result<(ExecOptions, StdinPlan), ApiError> {
    if body.argv.is_empty() {
        return Err(ApiError::bad_request(
            "argv is empty: name a program to run",
        ));
    }
    let plan = match (body.stdin, body.stdin_stream) {
        (Some(_), true) => {
            return Err(ApiError::bad_request(
                "give stdin as text or as a stream (stdin_stream), not both",
            ));
        }
        (Some(text), false) => StdinPlan::Text(text),
        (None, true) => StdinPlan::Stream,
        (None, false) => StdinPlan::None,
    };
    let opts = ExecOptions {
        argv: body.argv,
        env: body.env.into_iter().collect(),
        cwd: body.cwd,
        timeout: body.timeout,
        stdin: !matches!(plan, StdinPlan::None),
    };
    Ok((opts, plan))
}

/// The daemon answers.
#[utoipa::path(get, path = "/v1/health", responses((status = 200, body = Health)))]
async fn health() -> axum::Json<Health> {
    axum::Json(Health {
        status: "ok".into(),
        version: env!("CARGO_PKG_VERSION").into(),
    })
}

/// This document.
#[utoipa::path(get, path = "/v1/openapi.json", responses((status = 200, description = "The OpenAPI 3 document")))]
async fn openapi() -> Response {
    match ApiDoc::openapi().to_json() {
        Ok(json) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
        Err(e) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
            .into_response(),
    }
}

/// Create a sandbox that lives until it is destroyed or its lifetime ends.
#[utoipa::path(post, path = "/v1/sandboxes", request_body = CreateSandbox,
    responses((status = 201, body = SandboxView), (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
async fn create(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    JsonBody(body): JsonBody<CreateSandbox>,
) -> Result<(StatusCode, axum::Json<SandboxView>), ApiError> {
    let id = make(&st, &caller, options(body, true)).await?;
    let listing = st.service.get(&caller, &id).await?;
    Ok((StatusCode::CREATED, axum::Json(view(listing))))
}

/// The caller's sandboxes (root: everyone's).
#[utoipa::path(get, path = "/v1/sandboxes", responses((status = 200, body = Vec<SandboxView>)))]
async fn list(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<axum::Json<Vec<SandboxView>>, ApiError> {
    let list = st.service.list(&caller).await?;
    Ok(axum::Json(list.into_iter().map(view).collect()))
}

/// One sandbox.
#[utoipa::path(get, path = "/v1/sandboxes/{id}", params(("id" = String, Path)),
    responses((status = 200, body = SandboxView), (status = 404, body = ErrorBody)))]
async fn get_one(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<axum::Json<SandboxView>, ApiError> {
    let id = sandbox_id(&id)?;
    Ok(axum::Json(view(st.service.get(&caller, &id).await?)))
}

/// Destroy a sandbox: every process, cgroup and file it has.
#[utoipa::path(delete, path = "/v1/sandboxes/{id}", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn destroy(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = sandbox_id(&id)?;
    st.service.destroy(&caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Run a command in a sandbox; its output streams back as NDJSON events.
#[utoipa::path(post, path = "/v1/sandboxes/{id}/exec", params(("id" = String, Path)),
    request_body = ExecBody,
    responses((status = 200, content_type = "application/x-ndjson", body = ExecEvent,
        description = "One event per line: started, stdout/stderr chunks, then exit (or error)"),
        (status = "4XX", body = ErrorBody)))]
async fn exec(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<ExecBody>,
) -> Result<Response, ApiError> {
    let id = sandbox_id(&id)?;
    let (opts, plan) = exec_options(body)?;
    let exec = st.service.exec(&caller, &id, opts).await?;
    Ok(execs::respond(st, caller, id, exec, plan, After::Nothing))
}

/// Stream the stdin of a command started with `stdin_stream` (the request body; its end is
/// the command's end-of-file).
#[utoipa::path(put, path = "/v1/sandboxes/{id}/execs/{exec}/stdin",
    params(("id" = String, Path), ("exec" = String, Path)),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn exec_stdin(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((id, exec)): Path<(String, String)>,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let id = sandbox_id(&id)?;
    let tx = st.execs.take(&caller, &id, &exec)?;
    let idle = st.service.config().daemon.request_timeout;
    let mut frames = body.into_data_stream();
    loop {
        let frame = match tokio::time::timeout(idle, frames.next()).await {
            Err(_) => return Err(slow_body(idle)),
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                return Err(ApiError::bad_request(format!("reading the body: {e}")));
            }
            Ok(Some(Ok(b))) => b,
        };
        if tx.send(frame).await.is_err() {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                format!("command {exec} has ended"),
            ));
        }
    }
    Ok(StatusCode::NO_CONTENT)
}

fn slow_body(idle: std::time::Duration) -> ApiError {
    ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        "bad-request",
        format!("no body data for {idle:?}: giving up on the request"),
    )
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileQuery {
    path: String,
    /// Octal permission bits of a new file (default 644).
    mode: Option<String>,
    /// An agent's write (`judge=true`): judged by the policy as the write it is, shown to a
    /// person first when it asks (a Diff Card, for a file of a workspace written directly).
    #[serde(default)]
    judge: bool,
}

/// Download a file from a sandbox (streamed).
#[utoipa::path(get, path = "/v1/sandboxes/{id}/files",
    params(("id" = String, Path), ("path" = String, Query, description = "Absolute path in the sandbox")),
    responses((status = 200, content_type = "application/octet-stream", body = Vec<u8>),
        (status = 404, body = ErrorBody), (status = 413, body = ErrorBody)))]
async fn read_file(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Params(q): Params<FileQuery>,
) -> Result<Response, ApiError> {
    let id = sandbox_id(&id)?;
    let max = st.service.config().copy.max_size.bytes();
    let (mut w, mut r) = tokio::io::duplex(256 << 10);
    let service = st.service.clone();
    let (task_id, path) = (id.clone(), q.path.clone());
    let mut task = tokio::spawn(async move {
        let read = service
            .read_file(&caller, &task_id, &path, max, &mut w)
            .await;
        drop(w);
        read
    });
    // The first bytes, or the failure: an error before any data gets its own status.
    let mut first = vec![0u8; 64 << 10];
    let n = r
        .read(&mut first)
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    if n == 0 {
        (&mut task).await.map_err(|e| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
        })??;
        return Ok(octets(Body::empty()));
    }
    first.truncate(n);
    let rest = tokio_util::io::ReaderStream::new(r);
    // After the data: the read's own result (a failure part-way aborts the response, so the
    // client sees a truncated transfer, never a short file that looks whole).
    let tail = futures_util::stream::once(async move {
        match task.await {
            Ok(Ok(_)) => None,
            Ok(Err(e)) => Some(Err(std::io::Error::other(e.to_string()))),
            Err(e) => Some(Err(std::io::Error::other(e.to_string()))),
        }
    })
    .filter_map(|x| async move { x });
    let stream = futures_util::stream::once(async move { Ok(Bytes::from(first)) })
        .chain(rest)
        .chain(tail);
    Ok(octets(Body::from_stream(stream)))
}

fn octets(body: Body) -> Response {
    let mut resp = Response::new(body);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    resp
}

/// Upload a file into a sandbox (streamed; all or nothing).
#[utoipa::path(put, path = "/v1/sandboxes/{id}/files",
    params(("id" = String, Path), ("path" = String, Query, description = "Absolute path in the sandbox"),
        ("mode" = Option<String>, Query, description = "Octal permissions of a new file (default 644)"),
        ("judge" = Option<bool>, Query, description = "An agent's write: judged by the policy as the write it is (the owner's own copy is not); asked about, it waits for a person (a Diff Card for a file of a workspace written directly). At most 16 MiB; mode is kept from the file")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 200, body = Written), (status = 404, body = ErrorBody), (status = 413, body = ErrorBody)))]
async fn write_file(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Params(q): Params<FileQuery>,
    body: Body,
) -> Result<axum::Json<Written>, ApiError> {
    let id = sandbox_id(&id)?;
    let mode = match &q.mode {
        None => 0o644,
        Some(m) => u32::from_str_radix(m, 8)
            .ok()
            .filter(|m| *m <= 0o777)
            .ok_or_else(|| {
                ApiError::bad_request(format!("mode {m:?} is not octal permissions (e.g. 644)"))
            })?,
    };
    let max = if q.judge {
        luminaguard_service::put::MAX_PUT
    } else {
        st.service.config().copy.max_size.bytes()
    };
    let idle = st.service.config().daemon.request_timeout;
    let frames = body
        .into_data_stream()
        .map(|r| r.map_err(std::io::Error::other));
    let stalled = Arc::new(AtomicBool::new(false));
    let frames = idle_limited(frames, idle, Arc::clone(&stalled));
    let mut reader = tokio_util::io::StreamReader::new(Box::pin(frames));
    if q.judge {
        let mut content = Vec::new();
        let read = (&mut reader)
            .take(max.saturating_add(1))
            .read_to_end(&mut content)
            .await;
        match read {
            Err(_) if stalled.load(Ordering::Relaxed) => return Err(slow_body(idle)),
            Err(e) => return Err(ApiError::bad_request(format!("reading the body: {e}"))),
            Ok(_) => {}
        }
        // (Too large: the service says so.)
        let put = st.service.put_file(&caller, &id, &q.path, content).await?;
        return Ok(axum::Json(Written {
            path: put.path,
            bytes: put.bytes,
            approval: put.approval,
        }));
    }
    let written = st
        .service
        .write_file(&caller, &id, &q.path, mode, max, reader)
        .await;
    // A body that stopped arriving is the client's failure, whatever the copy made of it.
    let bytes = match written {
        Err(_) if stalled.load(Ordering::Relaxed) => return Err(slow_body(idle)),
        w => w?,
    };
    Ok(axum::Json(Written {
        path: q.path,
        bytes,
        approval: None,
    }))
}

/// A body stream that fails (and sets `stalled`) when no data arrives for `idle`: a client
/// that stops sending does not hold a request open for ever.
fn idle_limited(
    frames: impl futures_util::Stream<Item = std::io::Result<Bytes>> + Send + 'static,
    idle: std::time::Duration,
    stalled: Arc<AtomicBool>,
) -> impl futures_util::Stream<Item = std::io::Result<Bytes>> + Send + 'static {
    let frames = Box::pin(frames);
    futures_util::stream::unfold(Some(frames), move |state| {
        let stalled = Arc::clone(&stalled);
        async move {
            let mut frames = state?;
            match tokio::time::timeout(idle, frames.next()).await {
                Ok(Some(item)) => Some((item, Some(frames))),
                Ok(None) => None,
                Err(_) => {
                    stalled.store(true, Ordering::Relaxed);
                    let e = std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("no body data for {idle:?}"),
                    );
                    Some((Err(e), None))
                }
            }
        }
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StatQuery {
    path: String,
    /// Follow a symbolic link at `path` (default true).
    follow: Option<bool>,
}

/// What is at a path in a sandbox.
#[utoipa::path(get, path = "/v1/sandboxes/{id}/stat",
    params(("id" = String, Path), ("path" = String, Query, description = "Absolute path in the sandbox"),
        ("follow" = Option<bool>, Query, description = "Follow a symbolic link (default true)")),
    responses((status = 200, body = StatView), (status = 404, body = ErrorBody)))]
async fn stat(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Params(q): Params<StatQuery>,
) -> Result<axum::Json<StatView>, ApiError> {
    use luminaguard_protocol::message::FileKind;
    let id = sandbox_id(&id)?;
    let s = st
        .service
        .stat(&caller, &id, &q.path, q.follow.unwrap_or(true))
        .await?;
    Ok(axum::Json(StatView {
        kind: match s.kind {
            FileKind::File => "file",
            FileKind::Dir => "dir",
            FileKind::Symlink => "symlink",
            FileKind::Other => "other",
        }
        .to_owned(),
        size: s.size,
        mode: s.mode,
        uid: s.uid,
        gid: s.gid,
        mtime_unix_ms: s.mtime_unix_ms,
        symlink_target: s.symlink_target,
    }))
}

/// The system calls a sandbox's seccomp policy denied.
#[utoipa::path(get, path = "/v1/sandboxes/{id}/audit", params(("id" = String, Path)),
    responses((status = 200, body = AuditView), (status = 404, body = ErrorBody)))]
async fn audit(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<axum::Json<AuditView>, ApiError> {
    let id = sandbox_id(&id)?;
    let a = st.service.seccomp_audit(&caller, &id).await?;
    Ok(axum::Json(AuditView {
        enabled: a.enabled,
        recent: a
            .recent
            .into_iter()
            .map(|d| DenialView {
                unix_ms: d.unix_ms,
                pid: d.pid,
                comm: d.comm,
                syscall: d.syscall,
                arg0: d.arg0,
            })
            .collect(),
        counts: a.counts,
        dropped: a.dropped,
    }))
}

/// One command in a disposable sandbox: create, run (output streamed as for exec), destroy.
/// With `sandbox.review`, a speculative run: after `exit` comes a `card` event (the Diff Card
/// of what the command changed) and — when it changed anything — a `decision` event once a
/// person has answered the card (`POST /v1/approvals/{id}`) or its time ran out; then the
/// sandbox is destroyed. A client that goes away before the decision withdraws the card.
#[utoipa::path(post, path = "/v1/run", request_body = RunBody,
    responses((status = 200, content_type = "application/x-ndjson", body = ExecEvent),
        (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
async fn run(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    JsonBody(body): JsonBody<RunBody>,
) -> Result<Response, ApiError> {
    let (sandbox, exec_body) = body.split();
    if sandbox.name.is_some() && sandbox.pool.is_some() {
        // A pool's sandbox was made before anyone named it.
        return Err(ApiError::bad_request(
            "a sandbox from a pool has an id of its own: give a name or a pool, not both",
        ));
    }
    let (opts, plan) = exec_options(exec_body)?;
    let after = if sandbox.review {
        After::Review
    } else {
        After::Destroy
    };
    let mut create = options(sandbox, false);
    if create.id.is_none() {
        // A named one (a front-end that must know its id before it exists) is made.
        st.service.choose_run_pool(&mut create);
    }
    let id = make(&st, &caller, create).await?;
    let exec = match st.service.exec(&caller, &id, opts).await {
        Ok(exec) => exec,
        Err(e) => {
            if let Err(d) = st.service.destroy(&caller, &id).await {
                tracing::warn!(%id, error = %d, "destroying a one-shot sandbox");
            }
            return Err(e.into());
        }
    };
    Ok(execs::respond(st, caller, id, exec, plan, after))
}

/// Collect what dead and expired sandboxes left behind.
#[utoipa::path(post, path = "/v1/gc", responses((status = 200, body = GcView)))]
async fn gc(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<axum::Json<GcView>, ApiError> {
    let report = st.service.gc(&caller).await?;
    Ok(axum::Json(GcView {
        removed: report.removed,
        errors: report.errors,
    }))
}

/// What happens to the caller's sandboxes (root: everyone's), as server-sent events.
#[utoipa::path(get, path = "/v1/events",
    responses((status = 200, content_type = "text/event-stream", body = EventView)))]
async fn events(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Sse<impl futures_util::Stream<Item = Result<SseEvent, std::convert::Infallible>>> {
    let rx = st.service.subscribe();
    let stream = futures_util::stream::unfold(rx, move |mut rx| {
        let caller = caller.clone();
        async move {
            loop {
                match rx.recv().await {
                    Ok(e) if caller.may_use(e.user) => {
                        let view = EventView {
                            kind: e.kind.as_str().to_owned(),
                            sandbox: e.sandbox.to_string(),
                            user: e.user,
                            approval: e.approval.clone(),
                            unix_ms: e.unix_ms,
                        };
                        let event = SseEvent::default()
                            .event(e.kind.as_str())
                            .json_data(&view)
                            .unwrap_or_default();
                        return Some((Ok(event), rx));
                    }
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        let event = SseEvent::default().event("lagged").data(n.to_string());
                        return Some((Ok(event), rx));
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                }
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// Prometheus metrics (text format).
#[utoipa::path(get, path = "/metrics",
    responses((status = 200, content_type = "text/plain; version=0.0.4", body = String)))]
async fn metrics(State(st): State<AppState>) -> Response {
    // Pools a reload removed are not reported.
    st.metrics.pool_ready.clear();
    for p in st.service.pool_status() {
        st.metrics
            .pool_ready
            .get_or_create(&crate::metrics::Pool { pool: p.name })
            .set(i64::try_from(p.ready).unwrap_or(i64::MAX));
    }
    let census = st.service.census().await;
    st.metrics.sandboxes.clear();
    for (backend, n) in census {
        st.metrics
            .sandboxes
            .get_or_create(&crate::metrics::Backend { backend })
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        st.metrics.render(),
    )
        .into_response()
}
