//! The write half of a connection: frames are encoded by whoever sends them (so an encoding error
//! reaches that caller) and queued to one writer task that owns the socket's write half, batches
//! small frames into one write, and writes large ones without a copy.

use bytes::{Bytes, BytesMut};
use serde::Serialize;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::frame::{FrameError, MessageKind, encode_frame};

/// Frames at or over this size are written on their own rather than copied into a batch.
const BATCH_COPY_LIMIT: usize = 16 << 10;
/// Stop batching once this many bytes are waiting.
const BATCH_MAX: usize = 256 << 10;

/// Why a frame could not be queued.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error(transparent)]
    Encode(#[from] FrameError),
    /// The writer task has stopped: the connection is gone.
    #[error("connection writer has stopped")]
    Closed,
    /// `try_send` found the queue full.
    #[error("connection write queue is full")]
    Full,
}

/// A cloneable handle that encodes frames and queues them for the writer task.
#[derive(Debug, Clone)]
pub struct FrameSender {
    tx: mpsc::Sender<Bytes>,
    max_frame_len: usize,
}

impl FrameSender {
    /// Encodes and queues one frame, waiting for queue space (the queue is bounded).
    pub async fn send<T: Serialize + MessageKind>(
        &self,
        id: u64,
        body: &T,
    ) -> Result<(), SendError> {
        let frame = self.encode(id, body)?;
        self.tx.send(frame).await.map_err(|_| SendError::Closed)
    }

    /// Queues one frame without waiting; fails if the queue is full or closed.
    pub fn try_send<T: Serialize + MessageKind>(&self, id: u64, body: &T) -> Result<(), SendError> {
        let frame = self.encode(id, body)?;
        self.tx.try_send(frame).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => SendError::Full,
            mpsc::error::TrySendError::Closed(_) => SendError::Closed,
        })
    }

    /// Like [`FrameSender::send`] from a thread that is not an async task.
    pub fn blocking_send<T: Serialize + MessageKind>(
        &self,
        id: u64,
        body: &T,
    ) -> Result<(), SendError> {
        let frame = self.encode(id, body)?;
        self.tx.blocking_send(frame).map_err(|_| SendError::Closed)
    }

    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    fn encode<T: Serialize + MessageKind>(&self, id: u64, body: &T) -> Result<Bytes, FrameError> {
        let mut buf = BytesMut::with_capacity(64);
        encode_frame(id, body, &mut buf, self.max_frame_len)?;
        Ok(buf.freeze())
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
    (FrameSender { tx, max_frame_len }, run_writer(io, rx))
}

async fn run_writer<W: AsyncWrite + Unpin>(
    mut io: W,
    mut rx: mpsc::Receiver<Bytes>,
) -> Result<(), FrameError> {
    let mut batch = BytesMut::with_capacity(BATCH_MAX);
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(frame) = next.take() {
            if frame.len() >= BATCH_COPY_LIMIT {
                if !batch.is_empty() {
                    io.write_all(&batch).await?;
                    batch.clear();
                }
                io.write_all(&frame).await?;
            } else {
                batch.extend_from_slice(&frame);
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
