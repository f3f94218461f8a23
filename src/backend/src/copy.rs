//! Copying one regular file between the host and a sandbox (`sandbox cp`), for every caller:
//! CLI, daemon, MCP server.
//!
//! The sandbox is hostile and owns its workspace, which may be where a copy lands or comes
//! from. So, on the host side ([`crate::hostfs`]): no symbolic link is followed anywhere in the
//! host path; only regular files are read; the copy is written into a file with no name (or an
//! unpredictable one) and renamed over the destination only when complete. Both directions are
//! bounded by [`CopyOptions::max_size`]: the sandbox is asked for at most one byte more than the
//! limit, and the host stops writing at the limit whatever the agent sends. A copy stopped by a
//! signal or a caller ([`Stop`]), or failing for any reason, leaves nothing behind: not the
//! partial file on the host, not the agent's temporary in the sandbox (its write is cancelled).

use std::ffi::OsStr;
use std::fmt;
use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use luminaguard_core::ByteSize;
use luminaguard_protocol::ClientError;
use luminaguard_protocol::message::{ErrorCode, FileKind, ReadFileRequest, WriteFileRequest};
use nix::sys::signal::Signal;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::Sandbox;
use crate::hostfs::{self, Destination, HostFsError};

/// How a copy is bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyOptions {
    /// The largest file copied; a bigger one is refused (see `Config::copy`).
    pub max_size: ByteSize,
}

/// Why a copy was abandoned before it finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// The process was asked to end ([`TerminationSignals`]).
    Signal(Signal),
    /// The caller gave up (a daemon's client went away, …).
    Cancelled(String),
}

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Signal(s) => write!(f, "interrupted by {s}"),
            Self::Cancelled(why) => write!(f, "cancelled: {why}"),
        }
    }
}

/// Why a copy failed. Nothing partial is left behind in any case.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// The host side refused (a link, not a regular file, …) or failed.
    #[error(transparent)]
    Host(#[from] HostFsError),
    /// The file is over [`CopyOptions::max_size`].
    #[error(
        "{what}{} is larger than the copy size limit of {limit}: nothing was copied; raise the \
         limit with --max-size SIZE, or copy.max_size in the configuration \
         (LUMINAGUARD_COPY_MAX_SIZE)",
        size.map(|s| format!(" ({})", ByteSize(s))).unwrap_or_default()
    )]
    TooLarge {
        what: String,
        size: Option<u64>,
        limit: ByteSize,
    },
    /// The sandbox's file is a directory, fifo, device or socket.
    #[error("{what} is {kind}, not a regular file: only regular files are copied")]
    NotRegular { what: String, kind: &'static str },
    /// The source names no file to copy into a directory under.
    #[error("{0}: names no file (a copy into a directory takes the source's file name)")]
    NoFileName(String),
    /// The agent refused or the connection failed.
    /// The agent refused or the connection failed (`error` is in the message, so it is not
    /// also a `source`).
    #[error("cannot {op} {what}: {error}")]
    Sandbox {
        op: &'static str,
        what: String,
        error: ClientError,
    },
    /// The service (or the daemon) that was to do the copy refused it.
    #[error("{0}")]
    Remote(String),
    /// Abandoned part-way.
    #[error("{0}: the copy was abandoned and its partial file removed")]
    Interrupted(Stop),
    #[error("a blocking task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl CopyError {
    /// The signal that interrupted the copy, if one did (a CLI exits with 128 + its number).
    pub fn signal(&self) -> Option<Signal> {
        match self {
            Self::Interrupted(Stop::Signal(s)) => Some(*s),
            _ => None,
        }
    }
}

/// What a copy did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CopyReport {
    /// Where the file now is: a host path, or `ID:/path`.
    pub to: String,
    pub bytes: u64,
}

/// SIGINT, SIGTERM and SIGHUP, caught from [`TerminationSignals::install`] on, so that a copy
/// they interrupt can remove what it started instead of dying half-way.
#[derive(Debug)]
pub struct TerminationSignals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl TerminationSignals {
    /// Catches the three signals from now on (in place of their default action: death). Must
    /// be called within a Tokio runtime.
    pub fn install() -> io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// The next of them to arrive.
    pub async fn recv(&mut self) -> Stop {
        tokio::select! {
            Some(()) = self.int.recv() => Stop::Signal(Signal::SIGINT),
            Some(()) = self.term.recv() => Stop::Signal(Signal::SIGTERM),
            Some(()) = self.hup.recv() => Stop::Signal(Signal::SIGHUP),
            else => std::future::pending().await,
        }
    }
}

