//! The MCP session: the tools' handlers over one [`Front`], and the session's sandboxes.

use std::sync::Arc;
use std::time::Duration;

use luminaguard_core::SandboxId;
use luminaguard_front::{Front, FrontError, Held};
use luminaguard_service::{ExecOptions, ExecOutput, ExitReport};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    InitializeRequestParams, InitializeResult, ListToolsResult, PaginatedRequestParams,
    ProtocolVersion, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, Peer, RoleServer, ServerHandler, ServiceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::approve::{self, Shared};
use crate::bounded::Bounded;
use crate::tools::{self, *};
use crate::{ServeError, Settings};

/// Entries `list_files` returns at most.
const MAX_ENTRIES: usize = 10_000;

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
}

/// What every session of this server shares: one way to the sandboxes (one service in this
/// process, or the daemon), the settings, and the sessions themselves (to end them all when
/// the server stops, and to route a question to the session it is for).
#[derive(Debug)]
pub(crate) struct Hub {
    front: Front,
    settings: Settings,
    tools: Vec<Tool>,
    /// The sessions, by name: their askers' side (for [`approve::asker`]) and the session
    /// itself (to end it when the server stops).
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
    shared: std::sync::Weak<Shared>,
    session: std::sync::Weak<Session>,
}

impl Hub {
    /// The hub of a server over `front`; in-process, the service learns what front-end it
    /// serves and how to ask a person (the client of the session whose request is held).
    pub(crate) fn new(front: Front, settings: Settings) -> Arc<Self> {
        let network = !settings.create.net_allow.is_empty();
        let hub = Arc::new(Self {
            front,
            settings,
            tools: tools::all(network),
            sessions: std::sync::Mutex::default(),
            cleanup: tokio_util::task::TaskTracker::new(),
            stateless: std::sync::Mutex::default(),
        });
        if let Some(service) = hub.front.service() {
            service.set_front_kind("mcp");
            service.set_asker(approve::asker(
                Arc::downgrade(&hub),
                tokio::runtime::Handle::current(),
            ));
        }
        hub
    }

