//! A real process sandbox: the agent as PID 1 of new namespaces in a pivot_root'ed root, driven
//! over its socket. Root only; required in CI.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)] // test code

use std::path::Path;

use std::os::fd::OwnedFd;

use luminaguard_backend::console::ConsoleLimits;
use luminaguard_backend::seccomp_watch::SeccompWatch;
use luminaguard_backend::{Backend, CreateRequest};
use luminaguard_process_sandbox::backend::ProcessBackend;
use luminaguard_process_sandbox::init::{InitConfig, WorkspaceSource};
use luminaguard_process_sandbox::launch::{AgentChannel, Identity, Launch, launch};
use luminaguard_protocol::message::ExecRequest;
use luminaguard_protocol::{Client, ClientOptions, ExecOutput};
use luminaguard_testkit::text;
use nix::sys::wait::waitpid;

const AGENT: &str = env!("CARGO_BIN_EXE_luminaguard-agent");

fn config(staging: &Path) -> InitConfig {
    InitConfig {
        staging_root: staging.to_owned(),
        workspace: WorkspaceSource::Scratch,
        scratch_size: 64 << 20,
        hostname: "lg-test".into(),
        open_files: 1024,
        file_size: 1 << 30,
        landlock_required: true,
        seccomp_profile: "default".into(),
        lifetime_ms: None,
        resolv_conf: None,
        review: None,
        mounts: Vec::new(),
    }
}

/// A process sandbox through the backend, as `luminaguard run` makes one (rootless identity
/// when not root, the sandbox's own when root), with a workspace.
async fn sandbox(rt: &Path, ws: &Path) -> luminaguard_backend::Sandbox {
    let spec = luminaguard_core::SandboxSpec {
        backend: luminaguard_core::BackendChoice::Process,
        ..Default::default()
    };
    let req = CreateRequest {
        id: luminaguard_core::SandboxId::generate(),
        spec,
        workspace: Some(
            luminaguard_core::Workspace::resolve_blocking(ws, &Default::default()).unwrap(),
        ),
        persistent: false,
        without_cgroup: false,
        user: None,
        runtime: luminaguard_core::RuntimeDir::new(rt).unwrap(),
    };
    ProcessBackend::new(AGENT.into(), ClientOptions::default())
        .create(req)
        .await
        .unwrap()
}

/// A keeper for a sandbox launched by hand (console and seccomp supervisor), in `dir`.
async fn keeper(dir: &Path) -> (OwnedFd, OwnedFd) {
    let (keeper_end, init_end) = std::os::unix::net::UnixStream::pair().unwrap();
    let record = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(dir.join("seccomp.audit"))
        .unwrap();
    let watch = SeccompWatch::new(OwnedFd::from(keeper_end), OwnedFd::from(record)).unwrap();
    let started = luminaguard_backend::console::start_console(
        &dir.join("console.log"),
        ConsoleLimits::DEFAULT,
        &[],
        None,
        Some(watch),
    )
    .await
    .unwrap();
    (started.vmm_end, OwnedFd::from(init_end))
}

async fn sh(c: &Client, script: &str) -> ExecOutput {
    let req = ExecRequest {
        argv: vec!["/bin/sh".into(), "-c".into(), script.into()],
        timeout_ms: Some(20_000),
        ..Default::default()
    };
    c.exec_output(req, None).await.unwrap()
}

