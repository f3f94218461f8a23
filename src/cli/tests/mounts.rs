//! `--mount HOST:AT` and the API's `mounts`: host paths shown read-only in a process sandbox,
//! real sandboxes made by the real binary. Root only; required in CI.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)] // test code

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use luminaguard_testkit::daemon::Daemon;
use luminaguard_testkit::http::{curl_as, reply};
use luminaguard_testkit::{privileged, text};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_luminaguard");

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

fn refused(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "ran: stdout: {}\nstderr: {}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stderr)
}

/// A world-readable directory with a file, and a world-readable file, in a fresh temporary
/// directory (itself searchable by all: a root-made sandbox runs as an unprivileged uid).
struct Host {
    dir: tempfile::TempDir,
}

impl Host {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let tree = dir.path().join("tree");
        std::fs::create_dir(&tree).unwrap();
        std::fs::set_permissions(&tree, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(tree.join("hello.txt"), "hello from the host\n").unwrap();
        std::fs::write(dir.path().join("one.txt"), "one file\n").unwrap();
        Self { dir }
    }
    fn tree(&self) -> PathBuf {
        self.dir.path().join("tree")
    }
    fn file(&self) -> PathBuf {
        self.dir.path().join("one.txt")
    }
    fn rt(&self) -> PathBuf {
        self.dir.path().join("rt")
    }
}

fn mount_arg(host: &Path, at: &str) -> String {
    format!("{}:{at}", host.display())
}

#[test]
fn a_mounted_directory_and_file_are_readable_and_not_writable() {
    if !privileged("the mounts test") {
        return;
    }
    let h = Host::new();
    let (tree, file) = (
        mount_arg(&h.tree(), "/opt/mcp/tree"),
        mount_arg(&h.file(), "/opt/one.txt"),
    );
    let script = "cat /opt/mcp/tree/hello.txt /opt/one.txt; \
                  if echo x > /opt/mcp/tree/new 2>/dev/null; then echo WROTE-NEW; fi; \
                  if echo x >> /opt/mcp/tree/hello.txt 2>/dev/null; then echo WROTE-OLD; fi; \
                  if echo x >> /opt/one.txt 2>/dev/null; then echo WROTE-FILE; fi; \
                  grep -E ' /opt/(mcp/tree|one.txt) ' /proc/self/mountinfo";
    let out = ok(&lg(
        &h.rt(),
        &[
            "run",
            "--backend",
            "process",
            "--mount",
            &tree,
            "--mount",
            &file,
            "--",
            "sh",
            "-c",
            script,
        ],
    ));
    assert!(out.starts_with("hello from the host\none file\n"), "{out}");
    assert!(!out.contains("WROTE"), "{out}");
    let lines: Vec<&str> = out.lines().filter(|l| l.contains(" /opt/")).collect();
    assert_eq!(lines.len(), 2, "{out}");
    for l in lines {
        let opts = l.split(' ').nth(5).unwrap();
        for o in ["ro", "nosuid", "nodev"] {
            assert!(opts.split(',').any(|x| x == o), "{o} missing: {l}");
        }
    }
    assert!(!h.tree().join("new").exists());
    assert_eq!(
        std::fs::read_to_string(h.tree().join("hello.txt")).unwrap(),
        "hello from the host\n"
    );
}

#[test]
fn a_submount_of_a_mounted_tree_is_read_only_too() {
    if !privileged("the mounts test") {
        return;
    }
    let h = Host::new();
    let sub = h.tree().join("sub");
    std::fs::create_dir(&sub).unwrap();
    nix::mount::mount(
        Some("tmpfs"),
        &sub,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("mode=0777,size=1M"),
    )
    .unwrap();
    let out = lg(
        &h.rt(),
        &[
            "run",
            "--backend",
            "process",
            "--mount",
            &mount_arg(&h.tree(), "/opt/tree"),
            "--",
            "sh",
            "-c",
            "if touch /opt/tree/sub/x 2>/dev/null; then echo WROTE; fi; echo done",
        ],
    );
    nix::mount::umount2(&sub, nix::mount::MntFlags::MNT_DETACH).unwrap();
    let out = ok(&out);
    assert_eq!(out, "done\n", "the submount was writable: {out}");
}

#[test]
fn a_long_lived_sandbox_records_and_lists_its_mounts() {
    if !privileged("the mounts test") {
        return;
    }
    let h = Host::new();
    // Through a link: the resolved path is what is recorded.
    let link = h.dir.path().join("link");
    std::os::unix::fs::symlink(h.tree(), &link).unwrap();
    ok(&lg(
        &h.rt(),
        &[
            "sandbox",
            "create",
            "--name",
            "mnt",
            "--backend",
            "process",
            "--mount",
            &mount_arg(&link, "/srv/tree"),
        ],
    ));
    let out = ok(&lg(
        &h.rt(),
        &["sandbox", "exec", "mnt", "--", "cat", "/srv/tree/hello.txt"],
    ));
    assert_eq!(out, "hello from the host\n");
    let ls: Value = serde_json::from_str(&ok(&lg(&h.rt(), &["sandbox", "ls", "--json"]))).unwrap();
    let entry = ls
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["id"] == "mnt")
        .unwrap();
    let real = std::fs::canonicalize(h.tree()).unwrap();
    assert_eq!(
        entry["mounts"],
        json!([{"host": real, "at": "/srv/tree"}]),
        "{ls}"
    );
    ok(&lg(&h.rt(), &["sandbox", "rm", "mnt"]));
}

