//! `Exec`: run a process with streamed output, optional streamed stdin, a timeout, an output
//! cap, and cancellation — and when it ends, by itself or not, kill what is left of its tree.
//!
//! An exec owns its process tree: when the main process exits, stragglers it left in its session
//! are killed too, so no exec outlives its reply and every pipe reaches end-of-file.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use luminaguard_protocol::message::{ErrorCode, ErrorReply, ExecRequest, ExitStatus, Reply};
use luminaguard_protocol::{FrameSender, MAX_CHUNK};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio_util::sync::CancellationToken;

use crate::reaper::{ExitReason, Reaper};
use crate::server::{StreamInput, StreamInputRx};

/// Read size for stdout/stderr.
const PIPE_CHUNK: usize = 64 << 10;
/// After the tree is dead, at most this much already-buffered output is drained per pipe.
const DRAIN_LIMIT: usize = 4 << 20;

/// Runs one exec to its end and returns the terminal reply. Output goes out through `out` as it
/// arrives.
pub async fn run(
    reaper: &Reaper,
    confine: Option<&Confinement>,
    id: u64,
    req: ExecRequest,
    out: &FrameSender,
    input: StreamInputRx,
) -> Result<Reply, ErrorReply> {
    validate(&req)?;
    let started_at = Instant::now();
    let cmd = build_command(&req, confine);
    let (mut child, exit_rx) = reaper.spawn(cmd).await.map_err(|e| spawn_error(&req, e))?;
    let pid = child.id() as i32;
    // The child is a session leader, so its session id is its pid.
    let sid = pid;
    let pipe_err =
        |e: std::io::Error| ErrorReply::new(ErrorCode::Internal, format!("exec pipes: {e}"));
    let stdout = child
        .stdout
        .take()
        .map(|p| pipe::Receiver::from_owned_fd(OwnedFd::from(p)))
        .transpose()
        .map_err(pipe_err)?;
    let stderr = child
        .stderr
        .take()
        .map(|p| pipe::Receiver::from_owned_fd(OwnedFd::from(p)))
        .transpose()
        .map_err(pipe_err)?;
    let stdin = child
        .stdin
        .take()
        .map(|p| pipe::Sender::from_owned_fd(OwnedFd::from(p)))
        .transpose()
        .map_err(pipe_err)?;
    drop(child); // never waited on directly: the reaper owns its exit

    let _ = out.send(id, &Reply::Started { pid: pid as u32 }).await;

    let budget = Arc::new(OutputBudget::new(req.output_limit));
    let finish = CancellationToken::new();
    let StreamInputRx { rx: input, cancel } = input;
    let pumps = [
        stdout.map(|p| {
            tokio::spawn(pump(
                p,
                Stream::Stdout,
                out.clone(),
                id,
                budget.clone(),
                finish.clone(),
            ))
        }),
        stderr.map(|p| {
            tokio::spawn(pump(
                p,
                Stream::Stderr,
                out.clone(),
                id,
                budget.clone(),
                finish.clone(),
            ))
        }),
    ];
    let stdin_task = tokio::spawn(feed_stdin(stdin, input));

    let timeout =
        Duration::from_millis(req.timeout_ms.unwrap_or(u64::MAX).min(u64::from(u32::MAX)));
    let mut exit_rx = exit_rx;
    let (mut timed_out, mut cancelled) = (false, false);
    let reason = tokio::select! {
        r = &mut exit_rx => r.ok(),
        _ = tokio::time::sleep(timeout) => { timed_out = true; None }
        _ = cancel.cancelled() => { cancelled = true; None }
    };
    // Whatever happened, nothing of this exec's tree may survive it.
    kill_tree(pid, sid).await;
    let reason = match reason {
        Some(r) => Some(r),
        None => exit_rx.await.ok(),
    };
    finish.cancel();
    for p in pumps.into_iter().flatten() {
        let _ = p.await;
    }
    stdin_task.abort();

    let (code, signal) = match reason {
        Some(ExitReason::Code(c)) => (Some(c), None),
        Some(ExitReason::Signal(s)) => (None, Some(s)),
        None => {
            return Err(ErrorReply::new(
                ErrorCode::Internal,
                format!("exit status of pid {pid} was lost"),
            ));
        }
    };
    Ok(Reply::Exited(ExitStatus {
        code,
        signal,
        timed_out,
        cancelled,
        output_truncated: budget.truncated(),
        output_bytes: budget.total(),
        duration_ms: u64::try_from(started_at.elapsed().as_millis()).unwrap_or(u64::MAX),
    }))
}

