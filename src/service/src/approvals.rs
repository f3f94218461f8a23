//! The Approval Cliff's waiting room: every Diff Card that needs a person's answer waits here
//! as an [`Approval`] until someone with the right to decide answers it — at the terminal that
//! asked, through the daemon's API (`luminaguard approvals`, the console) — or until its time
//! runs out, which is a deny. Whoever answers first decides; the card is taken out of the
//! registry under its lock, so a second answer finds nothing to decide and an approval is
//! used at most once.
//!
//! The registry holds no policy of its own: [`crate::Service`] judges who may see and decide
//! an approval (the owner of the sandbox, or root), records every step on the audit log, and
//! applies an approved change set; this module only keeps the cards, their deadlines and the
//! answers, and wakes whoever waits for one.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use luminaguard_core::SandboxId;
use luminaguard_review::{Applied, ChangeSet};
use tokio::sync::watch;

/// How many decided approvals are remembered (for `GET /v1/approvals/{id}` after the fact).
const REMEMBERED: usize = 256;

/// A person's answer to a card.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    Approve,
    /// Approve this action and the same action again in the same sandbox (its session) — for
    /// actions asked about before they run; a Diff Card is approved once.
    ApproveForSession,
    /// Approve this action and add it to the policy file as a standing approval
    /// (`[[approved]]`), so that exactly this action is allowed from now on — for actions
    /// asked about before they run, when the policy is a file.
    ApproveAlways,
    Deny,
}

/// Who answered, and through what.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Decider {
    pub uid: u32,
    /// `terminal` (the prompt of the command that asked), `api` (the daemon's API: the
    /// `approvals` commands, the console).
    pub via: String,
}

/// A card for an action that cannot be previewed: it is asked about before it runs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ActionCard {
    /// `exec` (a command on a workspace it writes directly), `write` (a file write that
    /// cannot be shown as a Diff Card), `network` (a sandbox's egress), `tool-call` (an MCP
    /// server's tool, called through the gateway).
    pub kind: String,
    /// The command, for `exec`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub argv: Option<Vec<String>>,
    /// The file (absolute in the sandbox), for `write`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// What it would reach: egress destinations, for `network`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub network: Vec<String>,
    /// The server, tool and arguments, for `tool-call` (an MCP gateway's call).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<ToolCard>,
    /// Why it could not be previewed, for the person.
    pub unpreviewable: String,
}

/// An MCP tool call on an [`ActionCard`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ToolCard {
    pub server: String,
    pub tool: String,
    pub arguments: serde_json::Value,
}

/// How an approval ended.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum Outcome {
    /// Approved before it ran (an [`ActionCard`]): it runs.
    Approved { by: Decider },
    /// Approved, and exactly the card's change set was applied.
    Applied { by: Decider, applied: Applied },
    /// Approved, but applying was refused (the workspace or the layer changed since the card,
    /// the policy changed): nothing was applied.
    ApplyRefused {
        by: Decider,
        code: String,
        reason: String,
    },
    /// Denied: nothing was applied.
    Denied {
        by: Decider,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Nobody answered in time: denied, nothing was applied.
    Expired,
    /// The card went away before anyone answered (its sandbox was destroyed, the command that
    /// asked went away, a newer card of the same sandbox replaced it): nothing was applied.
    Withdrawn { reason: String },
}

impl ActionCard {
    /// Whether `other` is the same action (same kind, command and destinations).
    pub fn same_action(&self, other: &Self) -> bool {
        self.kind == other.kind
            && self.argv == other.argv
            && self.path == other.path
            && self.network == other.network
            && self.tool == other.tool
    }
}

/// An action approved for the rest of a sandbox's session.
#[derive(Debug, Clone)]
pub(crate) struct Grant {
    pub card: ActionCard,
    pub by: Decider,
    /// The approval that granted it.
    pub approval: String,
}

