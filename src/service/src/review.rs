//! Speculative runs (`run --review`): the sandbox's workspace is an overlay whose writes land in
//! a private layer; afterwards the service reads that layer into a change set — the Diff Card a
//! person looks at — and applies exactly that change set to the real workspace once approved.
//!
//! The service keeps the last card of each sandbox: an approval names the card's digest, and
//! only the card with that digest is applied (a card re-read in between, or a layer changed
//! since, does not match). Scanning and applying are `luminaguard-review`'s.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use luminaguard_core::SandboxId;
use luminaguard_core::runtime::SandboxFile;
pub use luminaguard_review::{Applied, ChangeSet};
use luminaguard_review::{Limits, RenderOptions};

use crate::{Action, Caller, Service, ServiceError};

/// A speculative run's Diff Card: what the command changed, as data and as text.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Card {
    pub sandbox: SandboxId,
    /// The real workspace the change set would be applied to.
    pub workspace: PathBuf,
    pub changes: ChangeSet,
    /// The card as a person reads it in a terminal (diffs included, summarised when large).
    pub text: String,
    /// The policy the card was shown under: an approval applies only under the same one.
    pub policy_digest: String,
    /// How long the card may still be approved.
    pub expires_in_ms: u64,
}

/// A card as the service keeps it until it is approved, declined or replaced: an approval is
/// bound to its digest, the policy it was shown under, and its expiry.
#[derive(Debug)]
struct Kept {
    changes: ChangeSet,
    policy: String,
    expires: std::time::Instant,
}

/// The last card of each speculative sandbox, by sandbox.
#[derive(Debug, Default)]
pub(crate) struct Cards(Mutex<HashMap<SandboxId, Kept>>);

impl Cards {
    fn put(&self, id: SandboxId, kept: Kept) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(id, kept);
    }

    fn take(&self, id: &SandboxId) -> Option<Kept> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(id)
    }

    pub(crate) fn forget(&self, id: &SandboxId) {
        let _ = self.take(id);
    }
}

impl Service {
    /// Reads what speculative sandbox `id`'s commands changed so far into a Diff Card (and
    /// keeps it, for [`Service::apply_changes`]).
    pub async fn review(&self, caller: &Caller, id: &SandboxId) -> Result<Card, ServiceError> {
        self.admit(caller, &Action::Review { id: id.clone() })
            .await?;
        let (upper, workspace) = self.layers(id).await?;
        let (u, w) = (upper.clone(), workspace.clone());
        let (changes, text) = tokio::task::spawn_blocking(move || {
            let cs = luminaguard_review::scan(&u, &w, &Limits::default())?;
            let text = luminaguard_review::render(&cs, &u, &w, &RenderOptions::default());
            Ok::<_, luminaguard_review::ReviewError>((cs, text))
        })
        .await?
        .map_err(ServiceError::Review)?;
        self.audit
            .record(
                caller,
                serde_json::json!({
                    "type": "review",
                    "sandbox": id,
                    "digest": changes.digest,
                    "summary": changes.summary,
                }),
            )
            .await?;
        let expiry = self.config.review.card_expiry;
        self.cards.put(
            id.clone(),
            Kept {
                changes: changes.clone(),
                policy: self.policy.digest().to_owned(),
                expires: std::time::Instant::now() + expiry,
            },
        );
        Ok(Card {
            sandbox: id.clone(),
            workspace,
            changes,
            text,
            policy_digest: self.policy.digest().to_owned(),
            expires_in_ms: u64::try_from(expiry.as_millis()).unwrap_or(u64::MAX),
        })
    }

    /// Applies the card with `digest` — the one a person approved — to the real workspace:
    /// all of it or, if the workspace or the layer changed since the card, nothing. New files
    /// belong to the workspace's owner. A card is applied at most once.
    pub async fn apply_changes(
        &self,
        caller: &Caller,
        id: &SandboxId,
        digest: &str,
    ) -> Result<Applied, ServiceError> {
        self.admit(
            caller,
            &Action::ApplyChanges {
                id: id.clone(),
                digest: digest.to_owned(),
            },
        )
        .await?;
        let Some(kept) = self.cards.take(id) else {
            return Err(ServiceError::Conflict(format!(
                "sandbox {id} has no card waiting to be applied (review it first; a card is \
                 applied once)"
            )));
        };
        if kept.changes.digest != digest {
            return Err(ServiceError::Conflict(format!(
                "the approved card {digest} is not sandbox {id}'s current card {}",
                kept.changes.digest
            )));
        }
        if kept.policy != self.policy.digest() {
            return Err(ServiceError::Conflict(format!(
                "the policy changed since card {digest} was shown: review again"
            )));
        }
        if std::time::Instant::now() >= kept.expires {
            return Err(ServiceError::Conflict(format!(
                "card {digest} expired (review.card_expiry {}): review again",
                humantime::format_duration(self.config.review.card_expiry)
            )));
        }
        let cs = kept.changes;
        let (upper, workspace) = self.layers(id).await?;
        // The approval is on the record before anything is applied.
        self.audit
            .record(
                caller,
                serde_json::json!({"type": "approve", "sandbox": id, "digest": digest}),
            )
            .await?;
        let applied = tokio::task::spawn_blocking(move || {
            let meta = std::fs::symlink_metadata(&workspace).map_err(|e| {
                ServiceError::internal("reading the workspace's owner", format!("{e}"))
            })?;
            luminaguard_review::apply(&cs, &upper, &workspace, Some((meta.uid(), meta.gid())))
                .map_err(ServiceError::Review)
        })
        .await?;
        let outcome = match &applied {
            Ok(a) => serde_json::json!({"type": "apply", "sandbox": id, "digest": digest,
                "applied": a}),
            Err(e) => serde_json::json!({"type": "apply-refused", "sandbox": id,
                "digest": digest, "code": e.code().as_str(), "reason": e.to_string()}),
        };
        self.audit.note(caller, outcome).await;
        applied
    }

    /// Records that the card with `digest` was not approved (`why`: denied, no one to ask,
    /// timed out) and forgets it: nothing of it is applied.
    pub async fn decline_changes(
        &self,
        caller: &Caller,
        id: &SandboxId,
        digest: &str,
        why: &str,
    ) -> Result<(), ServiceError> {
        self.admit(caller, &Action::Review { id: id.clone() })
            .await?;
        self.cards.forget(id);
        self.audit
            .record(
                caller,
                serde_json::json!({"type": "decline", "sandbox": id, "digest": digest,
                    "reason": why}),
            )
            .await
    }

    /// A speculative sandbox's private layer (`upper`) and its real workspace.
    async fn layers(&self, id: &SandboxId) -> Result<(PathBuf, PathBuf), ServiceError> {
        let (dir, meta) = luminaguard_backend::record(&self.runtime, id).await?;
        let speculative = meta.spec.as_ref().is_some_and(|s| s.review.is_some());
        match (speculative, meta.workspace) {
            (true, Some(ws)) => Ok((upper_of(&dir), ws)),
            _ => Err(ServiceError::InvalidSpec(format!(
                "sandbox {id} is not a speculative run (create it with review and a workspace)"
            ))),
        }
    }
}

fn upper_of(dir: &Path) -> PathBuf {
    dir.join(SandboxFile::Review.file_name()).join("upper")
}
