//! Where a front-end's requests go: to the daemon when one answers on its socket (the
//! sandboxes are then the daemon's, and outlive the front-end), else to the sandbox service in
//! this process. The CLI and the MCP server both stand on this: the answers, messages and
//! refusals are the same either way; `--no-daemon` forces the second. Every decision (policy,
//! approvals, the owner rule) is the service's, wherever it runs: nothing here judges.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use luminaguard_api::client::{Client, ExecEvents};
use luminaguard_api::types::{
    ApprovalView, AuditView, CardView, CreateSandbox, DecideBody, ExecBody, ExecEvent, ExitView,
    GcView, MountBody, RunBody, SandboxView, Written,
};
use luminaguard_backend::copy::{CopyError, CopyOptions, Stop};
use luminaguard_backend::hostfs::{self, Destination};
use luminaguard_core::{Config, SandboxId};
use luminaguard_protocol::message::{SeccompAudit, SeccompDenial};
use luminaguard_service::review::Deciding;
use luminaguard_service::tool_call::{Cleared, ToolCall, ToolEvent};
use luminaguard_service::{
    Answer, Caller, CreateOptions, Exec, ExecOptions, ExecOutput, ExitReport, Pending, Service,
};
use tokio::io::{AsyncWriteExt, DuplexStream};

/// Approvals being asked for, as [`Front::approval_requests`] sees them.
#[derive(Debug)]
pub enum ApprovalRequests {
    Local(
        tokio::sync::broadcast::Receiver<luminaguard_service::Event>,
        Caller,
    ),
    Daemon(luminaguard_api::client::Events),
}

/// What [`ApprovalRequests::next`] saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requested {
    /// Approval `0` of sandbox `1` is asked for.
    Approval(String, String),
    /// Some events were lost: the waiting approvals must be listed anew.
    Missed,
}

impl ApprovalRequests {
    /// The next approval asked for; `None` once the stream has ended (or failed: the caller
    /// then lists the approvals instead).
    pub async fn next(&mut self) -> Option<Requested> {
        use luminaguard_api::client::DaemonEvent;
        use tokio::sync::broadcast::error::RecvError;
        loop {
            match self {
                Self::Local(rx, caller) => match rx.recv().await {
                    Ok(e) => {
                        if e.kind == luminaguard_service::EventKind::ApprovalRequested
                            && caller.may_use(e.user)
                            && let Some(id) = e.approval
                        {
                            return Some(Requested::Approval(id, e.sandbox.to_string()));
                        }
                    }
                    Err(RecvError::Lagged(_)) => return Some(Requested::Missed),
                    Err(RecvError::Closed) => return None,
                },
                Self::Daemon(events) => match events.next().await {
                    Ok(Some(DaemonEvent::Happened(e))) => {
                        if e.kind == "approval-requested"
                            && let Some(id) = e.approval
                        {
                            return Some(Requested::Approval(id, e.sandbox));
                        }
                    }
                    Ok(Some(DaemonEvent::Lagged(_))) => return Some(Requested::Missed),
                    Ok(None) => return None,
                    Err(e) => {
                        tracing::debug!(error = %e, "the daemon's event stream");
                        return None;
                    }
                },
            }
        }
    }
}

/// Why a request through the front failed.
#[derive(Debug, thiserror::Error)]
pub enum FrontError {
    /// The service in this process refused or failed it.
    #[error(transparent)]
    Service(#[from] luminaguard_service::ServiceError),
    /// The daemon refused or failed it (or could not be reached).
    #[error(transparent)]
    Daemon(#[from] luminaguard_api::client::ClientError),
    /// The sandbox could not be made (or its command not started) for a one-shot run.
    #[error("starting the sandbox")]
    Starting(#[source] Box<FrontError>),
    /// `--pool` without a daemon.
    #[error(
        "--pool {0}: warm pools are kept by the daemon, and none answers on its socket (start \
         one with `luminaguard daemon`)"
    )]
    PoolNeedsDaemon(String),
    /// A workspace or mount path that cannot be sent to the daemon.
    #[error("resolving {path}: {reason}")]
    Workspace { path: String, reason: String },
    /// The daemon reported a failure on a command's event stream.
    #[error("{0}")]
    Remote(String),
    /// The daemon's event stream did not go as the protocol says.
    #[error("{0}")]
    Protocol(String),
}

impl FrontError {
    /// The stable code of a refusal (`forbidden`, `not-found`, …), the same in-process and
    /// through the daemon; `None` for failures that carry none.
    pub fn code(&self) -> Option<String> {
        match self {
            Self::Service(e) => Some(e.code().as_str().to_owned()),
            Self::Daemon(e) => e.code().map(str::to_owned),
            Self::Starting(e) => e.code(),
            _ => None,
        }
    }
}

type Result<T, E = FrontError> = std::result::Result<T, E>;

fn starting(e: impl Into<FrontError>) -> FrontError {
    FrontError::Starting(Box::new(e.into()))
}

/// The system daemon's socket, tried by users whose own runtime directory has no daemon.
const SYSTEM_SOCKET: &str = "/run/luminaguard/api.sock";

/// Whether to look for a daemon, and where.
#[derive(Debug, Clone, Copy)]
pub struct Choice {
    /// `--no-daemon`.
    pub never: bool,
    /// Also try the system daemon's socket.
    pub system_too: bool,
}

/// A front-end's way to the sandboxes. Cloning is cheap and shares the way (the same service in
/// this process, the same daemon): a clone is a view, never a second service.
#[derive(Debug, Clone)]
pub enum Front {
    Local(Box<Service>, Caller),
    Daemon(Client),
}

impl Front {
    /// The daemon, if one answers on `config.daemon.socket` (or, with `system_too`, on the
    /// system daemon's socket); else the service in this process.
    pub async fn open(config: Config, choice: &Choice) -> Result<Self> {
        if !choice.never {
            let mut candidates = vec![config.daemon.socket.clone()];
            if choice.system_too && Path::new(SYSTEM_SOCKET) != config.daemon.socket {
                candidates.push(PathBuf::from(SYSTEM_SOCKET));
            }
            for socket in candidates {
                match tokio::net::UnixStream::connect(&socket).await {
                    Ok(_) => {
                        tracing::debug!(socket = %socket.display(), "using the daemon");
                        return Ok(Self::Daemon(Client::new(socket)));
                    }
                    Err(e) => {
                        tracing::debug!(socket = %socket.display(), error = %e, "no daemon")
                    }
                }
            }
        }
        let service = Service::new(config)?;
        Ok(Self::Local(Box::new(service), Caller::current()))
    }

