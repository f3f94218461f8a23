//! What the policy answers for one action: verdict, risk, reason and the rule that decided.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Allow, ask a person first, or refuse. Ordered by strictness: `Allow < Ask < Deny`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Run without asking.
    Allow,
    /// Stop at the approval step until a person approves.
    Ask,
    /// Refuse.
    Deny,
}

impl Verdict {
    /// The name used in policy files and output.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Ask => "ask",
            Verdict::Deny => "deny",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s {
            "allow" => Some(Verdict::Allow),
            "ask" => Some(Verdict::Ask),
            "deny" => Some(Verdict::Deny),
            _ => None,
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How much harm an action can do, shown to the person who approves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Risk {
    /// Reads, or changes that are easy to undo.
    Low,
    /// Changes inside the sandbox, or something the policy cannot see.
    Medium,
    /// Destroys work, or leaves the sandbox.
    High,
    /// Destroys or publishes irrecoverably.
    Critical,
}

impl Risk {
    /// The name used in policy files and output.
    pub fn as_str(self) -> &'static str {
        match self {
            Risk::Low => "low",
            Risk::Medium => "medium",
            Risk::High => "high",
            Risk::Critical => "critical",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s {
            "low" => Some(Risk::Low),
            "medium" => Some(Risk::Medium),
            "high" => Some(Risk::High),
            "critical" => Some(Risk::Critical),
            _ => None,
        }
    }

    /// The risk of a rule that names none.
    pub(crate) fn for_verdict(v: Verdict) -> Self {
        match v {
            Verdict::Allow => Risk::Low,
            Verdict::Ask => Risk::Medium,
            Verdict::Deny => Risk::High,
        }
    }
}

impl fmt::Display for Risk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a rule is: its file, line and optional id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleRef {
    /// The policy's origin: a path, or `preset:NAME`.
    pub origin: String,
    /// 1-based line of the rule's `[[rule]]` header.
    pub line: usize,
    /// The rule's `id`, if it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

impl fmt::Display for RuleRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.id {
            Some(id) => write!(f, "rule {id} at {}:{}", self.origin, self.line),
            None => write!(f, "rule at {}:{}", self.origin, self.line),
        }
    }
}

/// The decision for one part of an action: one simple command of a script, or one file it writes
/// or deletes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandDecision {
    /// `exec`, `write`, `delete`, `net` or `mcp`.
    pub action: String,
    /// The command's words as the policy saw them (a word it could not resolve is shown as
    /// written), or the path, host or tool.
    pub argv: Vec<String>,
    /// This part's verdict.
    pub verdict: Verdict,
    /// This part's risk.
    pub risk: Risk,
    /// The rule that decided this part, if one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<RuleRef>,
    /// Why.
    pub reason: String,
    /// Whether the deciding rule says the effect leaves the sandbox.
    pub outside: bool,
}

/// The policy's answer for one action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// The strictest verdict over every part of the action.
    pub verdict: Verdict,
    /// The highest risk among the parts with that verdict.
    pub risk: Risk,
    /// The reason shown to the person.
    pub reason: String,
    /// The rule that decided (the first, in file order, among those giving the verdict); `None`
    /// when the policy's default or an unknown command decided.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<RuleRef>,
    /// Whether a matching rule says the action's effect leaves the sandbox (it cannot be
    /// previewed: ask before running it).
    pub outside: bool,
    /// Every rule that matched any part, in file order, each once.
    pub matched: Vec<RuleRef>,
    /// The per-part breakdown (one entry per simple command, write or delete).
    pub commands: Vec<CommandDecision>,
    /// SHA-256 of the policy text that decided, so an approval binds to the policy version.
    pub policy_digest: String,
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): {}", self.verdict, self.risk, self.reason)?;
        if let Some(rule) = &self.rule {
            write!(f, " — {rule}")?;
        }
        if self.outside {
            f.write_str(" [leaves the sandbox]")?;
        }
        Ok(())
    }
}
