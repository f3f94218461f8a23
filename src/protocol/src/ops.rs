//! Typed operations on top of [`Client`]: exec with streamed output, files, info, shutdown.

use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::client::{Client, ClientError, ReplyStream};
use crate::frame::MAX_CHUNK;
use crate::message::{
    DirEntry, ExecRequest, ExitStatus, FileStat, GuestInfo, ReadFileRequest, Reply, Request,
    SeccompAudit, WriteFileRequest,
};
use crate::pool::ChunkPool;
use crate::writer::BULK_BUDGET;

/// Extra time the host waits beyond an exec's own timeout for the agent to report the kill.
const EXEC_GRACE: Duration = Duration::from_secs(10);

/// Something an exec produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecEvent {
    Started { pid: u32 },
    Stdout(Bytes),
    Stderr(Bytes),
    Exited(ExitStatus),
}

/// A running exec: its events, and its stdin.
#[derive(Debug)]
pub struct ExecStream {
    stream: ReplyStream,
    deadline: Instant,
    budget: Duration,
}

impl ExecStream {
    /// The next event; `Ok(None)` after [`ExecEvent::Exited`]. Waits at most until the exec's own
    /// timeout plus a grace period has passed since it started.
    pub async fn next(&mut self) -> Result<Option<ExecEvent>, ClientError> {
        let reply = self.stream.next_before(self.deadline, self.budget).await?;
        Ok(match reply {
            None => None,
            Some(Reply::Started { pid }) => Some(ExecEvent::Started { pid }),
            Some(Reply::Stdout(b)) => Some(ExecEvent::Stdout(b)),
            Some(Reply::Stderr(b)) => Some(ExecEvent::Stderr(b)),
            Some(Reply::Exited(s)) => Some(ExecEvent::Exited(s)),
            Some(other) => {
                return Err(ClientError::Protocol(format!(
                    "exec: unexpected {} reply",
                    other.kind()
                )));
            }
        })
    }

    pub async fn write_stdin(&self, data: &[u8]) -> Result<(), ClientError> {
        self.stream.send_input(data).await
    }

    pub async fn close_stdin(&self) -> Result<(), ClientError> {
        self.stream.end_input().await
    }

    /// A handle for the command's stdin usable from another task.
    pub fn stdin(&self) -> crate::client::InputHandle {
        self.stream.input()
    }

    /// Kills the process tree; an `Exited` event with `cancelled` follows.
    pub async fn cancel(&self) -> Result<(), ClientError> {
        self.stream.cancel().await
    }

    /// The stream id, for logs.
    pub fn id(&self) -> u64 {
        self.stream.id()
    }
}

/// Everything an exec produced, collected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub status: ExitStatus,
}

