//! Asking before an action runs: what cannot be previewed in a speculative run — a command on
//! a workspace it writes directly, egress to the network — is put to a person as an
//! [`ActionCard`] *before* it happens, and happens only once approved. The card waits in the
//! approvals like a Diff Card: the daemon's API and `luminaguard approvals` answer it, and a
//! front-end with a terminal ([`Service::set_asker`]) asks there too, whichever comes first.
//! Where nobody can be asked (a command-line run with no terminal and no daemon) the action
//! is refused at once: unknown is never allow.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use luminaguard_core::SandboxId;
use luminaguard_review::ChangeSet;

use crate::approvals::{self, ActionCard, Answer, Approval};
use crate::review::Deciding;
use crate::{Caller, EventKind, Service, ServiceError};

/// A front-end's way to ask the person at its terminal: shown the card's text, returns their
/// answer, or `None` when there is nobody to ask. Called on a thread of its own (it may block
/// on a terminal).
#[derive(Clone)]
pub struct Asker(pub Arc<AskFn>, pub Via);

/// Through what an [`Asker`] reaches its person: recorded as the decider's `via` on the audit
/// log and the approval (`terminal`: the CLI's prompt; `mcp-elicitation`: an MCP client that
/// asked its user).
pub type Via = &'static str;

/// Shown a question, the person's answer (`None`: nobody to ask).
pub type AskFn = dyn Fn(&Question) -> Option<Answer> + Send + Sync;

/// What an [`Asker`] is asked, and for whom: a front-end serving several sessions in one
/// process (MCP over HTTP) puts it to the person of the session that made the request.
#[derive(Debug, Clone)]
pub struct Question {
    /// The card as a person reads it.
    pub text: String,
    /// The sandbox the action would run in.
    pub sandbox: SandboxId,
    /// The front-end session of the request that is held ([`Caller::session`]).
    pub session: Option<Arc<str>>,
}

impl std::fmt::Debug for Asker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Asker")
    }
}

/// What is asked about.
#[derive(Debug)]
pub(crate) struct Ask {
    pub sandbox: SandboxId,
    pub user: Option<u32>,
    pub workspace: Option<PathBuf>,
    pub card: ActionCard,
    /// The policy's decisions that asked.
    pub asked: Vec<String>,
    /// The policy's actions behind the card (what an *always* adds).
    pub policy_actions: Vec<luminaguard_policy::Action>,
}

impl Service {
    /// Lets this front-end ask the person at its terminal about actions that cannot be
    /// previewed (the CLI). Set once; later calls change nothing.
    pub fn set_asker(&self, asker: Asker) {
        let _ = self.asker.set(asker);
    }