#[test]
fn hostile_mounts_are_refused_before_anything_starts() {
    if !privileged("the mounts test") {
        return;
    }
    let h = Host::new();
    let tree = h.tree();
    let cases: &[(&[String], &str)] = &[
        (&[mount_arg(&tree, "/etc/x")], "/etc"),
        (&[mount_arg(&tree, "/proc/x")], "/proc"),
        (&[mount_arg(&tree, "/usr/local/x")], "/usr"),
        (&[mount_arg(&tree, "/workspace/x")], "/workspace"),
        (&[mount_arg(&tree, "../x")], "absolute"),
        (&[mount_arg(&tree, "opt/x")], "absolute"),
        (&[mount_arg(&tree, "/")], "root"),
        (
            &[mount_arg(&tree, "/opt/x"), mount_arg(&h.file(), "/opt/x")],
            "same place",
        ),
        (
            &[mount_arg(&tree, "/opt/x"), mount_arg(&h.file(), "/opt/x/y")],
            "one inside the other",
        ),
        (&[mount_arg(Path::new("/etc"), "/opt/etc")], "/etc/shadow"),
        (&[mount_arg(Path::new("/etc/shadow"), "/opt/s")], "masks"),
        (
            &[mount_arg(&h.dir.path().join("nope"), "/opt/x")],
            "cannot resolve",
        ),
        (&[mount_arg(&h.rt(), "/opt/rt")], "runtime directory"),
        (&["no-colon".to_owned()], "HOST:AT"),
    ];
    std::fs::create_dir_all(h.rt()).unwrap();
    for (mounts, says) in cases {
        let mut args = vec!["run", "--backend", "process"];
        for m in *mounts {
            args.extend(["--mount", m.as_str()]);
        }
        args.extend(["--", "sh", "-c", "echo RAN"]);
        let err = refused(&lg(&h.rt(), &args));
        assert!(err.contains(says), "{mounts:?}: {err}");
    }
    // A mount at /workspace is a read-only workspace: not beside a workspace.
    let ws = h.dir.path().join("ws");
    std::fs::create_dir_all(&ws).unwrap();
    let both = mount_arg(&tree, "/workspace");
    let err = refused(&lg(
        &h.rt(),
        &[
            "run",
            "--backend",
            "process",
            "--workspace",
            ws.to_str().unwrap(),
            "--mount",
            &both,
            "--",
            "true",
        ],
    ));
    assert!(err.contains("read-only workspace"), "{err}");
    let left: Vec<_> = std::fs::read_dir(h.rt().join("sandboxes"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "something was made: {left:?}");
}

#[test]
fn a_microvm_with_mounts_is_refused_before_it_starts() {
    if !privileged("the mounts test") {
        return;
    }
    let h = Host::new();
    for backend in ["qemu", "firecracker"] {
        let err = refused(&lg(
            &h.rt(),
            &[
                "run",
                "--backend",
                backend,
                "--mount",
                &mount_arg(&h.tree(), "/opt/x"),
                "--",
                "true",
            ],
        ));
        assert!(
            err.contains(
                "read-only mounts need the process backend; bake the files into the image for microVMs"
            ),
            "{backend}: {err}"
        );
    }
    let left: Vec<_> = std::fs::read_dir(h.rt().join("sandboxes"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "something was made: {left:?}");
}

#[test]
fn through_the_daemon_a_user_mounts_only_what_it_could_read() {
    if !privileged("the mounts test") {
        return;
    }
    let h = Host::new();
    // Other users reach the socket through this directory.
    std::fs::set_permissions(h.dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let d = Daemon::start(
        Path::new(BIN),
        &h.rt(),
        "log = \"error\"\n[defaults]\nbackend = \"process\"\n[daemon]\ngroup = \"nogroup\"\n",
    );
    let alice = Some((1000, 65534));
    let create = |mounts: Value, name: &str| {
        reply(curl_as(
            &d.socket,
            "POST",
            "/v1/sandboxes",
            Some(
                json!({"name": name, "mounts": mounts})
                    .to_string()
                    .as_bytes(),
            ),
            alice,
        ))
    };
    // Another user's private directory (0700, uid 1001), root's home.
    let bobs = h.dir.path().join("bobs");
    std::fs::create_dir(&bobs).unwrap();
    std::fs::write(bobs.join("secret"), "bob's\n").unwrap();
    std::os::unix::fs::chown(&bobs, Some(1001), Some(1001)).unwrap();
    std::fs::set_permissions(&bobs, std::fs::Permissions::from_mode(0o700)).unwrap();
    // (Root's home may be refused first for the LuminaGuard state in it: forbidden all the
    // same.)
    for (host, name) in [
        (bobs.clone(), "b1"),
        (bobs.join("secret"), "b2"),
        ("/root".into(), "b3"),
    ] {
        let r = create(json!([{"host": host, "at": "/opt/x"}]), name);
        assert_eq!(r.status, 403, "{}: {}", host.display(), r.body);
        assert!(
            r.body.contains("uid 1000 cannot read it") || host == Path::new("/root"),
            "{}: {}",
            host.display(),
            r.body
        );
    }
    // What she could read herself, she may.
    let r = create(json!([{"host": h.tree(), "at": "/opt/x"}]), "a1");
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()["mounts"][0]["at"], "/opt/x");
    let r = reply(curl_as(
        &d.socket,
        "POST",
        "/v1/sandboxes/a1/exec",
        Some(
            json!({"argv": ["cat", "/opt/x/hello.txt"]})
                .to_string()
                .as_bytes(),
        ),
        alice,
    ));
    assert!(r.body.contains("hello from the host"), "{}", r.body);
    // A relative path is not resolved against the daemon's directory.
    let r = create(json!([{"host": "tree", "at": "/opt/x"}]), "a2");
    assert_eq!(r.status, 422, "{}", r.body);
}