impl Outcome {
    pub const fn state(&self) -> &'static str {
        match self {
            Self::Approved { .. } => "approved",
            Self::Applied { .. } => "applied",
            Self::ApplyRefused { .. } => "apply-refused",
            Self::Denied { .. } => "denied",
            Self::Expired => "expired",
            Self::Withdrawn { .. } => "withdrawn",
        }
    }

    /// Whether the action may go ahead: its change set applied, or it was approved to run.
    pub const fn approved(&self) -> bool {
        matches!(self, Self::Applied { .. } | Self::Approved { .. })
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Approved { by } => write!(f, "approved by uid {} ({})", by.uid, by.via),
            Self::Applied { by, applied } => write!(
                f,
                "approved by uid {} ({}) and applied: {} files written, {} removed, {} \
                 symlinks, {} directories, {} hard links, {} modes",
                by.uid,
                by.via,
                applied.files_written,
                applied.removed,
                applied.symlinks,
                applied.dirs_created,
                applied.hard_links,
                applied.modes_changed
            ),
            Self::ApplyRefused { by, reason, .. } => write!(
                f,
                "approved by uid {} ({}), but nothing was applied: {reason}",
                by.uid, by.via
            ),
            Self::Denied { by, reason } => {
                write!(f, "denied by uid {} ({})", by.uid, by.via)?;
                if let Some(r) = reason {
                    write!(f, ": {r}")?;
                }
                Ok(())
            }
            Self::Expired => write!(f, "nobody answered in time: denied"),
            Self::Withdrawn { reason } => write!(f, "withdrawn ({reason})"),
        }
    }
}

/// A Diff Card waiting for (or given) a person's answer, as every channel shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Approval {
    /// `ap-` and 16 hex digits: what an answer names.
    pub id: String,
    pub sandbox: SandboxId,
    /// Whose action it is: they (and root) may see and answer it.
    pub user: Option<u32>,
    /// The real workspace the change set would be applied to (or the action would write).
    pub workspace: Option<PathBuf>,
    /// What a speculative run changed (empty for an action asked about before it runs).
    pub changes: ChangeSet,
    /// For an action asked about before it runs (it could not be previewed): what it is.
    pub action: Option<ActionCard>,
    /// What answering *always* would add to the policy file (`None`: it cannot be approved
    /// always — a Diff Card, or a policy that is a preset).
    pub always: Option<String>,
    /// What a speculative run tried on the network, refused (see `Card::network_attempts`).
    pub network_attempts: Vec<String>,
    /// The policy's actions behind `action`, for an *always*.
    #[serde(skip)]
    pub policy_actions: Vec<luminaguard_policy::Action>,
    /// The card as a person reads it in a terminal (diffs included, summarised when large).
    pub text: String,
    /// Why a person is asked: the policy's decisions that asked for the commands of the run
    /// (empty: the run was asked for as a review).
    pub asked: Vec<String>,
    /// The head of the run's latest command's output (stdout and stderr as they came, lossy
    /// UTF-8; empty for an action asked about before it runs, or a file write).
    #[serde(default)]
    pub output_head: String,
    /// The output was longer than its head.
    #[serde(default)]
    pub output_cut: bool,
    /// The policy the card was shown under: it is applied only under the same one.
    pub policy_digest: String,
    pub requested_unix_ms: u64,
    /// Unanswered by then, it is denied.
    pub expires_unix_ms: u64,
    /// `None` while it waits.
    pub outcome: Option<Outcome>,
    /// Where the change set's new content waits, when it is not a sandbox's layer (a file
    /// write previewed as a Diff Card: [`crate::put`]); `None`: the sandbox's upper layer.
    #[serde(skip)]
    pub staged: Option<PathBuf>,
}

/// A waiting approval with what deciding it needs.
#[derive(Debug)]
pub(crate) struct Waiting {
    pub approval: Approval,
    pub deadline: Instant,
    tx: watch::Sender<Option<Outcome>>,
}