    /// The service in this process, when there is no daemon: for a front-end to say how it
    /// asks a person ([`Service::set_asker`]) and what it is ([`Service::set_front_kind`]).
    pub fn service(&self) -> Option<&Service> {
        match self {
            Self::Local(service, _) => Some(service),
            Self::Daemon(_) => None,
        }
    }

    /// A view of this front acting for front-end session `name` (one MCP session of several
    /// this process serves): every audit record made for it names the session — in-process
    /// through [`Caller::session`], through the daemon by the session header the daemon puts
    /// on its records (a label; the uid is the socket peer's).
    #[must_use]
    pub fn in_session(&self, name: &str) -> Self {
        match self {
            Self::Local(service, caller) => Self::Local(service.clone(), caller.in_session(name)),
            // The daemon puts it on the records it makes for this session's requests.
            Self::Daemon(client) => Self::Daemon(client.in_session(name)),
        }
    }

    /// Creates a sandbox; it is the caller's to [`Created::commit`] (or discard).
    pub async fn create(&self, opts: CreateOptions) -> Result<Created> {
        self.pools_need_daemon(&opts)?;
        match self {
            Self::Local(service, caller) => Ok(Created::Local(Box::new(
                service.create(caller, opts).await?,
            ))),
            Self::Daemon(client) => {
                let body = create_body(opts)?;
                let name = body.name.as_ref().map(ToString::to_string);
                let view = announce_held(client, name.as_deref(), client.create(&body)).await?;
                Ok(Created::Daemon(client.clone(), Box::new(view)))
            }
        }
    }

    /// Starts a command in sandbox `id`.
    pub async fn exec(&self, id: &SandboxId, opts: ExecOptions) -> Result<Execution> {
        match self {
            Self::Local(service, caller) => Ok(Execution::Local(Box::new(
                service.exec(caller, id, opts).await?,
            ))),
            Self::Daemon(client) => {
                let stdin = opts.stdin;
                let events = announce_held(
                    client,
                    Some(id.as_str()),
                    client.exec(id.as_str(), &exec_body(opts)),
                )
                .await?;
                Ok(Execution::remote(client, events, stdin))
            }
        }
    }

    /// A disposable sandbox for one command: created, the command started, and — whatever
    /// happens to it — destroyed by [`Front::finish_run`] (through the daemon: when the
    /// command's response ends).
    pub async fn run(
        &self,
        create: CreateOptions,
        exec: ExecOptions,
    ) -> Result<(Option<SandboxId>, Result<Execution>)> {
        self.pools_need_daemon(&create)?;
        match self {
            Self::Local(service, caller) => {
                let id = service
                    .create(caller, create)
                    .await
                    .map_err(starting)?
                    .commit()
                    .await
                    .map_err(starting)?;
                let exec = service.exec(caller, &id, exec).await;
                Ok((
                    Some(id),
                    exec.map(|e| Execution::Local(Box::new(e)))
                        .map_err(Into::into),
                ))
            }
            Self::Daemon(client) => {
                let stdin = exec.stdin;
                let ExecBody {
                    argv,
                    env,
                    cwd,
                    timeout,
                    stdin: text,
                    stdin_stream,
                } = exec_body(exec);
                let body = RunBody {
                    argv,
                    env,
                    cwd,
                    timeout,
                    stdin: text,
                    stdin_stream,
                    sandbox: create_body(create)?,
                };
                let events = announce_held(client, None, client.run(&body))
                    .await
                    .map_err(starting)?;
                Ok((None, Ok(Execution::remote(client, events, stdin))))
            }
        }
    }

    /// Pools are the daemon's: without one, `--pool` is an error, not a cold sandbox.
    fn pools_need_daemon(&self, opts: &CreateOptions) -> Result<()> {
        if let (Self::Local(..), Some(pool)) = (self, &opts.pool) {
            return Err(FrontError::PoolNeedsDaemon(pool.clone()));
        }
        Ok(())
    }

    /// Ends this command's use of the service: in-process, its audit records get their signed
    /// checkpoint before the program exits.
    pub async fn finish(&self) {
        if let Self::Local(service, _) = self {
            service.close_audit().await;
        }
    }

