//! Speculative runs (`run --review`): the sandbox's workspace is an overlay whose writes land in
//! a private layer; afterwards the service reads that layer into a change set — the Diff Card a
//! person looks at — and applies exactly that change set to the real workspace once approved.
//!
//! A card that changed anything waits in the service's approvals ([`crate::approvals`]) for a
//! person's answer, from whichever channel comes first; an approval names the card, and only
//! that card's change set is applied (a layer or workspace changed since does not match).
//! Scanning and applying are `luminaguard-review`'s.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use luminaguard_core::SandboxId;
use luminaguard_core::runtime::SandboxFile;
pub use luminaguard_review::{Applied, ChangeSet};
use luminaguard_review::{Limits, RenderOptions};

use crate::approvals::{Answer, Approval, Decider, Outcome, Standing, Waiting};
use crate::{Action, Caller, EventKind, Service, ServiceError, approvals};

/// A speculative run's Diff Card: what the command changed, as data and as text, and the
/// approval it waits for.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Card {
    /// The approval a person answers (`None`: the run changed nothing, there is nothing to
    /// approve).
    pub approval: Option<String>,
    pub sandbox: SandboxId,
    /// The real workspace the change set would be applied to.
    pub workspace: PathBuf,
    pub changes: ChangeSet,
    /// The card as a person reads it in a terminal (diffs included, summarised when large).
    pub text: String,
    /// Why a person is asked (the policy decisions that asked; empty: a review was asked for).
    pub asked: Vec<String>,
    /// The head of the run's latest command's output (stdout and stderr as they came, lossy
    /// UTF-8, at most 4 KiB) and whether there was more.
    pub output_head: String,
    pub output_cut: bool,
    /// What the run tried on the network, refused (a preview has none): program, socket family
    /// and count — destinations are not known.
    pub network_attempts: Vec<String>,
    /// The policy the card was shown under: an approval applies only under the same one.
    pub policy_digest: String,
    /// Unanswered by then, the card is denied.
    pub expires_unix_ms: u64,
}

/// Someone is asking: who, and through what (on the audit record of the answer).
#[derive(Debug, Clone, Copy)]
pub struct Deciding<'a> {
    pub caller: &'a Caller,
    /// `terminal`, `api`.
    pub via: &'a str,
}

impl Service {
    /// Reads what speculative sandbox `id`'s commands changed so far into a Diff Card and —
    /// when it changed anything — puts the card up for a person's answer ([`Service::answer`],
    /// [`Service::wait_approval`]), replacing the sandbox's earlier card. Unanswered within
    /// `review.card_expiry`, the card is denied.
    pub async fn review(&self, caller: &Caller, id: &SandboxId) -> Result<Card, ServiceError> {
        self.admit(caller, &Action::Review { id: id.clone() })
            .await?;
        self.fetch_review_layer(id).await?;
        let (upper, workspace) = self.layers(id).await?;
        let (u, w) = (upper.clone(), workspace.clone());
        let attempts =
            match luminaguard_backend::seccomp_audit(&self.runtime.sandbox_dir(id)?).await {
                Ok(audit) => crate::attempts::lines(&audit),
                Err(e) => {
                    tracing::warn!(%id, error = %e, "reading the preview's network attempts");
                    Vec::new()
                }
            };
        let (changes, text) = tokio::task::spawn_blocking(move || {
            let cs = luminaguard_review::scan(&u, &w, &Limits::default())?;
            let text = luminaguard_review::render(&cs, &u, &w, &RenderOptions::default());
            Ok::<_, luminaguard_review::ReviewError>((cs, text))
        })
        .await?
        .map_err(ServiceError::Review)?;
        let approval = if changes.entries.is_empty() {
            None
        } else {
            Some(
                approvals::new_id()
                    .map_err(|e| ServiceError::internal("making an approval id", e))?,
            )
        };
        self.audit
            .record(
                caller,
                serde_json::json!({
                    "type": "review",
                    "sandbox": id,
                    "approval": approval,
                    "digest": changes.digest,
                    "summary": changes.summary,
                    "network_attempts": attempts,
                }),
            )
            .await?;
        let expiry = self.config.review.card_expiry;
        let now_ms = luminaguard_backend::state::now_unix_ms();
        let text = text + &crate::attempts::render(&attempts);
        let output = self.live.get(id).map(|e| e.output()).unwrap_or_default();
        let card = Card {
            output_head: String::from_utf8_lossy(&output.bytes).into_owned(),
            output_cut: output.cut,
            approval: approval.clone(),
            sandbox: id.clone(),
            workspace,
            changes,
            text,
            asked: self.approvals.asked(id),
            network_attempts: attempts,
            policy_digest: self.policy().digest().to_owned(),
            expires_unix_ms: now_ms
                .saturating_add(u64::try_from(expiry.as_millis()).unwrap_or(u64::MAX)),
        };
        if let Some(approval) = approval {
            let (_, meta) = luminaguard_backend::record(&self.runtime, id).await?;

            let replaced = self.approvals.open(
                Approval {
                    id: approval,
                    sandbox: id.clone(),
                    user: meta.user,
                    workspace: Some(card.workspace.clone()),
                    changes: card.changes.clone(),
                    action: None,
                    always: None,
                    network_attempts: card.network_attempts.clone(),
                    policy_actions: Vec::new(),
                    text: card.text.clone(),
                    asked: card.asked.clone(),
                    output_head: card.output_head.clone(),
                    output_cut: card.output_cut,
                    policy_digest: card.policy_digest.clone(),
                    requested_unix_ms: now_ms,
                    expires_unix_ms: card.expires_unix_ms,
                    outcome: None,
                    staged: None,
                },
                Instant::now() + expiry,
                true,
            );
            if let Some(old) = replaced {
                self.end_unanswered(
                    old,
                    Outcome::Withdrawn {
                        reason: "a newer card of the same sandbox replaced it".into(),
                    },
                    caller.session.clone(),
                )
                .await;
            }
            if let Some(a) = &card.approval {
                self.events
                    .send_approval(EventKind::ApprovalRequested, a, id, meta.user);
            }
        }
        Ok(card)
    }

