//! Anthropic Messages (`POST /v1/messages`, headers `x-api-key` and
//! `anthropic-version: 2023-06-01`). Streaming is SSE: `message_start`, `content_block_start`,
//! `content_block_delta` (`text_delta`, `input_json_delta`), `content_block_stop`,
//! `message_delta`, `message_stop`, with `ping` and `error` between.

use serde::{Deserialize, Serialize};

use crate::error::LlmError;
use crate::model::{Message, Provider, StopReason, ToolSpec, Turn, Usage};
use crate::stream::{Assembler, DEFAULT_LINE_LIMIT, SseParser, StreamEvent};

const PROVIDER: Provider = Provider::Anthropic;

/// The request path, joined to the base URL (`https://api.anthropic.com`).
pub const PATH: &str = "/v1/messages";
/// The `anthropic-version` header's value this format is.
pub const API_VERSION: &str = "2023-06-01";

/// The body of `POST /v1/messages`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessagesRequest {
    /// The model's name.
    pub model: String,
    /// The cap on generated tokens (required by the API).
    pub max_tokens: u32,
    /// The system prompt: every system message, joined by blank lines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    /// The conversation, alternating user and assistant.
    pub messages: Vec<WireMessage>,
    /// The tools offered.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<ToolDef>,
    /// Whether to stream the answer.
    #[serde(default)]
    pub stream: bool,
}

/// Who speaks a [`WireMessage`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The person, and tool results.
    User,
    /// The model.
    Assistant,
}

/// One message: a role and its content blocks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireMessage {
    /// Who speaks.
    pub role: Role,
    /// What they say.
    pub content: Vec<ContentBlock>,
}

/// A content block, in requests and answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentBlock {
    /// Text.
    Text {
        /// The text (never empty in a request: the API refuses empty text blocks).
        text: String,
    },
    /// A tool call by the model.
    ToolUse {
        /// The call's id.
        id: String,
        /// The tool's name.
        name: String,
        /// The arguments.
        input: serde_json::Value,
    },
    /// A tool call's result.
    ToolResult {
        /// The call it answers.
        tool_use_id: String,
        /// The result.
        content: String,
        /// Whether the call failed.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        is_error: bool,
    },
    /// A block this crate does not use (thinking, server tools, ...).
    #[serde(other)]
    Unknown,
}

/// A tool offered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolDef {
    /// Its name.
    pub name: String,
    /// What it does.
    pub description: String,
    /// The JSON Schema of its input.
    pub input_schema: serde_json::Value,
}

/// Builds the request for `model` from the neutral conversation: system messages go to
/// `system`, tool results become user `tool_result` blocks, consecutive messages of one role
/// merge into one, and empty text is left out.
pub fn request(
    model: &str,
    messages: &[Message],
    tools: &[ToolSpec],
    max_tokens: u32,
    stream: bool,
) -> MessagesRequest {
    let mut system: Vec<&str> = Vec::new();
    let mut wire: Vec<WireMessage> = Vec::new();
    for message in messages {
        let (role, blocks) = match message {
            Message::System { text } => {
                system.push(text);
                continue;
            }
            Message::User { text } => (Role::User, text_block(text).into_iter().collect()),
            Message::Assistant { text, tool_calls } => {
                let mut blocks: Vec<ContentBlock> = text_block(text).into_iter().collect();
                blocks.extend(tool_calls.iter().map(|call| ContentBlock::ToolUse {
                    id: call.id.clone(),
                    name: call.name.clone(),
                    input: call.arguments.clone(),
                }));
                (Role::Assistant, blocks)
            }
            Message::ToolResult {
                call_id,
                content,
                is_error,
            } => (
                Role::User,
                vec![ContentBlock::ToolResult {
                    tool_use_id: call_id.clone(),
                    content: content.clone(),
                    is_error: *is_error,
                }],
            ),
        };
        if blocks.is_empty() {
            continue;
        }
        match wire.last_mut() {
            Some(last) if last.role == role => last.content.extend(blocks),
            _ => wire.push(WireMessage {
                role,
                content: blocks,
            }),
        }
    }
    MessagesRequest {
        model: model.to_owned(),
        max_tokens,
        system: (!system.is_empty()).then(|| system.join("\n\n")),
        messages: wire,
        tools: tools
            .iter()
            .map(|t| ToolDef {
                name: t.name.clone(),
                description: t.description.clone(),
                input_schema: t.input_schema.clone(),
            })
            .collect(),
        stream,
    }
}

fn text_block(text: &str) -> Option<ContentBlock> {
    (!text.is_empty()).then(|| ContentBlock::Text {
        text: text.to_owned(),
    })
}

/// `usage` of an answer or stream event; fields absent in some events.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireUsage {
    /// Prompt tokens.
    #[serde(default)]
    pub input_tokens: Option<u64>,
    /// Generated tokens.
    #[serde(default)]
    pub output_tokens: Option<u64>,
}

/// A non-streamed answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessagesResponse {
    /// The content blocks.
    pub content: Vec<ContentBlock>,
    /// Why it stopped.
    #[serde(default)]
    pub stop_reason: Option<String>,
    /// Tokens used.
    #[serde(default)]
    pub usage: WireUsage,
}

/// The provider's error object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorObject {
    /// The error type (`overloaded_error`, `invalid_request_error`, ...).
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    /// What went wrong.
    pub message: String,
}

/// An error body: `{type: "error", error: {type, message}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorObject,
}

