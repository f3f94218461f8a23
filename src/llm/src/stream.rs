//! What the stream decoders share: the events they yield, the bounded line splitter and SSE
//! framing under them, and the [`Assembler`] that turns events into a [`Turn`].

use std::collections::BTreeMap;

use crate::error::LlmError;
use crate::model::{Provider, StopReason, ToolCall, Turn, Usage};

/// The default cap on one line (NDJSON) or one event (SSE) of a stream: 4 MiB.
pub const DEFAULT_LINE_LIMIT: usize = 4 << 20;

/// One step of a streamed answer, the same for every provider.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// More of the model's text.
    TextDelta(String),
    /// A tool call begins. `index` identifies it in the [`StreamEvent::ToolCallArgs`] that follow.
    ToolCallStarted {
        /// The call's position in the stream.
        index: usize,
        /// The call's id.
        id: String,
        /// The tool's name.
        name: String,
    },
    /// A piece of a tool call's JSON arguments; the pieces concatenate.
    ToolCallArgs {
        /// The call it belongs to.
        index: usize,
        /// The piece.
        fragment: String,
    },
    /// The answer is complete.
    Done {
        /// Why the model stopped.
        stop_reason: StopReason,
        /// Tokens used.
        usage: Usage,
    },
    /// The provider reported an error instead of finishing.
    ProviderError {
        /// The provider's error type, when it gives one.
        kind: Option<String>,
        /// The provider's message.
        message: String,
    },
}

/// An incremental decoder of one provider's stream.
///
/// Feed it the response body in whatever chunks arrive; it keeps at most one line or event
/// (bounded by its cap) between calls. After an error or a terminal event, the stream is over.
pub trait StreamDecoder {
    /// Decodes what `bytes` completes, returning the events in order.
    fn feed(&mut self, bytes: &[u8]) -> Result<Vec<StreamEvent>, LlmError>;
    /// The body ended: decodes what is left, or fails with [`LlmError::StreamCut`] when the
    /// terminal event never came.
    fn finish(&mut self) -> Result<Vec<StreamEvent>, LlmError>;
    /// Bytes held between calls (never more than the cap).
    fn buffered_len(&self) -> usize;
}

/// Splits bytes into lines (`\n`, with a `\r` before it dropped), holding at most `limit` bytes
/// of an unfinished line.
#[derive(Debug)]
pub(crate) struct LineBuffer {
    provider: Provider,
    limit: usize,
    partial: Vec<u8>,
}

impl LineBuffer {
    pub(crate) fn new(provider: Provider, limit: usize) -> Self {
        Self {
            provider,
            limit,
            partial: Vec::new(),
        }
    }

    pub(crate) fn buffered_len(&self) -> usize {
        self.partial.len()
    }

    /// Whether an unfinished line is held (the body ended mid-line).
    pub(crate) fn has_partial(&self) -> bool {
        !self.partial.is_empty()
    }

    fn too_long(&mut self) -> LlmError {
        self.partial = Vec::new();
        LlmError::LineTooLong {
            provider: self.provider,
            limit: self.limit,
        }
    }

    /// Calls `on_line` for each line `input` completes.
    pub(crate) fn push(
        &mut self,
        mut input: &[u8],
        mut on_line: impl FnMut(&str) -> Result<(), LlmError>,
    ) -> Result<(), LlmError> {
        while let Some(pos) = input.iter().position(|&b| b == b'\n') {
            let (head, rest) = input.split_at(pos);
            input = &rest[1..];
            if self.partial.len() + head.len() > self.limit {
                return Err(self.too_long());
            }
            let line = if self.partial.is_empty() {
                std::borrow::Cow::Borrowed(head)
            } else {
                self.partial.extend_from_slice(head);
                std::borrow::Cow::Owned(std::mem::take(&mut self.partial))
            };
            let line = line.strip_suffix(b"\r").unwrap_or(&line);
            let text = std::str::from_utf8(line).map_err(|_| LlmError::InvalidUtf8 {
                provider: self.provider,
            })?;
            on_line(text)?;
        }
        if self.partial.len() + input.len() > self.limit {
            return Err(self.too_long());
        }
        self.partial.extend_from_slice(input);
        Ok(())
    }
}

/// One server-sent event: its `event:` name (if any) and its `data:` lines joined by `\n`.
#[derive(Debug, Default)]
pub(crate) struct SseEvent {
    pub(crate) event: Option<String>,
    pub(crate) data: String,
}

/// What an SSE provider's decoder (OpenAI, Anthropic) supplies for [`sse_feed`] and
/// [`sse_finish`], which are the same for both.
pub(crate) trait SseDecoding {
    /// Whose stream.
    const PROVIDER: Provider;
    /// The event framing.
    fn sse(&mut self) -> &mut SseParser;
    /// Decodes one event's data.
    fn on_data(&mut self, data: &str, out: &mut Vec<StreamEvent>) -> Result<(), LlmError>;
    /// Whether the terminal event has come.
    fn over(&self) -> bool;
    /// Bytes the framing holds.
    fn held(&self) -> usize;
}