    /// Puts `ask` to a person and waits for the answer: once approved, the approval it runs
    /// under; denied, expired or with nobody to ask, the action is refused.
    pub(crate) async fn ask_before(
        &self,
        caller: &Caller,
        ask: Ask,
    ) -> Result<Option<String>, ServiceError> {
        if let Some(grant) = self.approvals.granted(&ask.sandbox, &ask.card) {
            // Approved for this sandbox's session already: on the record, under that approval.
            self.audit
                .record(
                    caller,
                    serde_json::json!({"type": "approve", "sandbox": ask.sandbox,
                        "scope": "session", "granted_by": grant.approval, "by": grant.by,
                        "action": ask.card, "asked": ask.asked}),
                )
                .await?;
            return Ok(Some(grant.approval));
        }
        let id =
            approvals::new_id().map_err(|e| ServiceError::internal("making an approval id", e))?;
        let always = self.always_preview(&id, &ask.policy_actions);
        let text = render(&ask, always.as_deref(), self.policy().origin());
        self.audit
            .record(
                caller,
                serde_json::json!({"type": "ask", "sandbox": ask.sandbox, "approval": id,
                    "action": ask.card, "asked": ask.asked}),
            )
            .await?;
        let expiry = self.config.review.card_expiry;
        let now_ms = luminaguard_backend::state::now_unix_ms();
        let summary = ask.asked.join("; ");
        let asker = self.asker.get().cloned();
        let via = asker.as_ref().map_or("terminal", |a| a.1);
        let answerable = self
            .remote_approvals
            .load(std::sync::atomic::Ordering::Relaxed);
        self.approvals.open(
            Approval {
                id: id.clone(),
                sandbox: ask.sandbox.clone(),
                user: ask.user,
                workspace: ask.workspace,
                changes: ChangeSet::new(Vec::new()),
                action: Some(ask.card),
                always,
                network_attempts: Vec::new(),
                policy_actions: ask.policy_actions,
                text: text.clone(),
                asked: ask.asked,
                output_head: String::new(),
                output_cut: false,
                policy_digest: self.policy().digest().to_owned(),
                requested_unix_ms: now_ms,
                expires_unix_ms: now_ms
                    .saturating_add(u64::try_from(expiry.as_millis()).unwrap_or(u64::MAX)),
                outcome: None,
                staged: None,
            },
            Instant::now() + expiry,
            false,
        );
        self.events
            .send_approval(EventKind::ApprovalRequested, &id, &ask.sandbox, ask.user);
        let question = Question {
            text: text.clone(),
            sandbox: ask.sandbox.clone(),
            session: caller.session.clone(),
        };
        let terminal = async {
            let asker = asker?;
            let (tx, rx) = tokio::sync::oneshot::channel();
            // A plain thread: a prompt nobody answers (decided elsewhere) must not hold up the
            // runtime's shutdown.
            std::thread::spawn(move || {
                let _ = tx.send((asker.0)(&question));
            });
            rx.await.ok().flatten()
        };
        // Whoever waits here may be dropped (its client went away, its MCP call was
        // cancelled): the card then goes with it rather than waiting for an answer that would
        // run nothing.
        let _withdraw_if_dropped = Withdraw {
            service: self.clone(),
            caller: caller.clone(),
            id: id.clone(),
        };
        let decided = tokio::select! {
            a = self.wait_approval(caller, &id) => a?,
            answer = terminal => match answer {
                Some(answer) => {
                    let by = Deciding { caller, via };
                    let reason = (answer == Answer::Deny).then(|| match via {
                        "terminal" => "denied at the terminal".to_owned(),
                        via => format!("denied through {via}"),
                    });
                    match self.answer(by, &id, answer, reason, None).await {
                        Ok(a) => a,
                        Err(_) => self.wait_approval(caller, &id).await?,
                    }
                }
                None if answerable => self.wait_approval(caller, &id).await?,
                None => {
                    self.withdraw_approval(caller, &id, "nobody to ask on this path").await;
                    return Err(ServiceError::Held(format!(
                        "{summary}; {} — and there is nobody to ask here (no terminal, no \
                         daemon): run it through the daemon and answer with `luminaguard \
                         approvals`, or under a policy that allows it",
                        ask_unpreviewable(&self.approvals, &id)
                    )));
                }
            },
        };
        match decided.outcome {
            Some(o) if o.approved() => Ok(Some(id)),
            Some(o) => Err(ServiceError::Denied(format!(
                "{summary}; a person was asked ({id}): {o}"
            ))),
            None => Err(ServiceError::internal(
                "waiting for an approval",
                format!("{id} ended undecided"),
            )),
        }
    }
}

/// Withdraws approval `id` when dropped, if it is still waiting (a decided one stays as it
/// is).
pub(crate) struct Withdraw {
    pub service: Service,
    pub caller: Caller,
    pub id: String,
}

impl Drop for Withdraw {
    fn drop(&mut self) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (service, caller, id) = (self.service.clone(), self.caller.clone(), self.id.clone());
        rt.spawn(async move {
            service
                .withdraw_approval(&caller, &id, "the caller went away")
                .await;
        });
    }
}

