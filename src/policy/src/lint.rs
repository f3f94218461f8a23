//! Checking a policy file: syntax, unknown keys, names, patterns, the default, each rule's
//! examples and counterexamples, and contradictions between rules. Loading runs the same checks
//! and refuses a policy with any problem (fail closed).

use std::collections::HashMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::classify::{Ctx, Target};
use crate::decision::Verdict;
use crate::file::{self, RawFile};
use crate::pattern::Fit;
use crate::rule::{self, Matcher, Rule};
use crate::script;

/// One problem in a policy file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// The file (or `preset:NAME`).
    pub origin: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.origin, self.line, self.column, self.message
        )
    }
}

/// The interpreters a policy uses when it names none.
pub const DEFAULT_INTERPRETERS: &[&str] = &[
    "sh",
    "bash",
    "dash",
    "zsh",
    "ash",
    "ksh",
    "mksh",
    "fish",
    "csh",
    "tcsh",
    "python",
    "pypy",
    "node",
    "nodejs",
    "deno",
    "bun",
    "ts-node",
    "tsx",
    "perl",
    "ruby",
    "php",
    "lua",
    "luajit",
    "tclsh",
    "Rscript",
    "julia",
    "awk",
    "gawk",
    "mawk",
    "nawk",
    "pwsh",
    "java",
    "groovy",
    "osascript",
    "npx",
    "uvx",
    "pipx",
];

/// A checked policy, before it is indexed.
pub(crate) struct Checked {
    pub default: Verdict,
    pub workspace: String,
    pub interpreters: Vec<String>,
    pub rules: Vec<Rule>,
    pub approved: Vec<crate::approved::Approved>,
}

/// Lints `text`; `origin` names it in the problems. An empty list means it loads.
pub fn lint(text: &str, origin: &str) -> Vec<Problem> {
    check(text, origin).err().unwrap_or_default()
}

pub(crate) fn check(text: &str, origin: &str) -> Result<Checked, Vec<Problem>> {
    let mut problems: Vec<(usize, usize, String)> = Vec::new();
    let at = |span: std::ops::Range<usize>, msg: String| {
        let (l, c) = file::line_col(text, span.start);
        (l, c, msg)
    };
    let to_problems = |mut ps: Vec<(usize, usize, String)>| {
        ps.sort_by_key(|p| (p.0, p.1));
        ps.into_iter()
            .map(|(line, column, message)| Problem {
                origin: origin.to_owned(),
                line,
                column,
                message,
            })
            .collect::<Vec<_>>()
    };
    let raw: RawFile = match toml::from_str(text) {
        Ok(r) => r,
        Err(e) => {
            let (line, column) = e.span().map_or((1, 1), |s| file::line_col(text, s.start));
            let message = e.message().trim().to_owned();
            return Err(to_problems(vec![(line, column, message)]));
        }
    };
    if let Some(v) = &raw.version
        && *v.get_ref() != 1
    {
        problems.push(at(
            v.span(),
            format!(
                "unsupported version {}: this LuminaGuard reads version 1",
                v.get_ref()
            ),
        ));
    }
    let default = match &raw.default {
        None => Verdict::Ask,
        Some(d) => match d.get_ref().as_str() {
            "ask" => Verdict::Ask,
            "deny" => Verdict::Deny,
            "allow" => {
                problems.push(at(d.span(), "default = \"allow\" would allow every action no rule names: use \"ask\" or \"deny\"".into()));
                Verdict::Ask
            }
            other => {
                problems.push(at(
                    d.span(),
                    format!("unknown default `{other}`: use \"ask\" or \"deny\""),
                ));
                Verdict::Ask
            }
        },
    };
    let workspace = raw
        .workspace
        .as_ref()
        .map_or_else(|| "/workspace".to_owned(), |w| w.get_ref().clone());
    if !workspace.starts_with('/') {
        let span = raw.workspace.as_ref().map_or(0..0, |w| w.span());
        problems.push(at(span, "workspace must be an absolute path".into()));
    }
    let interpreters: Vec<String> = raw.interpreters.as_ref().map_or_else(
        || {
            DEFAULT_INTERPRETERS
                .iter()
                .map(|s| (*s).to_owned())
                .collect()
        },
        |i| i.get_ref().clone(),
    );
    let mut rules = Vec::new();
    for r in &raw.rules {
        let span = r.span();
        let line = file::header_line(text, span.start);
        let mut ps = Vec::new();
        if let Some(rule) = rule::compile(r.get_ref(), line, &span, &mut ps) {
            examples(&rule, r.get_ref(), &workspace, &interpreters, &mut ps);
            rules.push(rule);
        }
        problems.extend(ps.into_iter().map(|(s, m)| at(s, m)));
    }
    let mut approved = Vec::new();
    for a in &raw.approved {
        let span = a.span();
        let (line, _) = file::line_col(text, span.start);
        match crate::approved::compile(a.get_ref(), line) {
            Ok(entry) => approved.push(entry),
            Err(msg) => problems.push(at(span, msg)),
        }
    }
    let mut seen: HashMap<&str, &Rule> = HashMap::new();
    for r in &rules {
        match seen.get(r.canonical.as_str()) {
            Some(first) if first.verdict != r.verdict => {
                let msg = format!(
                    "contradicts the rule at line {}: the same matcher is `{}` there and `{}` here",
                    first.line, first.verdict, r.verdict
                );
                problems.push((r.line, 1, msg));
            }
            Some(_) => {}
            None => {
                seen.insert(&r.canonical, r);
            }
        }
    }
    if problems.is_empty() {
        Ok(Checked {
            default,
            workspace,
            interpreters,
            rules,
            approved,
        })
    } else {
        Err(to_problems(problems))
    }
}