impl<D: SseDecoding> StreamDecoder for D {
    fn feed(&mut self, bytes: &[u8]) -> Result<Vec<StreamEvent>, LlmError> {
        sse_feed(self, bytes)
    }

    fn finish(&mut self) -> Result<Vec<StreamEvent>, LlmError> {
        sse_finish(self)
    }

    fn buffered_len(&self) -> usize {
        self.held()
    }
}

/// [`StreamDecoder::feed`] for an SSE decoder.
pub(crate) fn sse_feed<D: SseDecoding>(
    d: &mut D,
    bytes: &[u8],
) -> Result<Vec<StreamEvent>, LlmError> {
    let mut out = Vec::new();
    let mut events = Vec::new();
    d.sse().push(bytes, |event| {
        events.push(event);
        Ok(())
    })?;
    for event in events {
        d.on_data(&event.data, &mut out)?;
    }
    Ok(out)
}

/// [`StreamDecoder::finish`] for an SSE decoder.
pub(crate) fn sse_finish<D: SseDecoding>(d: &mut D) -> Result<Vec<StreamEvent>, LlmError> {
    let mut out = Vec::new();
    if let Some(event) = d.sse().finish()? {
        // An event without its blank line is whole if it parses; otherwise it was cut.
        d.on_data(&event.data, &mut out).map_err(|e| match e {
            LlmError::Malformed { .. } => LlmError::StreamCut {
                provider: D::PROVIDER,
            },
            other => other,
        })?;
    }
    if !d.over() {
        return Err(LlmError::StreamCut {
            provider: D::PROVIDER,
        });
    }
    Ok(out)
}

/// Server-sent-event framing over a [`LineBuffer`], each event bounded by the same cap.
#[derive(Debug)]
pub(crate) struct SseParser {
    lines: LineBuffer,
    pending: SseEvent,
    has_data: bool,
}

impl SseParser {
    pub(crate) fn new(provider: Provider, limit: usize) -> Self {
        Self {
            lines: LineBuffer::new(provider, limit),
            pending: SseEvent::default(),
            has_data: false,
        }
    }

    pub(crate) fn buffered_len(&self) -> usize {
        self.lines.buffered_len() + self.pending.data.len()
    }

    /// Calls `on_event` for each event `input` completes (at its blank line).
    pub(crate) fn push(
        &mut self,
        input: &[u8],
        mut on_event: impl FnMut(SseEvent) -> Result<(), LlmError>,
    ) -> Result<(), LlmError> {
        let Self {
            lines,
            pending,
            has_data,
        } = self;
        let provider = lines.provider;
        let limit = lines.limit;
        let result = lines.push(input, |line| {
            if line.is_empty() {
                if std::mem::take(has_data) {
                    on_event(std::mem::take(pending))?;
                } else {
                    *pending = SseEvent::default();
                }
                return Ok(());
            }
            let (field, value) = match line.split_once(':') {
                Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
                None => (line, ""),
            };
            match field {
                "data" => {
                    if pending.data.len() + value.len() + 1 > limit {
                        *pending = SseEvent::default();
                        *has_data = false;
                        return Err(LlmError::LineTooLong { provider, limit });
                    }
                    if *has_data {
                        pending.data.push('\n');
                    }
                    pending.data.push_str(value);
                    *has_data = true;
                }
                "event" => pending.event = Some(value.to_owned()),
                // Comments (`: ping`), `id:`, `retry:` and unknown fields carry nothing for us.
                _ => {}
            }
            Ok(())
        });
        // The event so far and its unfinished line share the one cap.
        if result.is_ok() && lines.partial.len() + pending.data.len() > limit {
            lines.partial = Vec::new();
            *pending = SseEvent::default();
            *has_data = false;
            return Err(LlmError::LineTooLong { provider, limit });
        }
        result
    }

    /// The body ended: the last event if it lacked its blank line (its last line may lack its
    /// newline too; if it was cut, the caller's parse of it fails and that is a cut stream).
    pub(crate) fn finish(&mut self) -> Result<Option<SseEvent>, LlmError> {
        if self.lines.has_partial() {
            self.push(b"\n", |_| Ok(()))?;
        }
        Ok(std::mem::take(&mut self.has_data).then(|| std::mem::take(&mut self.pending)))
    }
}

/// Builds a [`Turn`] from a stream's events.
#[derive(Debug)]
pub struct Assembler {
    provider: Provider,
    text: String,
    calls: BTreeMap<usize, (String, String, String)>,
    done: Option<(StopReason, Usage)>,
    error: Option<LlmError>,
}

impl Assembler {
    /// An empty assembler for `provider`'s stream.
    pub fn new(provider: Provider) -> Self {
        Self {
            provider,
            text: String::new(),
            calls: BTreeMap::new(),
            done: None,
            error: None,
        }
    }

