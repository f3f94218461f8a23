//! Putting the service's questions to the MCP client's user. The service decides *whether* a
//! person must be asked and holds the action until one answers; this module only carries the
//! card to the client (MCP elicitation) and the answer back:
//!
//! - in-process, as the service's [`Asker`] (what the CLI does with its terminal);
//! - through the daemon, by watching the daemon's approvals for the sandbox a call runs in and
//!   answering them through its API.
//!
//! A client without elicitation is not asked: through the daemon, the call waits for someone
//! to answer (`luminaguard approvals approve ID`); in-process, the service refuses at once
//! (nobody to ask).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use luminaguard_core::SandboxId;
use luminaguard_front::{Front, FrontError};
use luminaguard_service::Answer;
use luminaguard_service::ask::{Asker, Question};
use rmcp::service::ElicitationError;
use rmcp::{Peer, RoleServer};

use crate::server::Hub;

/// How the MCP client's user answers (the elicitation's form).
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
struct Decision {
    /// Approve it? (no: it does not happen)
    approve: bool,
}

rmcp::elicit_safe!(Decision);

/// The decider's `via` on the record.
pub const VIA: &str = "mcp-elicitation";

/// How often the daemon's approvals are looked at while a call waits.
const POLL: Duration = Duration::from_millis(200);

/// What the asking side shares with the session.
#[derive(Debug, Default)]
pub struct Shared {
    /// The client, once it has said hello.
    pub peer: OnceLock<Peer<RoleServer>>,
    /// What the in-process asker was answered, not yet reported with a call's result.
    answered: Mutex<Vec<String>>,
}

impl Shared {
    /// The client, if it declared elicitation.
    fn elicitor(&self) -> Option<&Peer<RoleServer>> {
        self.peer
            .get()
            .filter(|p| !p.supported_elicitation_modes().is_empty())
    }

    /// The in-process answers since the last call (for its result).
    pub fn take_answered(&self) -> Vec<String> {
        std::mem::take(
            &mut *self
                .answered
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    fn note(&self, what: String) {
        let mut list = self
            .answered
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if list.len() < 64 {
            list.push(what);
        }
    }
}

/// Asks the client's user about `card`; `None` when the client cannot be asked (it did not
/// declare elicitation, or the request failed).
async fn elicit(peer: &Peer<RoleServer>, card: &str) -> Option<(Answer, String)> {
    let message = format!(
        "LuminaGuard holds this action for your approval.\n\n{card}\nApprove it? (approve: \
         true runs it once; false, decline or cancel: it does not happen)"
    );
    match peer.elicit::<Decision>(message).await {
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
        Err(ElicitationError::CapabilityNotSupported) => None,
        Err(e) => {
            tracing::warn!(error = %e, "asking the MCP client's user failed");
            None
        }
    }
}

/// The in-process service's way to ask: through the elicitation of the client whose session
/// made the held request (the question's session, one of the server's), on the thread the
/// service gives it (it blocks there, never on the runtime's workers). A question of no live
/// session of this server has nobody to ask.
pub(crate) fn asker(hub: Weak<Hub>, runtime: tokio::runtime::Handle) -> Asker {
    Asker(
        Arc::new(move |q: &Question| {
            let shared = hub.upgrade()?.shared(q.session.as_deref()?)?;
            let peer = shared.elicitor()?.clone();
            let (answer, said) = runtime.block_on(elicit(&peer, &q.text))?;
            shared.note(format!("{said} (elicitation)"));
            Some(answer)
        }),
        VIA,
    )
}

/// Runs `call` (a request to the daemon about sandbox `sandbox`); while it runs, the daemon's
/// approvals of that sandbox are put to the client's user when the client can be asked, and
/// answered with what they say. Returns the call's result and how each approval it met ended.
pub async fn through_daemon<T>(
    front: &Front,
    shared: &Shared,
    sandbox: &SandboxId,
    call: impl Future<Output = Result<T, FrontError>>,
) -> (Result<T, FrontError>, Vec<String>) {
    if front.service().is_some() {
        let done = call.await;
        return (done, shared.take_answered());
    }
    tokio::pin!(call);
    let mut seen = BTreeSet::new();
    let mut tick = tokio::time::interval(POLL);
    let done = loop {
        tokio::select! {
            done = &mut call => break done,
            _ = tick.tick() => {
                let list = match front.approvals().await {
                    Ok(list) => list,
                    Err(e) => {
                        tracing::debug!(error = %e, "looking at the daemon's approvals");
                        continue;
                    }
                };
                for a in list {
                    if a.card.sandbox != sandbox.as_str()
                        || a.card.action.is_none()
                        || a.state != "pending"
                        || !seen.insert(a.id.clone())
                    {
                        continue;
                    }
                    let Some(peer) = shared.elicitor() else { continue };
                    let Some((answer, said)) = elicit(peer, &a.card.text).await else {
                        continue;
                    };
                    let reason = (answer == Answer::Deny).then(|| format!("{said} (elicitation)"));
                    if let Err(e) = front.answer(&a.id, answer, reason, a.card.digest()).await {
                        // Decided by someone else first, or expired: the call learns how.
                        tracing::debug!(approval = %a.id, error = %e, "answering");
                    }
                }
            }
        }
    };
    let mut ended = Vec::new();
    for id in seen {
        match front.approval(&id, false).await {
            Ok(a) => ended.push(format!(
                "{id}: {}",
                a.outcome_text.unwrap_or_else(|| a.state.clone())
            )),
            Err(e) => ended.push(format!("{id}: {e}")),
        }
    }
    (done, ended)
}