    /// Destroys what [`Front::run`] made (through the daemon there is nothing left to do).
    pub async fn finish_run(&self, id: Option<SandboxId>) -> Result<()> {
        if let (Self::Local(service, caller), Some(id)) = (self, id) {
            service.destroy(caller, &id).await?;
        }
        Ok(())
    }

    /// The Diff Card of the speculative run `exec` ran (made here, or the daemon's `card`
    /// event after the exit), put up for an answer.
    pub async fn card(&self, id: Option<&SandboxId>, exec: &mut Execution) -> Result<CardView> {
        match (self, exec) {
            (Self::Local(service, caller), _) => {
                let id = id.ok_or_else(|| {
                    FrontError::Protocol("a review in this process needs its sandbox's id".into())
                })?;
                Ok(luminaguard_daemon::approvals::card_view(
                    &service.review(caller, id).await?,
                ))
            }
            (Self::Daemon(_), Execution::Remote(r)) => match r.events.next().await? {
                Some(ExecEvent::Card(card)) => Ok(card),
                Some(ExecEvent::Error(e)) => Err(FrontError::Remote(e.detail)),
                other => Err(FrontError::Protocol(format!(
                    "the daemon sent no Diff Card after the command (got {other:?})"
                ))),
            },
            (Self::Daemon(_), Execution::Local(_)) => Err(FrontError::Protocol(
                "a review through the daemon needs its event stream".into(),
            )),
        }
    }

    /// Waits for approval `id` of the run `exec` ran to be decided — by anyone, or by its
    /// time running out.
    pub async fn await_decision(&self, id: &str, exec: &mut Execution) -> Result<ApprovalView> {
        match (self, exec) {
            (Self::Local(service, caller), _) => Ok(luminaguard_daemon::approvals::approval_view(
                &service.wait_approval(caller, id).await?,
            )),
            (Self::Daemon(_), Execution::Remote(r)) => match r.events.next().await? {
                Some(ExecEvent::Decision(a)) => Ok(a),
                Some(ExecEvent::Error(e)) => Err(FrontError::Remote(e.detail)),
                other => Err(FrontError::Protocol(format!(
                    "the daemon sent no decision for approval {id} (got {other:?})"
                ))),
            },
            (Self::Daemon(client), Execution::Local(_)) => Ok(client.approval(id, true).await?),
        }
    }

    /// Answers approval `id` (`digest`: the change set the person was shown) for the person
    /// at this terminal.
    pub async fn answer(
        &self,
        id: &str,
        answer: Answer,
        reason: Option<String>,
        digest: &str,
    ) -> Result<ApprovalView> {
        self.answer_via(id, answer, reason, digest, "terminal")
            .await
    }

    /// Answers approval `id` for a person reached through `via` (on the record in-process;
    /// the daemon records its own `api`).
    pub async fn answer_via(
        &self,
        id: &str,
        answer: Answer,
        reason: Option<String>,
        digest: &str,
        via: &'static str,
    ) -> Result<ApprovalView> {
        match self {
            Self::Local(service, caller) => {
                let a = service
                    .answer(Deciding { caller, via }, id, answer, reason, Some(digest))
                    .await?;
                Ok(luminaguard_daemon::approvals::approval_view(&a))
            }
            Self::Daemon(client) => {
                let body = DecideBody {
                    decision: match answer {
                        Answer::Approve | Answer::ApproveForSession | Answer::ApproveAlways => {
                            "approve"
                        }
                        Answer::Deny => "deny",
                    }
                    .to_owned(),
                    reason,
                    digest: Some(digest.to_owned()),
                    scope: match answer {
                        Answer::ApproveForSession => Some("session".to_owned()),
                        Answer::ApproveAlways => Some("always".to_owned()),
                        Answer::Approve | Answer::Deny => None,
                    },
                };
                Ok(client.decide(id, &body).await?)
            }
        }
    }

    /// Whether someone other than this process can answer an approval (through the daemon).
    pub fn answerable_elsewhere(&self) -> bool {
        matches!(self, Self::Daemon(_))
    }

    /// The approvals waiting for this user's answer (root: everyone's).
    pub async fn approvals(&self) -> Result<Vec<ApprovalView>> {
        match self {
            Self::Local(service, caller) => Ok(service
                .approvals(caller)
                .await
                .iter()
                .map(luminaguard_daemon::approvals::approval_view)
                .collect()),
            Self::Daemon(client) => Ok(client.approvals().await?),
        }
    }

    /// The approvals asked for from now on of the caller's sandboxes (root: everyone's), as
    /// they are asked: a front watches these instead of polling the list.
    pub async fn approval_requests(&self) -> Result<ApprovalRequests> {
        Ok(match self {
            Self::Local(service, caller) => {
                ApprovalRequests::Local(service.subscribe(), caller.clone())
            }
            Self::Daemon(client) => ApprovalRequests::Daemon(client.events().await?),
        })
    }

    /// Approval `id` (with `wait`: once decided).
    pub async fn approval(&self, id: &str, wait: bool) -> Result<ApprovalView> {
        match self {
            Self::Local(service, caller) => {
                let a = if wait {
                    service.wait_approval(caller, id).await?
                } else {
                    service.approval(caller, id).await?
                };
                Ok(luminaguard_daemon::approvals::approval_view(&a))
            }
            Self::Daemon(client) => Ok(client.approval(id, wait).await?),
        }
    }

