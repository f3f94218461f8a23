//! Ollama's native chat API (`POST /api/chat`). Streaming is NDJSON: one JSON object per line,
//! the last with `done: true`; tool calls arrive whole, their arguments as a JSON object.

use serde::{Deserialize, Serialize};

use crate::error::LlmError;
use crate::model::{Message, Provider, StopReason, ToolSpec, Turn, Usage};
use crate::openai::ToolDef;
use crate::stream::{Assembler, DEFAULT_LINE_LIMIT, LineBuffer, StreamDecoder, StreamEvent};

const PROVIDER: Provider = Provider::Ollama;

/// The request path, joined to the base URL (`http://127.0.0.1:11434`).
pub const PATH: &str = "/api/chat";

/// The body of `POST /api/chat`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    /// The model's name.
    pub model: String,
    /// The conversation.
    pub messages: Vec<WireMessage>,
    /// The tools offered (the same shape as OpenAI's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<ToolDef>,
    /// Whether to stream (Ollama's default is to stream, so it is always sent).
    pub stream: bool,
    /// Model options.
    pub options: Options,
}

/// `options` of a request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Options {
    /// The cap on generated tokens.
    pub num_predict: u32,
}

/// Who speaks a [`WireMessage`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Instructions.
    System,
    /// The person.
    User,
    /// The model.
    Assistant,
    /// A tool's result.
    Tool,
}

/// One message, in requests and answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireMessage {
    /// Who speaks.
    pub role: Role,
    /// The text (a tool's result for [`Role::Tool`]).
    #[serde(default)]
    pub content: String,
    /// The model's tool calls.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<WireToolCall>,
    /// For [`Role::Tool`]: the tool whose result this is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_name: Option<String>,
}

/// A tool call: `{function: {name, arguments: OBJECT}}` (newer servers add an `id`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireToolCall {
    /// The call's id, when the server gives one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The function called.
    pub function: WireFunction,
}

/// The function of a [`WireToolCall`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireFunction {
    /// The tool's name.
    pub name: String,
    /// The arguments, a JSON object.
    #[serde(default)]
    pub arguments: serde_json::Value,
}

/// Builds the request for `model` from the neutral conversation. A tool result carries the
/// name of the tool whose call it answers (found by call id among earlier assistant messages);
/// a failed call's content starts with `error: `.
pub fn request(
    model: &str,
    messages: &[Message],
    tools: &[ToolSpec],
    max_tokens: u32,
    stream: bool,
) -> ChatRequest {
    let tool_name = |call_id: &str| {
        messages.iter().find_map(|m| match m {
            Message::Assistant { tool_calls, .. } => tool_calls
                .iter()
                .find(|c| c.id == call_id)
                .map(|c| c.name.clone()),
            _ => None,
        })
    };
    let plain = |role, content: &String| WireMessage {
        role,
        content: content.clone(),
        tool_calls: Vec::new(),
        tool_name: None,
    };
    let wire = messages
        .iter()
        .map(|message| match message {
            Message::System { text } => plain(Role::System, text),
            Message::User { text } => plain(Role::User, text),
            Message::Assistant { text, tool_calls } => WireMessage {
                tool_calls: tool_calls
                    .iter()
                    .map(|c| WireToolCall {
                        id: None,
                        function: WireFunction {
                            name: c.name.clone(),
                            arguments: c.arguments.clone(),
                        },
                    })
                    .collect(),
                ..plain(Role::Assistant, text)
            },
            Message::ToolResult {
                call_id,
                content,
                is_error,
            } => WireMessage {
                tool_name: tool_name(call_id),
                ..plain(
                    Role::Tool,
                    &if *is_error {
                        format!("error: {content}")
                    } else {
                        content.clone()
                    },
                )
            },
        })
        .collect();
    ChatRequest {
        model: model.to_owned(),
        messages: wire,
        tools: tools.iter().map(ToolDef::from).collect(),
        stream,
        options: Options {
            num_predict: max_tokens,
        },
    }
}

/// One NDJSON line of a stream, or the whole non-streamed answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatResponse {
    /// The (piece of the) assistant message.
    #[serde(default)]
    pub message: Option<WireMessage>,
    /// Whether this is the last line.
    #[serde(default)]
    pub done: bool,
    /// Why it stopped (`stop`, `length`, ...), on the last line.
    #[serde(default)]
    pub done_reason: Option<String>,
    /// Prompt tokens, on the last line.
    #[serde(default)]
    pub prompt_eval_count: Option<u64>,
    /// Generated tokens, on the last line.
    #[serde(default)]
    pub eval_count: Option<u64>,
    /// An error instead of an answer: `{error: "..."}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Maps `done_reason`.
