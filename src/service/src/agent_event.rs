//! What the agent loop records of a task beside the actions its tool calls are: each model
//! answer (`agent-step`) before the calls it proposes run, and how the task ended
//! (`agent-finished`). The records carry digests, not text: the task's transcript holds the
//! model's words and arguments, and the digests on this tamper-evident log show whether the
//! transcript is the one the loop wrote.

use luminaguard_core::SandboxId;
use serde::{Deserialize, Serialize};

use crate::{Action, Caller, Service, ServiceError};

/// One event of an agent task, tagged by `event`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case", deny_unknown_fields)]
pub enum AgentEvent {
    /// The model answered: what it proposes to run next.
    Step {
        /// The task (`task-` and 12 hex digits).
        task: String,
        step: u32,
        provider: String,
        model: String,
        stop_reason: String,
        input_tokens: u64,
        output_tokens: u64,
        /// SHA-256 of the model's text, and its size.
        text_sha256: String,
        text_bytes: u64,
        /// The tool calls it made, in order.
        tool_calls: Vec<ProposedCall>,
    },
    /// The task ended.
    Finished {
        task: String,
        /// `done`, `max_steps`, `max_tokens`, `wall_time`, `model_error`, `interrupted`.
        status: String,
        steps: u32,
        input_tokens: u64,
        output_tokens: u64,
    },
}

/// A tool call a model made, for the record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProposedCall {
    pub id: String,
    pub tool: String,
    /// SHA-256 of its arguments' JSON as the transcript holds them.
    pub arguments_sha256: String,
    /// Its arguments were not JSON (the model was told; nothing ran).
    #[serde(default)]
    pub malformed: bool,
}

/// Fields longer than this are refused (every one is a name, a digest or a count).
const MAX_FIELD: usize = 256;
/// Tool calls one step may record.
const MAX_CALLS: usize = 256;

impl AgentEvent {
    fn kind(&self) -> &'static str {
        match self {
            Self::Step { .. } => "agent-step",
            Self::Finished { .. } => "agent-finished",
        }
    }

    fn check(&self) -> Result<(), ServiceError> {
        let too_long = |what: &str, s: &str| {
            (s.len() > MAX_FIELD || s.chars().any(char::is_control)).then(|| {
                ServiceError::InvalidSpec(format!(
                    "agent event: {what} is over {MAX_FIELD} bytes or holds control characters"
                ))
            })
        };
        let fields: Vec<(&str, &str)> = match self {
            Self::Step {
                task,
                provider,
                model,
                stop_reason,
                text_sha256,
                tool_calls,
                ..
            } => {
                if tool_calls.len() > MAX_CALLS {
                    return Err(ServiceError::TooLarge(format!(
                        "agent event: {} tool calls in one step (at most {MAX_CALLS})",
                        tool_calls.len()
                    )));
                }
                let mut f = vec![
                    ("task", task.as_str()),
                    ("provider", provider.as_str()),
                    ("model", model.as_str()),
                    ("stop_reason", stop_reason.as_str()),
                    ("text_sha256", text_sha256.as_str()),
                ];
                for c in tool_calls {
                    f.extend([
                        ("a tool call's id", c.id.as_str()),
                        ("a tool call's tool", c.tool.as_str()),
                        ("a tool call's digest", c.arguments_sha256.as_str()),
                    ]);
                }
                f
            }
            Self::Finished { task, status, .. } => {
                vec![("task", task.as_str()), ("status", status.as_str())]
            }
        };
        match fields.into_iter().find_map(|(w, s)| too_long(w, s)) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl Service {
    /// Records an agent task's event against its sandbox `id` (the caller must own it). A
    /// step is made durable before it returns: the loop runs the step's calls after.
    pub async fn record_agent_event(
        &self,
        caller: &Caller,
        id: &SandboxId,
        event: &AgentEvent,
    ) -> Result<(), ServiceError> {
        self.admit(caller, &Action::AgentEvent { id: id.clone() })
            .await?;
        event.check()?;
        let mut record = serde_json::to_value(event)
            .map_err(|e| ServiceError::internal("recording an agent event", e))?;
        if let serde_json::Value::Object(m) = &mut record {
            m.remove("event");
            m.insert("type".into(), event.kind().into());
            m.insert("sandbox".into(), id.as_str().into());
        }
        self.audit.record(caller, record).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_fields_are_refused() {
        let step = |model: &str| AgentEvent::Step {
            task: "task-0123456789ab".into(),
            step: 1,
            provider: "openai".into(),
            model: model.into(),
            stop_reason: "tool_use".into(),
            input_tokens: 1,
            output_tokens: 1,
            text_sha256: "00".into(),
            text_bytes: 0,
            tool_calls: vec![],
        };
        assert!(step("gpt").check().is_ok());
        assert!(step("a\nb").check().is_err());
        assert!(step(&"x".repeat(300)).check().is_err());
        let json = r#"{"event":"finished","task":"t","status":"done","steps":1,"input_tokens":1,"output_tokens":1,"extra":1}"#;
        assert!(serde_json::from_str::<AgentEvent>(json).is_err());
    }
}
