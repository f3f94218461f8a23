//! Jailer mode with `luminaguard-fake-jailer` (a real process that builds the chroot, writes
//! real cgroups, daemonizes and clones into a new PID namespace as the jailer does) starting
//! `luminaguard-fake-firecracker` (which chroots and drops to the uid itself). Root only: the
//! jailer needs it (chroot, mknod, cgroups).

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use luminaguard_cgroup::Limits;
use luminaguard_firecracker::jailer::{CgroupVersion, JailCgroups, JailerConfig, ResourceLimit};
use luminaguard_firecracker::launch::{self, Cause, LaunchConfig, RunAs, Step};
use luminaguard_firecracker::testing::{
    ARGV_FILE, Fault, JAILER_ARGV_FILE, PLAN_ENV, Plan, RECORD_DIR_ENV, RECORD_FILE, Recorded,
};

use super::{Images, config, images};

const FAKE_JAILER: &str = env!("CARGO_BIN_EXE_luminaguard-fake-jailer");
const UID: u32 = 0x5a0f_f001;

struct Jailed {
    img: Images,
    records: tempfile::TempDir,
    cfg: LaunchConfig,
}

/// Each jailed VM gets its own id: the jailer's cgroups are named after it, and tests run in
/// parallel.
fn unique_id() -> luminaguard_firecracker::launch::VmId {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    luminaguard_firecracker::launch::VmId::new(&format!("lgj-{}-{n}", std::process::id())).unwrap()
}

fn jailed(plan: &Plan, new_pid_ns: bool, daemonize: bool, cgroups: bool) -> Jailed {
    let img = images();
    let records = tempfile::tempdir().unwrap();
    let plan_file = records.path().join("plan.json");
    std::fs::write(&plan_file, serde_json::to_vec(plan).unwrap()).unwrap();
    // The jailer through a script that names the plan and the record directory (the fake
    // jailer passes both on to the fake firecracker).
    let script = records.path().join("jailer");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n{PLAN_ENV}='{}' {RECORD_DIR_ENV}='{}' exec '{FAKE_JAILER}' \"$@\"\n",
            plan_file.display(),
            records.path().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut cfg = config(&img, plan);
    cfg.vm_id = unique_id();
    cfg.run_as = Some(RunAs {
        uid: UID,
        gid: UID,
        supplementary: vec![],
    });
    let mut j = JailerConfig::new(script);
    j.new_pid_ns = new_pid_ns;
    j.daemonize = daemonize;
    j.resource_limits.push(ResourceLimit::FileSize(1 << 30));
    if cgroups {
        let version = CgroupVersion::detect().unwrap();
        j.cgroups = Some(JailCgroups::for_limits(
            version,
            &Limits {
                memory_bytes: 256 << 20,
                pids: 64,
                cpus: Some(1),
            },
        ));
    }
    cfg.jailer = Some(j);
    Jailed { img, records, cfg }
}

fn json_strings(path: &Path) -> Vec<String> {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn status_field(pid: u32, field: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(field).map(|v| v.trim().to_owned()))
        .unwrap()
}

fn session_of(pid: u32) -> u32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let (_, rest) = stat.rsplit_once(')').unwrap();
    rest.split_whitespace().nth(3).unwrap().parse().unwrap()
}

