//! The QEMU backend's failure paths against real QEMU and vhost-device-vsock: a VMM that exits at
//! once, a guest kernel that panics, a helper that is missing — each reported promptly with what
//! went wrong, and nothing left behind (processes, sandbox directory, cgroup). Needs root
//! (cgroups), QEMU and vhost-device-vsock (`scripts/setup-vm`); the panic test also needs the
//! guest kernel (`LUMINAGUARD_GUEST_KERNEL_DIR`). Required in CI, skipped elsewhere. Also: a guest
//! that floods its serial console, against an image built here (`LUMINAGUARD_STATIC_AGENT` too):
//! the console log stays bounded, the VM keeps serving, a panic is still at the log's end.
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
        let found = luminaguard_qemu::find_program(name, None);
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
        user: None,
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
    let dir = rt.join("rt/sandboxes").join(id.as_str());
    let planned = luminaguard_cgroup::Hierarchy::detect()
        .unwrap()
        .planned(&luminaguard_backend::cgroup_name(id, &dir))
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

/// A request with an egress policy allowing `allow`.
fn request_with_net(rt: &Path, allow: &str) -> CreateRequest {
    let mut req = request(rt);
    req.spec.network = luminaguard_core::NetworkPolicy::Egress {
        allow: vec![allow.parse().unwrap()],
        deny: vec![],
    };
    req
}

/// Whether any of the sandbox's network objects exist: its router namespace, its uplink link.
fn net_left(id: &SandboxId, uplink_netns: &str) -> Vec<String> {
    let names = luminaguard_net::NetNames::for_sandbox(id);
    let mut left = Vec::new();
    if Path::new("/run/netns").join(&names.router_netns).exists() {
        left.push(names.router_netns.clone());
    }
    let link = std::process::Command::new("ip")
        .args([
            "-n",
            uplink_netns,
            "link",
            "show",
            "dev",
            &names.uplink_host,
        ])
        .output()
        .unwrap();
    if link.status.success() {
        left.push(names.uplink_host);
    }
    left
}

/// With an egress policy, whatever fails — the network set-up itself (an uplink that does not
/// forward), or QEMU after the network exists (not a kernel) — is named, and neither processes
/// nor the sandbox's network are left.
#[tokio::test]
async fn a_failed_create_with_a_network_policy_leaves_no_network() {
    let Some(p) = programs() else { return };
    let tmp = world_readable_tempdir();
    let net = luminaguard_testkit::netlab::FakeInternet::new();
    let b = backend(
        &p,
        file(tmp.path(), "not-a-kernel", &[0u8; 4096]),
        file(tmp.path(), "initrd", b"x"),
    )
    .with_uplink(luminaguard_net::Uplink {
        netns: Some(net.host.clone()),
        pool: None,
    });
    let allow = format!("{}:80", luminaguard_testkit::netlab::SERVER);

    let req = request_with_net(tmp.path(), &allow);
    let id = req.id.clone();
    let msg = b.create(req).await.unwrap_err().to_string();
    assert!(msg.contains("QEMU"), "{msg}");
    assert_nothing_left(tmp.path(), &id);
    assert_eq!(net_left(&id, &net.host), Vec::<String>::new());

    let off = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &net.host,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=0",
        ])
        .status()
        .unwrap();
    assert!(off.success());
    let req = request_with_net(tmp.path(), &allow);
    let id = req.id.clone();
    let msg = b.create(req).await.unwrap_err().to_string();
    assert!(
        msg.contains("set up network egress") && msg.contains("net.ipv4.ip_forward"),
        "{msg}"
    );
    assert_nothing_left(tmp.path(), &id);
    assert_eq!(net_left(&id, &net.host), Vec::<String>::new());
}

/// Domain rules need a resolver; a backend built without one refuses them, leaving nothing.
#[tokio::test]
async fn a_policy_naming_a_domain_is_refused_without_a_resolver() {
    let Some(p) = programs() else { return };
    let tmp = world_readable_tempdir();
    let b = backend(&p, tmp.path().join("k"), tmp.path().join("i"));
    let req = request_with_net(tmp.path(), "api.example.com:443");
    let id = req.id.clone();
    let msg = b.create(req).await.unwrap_err().to_string();
    assert!(
        msg.contains("set up network egress") && msg.contains("DNS-pinning resolver"),
        "{msg}"
    );
    assert!(
        !tmp.path().join("rt/sandboxes").join(id.as_str()).exists(),
        "no sandbox directory"
    );
    assert_nothing_left(tmp.path(), &id);
}

