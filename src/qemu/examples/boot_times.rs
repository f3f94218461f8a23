//! Boots QEMU sandboxes one after another and prints where each boot's time goes: our own
//! preparation (directory, record, cgroup), vhost-device-vsock's start, QEMU + kernel + agent
//! until the agent accepts the vsock connection (split into VMM start and guest kernel boot by the
//! guest's own `/proc/uptime`, 10 ms resolution), and the protocol handshake; then the graceful
//! destroy.
//!
//! ```sh
//! sudo cargo run --release -p luminaguard-qemu --example boot_times -- [-n 5] [--image DIGEST] [--bzimage]
//! ```
//!
//! The image comes from the store in `LUMINAGUARD_IMAGE_STORE` (else the default store); the
//! newest one unless `--image` names one; `--bzimage` boots its bzImage instead of its ELF
//! `vmlinux`. Needs root (cgroups), QEMU and vhost-device-vsock.
#![allow(clippy::disallowed_methods)] // a measuring tool: set-up file reads are fine here

use std::path::PathBuf;
use std::time::{Duration, Instant};

use luminaguard_backend::{Backend, CreateRequest};
use luminaguard_core::{RuntimeDir, SandboxId, SandboxSpec};
use luminaguard_image::store::Store;
use luminaguard_protocol::ClientOptions;
use luminaguard_qemu::{Accel, GuestImage, QemuBackend};

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // RUST_LOG=luminaguard_backend=debug shows whether each destroy was graceful.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .try_init();
    let n: usize = arg("-n").map_or(Ok(5), |s| s.parse())?;
    let store_root = match std::env::var_os("LUMINAGUARD_IMAGE_STORE") {
        Some(s) => PathBuf::from(s),
        None => luminaguard_image::store::default_root(
            nix::unistd::getuid().as_raw(),
            std::env::var_os("XDG_DATA_HOME")
                .map(PathBuf::from)
                .as_deref(),
            std::env::var_os("HOME").map(PathBuf::from).as_deref(),
        )
        .ok_or("no image store: set LUMINAGUARD_IMAGE_STORE")?,
    };
    let store = Store::open(&store_root)?;
    let image = match arg("--image") {
        Some(d) => store.get(&d)?,
        None => luminaguard_qemu::newest_image(&store)?
            .ok_or("no image: run `luminaguard image build`")?,
    };
    let accel = if luminaguard_qemu::kvm::probe().is_usable() {
        Accel::Kvm
    } else {
        Accel::Tcg
    };
    let mut guest = GuestImage::from_store(&image)?;
    if std::env::args().any(|a| a == "--bzimage") {
        // Boot the bzImage instead of the ELF vmlinux, to compare.
        guest.kernel = image
            .artifact_path(luminaguard_image::store::ArtifactKind::Kernel)
            .ok_or("the image has no bzImage")?;
    }
    let backend = QemuBackend::new(
        luminaguard_qemu::find_program("qemu-system-x86_64")
            .ok_or("qemu-system-x86_64 not found")?,
        luminaguard_qemu::find_program("vhost-device-vsock")
            .ok_or("vhost-device-vsock not found")?,
        guest,
        accel,
        ClientOptions::default(),
    );
    let runtime_dir = tempfile::tempdir()?;
    let runtime = RuntimeDir::new(runtime_dir.path().join("rt"))?;
    println!(
        "image {} ({}), accel {accel}, {n} boots",
        &image.digest.to_string()[..12],
        image.manifest.kernel_release
    );
    println!("  prepare  vhost   vmm-start  kernel+agent  handshake  total   | destroy (ms)");
    for _ in 0..n {
        let req = CreateRequest {
            id: SandboxId::generate(),
            spec: SandboxSpec::default(),
            workspace: None,
            persistent: false,
            without_cgroup: false,
            runtime: runtime.clone(),
        };
        let (sandbox, t) = backend.create_timed(req).await?;
        let since_ready = Instant::now();
        // /proc/uptime (centiseconds) read right after the handshake: the guest's uptime when the
        // agent accepted the connection is that minus what has passed since.
        let uptime = sandbox.client().read_file("/proc/uptime", 64).await?;
        let secs: f64 = String::from_utf8_lossy(&uptime)
            .split_whitespace()
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or("unreadable /proc/uptime")?;
        let guest_up =
            Duration::from_secs_f64(secs).saturating_sub(since_ready.elapsed() + t.handshake);
        let vmm_start = t.boot.saturating_sub(guest_up);
        let d0 = Instant::now();
        sandbox.destroy().await?;
        let destroy = d0.elapsed();
        println!(
            "  {:7.1} {:7.1} {:9.1} {:13.1} {:10.1} {:7.1} | {:7.1}",
            ms(t.prepare),
            ms(t.vhost_start),
            ms(vmm_start),
            ms(guest_up),
            ms(t.handshake),
            ms(t.total),
            ms(destroy)
        );
    }
    let _ = backend.name();
    Ok(())
}