/// What a failed spawn tells the host: the shell's distinction between a program that is not
/// there (127) and one that cannot be run (126), each in plain words, or the error as it was.
fn spawn_error(req: &ExecRequest, e: crate::reaper::ReaperError) -> ErrorReply {
    let program = req.argv.first().map(String::as_str).unwrap_or_default();
    let errno = match &e {
        crate::reaper::ReaperError::Spawn { source, .. } => source.raw_os_error(),
        _ => None,
    };
    match errno {
        Some(libc::ENOENT) => ErrorReply::new(
            ErrorCode::CommandNotFound,
            format!("{program}: command not found"),
        ),
        Some(libc::EACCES | libc::ENOEXEC | libc::EISDIR | libc::EPERM) => ErrorReply::new(
            ErrorCode::NotExecutable,
            format!(
                "{program}: cannot run it: {}",
                std::io::Error::from_raw_os_error(errno.unwrap_or(0))
            ),
        ),
        _ => ErrorReply::new(ErrorCode::SpawnFailed, e.to_string()),
    }
}

fn validate(req: &ExecRequest) -> Result<(), ErrorReply> {
    let bad = |m: String| Err(ErrorReply::new(ErrorCode::InvalidRequest, m));
    if req.argv.is_empty() || req.argv[0].is_empty() {
        return bad("exec needs a program to run (argv is empty)".into());
    }
    if let Some(a) = req.argv.iter().find(|a| a.contains('\0')) {
        return bad(format!("argument {a:?} contains a NUL byte"));
    }
    if let Some((k, _)) = req
        .env
        .iter()
        .find(|(k, v)| k.is_empty() || k.contains(['=', '\0']) || v.contains('\0'))
    {
        return bad(format!(
            "environment variable {k:?} has an invalid name or value"
        ));
    }
    if let Some(cwd) = &req.cwd {
        if !cwd.starts_with('/') || cwd.contains('\0') {
            return bad(format!(
                "working directory {cwd:?} must be an absolute path"
            ));
        }
        // Checked here so that a missing program and a missing directory (both ENOENT from
        // the spawn) are told apart.
        #[allow(clippy::disallowed_methods)] // one stat, before the spawn
        if !std::path::Path::new(cwd).is_dir() {
            return bad(format!("working directory {cwd:?} does not exist"));
        }
    }
    Ok(())
}

/// What the agent of a process sandbox applies to every command it starts, between fork and
/// exec — not to itself, so that commands can neither trace, signal nor take descriptors from the
/// agent (a Landlock domain cannot reach out of itself), and so that under memory pressure a
/// command, not the agent, is what the kernel kills.
#[derive(Debug)]
pub struct Confinement {
    /// The Landlock ruleset (`luminaguard_sandbox_init::landlock::restrict_with`).
    pub landlock: Option<OwnedFd>,
    /// `cgroup.procs` of the cgroup every command starts in (a microVM guest's pids limit,
    /// set up by VM init), open for writing.
    pub commands_cgroup: Option<OwnedFd>,
}

/// A command's `oom_score_adj`: the kernel's OOM killer prefers it to the agent (which keeps the
/// default, 0). A command may lower its own back to 0, no further.
const COMMAND_OOM_SCORE_ADJ: &[u8] = b"500";