async fn one_mode(new_pid_ns: bool, daemonize: bool) {
    let j = jailed(&Plan::default(), new_pid_ns, daemonize, true);
    let cfg = &j.cfg;
    let vm = launch::launch(cfg).await.unwrap();
    let jail = vm.jail.clone().expect("a jail");
    let sb = &j.img.sandbox;
    let exec_name = "luminaguard-fake-firecracker";
    assert_eq!(
        jail.root,
        sb.join("jail")
            .join(exec_name)
            .join(cfg.vm_id.as_str())
            .join("root")
    );

    // The jailer's argv.
    let argv = json_strings(&j.records.path().join(JAILER_ARGV_FILE));
    let fc = std::fs::canonicalize(super::FAKE).unwrap();
    let mut expected: Vec<String> = [
        "--id",
        cfg.vm_id.as_str(),
        "--exec-file",
        fc.to_str().unwrap(),
        "--uid",
        &UID.to_string(),
        "--gid",
        &UID.to_string(),
        "--chroot-base-dir",
        sb.join("jail").to_str().unwrap(),
        "--cgroup-version",
    ]
    .map(String::from)
    .to_vec();
    let cg = cfg.jailer.as_ref().unwrap().cgroups.clone().unwrap();
    expected.push(cg.version.as_arg().into());
    expected.extend(["--parent-cgroup".into(), "luminaguard-fc".into()]);
    for k in &cg.keys {
        expected.extend(["--cgroup".into(), format!("{}={}", k.file, k.value)]);
    }
    if new_pid_ns {
        expected.push("--new-pid-ns".into());
    }
    expected.extend(
        [
            "--resource-limit",
            "no-file=2048",
            "--resource-limit",
            "fsize=1073741824",
        ]
        .map(String::from),
    );
    if daemonize {
        expected.push("--daemonize".into());
    }
    expected.extend(["--", "--api-sock", "fc.sock"].map(String::from));
    assert_eq!(argv, expected);
    // Firecracker's argv: what the jailer adds, then ours; never --no-seccomp.
    let fc_argv = json_strings(&j.records.path().join(ARGV_FILE));
    assert_eq!(&fc_argv[..2], ["--id", cfg.vm_id.as_str()]);
    assert_eq!(&fc_argv[fc_argv.len() - 2..], ["--api-sock", "fc.sock"]);
    assert!(!fc_argv.iter().any(|a| a == "--no-seccomp"));

    // The chroot: the binary copied, the files hard-linked, devices made, all given to the VMM.
    let root = &jail.root;
    assert!(root.join(exec_name).is_file());
    assert!(super::same_file(&j.img.kernel, &root.join("vmlinux")));
    assert!(super::same_file(&j.img.rootfs, &root.join("rootfs.img")));
    assert!(super::same_file(&j.img.initrd, &root.join("initrd.img")));
    assert!(super::same_file(&j.img.scratch, &root.join("scratch.img")));
    assert_eq!(
        std::fs::metadata(root.join("scratch.img")).unwrap().uid(),
        UID
    );
    assert_eq!(std::fs::metadata(root).unwrap().uid(), UID);
    let kvm = std::fs::metadata(root.join("dev/kvm")).unwrap();
    assert!(kvm.file_type().is_char_device());
    assert_eq!(kvm.rdev(), libc::makedev(10, 232));
    // The sockets Firecracker made are inside the chroot.
    assert!(root.join("fc.sock").exists() && root.join("agent.sock").exists());

    // The pid file names the real Firecracker, which is what we supervise.
    let pid: u32 = std::fs::read_to_string(&jail.pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(pid, vm.pid);
    assert!(super::running(pid));
    assert_eq!(vm.vmm.is_child(), !new_pid_ns && !daemonize);
    assert_eq!(
        std::fs::read_link(format!("/proc/{pid}/root")).unwrap(),
        *root,
        "not chrooted"
    );
    assert_eq!(
        status_field(pid, "Uid:"),
        format!("{UID}\t{UID}\t{UID}\t{UID}")
    );
    let nspid = status_field(pid, "NSpid:");
    if new_pid_ns {
        assert_eq!(nspid, format!("{pid}\t1"), "not PID 1 of a new namespace");
    } else {
        assert_eq!(nspid, pid.to_string());
    }
    if daemonize {
        assert_ne!(session_of(pid), session_of(std::process::id()));
    }
    // The jailer's limits and cgroups are real.
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    assert!(
        limits
            .lines()
            .any(|l| l.starts_with("Max open files") && l.contains("2048")),
        "{limits}"
    );
    assert_eq!(
        jail.cgroup_dirs.len(),
        if cg.version == CgroupVersion::V2 {
            1
        } else {
            3
        }
    );
    for d in &jail.cgroup_dirs {
        let procs = std::fs::read_to_string(d.join("cgroup.procs")).unwrap();
        assert!(
            procs.lines().any(|l| l == pid.to_string()),
            "{pid} not in {}",
            d.display()
        );
    }
    let memory_key = &cg.keys[0];
    let memory_dir = jail
        .cgroup_dirs
        .iter()
        .find(|d| d.join(&memory_key.file).exists())
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(memory_dir.join(&memory_key.file))
            .unwrap()
            .trim(),
        memory_key.value
    );

    // The API saw chroot-relative paths only.
    let reqs: Vec<Recorded> = std::fs::read_to_string(j.records.path().join(RECORD_FILE))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(reqs.iter().all(|r| r.accepted), "{reqs:#?}");
    assert_eq!(reqs[3].body["kernel_image_path"], "vmlinux");
    assert_eq!(reqs[3].body["initrd_path"], "initrd.img");
    assert_eq!(reqs[4].body["path_on_host"], "rootfs.img");
    assert_eq!(reqs[5].body["path_on_host"], "scratch.img");
    assert_eq!(reqs[6].body["uds_path"], "agent.sock");

    vm.agent.ping().await.unwrap();
    let status = vm.stop(true).await;
    if new_pid_ns || daemonize {
        assert_eq!(status, luminaguard_firecracker::vmm::UNKNOWN_STATUS);
    } else {
        assert!(status.contains("signal: 9"), "{status}");
    }
    assert!(
        super::gone_within(pid, Duration::from_secs(5)).await,
        "{pid} survived stop"
    );
    assert!(!sb.join("jail").exists(), "the chroot outlived stop");
    for d in &jail.cgroup_dirs {
        assert!(!d.exists(), "{} outlived stop", d.display());
    }
    // The originals are untouched by removing their links.
    assert!(j.img.kernel.exists() && j.img.scratch.exists());
}

