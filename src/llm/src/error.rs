//! The crate's one error type. Messages say what failed and on what; [`LlmError::code`] is the
//! stable identifier an API or transcript shows. No variant carries request headers (API keys).

use std::time::Duration;

use crate::model::Provider;

/// What went wrong talking to a model.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LlmError {
    /// The stream ended before its terminal event (`[DONE]`, `message_stop`, `done: true`).
    #[error("{provider} stream cut: it ended before its terminal event")]
    StreamCut {
        /// Whose stream.
        provider: Provider,
    },
    /// A line or event of the stream was longer than the decoder's cap.
    #[error("{provider} stream: a line or event exceeded the {limit}-byte cap")]
    LineTooLong {
        /// Whose stream.
        provider: Provider,
        /// The cap, in bytes.
        limit: usize,
    },
    /// A line of the stream was not UTF-8.
    #[error("{provider} stream: a line is not valid UTF-8")]
    InvalidUtf8 {
        /// Whose stream.
        provider: Provider,
    },
    /// A chunk or answer body did not parse as the provider's format.
    #[error("{provider} sent a malformed {what}: {detail}")]
    Malformed {
        /// Whose format.
        provider: Provider,
        /// What did not parse (`stream chunk`, `answer`, ...).
        what: &'static str,
        /// The parser's complaint.
        detail: String,
    },
    /// The stream's tool-call fragments did not fit together (arguments for a call never started).
    #[error("{provider} stream: arguments for tool call #{index}, which never started")]
    OrphanToolArguments {
        /// Whose stream.
        provider: Provider,
        /// The call's index in the stream.
        index: usize,
    },
    /// The provider reported an error in the stream or answer body.
    #[error("{provider} reported an error{}: {message}", kind.as_deref().map(|k| format!(" ({k})")).unwrap_or_default())]
    Provider {
        /// Who reported it.
        provider: Provider,
        /// The provider's error type, when it gives one (`overloaded_error`, ...).
        kind: Option<String>,
        /// The provider's message.
        message: String,
    },
    /// HTTP 429: too many requests.
    #[error("{provider} rate-limited the request (HTTP 429{}): {message}", retry_after.map(|d| format!(", retry after {}s", d.as_secs())).unwrap_or_default())]
    RateLimited {
        /// Who refused.
        provider: Provider,
        /// How long the provider asks to wait (`retry-after`), when it says.
        retry_after: Option<Duration>,
        /// The provider's message.
        message: String,
    },
    /// HTTP 5xx: the provider failed; worth retrying with backoff.
    #[error("{provider} failed with HTTP {status}: {message}")]
    ServerError {
        /// Who failed.
        provider: Provider,
        /// The HTTP status.
        status: u16,
        /// The provider's message.
        message: String,
    },
    /// HTTP 4xx (other than 429): the request was refused; retrying it unchanged will not help.
    #[error("{provider} refused the request with HTTP {status}: {message}")]
    ClientError {
        /// Who refused.
        provider: Provider,
        /// The HTTP status.
        status: u16,
        /// The provider's error type, when it gives one.
        kind: Option<String>,
        /// The provider's message.
        message: String,
    },
}

impl LlmError {
    /// A stable identifier for the kind of failure.
    pub fn code(&self) -> &'static str {
        match self {
            Self::StreamCut { .. } => "llm_stream_cut",
            Self::LineTooLong { .. } => "llm_stream_line_too_long",
            Self::InvalidUtf8 { .. } => "llm_stream_invalid_utf8",
            Self::Malformed { .. } => "llm_malformed_response",
            Self::OrphanToolArguments { .. } => "llm_stream_orphan_tool_arguments",
            Self::Provider { .. } => "llm_provider_error",
            Self::RateLimited { .. } => "llm_rate_limited",
            Self::ServerError { .. } => "llm_server_error",
            Self::ClientError { .. } => "llm_client_error",
        }
    }

    /// Whether the same request may succeed if sent again (after [`Self::retry_after`] or a
    /// backoff): rate limits, server errors, cut streams and the providers' overload errors.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::RateLimited { .. } | Self::ServerError { .. } | Self::StreamCut { .. } => true,
            Self::Provider { kind, .. } => matches!(
                kind.as_deref(),
                Some("overloaded_error" | "api_error" | "rate_limit_error" | "server_error")
            ),
            _ => false,
        }
    }

    /// How long the provider asked to wait before retrying, when it said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}
