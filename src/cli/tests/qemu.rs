//! `luminaguard run|sandbox --backend qemu` end to end: real microVMs under QEMU (TCG here),
//! booted from an image built by `luminaguard image build` from the real guest kernel
//! (`LUMINAGUARD_GUEST_KERNEL_DIR`) and the static agent (`LUMINAGUARD_STATIC_AGENT`), both
//! exported by `scripts/test`. Needs root, QEMU and vhost-device-vsock (`scripts/setup-vm`);
//! required in CI, skipped with a message elsewhere.
//!
//! The tests take one lock: each boots VMs on a 2-core machine, and each checks at its end that
//! nothing is left on the host (processes, sandbox directories, sockets, cgroups), which another
//! test's VMs would confuse.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)] // test code

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use luminaguard_cgroup::Hierarchy;
use luminaguard_testkit::text;

const BIN: &str = env!("CARGO_BIN_EXE_luminaguard");

/// The image store the tests boot from, built once per run (idempotent: an unchanged kernel and
/// agent are not rebuilt), and the guest's kernel release.
struct Image {
    store: PathBuf,
    release: String,
}

fn image() -> Option<&'static Image> {
    static IMAGE: OnceLock<Option<Image>> = OnceLock::new();
    IMAGE
        .get_or_init(|| {
            if !luminaguard_testkit::privileged("the QEMU backend tests") {
                return None;
            }
            let kernel = std::env::var_os("LUMINAGUARD_GUEST_KERNEL_DIR");
            let agent = std::env::var_os("LUMINAGUARD_STATIC_AGENT");
            let (Some(kernel), Some(agent)) = (kernel, agent) else {
                assert!(
                    std::env::var_os("CI").is_none(),
                    "CI must set LUMINAGUARD_GUEST_KERNEL_DIR and LUMINAGUARD_STATIC_AGENT \
                     (scripts/test exports them)"
                );
                eprintln!(
                    "skipped: set LUMINAGUARD_GUEST_KERNEL_DIR (scripts/fetch-guest-kernel) and \
                     LUMINAGUARD_STATIC_AGENT (scripts/build-static-agent)"
                );
                return None;
            };
            for program in ["qemu-system-x86_64", "vhost-device-vsock"] {
                if luminaguard_qemu::find_program(program, None).is_none() {
                    assert!(
                        std::env::var_os("CI").is_none(),
                        "{program} not found: CI must run scripts/setup-vm"
                    );
                    eprintln!("skipped: {program} not found (run scripts/setup-vm)");
                    return None;
                }
            }
            let store = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("qemu-test-images");
            let out = Command::new(BIN)
                .args(["image", "build", "--store"])
                .arg(&store)
                .arg("--kernel-dir")
                .arg(&kernel)
                .arg("--agent")
                .arg(&agent)
                .env("RUST_LOG", "warn")
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "image build failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let digest = String::from_utf8(out.stdout).unwrap().trim().to_owned();
            let image = luminaguard_image::Store::open(&store)
                .unwrap()
                .get(&digest)
                .unwrap();
            Some(Image {
                store,
                release: image.manifest.kernel_release,
            })
        })
        .as_ref()
}

fn lock() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// `luminaguard --runtime-dir RT <args>` with the test image store.
fn lg(img: &Image, rt: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.arg("--runtime-dir")
        .arg(rt)
        .env("LUMINAGUARD_IMAGE_STORE", &img.store)
        .env("RUST_LOG", "warn");
    c
}

fn run_qemu(img: &Image, rt: &Path, args: &[&str]) -> Output {
    lg(img, rt)
        .args(["run", "--backend", "qemu"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Every sandbox cgroup on the host (`sb-*` under LuminaGuard's parent groups).
fn sandbox_groups() -> Vec<PathBuf> {
    let probe = Hierarchy::detect().unwrap().planned("probe").unwrap();
    let mut groups: Vec<PathBuf> = probe
        .dirs()
        .iter()
        .filter_map(|d| std::fs::read_dir(d.parent().unwrap()).ok())
        .flat_map(|d| d.flatten().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("sb-"))
        })
        .collect();
    groups.sort();
    groups
}

/// What a test must leave behind: nothing under `rt/sandboxes`, no process naming `rt` (QEMU and
/// vhost-device-vsock carry their sandbox directory in their arguments), no sandbox cgroup that
/// was not there before.
fn assert_nothing_left(rt: &Path, groups_before: &[PathBuf]) {
    let rt_str = rt.to_str().unwrap();
    // The processes were SIGKILLed and waited for by destroy; allow their zombies a moment to be
    // reaped by their parent (tokio's child reaper in the CLI is gone with the CLI).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let procs = luminaguard_testkit::live_processes_matching(&[rt_str]);
        if procs.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "processes left: {procs:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let left: Vec<PathBuf> = std::fs::read_dir(rt.join("sandboxes"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "sandbox directories left: {left:?}");
    // Other tests of this binary run alongside and have sandbox cgroups of their own while they
    // run: a new group must be gone within a bound (theirs end with them); a leaked one never is.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let new: Vec<PathBuf> = sandbox_groups()
            .into_iter()
            .filter(|g| !groups_before.contains(g))
            .collect();
        if new.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "cgroups left: {new:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn run_prints_the_guest_kernel_release_and_exits_with_the_commands_status() {
    let Some(img) = image() else { return };
    let _l = lock();
    let groups = sandbox_groups();
    let rt = tempfile::tempdir().unwrap();

    let out = run_qemu(img, rt.path(), &["--", "uname", "-r"]);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), img.release, "the guest's kernel");

    let out = run_qemu(
        img,
        rt.path(),
        &["--", "sh", "-c", "echo out; echo err >&2; exit 7"],
    );
    assert_eq!(out.status.code(), Some(7), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "out\n");
    assert!(text(&out.stderr).contains("err"), "{}", text(&out.stderr));
    assert_nothing_left(rt.path(), &groups);
}

