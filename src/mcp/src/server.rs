//! The MCP session: the tools' handlers over one [`Front`], and the session's sandboxes.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use luminaguard_core::SandboxId;
use luminaguard_front::{Front, FrontError, Held};
use luminaguard_service::{ExecOptions, ExitReport};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, GetPromptRequestParams,
    GetPromptResponse, Implementation, InitializeRequestParams, InitializeResult, InputRequests,
    InputRequiredResult, ListPromptsRequestMethod, ListPromptsResult,
    ListResourceTemplatesRequestMethod, ListResourceTemplatesResult, ListResourcesRequestMethod,
    ListResourcesResult, ListToolsResult, PaginatedRequestParams, ProtocolVersion,
    ReadResourceRequestParams, ReadResourceResponse, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, Peer, RoleServer, ServerHandler, ServiceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::approve::{self, Shared};
use crate::bounded::Bounded;
use crate::flight::{Asking, Cancelled, Flight, Step, Track, Watch};
use crate::ops::{
    approvals_line, command_result, delete_argv, in_sandbox, list_argv, parse_listing,
    render_command, render_listing, run_bounded,
};
use crate::tools::{self, *};
use crate::{ServeError, Settings};

/// The MCP server of one session: what rmcp serves, one per MCP session (on stdio, the one
/// session; over HTTP, made by the session factory for each `initialize`). Its `Session` is
/// made when the client says hello, and ends — its sandboxes destroyed — when the last handle
/// on it goes, which is when rmcp drops the session's service (see `Session`'s `Drop`).
#[derive(Debug, Clone)]
pub struct Server(Arc<Conn>);

#[derive(Debug)]
struct Conn {
    hub: Arc<Hub>,
    session: std::sync::OnceLock<Arc<Session>>,
    /// Served on stdio (one client, the process that launched this server).
    stdio: bool,
}

/// The connection gone (rmcp dropped the session's service): the calls its session keeps
/// detached end now — each holds its session, which would otherwise outlive its client — and
/// the session, with its sandboxes, ends once nothing holds it.
impl Drop for Conn {
    fn drop(&mut self) {
        if let Some(s) = self.session.get() {
            s.abandon_detached();
        }
    }
}

/// What every session of this server shares: one way to the sandboxes (one service in this
/// process, or the daemon), the settings, and the sessions themselves (to end them all when
/// the server stops, and to route a question to the session it is for).
#[derive(Debug)]
pub(crate) struct Hub {
    front: Front,
    settings: Settings,
    tools: Vec<Tool>,
    /// The sessions, by name (to end them when the server stops).
    sessions: std::sync::Mutex<std::collections::HashMap<Arc<str>, Live>>,
    /// Sandbox destroys of sessions that went away, which the server waits for before it
    /// exits.
    cleanup: tokio_util::task::TaskTracker,
    /// The sessions of requests without one (stateless HTTP), one per principal, held until
    /// the server stops.
    stateless: std::sync::Mutex<std::collections::HashMap<crate::http::Principal, Arc<Session>>>,
}

#[derive(Debug)]
struct Live {
    session: std::sync::Weak<Session>,
}

impl Hub {
    /// The hub of a server over `front`; in-process, the service learns what front-end it
    /// serves and how to ask a person (the client of the session whose request is held).
    pub(crate) fn new(front: Front, settings: Settings) -> Arc<Self> {
        let network = !settings.create.net_allow.is_empty();
        let tools = match &settings.gateway {
            // The gateway offers its servers' tools (listed per session), and approval_wait.
            Some(_) => tools::all(network)
                .into_iter()
                .filter(|t| t.name == APPROVAL_WAIT)
                .collect(),
            None => tools::all(network),
        };
        let hub = Arc::new(Self {
            front,
            settings,
            tools,
            sessions: std::sync::Mutex::default(),
            cleanup: tokio_util::task::TaskTracker::new(),
            stateless: std::sync::Mutex::default(),
        });
        if let Some(service) = hub.front.service() {
            // The service's approvals wait for this server's answer: it finds them by the
            // sessions' sandboxes and puts them to their clients ([`crate::flight`]).
            service.set_front_kind("mcp");
        }
        hub
    }

    /// A server for one more session (what rmcp's session factory returns).
    pub(crate) fn server(self: &Arc<Self>) -> Server {
        self.conn(false)
    }

