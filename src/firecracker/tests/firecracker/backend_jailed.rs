//! `FirecrackerBackend` in jailer mode, with the custom seccomp filter: the Backend interface
//! end to end against `luminaguard-fake-jailer` starting `luminaguard-fake-firecracker` (real
//! processes: chroot, uid drop, cgroups, a new PID namespace). Root only: the jailer needs it.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use luminaguard_backend::{Backend, BackendError, CreateRequest, Sandbox, SandboxMeta};
use luminaguard_core::{RuntimeDir, SandboxId, SandboxSpec};
use luminaguard_firecracker::jailer::JailerConfig;
use luminaguard_firecracker::testing::{
    ARGV_FILE, Fault, JAILER_ARGV_FILE, PLAN_ENV, Plan, RECORD_DIR_ENV, RECORD_FILE, Recorded,
};
use luminaguard_firecracker::{FirecrackerBackend, GuestImage};
use luminaguard_protocol::ExecRequest;

const FAKE_JAILER: &str = env!("CARGO_BIN_EXE_luminaguard-fake-jailer");
const EXEC_NAME: &str = "luminaguard-fake-firecracker";

struct Fixture {
    tmp: tempfile::TempDir,
    records: PathBuf,
    runtime: RuntimeDir,
    backend: FirecrackerBackend,
}

/// A backend whose firecracker is the fake binary itself and whose jailer is a script that
/// runs the fake jailer with `plan` and a record directory (passed on to the fake firecracker).
async fn fixture(plan: &Plan, configure: impl FnOnce(&mut JailerConfig)) -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o711)).unwrap();
    let records = root.join("records");
    std::fs::create_dir(&records).unwrap();
    let plan_file = records.join("plan.json");
    std::fs::write(&plan_file, serde_json::to_vec(plan).unwrap()).unwrap();
    let jailer = root.join("jailer");
    std::fs::write(
        &jailer,
        format!(
            "#!/bin/sh\n{PLAN_ENV}='{}' {RECORD_DIR_ENV}='{}' exec '{FAKE_JAILER}' \"$@\"\n",
            plan_file.display(),
            records.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&jailer, std::fs::Permissions::from_mode(0o755)).unwrap();
    let file = |name: &str| {
        let p = root.join(name);
        std::fs::write(&p, name.as_bytes()).unwrap();
        p
    };
    let image = GuestImage {
        digest: None,
        kernel: file("vmlinux"),
        initrd: file("initramfs.cpio"),
        rootfs: file("rootfs.ext4"),
    };
    let mut j = JailerConfig::new(jailer);
    configure(&mut j);
    let compiler = super::seccomp::fake_seccompiler(root, false);
    let backend = FirecrackerBackend::new(PathBuf::from(super::FAKE), image, Default::default())
        .with_jailer_config(Some(j))
        .with_custom_seccomp(&compiler, &root.join("seccomp-cache"))
        .await
        .unwrap();
    Fixture {
        runtime: RuntimeDir::new(root.join("rt")).unwrap(),
        records,
        backend,
        tmp,
    }
}

fn request(fx: &Fixture, id: &str, persistent: bool) -> CreateRequest {
    CreateRequest {
        id: SandboxId::new(id).unwrap(),
        spec: SandboxSpec::default(),
        workspace: None,
        persistent,
        without_cgroup: false,
        user: None,
        runtime: fx.runtime.clone(),
    }
}

/// What a jailed sandbox left on the host: its chroot, cgroup directories, VMM.
struct Traces {
    dir: PathBuf,
    chroot: PathBuf,
    cgroup_dirs: Vec<PathBuf>,
    pid: Option<i32>,
}

impl Traces {
    fn of(sandbox: &Sandbox) -> Self {
        Self {
            dir: sandbox.dir.clone(),
            chroot: sandbox.meta.chroot.clone().expect("a chroot in the record"),
            cgroup_dirs: sandbox.meta.cgroup_dirs.clone(),
            pid: sandbox.meta.init.map(|i| i.pid),
        }
    }