    /// The caller's sandboxes, in the API's form (what `sandbox ls --json` prints).
    pub async fn list(&self) -> Result<Vec<SandboxView>> {
        match self {
            Self::Local(service, caller) => Ok(service
                .list(caller)
                .await?
                .into_iter()
                .map(luminaguard_daemon::api::view)
                .collect()),
            Self::Daemon(client) => Ok(client.list().await?),
        }
    }

    pub async fn destroy(&self, id: &SandboxId) -> Result<()> {
        match self {
            Self::Local(service, caller) => Ok(service.destroy(caller, id).await?),
            Self::Daemon(client) => Ok(client.destroy(id.as_str()).await?),
        }
    }

    pub async fn gc(&self) -> Result<GcView> {
        match self {
            Self::Local(service, caller) => {
                let r = service.gc(caller).await?;
                Ok(GcView {
                    removed: r.removed,
                    errors: r.errors,
                })
            }
            Self::Daemon(client) => Ok(client.gc().await?),
        }
    }

    pub async fn audit(&self, id: &SandboxId) -> Result<SeccompAudit> {
        match self {
            Self::Local(service, caller) => Ok(service.seccomp_audit(caller, id).await?),
            Self::Daemon(client) => Ok(audit(client.audit(id.as_str()).await?)),
        }
    }

    /// `cp` into a sandbox. Through the daemon, this process reads the host file (with the
    /// same refusals: links, non-regular files, over-size) — the daemon never opens a client's
    /// host paths.
    pub async fn copy_in(
        &self,
        id: &SandboxId,
        src: &Path,
        dst: &str,
        opts: CopyOptions,
        stop: impl Future<Output = Stop>,
    ) -> Result<(), CopyError> {
        match self {
            Self::Local(service, caller) => service
                .copy_in(caller, id, src, dst, opts, stop)
                .await
                .map(drop)
                .map_err(into_copy_error),
            Self::Daemon(client) => tokio::select! {
                biased;
                why = stop => Err(CopyError::Interrupted(why)),
                done = remote_copy_in(client, id, src, dst, opts) => done,
            },
        }
    }

    /// `cp` out of a sandbox; the host side is written by this process, all or nothing.
    pub async fn copy_out(
        &self,
        id: &SandboxId,
        src: &str,
        dst: &Path,
        opts: CopyOptions,
        stop: impl Future<Output = Stop>,
    ) -> Result<(), CopyError> {
        match self {
            Self::Local(service, caller) => service
                .copy_out(caller, id, src, dst, opts, stop)
                .await
                .map(drop)
                .map_err(into_copy_error),
            Self::Daemon(client) => {
                let (temp, mode) = tokio::select! {
                    biased;
                    why = stop => return Err(CopyError::Interrupted(why)),
                    done = remote_copy_out(client, id, src, dst, opts) => done?,
                };
                tokio::task::spawn_blocking(move || temp.commit(mode)).await??;
                Ok(())
            }
        }
    }
}

/// A copy's failure as a [`CopyError`] (others, e.g. not found, wrapped as the sandbox's).
fn into_copy_error(e: luminaguard_service::ServiceError) -> CopyError {
    match e {
        luminaguard_service::ServiceError::Copy(e) => e,
        other => CopyError::Remote(other.to_string()),
    }
}

/// A daemon's refusal of one step of a copy, worded as the in-process copy words it.
fn step_failed(
    op: &str,
    id: &SandboxId,
    path: &str,
) -> impl Fn(luminaguard_api::client::ClientError) -> CopyError {
    let (op, id, path) = (op.to_owned(), id.clone(), path.to_owned());
    move |e| {
        let detail = e.to_string();
        let prefix = format!("sandbox {id}: ");
        let detail = detail.strip_prefix(&prefix).unwrap_or(&detail);
        CopyError::Remote(format!("cannot {op} {id}:{path}: {detail}"))
    }
}

async fn remote_copy_in(
    client: &Client,
    id: &SandboxId,
    src: &Path,
    dst: &str,
    opts: CopyOptions,
) -> Result<(), CopyError> {
    let limit = opts.max_size.bytes();
    let path = src.to_owned();
    let source = tokio::task::spawn_blocking(move || hostfs::open_source(&path)).await??;
    if source.len > limit {
        return Err(CopyError::TooLarge {
            what: src.display().to_string(),
            size: Some(source.len),
            limit: opts.max_size,
        });
    }
    let into = dst.ends_with('/')
        || match client.stat(id.as_str(), dst, true).await {
            Ok(st) => st.kind == "dir",
            Err(e) if e.code() == Some("not-found") => false,
            Err(e) => return Err(step_failed("stat", id, dst)(e)),
        };
    let target = if into {
        let name = src
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| !n.is_empty() && *n != "." && *n != "..")
            .ok_or_else(|| CopyError::NoFileName(src.display().to_string()))?;
        format!("{}/{name}", dst.trim_end_matches('/'))
    } else {
        dst.to_owned()
    };
    let file = tokio::fs::File::from_std(source.file);
    // At most one byte over the limit is sent: a file that grew is refused by the daemon's
    // own limit or by the count below.
    let capped = tokio::io::AsyncReadExt::take(file, limit.saturating_add(1));
    let written = client
        .write_file_mode(id.as_str(), &target, source.mode & 0o777, capped)
        .await
        .map_err(step_failed("write", id, &target))?;
    if written.bytes > limit {
        return Err(CopyError::TooLarge {
            what: src.display().to_string(),
            size: None,
            limit: opts.max_size,
        });
    }
    Ok(())
}

