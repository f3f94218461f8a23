//! OpenAI-compatible chat completions (`POST /v1/chat/completions`): OpenAI, vLLM, llama.cpp's
//! server, LM Studio, ... Streaming is SSE: `data: {chunk}` events whose `delta.tool_calls[i]`
//! arrive in fragments, ended by `data: [DONE]`.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::error::LlmError;
use crate::model::{Message, Provider, StopReason, ToolSpec, Turn, Usage};
use crate::stream::{Assembler, DEFAULT_LINE_LIMIT, SseParser, StreamEvent};

const PROVIDER: Provider = Provider::OpenAi;

/// The request path, joined to the base URL — which for these servers ends in the API
/// version (`https://api.openai.com/v1`, `http://localhost:8000/v1`), so the request goes to
/// `/v1/chat/completions`.
pub const PATH: &str = "/chat/completions";

/// The body of `POST /v1/chat/completions`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    /// The model's name.
    pub model: String,
    /// The conversation.
    pub messages: Vec<ChatMessage>,
    /// The tools offered.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<ToolDef>,
    /// The cap on generated tokens as every compatible server takes it (`max_tokens`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// The same cap as OpenAI's own API now takes it (`max_completion_tokens`: its reasoning
    /// models refuse `max_tokens`); see [`ChatRequest::for_openai`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<u32>,
    /// Whether to stream the answer.
    #[serde(default)]
    pub stream: bool,
    /// Streaming options: asks for the usage chunk at the end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
}

impl ChatRequest {
    /// The request as OpenAI's own API wants it: the cap as `max_completion_tokens`.
    #[must_use]
    pub fn for_openai(mut self) -> Self {
        self.max_completion_tokens = self.max_tokens.take().or(self.max_completion_tokens);
        self
    }
}

/// `stream_options`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamOptions {
    /// Send a last chunk with the token usage.
    pub include_usage: bool,
}

/// One message on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "role", rename_all = "snake_case")]
pub enum ChatMessage {
    /// `role: "system"`.
    System {
        /// The instructions.
        content: String,
    },
    /// `role: "user"`.
    User {
        /// The text.
        content: String,
    },
    /// `role: "assistant"`, with its tool calls.
    Assistant {
        /// The text; absent when the model only called tools.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        content: Option<String>,
        /// The tool calls.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        tool_calls: Vec<WireToolCall>,
    },
    /// `role: "tool"`: a tool call's result.
    Tool {
        /// The call it answers.
        tool_call_id: String,
        /// The result; a failed call's starts with `error: ` (the format has no error flag).
        content: String,
    },
}

/// A tool call in an assistant message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireToolCall {
    /// The call's id.
    pub id: String,
    /// Always `function`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The function called.
    pub function: WireFunction,
}

/// The function of a [`WireToolCall`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireFunction {
    /// The tool's name.
    pub name: String,
    /// The arguments as a JSON string.
    pub arguments: String,
}

/// A tool offered: `{type: "function", function: {name, description, parameters}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolDef {
    /// Always `function`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The function.
    pub function: FunctionDef,
}

/// The function of a [`ToolDef`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionDef {
    /// Its name.
    pub name: String,
    /// What it does.
    pub description: String,
    /// The JSON Schema of its arguments.
    pub parameters: serde_json::Value,
}

impl From<&ToolSpec> for ToolDef {
    fn from(spec: &ToolSpec) -> Self {
        Self {
            kind: "function".to_owned(),
            function: FunctionDef {
                name: spec.name.clone(),
                description: spec.description.clone(),
                parameters: spec.input_schema.clone(),
            },
        }
    }
}

