//! The one error type of the crate, with a stable machine code for the API.

use crate::verify::Finding;

/// What went wrong while opening, appending to, reading, verifying or proving the audit log.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// A file-system operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// The operation, e.g. "open", "fsync", "read".
        op: &'static str,
        /// The path it was applied to.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The log does not verify: a record or checkpoint was edited, removed, reordered or forged.
    #[error("audit log does not verify: {0}")]
    Tampered(Box<Finding>),
    /// The signing key file may be read by group or others.
    #[error("refusing key file {path}: mode {mode:o} lets group/others read it (want 0600)")]
    KeyPermissions {
        /// The key file.
        path: String,
        /// Its permission bits.
        mode: u32,
    },
    /// A key (signing key, verifier key) is malformed or does not belong to this log.
    #[error("bad key {what}: {reason}")]
    BadKey {
        /// Which key ("signing key file /x/audit.key", "verifier key", …).
        what: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A signed note or checkpoint is malformed or its signature does not verify.
    #[error("bad checkpoint: {0}")]
    BadNote(String),
    /// An inclusion or consistency proof does not verify, or cannot be made.
    #[error("proof: {0}")]
    Proof(String),
    /// The caller's event is not a JSON object with a string `"type"` field.
    #[error("invalid event: {0}")]
    InvalidEvent(String),
    /// The configuration is unusable.
    #[error("invalid audit config: {0}")]
    Config(String),
    /// The log was closed, or its writer stopped after an earlier write failure.
    #[error("audit log is closed{}", .0.as_deref().map(|r| format!(": {r}")).unwrap_or_default())]
    Closed(Option<String>),
}

impl AuditError {
    /// A stable, machine-readable code for the API.
    pub fn code(&self) -> &'static str {
        match self {
            AuditError::Io { .. } => "io",
            AuditError::Tampered(_) => "audit-tampered",
            AuditError::KeyPermissions { .. } => "key-permissions",
            AuditError::BadKey { .. } => "bad-key",
            AuditError::BadNote(_) => "bad-checkpoint",
            AuditError::Proof(_) => "bad-proof",
            AuditError::InvalidEvent(_) => "invalid-event",
            AuditError::Config(_) => "invalid-config",
            AuditError::Closed(_) => "audit-closed",
        }
    }

    /// An [`AuditError::Io`] for `op` on `path`.
    /// The same error again, for each of several waiting appends.
    pub(crate) fn clone_io(&self) -> Self {
        match self {
            AuditError::Io { op, path, source } => AuditError::Io {
                op,
                path: path.clone(),
                source: std::io::Error::new(source.kind(), source.to_string()),
            },
            AuditError::Tampered(f) => AuditError::Tampered(f.clone()),
            other => AuditError::Closed(Some(other.to_string())),
        }
    }

    pub(crate) fn io(
        op: &'static str,
        path: impl AsRef<std::path::Path>,
        source: std::io::Error,
    ) -> Self {
        AuditError::Io {
            op,
            path: path.as_ref().display().to_string(),
            source,
        }
    }
}

/// `Result` with [`AuditError`].
pub type Result<T, E = AuditError> = std::result::Result<T, E>;
