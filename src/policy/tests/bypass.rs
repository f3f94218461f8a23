//! The bypass table: every form of a denied command is denied, of an asked command at least
//! asked; scripts the policy cannot see are asked; nothing unknown is ever allowed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)] // test code

use luminaguard_policy::{Action, Policy, Verdict};

const POLICY: &str = r#"
version = 1
default = "ask"

[[rule]]
id = "rm-recursive"
decision = "deny"
risk = "high"
reason = "deletes recursively"
exec = ["rm", "**", "re:-[a-zA-Z]*[rR][a-zA-Z]*|--recursive", "**"]
examples = ["rm -rf /workspace/x"]
counterexamples = ["rm x"]

[[rule]]
decision = "ask"
reason = "publishes"
exec = ["git", "push", "**"]
outside = true

[[rule]]
decision = "allow"
program = ["ls", "cat", "grep", "echo", "true", "head", "find", "sort", "xargs", "git"]

[[rule]]
decision = "allow"
write = ["**"]

[[rule]]
decision = "deny"
write = [".git/**"]
"#;

fn policy() -> Policy {
    Policy::from_text(POLICY, "test.toml").unwrap()
}

fn check(p: &Policy, want: Verdict, cases: &[&str]) {
    for s in cases {
        let d = p.decide(&Action::shell(s));
        assert!(d.verdict >= want, "{s:?}: {d}, want at least {want}");
        if want == Verdict::Deny {
            assert_eq!(d.verdict, Verdict::Deny, "{s:?}: {d}");
        }
    }
}

#[test]
fn every_form_of_a_denied_command_is_denied() {
    check(
        &policy(),
        Verdict::Deny,
        &[
            "rm -rf /workspace",
            "rm -r -f x",
            "rm x -R",
            "rm --recursive x",
            "ls; rm -rf /workspace",
            "ls && rm -rf x",
            "false || rm -rf x",
            "ls | rm -rf x",
            "rm -rf x &",
            "(rm -rf x)",
            "{ rm -rf x; }",
            "if true; then rm -rf x; fi",
            "while true; do rm -rf x; done",
            "for f in a b; do rm -rf $f; done",
            "case x in x) rm -rf x;; esac",
            "f() { rm -rf x; }; f",
            "echo $(rm -rf x)",
            "echo `rm -rf x`",
            "echo \"$(rm -rf x)\"",
            "cat <(rm -rf x)",
            "echo x > >(rm -rf x)",
            "X=$(rm -rf x) ls",
            "cat <<EOF\n$(rm -rf x)\nEOF",
            "env rm -rf x",
            "env -i FOO=1 rm -rf x",
            "xargs rm -rf",
            "find . -exec rm -rf {} \\;",
            "sh -c 'rm -rf x'",
            "bash -c 'rm -rf x'",
            "bash -lc 'rm -rf x'",
            "bash -euxc 'rm -rf x'",
            "sh -c \"sh -c 'rm -rf x'\"",
            "nice rm -rf x",
            "nice -n 5 rm -rf x",
            "nohup rm -rf x",
            "timeout 5 rm -rf x",
            "timeout -s KILL 5 rm -rf x",
            "time rm -rf x",
            "stdbuf -oL rm -rf x",
            "setsid rm -rf x",
            "command rm -rf x",
            "exec rm -rf x",
            "builtin command rm -rf x",
            "busybox rm -rf x",
            "busybox sh -c 'rm -rf x'",
            "sudo rm -rf x",
            "sudo -u root rm -rf x",
            "doas rm -rf x",
            "/bin/rm -rf x",
            "/usr/bin/rm -rf x",
            "'rm' -rf x",
            "r\\m -rf x",
            "\"rm\" '-rf' x",
            "rm -\"rf\" x",
            "nice timeout 5 env sudo rm -rf x",
            "! rm -rf x",
            "coproc rm -rf x",
            "[[ -n $(rm -rf x) ]]",
            "echo $(( $(rm -rf x) ))",
            "echo hi > .git/config",
            "echo hi >> .git/config",
            "echo hi >| .git/config",
            "echo hi &> .git/config",
            "echo hi >& .git/config",
            "exec > .git/config",
            "echo hi 1<>.git/config",
            "echo hi > ./.git/../.git/config",
            "echo hi > /workspace/.git/config",
            "cat x | tee .git/config",
            "cp x .git/config",
            "cp x .git/",
            "mv x .git/hooks/pre-commit",
        ],
    );
    // A direct argv (no shell) too.
    let p = policy();
    let d = p.decide(&Action::exec(&["/usr/bin/env", "rm", "-rf", "x"]));
    assert_eq!(d.verdict, Verdict::Deny, "{d}");
    assert_eq!(
        p.decide(&Action::exec(&["xargs", "-0", "rm", "-r"]))
            .verdict,
        Verdict::Deny
    );
}