    /// A server for one more session (what rmcp's session factory returns).
    pub(crate) fn server(self: &Arc<Self>) -> Server {
        Server(Arc::new(Conn {
            hub: Arc::clone(self),
            session: std::sync::OnceLock::new(),
        }))
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<Arc<str>, Live>> {
        self.sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The asking side of session `name`, while it lives.
    pub(crate) fn shared(&self, name: &str) -> Option<Arc<Shared>> {
        self.sessions().get(name).and_then(|l| l.shared.upgrade())
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
            self.begin_named(
                None,
                format!("{} (stateless HTTP, {principal})", session_id()),
            )
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
        let session = Arc::new(Session {
            front: self.front.in_session(&name),
            settings: self.settings.clone(),
            sandboxes: tokio::sync::Mutex::default(),
            shared: Arc::clone(&shared),
            name: Arc::clone(&name),
            hub: Arc::downgrade(self),
        });
        sessions.insert(
            name,
            Live {
                shared: Arc::downgrade(&shared),
                session: Arc::downgrade(&session),
            },
        );
        session
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
    shared: Arc<Shared>,
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
        let left = std::mem::take(self.sandboxes.get_mut());
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

#[derive(Debug)]
struct Sandbox {
    held: Held,
    default: bool,
}

/// A tool call that failed: its message for the model (an `isError` result).
struct Fail(String);

impl From<FrontError> for Fail {
    fn from(e: FrontError) -> Self {
        // The whole chain: "starting the sandbox: denied by policy: …".
        let mut text = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            text.push_str(&format!(": {s}"));
            source = s.source();
        }
        Self(match e.code() {
            Some(code) => format!("{code}: {text}"),
            None => text,
        })
    }
}

type Outcome<T> = Result<T, Fail>;

pub(crate) async fn serve_stdio(front: Front, settings: Settings) -> Result<(), ServeError> {
    let hub = Hub::new(front, settings);
    let result = serve(hub.server()).await;
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
    let running = tokio::select! {
        r = server.serve(rmcp::transport::stdio()) => {
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

impl Session {
    /// Destroys the session's sandboxes.
    async fn end(&self) {
        let all = std::mem::take(&mut *self.sandboxes.lock().await);
        for s in all {
            let id = s.held.id().clone();
            if let Err(e) = self.front.release(s.held).await {
                tracing::warn!(%id, error = %e, "destroying a sandbox of the MCP session");
            }
        }
    }

    /// The sandbox a call names, or the session's own (made now if it has none yet).
    async fn sandbox(&self, named: Option<&str>) -> Outcome<SandboxId> {
        let mut list = self.sandboxes.lock().await;
        if let Some(name) = named {
            return list
                .iter()
                .find(|s| s.held.id().as_str() == name)
                .map(|s| s.held.id().clone())
                .ok_or_else(|| {
                    Fail(format!(
                        "not-found: no sandbox {name:?} in this MCP session (sandbox_list lists \
                         them)"
                    ))
                });
        }
        if let Some(pos) = list.iter().position(|s| s.default) {
            if self.front.held_alive(&list[pos].held).await {
                return Ok(list[pos].held.id().clone());
            }
            // Its lifetime ended it: what was in it is gone, and a new one is made.
            let gone = list.remove(pos);
            tracing::info!(id = %gone.held.id(), "the session's sandbox has ended; making another");
            let _ = self.front.release(gone.held).await;
        }
        let held = self.front.hold(self.settings.create.clone()).await?;
        let id = held.id().clone();
        tracing::info!(%id, "made the MCP session's sandbox");
        list.push(Sandbox {
            held,
            default: true,
        });
        Ok(id)
    }

    /// Runs `argv` in sandbox `id` (feeding it `stdin`), keeping its output bounded; what
    /// people were asked on the way is returned with how it ended.
    async fn exec(
        &self,
        id: &SandboxId,
        opts: ExecOptions,
        stdin: Option<Vec<u8>>,
    ) -> Outcome<(ExitReport, Bounded, Bounded, Vec<String>)> {
        let limit = self.settings.output_limit;
        let call = async {
            let mut opts = opts;
            opts.stdin = stdin.is_some();
            let mut stdin = stdin;
            let mut exec = self.front.exec(id, opts).await?;
            let (mut out, mut err) = (Bounded::new(limit), Bounded::new(limit));
            loop {
                match exec.next().await? {
                    Some(ExecOutput::Started { .. }) => {
                        if let Some(data) = stdin.take() {
                            exec.write_stdin(&data).await?;
                            exec.close_stdin().await?;
                        }
                    }
                    Some(ExecOutput::Stdout(b)) => out.push(&b),
                    Some(ExecOutput::Stderr(b)) => err.push(&b),
                    Some(ExecOutput::Exit(report)) => return Ok((report, out, err)),
                    None => {
                        return Err(FrontError::Protocol(
                            "the command's output ended without its exit status".into(),
                        ));
                    }
                }
            }
        };
        let (done, approvals) = approve::through_daemon(&self.front, &self.shared, id, call).await;
        match done {
            Ok((report, out, err)) => Ok((report, out, err, approvals)),
            Err(e) => {
                let mut fail = Fail::from(e);
                if !approvals.is_empty() {
                    fail.0
                        .push_str(&format!("\napprovals: {}", approvals.join("; ")));
                }
                Err(fail)
            }
        }
    }

    async fn run_command(&self, a: RunCommand) -> Outcome<(CommandResult, String)> {
        let argv = match (a.command, a.argv) {
            (Some(c), None) => vec!["sh".to_owned(), "-c".to_owned(), c],
            (None, Some(argv)) if !argv.is_empty() => argv,
            (None, Some(_)) => return Err(Fail("invalid-arguments: argv is empty".into())),
            _ => {
                return Err(Fail(
                    "invalid-arguments: give exactly one of `command` (a shell command line) \
                     and `argv` (a program and its arguments)"
                        .into(),
                ));
            }
        };
        let id = self.sandbox(a.sandbox_id.as_deref()).await?;
        let opts = ExecOptions {
            argv,
            env: a.env.unwrap_or_default().into_iter().collect(),
            cwd: a.cwd,
            timeout: a.timeout.map(Duration::from_secs),
            stdin: false,
        };
        let (report, out, err, approvals) = self.exec(&id, opts, None).await?;
        let result = CommandResult {
            exit_code: report.code,
            signal: report.signal,
            truncated: out.truncated() || err.truncated() || report.output_truncated,
            stdout: out.text(),
            stderr: err.text(),
            timed_out: report.timed_out,
            duration_ms: report.duration_ms,
            sandbox_id: id.to_string(),
            approvals,
        };
        let text = render_command(&result, &report);
        Ok((result, text))
    }

    async fn read_file(&self, a: ReadFile) -> Outcome<(FileContent, String)> {
        let id = self.sandbox(a.sandbox_id.as_deref()).await?;
        let path = in_sandbox(&a.path);
        let bytes = self.front.read(&id, &path, self.settings.max_file).await?;
        let size = bytes.len() as u64;
        let (content, encoding) = match String::from_utf8(bytes) {
            Ok(text) => (text, "utf-8"),
            Err(e) => (base64(e.as_bytes()), "base64"),
        };
        let text = match encoding {
            "utf-8" => content.clone(),
            _ => {
                format!("{path}: {size} bytes that are not UTF-8 (base64 in the structured result)")
            }
        };
        Ok((
            FileContent {
                path,
                content,
                encoding: encoding.to_owned(),
                size,
                sandbox_id: id.to_string(),
            },
            text,
        ))
    }

    async fn write_file(&self, a: WriteFile) -> Outcome<(Written, String)> {
        let len = a.content.len() as u64;
        if len > self.settings.max_file {
            return Err(Fail(format!(
                "too-large: {len} bytes for {}: the limit is {} bytes",
                a.path, self.settings.max_file
            )));
        }
        let id = self.sandbox(a.sandbox_id.as_deref()).await?;
        let path = in_sandbox(&a.path);
        // The command the policy judges as the write it is (a redirection to this path).
        let script = format!("cat > {}", shell_quote(&path));
        let opts = ExecOptions {
            argv: vec!["sh".into(), "-c".into(), script],
            ..ExecOptions::default()
        };
        let (report, _, err, approvals) =
            self.exec(&id, opts, Some(a.content.into_bytes())).await?;
        if report.shell_code() != 0 {
            return Err(Fail(format!(
                "writing {path} in sandbox {id} failed (status {}): {}",
                report.shell_code(),
                err.text().trim()
            )));
        }
        let text = format!("wrote {len} bytes to {path}{}", approvals_line(&approvals));
        Ok((
            Written {
                path,
                bytes: len,
                sandbox_id: id.to_string(),
                approvals,
            },
            text,
        ))
    }

    async fn delete_file(&self, a: DeleteFile) -> Outcome<(Deleted, String)> {
        let id = self.sandbox(a.sandbox_id.as_deref()).await?;
        let path = in_sandbox(&a.path);
        let opts = ExecOptions {
            argv: vec!["rm".into(), "--".into(), path.clone()],
            ..ExecOptions::default()
        };
        let (report, _, err, approvals) = self.exec(&id, opts, None).await?;
        if report.shell_code() != 0 {
            return Err(Fail(format!(
                "deleting {path} in sandbox {id} failed (status {}): {}",
                report.shell_code(),
                err.text().trim()
            )));
        }
        let text = format!("deleted {path}{}", approvals_line(&approvals));
        Ok((
            Deleted {
                path,
                sandbox_id: id.to_string(),
                approvals,
            },
            text,
        ))
    }

    async fn list_files(&self, a: ListFiles) -> Outcome<(Listing, String)> {
        let id = self.sandbox(a.sandbox_id.as_deref()).await?;
        let path = in_sandbox(a.path.as_deref().unwrap_or("/workspace"));
        // find prints each entry as "kind size mode name" ending in a NUL byte: a name may hold
        // any byte but NUL and '/'.
        let opts = ExecOptions {
            argv: vec![
                "find".into(),
                path.clone(),
                "-mindepth".into(),
                "1".into(),
                "-maxdepth".into(),
                "1".into(),
                "-printf".into(),
                "%y %s %m %f\\0".into(),
            ],
            ..ExecOptions::default()
        };
        // Each entry is short: the limit bounds the listing's memory as well.
        let (report, out, err, _) = self.exec(&id, opts, None).await?;
        if report.shell_code() != 0 {
            return Err(Fail(format!(
                "listing {path} in sandbox {id} failed (status {}): {}",
                report.shell_code(),
                err.text().trim()
            )));
        }
        let raw = out.text();
        let mut entries: Vec<Entry> = raw
            .split('\0')
            .filter_map(|line| {
                let mut parts = line.splitn(4, ' ');
                let (kind, size, mode, name) =
                    (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
                Some(Entry {
                    name: name.to_owned(),
                    kind: match kind {
                        "f" => "file",
                        "d" => "dir",
                        "l" => "symlink",
                        _ => "other",
                    }
                    .to_owned(),
                    size: size.parse().unwrap_or(0),
                    mode: mode.to_owned(),
                })
            })
            .collect();
        let truncated = out.truncated() || entries.len() > MAX_ENTRIES;
        if truncated {
            // The entry cut by the marker is not listed.
            entries.retain(|e| !e.name.contains("[... "));
        }
        entries.truncate(MAX_ENTRIES);
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        let mut text = entries
            .iter()
            .map(|e| format!("{:<7} {:>5} {:>10}  {}", e.kind, e.mode, e.size, e.name))
            .collect::<Vec<_>>()
            .join("\n");
        if entries.is_empty() {
            text = format!("{path} is empty");
        }
        if truncated {
            text.push_str("\n(more entries than listed)");
        }
        Ok((
            Listing {
                path,
                entries,
                truncated,
                sandbox_id: id.to_string(),
            },
            text,
        ))
    }

    async fn sandbox_create(&self, _: SandboxCreate) -> Outcome<(SandboxDone, String)> {
        let held = self.front.hold(self.settings.create.clone()).await?;
        let id = held.id().to_string();
        self.sandboxes.lock().await.push(Sandbox {
            held,
            default: false,
        });
        let text = format!("made sandbox {id}");
        Ok((SandboxDone { sandbox_id: id }, text))
    }

    async fn sandbox_destroy(&self, a: SandboxDestroy) -> Outcome<(SandboxDone, String)> {
        let held = {
            let mut list = self.sandboxes.lock().await;
            let pos = list
                .iter()
                .position(|s| s.held.id().as_str() == a.sandbox_id)
                .ok_or_else(|| {
                    Fail(format!(
                        "not-found: no sandbox {:?} in this MCP session",
                        a.sandbox_id
                    ))
                })?;
            list.remove(pos).held
        };
        self.front.release(held).await?;
        let text = format!("destroyed sandbox {}", a.sandbox_id);
        Ok((
            SandboxDone {
                sandbox_id: a.sandbox_id,
            },
            text,
        ))
    }

    async fn sandbox_list(&self, _: SandboxList) -> Outcome<(Sandboxes, String)> {
        let sandboxes: Vec<SandboxInfo> = self
            .sandboxes
            .lock()
            .await
            .iter()
            .map(|s| SandboxInfo {
                sandbox_id: s.held.id().to_string(),
                default: s.default,
            })
            .collect();
        let text = if sandboxes.is_empty() {
            "no sandboxes yet (the first tool call makes the session's own)".to_owned()
        } else {
            sandboxes
                .iter()
                .map(|s| {
                    format!(
                        "{}{}",
                        s.sandbox_id,
                        if s.default { " (default)" } else { "" }
                    )
                })
                .collect::<Vec<_>>()
                .join("\n")
        };
        Ok((Sandboxes { sandboxes }, text))
    }
}

/// A path as the sandbox sees it: relative ones are under /workspace.
fn in_sandbox(path: &str) -> String {
    if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/workspace/{path}")
    }
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

/// `s` as one word of a POSIX shell, quoted.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

fn approvals_line(approvals: &[String]) -> String {
    if approvals.is_empty() {
        String::new()
    } else {
        format!("\napprovals: {}", approvals.join("; "))
    }
}

fn render_command(r: &CommandResult, report: &ExitReport) -> String {
    let mut t = String::new();
    match (r.exit_code, r.signal) {
        (Some(c), _) => t.push_str(&format!("exit code {c}")),
        (None, Some(s)) => t.push_str(&format!("killed by signal {s}")),
        (None, None) => t.push_str("no exit status"),
    }
    if r.timed_out {
        t.push_str(" (timed out)");
    }
    if report.oom_killed {
        t.push_str(" (out of memory)");
    }
    if let Some(e) = &report.error {
        t.push_str(&format!(": {e}"));
    }
    t.push_str(&format!(" in {} ms", r.duration_ms));
    if !report.seccomp_denied.is_empty() {
        let calls: Vec<String> = report
            .seccomp_denied
            .iter()
            .map(|(c, n)| format!("{c} ×{n}"))
            .collect();
        t.push_str(&format!("; system calls refused: {}", calls.join(", ")));
    }
    if !r.stdout.is_empty() {
        t.push_str(&format!("\n--- stdout ---\n{}", r.stdout));
    }
    if !r.stderr.is_empty() {
        t.push_str(&format!("\n--- stderr ---\n{}", r.stderr));
    }
    if r.truncated {
        t.push_str("\n(output truncated: the middle was dropped)");
    }
    t.push_str(&approvals_line(&r.approvals));
    t
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
            None => Err(ErrorData::invalid_request(
                "this server serves MCP sessions: send `initialize` first",
                None,
            )),
        }
    }

    async fn call(
        &self,
        s: &Session,
        req: CallToolRequestParams,
    ) -> Result<CallToolResult, ErrorData> {
        tracing::debug!(tool = %req.name, "tool call");
        Ok(match req.name.as_ref() {
            RUN_COMMAND => match args(&req) {
                Ok(a) => result(s.run_command(a).await),
                Err(e) => result::<()>(Err(e)),
            },
            READ_FILE => match args(&req) {
                Ok(a) => result(s.read_file(a).await),
                Err(e) => result::<()>(Err(e)),
            },
            WRITE_FILE => match args(&req) {
                Ok(a) => result(s.write_file(a).await),
                Err(e) => result::<()>(Err(e)),
            },
            LIST_FILES => match args(&req) {
                Ok(a) => result(s.list_files(a).await),
                Err(e) => result::<()>(Err(e)),
            },
            DELETE_FILE => match args(&req) {
                Ok(a) => result(s.delete_file(a).await),
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
}

impl ServerHandler for Server {
    fn get_info(&self) -> ServerConfig {
        let mut info = InitializeResult::new(ServerCapabilities::builder().enable_tools().build())
            .with_instructions(
                "LuminaGuard runs these tools in a disposable sandbox of this session (state \
                 kept between calls; /workspace is the shared workspace). The policy judges \
                 every command, write and delete: a denied one is refused with the rule that \
                 denied it; one it asks about waits for a person's approval.",
            );
        info.server_info = Implementation::new("luminaguard", env!("CARGO_PKG_VERSION"));
        info.protocol_version = ProtocolVersion::V_2025_11_25;
        info
    }

    /// The revisions with `initialize` and server-initiated elicitation (the stateless
    /// 2026-07-28 revision is not served yet).
    fn supported_protocol_versions(&self) -> std::borrow::Cow<'static, [ProtocolVersion]> {
        std::borrow::Cow::Borrowed(ProtocolVersion::known_up_to(&ProtocolVersion::V_2025_11_25))
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
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(self.0.hub.tools.clone()))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.0.hub.tools.iter().find(|t| t.name == name).cloned()
    }

    /// A call the client cancels (`notifications/cancelled`) is dropped where it stands: a
    /// running command is killed with its process tree (the exec ends when dropped, in this
    /// process or through the daemon), and a call waiting for a person withdraws its card.
    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let tool = request.name.clone();
        let session = self.session(&context)?;
        tokio::select! {
            result = self.call(&session, request) => Ok(result?.into()),
            () = context.ct.cancelled() => {
                tracing::info!(%tool, "call cancelled by the client");
                Err(ErrorData::invalid_request(
                    format!("{tool}: cancelled by the client"),
                    None,
                ))
            }
        }
    }
}

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
    fn paths_are_quoted_for_the_shell_and_relative_ones_are_in_the_workspace() {
        assert_eq!(in_sandbox("a/b"), "/workspace/a/b");
        assert_eq!(in_sandbox("/etc/x"), "/etc/x");
        assert_eq!(shell_quote("it's $x"), "'it'\\''s $x'");
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
