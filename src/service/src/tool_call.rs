//! MCP tool calls a front-end forwards to a server that runs in a sandbox (the MCP gateway):
//! each is judged by the policy's `mcp` rules before it is forwarded — denied, it never
//! reaches the server; asked about, a person sees the server, the tool and its arguments on an
//! action card first (what a server does with a call cannot be previewed) — and how it ended
//! goes on the audit log beside its decision.
//!
//! The front-end forwards the call itself (it speaks MCP to the server over the exec's stdio);
//! the service judges and records. Arguments reach the service as the front-end will forward
//! them: secrets are the front-end's to block or redact before (see the gateway's scanner), so
//! nothing here ever holds one.

use luminaguard_core::SandboxId;
use luminaguard_policy::Verdict;
use serde::{Deserialize, Serialize};

use crate::approvals::{ActionCard, ToolCard};
use crate::{Action, Caller, Service, ServiceError, ask, decision_json};

/// The most bytes of arguments a judged call carries (its card shows them).
pub const MAX_ARGUMENTS: usize = 1 << 20;

/// A tool call to judge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The server's name (the gateway's configuration names it).
    pub server: String,
    /// The tool's name as the server knows it.
    pub tool: String,
    /// The arguments, as they will be forwarded.
    #[serde(default)]
    pub arguments: serde_json::Value,
}

/// A call the policy (or a person) cleared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cleared {
    /// `allow`, or `ask` when a person approved it.
    pub verdict: String,
    /// The rule's reason.
    pub reason: String,
    /// The card a person approved it under, when one was asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<String>,
}

/// What else the gateway records about a server's tools (each on the audit log as
/// `tool-<event>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum ToolEvent {
    /// How a forwarded call ended.
    Result(ToolOutcome),
    /// A call refused before it was judged: its tool is not offered, disabled by a changed
    /// pin, or its arguments carry a secret.
    Refused {
        server: String,
        tool: String,
        /// Why, for the record (never a secret's value).
        reason: String,
    },
    /// A tool's definition is not the one pinned: disabled until a person approves the new
    /// version (`luminaguard mcp pins approve`).
    PinChanged {
        server: String,
        tool: String,
        /// The fields that changed (`description`, `inputSchema`, …).
        changed: Vec<String>,
        /// SHA-256 of the pinned and of the served definition.
        pinned: String,
        served: String,
    },
    /// A tool seen for the first time, pinned.
    Pinned {
        server: String,
        tool: String,
        sha256: String,
    },
}

impl ToolEvent {
    fn kind(&self) -> &'static str {
        match self {
            Self::Result(_) => "tool-result",
            Self::Refused { .. } => "tool-refused",
            Self::PinChanged { .. } => "tool-pin-changed",
            Self::Pinned { .. } => "tool-pinned",
        }
    }

    fn server_tool(&self) -> (&str, &str) {
        match self {
            Self::Result(o) => (&o.server, &o.tool),
            Self::Refused { server, tool, .. }
            | Self::PinChanged { server, tool, .. }
            | Self::Pinned { server, tool, .. } => (server, tool),
        }
    }
}

/// How a forwarded call ended, for the record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolOutcome {
    pub server: String,
    pub tool: String,
    /// The approval it ran under, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<String>,
    /// From forwarding to the server's answer.
    pub duration_ms: u64,
    /// Bytes of the result (its JSON) as the server sent it.
    pub result_bytes: u64,
    /// The server answered with a tool error (`isError`).
    #[serde(default)]
    pub is_error: bool,
    /// It got no result: why (the server crashed, timed out, the call was cancelled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<String>,
    /// Secrets the front-end redacted from the result.
    #[serde(default)]
    pub redacted: u64,
}