#[derive(Debug, Default)]
struct Inner {
    waiting: HashMap<String, Waiting>,
    /// The waiting Diff Card of each speculative sandbox (one at a time: a newer card of its
    /// run replaces it). Other approvals — actions asked about before they run, previewed file
    /// writes — may wait side by side.
    by_sandbox: HashMap<SandboxId, String>,
    /// Why commands of each speculative sandbox were asked about (shown on its next card).
    asked: HashMap<SandboxId, Vec<String>>,
    decided: VecDeque<Approval>,
    /// Approvals taken out to be decided, not yet decided (their answer is being recorded):
    /// still found, and still waited on, so that nobody looking in between is told there is
    /// no such approval.
    deciding: HashMap<String, Deciding>,
    /// Actions approved for the rest of each sandbox's session.
    grants: HashMap<SandboxId, Vec<Grant>>,
}

/// An approval being decided: what it is, and how to wait for its outcome.
#[derive(Debug)]
struct Deciding {
    approval: Approval,
    outcome: watch::Receiver<Option<Outcome>>,
    deadline: Instant,
}

/// The registry.
#[derive(Debug, Default)]
pub(crate) struct Approvals(Mutex<Inner>);

/// Where an approval stands, for someone who waits for it.
pub(crate) enum Standing {
    Waiting(watch::Receiver<Option<Outcome>>, Instant),
    Decided,
}

impl Approvals {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Remembers why a command of speculative sandbox `id` was asked about.
    pub(crate) fn note_asked(&self, id: &SandboxId, why: String) {
        let mut inner = self.lock();
        let list = inner.asked.entry(id.clone()).or_default();
        if list.len() < 32 && !list.contains(&why) {
            list.push(why);
        }
    }

    /// Why commands of `id` were asked about so far.
    pub(crate) fn asked(&self, id: &SandboxId) -> Vec<String> {
        self.lock().asked.get(id).cloned().unwrap_or_default()
    }

    /// Puts `approval` up for an answer until `deadline`. With `replaces` (a speculative
    /// sandbox's Diff Card), returns the sandbox's earlier card, which it replaces (to be
    /// withdrawn by the caller).
    pub(crate) fn open(
        &self,
        approval: Approval,
        deadline: Instant,
        replaces: bool,
    ) -> Option<Waiting> {
        let mut inner = self.lock();
        let replaced = if replaces {
            inner
                .by_sandbox
                .insert(approval.sandbox.clone(), approval.id.clone())
                .and_then(|old| inner.waiting.remove(&old))
        } else {
            None
        };
        let (tx, _) = watch::channel(None);
        inner.waiting.insert(
            approval.id.clone(),
            Waiting {
                approval,
                deadline,
                tx,
            },
        );
        replaced
    }

    /// Takes waiting approval `id` out to decide it (`None`: no such approval waits — it was
    /// decided already, or never was).
    pub(crate) fn take(&self, id: &str) -> Option<Waiting> {
        let mut inner = self.lock();
        let w = inner.waiting.remove(id)?;
        if inner.by_sandbox.get(&w.approval.sandbox) == Some(&w.approval.id) {
            inner.by_sandbox.remove(&w.approval.sandbox);
        }
        inner.deciding.insert(
            w.approval.id.clone(),
            Deciding {
                approval: w.approval.clone(),
                outcome: w.tx.subscribe(),
                deadline: w.deadline,
            },
        );
        Some(w)
    }

    /// Remembers that `grant`'s action may run again in sandbox `id` without asking.
    pub(crate) fn grant(&self, id: &SandboxId, grant: Grant) {
        let mut inner = self.lock();
        let list = inner.grants.entry(id.clone()).or_default();
        if list.len() < 256 {
            list.push(grant);
        }
    }

    /// The grant that covers `card` in sandbox `id`, if any.
    pub(crate) fn granted(&self, id: &SandboxId, card: &ActionCard) -> Option<Grant> {
        self.lock()
            .grants
            .get(id)?
            .iter()
            .find(|g| g.card.same_action(card))
            .cloned()
    }

    /// Takes every waiting approval of sandbox `id` (the sandbox is going away: what was
    /// granted for its session ends with it).
    pub(crate) fn take_for_sandbox(&self, id: &SandboxId) -> Vec<Waiting> {
        let ids: Vec<String> = {
            let mut inner = self.lock();
            inner.asked.remove(id);
            inner.grants.remove(id);
            inner
                .waiting
                .values()
                .filter(|w| &w.approval.sandbox == id)
                .map(|w| w.approval.id.clone())
                .collect()
        };
        ids.iter().filter_map(|a| self.take(a)).collect()
    }

