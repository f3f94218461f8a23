//! Privileges dropped for real on a child shell.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)] // test code

use std::os::unix::process::CommandExt;
use std::process::Command;

use luminaguard_process_sandbox::privileges::{Rlimits, drop_privileges};

#[test]
fn capabilities_are_gone_and_limits_hold() {
    let mut cmd = Command::new("/bin/sh");
    cmd.args(["-c", "grep -E '^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs):' /proc/self/status; echo core=$(ulimit -c) nofile=$(ulimit -n); \
                     head -c 5000 /dev/zero > big 2>/dev/null; echo size=$(wc -c < big)"]);
    let dir = tempfile::tempdir().unwrap();
    cmd.current_dir(dir.path());
    let limits = Rlimits {
        open_files: 64,
        file_size: 4096,
    };
    // SAFETY: drop_privileges makes prctl/capset/setrlimit calls only.
    unsafe {
        cmd.pre_exec(move || drop_privileges(limits).map_err(std::io::Error::other));
    }
    let out = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for line in [
        "CapInh:\t0000000000000000",
        "CapPrm:\t0000000000000000",
        "CapEff:\t0000000000000000",
        "CapBnd:\t0000000000000000",
        "CapAmb:\t0000000000000000",
        "NoNewPrivs:\t1",
        "core=0 nofile=64",
        "size=4096",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in:\n{text}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