    async fn assert_gone(&self) {
        assert!(
            !self.dir.exists(),
            "{} outlived removal",
            self.dir.display()
        );
        assert!(
            !self.chroot.exists(),
            "the chroot {} outlived removal",
            self.chroot.display()
        );
        for d in &self.cgroup_dirs {
            assert!(!d.exists(), "the cgroup {} outlived removal", d.display());
        }
        if let Some(pid) = self.pid {
            assert!(
                super::gone_within(pid, Duration::from_secs(5)).await,
                "the VMM {pid} outlived removal"
            );
        }
    }
}

fn status_field(pid: i32, field: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(field).map(|v| v.trim().to_owned()))
        .unwrap()
}

fn json_strings(path: &Path) -> Vec<String> {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn echo(words: &[&str]) -> ExecRequest {
    ExecRequest {
        argv: std::iter::once("echo")
            .chain(words.iter().copied())
            .map(String::from)
            .collect(),
        env: vec![],
        clear_env: false,
        cwd: None,
        stdin: false,
        timeout_ms: Some(5_000),
        output_limit: None,
    }
}

#[tokio::test]
async fn a_jailed_sandbox_is_recorded_runs_a_command_and_destroy_leaves_nothing() {
    if !luminaguard_testkit::privileged("the jailer") {
        return;
    }
    let fx = fixture(&Plan::default(), |_| {}).await;
    let req = request(&fx, "fcj-destroy", true);
    let vm_id = req.id.short_name();
    let sandbox = fx.backend.create(req).await.unwrap();
    let meta = sandbox.meta.clone();
    let traces = Traces::of(&sandbox);

    // The chroot is where the record says, under the runtime's jail, named like the jailer
    // names it; and it is built.
    let jail_base = fx.runtime.root().join("jail");
    assert_eq!(traces.chroot, jail_base.join(EXEC_NAME).join(&vm_id));
    let root = traces.chroot.join("root");
    assert!(root.join(EXEC_NAME).is_file() && root.join("vmlinux").is_file());
    assert_eq!(
        std::fs::metadata(&jail_base).unwrap().permissions().mode() & 0o777,
        0o700
    );

    // `init` is the real Firecracker — the pid in the jailer's pid file, chrooted, running as
    // the recorded uid, PID 1 of its own namespace — not the jailer, which has exited.
    let init = meta.init.expect("init recorded");
    let pid_file: i32 = std::fs::read_to_string(root.join(format!("{EXEC_NAME}.pid")))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(init.pid, pid_file);
    assert!(super::running(init.pid));
    assert_eq!(meta.owner, init, "a long-lived sandbox is owned by its VMM");
    assert_eq!(
        std::fs::read_link(format!("/proc/{}/root", init.pid)).unwrap(),
        root
    );
    let uid = meta.vmm_uid.expect("a VMM uid");
    assert_eq!(
        status_field(init.pid, "Uid:"),
        format!("{uid}\t{uid}\t{uid}\t{uid}")
    );
    assert_eq!(status_field(init.pid, "NSpid:"), format!("{}\t1", init.pid));
    // The sandbox directory stays root's: the jailed VMM never needs it.
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&traces.dir).unwrap()),
        0
    );

    // The record names the jailer's cgroups, which hold the VMM with the sandbox's limits.
    assert!(!traces.cgroup_dirs.is_empty());
    assert!(
        traces
            .cgroup_dirs
            .iter()
            .all(|d| d.ends_with(Path::new("luminaguard-fc").join(&vm_id)))
    );
    for d in &traces.cgroup_dirs {
        let procs = std::fs::read_to_string(d.join("cgroup.procs")).unwrap();
        assert!(
            procs.lines().any(|l| l == init.pid.to_string()),
            "{} not in {}: {procs}",
            init.pid,
            d.display()
        );
    }
    let on_disk = SandboxMeta::load_blocking(&traces.dir).unwrap();
    assert_eq!(on_disk, meta, "the record on disk is the one returned");

    // The jailer was given the cgroup keys and the shared chroot base; Firecracker the custom
    // filter, linked into the chroot.
    let jailer_argv = json_strings(&fx.records.join(JAILER_ARGV_FILE));
    let base_arg = jailer_argv
        .windows(2)
        .find(|w| w[0] == "--chroot-base-dir")
        .map(|w| w[1].clone());
    assert_eq!(base_arg.as_deref(), jail_base.to_str());
    assert!(jailer_argv.iter().any(|a| a == "--new-pid-ns"));
    assert!(
        jailer_argv
            .windows(2)
            .any(|w| w[0] == "--cgroup" && w[1].starts_with("pids.max=")),
        "{jailer_argv:?}"
    );
    let fc_argv = json_strings(&fx.records.join(ARGV_FILE));
    assert_eq!(
        &fc_argv[fc_argv.len() - 2..],
        ["--seccomp-filter", "seccomp.bpf"]
    );
    assert!(!fc_argv.iter().any(|a| a == "--no-seccomp"));
    assert_eq!(std::fs::read(root.join("seccomp.bpf")).unwrap(), b"BPF");
    let reqs: Vec<Recorded> = std::fs::read_to_string(fx.records.join(RECORD_FILE))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(reqs.iter().all(|r| r.accepted), "{reqs:#?}");

    // A command through the agent, over the jailed VMM's vsock socket.
    let out = sandbox
        .client()
        .exec_output(echo(&["hello", "jail"]), None)
        .await
        .unwrap();
    assert_eq!(out.stdout, b"hello jail\n");
    assert!(out.status.success(), "{:?}", out.status);
    let missing = sandbox
        .client()
        .exec_output(
            ExecRequest {
                argv: vec!["no-such-program".into()],
                ..echo(&[])
            },
            None,
        )
        .await
        .unwrap();
    assert_eq!(missing.status.code, Some(127));

    sandbox.destroy().await.unwrap();
    traces.assert_gone().await;
    // Other sandboxes' jails would still be there: only this VM's part of the base went.
    assert!(jail_base.join(EXEC_NAME).exists());
}

