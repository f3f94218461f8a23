//! `luminaguard run --review`: run the command speculatively (its workspace an overlay), show
//! the Diff Card of what it changed, and apply exactly that change set if the person at the
//! terminal approves. No terminal, no approval: nothing is applied.

use std::io::{BufRead, Write};
use std::process::ExitCode;

use anyhow::Context;
use luminaguard_service::{CreateOptions, ExecOptions};

use crate::front::Front;

/// Exit status when the command ran but its changes were not applied (denied, or nobody to ask).
const NOT_APPLIED: u8 = 1;

pub async fn run(
    create: CreateOptions,
    argv: Vec<String>,
    json: bool,
    front: &Front,
) -> anyhow::Result<ExitCode> {
    let workspace = create.workspace.clone().unwrap_or_default();
    let opts = ExecOptions {
        argv,
        // The answer to the card is read from the terminal: the command must not eat it.
        stdin: false,
        ..ExecOptions::default()
    };
    let (id, exec) = front.run(create, opts).await?;
    let result = async {
        let Some(id) = &id else {
            anyhow::bail!("a review runs in this process (no sandbox id came back)");
        };
        let status = crate::stream::exec_streamed(exec?, false, json).await?;
        let card = front.review(id).await.context("reading the change set")?;
        let mut err = std::io::stderr().lock();
        if card.changes.entries.is_empty() {
            writeln!(
                err,
                "luminaguard: review: the command changed nothing in the workspace"
            )?;
            return Ok(status);
        }
        err.write_all(card.text.as_bytes())?;
        writeln!(err, "change set {}", card.changes.digest)?;
        drop(err);
        let question = format!("Apply these changes to {}? [y/N] ", workspace.display());
        match tokio::task::spawn_blocking(move || ask(&question)).await? {
            Answer::Yes => {
                front
                    .apply_changes(id, &card.changes.digest)
                    .await
                    .context("applying the change set (nothing was applied)")?;
                eprintln!(
                    "luminaguard: review: applied {} changes to {}",
                    card.changes.entries.len(),
                    workspace.display()
                );
                Ok(status)
            }
            Answer::No => {
                front
                    .decline_changes(id, &card.changes.digest, "denied at the terminal")
                    .await?;
                eprintln!("luminaguard: review: denied; nothing was applied");
                Ok(ExitCode::from(NOT_APPLIED))
            }
            Answer::NoTerminal(why) => {
                front
                    .decline_changes(id, &card.changes.digest, "no terminal to ask")
                    .await?;
                eprintln!("luminaguard: review: no terminal to ask ({why}); nothing was applied");
                Ok(ExitCode::from(NOT_APPLIED))
            }
        }
    }
    .await;
    if let Err(e) = front.finish_run(id).await {
        eprintln!("luminaguard: cleanup: {e}");
    }
    result
}

enum Answer {
    Yes,
    No,
    NoTerminal(String),
}

/// Asks on the controlling terminal (not stdin, which may be a pipe the agent controls).
#[allow(clippy::disallowed_methods)] // runs on a blocking thread
fn ask(question: &str) -> Answer {
    let tty = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
    {
        Ok(t) => t,
        Err(e) => return Answer::NoTerminal(e.to_string()),
    };
    let mut out = &tty;
    if out
        .write_all(question.as_bytes())
        .and_then(|()| out.flush())
        .is_err()
    {
        return Answer::NoTerminal("cannot write to it".into());
    }
    let mut line = String::new();
    match std::io::BufReader::new(&tty).read_line(&mut line) {
        Ok(0) | Err(_) => Answer::No,
        Ok(_) => match line.trim().to_ascii_lowercase().as_str() {
            "y" | "yes" => Answer::Yes,
            _ => Answer::No,
        },
    }
}