#[test]
fn every_form_of_an_asked_command_is_at_least_asked() {
    check(
        &policy(),
        Verdict::Ask,
        &[
            "git push",
            "ls; git push origin main",
            "sh -c 'git push'",
            "env git push",
            "timeout 5 git push --force",
            "echo $(git push)",
            "/usr/bin/git push",
            "xargs git push",
        ],
    );
}

#[test]
fn what_the_policy_cannot_see_is_asked_never_allowed() {
    let p = policy();
    check(
        &p,
        Verdict::Ask,
        &[
            "./do.sh",
            "sh do.sh",
            "bash do.sh",
            "python3 do.py",
            "node x.js",
            "perl x.pl",
            "/workspace/do.sh",
            "x/ls",
            "/tmp/ls",
            "/usr/bin/../../tmp/ls",
            "$X -rf /",
            "${X} -rf /",
            "\"$X\" -rf /",
            "$(echo rm) -rf /",
            "*s",
            "l? x",
            "eval 'ls'",
            "source x.sh",
            ". x.sh",
            "PATH=. ls",
            "PATH=.:$PATH; ls",
            "export PATH=.",
            "env PATH=. ls",
            "LD_PRELOAD=./x.so ls",
            "alias ls='rm -rf x'",
            "trap 'rm -rf x' EXIT",
            "env -S 'rm -rf x'",
            "sh",
            "bash -s",
            "sh -c \"$X\"",
            "echo x > $F",
            "echo x > /dev/tcp/1.2.3.4/80",
            "cd .git && echo x > config",
            "ls ${X:-$(rm -rf x)}",
            "x='a[$(rm -rf y)]'; echo $(( x ))",
            "read x; (( x ))",
            "if then fi (",
            "echo 'unterminated",
            "zsh -c 'ls *(e:rm:)'",
            "strace ls",
            "watch rm -rf x",
            "sudo -s",
            "rm $X",
            "rm *",
            "ls | xargs sh",
        ],
    );
    // And none of them is allowed.
    let d = p.decide(&Action::exec(&["python3", "-c", "import os"]));
    assert_eq!(d.verdict, Verdict::Ask, "{d}");
}

#[test]
fn plain_safe_commands_stay_allowed() {
    let p = policy();
    for s in [
        "ls -la",
        "ls | grep x | head",
        "echo hi > out.txt",
        "ls $HOME",
        "cat *.txt",
        "echo \"$(ls)\"",
        "git status",
    ] {
        let d = p.decide(&Action::shell(s));
        assert_eq!(d.verdict, Verdict::Allow, "{s}: {d}");
    }
}

#[test]
fn an_explicit_rule_can_allow_a_script() {
    let text = r#"
[[rule]]
decision = "allow"
exec = ["./build.sh", "**"]
[[rule]]
decision = "allow"
exec = ["python3", "-m", "pytest", "**"]
[[rule]]
decision = "allow"
program = ["python3"]
"#;
    let p = Policy::from_text(text, "t").unwrap();
    assert_eq!(
        p.decide(&Action::shell("./build.sh --release")).verdict,
        Verdict::Allow
    );
    assert_eq!(
        p.decide(&Action::shell("python3 -m pytest -q")).verdict,
        Verdict::Allow
    );
    // `program = ["python3"]` names no script: running one is still asked.
    assert_eq!(
        p.decide(&Action::shell("python3 x.py")).verdict,
        Verdict::Ask
    );
    assert_eq!(
        p.decide(&Action::shell("../build.sh")).verdict,
        Verdict::Ask
    );
}

#[test]
fn the_decision_names_the_rule_and_breaks_the_script_down() {
    let p = policy();
    let d = p.decide(&Action::shell("ls; rm -rf x; git push"));
    assert_eq!(d.verdict, Verdict::Deny);
    let rule = d.rule.clone().unwrap();
    assert_eq!((rule.line, rule.id.as_deref()), (5, Some("rm-recursive")));
    assert_eq!(
        d.to_string(),
        "deny (high): deletes recursively — rule rm-recursive at test.toml:5 [leaves the sandbox]"
    );
    assert!(d.outside);
    let verdicts: Vec<_> = d
        .commands
        .iter()
        .map(|c| (c.action.as_str(), c.argv.join(" "), c.verdict))
        .collect();
    assert_eq!(
        verdicts,
        [
            ("exec", "ls".to_owned(), Verdict::Allow),
            ("exec", "rm -rf x".to_owned(), Verdict::Deny),
            ("exec", "git push".to_owned(), Verdict::Ask),
            // `rm` deletes `x`: no delete rule, so the default.
            ("delete", "x".to_owned(), Verdict::Ask),
        ]
    );
    assert_eq!(d.matched.len(), 3);
    let json = serde_json::to_value(&d).unwrap();
    assert_eq!(json["verdict"], "deny");
    assert_eq!(json["commands"][1]["rule"]["line"], 5);
}