/// An image built from `LUMINAGUARD_GUEST_KERNEL_DIR` and `LUMINAGUARD_STATIC_AGENT` with the
/// host-programs root, in a store under the target directory (a second build finds it there).
fn built_image() -> Option<luminaguard_image::store::Image> {
    image_with_tools(
        "qemu-backend-images",
        luminaguard_image::hostroot::HOST_TOOLS,
    )
}

/// [`built_image`]'s recipe with the host programs `tools`, in store `<target tmp>/<dir>`.
fn image_with_tools(dir: &str, tools: &[&str]) -> Option<luminaguard_image::store::Image> {
    use luminaguard_image::build::{BuildInputs, KernelSource, build};
    let kernel = std::env::var_os("LUMINAGUARD_GUEST_KERNEL_DIR");
    let agent = std::env::var_os("LUMINAGUARD_STATIC_AGENT");
    let (Some(kernel), Some(agent)) = (kernel, agent) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must set LUMINAGUARD_GUEST_KERNEL_DIR and LUMINAGUARD_STATIC_AGENT \
             (scripts/test exports them)"
        );
        eprintln!("skipped: LUMINAGUARD_GUEST_KERNEL_DIR or LUMINAGUARD_STATIC_AGENT is not set");
        return None;
    };
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(dir);
    let root = base.join("root");
    if !root.exists() {
        luminaguard_image::hostroot::assemble(&root, tools).unwrap();
    }
    let store = luminaguard_image::store::Store::open(&base.join("store")).unwrap();
    let built = build(
        &store,
        &BuildInputs {
            kernel: KernelSource::from_tree(Path::new(&kernel)).unwrap(),
            agent: PathBuf::from(agent),
            rootfs: root,
            created_by: "luminaguard-qemu tests".into(),
            includes: Vec::new(),
            packages: Vec::new(),
        },
    )
    .unwrap();
    Some(built.image)
}