    /// Puts a taken approval back, undecided (an answer to it failed before it decided).
    pub(crate) fn restore(&self, w: Waiting) {
        let mut inner = self.lock();
        inner.deciding.remove(&w.approval.id);
        if w.approval.action.is_none() && w.approval.staged.is_none() {
            inner
                .by_sandbox
                .insert(w.approval.sandbox.clone(), w.approval.id.clone());
        }
        inner.waiting.insert(w.approval.id.clone(), w);
    }

    /// Takes every approval whose time has run out.
    pub(crate) fn take_expired(&self, now: Instant) -> Vec<Waiting> {
        let ids: Vec<String> = self
            .lock()
            .waiting
            .values()
            .filter(|w| w.deadline <= now)
            .map(|w| w.approval.id.clone())
            .collect();
        ids.iter().filter_map(|id| self.take(id)).collect()
    }

    /// Ends a taken approval with `outcome`: whoever waits for it is woken, and it is
    /// remembered for a while.
    pub(crate) fn finish(&self, w: Waiting, outcome: Outcome) -> Approval {
        let mut approval = w.approval;
        approval.outcome = Some(outcome.clone());
        {
            // Remembered first: whoever the outcome wakes finds the approval decided.
            let mut inner = self.lock();
            inner.deciding.remove(&approval.id);
            if inner.decided.len() >= REMEMBERED {
                inner.decided.pop_front();
            }
            inner.decided.push_back(approval.clone());
        }
        // Nobody waiting is fine: the outcome is remembered.
        let _ = w.tx.send(Some(outcome));
        approval
    }

    /// The waiting approvals, oldest first.
    pub(crate) fn waiting(&self) -> Vec<Approval> {
        let mut v: Vec<Approval> = self
            .lock()
            .waiting
            .values()
            .map(|w| w.approval.clone())
            .collect();
        v.sort_by(|a, b| (a.requested_unix_ms, &a.id).cmp(&(b.requested_unix_ms, &b.id)));
        v
    }

    /// Approval `id`, waiting or decided not long ago.
    pub(crate) fn get(&self, id: &str) -> Option<Approval> {
        let inner = self.lock();
        if let Some(w) = inner.waiting.get(id) {
            return Some(w.approval.clone());
        }
        if let Some(d) = inner.deciding.get(id) {
            return Some(d.approval.clone());
        }
        inner.decided.iter().rev().find(|a| a.id == id).cloned()
    }

    /// Where approval `id` stands, to wait for it.
    pub(crate) fn standing(&self, id: &str) -> Option<Standing> {
        let inner = self.lock();
        if let Some(w) = inner.waiting.get(id) {
            return Some(Standing::Waiting(w.tx.subscribe(), w.deadline));
        }
        if let Some(d) = inner.deciding.get(id) {
            return Some(Standing::Waiting(d.outcome.clone(), d.deadline));
        }
        inner
            .decided
            .iter()
            .any(|a| a.id == id)
            .then_some(Standing::Decided)
    }
}

/// A new approval id: `ap-` and 16 random hex digits.
pub(crate) fn new_id() -> Result<String, getrandom::Error> {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b)?;
    Ok(format!(
        "ap-{}",
        b.iter().map(|x| format!("{x:02x}")).collect::<String>()
    ))
}

