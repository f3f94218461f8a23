//! The leak test: 200 sandbox lifecycles, some owners SIGKILLed mid-exec and some mid-create, then
//! `gc` — afterwards no sandbox directory, cgroup, mount or process remains. Root; required in CI.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)] // test code

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use luminaguard_cgroup::Hierarchy;

const BIN: &str = env!("CARGO_BIN_EXE_luminaguard");

fn spawn_run(rt: &Path, argv: &[&str]) -> Child {
    Command::new(BIN)
        .arg("--runtime-dir")
        .arg(rt)
        .arg("run")
        .arg("--")
        .args(argv)
        .env("RUST_LOG", "error")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Polls (bounded) until `cond` holds — the thing waited for happens in another process.
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn metas(rt: &Path) -> Vec<serde_json::Value> {
    let Ok(dir) = std::fs::read_dir(rt.join("sandboxes")) else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| std::fs::read(e.path().join("meta.json")).ok())
        .filter_map(|b| serde_json::from_slice(&b).ok())
        .collect()
}

fn sandbox_processes(rt: &Path) -> Vec<(i32, String)> {
    luminaguard_testkit::live_processes_matching(&["sandbox-init", rt.to_str().unwrap()])
}

/// Every sandbox cgroup on the host (`sb-*` under LuminaGuard's parent groups).
fn sandbox_groups() -> Vec<std::path::PathBuf> {
    let probe = Hierarchy::detect().unwrap().planned("probe").unwrap();
    probe
        .dirs()
        .iter()
        .filter_map(|d| std::fs::read_dir(d.parent().unwrap()).ok())
        .flat_map(|d| d.flatten().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("sb-"))
        })
        .collect()
}

#[test]
fn two_hundred_cycles_with_killed_owners_leave_nothing_after_gc() {
    if !luminaguard_testkit::privileged("the leak test") {
        return;
    }
    let rt_dir = tempfile::tempdir().unwrap();
    let rt = rt_dir.path();
    let groups_before = sandbox_groups();
    let (mut killed_mid_exec, mut killed_mid_create) = (0, 0);
    for i in 0..200 {
        match i % 20 {
            7 => {
                // Owner killed while its command runs.
                let mut run = spawn_run(rt, &["sleep", "100"]);
                wait_for("a running sandbox", || {
                    metas(rt).iter().any(|m| !m["init"].is_null())
                });
                run.kill().unwrap();
                run.wait().unwrap();
                killed_mid_exec += 1;
            }
            13 => {
                // Owner killed while it is still creating the sandbox.
                let mut run = spawn_run(rt, &["true"]);
                wait_for("a sandbox record", || !metas(rt).is_empty());
                run.kill().unwrap();
                run.wait().unwrap();
                killed_mid_create += 1;
            }
            _ => {
                let status = spawn_run(rt, &["true"]).wait().unwrap();
                assert!(status.success(), "cycle {i}: {status:?}");
            }
        }
    }
    assert_eq!((killed_mid_exec, killed_mid_create), (10, 10));
    // `run` collects dead owners' leftovers as it starts, so most are gone already; kill one more
    // owner last, so that the explicit `gc` below has something to prove itself on.
    let mut run = spawn_run(rt, &["sleep", "100"]);
    wait_for("a running sandbox", || {
        metas(rt).iter().any(|m| !m["init"].is_null())
    });
    run.kill().unwrap();
    run.wait().unwrap();
    assert_eq!(
        metas(rt).len(),
        1,
        "the killed owner's sandbox should still be on disk before gc"
    );

    let out = Command::new(BIN)
        .arg("--runtime-dir")
        .arg(rt)
        .args(["gc", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "gc failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report["removed"].as_array().map(Vec::len),
        Some(1),
        "{report}"
    );

    // Nothing is left: no sandbox directory, no process, no mount, no cgroup.
    let left: Vec<_> = std::fs::read_dir(rt.join("sandboxes"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "sandbox directories left: {left:?}");
    wait_for("sandbox processes to be gone", || {
        sandbox_processes(rt).is_empty()
    });
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(rt.to_str().unwrap()),
        "mounts left under {rt:?}"
    );
    let new_groups: Vec<_> = sandbox_groups()
        .into_iter()
        .filter(|g| !groups_before.contains(g))
        .collect();
    assert!(new_groups.is_empty(), "cgroups left: {new_groups:?}");
}