    /// The server of the stdio session.
    fn stdio_server(self: &Arc<Self>) -> Server {
        self.conn(true)
    }

    fn conn(self: &Arc<Self>, stdio: bool) -> Server {
        Server(Arc::new(Conn {
            hub: Arc::clone(self),
            session: std::sync::OnceLock::new(),
            stdio,
        }))
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<Arc<str>, Live>> {
        self.sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Begins session of client `client`/`version`: a name no other live session has, and a
    /// view of the front that names it on everything it does.
    fn begin(
        self: &Arc<Self>,
        peer: Peer<RoleServer>,
        client: &str,
        version: &str,
    ) -> Arc<Session> {
        self.begin_named(Some(peer), session_name(client, version))
    }

    /// The server-wide session of `principal`'s requests that come without one (made on its
    /// first request). It has no client to ask (no elicitation outside a session).
    fn stateless_session(self: &Arc<Self>, principal: &crate::http::Principal) -> Arc<Session> {
        let mut stateless = self
            .stateless
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let session = stateless.entry(principal.clone()).or_insert_with(|| {
            self.begin_named(None, format!("{} (stateless, {principal})", session_id()))
        });
        Arc::clone(session)
    }

    fn begin_named(
        self: &Arc<Self>,
        peer: Option<Peer<RoleServer>>,
        first: String,
    ) -> Arc<Session> {
        let mut sessions = self.sessions();
        // Names are kept apart: a question is routed to its session by name.
        let name: Arc<str> = (1..)
            .map(|n| match n {
                1 => first.clone(),
                n => format!("{first} #{n}"),
            })
            .find(|name| !sessions.contains_key(name.as_str()))
            .unwrap_or_default()
            .into();
        let shared = Arc::new(Shared::default());
        if let Some(peer) = peer {
            let _ = shared.peer.set(peer);
        }
        let servers = self
            .settings
            .gateway
            .as_ref()
            .map(|gw| crate::gateway::servers::Servers::new(gw));
        let session = Arc::new(Session {
            front: self.front.in_session(&name),
            settings: self.settings.clone(),
            sandboxes: tokio::sync::Mutex::default(),
            servers,
            shared: Arc::clone(&shared),
            detached: std::sync::Mutex::default(),
            name: Arc::clone(&name),
            hub: Arc::downgrade(self),
        });
        sessions.insert(
            name,
            Live {
                session: Arc::downgrade(&session),
            },
        );
        session
    }

    /// How many sandboxes the live sessions hold.
    #[cfg(test)]
    async fn sandbox_count(&self) -> usize {
        let live: Vec<Arc<Session>> = self
            .sessions()
            .values()
            .filter_map(|l| l.session.upgrade())
            .collect();
        let mut n = 0;
        for s in live {
            n += s.sandboxes.lock().await.len();
        }
        n
    }

    /// The server is stopping: every session still alive ends (its sandboxes destroyed), the
    /// destroys of those that went before are waited for, and the audit log is closed.
    pub(crate) async fn stop(&self) {
        let stateless: Vec<Arc<Session>> = self
            .stateless
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .drain()
            .map(|(_, s)| s)
            .collect();
        for session in stateless {
            session.end().await;
        }
        let live: Vec<Arc<Session>> = self
            .sessions()
            .values()
            .filter_map(|l| l.session.upgrade())
            .collect();
        for session in live {
            session.end().await;
        }
        // A session dropped while the list was read is past its last handle but still listed
        // until its destroy is on the tracker: wait for that (briefly; it takes no I/O).
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
        while self
            .sessions()
            .values()
            .any(|l| l.session.strong_count() == 0)
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        self.cleanup.close();
        self.cleanup.wait().await;
        self.front.finish().await;
    }
}

#[derive(Debug)]
struct Session {
    front: Front,
    settings: Settings,
    /// This session's sandboxes; the first made without being asked for is its default.
    sandboxes: tokio::sync::Mutex<Vec<Sandbox>>,
    /// The gateway's servers, as this session runs them (`mcp gateway`).
    servers: Option<crate::gateway::servers::Servers>,
    shared: Arc<Shared>,
    /// Calls that outlasted their request, held at an approval (or done since, their result
    /// not yet collected): by `requestState` handle.
    detached: std::sync::Mutex<std::collections::BTreeMap<String, Flight>>,
    /// The session's name on the audit log (`mcp-1a2b3c4d CLIENT/VERSION`).
    name: Arc<str>,
    hub: std::sync::Weak<Hub>,
}

/// However the session ends — its client said goodbye (HTTP DELETE), rmcp dropped it, the
/// server stopped — its sandboxes are destroyed when the last handle on it goes: rmcp drops
/// the session's service (this [`Server`] and every request's clone of it) once the session's
/// task ends.
impl Drop for Session {
    fn drop(&mut self) {
        let mut left = std::mem::take(self.sandboxes.get_mut());
        if let Some(servers) = &self.servers {
            left.extend(servers.take_helds().into_iter().map(|held| Sandbox {
                held,
                default: false,
            }));
        }
        let hub = self.hub.upgrade();
        // Off the hub's list only once its destroy is on the hub's tracker (below): a server
        // stopping waits for both.
        let _unlist = Unlist(hub.clone(), Arc::clone(&self.name));
        if left.is_empty() {
            return;
        }
        let front = self.front.clone();
        let session = Arc::clone(&self.name);
        let destroy = async move {
            for s in left {
                let id = s.held.id().clone();
                match front.release(s.held).await {
                    Ok(()) => {
                        tracing::info!(%id, %session, "destroyed a sandbox of the ended MCP session")
                    }
                    Err(e) => {
                        tracing::warn!(%id, %session, error = %e, "destroying a sandbox of the ended MCP session")
                    }
                }
            }
        };
        match (hub, tokio::runtime::Handle::try_current()) {
            (Some(hub), Ok(rt)) => {
                hub.cleanup.spawn_on(destroy, &rt);
            }
            _ => tracing::warn!(
                session = %self.name,
                "an MCP session ended after the server stopped: its sandboxes are left to their lifetime and `gc`"
            ),
        }
    }
}

/// Takes a session off its hub's list when dropped.
struct Unlist(Option<Arc<Hub>>, Arc<str>);

impl Drop for Unlist {
    fn drop(&mut self) {
        if let Some(hub) = &self.0 {
            hub.sessions().remove(&self.1);
        }
    }
}

/// Calls a session keeps detached at most (each is a command held at an approval).
const MAX_DETACHED: usize = 64;

#[derive(Debug)]
struct Sandbox {
    held: Held,
    default: bool,
}

/// A tool call that failed: its message for the model (an `isError` result).
struct Fail(String);

impl From<FrontError> for Fail {
    fn from(e: FrontError) -> Self {
        Self(crate::ops::error_text(&e))
    }
}

type Outcome<T> = Result<T, Fail>;

pub(crate) async fn serve_stdio(front: Front, settings: Settings) -> Result<(), ServeError> {
    let hub = Hub::new(front, settings);
    let result = serve(hub.stdio_server()).await;
    hub.stop().await;
    result
}

/// Resolves at the first of SIGTERM, SIGINT and SIGHUP (the handlers installed now).
pub(crate) fn stop_signals() -> Result<impl Future<Output = ()>, ServeError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut signals = Vec::new();
    for (kind, name) in [
        (SignalKind::terminate(), "SIGTERM"),
        (SignalKind::interrupt(), "SIGINT"),
        (SignalKind::hangup(), "SIGHUP"),
    ] {
        signals.push(signal(kind).map_err(|source| ServeError::Signal {
            signal: name,
            source,
        })?);
    }
    Ok(async move {
        let waits = signals.iter_mut().map(|s| Box::pin(s.recv()));
        futures_select_all(waits).await;
    })
}

async fn serve(server: Server) -> Result<(), ServeError> {
    let stop = stop_signals()?;
    tokio::pin!(stop);
    let channel = crate::stdio::stdio(&server.0.hub.settings);
    let running = tokio::select! {
        r = server.serve(channel) => {
            r.map_err(|e| ServeError::Start(e.to_string()))?
        }
        () = &mut stop => return Ok(()),
    };
    let token = running.cancellation_token();
    let waiting = running.waiting();
    tokio::pin!(waiting);
    let reason = tokio::select! {
        r = &mut waiting => r?,
        () = &mut stop => {
            token.cancel();
            waiting.await?
        }
    };
    tracing::debug!(?reason, "MCP session ended");
    Ok(())
}

/// Waits for the first of `futures`.
async fn futures_select_all<F: Future + Unpin>(futures: impl Iterator<Item = F>) {
    let mut futures: Vec<F> = futures.collect();
    std::future::poll_fn(|cx| {
        for f in &mut futures {
            if std::pin::Pin::new(f).poll(cx).is_ready() {
                return std::task::Poll::Ready(());
            }
        }
        std::task::Poll::Pending
    })
    .await;
}

/// An MCP session as the audit log names it: `mcp-` and 8 random hex digits, and the client.
fn session_name(client: &str, version: &str) -> String {
    let clean = |s: &str| -> String { s.chars().filter(|c| !c.is_control()).take(64).collect() };
    format!("{} {}/{}", session_id(), clean(client), clean(version))
}

/// `mcp-` and 8 random hex digits.
fn session_id() -> String {
    let mut b = [0u8; 4];
    // No randomness: the client's name alone still says whose records these are (and the hub
    // keeps names apart).
    let _ = getrandom::fill(&mut b);
    let id: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("mcp-{id}")
}

/// A failure, with the approvals the call met on the way.
fn with_approvals(mut fail: Fail, approvals: &[String]) -> Fail {
    fail.0.push_str(&approvals_line(approvals));
    fail
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A tool's arguments as its type: a mismatch is a tool error the model can correct.
fn args<T: DeserializeOwned>(req: &CallToolRequestParams) -> Outcome<T> {
    let value = serde_json::Value::Object(req.arguments.clone().unwrap_or_default());
    serde_json::from_value(value)
        .map_err(|e| Fail(format!("invalid-arguments: for {}: {e}", req.name)))
}

/// A tool's answer as MCP's result: structured content and its text rendering, or an error
/// result with the message.
fn result<T: Serialize>(done: Outcome<(T, String)>) -> CallToolResult {
    match done {
        Ok((value, text)) => match serde_json::to_value(&value) {
            Ok(v) => {
                let mut r = CallToolResult::structured(v);
                r.content = vec![ContentBlock::text(text)];
                r
            }
            Err(e) => CallToolResult::error(vec![ContentBlock::text(format!(
                "internal: rendering the result: {e}"
            ))]),
        },
        Err(Fail(text)) => CallToolResult::error(vec![ContentBlock::text(text)]),
    }
}

impl Server {
    /// The session a request belongs to: its MCP session once the client has said hello; for
    /// a request without one over HTTP (the stateless 2026-07-28 revision, which rmcp serves
    /// without `initialize`), the server-wide session of the principal the request was
    /// admitted as (its uid on a unix socket, the token on TCP), which lives until the server
    /// stops. Anything else is refused.
    fn session(&self, context: &RequestContext<RoleServer>) -> Result<Arc<Session>, ErrorData> {
        if let Some(s) = self.0.session.get() {
            return Ok(Arc::clone(s));
        }
        let principal = context
            .extensions
            .get::<axum::http::request::Parts>()
            .and_then(|parts| parts.extensions.get::<crate::http::Principal>());
        match principal {
            Some(p) => Ok(self.0.hub.stateless_session(p)),
            // On stdio the one client is the principal: its stateless requests share one
            // session, as its initialized ones would.
            None if self.0.stdio => {
                Ok(self.0.hub.stateless_session(&crate::http::Principal::Stdio))
            }
            None => Err(ErrorData::invalid_request(
                "this server serves MCP sessions: send `initialize` first",
                None,
            )),
        }
    }

    /// A tool call's work (run as a task of its own: see [`Flight`]). It holds its session,
    /// not the connection: a call detached into the session ends with it.
    async fn call(
        s: Arc<Session>,
        req: CallToolRequestParams,
        track: Arc<Track>,
    ) -> Result<CallToolResult, ErrorData> {
        let s = &*s;
        let t = &*track;
        tracing::debug!(tool = %req.name, "tool call");
        Ok(match req.name.as_ref() {
            RUN_COMMAND => match args(&req) {
                Ok(a) => result(s.run_command(a, t).await),
                Err(e) => result::<()>(Err(e)),
            },
            READ_FILE => match args(&req) {
                Ok(a) => result(s.read_file(a).await),
                Err(e) => result::<()>(Err(e)),
            },
            WRITE_FILE => match args(&req) {
                Ok(a) => result(s.write_file(a, t).await),
                Err(e) => result::<()>(Err(e)),
            },
            LIST_FILES => match args(&req) {
                Ok(a) => result(s.list_files(a, t).await),
                Err(e) => result::<()>(Err(e)),
            },
            DELETE_FILE => match args(&req) {
                Ok(a) => result(s.delete_file(a, t).await),
                Err(e) => result::<()>(Err(e)),
            },
            SANDBOX_CREATE => match args(&req) {
                Ok(a) => result(s.sandbox_create(a).await),
                Err(e) => result::<()>(Err(e)),
            },
            SANDBOX_DESTROY => match args(&req) {
                Ok(a) => result(s.sandbox_destroy(a).await),
                Err(e) => result::<()>(Err(e)),
            },
            SANDBOX_LIST => match args(&req) {
                Ok(a) => result(s.sandbox_list(a).await),
                Err(e) => result::<()>(Err(e)),
            },
            other => {
                return Err(ErrorData::invalid_params(
                    format!("unknown tool {other:?} (tools/list lists this server's tools)"),
                    None,
                ));
            }
        })
    }

    /// How this request's client can be asked.
    fn asking(s: &Session, context: &RequestContext<RoleServer>) -> Asking {
        let stateless = context
            .protocol_version()
            .is_some_and(|v| v.as_str() >= ProtocolVersion::V_2026_07_28.as_str());
        if stateless {
            let declared = context
                .client_capabilities()
                .is_some_and(|c| c.elicitation.is_some());
            return if declared {
                Asking::InputRequired
            } else {
                Asking::Nobody
            };
        }
        match s.shared.elicitor() {
            Some(peer) => Asking::Elicit(peer.clone()),
            None => Asking::Nobody,
        }
    }

    /// Watches `flight` for this request; a call that must wait longer is detached into the
    /// session, and the request answers with where it stands.
    async fn fly(
        s: &Session,
        mut flight: Flight,
        context: &RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let watch = Watch {
            front: &s.front,
            shared: &s.shared,
            asking: Self::asking(s, context),
            progress: context
                .meta
                .get_progress_token()
                .map(|t| (context.peer.clone(), t)),
            pending_after: s.settings.pending_after,
            cancelled: &context.ct,
        };
        let tool = flight.tool.clone();
        match flight.watch(&watch).await {
            Ok(Step::Done(done)) => done.map(Into::into),
            Err(Cancelled) => {
                tracing::info!(%tool, "call cancelled by the client");
                Err(ErrorData::invalid_request(
                    format!("{tool}: cancelled by the client"),
                    None,
                ))
            }
            Ok(Step::Input(a)) => {
                let request = approve::input_request(&a).map_err(|e| {
                    ErrorData::internal_error(format!("making the approval's question: {e}"), None)
                })?;
                let handle = s.detach(flight)?;
                let mut requests = InputRequests::new();
                requests.insert(APPROVAL_INPUT.to_owned(), request);
                Ok(InputRequiredResult::new(Some(requests), Some(handle)).into())
            }
            Ok(Step::Pending(approval)) => {
                s.detach(flight)?;
                Ok(pending_result(&tool, &approval).into())
            }
        }
    }

    /// `approval_wait`: resumes the call held at approval `approval_id`.
    async fn approval_wait(
        s: &Session,
        req: &CallToolRequestParams,
        context: &RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let a: ApprovalWait = match args(req) {
            Ok(a) => a,
            Err(e) => return Ok(result::<()>(Err(e)).into()),
        };
        let Some(flight) = s.take_detached(|f| f.met(&a.approval_id)) else {
            return Ok(result::<()>(Err(Fail(format!(
                "not-found: no call of this session waits on approval {:?} (it may have been \
                 collected already, or the session that made it has ended)",
                a.approval_id
            ))))
            .into());
        };
        let tool = flight.tool.clone();
        match Self::fly(s, flight, context).await? {
            CallToolResponse::Complete(done) => Ok(resumed(&tool, done).into()),
            other => Ok(other),
        }
    }
}

/// The key of the question in an input-required result.
const APPROVAL_INPUT: &str = "approval";

impl Session {
    /// Keeps `flight` in the session; returns its `requestState` handle.
    fn detach(&self, flight: Flight) -> Result<String, ErrorData> {
        let mut detached = self
            .detached
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if detached.len() >= MAX_DETACHED {
            // Dropped: its command ends and its card is withdrawn.
            return Err(ErrorData::internal_error(
                format!(
                    "{} calls of this session already wait for approvals (the most it keeps): \
                     answer them first",
                    detached.len()
                ),
                None,
            ));
        }
        let mut b = [0u8; 16];
        getrandom::fill(&mut b)
            .map_err(|e| ErrorData::internal_error(format!("making a handle: {e}"), None))?;
        let handle: String = b.iter().map(|x| format!("{x:02x}")).collect();
        detached.insert(handle.clone(), flight);
        Ok(handle)
    }

    /// The detached call of handle `state`.
    fn take_state(&self, state: &str) -> Option<Flight> {
        self.detached
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(state)
    }

    fn put_back(&self, state: &str, flight: Flight) {
        self.detached
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(state.to_owned(), flight);
    }

    fn take_detached(&self, which: impl Fn(&Flight) -> bool) -> Option<Flight> {
        let mut detached = self
            .detached
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let key = detached
            .iter()
            .find(|(_, f)| which(f))
            .map(|(k, _)| k.clone())?;
        detached.remove(&key)
    }
}

/// The result of a call that waits for a person past `--pending-after`.
fn pending_result(tool: &str, approval: &str) -> CallToolResult {
    let value = Pending {
        status: PENDING_APPROVAL.to_owned(),
        approval_id: approval.to_owned(),
        tool: tool.to_owned(),
    };
    let text = format!(
        "{tool} waits for a person's approval ({approval}); nothing has run yet. Call \
         approval_wait with {{\"approval_id\": \"{approval}\"}} to wait for the answer and get \
         this call's result (the person answers with `luminaguard approvals approve|deny \
         {approval}`, the console, or the MCP client)."
    );
    let mut r = CallToolResult::structured(serde_json::to_value(&value).unwrap_or_default());
    r.content = vec![ContentBlock::text(text)];
    r
}

/// A resumed call's result as `approval_wait` gives it: the call's own result under `result`
/// (an error stays the error it is).
fn resumed(tool: &str, done: CallToolResult) -> CallToolResult {
    if done.is_error == Some(true) {
        return done;
    }
    let status = match &done.structured_content {
        Some(v) if v.get("status").and_then(|s| s.as_str()) == Some(PENDING_APPROVAL) => {
            return done;
        }
        _ => "done",
    };
    let value = serde_json::json!({
        "status": status,
        "tool": tool,
        "result": done.structured_content.clone().unwrap_or_default(),
    });
    let mut r = CallToolResult::structured(value);
    r.content = done.content;
    r
}

impl ServerHandler for Server {
    fn get_info(&self) -> ServerConfig {
        let gateway = self.0.hub.settings.gateway.is_some();
        let instructions = if gateway {
            "LuminaGuard's MCP gateway: the tools of third-party MCP servers, each server in a \
             sandbox of its own, named SERVER__TOOL (their prompts SERVER__PROMPT; their \
             resources under the servers' own URIs). The policy judges every call, prompt get \
             and resource read: a denied one is refused with the rule that denied it; one it \
             asks about waits for a person's approval (a call that waits too long answers \
             pending_approval: approval_wait resumes it). Secrets are kept out of arguments \
             and results."
        } else {
            "LuminaGuard runs these tools in a disposable sandbox of this session (state \
             kept between calls; /workspace is the shared workspace). The policy judges \
             every command, write and delete: a denied one is refused with the rule that \
             denied it; one it asks about waits for a person's approval (a call that waits \
             too long answers pending_approval: approval_wait resumes it)."
        };
        let capabilities = if gateway {
            ServerCapabilities::builder()
                .enable_tools()
                .enable_prompts()
                .enable_resources()
                .build()
        } else {
            ServerCapabilities::builder().enable_tools().build()
        };
        let mut info = InitializeResult::new(capabilities).with_instructions(instructions);
        info.server_info = Implementation::new("luminaguard", env!("CARGO_PKG_VERSION"));
        info.protocol_version = ProtocolVersion::V_2025_11_25;
        info
    }

    /// The revisions with `initialize` and server-initiated elicitation, and the stateless
    /// 2026-07-28 revision (`server/discover`; questions as input-required results).
    fn supported_protocol_versions(&self) -> std::borrow::Cow<'static, [ProtocolVersion]> {
        std::borrow::Cow::Borrowed(ProtocolVersion::known_up_to(&ProtocolVersion::V_2026_07_28))
    }

    async fn initialize(
        &self,
        request: InitializeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<InitializeResult, ErrorData> {
        context.peer.set_peer_info(request.clone());
        if self.0.session.get().is_some() {
            return Err(ErrorData::invalid_request(
                "this MCP session is initialized already",
                None,
            ));
        }
        // Every record this session makes names it and its client.
        let session = self.0.hub.begin(
            context.peer.clone(),
            &request.client_info.name,
            &request.client_info.version,
        );
        tracing::info!(session = %session.name, "MCP session");
        if let Some(gw) = &self.0.hub.settings.gateway {
            Self::start_eager(gw, &session);
        }
        let _ = self.0.session.set(session);
        tracing::info!(
            client = %request.client_info.name,
            version = %request.client_info.version,
            elicitation = request.capabilities.elicitation.is_some(),
            "MCP client"
        );
        self.negotiate_initialize(&request)
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let mut tools = self.0.hub.tools.clone();
        if let Some(gw) = &self.0.hub.settings.gateway {
            let s = self.session(&context)?;
            tools.extend(Self::gateway_tools(gw, &s, &context).await?);
        }
        Ok(ListToolsResult::with_all_items(tools))
    }

    /// The gateway's servers' prompts (`SERVER__PROMPT`).
    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, ErrorData> {
        let Some(gw) = &self.0.hub.settings.gateway else {
            return Err(ErrorData::method_not_found::<ListPromptsRequestMethod>());
        };
        let s = self.session(&context)?;
        let prompts = Self::gateway_flight(gw, &s, &context, "prompts/list", |gw, s| async move {
            Ok(servers(&s)?.prompts(&gw, &s.front, &s.shared).await)
        })
        .await?;
        Ok(ListPromptsResult::with_all_items(prompts))
    }

    /// Prompt `SERVER__PROMPT` from its server: judged, scanned and recorded like a call.
    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        let Some(gw) = &self.0.hub.settings.gateway else {
            return Err(ErrorData::invalid_params(
                format!(
                    "unknown prompt {:?}: this server serves no prompts",
                    request.name
                ),
                None,
            ));
        };
        let s = self.session(&context)?;
        let got = Self::gateway_flight(gw, &s, &context, "prompts/get", |gw, s| async move {
            servers(&s)?
                .get_prompt(&gw, &s.front, &s.shared, request)
                .await
                .map_err(refusal)
        })
        .await?;
        Ok(got.into())
    }

    /// The gateway's servers' resources, under their own URIs.
    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        let Some(gw) = &self.0.hub.settings.gateway else {
            return Err(ErrorData::method_not_found::<ListResourcesRequestMethod>());
        };
        let s = self.session(&context)?;
        let resources =
            Self::gateway_flight(gw, &s, &context, "resources/list", |gw, s| async move {
                Ok(servers(&s)?.resources(&gw, &s.front, &s.shared).await)
            })
            .await?;
        Ok(ListResourcesResult::with_all_items(resources))
    }

