//! The service's side of the audit log (`luminaguard-audit`): every create, command, review,
//! approval and destroy is appended — fsync'd — before the service answers, by whichever
//! front-end asked. The log is opened on first use (its directory and signing key made then).
//!
//! Failing closed: an action whose record cannot be written does not run. What already
//! happened (a command's exit, a destroy) is queued without waiting for the disk — in order,
//! durable by the next group commit — and closing the log waits for all of it; a failure there
//! is logged.

use std::path::PathBuf;

use luminaguard_audit::{Actor, AuditConfig, AuditLog};
use serde_json::Value;

use crate::{Caller, ServiceError};

/// The log, opened once per service.
#[derive(Debug)]
pub(crate) struct Audit {
    dir: PathBuf,
    /// Which front-end this service serves (`cli`, `daemon`, …): the records' actor kind.
    kind: std::sync::Mutex<String>,
    /// The front-end's session (an MCP session and its client), on every record it makes.
    session: std::sync::Mutex<Option<String>>,
    log: tokio::sync::OnceCell<AuditLog>,
    /// Records queued by [`Audit::note`], not yet known to be durable.
    pending: std::sync::Mutex<Vec<Pending>>,
}

type Pending =
    tokio::sync::oneshot::Receiver<luminaguard_audit::Result<luminaguard_audit::Receipt>>;

/// Whether a service of this front-end kind verifies the whole log when it opens it: the
/// daemon does (once, at start); a CLI command opens from the tail, in time independent of the
/// log's length (`luminaguard audit verify` checks everything).
fn verifies_on_open(kind: &str) -> bool {
    kind == "daemon"
}

impl Audit {
    pub(crate) fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            kind: std::sync::Mutex::new("cli".into()),
            session: std::sync::Mutex::new(None),
            log: tokio::sync::OnceCell::new(),
            pending: std::sync::Mutex::new(Vec::new()),
        }
    }

    pub(crate) fn set_kind(&self, kind: &str) {
        *self
            .kind
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = kind.to_owned();
    }

    async fn log(&self) -> Result<&AuditLog, ServiceError> {
        self.log
            .get_or_try_init(|| async {
                let kind = self
                    .kind
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clone();
                AuditLog::open(AuditConfig {
                    verify_on_open: verifies_on_open(&kind),
                    ..AuditConfig::new(&self.dir)
                })
                .await
                .map_err(|e| ServiceError::Audit(e.to_string()))
            })
            .await
    }

    pub(crate) fn set_session(&self, session: Option<String>) {
        *self
            .session
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = session;
    }

    pub(crate) async fn open(&self) -> Result<(), ServiceError> {
        self.log().await.map(drop)
    }

    fn actor(&self, caller: &Caller) -> Actor {
        Actor {
            uid: caller.uid,
            // The daemon's own front-end that took the request, else the process's kind.
            kind: caller.front.map(str::to_owned).unwrap_or_else(|| {
                self.kind
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clone()
            }),
            // The caller's own session first (one of several this process serves), else the
            // service-wide one.
            session: caller.session.as_deref().map(str::to_owned).or_else(|| {
                self.session
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clone()
            }),
        }
    }

    /// Appends `event` (a JSON object with a `"type"`) for `caller`, durably.
    pub(crate) async fn record(&self, caller: &Caller, event: Value) -> Result<(), ServiceError> {
        let actor = self.actor(caller);
        self.log()
            .await?
            .append(actor, event)
            .await
            .map(drop)
            .map_err(|e| ServiceError::Audit(e.to_string()))
    }

    /// Queues `event`, something that already happened, without waiting for the disk: a
    /// failure is logged, not returned.
    pub(crate) async fn note(&self, caller: &Caller, event: Value) {
        let queued = match self.log().await {
            Ok(log) => log
                .enqueue(self.actor(caller), event)
                .await
                .map_err(|e| ServiceError::Audit(e.to_string())),
            Err(e) => Err(e),
        };
        let mut pending = self
            .pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Those answered already are reported and let go: the list stays as short as the
        // queue.
        pending.retain_mut(|rx| match rx.try_recv() {
            Ok(Ok(_)) => false,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "audit: a record could not be written");
                false
            }
            Err(tokio::sync::oneshot::error::TryRecvError::Empty) => true,
            Err(tokio::sync::oneshot::error::TryRecvError::Closed) => false,
        });
        match queued {
            Ok(rx) => pending.push(rx),
            Err(e) => tracing::error!(error = %e, "audit: a record could not be written"),
        }
    }

    /// Waits until every queued record is durable, then writes a final signed checkpoint (the
    /// service, or this command, is closing).
    pub(crate) async fn close(&self) {
        let waiting = std::mem::take(
            &mut *self
                .pending
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for rx in waiting {
            match rx.await {
                Ok(Ok(_)) | Err(_) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "audit: a record could not be written"),
            }
        }
        if let Some(log) = self.log.get()
            && let Err(e) = log.close().await
        {
            tracing::error!(error = %e, "audit: closing the log");
        }
    }
}