    /// Takes in one event. Events after the terminal one are ignored.
    pub fn push(&mut self, event: StreamEvent) {
        if self.done.is_some() || self.error.is_some() {
            return;
        }
        match event {
            StreamEvent::TextDelta(text) => self.text.push_str(&text),
            StreamEvent::ToolCallStarted { index, id, name } => {
                self.calls.entry(index).or_insert((id, name, String::new()));
            }
            StreamEvent::ToolCallArgs { index, fragment } => match self.calls.get_mut(&index) {
                Some(call) => call.2.push_str(&fragment),
                None => {
                    self.error = Some(LlmError::OrphanToolArguments {
                        provider: self.provider,
                        index,
                    })
                }
            },
            StreamEvent::Done { stop_reason, usage } => self.done = Some((stop_reason, usage)),
            StreamEvent::ProviderError { kind, message } => {
                self.error = Some(LlmError::Provider {
                    provider: self.provider,
                    kind,
                    message,
                })
            }
        }
    }

    /// Takes in several events.
    pub fn extend(&mut self, events: impl IntoIterator<Item = StreamEvent>) {
        for event in events {
            self.push(event);
        }
    }

    /// The answer: its tool calls' arguments parsed (empty arguments are `{}`; a plain end of
    /// turn with tool calls is [`StopReason::ToolUse`]; arguments that are not JSON are `{}`
    /// with [`ToolCall::malformed`] saying why, for the loop to answer that call with).
    /// Fails with the provider's error, or [`LlmError::StreamCut`] without a terminal event.
    pub fn finish(self) -> Result<Turn, LlmError> {
        if let Some(error) = self.error {
            return Err(error);
        }
        let Some((stop_reason, usage)) = self.done else {
            return Err(LlmError::StreamCut {
                provider: self.provider,
            });
        };
        let tool_calls: Vec<ToolCall> = self
            .calls
            .into_values()
            .map(|(id, name, args)| {
                let (arguments, malformed) = if args.trim().is_empty() {
                    (serde_json::Value::Object(serde_json::Map::new()), None)
                } else {
                    match serde_json::from_str(&args) {
                        Ok(value) => (value, None),
                        Err(e) => (
                            serde_json::Value::Object(serde_json::Map::new()),
                            Some(e.to_string()),
                        ),
                    }
                };
                ToolCall {
                    id,
                    name,
                    arguments,
                    malformed,
                }
            })
            .collect();
        // Some servers (Ollama, older llama.cpp) say `stop` when the model called tools.
        let stop_reason = match stop_reason {
            StopReason::EndTurn if !tool_calls.is_empty() => StopReason::ToolUse,
            other => other,
        };
        Ok(Turn {
            text: self.text,
            tool_calls,
            stop_reason,
            usage,
        })
    }
}

/// Decodes a whole body with `decoder` and assembles the answer (for tests and for callers that
/// buffered the body anyway).
pub fn decode_all(
    provider: Provider,
    decoder: &mut dyn StreamDecoder,
    body: &[u8],
) -> Result<Turn, LlmError> {
    let mut assembler = Assembler::new(provider);
    assembler.extend(decoder.feed(body)?);
    assembler.extend(decoder.finish()?);
    assembler.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_without_a_start_are_an_error() {
        let mut a = Assembler::new(Provider::OpenAi);
        a.push(StreamEvent::ToolCallArgs {
            index: 3,
            fragment: "{}".into(),
        });
        let e = a.finish().unwrap_err();
        assert_eq!(e.code(), "llm_stream_orphan_tool_arguments");
        assert!(e.to_string().contains("#3"), "{e}");
    }

    #[test]
    fn nothing_after_the_terminal_event_counts() {
        let mut a = Assembler::new(Provider::Anthropic);
        a.push(StreamEvent::TextDelta("a".into()));
        a.push(StreamEvent::Done {
            stop_reason: StopReason::EndTurn,
            usage: Usage::default(),
        });
        a.push(StreamEvent::TextDelta("b".into()));
        a.push(StreamEvent::ProviderError {
            kind: None,
            message: "late".into(),
        });
        let turn = a.finish().unwrap();
        assert_eq!(turn.text, "a");
        assert_eq!(turn.stop_reason, StopReason::EndTurn);
    }

    #[test]
    fn empty_arguments_are_an_empty_object_and_tool_calls_mean_tool_use() {
        let mut a = Assembler::new(Provider::Ollama);
        a.extend([
            StreamEvent::ToolCallStarted {
                index: 0,
                id: "c".into(),
                name: "list_files".into(),
            },
            StreamEvent::Done {
                stop_reason: StopReason::EndTurn,
                usage: Usage::default(),
            },
        ]);
        let turn = a.finish().unwrap();
        assert_eq!(turn.tool_calls[0].arguments, serde_json::json!({}));
        assert_eq!(turn.stop_reason, StopReason::ToolUse);
    }
}
