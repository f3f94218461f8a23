//! Restore-to-ready against boot-to-ready: one sandbox created by booting, one by restoring a
//! template of the same VM, alternately, through `FirecrackerBackend::create_timed` — the
//! record, the VMM's user and cgroup, Firecracker's spawn, its API, the agent's handshake and,
//! for a restore, the links to the template's files, the guest's reseed and its clock.
//!
//! `cargo bench -p luminaguard-firecracker --bench restore [-- --quick]`
//!
//! - With `LUMINAGUARD_FIRECRACKER` (a real binary, on a host whose KVM runs guests) and
//!   `LUMINAGUARD_IMAGE_STORE` + `LUMINAGUARD_FIRECRACKER_IMAGE` (an image with a `vmlinux`):
//!   real guests, so the figures are what a user gets.
//! - Otherwise against the fake Firecracker (`luminaguard-fake-firecracker`), which runs no
//!   guest: the figures are LuminaGuard's own orchestration cost around Firecracker, the part
//!   this project controls — not a guest's boot or restore time.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)] // bench code

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use luminaguard_backend::CreateRequest;
use luminaguard_core::{RuntimeDir, SandboxId, SandboxSpec};
use luminaguard_firecracker::{FirecrackerBackend, GuestImage};
use luminaguard_testkit::{median, ms};

const FAKE: &str = env!("CARGO_BIN_EXE_luminaguard-fake-firecracker");

/// The backend to measure and what it runs.
fn backend(root: &Path) -> (FirecrackerBackend, &'static str) {
    let real = std::env::var_os("LUMINAGUARD_FIRECRACKER").map(PathBuf::from);
    let image = luminaguard_firecracker::testing::real_image_from_env().unwrap();
    if let (Some(fc), Some(image)) = (real, image) {
        let backend = FirecrackerBackend::new(
            fc,
            GuestImage::from_store(&image).unwrap(),
            Default::default(),
        );
        return (backend, "real Firecracker, real guest");
    }
    let file = |name: &str| {
        let p = root.join(name);
        std::fs::write(&p, b"").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        p
    };
    let image = GuestImage {
        digest: None,
        kernel: file("vmlinux"),
        initrd: file("initramfs.cpio"),
        rootfs: file("rootfs.ext4"),
    };
    (
        FirecrackerBackend::new(PathBuf::from(FAKE), image, Default::default()),
        "fake Firecracker (no guest runs): LuminaGuard's orchestration only",
    )
}

fn request(runtime: &RuntimeDir, id: &str) -> CreateRequest {
    CreateRequest {
        id: SandboxId::new(id).unwrap(),
        spec: SandboxSpec::default(),
        workspace: None,
        persistent: false,
        // SAFETY: geteuid has no preconditions.
        without_cgroup: unsafe { libc::geteuid() } != 0,
        user: None,
        runtime: runtime.clone(),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let rounds = if quick { 5 } else { 60 };
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let runtime = RuntimeDir::new(tmp.path().join("rt")).unwrap();
    let (booting, what) = backend(tmp.path());
    std::fs::create_dir_all(runtime.root()).unwrap();
    let t = Instant::now();
    let template = booting
        .create_template(
            request(&runtime, "bench-template"),
            &runtime.root().join("template"),
        )
        .await
        .unwrap();
    let made = t.elapsed();
    let restoring = booting.clone().with_template(Some(template));

    let mut boot = Vec::new();
    let mut restore = Vec::new();
    let mut boot_launch = Vec::new();
    let mut restore_launch = Vec::new();
    for i in 0..rounds {
        for (backend, wall, launch, kind) in [
            (&booting, &mut boot, &mut boot_launch, "boot"),
            (&restoring, &mut restore, &mut restore_launch, "restore"),
        ] {
            let t = Instant::now();
            let (sandbox, timings) = backend
                .create_timed(request(&runtime, &format!("bench-{kind}-{i}")))
                .await
                .unwrap();
            wall.push(t.elapsed());
            launch.push(timings.total);
            sandbox.client().ping().await.unwrap();
            sandbox.destroy().await.unwrap();
        }
    }
    let row = |name: &str, v: &[Duration], launch: &[Duration]| {
        println!(
            "{name:<28} {:>9.2} ms {:>9.2} ms",
            ms(median(v.to_vec())),
            ms(median(launch.to_vec()))
        );
    };
    println!(
        "firecracker restore vs boot — {what}; medians of {rounds}{}",
        if quick { " [quick]" } else { "" }
    );
    println!("{:<28} {:>12} {:>12}", "", "create", "launch");
    row("boot to ready", &boot, &boot_launch);
    row("restore to ready", &restore, &restore_launch);
    println!(
        "restore / boot (create)      {:>9.2}×",
        median(restore.clone()).as_secs_f64() / median(boot.clone()).as_secs_f64()
    );
    println!("making the template: {:.2} ms", ms(made));
    println!(
        "(create: the whole Backend::create; launch: Firecracker's spawn to the agent's \
         handshake, and for a restore its reseed and clock)"
    );
}
