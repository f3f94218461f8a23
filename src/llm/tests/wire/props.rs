use luminaguard_llm::{Assembler, Provider, StopReason, Turn};
use proptest::prelude::*;
use serde_json::json;

use crate::common::*;

fn provider() -> impl Strategy<Value = Provider> {
    prop::sample::select(PROVIDERS.to_vec())
}

/// A streamed answer of `provider` with `texts` as text deltas and one tool call whose
/// arguments (a JSON string holding `arg`) arrive in `pieces` fragments.
fn stream(provider: Provider, texts: &[String], arg: &str, pieces: usize) -> (Vec<u8>, Turn) {
    let args = json!({"path": arg}).to_string();
    let chars: Vec<char> = args.chars().collect();
    let step = chars.len().div_ceil(pieces.max(1));
    let fragments: Vec<String> = chars.chunks(step).map(|c| c.iter().collect()).collect();
    let mut out = String::new();
    let mut sse = |event: &str, data: serde_json::Value| {
        if !event.is_empty() {
            out.push_str(&format!("event: {event}\n"));
        }
        out.push_str(&format!("data: {data}\n\n"));
    };
    match provider {
        Provider::OpenAi => {
            for t in texts {
                sse(
                    "",
                    json!({"choices": [{"index": 0, "delta": {"content": t}, "finish_reason": null}]}),
                );
            }
            sse(
                "",
                json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "read_file", "arguments": ""}}]}}]}),
            );
            for f in &fragments {
                sse(
                    "",
                    json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": f}}]}}]}),
                );
            }
            sse(
                "",
                json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}], "usage": {"prompt_tokens": 3, "completion_tokens": 4}}),
            );
            out.push_str("data: [DONE]\n\n");
        }
        Provider::Anthropic => {
            sse(
                "message_start",
                json!({"type": "message_start", "message": {"usage": {"input_tokens": 3, "output_tokens": 1}}}),
            );
            sse(
                "content_block_start",
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            );
            for t in texts {
                sse(
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": t}}),
                );
            }
            sse(
                "content_block_start",
                json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "call_1", "name": "read_file", "input": {}}}),
            );
            for f in &fragments {
                sse(
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": f}}),
                );
            }
            sse(
                "message_delta",
                json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 4}}),
            );
            sse("message_stop", json!({"type": "message_stop"}));
        }
        Provider::Ollama => {
            let mut line = |v: serde_json::Value| out.push_str(&format!("{v}\n"));
            for t in texts {
                line(json!({"message": {"role": "assistant", "content": t}, "done": false}));
            }
            line(
                json!({"message": {"role": "assistant", "content": "", "tool_calls": [{"id": "call_1", "function": {"name": "read_file", "arguments": {"path": arg}}}]}, "done": false}),
            );
            line(
                json!({"message": {"role": "assistant", "content": ""}, "done": true, "done_reason": "stop", "prompt_eval_count": 3, "eval_count": 4}),
            );
        }
    }
    let turn = Turn {
        text: texts.concat(),
        tool_calls: vec![luminaguard_llm::ToolCall {
            id: "call_1".into(),
            name: "read_file".into(),
            arguments: json!({"path": arg}),
            malformed: None,
        }],
        stop_reason: StopReason::ToolUse,
        usage: luminaguard_llm::Usage {
            input_tokens: 3,
            output_tokens: 4,
        },
    };
    (out.into_bytes(), turn)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The recorded fixtures decode to the same turn however they are cut.
    #[test]
    fn fixtures_decode_the_same_at_any_chunk_boundaries(
        provider in provider(),
        cuts in prop::collection::vec(any::<usize>(), 0..40),
    ) {
        let body = tools_fixture(provider);
        prop_assert_eq!(decode_chunks(provider, split_at(body, &cuts)).unwrap(), tools_turn(provider));
    }

    /// Generated answers (any Unicode, multibyte characters cut anywhere) decode to what was sent.
    #[test]
    fn generated_streams_decode_the_same_at_any_chunk_boundaries(
        provider in provider(),
        texts in prop::collection::vec("\\PC{1,12}", 0..6),
        arg in "\\PC{0,40}",
        pieces in 1usize..8,
        cuts in prop::collection::vec(any::<usize>(), 0..40),
    ) {
        let (body, expected) = stream(provider, &texts, &arg, pieces);
        prop_assert_eq!(decode_chunks(provider, [body.as_slice()]).unwrap(), expected.clone());
        prop_assert_eq!(decode_chunks(provider, split_at(&body, &cuts)).unwrap(), expected);
    }

    /// Arbitrary bytes, alone or after a valid prefix, never panic a decoder, and it never holds
    /// more than its cap.
    #[test]
    fn arbitrary_bytes_never_panic_and_stay_bounded(
        provider in provider(),
        prefix in 0usize..2000,
        chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..20),
        limit in 16usize..512,
    ) {
        let mut decoder = decoder(provider, limit);
        let mut assembler = Assembler::new(provider);
        let body = tools_fixture(provider);
        let prefix = &body[..prefix.min(body.len())];
        for chunk in std::iter::once(prefix).chain(chunks.iter().map(Vec::as_slice)) {
            if let Ok(events) = decoder.feed(chunk) {
                assembler.extend(events);
            }
            prop_assert!(decoder.buffered_len() <= limit, "{} > {}", decoder.buffered_len(), limit);
        }
        if let Ok(events) = decoder.finish() {
            assembler.extend(events);
        }
        let _ = assembler.finish();
    }

    /// Arbitrary lines shaped like the format (`data: ...`, JSON-ish) never panic either.
    #[test]
    fn arbitrary_format_shaped_lines_never_panic(
        provider in provider(),
        lines in prop::collection::vec("(data: |event: |:|)(\\[DONE\\]|\\{\"[a-z_]{1,8}\":[0-9a-z\"{}\\[\\],:]{0,30}\\}|[ -~]{0,20})", 0..30),
    ) {
        let body = lines.join("\n");
        let _ = luminaguard_llm::decode_all(provider, &mut *decoder(provider, 4096), body.as_bytes());
    }
}
