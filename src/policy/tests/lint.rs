//! Lint: each problem with its line, and loading refuses a policy that has any.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)] // test code

use luminaguard_policy::{Action, Policy, Verdict, lint};

fn lines(text: &str) -> Vec<(usize, String)> {
    lint(text, "p.toml")
        .into_iter()
        .map(|p| (p.line, p.message))
        .collect()
}

fn assert_problem(text: &str, line: usize, needle: &str) {
    let got = lines(text);
    assert!(
        got.iter().any(|(l, m)| *l == line && m.contains(needle)),
        "want line {line} `{needle}`, got {got:?}"
    );
    let e = Policy::from_text(text, "p.toml").unwrap_err();
    assert_eq!(e.code(), "policy_invalid");
    assert!(!e.problems().is_empty());
}

#[test]
fn each_problem_is_reported_on_its_line() {
    assert_problem("version = 1\n[[rule\n", 2, "");
    assert_problem("version = 1\ncolour = 1\n", 2, "colour");
    assert_problem(
        "version = 1\n\n[[rule]]\ndecision = \"allow\"\nprogram = [\"ls\"]\nfoo = 1\n",
        6,
        "foo",
    );
    assert_problem("version = 2\n", 1, "version 2");
    assert_problem("default = \"allow\"\n", 1, "default = \"allow\"");
    assert_problem("default = \"maybe\"\n", 1, "unknown default");
    assert_problem(
        "[[rule]]\ndecision = \"permit\"\nprogram = [\"ls\"]\n",
        2,
        "unknown decision",
    );
    assert_problem(
        "[[rule]]\ndecision = \"ask\"\nrisk = \"huge\"\nprogram = [\"ls\"]\n",
        3,
        "unknown risk",
    );
    assert_problem("\n[[rule]]\ndecision = \"ask\"\n", 2, "without a matcher");
    assert_problem(
        "[[rule]]\ndecision = \"ask\"\nprogram = [\"ls\"]\nwrite = [\"x\"]\n",
        1,
        "2 matchers",
    );
    assert_problem(
        "[[rule]]\ndecision = \"ask\"\nexec = [\"rm\", \"re:(\"]\n",
        3,
        "regular expression",
    );
    assert_problem(
        "[[rule]]\ndecision = \"ask\"\nexec = [\"**\"]\n",
        3,
        "program position",
    );
    assert_problem(
        "[[rule]]\ndecision = \"ask\"\nwrite = [\"a[\"]\n",
        3,
        "invalid path glob",
    );
    assert_problem(
        "[[rule]]\ndecision = \"ask\"\nnet = [\"x.com:http\"]\n",
        3,
        "invalid port",
    );
    assert_problem(
        "[[rule]]\ndecision = \"deny\"\nexec = [\"rm\", \"-rf\", \"**\"]\nexamples = [\"rm -r x\"]\n",
        4,
        "does not match its example `rm -r x`",
    );
    assert_problem(
        "[[rule]]\ndecision = \"deny\"\nexec = [\"rm\", \"**\"]\ncounterexamples = [\"ls; rm x\"]\n",
        4,
        "matches its counterexample",
    );
}

#[test]
fn contradicting_rules_name_both_lines() {
    let text = "version = 1\n\n[[rule]]\ndecision = \"allow\"\nexec = [\"git\", \"push|fetch\", \"**\"]\n\n[[rule]]\ndecision = \"deny\"\nexec = [\"git\", \"fetch|push\", \"**\"]\n";
    let got = lines(text);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0, 7);
    assert!(got[0].1.contains("line 3"), "{got:?}");
    // `program = [X]` is `exec = [X, "**"]`.
    let text = "[[rule]]\ndecision = \"allow\"\nprogram = [\"ls\"]\n[[rule]]\ndecision = \"ask\"\nexec = [\"ls\", \"**\"]\n";
    assert_eq!(lines(text).len(), 1);
    // Same matcher, same decision: no contradiction.
    let text = "[[rule]]\ndecision = \"ask\"\nprogram = [\"ls\"]\n[[rule]]\ndecision = \"ask\"\nprogram = [\"ls\"]\n";
    assert!(lines(text).is_empty());
}