/// Why approval `id`'s action could not be previewed (for the refusal).
fn ask_unpreviewable(approvals: &approvals::Approvals, id: &str) -> String {
    approvals
        .get(id)
        .and_then(|a| a.action.map(|c| c.unpreviewable))
        .unwrap_or_default()
}

/// The card as a terminal shows it.
fn render(ask: &Ask, always: Option<&str>, origin: &str) -> String {
    let mut t = String::new();
    match ask.card.kind.as_str() {
        "network" => {
            t.push_str(&format!(
                "Network for sandbox {}: it would reach\n",
                ask.sandbox
            ));
            for d in &ask.card.network {
                t.push_str(&format!("    {d}\n"));
            }
        }
        "tool-call" => {
            if let Some(call) = &ask.card.tool {
                t.push_str(&format!(
                    "Tool {} of MCP server {} (in sandbox {}), called with\n",
                    call.tool, call.server, ask.sandbox
                ));
                let args = serde_json::to_string_pretty(&call.arguments).unwrap_or_default();
                for line in args.lines() {
                    t.push_str(&format!("    {line}\n"));
                }
            }
            if let Some(w) = &ask.workspace {
                t.push_str(&format!("the server writes workspace {}\n", w.display()));
            }
        }
        "write" => {
            t.push_str(&format!(
                "Write {} in sandbox {}\n",
                ask.card.path.as_deref().unwrap_or("?"),
                ask.sandbox
            ));
        }
        _ => {
            t.push_str(&format!("Command in sandbox {}:\n", ask.sandbox));
            if let Some(argv) = &ask.card.argv {
                t.push_str(&format!("    {}\n", luminaguard_core::shell::join(argv)));
            }
            if let Some(w) = &ask.workspace {
                t.push_str(&format!(
                    "on workspace {} (written directly)\n",
                    w.display()
                ));
            }
            if !ask.card.network.is_empty() {
                t.push_str(&format!(
                    "in a sandbox that can reach: {}\n",
                    ask.card.network.join(", ")
                ));
            }
        }
    }
    for why in &ask.asked {
        t.push_str(&format!("asked by policy: {why}\n"));
    }
    t.push_str(&format!(
        "It cannot be previewed: {}\n",
        ask.card.unpreviewable
    ));
    if let Some(entry) = always {
        t.push_str(&format!(
            "Approving it always adds to {origin}:{}",
            entry.replace('\n', "\n    ")
        ));
        t.push('\n');
    }
    // What a person reads before answering: a command, a path or a tool's arguments come from
    // an agent, and an escape sequence or carriage return in them must not redraw the card.
    luminaguard_review::path::for_terminal(&t)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An agent's command or path cannot redraw the card a person answers.
    #[test]
    fn a_card_carries_no_escape_sequence() {
        let nasty = "\u{1b}[2J\u{1b}[1A\rWrite /workspace/ok\u{7}\u{202e}";
        for (kind, argv, path) in [
            (
                "exec",
                Some(vec![
                    "sh".to_owned(),
                    "-c".to_owned(),
                    format!("echo {nasty}"),
                ]),
                None,
            ),
            ("write", None, Some(format!("/etc/{nasty}"))),
        ] {
            let ask = Ask {
                sandbox: "sb-1".parse().unwrap(),
                user: None,
                workspace: None,
                card: ActionCard {
                    kind: kind.into(),
                    argv,
                    path,
                    network: Vec::new(),
                    tool: None,
                    unpreviewable: "it writes the workspace".into(),
                },
                asked: vec![format!("ask: {nasty}")],
                policy_actions: Vec::new(),
            };
            let text = render(&ask, None, "preset:default");
            assert!(
                !text
                    .chars()
                    .any(|c| (c.is_control() && c != '\n') || c == '\u{202e}'),
                "{text:?}"
            );
            assert!(text.contains("\\x1b[2J"), "{text}");
        }
    }
}