#[tokio::test]
async fn jailed_launch_in_every_mode_is_supervised_and_cleaned_up() {
    if !luminaguard_testkit::privileged("the jailer") {
        return;
    }
    for (new_pid_ns, daemonize) in [(false, false), (true, false), (false, true), (true, true)] {
        eprintln!("mode: new_pid_ns={new_pid_ns} daemonize={daemonize}");
        one_mode(new_pid_ns, daemonize).await;
    }
}

#[tokio::test]
async fn a_jailed_vmm_that_fails_a_step_leaves_no_chroot_cgroup_or_process() {
    if !luminaguard_testkit::privileged("the jailer") {
        return;
    }
    let plan = Plan::default().fault(
        "PUT /boot-source",
        Fault::Status {
            status: 400,
            fault_message: "injected".into(),
        },
    );
    let j = jailed(&plan, true, true, true);
    let err = launch::launch(&j.cfg).await.unwrap_err();
    assert_eq!(err.step, Step::BootSource, "{err}");
    assert!(err.to_string().contains("injected"), "{err}");
    assert!(
        !j.img.sandbox.join("jail").exists(),
        "the chroot outlived the failure"
    );
    assert_no_jail_cgroups(&j.cfg);
    assert!(super::no_process_with_id(&j.cfg.vm_id.to_string()));
}

#[tokio::test]
async fn a_jailer_that_fails_is_reported_with_its_stderr_and_nothing_is_left() {
    if !luminaguard_testkit::privileged("the jailer") {
        return;
    }
    let mut j = jailed(&Plan::default(), true, false, false);
    // A cgroup file no controller has: the jailer fails writing it.
    j.cfg.jailer.as_mut().unwrap().cgroups = Some(JailCgroups {
        version: CgroupVersion::detect().unwrap(),
        keys: vec![luminaguard_firecracker::jailer::CgroupKey {
            file: "pids.nonexistent".into(),
            value: "1".into(),
        }],
    });
    let err = launch::launch(&j.cfg).await.unwrap_err();
    assert_eq!(err.step, Step::Jailer, "{err}");
    assert!(matches!(err.cause, Cause::JailerFailed { .. }), "{err:?}");
    assert!(err.to_string().contains("pids.nonexistent"), "{err}");
    assert!(!j.img.sandbox.join("jail").exists());
    assert!(
        !j.records.path().join(ARGV_FILE).exists(),
        "firecracker ran"
    );
}

