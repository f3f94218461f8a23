//! The host side of a connection: many requests in flight on one connection, replies matched by id.
//!
//! One reader task owns the read half and its one buffer for the life of the connection (a
//! `FramedRead`); it routes every reply to the stream whose id it carries. One writer task owns
//! the write half. Callers hold [`ReplyStream`]s. When the connection ends for any reason every
//! open stream fails promptly with the reason; every wait for a reply has a deadline.
//!
//! Backpressure: each stream buffers a bounded number of replies; a stream whose consumer falls
//! behind makes the reader wait, which stalls the connection rather than growing memory.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_util::codec::FramedRead;

use crate::frame::{FrameCodec, Incoming, MAX_CHUNK, MAX_FRAME_LEN};
use crate::handshake::{Hello, HelloReply, MAX_VERSION, MIN_VERSION};
use crate::message::{ErrorCode, ErrorReply, Reply, Request};
use crate::writer::{FrameSender, SendError, frame_writer};

/// Errors a caller of the client sees.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// The connection is gone; the message says why (agent closed it, I/O error, bad frame).
    #[error("agent connection closed: {0}")]
    Closed(String),
    /// No reply arrived in time.
    #[error("no reply to {what} within {after:?}")]
    Timeout { what: &'static str, after: Duration },
    /// The agent does not speak a version we speak, or is not a LuminaGuard agent.
    #[error("agent refused the handshake: {0}")]
    Incompatible(String),
    /// The agent answered the request with an error.
    #[error("agent error ({}): {}", code_name(.0.code), .0.message)]
    Remote(ErrorReply),
    /// The agent sent something the protocol does not allow here.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// A caller-side limit: a chunk over the frame limit, a file over the size asked for.
    #[error("{0}")]
    Limit(String),
}

fn code_name(code: ErrorCode) -> String {
    format!("{code:?}")
}

impl ClientError {
    /// The agent's error code, when the agent answered with an error.
    pub fn remote_code(&self) -> Option<ErrorCode> {
        match self {
            Self::Remote(e) => Some(e.code),
            _ => None,
        }
    }
}

/// Tunables; the defaults suit an agent on the same machine.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Deadline for the handshake.
    pub handshake_timeout: Duration,
    /// Deadline for each reply of an ordinary request (and each chunk of a read).
    pub request_timeout: Duration,
    /// Exec timeout sent when a request names none, so every exec, and every wait on it, ends.
    pub default_exec_timeout: Duration,
    /// Streams open at once; more wait for a slot.
    pub max_in_flight: usize,
    /// Replies buffered per stream before the reader waits for the consumer.
    pub stream_buffer: usize,
    /// Frames queued for the writer.
    pub write_queue: usize,
    pub max_frame_len: usize,
    /// Announced in the handshake.
    pub software: String,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            default_exec_timeout: Duration::from_secs(300),
            max_in_flight: 16_384,
            stream_buffer: 64,
            write_queue: 1024,
            max_frame_len: MAX_FRAME_LEN,
            software: format!("luminaguard-host/{}", env!("CARGO_PKG_VERSION")),
        }
    }
}

/// What the agent said about itself in the handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    pub version: u16,
    pub capabilities: Vec<String>,
    pub software: String,
}

/// Routing table shared by callers and the reader task.
#[derive(Debug, Default)]
struct Routes {
    streams: HashMap<u64, mpsc::Sender<Reply>>,
    /// Set once the connection is gone; new streams fail with it.
    closed: Option<String>,
}

#[derive(Debug)]
struct Shared {
    sender: FrameSender,
    routes: Arc<Mutex<Routes>>,
    next_id: AtomicU64,
    slots: Arc<Semaphore>,
    opts: ClientOptions,
    peer: PeerInfo,
    tasks: [JoinHandle<()>; 2],
}

impl Drop for Shared {
    fn drop(&mut self) {
        // The last handle is gone: stop reading. The writer ends by itself once its queue closes,
        // after flushing what was queued.
        self.tasks[0].abort();
    }
}

fn lock(routes: &Mutex<Routes>) -> MutexGuard<'_, Routes> {
    // A panic while holding this lock cannot leave the map inconsistent (single inserts and
    // removes), so a poisoned lock is still usable.
    routes.lock().unwrap_or_else(|p| p.into_inner())
}

/// A connection to a guest agent. Cheap to clone; all clones share the connection.
#[derive(Debug, Clone)]
pub struct Client {
    shared: Arc<Shared>,
}

