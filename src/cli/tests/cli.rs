//! The `luminaguard` binary end to end: version, config layering, and `debug` against a real agent
//! started as `luminaguard guest-agent`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)] // test code

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_luminaguard");

fn lg(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

struct AgentProc(Child);

impl Drop for AgentProc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts an agent; `debug` waits for its socket by itself.
fn start_agent(sock: &Path) -> AgentProc {
    let child = Command::new(BIN)
        .args(["guest-agent", "--on-exit=exit", "--listen"])
        .arg(format!("unix:{}", sock.display()))
        .env("RUST_LOG", "warn")
        .spawn()
        .unwrap();
    AgentProc(child)
}

#[test]
fn version_prints_text_and_json() {
    let out = lg(&["version"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("luminaguard 0."));
    let v: serde_json::Value = serde_json::from_slice(&lg(&["version", "--json"]).stdout).unwrap();
    assert_eq!(
        v["protocol_min"],
        luminaguard_protocol::handshake::MIN_VERSION
    );
    assert_eq!(
        v["protocol_max"],
        luminaguard_protocol::handshake::MAX_VERSION
    );
}

#[test]
fn config_show_merges_file_env_and_flags() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.toml");
    std::fs::write(&file, "[defaults]\nmemory = \"2G\"\nvcpus = 3\n").unwrap();
    let out = Command::new(BIN)
        .args([
            "--config",
            file.to_str().unwrap(),
            "--runtime-dir",
            "/run/lg-test",
            "config",
            "show",
            "--json",
        ])
        .env("LUMINAGUARD_VCPUS", "4")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["runtime_dir"], "/run/lg-test");
    assert_eq!(v["defaults"]["memory"], "2G");
    assert_eq!(v["defaults"]["vcpus"], 4, "env beats file");
    assert_eq!(v["defaults"]["network"]["mode"], "none");

    std::fs::write(&file, "[defaults]\nmemory = \"lots\"\n").unwrap();
    let out = Command::new(BIN)
        .args(["--config", file.to_str().unwrap(), "config", "show"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("c.toml") && err.contains("lots"), "{err}");
}

#[test]
fn debug_drives_an_agent_and_propagates_exit_status() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("a.sock");
    let _agent = start_agent(&sock);
    let s = sock.to_str().unwrap();

    let out = lg(&[
        "debug",
        "-s",
        s,
        "exec",
        "--",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 42",
    ]);
    assert_eq!(out.status.code(), Some(42));
    assert_eq!(out.stdout, b"out\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains("err"));

    let out = lg(&["debug", "-s", s, "exec", "--", "sh", "-c", "kill -KILL $$"]);
    assert_eq!(out.status.code(), Some(128 + 9));

    let out = lg(&[
        "debug",
        "-s",
        s,
        "exec",
        "--exec-timeout",
        "300ms",
        "--",
        "sleep",
        "30",
    ]);
    assert_eq!(out.status.code(), Some(128 + 9));
    assert!(String::from_utf8_lossy(&out.stderr).contains("timed out"));

    let mut child = Command::new(BIN)
        .args(["debug", "-s", s, "exec", "-i", "--", "tr", "a-z", "A-Z"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"shout\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.stdout, b"SHOUT\n");

    let target = dir.path().join("w.txt");
    let mut child = Command::new(BIN)
        .args([
            "debug",
            "-s",
            s,
            "write",
            "--mode",
            "600",
            target.to_str().unwrap(),
        ])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"file body").unwrap();
    assert!(child.wait().unwrap().success());
    let out = lg(&["debug", "-s", s, "read", target.to_str().unwrap()]);
    assert_eq!(out.stdout, b"file body");
    let v: serde_json::Value = serde_json::from_slice(
        &lg(&["debug", "-s", s, "--json", "stat", target.to_str().unwrap()]).stdout,
    )
    .unwrap();
    assert_eq!(
        (v["size"].as_u64(), v["mode"].as_str()),
        (Some(9), Some("600"))
    );

    let out = lg(&["debug", "-s", s, "read", "/definitely/missing"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("NotFound"));

    assert!(lg(&["debug", "-s", s, "shutdown"]).status.success());
}

#[test]
fn debug_reports_a_missing_agent_clearly() {
    let out = lg(&[
        "debug",
        "-s",
        "/nonexistent/agent.sock",
        "--timeout",
        "200ms",
        "ping",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("connecting to /nonexistent/agent.sock"));
}

fn run_in(rt: &Path, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(BIN)
        .arg("--runtime-dir")
        .arg(rt)
        .arg("run")
        .args(args)
        .env("RUST_LOG", "warn")
        // What the sandbox allows is under test, not the policy (docs/approval.md): the
        // commands run as a person allowed them.
        .env("LUMINAGUARD_POLICY", "permissive")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn run_executes_in_a_disposable_sandbox_and_returns_the_status() {
    if !luminaguard_testkit::privileged("the process sandbox") {
        return;
    }
    let rt = tempfile::tempdir().unwrap();
    let out = run_in(
        rt.path(),
        &["--", "sh", "-c", "echo in $(hostname) as pid $$; exit 3"],
        b"",
    );
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("in luminaguard as pid "), "{text}");

    let out = run_in(rt.path(), &["--", "tr", "a-z", "A-Z"], b"streamed in\n");
    assert_eq!(out.stdout, b"STREAMED IN\n");

    // The workspace is the host directory; nothing else is writable; secrets are not readable.
    let ws = tempfile::tempdir().unwrap();
    let script = "echo made > /workspace/f; cat /etc/shadow 2>/dev/null | wc -c; touch /etc/x 2>/dev/null || echo ro";
    let out = run_in(
        rt.path(),
        &[
            "--workspace",
            ws.path().to_str().unwrap(),
            "--",
            "sh",
            "-c",
            script,
        ],
        b"",
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "0\nro\n");
    assert_eq!(
        std::fs::read_to_string(ws.path().join("f")).unwrap(),
        "made\n"
    );

    // Timeout and out-of-memory are 128+9, each said in words.
    let out = run_in(rt.path(), &["--timeout", "500ms", "--", "sleep", "30"], b"");
    assert_eq!(out.status.code(), Some(137));
    assert!(String::from_utf8_lossy(&out.stderr).contains("timed out"));
    let out = run_in(
        rt.path(),
        &[
            "--memory",
            "32M",
            "--",
            "sh",
            "-c",
            "x=$(head -c 200000000 /dev/zero | tr '\\0' a)",
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(137));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("out of memory"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Nothing is left behind: no sandbox directory, no cgroup.
    assert_eq!(
        std::fs::read_dir(rt.path().join("sandboxes"))
            .unwrap()
            .count(),
        0
    );
    let leftover = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!leftover.contains(rt.path().to_str().unwrap()));
}

#[test]
fn run_refuses_bad_settings_before_starting_anything() {
    let rt = tempfile::tempdir().unwrap();
    let out = run_in(rt.path(), &["--memory", "1M", "--", "true"], b"");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("memory"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!rt.path().join("sandboxes").exists());
}

#[test]
fn sandbox_init_refuses_to_run_outside_a_fresh_pid_namespace() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = serde_json::json!({
        "staging_root": dir.path(), "workspace": "scratch", "scratch_size": 1048576,
        "hostname": "x", "open_files": 64, "file_size": 1048576, "landlock_required": true, "seccomp_profile": "default"
    });
    let out = Command::new(BIN)
        .args(["sandbox-init", &cfg.to_string()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not 1"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Nothing was mounted on the host.
    assert!(
        !std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .contains(dir.path().to_str().unwrap())
    );
}

/// `--backend firecracker` where there is no Firecracker (and, on this host, no KVM that can run
/// a guest): a clear error naming what is missing, and nothing created.
#[test]
fn firecracker_without_its_binary_is_refused_clearly() {
    let rt = tempfile::tempdir().unwrap();
    let (ok, _, err) = lg_without_firecracker(
        rt.path(),
        &["run", "--backend", "firecracker", "--", "true"],
    );
    assert!(!ok);
    assert!(err.contains("LUMINAGUARD_FIRECRACKER"), "{err}");
    let left = std::fs::read_dir(rt.path().join("sandboxes")).map_or(0, |d| d.count());
    assert_eq!(left, 0, "nothing is created before the backend is found");
}

/// `luminaguard --runtime-dir RT ARGS…` with `LUMINAGUARD_FIRECRACKER` naming a binary that does
/// not exist: (success, stdout, stderr).
fn lg_without_firecracker(rt: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .arg("--runtime-dir")
        .arg(rt)
        .args(args)
        .env("RUST_LOG", "warn")
        .env("LUMINAGUARD_FIRECRACKER", rt.join("no-such-firecracker"))
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `template` and `--template`: what cannot work is refused clearly before anything is created
/// (the making and restoring themselves are tested against the fake Firecracker in
/// `luminaguard-firecracker`; this host cannot run Firecracker).
#[test]
fn templates_refuse_what_cannot_work_and_create_nothing() {
    let rt = tempfile::tempdir().unwrap();
    let lg_rt = |args: &[&str]| lg_without_firecracker(rt.path(), args);
    let (ok, out, _) = lg_rt(&["template", "ls", "--json"]);
    assert!(ok);
    assert_eq!(out.trim(), "[]");
    for (args, says) in [
        (
            &["run", "--template", "nope", "--", "true"][..],
            "no template named nope",
        ),
        (
            &["run", "--template", "t", "--backend", "qemu", "--", "true"][..],
            "cannot run with --backend qemu",
        ),
        (&["template", "create", "../x"][..], "template name"),
        (
            &["template", "create", "t", "--backend", "process"][..],
            "templates are Firecracker snapshots",
        ),
        (&["template", "create", "t"][..], "LUMINAGUARD_FIRECRACKER"),
        (&["template", "rm", "nope"][..], "no template named nope"),
    ] {
        let (ok, _, err) = lg_rt(args);
        assert!(!ok, "{args:?} succeeded");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    let left = std::fs::read_dir(rt.path().join("templates")).map_or(0, |d| d.count());
    assert_eq!(left, 0, "a refused template left a directory");
    // A template on disk (as `template create` seals one) is listed, and `rm` removes it; a
    // directory without a manifest is not listed.
    let t1 = rt.path().join("templates").join("t1");
    std::fs::create_dir_all(&t1).unwrap();
    std::fs::create_dir_all(rt.path().join("templates").join("half-made")).unwrap();
    for f in ["vm.snap", "vm.mem"] {
        std::fs::write(t1.join(f), f).unwrap();
    }
    let manifest = serde_json::json!({
        "format": 1, "image": null, "vcpus": 1, "memory_mib": 256, "scratch_mib": 64,
        "network": "none", "jailed": false, "firecracker_version": "1.16.1",
        "created_unix_ms": 1
    });
    std::fs::write(t1.join("template.json"), manifest.to_string()).unwrap();
    let (ok, out, _) = lg_rt(&["template", "ls", "--json"]);
    assert!(ok);
    let listed: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed[0]["name"], "t1");
    assert_eq!(listed[0]["manifest"], manifest);
    let (ok, _, err) = lg_rt(&["template", "rm", "t1", "half-made"]);
    assert!(ok, "{err}");
    assert!(!t1.exists());
    let left = std::fs::read_dir(rt.path().join("sandboxes")).map_or(0, |d| d.count());
    assert_eq!(left, 0, "a refused run left a sandbox");
}

/// `doctor` says which seccomp filter a Firecracker started by `run` gets: LuminaGuard's custom
/// policy when the release's `seccompiler-bin` is there (what `run` then compiles and passes),
/// Firecracker's built-in filters otherwise; and what `auto` picks with Firecracker found.
#[test]
fn doctor_names_the_firecracker_seccomp_filter_run_would_use() {
    use std::os::unix::fs::PermissionsExt;
    let rt = tempfile::tempdir().unwrap();
    let bin = tempfile::tempdir().unwrap();
    let script = |name: &str, version: &str| {
        let p = bin.path().join(name);
        std::fs::write(&p, format!("#!/bin/sh\necho '{version}'\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    };
    let fc = script("firecracker", "Firecracker v1.16.1");
    let filter_of = |seccompiler: Option<&Path>| {
        let mut cmd = Command::new(BIN);
        cmd.arg("--runtime-dir")
            .arg(rt.path())
            .args(["doctor", "--json"])
            .env("LUMINAGUARD_FIRECRACKER", &fc)
            .env("PATH", "/usr/bin:/bin");
        match seccompiler {
            Some(s) => cmd.env("LUMINAGUARD_SECCOMPILER", s),
            None => cmd.env_remove("LUMINAGUARD_SECCOMPILER"),
        };
        let out = cmd.output().unwrap();
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        report["firecracker"]["seccomp_filter"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let none = filter_of(None);
    // `auto` follows the design's order: Firecracker with KVM, else QEMU with KVM, else the
    // process sandbox — here, where KVM cannot run guests, the process sandbox, saying why.
    let out = Command::new(BIN)
        .arg("--runtime-dir")
        .arg(rt.path())
        .args(["doctor", "--json"])
        .env("LUMINAGUARD_FIRECRACKER", &fc)
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let (backend, why) = (
        report["auto"]["backend"].as_str().unwrap(),
        report["auto"]["why"].as_str().unwrap(),
    );
    if report["firecracker"]["kvm_usable"] == false {
        assert_eq!(backend, "process", "{why}");
        assert!(why.contains("KVM cannot run guests"), "{why}");
    } else if report["qemu"]["image"]["vmlinux"] == true {
        assert_eq!(backend, "firecracker", "{why}");
    }
    assert!(none.starts_with("Firecracker's built-in"), "{none}");
    let compiler = script("seccompiler-bin", "seccompiler-bin v1.16.1");
    let custom = filter_of(Some(&compiler));
    assert!(
        custom.starts_with("LuminaGuard's custom policy") && custom.contains("seccompiler-bin"),
        "{custom}"
    );
}

/// What a user sees of a run: only the command's output on stderr (LuminaGuard's own logs are
/// quiet unless asked for with -v), shell exit statuses for a command that cannot start, and a
/// closed stdout ending the program quietly (`… | head -1`), the sandbox torn down.
#[test]
fn a_run_behaves_like_a_command_in_a_shell() {
    if !luminaguard_testkit::privileged("the process sandbox") {
        return;
    }
    let rt = tempfile::tempdir().unwrap();
    let quiet = |args: &[&str]| {
        Command::new(BIN)
            .arg("--runtime-dir")
            .arg(rt.path())
            .args(args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let out = quiet(&["run", "--", "sh", "-c", "echo to-stderr >&2"]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stderr), "to-stderr\n");
    let out = quiet(&["-v", "run", "--", "true"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("auto:"),
        "-v says which backend and why: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (argv, code, says) in [
        ("/no/such/binary", 127, "/no/such/binary: command not found"),
        ("/etc/passwd", 126, "/etc/passwd: cannot run it"),
    ] {
        let out = quiet(&["run", "--", argv]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{argv}: {stderr}");
        assert!(stderr.contains(says), "{argv}: {stderr}");
        assert!(!stderr.contains("agent error"), "{argv}: {stderr}");
    }
    // stdout closed before anything is written: a pipeline's reader that left at once.
    for args in [
        &["run", "--", "seq", "1000000"][..],
        &["sandbox", "ls"][..],
        &["version", "--json"][..],
    ] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = Command::new(BIN)
            .arg("--runtime-dir")
            .arg(rt.path())
            .args(args)
            .stdin(Stdio::null())
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(141), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(stderr.is_empty(), "{args:?} was not quiet: {stderr}");
    }
    assert_eq!(
        std::fs::read_dir(rt.path().join("sandboxes"))
            .unwrap()
            .count(),
        0,
        "a sandbox was left behind"
    );
}
