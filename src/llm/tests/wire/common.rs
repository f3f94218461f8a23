use luminaguard_llm::{
    Assembler, LlmError, Provider, StopReason, StreamDecoder, ToolCall, Turn, Usage, anthropic,
    ollama, openai,
};
use serde_json::json;

pub const OPENAI_TEXT: &[u8] = include_bytes!("../fixtures/openai_text.json");
pub const OPENAI_TOOLS: &[u8] = include_bytes!("../fixtures/openai_tools.sse");
pub const OPENAI_ERROR: &[u8] = include_bytes!("../fixtures/openai_error.sse");
pub const ANTHROPIC_TEXT: &[u8] = include_bytes!("../fixtures/anthropic_text.json");
pub const ANTHROPIC_TOOLS: &[u8] = include_bytes!("../fixtures/anthropic_tools.sse");
pub const ANTHROPIC_ERROR: &[u8] = include_bytes!("../fixtures/anthropic_error.sse");
pub const OLLAMA_TEXT: &[u8] = include_bytes!("../fixtures/ollama_text.json");
pub const OLLAMA_TOOLS: &[u8] = include_bytes!("../fixtures/ollama_tools.ndjson");
pub const OLLAMA_ERROR: &[u8] = include_bytes!("../fixtures/ollama_error.ndjson");

pub const PROVIDERS: [Provider; 3] = [Provider::OpenAi, Provider::Anthropic, Provider::Ollama];

/// A fresh decoder with `limit`.
pub fn decoder(provider: Provider, limit: usize) -> Box<dyn StreamDecoder> {
    match provider {
        Provider::OpenAi => Box::new(openai::Decoder::new(limit)),
        Provider::Anthropic => Box::new(anthropic::Decoder::new(limit)),
        Provider::Ollama => Box::new(ollama::Decoder::new(limit)),
    }
}

/// The streamed two-tool-call fixture of `provider`.
pub fn tools_fixture(provider: Provider) -> &'static [u8] {
    match provider {
        Provider::OpenAi => OPENAI_TOOLS,
        Provider::Anthropic => ANTHROPIC_TOOLS,
        Provider::Ollama => OLLAMA_TOOLS,
    }
}

/// Decodes `body` fed in the given chunks, then assembles it.
pub fn decode_chunks<'a>(
    provider: Provider,
    chunks: impl IntoIterator<Item = &'a [u8]>,
) -> Result<Turn, LlmError> {
    let mut decoder = decoder(provider, luminaguard_llm::DEFAULT_LINE_LIMIT);
    let mut assembler = Assembler::new(provider);
    for chunk in chunks {
        assembler.extend(decoder.feed(chunk)?);
    }
    assembler.extend(decoder.finish()?);
    assembler.finish()
}

/// `body` cut at `cuts` (sorted, deduplicated, clamped).
pub fn split_at<'a>(body: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (body.len() + 1)).collect();
    cuts.sort_unstable();
    cuts.dedup();
    let mut out = Vec::new();
    let mut start = 0;
    for cut in cuts {
        out.push(&body[start..cut]);
        start = cut;
    }
    out.push(&body[start..]);
    out
}

/// What every `*_tools` fixture says.
pub fn tools_turn(provider: Provider) -> Turn {
    let (ids, usage) = match provider {
        Provider::OpenAi => (
            [
                "call_DdmO9pD3xa9XTPNJ32zg2hcA",
                "call_mXaBhTc4NYi3mWQkVNoKz2Q1",
            ],
            (412, 57),
        ),
        Provider::Anthropic => (
            [
                "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
                "toolu_01WZ6ncRsD3LgZvUkTQoPnKB",
            ],
            (472, 89),
        ),
        Provider::Ollama => (["ollama_call_0", "ollama_call_1"], (412, 57)),
    };
    Turn {
        text: "I'll write the file and run the tests — ✓".to_owned(),
        tool_calls: vec![
            ToolCall {
                id: ids[0].to_owned(),
                name: "write_file".to_owned(),
                arguments: json!({"path": "hello.py", "content": "print('héllo')\n"}),
                malformed: None,
            },
            ToolCall {
                id: ids[1].to_owned(),
                name: "shell".to_owned(),
                arguments: json!({"command": ["python3", "hello.py"]}),
                malformed: None,
            },
        ],
        stop_reason: StopReason::ToolUse,
        usage: Usage {
            input_tokens: usage.0,
            output_tokens: usage.1,
        },
    }
}