#[tokio::test]
async fn a_jailed_sandbox_whose_creator_died_is_collected_whole_by_gc() {
    if !luminaguard_testkit::privileged("the jailer") {
        return;
    }
    let fx = fixture(&Plan::default(), |_| {}).await;
    let sandbox = fx
        .backend
        .create(request(&fx, "fcj-gc", false))
        .await
        .unwrap();
    let traces = Traces::of(&sandbox);
    sandbox.client().ping().await.unwrap();
    // The creator "dies": the record's owner becomes a process that no longer exists (same
    // pid, another start time), as after the creating command was killed.
    let mut meta = SandboxMeta::load_blocking(&traces.dir).unwrap();
    assert_ne!(
        meta.owner,
        meta.init.unwrap(),
        "a disposable sandbox's owner is its creator"
    );
    meta.owner.start += 1;
    meta.save(&traces.dir).await.unwrap();

    let runtime = fx.runtime.clone();
    let report = tokio::task::spawn_blocking(move || luminaguard_backend::gc::collect(&runtime))
        .await
        .unwrap();
    assert_eq!(report.removed, ["fcj-gc"], "{report:?}");
    assert!(report.errors.is_empty(), "{report:?}");
    traces.assert_gone().await;
    drop(sandbox);
}

#[tokio::test]
async fn a_jailed_create_that_fails_at_configuration_leaves_nothing() {
    if !luminaguard_testkit::privileged("the jailer") {
        return;
    }
    let fx = fixture(
        &Plan::default().fault(
            "PUT /boot-source",
            Fault::Status {
                status: 400,
                fault_message: "injected".into(),
            },
        ),
        |j| j.daemonize = true,
    )
    .await;
    let req = request(&fx, "fcj-fail", false);
    let vm_id = req.id.short_name();
    let dir = fx.runtime.sandbox_dir(&req.id).unwrap();
    let err = fx.backend.create(req).await.unwrap_err();
    match &err {
        BackendError::Setup { step, reason, .. } => {
            assert_eq!(*step, "boot-source");
            assert!(reason.contains("injected"), "{reason}");
        }
        other => panic!("expected a setup error, got {other:?}"),
    }
    assert!(!dir.exists(), "the sandbox directory outlived the failure");
    let chroot = fx.runtime.root().join("jail").join(EXEC_NAME).join(&vm_id);
    assert!(!chroot.exists(), "the chroot outlived the failure");
    assert!(
        super::no_process_with_id(&vm_id),
        "a VMM outlived the failure"
    );
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    for line in mounts.lines().filter(|l| l.contains(" cgroup")) {
        let mount = line.split_whitespace().nth(1).unwrap();
        let d = Path::new(mount).join("luminaguard-fc").join(&vm_id);
        assert!(!d.exists(), "{} outlived the failure", d.display());
    }
}

