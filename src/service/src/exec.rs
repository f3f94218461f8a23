//! Commands in sandboxes: the one exec path of every caller. The sandbox's recorded defaults
//! apply (timeout, environment); the output is streamed as it comes; the exit is reported with
//! what a user needs to understand it — an OOM kill, the seccomp policy's denials during the
//! command, a command that could not start, a sandbox that died underneath it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use luminaguard_core::ByteSize;
use luminaguard_protocol::message::{ErrorCode as AgentCode, ExecRequest, ExitStatus};
use luminaguard_protocol::{ClientError, ExecEvent, ExecStream};

use crate::ServiceError;
use crate::live::Entry;

/// How to run one command.
#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    pub argv: Vec<String>,
    /// Added to (and overriding) the sandbox's own environment.
    pub env: Vec<(String, String)>,
    /// Working directory in the sandbox (default [`DEFAULT_CWD`]).
    pub cwd: Option<String>,
    /// The command's timeout; `None`: the sandbox's.
    pub timeout: Option<Duration>,
    /// The command reads a stdin the caller feeds ([`Exec::write_stdin`], then
    /// [`Exec::close_stdin`]); otherwise its stdin is empty.
    pub stdin: bool,
}

/// Where a command runs unless told otherwise.
pub const DEFAULT_CWD: &str = "/workspace";

/// The timeout of an exec in a sandbox whose record names none (made by an older version).
const FALLBACK_EXEC_TIMEOUT: Duration = Duration::from_secs(600);

/// How long a failed exec waits to see whether the sandbox's init or VMM is exiting too.
const DEATH_WAIT: Duration = Duration::from_secs(2);

/// What a running command produced.
#[derive(Debug, Clone, PartialEq)]
pub enum ExecOutput {
    Started {
        pid: u32,
    },
    Stdout(Bytes),
    Stderr(Bytes),
    /// The last event.
    Exit(ExitReport),
}

/// How a command ended.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExitReport {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    /// Killed for running past its timeout.
    pub timed_out: bool,
    /// Killed because the sandbox is stopping (its lifetime ended, it was destroyed) or the
    /// caller went away.
    pub cancelled: bool,
    /// Output beyond the limit was dropped.
    pub output_truncated: bool,
    pub duration_ms: u64,
    /// Killed by the kernel's OOM killer (the sandbox's cgroup counted a kill during it).
    #[serde(default)]
    pub oom_killed: bool,
    /// The sandbox's memory limit, when `oom_killed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_limit: Option<ByteSize>,
    /// System calls the sandbox's seccomp policy denied while it ran, with counts.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub seccomp_denied: BTreeMap<String, u64>,
    /// Why the command never started (not found: code 127; not runnable: 126).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ExitReport {
    /// The shell convention: the code, or 128 + signal.
    pub fn shell_code(&self) -> i32 {
        match (self.code, self.signal) {
            (Some(c), _) => c,
            (None, Some(s)) => 128 + s,
            (None, None) => 255,
        }
    }
}

impl From<&ExitStatus> for ExitReport {
    /// The agent's report alone (no OOM or seccomp counts).
    fn from(s: &ExitStatus) -> Self {
        Self {
            code: s.code,
            signal: s.signal,
            timed_out: s.timed_out,
            cancelled: s.cancelled,
            output_truncated: s.output_truncated,
            duration_ms: s.duration_ms,
            ..Self::default()
        }
    }
}

/// A running command. Dropping it before its exit kills the command (the agent is told to
/// cancel it).
#[derive(Debug)]
pub struct Exec {
    entry: Arc<Entry>,
    events: Arc<crate::events::Bus>,
    stream: ExecStream,
    /// The sandbox's OOM kills and seccomp denials before the command (`None`: a sandbox that
    /// had run nothing, whose every count is this command's).
    before: Option<(u64, Vec<(String, u64)>)>,
    /// The exit status, once received (reported by the call to [`Exec::next`] that completes).
    exited: Option<ExitStatus>,
    done: bool,
    /// Where the command's end is recorded (taken when it is).
    audit: Option<ExitAudit>,
    /// An exit report whose audit record was being written when a call was cancelled.
    reported: Option<ExitReport>,
}

/// How a command's end reaches the audit log.
#[derive(Debug)]
pub(crate) struct ExitAudit {
    pub(crate) audit: Arc<crate::audit::Audit>,
    pub(crate) caller: crate::Caller,
    pub(crate) sandbox: luminaguard_core::SandboxId,
}