#[test]
fn the_guest_cannot_write_the_shared_root_image() {
    let Some(img) = image() else { return };
    let _l = lock();
    let groups = sandbox_groups();
    let rt = tempfile::tempdir().unwrap();
    let out = run_qemu(
        img,
        rt.path(),
        &[
            "--",
            "sh",
            "-c",
            "cat /sys/block/vda/ro; echo corrupted > /dev/vda && echo WROTE; exit 0",
        ],
    );
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "1\n",
        "the root drive is read-only to the guest and a write fails (stderr: {})",
        text(&out.stderr)
    );
    // The image is intact: every artifact still hashes to its manifest.
    let store = luminaguard_image::Store::open(&img.store).unwrap();
    for image in store.list().unwrap() {
        store.verify(image.unwrap().digest.as_str()).unwrap();
    }
    assert_nothing_left(rt.path(), &groups);
}

#[test]
fn stdin_streams_into_the_guest() {
    let Some(img) = image() else { return };
    let _l = lock();
    let groups = sandbox_groups();
    let rt = tempfile::tempdir().unwrap();
    // 1 MiB of varied bytes, counted and hashed in the guest.
    let data: Vec<u8> = (0..1u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let mut child = lg(img, rt.path())
        .args(["run", "--backend", "qemu", "--", "sh", "-c", "wc -c"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        stdin.write_all(&data).unwrap();
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), (1u32 << 20).to_string());
    assert_nothing_left(rt.path(), &groups);
}

#[test]
fn a_timeout_kills_the_command_and_the_vm_keeps_serving() {
    let Some(img) = image() else { return };
    let _l = lock();
    let groups = sandbox_groups();
    let rt = tempfile::tempdir().unwrap();
    let out = lg(img, rt.path())
        .args(["sandbox", "create", "--backend", "qemu", "--name", "qt1"])
        .output()
        .unwrap();
    assert!(out.status.success(), "create: {}", text(&out.stderr));

    let ls = lg(img, rt.path())
        .args(["sandbox", "ls", "--json"])
        .output()
        .unwrap();
    let ls: serde_json::Value = serde_json::from_slice(&ls.stdout).unwrap();
    assert_eq!(ls[0]["backend"], "qemu", "{ls}");
    assert!(
        ls[0]["accel"] == "tcg" || ls[0]["accel"] == "kvm",
        "the status says how the guest runs: {ls}"
    );

    let start = Instant::now();
    let out = lg(img, rt.path())
        .args([
            "sandbox",
            "exec",
            "--timeout",
            "1s",
            "qt1",
            "--",
            "sleep",
            "30",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(137), "{}", text(&out.stderr));
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "the timeout killed it: {:?}",
        start.elapsed()
    );
    let out = lg(img, rt.path())
        .args(["sandbox", "exec", "qt1", "--", "uname", "-r"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "after the timeout: {}",
        text(&out.stderr)
    );
    assert_eq!(text(&out.stdout).trim(), img.release);

    let out = lg(img, rt.path())
        .args(["sandbox", "rm", "qt1"])
        .output()
        .unwrap();
    assert!(out.status.success(), "rm: {}", text(&out.stderr));
    assert_nothing_left(rt.path(), &groups);
}

#[test]
fn a_killed_qemu_is_detected_promptly_and_cleaned_up() {
    let Some(img) = image() else { return };
    let _l = lock();
    let groups = sandbox_groups();
    let rt = tempfile::tempdir().unwrap();
    let mut child = lg(img, rt.path())
        .args([
            "run",
            "--backend",
            "qemu",
            "--",
            "sh",
            "-c",
            "echo started; sleep 60",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "started\n", "the command runs in the guest");
    // The VMM is the sandbox's init in its record.
    let dir = std::fs::read_dir(rt.path().join("sandboxes"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("meta.json")).unwrap()).unwrap();
    let qemu = meta["init"]["pid"].as_i64().unwrap() as i32;
    assert!(
        std::fs::read_to_string(format!("/proc/{qemu}/cmdline"))
            .unwrap()
            .starts_with(
                luminaguard_qemu::find_program("qemu-system-x86_64", None)
                    .unwrap()
                    .to_str()
                    .unwrap()
            ),
        "init is QEMU"
    );
    // The VMM and its vsock helper run unprivileged: a uid of their own, no capabilities.
    let vhost = meta["helpers"][0]["pid"].as_i64().unwrap() as i32;
    let uid = meta["vmm_uid"].as_u64().unwrap();
    assert_ne!(uid, 0);
    for pid in [qemu, vhost] {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let line = |key: &str| {
            status
                .lines()
                .find(|l| l.starts_with(key))
                .unwrap()
                .to_owned()
        };
        assert_eq!(
            line("Uid:"),
            format!("Uid:\t{uid}\t{uid}\t{uid}\t{uid}"),
            "{pid}"
        );
        assert_eq!(
            line("Groups:").trim(),
            "Groups:",
            "{pid}: no supplementary groups under TCG"
        );
        assert_eq!(line("CapEff:"), "CapEff:\t0000000000000000", "{pid}");
    }
    let killed = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(qemu),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    let took = killed.elapsed();
    eprintln!("a killed QEMU was reported after {took:?}");
    assert!(
        took < Duration::from_secs(10),
        "a dead VMM is noticed promptly, not after the command's 60 s: {took:?}"
    );
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("VMM") && stderr.contains("exited"),
        "the error says the VMM died: {stderr}"
    );
    assert_nothing_left(rt.path(), &groups);
}

/// Four VMs at once, then twenty in a row (about 2-3 s each under TCG).
#[test]
fn four_at_once_and_twenty_in_a_row_leave_nothing_behind() {
    let Some(img) = image() else { return };
    let _l = lock();
    let groups = sandbox_groups();
    let rt = tempfile::tempdir().unwrap();
    let children: Vec<_> = (0..4)
        .map(|i| {
            lg(img, rt.path())
                .args(["run", "--backend", "qemu", "--", "sh", "-c"])
                .arg(format!("echo vm{i}; uname -r"))
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (i, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "vm{i}: {}", text(&out.stderr));
        assert_eq!(text(&out.stdout), format!("vm{i}\n{}\n", img.release));
    }
    assert_nothing_left(rt.path(), &groups);
    for i in 0..20 {
        let out = run_qemu(img, rt.path(), &["--", "uname", "-r"]);
        assert!(out.status.success(), "run {i}: {}", text(&out.stderr));
        assert_eq!(text(&out.stdout).trim(), img.release);
    }
    assert_nothing_left(rt.path(), &groups);
}

#[test]
fn doctor_states_the_kvm_probe_and_the_accelerator() {
    // No root needed: the probe and the lookups only read.
    let out = Command::new(BIN)
        .args(["doctor", "--json"])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", text(&out.stdout)));
    let kvm = &report["qemu"]["kvm"]["kvm"];
    assert!(kvm == "usable" || kvm == "unusable", "{report}");
    let accel = &report["qemu"]["accel"];
    assert_eq!(
        accel,
        if kvm == "usable" { "kvm" } else { "tcg" },
        "{report}"
    );
    assert_eq!(report["firecracker"]["usable"], false);
    assert_eq!(
        out.status.success(),
        report["default_usable"].as_bool().unwrap(),
        "the exit status says whether the default backend can run"
    );
}

#[test]
fn a_corrupted_image_is_refused_before_anything_boots() {
    let Some(img) = image() else { return };
    let _l = lock();
    // A copy of the test store (hard links would share the damage), one byte flipped in place
    // in its root file system: same size, mtime put back.
    let copy = tempfile::tempdir().unwrap();
    let st = Command::new("cp")
        .arg("-a")
        .arg(&img.store)
        .arg(copy.path().join("store"))
        .status()
        .unwrap();
    assert!(st.success());
    let store = copy.path().join("store");
    let image = luminaguard_image::Store::open(&store)
        .unwrap()
        .list()
        .unwrap()
        .into_iter()
        .flatten()
        .next()
        .unwrap();
    let rootfs = image.dir.join("rootfs.ext4");
    let mtime = std::fs::metadata(&rootfs).unwrap().modified().unwrap();
    {
        use std::io::{Seek, SeekFrom};
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&rootfs, std::fs::Permissions::from_mode(0o644)).unwrap();
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(&rootfs)
            .unwrap();
        f.seek(SeekFrom::Start(4096 * 3 + 17)).unwrap();
        f.write_all(b"\xff").unwrap();
        f.set_modified(mtime).unwrap();
    }
    let rt = tempfile::tempdir().unwrap();
    let start = Instant::now();
    let out = Command::new(BIN)
        .arg("--runtime-dir")
        .arg(rt.path())
        // The damaged image by name: the store may hold others (an earlier agent's).
        .args([
            "run",
            "--backend",
            "qemu",
            "--image",
            image.digest.as_str(),
            "--",
            "true",
        ])
        .env("LUMINAGUARD_IMAGE_STORE", &store)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("rootfs.ext4") && err.contains("corrupt"),
        "{err}"
    );
    // Refused before a sandbox existed: no runtime directory entry, no VM.
    assert!(
        !rt.path().join("sandboxes").exists()
            || std::fs::read_dir(rt.path().join("sandboxes"))
                .unwrap()
                .count()
                == 0
    );
    eprintln!("refused in {:?}", start.elapsed());
}

#[test]
fn a_command_that_crashes_the_guest_gets_a_clear_error_and_the_vm_is_cleaned_up() {
    let Some(img) = image() else { return };
    let _l = lock();
    let groups = sandbox_groups();
    let rt = tempfile::tempdir().unwrap();
    // The guest kernel panics (sysrq crash): the agent, and the VM with it, die mid-command.
    let out = run_qemu(
        img,
        rt.path(),
        &["--", "sh", "-c", "echo c > /proc/sysrq-trigger; sleep 60"],
    );
    assert!(!out.status.success());
    let err = text(&out.stderr);
    // The panic line leads the console excerpt even when the call trace fills the tail.
    assert!(
        err.contains("VMM") && err.contains("exited") && err.contains("Kernel panic"),
        "the error says the VM died and shows why: {err}"
    );
    assert_nothing_left(rt.path(), &groups);
    // The next VM is fine.
    let out = run_qemu(img, rt.path(), &["--", "uname", "-r"]);
    assert_eq!(
        text(&out.stdout).trim(),
        img.release,
        "{}",
        text(&out.stderr)
    );
    assert_nothing_left(rt.path(), &groups);
}

#[test]
fn a_debian_image_has_python_and_git_and_rebuilds_to_the_same_digest() {
    let Some(img) = image() else { return };
    let _l = lock();
    // debootstrap from the Debian mirror (a package registry: reachable from CI) into a store
    // of its own, once per target directory.
    let store = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("qemu-test-debian");
    let build = || {
        let out = Command::new(BIN)
            .args(["image", "build", "--debian", "--store"])
            .arg(&store)
            .arg("--kernel-dir")
            .arg(std::env::var_os("LUMINAGUARD_GUEST_KERNEL_DIR").unwrap())
            .arg("--agent")
            .arg(std::env::var_os("LUMINAGUARD_STATIC_AGENT").unwrap())
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout).trim().to_owned()
    };
    let first = build();
    assert_eq!(
        build(),
        first,
        "the Debian base is reused: same inputs, same image"
    );
    let rt = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .arg("--runtime-dir")
        .arg(rt.path())
        .args([
            "run",
            "--backend",
            "qemu",
            "--image",
            &first,
            "--",
            "sh",
            "-c",
        ])
        .arg("python3 -c 'print(6 * 7)'; git --version; cat /etc/debian_version; pwd; uname -r")
        .env("LUMINAGUARD_IMAGE_STORE", &store)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "42");
    assert!(lines[1].starts_with("git version "), "{stdout}");
    assert!(lines[2].starts_with("12."), "bookworm: {stdout}");
    assert_eq!(lines[3], "/workspace");
    assert_eq!(lines[4], img.release);
}

