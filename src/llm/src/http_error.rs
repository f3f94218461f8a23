//! HTTP status errors: a non-success answer (status, response headers, body) becomes a typed
//! [`LlmError`]. Only `retry-after` is read from the headers, and nothing of them is kept, so no
//! header value (let alone a request's API key) reaches an error message or `Debug` output.

use std::time::{Duration, SystemTime};

use serde::Deserialize;

use crate::error::LlmError;
use crate::model::Provider;

/// The longest provider message kept in an error, in characters.
pub const MESSAGE_LIMIT: usize = 1024;

/// The error for a non-success HTTP answer: 429 is [`LlmError::RateLimited`] with `retry-after`
/// (delta-seconds or an HTTP date, measured from `now`), 5xx is [`LlmError::ServerError`]
/// (retryable), anything else [`LlmError::ClientError`]. The message is the one in the
/// provider's error body, else the start of the body as text.
pub fn status_error<'a>(
    provider: Provider,
    status: u16,
    response_headers: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    body: &[u8],
    now: SystemTime,
) -> LlmError {
    let (kind, message) = body_message(provider, body);
    match status {
        429 => LlmError::RateLimited {
            provider,
            retry_after: response_headers
                .into_iter()
                .find(|(name, _)| name.eq_ignore_ascii_case("retry-after"))
                .and_then(|(_, value)| parse_retry_after(value, now)),
            message,
        },
        500..=599 => LlmError::ServerError {
            provider,
            status,
            message,
        },
        _ => LlmError::ClientError {
            provider,
            status,
            kind,
            message,
        },
    }
}

/// Parses a `retry-after` value: delta-seconds, or an HTTP date (a date already past is zero).
pub fn parse_retry_after(value: &[u8], now: SystemTime) -> Option<Duration> {
    let value = std::str::from_utf8(value).ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[derive(Deserialize)]
struct NestedError {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

/// OpenAI's `{error: {message, type, code}}` and Anthropic's `{type: "error", error: {type,
/// message}}` share this shape.
#[derive(Deserialize)]
struct NestedBody {
    error: NestedError,
}

/// Ollama's `{error: "..."}` (and some OpenAI-compatible servers').
#[derive(Deserialize)]
struct FlatBody {
    error: String,
}

/// The provider's error type and message from an error body.
fn body_message(provider: Provider, body: &[u8]) -> (Option<String>, String) {
    let parsed = match provider {
        Provider::OpenAi | Provider::Anthropic => serde_json::from_slice::<NestedBody>(body)
            .ok()
            .and_then(|b| Some((b.error.kind, b.error.message?)))
            .or_else(|| flat(body)),
        Provider::Ollama => flat(body).or_else(|| {
            serde_json::from_slice::<NestedBody>(body)
                .ok()
                .and_then(|b| Some((b.error.kind, b.error.message?)))
        }),
    };
    match parsed {
        Some((kind, message)) => (kind, truncate(&message)),
        None if body.iter().all(u8::is_ascii_whitespace) => (None, "(empty body)".to_owned()),
        None => (None, truncate(&String::from_utf8_lossy(body))),
    }
}

fn flat(body: &[u8]) -> Option<(Option<String>, String)> {
    serde_json::from_slice::<FlatBody>(body)
        .ok()
        .map(|b| (None, b.error))
}

fn truncate(text: &str) -> String {
    let text = text.trim();
    match text.char_indices().nth(MESSAGE_LIMIT) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn rate_limit_with_seconds() {
        let body = br#"{"error":{"message":"Rate limit reached for gpt-4o","type":"requests","code":"rate_limit_exceeded"}}"#;
        let e = status_error(
            Provider::OpenAi,
            429,
            [("Retry-After", b"20".as_slice()), ("x-request-id", b"abc")],
            body,
            at(0),
        );
        assert_eq!(
            e,
            LlmError::RateLimited {
                provider: Provider::OpenAi,
                retry_after: Some(Duration::from_secs(20)),
                message: "Rate limit reached for gpt-4o".to_owned(),
            }
        );
        assert!(e.is_retryable());
        assert_eq!(e.retry_after(), Some(Duration::from_secs(20)));
        assert_eq!(e.code(), "llm_rate_limited");
        assert!(e.to_string().contains("retry after 20s"), "{e}");
    }

    #[test]
    fn rate_limit_with_http_date() {
        // Sun, 06 Nov 1994 08:49:37 GMT is 784111777.
        let date = b"Sun, 06 Nov 1994 08:49:37 GMT";
        let e = status_error(
            Provider::Anthropic,
            429,
            [("retry-after", date.as_slice())],
            b"",
            at(784_111_770),
        );
        assert_eq!(e.retry_after(), Some(Duration::from_secs(7)));
        let past = status_error(
            Provider::Anthropic,
            429,
            [("retry-after", date.as_slice())],
            b"",
            at(784_111_800),
        );
        assert_eq!(past.retry_after(), Some(Duration::ZERO));
        let junk = status_error(
            Provider::Anthropic,
            429,
            [("retry-after", b"soon".as_slice())],
            b"",
            at(0),
        );
        assert_eq!(junk.retry_after(), None);
    }

    #[test]
    fn anthropic_overloaded_is_a_retryable_server_error() {
        let body =
            br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
        let e = status_error(Provider::Anthropic, 529, [], body, at(0));
        assert_eq!(
            e,
            LlmError::ServerError {
                provider: Provider::Anthropic,
                status: 529,
                message: "Overloaded".to_owned()
            }
        );
        assert!(e.is_retryable());
    }

    #[test]
    fn client_errors_are_not_retryable_and_carry_the_type() {
        let body = br#"{"type":"error","error":{"type":"invalid_request_error","message":"max_tokens: field required"}}"#;
        let e = status_error(Provider::Anthropic, 400, [], body, at(0));
        assert!(!e.is_retryable());
        assert_eq!(
            e.to_string(),
            "anthropic refused the request with HTTP 400: max_tokens: field required"
        );
        let e = status_error(
            Provider::Ollama,
            404,
            [],
            br#"{"error":"model \"llama9\" not found, try pulling it first"}"#,
            at(0),
        );
        assert!(e.to_string().contains("model \"llama9\" not found"), "{e}");
        assert_eq!(e.code(), "llm_client_error");
    }

    #[test]
    fn unparsed_bodies_are_shown_truncated() {
        let e = status_error(
            Provider::OpenAi,
            502,
            [],
            b"<html>Bad Gateway</html>",
            at(0),
        );
        assert!(e.to_string().ends_with("<html>Bad Gateway</html>"), "{e}");
        let long = vec![b'x'; 10_000];
        let e = status_error(Provider::OpenAi, 500, [], &long, at(0));
        assert!(e.to_string().len() < MESSAGE_LIMIT + 100);
        let e = status_error(Provider::Ollama, 500, [], b"  ", at(0));
        assert!(e.to_string().contains("(empty body)"), "{e}");
    }

    #[test]
    fn no_header_value_reaches_the_error() {
        let e = status_error(
            Provider::Anthropic,
            401,
            [("x-api-key", b"sk-ant-SECRET".as_slice()), ("authorization", b"Bearer sk-SECRET")],
            br#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}"#,
            at(0),
        );
        assert!(!format!("{e} {e:?}").contains("SECRET"));
    }
}
