//! What happens to sandboxes, as it happens: the service announces every create, destroy,
//! expiry, OOM kill and approval to whoever subscribed (the daemon's `GET /v1/events`, its metrics).
//! Nobody listening costs nothing; a subscriber that falls behind loses the oldest events and
//! is told how many.

use luminaguard_core::SandboxId;
use tokio::sync::broadcast;

/// How many events a slow subscriber may lag behind before it loses some.
const BACKLOG: usize = 1024;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventKind {
    Created,
    Destroyed,
    /// Destroyed because its lifetime ended.
    Expired,
    /// The kernel's OOM killer killed a command in it.
    OomKilled,
    /// A Diff Card of it waits for a person's answer (`approval` names it).
    ApprovalRequested,
    /// A card of it was answered, expired or withdrawn.
    ApprovalDecided,
}

impl EventKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Destroyed => "destroyed",
            Self::Expired => "expired",
            Self::OomKilled => "oom-killed",
            Self::ApprovalRequested => "approval-requested",
            Self::ApprovalDecided => "approval-decided",
        }
    }
}

/// One event.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Event {
    pub kind: EventKind,
    pub sandbox: SandboxId,
    /// The user the sandbox belongs to (subscribers see their own sandboxes' events).
    pub user: Option<u32>,
    /// `process`, `qemu`, `firecracker`.
    pub backend: String,
    /// The approval, for `approval-*` events.
    pub approval: Option<String>,
    pub unix_ms: u64,
}

/// The service's event bus.
#[derive(Debug)]
pub(crate) struct Bus {
    tx: broadcast::Sender<Event>,
}

impl Default for Bus {
    fn default() -> Self {
        Self {
            tx: broadcast::channel(BACKLOG).0,
        }
    }
}

impl Bus {
    pub fn send(&self, kind: EventKind, sandbox: &SandboxId, user: Option<u32>, backend: &str) {
        // No subscriber is not an error: nobody asked.
        let _ = self.tx.send(Event {
            kind,
            sandbox: sandbox.clone(),
            user,
            backend: backend.to_owned(),
            approval: None,
            unix_ms: luminaguard_backend::state::now_unix_ms(),
        });
    }

    pub fn send_approval(
        &self,
        kind: EventKind,
        approval: &str,
        sandbox: &SandboxId,
        user: Option<u32>,
    ) {
        let _ = self.tx.send(Event {
            kind,
            sandbox: sandbox.clone(),
            user,
            backend: String::new(),
            approval: Some(approval.to_owned()),
            unix_ms: luminaguard_backend::state::now_unix_ms(),
        });
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }
}