/// Waits (polling, at most `limit`) until `done` holds.
async fn until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_flooding_its_console_keeps_the_log_bounded_and_the_vm_serving() {
    use luminaguard_protocol::ExecRequest;
    let Some(p) = programs() else { return };
    let Some(image) = tokio::task::spawn_blocking(built_image).await.unwrap() else {
        return;
    };
    // Small limits, so that a flood through the emulated UART (a few hundred KB/s under TCG)
    // goes through many compactions in seconds; the default sizes are unit-tested.
    let limits = luminaguard_qemu::ConsoleLimits {
        head: 4 * 1024,
        tail: 16 * 1024,
        max: 64 * 1024,
    };
    let backend = QemuBackend::new(
        p.qemu.clone(),
        p.vhost.clone(),
        GuestImage::from_store(&image).unwrap(),
        Accel::Tcg,
        ClientOptions::default(),
    )
    .with_console_limits(limits)
    .unwrap();
    let tmp = world_readable_tempdir();
    let mut req = request(tmp.path());
    req.spec = SandboxSpec::default();
    let id = req.id.clone();
    let sandbox = backend.create(req).await.unwrap();
    let console = sandbox.dir.join("console.log");
    let meta = sandbox.meta.clone();
    assert_eq!(
        meta.helpers.len(),
        2,
        "vhost-device-vsock and the console keeper"
    );
    let keeper = meta.helpers[1];
    assert_eq!(
        std::fs::read_to_string(format!("/proc/{}/comm", keeper.pid))
            .unwrap()
            .trim(),
        "lg-console"
    );
    let uid = meta.vmm_uid.unwrap();
    let status = std::fs::read_to_string(format!("/proc/{}/status", keeper.pid)).unwrap();
    assert!(
        status.contains(&format!("Uid:\t{uid}\t{uid}\t{uid}\t{uid}")),
        "the keeper runs as the VMM's user: {status}"
    );

    // 100-byte lines, forever (the exec's timeout ends it at the latest).
    let line = "x".repeat(99);
    let flood = sandbox
        .client()
        .exec(ExecRequest {
            argv: vec![
                "sh".into(),
                "-c".into(),
                format!("while :; do echo {line}; done > /dev/ttyS0"),
            ],
            timeout_ms: Some(300_000),
            ..ExecRequest::default()
        })
        .await
        .unwrap();
    // Until 8 × the maximum has gone through, the file never exceeds the maximum.
    let dropped = |text: &str| -> u64 {
        text.rsplit_once("[luminaguard: ")
            .and_then(|(_, r)| r.split_once(' '))
            .and_then(|(n, _)| n.parse().ok())
            .unwrap_or(0)
    };
    let mut biggest = 0;
    let flood_start = Instant::now();
    until(
        "8 × the maximum flooded through",
        Duration::from_secs(120),
        || {
            let bytes = std::fs::read(&console).unwrap();
            biggest = biggest.max(bytes.len() as u64);
            assert!(bytes.len() as u64 <= limits.max, "{} bytes", bytes.len());
            dropped(&String::from_utf8_lossy(&bytes)) >= 8 * limits.max
        },
    )
    .await;
    let took = flood_start.elapsed();
    let text = String::from_utf8_lossy(&std::fs::read(&console).unwrap()).into_owned();
    eprintln!(
        "largest console.log seen: {biggest} bytes; {} bytes dropped after {took:?} of flooding \
         ({:.0} KB/s through the emulated UART)",
        dropped(&text),
        dropped(&text) as f64 / took.as_secs_f64() / 1000.0
    );
    let head = &text[..limits.head as usize];
    assert!(
        head.contains("listening"),
        "the head keeps the boot, the agent's start included: {head}"
    );
    assert!(
        text[limits.head as usize..].starts_with("\n[luminaguard: "),
        "the marker follows the head"
    );
    assert!(
        text[text.len() - 1000..].contains(&line),
        "the end is the newest output"
    );

    // The VM keeps serving while the flood goes on.
    let t = Instant::now();
    let out = sandbox
        .client()
        .exec_output(
            ExecRequest {
                argv: vec!["sh".into(), "-c".into(), "echo still here".into()],
                timeout_ms: Some(60_000),
                ..ExecRequest::default()
            },
            None,
        )
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "still here\n");
    eprintln!("an exec during the flood took {:?}", t.elapsed());

    // A kernel panic in the middle of the flood is still the end of the console, and the error
    // excerpt finds it.
    // (Dropping an exec's stream cancels it: keep it.)
    let crash = sandbox
        .client()
        .exec(ExecRequest {
            argv: vec![
                "sh".into(),
                "-c".into(),
                "echo c > /proc/sysrq-trigger; sleep 60".into(),
            ],
            timeout_ms: Some(60_000),
            ..ExecRequest::default()
        })
        .await;
    let init = meta.init.unwrap();
    until(
        "QEMU exits after the panic",
        Duration::from_secs(60),
        || !init.alive(),
    )
    .await;
    until("the keeper ends with QEMU", Duration::from_secs(10), || {
        !keeper.alive()
    })
    .await;
    drop((flood, crash));
    let bytes = std::fs::read(&console).unwrap();
    assert!(bytes.len() as u64 <= limits.max, "{} bytes", bytes.len());
    let tail = luminaguard_backend::console_tail(&console, 4096).await;
    assert!(
        tail.contains("Kernel panic"),
        "the panic is in the console's tail: {tail}"
    );

    sandbox.destroy().await.unwrap();
    for h in &meta.helpers {
        assert!(!h.alive(), "helper {} left", h.pid);
    }
    assert_nothing_left(tmp.path(), &id);
}

/// The cgroup paths (one per hierarchy) `/proc/<pid>/cgroup` lists for `pid`.
fn cgroup_paths_of(pid: i32) -> Vec<String> {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap()
        .lines()
        .filter_map(|l| l.splitn(3, ':').nth(2).map(str::to_owned))
        .collect()
}

/// A sandbox with the default spec on the test image under TCG, in its own runtime directory
/// (keep the `TempDir`); `None` when the programs or the image are missing (outside CI).
async fn default_sandbox() -> Option<(luminaguard_backend::Sandbox, tempfile::TempDir, SandboxId)> {
    let p = programs()?;
    let image = tokio::task::spawn_blocking(built_image).await.unwrap()?;
    let backend = QemuBackend::new(
        p.qemu.clone(),
        p.vhost.clone(),
        GuestImage::from_store(&image).unwrap(),
        Accel::Tcg,
        ClientOptions::default(),
    );
    let tmp = world_readable_tempdir();
    let mut req = request(tmp.path());
    req.spec = SandboxSpec::default();
    let id = req.id.clone();
    let sandbox = backend.create(req).await.unwrap();
    Some((sandbox, tmp, id))
}