impl Service {
    /// Judges `call`, to be forwarded to the server running in sandbox `id`: on the record with
    /// the policy's decision; denied, refused ([`ServiceError::Denied`]); asked about, put to a
    /// person as an action card and cleared only once approved.
    pub async fn judge_tool_call(
        &self,
        caller: &Caller,
        id: &SandboxId,
        call: &ToolCall,
    ) -> Result<Cleared, ServiceError> {
        self.admit(
            caller,
            &Action::ToolCall {
                id: id.clone(),
                server: call.server.clone(),
                tool: call.tool.clone(),
            },
        )
        .await?;
        let size = serde_json::to_vec(&call.arguments).map_or(0, |v| v.len());
        if size > MAX_ARGUMENTS {
            return Err(ServiceError::TooLarge(format!(
                "{size} bytes of arguments for {}.{}: a judged tool call takes at most \
                 {MAX_ARGUMENTS}",
                call.server, call.tool
            )));
        }
        let action = luminaguard_policy::Action::McpCall {
            server: call.server.clone(),
            tool: call.tool.clone(),
            arguments: call.arguments.clone(),
        };
        let decision = self.policy().decide(&action);
        self.audit
            .record(
                caller,
                serde_json::json!({
                    "type": "tool-call",
                    "sandbox": id,
                    "server": call.server,
                    "tool": call.tool,
                    "arguments": call.arguments,
                    "decision": decision_json(&decision),
                }),
            )
            .await?;
        let cleared = |approval| Cleared {
            verdict: decision.verdict.to_string(),
            reason: decision.reason.clone(),
            approval,
        };
        match decision.verdict {
            Verdict::Deny => Err(ServiceError::Denied(format!(
                "{}.{}: {decision}",
                call.server, call.tool
            ))),
            Verdict::Allow => Ok(cleared(None)),
            Verdict::Ask => {
                let (_, meta) = luminaguard_backend::record(&self.runtime, id).await?;
                let approval = self
                    .ask_before(
                        caller,
                        ask::Ask {
                            sandbox: id.clone(),
                            user: meta.user,
                            workspace: meta.workspace,
                            card: ActionCard {
                                kind: "tool-call".into(),
                                argv: None,
                                path: None,
                                network: Vec::new(),
                                tool: Some(ToolCard {
                                    server: call.server.clone(),
                                    tool: call.tool.clone(),
                                    arguments: call.arguments.clone(),
                                }),
                                unpreviewable: "what a server does with a tool call happens \
                                    in its sandbox and wherever that reaches (its workspace, \
                                    its network): it cannot be previewed"
                                    .into(),
                            },
                            asked: vec![format!("{}.{}: {decision}", call.server, call.tool)],
                            policy_actions: vec![action],
                        },
                    )
                    .await?;
                Ok(cleared(approval))
            }
        }
    }

    /// Records what the gateway saw of a server's tools in sandbox `id`: how a judged call
    /// ended (queued on the log, not waited for: see [`Service::judge_tool_call`] for what is
    /// on it before the call is forwarded), a call refused before it was judged, a tool pinned
    /// or found changed (each on the log when this returns).
    pub async fn record_tool_event(
        &self,
        caller: &Caller,
        id: &SandboxId,
        event: &ToolEvent,
    ) -> Result<(), ServiceError> {
        let (server, tool) = event.server_tool();
        self.admit(
            caller,
            &Action::ToolCall {
                id: id.clone(),
                server: server.to_owned(),
                tool: tool.to_owned(),
            },
        )
        .await?;
        let mut record = serde_json::to_value(event)
            .map_err(|e| ServiceError::internal("recording a tool event", e))?;
        if let serde_json::Value::Object(m) = &mut record {
            m.remove("event");
            m.insert("type".into(), event.kind().into());
            m.insert("sandbox".into(), id.as_str().into());
        }
        if matches!(event, ToolEvent::Result(_)) {
            // What already happened, after its decision was on the log: queued, not waited
            // for (the answer is not held up by the disk; a crash at that moment may lose it,
            // never a decision).
            self.audit.note(caller, record).await;
            return Ok(());
        }
        self.audit.record(caller, record).await
    }
}