    /// The gateway's servers' resource templates.
    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        let Some(gw) = &self.0.hub.settings.gateway else {
            return Err(ErrorData::method_not_found::<
                ListResourceTemplatesRequestMethod,
            >());
        };
        let s = self.session(&context)?;
        let templates = Self::gateway_flight(
            gw,
            &s,
            &context,
            "resources/templates/list",
            |gw, s| async move {
                Ok(servers(&s)?
                    .resource_templates(&gw, &s.front, &s.shared)
                    .await)
            },
        )
        .await?;
        Ok(ListResourceTemplatesResult::with_all_items(templates))
    }

    /// A resource from the server that lists it (an unknown URI is invalid params): judged,
    /// scanned and recorded like a call.
    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let Some(gw) = &self.0.hub.settings.gateway else {
            return Err(ErrorData::invalid_params(
                format!(
                    "unknown resource {:?}: this server serves no resources",
                    request.uri
                ),
                None,
            ));
        };
        let s = self.session(&context)?;
        let read = Self::gateway_flight(gw, &s, &context, "resources/read", |gw, s| async move {
            servers(&s)?
                .read_resource(&gw, &s.front, &s.shared, request.uri)
                .await
                .map_err(refusal)
        })
        .await?;
        Ok(read.into())
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        // (The gateway's servers' tools are the session's: looked up when called.)
        self.0.hub.tools.iter().find(|t| t.name == name).cloned()
    }

    /// A call runs as a [`Flight`]: watched for questions, progress and how long a person
    /// keeps it. One the client cancels (`notifications/cancelled`) is dropped where it
    /// stands: a running command is killed with its process tree, and a call waiting for a
    /// person withdraws its card. A call again with a `requestState` resumes the call it
    /// names, with the client's answer.
    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let session = self.session(&context)?;
        if let Some(state) = request.request_state.as_deref() {
            let Some(mut flight) = session.take_state(state) else {
                return Err(ErrorData::invalid_params(
                    "requestState names no call of this session (it was answered already, or \
                     the server has restarted): call the tool again",
                    None,
                ));
            };
            if flight.tool != request.name || flight.arguments != request.arguments {
                // Not the call it was: put it back, untouched.
                session.put_back(state, flight);
                return Err(ErrorData::invalid_params(
                    "requestState belongs to another call (a call resumed must repeat its tool \
                     and arguments)",
                    None,
                ));
            }
            let response = request
                .input_responses
                .as_ref()
                .and_then(|r| r.get(APPROVAL_INPUT));
            flight.answer(&session.front, response).await;
            return Self::fly(&session, flight, &context).await;
        }
        if request.name == APPROVAL_WAIT {
            return Self::approval_wait(&session, &request, &context).await;
        }
        let argv = argv_of(&request);
        let track = Arc::new(Track::default());
        let flight = match &self.0.hub.settings.gateway {
            Some(gw) => {
                let (gw, s, req) = (Arc::clone(gw), Arc::clone(&session), request.clone());
                let work = async move {
                    let Some(servers) = &s.servers else {
                        return Err(ErrorData::internal_error(
                            "a gateway session without servers",
                            None,
                        ));
                    };
                    Ok(servers.call(&gw, &s.front, &s.shared, req).await)
                };
                Flight::start(
                    request.name.to_string(),
                    request.arguments.clone(),
                    None,
                    track,
                    work,
                )
            }
            None => {
                let work = Self::call(Arc::clone(&session), request.clone(), Arc::clone(&track));
                Flight::start(
                    request.name.to_string(),
                    request.arguments.clone(),
                    argv,
                    track,
                    work,
                )
            }
        };
        Self::fly(&session, flight, &context).await
    }
}

