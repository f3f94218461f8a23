//! An image built end to end and booted: the real guest kernel (`LUMINAGUARD_GUEST_KERNEL_DIR`,
//! from `scripts/fetch-guest-kernel`), the static agent (`LUMINAGUARD_STATIC_AGENT`, from
//! `scripts/build-static-agent`) and a root of host programs; built twice (same digest, nothing
//! rebuilt) and once more from scratch in another store (same digest: reproducible); then
//! booted by hand under QEMU `microvm` (TCG) with `vhost-device-vsock`, reached through hybrid
//! vsock, and checked from inside: the guest kernel, a writable `/` (overlay), a read-only root
//! device, and the image unchanged afterwards. Needs root, QEMU and vhost-device-vsock
//! (`scripts/setup-vm`); required in CI, skipped with a message elsewhere.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)] // test code

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use luminaguard_image::build::{BuildInputs, KernelSource, build};
use luminaguard_image::digest::Digest;
use luminaguard_image::hostroot;
use luminaguard_image::store::{ArtifactKind, Image, Store};
use luminaguard_protocol::{AGENT_VSOCK_PORT, Client, ClientOptions, ExecRequest};
use luminaguard_vsock::{Backoff, connect_with_retry};

/// The inputs from the environment, or `None` (skip) outside CI.
fn env_inputs() -> Option<(PathBuf, PathBuf)> {
    let kernel = std::env::var_os("LUMINAGUARD_GUEST_KERNEL_DIR");
    let agent = std::env::var_os("LUMINAGUARD_STATIC_AGENT");
    match (kernel, agent) {
        (Some(k), Some(a)) => Some((k.into(), a.into())),
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must set LUMINAGUARD_GUEST_KERNEL_DIR and LUMINAGUARD_STATIC_AGENT \
                 (scripts/test exports them)"
            );
            eprintln!(
                "skipped: set LUMINAGUARD_GUEST_KERNEL_DIR (scripts/fetch-guest-kernel) and \
                 LUMINAGUARD_STATIC_AGENT (scripts/build-static-agent)"
            );
            None
        }
    }
}

/// `vhost-device-vsock` on PATH or in cargo's bin directory (where scripts/setup-vm puts it).
fn vhost_device_vsock() -> PathBuf {
    if let Ok(p) = hostroot::which("vhost-device-vsock") {
        return p;
    }
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cargo"));
    let p = cargo_home.join("bin/vhost-device-vsock");
    assert!(
        p.is_file(),
        "vhost-device-vsock is not on PATH nor at {} (run scripts/setup-vm)",
        p.display()
    );
    p
}

/// The host TSC frequency in kHz for the guest's `tsc_early_khz` (without it some TCG boots
/// hang calibrating): sysfs when the kernel exports it, else /proc/cpuinfo's "cpu MHz".
fn tsc_khz() -> (u64, &'static str) {
    if let Ok(s) = std::fs::read_to_string("/sys/devices/system/cpu/cpu0/tsc_freq_khz")
        && let Ok(khz) = s.trim().parse()
    {
        return (khz, "sysfs tsc_freq_khz");
    }
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap();
    let mhz: f64 = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("cpu MHz"))
        .and_then(|rest| rest.split(':').nth(1))
        .map(|v| v.trim().parse().unwrap())
        .expect("/proc/cpuinfo has no cpu MHz");
    ((mhz * 1000.0).round() as u64, "/proc/cpuinfo cpu MHz")
}

fn sha256_file(path: &Path) -> Digest {
    Digest::of_reader(std::fs::File::open(path).unwrap())
        .unwrap()
        .0
}

/// Kills the VMM processes on drop (a failing test leaves nothing running).
struct Vm {
    vhost: tokio::process::Child,
    qemu: tokio::process::Child,
    console: PathBuf,
}

impl Vm {
    fn console_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.console).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.qemu.start_kill();
        let _ = self.vhost.start_kill();
    }
}

