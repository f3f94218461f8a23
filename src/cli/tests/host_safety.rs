//! Host-side file handling against a hostile sandbox: what an attacker inside a sandbox (or
//! another user on the host) would try against `sandbox cp`, the runtime directory and
//! `--workspace`. Each test drives the real `luminaguard` binary. Root (it runs sandboxes and
//! becomes other users); required in CI.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)] // test code

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use luminaguard_testkit::text;
use nix::sys::signal::Signal;

const BIN: &str = env!("CARGO_BIN_EXE_luminaguard");
const NOBODY: u32 = 65534;

fn command(rt: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.arg("--runtime-dir")
        .arg(rt)
        .args(args)
        .env("RUST_LOG", "warn")
        .env_remove("LUMINAGUARD_COPY_MAX_SIZE")
        // The hostile tenant's commands run as a person allowed them: the host side of a copy
        // is under test, not the policy (docs/approval.md).
        .env("LUMINAGUARD_POLICY", "permissive")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

fn lg(rt: &Path, args: &[&str]) -> Output {
    command(rt, args).output().unwrap()
}

/// Like [`lg`], but a command still running after `limit` is killed and reported as hung.
fn lg_within(rt: &Path, args: &[&str], limit: Duration) -> Output {
    let child = command(rt, args).spawn().unwrap();
    wait_within(child, limit, &format!("{args:?}"))
}

fn wait_within(mut child: Child, limit: Duration, what: &str) -> Output {
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{what} hung for {limit:?} (killed)\nstderr: {}",
                text(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().unwrap()
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

/// The command failed; its stderr, for checking what it said.
fn refused(out: &Output, what: &str) -> String {
    assert!(
        !out.status.success(),
        "{what} was not refused\nstdout: {}\nstderr: {}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stderr)
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A long-lived process sandbox with host directory `ws` as its workspace; removed on drop.
struct Sandbox {
    rt: tempfile::TempDir,
    id: String,
}

impl Sandbox {
    fn new(tag: &str, ws: &Path) -> Self {
        let rt = tempfile::tempdir().unwrap();
        let id = format!("hs-{tag}-{}", std::process::id());
        ok(&lg(
            rt.path(),
            &[
                "sandbox",
                "create",
                "--name",
                &id,
                "--memory",
                "256M",
                "--workspace",
                s(ws),
            ],
        ));
        Self { rt, id }
    }

    fn rt(&self) -> &Path {
        self.rt.path()
    }

    /// Runs `script` with `sh -c` inside the sandbox (cwd /workspace); must succeed.
    fn sh(&self, script: &str) -> String {
        ok(&lg(
            self.rt(),
            &["sandbox", "exec", &self.id, "--", "sh", "-c", script],
        ))
    }

    /// `ID:path`, a location inside the sandbox for `cp`.
    fn at(&self, path: &str) -> String {
        format!("{}:{path}", self.id)
    }

    fn cp(&self, args: &[&str]) -> Output {
        let mut all = vec!["sandbox", "cp"];
        all.extend_from_slice(args);
        lg_within(self.rt(), &all, Duration::from_secs(60))
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = lg(self.rt.path(), &["sandbox", "rm", &self.id]);
    }
}

/// Host files an attacker would like to overwrite or read.
struct Victims {
    dir: tempfile::TempDir,
}

const PRECIOUS: &[u8] = b"precious host data\n";

impl Victims {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("victim"), PRECIOUS).unwrap();
        std::fs::create_dir(dir.path().join("vdir")).unwrap();
        Self { dir }
    }
    fn file(&self) -> PathBuf {
        self.dir.path().join("victim")
    }
    fn vdir(&self) -> PathBuf {
        self.dir.path().join("vdir")
    }
    /// Nothing was written to, created in or removed from the victims.
    fn untouched(&self) {
        assert_eq!(
            std::fs::read(self.file()).unwrap(),
            PRECIOUS,
            "victim file changed"
        );
        assert_eq!(entries(self.dir.path()), ["vdir", "victim"]);
        assert!(
            entries(&self.vdir()).is_empty(),
            "files appeared in the victim directory: {:?}",
            entries(&self.vdir())
        );
    }
}

/// The highest pid the kernel hands out.
fn pid_max() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn cp_out_never_writes_through_links_the_sandbox_planted() {
    if !luminaguard_testkit::privileged("process sandboxes") {
        return;
    }
    let victims = Victims::new();
    let ws = tempfile::tempdir().unwrap();
    let w = ws.path();
    let sb = Sandbox::new("out", w);
    // The sandbox writes its "result" and plants links, in its workspace, to host paths.
    sb.sh(&format!(
        "printf payload > file && ln -s {victim} out && ln -s {vdir} sub \
         && mkfifo fifo && ln -s /etc/passwd plink",
        victim = victims.file().display(),
        vdir = victims.vdir().display(),
    ));
    // The sandbox's seccomp policy refuses setuid/setgid bits; a file may still carry them (a
    // microVM guest's, one placed in the workspace from the host): the copy must drop them.
    std::fs::set_permissions(w.join("file"), std::fs::Permissions::from_mode(0o6755)).unwrap();
    let payload = b"payload".as_slice();

    // The destination itself is a link: never written through (refused, naming the link, or the
    // link replaced by the file).
    let out = sb.cp(&[&sb.at("/workspace/file"), s(&w.join("out"))]);
    if out.status.success() {
        let m = std::fs::symlink_metadata(w.join("out")).unwrap();
        assert!(m.is_file(), "the destination is still a link");
        assert_eq!(std::fs::read(w.join("out")).unwrap(), payload);
    } else {
        let err = text(&out.stderr);
        assert!(
            err.contains("symbolic link") && err.contains("out"),
            "{err}"
        );
    }
    victims.untouched();

    // A directory on the way is a link: refused, naming it; nothing lands in its target.
    let err = refused(
        &sb.cp(&[&sb.at("/workspace/file"), s(&w.join("sub/out"))]),
        "a copy through a linked directory",
    );
    assert!(
        err.contains("symbolic link") && err.contains(s(&w.join("sub"))),
        "{err}"
    );
    victims.untouched();

    // Every temporary name the old `cp` could pick (`.NAME.lg-cp-<pid>`) is a trap. The sandbox
    // could plant them itself; the test does it from the host, in the sandbox's workspace, for
    // speed.
    let max = pid_max().min(1 << 16);
    for pid in 1..=max {
        std::os::unix::fs::symlink(victims.file(), w.join(format!(".trap.lg-cp-{pid}"))).unwrap();
    }
    ok(&sb.cp(&[&sb.at("/workspace/file"), s(&w.join("trap"))]));
    let m = std::fs::symlink_metadata(w.join("trap")).unwrap();
    assert!(m.is_file(), "trap is not a regular file");
    assert_eq!(std::fs::read(w.join("trap")).unwrap(), payload);
    // Never setuid or setgid, at most the sandbox's bits, owned by the caller.
    assert_eq!(m.mode() & 0o7000, 0, "mode {:o}", m.mode());
    assert_eq!(m.mode() & 0o777 & !0o755, 0, "mode {:o}", m.mode());
    assert_eq!(m.uid(), nix::unistd::geteuid().as_raw());
    victims.untouched();
    for pid in 1..=max {
        std::fs::remove_file(w.join(format!(".trap.lg-cp-{pid}"))).unwrap();
    }

    // An existing directory as the destination: the file goes into it, under its own name.
    let into = tempfile::tempdir().unwrap();
    ok(&sb.cp(&[&sb.at("/workspace/file"), s(into.path())]));
    assert_eq!(std::fs::read(into.path().join("file")).unwrap(), payload);
    // Only regular files, and promptly: a fifo (a read would wait for a writer forever), a
    // device (/dev/zero never ends), a directory.
    for src in ["/workspace/fifo", "/dev/zero", "/workspace"] {
        let err = refused(
            &sb.cp(&[&sb.at(src), s(&into.path().join("x"))]),
            &format!("copying {src} out"),
        );
        assert!(err.contains("not a regular file"), "{src}: {err}");
    }
    assert_eq!(entries(into.path()), ["file"]);
    victims.untouched();
}

#[test]
fn cp_in_never_reads_through_links_or_from_special_files() {
    if !luminaguard_testkit::privileged("process sandboxes") {
        return;
    }
    let victims = Victims::new();
    let ws = tempfile::tempdir().unwrap();
    let w = ws.path();
    let sb = Sandbox::new("in", w);
    sb.sh(&format!(
        "ln -s {victim} secret && ln -s {dir} ldir && mkfifo fifo",
        victim = victims.file().display(),
        dir = victims.dir.path().display(),
    ));
    // A link to a host secret, and a linked directory on the way: refused, naming the link;
    // nothing arrives in the sandbox.
    for (src, link) in [
        (w.join("secret"), w.join("secret")),
        (w.join("ldir/victim"), w.join("ldir")),
    ] {
        let err = refused(
            &sb.cp(&[s(&src), &sb.at("/workspace/x")]),
            &format!("copying {} in", src.display()),
        );
        assert!(
            err.contains("symbolic link") && err.contains(s(&link)),
            "{err}"
        );
        assert!(!w.join("x").exists(), "the secret was copied in");
    }
    // A fifo is refused at once (opening it to read would wait for a writer forever); so is a
    // directory and a device.
    for src in [w.join("fifo"), w.to_owned(), PathBuf::from("/dev/zero")] {
        let out = lg_within(
            sb.rt(),
            &["sandbox", "cp", s(&src), &sb.at("/workspace/y")],
            Duration::from_secs(10),
        );
        let err = refused(&out, &format!("copying {} in", src.display()));
        assert!(err.contains("not a regular file"), "{err}");
    }
    assert!(!w.join("y").exists());

    // An ordinary file still goes in; into an existing directory under its own name; setuid and
    // setgid bits are dropped.
    let host = tempfile::tempdir().unwrap();
    let src = host.path().join("in.txt");
    std::fs::write(&src, "hello\n").unwrap();
    std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o6750)).unwrap();
    ok(&sb.cp(&[s(&src), &sb.at("/workspace")]));
    assert_eq!(
        std::fs::read_to_string(w.join("in.txt")).unwrap(),
        "hello\n"
    );
    assert_eq!(
        std::fs::metadata(w.join("in.txt")).unwrap().mode() & 0o7777,
        0o750
    );
    victims.untouched();
}

/// Files and temporaries in `dir` whose name contains `name`.
fn traces(dir: &Path, name: &str) -> Vec<String> {
    entries(dir)
        .into_iter()
        .filter(|e| e.contains(name) || e.contains("lg-cp"))
        .collect()
}

#[test]
fn cp_stops_at_the_size_limit_and_leaves_nothing_behind() {
    if !luminaguard_testkit::privileged("process sandboxes") {
        return;
    }
    let ws = tempfile::tempdir().unwrap();
    let w = ws.path();
    let sb = Sandbox::new("cap", w);
    sb.sh("head -c 64M /dev/zero > big");
    let dst = tempfile::tempdir().unwrap();
    let d = dst.path();
    let big = sb.at("/workspace/big");

    // Out: over the flag's limit, refused, saying which limit and how to raise it.
    let err = refused(
        &sb.cp(&["--max-size", "1M", &big, s(&d.join("big"))]),
        "a 64M copy out under --max-size 1M",
    );
    assert!(
        err.contains("1M") && err.contains("--max-size") && err.contains("max_size"),
        "{err}"
    );
    assert!(entries(d).is_empty(), "left behind: {:?}", entries(d));

    // The configuration sets the default: environment, then a file; the flag beats both.
    let out = command(sb.rt(), &["sandbox", "cp", &big, s(&d.join("big"))])
        .env("LUMINAGUARD_COPY_MAX_SIZE", "1M")
        .output()
        .unwrap();
    assert!(refused(&out, "LUMINAGUARD_COPY_MAX_SIZE=1M").contains("1M"));
    let conf = tempfile::tempdir().unwrap();
    let file = conf.path().join("config.toml");
    std::fs::write(&file, "[copy]\nmax_size = \"2M\"\n").unwrap();
    let out = lg(
        sb.rt(),
        &[
            "--config",
            s(&file),
            "sandbox",
            "cp",
            &big,
            s(&d.join("big")),
        ],
    );
    assert!(refused(&out, "copy.max_size = 2M").contains("2M"));
    assert!(entries(d).is_empty(), "left behind: {:?}", entries(d));
    let out = command(
        sb.rt(),
        &[
            "sandbox",
            "cp",
            "--max-size",
            "64M",
            &big,
            s(&d.join("big")),
        ],
    )
    .env("LUMINAGUARD_COPY_MAX_SIZE", "1M")
    .output()
    .unwrap();
    ok(&out);
    assert_eq!(std::fs::metadata(d.join("big")).unwrap().len(), 64 << 20);
    std::fs::remove_file(d.join("big")).unwrap();

    // In: a host file over the limit never arrives, and no temporary stays in the sandbox.
    let host = tempfile::tempdir().unwrap();
    let src = host.path().join("big-in");
    std::fs::File::create(&src)
        .unwrap()
        .set_len(8 << 20)
        .unwrap();
    let err = refused(
        &sb.cp(&["--max-size", "1M", s(&src), &sb.at("/workspace/big-in")]),
        "an 8M copy in under --max-size 1M",
    );
    assert!(err.contains("1M") && err.contains("--max-size"), "{err}");
    gone_within(w, "big-in", Duration::from_secs(10));
}

/// Waits (bounded) until `dir` holds nothing named like `name` (the agent removes its temporary
/// once the connection is gone).
fn gone_within(dir: &Path, name: &str, limit: Duration) {
    let start = Instant::now();
    while !traces(dir, name).is_empty() {
        assert!(
            start.elapsed() < limit,
            "left behind in {}: {:?}",
            dir.display(),
            traces(dir, name)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether process `pid` has a regular file with data open under `dir` (the copy's temporary,
/// named or not).
fn writing_under(pid: u32, dir: &Path) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path()).is_ok_and(|t| t.starts_with(dir) && t != dir)
            && std::fs::metadata(fd.path()).is_ok_and(|m| m.is_file() && m.len() > 0)
    })
}

/// A file in `dir` whose name contains `name` holds data (the agent's temporary).
fn temp_with_data(dir: &Path, name: &str) -> bool {
    std::fs::read_dir(dir).unwrap().flatten().any(|e| {
        e.file_name().to_string_lossy().contains(name)
            && e.metadata().is_ok_and(|m| m.is_file() && m.len() > 0)
    })
}

/// Starts `cp`, waits until `started` says the copy is under way, sends `signal`; returns the
/// output.
fn interrupt(rt: &Path, args: &[&str], started: impl Fn(u32) -> bool, signal: Signal) -> Output {
    let child = command(rt, args).spawn().unwrap();
    let pid = child.id();
    let start = Instant::now();
    while !started(pid) {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the copy never started"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal).unwrap();
    wait_within(child, Duration::from_secs(30), "an interrupted copy")
}

#[test]
fn an_interrupted_cp_leaves_nothing_behind() {
    if !luminaguard_testkit::privileged("process sandboxes") {
        return;
    }
    let ws = tempfile::tempdir().unwrap();
    let w = ws.path();
    // A sparse 16 GiB file: quick to make, seconds to copy (each copy is cut off early).
    std::fs::File::create(w.join("huge"))
        .unwrap()
        .set_len(16 << 30)
        .unwrap();
    let sb = Sandbox::new("sig", w);
    let dst = tempfile::tempdir().unwrap();
    let d = dst.path();
    for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        let out = interrupt(
            sb.rt(),
            &[
                "sandbox",
                "cp",
                "--max-size",
                "32G",
                &sb.at("/workspace/huge"),
                s(&d.join("huge")),
            ],
            |pid| writing_under(pid, d),
            signal,
        );
        let err = refused(&out, &format!("a copy out interrupted by {signal}"));
        assert!(err.contains("interrupted"), "{signal}: {err}");
        assert_eq!(
            out.status.code(),
            Some(128 + signal as i32),
            "{signal}: {err}"
        );
        assert!(
            entries(d).is_empty(),
            "{signal}: left behind: {:?}",
            entries(d)
        );
    }
    // In: the sandbox's agent writes a temporary beside the target; cut off, it removes it.
    let host = tempfile::tempdir().unwrap();
    let src = host.path().join("huge-in");
    std::fs::File::create(&src)
        .unwrap()
        .set_len(16 << 30)
        .unwrap();
    for signal in [Signal::SIGINT, Signal::SIGTERM] {
        let out = interrupt(
            sb.rt(),
            &[
                "sandbox",
                "cp",
                "--max-size",
                "32G",
                s(&src),
                &sb.at("/workspace/huge-in"),
            ],
            |_| temp_with_data(w, "huge-in"),
            signal,
        );
        refused(&out, &format!("a copy in interrupted by {signal}"));
        gone_within(w, "huge-in", Duration::from_secs(10));
    }
}

/// `sandbox ls` and `run` against runtime directory `rt`: both must refuse it, and leave it as
/// it was (`before`).
fn runtime_refused(rt: &Path, look_in: &Path, why: &str) {
    let before = entries(look_in);
    let out = lg(rt, &["run", "--", "true"]);
    let err = refused(&out, &format!("runtime directory {} ({why})", rt.display()));
    assert!(
        err.contains(why) && err.contains("--runtime-dir"),
        "{why}: {err}"
    );
    let out = lg(rt, &["sandbox", "ls"]);
    let err = refused(&out, &format!("listing {} ({why})", rt.display()));
    assert!(err.contains(why), "{why}: {err}");
    assert_eq!(entries(look_in), before, "{why}: something was written");
}

#[test]
fn runtime_directories_others_control_are_refused() {
    if !luminaguard_testkit::privileged("becoming another user") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();

    // Pre-created by another user.
    let theirs = t.join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    std::os::unix::fs::chown(&theirs, Some(NOBODY), Some(NOBODY)).unwrap();
    runtime_refused(&theirs, &theirs, "owned by uid 65534");

    // Ours, but anyone may write to it.
    let open = t.join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    runtime_refused(&open, &open, "writable");

    // A link to a directory (of ours, even).
    let target = t.join("target");
    std::fs::create_dir(&target).unwrap();
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o700)).unwrap();
    let link = t.join("link");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    runtime_refused(&link, &target, "symbolic link");
    assert_eq!(
        std::fs::metadata(&target).unwrap().mode() & 0o7777,
        0o700,
        "the link's target was changed"
    );

    // A good root whose `sandboxes/` another user made.
    let root = t.join("root");
    std::fs::create_dir(&root).unwrap();
    std::fs::create_dir(root.join("sandboxes")).unwrap();
    std::os::unix::fs::chown(root.join("sandboxes"), Some(NOBODY), Some(NOBODY)).unwrap();
    runtime_refused(&root, &root.join("sandboxes"), "owned by uid 65534");

    // The default root of an unprivileged user, /tmp/luminaguard-<uid>, is predictable: here
    // root made nobody's before nobody ran anything.
    let default = PathBuf::from(format!("/tmp/luminaguard-{NOBODY}"));
    match std::fs::create_dir(&default) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let m = std::fs::symlink_metadata(&default).unwrap();
            assert!(
                m.is_dir() && m.uid() == 0 && entries(&default).is_empty(),
                "{} exists and is not this test's leftover: remove it to run this test",
                default.display()
            );
        }
        Err(e) => panic!("{}: {e}", default.display()),
    }
    struct RemoveOnDrop(PathBuf);
    impl Drop for RemoveOnDrop {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir(&self.0);
        }
    }
    let _cleanup = RemoveOnDrop(default.clone());
    std::fs::set_permissions(&default, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(BIN)
        .args(["run", "--no-cgroup", "--", "true"])
        .env("RUST_LOG", "warn")
        .env("HOME", "/nonexistent")
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("LUMINAGUARD_RUNTIME_DIR")
        .output()
        .unwrap();
    let err = refused(&out, "a default runtime directory root made for nobody");
    assert!(
        err.contains(s(&default))
            && err.contains("owned by uid 0")
            && err.contains("remove it")
            && err.contains("XDG_RUNTIME_DIR"),
        "{err}"
    );
    assert!(
        entries(&default).is_empty(),
        "nobody wrote into root's directory"
    );
}

