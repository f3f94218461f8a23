//! [`AuditLog`]: the cheap-to-clone handle callers append through, and the writer thread that
//! does group commit — every record queued while the previous fsync ran goes into the next
//! single write + fsync.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use crate::checkpoint::Checkpoint;
use crate::config::AuditConfig;
use crate::error::{AuditError, Result};
use crate::note::VerifierKey;
use crate::record::Actor;
use crate::writer::{Receipt, Writer};

/// The most records one group commit writes.
const MAX_BATCH: usize = 8192;

enum Cmd {
    Append(Actor, Value, oneshot::Sender<Result<Receipt>>),
    Checkpoint(oneshot::Sender<Result<Checkpoint>>),
    Close(oneshot::Sender<Result<Checkpoint>>),
}

/// A handle to an open audit log. Clones share one writer thread. Dropping every handle lets
/// the writer write a final checkpoint and stop; call [`AuditLog::close`] to wait for that.
#[derive(Clone, Debug)]
pub struct AuditLog {
    tx: mpsc::Sender<Cmd>,
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    dir: PathBuf,
    key: VerifierKey,
}

impl std::fmt::Debug for Cmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Cmd::Append(..) => "Append",
            Cmd::Checkpoint(_) => "Checkpoint",
            Cmd::Close(_) => "Close",
        })
    }
}

fn closed<T>(_: T) -> AuditError {
    AuditError::Closed(None)
}

impl AuditLog {
    /// Opens the log in `config.dir` (see [`AuditLog::open_blocking`]) without blocking the
    /// async runtime.
    pub async fn open(config: AuditConfig) -> Result<AuditLog> {
        tokio::task::spawn_blocking(move || AuditLog::open_blocking(config))
            .await
            .map_err(|e| AuditError::Closed(Some(format!("open task failed: {e}"))))?
    }

    /// Opens the log, creating it on first use: loads or creates the signing key, verifies the
    /// existing log (refusing one that does not verify), truncates a torn tail left by a crash
    /// and starts the writer thread. Needs no async runtime.
    pub fn open_blocking(config: AuditConfig) -> Result<AuditLog> {
        let capacity = config.queue_capacity;
        let writer = Writer::open(config.clone())?;
        let shared = Arc::new(Shared {
            dir: config.dir,
            key: writer.verifier(),
        });
        let (tx, rx) = mpsc::channel(capacity.max(1));
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || run(writer, rx))
            .map_err(|e| AuditError::io("spawn writer thread for", &shared.dir, e))?;
        Ok(AuditLog { tx, shared })
    }

    /// Appends a record and returns once it is durably written (fsync'd). Waits while the
    /// queue is full.
    pub async fn append(&self, actor: Actor, event: Value) -> Result<Receipt> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Cmd::Append(actor, event, reply))
            .await
            .map_err(closed)?;
        rx.await.map_err(closed)?
    }

    /// Queues a record — in order with every append made before this call returns — and
    /// returns once it is queued, with a receiver that answers when it is durable. For records
    /// of what already happened, whose caller need not wait for the disk. Waits while the
    /// queue is full.
    pub async fn enqueue(
        &self,
        actor: Actor,
        event: Value,
    ) -> Result<oneshot::Receiver<Result<Receipt>>> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Cmd::Append(actor, event, reply))
            .await
            .map_err(closed)?;
        Ok(rx)
    }

    /// [`AuditLog::append`] for synchronous callers (a CLI without a runtime, or
    /// `spawn_blocking`). Like tokio's own `blocking_*` calls it must not be called from
    /// async code (tokio panics there).
    pub fn append_blocking(&self, actor: Actor, event: Value) -> Result<Receipt> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .blocking_send(Cmd::Append(actor, event, reply))
            .map_err(closed)?;
        rx.blocking_recv().map_err(closed)?
    }

    /// Writes a signed checkpoint now (after the records queued before this call).
    pub async fn checkpoint(&self) -> Result<Checkpoint> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Cmd::Checkpoint(reply)).await.map_err(closed)?;
        rx.await.map_err(closed)?
    }

    /// Writes the final checkpoint and stops the writer; appends after this fail with
    /// [`AuditError::Closed`], from every clone.
    pub async fn close(&self) -> Result<Checkpoint> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Cmd::Close(reply)).await.map_err(closed)?;
        rx.await.map_err(closed)?
    }

    /// [`AuditLog::close`] for synchronous callers (not from async code).
    pub fn close_blocking(&self) -> Result<Checkpoint> {
        let (reply, rx) = oneshot::channel();
        self.tx.blocking_send(Cmd::Close(reply)).map_err(closed)?;
        rx.blocking_recv().map_err(closed)?
    }

    /// The key that verifies this log's checkpoints (also in `audit.pub` in its dir).
    pub fn verifier_key(&self) -> &VerifierKey {
        &self.shared.key
    }

    /// The audit directory.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }
}

/// The writer thread: waits for a command, drains everything queued behind it into one batch,
/// commits it, answers, repeats.
fn run(mut writer: Writer, mut rx: mpsc::Receiver<Cmd>) {
    let mut batch = Vec::new();
    let mut replies = Vec::new();
    loop {
        let Some(first) = rx.blocking_recv() else {
            if let Err(e) = writer.checkpoint() {
                tracing::warn!(error = %e, "final audit checkpoint failed");
            }
            return;
        };
        let mut control = None;
        let mut next = Some(first);
        while let Some(cmd) = next.take() {
            match cmd {
                Cmd::Append(actor, event, reply) => {
                    batch.push((actor, event));
                    replies.push(reply);
                    if batch.len() < MAX_BATCH {
                        next = rx.try_recv().ok();
                    }
                }
                other => control = Some(other),
            }
        }
        if !batch.is_empty() {
            let results = writer.append_batch(std::mem::take(&mut batch));
            for (reply, result) in replies.drain(..).zip(results) {
                let _ = reply.send(result);
            }
        }
        match control {
            Some(Cmd::Checkpoint(reply)) => {
                let _ = reply.send(writer.checkpoint());
            }
            Some(Cmd::Close(reply)) => {
                let _ = reply.send(writer.checkpoint());
                rx.close();
                while let Some(cmd) = rx.blocking_recv() {
                    refuse(cmd);
                }
                return;
            }
            Some(Cmd::Append(..)) | None => {}
        }
    }
}

fn refuse(cmd: Cmd) {
    match cmd {
        Cmd::Append(.., reply) => drop(reply.send(Err(AuditError::Closed(None)))),
        Cmd::Checkpoint(reply) | Cmd::Close(reply) => {
            drop(reply.send(Err(AuditError::Closed(None))))
        }
    }
}