/// Copies `src` out of `sandbox` to host path `dst` (an existing directory receives it under
/// its own name). Refuses a source that is not a regular file or is over the limit, and any link
/// on the host path; replaces a regular file at `dst` atomically, never writes through
/// anything. `stop` abandons the copy (nothing is left) until the file is complete; from then
/// on it is put in place regardless.
pub async fn copy_out(
    sandbox: &Sandbox,
    src: &str,
    dst: &Path,
    opts: CopyOptions,
    stop: impl Future<Output = Stop>,
) -> Result<CopyReport, CopyError> {
    let (temp, mode, bytes) = tokio::select! {
        biased;
        why = stop => return Err(CopyError::Interrupted(why)),
        done = transfer_out(sandbox, src, dst, opts) => done?,
    };
    let to = tokio::task::spawn_blocking(move || temp.commit(mode)).await??;
    Ok(CopyReport {
        to: to.display().to_string(),
        bytes,
    })
}

/// Everything of [`copy_out`] but putting the file in place: the complete, unnamed copy and
/// the mode it gets.
async fn transfer_out(
    sandbox: &Sandbox,
    src: &str,
    dst: &Path,
    opts: CopyOptions,
) -> Result<(hostfs::TempFile, u32, u64), CopyError> {
    let what = format!("{}:{src}", sandbox.id);
    let limit = opts.max_size.bytes();
    let client = sandbox.client();
    let st = client
        .stat(src, true)
        .await
        .map_err(|error| CopyError::Sandbox {
            op: "stat",
            what: what.clone(),
            error,
        })?;
    let kind = match st.kind {
        FileKind::File => None,
        FileKind::Dir => Some("a directory"),
        FileKind::Symlink => Some("a dangling symbolic link"),
        FileKind::Other => Some("a fifo, device or socket"),
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
    let name = Path::new(src).file_name().map(OsStr::to_owned);
    let dst = dst.to_owned();
    let (temp, umask) = tokio::task::spawn_blocking(move || {
        Destination::resolve(&dst, name.as_deref())?
            .into_temp()
            .map(|t| (t, hostfs::umask()))
    })
    .await??;
    let mut out = Capped::new(tokio::fs::File::from_std(temp.writer()?), limit);
    // One byte more than the limit: an over-size file is detected without sending it all.
    let req = ReadFileRequest {
        path: src.to_owned(),
        offset: 0,
        limit: Some(limit.saturating_add(1)),
    };
    let read = client.read_file_to(req, &mut out).await;
    let over = CopyError::TooLarge {
        what: what.clone(),
        size: None,
        limit: opts.max_size,
    };
    match read {
        // The agent sent more than the limit (the file grew, or the agent ignores limits).
        _ if out.exceeded => Err(over),
        Ok(n) if n > limit => Err(over),
        Ok(n) => Ok((temp, st.mode & 0o777 & !umask, n)),
        Err(error) => Err(CopyError::Sandbox {
            op: "copy",
            what,
            error,
        }),
    }
}

/// Copies host file `src` into `sandbox` at `dst` (an existing directory, or a path ending in
/// `/`, receives it under its own name). Refuses any link on the host path and anything but a
/// regular file (a fifo is refused without waiting on it), and a file over the limit — also one
/// that grows past it while being read. The agent writes atomically; `stop` (or any failure)
/// cancels its write, and it removes its temporary.
pub async fn copy_in(
    sandbox: &Sandbox,
    src: &Path,
    dst: &str,
    opts: CopyOptions,
    stop: impl Future<Output = Stop>,
) -> Result<CopyReport, CopyError> {
    tokio::select! {
        biased;
        why = stop => Err(CopyError::Interrupted(why)),
        done = transfer_in(sandbox, src, dst, opts) => done,
    }
}

async fn transfer_in(
    sandbox: &Sandbox,
    src: &Path,
    dst: &str,
    opts: CopyOptions,
) -> Result<CopyReport, CopyError> {
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
    let target = sandbox_target(sandbox, src, dst).await?;
    let what = format!("{}:{target}", sandbox.id);
    let req = WriteFileRequest {
        path: target,
        mode: source.mode & 0o777,
        parents: false,
    };
    let mut input = Capped::new(tokio::fs::File::from_std(source.file), limit);
    let written = sandbox.client().write_file_from(req, &mut input).await;
    if input.exceeded {
        return Err(CopyError::TooLarge {
            what: src.display().to_string(),
            size: None,
            limit: opts.max_size,
        });
    }
    let bytes = written.map_err(|error| CopyError::Sandbox {
        op: "write",
        what: what.clone(),
        error,
    })?;
    Ok(CopyReport { to: what, bytes })
}

/// The path a copy into the sandbox writes: `dst`, or `dst/<source's name>` when `dst` ends in
/// `/` or is an existing directory there.
async fn sandbox_target(sandbox: &Sandbox, src: &Path, dst: &str) -> Result<String, CopyError> {
    let into = dst.ends_with('/')
        || match sandbox.client().stat(dst, true).await {
            Ok(st) => st.kind == FileKind::Dir,
            Err(e) if e.remote_code() == Some(ErrorCode::NotFound) => false,
            Err(error) => {
                return Err(CopyError::Sandbox {
                    op: "stat",
                    what: format!("{}:{dst}", sandbox.id),
                    error,
                });
            }
        };
    if !into {
        return Ok(dst.to_owned());
    }
    let name = src
        .file_name()
        .and_then(OsStr::to_str)
        .filter(|n| !n.is_empty() && *n != "." && *n != "..")
        .ok_or_else(|| CopyError::NoFileName(src.display().to_string()))?;
    Ok(format!("{}/{name}", dst.trim_end_matches('/')))
}

/// A reader or writer that fails once more than `left` bytes went through (setting
/// `exceeded`): a writer refuses the write that would cross the limit, so at most `limit`
/// bytes are ever written.
#[derive(Debug)]
struct Capped<T> {
    inner: T,
    left: u64,
    exceeded: bool,
}

impl<T> Capped<T> {
    fn new(inner: T, limit: u64) -> Self {
        Self {
            inner,
            left: limit,
            exceeded: false,
        }
    }

    fn over(&mut self) -> io::Error {
        self.exceeded = true;
        io::Error::other("over the copy size limit")
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for Capped<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if u64::try_from(buf.len()).unwrap_or(u64::MAX) > self.left {
            return Poll::Ready(Err(self.over()));
        }
        let n = ready!(Pin::new(&mut self.inner).poll_write(cx, buf))?;
        self.left -= u64::try_from(n).unwrap_or(u64::MAX).min(self.left);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Capped<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        let n = u64::try_from(buf.filled().len() - before).unwrap_or(u64::MAX);
        if n > self.left {
            // What crossed the limit is not handed on.
            buf.set_filled(before);
            return Poll::Ready(Err(self.over()));
        }
        self.left -= n;
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::disallowed_methods)]
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_capped_writer_never_writes_past_the_limit() {
        let mut w = Capped::new(Vec::new(), 10);
        w.write_all(b"0123456789").await.unwrap();
        assert!(!w.exceeded);
        assert!(w.write_all(b"x").await.is_err());
        assert!(w.exceeded);
        assert_eq!(w.inner, b"0123456789");
        let mut w = Capped::new(Vec::new(), 4);
        assert!(w.write_all(b"01234").await.is_err());
        assert!(w.inner.is_empty(), "the crossing write is refused whole");
    }

    #[tokio::test]
    async fn a_capped_reader_fails_past_the_limit() {
        let mut r = Capped::new(&b"0123456789"[..], 10);
        let mut out = Vec::new();
        r.read_to_end(&mut out).await.unwrap();
        assert_eq!((out.len(), r.exceeded), (10, false));
        let mut r = Capped::new(&b"0123456789"[..], 9);
        assert!(r.read_to_end(&mut Vec::new()).await.is_err());
        assert!(r.exceeded);
    }

    /// An agent that is not what it claims: a "10-byte regular file" that streams zeroes
    /// for ever, whatever limit it is asked to keep to, pausing `pause` between chunks.
    async fn lying_agent(sock: tokio::net::UnixStream, pause: std::time::Duration) {
        use bytes::BytesMut;
        use futures_util::StreamExt;
        use luminaguard_protocol::handshake::{HelloReply, MAX_VERSION};
        use luminaguard_protocol::message::{FileStat, Reply, Request};
        use luminaguard_protocol::{FrameCodec, Incoming, MAX_FRAME_LEN};
        let (r, mut w) = sock.into_split();
        let mut frames =
            tokio_util::codec::FramedRead::new(r, FrameCodec::<Request, Reply>::default());
        while let Some(Ok(Incoming::Frame(f))) = frames.next().await {
            let mut buf = BytesMut::new();
            let mut send = |reply: &Reply| {
                luminaguard_protocol::frame::encode_frame(f.id, reply, &mut buf, MAX_FRAME_LEN)
                    .unwrap();
            };
            match f.body {
                Request::Hello(_) => send(&Reply::Hello(HelloReply::Accepted {
                    version: MAX_VERSION,
                    capabilities: Vec::new(),
                    software: "lying".into(),
                })),
                Request::Stat { .. } => send(&Reply::Stat(FileStat {
                    kind: FileKind::File,
                    size: 10,
                    mode: 0o644,
                    uid: 0,
                    gid: 0,
                    mtime_unix_ms: 0,
                    symlink_target: None,
                })),
                Request::ReadFile(_) => loop {
                    let mut chunk = BytesMut::new();
                    luminaguard_protocol::frame::encode_frame(
                        f.id,
                        &Reply::Data(vec![0u8; 64 << 10].into()),
                        &mut chunk,
                        MAX_FRAME_LEN,
                    )
                    .unwrap();
                    if w.write_all(&chunk).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(pause).await;
                },
                _ => {}
            }
            if w.write_all(&buf).await.is_err() {
                return;
            }
        }
    }

    async fn lying_sandbox(pause: std::time::Duration) -> Sandbox {
        let (host, guest) = tokio::net::UnixStream::pair().unwrap();
        tokio::spawn(lying_agent(guest, pause));
        let client = luminaguard_protocol::Client::connect(host, Default::default())
            .await
            .unwrap();
        let meta = crate::SandboxMeta::new("liar", "test", None).unwrap();
        Sandbox::new("liar".parse().unwrap(), "/nonexistent".into(), meta, client)
    }

    fn entries(dir: &Path) -> Vec<std::ffi::OsString> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect()
    }

    #[tokio::test]
    async fn an_agent_that_ignores_the_limit_is_cut_off_at_it() {
        let sandbox = lying_sandbox(std::time::Duration::ZERO).await;
        let dst = tempfile::tempdir().unwrap();
        let opts = CopyOptions {
            max_size: ByteSize::mib(1),
        };
        let err = copy_out(
            &sandbox,
            "/f",
            &dst.path().join("out"),
            opts,
            std::future::pending(),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(err, CopyError::TooLarge { limit, .. } if limit == opts.max_size),
            "{err}"
        );
        assert!(entries(dst.path()).is_empty(), "{:?}", entries(dst.path()));
    }

    #[tokio::test]
    async fn a_stopped_copy_leaves_nothing() {
        let sandbox = lying_sandbox(std::time::Duration::from_millis(1)).await;
        let dst = tempfile::tempdir().unwrap();
        let stop = async {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            Stop::Cancelled("test".into())
        };
        let err = copy_out(
            &sandbox,
            "/f",
            &dst.path().join("out"),
            CopyOptions {
                max_size: ByteSize(1 << 40),
            },
            stop,
        )
        .await
        .unwrap_err();
        assert!(
            matches!(&err, CopyError::Interrupted(Stop::Cancelled(_))),
            "{err}"
        );
        assert!(entries(dst.path()).is_empty(), "{:?}", entries(dst.path()));
    }

    #[test]
    fn messages_say_which_limit_and_how_to_raise_it() {
        let e = CopyError::TooLarge {
            what: "sb:/workspace/big".into(),
            size: Some(64 << 20),
            limit: ByteSize::mib(1),
        }
        .to_string();
        assert!(
            e.starts_with("sb:/workspace/big (64M) is larger than the copy size limit of 1M")
                && e.contains("--max-size")
                && e.contains("copy.max_size")
                && e.contains("LUMINAGUARD_COPY_MAX_SIZE"),
            "{e}"
        );
        let e = CopyError::Interrupted(Stop::Signal(Signal::SIGTERM));
        assert_eq!(e.signal(), Some(Signal::SIGTERM));
        assert!(e.to_string().starts_with("interrupted by SIGTERM"), "{e}");
    }
}
