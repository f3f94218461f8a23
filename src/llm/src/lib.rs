//! The wire formats of the three LLM providers the agent loop speaks — OpenAI-compatible chat
//! completions ([`openai`]), Anthropic Messages ([`anthropic`]) and Ollama's native chat API
//! ([`ollama`]) — over one provider-neutral conversation model ([`model`]).
//!
//! Each provider module has serde types for its request (built by its `request` function from
//! [`Message`]s and [`ToolSpec`]s), its non-streamed answer (`parse_response` → [`Turn`]) and an
//! incremental, bounded stream `Decoder` ([`StreamDecoder`]) whose [`StreamEvent`]s an
//! [`Assembler`] turns into a [`Turn`]. [`status_error`] types a non-success HTTP answer.
//!
//! The crate is pure and synchronous: no HTTP client, no I/O. It never sees API keys.

mod answer;
pub mod anthropic;
pub mod error;
pub mod http_error;
pub mod model;
pub mod ollama;
pub mod openai;
pub mod stream;

pub use error::LlmError;
pub use http_error::{parse_retry_after, status_error};
pub use model::{Message, Provider, StopReason, ToolCall, ToolSpec, Turn, Usage};
pub use stream::{Assembler, DEFAULT_LINE_LIMIT, StreamDecoder, StreamEvent, decode_all};

/// A fresh stream decoder for `provider` with the default cap.
pub fn decoder(provider: Provider) -> Box<dyn StreamDecoder + Send> {
    match provider {
        Provider::OpenAi => Box::new(openai::Decoder::default()),
        Provider::Anthropic => Box::new(anthropic::Decoder::default()),
        Provider::Ollama => Box::new(ollama::Decoder::default()),
    }
}

/// The path a request to `provider` goes to, joined to its base URL: its module's `PATH`.
pub fn path(provider: Provider) -> &'static str {
    match provider {
        Provider::OpenAi => openai::PATH,
        Provider::Anthropic => anthropic::PATH,
        Provider::Ollama => ollama::PATH,
    }
}

/// The body of a request to `provider` for `model`: its typed request, serialized
/// (`official`: the provider's own API, not a compatible server — OpenAI's takes the token
/// cap under another name).
pub fn request_body(
    provider: Provider,
    official: bool,
    model: &str,
    messages: &[Message],
    tools: &[ToolSpec],
    max_tokens: u32,
    stream: bool,
) -> Result<Vec<u8>, serde_json::Error> {
    match provider {
        Provider::OpenAi => {
            let request = openai::request(model, messages, tools, max_tokens, stream);
            serde_json::to_vec(&if official {
                request.for_openai()
            } else {
                request
            })
        }
        Provider::Anthropic => serde_json::to_vec(&anthropic::request(
            model, messages, tools, max_tokens, stream,
        )),
        Provider::Ollama => {
            serde_json::to_vec(&ollama::request(model, messages, tools, max_tokens, stream))
        }
    }
}
