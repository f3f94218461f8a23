//! cgroup limits enforced for real on this host's hierarchy (v1 here, v2 where available).
//! Root only; required in CI.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)] // test code

use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, Stdio};

use luminaguard_cgroup::{Cgroup, Hierarchy, Limits};

/// Starts `script` held at a `read`, moves it into `cg`, then lets it go.
fn run_in(cg: &Cgroup, script: &str) -> Child {
    let mut child = Command::new("/bin/sh")
        .args(["-c", &format!("read go; {script}")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    cg.add(child.id() as i32).unwrap();
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    child
}

#[test]
fn pid_limit_stops_a_fork_bomb_and_remove_leaves_nothing() {
    if !luminaguard_testkit::privileged("cgroup limits") {
        return;
    }
    let h = Hierarchy::detect().unwrap();
    let cg = h
        .create(
            &format!("lg-test-pids-{}", std::process::id()),
            Limits {
                memory_bytes: 256 << 20,
                pids: 16,
                cpus: Some(1),
            },
        )
        .unwrap();
    // Forks until the kernel refuses, then reports how many it got (children just sleep).
    let bomb = "exec perl -e '$| = 1; my $n = 0; for (1..60) { my $p = fork(); last unless defined $p; if (!$p) { sleep 300; exit 0 } $n++ } print \"$n\\n\"; sleep 300'";
    let mut child = run_in(&cg, bomb);
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let forked: u32 = line
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("unexpected output {line:?}"));
    assert!(forked < 60, "all 60 forks succeeded under a limit of 16");
    let inside = cg.pids().unwrap().len();
    assert!(
        (2..=16).contains(&inside),
        "{inside} processes in a group limited to 16"
    );
    cg.remove().unwrap();
    assert_eq!(
        child.wait().unwrap().signal(),
        Some(9),
        "remove kills what is in the group"
    );
    for d in cg.dirs() {
        assert!(!d.exists(), "{d:?} left behind");
    }
}

#[test]
fn memory_hog_is_oom_killed_and_reported() {
    if !luminaguard_testkit::privileged("cgroup limits") {
        return;
    }
    let h = Hierarchy::detect().unwrap();
    let cg = h
        .create(
            &format!("lg-test-mem-{}", std::process::id()),
            Limits {
                memory_bytes: 32 << 20,
                pids: 64,
                cpus: None,
            },
        )
        .unwrap();
    assert_eq!(cg.oom_kills().unwrap(), 0);
    let child = run_in(
        &cg,
        "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived",
    );
    let out = child.wait_with_output().unwrap();
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("survived"),
        "the hog survived a 32 MiB limit"
    );
    assert!(
        cg.oom_kills().unwrap() >= 1,
        "no OOM kill recorded (status {:?}, signal {:?})",
        out.status,
        out.status.signal()
    );
    cg.remove().unwrap();
}