#[tokio::test]
async fn a_jailer_that_fails_is_reported_and_leaves_nothing() {
    if !luminaguard_testkit::privileged("the jailer") {
        return;
    }
    // A jailer that exits 1 before writing its pid file.
    let fx = fixture(&Plan::default(), |j| j.jailer = PathBuf::from("/bin/false")).await;
    let req = request(&fx, "fcj-jailer-fails", true);
    let vm_id = req.id.short_name();
    let dir = fx.runtime.sandbox_dir(&req.id).unwrap();
    let err = fx.backend.create(req).await.unwrap_err();
    match &err {
        BackendError::Setup { step, .. } => assert_eq!(*step, "jailer", "{err}"),
        other => panic!("expected a setup error, got {other:?}"),
    }
    assert!(!dir.exists(), "the sandbox directory outlived the failure");
    assert!(
        !fx.runtime
            .root()
            .join("jail")
            .join(EXEC_NAME)
            .join(&vm_id)
            .exists(),
        "the chroot outlived the failure"
    );
    assert!(super::no_process_with_id(&vm_id));
    assert!(!fx.records.join(ARGV_FILE).exists(), "firecracker ran");
    drop(fx.tmp);
}

/// The network namespace inode a process runs in, or a named one holds.
fn netns_inode(path: &Path) -> u64 {
    std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(path).unwrap())
}

/// A jailed sandbox with an egress policy: the tap `sbx0` exists in the sandbox's router
/// namespace, the jailer is told `--netns` for it, the (fake) Firecracker really runs in that
/// namespace and is configured with a NIC on `sbx0` and the guest's address on the kernel
/// command line; destroy removes the namespace and the uplink.
#[tokio::test]
async fn a_jailed_sandbox_with_a_network_policy_gets_its_tap_in_the_router_namespace() {
    use luminaguard_core::NetworkPolicy;
    use luminaguard_testkit::netlab::{FakeInternet, SERVER};
    if !luminaguard_testkit::privileged("the jailer") {
        return;
    }
    let net = FakeInternet::new();
    let uplink = luminaguard_net::Uplink {
        netns: Some(net.host.clone()),
        pool: None,
    };
    let mut fx = fixture(&Plan::default(), |_| {}).await;
    fx.backend = fx.backend.clone().with_uplink(uplink.clone());
    let mut req = request(&fx, "fcj-net", false);
    req.spec = SandboxSpec {
        network: NetworkPolicy::Egress {
            allow: vec![format!("{SERVER}:80").parse().unwrap()],
            deny: vec![],
        },
        ..SandboxSpec::default()
    };
    let names = luminaguard_net::NetNames::for_sandbox(&req.id);
    let router = Path::new("/run/netns").join(&names.router_netns);
    let sandbox = fx.backend.create(req).await.unwrap();
    assert_eq!(sandbox.meta.net.as_ref(), Some(&uplink), "recorded for gc");

    // The tap is in the router namespace, owned by the VMM's user.
    let uid = sandbox.meta.vmm_uid.unwrap();
    let out = std::process::Command::new("ip")
        .args(["-n", &names.router_netns, "-d", "link", "show", "sbx0"])
        .output()
        .unwrap();
    let link = String::from_utf8_lossy(&out.stdout);
    assert!(
        link.contains("tun type tap") && link.contains(&format!("user {uid}")),
        "{link}"
    );

    // The jailer joins it, and so Firecracker runs there.
    let jailer_argv = json_strings(&fx.records.join(JAILER_ARGV_FILE));
    let at = jailer_argv
        .iter()
        .position(|a| a == "--netns")
        .expect("--netns");
    assert_eq!(Path::new(&jailer_argv[at + 1]), router);
    let pid = sandbox.meta.init.unwrap().pid;
    assert_eq!(
        netns_inode(Path::new(&format!("/proc/{pid}/ns/net"))),
        netns_inode(&router),
        "firecracker runs in the router namespace"
    );

    // Configured with a NIC on the tap, and the guest's address on its command line.
    let reqs: Vec<Recorded> = std::fs::read_to_string(fx.records.join(RECORD_FILE))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let nic = reqs
        .iter()
        .find(|r| r.method == "PUT" && r.path == "/network-interfaces/eth0")
        .expect("PUT /network-interfaces/eth0");
    assert!(nic.accepted, "{nic:?}");
    assert_eq!(nic.body["host_dev_name"], "sbx0");
    let boot = reqs.iter().find(|r| r.path == "/boot-source").unwrap();
    let args = boot.body["boot_args"].as_str().unwrap();
    assert!(
        args.contains("luminaguard.net=10.255.255.2/30,10.255.255.1"),
        "{args}"
    );
    assert!(
        !args.contains("luminaguard.dns"),
        "no resolver for addresses: {args}"
    );

    let traces = Traces::of(&sandbox);
    sandbox.destroy().await.unwrap();
    traces.assert_gone().await;
    assert!(!router.exists(), "the router namespace outlived destroy");
}

