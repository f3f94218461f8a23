//! The model client: one provider's endpoint over HTTP, the answer streamed and assembled by
//! `luminaguard-llm`, with the retries a provider's errors call for.
//!
//! - 429: waits what `retry-after` says (when it says more than [`Retry::max_wait`], gives up
//!   at once and says so), else backs off;
//! - 5xx, an overloaded provider, a stream cut mid-way, a connection that failed: backs off
//!   exponentially from [`Retry::base`], at most [`Retry::attempts`] tries;
//! - anything else (a 4xx, a malformed answer) fails at once with the provider's message.
//!
//! The API key goes in one header, marked sensitive; it is in no error, log or event.

use std::time::{Duration, Instant, SystemTime};

use futures_util::StreamExt;
use luminaguard_llm::{Assembler, LlmError, Message, Provider, StreamEvent, ToolSpec, Turn};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

/// A provider's API key. Its `Debug` never shows it.
#[derive(Clone)]
pub struct ApiKey(String);

impl ApiKey {
    /// A key (trimmed); `None` when empty.
    pub fn new(key: &str) -> Option<Self> {
        let key = key.trim();
        (!key.is_empty()).then(|| Self(key.to_owned()))
    }

    /// The key itself, for a caller that must check no output carries it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// Which model, where.
#[derive(Debug, Clone)]
pub struct ModelConfig {
    pub provider: Provider,
    pub model: String,
    /// The API's base URL (default: the provider's own; see [`default_base_url`]).
    pub base_url: String,
    pub api_key: Option<ApiKey>,
    /// The cap on tokens the model generates per answer.
    pub max_tokens: u32,
}

/// The provider's public endpoint: OpenAI's `/v1`, Anthropic's API, a local Ollama.
pub fn default_base_url(provider: Provider) -> &'static str {
    match provider {
        Provider::OpenAi => "https://api.openai.com/v1",
        Provider::Anthropic => "https://api.anthropic.com",
        Provider::Ollama => "http://127.0.0.1:11434",
    }
}

/// The environment variable a provider's key is read from.
pub fn key_variable(provider: Provider) -> &'static str {
    match provider {
        Provider::OpenAi => "OPENAI_API_KEY",
        Provider::Anthropic => "ANTHROPIC_API_KEY",
        Provider::Ollama => "OLLAMA_API_KEY",
    }
}

/// How the client retries.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    /// Tries in all (the first included).
    pub attempts: u32,
    /// The first backoff; each next one doubles, up to `max_wait`.
    pub base: Duration,
    /// The longest wait: a `retry-after` asking more fails at once.
    pub max_wait: Duration,
    /// The longest silence inside an answer (no byte for this long fails the try).
    pub idle: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            attempts: 5,
            base: Duration::from_secs(1),
            max_wait: Duration::from_secs(60),
            idle: Duration::from_secs(120),
        }
    }
}

/// The most of an error answer's body read (the provider's message is in its first bytes).
const ERROR_BODY_LIMIT: usize = 64 << 10;
/// The most text and arguments one answer may carry.
const ANSWER_LIMIT: usize = 16 << 20;

/// Why a model call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The provider's answer said so (HTTP status, error event, malformed stream).
    #[error(transparent)]
    Llm(#[from] LlmError),
    /// The provider could not be reached, or the connection broke.
    #[error("{provider} at {url}: {detail}")]
    Transport {
        provider: Provider,
        url: String,
        detail: String,
    },
    /// No byte of the answer for [`Retry::idle`].
    #[error("{provider} sent nothing for {}s in the middle of its answer", .idle.as_secs())]
    Idle { provider: Provider, idle: Duration },
    /// An answer larger than the client keeps.
    #[error("{provider}'s answer exceeded {limit} bytes")]
    TooLarge { provider: Provider, limit: usize },
    /// The provider asked to wait longer than the client will.
    #[error("{source}; that is longer than the {}s this client waits", .max_wait.as_secs())]
    WaitTooLong {
        source: LlmError,
        max_wait: Duration,
    },
    /// Every try failed.
    #[error("{last} (gave up after {attempts} tries)")]
    GaveUp {
        last: Box<ClientError>,
        attempts: u32,
    },
    /// The client could not be built or the request not made.
    #[error("setting up the {provider} client: {detail}")]
    Setup { provider: Provider, detail: String },
}

