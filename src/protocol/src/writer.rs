//! The write half of a connection: frames are encoded by whoever sends them (so an encoding error
//! reaches that caller) and queued to one writer task that owns the socket's write half, batches
//! small frames into one write, and writes large ones — header and bulk trailer — with one
//! vectored write and no copy.
//!
//! Two bounds apply to what is queued: a number of frames, and a number of trailer bytes
//! ([`BULK_BUDGET`]). The second keeps a fast producer (a file read from memory or a page cache)
//! from queueing a whole file ahead of a slower socket: memory stays bounded, and the few
//! chunk-sized buffers in flight are reused by the allocator while still in cache.

use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use bytes::{Buf, Bytes, BytesMut};
use serde::Serialize;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use crate::frame::{FrameError, Message, encode_frame_parts};

/// Frames at or over this size are written on their own rather than copied into a batch.
const BATCH_COPY_LIMIT: usize = 16 << 10;
/// Stop batching once this many bytes are waiting.
const BATCH_MAX: usize = 256 << 10;
/// Trailer bytes (bulk data) queued for the writer at most, per connection. A frame's trailer
/// takes its length from this budget (at most the whole budget) until it has been written.
pub const BULK_BUDGET: usize = 8 << 20;

/// Why a frame could not be queued.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error(transparent)]
    Encode(#[from] FrameError),
    /// The writer task has stopped: the connection is gone.
    #[error("connection writer has stopped")]
    Closed,
    /// `try_send` found the queue (or the bulk budget) full.
    #[error("connection write queue is full")]
    Full,
}

/// One encoded frame on its way to the writer.
#[derive(Debug)]
struct Queued {
    /// Length, id and postcard header.
    head: Bytes,
    /// Bulk data, written right after `head` (often empty).
    trailer: Bytes,
    /// The trailer's share of [`BULK_BUDGET`], returned once the frame is written.
    _budget: Option<OwnedSemaphorePermit>,
}

/// A cloneable handle that encodes frames and queues them for the writer task.
#[derive(Debug, Clone)]
pub struct FrameSender {
    tx: mpsc::Sender<Queued>,
    budget: Arc<Semaphore>,
    max_frame_len: usize,
}

impl FrameSender {
    /// Encodes and queues one frame, waiting for queue space (the queue is bounded).
    pub async fn send<T: Serialize + Message>(&self, id: u64, body: &T) -> Result<(), SendError> {
        let (head, trailer) = self.encode(id, body)?;
        let budget = match budget_for(&trailer) {
            0 => None,
            n => Some(
                self.budget
                    .clone()
                    .acquire_many_owned(n)
                    .await
                    .map_err(|_| SendError::Closed)?,
            ),
        };
        self.tx
            .send(Queued {
                head,
                trailer,
                _budget: budget,
            })
            .await
            .map_err(|_| SendError::Closed)
    }

    /// Queues one frame without waiting; fails if the queue or the bulk budget is full, or the
    /// connection is closed.
    pub fn try_send<T: Serialize + Message>(&self, id: u64, body: &T) -> Result<(), SendError> {
        let (head, trailer) = self.encode(id, body)?;
        let budget = match budget_for(&trailer) {
            0 => None,
            n => Some(
                self.budget
                    .clone()
                    .try_acquire_many_owned(n)
                    .map_err(|_| SendError::Full)?,
            ),
        };
        self.tx
            .try_send(Queued {
                head,
                trailer,
                _budget: budget,
            })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => SendError::Full,
                mpsc::error::TrySendError::Closed(_) => SendError::Closed,
            })
    }

    /// Like [`FrameSender::send`] from a thread that is not an async task (a blocking-pool
    /// thread of the runtime the writer runs on, or any thread outside a runtime).
    ///
    /// # Panics
    ///
    /// When called from an async task, like [`mpsc::Sender::blocking_send`] (which this uses).
    pub fn blocking_send<T: Serialize + Message>(
        &self,
        id: u64,
        body: &T,
    ) -> Result<(), SendError> {
        let (head, trailer) = self.encode(id, body)?;
        let budget = match budget_for(&trailer) {
            0 => None,
            n => Some(blocking_acquire(&self.budget, n)?),
        };
        self.tx
            .blocking_send(Queued {
                head,
                trailer,
                _budget: budget,
            })
            .map_err(|_| SendError::Closed)
    }

    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    fn encode<T: Serialize + Message>(
        &self,
        id: u64,
        body: &T,
    ) -> Result<(Bytes, Bytes), FrameError> {
        let mut head = BytesMut::with_capacity(64);
        let trailer = encode_frame_parts(id, body, &mut head, self.max_frame_len)?;
        Ok((head.freeze(), trailer))
    }
}

/// Permits a trailer takes from the bulk budget.
fn budget_for(trailer: &Bytes) -> u32 {
    u32::try_from(trailer.len().min(BULK_BUDGET)).unwrap_or(u32::MAX)
}

/// Waits for `n` permits from a thread that is not an async task, parking the thread.
fn blocking_acquire(sem: &Arc<Semaphore>, n: u32) -> Result<OwnedSemaphorePermit, SendError> {
    block_on(sem.clone().acquire_many_owned(n)).map_err(|_| SendError::Closed)
}

/// Wakes a parked thread.
struct ThreadWaker(std::thread::Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// Runs a future that needs no runtime (a semaphore acquire) to completion on this thread.
fn block_on<F: Future>(fut: F) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return out;
        }
        // Spurious unparks just poll again.
        std::thread::park();
    }
}

/// Creates the sender handle and the writer future. Run the future as a task; it ends with `Ok`
/// once every sender is dropped (after flushing and shutting the write half down), or with the
/// I/O error that broke the connection.
pub fn frame_writer<W>(
    io: W,
    max_frame_len: usize,
    queue: usize,
) -> (
    FrameSender,
    impl Future<Output = Result<(), FrameError>> + Send,
)
where
    W: AsyncWrite + Unpin + Send,
{
    let (tx, rx) = mpsc::channel(queue.max(1));
    let sender = FrameSender {
        tx,
        budget: Arc::new(Semaphore::new(BULK_BUDGET)),
        max_frame_len,
    };
    (sender, run_writer(io, rx))
}

async fn run_writer<W: AsyncWrite + Unpin>(
    mut io: W,
    mut rx: mpsc::Receiver<Queued>,
) -> Result<(), FrameError> {
    let mut batch = BytesMut::with_capacity(BATCH_MAX);
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(frame) = next.take() {
            if frame.head.len() + frame.trailer.len() >= BATCH_COPY_LIMIT {
                // Whatever is batched, then this frame's header and trailer: one vectored write
                // (tokio's `write_all_buf` uses `write_vectored` where the stream supports it).
                let mut parts = (&mut batch).chain(frame.head).chain(frame.trailer);
                io.write_all_buf(&mut parts).await?;
                batch.clear();
            } else {
                batch.extend_from_slice(&frame.head);
                batch.extend_from_slice(&frame.trailer);
            }
            if batch.len() < BATCH_MAX {
                next = rx.try_recv().ok();
            }
        }
        if !batch.is_empty() {
            io.write_all(&batch).await?;
            batch.clear();
        }
        io.flush().await?;
    }
    io.shutdown().await?;
    Ok(())
}
