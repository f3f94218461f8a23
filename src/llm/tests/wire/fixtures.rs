use luminaguard_llm::{
    LlmError, Provider, StopReason, StreamDecoder, StreamEvent, Usage, anthropic, decode_all,
    ollama, openai,
};

use crate::common::*;

#[test]
fn text_answers_parse_into_turns() {
    let cases = [
        (openai::parse_response(OPENAI_TEXT), (1117, 46)),
        (anthropic::parse_response(ANTHROPIC_TEXT), (2095, 503)),
        (ollama::parse_response(OLLAMA_TEXT), (26, 282)),
    ];
    for (turn, (input, output)) in cases {
        let turn = turn.unwrap();
        assert_eq!(turn.text, "The tests pass: 12 passed, 0 failed.");
        assert!(turn.tool_calls.is_empty());
        assert_eq!(turn.stop_reason, StopReason::EndTurn);
        assert_eq!(
            turn.usage,
            Usage {
                input_tokens: input,
                output_tokens: output
            }
        );
    }
}

#[test]
fn streamed_tool_calls_assemble_whole_and_byte_by_byte() {
    for provider in PROVIDERS {
        let body = tools_fixture(provider);
        let whole = decode_chunks(provider, [body]).unwrap();
        assert_eq!(whole, tools_turn(provider), "{provider}");
        let bytewise = decode_chunks(provider, body.chunks(1)).unwrap();
        assert_eq!(bytewise, whole, "{provider}");
    }
}

