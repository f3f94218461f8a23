//! `luminaguard approvals ls|show|approve|deny|wait`: the Diff Cards waiting for a person's
//! answer, and the answer. Cards wait in the daemon (a `run --review` it serves, the MCP
//! server's and the agent loop's asks); without a daemon there is nothing to answer from
//! another process, so these commands need one.

use std::process::ExitCode;

use anyhow::bail;
use clap::Subcommand;
use luminaguard_api::types::ApprovalView;
use luminaguard_service::Answer;

use crate::front::Front;

#[derive(Debug, Subcommand)]
pub enum ApprovalsCommand {
    /// The cards waiting for your answer (root: everyone's), oldest first.
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// One card in full: the change set with its diffs, why it was asked, until when.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Apply exactly the card's change set to its workspace (all of it, or nothing if the
    /// workspace changed since the card).
    Approve {
        id: String,
        /// Why (on the audit record).
        #[arg(long)]
        reason: Option<String>,
        /// The change set digest you reviewed: if the card's is another, nothing happens.
        #[arg(long, value_name = "DIGEST")]
        digest: Option<String>,
        /// For an action asked about before it runs: also let the same action run again in
        /// the same sandbox without asking, until the sandbox is gone.
        #[arg(long, conflicts_with = "always")]
        for_session: bool,
        /// For an action asked about before it runs: add it to the policy file as a standing
        /// approval (`approvals show` prints the entry first), so exactly this action is
        /// allowed from now on.
        #[arg(long)]
        always: bool,
        #[arg(long)]
        json: bool,
    },
    /// Refuse the card: nothing of it is applied.
    Deny {
        id: String,
        #[arg(long)]
        reason: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Wait until the card is answered (or expires), then print how it ended; exits 0 only
    /// if it was approved (and its changes, if any, applied).
    Wait {
        id: String,
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(cmd: ApprovalsCommand, front: &Front) -> anyhow::Result<ExitCode> {
    if !front.answerable_elsewhere() {
        bail!(
            "approvals wait in the daemon, and none answers on its socket (start one with \
             `luminaguard daemon`; without it, `run --review` asks at its own terminal)"
        );
    }
    match cmd {
        ApprovalsCommand::Ls { json } => {
            let list = front.approvals().await?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&list)?);
            } else if list.is_empty() {
                eprintln!("no approvals waiting");
            } else {
                outln!("{:<19}  {:<24}  {:<8}  WHAT", "ID", "SANDBOX", "EXPIRES");
                for a in &list {
                    outln!(
                        "{:<19}  {:<24}  {:<8}  {}",
                        a.id,
                        a.card.sandbox,
                        left(a.card.expires_unix_ms),
                        a.card.what()
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        ApprovalsCommand::Show { id, json } => {
            let a = front.approval(&id, false).await?;
            print(&a, json, true)?;
            Ok(ExitCode::SUCCESS)
        }
        ApprovalsCommand::Approve {
            id,
            reason,
            digest,
            for_session,
            always,
            json,
        } => {
            let digest = match digest {
                Some(d) => d,
                // What the person is approving is the card as it is now.
                None => front.approval(&id, false).await?.card.digest().to_owned(),
            };
            let answer = match (for_session, always) {
                (true, _) => Answer::ApproveForSession,
                (_, true) => Answer::ApproveAlways,
                _ => Answer::Approve,
            };
            let a = front.answer(&id, answer, reason, &digest).await?;
            print(&a, json, false)?;
            Ok(exit(&a))
        }
        ApprovalsCommand::Deny { id, reason, json } => {
            let digest = front.approval(&id, false).await?.card.digest().to_owned();
            let a = front.answer(&id, Answer::Deny, reason, &digest).await?;
            print(&a, json, false)?;
            Ok(ExitCode::SUCCESS)
        }
        ApprovalsCommand::Wait { id, json } => {
            let a = front.approval(&id, true).await?;
            print(&a, json, false)?;
            Ok(exit(&a))
        }
    }
}

fn exit(a: &ApprovalView) -> ExitCode {
    if a.state == "applied" || a.state == "approved" {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn print(a: &ApprovalView, json: bool, card: bool) -> anyhow::Result<()> {
    if json {
        outln!("{}", serde_json::to_string_pretty(a)?);
        return Ok(());
    }
    outln!("approval {}  ({})", a.id, a.state);
    outln!("sandbox {}: {}", a.card.sandbox, a.card.what());
    if card {
        // An action card's text says why it was asked, and what *always* would add.
        let diff_card = a.card.action.is_none();
        if diff_card {
            for why in &a.card.asked {
                outln!("asked by policy: {why}");
            }
        }
        out!("{}", a.card.text);
        if diff_card {
            outln!("change set {}", a.card.digest());
        }
        if !a.card.output_head.is_empty() {
            // The command's own bytes: no escape sequence of theirs reaches the terminal.
            let cut = if a.card.output_cut {
                " (its first 4 KiB)"
            } else {
                ""
            };
            outln!("the command's output{cut}:");
            for line in luminaguard_review::path::for_terminal(&a.card.output_head).lines() {
                outln!("  | {line}");
            }
        }
        if a.outcome.is_none() {
            outln!(
                "unanswered, it is denied in {}",
                left(a.card.expires_unix_ms)
            );
        }
    }
    if let Some(t) = &a.outcome_text {
        outln!("{t}");
    }
    Ok(())
}

/// How long until `unix_ms`, for a person.
fn left(unix_ms: u64) -> String {
    let now = luminaguard_backend::state::now_unix_ms();
    let secs = unix_ms.saturating_sub(now) / 1000;
    if secs >= 60 {
        format!("{}m{:02}s", secs / 60, secs % 60)
    } else {
        format!("{secs}s")
    }
}