impl MessagesResponse {
    /// The answer as a [`Turn`].
    pub fn into_turn(self) -> Result<Turn, LlmError> {
        let mut assembler = Assembler::new(PROVIDER);
        for (index, block) in self.content.into_iter().enumerate() {
            match block {
                ContentBlock::Text { text } => assembler.push(StreamEvent::TextDelta(text)),
                ContentBlock::ToolUse { id, name, input } => {
                    assembler.push(StreamEvent::ToolCallStarted { index, id, name });
                    assembler.push(StreamEvent::ToolCallArgs {
                        index,
                        fragment: input.to_string(),
                    });
                }
                ContentBlock::ToolResult { .. } | ContentBlock::Unknown => {}
            }
        }
        assembler.push(StreamEvent::Done {
            stop_reason: stop_reason(self.stop_reason.as_deref()),
            usage: Usage {
                input_tokens: self.usage.input_tokens.unwrap_or(0),
                output_tokens: self.usage.output_tokens.unwrap_or(0),
            },
        });
        assembler.finish()
    }
}

/// Parses a non-streamed answer body (HTTP 200) into a [`Turn`].
pub fn parse_response(body: &[u8]) -> Result<Turn, LlmError> {
    crate::answer::parse::<ErrorBody, _>(PROVIDER, body, MessagesResponse::into_turn)
}

impl crate::answer::ErrorBody for ErrorBody {
    fn into_parts(self) -> (Option<String>, String) {
        (self.error.kind, self.error.message)
    }
}

/// Maps `stop_reason`.
pub fn stop_reason(reason: Option<&str>) -> StopReason {
    match reason {
        None | Some("end_turn") => StopReason::EndTurn,
        Some("tool_use") => StopReason::ToolUse,
        Some("max_tokens") => StopReason::MaxTokens,
        Some("stop_sequence") => StopReason::StopSequence,
        Some("refusal") => StopReason::ContentFilter,
        Some(other) => StopReason::Other(other.to_owned()),
    }
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Event {
    MessageStart {
        message: StartMessage,
    },
    ContentBlockStart {
        index: usize,
        content_block: StartBlock,
    },
    ContentBlockDelta {
        index: usize,
        delta: BlockDelta,
    },
    MessageDelta {
        delta: MessageDeltaBody,
        #[serde(default)]
        usage: Option<WireUsage>,
    },
    MessageStop,
    Error {
        error: ErrorObject,
    },
    /// `ping`, `content_block_stop` and events added later.
    #[serde(other)]
    Other,
}

#[derive(Debug, Deserialize)]
struct StartMessage {
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum StartBlock {
    Text {
        #[serde(default)]
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
    },
    #[serde(other)]
    Other,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum BlockDelta {
    TextDelta {
        text: String,
    },
    InputJsonDelta {
        partial_json: String,
    },
    #[serde(other)]
    Other,
}

#[derive(Debug, Deserialize)]
struct MessageDeltaBody {
    #[serde(default)]
    stop_reason: Option<String>,
}

/// The incremental decoder of an Anthropic Messages SSE stream.
#[derive(Debug)]
pub struct Decoder {
    sse: SseParser,
    stop_reason: Option<String>,
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
            stop_reason: None,
            usage: Usage::default(),
            over: false,
        }
    }

    fn merge_usage(&mut self, usage: WireUsage) {
        if let Some(n) = usage.input_tokens {
            self.usage.input_tokens = n;
        }
        if let Some(n) = usage.output_tokens {
            self.usage.output_tokens = n;
        }
    }

    fn on_data(&mut self, data: &str, out: &mut Vec<StreamEvent>) -> Result<(), LlmError> {
        if self.over {
            return Ok(());
        }
        let event: Event = serde_json::from_str(data).map_err(|e| LlmError::Malformed {
            provider: PROVIDER,
            what: "stream event",
            detail: e.to_string(),
        })?;
        match event {
            Event::MessageStart { message } => {
                if let Some(usage) = message.usage {
                    self.merge_usage(usage);
                }
            }
            Event::ContentBlockStart {
                index,
                content_block,
            } => match content_block {
                StartBlock::Text { text } if !text.is_empty() => {
                    out.push(StreamEvent::TextDelta(text))
                }
                StartBlock::ToolUse { id, name } => {
                    out.push(StreamEvent::ToolCallStarted { index, id, name })
                }
                StartBlock::Text { .. } | StartBlock::Other => {}
            },
            Event::ContentBlockDelta { index, delta } => match delta {
                BlockDelta::TextDelta { text } => out.push(StreamEvent::TextDelta(text)),
                BlockDelta::InputJsonDelta { partial_json } => {
                    out.push(StreamEvent::ToolCallArgs {
                        index,
                        fragment: partial_json,
                    })
                }
                BlockDelta::Other => {}
            },
            Event::MessageDelta { delta, usage } => {
                if let Some(reason) = delta.stop_reason {
                    self.stop_reason = Some(reason);
                }
                if let Some(usage) = usage {
                    self.merge_usage(usage);
                }
            }
            Event::MessageStop => {
                self.over = true;
                out.push(StreamEvent::Done {
                    stop_reason: stop_reason(self.stop_reason.as_deref()),
                    usage: self.usage,
                });
            }
            Event::Error { error } => {
                self.over = true;
                out.push(StreamEvent::ProviderError {
                    kind: error.kind,
                    message: error.message,
                });
            }
            Event::Other => {}
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
