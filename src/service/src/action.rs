//! Every request to the service, as one value: what the owner rule (and, as they come, the
//! approval policy and the audit log) look at before anything runs. A front-end never calls a
//! backend; each service method names its [`Action`] and passes it through
//! [`crate::Service::admit`] first.

use luminaguard_core::SandboxId;

/// One request, with what a policy needs to judge it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum Action {
    /// Create a sandbox (from a pool when `pool` names one).
    Create {
        #[serde(skip_serializing_if = "Option::is_none")]
        pool: Option<String>,
    },
    /// List the caller's sandboxes.
    List,
    /// Look at one sandbox.
    Get {
        id: SandboxId,
    },
    /// Run a command in a sandbox.
    Exec {
        id: SandboxId,
        argv: Vec<String>,
    },
    /// Read a file in a sandbox.
    ReadFile {
        id: SandboxId,
        path: String,
    },
    /// Write (create or replace) a file in a sandbox.
    WriteFile {
        id: SandboxId,
        path: String,
    },
    /// Call a tool of an MCP server running in a sandbox (the gateway forwards it).
    ToolCall {
        id: SandboxId,
        server: String,
        tool: String,
    },
    /// Record an agent task's step or end against the sandbox it runs in.
    AgentEvent {
        id: SandboxId,
    },
    /// Look at what a speculative run changed (its Diff Card).
    Review {
        id: SandboxId,
    },
    /// Apply a speculative run's change set, the one whose digest a person approved.
    ApplyChanges {
        id: SandboxId,
        digest: String,
    },
    /// Destroy a sandbox.
    Destroy {
        id: SandboxId,
    },
    /// Read a sandbox's seccomp record.
    Audit {
        id: SandboxId,
    },
    /// Collect what dead and expired sandboxes left behind.
    Gc,
    /// Make a template (a snapshot every user's restores share).
    CreateTemplate {
        name: String,
    },
    ListTemplates,
    RemoveTemplate {
        name: String,
    },
}

impl Action {
    /// The sandbox the action targets, if it targets one.
    pub fn sandbox(&self) -> Option<&SandboxId> {
        match self {
            Self::Get { id }
            | Self::Exec { id, .. }
            | Self::ReadFile { id, .. }
            | Self::WriteFile { id, .. }
            | Self::ToolCall { id, .. }
            | Self::AgentEvent { id }
            | Self::Destroy { id }
            | Self::Review { id }
            | Self::ApplyChanges { id, .. }
            | Self::Audit { id } => Some(id),
            Self::Create { .. }
            | Self::List
            | Self::Gc
            | Self::CreateTemplate { .. }
            | Self::ListTemplates
            | Self::RemoveTemplate { .. } => None,
        }
    }

    /// Whether the action changes what every user shares (templates), which only the
    /// service's own user (or root) may do.
    pub fn is_shared_state(&self) -> bool {
        matches!(
            self,
            Self::CreateTemplate { .. } | Self::RemoveTemplate { .. }
        )
    }
}