/// By the time `create` returns, QEMU, vhost-device-vsock and the console keeper are each in every
/// one of the sandbox's cgroup directories (one per v1 hierarchy, or the v2 group).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_vmm_and_its_helpers_are_in_the_sandboxs_cgroup_when_create_returns() {
    let Some((sandbox, tmp, id)) = default_sandbox().await else {
        return;
    };
    let meta = sandbox.meta.clone();
    assert!(!meta.cgroup_dirs.is_empty(), "the sandbox has a cgroup");
    let qemu = meta.init.unwrap();
    assert_eq!(meta.helpers.len(), 2, "vhost-device-vsock and the keeper");
    for (what, pid) in [
        ("QEMU", qemu.pid),
        ("vhost-device-vsock", meta.helpers[0].pid),
        ("the console keeper", meta.helpers[1].pid),
    ] {
        let paths = cgroup_paths_of(pid);
        for dir in &meta.cgroup_dirs {
            let dir = dir.to_str().unwrap();
            assert!(
                paths.iter().any(|p| p != "/" && dir.ends_with(p.as_str())),
                "{what} (pid {pid}) is not in {dir}: /proc/{pid}/cgroup lists {paths:?}"
            );
        }
    }
    sandbox.destroy().await.unwrap();
    assert_nothing_left(tmp.path(), &id);
}

/// The agent in a real guest kernel does what a VM restored from a snapshot is sent (see
/// `luminaguard_agent::entropy` and `luminaguard_agent::clock`): it takes fresh entropy and
/// reseeds the kernel's CRNG (64 bytes accepted, 8 refused, the connection kept), and sets the
/// guest's wall clock — a file written afterwards carries the time it was given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guest_agent_reseeds_the_guest_kernel_and_takes_the_hosts_time() {
    use luminaguard_protocol::handshake::capability::{RESEED, SET_CLOCK};
    let Some((sandbox, tmp, id)) = default_sandbox().await else {
        return;
    };
    let client = sandbox.client();
    for capability in [RESEED, SET_CLOCK] {
        assert!(
            client.peer().capabilities.iter().any(|c| c == capability),
            "{capability}: {:?}",
            client.peer()
        );
    }
    let fresh: Vec<u8> = (0..64).map(|i| (i * 37 + 11) as u8).collect();
    client.reseed(fresh).await.unwrap();
    let err = client.reseed(vec![0; 8]).await.unwrap_err().to_string();
    assert!(err.contains("32 to 512 bytes"), "{err}");
    client.ping().await.unwrap();

    // A day ahead of the host: unmistakably the time the agent was given.
    const DAY_MS: i64 = 86_400_000;
    let now_ms = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap();
    let set_ms = now_ms + DAY_MS;
    client
        .set_clock(u64::try_from(set_ms).unwrap() * 1_000_000)
        .await
        .unwrap();
    client.write_file("/tmp/when", 0o644, b"now").await.unwrap();
    let mtime = client.stat("/tmp/when", true).await.unwrap().mtime_unix_ms;
    assert!(
        (set_ms..set_ms + 60_000).contains(&mtime),
        "the file's time {mtime} is not the clock set, {set_ms}"
    );
    sandbox.destroy().await.unwrap();
    assert_nothing_left(tmp.path(), &id);
}

/// An image like [`built_image`]'s with `bash` too (its `/dev/tcp` is the guest's TCP client).
fn net_image() -> Option<luminaguard_image::store::Image> {
    let mut tools = luminaguard_image::hostroot::HOST_TOOLS.to_vec();
    tools.push("bash");
    image_with_tools("qemu-net-images", &tools)
}