impl ClientError {
    /// A stable code for transcripts and APIs.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Llm(e) => e.code(),
            Self::Transport { .. } => "llm_transport",
            Self::Idle { .. } => "llm_idle",
            Self::TooLarge { .. } => "llm_answer_too_large",
            Self::WaitTooLong { .. } => "llm_retry_after_too_long",
            Self::GaveUp { last, .. } => last.code(),
            Self::Setup { .. } => "llm_setup",
        }
    }

    fn is_retryable(&self) -> bool {
        match self {
            Self::Llm(e) => e.is_retryable(),
            Self::Transport { .. } | Self::Idle { .. } => true,
            _ => false,
        }
    }
}

/// What a model call tells its watcher while it runs.
#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    /// More of the model's text.
    Text(String),
    /// A try failed and another follows after `wait` (text shown so far is void).
    Retrying {
        attempt: u32,
        wait: Duration,
        code: &'static str,
        message: String,
    },
}

/// A client of one model.
#[derive(Debug, Clone)]
pub struct Client {
    config: ModelConfig,
    retry: Retry,
    url: String,
    /// The provider's own API (not a compatible server).
    official: bool,
    headers: HeaderMap,
    http: reqwest::Client,
}

impl Client {
    pub fn new(config: ModelConfig, retry: Retry) -> Result<Self, ClientError> {
        let provider = config.provider;
        let setup = |detail: String| ClientError::Setup { provider, detail };
        // One process-wide TLS provider (installed already is fine): ring, which rustls
        // deprecates for lacking the post-quantum hybrid key exchange; aws-lc-rs has it, at the
        // cost of a far larger C build. Every provider's API still negotiates X25519 with it.
        #[allow(deprecated)]
        let _ = rustls::crypto::ring::default_provider().install_default();
        let base = config.base_url.trim_end_matches('/');
        let url = format!("{base}{}", luminaguard_llm::path(provider));
        let parsed = reqwest::Url::parse(&url).map_err(|e| setup(format!("{url}: {e}")))?;
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(setup(
                "the base URL carries credentials: give the key in the environment instead".into(),
            ));
        }
        let official = parsed.host_str()
            == reqwest::Url::parse(default_base_url(provider))
                .ok()
                .as_ref()
                .and_then(reqwest::Url::host_str);
        let mut headers = HeaderMap::new();
        headers.insert(
            reqwest::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if provider == Provider::Anthropic {
            headers.insert(
                HeaderName::from_static("anthropic-version"),
                HeaderValue::from_static(luminaguard_llm::anthropic::API_VERSION),
            );
        }
        if let Some(key) = &config.api_key {
            let (name, value) = match provider {
                Provider::Anthropic => (HeaderName::from_static("x-api-key"), key.0.clone()),
                _ => (reqwest::header::AUTHORIZATION, format!("Bearer {}", key.0)),
            };
            let mut value = HeaderValue::from_str(&value)
                .map_err(|_| setup("the API key holds characters a header cannot".into()))?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(30))
            .user_agent(concat!("luminaguard/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| setup(e.to_string()))?;
        Ok(Self {
            config,
            retry,
            url,
            official,
            headers,
            http,
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The endpoint called.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// One answer of the model to `messages`, streamed to `progress` as it arrives, retried
    /// as the module says.
    pub async fn turn(
        &self,
        messages: &[Message],
        tools: &[ToolSpec],
        progress: &mut (dyn FnMut(Progress) + Send),
    ) -> Result<Turn, ClientError> {
        let provider = self.config.provider;
        let body = luminaguard_llm::request_body(
            provider,
            self.official,
            &self.config.model,
            messages,
            tools,
            self.config.max_tokens,
            true,
        )
        .map_err(|e| ClientError::Setup {
            provider,
            detail: format!("serializing the request: {e}"),
        })?;
        let mut attempt = 1;
        loop {
            let error = match self.once(&body, progress).await {
                Ok(turn) => return Ok(turn),
                Err(e) => e,
            };
            if !error.is_retryable() {
                return Err(error);
            }
            let asked = match &error {
                ClientError::Llm(e) => e.retry_after(),
                _ => None,
            };
            if let (Some(wait), ClientError::Llm(e)) = (asked, &error)
                && wait > self.retry.max_wait
            {
                return Err(ClientError::WaitTooLong {
                    source: e.clone(),
                    max_wait: self.retry.max_wait,
                });
            }
            if attempt >= self.retry.attempts {
                return Err(ClientError::GaveUp {
                    last: Box::new(error),
                    attempts: attempt,
                });
            }
            let backoff = self
                .retry
                .base
                .saturating_mul(1 << (attempt - 1).min(16))
                .min(self.retry.max_wait);
            let wait = asked.unwrap_or(backoff);
            tracing::info!(code = error.code(), %error, ?wait, attempt, "model call failed; retrying");
            progress(Progress::Retrying {
                attempt,
                wait,
                code: error.code(),
                message: error.to_string(),
            });
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    /// One try.
    async fn once(
        &self,
        body: &[u8],
        progress: &mut (dyn FnMut(Progress) + Send),
    ) -> Result<Turn, ClientError> {
        let provider = self.config.provider;
        let transport = |e: reqwest::Error| ClientError::Transport {
            provider,
            url: self.url.clone(),
            // Without the URL reqwest would repeat (it is in ours).
            detail: e.without_url().to_string(),
        };
        let idle = self.retry.idle;
        let response = tokio::time::timeout(
            idle,
            self.http
                .post(&self.url)
                .headers(self.headers.clone())
                .body(body.to_vec())
                .send(),
        )
        .await
        .map_err(|_| ClientError::Idle { provider, idle })?
        .map_err(transport)?;
        let status = response.status();
        if !status.is_success() {
            let headers: Vec<(String, Vec<u8>)> = response
                .headers()
                .iter()
                .map(|(k, v)| (k.as_str().to_owned(), v.as_bytes().to_vec()))
                .collect();
            let mut body = Vec::new();
            let mut stream = response.bytes_stream();
            while let Ok(Some(Ok(chunk))) = tokio::time::timeout(idle, stream.next()).await {
                body.extend_from_slice(&chunk);
                if body.len() >= ERROR_BODY_LIMIT {
                    body.truncate(ERROR_BODY_LIMIT);
                    break;
                }
            }
            return Err(luminaguard_llm::status_error(
                provider,
                status.as_u16(),
                headers.iter().map(|(k, v)| (k.as_str(), v.as_slice())),
                &body,
                SystemTime::now(),
            )
            .into());
        }
        let mut decoder = luminaguard_llm::decoder(provider);
        let mut assembler = Assembler::new(provider);
        let mut stream = response.bytes_stream();
        let mut size = 0usize;
        let started = Instant::now();
        loop {
            let chunk = tokio::time::timeout(idle, stream.next())
                .await
                .map_err(|_| ClientError::Idle { provider, idle })?;
            let (events, last) = match chunk {
                Some(Ok(bytes)) => {
                    size += bytes.len();
                    if size > ANSWER_LIMIT {
                        return Err(ClientError::TooLarge {
                            provider,
                            limit: ANSWER_LIMIT,
                        });
                    }
                    (decoder.feed(&bytes)?, false)
                }
                Some(Err(e)) => return Err(transport(e)),
                None => (decoder.finish()?, true),
            };
            let ended = last || chunk_ended(&events);
            for event in events {
                if let StreamEvent::TextDelta(text) = &event {
                    progress(Progress::Text(text.clone()));
                }
                assembler.push(event);
            }
            if ended {
                tracing::debug!(elapsed = ?started.elapsed(), size, "model answer complete");
                return Ok(assembler.finish()?);
            }
        }
    }
}

/// Whether `events` hold the stream's terminal event.
fn chunk_ended(events: &[StreamEvent]) -> bool {
    events.iter().any(|e| {
        matches!(
            e,
            StreamEvent::Done { .. } | StreamEvent::ProviderError { .. }
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_endpoint_is_the_base_url_joined_with_the_provider_path() {
        for (provider, base, url) in [
            (
                Provider::OpenAi,
                "https://api.openai.com/v1",
                "https://api.openai.com/v1/chat/completions",
            ),
            (
                Provider::OpenAi,
                "http://127.0.0.1:8000/v1//",
                "http://127.0.0.1:8000/v1/chat/completions",
            ),
            (
                Provider::OpenAi,
                "http://127.0.0.1:8000",
                "http://127.0.0.1:8000/chat/completions",
            ),
            (
                Provider::Anthropic,
                "https://api.anthropic.com/",
                "https://api.anthropic.com/v1/messages",
            ),
            (
                Provider::Anthropic,
                "http://127.0.0.1:8000/v1",
                "http://127.0.0.1:8000/v1/v1/messages",
            ),
            (
                Provider::Ollama,
                "http://127.0.0.1:11434",
                "http://127.0.0.1:11434/api/chat",
            ),
        ] {
            let config = ModelConfig {
                provider,
                model: "m".into(),
                base_url: base.into(),
                api_key: None,
                max_tokens: 1,
            };
            let client = Client::new(config, Retry::default()).unwrap();
            assert_eq!(client.url(), url, "{provider} at {base}");
        }
    }
}