    /// The approvals waiting for an answer that `caller` may see (their own sandboxes'; root:
    /// all), oldest first.
    pub async fn approvals(&self, caller: &Caller) -> Vec<Approval> {
        self.sweep_approvals().await;
        let mut v = self.approvals.waiting();
        v.retain(|a| caller.may_use(a.user));
        v
    }

    /// Approval `id`, waiting or decided not long ago (one `caller` may not see is reported as
    /// not existing).
    pub async fn approval(&self, caller: &Caller, id: &str) -> Result<Approval, ServiceError> {
        self.sweep_approvals().await;
        self.approvals
            .get(id)
            .filter(|a| caller.may_use(a.user))
            .ok_or_else(|| no_approval(id))
    }

    /// Answers approval `id`. An approval applies exactly the card's change set to the real
    /// workspace — all of it, or nothing if the workspace or the layer changed since the card,
    /// or the policy did; a deny applies nothing. An approval is answered once: whoever comes
    /// second is told it is decided. `expect_digest`, when given, must be the card's (what the
    /// person was shown).
    pub async fn answer(
        &self,
        by: Deciding<'_>,
        id: &str,
        answer: Answer,
        reason: Option<String>,
        expect_digest: Option<&str>,
    ) -> Result<Approval, ServiceError> {
        self.sweep_approvals().await;
        let caller = by.caller;
        match self.approvals.get(id) {
            Some(a) if caller.may_use(a.user) => {
                if let Some(o) = &a.outcome {
                    return Err(ServiceError::Conflict(format!(
                        "approval {id} was decided already: {o}"
                    )));
                }
                if answer == Answer::ApproveAlways && a.always.is_none() {
                    return Err(ServiceError::InvalidSpec(format!(
                        "approval {id} cannot be approved always: {}",
                        if a.action.is_none() {
                            "a Diff Card is approved once"
                        } else {
                            "the policy in use is a preset, not a file"
                        }
                    )));
                }
                if answer == Answer::ApproveForSession && a.action.is_none() {
                    return Err(ServiceError::InvalidSpec(format!(
                        "approval {id} is a Diff Card, approved once: a session approval is \
                         for actions asked about before they run"
                    )));
                }
                if let Some(d) = expect_digest
                    && d != a.changes.digest
                {
                    return Err(ServiceError::Conflict(format!(
                        "approval {id} is for change set {}, not {d}",
                        a.changes.digest
                    )));
                }
            }
            _ => return Err(no_approval(id)),
        }
        let Some(w) = self.approvals.take(id) else {
            return Err(ServiceError::Conflict(format!(
                "approval {id} was decided already (by another answer just now)"
            )));
        };
        let decider = Decider {
            uid: caller.uid,
            via: by.via.to_owned(),
        };
        let sandbox = w.approval.sandbox.clone();
        let digest = w.approval.changes.digest.clone();
        let user = w.approval.user;
        let outcome = match answer {
            Answer::Deny => {
                self.audit
                    .note(
                        caller,
                        serde_json::json!({"type": "decline", "sandbox": sandbox,
                            "approval": id, "digest": digest, "by": decider,
                            "reason": reason.as_deref().unwrap_or("denied")}),
                    )
                    .await;
                Outcome::Denied {
                    by: decider,
                    reason,
                }
            }
            Answer::ApproveAlways if w.approval.action.is_some() => {
                // The policy file first: if it cannot take the entry, the card stays
                // unanswered.
                let added = match self
                    .approve_always(caller, id, &w.approval.policy_actions, &decider)
                    .await
                {
                    Ok(added) => added,
                    Err(e) => {
                        self.approvals.restore(w);
                        return Err(e);
                    }
                };
                match self
                    .audit
                    .record(
                        caller,
                        with_reason(
                            serde_json::json!({"type": "approve", "sandbox": sandbox,
                                "approval": id, "action": w.approval.action, "by": decider,
                                "scope": "always", "policy_entry": added,
                                "policy": self.policy().digest()}),
                            reason.as_deref(),
                        ),
                    )
                    .await
                {
                    Ok(()) => Outcome::Approved { by: decider },
                    Err(e) => Outcome::Withdrawn {
                        reason: format!("the approval could not be recorded: {e}"),
                    },
                }
            }
            Answer::Approve | Answer::ApproveForSession if w.approval.action.is_some() => {
                // Asked before it runs: the approval lets it run (on the record first).
                let session = answer == Answer::ApproveForSession;
                match self
                    .audit
                    .record(
                        caller,
                        with_reason(
                            serde_json::json!({"type": "approve", "sandbox": sandbox,
                                "approval": id, "action": w.approval.action, "by": decider,
                                "scope": if session { "session" } else { "once" }}),
                            reason.as_deref(),
                        ),
                    )
                    .await
                {
                    Ok(()) => {
                        if let (true, Some(card)) = (session, &w.approval.action) {
                            self.approvals.grant(
                                &sandbox,
                                approvals::Grant {
                                    card: card.clone(),
                                    by: decider.clone(),
                                    approval: id.to_owned(),
                                },
                            );
                        }
                        Outcome::Approved { by: decider }
                    }
                    Err(e) => Outcome::Withdrawn {
                        reason: format!("the approval could not be recorded: {e}"),
                    },
                }
            }
            // (A Diff Card is approved once: a session answer to one was refused above.)
            Answer::Approve | Answer::ApproveForSession | Answer::ApproveAlways => {
                self.approve(caller, &w, decider, reason.as_deref()).await
            }
        };
        let done = self.approvals.finish(w, outcome);
        self.events
            .send_approval(EventKind::ApprovalDecided, id, &sandbox, user);
        Ok(done)
    }