pub fn stop_reason(reason: Option<&str>) -> StopReason {
    match reason {
        None | Some("stop") => StopReason::EndTurn,
        Some("length") => StopReason::MaxTokens,
        Some(other) => StopReason::Other(other.to_owned()),
    }
}

/// Parses a non-streamed answer body (HTTP 200) into a [`Turn`].
pub fn parse_response(body: &[u8]) -> Result<Turn, LlmError> {
    let mut decoder = Decoder::default();
    let mut assembler = Assembler::new(PROVIDER);
    let response: ChatResponse = serde_json::from_slice(body).map_err(|e| LlmError::Malformed {
        provider: PROVIDER,
        what: "answer",
        detail: e.to_string(),
    })?;
    let mut events = Vec::new();
    decoder.on_chunk(response, &mut events);
    assembler.extend(events);
    assembler.finish()
}

/// The incremental decoder of an Ollama NDJSON stream.
#[derive(Debug)]
pub struct Decoder {
    lines: LineBuffer,
    next_index: usize,
    over: bool,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new(DEFAULT_LINE_LIMIT)
    }
}

impl Decoder {
    /// A decoder holding at most `limit` bytes of one line.
    pub fn new(limit: usize) -> Self {
        Self {
            lines: LineBuffer::new(PROVIDER, limit),
            next_index: 0,
            over: false,
        }
    }

    fn on_line(&mut self, line: &str, out: &mut Vec<StreamEvent>) -> Result<(), LlmError> {
        if self.over || line.trim().is_empty() {
            return Ok(());
        }
        let chunk: ChatResponse = serde_json::from_str(line).map_err(|e| LlmError::Malformed {
            provider: PROVIDER,
            what: "stream line",
            detail: e.to_string(),
        })?;
        self.on_chunk(chunk, out);
        Ok(())
    }

    fn on_chunk(&mut self, chunk: ChatResponse, out: &mut Vec<StreamEvent>) {
        if let Some(message) = chunk.error {
            self.over = true;
            out.push(StreamEvent::ProviderError {
                kind: None,
                message,
            });
            return;
        }
        if let Some(message) = chunk.message {
            if !message.content.is_empty() {
                out.push(StreamEvent::TextDelta(message.content));
            }
            for call in message.tool_calls {
                let index = self.next_index;
                self.next_index += 1;
                out.push(StreamEvent::ToolCallStarted {
                    index,
                    id: call.id.unwrap_or_else(|| format!("ollama_call_{index}")),
                    name: call.function.name,
                });
                out.push(StreamEvent::ToolCallArgs {
                    index,
                    // `Value`'s Display is its JSON serialisation.
                    fragment: call.function.arguments.to_string(),
                });
            }
        }
        if chunk.done {
            self.over = true;
            out.push(StreamEvent::Done {
                stop_reason: stop_reason(chunk.done_reason.as_deref()),
                usage: Usage {
                    input_tokens: chunk.prompt_eval_count.unwrap_or(0),
                    output_tokens: chunk.eval_count.unwrap_or(0),
                },
            });
        }
    }
}

impl StreamDecoder for Decoder {
    fn feed(&mut self, bytes: &[u8]) -> Result<Vec<StreamEvent>, LlmError> {
        let mut out = Vec::new();
        let mut lines = Vec::new();
        self.lines.push(bytes, |line| {
            lines.push(line.to_owned());
            Ok(())
        })?;
        for line in lines {
            self.on_line(&line, &mut out)?;
        }
        Ok(out)
    }

    fn finish(&mut self) -> Result<Vec<StreamEvent>, LlmError> {
        let mut out = Vec::new();
        if self.lines.has_partial() {
            // NDJSON's last line may lack its newline: decode it if it is whole.
            let mut rest = Vec::new();
            self.lines.push(b"\n", |line| {
                rest.push(line.to_owned());
                Ok(())
            })?;
            for line in rest {
                if !self.over && serde_json::from_str::<ChatResponse>(&line).is_err() {
                    return Err(LlmError::StreamCut { provider: PROVIDER });
                }
                self.on_line(&line, &mut out)?;
            }
        }
        if !self.over {
            return Err(LlmError::StreamCut { provider: PROVIDER });
        }
        Ok(out)
    }

    fn buffered_len(&self) -> usize {
        self.lines.buffered_len()
    }
}
