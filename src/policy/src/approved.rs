//! Standing approvals: `[[approved]]` entries a person added by answering *always* to an action
//! the policy asked about. An entry names one action exactly — a command's whole argv, or one
//! network destination — and turns the policy's `ask` for exactly that action into `allow`.
//! It never overrides a `deny`, and it widens nothing: a different argument, another
//! destination, asks again.
//!
//! ```toml
//! [[approved]]
//! exec = ["npm", "test"]
//! approval = "ap-0123456789abcdef"
//! by = "uid 1000 via terminal"
//! ```

use crate::action::Action;
use crate::decision::{Decision, Risk, RuleRef, Verdict};
use crate::file::RawApproved;

/// One standing approval, checked.
#[derive(Debug, Clone)]
pub(crate) struct Approved {
    pub line: usize,
    pub what: What,
    pub approval: Option<String>,
    pub by: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum What {
    Exec(Vec<String>),
    /// Host (lower-cased) and port (0: any).
    Net(String, u16),
}

/// Checks one `[[approved]]` table; problems as messages.
pub(crate) fn compile(raw: &RawApproved, line: usize) -> Result<Approved, String> {
    let what = match (&raw.exec, &raw.net) {
        (Some(argv), None) if !argv.is_empty() => What::Exec(argv.clone()),
        (Some(_), None) => return Err("an approved exec needs the command's words".into()),
        (None, Some(dest)) => {
            let (host, port) = split_dest(dest)
                .ok_or_else(|| format!("approved net `{dest}`: give HOST:PORT (port 0: any)"))?;
            What::Net(host, port)
        }
        _ => return Err("an [[approved]] entry names exactly one of `exec` or `net`".into()),
    };
    Ok(Approved {
        line,
        what,
        approval: raw.approval.clone(),
        by: raw.by.clone(),
    })
}

fn split_dest(dest: &str) -> Option<(String, u16)> {
    let (host, port) = dest.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return None;
    }
    Some((host.to_ascii_lowercase(), port.parse().ok()?))
}

impl What {
    fn of(action: &Action) -> Option<Self> {
        match action {
            Action::Exec { argv, .. } => Some(Self::Exec(argv.clone())),
            Action::Net { host, port } => Some(Self::Net(host.to_ascii_lowercase(), *port)),
            _ => None,
        }
    }
}

/// `decision` for `action`, with `approved` applied: an `ask` for exactly an approved action
/// becomes `allow`, naming the entry.
pub(crate) fn apply(
    approved: &[Approved],
    origin: &str,
    action: &Action,
    mut decision: Decision,
) -> Decision {
    if decision.verdict != Verdict::Ask || approved.is_empty() {
        return decision;
    }
    let Some(what) = What::of(action) else {
        return decision;
    };
    let Some(entry) = approved.iter().find(|a| a.what == what) else {
        return decision;
    };
    let mut reason = format!("approved always, in place of: {}", decision.reason);
    if let Some(by) = &entry.by {
        reason.push_str(&format!(" (by {by})"));
    }
    decision.verdict = Verdict::Allow;
    decision.risk = Risk::Low;
    decision.reason = reason;
    decision.rule = Some(RuleRef {
        origin: origin.to_owned(),
        line: entry.line,
        id: entry.approval.clone(),
    });
    decision
}

/// The `[[approved]]` entry that approves `action` always, as text to append to a policy file
/// (`None`: an action that cannot be approved always, e.g. an MCP call).
pub fn entry_text(action: &Action, approval: &str, by: &str) -> Option<String> {
    let quote = |s: &str| toml::Value::String(s.to_owned()).to_string();
    let matcher = match action {
        Action::Exec { argv, .. } if !argv.is_empty() => format!(
            "exec = [{}]",
            argv.iter().map(|a| quote(a)).collect::<Vec<_>>().join(", ")
        ),
        Action::Net { host, port } => format!("net = {}", quote(&format!("{host}:{port}"))),
        _ => return None,
    };
    Some(format!(
        "\n[[approved]]\n{matcher}\napproval = {}\nby = {}\n",
        quote(approval),
        quote(by)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Policy;

    const BASE: &str = "version = 1\ndefault = \"ask\"\n[[rule]]\nid = \"no-rm\"\ndecision = \"deny\"\nreason = \"never\"\nprogram = [\"rm\"]\nexamples = [\"rm x\"]\n";

    fn with(entries: &[(Action, &str)]) -> Policy {
        let mut text = BASE.to_owned();
        for (a, id) in entries {
            text.push_str(&entry_text(a, id, "uid 1000 via terminal").unwrap());
        }
        Policy::from_text(&text, "test.toml").unwrap()
    }

    #[test]
    fn an_approved_action_is_allowed_and_only_that_action() {
        let npm = Action::exec(&["npm", "test"]);
        let p = with(&[(npm.clone(), "ap-0123456789abcdef")]);
        let d = p.decide(&npm);
        assert_eq!(d.verdict, Verdict::Allow, "{d}");
        assert!(d.reason.contains("approved always"), "{d}");
        assert_eq!(d.rule.unwrap().id.as_deref(), Some("ap-0123456789abcdef"));
        for other in [
            Action::exec(&["npm", "test", "--x"]),
            Action::exec(&["npm"]),
            Action::shell("npm test"),
        ] {
            assert_eq!(p.decide(&other).verdict, Verdict::Ask, "{other:?}");
        }
    }

    #[test]
    fn an_approval_never_overrides_a_deny() {
        let rm = Action::exec(&["rm", "x"]);
        let p = with(&[(rm.clone(), "ap-0123456789abcdef")]);
        assert_eq!(p.decide(&rm).verdict, Verdict::Deny);
    }

    #[test]
    fn a_destination_is_approved_exactly() {
        let net = Action::Net {
            host: "Example.COM".into(),
            port: 443,
        };
        let p = with(&[(net.clone(), "ap-0123456789abcdef")]);
        assert_eq!(p.decide(&net).verdict, Verdict::Allow);
        let other_port = Action::Net {
            host: "example.com".into(),
            port: 80,
        };
        assert_eq!(p.decide(&other_port).verdict, Verdict::Ask);
    }

    #[test]
    fn entries_with_hostile_words_round_trip() {
        let odd = Action::exec(&["sh", "-c", "echo \"a\" 'b' \\ \n ] [[rule]] = x"]);
        let p = with(&[(odd.clone(), "ap-0123456789abcdef")]);
        assert_eq!(p.decide(&odd).verdict, Verdict::Allow);
        assert_eq!(p.rules().len(), 1, "a word became a rule");
    }

    #[test]
    fn malformed_entries_are_refused_with_their_line() {
        for bad in [
            "[[approved]]\n",
            "[[approved]]\nexec = []\n",
            "[[approved]]\nnet = \"example.com\"\n",
            "[[approved]]\nexec = [\"a\"]\nnet = \"a:1\"\n",
            "[[approved]]\nexec = [\"a\"]\nwho = \"me\"\n",
        ] {
            let text = format!("{BASE}{bad}");
            let e = Policy::from_text(&text, "t.toml").unwrap_err().to_string();
            // The entry starts on line 9: the problem is reported there or below.
            let line: usize = e
                .split("t.toml:")
                .nth(1)
                .and_then(|r| r.split(':').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("{bad:?}: no line in {e}"));
            assert!((9..=11).contains(&line), "{bad:?}: {e}");
        }
    }
}
