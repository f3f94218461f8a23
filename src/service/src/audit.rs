//! The service's side of the audit log (`luminaguard-audit`): every create, command, review,
//! approval and destroy is appended — fsync'd — before the service answers, by whichever
//! front-end asked. The log is opened on first use (its directory and signing key made then).
//!
//! Failing closed: an action whose record cannot be written does not run. The end of a command
//! (its exit status) is recorded after the fact; if that append fails, it is logged.

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
    log: tokio::sync::OnceCell<AuditLog>,
}

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
            log: tokio::sync::OnceCell::new(),
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

    /// Appends `event` (a JSON object with a `"type"`) for `caller`, durably.
    pub(crate) async fn record(&self, caller: &Caller, event: Value) -> Result<(), ServiceError> {
        let actor = Actor {
            uid: caller.uid,
            kind: self
                .kind
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone(),
            session: None,
        };
        self.log()
            .await?
            .append(actor, event)
            .await
            .map(drop)
            .map_err(|e| ServiceError::Audit(e.to_string()))
    }

    /// Appends `event` after the fact: a failure is logged, not returned.
    pub(crate) async fn note(&self, caller: &Caller, event: Value) {
        if let Err(e) = self.record(caller, event).await {
            tracing::error!(error = %e, "audit: a record could not be written");
        }
    }

    /// Writes a final signed checkpoint (the service is closing).
    pub(crate) async fn close(&self) {
        if let Some(log) = self.log.get()
            && let Err(e) = log.close().await
        {
            tracing::error!(error = %e, "audit: closing the log");
        }
    }
}