impl Client {
    /// Starts an exec. A request without a timeout gets the client's default, so it always ends.
    pub async fn exec(&self, mut req: ExecRequest) -> Result<ExecStream, ClientError> {
        let timeout = match req.timeout_ms {
            Some(ms) => Duration::from_millis(ms),
            None => self.options().default_exec_timeout,
        };
        req.timeout_ms = Some(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX));
        let budget = timeout.saturating_add(EXEC_GRACE);
        let stream = self.start(Request::Exec(req)).await?;
        Ok(ExecStream {
            stream,
            deadline: Instant::now() + budget,
            budget,
        })
    }

    /// Runs an exec to completion, feeding it `stdin` if given, and collects its output (which
    /// the request's `output_limit` bounds).
    pub async fn exec_output(
        &self,
        mut req: ExecRequest,
        stdin: Option<&[u8]>,
    ) -> Result<ExecOutput, ClientError> {
        req.stdin = stdin.is_some();
        let mut exec = self.exec(req).await?;
        if let Some(data) = stdin {
            exec.write_stdin(data).await?;
            exec.close_stdin().await?;
        }
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        while let Some(ev) = exec.next().await? {
            match ev {
                ExecEvent::Started { .. } => {}
                ExecEvent::Stdout(b) => stdout.extend_from_slice(&b),
                ExecEvent::Stderr(b) => stderr.extend_from_slice(&b),
                ExecEvent::Exited(status) => {
                    return Ok(ExecOutput {
                        stdout,
                        stderr,
                        status,
                    });
                }
            }
        }
        Err(ClientError::Protocol(
            "exec ended without an exit status".into(),
        ))
    }

    /// Round-trip time of a ping.
    pub async fn ping(&self) -> Result<Duration, ClientError> {
        let start = Instant::now();
        expect(self.call(Request::Ping).await?, "ping", |r| {
            matches!(r, Reply::Pong).then_some(())
        })?;
        Ok(start.elapsed())
    }

    /// Streams a guest file into `out`; returns the byte count.
    pub async fn read_file_to<W: AsyncWrite + Unpin>(
        &self,
        req: ReadFileRequest,
        out: &mut W,
    ) -> Result<u64, ClientError> {
        let path = req.path.clone();
        let mut stream = self.start(Request::ReadFile(req)).await?;
        let mut written = 0u64;
        loop {
            match stream.next().await? {
                Some(Reply::Data(chunk)) => {
                    out.write_all(&chunk)
                        .await
                        .map_err(|e| ClientError::Limit(format!("writing {path} locally: {e}")))?;
                    written += chunk.len() as u64;
                }
                Some(Reply::ReadDone { bytes }) if bytes == written => break,
                Some(Reply::ReadDone { bytes }) => {
                    return Err(ClientError::Protocol(format!(
                        "read {path}: agent sent {written} bytes but reported {bytes}"
                    )));
                }
                Some(other) => {
                    return Err(ClientError::Protocol(format!(
                        "read {path}: unexpected {} reply",
                        other.kind()
                    )));
                }
                None => {
                    return Err(ClientError::Protocol(format!(
                        "read {path}: stream ended early"
                    )));
                }
            }
        }
        out.flush()
            .await
            .map_err(|e| ClientError::Limit(format!("writing {path} locally: {e}")))?;
        Ok(written)
    }

    /// Reads a whole guest file into memory, refusing files over `max_bytes`.
    pub async fn read_file(&self, path: &str, max_bytes: u64) -> Result<Vec<u8>, ClientError> {
        let req = ReadFileRequest {
            path: path.to_owned(),
            offset: 0,
            limit: Some(max_bytes.saturating_add(1)),
        };
        let mut buf = Vec::new();
        let n = self.read_file_to(req, &mut buf).await?;
        if n > max_bytes {
            return Err(ClientError::Limit(format!(
                "{path} is larger than the {max_bytes}-byte limit"
            )));
        }
        Ok(buf)
    }

    /// Writes a guest file atomically from `src` (all or nothing); returns the byte count.
    pub async fn write_file_from<R: AsyncRead + Unpin>(
        &self,
        req: WriteFileRequest,
        src: &mut R,
    ) -> Result<u64, ClientError> {
        let path = req.path.clone();
        let mut stream = self.start(Request::WriteFile(req)).await?;
        let read_error =
            |e: std::io::Error| ClientError::Limit(format!("reading local data for {path}: {e}"));
        // Chunks are reused once written; the writer's bulk budget bounds how many are out.
        let pool = ChunkPool::new(MAX_CHUNK, BULK_BUDGET / MAX_CHUNK + 2);
        loop {
            // Each chunk is read into a buffer of its own and sent as is: the frame writer writes
            // it to the connection from there (the only copy on this side is the read itself).
            let mut buf = pool.take();
            buf.clear();
            let mut eof = false;
            while buf.len() < MAX_CHUNK {
                let room = MAX_CHUNK - buf.len();
                if src
                    .read_buf(&mut (&mut buf).limit(room))
                    .await
                    .map_err(read_error)?
                    == 0
                {
                    eof = true;
                    break;
                }
            }
            if !buf.is_empty() {
                stream.send_input_chunk(pool.share(buf)).await?;
            }
            if eof {
                break;
            }
        }
        stream.end_input().await?;
        match stream.next().await? {
            Some(Reply::Written { bytes }) => Ok(bytes),
            Some(other) => Err(ClientError::Protocol(format!(
                "write {path}: unexpected {} reply",
                other.kind()
            ))),
            None => Err(ClientError::Protocol(format!(
                "write {path}: stream ended early"
            ))),
        }
    }

    /// Writes `data` to a guest file atomically.
    pub async fn write_file(&self, path: &str, mode: u32, data: &[u8]) -> Result<u64, ClientError> {
        let req = WriteFileRequest {
            path: path.to_owned(),
            mode,
            parents: false,
        };
        self.write_file_from(req, &mut &data[..]).await
    }

    pub async fn list_dir(&self, path: &str) -> Result<(Vec<DirEntry>, bool), ClientError> {
        expect(
            self.call(Request::ListDir {
                path: path.to_owned(),
            })
            .await?,
            "list-dir",
            |r| match r {
                Reply::DirListing { entries, truncated } => Some((entries, truncated)),
                _ => None,
            },
        )
    }

    pub async fn stat(&self, path: &str, follow_symlinks: bool) -> Result<FileStat, ClientError> {
        expect(
            self.call(Request::Stat {
                path: path.to_owned(),
                follow_symlinks,
            })
            .await?,
            "stat",
            |r| match r {
                Reply::Stat(s) => Some(s),
                _ => None,
            },
        )
    }

    pub async fn mkdir(&self, path: &str, mode: u32, parents: bool) -> Result<(), ClientError> {
        let reply = self
            .call(Request::Mkdir {
                path: path.to_owned(),
                mode,
                parents,
            })
            .await?;
        expect(reply, "mkdir", |r| matches!(r, Reply::Done).then_some(()))
    }

    pub async fn remove(&self, path: &str, recursive: bool) -> Result<(), ClientError> {
        let reply = self
            .call(Request::Remove {
                path: path.to_owned(),
                recursive,
            })
            .await?;
        expect(reply, "remove", |r| matches!(r, Reply::Done).then_some(()))
    }

    pub async fn info(&self) -> Result<GuestInfo, ClientError> {
        expect(self.call(Request::Info).await?, "info", |r| match r {
            Reply::Info(i) => Some(i),
            _ => None,
        })
    }

    /// The denials the sandbox's seccomp policy recorded.
    pub async fn seccomp_audit(&self) -> Result<SeccompAudit, ClientError> {
        expect(
            self.call(Request::SeccompAudit).await?,
            "seccomp audit",
            |r| match r {
                Reply::SeccompAudit(a) => Some(a),
                _ => None,
            },
        )
    }

    /// Gives the guest kernel fresh entropy and has it reseed its CSPRNG (see
    /// [`Request::Reseed`]). Returns once the guest has done both.
    pub async fn reseed(&self, entropy: Vec<u8>) -> Result<(), ClientError> {
        expect(
            self.call(Request::Reseed { entropy }).await?,
            "reseed",
            |r| matches!(r, Reply::Done).then_some(()),
        )
    }

    /// Sets the guest's wall clock to `unix_nanos` (see [`Request::SetClock`]).
    pub async fn set_clock(&self, unix_nanos: u64) -> Result<(), ClientError> {
        expect(
            self.call(Request::SetClock { unix_nanos }).await?,
            "set-clock",
            |r| matches!(r, Reply::Done).then_some(()),
        )
    }

    /// Asks the agent to stop (a VM powers off). Returns once the agent has acknowledged.
    pub async fn shutdown(&self) -> Result<(), ClientError> {
        expect(self.call(Request::Shutdown).await?, "shutdown", |r| {
            matches!(r, Reply::Done).then_some(())
        })
    }
}

fn expect<T>(
    reply: Reply,
    what: &str,
    pick: impl FnOnce(Reply) -> Option<T>,
) -> Result<T, ClientError> {
    let kind = reply.kind();
    pick(reply).ok_or_else(|| ClientError::Protocol(format!("{what}: unexpected {kind} reply")))
}
