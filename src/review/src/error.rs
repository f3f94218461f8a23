//! The one error type of the crate, with a stable machine code for the API.

/// What went wrong while scanning, rendering or applying a change set.
///
/// Paths in messages are the escaped form of [`crate::RelPath`] (non-UTF-8 bytes as `\xNN`).
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    /// A file-system operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// The operation, e.g. "open", "read", "rename".
        op: &'static str,
        /// The path it was applied to (relative to the upper dir or workspace, or a host path).
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The upper dir holds more entries, or deeper nesting, than the limits allow.
    #[error("change set too large: {what} exceeds the limit of {limit}")]
    TooLarge {
        /// What overflowed ("entries", "depth").
        what: &'static str,
        /// The limit that was exceeded.
        limit: usize,
    },
    /// The change set contains an entry that may not be applied (special file, setuid, …).
    #[error("refused entry {path}: {reason}")]
    Refused {
        /// The refused entry.
        path: String,
        /// Why it was refused.
        reason: String,
    },
    /// The workspace no longer holds an entry's `before` state; nothing was applied.
    #[error("workspace changed since the card was made: {path}: {what}")]
    WorkspaceChanged {
        /// The entry whose workspace state differs.
        path: String,
        /// What differs.
        what: String,
    },
    /// The upper dir no longer holds the card's `after` states; nothing was applied.
    #[error("upper dir changed since the card was made: {path}: {what}")]
    UpperChanged {
        /// The entry whose upper state differs.
        path: String,
        /// What differs.
        what: String,
    },
    /// A path is not a valid relative path (absolute, `..`, empty component, NUL).
    #[error("invalid path {path:?}: {reason}")]
    InvalidPath {
        /// The offending path, escaped.
        path: String,
        /// Why it is invalid.
        reason: &'static str,
    },
    /// A card does not hold together (its digest does not match its entries, …).
    #[error("invalid card: {what}")]
    InvalidCard {
        /// What is wrong with it.
        what: String,
    },
}

impl ReviewError {
    /// A stable, machine-readable code for the API.
    pub fn code(&self) -> &'static str {
        match self {
            ReviewError::Io { .. } => "io",
            ReviewError::TooLarge { .. } => "too-large",
            ReviewError::Refused { .. } => "refused-entry",
            ReviewError::WorkspaceChanged { .. } => "workspace-changed",
            ReviewError::UpperChanged { .. } => "upper-changed",
            ReviewError::InvalidPath { .. } => "invalid-path",
            ReviewError::InvalidCard { .. } => "invalid-card",
        }
    }

    /// An [`ReviewError::Io`] from a rustix errno.
    pub(crate) fn io(op: &'static str, path: impl std::fmt::Display, e: rustix::io::Errno) -> Self {
        ReviewError::Io {
            op,
            path: path.to_string(),
            source: e.into(),
        }
    }

    /// An [`ReviewError::Io`] from a std error.
    pub(crate) fn std_io(
        op: &'static str,
        path: impl std::fmt::Display,
        source: std::io::Error,
    ) -> Self {
        ReviewError::Io {
            op,
            path: path.to_string(),
            source,
        }
    }
}
