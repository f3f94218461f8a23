//! Property tests: random argvs, scripts and policy texts never panic; an `allow` always means
//! every part was allowed by a rule.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)] // test code

use luminaguard_policy::{Action, Policy, Verdict, lint};
use proptest::prelude::*;

const POLICY: &str = r#"
[[rule]]
decision = "allow"
program = ["ls", "cat", "echo", "grep"]
[[rule]]
decision = "deny"
exec = ["rm", "**", "-rf", "**"]
[[rule]]
decision = "allow"
write = ["out/**"]
"#;

const ALLOWED: &[&str] = &["ls", "cat", "echo", "grep"];

fn token() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("ls".to_owned()),
        Just("rm".to_owned()),
        Just("-rf".to_owned()),
        Just("echo".to_owned()),
        Just("sh".to_owned()),
        Just("-c".to_owned()),
        Just("env".to_owned()),
        Just("xargs".to_owned()),
        Just(";".to_owned()),
        Just("&&".to_owned()),
        Just("|".to_owned()),
        Just("$(".to_owned()),
        Just(")".to_owned()),
        Just("`".to_owned()),
        Just("'".to_owned()),
        Just("\"".to_owned()),
        Just(">".to_owned()),
        Just("out/x".to_owned()),
        Just("$X".to_owned()),
        Just("*".to_owned()),
        Just("{".to_owned()),
        Just("}".to_owned()),
        Just("(".to_owned()),
        Just("((".to_owned()),
        Just("<<".to_owned()),
        Just("if".to_owned()),
        Just("then".to_owned()),
        Just("fi".to_owned()),
        Just("./x".to_owned()),
        Just("\\".to_owned()),
        Just("\n".to_owned()),
        Just("=".to_owned()),
        "[ -~]{0,6}",
    ]
}

fn check(p: &Policy, a: &Action) {
    let d = p.decide(a);
    if d.verdict == Verdict::Allow {
        assert!(!d.commands.is_empty(), "{a:?}: allowed with nothing seen");
        for c in &d.commands {
            assert_eq!(c.verdict, Verdict::Allow, "{a:?}: {d}");
            assert!(
                c.rule.is_some(),
                "{a:?}: part allowed without a rule: {c:?}"
            );
            if c.action == "exec" {
                let prog = c.argv[0].rsplit('/').next().unwrap_or_default();
                assert!(
                    ALLOWED.contains(&prog) || c.argv[0].is_empty(),
                    "{a:?}: {c:?}"
                );
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_scripts_never_panic_and_never_allow_unseen_commands(tokens in prop::collection::vec(token(), 0..16)) {
        let p = Policy::from_text(POLICY, "t").unwrap();
        let script = tokens.join(" ");
        check(&p, &Action::shell(&script));
        check(&p, &Action::exec(&["bash", "-c", &tokens.concat()]));
    }

    #[test]
    fn random_argvs_never_panic_and_never_allow_unseen_commands(argv in prop::collection::vec(token(), 0..10)) {
        let p = Policy::from_text(POLICY, "t").unwrap();
        check(&p, &Action::Exec { argv, cwd: Some("sub".into()) });
    }

    #[test]
    fn random_bytes_as_scripts_never_panic(script in "\\PC{0,80}") {
        let p = Policy::preset("default").unwrap();
        let _ = p.decide(&Action::shell(&script));
    }

    #[test]
    fn random_policy_text_never_panics_lint(text in "\\PC{0,200}") {
        let _ = lint(&text, "fuzz");
    }

    #[test]
    fn random_rules_never_panic_lint(
        decision in "allow|ask|deny|x",
        elems in prop::collection::vec("[a-z*|\\[\\]{}re:?-]{0,6}", 0..5),
        example in "[ -~]{0,20}",
    ) {
        let quoted: Vec<String> = elems.iter().map(|e| format!("{e:?}")).collect();
        let text = format!(
            "[[rule]]\ndecision = \"{decision}\"\nexec = [{}]\nexamples = [{example:?}]\n",
            quoted.join(", ")
        );
        let _ = lint(&text, "fuzz");
        if let Ok(p) = Policy::from_text(&text, "fuzz") {
            let _ = p.decide(&Action::shell(&example));
        }
    }
}
