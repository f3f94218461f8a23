//! The policy file format (TOML), deserialised with the byte spans lint needs for line numbers.

use serde::Deserialize;
use toml::Spanned;

/// A whole policy file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFile {
    pub version: Option<Spanned<i64>>,
    pub default: Option<Spanned<String>>,
    /// The workspace root inside the sandbox (default `/workspace`).
    pub workspace: Option<Spanned<String>>,
    /// Programs that run a script file or code given on their command line.
    pub interpreters: Option<Spanned<Vec<String>>>,
    #[serde(default, rename = "rule")]
    pub rules: Vec<Spanned<RawRule>>,
    /// Standing approvals (`[[approved]]`), added by a person's *always*.
    #[serde(default)]
    pub approved: Vec<Spanned<RawApproved>>,
}

/// One `[[approved]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawApproved {
    pub exec: Option<Vec<String>>,
    pub net: Option<String>,
    pub approval: Option<String>,
    pub by: Option<String>,
}

/// One `[[rule]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRule {
    pub id: Option<String>,
    pub decision: Spanned<String>,
    pub risk: Option<Spanned<String>>,
    pub reason: Option<String>,
    #[serde(default)]
    pub outside: bool,
    pub exec: Option<Spanned<Vec<String>>>,
    pub program: Option<Spanned<Vec<String>>>,
    pub write: Option<Spanned<Vec<String>>>,
    pub delete: Option<Spanned<Vec<String>>>,
    pub net: Option<Spanned<Vec<String>>>,
    pub mcp: Option<Spanned<RawMcp>>,
    #[serde(default)]
    pub examples: Vec<Spanned<String>>,
    #[serde(default)]
    pub counterexamples: Vec<Spanned<String>>,
}

/// An `mcp = { server, tool, args }` matcher.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMcp {
    pub server: Option<String>,
    pub tool: Option<String>,
    #[serde(default)]
    pub args: std::collections::BTreeMap<String, String>,
}

/// 1-based line and column of byte offset `at` in `text`.
pub(crate) fn line_col(text: &str, at: usize) -> (usize, usize) {
    let before = text.get(..at.min(text.len())).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// The line of the `[[rule]]` header that opens the table starting at or before `at`.
pub(crate) fn header_line(text: &str, at: usize) -> usize {
    let (line, _) = line_col(text, at);
    let lines: Vec<&str> = text.lines().collect();
    (1..=line.min(lines.len()))
        .rev()
        .find(|&l| lines[l - 1].trim_start().starts_with("[[rule]]"))
        .unwrap_or(line)
}
