//! What the service answers when it cannot do what was asked: a typed error whose
//! [`ErrorCode`] is stable — the daemon maps it to an HTTP status, the CLI to its message and
//! exit status — and whose message says what failed on what.

use luminaguard_backend::BackendError;
use luminaguard_backend::copy::CopyError;
use luminaguard_protocol::message::ErrorCode as AgentCode;

/// The kind of failure, for callers that act on it rather than print it. Stable: new kinds
/// are added, none is renamed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorCode {
    /// No such sandbox (or template, image) — or not one the caller may see.
    NotFound,
    /// It exists already, or is in a state that does not allow this.
    Conflict,
    /// The request's settings are not acceptable (limits, workspace, network, names).
    InvalidSpec,
    /// The caller may not do this.
    Forbidden,
    /// This host cannot do it (no KVM that runs guests, no QEMU, no Firecracker, no image, no
    /// privilege for a network policy).
    HostUnsupported,
    /// Anything else: LuminaGuard or the host failed.
    Internal,
    /// More data than the limit allows (a file over the size limit).
    TooLarge,
}

impl ErrorCode {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::NotFound => "not-found",
            Self::Conflict => "conflict",
            Self::InvalidSpec => "invalid-spec",
            Self::Forbidden => "forbidden",
            Self::HostUnsupported => "host-unsupported",
            Self::Internal => "internal",
            Self::TooLarge => "too-large",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why the service refused or failed a request.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("invalid sandbox settings: {0}")]
    Spec(#[from] luminaguard_core::SpecError),
    #[error(transparent)]
    Workspace(#[from] luminaguard_core::WorkspaceError),
    #[error("{0}")]
    InvalidSpec(String),
    /// A read-only mount's host path is refused (see [`crate::mounts`]).
    #[error(transparent)]
    Mount(#[from] crate::mounts::MountError),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    TooLarge(String),
    #[error(transparent)]
    Copy(#[from] luminaguard_backend::copy::CopyError),
    /// The sandbox died under a request (its VMM was killed, its guest crashed, …).
    #[error("sandbox {id}: {detail}")]
    SandboxDied { id: String, detail: String },
    /// The sandbox's agent refused or failed a request.
    #[error("sandbox {id}: {source}")]
    Agent {
        id: String,
        source: luminaguard_protocol::ClientError,
    },
    #[error("{0}")]
    HostUnsupported(String),
    /// The policy refused the action.
    #[error("denied by policy: {0}")]
    Denied(String),
    /// The policy asks about the command and no person can be asked on this path: it does not
    /// run.
    #[error("held for a person's approval, which this path cannot ask for: {0}")]
    Held(String),
    /// The policy does not load.
    #[error(transparent)]
    Policy(#[from] luminaguard_policy::PolicyError),
    /// The audit log could not be written: the action does not run.
    #[error("audit log: {0}")]
    Audit(String),
    /// Reading or applying a speculative run's change set failed.
    #[error(transparent)]
    Review(#[from] luminaguard_review::ReviewError),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error("invalid runtime directory: {0}")]
    Runtime(#[from] luminaguard_core::RuntimeDirError),
    #[error("{what}: {reason}")]
    Internal { what: &'static str, reason: String },
}

impl ServiceError {
    /// The stable kind of this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Spec(_) | Self::Workspace(_) | Self::InvalidSpec(_) => ErrorCode::InvalidSpec,
            Self::Mount(e) if e.is_forbidden() => ErrorCode::Forbidden,
            Self::Mount(_) => ErrorCode::InvalidSpec,
            Self::NotFound(_) => ErrorCode::NotFound,
            Self::Conflict(_) => ErrorCode::Conflict,
            Self::Forbidden(_) => ErrorCode::Forbidden,
            Self::TooLarge(_) => ErrorCode::TooLarge,
            Self::Copy(e) => match e {
                CopyError::TooLarge { .. } => ErrorCode::TooLarge,
                CopyError::Host(_) | CopyError::NotRegular { .. } | CopyError::NoFileName(_) => {
                    ErrorCode::InvalidSpec
                }
                CopyError::Sandbox { error, .. } => agent_code(error),
                CopyError::Interrupted(_) | CopyError::Task(_) | CopyError::Remote(_) => {
                    ErrorCode::Internal
                }
            },
            Self::SandboxDied { .. } => ErrorCode::Internal,
            Self::Agent { source, .. } => agent_code(source),
            Self::HostUnsupported(_) => ErrorCode::HostUnsupported,
            Self::Audit(_) => ErrorCode::Internal,
            Self::Denied(_) | Self::Held(_) => ErrorCode::Forbidden,
            Self::Policy(_) => ErrorCode::InvalidSpec,
            Self::Review(e) => match e.code() {
                "workspace-changed" | "upper-changed" => ErrorCode::Conflict,
                "too-large" => ErrorCode::TooLarge,
                "refused-entry" => ErrorCode::Forbidden,
                _ => ErrorCode::Internal,
            },
            Self::Backend(e) => match e {
                BackendError::NotFound(_) => ErrorCode::NotFound,
                BackendError::Exists(_) | BackendError::NotRunning { .. } => ErrorCode::Conflict,
                BackendError::Workspace(_) => ErrorCode::InvalidSpec,
                _ => ErrorCode::Internal,
            },
            Self::Runtime(_) | Self::Internal { .. } => ErrorCode::Internal,
        }
    }

    pub(crate) fn agent(
        id: &luminaguard_core::SandboxId,
        source: luminaguard_protocol::ClientError,
    ) -> Self {
        Self::Agent {
            id: id.to_string(),
            source,
        }
    }

    pub(crate) fn internal(what: &'static str, reason: impl std::fmt::Display) -> Self {
        Self::Internal {
            what,
            reason: reason.to_string(),
        }
    }
}

/// The kind of an agent's refusal.
fn agent_code(e: &luminaguard_protocol::ClientError) -> ErrorCode {
    match e.remote_code() {
        Some(AgentCode::NotFound) => ErrorCode::NotFound,
        Some(AgentCode::PermissionDenied) => ErrorCode::Forbidden,
        Some(AgentCode::AlreadyExists) => ErrorCode::Conflict,
        Some(AgentCode::InvalidRequest) => ErrorCode::InvalidSpec,
        _ => ErrorCode::Internal,
    }
}

impl From<tokio::task::JoinError> for ServiceError {
    fn from(e: tokio::task::JoinError) -> Self {
        Self::internal("a blocking task failed", e)
    }
}
