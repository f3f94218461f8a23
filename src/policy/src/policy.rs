//! A loaded policy: its rules indexed by program, its digest, presets, and loading by name or
//! path.

use std::collections::HashMap;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::decision::{Risk, RuleRef, Verdict};
use crate::error::PolicyError;
use crate::lint;
use crate::rule::{Matcher, Rule};

/// The embedded presets, by name.
pub const PRESETS: &[(&str, &str)] = &[
    ("strict", include_str!("../presets/strict.toml")),
    ("default", include_str!("../presets/default.toml")),
    ("permissive", include_str!("../presets/permissive.toml")),
];

/// A checked, indexed policy. Cheap to share (`Arc<Policy>`); deciding does not mutate it.
#[derive(Debug)]
pub struct Policy {
    pub(crate) origin: String,
    text: String,
    digest: String,
    pub(crate) default: Verdict,
    pub(crate) workspace: String,
    pub(crate) interpreters: Vec<String>,
    pub(crate) rules: Vec<Rule>,
    /// Standing approvals (`[[approved]]`).
    pub(crate) approved: Vec<crate::approved::Approved>,
    /// Exec rules by the literal program names they can match.
    pub(crate) by_program: HashMap<String, Vec<usize>>,
    /// Exec rules whose program is a glob, regex or path: tried for every command.
    pub(crate) unindexed: Vec<usize>,
    /// Write, delete, net and MCP rules.
    pub(crate) writes: Vec<usize>,
    pub(crate) deletes: Vec<usize>,
    pub(crate) nets: Vec<usize>,
    pub(crate) mcps: Vec<usize>,
}

/// A rule as `luminaguard policy show` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct RuleInfo {
    /// Where it is.
    pub rule: RuleRef,
    /// Its decision.
    pub decision: Verdict,
    /// Its risk.
    pub risk: Risk,
    /// Its reason.
    pub reason: String,
    /// Whether its effect leaves the sandbox.
    pub outside: bool,
    /// Its matcher in canonical form (`exec rm -r|-rf **`, `write .git/**`, …).
    pub matcher: String,
}

impl Policy {
    /// Parses and checks a policy text; any lint problem is an error.
    pub fn from_text(text: &str, origin: &str) -> Result<Self, PolicyError> {
        let checked = lint::check(text, origin).map_err(|problems| PolicyError::Invalid {
            origin: origin.to_owned(),
            problems,
        })?;
        let mut p = Policy {
            origin: origin.to_owned(),
            text: text.to_owned(),
            digest: hex(&Sha256::digest(text.as_bytes())),
            default: checked.default,
            workspace: checked.workspace,
            interpreters: checked.interpreters,
            rules: checked.rules,
            approved: checked.approved,
            by_program: HashMap::new(),
            unindexed: Vec::new(),
            writes: Vec::new(),
            deletes: Vec::new(),
            nets: Vec::new(),
            mcps: Vec::new(),
        };
        for (i, r) in p.rules.iter().enumerate() {
            match &r.matcher {
                Matcher::Exec(e) => match e.index_names() {
                    Some(names) => {
                        for n in names {
                            let list = p.by_program.entry(n.to_owned()).or_default();
                            if list.last() != Some(&i) {
                                list.push(i);
                            }
                        }
                    }
                    None => p.unindexed.push(i),
                },
                Matcher::Write(_) => p.writes.push(i),
                Matcher::Delete(_) => p.deletes.push(i),
                Matcher::Net(_) => p.nets.push(i),
                Matcher::Mcp(_) => p.mcps.push(i),
            }
        }
        tracing::debug!(origin, rules = p.rules.len(), "policy loaded");
        Ok(p)
    }

    /// One of the embedded presets: `strict`, `default` or `permissive`.
    pub fn preset(name: &str) -> Result<Self, PolicyError> {
        let (_, text) =
            PRESETS
                .iter()
                .find(|(n, _)| *n == name)
                .ok_or_else(|| PolicyError::NotFound {
                    name: name.to_owned(),
                })?;
        Self::from_text(text, &format!("preset:{name}"))
    }

    /// A preset by name (`default`, or `preset:default`), else a policy file by path. Reads the
    /// file synchronously: call it from `spawn_blocking` in async code.
    #[allow(clippy::disallowed_methods)] // sync library code; documented above
    pub fn load(name_or_path: &str) -> Result<Self, PolicyError> {
        let name = name_or_path.strip_prefix("preset:").unwrap_or(name_or_path);
        if PRESETS.iter().any(|(n, _)| *n == name) {
            return Self::preset(name);
        }
        match std::fs::read_to_string(name_or_path) {
            Ok(text) => Self::from_text(&text, name_or_path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(PolicyError::NotFound {
                name: name_or_path.to_owned(),
            }),
            Err(source) => Err(PolicyError::Read {
                path: name_or_path.to_owned(),
                source,
            }),
        }
    }

    /// SHA-256 of the policy text, lowercase hex: an approval is bound to it.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// Where the policy came from: a path, or `preset:NAME`.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The policy text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The verdict for actions no rule matches (`ask` or `deny`).
    pub fn default_verdict(&self) -> Verdict {
        self.default
    }

    /// Every rule, in file order.
    pub fn rules(&self) -> Vec<RuleInfo> {
        self.rules
            .iter()
            .map(|r| RuleInfo {
                rule: self.rule_ref(r),
                decision: r.verdict,
                risk: r.risk,
                reason: r.reason.clone(),
                outside: r.outside,
                matcher: r.canonical.clone(),
            })
            .collect()
    }

    pub(crate) fn rule_ref(&self, r: &Rule) -> RuleRef {
        RuleRef {
            origin: self.origin.clone(),
            line: r.line,
            id: r.id.clone(),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