/// Whether `s` has the form of an approval id (anything else is not looked up).
pub fn is_id(s: &str) -> bool {
    s.len() == 19
        && s.starts_with("ap-")
        && s[3..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn approval(id: &str, sandbox: &str) -> Approval {
        Approval {
            id: id.into(),
            sandbox: SandboxId::new(sandbox).unwrap(),
            user: Some(1000),
            workspace: Some("/ws".into()),
            changes: ChangeSet::new(vec![]),
            action: None,
            always: None,
            network_attempts: vec![],
            policy_actions: vec![],
            text: String::new(),
            asked: vec![],
            output_head: String::new(),
            output_cut: false,
            policy_digest: "p".into(),
            requested_unix_ms: 0,
            expires_unix_ms: 0,
            outcome: None,
            staged: None,
        }
    }

    #[test]
    fn an_approval_is_taken_once() {
        let r = Approvals::default();
        let later = Instant::now() + std::time::Duration::from_secs(60);
        assert!(r.open(approval("ap-1", "s1"), later, true).is_none());
        let w = r.take("ap-1").unwrap();
        assert!(r.take("ap-1").is_none(), "taken twice");
        let done = r.finish(w, Outcome::Expired);
        assert_eq!(done.outcome, Some(Outcome::Expired));
        assert!(matches!(r.standing("ap-1"), Some(Standing::Decided)));
        assert!(r.waiting().is_empty());
    }

    /// Between being taken to be decided and being decided (its answer on the record), an
    /// approval is still there: found, and waited on until its outcome — not "no approval"
    /// to someone who looks just then (an agent's write whose card was answered at once).
    #[test]
    fn an_approval_being_decided_is_still_found_and_waited_on() {
        let r = Approvals::default();
        let later = Instant::now() + std::time::Duration::from_secs(60);
        r.open(approval("ap-1", "s1"), later, false);
        let w = r.take("ap-1").unwrap();
        assert_eq!(r.get("ap-1").map(|a| a.outcome), Some(None));
        let Some(Standing::Waiting(mut rx, _)) = r.standing("ap-1") else {
            panic!("not waited on while being decided");
        };
        assert!(r.waiting().is_empty(), "not listed as waiting");
        r.finish(w, Outcome::Expired);
        assert_eq!(*rx.borrow_and_update(), Some(Outcome::Expired));
        assert!(matches!(r.standing("ap-1"), Some(Standing::Decided)));
        // Put back undecided, it waits again.
        r.open(approval("ap-2", "s1"), later, false);
        let w = r.take("ap-2").unwrap();
        r.restore(w);
        assert_eq!(r.waiting().len(), 1);
        assert!(r.take("ap-2").is_some());
    }

    #[test]
    fn a_newer_card_replaces_the_sandboxs_waiting_one() {
        let r = Approvals::default();
        let later = Instant::now() + std::time::Duration::from_secs(60);
        r.open(approval("ap-1", "s1"), later, true);
        let old = r.open(approval("ap-2", "s1"), later, true).unwrap();
        assert_eq!(old.approval.id, "ap-1");
        assert_eq!(r.waiting().len(), 1);
        // Actions asked about wait side by side with it; all go with the sandbox.
        assert!(r.open(approval("ap-3", "s1"), later, false).is_none());
        assert!(r.open(approval("ap-4", "s1"), later, false).is_none());
        assert_eq!(r.waiting().len(), 3);
        let mut gone: Vec<String> = r
            .take_for_sandbox(&SandboxId::new("s1").unwrap())
            .into_iter()
            .map(|w| w.approval.id)
            .collect();
        gone.sort();
        assert_eq!(gone, ["ap-2", "ap-3", "ap-4"]);
        assert!(r.waiting().is_empty());
    }

    #[test]
    fn expired_ones_are_taken_by_the_sweep() {
        let r = Approvals::default();
        let now = Instant::now();
        r.open(approval("ap-1", "s1"), now, true);
        r.open(
            approval("ap-2", "s2"),
            now + std::time::Duration::from_secs(60),
            true,
        );
        let gone = r.take_expired(now);
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].approval.id, "ap-1");
        assert_eq!(r.waiting().len(), 1);
    }

    #[test]
    fn ids_have_one_form() {
        let id = new_id().unwrap();
        assert!(is_id(&id), "{id}");
        for bad in [
            "",
            "ap-",
            "ap-../../etc/passw",
            "ap-0123456789ABCDEF",
            "xx-0123456789abcdef",
        ] {
            assert!(!is_id(bad), "{bad}");
        }
    }
}