#[test]
fn dangerous_workspaces_are_refused_before_anything_starts() {
    if !luminaguard_testkit::privileged("process sandboxes") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let rt = t.join("rt");
    std::fs::create_dir(&rt).unwrap();
    std::fs::set_permissions(&rt, std::fs::Permissions::from_mode(0o700)).unwrap();
    let store = tempfile::tempdir().unwrap();
    let images = store.path().join("luminaguard/images");
    std::fs::create_dir_all(&images).unwrap();
    let to_etc = t.join("to-etc");
    std::os::unix::fs::symlink("/etc", &to_etc).unwrap();

    let cases: [(&Path, &str); 11] = [
        (Path::new("/"), "the whole host"),
        (Path::new("/etc"), "system directory /etc"),
        (Path::new("/usr/lib"), "system directory /usr"),
        (Path::new("/var"), "contains system directory /var/lib"),
        (Path::new("/proc/self"), "system directory /proc"),
        (Path::new("/tmp"), "shared"),
        (Path::new("/home"), "shared"),
        (&rt, "runtime directory"),
        (t, "contains the runtime directory"),
        (&to_etc, "system directory /etc"),
        (&images, "image store"),
    ];
    for (ws, rule) in cases {
        let out = command(&rt, &["run", "--workspace", s(ws), "--", "true"])
            .env("LUMINAGUARD_IMAGE_STORE", &images)
            .output()
            .unwrap();
        let err = refused(&out, &format!("--workspace {}", ws.display()));
        assert!(err.contains(rule), "{}: {err}", ws.display());
        assert!(
            entries(&rt).iter().all(|e| e != "sandboxes")
                || entries(&rt.join("sandboxes")).is_empty(),
            "{}: a sandbox was started",
            ws.display()
        );
    }
    // The link is named with what it resolves to.
    let out = lg(&rt, &["run", "--workspace", s(&to_etc), "--", "true"]);
    let err = refused(&out, "a link to /etc");
    assert!(
        err.contains(s(&to_etc)) && err.contains("resolves to /etc"),
        "{err}"
    );

    // An ordinary directory is still a workspace.
    let ws = tempfile::tempdir().unwrap();
    ok(&lg(
        &rt,
        &[
            "run",
            "--workspace",
            s(ws.path()),
            "--",
            "sh",
            "-c",
            "echo ok > /workspace/done",
        ],
    ));
    assert_eq!(
        std::fs::read_to_string(ws.path().join("done")).unwrap(),
        "ok\n"
    );
    let m = std::fs::symlink_metadata(ws.path().join("done")).unwrap();
    assert!(m.file_type().is_file() && !m.file_type().is_fifo());
}