/// Checks that a rule matches each of its examples and none of its counterexamples.
fn examples(
    rule: &Rule,
    raw: &file::RawRule,
    ws: &str,
    interpreters: &[String],
    problems: &mut Vec<rule::Problem>,
) {
    for (list, want) in [(&raw.examples, true), (&raw.counterexamples, false)] {
        for ex in list {
            match matches_example(rule, ex.get_ref(), ws, interpreters) {
                Ok(got) if got == want => {}
                Ok(_) => {
                    let msg = if want {
                        format!("the rule does not match its example `{}`", ex.get_ref())
                    } else {
                        format!("the rule matches its counterexample `{}`", ex.get_ref())
                    };
                    problems.push((ex.span(), msg));
                }
                Err(msg) => problems.push((ex.span(), msg)),
            }
        }
    }
}

/// Whether `rule` matches the example: a shell command line for `exec`/`program` (any of its
/// simple commands), a path for `write`/`delete`, `host:port` for `net`, and
/// `SERVER TOOL [JSON]` for `mcp`.
pub(crate) fn matches_example(
    rule: &Rule,
    ex: &str,
    ws: &str,
    interpreters: &[String],
) -> Result<bool, String> {
    match &rule.matcher {
        Matcher::Exec(p) => {
            let mut ctx = Ctx::new(ws, None, interpreters);
            script::classify(&mut ctx, ex, false);
            Ok(ctx.out.cmds.iter().any(|c| p.fit(c) == Fit::Sure))
        }
        Matcher::Write(p) | Matcher::Delete(p) => {
            let mut ctx = Ctx::new(ws, None, interpreters);
            ctx.effect(&crate::pattern::Arg::Lit(ex.to_owned()), false);
            Ok(ctx
                .out
                .effects
                .iter()
                .any(|e| matches!(&e.target, Target::Path(t) if p.is_match(t))))
        }
        Matcher::Net(pats) => {
            let (host, port) = rule::split_host_port(ex);
            let port = port
                .and_then(|p| p.parse::<u16>().ok())
                .ok_or_else(|| format!("example `{ex}` is not host:port"))?;
            Ok(pats.iter().any(|p| p.is_match(host, port)))
        }
        Matcher::Mcp(p) => {
            let mut parts = ex.splitn(3, char::is_whitespace);
            let (server, tool) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            let args = match parts.next() {
                Some(j) => serde_json::from_str(j)
                    .map_err(|e| format!("example `{ex}`: arguments are not JSON: {e}"))?,
                None => serde_json::Value::Null,
            };
            Ok(p.is_match(server, tool, &args))
        }
    }
}
