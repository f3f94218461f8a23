//! Running a command through an agent with our stdio: output streamed to ours as it comes, our
//! stdin forwarded when asked.

use std::process::ExitCode;

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

/// One line on stderr when the sandbox's seccomp policy denied anything: a denied call is the
/// likeliest reason a command failed with EPERM, and otherwise invisible.
pub async fn report_denials(sandbox: &luminaguard_backend::Sandbox) {
    match sandbox.seccomp_audit().await {
        Ok(a) if !a.counts.is_empty() => {
            let list: Vec<String> = a.counts.iter().map(|(s, n)| format!("{s} x{n}")).collect();
            eprintln!(
                "luminaguard: the sandbox's seccomp policy denied: {}",
                list.join(", ")
            );
        }
        Ok(_) => {}
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
