//! `luminaguard sandbox create|exec|cp|ls|rm`: long-lived sandboxes driven by separate commands,
//! each its own process, as a user would. Root only; required in CI.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)] // test code

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use luminaguard_testkit::text;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_luminaguard");

/// Runs `luminaguard --runtime-dir RT args…`, feeding `stdin`.
fn lg_in(rt: &Path, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(BIN)
        .arg("--runtime-dir")
        .arg(rt)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    // `output()` returns only when every holder of the pipes closed them: a sandbox that kept
    // the creating command's stdout or stderr would hang here.
    child.wait_with_output().unwrap()
}

fn lg(rt: &Path, args: &[&str]) -> Output {
    lg_in(rt, args, b"")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn listing(rt: &Path) -> Vec<Value> {
    let v: Value = serde_json::from_str(&ok(&lg(rt, &["sandbox", "ls", "--json"]))).unwrap();
    v.as_array().unwrap().clone()
}

fn entry(rt: &Path, id: &str) -> Option<Value> {
    listing(rt).into_iter().find(|e| e["id"] == id)
}

/// The init's pid and cgroup directories, from the sandbox record.
fn record(rt: &Path, id: &str) -> (i32, Vec<String>) {
    let meta: Value = serde_json::from_slice(
        &std::fs::read(rt.join("sandboxes").join(id).join("meta.json")).unwrap(),
    )
    .unwrap();
    let pid = meta["init"]["pid"].as_i64().unwrap() as i32;
    let dirs = meta["cgroup_dirs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap().to_owned())
        .collect();
    (pid, dirs)
}

fn gone(rt: &Path, id: &str, pid: i32, cgroups: &[String]) {
    assert!(entry(rt, id).is_none(), "{id} still listed");
    assert!(
        !rt.join("sandboxes").join(id).exists(),
        "{id}: runtime dir left"
    );
    let start = Instant::now();
    // The init is reaped by whoever is its parent now; a zombie holds nothing.
    while Path::new(&format!("/proc/{pid}/stat")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
        })
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{id}: init {pid} survived"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    for d in cgroups {
        assert!(!Path::new(d).exists(), "{id}: cgroup {d} left");
    }
}

