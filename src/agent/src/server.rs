//! One connection from the host: handshake, then many concurrent requests, each its own task.
//!
//! The read half is owned by one `FramedRead` for the life of the connection. Each request runs
//! in a task that sends its replies through the shared writer; `Input`/`InputEnd` are routed to
//! the open stream by id, `Cancel` fires that stream's token. Hostile input never takes the
//! agent down: a payload that does not decode gets an error on its id and the connection goes
//! on; a frame that breaks framing (bad length) gets an error on id 0 and the connection is
//! closed; other connections are unaffected throughout.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use luminaguard_protocol::handshake::{self, HelloReply, capability};
use luminaguard_protocol::message::{ErrorCode, ErrorReply, Reply, Request};
use luminaguard_protocol::{
    FrameCodec, FrameError, FrameSender, Incoming, MAX_FRAME_LEN, frame_writer,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::reaper::Reaper;

/// Requests running at once per connection; more wait (the socket stops being read).
const MAX_IN_FLIGHT: usize = 1024;
/// Input chunks buffered per stream before the connection reader waits.
const INPUT_BUFFER: usize = 4;
/// Frames queued for the connection's writer.
const WRITE_QUEUE: usize = 256;
/// How long a closing connection waits for its requests to wind down.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Input for an open stream.
#[derive(Debug)]
pub enum StreamInput {
    /// A slice of the connection's read buffer: the bytes are not copied on their way here.
    Data(Bytes),
    End,
}

/// What a request task gets of its stream: input, and a token fired by `Cancel` or by the
/// connection closing.
#[derive(Debug)]
pub struct StreamInputRx {
    pub rx: mpsc::Receiver<StreamInput>,
    pub cancel: CancellationToken,
}

#[derive(Debug)]
struct OpenStream {
    input: mpsc::Sender<StreamInput>,
    cancel: CancellationToken,
}

/// State shared by every connection of one agent.
#[derive(Debug)]
pub struct AgentContext {
    pub reaper: Arc<Reaper>,
    /// What confines each command (a process sandbox's Landlock ruleset, its OOM preference);
    /// `None` inside a microVM, whose boundary is the VM.
    pub confine: Option<crate::exec::Confinement>,
    /// Fired to stop the agent (SIGTERM, `Shutdown`).
    pub shutdown: CancellationToken,
}

type Streams = Arc<Mutex<HashMap<u64, OpenStream>>>;

fn lock(s: &Streams) -> MutexGuard<'_, HashMap<u64, OpenStream>> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

fn capabilities() -> Vec<String> {
    [
        capability::EXEC,
        capability::EXEC_STDIN,
        capability::FILES,
        capability::INFO,
        capability::SHUTDOWN,
        capability::SECCOMP_AUDIT,
        capability::RESEED,
        capability::SET_CLOCK,
        capability::REVIEW,
    ]
    .map(String::from)
    .to_vec()
}

/// Serves one connection until the host closes it, it breaks, or the agent shuts down.
pub async fn serve_connection<S>(io: S, ctx: Arc<AgentContext>)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (r, w) = tokio::io::split(io);
    let (out, writer) = frame_writer(w, MAX_FRAME_LEN, WRITE_QUEUE);
    let writer = tokio::spawn(writer);
    let mut framed =
        FramedRead::with_capacity(r, FrameCodec::<Request, Reply>::default(), 64 << 10);
    let streams: Streams = Arc::default();
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let tasks = TaskTracker::new();
    let conn_cancel = ctx.shutdown.child_token();
    let mut handshaken = false;

    loop {
        let item = tokio::select! {
            _ = conn_cancel.cancelled() => break,
            item = framed.next() => item,
        };
        let frame = match item {
            None => break,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "closing connection: framing error");
                let code = match e {
                    FrameError::TooLarge { .. } => ErrorCode::FrameTooLarge,
                    _ => ErrorCode::Malformed,
                };
                let _ = out
                    .send(0, &Reply::Error(ErrorReply::new(code, e.to_string())))
                    .await;
                break;
            }
            Some(Ok(Incoming::Malformed { id, error })) => {
                tracing::debug!(id, %error, "undecodable request");
                // Never terminate an open stream (or the handshake stream) on someone's garbage.
                let target = if id == 0 || lock(&streams).contains_key(&id) {
                    0
                } else {
                    id
                };
                let _ = out
                    .send(
                        target,
                        &Reply::Error(ErrorReply::new(
                            ErrorCode::Malformed,
                            format!("frame {id}: {error}"),
                        )),
                    )
                    .await;
                continue;
            }
            Some(Ok(Incoming::Frame(f))) => f,
        };
        let (id, req) = (frame.id, frame.body);

        if let Request::Hello(hello) = &req {
            let reply = if handshaken {
                HelloReply::Refused {
                    reason: "duplicate hello".into(),
                    min_version: handshake::MIN_VERSION,
                    max_version: handshake::MAX_VERSION,
                }
            } else {
                match handshake::negotiate(hello, handshake::MIN_VERSION, handshake::MAX_VERSION) {
                    Ok(version) => {
                        handshaken = true;
                        tracing::debug!(version, peer = %hello.software, "handshake accepted");
                        HelloReply::Accepted {
                            version,
                            capabilities: capabilities(),
                            software: format!("luminaguard-agent/{}", env!("CARGO_PKG_VERSION")),
                        }
                    }
                    Err(reason) => HelloReply::Refused {
                        reason,
                        min_version: handshake::MIN_VERSION,
                        max_version: handshake::MAX_VERSION,
                    },
                }
            };
            let refused = matches!(reply, HelloReply::Refused { .. });
            let _ = out.send(0, &Reply::Hello(reply)).await;
            if refused {
                break;
            }
            continue;
        }
        if !handshaken {
            let _ = out
                .send(
                    id,
                    &Reply::Error(ErrorReply::new(
                        ErrorCode::HandshakeRequired,
                        format!("{} before hello", req.kind()),
                    )),
                )
                .await;
            continue;
        }
        match req {
            Request::Input(data) => route_input(&streams, id, StreamInput::Data(data)).await,
            Request::InputEnd => route_input(&streams, id, StreamInput::End).await,
            Request::Cancel => {
                // Fire the token and close the stream's input, so a request blocked waiting for
                // input wakes up too.
                if let Some(s) = lock(&streams).remove(&id) {
                    s.cancel.cancel();
                }
            }
            req => {
                let existing = id == 0 || lock(&streams).contains_key(&id);
                if existing {
                    let msg = format!("{} on id {id}, which is reserved or still open", req.kind());
                    let _ = out
                        .send(
                            0,
                            &Reply::Error(ErrorReply::new(ErrorCode::BadStreamId, msg)),
                        )
                        .await;
                    continue;
                }
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    break;
                };
                let (tx, rx) = mpsc::channel(INPUT_BUFFER);
                let cancel = conn_cancel.child_token();
                lock(&streams).insert(
                    id,
                    OpenStream {
                        input: tx,
                        cancel: cancel.clone(),
                    },
                );
                let (ctx, out, streams) = (ctx.clone(), out.clone(), streams.clone());
                tasks.spawn(async move {
                    let stops_agent = matches!(req, Request::Shutdown);
                    let reply = dispatch(&ctx, id, req, &out, StreamInputRx { rx, cancel })
                        .await
                        .unwrap_or_else(Reply::Error);
                    lock(&streams).remove(&id);
                    let _ = out.send(id, &reply).await;
                    drop(slot);
                    if stops_agent {
                        // Only after the acknowledgement is queued: the connection closes next.
                        tracing::info!("shutdown requested by the host");
                        ctx.shutdown.cancel();
                    }
                });
            }
        }
    }

    // Host gone, framing broken, or agent stopping: cancel what runs (closing every stream's
    // input), let it report, close.
    conn_cancel.cancel();
    lock(&streams).clear();
    tasks.close();
    if tokio::time::timeout(DRAIN_TIMEOUT, tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            "requests did not finish within {DRAIN_TIMEOUT:?} of the connection closing"
        );
    }
    drop(out);
    match tokio::time::timeout(DRAIN_TIMEOUT, writer).await {
        Ok(Ok(Err(e))) => tracing::debug!(error = %e, "connection writer ended with an error"),
        Err(_) => tracing::warn!("connection writer did not finish"),
        _ => {}
    }
}