impl Exec {
    pub(crate) async fn start(
        entry: Arc<Entry>,
        events: Arc<crate::events::Bus>,
        opts: ExecOptions,
    ) -> Result<Self, ServiceError> {
        let sandbox = &entry.sandbox;
        let spec = sandbox.meta.spec.as_ref();
        let mut env: Vec<(String, String)> = spec
            .map(|s| s.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        for (k, v) in opts.env {
            env.retain(|(have, _)| *have != k);
            env.push((k, v));
        }
        let timeout = opts
            .timeout
            .or(spec.map(|s| s.limits.exec_timeout))
            .unwrap_or(FALLBACK_EXEC_TIMEOUT);
        let req = ExecRequest {
            argv: opts.argv,
            env,
            cwd: Some(opts.cwd.unwrap_or_else(|| DEFAULT_CWD.to_owned())),
            stdin: opts.stdin,
            timeout_ms: Some(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX)),
            ..Default::default()
        };
        let before = if entry.take_fresh() {
            None
        } else {
            Some((oom_kills(&entry).await, denials(&entry).await))
        };
        entry.clear_output();
        let stream = match sandbox.client().exec(req).await {
            Ok(stream) => stream,
            Err(e) => return Err(explain(&entry, e).await),
        };
        Ok(Self {
            entry,
            events,
            stream,
            before,
            exited: None,
            done: false,
            audit: None,
            reported: None,
        })
    }

    pub(crate) fn with_audit(mut self, audit: ExitAudit) -> Self {
        self.audit = Some(audit);
        self
    }

    /// The next thing the command produced; `Ok(None)` after [`ExecOutput::Exit`], whose
    /// report is on the audit log before it is returned. Cancellation-safe.
    pub async fn next(&mut self) -> Result<Option<ExecOutput>, ServiceError> {
        if let Some(report) = self.reported.take() {
            return Ok(Some(ExecOutput::Exit(report)));
        }
        let out = self.next_event().await?;
        if let Some(ExecOutput::Exit(report)) = &out
            && let Some(a) = self.audit.take()
        {
            self.reported = Some(report.clone());
            a.audit
                .note(
                    &a.caller,
                    serde_json::json!({"type": "exit", "sandbox": a.sandbox, "report": report}),
                )
                .await;
            self.reported = None;
        }
        Ok(out)
    }

    /// The next thing the command produced; `Ok(None)` after [`ExecOutput::Exit`].
    /// Cancellation-safe (callers `select!` on it): an exit status received but not yet
    /// reported is kept until a call completes.
    async fn next_event(&mut self) -> Result<Option<ExecOutput>, ServiceError> {
        if self.done {
            return Ok(None);
        }
        if let Some(status) = self.exited.clone() {
            let report = self.report(&status).await;
            self.done = true;
            return Ok(Some(ExecOutput::Exit(report)));
        }
        let event = match self.stream.next().await {
            Ok(event) => event,
            Err(e) => match not_started(&e) {
                Some(report) => {
                    self.done = true;
                    return Ok(Some(ExecOutput::Exit(report)));
                }
                None => {
                    self.done = true;
                    return Err(explain(&self.entry, e).await);
                }
            },
        };
        Ok(Some(match event {
            Some(ExecEvent::Started { pid }) => ExecOutput::Started { pid },
            Some(ExecEvent::Stdout(b)) => {
                self.entry.keep_output(&b);
                ExecOutput::Stdout(b)
            }
            Some(ExecEvent::Stderr(b)) => {
                self.entry.keep_output(&b);
                ExecOutput::Stderr(b)
            }
            Some(ExecEvent::Exited(status)) => {
                // Kept first: the report below awaits, and may be cancelled.
                self.exited = Some(status.clone());
                let report = self.report(&status).await;
                self.done = true;
                ExecOutput::Exit(report)
            }
            None => {
                self.done = true;
                return Err(ServiceError::internal(
                    "running the command",
                    "the exec stream ended without an exit status",
                ));
            }
        }))
    }

    /// Feeds the command's stdin (with [`ExecOptions::stdin`]).
    pub async fn write_stdin(&self, data: &[u8]) -> Result<(), ServiceError> {
        self.stream
            .write_stdin(data)
            .await
            .map_err(|e| self.agent_error(e))
    }

    /// Ends the command's stdin.
    pub async fn close_stdin(&self) -> Result<(), ServiceError> {
        self.stream
            .close_stdin()
            .await
            .map_err(|e| self.agent_error(e))
    }

    /// The command's stdin, writable from another task while this one reads the output.
    pub fn stdin(&self) -> Stdin {
        Stdin {
            input: self.stream.stdin(),
            id: self.entry.sandbox.id.clone(),
        }
    }

    /// Kills the command; its [`ExecOutput::Exit`] (with `cancelled`) still follows.
    pub async fn cancel(&self) -> Result<(), ServiceError> {
        self.stream.cancel().await.map_err(|e| self.agent_error(e))
    }

    fn agent_error(&self, e: ClientError) -> ServiceError {
        ServiceError::agent(&self.entry.sandbox.id, e)
    }