#[test]
fn long_lived_sandbox_across_commands() {
    if !luminaguard_testkit::privileged("process sandboxes") {
        return;
    }
    let rt = tempfile::tempdir().unwrap();
    let rt = rt.path();
    let id = format!("t-{}", std::process::id());
    let created: Value = serde_json::from_str(&ok(&lg(
        rt,
        &[
            "sandbox", "create", "--name", &id, "--memory", "128M", "--json",
        ],
    )))
    .unwrap();
    assert_eq!(
        (created["id"].as_str(), created["backend"].as_str()),
        (Some(&*id), Some("process"))
    );
    let e = entry(rt, &id).expect("listed");
    assert_eq!(
        (e["state"].as_str(), e["persistent"].as_bool()),
        (Some("running"), Some(true))
    );

    // The creating command has exited; the sandbox has not, and gc leaves it alone.
    ok(&lg(rt, &["gc"]));
    assert!(entry(rt, &id).is_some(), "gc removed a live sandbox");

    // State persists from one exec to the next; stdin streams in; the exit status comes back.
    ok(&lg_in(
        rt,
        &["sandbox", "exec", &id, "--", "sh", "-c", "cat > note"],
        b"kept\n",
    ));
    assert_eq!(
        ok(&lg(
            rt,
            &["sandbox", "exec", &id, "--", "cat", "/workspace/note"]
        )),
        "kept\n"
    );
    let out = lg(
        rt,
        &[
            "sandbox", "exec", &id, "-e", "X=7", "--", "sh", "-c", "exit $X",
        ],
    );
    assert_eq!(out.status.code(), Some(7));
    let out = lg(
        rt,
        &[
            "sandbox",
            "exec",
            &id,
            "--timeout",
            "300ms",
            "--",
            "sleep",
            "30",
        ],
    );
    assert_eq!(out.status.code(), Some(137), "{}", text(&out.stderr));

    // Denied system calls are refused with EPERM and recorded: which process tried which call.
    let out = lg(
        rt,
        &[
            "sandbox", "exec", &id, "--", "mount", "-t", "tmpfs", "none", "/mnt",
        ],
    );
    assert!(!out.status.success());
    let audit: Value =
        serde_json::from_str(&ok(&lg(rt, &["sandbox", "audit", &id, "--json"]))).unwrap();
    assert_eq!(audit["enabled"], true);
    let mounts: Vec<&Value> = audit["recent"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["syscall"] == "mount")
        .collect();
    assert!(
        !mounts.is_empty() && mounts.iter().all(|d| d["comm"] == "mount"),
        "{audit}"
    );
    // Each exec reports its own denials, not the sandbox's running total.
    for _ in 0..2 {
        let out = lg(
            rt,
            &[
                "sandbox",
                "exec",
                &id,
                "--",
                "perl",
                "-e",
                "syscall(165, 0, 0, 0, 0, 0)",
            ],
        );
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains("seccomp policy denied: mount x1\n"),
            "{stderr}"
        );
    }
    let out = lg(rt, &["sandbox", "exec", &id, "--", "true"]);
    assert_eq!(text(&out.stderr), "", "a clean exec reports nothing");

    // Files in and out.
    let host = tempfile::tempdir().unwrap();
    let src = host.path().join("in.bin");
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&src, &data).unwrap();
    ok(&lg(
        rt,
        &[
            "sandbox",
            "cp",
            src.to_str().unwrap(),
            &format!("{id}:/workspace/in.bin"),
        ],
    ));
    assert_eq!(
        ok(&lg(
            rt,
            &["sandbox", "exec", &id, "--", "wc", "-c", "in.bin"]
        ))
        .trim(),
        "300000 in.bin"
    );
    let dst = host.path().join("out.bin");
    ok(&lg(
        rt,
        &[
            "sandbox",
            "cp",
            &format!("{id}:/workspace/in.bin"),
            dst.to_str().unwrap(),
        ],
    ));
    assert_eq!(std::fs::read(&dst).unwrap(), data);
    // A failed copy out leaves nothing behind and reports the sandbox path.
    let missing = host.path().join("missing");
    let out = lg(
        rt,
        &[
            "sandbox",
            "cp",
            &format!("{id}:/workspace/nope"),
            missing.to_str().unwrap(),
        ],
    );
    assert!(!out.status.success() && text(&out.stderr).contains("/workspace/nope"));
    assert_eq!(
        std::fs::read_dir(host.path()).unwrap().count(),
        2,
        "temp file left behind"
    );

    // Destroy removes every trace.
    let (pid, cgroups) = record(rt, &id);
    assert!(!cgroups.is_empty());
    ok(&lg(rt, &["sandbox", "rm", &id]));
    gone(rt, &id, pid, &cgroups);

    // An exec applies the sandbox's own defaults, as created (its timeout here), not the
    // attaching command's.
    let id = ok(&lg(rt, &["sandbox", "create", "--timeout", "500ms"]))
        .trim()
        .to_owned();
    let out = lg(rt, &["sandbox", "exec", &id, "--", "sleep", "30"]);
    assert_eq!(out.status.code(), Some(137), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("timed out"),
        "{}",
        text(&out.stderr)
    );
    ok(&lg(rt, &["sandbox", "rm", &id]));
    let out = lg(rt, &["sandbox", "exec", &id, "--", "true"]);
    assert!(
        !out.status.success() && text(&out.stderr).contains("does not exist"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn lifetime_ends_the_sandbox_and_gc_removes_it() {
    if !luminaguard_testkit::privileged("process sandboxes") {
        return;
    }
    let rt = tempfile::tempdir().unwrap();
    let rt = rt.path();
    let id = ok(&lg(rt, &["sandbox", "create", "--lifetime", "2s"]))
        .trim()
        .to_owned();
    let (pid, cgroups) = record(rt, &id);
    // A command still running when the lifetime ends is killed with the sandbox.
    let start = Instant::now();
    let out = lg(rt, &["sandbox", "exec", &id, "--", "sleep", "60"]);
    assert_eq!(out.status.code(), Some(137));
    assert!(
        text(&out.stderr).contains("the sandbox is stopping"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "the lifetime did not end the exec"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while entry(rt, &id).is_some_and(|e| e["state"] == "running") {
        assert!(
            Instant::now() < deadline,
            "still running after its lifetime"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    ok(&lg(rt, &["gc"]));
    gone(rt, &id, pid, &cgroups);
}

#[test]
fn bad_ids_and_missing_sandboxes_get_clear_errors() {
    let rt = tempfile::tempdir().unwrap();
    let rt = rt.path();
    for bad in ["../etc", "a/b", ".", "-x"] {
        let out = lg(rt, &["sandbox", "exec", bad, "--", "true"]);
        assert_eq!(out.status.code(), Some(2), "{bad}: {}", text(&out.stderr));
    }
    let out = lg(rt, &["sandbox", "rm", "nosuch"]);
    assert!(!out.status.success() && text(&out.stderr).contains("sandbox nosuch does not exist"));
    assert!(listing(rt).is_empty());
}

/// Two runtime directories, a sandbox of the same name in each: they are two sandboxes with
/// two cgroups — removing one leaves the other running, with its own limits.
#[test]
fn sandboxes_of_one_name_in_two_runtime_directories_share_nothing() {
    if !luminaguard_testkit::privileged("the cgroup naming test") {
        return;
    }
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (rt_a, rt_b) = (a.path().join("rt"), b.path().join("rt"));
    ok(&lg(
        &rt_a,
        &["sandbox", "create", "--name", "twin", "--pids", "64"],
    ));
    ok(&lg(
        &rt_b,
        &["sandbox", "create", "--name", "twin", "--pids", "128"],
    ));
    ok(&lg(&rt_a, &["sandbox", "rm", "twin"]));
    let out = ok(&lg(
        &rt_b,
        &["sandbox", "exec", "twin", "--", "sh", "-c", "echo alive"],
    ));
    assert_eq!(out, "alive\n", "removing one twin killed the other");
    ok(&lg(&rt_b, &["sandbox", "rm", "twin"]));
}
