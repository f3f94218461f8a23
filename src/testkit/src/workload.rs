//! Real dev workloads — shells, Python (threads, subprocess, sqlite3, multiprocessing), git, make
//! and cc, node (fs, child_process, worker_threads, timers), perl, tar and gzip — as one script
//! (`workload.sh`), run by the seccomp tests under each profile and by the CLI tests in real
//! sandboxes: what a sandbox must keep able to do.

/// The script itself.
pub const SCRIPT: &str = include_str!("workload.sh");
/// Where it is, for running it directly.
pub const SCRIPT_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/workload.sh");

/// The lines the script prints when every program worked, in order (its last line, the network
/// probe's, depends on whether the sandbox has a network).
pub const LINES: &[&str] = &[
    "sh: 271 ab /",
    "python: 4 child tmp 3 285",
    "git: first",
    "cc: 20",
    "node: node-fs node-fs child 42",
    "perl: 1,4,9",
    "tar: hello hello",
];

/// The programs the script runs.
pub const PROGRAMS: &[&str] = &[
    "sh", "timeout", "mktemp", "seq", "grep", "tr", "cat", "python3", "git", "make", "cc", "node",
    "perl", "tar", "gzip", "gunzip",
];

/// `prog` found on `PATH`.
pub fn which(prog: &str) -> Option<std::path::PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(prog))
        .find(|p| p.is_file())
}

/// Whether every workload program is here. In CI a missing one is a failure (scripts/setup
/// installs them); elsewhere the test is skipped with a message.
#[allow(clippy::panic)] // failing the calling test is the point
pub fn programs_present() -> bool {
    let missing: Vec<&str> = PROGRAMS
        .iter()
        .copied()
        .filter(|p| which(p).is_none())
        .collect();
    if missing.is_empty() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("the workload test needs {missing:?} (scripts/setup installs them)");
    }
    eprintln!("skipped: the workload test needs {missing:?}");
    false
}

/// Checks the script's output: every line of [`LINES`] and then `net`, in order.
#[allow(clippy::panic)] // failing the calling test is the point
pub fn check_output(out: &str, net: &str, context: &str) {
    let mut lines = out.lines();
    for want in LINES.iter().copied().chain([net]) {
        if !lines.any(|l| l == want) {
            panic!("{want:?} missing (or out of order) {context}\noutput:\n{out}");
        }
    }
}
