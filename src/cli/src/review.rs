//! `luminaguard run --review`: run the command speculatively (its workspace an overlay), show
//! the Diff Card of what it changed, and apply exactly that change set once a person approves
//! it. The person answers at this terminal — or, when the daemon runs the review, through the
//! daemon's approvals (`luminaguard approvals approve|deny ID`, the console), whichever comes
//! first. No answer before the card expires, or no one to ask: nothing is applied.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use luminaguard_api::types::{ApprovalView, CardView};
use luminaguard_service::{Answer, CreateOptions, ExecOptions};

use crate::front::{Execution, Front};
use crate::tty::{Asked, ask};

/// Exit status when the command ran but its changes were not applied (denied, expired, or
/// nobody to ask).
const NOT_APPLIED: u8 = 1;

pub async fn run(
    create: CreateOptions,
    argv: Vec<String>,
    json: bool,
    front: &Front,
) -> anyhow::Result<ExitCode> {
    let opts = ExecOptions {
        argv,
        // The answer to the card is read from the terminal: the command must not eat it.
        stdin: false,
        ..ExecOptions::default()
    };
    let (id, exec) = front.run(create, opts).await?;
    let result = async {
        let mut exec = exec?;
        let status = crate::stream::exec_streamed(&mut exec, false, json).await?;
        let card = front
            .card(id.as_ref(), &mut exec)
            .await
            .context("reading the change set")?;
        let Some(approval) = card.approval.clone() else {
            if !card.network_attempts.is_empty() {
                // Nothing changed, but the card says what it tried on the network.
                eprint!("{}", card.text);
            }
            eprintln!("luminaguard: review: the command changed nothing in the workspace");
            return Ok(status);
        };
        show(&card, &approval, front)?;
        let decided = decide(front, &card, &approval, &mut exec).await?;
        Ok(if report(&decided, &card) {
            status
        } else {
            ExitCode::from(NOT_APPLIED)
        })
    }
    .await;
    if let Err(e) = front.finish_run(id).await {
        eprintln!("luminaguard: cleanup: {e}");
    }
    result
}

/// The card on stderr, and where else it can be answered.
fn show(card: &CardView, approval: &str, front: &Front) -> anyhow::Result<()> {
    let mut err = std::io::stderr().lock();
    for why in &card.asked {
        writeln!(err, "asked by policy: {why}")?;
    }
    err.write_all(card.text.as_bytes())?;
    writeln!(err, "change set {}", card.digest())?;
    if front.answerable_elsewhere() {
        writeln!(
            err,
            "approval {approval}: answer here, or with `luminaguard approvals approve|deny \
             {approval}`; unanswered, it is denied at {}",
            clock(card.expires_unix_ms)
        )?;
    }
    Ok(())
}

/// The decision on the card: this terminal's answer or, through the daemon, anyone's —
/// whichever comes first — or the card's expiry.
async fn decide(
    front: &Front,
    card: &CardView,
    approval: &str,
    exec: &mut Execution,
) -> anyhow::Result<ApprovalView> {
    let question = format!(
        "Apply these changes to {}? [y/N] ",
        card.workspace.as_deref().unwrap_or("the workspace")
    );
    // A plain thread, not a blocking task: a prompt nobody answers (decided elsewhere) must
    // not keep the program from exiting.
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let _ = tx.send(ask(&question));
    });
    let digest = card.digest().to_owned();
    let ours = async {
        let (answer, reason) = match rx.await {
            // A Diff Card is approved once.
            Ok(Asked::Yes | Asked::Session | Asked::Always) => (Answer::Approve, None),
            Ok(Asked::No) => (Answer::Deny, Some("denied at the terminal".to_owned())),
            Ok(Asked::NoTerminal(why)) if !front.answerable_elsewhere() => {
                eprintln!("luminaguard: review: no terminal to ask ({why})");
                (Answer::Deny, Some("no terminal to ask".to_owned()))
            }
            Ok(Asked::NoTerminal(_)) | Err(_) => {
                eprintln!(
                    "luminaguard: review: no terminal here: waiting for an answer to {approval}"
                );
                return std::future::pending().await;
            }
        };
        front.answer(approval, answer, reason, &digest).await
    };
    let theirs = async { Ok(front.await_decision(approval, exec).await?) };
    tokio::pin!(theirs);
    tokio::select! {
        decided = &mut theirs => decided,
        ours = ours => match ours {
            Ok(decided) => Ok(decided),
            // Answered elsewhere just before us, or refused: what happened is what the
            // approval says now.
            Err(e) => {
                eprintln!("luminaguard: review: {e:#}");
                theirs.await
            }
        },
    }
}

/// Says how the card was decided; whether its changes were applied.
fn report(a: &ApprovalView, card: &CardView) -> bool {
    let text = a.outcome_text.as_deref().unwrap_or("undecided");
    match a.state.as_str() {
        "applied" => {
            eprintln!(
                "luminaguard: review: applied {} changes to {}",
                card.len(),
                card.workspace.as_deref().unwrap_or("the workspace")
            );
            true
        }
        "expired" => {
            eprintln!("luminaguard: review: the card expired unanswered; nothing was applied");
            false
        }
        "apply-refused" => {
            eprintln!("luminaguard: review: {text}");
            false
        }
        _ => {
            eprintln!("luminaguard: review: {text}; nothing was applied");
            false
        }
    }
}

/// A time of day (UTC) for a message.
fn clock(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    format!(
        "{:02}:{:02}:{:02} UTC",
        (secs / 3600) % 24,
        (secs / 60) % 60,
        secs % 60
    )
}