impl Client {
    /// Handshakes over a bidirectional stream (a Unix socket, a vsock stream, …).
    pub async fn connect<S>(io: S, opts: ClientOptions) -> Result<Self, ClientError>
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (r, w) = tokio::io::split(io);
        Self::connect_split(r, w, opts).await
    }

    /// Handshakes over separate read and write halves.
    pub async fn connect_split<R, W>(
        reader: R,
        writer: W,
        opts: ClientOptions,
    ) -> Result<Self, ClientError>
    where
        R: AsyncRead + Send + Unpin + 'static,
        W: AsyncWrite + Send + Unpin + 'static,
    {
        let routes = Arc::new(Mutex::new(Routes::default()));
        let (sender, writer_fut) = frame_writer(writer, opts.max_frame_len, opts.write_queue);
        let writer_routes = routes.clone();
        let writer_task = tokio::spawn(async move {
            let reason = match writer_fut.await {
                Ok(()) => "client closed the connection".to_owned(),
                Err(e) => format!("write failed: {e}"),
            };
            close_all(&writer_routes, reason);
        });
        let framed = FramedRead::with_capacity(
            reader,
            FrameCodec::<Reply, ()>::with_max_frame_len(opts.max_frame_len),
            64 << 10,
        );
        let reader_task = tokio::spawn(read_loop(framed, routes.clone()));

        // The handshake is stream 0.
        let (tx, mut rx) = mpsc::channel(1);
        lock(&routes).streams.insert(0, tx);
        let hello = Request::Hello(Hello::ours(opts.software.clone()));
        let handshake = async {
            sender.send(0, &hello).await.map_err(send_error)?;
            match rx.recv().await {
                Some(Reply::Hello(HelloReply::Accepted { version, .. }))
                    if !(MIN_VERSION..=MAX_VERSION).contains(&version) =>
                {
                    Err(ClientError::Incompatible(format!(
                        "agent accepted protocol version {version}, which this host does not speak \
                         (host {MIN_VERSION}..={MAX_VERSION})"
                    )))
                }
                Some(Reply::Hello(HelloReply::Accepted {
                    version,
                    capabilities,
                    software,
                })) => Ok(PeerInfo {
                    version,
                    capabilities,
                    software,
                }),
                Some(Reply::Hello(HelloReply::Refused {
                    reason,
                    min_version,
                    max_version,
                })) => Err(ClientError::Incompatible(format!(
                    "{reason} (agent speaks {min_version}..={max_version}, host {MIN_VERSION}..={MAX_VERSION})"
                ))),
                Some(Reply::Error(e)) => Err(ClientError::Remote(e)),
                Some(other) => Err(ClientError::Protocol(format!(
                    "expected a hello reply, got {}",
                    other.kind()
                ))),
                None => Err(ClientError::Closed(closed_reason(&routes))),
            }
        };
        let result = tokio::time::timeout(opts.handshake_timeout, handshake).await;
        lock(&routes).streams.remove(&0);
        let peer = match result {
            Ok(Ok(peer)) => peer,
            Ok(Err(e)) => {
                reader_task.abort();
                return Err(e);
            }
            Err(_) => {
                reader_task.abort();
                return Err(ClientError::Timeout {
                    what: "hello",
                    after: opts.handshake_timeout,
                });
            }
        };
        let slots = Arc::new(Semaphore::new(opts.max_in_flight.max(1)));
        Ok(Self {
            shared: Arc::new(Shared {
                sender,
                routes,
                next_id: AtomicU64::new(1),
                slots,
                opts,
                peer,
                tasks: [reader_task, writer_task],
            }),
        })
    }

    /// What the agent announced in the handshake.
    pub fn peer(&self) -> &PeerInfo {
        &self.shared.peer
    }

    pub fn options(&self) -> &ClientOptions {
        &self.shared.opts
    }

    /// Whether the connection has ended.
    pub fn is_closed(&self) -> bool {
        lock(&self.shared.routes).closed.is_some()
    }

    /// Opens a stream by sending `request`. Stream-control messages (`Input`, `InputEnd`,
    /// `Cancel`) go through the stream instead.
    pub async fn start(&self, request: Request) -> Result<ReplyStream, ClientError> {
        if request.is_stream_control() || matches!(request, Request::Hello(_)) {
            return Err(ClientError::Protocol(format!(
                "{} cannot open a stream",
                request.kind()
            )));
        }
        let timeout = self.shared.opts.request_timeout;
        let permit = tokio::time::timeout(timeout, self.shared.slots.clone().acquire_owned())
            .await
            .map_err(|_| ClientError::Timeout {
                what: "a free request slot",
                after: timeout,
            })?
            .map_err(|_| ClientError::Closed("client is shutting down".into()))?;
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(self.shared.opts.stream_buffer.max(1));
        {
            let mut routes = lock(&self.shared.routes);
            if let Some(reason) = &routes.closed {
                return Err(ClientError::Closed(reason.clone()));
            }
            routes.streams.insert(id, tx);
        }
        let stream = ReplyStream {
            id,
            rx,
            client: self.clone(),
            done: false,
            _slot: permit,
        };
        match tokio::time::timeout(timeout, self.shared.sender.send(id, &request)).await {
            Ok(Ok(())) => Ok(stream),
            Ok(Err(e)) => Err(send_error(e)),
            Err(_) => Err(ClientError::Timeout {
                what: "queueing a request",
                after: timeout,
            }),
        }
    }

    /// Sends a request and waits for its single terminal reply.
    pub async fn call(&self, request: Request) -> Result<Reply, ClientError> {
        let what = request.kind();
        let mut stream = self.start(request).await?;
        let reply = stream.next().await?;
        match reply {
            Some(r) if r.is_terminal() => Ok(r),
            Some(r) => Err(ClientError::Protocol(format!(
                "{what}: unexpected {} reply",
                r.kind()
            ))),
            None => Err(ClientError::Protocol(format!(
                "{what}: stream ended without a reply"
            ))),
        }
    }

    async fn send_control(&self, id: u64, msg: &Request) -> Result<(), ClientError> {
        let timeout = self.shared.opts.request_timeout;
        match tokio::time::timeout(timeout, self.shared.sender.send(id, msg)).await {
            Ok(r) => r.map_err(send_error),
            Err(_) => Err(ClientError::Timeout {
                what: "queueing stream input",
                after: timeout,
            }),
        }
    }
}