/// A network policy without root (no VMM identity to own a tap) is refused, leaving nothing;
/// and a policy naming a domain, on a backend built without a resolver, likewise.
#[tokio::test]
async fn a_domain_policy_without_a_resolver_is_refused_and_leaves_nothing() {
    use luminaguard_core::NetworkPolicy;
    if !luminaguard_testkit::privileged("the jailer") {
        return;
    }
    let fx = fixture(&Plan::default(), |_| {}).await;
    let mut req = request(&fx, "fcj-dns", false);
    req.spec = SandboxSpec {
        network: NetworkPolicy::Egress {
            allow: vec!["api.example.com:443".parse().unwrap()],
            deny: vec![],
        },
        ..SandboxSpec::default()
    };
    let id = req.id.clone();
    let msg = fx.backend.create(req).await.unwrap_err().to_string();
    assert!(msg.contains("DNS-pinning resolver"), "{msg}");
    assert!(
        !fx.runtime
            .root()
            .join("sandboxes")
            .join(id.as_str())
            .exists()
    );
    let router = luminaguard_net::NetNames::for_sandbox(&id).router_netns;
    assert!(!Path::new("/run/netns").join(router).exists());
}

/// A template made under the jailer restores under the jailer: the snapshot files are linked
/// into the new chroot (the VMM reads them chrooted, as its own uid), the guest is reseeded,
/// destroy leaves nothing and the template intact; an unjailed backend refuses the template.
#[tokio::test]
async fn a_jailed_template_restores_into_a_new_chroot_and_only_under_the_jailer() {
    if !luminaguard_testkit::privileged("the jailer") {
        return;
    }
    let fx = fixture(&Plan::default(), |_| {}).await;
    let dest = fx.tmp.path().join("template");
    let template = fx
        .backend
        .create_template(request(&fx, "fcj-tpl-src", false), &dest)
        .await
        .unwrap();
    assert!(template.manifest.jailed);
    let before = std::fs::read_to_string(fx.records.join(RECORD_FILE)).unwrap();

    let restoring = fx.backend.clone().with_template(Some(template.clone()));
    let sandbox = restoring
        .create(request(&fx, "fcj-tpl-a", true))
        .await
        .unwrap();
    let traces = Traces::of(&sandbox);
    let out = sandbox
        .client()
        .exec_output(echo(&["restored"]), None)
        .await
        .unwrap();
    assert_eq!(out.stdout, b"restored\n");
    let root = traces.chroot.join("root");
    for name in ["vm.snap", "vm.mem"] {
        assert!(
            super::same_file(&root.join(name), &dest.join(name)),
            "{name}"
        );
    }
    let all = std::fs::read_to_string(fx.records.join(RECORD_FILE)).unwrap();
    let reqs: Vec<Recorded> = all[before.len()..]
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    super::assert_restored(&reqs);
    sandbox.destroy().await.unwrap();
    traces.assert_gone().await;
    assert_eq!(
        luminaguard_firecracker::Template::open(&dest)
            .await
            .unwrap(),
        template
    );

    let unjailed = FirecrackerBackend::new(
        PathBuf::from(super::FAKE),
        fx.backend.image().clone(),
        Default::default(),
    )
    .with_template(Some(template));
    let err = unjailed
        .create(request(&fx, "fcj-tpl-b", false))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("made under the jailer, restoring unjailed"),
        "{err}"
    );
}