#[test]
fn a_clean_policy_has_no_problems_and_presets_are_clean() {
    assert!(lines("version = 1\ndefault = \"deny\"\n").is_empty());
    for (name, text) in luminaguard_policy::PRESETS {
        assert!(
            lint(text, name).is_empty(),
            "{name}: {:?}",
            lint(text, name)
        );
    }
}

#[test]
fn strictest_matching_rule_wins_regardless_of_order() {
    let rules = [
        ("allow", "program = [\"git\"]"),
        ("ask", "exec = [\"git\", \"push\", \"**\"]"),
        ("deny", "exec = [\"git\", \"**\", \"--force\", \"**\"]"),
    ];
    let orders: [[usize; 3]; 6] = [
        [0, 1, 2],
        [0, 2, 1],
        [1, 0, 2],
        [1, 2, 0],
        [2, 0, 1],
        [2, 1, 0],
    ];
    for order in orders {
        let text: String = order
            .iter()
            .map(|&i| format!("[[rule]]\ndecision = \"{}\"\n{}\n", rules[i].0, rules[i].1))
            .collect();
        let p = Policy::from_text(&text, "t").unwrap();
        let v = |s: &str| p.decide(&Action::shell(s)).verdict;
        assert_eq!(v("git status"), Verdict::Allow, "{order:?}");
        assert_eq!(v("git push"), Verdict::Ask, "{order:?}");
        assert_eq!(v("git push --force"), Verdict::Deny, "{order:?}");
        let d = p.decide(&Action::shell("git push --force"));
        assert_eq!(d.matched.len(), 3);
        assert_eq!(
            d.rule.unwrap().line,
            1 + 3 * order.iter().position(|&i| i == 2).unwrap()
        );
    }
}

#[test]
fn unmatched_actions_get_the_default() {
    let ask = Policy::from_text("version = 1\n", "t").unwrap();
    let deny = Policy::from_text("default = \"deny\"\n", "t").unwrap();
    for a in [
        Action::exec(&["frobnicate"]),
        Action::Write { path: "x".into() },
        Action::Net {
            host: "x.com".into(),
            port: 1,
        },
        Action::McpCall {
            server: "s".into(),
            tool: "t".into(),
            arguments: serde_json::json!({}),
        },
    ] {
        assert_eq!(ask.decide(&a).verdict, Verdict::Ask);
        assert_eq!(deny.decide(&a).verdict, Verdict::Deny);
        assert!(ask.decide(&a).rule.is_none());
    }
    // Unknown is never looser than the default.
    assert_eq!(deny.decide(&Action::shell("./x.sh")).verdict, Verdict::Deny);
}

#[test]
fn net_and_mcp_rules_match() {
    let text = r#"
[[rule]]
decision = "allow"
net = ["*.github.com:443", "10.0.0.0/8", "[fd00::/8]:22"]
examples = ["api.github.com:443", "10.1.1.1:80"]
counterexamples = ["github.com:443", "api.github.com:80"]
[[rule]]
decision = "allow"
mcp = { server = "github", tool = "create_*", args = { "/repo" = "myorg/*" } }
examples = ['github create_issue {"repo": "myorg/x"}']
counterexamples = ['github create_issue {"repo": "other/x"}', "github delete_repo"]
[[rule]]
decision = "deny"
write = ["**/*.lock"]
examples = ["Cargo.lock", "a/b/yarn.lock"]
counterexamples = ["src/lock.rs"]
"#;
    let p = Policy::from_text(text, "t").unwrap();
    let net = |h: &str, port| {
        p.decide(&Action::Net {
            host: h.into(),
            port,
        })
        .verdict
    };
    assert_eq!(net("API.GitHub.com", 443), Verdict::Allow);
    assert_eq!(net("10.2.3.4", 5), Verdict::Allow);
    assert_eq!(net("fd00::1", 22), Verdict::Allow);
    assert_eq!(net("11.0.0.1", 5), Verdict::Ask);
    let mcp = |repo: &str| {
        let arguments = serde_json::json!({ "repo": repo });
        p.decide(&Action::McpCall {
            server: "github".into(),
            tool: "create_pr".into(),
            arguments,
        })
        .verdict
    };
    assert_eq!(mcp("myorg/a"), Verdict::Allow);
    assert_eq!(mcp("evil/a"), Verdict::Ask);
    assert_eq!(
        p.decide(&Action::shell("echo > sub/Cargo.lock")).verdict,
        Verdict::Deny
    );
}
