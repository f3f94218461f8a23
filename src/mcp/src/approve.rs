//! Putting the service's questions to the MCP client's user. The service decides *whether* a
//! person must be asked and holds the action in its approvals until one answers; this module
//! only finds the session's waiting approvals and carries their cards to the client and the
//! answers back — the same way in-process and through the daemon, since both keep approvals
//! behind the same [`Front`] calls:
//!
//! - a client that declared elicitation, on a session of the 2025 revisions, is asked with
//!   `elicitation/create` (one boolean, `approve`);
//! - a client on the stateless 2026-07-28 revision, which forbids requests from the server,
//!   gets the same question as an *input-required* result of its call, and answers it by
//!   calling again (see [`crate::flight`]);
//! - a client that can be asked neither way is not asked: through the daemon the action waits
//!   for anyone else to answer (`luminaguard approvals`, the console); in-process nobody else
//!   can, and the card is denied at once, saying so.

use std::collections::BTreeSet;
use std::sync::{Mutex, OnceLock};

use luminaguard_api::types::ApprovalView;
use luminaguard_core::SandboxId;
use luminaguard_front::{Front, FrontError};
use luminaguard_service::Answer;
use rmcp::model::{ElicitRequest, ElicitRequestParams, ElicitationSchema, InputRequest};
use rmcp::service::ElicitationError;
use rmcp::{Peer, RoleServer};

/// How the MCP client's user answers (the elicitation's form).
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
pub struct Decision {
    /// Approve it? (no: it does not happen)
    pub approve: bool,
}

rmcp::elicit_safe!(Decision);

/// The decider's `via` on the record, in-process (through the daemon it is the daemon's `api`).
pub const VIA: &str = "mcp-elicitation";

