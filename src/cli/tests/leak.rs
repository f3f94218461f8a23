//! The leak test: 1,000 sandbox lifecycles — disposable (`run`) and long-lived (`sandbox
//! create`) — with a third of the creating commands SIGKILLed at a random moment: before,
//! during or after the create, or while the command runs. What must hold:
//!
//! - a create whose caller dies leaves nothing running: once the dust settles, every process
//!   left belongs to a sandbox whose create printed its id before it was killed (and whose
//!   record says it was handed over to its init);
//! - `gc` removes every other sandbox's leftovers;
//! - removing the completed ones leaves nothing at all: no sandbox directory, process, cgroup or
//!   mount.
//!
//! Root; required in CI.
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
use rand::{Rng, SeedableRng, rngs::StdRng};

const BIN: &str = env!("CARGO_BIN_EXE_luminaguard");
const CYCLES: u32 = 1000;

fn spawn(rt: &Path, args: &[&str]) -> Child {
    Command::new(BIN)
        .arg("--runtime-dir")
        .arg(rt)
        .args(args)
        .env("RUST_LOG", "error")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Polls (bounded) until `cond` holds — the thing waited for happens in other processes.
fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
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

/// Whether the process `p` (`{"pid", "start"}` of a record) is still the one recorded.
fn alive(p: &serde_json::Value) -> bool {
    let (Some(pid), Some(start)) = (p["pid"].as_i64(), p["start"].as_u64()) else {
        return false;
    };
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return false;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    !matches!(fields.first(), Some(&("Z" | "X")))
        && fields.get(19).and_then(|s| s.parse::<u64>().ok()) == Some(start)
}

/// The live processes a record names: its init and its helpers (keeper, resolver).
fn live_processes(m: &serde_json::Value) -> Vec<i64> {
    std::iter::once(&m["init"])
        .chain(m["helpers"].as_array().into_iter().flatten())
        .filter(|p| alive(p))
        .filter_map(|p| p["pid"].as_i64())
        .collect()
}

/// A create completed (and was handed over to its init) when the record's owner is its init.
fn completed(m: &serde_json::Value) -> bool {
    !m["init"].is_null() && m["owner"] == m["init"]
}

/// Every process that runs a sandbox init under `rt`, by its command line.
fn sandbox_inits(rt: &Path) -> Vec<(i32, String)> {
    luminaguard_testkit::live_processes_matching(&["sandbox-init", rt.to_str().unwrap()])
}

/// Every sandbox cgroup on the host (`sb-*`, `lk-*` under LuminaGuard's parent groups).
fn sandbox_groups() -> Vec<std::path::PathBuf> {
    let probe = Hierarchy::detect().unwrap().planned("probe").unwrap();
    probe
        .dirs()
        .iter()
        .filter_map(|d| std::fs::read_dir(d.parent().unwrap()).ok())
        .flat_map(|d| d.flatten().map(|e| e.path()))
        .filter(|p| {
            p.file_name().is_some_and(|n| {
                let n = n.to_string_lossy();
                n.starts_with("sb-") || n.starts_with("lk-")
            })
        })
        .collect()
}

#[test]
fn a_thousand_cycles_with_callers_killed_at_random_moments_leave_nothing() {
    if !luminaguard_testkit::privileged("the leak test") {
        return;
    }
    let rt_dir = tempfile::tempdir().unwrap();
    let rt = rt_dir.path();
    let groups_before = sandbox_groups();
    let seed: u64 = rand::random();
    eprintln!("leak test seed {seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let started = Instant::now();
    let (mut killed, mut completed_creates) = (0u32, Vec::new());
    for i in 0..CYCLES {
        match i % 6 {
            // A disposable sandbox, killed at any moment of create or command.
            1 | 4 => {
                let mut c = spawn(rt, &["run", "--", "sleep", "100"]);
                std::thread::sleep(Duration::from_micros(rng.random_range(0..80_000)));
                c.kill().unwrap();
                c.wait().unwrap();
                killed += 1;
            }
            // A long-lived sandbox's create, killed at any moment; if it got as far as printing
            // the id, the sandbox is complete and stays.
            3 => {
                let name = format!("lk-{i}");
                let mut c = spawn(rt, &["sandbox", "create", "--name", &name]);
                std::thread::sleep(Duration::from_micros(rng.random_range(0..80_000)));
                c.kill().unwrap();
                let out = c.wait_with_output().unwrap();
                if String::from_utf8_lossy(&out.stdout).trim() == name {
                    completed_creates.push(name);
                }
                killed += 1;
            }
            // Whole lifecycles.
            5 => {
                let name = format!("lk-{i}");
                let out = spawn(rt, &["sandbox", "create", "--name", &name])
                    .wait_with_output()
                    .unwrap();
                assert!(out.status.success(), "cycle {i}: create {:?}", out.status);
                let rm = spawn(rt, &["sandbox", "rm", &name]).wait().unwrap();
                assert!(rm.success(), "cycle {i}: rm {rm:?}");
            }
            _ => {
                let status = spawn(rt, &["run", "--", "true"]).wait().unwrap();
                assert!(status.success(), "cycle {i}: {status:?}");
            }
        }
    }
    eprintln!(
        "{CYCLES} cycles ({killed} callers killed, {} killed creates completed) in {:?}",
        completed_creates.len(),
        started.elapsed()
    );

    // Once killed callers' sandboxes have wound down (by themselves: nothing has collected them
    // yet), only completed sandboxes have anything running.
    wait_for(
        "abandoned sandboxes to end by themselves",
        Duration::from_secs(30),
        || {
            metas(rt)
                .iter()
                .filter(|m| !completed(m))
                .all(|m| live_processes(m).is_empty())
        },
    );
    let running: Vec<String> = metas(rt)
        .iter()
        .filter(|m| !live_processes(m).is_empty())
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    // Exactly: a sandbox runs on only if its create told its caller the id (which it does
    // before handing the sandbox over) — never one whose caller was killed before that.
    for id in &running {
        assert!(
            completed_creates.contains(id),
            "{id} runs on, though its killed caller never printed its id"
        );
    }
    assert_eq!(
        sandbox_inits(rt).len(),
        running.len(),
        "sandbox inits running that no record accounts for"
    );

    // gc removes every leftover but the completed sandboxes, which stay usable.
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
    let mut left: Vec<String> = metas(rt)
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    left.sort();
    let mut expected = running.clone();
    expected.sort();
    assert_eq!(left, expected, "gc kept or removed the wrong sandboxes");
    for id in &running {
        let rm = spawn(rt, &["sandbox", "rm", id]).wait().unwrap();
        assert!(rm.success(), "rm {id}: {rm:?}");
    }

    // Nothing is left: no sandbox directory, process, mount or cgroup.
    let dirs: Vec<_> = std::fs::read_dir(rt.join("sandboxes"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    let contents: Vec<(std::ffi::OsString, Vec<std::ffi::OsString>)> = dirs
        .iter()
        .map(|d| {
            let files = std::fs::read_dir(rt.join("sandboxes").join(d))
                .map(|r| r.flatten().map(|e| e.file_name()).collect())
                .unwrap_or_default();
            (d.clone(), files)
        })
        .collect();
    assert!(dirs.is_empty(), "sandbox directories left: {contents:?}");
    // Inits, and the keepers and other helpers (forks of the CLI: their command line names the
    // runtime directory too).
    wait_for(
        "sandbox processes to be gone",
        Duration::from_secs(20),
        || luminaguard_testkit::live_processes_matching(&[rt.to_str().unwrap()]).is_empty(),
    );
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
