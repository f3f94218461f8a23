//! The gateway-policy rules (TOML `[[rule]]` blocks) that the gateway's tests (mcp_gateway.rs),
//! the agent's tests (agent.rs) and the gateway bench (benches/mcp_gateway.rs) share. Included
//! with `#[path = "mcp/gateway_policy.rs"] mod gateway_policy;` (from benches/:
//! `"../tests/mcp/gateway_policy.rs"`).
#![allow(dead_code)] // each binary uses its part

/// A policy file's head: what no rule names is asked about.
pub const HEAD: &str = r#"version = 1
default = "ask"
"#;

/// Allows starting `server-everything` over stdio, from where the gateway configurations mount
/// the npm servers (`/opt/mcp/node`).
pub const EVERYTHING_SERVER: &str = r#"
[[rule]]
id = "everything-server"
decision = "allow"
reason = "the npm server"
exec = ["node", "/opt/mcp/node/node_modules/@modelcontextprotocol/server-everything/dist/index.js", "stdio"]
examples = ["node /opt/mcp/node/node_modules/@modelcontextprotocol/server-everything/dist/index.js stdio"]
"#;

/// Allows what holds a sandbox through the daemon.
pub const HOLD: &str = r#"
[[rule]]
id = "hold"
decision = "allow"
reason = "what holds a sandbox through the daemon (the presets allow it: it reads files)"
exec = ["tail", "-f", "/dev/null"]
examples = ["tail -f /dev/null"]
"#;

/// Allows every tool call of every server.
pub const TOOL_CALLS: &str = r#"
[[rule]]
id = "tool-calls"
decision = "allow"
reason = "tool calls"
mcp = { server = "*", tool = "*" }
"#;