#[tokio::test]
async fn process_sandbox_isolates_and_serves() {
    if !luminaguard_testkit::privileged("the process sandbox") {
        return;
    }
    let rt = tempfile::tempdir().unwrap();
    let ws = tempfile::tempdir().unwrap();
    std::fs::write(ws.path().join("hello"), "from the host\n").unwrap();
    let sandbox = sandbox(rt.path(), ws.path()).await;
    let c = sandbox.client();
    let init = sandbox.meta.init.unwrap().pid;

    let info = c.info().await.unwrap();
    assert!(info.is_pid1 && info.pid == 1, "{info:?}");
    assert_eq!(info.hostname, "luminaguard");

    // The workspace is shared both ways.
    assert_eq!(
        text(&sh(c, "cat /workspace/hello").await.stdout),
        "from the host\n"
    );
    assert_eq!(
        sh(c, "echo from the sandbox > /workspace/out")
            .await
            .status
            .code,
        Some(0)
    );
    assert_eq!(
        std::fs::read_to_string(ws.path().join("out")).unwrap(),
        "from the sandbox\n"
    );

    // Everything else is read-only, and host secrets are not there.
    let out = sh(c, "touch /usr/x 2>&1 || echo usr-ro; touch /x 2>&1 || echo root-ro; touch /etc/x 2>&1 || echo etc-ro; \
                     cat /etc/shadow 2>/dev/null | wc -c; ls -A /root | wc -l; ls -A /home | wc -l; cat /proc/kcore 2>/dev/null | wc -c").await;
    let t = text(&out.stdout);
    for want in ["usr-ro", "root-ro", "etc-ro"] {
        assert!(t.lines().any(|l| l == want), "{want} missing:\n{t}");
    }
    let numbers: Vec<&str> = t
        .lines()
        .filter(|l| l.trim().chars().all(|c| c.is_ascii_digit()))
        .collect();
    assert_eq!(
        numbers,
        vec!["0", "0", "0", "0"],
        "shadow, /root, /home and /proc/kcore must be unreadable or empty:\n{t}\n{}",
        text(&out.stderr)
    );

    // Confinement of the agent and of what it runs.
    let status = text(
        &sh(
            c,
            "grep -E '^(NoNewPrivs|CapEff|CapBnd|Seccomp):' /proc/self/status",
        )
        .await
        .stdout,
    );
    for want in [
        "NoNewPrivs:\t1",
        "CapEff:\t0000000000000000",
        "CapBnd:\t0000000000000000",
        "Seccomp:\t2",
    ] {
        assert!(status.contains(want), "{want} missing:\n{status}");
    }
    // Own PID namespace (only the sandbox's processes), only a loopback interface, no mounting.
    let out = sh(c, "ls /proc | grep -c '^[0-9]'; tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '; mount -t tmpfs none /tmp 2>&1 || echo mount-denied").await;
    let t = text(&out.stdout);
    let lines: Vec<&str> = t.lines().collect();
    assert!(
        lines[0].parse::<u32>().unwrap() < 10,
        "too many processes visible:\n{t}"
    );
    assert_eq!(lines[1], "lo", "interfaces:\n{t}");
    assert!(t.contains("mount-denied"), "{t}");
    // Loopback is up (IFF_UP), so programs that talk to themselves over 127.0.0.1 work once a
    // network profile allows AF_INET; it reaches nothing outside the sandbox's namespace.
    // (Seen from the host: inside, netlink sockets are refused and there is no /sys.)
    let link = std::process::Command::new("nsenter")
        .args([
            "-t",
            &init.to_string(),
            "-n",
            "ip",
            "-o",
            "link",
            "show",
            "lo",
        ])
        .output()
        .unwrap();
    let link = text(&link.stdout);
    assert!(link.contains("<LOOPBACK,UP"), "lo is not up: {link}");

    sandbox.destroy().await.unwrap();
    // Nothing was mounted in the host's namespace, and nothing is left.
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(rt.path().to_str().unwrap()),
        "sandbox mounts leaked to the host"
    );
    assert_eq!(
        std::fs::read_dir(rt.path().join("sandboxes"))
            .unwrap()
            .count(),
        0
    );
}

/// The cgroup2 mount point, from mountinfo (field 5 is the mount point; the fs type follows " - ").
fn cgroup2_mount() -> Option<std::path::PathBuf> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .ok()?
        .lines()
        .find(|l| {
            l.split(" - ")
                .nth(1)
                .is_some_and(|t| t.starts_with("cgroup2 "))
        })
        .and_then(|l| l.split_whitespace().nth(4).map(Into::into))
}

#[tokio::test]
async fn on_cgroup_v2_the_init_is_born_in_its_group() {
    if !luminaguard_testkit::privileged("cgroup v2 groups") {
        return;
    }
    // Every host these tests run on has a cgroup2 mount (here: /sys/fs/cgroup/unified, with no
    // controllers — enough for membership, which is what clone3(CLONE_INTO_CGROUP) decides).
    let mount = cgroup2_mount().expect("no cgroup2 mount");
    let dir = mount.join(format!("luminaguard-test-{}", std::process::id()));
    std::fs::create_dir(&dir).unwrap();
    let cg = luminaguard_cgroup::Cgroup::from_dirs(2, vec![dir.clone()]);
    let staging = tempfile::tempdir().unwrap();
    let (console, monitor) = keeper(staging.path()).await;
    // The init runs as the sandbox's uid, which must be able to reach its staging root.
    const UID: u32 = 0x5aff_0000;
    std::os::unix::fs::chown(staging.path(), Some(UID), Some(UID)).unwrap();
    let root = staging.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let launched = launch(Launch {
        agent: Path::new(AGENT),
        config: &config(&root),
        cgroup: Some(&cg),
        channel: AgentChannel::Pair,
        netns: None,
        identity: Identity::Mapped { uid: UID, gid: UID },
        console,
        monitor,
        workspace: None,
    })
    .unwrap();
    let pid = launched.pid;
    let membership = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let name = dir.file_name().unwrap().to_str().unwrap();
    assert!(
        membership.contains(&format!("0::/{name}\n")),
        "not in {name}: {membership}"
    );
    assert_eq!(cg.pids().unwrap(), vec![pid.as_raw()]);
    // And it serves as usual.
    let socket = launched.socket.unwrap();
    socket.set_nonblocking(true).unwrap();
    let c = Client::connect(
        tokio::net::UnixStream::from_std(socket).unwrap(),
        ClientOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(sh(&c, "echo up").await.stdout, b"up\n");
    c.shutdown().await.unwrap();
    tokio::task::spawn_blocking(move || waitpid(pid, None))
        .await
        .unwrap()
        .unwrap();
    std::fs::remove_dir(&dir).unwrap();
}