fn send_error(e: SendError) -> ClientError {
    match e {
        SendError::Closed | SendError::Full => ClientError::Closed(e.to_string()),
        SendError::Encode(e) => ClientError::Limit(e.to_string()),
    }
}

fn closed_reason(routes: &Mutex<Routes>) -> String {
    lock(routes)
        .closed
        .clone()
        .unwrap_or_else(|| "stream dropped".to_owned())
}

fn close_all(routes: &Mutex<Routes>, reason: String) {
    let mut r = lock(routes);
    if r.closed.is_none() {
        r.closed = Some(reason);
    }
    // Dropping every sender wakes every waiting stream, which then reads the reason.
    r.streams.clear();
}

async fn read_loop<R: AsyncRead + Unpin>(
    mut framed: FramedRead<R, FrameCodec<Reply, ()>>,
    routes: Arc<Mutex<Routes>>,
) {
    let reason = loop {
        let (id, reply) = match framed.next().await {
            Some(Ok(Incoming::Frame(f))) => (f.id, f.body),
            Some(Ok(Incoming::Malformed { id, error })) => (
                id,
                Reply::Error(ErrorReply::new(
                    ErrorCode::Malformed,
                    format!("agent sent an undecodable reply: {error}"),
                )),
            ),
            Some(Err(e)) => break format!("{e}"),
            None => break "agent closed the connection".to_owned(),
        };
        let terminal = reply.is_terminal();
        let route = {
            let mut r = lock(&routes);
            if terminal {
                r.streams.remove(&id)
            } else {
                r.streams.get(&id).cloned()
            }
        };
        match route {
            // A closed receiver means the caller gave up on the stream; that is not an error.
            Some(tx) => drop(tx.send(reply).await),
            None if id == 0 => {
                if let Reply::Error(e) = &reply {
                    tracing::warn!(code = ?e.code, message = %e.message, "agent reported a connection error");
                }
            }
            None => tracing::debug!(
                id,
                kind = reply.kind(),
                "reply for a stream that is no longer open"
            ),
        }
    };
    tracing::debug!(%reason, "agent connection reader stopped");
    close_all(&routes, reason);
}

/// One open request: its replies, and a way to send it input or cancel it.
#[derive(Debug)]
pub struct ReplyStream {
    id: u64,
    rx: mpsc::Receiver<Reply>,
    client: Client,
    done: bool,
    _slot: OwnedSemaphorePermit,
}