/// Applies `landlock` and the OOM preference to the calling process. Async-signal-safe: runs
/// between fork and exec.
fn confine_self(landlock: Option<i32>) -> std::io::Result<()> {
    // SAFETY: open/write/close on a NUL-terminated constant path and a constant buffer.
    unsafe {
        let fd = libc::open(
            c"/proc/self/oom_score_adj".as_ptr(),
            libc::O_WRONLY | libc::O_CLOEXEC,
        );
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let n = libc::write(
            fd,
            COMMAND_OOM_SCORE_ADJ.as_ptr().cast(),
            COMMAND_OOM_SCORE_ADJ.len(),
        );
        libc::close(fd);
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    match landlock {
        Some(fd) => luminaguard_sandbox_init::landlock::restrict_with(fd),
        None => Ok(()),
    }
}

fn build_command(req: &ExecRequest, confine: Option<&Confinement>) -> Command {
    let mut cmd = Command::new(&req.argv[0]);
    cmd.args(&req.argv[1..]);
    if req.clear_env {
        cmd.env_clear();
    }
    cmd.envs(req.env.iter().map(|(k, v)| (k, v)));
    if let Some(cwd) = &req.cwd {
        cmd.current_dir(cwd);
    }
    cmd.stdin(if req.stdin {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    cmd.stdout(Stdio::piped());
    cmd.stderr(Stdio::piped());
    let cgroup = confine.and_then(|c| c.commands_cgroup.as_ref().map(|fd| fd.as_raw_fd()));
    let confine = confine.map(|c| c.landlock.as_ref().map(|fd| fd.as_raw_fd()));
    // SAFETY: runs in the forked child before exec and only makes async-signal-safe calls
    // (write, setsid, close_range, prctl, signal, open/write/close, landlock), touching no memory
    // shared with the parent.
    unsafe {
        cmd.pre_exec(move || {
            // Into the commands' cgroup first: everything it starts is counted from here on.
            if let Some(procs) = cgroup
                && libc::write(procs, b"0".as_ptr().cast(), 1) != 1
            {
                return Err(std::io::Error::last_os_error());
            }
            // A session of its own (the exec owns its tree; no terminal of anyone's), and
            // nothing of the agent's beyond stdio, whatever its flags.
            luminaguard_core::child::detach_from_caller(&[])?;
            // Dies with the agent (the spawner thread lives as long as the agent does).
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) < 0
            {
                return Err(std::io::Error::last_os_error());
            }
            // Rust ignores SIGPIPE in its own processes; children expect the default.
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            if let Some(landlock) = confine {
                confine_self(landlock)?;
            }
            Ok(())
        });
    }
    cmd
}

async fn kill_tree(root: i32, sid: i32) {
    match tokio::task::spawn_blocking(move || crate::proctree::kill_tree(root, sid)).await {
        Ok(n) if n > 0 => tracing::debug!(root, killed = n, "killed exec process tree"),
        Ok(_) => {}
        Err(e) => tracing::error!(root, error = %e, "process tree kill task failed"),
    }
}

/// Shared cap on stdout+stderr bytes forwarded.
#[derive(Debug)]
struct OutputBudget {
    limit: u64,
    total: AtomicU64,
}

impl OutputBudget {
    fn new(limit: Option<u64>) -> Self {
        Self {
            limit: limit.unwrap_or(u64::MAX),
            total: AtomicU64::new(0),
        }
    }
    /// Records `n` produced bytes; returns how many of them may be forwarded.
    fn take(&self, n: usize) -> usize {
        let before = self.total.fetch_add(n as u64, Ordering::Relaxed);
        let room = self.limit.saturating_sub(before);
        usize::try_from(room.min(n as u64)).unwrap_or(n)
    }
    fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }
    fn truncated(&self) -> bool {
        self.total() > self.limit
    }
}

#[derive(Debug, Clone, Copy)]
enum Stream {
    Stdout,
    Stderr,
}

async fn pump(
    mut pipe: pipe::Receiver,
    which: Stream,
    out: FrameSender,
    id: u64,
    budget: Arc<OutputBudget>,
    finish: CancellationToken,
) {
    let mut buf = vec![0u8; PIPE_CHUNK];
    let forward = |n: usize, buf: &[u8]| {
        let allowed = budget.take(n);
        (allowed > 0).then(|| {
            let chunk = Bytes::copy_from_slice(&buf[..allowed]);
            match which {
                Stream::Stdout => Reply::Stdout(chunk),
                Stream::Stderr => Reply::Stderr(chunk),
            }
        })
    };
    loop {
        tokio::select! {
            biased;
            _ = finish.cancelled() => break,
            r = pipe.read(&mut buf) => match r {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if let Some(reply) = forward(n, &buf)
                        && out.send(id, &reply).await.is_err() {
                            return;
                        }
                }
            },
        }
    }
    // The tree is dead: take what it already wrote, without waiting for writers that escaped.
    // A direct non-blocking read(2), not `try_read`: tokio's `try_read` answers WouldBlock from
    // its cached readiness when the reactor has not yet seen the pipe become readable — and
    // output written just before the exit would be lost.
    let mut drained = 0;
    while drained < DRAIN_LIMIT {
        match nix::unistd::read(&pipe, &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                drained += n;
                if let Some(reply) = forward(n, &buf)
                    && out.send(id, &reply).await.is_err()
                {
                    return;
                }
            }
        }
    }
}

async fn feed_stdin(
    mut stdin: Option<pipe::Sender>,
    mut input: tokio::sync::mpsc::Receiver<StreamInput>,
) {
    while let Some(msg) = input.recv().await {
        match msg {
            StreamInput::Data(data) => {
                if let Some(p) = stdin.as_mut() {
                    // A child that closed stdin is not an error; keep consuming input.
                    if p.write_all(&data).await.is_err() {
                        stdin = None;
                    }
                }
            }
            StreamInput::End => stdin = None,
        }
    }
}

const _: () = assert!(PIPE_CHUNK <= MAX_CHUNK);