async fn remote_copy_out(
    client: &Client,
    id: &SandboxId,
    src: &str,
    dst: &Path,
    opts: CopyOptions,
) -> Result<(hostfs::TempFile, u32), CopyError> {
    let what = format!("{id}:{src}");
    let limit = opts.max_size.bytes();
    let st = client
        .stat(id.as_str(), src, true)
        .await
        .map_err(step_failed("stat", id, src))?;
    let kind = match st.kind.as_str() {
        "file" => None,
        "dir" => Some("a directory"),
        "symlink" => Some("a dangling symbolic link"),
        _ => Some("a fifo, device or socket"),
    };
    if let Some(kind) = kind {
        return Err(CopyError::NotRegular { what, kind });
    }
    if st.size > limit {
        return Err(CopyError::TooLarge {
            what,
            size: Some(st.size),
            limit: opts.max_size,
        });
    }
    let name = Path::new(src).file_name().map(ToOwned::to_owned);
    let dst = dst.to_owned();
    let (temp, umask) = tokio::task::spawn_blocking(move || {
        Destination::resolve(&dst, name.as_deref())?
            .into_temp()
            .map(|t| (t, hostfs::umask()))
    })
    .await??;
    let mut out = tokio::fs::File::from_std(temp.writer()?);
    let n = client
        .read_file(id.as_str(), src, &mut out)
        .await
        .map_err(step_failed("copy", id, src))?;
    if n > limit {
        return Err(CopyError::TooLarge {
            what,
            size: None,
            limit: opts.max_size,
        });
    }
    Ok((temp, st.mode & 0o777 & !umask))
}

/// A sandbox just made, not yet handed over.
#[derive(Debug)]
pub enum Created {
    Local(Box<Pending>),
    Daemon(Client, Box<SandboxView>),
}

impl Created {
    pub fn id(&self) -> String {
        match self {
            Self::Local(p) => p.id().to_string(),
            Self::Daemon(_, v) => v.id.clone(),
        }
    }

    pub fn backend(&self) -> String {
        match self {
            Self::Local(p) => p.meta().backend.clone(),
            Self::Daemon(_, v) => v.backend.clone(),
        }
    }

    pub fn expires_unix_ms(&self) -> Option<u64> {
        match self {
            Self::Local(p) => p.meta().expires_unix_ms,
            Self::Daemon(_, v) => v
                .expires_in_ms
                .map(|left| luminaguard_backend::state::now_unix_ms().saturating_add(left)),
        }
    }

    /// The sandbox outlives this command from now on.
    pub async fn commit(self) -> Result<()> {
        if let Self::Local(p) = self {
            p.commit().await?;
        }
        Ok(())
    }

    /// The sandbox is removed.
    pub async fn discard(self) -> Result<()> {
        match self {
            Self::Local(p) => Ok(p.discard().await?),
            Self::Daemon(client, v) => Ok(client.destroy(&v.id).await?),
        }
    }
}

/// Runs `request` to the daemon; if it is still waiting after a moment, looks for an approval
/// it is held for (of sandbox `sandbox`, or — with no name — any asked about since it began)
/// and tells the person where to answer it, once per approval.
async fn announce_held<T>(
    client: &Client,
    sandbox: Option<&str>,
    request: impl std::future::Future<Output = T>,
) -> T {
    let since = luminaguard_backend::state::now_unix_ms();
    tokio::pin!(request);
    let mut told = std::collections::HashSet::new();
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
    tick.tick().await;
    loop {
        tokio::select! {
            done = &mut request => return done,
            _ = tick.tick() => {
                let Ok(list) = client.approvals().await else { continue };
                for a in list {
                    let ours = match sandbox {
                        Some(s) => a.card.sandbox == s,
                        None => a.requested_unix_ms >= since,
                    };
                    // (A named sandbox's Diff Card too: an agent's write shown first.)
                    let held = a.card.action.is_some() || sandbox.is_some();
                    if ours && held && told.insert(a.id.clone()) {
                        eprintln!(
                            "luminaguard: waiting for a person to answer approval {} ({}): \
                             `luminaguard approvals show|approve|deny {}`",
                            a.id,
                            a.card.what(),
                            a.id
                        );
                    }
                }
            }
        }
    }
}

