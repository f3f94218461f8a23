//! Boots QEMU sandboxes one after another and prints where each boot's time goes (see
//! `BootTimings`): ours — preparation (directory, record, cgroup, identity), set-up while
//! vhost-device-vsock starts (console keeper, records, command line), spawning QEMU — and what we
//! wait for: the part of vhost-device-vsock's start not hidden behind our set-up, QEMU's start
//! and the guest's boot until the agent's ready signal (split by the guest's own `/proc/uptime`,
//! 10 ms resolution), the `CONNECT` round trip and the protocol handshake. Then, on the running
//! VM, the same `CONNECT` and handshake again on a second connection, and one request round trip
//! (warm: the guest has run that code before), and the graceful destroy.
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
        luminaguard_qemu::find_program("qemu-system-x86_64", None)
            .ok_or("qemu-system-x86_64 not found")?,
        luminaguard_qemu::find_program("vhost-device-vsock", None)
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
    println!(
        "  ours: prepare setup spawn  sum | vhost: start wait | vmm-start kernel+agent | dial handshake | total | warm: dial handshake rtt | destroy (ms)"
    );
    for _ in 0..n {
        let req = CreateRequest {
            id: SandboxId::generate(),
            spec: SandboxSpec::default(),
            workspace: None,
            persistent: false,
            without_cgroup: false,
            user: None,
            runtime: runtime.clone(),
        };
        let (sandbox, t) = backend.create_timed(req).await?;
        let since_ready = Instant::now();
        // /proc/uptime (centiseconds) read right after the handshake: the guest's uptime at the
        // ready signal is that minus what has passed since.
        let uptime = sandbox.client().read_file("/proc/uptime", 64).await?;
        let secs: f64 = String::from_utf8_lossy(&uptime)
            .split_whitespace()
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or("unreadable /proc/uptime")?;
        let guest_up = Duration::from_secs_f64(secs)
            .saturating_sub(since_ready.elapsed() + t.handshake + t.dial);
        let vmm_start = t.boot.saturating_sub(guest_up);
        // Warm: a second connection to the same agent, then one request.
        let uds = sandbox.dir.join("agent.sock");
        let w0 = Instant::now();
        let stream = luminaguard_vsock::connect(
            &uds,
            luminaguard_protocol::AGENT_VSOCK_PORT,
            Duration::from_secs(5),
        )
        .await?
        .into_stream();
        let warm_dial = w0.elapsed();
        let w1 = Instant::now();
        let second =
            luminaguard_protocol::Client::connect(stream, ClientOptions::default()).await?;
        let warm_hs = w1.elapsed();
        let w2 = Instant::now();
        second.read_file("/proc/uptime", 64).await?;
        let rtt = w2.elapsed();
        drop(second);
        let d0 = Instant::now();
        sandbox.destroy().await?;
        let destroy = d0.elapsed();
        println!(
            "  {:13.1} {:5.1} {:5.1} {:4.1} | {:12.1} {:4.1} | {:9.1} {:12.1} | {:4.1} {:9.1} | {:5.0} | {:10.1} {:9.1} {:3.1} | {:7.1}",
            ms(t.prepare),
            ms(t.setup),
            ms(t.qemu_spawn),
            ms(t.ours()),
            ms(t.vhost_start),
            ms(t.vhost_wait),
            ms(vmm_start),
            ms(guest_up),
            ms(t.dial),
            ms(t.handshake),
            ms(t.total),
            ms(warm_dial),
            ms(warm_hs),
            ms(rtt),
            ms(destroy)
        );
    }
    let _ = backend.name();
    Ok(())
}