async fn route_input(streams: &Streams, id: u64, input: StreamInput) {
    let tx = lock(streams).get(&id).map(|s| s.input.clone());
    match tx {
        // Waiting here is backpressure: a stream that cannot take more input stops the reader.
        Some(tx) => drop(tx.send(input).await),
        None => tracing::debug!(id, "input for a stream that is not open"),
    }
}

async fn dispatch(
    ctx: &AgentContext,
    id: u64,
    req: Request,
    out: &FrameSender,
    input: StreamInputRx,
) -> Result<Reply, ErrorReply> {
    match req {
        Request::Ping => Ok(Reply::Pong),
        Request::Exec(r) => {
            crate::exec::run(&ctx.reaper, ctx.confine.as_ref(), id, r, out, input).await
        }
        Request::ReadFile(r) => crate::files::read(r, id, out.clone(), input.cancel).await,
        Request::WriteFile(r) => crate::files::write(r, input).await,
        Request::ListDir { path } => crate::files::list(path).await,
        Request::Stat {
            path,
            follow_symlinks,
        } => crate::files::stat(path, follow_symlinks).await,
        Request::Mkdir {
            path,
            mode,
            parents,
        } => crate::files::mkdir(path, mode, parents).await,
        Request::Remove { path, recursive } => crate::files::remove(path, recursive).await,
        Request::Info => crate::info::info().await,
        Request::Shutdown => Ok(Reply::Done),
        // The record of a process sandbox's denials is kept by its host-side supervisor, which
        // the host reads; an agent keeps none.
        Request::SeccompAudit => Ok(Reply::SeccompAudit(Default::default())),
        Request::Reseed { entropy } => crate::entropy::reseed(entropy).await,
        Request::SetClock { unix_nanos } => crate::clock::set(unix_nanos),
        Request::ReviewSetup(r) => crate::review::setup(r, input).await,
        Request::ReviewExport(r) => crate::review::export(r, id, out.clone(), input.cancel).await,
        Request::Hello(_) | Request::Input(_) | Request::InputEnd | Request::Cancel => {
            Err(ErrorReply::new(
                ErrorCode::InvalidRequest,
                "stream-control message cannot open a stream",
            ))
        }
    }
}