/// A microVM with an egress policy, end to end under TCG against the fake internet
/// (`luminaguard_testkit::netlab`): the guest's NIC (virtio-net on the sandbox's tap, configured
/// by VM init) reaches the allowed host:port; another port, another host, the metadata endpoint
/// and the host are refused; destroying the sandbox removes its network.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_microvm_with_an_egress_policy_reaches_the_allowed_server_and_nothing_else() {
    use luminaguard_core::NetworkPolicy;
    use luminaguard_protocol::ExecRequest;
    use luminaguard_testkit::netlab::{FakeInternet, HOST_ADDR, METADATA, NEIGHBOUR, SERVER};
    let Some(p) = programs() else { return };
    let Some(image) = tokio::task::spawn_blocking(net_image).await.unwrap() else {
        return;
    };
    let net = FakeInternet::new();
    let uplink = luminaguard_net::Uplink {
        netns: Some(net.host.clone()),
        pool: None,
    };
    let backend = QemuBackend::new(
        p.qemu.clone(),
        p.vhost.clone(),
        GuestImage::from_store(&image).unwrap(),
        Accel::Tcg,
        ClientOptions::default(),
    )
    .with_uplink(uplink.clone());
    let tmp = world_readable_tempdir();
    let mut req = request(tmp.path());
    req.spec = SandboxSpec {
        network: NetworkPolicy::Egress {
            allow: vec![format!("{SERVER}:80").parse().unwrap()],
            deny: vec![],
        },
        ..SandboxSpec::default()
    };
    let id = req.id.clone();
    let names = luminaguard_net::NetNames::for_sandbox(&id);
    // Should an assertion fail before the sandbox is destroyed: its router namespace (the tap
    // inside) goes anyway; the uplink goes with the fake internet.
    struct RemoveNetns(String);
    impl Drop for RemoveNetns {
        fn drop(&mut self) {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", &self.0])
                .output();
        }
    }
    let _guard = RemoveNetns(names.router_netns.clone());
    let sandbox = backend.create(req).await.unwrap();
    assert_eq!(sandbox.meta.net.as_ref(), Some(&uplink), "recorded for gc");
    assert!(Path::new("/run/netns").join(&names.router_netns).exists());

    let sh = |script: String| {
        let client = sandbox.client().clone();
        async move {
            client
                .exec_output(
                    ExecRequest {
                        argv: vec!["bash".into(), "-c".into(), script],
                        timeout_ms: Some(60_000),
                        ..ExecRequest::default()
                    },
                    None,
                )
                .await
                .unwrap()
        }
    };
    // VM init configured the NIC from luminaguard.net=.
    let conf = sh("cat /proc/net/route".into()).await;
    let conf = String::from_utf8_lossy(&conf.stdout).into_owned();
    // Default route (destination 0) via 10.255.255.1 (little-endian hex 01FFFF0A) on eth0.
    assert!(
        conf.lines()
            .any(|l| l.starts_with("eth0\t00000000\t01FFFF0A")),
        "{conf}"
    );
    let tcp =
        |host: String, port: u16| sh(format!("exec 3<>/dev/tcp/{host}/{port} && head -c 64 <&3"));
    let ok = tcp(SERVER.to_string(), 80).await;
    assert_eq!(
        String::from_utf8_lossy(&ok.stdout),
        format!("hello {SERVER}:80\n"),
        "the allowed host:port; stderr: {}",
        String::from_utf8_lossy(&ok.stderr)
    );
    for (host, port, what) in [
        (SERVER, 81, "another port"),
        (NEIGHBOUR, 80, "another host"),
        (METADATA, 80, "cloud metadata"),
        (HOST_ADDR, 80, "the host's own address"),
    ] {
        let t = Instant::now();
        let out = tcp(host.to_string(), port).await;
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.stdout.is_empty(), "{what}: {:?}", out.stdout);
        // Refused by the router table (ICMP administratively prohibited), not timed out.
        assert!(err.contains("No route to host"), "{what}: {err}");
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "{what}: {:?}",
            t.elapsed()
        );
    }

    let meta = sandbox.meta.clone();
    sandbox.destroy().await.unwrap();
    for h in &meta.helpers {
        assert!(!h.alive(), "helper {} left", h.pid);
    }
    assert_nothing_left(tmp.path(), &id);
    assert!(
        !Path::new("/run/netns").join(&names.router_netns).exists(),
        "router namespace left"
    );
    let link = std::process::Command::new("ip")
        .args(["-n", &net.host, "link", "show", "dev", &names.uplink_host])
        .output()
        .unwrap();
    assert!(!link.status.success(), "uplink link left");
}