#[tokio::test]
async fn jailer_mode_needs_an_identity() {
    let mut j = jailed(&Plan::default(), true, false, false);
    j.cfg.run_as = None;
    let err = launch::launch(&j.cfg).await.unwrap_err();
    assert_eq!(err.step, Step::Prepare);
    assert!(err.to_string().contains("uid and gid"), "{err}");
    assert!(!j.img.sandbox.join("jail").exists());
}

/// None of the cgroup directories the jailer makes for `cfg` exists.
fn assert_no_jail_cgroups(cfg: &LaunchConfig) {
    let dirs = JailCgroups::dirs(
        cfg.jailer.as_ref().unwrap().cgroups.as_ref().unwrap(),
        &std::fs::read_to_string("/proc/mounts").unwrap(),
        &cfg.vm_id,
    );
    for d in &dirs {
        assert!(!d.exists(), "{} outlived the failure", d.display());
    }
}

/// The jailer passes its stdout on to Firecracker: the console keeper gets a jailed guest's
/// console and is moved into the jailer's cgroup, and a failed launch removes both. A
/// daemonizing jailer sends the console to /dev/null itself: no keeper runs, and console.log
/// says so.
#[tokio::test]
async fn a_jailed_vmms_console_is_kept_bounded_unless_the_jailer_daemonizes() {
    if !luminaguard_testkit::privileged("the jailer") {
        return;
    }
    let limits = super::small_console();
    let len = 10 * limits.max + 77;
    for (new_pid_ns, daemonize) in [(true, false), (false, false), (true, true)] {
        eprintln!("mode: new_pid_ns={new_pid_ns} daemonize={daemonize}");
        let mut j = jailed(&super::flooding(len), new_pid_ns, daemonize, true);
        j.cfg.console = limits;
        let vm = launch::launch(&j.cfg).await.unwrap();
        let console = j.img.sandbox.join("console.log");
        if daemonize {
            assert!(vm.console.is_none(), "a keeper for /dev/null");
            vm.agent.ping().await.unwrap();
            assert_eq!(
                std::fs::read_to_string(&console).unwrap(),
                launch::console::DAEMONIZED_NOTE
            );
            vm.stop(true).await;
            continue;
        }
        let keeper = vm.console.as_ref().expect("a console keeper").process;
        assert_eq!(
            status_field(keeper.pid as u32, "Uid:"),
            format!("{UID}\t{UID}\t{UID}\t{UID}")
        );
        let jail = vm.jail.clone().unwrap();
        super::assert_in_cgroups(keeper.pid, &jail.cgroup_dirs);
        let got = super::flooded_console(&console, &vm.files.stderr, len, limits).await;
        super::assert_bounded_flood(&got, len, limits);
        vm.stop(true).await;
        assert!(super::ended(keeper).await, "the keeper outlived stop");
        assert_eq!(super::holders_of(&console), []);
        for d in &jail.cgroup_dirs {
            assert!(!d.exists(), "{} outlived stop", d.display());
        }
    }

    // A launch that fails after the keeper joined the jailer's cgroup leaves neither.
    let refused = Fault::Status {
        status: 400,
        fault_message: "injected".into(),
    };
    let j = jailed(
        &super::flooding(len).fault("PUT /vsock", refused),
        true,
        false,
        true,
    );
    let err = launch::launch(&j.cfg).await.unwrap_err();
    assert_eq!(err.step, Step::Vsock, "{err}");
    assert_eq!(super::holders_of(&j.img.sandbox.join("console.log")), []);
    assert_no_jail_cgroups(&j.cfg);
}