/// What the CLI's flags ask for, as the API's body. A relative workspace is made absolute
/// here: the daemon resolves nothing against its own working directory.
fn create_body(o: CreateOptions) -> Result<CreateSandbox> {
    let workspace = match o.workspace {
        None => None,
        Some(w) => {
            let bad = |reason: String| FrontError::Workspace {
                path: format!("workspace {}", w.display()),
                reason,
            };
            let abs = std::path::absolute(&w).map_err(|e| bad(e.to_string()))?;
            Some(
                abs.to_str()
                    .ok_or_else(|| bad("it is not UTF-8".into()))?
                    .to_owned(),
            )
        }
    };
    let mounts = o
        .mounts
        .into_iter()
        .map(|m| {
            let bad = |reason: &str| FrontError::Workspace {
                path: format!("mount {m}"),
                reason: reason.into(),
            };
            if !m.host.is_absolute() {
                return Err(bad("a mount's host path must be absolute for the daemon"));
            }
            match (m.host.to_str(), m.at.to_str()) {
                (Some(host), Some(at)) => Ok(MountBody {
                    host: host.to_owned(),
                    at: at.to_owned(),
                }),
                _ => Err(bad("it is not UTF-8")),
            }
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(CreateSandbox {
        name: o.id,
        mounts,
        backend: o.backend,
        memory: o.memory,
        pids: o.pids,
        cpus: o.cpus,
        timeout: o.timeout,
        lifetime: o.lifetime,
        workspace,
        net: o.net_allow,
        net_deny: o.net_deny,
        image: o.image,
        template: o.template,
        pool: o.pool,
        no_cgroup: o.no_cgroup,
        review: o.review,
    })
}

fn exec_body(o: ExecOptions) -> ExecBody {
    ExecBody {
        argv: o.argv,
        env: o.env.into_iter().collect(),
        cwd: o.cwd,
        timeout: o.timeout,
        stdin: None,
        stdin_stream: o.stdin,
    }
}

fn audit(a: AuditView) -> SeccompAudit {
    SeccompAudit {
        enabled: a.enabled,
        recent: a
            .recent
            .into_iter()
            .map(|d| SeccompDenial {
                unix_ms: d.unix_ms,
                pid: d.pid,
                comm: d.comm,
                syscall: d.syscall,
                arg0: d.arg0,
            })
            .collect(),
        counts: a.counts,
        dropped: a.dropped,
    }
}

fn report(v: ExitView) -> ExitReport {
    ExitReport {
        code: v.code,
        signal: v.signal,
        timed_out: v.timed_out,
        cancelled: v.cancelled,
        output_truncated: v.output_truncated,
        duration_ms: v.duration_ms,
        oom_killed: v.oom_killed,
        memory_limit: v.memory_limit,
        seccomp_denied: v.seccomp_denied,
        error: v.error,
    }
}

/// A running command, here or in the daemon.
#[derive(Debug)]
pub enum Execution {
    Local(Box<Exec>),
    Remote(Box<Remote>),
}

/// A command the daemon runs: its events from the exec's response, its stdin sent as a second
/// request once the command has started (its exec id is in the `started` event).
pub struct Remote {
    client: Client,
    events: ExecEvents,
    /// Our end of the stdin stream (`None`: closed, or no stdin).
    stdin: Option<DuplexStream>,
    /// The other end, until the command has started.
    stdin_source: Option<DuplexStream>,
}

/// How much of our stdin may be in flight to the daemon.
const STDIN_BUFFER: usize = 256 << 10;

/// How long [`Execution::finish`] waits for the daemon to end a response.
const FINISH_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

impl Execution {
    fn remote(client: &Client, events: ExecEvents, stdin: bool) -> Self {
        let (ours, theirs) = if stdin {
            let (a, b) = tokio::io::duplex(STDIN_BUFFER);
            (Some(a), Some(b))
        } else {
            (None, None)
        };
        Self::Remote(Box::new(Remote {
            client: client.clone(),
            events,
            stdin: ours,
            stdin_source: theirs,
        }))
    }
}

impl Execution {
    /// After the exit: waits for the daemon to end the response — for `POST /v1/run`, once the
    /// run's sandbox is destroyed — so that when a `run` returns, its sandbox is gone. Bounded;
    /// in-process there is nothing to wait for.
    pub async fn finish(&mut self) {
        if let Self::Remote(r) = self {
            let drained = tokio::time::timeout(FINISH_WAIT, async {
                while let Ok(Some(_)) = r.events.next().await {}
            })
            .await;
            if drained.is_err() {
                tracing::debug!("the daemon did not end the response in time");
            }
        }
    }

    /// The next thing the command produced; `Ok(None)` after its exit.
    pub async fn next(&mut self) -> Result<Option<ExecOutput>> {
        let r = match self {
            Self::Local(e) => return Ok(e.next().await?),
            Self::Remote(r) => r,
        };
        let Some(event) = r.events.next().await? else {
            return Ok(None);
        };
        Ok(Some(match event {
            ExecEvent::Started { pid, exec, sandbox } => {
                if let Some(source) = r.stdin_source.take() {
                    let client = r.client.clone();
                    tokio::spawn(async move {
                        if let Err(e) = client.exec_stdin(&sandbox, &exec, source).await {
                            tracing::debug!(error = %e, "sending stdin");
                        }
                    });
                }
                ExecOutput::Started { pid }
            }
            ExecEvent::Stdout(c) => ExecOutput::Stdout(Bytes::from(c.bytes().map_err(bad_chunk)?)),
            ExecEvent::Stderr(c) => ExecOutput::Stderr(Bytes::from(c.bytes().map_err(bad_chunk)?)),
            ExecEvent::Exit(v) => ExecOutput::Exit(report(v)),
            ExecEvent::Error(e) => return Err(FrontError::Remote(e.detail)),
            ExecEvent::Card(_) | ExecEvent::Decision(_) => {
                return Err(FrontError::Protocol(
                    "the daemon sent a review event before the command's exit".into(),
                ));
            }
        }))
    }

    /// Feeds the command's stdin (started with [`ExecOptions::stdin`]); through the daemon,
    /// what is written before the command started waits for it.
    pub async fn write_stdin(&mut self, data: &[u8]) -> Result<()> {
        match self {
            Self::Local(e) => Ok(e.write_stdin(data).await?),
            Self::Remote(r) => {
                if let Some(w) = &mut r.stdin
                    && w.write_all(data).await.is_err()
                {
                    // The command no longer reads (it ended, or closed its stdin): the rest
                    // of ours is dropped, as a pipe to it would.
                    r.stdin = None;
                }
                Ok(())
            }
        }
    }

    /// Ends the command's stdin.
    pub async fn close_stdin(&mut self) -> Result<()> {
        match self {
            Self::Local(e) => Ok(e.close_stdin().await?),
            Self::Remote(r) => {
                if let Some(mut w) = r.stdin.take() {
                    let _ = w.shutdown().await;
                }
                Ok(())
            }
        }
    }
}

impl Execution {
    /// The command's stdin as a writer of its own, to be fed while its output is read (a
    /// long-lived command — an MCP server — is read and fed at once); `None` once taken, or
    /// without [`ExecOptions::stdin`]. Through the daemon, what is written before the command
    /// started waits for it.
    pub fn take_stdin(&mut self) -> Option<StdinWriter> {
        match self {
            Self::Local(e) => Some(StdinWriter::Local(e.stdin())),
            Self::Remote(r) => r.stdin.take().map(StdinWriter::Remote),
        }
    }
}

/// A command's stdin, fed apart from its output ([`Execution::take_stdin`]).
#[derive(Debug)]
pub enum StdinWriter {
    Local(luminaguard_service::Stdin),
    Remote(DuplexStream),
}

impl StdinWriter {
    pub async fn write(&mut self, data: &[u8]) -> Result<()> {
        match self {
            Self::Local(s) => Ok(s.write(data).await?),
            Self::Remote(w) => w.write_all(data).await.map_err(|e| {
                FrontError::Protocol(format!("the command no longer reads its stdin: {e}"))
            }),
        }
    }

    /// Ends the command's stdin.
    pub async fn close(&mut self) -> Result<()> {
        match self {
            Self::Local(s) => Ok(s.close().await?),
            Self::Remote(w) => {
                let _ = w.shutdown().await;
                Ok(())
            }
        }
    }
}

/// A chunk of output the daemon sent that does not decode.
fn bad_chunk(e: impl std::fmt::Display) -> FrontError {
    FrontError::Protocol(format!(
        "the daemon sent a chunk of output that does not decode: {e}"
    ))
}

/// A sandbox that lives as long as this front-end holds it: [`Front::release`] destroys it,
/// and so does the end of this process, however it ends. In-process, the sandbox is not
/// persistent (it lives as long as its creator); through the daemon, it is the disposable
/// sandbox of a one-shot run (`POST /v1/run`) whose command waits for ever: when the run's
/// connection closes — this process exits or is killed — the daemon kills the command and
/// destroys the sandbox, as it does for every one-shot run.
#[derive(Debug)]
pub struct Held {
    id: SandboxId,
    /// Through the daemon: the run whose response keeps the sandbox alive.
    run: Option<Box<Remote>>,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Remote")
    }
}

/// The command that holds a sandbox made through the daemon: it reads nothing, writes
/// nothing and waits (every policy preset allows `tail`, a read-only tool).
pub const HOLDER: [&str; 3] = ["tail", "-f", "/dev/null"];

/// How long [`Front::release`] waits for the daemon to remove a released sandbox before
/// destroying it itself.
const RELEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

impl Held {
    pub fn id(&self) -> &SandboxId {
        &self.id
    }
}

impl Front {
    /// Makes a sandbox that lives while the returned [`Held`] is held (see there).
    pub async fn hold(&self, mut create: CreateOptions) -> Result<Held> {
        self.pools_need_daemon(&create)?;
        create.persistent = false;
        match self {
            Self::Local(service, caller) => {
                let id = service.create(caller, create).await?.commit().await?;
                Ok(Held { id, run: None })
            }
            Self::Daemon(client) => {
                let body = RunBody {
                    argv: HOLDER.iter().map(|s| (*s).to_owned()).collect(),
                    env: Default::default(),
                    cwd: None,
                    // The sandbox's lifetime ends it first.
                    timeout: Some(luminaguard_core::SandboxSpec::MAX_LIFETIME),
                    stdin: None,
                    stdin_stream: false,
                    sandbox: create_body(create)?,
                };
                let mut events = announce_held(client, None, client.run(&body)).await?;
                match events.next().await? {
                    Some(ExecEvent::Started { sandbox, .. }) => {
                        let id = sandbox.parse::<SandboxId>().map_err(|e| {
                            FrontError::Protocol(format!(
                                "the daemon named the sandbox {sandbox:?}, which is not an id: {e}"
                            ))
                        })?;
                        Ok(Held {
                            id,
                            run: Some(Box::new(Remote {
                                client: client.clone(),
                                events,
                                stdin: None,
                                stdin_source: None,
                            })),
                        })
                    }
                    Some(ExecEvent::Error(e)) => Err(FrontError::Remote(e.detail)),
                    other => Err(FrontError::Protocol(format!(
                        "the daemon did not start the sandbox's holder (got {other:?})"
                    ))),
                }
            }
        }
    }

    /// Whether held sandbox `held` still runs (its lifetime may have ended it; through the
    /// daemon, its holder's run may have ended).
    pub async fn held_alive(&self, held: &Held) -> bool {
        match self {
            Self::Local(service, caller) => service.get(caller, &held.id).await.is_ok(),
            Self::Daemon(client) => client.get(held.id.as_str()).await.is_ok(),
        }
    }

    /// Destroys held sandbox `held`, and returns once it is gone.
    pub async fn release(&self, held: Held) -> Result<()> {
        let Held { id, run } = held;
        match self {
            Self::Local(service, caller) => Ok(service.destroy(caller, &id).await?),
            Self::Daemon(client) => {
                // Closing the run's connection is what tells the daemon; it then removes the
                // sandbox as it removes every one-shot run's.
                drop(run);
                let deadline = tokio::time::Instant::now() + RELEASE_WAIT;
                loop {
                    match client.get(id.as_str()).await {
                        Err(e) if e.code() == Some("not-found") => return Ok(()),
                        _ if tokio::time::Instant::now() >= deadline => break,
                        _ => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
                    }
                }
                match client.destroy(id.as_str()).await {
                    Err(e) if e.code() != Some("not-found") => Err(e.into()),
                    _ => Ok(()),
                }
            }
        }
    }
}

impl Front {
    /// An agent's write of `content` to `path` (absolute) in sandbox `id`, judged by the
    /// policy as the write it is; asked about, it returns once a person has answered (the
    /// approval it was made under is on the answer).
    pub async fn put_file(&self, id: &SandboxId, path: &str, content: Vec<u8>) -> Result<Written> {
        match self {
            Self::Local(service, caller) => {
                let put = service.put_file(caller, id, path, content).await?;
                Ok(Written {
                    path: put.path,
                    bytes: put.bytes,
                    approval: put.approval,
                })
            }
            Self::Daemon(client) => Ok(announce_held(
                client,
                Some(id.as_str()),
                client.put_file(id.as_str(), path, content),
            )
            .await?),
        }
    }

    /// Has an MCP tool call judged before it is forwarded to the server in sandbox `id` (the
    /// gateway): cleared — after a person's approval, when the policy asks — or refused.
    pub async fn judge_tool_call(&self, id: &SandboxId, call: &ToolCall) -> Result<Cleared> {
        match self {
            Self::Local(service, caller) => Ok(service.judge_tool_call(caller, id, call).await?),
            Self::Daemon(client) => {
                let body = luminaguard_api::types::ToolCallBody {
                    server: call.server.clone(),
                    tool: call.tool.clone(),
                    arguments: call.arguments.clone(),
                };
                let c = announce_held(
                    client,
                    Some(id.as_str()),
                    client.judge_tool_call(id.as_str(), &body),
                )
                .await?;
                Ok(Cleared {
                    verdict: c.verdict,
                    reason: c.reason,
                    approval: c.approval,
                })
            }
        }
    }

    /// Records what the gateway saw of a server's tools in sandbox `id`.
    pub async fn record_tool_event(&self, id: &SandboxId, event: &ToolEvent) -> Result<()> {
        match self {
            Self::Local(service, caller) => {
                Ok(service.record_tool_event(caller, id, event).await?)
            }
            Self::Daemon(client) => Ok(client.record_tool_event(id.as_str(), event).await?),
        }
    }

    /// Records an agent task's step or end against sandbox `id` (durable when it returns).
    pub async fn record_agent_event(
        &self,
        id: &SandboxId,
        event: &luminaguard_service::agent_event::AgentEvent,
    ) -> Result<()> {
        match self {
            Self::Local(service, caller) => {
                Ok(service.record_agent_event(caller, id, event).await?)
            }
            Self::Daemon(client) => Ok(client.record_agent_event(id.as_str(), event).await?),
        }
    }

    /// File `path` of sandbox `id`, whole, if it is at most `max` bytes.
    pub async fn read(&self, id: &SandboxId, path: &str, max: u64) -> Result<Vec<u8>> {
        match self {
            Self::Local(service, caller) => {
                let mut out = Vec::new();
                service.read_file(caller, id, path, max, &mut out).await?;
                Ok(out)
            }
            Self::Daemon(client) => {
                let mut out = Capped {
                    data: Vec::new(),
                    max,
                };
                match client.read_file(id.as_str(), path, &mut out).await {
                    Ok(_) => Ok(out.data),
                    Err(_) if out.data.len() as u64 > max => {
                        Err(luminaguard_service::ServiceError::TooLarge(format!(
                            "{path} in sandbox {id} is larger than the {max}-byte limit"
                        ))
                        .into())
                    }
                    Err(e) => Err(e.into()),
                }
            }
        }
    }
}

/// Bytes kept in memory up to one past a limit; a write beyond it fails.
struct Capped {
    data: Vec<u8>,
    max: u64,
}

impl tokio::io::AsyncWrite for Capped {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let room = usize::try_from(self.max.saturating_add(1))
            .unwrap_or(usize::MAX)
            .saturating_sub(self.data.len());
        if room == 0 {
            return std::task::Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::FileTooLarge,
                format!("more than {} bytes", self.max),
            )));
        }
        let n = room.min(buf.len());
        self.data.extend_from_slice(&buf[..n]);
        std::task::Poll::Ready(Ok(n))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}