/// Builds the request for `model` from the neutral conversation.
pub fn request(
    model: &str,
    messages: &[Message],
    tools: &[ToolSpec],
    max_tokens: u32,
    stream: bool,
) -> ChatRequest {
    let mut wire = Vec::with_capacity(messages.len());
    for message in messages {
        wire.push(match message {
            Message::System { text } => ChatMessage::System {
                content: text.clone(),
            },
            Message::User { text } => ChatMessage::User {
                content: text.clone(),
            },
            Message::Assistant { text, tool_calls } => ChatMessage::Assistant {
                content: (!text.is_empty() || tool_calls.is_empty()).then(|| text.clone()),
                tool_calls: tool_calls
                    .iter()
                    .map(|call| WireToolCall {
                        id: call.id.clone(),
                        kind: "function".to_owned(),
                        function: WireFunction {
                            name: call.name.clone(),
                            // `Value`'s Display is its JSON serialisation.
                            arguments: call.arguments.to_string(),
                        },
                    })
                    .collect(),
            },
            Message::ToolResult {
                call_id,
                content,
                is_error,
            } => ChatMessage::Tool {
                tool_call_id: call_id.clone(),
                content: if *is_error {
                    format!("error: {content}")
                } else {
                    content.clone()
                },
            },
        });
    }
    ChatRequest {
        model: model.to_owned(),
        messages: wire,
        tools: tools.iter().map(ToolDef::from).collect(),
        max_tokens: Some(max_tokens),
        max_completion_tokens: None,
        stream,
        stream_options: stream.then_some(StreamOptions {
            include_usage: true,
        }),
    }
}

/// `usage` of an answer or of the last stream chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireUsage {
    /// Prompt tokens.
    #[serde(default)]
    pub prompt_tokens: u64,
    /// Generated tokens.
    #[serde(default)]
    pub completion_tokens: u64,
}

impl From<WireUsage> for Usage {
    fn from(u: WireUsage) -> Self {
        Self {
            input_tokens: u.prompt_tokens,
            output_tokens: u.completion_tokens,
        }
    }
}

/// The provider's error object, `{error: {message, type, code}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorObject {
    /// What went wrong.
    pub message: String,
    /// The error type (`invalid_request_error`, `server_error`, ...).
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    /// A code (a string at OpenAI, sometimes a number elsewhere).
    #[serde(default)]
    pub code: Option<serde_json::Value>,
}

/// An error body: `{error: {...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorObject,
}

/// A non-streamed answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatResponse {
    /// The choices (the first is used).
    #[serde(default)]
    pub choices: Vec<Choice>,
    /// Tokens used.
    #[serde(default)]
    pub usage: Option<WireUsage>,
}

/// One choice of an answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Choice {
    /// The assistant message.
    pub message: ResponseMessage,
    /// Why it stopped.
    #[serde(default)]
    pub finish_reason: Option<String>,
}

/// The assistant message of a [`Choice`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResponseMessage {
    /// The text.
    #[serde(default)]
    pub content: Option<String>,
    /// The tool calls.
    #[serde(default)]
    pub tool_calls: Option<Vec<WireToolCall>>,
}

impl ChatResponse {
    /// The answer as a [`Turn`].
    pub fn into_turn(self) -> Result<Turn, LlmError> {
        let mut assembler = Assembler::new(PROVIDER);
        let Some(choice) = self.choices.into_iter().next() else {
            return Err(LlmError::Malformed {
                provider: PROVIDER,
                what: "answer",
                detail: "no choices".to_owned(),
            });
        };
        if let Some(text) = choice.message.content {
            assembler.push(StreamEvent::TextDelta(text));
        }
        for (index, call) in choice.message.tool_calls.into_iter().flatten().enumerate() {
            assembler.push(StreamEvent::ToolCallStarted {
                index,
                id: call.id,
                name: call.function.name,
            });
            assembler.push(StreamEvent::ToolCallArgs {
                index,
                fragment: call.function.arguments,
            });
        }
        assembler.push(StreamEvent::Done {
            stop_reason: stop_reason(choice.finish_reason.as_deref()),
            usage: self.usage.map(Usage::from).unwrap_or_default(),
        });
        assembler.finish()
    }
}

/// Parses a non-streamed answer body (HTTP 200) into a [`Turn`].
pub fn parse_response(body: &[u8]) -> Result<Turn, LlmError> {
    crate::answer::parse::<ErrorBody, _>(PROVIDER, body, ChatResponse::into_turn)
}

impl crate::answer::ErrorBody for ErrorBody {
    fn into_parts(self) -> (Option<String>, String) {
        (self.error.kind, self.error.message)
    }
}

