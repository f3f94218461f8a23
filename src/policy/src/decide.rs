//! Deciding one action: every rule that matches a part is considered, the strictest wins
//! (`deny` over `ask` over `allow`), a part no rule matches gets the policy's default, and a part
//! the policy cannot see is never allowed unless a rule names it explicitly.

use crate::action::Action;
use crate::classify::{Classified, Cmd, Ctx, Prog, Target};
use crate::decision::{CommandDecision, Decision, Risk, Verdict};
use crate::pattern::Fit;
use crate::policy::Policy;
use crate::rule::Matcher;
use crate::script;

/// The decision for one part, before it is turned into output.
struct Part {
    action: &'static str,
    argv: Vec<String>,
    verdict: Verdict,
    risk: Risk,
    rule: Option<usize>,
    reason: String,
    outside: bool,
}

/// The decided parts of one action, already in their output form, with the index of the rule
/// that decided each; and every rule that matched any of them (in the order found, possibly
/// repeated): one list for the whole action rather than one per part.
#[derive(Default)]
struct Parts {
    list: Vec<CommandDecision>,
    rules: Vec<Option<usize>>,
    matched: Vec<usize>,
}

impl Parts {
    fn with_capacity(n: usize) -> Self {
        Parts {
            list: Vec::with_capacity(n),
            rules: Vec::with_capacity(n),
            matched: Vec::new(),
        }
    }

    fn push(&mut self, policy: &Policy, p: Part) {
        self.list.push(CommandDecision {
            action: p.action.to_owned(),
            argv: p.argv,
            verdict: p.verdict,
            risk: p.risk,
            rule: p.rule.map(|i| policy.rule_ref(&policy.rules[i])),
            reason: p.reason,
            outside: p.outside,
        });
        self.rules.push(p.rule);
    }
}

impl Policy {
    /// Decides `action`. Never fails: what the policy cannot understand is `ask` (or `deny` when
    /// the policy's default is `deny`).
    pub fn decide(&self, action: &Action) -> Decision {
        let decision = self.decide_by_rules(action);
        crate::approved::apply(&self.approved, &self.origin, action, decision)
    }

    fn decide_by_rules(&self, action: &Action) -> Decision {
        let mut parts = Parts::default();
        match action {
            Action::Exec { argv, cwd } => return self.exec_decision(argv, cwd.as_deref()),
            Action::Write { path } | Action::Delete { path } => {
                let delete = matches!(action, Action::Delete { .. });
                let mut ctx = Ctx::new(&self.workspace, None, &self.interpreters);
                ctx.effect(&crate::pattern::Arg::Lit(path.clone()), delete);
                let part = match ctx.out.effects.pop() {
                    Some(e) => self.effect_part(e.delete, e.target, &mut parts.matched),
                    // /dev/null and the like.
                    None => self.simple_part("write", vec![path.clone()], &[]),
                };
                parts.push(self, part);
            }
            Action::Net { host, port } => {
                let hits = self.hits(
                    &self.nets,
                    |m| matches!(m, Matcher::Net(p) if p.iter().any(|p| p.is_match(host, *port))),
                    &mut parts.matched,
                );
                let part = self.simple_part("net", vec![format!("{host}:{port}")], hits);
                parts.push(self, part);
            }
            Action::McpCall {
                server,
                tool,
                arguments,
            } => {
                let hits = self.hits(
                    &self.mcps,
                    |m| matches!(m, Matcher::Mcp(p) if p.is_match(server, tool, arguments)),
                    &mut parts.matched,
                );
                let part = self.simple_part("mcp", vec![format!("{server}.{tool}")], hits);
                parts.push(self, part);
            }
        }
        self.combine(parts)
    }

    fn exec_decision(&self, argv: &[String], cwd: Option<&str>) -> Decision {
        let mut ctx = Ctx::new(&self.workspace, cwd, &self.interpreters);
        let words = argv
            .iter()
            .map(|a| crate::pattern::Arg::Lit(a.clone()))
            .collect();
        crate::exec::classify(&mut ctx, words);
        self.combine(self.parts_of(ctx))
    }

