//! Running a command through an agent with our stdio: output streamed to ours as it comes, our
//! stdin forwarded when asked.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;
use luminaguard_protocol::message::{ErrorCode, ExecRequest, ExitStatus};
use luminaguard_protocol::{Client, ClientError, ExecEvent};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Runs `req`, streaming its output; returns how it ended. With `json`, the status is also
/// printed as one JSON line on stderr (stdout belongs to the command).
pub async fn exec_streamed(
    client: &Client,
    req: ExecRequest,
    json: bool,
) -> anyhow::Result<ExitStatus> {
    let mut stdin_open = req.stdin;
    let mut e = client.exec(req).await?;
    let mut stdin = tokio::io::stdin();
    let mut buf = vec![0u8; 64 << 10];
    let (mut out, mut err) = (tokio::io::stdout(), tokio::io::stderr());
    loop {
        tokio::select! {
            ev = e.next() => match ev.or_else(not_started)? {
                Some(ExecEvent::Started { pid }) => tracing::debug!(pid, "started"),
                Some(ExecEvent::Stdout(b)) => {
                    if let Err(e) = async { out.write_all(&b).await?; out.flush().await }.await {
                        return Err(closed_or(e));
                    }
                }
                Some(ExecEvent::Stderr(b)) => { err.write_all(&b).await?; err.flush().await?; }
                Some(ExecEvent::Exited(status)) => {
                    if json {
                        eprintln!("{}", serde_json::to_string(&serde_json::json!({
                            "code": status.code, "signal": status.signal, "timed_out": status.timed_out,
                            "cancelled": status.cancelled,
                            "output_truncated": status.output_truncated, "duration_ms": status.duration_ms,
                        }))?);
                    }
                    if status.timed_out {
                        eprintln!("luminaguard: command timed out and was killed");
                    } else if status.cancelled {
                        eprintln!(
                            "luminaguard: command was killed: the sandbox is stopping (lifetime over, or destroyed)"
                        );
                    }
                    return Ok(status);
                }
                None => bail!("exec stream ended without an exit status"),
            },
            n = stdin.read(&mut buf), if stdin_open => {
                let n = n?;
                if n == 0 {
                    stdin_open = false;
                    e.close_stdin().await?;
                } else {
                    e.write_stdin(&buf[..n]).await?;
                }
            }
        }
    }
}

/// A command that could not start ends as a shell's would: its name and why on stderr, status
/// 127 (not found) or 126 (not runnable).
fn not_started(e: ClientError) -> Result<Option<ExecEvent>, ClientError> {
    let code = match e.remote_code() {
        Some(ErrorCode::CommandNotFound) => 127,
        Some(ErrorCode::NotExecutable) => 126,
        _ => return Err(e),
    };
    if let ClientError::Remote(reply) = &e {
        eprintln!("luminaguard: {}", reply.message);
    }
    Ok(Some(ExecEvent::Exited(ExitStatus {
        code: Some(code),
        ..Default::default()
    })))
}

/// Our stdout was closed by its reader (`luminaguard run -- yes | head -1`): the program ends
/// quietly, after tearing the sandbox down, with [`crate::out::CLOSED_STDOUT`].
#[derive(Debug, thiserror::Error)]
#[error("stdout closed")]
pub struct StdoutClosed;

fn closed_or(e: std::io::Error) -> anyhow::Error {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        anyhow::Error::new(StdoutClosed)
    } else {
        anyhow::Error::new(e).context("writing the command's output to stdout")
    }
}

/// The shell convention: the command's code, or 128 + signal.
pub fn exit_code(status: &ExitStatus) -> ExitCode {
    ExitCode::from(u8::try_from(status.shell_code()).unwrap_or(255))
}

/// The sandbox's seccomp denials so far, per call (empty when it cannot tell): taken before an
/// exec, for [`report_denials`].
pub async fn denials(sandbox: &luminaguard_backend::Sandbox) -> Vec<(String, u64)> {
    sandbox
        .seccomp_audit()
        .await
        .map(|a| a.counts)
        .unwrap_or_default()
}

