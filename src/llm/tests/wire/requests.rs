use luminaguard_llm::{Message, Provider, ToolCall, ToolSpec, anthropic, ollama, openai};
use serde_json::{Value, json};

fn conversation() -> (Vec<Message>, Vec<ToolSpec>) {
    let messages = vec![
        Message::system("You are a careful coding agent."),
        Message::user("Write hello.py and run it."),
        Message::Assistant {
            text: String::new(),
            tool_calls: vec![
                ToolCall {
                    id: "c1".into(),
                    name: "write_file".into(),
                    arguments: json!({"path": "hello.py", "content": "print(1)\n"}),
                    malformed: None,
                },
                ToolCall {
                    id: "c2".into(),
                    name: "shell".into(),
                    arguments: json!({"command": ["python3", "hello.py"]}),
                    malformed: None,
                },
            ],
        },
        Message::ToolResult {
            call_id: "c1".into(),
            content: "wrote 9 bytes".into(),
            is_error: false,
        },
        Message::ToolResult {
            call_id: "c2".into(),
            content: "denied by policy: network".into(),
            is_error: true,
        },
    ];
    let tools = vec![ToolSpec {
        name: "shell".into(),
        description: "Run a command in the sandbox".into(),
        input_schema: json!({"type": "object", "properties": {"command": {"type": "array", "items": {"type": "string"}}}, "required": ["command"]}),
    }];
    (messages, tools)
}

fn schema() -> Value {
    conversation().1[0].input_schema.clone()
}

#[test]
fn openai_request() {
    let (messages, tools) = conversation();
    let request = openai::request("gpt-4o", &messages, &tools, 1024, true);
    assert_eq!(
        serde_json::to_value(&request).unwrap(),
        json!({
            "model": "gpt-4o",
            "messages": [
                {"role": "system", "content": "You are a careful coding agent."},
                {"role": "user", "content": "Write hello.py and run it."},
                {"role": "assistant", "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "write_file", "arguments": "{\"content\":\"print(1)\\n\",\"path\":\"hello.py\"}"}},
                    {"id": "c2", "type": "function", "function": {"name": "shell", "arguments": "{\"command\":[\"python3\",\"hello.py\"]}"}}
                ]},
                {"role": "tool", "tool_call_id": "c1", "content": "wrote 9 bytes"},
                {"role": "tool", "tool_call_id": "c2", "content": "error: denied by policy: network"}
            ],
            "tools": [{"type": "function", "function": {"name": "shell", "description": "Run a command in the sandbox", "parameters": schema()}}],
            "max_tokens": 1024,
            "stream": true,
            "stream_options": {"include_usage": true}
        })
    );
    let plain = serde_json::to_value(openai::request("m", &messages[..2], &[], 5, false)).unwrap();
    assert!(
        plain.get("tools").is_none() && plain.get("stream_options").is_none(),
        "{plain}"
    );
}

#[test]
fn anthropic_request() {
    let (messages, tools) = conversation();
    let request = anthropic::request("claude-sonnet-4-20250514", &messages, &tools, 1024, true);
    assert_eq!(
        serde_json::to_value(&request).unwrap(),
        json!({
            "model": "claude-sonnet-4-20250514",
            "max_tokens": 1024,
            "system": "You are a careful coding agent.",
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "Write hello.py and run it."}]},
                {"role": "assistant", "content": [
                    {"type": "tool_use", "id": "c1", "name": "write_file", "input": {"path": "hello.py", "content": "print(1)\n"}},
                    {"type": "tool_use", "id": "c2", "name": "shell", "input": {"command": ["python3", "hello.py"]}}
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "c1", "content": "wrote 9 bytes"},
                    {"type": "tool_result", "tool_use_id": "c2", "content": "denied by policy: network", "is_error": true}
                ]}
            ],
            "tools": [{"name": "shell", "description": "Run a command in the sandbox", "input_schema": schema()}],
            "stream": true
        })
    );
}

#[test]
fn ollama_request() {
    let (messages, tools) = conversation();
    let request = ollama::request("qwen3", &messages, &tools, 1024, false);
    assert_eq!(
        serde_json::to_value(&request).unwrap(),
        json!({
            "model": "qwen3",
            "messages": [
                {"role": "system", "content": "You are a careful coding agent."},
                {"role": "user", "content": "Write hello.py and run it."},
                {"role": "assistant", "content": "", "tool_calls": [
                    {"function": {"name": "write_file", "arguments": {"path": "hello.py", "content": "print(1)\n"}}},
                    {"function": {"name": "shell", "arguments": {"command": ["python3", "hello.py"]}}}
                ]},
                {"role": "tool", "content": "wrote 9 bytes", "tool_name": "write_file"},
                {"role": "tool", "content": "error: denied by policy: network", "tool_name": "shell"}
            ],
            "tools": [{"type": "function", "function": {"name": "shell", "description": "Run a command in the sandbox", "parameters": schema()}}],
            "stream": false,
            "options": {"num_predict": 1024}
        })
    );
}

/// The loop appends `Turn::to_message` and the results; the requests read back as sent.
#[test]
fn requests_round_trip_through_serde() {
    let (messages, tools) = conversation();
    let o = openai::request("m", &messages, &tools, 1, true);
    assert_eq!(
        serde_json::from_slice::<openai::ChatRequest>(&serde_json::to_vec(&o).unwrap()).unwrap(),
        o
    );
    let a = anthropic::request("m", &messages, &tools, 1, true);
    assert_eq!(
        serde_json::from_slice::<anthropic::MessagesRequest>(&serde_json::to_vec(&a).unwrap())
            .unwrap(),
        a
    );
    let l = ollama::request("m", &messages, &tools, 1, true);
    assert_eq!(
        serde_json::from_slice::<ollama::ChatRequest>(&serde_json::to_vec(&l).unwrap()).unwrap(),
        l
    );
    let m: Vec<Message> = serde_json::from_value(serde_json::to_value(&messages).unwrap()).unwrap();
    assert_eq!(m, messages);
}

#[test]
fn openais_own_api_gets_the_cap_as_max_completion_tokens() {
    let messages = [luminaguard_llm::Message::user("hi")];
    let body = |official| -> serde_json::Value {
        serde_json::from_slice(
            &luminaguard_llm::request_body(
                Provider::OpenAi,
                official,
                "m",
                &messages,
                &[],
                77,
                true,
            )
            .unwrap(),
        )
        .unwrap()
    };
    let compatible = body(false);
    assert_eq!(compatible["max_tokens"], 77);
    assert!(compatible.get("max_completion_tokens").is_none());
    let official = body(true);
    assert_eq!(official["max_completion_tokens"], 77);
    assert!(official.get("max_tokens").is_none());
}