/// What a session shares between its calls about asking.
#[derive(Debug, Default)]
pub struct Shared {
    /// The client, once it has said hello (sessions of the 2025 revisions).
    pub peer: OnceLock<Peer<RoleServer>>,
    /// Approvals a call of this session has taken up (asked about, or is waiting on): each is
    /// put to the client once, whichever call finds it first.
    claimed: Mutex<BTreeSet<String>>,
    /// Sandboxes this session has or is making (their ids are chosen before they are made, so
    /// that a question asked while one is made is found too).
    sandboxes: Mutex<BTreeSet<SandboxId>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shared {
    /// The client, if it declared elicitation on a session (2025 revisions).
    pub fn elicitor(&self) -> Option<&Peer<RoleServer>> {
        self.peer
            .get()
            .filter(|p| !p.supported_elicitation_modes().is_empty())
    }

    /// Counts `id` as one of this session's sandboxes (for finding its approvals).
    pub fn track(&self, id: &SandboxId) {
        lock(&self.sandboxes).insert(id.clone());
    }

    pub fn untrack(&self, id: &SandboxId) {
        lock(&self.sandboxes).remove(id);
    }

    /// Whether sandbox `id` is one of this session's.
    pub fn tracks(&self, id: &str) -> bool {
        lock(&self.sandboxes).iter().any(|s| s.as_str() == id)
    }

    /// The first pending approval of this session's sandboxes that no call has taken up yet,
    /// now taken up by the caller — preferring one whose command is `argv` (the caller's own).
    pub async fn claim_next(
        &self,
        front: &Front,
        argv: Option<&[String]>,
    ) -> Result<Option<ApprovalView>, FrontError> {
        let list = front.approvals().await?;
        let mine = {
            let sandboxes = lock(&self.sandboxes);
            let claimed = lock(&self.claimed);
            let mut mine: Vec<ApprovalView> = list
                .into_iter()
                .filter(|a| {
                    // (Action cards, and Diff Cards of the session's file writes.)
                    a.state == "pending"
                        && !claimed.contains(&a.id)
                        && sandboxes.iter().any(|s| s.as_str() == a.card.sandbox)
                })
                .collect();
            // Its own command first; then the oldest.
            mine.sort_by_key(|a| {
                let own = argv.is_some_and(|argv| {
                    a.card.action.as_ref().and_then(|x| x.argv.as_deref()) == Some(argv)
                });
                (!own, a.requested_unix_ms)
            });
            mine.into_iter().next()
        };
        Ok(mine.filter(|a| lock(&self.claimed).insert(a.id.clone())))
    }
}

/// The question put to the client's user about `card`.
fn question(card: &str) -> String {
    format!(
        "LuminaGuard holds this action for your approval.\n\n{card}\nApprove it? (approve: \
         true runs it once; false, decline or cancel: it does not happen)"
    )
}

/// The question about approval `a` as an input request of a 2026-07-28 input-required result.
pub fn input_request(a: &ApprovalView) -> Result<InputRequest, serde_json::Error> {
    Ok(InputRequest::Elicitation(ElicitRequest::new(
        ElicitRequestParams::FormElicitationParams {
            meta: None,
            message: question(&a.card.text),
            requested_schema: ElicitationSchema::from_type::<Decision>()?,
        },
    )))
}

/// What the user's answer (an elicitation result, `{"action": …, "content": {"approve": …}}`)
/// means, and how to say so on the record.
pub fn read_answer(result: Option<&serde_json::Value>) -> (Answer, String) {
    let Some(result) = result else {
        return (
            Answer::Deny,
            "the MCP client's user gave no answer".to_owned(),
        );
    };
    match result.get("action").and_then(serde_json::Value::as_str) {
        Some("accept") => match result.pointer("/content/approve") {
            Some(serde_json::Value::Bool(true)) => (
                Answer::Approve,
                "approved by the MCP client's user".to_owned(),
            ),
            _ => (Answer::Deny, "denied by the MCP client's user".to_owned()),
        },
        Some("decline") => (Answer::Deny, "declined by the MCP client's user".to_owned()),
        Some("cancel") => (
            Answer::Deny,
            "dismissed by the MCP client's user".to_owned(),
        ),
        _ => (
            Answer::Deny,
            "the MCP client's user gave no answer".to_owned(),
        ),
    }
}

/// Asks the client's user about `card` (`elicitation/create`); `None` when the client cannot
/// be asked after all (the request failed).
pub async fn elicit(peer: &Peer<RoleServer>, card: &str) -> Option<(Answer, String)> {
    match peer.elicit::<Decision>(question(card)).await {
        Ok(Some(Decision { approve: true })) => Some((
            Answer::Approve,
            "approved by the MCP client's user".to_owned(),
        )),
        Ok(Some(Decision { approve: false })) => {
            Some((Answer::Deny, "denied by the MCP client's user".to_owned()))
        }
        Ok(None) => Some((
            Answer::Deny,
            "the MCP client's user gave no answer".to_owned(),
        )),
        Err(ElicitationError::UserDeclined) => {
            Some((Answer::Deny, "declined by the MCP client's user".to_owned()))
        }
        Err(ElicitationError::UserCancelled) => Some((
            Answer::Deny,
            "dismissed by the MCP client's user".to_owned(),
        )),
        Err(e) => {
            tracing::warn!(error = %e, "asking the MCP client's user failed");
            None
        }
    }
}

/// Answers approval `a` with what the client's user said (`said`, on the record as the
/// reason of a denial). Someone else may have answered first: then theirs stands.
pub async fn answer(front: &Front, a: &ApprovalView, answer: Answer, said: &str) {
    let reason = (answer == Answer::Deny).then(|| said.to_owned());
    if let Err(e) = front
        .answer_via(&a.id, answer, reason, a.card.digest(), VIA)
        .await
    {
        // Decided by someone else first, or expired: the call learns how.
        tracing::debug!(approval = %a.id, error = %e, "answering");
    }
}

/// How approval `id` ended, as a call's result tells it.
pub async fn ended(front: &Front, id: &str) -> String {
    match front.approval(id, false).await {
        Ok(a) => format!("{id}: {}", a.outcome_text.unwrap_or(a.state)),
        Err(e) => format!("{id}: {e}"),
    }
}