/// A store holding an image whose root also has `bash` (its `/dev/tcp` is the guest's TCP
/// client) and `getent` (the guest's resolver client), built once per run.
fn net_image_store() -> PathBuf {
    static STORE: OnceLock<PathBuf> = OnceLock::new();
    STORE
        .get_or_init(|| {
            let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("qemu-net-test-images");
            let root = base.join("root");
            if !root.exists() {
                let mut tools = luminaguard_image::hostroot::HOST_TOOLS.to_vec();
                tools.extend(["bash", "getent", "grep"]);
                luminaguard_image::hostroot::assemble(&root, &tools).unwrap();
            }
            let store = base.join("store");
            let out = Command::new(BIN)
                .args(["image", "build", "--store"])
                .arg(&store)
                .arg("--rootfs")
                .arg(&root)
                .env("RUST_LOG", "warn")
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", text(&out.stderr));
            store
        })
        .clone()
}

/// A microVM's domain allowlist, end to end under TCG against the fake internet: VM init points
/// the guest's `resolv.conf` at the sandbox's resolver; an allowed name resolves and connects; a
/// name no rule allows does not resolve; the allowed host's address, never resolved in that VM,
/// is refused; without a policy the VM has no NIC; nothing is left afterwards.
#[test]
fn a_microvm_resolves_and_reaches_only_allowed_names() {
    use luminaguard_testkit::netlab::{FakeInternet, OTHER, SERVER};
    let Some(img) = image() else { return };
    let _l = lock();
    let groups = sandbox_groups();
    let store = net_image_store();
    let mut net = FakeInternet::new();
    let upstream = net
        .serve_dns(&[("api.allowed.test", SERVER), ("other.test", OTHER)])
        .to_string();
    let rt = tempfile::tempdir().unwrap();
    let run = |script: &str| {
        lg(img, rt.path())
            .env("LUMINAGUARD_IMAGE_STORE", &store)
            .env("LUMINAGUARD_UPLINK_NETNS", &net.host)
            .env("LUMINAGUARD_DNS_UPSTREAM", &upstream)
            .env("LUMINAGUARD_POLICY", luminaguard_testkit::NETWORK_ALLOWED)
            .args(["run", "--backend", "qemu", "--net", "api.allowed.test:80"])
            .args(["--", "bash", "-c", script])
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let out = run("grep -x 'nameserver 10.255.255.1' /etc/resolv.conf \
         && getent hosts api.allowed.test \
         && exec 3<>/dev/tcp/api.allowed.test/80 && head -n1 <&3 \
         && ! getent hosts other.test");
    assert!(
        out.status.success(),
        "stdout: {}\nstderr: {}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let stdout = text(&out.stdout);
    assert!(stdout.contains(&format!("hello {SERVER}:80")), "{stdout}");

    let out = run(&format!("exec 3<>/dev/tcp/{SERVER}/80"));
    assert!(!out.status.success(), "{}", text(&out.stdout));

    // Without --net the VM has no NIC at all: only loopback, and no name resolves.
    let out = lg(img, rt.path())
        .env("LUMINAGUARD_IMAGE_STORE", &store)
        .args(["run", "--backend", "qemu", "--", "bash", "-c"])
        .arg("ls /sys/class/net; getent hosts api.allowed.test || echo unresolved")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "lo\nunresolved\n");
    assert_nothing_left(rt.path(), &groups);
    let resolvers = luminaguard_testkit::live_processes_matching(&[BIN, "dns-resolver"]);
    assert_eq!(resolvers, Vec::new());
}

/// The host side of a microVM holds nothing of whoever started it: QEMU, vhost-device-vsock and
/// the console keeper run in sessions of their own, with no controlling terminal, and with none
/// of the caller's stray descriptors — for `run` (whose VMM dies with it) as for a long-lived
/// VM; and `sandbox cp` out of a VM never writes through a link on the host.
#[test]
fn a_microvms_host_side_holds_no_caller_terminal_or_descriptor() {
    use luminaguard_testkit::terminal;
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let Some(img) = image() else { return };
    let _l = lock();
    let groups = sandbox_groups();
    let rt = tempfile::tempdir().unwrap();
    let secrets = tempfile::tempdir().unwrap();
    let secret = secrets.path().join("secret");
    std::fs::write(&secret, "host secret\n").unwrap();
    let (master, slave) = terminal::pty();
    let recorded = |rt: &Path| -> Vec<i32> {
        let dir = std::fs::read_dir(rt.join("sandboxes"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let meta: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("meta.json")).unwrap()).unwrap();
        std::iter::once(&meta["init"])
            .chain(meta["helpers"].as_array().unwrap())
            .map(|p| i32::try_from(p["pid"].as_i64().unwrap()).unwrap())
            .collect()
    };
    // `callers`: the session of the command that started the VM, when it still runs.
    let check = |pids: &[i32], callers: Option<i32>, what: &str| {
        assert!(pids.len() >= 3, "{what}: {pids:?}");
        for &pid in pids {
            let (session, tty) = terminal::session_and_tty(pid);
            assert_eq!(tty, 0, "{what}: pid {pid} has a controlling terminal");
            assert_ne!(
                Some(session),
                callers,
                "{what}: pid {pid} is in the caller's session"
            );
            for fd in std::fs::read_dir(format!("/proc/{pid}/fd"))
                .unwrap()
                .flatten()
            {
                let target = std::fs::read_link(fd.path()).unwrap_or_default();
                assert!(
                    !target.starts_with(secrets.path()),
                    "{what}: pid {pid} holds the caller's {}",
                    target.display()
                );
            }
        }
    };
    // The caller left a secret open (not close-on-exec) and runs on a terminal.
    let file = std::fs::File::open(&secret).unwrap();
    let raw = file.as_raw_fd();
    let with_stray_fd = |cmd: &mut Command| {
        // SAFETY: dup2 is async-signal-safe; the copy at 7 is not close-on-exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::dup2(raw, 7) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    };

    // `run`: the VMM lives as long as the command.
    let mut cmd = lg(img, rt.path());
    cmd.args([
        "run",
        "--backend",
        "qemu",
        "--",
        "sh",
        "-c",
        "echo started; sleep 60",
    ]);
    with_stray_fd(&mut cmd);
    let mut run = terminal::on_terminal(&mut cmd, &slave).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !terminal::drain(&master).contains("started") {
        assert!(Instant::now() < deadline, "the VM did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (callers, _) = terminal::session_and_tty(i32::try_from(run.id()).unwrap());
    check(&recorded(rt.path()), Some(callers), "run");
    run.kill().unwrap();
    run.wait().unwrap();
    let out = lg(img, rt.path()).arg("gc").output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));

    // A long-lived VM, created from the terminal.
    let mut cmd = lg(img, rt.path());
    cmd.args(["sandbox", "create", "--backend", "qemu", "--name", "vmhost"]);
    with_stray_fd(&mut cmd);
    let status = terminal::on_terminal(&mut cmd, &slave).status().unwrap();
    assert!(status.success(), "{}", terminal::drain(&master));
    check(&recorded(rt.path()), None, "sandbox create");
    // `cp` out through a link the host side would follow: refused, the victim untouched.
    let dest = tempfile::tempdir().unwrap();
    let victim = secrets.path().join("victim");
    std::fs::write(&victim, "untouched\n").unwrap();
    std::os::unix::fs::symlink(&victim, dest.path().join("out")).unwrap();
    std::os::unix::fs::symlink(secrets.path(), dest.path().join("sub")).unwrap();
    for to in ["out", "sub/victim"] {
        let out = lg(img, rt.path())
            .args(["sandbox", "cp", "vmhost:/etc/hostname"])
            .arg(dest.path().join(to))
            .output()
            .unwrap();
        assert!(!out.status.success(), "cp to {to} was accepted");
        assert!(
            text(&out.stderr).contains("link"),
            "{to}: {}",
            text(&out.stderr)
        );
    }
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched\n");
    let out = lg(img, rt.path())
        .args(["sandbox", "rm", "vmhost"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    drop(file);
    assert!(
        terminal::pending_input(&slave).is_empty(),
        "input was injected"
    );
    assert_nothing_left(rt.path(), &groups);
}

#[test]
fn pids_limits_the_guests_commands_and_the_agent_keeps_serving() {
    let Some(img) = image() else { return };
    let _l = lock();
    let groups = sandbox_groups();
    let rt = tempfile::tempdir().unwrap();
    // Forty background sleeps under a limit of 16: the forks past it fail, the agent (outside
    // the commands' cgroup) still reports, and the default limit applies without --pids.
    // Shell builtins only once the bomb has gone off: a fork would fail like the bomb's.
    let script = "read cg < /proc/self/cgroup; echo $cg; \
                  read max < /sys/fs/cgroup/commands/pids.max; echo $max; \
                  (i=0; while [ $i -lt 40 ]; do sleep 60 & i=$((i+1)); done) 2>/dev/null; \
                  n=0; while read p; do n=$((n+1)); [ $p != $$ ] && kill -9 $p; \
                  done < /sys/fs/cgroup/commands/cgroup.procs; echo running $n; echo alive";
    let out = run_qemu(img, rt.path(), &["--pids", "16", "--", "sh", "-c", script]);
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "stdout: {stdout}\nstderr: {}",
        text(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "0::/commands", "{stdout}");
    assert_eq!(lines[1], "16", "{stdout}");
    let running: u32 = lines[2]
        .strip_prefix("running ")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        running <= 16,
        "{running} processes under a limit of 16: {stdout}"
    );
    assert!(running >= 8, "the limit let too few start: {stdout}");
    assert_eq!(lines.last(), Some(&"alive"), "{stdout}");

    let out = run_qemu(
        img,
        rt.path(),
        &["--", "cat", "/sys/fs/cgroup/commands/pids.max"],
    );
    assert_eq!(text(&out.stdout).trim(), "512", "{}", text(&out.stderr));
    assert_nothing_left(rt.path(), &groups);
}

/// A store holding an image whose root also has what a review's command uses on a workspace
/// (`chmod`, `ln`, `mv`) and what a hostile one uses on its layer (`mknod`, `mount`, `dd`),
/// built once per run.
fn review_image_store() -> PathBuf {
    static STORE: OnceLock<PathBuf> = OnceLock::new();
    STORE
        .get_or_init(|| {
            let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("qemu-review-test-images");
            let root = base.join("root");
            if !root.exists() {
                let mut tools = luminaguard_image::hostroot::HOST_TOOLS.to_vec();
                tools.extend(["chmod", "ln", "mv", "mknod", "mount", "dd"]);
                luminaguard_image::hostroot::assemble(&root, &tools).unwrap();
            }
            let store = base.join("store");
            let out = Command::new(BIN)
                .args(["image", "build", "--store"])
                .arg(&store)
                .arg("--rootfs")
                .arg(&root)
                .env("RUST_LOG", "warn")
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", text(&out.stderr));
            store
        })
        .clone()
}

/// `env LUMINAGUARD_IMAGE_STORE=… luminaguard [--config C] --runtime-dir RT run --backend qemu
/// --review --workspace WS -- sh -c SCRIPT`, as the program and arguments the review helpers
/// run (without a terminal, or on one).
fn qemu_review_argv(
    store: &Path,
    f: &luminaguard_testkit::review::Fixture,
    config: Option<&Path>,
    script: &str,
) -> Vec<String> {
    let mut a = vec![
        format!("LUMINAGUARD_IMAGE_STORE={}", store.display()),
        "RUST_LOG=warn".to_owned(),
        BIN.to_owned(),
    ];
    if let Some(c) = config {
        a.extend(["--config".to_owned(), c.display().to_string()]);
    }
    a.extend(
        [
            "--runtime-dir",
            f.runtime.to_str().unwrap(),
            "run",
            "--backend",
            "qemu",
            "--review",
            "--workspace",
            f.ws.to_str().unwrap(),
            "--",
            "sh",
            "-c",
            script,
        ]
        .map(str::to_owned),
    );
    a
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// `run --backend qemu --review`: the workspace is copied into the guest, the command's
/// changes (add, modify, delete a file and a directory, rename, chmod, symlink, empty
/// directory, binary) come back as the guest's overlay layer, and the card lists every one.
/// Without a terminal nothing is applied and the workspace stays byte-identical; approved at a
/// terminal, exactly those changes land, owned by the workspace's owner.
#[test]
fn a_qemu_review_shows_every_change_and_applies_exactly_the_approved_card() {
    use luminaguard_testkit::review;
    let Some(_img) = image() else { return };
    let _l = lock();
    let groups = sandbox_groups();
    let store = review_image_store();
    let f = review::fixture();
    let before = review::tree(&f.ws);
    let argv = qemu_review_argv(&store, &f, None, review::CHANGES);

    let out = review::without_terminal("env", &strs(&argv));
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(text(&out.stdout), "done\n", "{err}");
    review::assert_card_lists_changes(&err);
    assert!(err.contains("no terminal to ask"), "{err}");
    assert_eq!(
        review::tree(&f.ws),
        before,
        "a review without an answer changed the workspace"
    );

    let (code, screen) = review::on_terminal("env", &strs(&argv), || {}, "y\n");
    assert_eq!(code, Some(0), "{screen}");
    assert!(screen.contains("applied"), "{screen}");
    review::assert_changes_applied(&review::tree(&f.ws), 1000);
    assert_nothing_left(&f.runtime, &groups);
}

/// The command is root in the guest and writes its overlay's upper layer directly: a symlink
/// to `/etc`, a file written through a symlinked directory, a name with a newline, a hard link
/// to a file outside the upper dir; in other runs a file larger than `review.max_layer` (after
/// remounting the layer's tmpfs larger) and a device node. The host imports nothing outside its
/// own upper dir, refuses the oversized layer and the device naming them, and without an
/// approval the real workspace is byte-identical every time.
#[test]
fn a_hostile_guest_layer_writes_nothing_outside_and_changes_nothing_unapproved() {
    use luminaguard_testkit::review;
    let Some(_img) = image() else { return };
    let _l = lock();
    let groups = sandbox_groups();
    let store = review_image_store();
    let f = review::fixture();
    let config = f.dir.path().join("config.toml");
    std::fs::write(&config, "[review]\nmax_layer = \"4M\"\n").unwrap();
    let before = review::tree(&f.ws);
    let marker = format!("lg-planted-{}", std::process::id());
    let host_victims = [
        PathBuf::from("/etc").join(&marker),
        PathBuf::from("/").join(&marker),
        std::env::temp_dir().join(&marker),
    ];
    let layer = "/run/luminaguard/review/layer";
    let hostile = format!(
        "set -e; U={layer}/upper; cd /workspace
echo ok > fine.txt
ln -s /etc $U/evil
mkdir $U/sub; ln -s /etc $U/sub/link; echo x > $U/sub/link/{marker}
echo nl > \"$(printf 'new\\nline')\"
echo secret > {layer}/outside; ln {layer}/outside $U/hl
echo done"
    );
    let run = |script: &str| {
        let argv = qemu_review_argv(&store, &f, Some(&config), script);
        review::without_terminal("env", &strs(&argv))
    };

    let out = run(&hostile);
    let err = text(&out.stderr);
    assert_eq!(text(&out.stdout), "done\n", "{err}");
    assert_eq!(out.status.code(), Some(1), "{err}");
    for shown in ["fine.txt", "evil -> /etc", "sub/link -> /etc", "hl", "line"] {
        assert!(err.contains(shown), "the card lacks {shown:?}:\n{err}");
    }
    assert!(
        !err.contains(&format!("sub/link/{marker}")),
        "the import followed the link: {err}"
    );
    assert_eq!(review::tree(&f.ws), before, "the workspace changed");

    let out = run(&format!(
        "mount -o remount,size=64m {layer}; dd if=/dev/zero of=/workspace/big bs=1M count=8 \
         2>/dev/null; echo done"
    ));
    let err = text(&out.stderr);
    assert_eq!(text(&out.stdout), "done\n", "{err}");
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("more than 4194304 bytes") && err.contains("review layer"),
        "{err}"
    );
    assert_eq!(review::tree(&f.ws), before, "the workspace changed");

    let out = run(&format!("mknod {layer}/upper/mem c 1 1; echo done"));
    let err = text(&out.stderr);
    assert_eq!(text(&out.stdout), "done\n", "{err}");
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("character device 1:1"), "{err}");
    assert_eq!(review::tree(&f.ws), before, "the workspace changed");

    for v in &host_victims {
        assert!(!v.exists(), "{} was written on the host", v.display());
    }
    assert_nothing_left(&f.runtime, &groups);
}

/// The MCP servers' host caches (`scripts/setup`), copied into the gateway test's image.
const MCP_NODE: &str = "/var/cache/luminaguard/mcp-servers/node";
const MCP_PYTHON: &str = "/var/cache/luminaguard/mcp-servers/python";
/// The real MCP client's venv (`scripts/setup`).
const MCP_CLIENT_PYTHON: &str = "/var/cache/luminaguard/python-mcp/bin/python";
const NODE_SERVERS: &str = "/opt/mcp/node/node_modules/@modelcontextprotocol";

/// Seconds since UTC midnight of a tracing timestamp (`2026-12-05T13:03:03.640456Z …`).
fn log_time_of_day(line: &str) -> Option<f64> {
    let t = line.split_whitespace().next()?;
    let (_, time) = t.split_once('T')?;
    let mut parts = time.trim_end_matches('Z').split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
}

/// `luminaguard mcp gateway` with the four real servers of `scripts/setup` (two npm, two PyPI),
/// each in a microVM of its own booted from an image that holds their code (`image build
/// --debian --package nodejs --include …`), driven by the official Python MCP client: every
/// server's tools are offered as SERVER__TOOL, a call to each answers, and when the client
/// leaves no sandbox, process or cgroup is left. Each server's cold start (gateway start to
/// "MCP server started") is printed, not asserted.
#[test]
fn mcp_gateway_runs_the_four_real_servers_in_microvms() {
    let Some(img) = image() else { return };
    let _l = lock();
    let groups = sandbox_groups();
    for needed in [MCP_NODE, MCP_PYTHON, MCP_CLIENT_PYTHON] {
        if !Path::new(needed).exists() {
            assert!(
                std::env::var_os("CI").is_none(),
                "{needed} is missing: CI must run scripts/setup"
            );
            eprintln!("skipped: {needed} is missing (run scripts/setup)");
            return;
        }
    }
    // The Debian test's store: a plain Debian base there is that test's; this image's base
    // (with nodejs) is made once per target directory next to it.
    let store = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("qemu-test-debian");
    let started = Instant::now();
    let out = Command::new(BIN)
        .args([
            "image",
            "build",
            "--debian",
            "--package",
            "nodejs",
            "--store",
        ])
        .arg(&store)
        .arg("--kernel-dir")
        .arg(std::env::var_os("LUMINAGUARD_GUEST_KERNEL_DIR").unwrap())
        .arg("--agent")
        .arg(std::env::var_os("LUMINAGUARD_STATIC_AGENT").unwrap())
        .arg("--include")
        .arg(format!("{MCP_NODE}:/opt/mcp/node"))
        .arg("--include")
        .arg(format!("{MCP_PYTHON}:/opt/mcp/python"))
        .arg("--json")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let built: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let digest = built["digest"].as_str().unwrap().to_owned();
    assert_eq!(built["packages"], serde_json::json!(["nodejs"]));
    let places: Vec<&str> = built["includes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["at"].as_str().unwrap())
        .collect();
    assert_eq!(places, ["/opt/mcp/node", "/opt/mcp/python"]);
    eprintln!(
        "mcp image {} (reused: {}) in {:.1?}",
        &digest[..12],
        built["reused"],
        started.elapsed()
    );

    let dir = tempfile::tempdir().unwrap();
    let rt = dir.path().join("rt");
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        format!(
            r#"version = 1
default = "deny"

[[rule]]
id = "everything"
decision = "allow"
exec = ["node", "{NODE_SERVERS}/server-everything/dist/index.js", "stdio"]

[[rule]]
id = "fs"
decision = "allow"
exec = ["node", "{NODE_SERVERS}/server-filesystem/dist/index.js", "/opt/mcp"]

[[rule]]
id = "git-repo"
decision = "allow"
exec = ["git", "init", "-q", "/tmp/repo"]

[[rule]]
id = "python-servers"
decision = "allow"
exec = ["/opt/mcp/python/bin/python", "-m", "mcp_server_git|mcp_server_time", "**"]

[[rule]]
id = "tools"
decision = "allow"
mcp = {{ server = "*", tool = "*" }}
"#
        ),
    )
    .unwrap();
    // The guest's root is read-only and holds no repository: the git server's launch makes
    // one in its VM's writable /tmp first (each command judged by the policy), then serves it.
    let servers = [
        (
            "everything",
            format!(r#"["node", "{NODE_SERVERS}/server-everything/dist/index.js", "stdio"]"#),
        ),
        (
            "fs",
            format!(r#"["node", "{NODE_SERVERS}/server-filesystem/dist/index.js", "/opt/mcp"]"#),
        ),
        (
            "git",
            r#"["sh", "-c", "git init -q /tmp/repo && exec /opt/mcp/python/bin/python -m mcp_server_git --repository /tmp/repo"]"#
                .to_owned(),
        ),
        (
            "time",
            r#"["/opt/mcp/python/bin/python", "-m", "mcp_server_time"]"#.to_owned(),
        ),
    ];
    let mut gateway = String::new();
    for (name, command) in &servers {
        gateway.push_str(&format!(
            "[servers.{name}]\ncommand = {command}\nbackend = \"qemu\"\nimage = \"{digest}\"\n\
             memory = \"512M\"\ncall_timeout = \"120s\"\nstart = \"eager\"\n\n"
        ));
    }
    let gateway_toml = dir.path().join("gateway.toml");
    std::fs::write(&gateway_toml, gateway).unwrap();
    let argv = serde_json::json!([
        BIN,
        "--runtime-dir",
        rt,
        "--no-daemon",
        "--policy",
        policy,
        "mcp",
        "gateway",
        gateway_toml,
        "--pins",
        dir.path().join("pins.json"),
    ]);
    let calls = serde_json::json!([
        {"tool": "everything__echo", "arguments": {"message": "hi from a microVM"}},
        {"tool": "time__get_current_time", "arguments": {"timezone": "Europe/Paris"}},
        {"tool": "fs__list_directory", "arguments": {"path": "/opt/mcp"}},
        {"tool": "git__git_status", "arguments": {"repo_path": "/tmp/repo"}},
    ]);
    let client = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/mcp/gateway_client.py");
    let wall_start = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        % 86400.0;
    let started = Instant::now();
    let out = Command::new(MCP_CLIENT_PYTHON)
        .arg(&client)
        .env("LG_SERVER", argv.to_string())
        .env("LG_CALLS", calls.to_string())
        .env("LUMINAGUARD_IMAGE_STORE", &store)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let took = started.elapsed();
    let stderr = text(&out.stderr);
    assert!(
        out.status.success(),
        "the client failed: {}\n{stderr}",
        text(&out.stdout)
    );
    let summary: serde_json::Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();

    // Cold starts: from the gateway's start to each server's "MCP server started" line.
    for line in stderr.lines().filter(|l| l.contains("MCP server started")) {
        let name = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("server="))
            .unwrap_or("?");
        if let Some(t) = log_time_of_day(line) {
            let secs = (t - wall_start).rem_euclid(86400.0);
            eprintln!("cold start in a microVM (TCG): {name} {secs:.1} s");
        }
    }
    eprintln!("client session (4 servers started, listed, 4 calls, shut down): {took:.1?}");

    let tools: Vec<&str> = summary["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    for (name, _) in &servers {
        assert!(
            tools.iter().any(|t| t.starts_with(&format!("{name}__"))),
            "no tool of {name}: {tools:?}"
        );
    }
    for tool in [
        "everything__echo",
        "fs__list_directory",
        "git__git_status",
        "time__get_current_time",
    ] {
        assert!(tools.contains(&tool), "{tool} not offered: {tools:?}");
    }
    let calls = summary["calls"].as_array().unwrap();
    assert_eq!(calls.len(), 4, "{summary}");
    for call in calls {
        assert_eq!(call["isError"], false, "{call}\n{stderr}");
    }
    let call_text = |i: usize| calls[i]["text"].as_str().unwrap_or_default();
    assert!(
        call_text(0).contains("hi from a microVM"),
        "echo: {}",
        calls[0]
    );
    assert!(call_text(1).contains("Europe/Paris"), "time: {}", calls[1]);
    assert!(
        call_text(2).contains("[DIR] node") && call_text(2).contains("[DIR] python"),
        "the image's /opt/mcp: {}",
        calls[2]
    );
    assert!(
        call_text(3).contains("No commits yet"),
        "git status of the repository made in the guest: {}",
        calls[3]
    );

    // The client is gone: the gateway ended and destroyed every server's sandbox.
    let ls = lg(img, &rt)
        .args(["sandbox", "ls", "--json"])
        .output()
        .unwrap();
    assert!(ls.status.success(), "{}", text(&ls.stderr));
    let listed: serde_json::Value = serde_json::from_slice(&ls.stdout).unwrap();
    assert_eq!(listed, serde_json::json!([]), "sandboxes left");
    assert_nothing_left(&rt, &groups);
}