#[test]
fn openai_events_carry_fragments_in_order() {
    let mut decoder = openai::Decoder::default();
    let events = decoder.feed(OPENAI_TOOLS).unwrap();
    let fragments: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::ToolCallArgs { index: 0, fragment } => Some(fragment.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(
        fragments,
        [
            "{\"pa",
            "th\": \"hello.py\", ",
            "\"content\": \"print('héllo')\\n\"}"
        ]
    );
    assert!(matches!(
        events.last(),
        Some(StreamEvent::Done {
            stop_reason: StopReason::ToolUse,
            ..
        })
    ));
    assert!(decoder.finish().unwrap().is_empty());
}

#[test]
fn an_error_mid_stream_is_the_providers_error() {
    let cases = [
        (
            Provider::OpenAi,
            OPENAI_ERROR,
            Some("server_error"),
            "The model is overloaded. Please try again later.",
        ),
        (
            Provider::Anthropic,
            ANTHROPIC_ERROR,
            Some("overloaded_error"),
            "Overloaded",
        ),
        (
            Provider::Ollama,
            OLLAMA_ERROR,
            None,
            "an error was encountered while running the model: unexpected EOF",
        ),
    ];
    for (provider, body, kind, message) in cases {
        let error = decode_chunks(provider, body.chunks(7)).unwrap_err();
        assert_eq!(
            error,
            LlmError::Provider {
                provider,
                kind: kind.map(str::to_owned),
                message: message.to_owned()
            }
        );
        assert_eq!(error.code(), "llm_provider_error");
        assert!(error.to_string().contains(message), "{error}");
        assert_eq!(
            error.is_retryable(),
            provider != Provider::Ollama,
            "{provider}"
        );
    }
}

/// The body without its terminal event, or cut mid-line.
#[test]
fn a_cut_stream_is_an_error() {
    for provider in PROVIDERS {
        let body = tools_fixture(provider);
        let text = std::str::from_utf8(body).unwrap();
        let terminal = match provider {
            Provider::OpenAi => text.find("data: [DONE]").unwrap(),
            Provider::Anthropic => text.find("event: message_stop").unwrap(),
            Provider::Ollama => text
                .find("{\"model\":\"qwen3\",\"created_at\":\"2025-07-07T09:57:31.4Z\"")
                .unwrap(),
        };
        for cut in [terminal, terminal - 20, body.len() / 2, 0] {
            let error = decode_chunks(provider, [&body[..cut]]).unwrap_err();
            assert_eq!(
                error,
                LlmError::StreamCut { provider },
                "{provider} cut at {cut}"
            );
            assert_eq!(
                error.to_string(),
                format!("{provider} stream cut: it ended before its terminal event")
            );
            assert!(error.is_retryable());
        }
    }
}

#[test]
fn the_last_line_may_lack_its_newline() {
    for provider in PROVIDERS {
        let body = tools_fixture(provider);
        let trimmed = body.trim_ascii_end();
        assert_eq!(
            decode_chunks(provider, [trimmed]).unwrap(),
            tools_turn(provider),
            "{provider}"
        );
    }
    // A non-streamed Ollama answer read as a stream: one line, no newline.
    let turn = decode_chunks(Provider::Ollama, [OLLAMA_TEXT.trim_ascii_end()]).unwrap();
    assert_eq!(turn.text, "The tests pass: 12 passed, 0 failed.");
}

#[test]
fn malformed_tool_arguments_keep_the_call_and_say_why() {
    let body = String::from_utf8(OPENAI_TOOLS.to_vec())
        .unwrap()
        .replace(r#" \"hello.py\"]}"#, r#" \"hello.py\""#);
    let turn = decode_chunks(Provider::OpenAi, [body.as_bytes()]).unwrap();
    assert_eq!(turn.tool_calls.len(), 2, "{turn:?}");
    assert_eq!(turn.tool_calls[0].malformed, None);
    let bad = &turn.tool_calls[1];
    assert_eq!(bad.name, "shell");
    assert_eq!(bad.id, "call_mXaBhTc4NYi3mWQkVNoKz2Q1");
    assert_eq!(bad.arguments, serde_json::json!({}));
    assert!(bad.malformed.as_deref().unwrap().contains("EOF"), "{bad:?}");
}

#[test]
fn a_line_over_the_cap_is_an_error_and_nothing_is_kept() {
    for provider in PROVIDERS {
        let mut decoder = decoder(provider, 64);
        let long = vec![b'a'; 65];
        let error = decoder.feed(&long).unwrap_err();
        assert_eq!(
            error,
            LlmError::LineTooLong {
                provider,
                limit: 64
            }
        );
        assert_eq!(decoder.buffered_len(), 0);
        // Also when the line arrives in small pieces.
        let mut decoder = crate::common::decoder(provider, 64);
        let mut failed = false;
        for piece in long.chunks(10) {
            failed |= decoder.feed(piece).is_err();
            assert!(decoder.buffered_len() <= 64);
        }
        assert!(failed, "{provider}");
    }
    // An SSE event of many short data lines counts as a whole.
    let mut decoder = openai::Decoder::new(64);
    let error = decoder.feed(&b"data: 0123456789\n".repeat(8)).unwrap_err();
    assert_eq!(error.code(), "llm_stream_line_too_long");
}

#[test]
fn garbage_is_a_malformed_chunk() {
    for provider in PROVIDERS {
        let body: &[u8] = match provider {
            Provider::Ollama => b"not json\n",
            _ => b"data: not json\n\n",
        };
        let error = decode_all(provider, &mut *decoder(provider, 1024), body).unwrap_err();
        assert_eq!(
            error.code(),
            "llm_malformed_response",
            "{provider}: {error}"
        );
    }
    let error = decode_all(
        Provider::Ollama,
        &mut ollama::Decoder::default(),
        b"\xff\xfe\n",
    )
    .unwrap_err();
    assert_eq!(
        error,
        LlmError::InvalidUtf8 {
            provider: Provider::Ollama
        }
    );
}

#[test]
fn openai_tolerates_nulls_and_crlf() {
    let body = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":null,\"tool_calls\":null},\"finish_reason\":null}],\"usage\":null}\r\n\r\n\
                : keep-alive\r\n\r\n\
                data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"},\"finish_reason\":\"length\"}]}\r\n\r\n\
                data: [DONE]\r\n\r\n";
    let turn = decode_chunks(Provider::OpenAi, [body.as_bytes()]).unwrap();
    assert_eq!(turn.text, "hi");
    assert_eq!(turn.stop_reason, StopReason::MaxTokens);
}

/// A provider's `parse_response`.
type Parse = fn(&[u8]) -> Result<luminaguard_llm::Turn, LlmError>;

#[test]
fn answer_bodies_that_are_errors_or_neither_are_typed() {
    let errors = [
        (
            Provider::OpenAi,
            openai::parse_response as Parse,
            r#"{"error": {"message": "The model does not exist", "type": "invalid_request_error", "code": "model_not_found"}}"#,
            Some("invalid_request_error"),
            "The model does not exist",
        ),
        (
            Provider::Anthropic,
            anthropic::parse_response,
            r#"{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}"#,
            Some("overloaded_error"),
            "Overloaded",
        ),
    ];
    for (provider, parse, body, kind, message) in errors {
        assert_eq!(
            parse(body.as_bytes()).unwrap_err(),
            LlmError::Provider {
                provider,
                kind: kind.map(str::to_owned),
                message: message.to_owned()
            }
        );
        let malformed = parse(br#"{"choices": 3, "content": 3}"#).unwrap_err();
        assert!(
            matches!(
                &malformed,
                LlmError::Malformed { provider: p, what: "answer", .. } if *p == provider
            ),
            "{malformed:?}"
        );
        assert_eq!(malformed.code(), "llm_malformed_response");
    }
}