    /// Applies approved card `w`, its approval on the record first.
    async fn approve(
        &self,
        caller: &Caller,
        w: &Waiting,
        by: Decider,
        reason: Option<&str>,
    ) -> Outcome {
        let a = &w.approval;
        let refused = |code: &str, reason: String| Outcome::ApplyRefused {
            by: by.clone(),
            code: code.to_owned(),
            reason,
        };
        if a.policy_digest != self.policy().digest() {
            return refused(
                "policy-changed",
                "the policy changed since the card was shown: review again".into(),
            );
        }
        if Instant::now() >= w.deadline {
            return refused(
                "expired",
                format!(
                    "the card expired (review.card_expiry {}): review again",
                    humantime::format_duration(self.config.review.card_expiry)
                ),
            );
        }
        let upper = match &a.staged {
            Some(staged) => staged.clone(),
            None => match self.layers(&a.sandbox).await {
                Ok((upper, _)) => upper,
                Err(e) => return refused(e.code().as_str(), e.to_string()),
            },
        };
        // The approval is on the record before anything is applied.
        if let Err(e) = self
            .audit
            .record(
                caller,
                with_reason(
                    serde_json::json!({"type": "approve", "sandbox": a.sandbox,
                        "approval": a.id, "digest": a.changes.digest, "by": by}),
                    reason,
                ),
            )
            .await
        {
            return refused("audit", e.to_string());
        }
        let cs = a.changes.clone();
        let Some(workspace) = a.workspace.clone() else {
            return refused("no-workspace", "the card names no workspace".into());
        };
        let applied = tokio::task::spawn_blocking(move || {
            let meta = std::fs::symlink_metadata(&workspace).map_err(|e| {
                ServiceError::internal("reading the workspace's owner", format!("{e}"))
            })?;
            luminaguard_review::apply(&cs, &upper, &workspace, Some((meta.uid(), meta.gid())))
                .map_err(ServiceError::Review)
        })
        .await
        .unwrap_or_else(|e| Err(e.into()));
        let (record, outcome) = match applied {
            Ok(applied) => (
                serde_json::json!({"type": "apply", "sandbox": a.sandbox, "approval": a.id,
                    "digest": a.changes.digest, "applied": applied}),
                Outcome::Applied { by, applied },
            ),
            Err(e) => {
                let code = match &e {
                    ServiceError::Review(r) => r.code().to_owned(),
                    other => other.code().as_str().to_owned(),
                };
                (
                    serde_json::json!({"type": "apply-refused", "sandbox": a.sandbox,
                        "approval": a.id, "digest": a.changes.digest, "code": code,
                        "reason": e.to_string()}),
                    refused(&code, e.to_string()),
                )
            }
        };
        self.audit.note(caller, record).await;
        outcome
    }