/// One line on stderr when the sandbox's seccomp policy denied anything since `before` (the
/// counts [`denials`] gave): a denied call is the likeliest reason a command failed with EPERM,
/// and otherwise invisible.
pub async fn report_denials(sandbox: &luminaguard_backend::Sandbox, before: &[(String, u64)]) {
    match sandbox.seccomp_audit().await {
        Ok(a) => {
            let list: Vec<String> = a
                .counts
                .iter()
                .filter_map(|(s, n)| {
                    let was = before.iter().find(|(b, _)| b == s).map_or(0, |(_, n)| *n);
                    (*n > was).then(|| format!("{s} x{}", n - was))
                })
                .collect();
            if !list.is_empty() {
                eprintln!(
                    "luminaguard: the sandbox's seccomp policy denied: {}",
                    list.join(", ")
                );
            }
        }
        Err(e) => tracing::warn!("cannot read the sandbox's seccomp audit: {e}"),
    }
}

/// How many OOM kills the sandbox's cgroup has seen so far (0 when it cannot tell): taken before
/// an exec, for [`report_oom`].
pub async fn oom_kills(sandbox: &luminaguard_backend::Sandbox) -> u64 {
    sandbox.oom_kills().await.unwrap_or(0)
}

/// Says so on stderr when a SIGKILL came from the kernel's OOM killer — the sandbox's cgroup
/// counted a kill since `before` — rather than from a timeout or a cancel.
pub async fn report_oom(
    sandbox: &luminaguard_backend::Sandbox,
    status: &ExitStatus,
    before: u64,
    limit: Option<luminaguard_core::ByteSize>,
) {
    if status.signal == Some(9) && !status.timed_out && !status.cancelled {
        match sandbox.oom_kills().await {
            Ok(n) if n > before => {
                let limit = limit.map(|l| format!(" (limit {l})")).unwrap_or_default();
                eprintln!("luminaguard: the command was killed: out of memory{limit}");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("cannot read the sandbox's OOM count: {e}"),
        }
    }
}

/// How to run one command in a sandbox (see [`exec_in`]).
#[derive(Debug)]
pub struct ExecOptions {
    pub argv: Vec<String>,
    /// Added to (and overriding) the sandbox's own environment.
    pub env: Vec<(String, String)>,
    pub cwd: String,
    /// The command's timeout; `None`: the sandbox's.
    pub timeout: Option<Duration>,
    /// The exit status as one JSON line on stderr, too.
    pub json: bool,
    /// The sandbox was made for this command: every OOM kill its cgroup counted is this one's.
    pub fresh: bool,
}

/// The one way a command runs in a sandbox, for `run` and `sandbox exec` alike: the defaults
/// recorded with the sandbox (timeout, environment), our stdio streamed, and afterwards an OOM
/// kill, the seccomp policy's denials and a sandbox that died in the meantime said in words.
pub async fn exec_in(
    sandbox: &luminaguard_backend::Sandbox,
    opts: ExecOptions,
) -> anyhow::Result<ExitCode> {
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
        cwd: Some(opts.cwd),
        stdin: true,
        timeout_ms: Some(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX)),
        ..Default::default()
    };
    // What the sandbox had counted before, so that only this command's kills and denials are
    // reported (a fresh one has counted nothing).
    let (before, denied_before) = if opts.fresh {
        (0, Vec::new())
    } else {
        (oom_kills(sandbox).await, denials(sandbox).await)
    };
    let status = match exec_streamed(sandbox.client(), req, opts.json).await {
        Ok(status) => status,
        Err(e) => return Err(explain_dead_sandbox(e, sandbox).await),
    };
    report_oom(sandbox, &status, before, spec.map(|s| s.memory)).await;
    report_denials(sandbox, &denied_before).await;
    Ok(exit_code(&status))
}

/// The timeout of an exec in a sandbox whose record names none (made by an older version).
const FALLBACK_EXEC_TIMEOUT: Duration = Duration::from_secs(600);

/// How long a failed exec waits to see whether the sandbox's init or VMM is exiting too.
const DEATH_WAIT: Duration = Duration::from_secs(2);

/// An exec that failed because the sandbox itself died (its VMM was killed, its guest crashed)
/// says so, with the end of the sandbox's console.
async fn explain_dead_sandbox(
    e: anyhow::Error,
    sandbox: &luminaguard_backend::Sandbox,
) -> anyhow::Error {
    let Some(init) = sandbox.meta.init else {
        return e;
    };
    // A refused command (not found, …) leaves the connection open: nothing died.
    if !sandbox.client().is_closed() {
        return e;
    }
    // The connection can drop a moment before the process is gone.
    let start = tokio::time::Instant::now();
    let mut pause = Duration::from_millis(1);
    while init.alive() {
        if start.elapsed() >= DEATH_WAIT {
            return e;
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
    e.context(format!(
        "the sandbox's {what} (pid {}) has exited{oom}{console}",
        init.pid
    ))
}