async fn boot(image: &Image, work: &Path, with_root: bool) -> Vm {
    let vhost_sock = work.join("vhost.sock");
    let vm_vsock = work.join("vm.vsock");
    let console = work.join("console.log");
    let vhost = tokio::process::Command::new(vhost_device_vsock())
        .arg("--vm")
        .arg(format!(
            "guest-cid=3,socket={},uds-path={}",
            vhost_sock.display(),
            vm_vsock.display()
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // QEMU connects to the vhost-user socket at start: wait for it to exist.
    let start = Instant::now();
    while !vhost_sock.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "vhost-device-vsock did not create {}",
            vhost_sock.display()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (khz, khz_source) = tsc_khz();
    eprintln!("tsc_early_khz={khz} (from {khz_source})");
    let art = |kind| image.artifact_path(kind).unwrap();
    let qemu = tokio::process::Command::new("qemu-system-x86_64")
        .args([
            "-M",
            "microvm,x-option-roms=off,rtc=on,memory-backend=mem",
            "-accel",
            "tcg,thread=multi",
            "-cpu",
            "max",
            "-m",
            "256",
            "-object",
            "memory-backend-memfd,id=mem,size=256M,share=on",
            "-nodefaults",
            "-no-user-config",
            "-nographic",
            "-no-reboot",
            "-serial",
        ])
        .arg(format!("file:{}", console.display()))
        .arg("-chardev")
        .arg(format!("socket,id=vh0,path={}", vhost_sock.display()))
        .args(["-device", "vhost-user-vsock-device,chardev=vh0"])
        .arg("-kernel")
        .arg(art(ArtifactKind::Vmlinux))
        .arg("-initrd")
        .arg(art(ArtifactKind::Initramfs))
        .args(if with_root {
            vec![
                "-drive".to_owned(),
                format!(
                    "file={},format=raw,if=none,id=root,readonly=on",
                    art(ArtifactKind::Rootfs).display()
                ),
                "-device".to_owned(),
                "virtio-blk-device,drive=root".to_owned(),
            ]
        } else {
            Vec::new()
        })
        .arg("-append")
        .arg(format!(
            "console=ttyS0 reboot=t panic=-1 tsc=reliable quiet tsc_early_khz={khz} \
             luminaguard.scratch_mb=64"
        ))
        .args([
            "-sandbox",
            "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    Vm {
        vhost,
        qemu,
        console,
    }
}

async fn sh(client: &Client, script: &str) -> (i32, String, String) {
    let out = client
        .exec_output(
            ExecRequest {
                argv: vec!["sh".into(), "-c".into(), script.into()],
                timeout_ms: Some(30_000),
                ..ExecRequest::default()
            },
            None,
        )
        .await
        .unwrap();
    (
        out.status.shell_code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn build_twice_then_boot_the_image() {
    let Some((kernel_dir, agent)) = env_inputs() else {
        return;
    };
    if !luminaguard_testkit::privileged("building and booting a guest image") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root_dir = tmp.path().join("root");
    hostroot::assemble(&root_dir, hostroot::HOST_TOOLS).unwrap();
    let inputs = BuildInputs {
        kernel: KernelSource::from_tree(&kernel_dir).unwrap(),
        agent: agent.clone(),
        rootfs: root_dir.clone(),
        created_by: "luminaguard-image tests".into(),
        includes: Vec::new(),
        packages: Vec::new(),
    };
    let store = Store::open(&tmp.path().join("store")).unwrap();

    let (store2, inputs2) = (store.clone(), inputs.clone());
    let started = Instant::now();
    let first = tokio::task::spawn_blocking(move || build(&store2, &inputs2))
        .await
        .unwrap()
        .unwrap();
    let build_time = started.elapsed();
    assert!(!first.reused);
    eprintln!(
        "first build: {build_time:.2?}, steps {:?}, image {}",
        first.steps, first.image.digest
    );
    let (store2, inputs2) = (store.clone(), inputs.clone());
    let started = Instant::now();
    let second = tokio::task::spawn_blocking(move || build(&store2, &inputs2))
        .await
        .unwrap()
        .unwrap();
    eprintln!(
        "second build: {:.2?}, steps {:?}",
        started.elapsed(),
        second.steps
    );
    assert!(second.reused, "the second build built again");
    assert_eq!(second.image.digest, first.image.digest);
    assert!(
        second
            .steps
            .iter()
            .all(|(s, _)| !["vmlinux", "initramfs", "rootfs", "store"].contains(s)),
        "the second build did work: {:?}",
        second.steps
    );

    // From scratch (another store, a freshly assembled root): the same bytes.
    let root_dir2 = tmp.path().join("root2");
    hostroot::assemble(&root_dir2, hostroot::HOST_TOOLS).unwrap();
    let store_b = Store::open(&tmp.path().join("store-b")).unwrap();
    let inputs_b = BuildInputs {
        rootfs: root_dir2,
        ..inputs.clone()
    };
    let third = tokio::task::spawn_blocking(move || build(&store_b, &inputs_b))
        .await
        .unwrap()
        .unwrap();
    assert!(!third.reused);
    assert_eq!(
        third.image.digest, first.image.digest,
        "a rebuild from scratch gave another image: {:#?} vs {:#?}",
        third.image.manifest, first.image.manifest
    );

    let image = store.verify(first.image.digest.as_str()).unwrap();
    let rootfs = image.artifact_path(ArtifactKind::Rootfs).unwrap();
    assert!(rootfs.ends_with("rootfs.ext4"));
    let rootfs_sha = sha256_file(&rootfs);

    let work = tmp.path().join("vm");
    std::fs::create_dir(&work).unwrap();
    let booted = Instant::now();
    let mut vm = boot(&image, &work, true).await;
    let host = match connect_with_retry(
        &work.join("vm.vsock"),
        AGENT_VSOCK_PORT,
        Duration::from_secs(60),
        Backoff::default(),
    )
    .await
    {
        Ok(h) => h,
        Err(e) => panic!(
            "guest agent not reached: {e}\nconsole:\n{}",
            vm.console_tail()
        ),
    };
    let client = Client::connect(host.stream, ClientOptions::default())
        .await
        .unwrap();
    eprintln!(
        "boot to handshake: {:.2?} (agent {:?})",
        booted.elapsed(),
        client.peer().software
    );

    let console = std::fs::read_to_string(&vm.console).unwrap_or_default();
    for line in console.lines().filter(|l| l.contains("vm-init")) {
        eprintln!("guest console: {line}");
    }
    let info = client.info().await.unwrap();
    assert!(info.is_pid1, "{info:?}");
    let (code, out, err) = sh(&client, "uname -r").await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), image.manifest.kernel_release);

    // / is writable (the overlay's tmpfs upper), through exec and through the file API.
    let (code, out, err) = sh(
        &client,
        "echo written > /guest-file && mkdir -p /etc/x && echo more > /etc/x/y && \
         cat /guest-file /etc/x/y",
    )
    .await;
    assert_eq!((code, out.as_str()), (0, "written\nmore\n"), "{err}");
    client
        .write_file("/api-file", 0o644, b"through the agent")
        .await
        .unwrap();
    assert_eq!(
        client.read_file("/api-file", 1 << 20).await.unwrap(),
        b"through the agent"
    );
    // The root device itself cannot be written: the VMM opened it read-only.
    let (code, _, err) = sh(&client, "echo overwrite > /dev/vda && sync /dev/vda").await;
    assert_ne!(code, 0, "the guest wrote its root device");
    eprintln!("guest writing /dev/vda: {}", err.trim());
    let (code, out, _) = sh(&client, "cat /sys/block/vda/ro").await;
    assert_eq!(
        (code, out.trim()),
        (0, "1"),
        "the guest's root device is not read-only"
    );
    // The lower and the scratch tmpfs stay mounted in the initramfs, out of the guest's sight.
    let (code, out, _) = sh(&client, "cat /proc/mounts").await;
    assert_eq!(code, 0);
    assert!(
        out.lines().any(|l| l.starts_with("overlay / overlay ")
            && l.contains("lowerdir=/run/luminaguard/lower,")),
        "/ is not the overlay: {out}"
    );

    client.shutdown().await.unwrap();
    match tokio::time::timeout(Duration::from_secs(30), vm.qemu.wait()).await {
        Ok(status) => eprintln!("qemu exited after shutdown: {:?}", status.unwrap()),
        Err(_) => panic!(
            "qemu still runs 30 s after the agent was told to shut down\nconsole:\n{}",
            vm.console_tail()
        ),
    }
    vm.vhost.start_kill().unwrap();
    vm.vhost.wait().await.unwrap();

    // The image is untouched: the file's digest, and every artifact against the manifest.
    assert_eq!(sha256_file(&rootfs), rootfs_sha);
    store.verify(image.digest.as_str()).unwrap();

    // A guest whose init fails (here: no root drive) says which step failed on its console
    // and powers off; it never hangs.
    let work = tmp.path().join("vm-no-root");
    std::fs::create_dir(&work).unwrap();
    let mut vm = boot(&image, &work, false).await;
    let timeout = vm_init_root_timeout() + Duration::from_secs(60);
    match tokio::time::timeout(timeout, vm.qemu.wait()).await {
        Ok(status) => eprintln!("qemu without a root drive exited: {:?}", status.unwrap()),
        Err(_) => panic!(
            "a guest without its root drive still runs after {timeout:?}\nconsole:\n{}",
            vm.console_tail()
        ),
    }
    let console = std::fs::read_to_string(&vm.console).unwrap();
    assert!(
        console.contains("vm-init failed: step mount root: device /dev/vda did not appear"),
        "console:\n{}",
        vm.console_tail()
    );
    vm.vhost.start_kill().unwrap();
    vm.vhost.wait().await.unwrap();
}

/// How long VM init waits for the root device.
fn vm_init_root_timeout() -> Duration {
    Duration::from_secs(10)
}