    /// The decided parts of what a classification found: its commands, then its effects.
    fn parts_of(&self, ctx: Ctx) -> Parts {
        let Classified { cmds, effects } = ctx.out;
        let mut parts = Parts::with_capacity(cmds.len() + effects.len());
        for c in cmds {
            if let Some(p) = self.cmd_part(c, &mut parts.matched) {
                parts.push(self, p);
            }
        }
        for e in effects {
            let p = self.effect_part(e.delete, e.target, &mut parts.matched);
            parts.push(self, p);
        }
        parts
    }

    /// Decides a command line given as one shell script (`sh -c SCRIPT`), as a convenience.
    pub fn decide_script(&self, script_text: &str) -> Decision {
        let mut ctx = Ctx::new(&self.workspace, None, &self.interpreters);
        script::classify(&mut ctx, script_text, false);
        self.combine(self.parts_of(ctx))
    }

    /// The exec rules that may match `cmd`, in file order: those indexed under its program name
    /// merged with those the index cannot narrow.
    fn candidates(&self, cmd: &Cmd) -> Candidates<'_> {
        let (named, unindexed): (&[usize], &[usize]) = match &cmd.prog {
            Prog::Name(n) => (
                self.by_program.get(n).map_or(&[], Vec::as_slice),
                &self.unindexed,
            ),
            Prog::Path(_) => (&[], &self.unindexed),
            Prog::Dynamic => (&[], &[]),
        };
        Candidates { named, unindexed }
    }

    fn cmd_part(&self, cmd: Cmd, all_matched: &mut Vec<usize>) -> Option<Part> {
        let mut best: Option<(Verdict, usize, bool)> = None;
        let first_match = all_matched.len();
        for i in self.candidates(&cmd) {
            let rule = &self.rules[i];
            let Matcher::Exec(p) = &rule.matcher else {
                continue;
            };
            let fit = p.fit(&cmd);
            let contribution = match (rule.verdict, fit) {
                (_, Fit::No) => None,
                (Verdict::Deny, Fit::Sure) => Some((Verdict::Deny, false)),
                (Verdict::Deny, Fit::Maybe) => Some((Verdict::Ask, true)),
                (Verdict::Ask, _) => Some((Verdict::Ask, fit == Fit::Maybe)),
                (Verdict::Allow, Fit::Sure) => cmd
                    .unknown
                    .as_ref()
                    .is_none_or(|u| u.overridable && p.explicit())
                    .then_some((Verdict::Allow, false)),
                (Verdict::Allow, Fit::Maybe) => None,
            };
            if let Some((v, maybe)) = contribution {
                all_matched.push(i);
                if best.is_none_or(|(b, _, _)| v > b) {
                    best = Some((v, i, maybe));
                }
            }
        }
        let outside = all_matched[first_match..]
            .iter()
            .any(|&i| self.rules[i].outside);
        match best {
            Some((verdict, i, maybe)) => {
                let rule = &self.rules[i];
                let mut reason = rule.reason.clone();
                if maybe {
                    reason.push_str(" (a word the policy cannot resolve may match)");
                }
                let risk = if verdict == rule.verdict {
                    rule.risk
                } else {
                    rule.risk.min(Risk::High)
                };
                Some(Part {
                    action: "exec",
                    argv: cmd.into_shown(),
                    verdict,
                    risk,
                    rule: Some(i),
                    reason,
                    outside,
                })
            }
            None if cmd.transparent => None,
            None => {
                let unknown = cmd.unknown.clone();
                let argv = cmd.into_shown();
                Some(match unknown {
                    Some(u) => Part {
                        action: "exec",
                        argv,
                        verdict: self.default.max(Verdict::Ask),
                        risk: Risk::Medium,
                        rule: None,
                        reason: u.reason,
                        outside: false,
                    },
                    None => self.default_part("exec", argv),
                })
            }
        }
    }

    fn effect_part(&self, delete: bool, target: Target, all_matched: &mut Vec<usize>) -> Part {
        let kind = if delete { "delete" } else { "write" };
        match target {
            Target::Unresolved(t) => Part {
                action: kind,
                argv: vec![t],
                verdict: self.default.max(Verdict::Ask),
                risk: Risk::Medium,
                rule: None,
                reason: format!("{kind}s a file the policy cannot resolve"),
                outside: false,
            },
            Target::Path(p) => {
                let list = if delete { &self.deletes } else { &self.writes };
                let hits = self.hits(
                    list,
                    |m| match m {
                        Matcher::Write(g) | Matcher::Delete(g) => g.is_match(&p),
                        _ => false,
                    },
                    all_matched,
                );
                self.simple_part(kind, vec![p], hits)
            }
        }
    }

    /// Appends the rules of `list` that match to `all_matched`; returns them.
    fn hits<'m>(
        &self,
        list: &[usize],
        is_match: impl Fn(&Matcher) -> bool,
        all_matched: &'m mut Vec<usize>,
    ) -> &'m [usize] {
        let first = all_matched.len();
        all_matched.extend(
            list.iter()
                .copied()
                .filter(|&i| is_match(&self.rules[i].matcher)),
        );
        &all_matched[first..]
    }

    /// A part decided by plain (sure-or-no) matches.
    fn simple_part(&self, action: &'static str, argv: Vec<String>, matched: &[usize]) -> Part {
        let Some(&first) = matched
            .iter()
            .max_by_key(|&&i| (self.rules[i].verdict, std::cmp::Reverse(i)))
        else {
            return self.default_part(action, argv);
        };
        let rule = &self.rules[first];
        Part {
            action,
            argv,
            verdict: rule.verdict,
            risk: rule.risk,
            rule: Some(first),
            reason: rule.reason.clone(),
            outside: matched.iter().any(|&i| self.rules[i].outside),
        }
    }

    fn default_part(&self, action: &'static str, argv: Vec<String>) -> Part {
        Part {
            action,
            argv,
            verdict: self.default,
            risk: Risk::for_verdict(self.default),
            rule: None,
            reason: "no rule matches".into(),
            outside: false,
        }
    }

    fn combine(&self, parts: Parts) -> Decision {
        let Parts {
            list: parts,
            rules,
            mut matched,
        } = parts;
        matched.sort_unstable();
        matched.dedup();
        let verdict = parts.iter().map(|p| p.verdict).max();
        let deciding = verdict.and_then(|v| parts.iter().position(|p| p.verdict == v));
        let (verdict, risk, reason, rule) = match (verdict, deciding) {
            (Some(v), Some(d)) => {
                let risk = parts
                    .iter()
                    .filter(|p| p.verdict == v)
                    .map(|p| p.risk)
                    .max()
                    .unwrap_or(parts[d].risk);
                (v, risk, parts[d].reason.clone(), rules[d])
            }
            _ => (
                self.default,
                Risk::for_verdict(self.default),
                "runs nothing the policy can see".into(),
                None,
            ),
        };
        Decision {
            verdict,
            risk,
            reason,
            rule: rule.map(|i| self.rule_ref(&self.rules[i])),
            outside: parts.iter().any(|p| p.outside),
            matched: matched
                .iter()
                .map(|&i| self.rule_ref(&self.rules[i]))
                .collect(),
            commands: parts,
            policy_digest: self.digest().to_owned(),
        }
    }
}

/// Two ascending lists of rule indices merged into one, in file order.
struct Candidates<'a> {
    named: &'a [usize],
    unindexed: &'a [usize],
}

impl Iterator for Candidates<'_> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        let take_named = match (self.named.first(), self.unindexed.first()) {
            (None, None) => return None,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(a), Some(b)) => a < b,
        };
        let list = if take_named {
            &mut self.named
        } else {
            &mut self.unindexed
        };
        let (&first, rest) = list.split_first()?;
        *list = rest;
        Some(first)
    }
}
