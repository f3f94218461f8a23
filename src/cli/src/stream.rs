//! A command's run rendered on our stdio: its output streamed to ours as it comes, our stdin
//! forwarded, and how it ended said on stderr the way a shell user reads it.

use std::process::ExitCode;

use anyhow::bail;
use luminaguard_service::{ExecOutput, ExitReport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A running command whose output we render: through the service, or (`debug`) straight from
/// an agent.
pub trait Running {
    async fn next(&mut self) -> anyhow::Result<Option<ExecOutput>>;
    async fn write_stdin(&mut self, data: &[u8]) -> anyhow::Result<()>;
    async fn close_stdin(&mut self) -> anyhow::Result<()>;
}

/// A command borrowed (its stream read on after the exit: a review's card).
impl<T: Running> Running for &mut T {
    async fn next(&mut self) -> anyhow::Result<Option<ExecOutput>> {
        (**self).next().await
    }
    async fn write_stdin(&mut self, data: &[u8]) -> anyhow::Result<()> {
        (**self).write_stdin(data).await
    }
    async fn close_stdin(&mut self) -> anyhow::Result<()> {
        (**self).close_stdin().await
    }
}

/// Streams `exec`'s output to our stdout and stderr and (with `stdin`) our stdin to it, until
/// it exits; then reports the exit (with `json`, also as one JSON line on stderr: stdout
/// belongs to the command). Returns the shell's exit code for it.
pub async fn exec_streamed(
    mut exec: impl Running,
    forward_stdin: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    // Our stdin is forwarded once the command has started (through the daemon, its stdin
    // stream can be opened only then).
    let mut stdin_open = false;
    let mut stdin = tokio::io::stdin();
    let mut buf = vec![0u8; 64 << 10];
    let (mut out, mut err) = (tokio::io::stdout(), tokio::io::stderr());
    loop {
        tokio::select! {
            ev = exec.next() => match ev? {
                Some(ExecOutput::Started { pid }) => {
                    tracing::debug!(pid, "started");
                    stdin_open = forward_stdin;
                }
                Some(ExecOutput::Stdout(b)) => {
                    if let Err(e) = async { out.write_all(&b).await?; out.flush().await }.await {
                        return Err(closed_or(e));
                    }
                }
                Some(ExecOutput::Stderr(b)) => { err.write_all(&b).await?; err.flush().await?; }
                Some(ExecOutput::Exit(report)) => {
                    report_exit(&report, json)?;
                    return Ok(exit_code(&report));
                }
                None => bail!("exec stream ended without an exit status"),
            },
            n = stdin.read(&mut buf), if stdin_open => {
                let n = n?;
                if n == 0 {
                    stdin_open = false;
                    exec.close_stdin().await?;
                } else {
                    exec.write_stdin(&buf[..n]).await?;
                }
            }
        }
    }
}

/// How the command ended, in words on stderr: why it did not start, a timeout, a cancel, an
/// OOM kill, the seccomp policy's denials (the likeliest reason a command failed with EPERM,
/// and otherwise invisible).
fn report_exit(report: &ExitReport, json: bool) -> anyhow::Result<()> {
    if let Some(e) = &report.error {
        eprintln!("luminaguard: {e}");
    }
    if json {
        eprintln!(
            "{}",
            serde_json::to_string(&serde_json::json!({
                "code": report.code, "signal": report.signal, "timed_out": report.timed_out,
                "cancelled": report.cancelled, "output_truncated": report.output_truncated,
                "duration_ms": report.duration_ms,
            }))?
        );
    }
    if report.timed_out {
        eprintln!("luminaguard: command timed out and was killed");
    } else if report.cancelled {
        eprintln!(
            "luminaguard: command was killed: the sandbox is stopping (lifetime over, or destroyed)"
        );
    }
    if report.oom_killed {
        let limit = report
            .memory_limit
            .map(|l| format!(" (limit {l})"))
            .unwrap_or_default();
        eprintln!("luminaguard: the command was killed: out of memory{limit}");
    }
    if !report.seccomp_denied.is_empty() {
        let list: Vec<String> = report
            .seccomp_denied
            .iter()
            .map(|(call, n)| format!("{call} x{n}"))
            .collect();
        eprintln!(
            "luminaguard: the sandbox's seccomp policy denied: {}",
            list.join(", ")
        );
    }
    Ok(())
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
pub fn exit_code(report: &ExitReport) -> ExitCode {
    ExitCode::from(u8::try_from(report.shell_code()).unwrap_or(255))
}
