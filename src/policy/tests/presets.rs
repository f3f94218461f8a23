//! The embedded presets: each loads (its examples are checked at load), and decides the
//! everyday actions the way docs/policy.md says.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)] // test code

use luminaguard_policy::{Action, Policy, Verdict};

fn verdict(p: &Policy, script: &str) -> Verdict {
    p.decide(&Action::shell(script)).verdict
}

#[test]
fn every_preset_loads_with_its_examples_checked() {
    for (name, _) in luminaguard_policy::PRESETS {
        let p = Policy::preset(name).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.origin(), format!("preset:{name}"));
        assert_eq!(p.digest().len(), 64);
    }
}

#[test]
fn default_preset_allows_reads_and_ordinary_work() {
    let p = Policy::preset("default").unwrap();
    for s in [
        "ls -la",
        "cat src/main.rs | grep fn | wc -l",
        "make -j4",
        "cargo build --release && cargo test -p x",
        "npm test",
        "npm run test:unit",
        "python3 -m pytest -q",
        "git status && git diff && git log --oneline | head",
        "git add -A && git commit -m wip",
        "sed -n 1,20p src/main.rs",
        "echo hello > notes.txt",
        "find . -name '*.rs'",
        "mkdir -p build && cp a build/",
    ] {
        assert_eq!(
            verdict(&p, s),
            Verdict::Allow,
            "{s}: {}",
            p.decide(&Action::shell(s))
        );
    }
}

#[test]
fn default_preset_asks_for_destructive_network_and_publishing() {
    let p = Policy::preset("default").unwrap();
    for s in [
        "rm -rf build",
        "git reset --hard HEAD~1",
        "git clean -fdx",
        "dd if=/dev/zero of=x bs=1M count=1",
        "mkfs.ext4 /dev/sdb",
        "chmod -R 777 .",
        "find . -name '*.o' -delete",
        "curl https://example.com",
        "wget x",
        "ssh host",
        "scp a host:b",
        "nc -l 8080",
        "pip install requests",
        "npm install left-pad",
        "git push origin main",
        "npm publish",
        "cargo publish",
        "twine upload dist/x",
        "docker push img",
        "gh release create v1",
        "echo x > .git/config",
        "sed -n '1e rm -rf /' x",
        "./build.sh",
        "python3 do.py",
    ] {
        let d = p.decide(&Action::shell(s));
        assert_eq!(d.verdict, Verdict::Ask, "{s}: {d}");
    }
    for s in ["curl https://x", "git push", "npm publish", "pip install x"] {
        assert!(
            p.decide(&Action::shell(s)).outside,
            "{s} leaves the sandbox"
        );
    }
    assert!(!p.decide(&Action::shell("rm -rf build")).outside);
    assert_eq!(verdict(&p, "rm -rf /"), Verdict::Deny);
    assert_eq!(verdict(&p, "cd /tmp && rm -rf /workspace"), Verdict::Deny);
}

#[test]
fn strict_preset_reads_but_asks_for_writes_and_network() {
    let p = Policy::preset("strict").unwrap();
    assert_eq!(verdict(&p, "ls && cat x | grep y"), Verdict::Allow);
    assert_eq!(verdict(&p, "git log --oneline"), Verdict::Allow);
    for s in [
        "echo x > y",
        "touch y",
        "rm y",
        "make",
        "cargo build",
        "git commit -m x",
        "sort -o out in",
    ] {
        assert_eq!(verdict(&p, s), Verdict::Ask, "{s}");
    }
    let w = p.decide(&Action::Write {
        path: "src/x".into(),
    });
    assert_eq!(w.verdict, Verdict::Ask);
    let n = p.decide(&Action::Net {
        host: "github.com".into(),
        port: 443,
    });
    assert_eq!((n.verdict, n.outside), (Verdict::Ask, true));
}

#[test]
fn permissive_preset_allows_the_inside_and_asks_for_what_leaves() {
    let p = Policy::preset("permissive").unwrap();
    // Scripts and programs by path run inside the sandbox, which contains them: allowed here.
    for s in [
        "rm -rf build",
        "make && ./target/x --help || true",
        "git commit -am x",
        "python3 -c 'print(1)'; perl /workspace/x.pl; sh build.sh",
    ] {
        let d = p.decide(&Action::shell(s));
        assert_eq!(d.verdict, Verdict::Allow, "{s}: {d}");
    }
    // What the policy cannot even name is still asked.
    for s in ["eval \"$X\"", "$CMD -rf /", "curl https://example.com"] {
        assert_eq!(p.decide(&Action::shell(s)).verdict, Verdict::Ask, "{s}");
    }
    assert_eq!(
        p.decide(&Action::Write {
            path: "/tmp/x".into()
        })
        .verdict,
        Verdict::Allow
    );
    assert_eq!(
        p.decide(&Action::Delete { path: "src".into() }).verdict,
        Verdict::Allow
    );
    for s in [
        "curl x",
        "git push",
        "npm publish",
        "pip install x",
        "eval \"$X\"",
    ] {
        assert_eq!(verdict(&p, s), Verdict::Ask, "{s}");
    }
    let n = p.decide(&Action::Net {
        host: "10.1.2.3".into(),
        port: 22,
    });
    assert_eq!(n.verdict, Verdict::Ask);
}

#[test]
fn load_takes_a_preset_name_or_a_path() {
    assert_eq!(Policy::load("strict").unwrap().origin(), "preset:strict");
    assert_eq!(
        Policy::load("preset:default").unwrap().origin(),
        "preset:default"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.toml");
    std::fs::write(
        &path,
        "version = 1\n[[rule]]\ndecision = \"deny\"\nprogram = [\"rm\"]\n",
    )
    .unwrap();
    let p = Policy::load(path.to_str().unwrap()).unwrap();
    assert_eq!(p.decide(&Action::exec(&["rm", "x"])).verdict, Verdict::Deny);
    let e = Policy::load("/nonexistent/policy.toml").unwrap_err();
    assert_eq!(e.code(), "policy_not_found");
    let e = Policy::load("no-such-preset").unwrap_err();
    assert_eq!(e.code(), "policy_not_found");
}
