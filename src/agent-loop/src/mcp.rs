//! The tools of MCP servers, given to the model beside the built-in ones (`--mcp-config`):
//! each server runs in a sandbox of its own under the gateway (luminaguard-mcp), and a call
//! goes through the gateway's steps — offered by the filter, pin unchanged, no secret in its
//! arguments, judged by the policy's `mcp` rules (asked about on a card), forwarded, secrets in
//! the result redacted, recorded. The loop only names the call and reads the result.

use std::sync::Arc;

use luminaguard_front::Front;
use luminaguard_llm::{ToolCall, ToolSpec};
use luminaguard_mcp::Shared;
use luminaguard_mcp::gateway::Gateway;
use luminaguard_mcp::gateway::servers::{Refusal, Servers};
use rmcp::model::{CallToolRequestParams, CallToolResult};

use crate::tools::Decision;

/// The gateway's servers for one task.
#[derive(Debug)]
pub struct McpTools {
    gateway: Arc<Gateway>,
    servers: Servers,
    shared: Shared,
}

impl McpTools {
    pub fn new(gateway: Arc<Gateway>) -> Self {
        let servers = Servers::new(&gateway);
        Self {
            gateway,
            servers,
            shared: Shared::default(),
        }
    }

    /// The servers' offered tools, named `SERVER__TOOL` (the servers are started to list them;
    /// one that cannot start is left out, and said why in the log).
    pub async fn specs(&self, front: &Front) -> Vec<ToolSpec> {
        self.servers
            .tools(&self.gateway, front, &self.shared)
            .await
            .into_iter()
            .map(|t| ToolSpec {
                name: t.name.to_string(),
                description: t
                    .description
                    .as_deref()
                    .unwrap_or("(no description)")
                    .to_owned(),
                input_schema: serde_json::Value::Object((*t.input_schema).clone()),
            })
            .collect()
    }

    /// Whether `name` is one of the servers' tools (`SERVER__TOOL`).
    pub fn serves(&self, name: &str) -> bool {
        luminaguard_mcp::gateway::servers::split(name).is_some()
    }

    /// Whether sandbox `id` runs one of the servers (its approvals are the task's).
    pub fn owns(&self, id: &str) -> bool {
        self.shared.tracks(id)
    }

    /// Calls `call` through the gateway: the result's text, or why it failed or was refused.
    pub async fn call(&self, front: &Front, call: &ToolCall) -> Result<String, (String, Decision)> {
        let arguments = match &call.arguments {
            serde_json::Value::Object(m) => Some(m.clone()),
            _ => {
                return Err((
                    format!("the arguments of {} must be a JSON object", call.name),
                    Decision::Invalid,
                ));
            }
        };
        let mut req = CallToolRequestParams::new(call.name.clone());
        req.arguments = arguments;
        match self
            .servers
            .call_tool(&self.gateway, front, &self.shared, req)
            .await
        {
            Ok(result) => {
                let text = render(&result);
                if result.is_error == Some(true) {
                    Err((text, Decision::Allowed))
                } else {
                    Ok(text)
                }
            }
            Err(Refusal::Unknown(t)) => Err((t, Decision::Invalid)),
            Err(Refusal::Refused(t)) => Err((
                format!("refused — {t}. Do not try to work around this refusal."),
                Decision::Refused,
            )),
            Err(Refusal::Failed(t)) => Err((t, Decision::Failed)),
        }
    }

    /// Destroys the servers' sandboxes.
    pub async fn release(&self, front: &Front) {
        for held in self.servers.take_helds() {
            let id = held.id().clone();
            if let Err(e) = front.release(held).await {
                tracing::warn!(%id, error = %e, "destroying an MCP server's sandbox");
            }
        }
    }
}

/// A tool result as the model reads it: its text blocks; other blocks named and sized; the
/// structured result as JSON when there is no text.
fn render(result: &CallToolResult) -> String {
    let mut parts = Vec::new();
    for block in &result.content {
        let v = serde_json::to_value(block).unwrap_or_default();
        match v.get("type").and_then(serde_json::Value::as_str) {
            Some("text") => parts.push(
                v.get("text")
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
            ),
            Some(kind) => parts.push(format!("[{kind} content, {} bytes]", v.to_string().len())),
            None => {}
        }
    }
    if parts.is_empty()
        && let Some(s) = &result.structured_content
    {
        parts.push(s.to_string());
    }
    parts.join("\n")
}
