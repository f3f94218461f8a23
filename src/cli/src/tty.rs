//! Asking the person at the controlling terminal (not stdin, which may be a pipe an agent
//! controls): the Approval Cliff's prompt in the command line.

use std::io::{BufRead, Write};

use luminaguard_service::Answer;

pub enum Asked {
    Yes,
    /// Yes, and for the rest of the sandbox's session.
    Session,
    /// Yes, and from now on (a standing approval in the policy file).
    Always,
    No,
    NoTerminal(String),
}

/// Asks on the controlling terminal (not stdin, which may be a pipe the agent controls).
#[allow(clippy::disallowed_methods)] // runs on its own thread
pub fn ask(question: &str) -> Asked {
    let tty = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
    {
        Ok(t) => t,
        Err(e) => return Asked::NoTerminal(e.to_string()),
    };
    let mut out = &tty;
    if out
        .write_all(question.as_bytes())
        .and_then(|()| out.flush())
        .is_err()
    {
        return Asked::NoTerminal("cannot write to it".into());
    }
    let mut line = String::new();
    match std::io::BufReader::new(&tty).read_line(&mut line) {
        Ok(0) | Err(_) => Asked::No,
        Ok(_) => match line.trim().to_ascii_lowercase().as_str() {
            "y" | "yes" => Asked::Yes,
            "s" | "session" => Asked::Session,
            "a" | "always" => Asked::Always,
            _ => Asked::No,
        },
    }
}

/// The service's way to ask here about an action it cannot preview: the card, then a yes/no
/// question on the terminal (none: nobody to ask).
pub fn asker() -> luminaguard_service::ask::Asker {
    luminaguard_service::ask::Asker(
        std::sync::Arc::new(|q: &luminaguard_service::ask::Question| {
            let card = q.text.as_str();
            let always = if card.contains("Approving it always adds") {
                " / [a]lways: add it to the policy"
            } else {
                ""
            };
            let question =
                format!("{card}Allow it? [y]es / [s]ession: again in this sandbox{always} / [N]o ");
            match ask(&question) {
                Asked::Yes => Some(Answer::Approve),
                Asked::Session => Some(Answer::ApproveForSession),
                Asked::Always => Some(Answer::ApproveAlways),
                Asked::No => Some(Answer::Deny),
                Asked::NoTerminal(_) => None,
            }
        }),
        "terminal",
    )
}