impl ReplyStream {
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The next reply within the client's request timeout. `Ok(None)` after the terminal reply;
    /// an agent [`Reply::Error`] becomes [`ClientError::Remote`].
    pub async fn next(&mut self) -> Result<Option<Reply>, ClientError> {
        let timeout = self.client.shared.opts.request_timeout;
        self.next_within(timeout).await
    }

    /// Like [`ReplyStream::next`] with an explicit deadline.
    pub async fn next_within(&mut self, timeout: Duration) -> Result<Option<Reply>, ClientError> {
        self.next_before(Instant::now() + timeout, timeout).await
    }

    pub(crate) async fn next_before(
        &mut self,
        deadline: Instant,
        budget: Duration,
    ) -> Result<Option<Reply>, ClientError> {
        if self.done {
            return Ok(None);
        }
        let reply = match tokio::time::timeout_at(deadline.into(), self.rx.recv()).await {
            Ok(Some(r)) => r,
            Ok(None) => {
                self.done = true;
                return Err(ClientError::Closed(closed_reason(
                    &self.client.shared.routes,
                )));
            }
            Err(_) => {
                return Err(ClientError::Timeout {
                    what: "a reply",
                    after: budget,
                });
            }
        };
        if reply.is_terminal() {
            self.done = true;
        }
        match reply {
            Reply::Error(e) => Err(ClientError::Remote(e)),
            r => Ok(Some(r)),
        }
    }

    /// Sends bytes to the stream (exec stdin, file contents), split into frame-sized chunks.
    /// Copies `data` once; a caller that owns its data uses [`ReplyStream::send_input_chunk`].
    pub async fn send_input(&self, data: &[u8]) -> Result<(), ClientError> {
        for chunk in data.chunks(MAX_CHUNK) {
            self.client
                .send_control(self.id, &Request::Input(Bytes::copy_from_slice(chunk)))
                .await?;
        }
        Ok(())
    }

    /// Sends one owned chunk of at most [`MAX_CHUNK`] bytes without copying it: it is written to
    /// the connection straight from `chunk`.
    pub async fn send_input_chunk(&self, chunk: impl Into<Bytes>) -> Result<(), ClientError> {
        let chunk = chunk.into();
        if chunk.len() > MAX_CHUNK {
            return Err(ClientError::Limit(format!(
                "input chunk of {} bytes exceeds {MAX_CHUNK}",
                chunk.len()
            )));
        }
        self.client
            .send_control(self.id, &Request::Input(chunk))
            .await
    }

    /// Ends the stream's input.
    pub async fn end_input(&self) -> Result<(), ClientError> {
        self.client.send_control(self.id, &Request::InputEnd).await
    }

    /// Asks the agent to abandon the request; its terminal reply still follows.
    pub async fn cancel(&self) -> Result<(), ClientError> {
        self.client.send_control(self.id, &Request::Cancel).await
    }

    /// Whether the terminal reply has been received.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// A handle that sends this stream's input from elsewhere (another task) while its replies
    /// are read here.
    pub fn input(&self) -> InputHandle {
        InputHandle {
            id: self.id,
            client: self.client.clone(),
        }
    }
}

/// Sends input to one open stream (see [`ReplyStream::input`]). Input sent after the stream
/// ended is dropped by the agent.
#[derive(Debug, Clone)]
pub struct InputHandle {
    id: u64,
    client: Client,
}

impl InputHandle {
    /// Sends bytes, split into frame-sized chunks.
    pub async fn send(&self, data: &[u8]) -> Result<(), ClientError> {
        for chunk in data.chunks(MAX_CHUNK) {
            self.client
                .send_control(self.id, &Request::Input(Bytes::copy_from_slice(chunk)))
                .await?;
        }
        Ok(())
    }

    /// Ends the stream's input.
    pub async fn end(&self) -> Result<(), ClientError> {
        self.client.send_control(self.id, &Request::InputEnd).await
    }
}

impl Drop for ReplyStream {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        // Abandoned mid-stream: stop routing to it and tell the agent, best effort (if the queue
        // is full the agent will still clean up when the connection closes).
        lock(&self.client.shared.routes).streams.remove(&self.id);
        let _ = self
            .client
            .shared
            .sender
            .try_send(self.id, &Request::Cancel);
    }
}