    /// Waits until approval `id` is answered — or, unanswered by its deadline, denies it — and
    /// returns how it ended.
    pub async fn wait_approval(&self, caller: &Caller, id: &str) -> Result<Approval, ServiceError> {
        let a = self.approval(caller, id).await?;
        if a.outcome.is_some() {
            return Ok(a);
        }
        let Some(Standing::Waiting(mut rx, deadline)) = self.approvals.standing(id) else {
            return self.approval(caller, id).await;
        };
        loop {
            if rx.borrow_and_update().is_some() {
                break;
            }
            tokio::select! {
                changed = rx.changed() => if changed.is_err() { break },
                () = tokio::time::sleep_until(deadline.into()) => {
                    if let Some(w) = self.approvals.take(id) {
                        self.end_unanswered(w, Outcome::Expired, None).await;
                    }
                    break;
                }
            }
        }
        self.approval(caller, id).await
    }

    /// Withdraws approval `id` unanswered (the command that asked went away): nothing of it
    /// is applied. An approval decided already is left as it is.
    pub async fn withdraw_approval(&self, caller: &Caller, id: &str, why: &str) {
        if self.approval(caller, id).await.is_err() {
            return;
        }
        if let Some(w) = self.approvals.take(id) {
            self.end_unanswered(
                w,
                Outcome::Withdrawn { reason: why.into() },
                caller.session.clone(),
            )
            .await;
        }
    }

    /// Withdraws sandbox `id`'s waiting approvals (the sandbox is going away).
    pub(crate) async fn withdraw_sandbox_approval(&self, id: &SandboxId) {
        for w in self.approvals.take_for_sandbox(id) {
            self.end_unanswered(
                w,
                Outcome::Withdrawn {
                    reason: "the sandbox was destroyed".into(),
                },
                None,
            )
            .await;
        }
    }

    /// Denies every approval whose time ran out.
    async fn sweep_approvals(&self) {
        for w in self.approvals.take_expired(Instant::now()) {
            self.end_unanswered(w, Outcome::Expired, None).await;
        }
    }

    /// Ends taken approval `w` without an answer: on the record (naming `session`, the
    /// front-end session that ended it, if one did), and its waiters told.
    async fn end_unanswered(
        &self,
        w: Waiting,
        outcome: Outcome,
        session: Option<std::sync::Arc<str>>,
    ) {
        let a = &w.approval;
        let caller = Caller {
            uid: a.user.unwrap_or(self.euid),
            gid: 0,
            pid: None,
            session,
            front: None,
        };
        let reason = match &outcome {
            Outcome::Expired => "timed out".to_owned(),
            Outcome::Withdrawn { reason } => format!("withdrawn: {reason}"),
            other => other.to_string(),
        };
        self.audit
            .note(
                &caller,
                serde_json::json!({"type": "decline", "sandbox": a.sandbox, "approval": a.id,
                    "digest": a.changes.digest, "reason": reason}),
            )
            .await;
        let (id, sandbox, user) = (a.id.clone(), a.sandbox.clone(), a.user);
        self.approvals.finish(w, outcome);
        self.events
            .send_approval(EventKind::ApprovalDecided, &id, &sandbox, user);
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

fn no_approval(id: &str) -> ServiceError {
    ServiceError::NotFound(format!("no approval {id}"))
}

/// An approval's record with the person's reason, when they gave one.
fn with_reason(mut record: serde_json::Value, reason: Option<&str>) -> serde_json::Value {
    if let (Some(r), Some(o)) = (reason, record.as_object_mut()) {
        o.insert("reason".into(), r.into());
    }
    record
}
