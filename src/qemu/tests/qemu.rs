//! The QEMU backend's failure paths against real QEMU and vhost-device-vsock: a VMM that exits at
//! once, a guest kernel that panics, a helper that is missing — each reported promptly with what
//! went wrong, and nothing left behind (processes, sandbox directory, cgroup). Needs root
//! (cgroups), QEMU and vhost-device-vsock (`scripts/setup-vm`); the panic test also needs the
//! guest kernel (`LUMINAGUARD_GUEST_KERNEL_DIR`). Required in CI, skipped elsewhere.
//! The happy paths are in `src/cli/tests/qemu.rs`, through the `luminaguard` binary.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)] // test code

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use luminaguard_backend::{Backend, BackendError, CreateRequest};
use luminaguard_core::{RuntimeDir, SandboxId, SandboxSpec};
use luminaguard_protocol::ClientOptions;
use luminaguard_qemu::{Accel, GuestImage, QemuBackend};

struct Programs {
    qemu: PathBuf,
    vhost: PathBuf,
}

fn programs() -> Option<Programs> {
    if !luminaguard_testkit::privileged("the QEMU backend failure tests") {
        return None;
    }
    let find = |name: &str| {
        let found = luminaguard_qemu::find_program(name);
        if found.is_none() {
            assert!(
                std::env::var_os("CI").is_none(),
                "{name} not found: CI must run scripts/setup-vm"
            );
            eprintln!("skipped: {name} not found (run scripts/setup-vm)");
        }
        found
    };
    Some(Programs {
        qemu: find("qemu-system-x86_64")?,
        vhost: find("vhost-device-vsock")?,
    })
}

fn request(rt: &Path) -> CreateRequest {
    CreateRequest {
        id: SandboxId::generate(),
        spec: SandboxSpec {
            memory: luminaguard_core::ByteSize::mib(128),
            ..SandboxSpec::default()
        },
        workspace: None,
        persistent: false,
        without_cgroup: false,
        runtime: RuntimeDir::new(rt.join("rt")).unwrap(),
    }
}

fn backend(p: &Programs, kernel: PathBuf, initrd: PathBuf) -> QemuBackend {
    QemuBackend::new(
        p.qemu.clone(),
        p.vhost.clone(),
        GuestImage {
            digest: None,
            kernel,
            initrd,
            rootfs: None,
            kernel_release: "test".into(),
        },
        Accel::Tcg,
        ClientOptions::default(),
    )
}

fn assert_nothing_left(rt: &Path, id: &SandboxId) {
    let rt_str = rt.to_str().unwrap();
    let procs = luminaguard_testkit::live_processes_matching(&[rt_str]);
    assert!(procs.is_empty(), "processes left: {procs:?}");
    let left: Vec<_> = std::fs::read_dir(rt.join("rt/sandboxes"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "sandbox directories left: {left:?}");
    let planned = luminaguard_cgroup::Hierarchy::detect()
        .unwrap()
        .planned(id.as_str())
        .unwrap();
    for d in planned.dirs() {
        assert!(!d.exists(), "cgroup left: {}", d.display());
    }
}

/// A temporary directory the VMM's unprivileged user can read (the kernel and initramfs live
/// there) and pass through (the runtime directory does too).
fn world_readable_tempdir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    tmp
}

fn file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

#[tokio::test]
async fn a_vmm_that_exits_at_once_is_reported_at_once_and_cleaned_up() {
    let Some(p) = programs() else { return };
    let tmp = world_readable_tempdir();
    // Not a kernel: QEMU refuses it and exits during start-up.
    let kernel = file(tmp.path(), "not-a-kernel", &[0u8; 4096]);
    let initrd = file(tmp.path(), "initrd", b"x");
    let req = request(tmp.path());
    let id = req.id.clone();
    let start = Instant::now();
    let err = backend(&p, kernel, initrd).create(req).await.unwrap_err();
    let took = start.elapsed();
    let msg = err.to_string();
    eprintln!("reported: {msg}");
    assert!(
        msg.contains("QEMU exited"),
        "the error says QEMU died: {msg}"
    );
    assert!(
        took < Duration::from_secs(10),
        "reported when QEMU died, not at the 30 s boot timeout: {took:?}"
    );
    assert_nothing_left(tmp.path(), &id);
}

#[tokio::test]
async fn a_guest_kernel_panic_is_reported_with_the_console_tail() {
    let Some(p) = programs() else { return };
    let Some(dir) = std::env::var_os("LUMINAGUARD_GUEST_KERNEL_DIR") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must set LUMINAGUARD_GUEST_KERNEL_DIR (scripts/test exports it)"
        );
        eprintln!("skipped: LUMINAGUARD_GUEST_KERNEL_DIR is not set");
        return;
    };
    let kernel = std::fs::read_dir(Path::new(&dir).join("boot"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("vmlinuz-")
        })
        .unwrap();
    let tmp = world_readable_tempdir();
    // An initramfs that is not one: the kernel finds no init and panics; `panic=-1` reboots at
    // once and `-no-reboot` turns that into QEMU exiting.
    let initrd = file(tmp.path(), "initrd", &[0x55u8; 4096]);
    let req = request(tmp.path());
    let id = req.id.clone();
    let start = Instant::now();
    let err = backend(&p, kernel, initrd).create(req).await.unwrap_err();
    let took = start.elapsed();
    let msg = err.to_string();
    eprintln!("reported: {msg}");
    assert!(
        matches!(
            err,
            BackendError::Setup {
                step: "boot the VM",
                ..
            }
        ),
        "{msg}"
    );
    assert!(
        msg.contains("QEMU exited") && msg.contains("Kernel panic"),
        "the error carries the console's panic: {msg}"
    );
    assert!(
        took < luminaguard_qemu::backend::BOOT_TIMEOUT_TCG,
        "reported when the guest died: {took:?}"
    );
    assert_nothing_left(tmp.path(), &id);
}

#[tokio::test]
async fn a_missing_vsock_helper_is_named_and_nothing_is_left() {
    let Some(p) = programs() else { return };
    let tmp = world_readable_tempdir();
    let b = QemuBackend::new(
        p.qemu.clone(),
        tmp.path().join("no-such-vhost-device-vsock"),
        GuestImage {
            digest: None,
            kernel: tmp.path().join("k"),
            initrd: tmp.path().join("i"),
            rootfs: None,
            kernel_release: "test".into(),
        },
        Accel::Tcg,
        ClientOptions::default(),
    );
    let req = request(tmp.path());
    let id = req.id.clone();
    let msg = b.create(req).await.unwrap_err().to_string();
    assert!(
        msg.contains("start vhost-device-vsock") && msg.contains("no-such-vhost-device-vsock"),
        "{msg}"
    );
    assert_nothing_left(tmp.path(), &id);
}
