//! The provider-neutral conversation: what the agent loop keeps, and what each provider module
//! translates to and from its wire format.

use serde::{Deserialize, Serialize};

/// One message of a conversation, in the order the model sees them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "role", rename_all = "snake_case")]
pub enum Message {
    /// Instructions for the model. Providers with a top-level system field (Anthropic) collect
    /// every system message there, joined by blank lines.
    System {
        /// The instructions.
        text: String,
    },
    /// What the person (or the loop on their behalf) says.
    User {
        /// The text.
        text: String,
    },
    /// What the model answered earlier: its text and the tool calls it asked for.
    Assistant {
        /// The text (may be empty when the model only called tools).
        text: String,
        /// The tool calls, in the order the model made them.
        tool_calls: Vec<ToolCall>,
    },
    /// The result of one tool call, sent back to the model.
    ToolResult {
        /// The id of the call this answers ([`ToolCall::id`]).
        call_id: String,
        /// What the tool returned (or why it failed).
        content: String,
        /// Whether the call failed (denied by policy, invalid arguments, non-zero exit, ...).
        is_error: bool,
    },
}

impl Message {
    /// A user message.
    pub fn user(text: impl Into<String>) -> Self {
        Self::User { text: text.into() }
    }

    /// A system message.
    pub fn system(text: impl Into<String>) -> Self {
        Self::System { text: text.into() }
    }
}

/// A tool offered to the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolSpec {
    /// The name the model calls it by.
    pub name: String,
    /// What it does, for the model.
    pub description: String,
    /// The JSON Schema of its arguments (an object schema).
    pub input_schema: serde_json::Value,
}

/// A tool call the model made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The provider's id for the call (generated for providers that have none, such as Ollama).
    pub id: String,
    /// The tool's name.
    pub name: String,
    /// The arguments, parsed from the model's JSON (`{}` when they did not parse).
    pub arguments: serde_json::Value,
    /// Why the model's arguments did not parse as JSON, when they did not: the call is kept
    /// (so the conversation stays whole) and answered with this as its error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub malformed: Option<String>,
}

/// Why the model stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// It finished its answer.
    EndTurn,
    /// It wants the results of its tool calls.
    ToolUse,
    /// It ran into the token limit.
    MaxTokens,
    /// It produced a stop sequence.
    StopSequence,
    /// The provider filtered or refused the content.
    ContentFilter,
    /// A reason this crate does not know, as the provider spelled it.
    Other(String),
}

/// Token counts of one model call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens of the prompt (the whole conversation sent).
    pub input_tokens: u64,
    /// Tokens the model generated.
    pub output_tokens: u64,
}

/// What the model answered in one call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Turn {
    /// Its text, concatenated.
    pub text: String,
    /// Its tool calls, in order.
    pub tool_calls: Vec<ToolCall>,
    /// Why it stopped.
    pub stop_reason: StopReason,
    /// Tokens used.
    pub usage: Usage,
}

impl Turn {
    /// The assistant message to append to the conversation for this answer.
    pub fn to_message(&self) -> Message {
        Message::Assistant {
            text: self.text.clone(),
            tool_calls: self.tool_calls.clone(),
        }
    }
}

/// The three wire formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    /// OpenAI-compatible chat completions (OpenAI, vLLM, llama.cpp's server, LM Studio, ...).
    OpenAi,
    /// Anthropic Messages.
    Anthropic,
    /// Ollama's native chat API.
    Ollama,
}

impl std::fmt::Display for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::OpenAi => "openai",
            Self::Anthropic => "anthropic",
            Self::Ollama => "ollama",
        })
    }
}