    /// The exit status with what the sandbox counted during the command.
    async fn report(&self, status: &ExitStatus) -> ExitReport {
        let mut report = ExitReport::from(status);
        let (oom_before, denied_before) = match &self.before {
            Some((oom, denied)) => (*oom, denied.as_slice()),
            None => (0, &[][..]),
        };
        if status.signal == Some(9) && !status.timed_out && !status.cancelled {
            match self.entry.sandbox.oom_kills().await {
                Ok(n) if n > oom_before => {
                    report.oom_killed = true;
                    let meta = &self.entry.sandbox.meta;
                    self.events.send(
                        crate::EventKind::OomKilled,
                        &self.entry.sandbox.id,
                        meta.user,
                        &meta.backend,
                    );
                    report.memory_limit = self.entry.sandbox.meta.spec.as_ref().map(|s| s.memory);
                }
                Ok(_) => {}
                Err(e) => tracing::warn!("cannot read the sandbox's OOM count: {e}"),
            }
        }
        match self.entry.sandbox.seccomp_audit().await {
            Ok(a) => {
                for (call, n) in a.counts {
                    let was = denied_before
                        .iter()
                        .find(|(b, _)| *b == call)
                        .map_or(0, |(_, n)| *n);
                    if n > was {
                        report.seccomp_denied.insert(call, n - was);
                    }
                }
            }
            Err(e) => tracing::warn!("cannot read the sandbox's seccomp audit: {e}"),
        }
        report
    }
}

/// A running command's stdin (see [`Exec::stdin`]).
#[derive(Debug, Clone)]
pub struct Stdin {
    input: luminaguard_protocol::InputHandle,
    id: luminaguard_core::SandboxId,
}

impl Stdin {
    pub async fn write(&self, data: &[u8]) -> Result<(), ServiceError> {
        self.input
            .send(data)
            .await
            .map_err(|e| ServiceError::agent(&self.id, e))
    }

    /// Ends the stdin (the command reads end-of-file).
    pub async fn close(&self) -> Result<(), ServiceError> {
        self.input
            .end()
            .await
            .map_err(|e| ServiceError::agent(&self.id, e))
    }
}

/// The sandbox's seccomp denials so far, per call (empty when it cannot tell).
async fn denials(entry: &Entry) -> Vec<(String, u64)> {
    entry
        .sandbox
        .seccomp_audit()
        .await
        .map(|a| a.counts)
        .unwrap_or_default()
}

/// How many OOM kills the sandbox's cgroup has seen so far (0 when it cannot tell).
async fn oom_kills(entry: &Entry) -> u64 {
    entry.sandbox.oom_kills().await.unwrap_or(0)
}

/// A command that could not start ends as a shell's would: status 127 (not found) or 126 (not
/// runnable), with why.
fn not_started(e: &ClientError) -> Option<ExitReport> {
    let code = match e.remote_code() {
        Some(AgentCode::CommandNotFound) => 127,
        Some(AgentCode::NotExecutable) => 126,
        _ => return None,
    };
    let message = match e {
        ClientError::Remote(reply) => reply.message.clone(),
        e => e.to_string(),
    };
    Some(ExitReport {
        code: Some(code),
        error: Some(message),
        ..ExitReport::default()
    })
}

/// An exec that failed because the sandbox itself died (its VMM was killed, its guest crashed,
/// its init ran out of memory) says so, with the end of the sandbox's console.
async fn explain(entry: &Entry, e: ClientError) -> ServiceError {
    let sandbox = &entry.sandbox;
    let plain = || ServiceError::agent(&sandbox.id, e.clone());
    let Some(init) = sandbox.meta.init else {
        return plain();
    };
    // A refused command (not found, …) leaves the connection open: nothing died.
    if !sandbox.client().is_closed() {
        return plain();
    }
    // The connection can drop a moment before the process is gone.
    let start = tokio::time::Instant::now();
    let mut pause = Duration::from_millis(1);
    while init.alive() {
        if start.elapsed() >= DEATH_WAIT {
            return plain();
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(50));
    }
    let what = match sandbox.meta.backend.as_str() {
        "process" => "init",
        _ => "VMM",
    };
    // Killed for want of memory is a reason a user can act on: say it.
    let oom = match sandbox.oom_kills().await {
        Ok(n) if n > 0 => " after the sandbox ran out of memory",
        _ => "",
    };
    let console = luminaguard_backend::console_tail(
        &sandbox
            .dir
            .join(luminaguard_core::runtime::SandboxFile::ConsoleLog.file_name()),
        2048,
    )
    .await;
    let console = match console.trim() {
        "" => String::new(),
        c => format!("\n--- last lines of the sandbox console ---\n{c}"),
    };
    ServiceError::SandboxDied {
        id: sandbox.id.to_string(),
        detail: format!(
            "the sandbox's {what} (pid {}) has exited{oom}: {e}{console}",
            init.pid
        ),
    }
}
