//! Rootless process sandboxes: `luminaguard run` as an unprivileged user (nobody), in a user
//! namespace that maps only that user. The test itself needs root, to become nobody.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)] // test code

use luminaguard_testkit::text;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_luminaguard");
const NOBODY: u32 = 65534;

fn as_nobody(rt: &Path, args: &[&str]) -> Output {
    Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(BIN)
        .arg("--runtime-dir")
        .arg(rt)
        .args(args)
        .env("RUST_LOG", "warn")
        .env("HOME", "/nonexistent")
        // What the sandbox allows is under test, not the policy (docs/approval.md).
        .env("LUMINAGUARD_POLICY", "permissive")
        .env_remove("XDG_RUNTIME_DIR")
        .output()
        .unwrap()
}

/// A directory nobody owns.
fn nobody_dir() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::os::unix::fs::chown(d.path(), Some(NOBODY), Some(NOBODY)).unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    d
}

#[test]
fn rootless_sandbox_is_isolated_and_limits_are_never_silently_dropped() {
    if !luminaguard_testkit::privileged("becoming another user") {
        return;
    }
    let rt = nobody_dir();
    let rt = rt.path().join("rt");

    // No cgroup is delegated to nobody here: the sandbox refuses to start without its limits,
    // says why and what the explicit alternative is, and leaves nothing behind.
    let out = as_nobody(&rt, &["run", "--", "true"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("cgroup") && err.contains("--no-cgroup"),
        "{err}"
    );
    assert_eq!(std::fs::read_dir(rt.join("sandboxes")).unwrap().count(), 0);

    // Asked for explicitly, it runs without them — saying so — and stays isolated.
    let ws = nobody_dir();
    let ws_s = ws.path().to_str().unwrap();
    let script = "cat /proc/self/uid_map; grep -E '^(CapEff|CapBnd|NoNewPrivs)' /proc/self/status; \
                  touch /usr/lg-rootless 2>/dev/null && echo WROTE-USR; \
                  cat /etc/shadow 2>/dev/null && echo READ-SHADOW; \
                  unshare -U true 2>/dev/null && echo UNSHARED; \
                  echo from-sandbox > /workspace/out; ps -e -o pid= | wc -l";
    let out = as_nobody(
        &rt,
        &[
            "run",
            "--no-cgroup",
            "--workspace",
            ws_s,
            "--",
            "sh",
            "-c",
            script,
        ],
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("WARNING: --no-cgroup"));
    let lines: Vec<&str> = stdout.lines().map(str::trim).collect();
    // uid 0 inside is nobody outside, and only nobody is mapped.
    let map: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(map, ["0", "65534", "1"], "{stdout}");
    assert!(stdout.contains("CapEff:\t0000000000000000"), "{stdout}");
    assert!(stdout.contains("CapBnd:\t0000000000000000"), "{stdout}");
    assert!(stdout.contains("NoNewPrivs:\t1"), "{stdout}");
    for escaped in ["WROTE-USR", "READ-SHADOW", "UNSHARED"] {
        assert!(!stdout.contains(escaped), "{escaped}: {stdout}");
    }
    assert!(!Path::new("/usr/lg-rootless").exists());
    // Only the sandbox's own processes are visible (sh, ps, wc: a handful, not the host's).
    let procs: usize = lines.last().unwrap().parse().unwrap();
    assert!(procs < 10, "{procs} processes visible");
    // What the sandbox wrote to the workspace belongs to nobody on the host.
    let out_file = ws.path().join("out");
    assert_eq!(
        std::fs::read_to_string(&out_file).unwrap(),
        "from-sandbox\n"
    );
    assert_eq!(std::fs::metadata(&out_file).unwrap().uid(), NOBODY);
    assert_eq!(std::fs::read_dir(rt.join("sandboxes")).unwrap().count(), 0);
}
