//! Deciding one action: every rule that matches a part is considered, the strictest wins
//! (`deny` over `ask` over `allow`), a part no rule matches gets the policy's default, and a part
//! the policy cannot see is never allowed unless a rule names it explicitly.

use crate::action::Action;
use crate::classify::{Cmd, Ctx, Prog, Target};
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
    matched: Vec<usize>,
}

impl Policy {
    /// Decides `action`. Never fails: what the policy cannot understand is `ask` (or `deny` when
    /// the policy's default is `deny`).
    pub fn decide(&self, action: &Action) -> Decision {
        let parts = match action {
            Action::Exec { argv, cwd } => self.exec_parts(argv, cwd.as_deref()),
            Action::Write { path } | Action::Delete { path } => {
                let delete = matches!(action, Action::Delete { .. });
                let mut ctx = Ctx::new(&self.workspace, None, &self.interpreters);
                ctx.effect(&crate::pattern::Arg::Lit(path.clone()), delete);
                match ctx.out.effects.first() {
                    Some(e) => vec![self.effect_part(delete, &e.target)],
                    // /dev/null and the like.
                    None => vec![self.simple_part("write", vec![path.clone()], Vec::new())],
                }
            }
            Action::Net { host, port } => {
                let hits = self.hits(
                    &self.nets,
                    |m| matches!(m, Matcher::Net(p) if p.iter().any(|p| p.is_match(host, *port))),
                );
                vec![self.simple_part("net", vec![format!("{host}:{port}")], hits)]
            }
            Action::McpCall {
                server,
                tool,
                arguments,
            } => {
                let hits = self.hits(
                    &self.mcps,
                    |m| matches!(m, Matcher::Mcp(p) if p.is_match(server, tool, arguments)),
                );
                vec![self.simple_part("mcp", vec![format!("{server}.{tool}")], hits)]
            }
        };
        self.combine(parts)
    }

    fn exec_parts(&self, argv: &[String], cwd: Option<&str>) -> Vec<Part> {
        let mut ctx = Ctx::new(&self.workspace, cwd, &self.interpreters);
        let words = argv
            .iter()
            .map(|a| crate::pattern::Arg::Lit(a.clone()))
            .collect();
        crate::exec::classify(&mut ctx, words);
        self.parts_of(&ctx)
    }

    /// The decided parts of what a classification found: its commands, then its effects.
    fn parts_of(&self, ctx: &Ctx) -> Vec<Part> {
        let mut parts: Vec<Part> = ctx
            .out
            .cmds
            .iter()
            .filter_map(|c| self.cmd_part(c))
            .collect();
        for e in &ctx.out.effects {
            parts.push(self.effect_part(e.delete, &e.target));
        }
        parts
    }

    /// Decides a command line given as one shell script (`sh -c SCRIPT`), as a convenience.
    pub fn decide_script(&self, script_text: &str) -> Decision {
        let mut ctx = Ctx::new(&self.workspace, None, &self.interpreters);
        script::classify(&mut ctx, script_text, false);
        self.combine(self.parts_of(&ctx))
    }

    fn candidates(&self, cmd: &Cmd) -> Vec<usize> {
        let named: &[usize] = match &cmd.prog {
            Prog::Name(n) => self.by_program.get(n).map_or(&[], Vec::as_slice),
            Prog::Path(_) => &[],
            Prog::Dynamic => return Vec::new(),
        };
        // Both lists are in file order: merge them.
        let (mut out, mut a, mut b) =
            (Vec::with_capacity(named.len() + self.unindexed.len()), 0, 0);
        while a < named.len() || b < self.unindexed.len() {
            let take_a =
                b >= self.unindexed.len() || (a < named.len() && named[a] < self.unindexed[b]);
            if take_a {
                out.push(named[a]);
                a += 1;
            } else {
                out.push(self.unindexed[b]);
                b += 1;
            }
        }
        out
    }

    fn cmd_part(&self, cmd: &Cmd) -> Option<Part> {
        let mut best: Option<(Verdict, usize, bool)> = None;
        let mut matched = Vec::new();
        for i in self.candidates(cmd) {
            let rule = &self.rules[i];
            let Matcher::Exec(p) = &rule.matcher else {
                continue;
            };
            let fit = p.fit(cmd);
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
                matched.push(i);
                if best.is_none_or(|(b, _, _)| v > b) {
                    best = Some((v, i, maybe));
                }
            }
        }
        let argv = cmd.shown();
        let outside = matched.iter().any(|&i| self.rules[i].outside);
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
                    argv,
                    verdict,
                    risk,
                    rule: Some(i),
                    reason,
                    outside,
                    matched,
                })
            }
            None if cmd.transparent => None,
            None => Some(match &cmd.unknown {
                Some(u) => Part {
                    action: "exec",
                    argv,
                    verdict: self.default.max(Verdict::Ask),
                    risk: Risk::Medium,
                    rule: None,
                    reason: u.reason.clone(),
                    outside: false,
                    matched,
                },
                None => self.default_part("exec", argv),
            }),
        }
    }

    fn effect_part(&self, delete: bool, target: &Target) -> Part {
        let kind = if delete { "delete" } else { "write" };
        match target {
            Target::Unresolved(t) => Part {
                action: kind,
                argv: vec![t.clone()],
                verdict: self.default.max(Verdict::Ask),
                risk: Risk::Medium,
                rule: None,
                reason: format!("{kind}s a file the policy cannot resolve"),
                outside: false,
                matched: Vec::new(),
            },
            Target::Path(p) => {
                let list = if delete { &self.deletes } else { &self.writes };
                let hits = self.hits(list, |m| match m {
                    Matcher::Write(g) | Matcher::Delete(g) => g.is_match(p),
                    _ => false,
                });
                self.simple_part(kind, vec![p.clone()], hits)
            }
        }
    }

    fn hits(&self, list: &[usize], is_match: impl Fn(&Matcher) -> bool) -> Vec<usize> {
        list.iter()
            .copied()
            .filter(|&i| is_match(&self.rules[i].matcher))
            .collect()
    }

    /// A part decided by plain (sure-or-no) matches.
    fn simple_part(&self, action: &'static str, argv: Vec<String>, matched: Vec<usize>) -> Part {
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
            matched,
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
            matched: Vec::new(),
        }
    }

    fn combine(&self, parts: Vec<Part>) -> Decision {
        let mut matched: Vec<usize> = parts
            .iter()
            .flat_map(|p| p.matched.iter().copied())
            .collect();
        matched.sort_unstable();
        matched.dedup();
        let verdict = parts.iter().map(|p| p.verdict).max();
        let deciding = verdict.and_then(|v| parts.iter().find(|p| p.verdict == v));
        let (verdict, risk, reason, rule) = match (verdict, deciding) {
            (Some(v), Some(d)) => {
                let risk = parts
                    .iter()
                    .filter(|p| p.verdict == v)
                    .map(|p| p.risk)
                    .max()
                    .unwrap_or(d.risk);
                (v, risk, d.reason.clone(), d.rule)
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
            commands: parts
                .into_iter()
                .map(|p| CommandDecision {
                    action: p.action.to_owned(),
                    argv: p.argv,
                    verdict: p.verdict,
                    risk: p.risk,
                    rule: p.rule.map(|i| self.rule_ref(&self.rules[i])),
                    reason: p.reason,
                    outside: p.outside,
                })
                .collect(),
            policy_digest: self.digest().to_owned(),
        }
    }
}