/// Maps `finish_reason`.
pub fn stop_reason(reason: Option<&str>) -> StopReason {
    match reason {
        None | Some("stop") => StopReason::EndTurn,
        Some("tool_calls" | "function_call") => StopReason::ToolUse,
        Some("length") => StopReason::MaxTokens,
        Some("content_filter") => StopReason::ContentFilter,
        Some(other) => StopReason::Other(other.to_owned()),
    }
}

/// One `data:` chunk of a stream.
#[derive(Debug, Clone, PartialEq, Deserialize)]
struct Chunk {
    #[serde(default)]
    choices: Option<Vec<ChunkChoice>>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default)]
    error: Option<ErrorObject>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
struct ChunkChoice {
    #[serde(default)]
    delta: Option<Delta>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
struct Delta {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<DeltaToolCall>>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
struct DeltaToolCall {
    #[serde(default)]
    index: Option<usize>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<DeltaFunction>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
struct DeltaFunction {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<String>,
}

/// The incremental decoder of an OpenAI-compatible SSE stream.
#[derive(Debug)]
pub struct Decoder {
    sse: SseParser,
    started: BTreeSet<usize>,
    finish_reason: Option<String>,
    usage: Usage,
    over: bool,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new(DEFAULT_LINE_LIMIT)
    }
}

impl Decoder {
    /// A decoder holding at most `limit` bytes of one event.
    pub fn new(limit: usize) -> Self {
        Self {
            sse: SseParser::new(PROVIDER, limit),
            started: BTreeSet::new(),
            finish_reason: None,
            usage: Usage::default(),
            over: false,
        }
    }

    fn on_data(&mut self, data: &str, out: &mut Vec<StreamEvent>) -> Result<(), LlmError> {
        if self.over {
            return Ok(());
        }
        if data.trim() == "[DONE]" {
            self.over = true;
            out.push(StreamEvent::Done {
                stop_reason: stop_reason(self.finish_reason.as_deref()),
                usage: self.usage,
            });
            return Ok(());
        }
        let chunk: Chunk = serde_json::from_str(data).map_err(|e| LlmError::Malformed {
            provider: PROVIDER,
            what: "stream chunk",
            detail: e.to_string(),
        })?;
        if let Some(error) = chunk.error {
            self.over = true;
            out.push(StreamEvent::ProviderError {
                kind: error.kind,
                message: error.message,
            });
            return Ok(());
        }
        if let Some(usage) = chunk.usage {
            self.usage = usage.into();
        }
        for choice in chunk.choices.into_iter().flatten() {
            if let Some(reason) = choice.finish_reason {
                self.finish_reason = Some(reason);
            }
            let Some(delta) = choice.delta else { continue };
            if let Some(text) = delta.content.filter(|t| !t.is_empty()) {
                out.push(StreamEvent::TextDelta(text));
            }
            for (position, call) in delta.tool_calls.into_iter().flatten().enumerate() {
                let index = call.index.unwrap_or(position);
                let (name, args) = match call.function {
                    Some(f) => (f.name, f.arguments),
                    None => (None, None),
                };
                if self.started.insert(index) {
                    out.push(StreamEvent::ToolCallStarted {
                        index,
                        id: call.id.unwrap_or_else(|| format!("call_{index}")),
                        name: name.unwrap_or_default(),
                    });
                }
                if let Some(fragment) = args.filter(|a| !a.is_empty()) {
                    out.push(StreamEvent::ToolCallArgs { index, fragment });
                }
            }
        }
        Ok(())
    }
}

impl crate::stream::SseDecoding for Decoder {
    const PROVIDER: Provider = PROVIDER;

    fn sse(&mut self) -> &mut SseParser {
        &mut self.sse
    }

    fn on_data(&mut self, data: &str, out: &mut Vec<StreamEvent>) -> Result<(), LlmError> {
        Decoder::on_data(self, data, out)
    }

    fn over(&self) -> bool {
        self.over
    }

    fn held(&self) -> usize {
        self.sse.buffered_len()
    }
}