/// The command a call runs, when it says (to tell its approvals from another call's).
fn argv_of(request: &CallToolRequestParams) -> Option<Vec<String>> {
    let args = request.arguments.as_ref()?;
    match request.name.as_ref() {
        RUN_COMMAND => match (args.get("command"), args.get("argv")) {
            (Some(serde_json::Value::String(c)), None) => {
                Some(vec!["sh".to_owned(), "-c".to_owned(), c.clone()])
            }
            (None, Some(v)) => serde_json::from_value(v.clone()).ok(),
            _ => None,
        },
        DELETE_FILE => Some(delete_argv(&in_sandbox(args.get("path")?.as_str()?))),
        _ => None,
    }
}

mod gateway;
mod session_tools;

use gateway::{refusal, servers};

#[cfg(test)]
mod fuzz;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_standard() {
        for (raw, b64) in [
            (&b""[..], ""),
            (b"f", "Zg=="),
            (b"fo", "Zm8="),
            (b"foo", "Zm9v"),
            (b"\xff\xfe\x00\x01", "//4AAQ=="),
        ] {
            assert_eq!(base64(raw), b64);
        }
    }

    #[test]
    fn every_tool_has_object_input_and_output_schemas() {
        for t in tools::all(false) {
            assert_eq!(
                t.input_schema.get("type"),
                Some(&"object".into()),
                "{}",
                t.name
            );
            let out = t.output_schema.as_ref().unwrap();
            assert_eq!(out.get("type"), Some(&"object".into()), "{}", t.name);
            assert!(t.annotations.is_some(), "{}", t.name);
        }
    }
}
