//! The Firecracker backend against the fake Firecracker (`luminaguard_firecracker::testing`):
//! the API client in process, and the launch sequence with the fake as a real child process.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)] // test code

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use luminaguard_firecracker::client::{ApiClient, ApiError};
use luminaguard_firecracker::launch::{
    self, Cause, LaunchConfig, LaunchError, Lifetime, Step, Timeouts, VmId,
};
use luminaguard_firecracker::models::{
    ActionType, BootSource, Drive, EntropyDevice, InstanceState, LogLevel, Logger,
    MachineConfiguration, Metrics, SnapshotCreateParams, SnapshotType, VmState, Vsock,
};
use luminaguard_firecracker::testing::{
    ARGV_FILE, FakeApi, Fault, GuestBehaviour, PLAN_FILE, Plan, RECORD_FILE, Recorded, Startup,
    server::{POST_BOOT_MESSAGE, PRE_BOOT_MESSAGE},
};
use luminaguard_firecracker::{KernelArgs, launch::VmFiles};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const FAKE: &str = env!("CARGO_BIN_EXE_luminaguard-fake-firecracker");

/// Empty files standing in for a kernel, initrd, root file system and scratch disk.
struct Images {
    _tmp: tempfile::TempDir,
    kernel: PathBuf,
    initrd: PathBuf,
    rootfs: PathBuf,
    scratch: PathBuf,
    sandbox: PathBuf,
}

fn images() -> Images {
    let tmp = tempfile::tempdir().unwrap();
    let p = |n: &str| tmp.path().join(n);
    for f in ["vmlinux", "initramfs.cpio", "rootfs.ext4", "scratch.img"] {
        std::fs::File::create(p(f)).unwrap();
    }
    std::fs::create_dir(p("sb")).unwrap();
    Images {
        kernel: p("vmlinux"),
        initrd: p("initramfs.cpio"),
        rootfs: p("rootfs.ext4"),
        scratch: p("scratch.img"),
        sandbox: p("sb"),
        _tmp: tmp,
    }
}

// ---------------------------------------------------------------------------------------------
// The API client against the in-process fake.

async fn fake_api(plan: Plan) -> (Images, FakeApi, ApiClient) {
    let img = images();
    let sock = img.sandbox.join("fc.sock");
    let fake = FakeApi::start(&sock, "lg-test", plan, None).unwrap();
    let api = ApiClient::connect(&sock, Duration::from_secs(5))
        .await
        .unwrap();
    (img, fake, api)
}

fn boot_source(img: &Images) -> BootSource {
    BootSource {
        kernel_image_path: img.kernel.clone(),
        boot_args: Some(KernelArgs::luminaguard_guest(64, 512).unwrap()),
        initrd_path: Some(img.initrd.clone()),
    }
}

#[tokio::test]
async fn one_connection_carries_every_request_and_every_body_is_the_swaggers() {
    let (img, fake, api) = fake_api(Plan::default()).await;
    let info = api.instance_info().await.unwrap();
    assert_eq!(info.state, InstanceState::NotStarted);
    assert_eq!(info.id, "lg-test");
    api.put_logger(&Logger {
        log_path: Some(img.sandbox.join("fc.log")),
        level: Some(LogLevel::Info),
        ..Logger::default()
    })
    .await
    .unwrap();
    api.put_metrics(&Metrics {
        metrics_path: img.sandbox.join("metrics.json"),
    })
    .await
    .unwrap();
    api.put_machine_config(&MachineConfiguration::new(2, 256))
        .await
        .unwrap();
    api.put_boot_source(&boot_source(&img)).await.unwrap();
    api.put_drive(&Drive::new("rootfs", &img.rootfs, true))
        .await
        .unwrap();
    let uds = img.sandbox.join("agent.sock");
    api.put_vsock(&Vsock {
        guest_cid: 3,
        uds_path: uds.clone(),
    })
    .await
    .unwrap();
    api.put_entropy(&EntropyDevice::default()).await.unwrap();
    api.action(ActionType::InstanceStart).await.unwrap();
    assert_eq!(
        api.instance_info().await.unwrap().state,
        InstanceState::Running
    );
    api.patch_vm(VmState::Paused).await.unwrap();
    assert_eq!(
        api.instance_info().await.unwrap().state,
        InstanceState::Paused
    );
    api.create_snapshot(&SnapshotCreateParams {
        snapshot_path: img.sandbox.join("vm.state"),
        mem_file_path: img.sandbox.join("vm.mem"),
        snapshot_type: Some(SnapshotType::Full),
    })
    .await
    .unwrap();
    api.patch_vm(VmState::Resumed).await.unwrap();
    api.action(ActionType::FlushMetrics).await.unwrap();
    assert_eq!(
        api.version().await.unwrap().firecracker_version,
        "1.16.1-fake"
    );

    assert_eq!(fake.connections(), 1, "every request on one connection");
    let reqs = fake.requests();
    let names: Vec<String> = reqs.iter().map(Recorded::request).collect();
    assert_eq!(
        names,
        [
            "GET /",
            "PUT /logger",
            "PUT /metrics",
            "PUT /machine-config",
            "PUT /boot-source",
            "PUT /drives/rootfs",
            "PUT /vsock",
            "PUT /entropy",
            "PUT /actions",
            "GET /",
            "PATCH /vm",
            "GET /",
            "PUT /snapshot/create",
            "PATCH /vm",
            "PUT /actions",
            "GET /version",
        ]
    );
    assert!(reqs.iter().all(|r| r.accepted), "{reqs:#?}");
    assert_eq!(
        reqs[3].body,
        serde_json::json!({"vcpu_count": 2, "mem_size_mib": 256})
    );
    assert_eq!(
        reqs[5].body,
        serde_json::json!({
            "drive_id": "rootfs",
            "is_root_device": false,
            "is_read_only": true,
            "path_on_host": img.rootfs,
        })
    );
    assert_eq!(
        reqs[8].body,
        serde_json::json!({"action_type": "InstanceStart"})
    );
    assert_eq!(reqs[10].body, serde_json::json!({"state": "Paused"}));
    assert_eq!(reqs[0].body, serde_json::Value::Null);
    // The fake bound the vsock socket at PUT /vsock, as Firecracker does.
    assert!(uds.exists());
}

#[tokio::test]
async fn an_injected_fault_is_surfaced_verbatim_with_status_and_request() {
    let message = "Unable to open the block device backing file: No such file (os error 2)";
    let plan = Plan::default().fault(
        "PUT /drives/rootfs",
        Fault::Status {
            status: 400,
            fault_message: message.into(),
        },
    );
    let (img, fake, api) = fake_api(plan).await;
    let err = api
        .put_drive(&Drive::new("rootfs", &img.rootfs, true))
        .await
        .unwrap_err();
    assert_eq!(err.fault_message(), Some(message));
    assert_eq!(err.status().map(|s| s.as_u16()), Some(400));
    let text = err.to_string();
    assert!(text.contains("PUT /drives/rootfs"), "{text}");
    assert!(text.contains("400"), "{text}");
    assert!(text.contains(message), "{text}");
    // A refusal leaves the connection usable.
    api.put_machine_config(&MachineConfiguration::new(1, 128))
        .await
        .unwrap();
    assert_eq!(fake.connections(), 1);
}

#[tokio::test]
async fn firecrackers_own_refusals_come_back_as_faults() {
    let (img, _fake, api) = fake_api(Plan::default()).await;
    // InstanceStart without a boot source.
    let err = api.action(ActionType::InstanceStart).await.unwrap_err();
    assert!(
        err.fault_message()
            .unwrap()
            .contains("Cannot start microvm without kernel configuration"),
        "{err}"
    );
    // Pausing before boot, and a pre-boot resource after boot.
    let err = api.patch_vm(VmState::Paused).await.unwrap_err();
    assert_eq!(err.fault_message(), Some(PRE_BOOT_MESSAGE));
    api.put_boot_source(&boot_source(&img)).await.unwrap();
    api.action(ActionType::InstanceStart).await.unwrap();
    let err = api
        .put_machine_config(&MachineConfiguration::new(1, 128))
        .await
        .unwrap_err();
    assert_eq!(err.fault_message(), Some(POST_BOOT_MESSAGE));
    assert!(err.to_string().contains("PUT /machine-config"), "{err}");
    // A kernel that does not exist.
    let (_img2, _fake2, api2) = fake_api(Plan::default()).await;
    let err = api2
        .put_boot_source(&BootSource {
            kernel_image_path: "/nonexistent/vmlinux".into(),
            boot_args: None,
            initrd_path: None,
        })
        .await
        .unwrap_err();
    assert!(
        err.fault_message()
            .unwrap()
            .contains("/nonexistent/vmlinux"),
        "{err}"
    );
}

#[tokio::test]
async fn an_error_status_without_a_fault_body_is_quoted() {
    let plan = Plan::default().fault(
        "PUT /logger",
        Fault::Raw {
            status: 502,
            body: "<html>bad gateway</html>".into(),
        },
    );
    let (_img, _fake, api) = fake_api(plan).await;
    let err = api.put_logger(&Logger::default()).await.unwrap_err();
    assert!(
        matches!(&err, ApiError::UnexpectedStatus { status, body, .. }
            if status.as_u16() == 502 && body == "<html>bad gateway</html>"),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_closed_connection_fails_the_request_and_every_later_one() {
    let plan = Plan::default().fault("PUT /machine-config", Fault::CloseConnection);
    let (_img, _fake, api) = fake_api(plan).await;
    let err = api
        .put_machine_config(&MachineConfiguration::new(1, 128))
        .await
        .unwrap_err();
    assert!(matches!(err, ApiError::Transport { .. }), "{err:?}");
    assert!(err.to_string().contains("PUT /machine-config"), "{err}");
    let err = api.put_logger(&Logger::default()).await.unwrap_err();
    match &err {
        ApiError::Broken { request, reason } => {
            assert_eq!(request.to_string(), "PUT /logger");
            assert!(reason.contains("PUT /machine-config"), "{reason}");
        }
        other => panic!("expected Broken, got {other:?}"),
    }
}

#[tokio::test]
async fn a_request_that_gets_no_answer_times_out() {
    let plan = Plan::default().fault("PUT /metrics", Fault::Stall);
    let img = images();
    let sock = img.sandbox.join("fc.sock");
    let _fake = FakeApi::start(&sock, "lg-test", plan, None).unwrap();
    let api = ApiClient::connect(&sock, Duration::from_millis(300))
        .await
        .unwrap();
    api.put_logger(&Logger::default()).await.unwrap();
    let start = Instant::now();
    let err = api
        .put_metrics(&Metrics {
            metrics_path: "/m".into(),
        })
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ApiError::Timeout { after, .. } if *after == Duration::from_millis(300)),
        "{err:?}"
    );
    assert!(start.elapsed() >= Duration::from_millis(300));
    assert!(err.to_string().contains("PUT /metrics"), "{err}");
    assert!(matches!(
        api.put_logger(&Logger::default()).await.unwrap_err(),
        ApiError::Broken { .. }
    ));
}

#[tokio::test]
async fn connecting_to_a_missing_socket_names_it() {
    let tmp = tempfile::tempdir().unwrap();
    let sock = tmp.path().join("nope.sock");
    let err = ApiClient::connect(&sock, Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(matches!(err, ApiError::Connect { .. }), "{err:?}");
    assert!(err.to_string().contains("nope.sock"), "{err}");
}

/// Sends one raw HTTP request and returns the raw response.
async fn raw_request(sock: &Path, method: &str, path: &str, body: &str) -> String {
    let mut s = tokio::net::UnixStream::connect(sock).await.unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test]
async fn the_fake_refuses_bodies_firecracker_would_refuse() {
    let img = images();
    let sock = img.sandbox.join("fc.sock");
    let fake = FakeApi::start(&sock, "lg-test", Plan::default(), None).unwrap();
    for (method, path, body, needle) in [
        (
            "PUT",
            "/vsock",
            r#"{"guest_cid":3,"uds_path":"/x","vsock_id":"v"}"#,
            "unknown field",
        ),
        (
            "PUT",
            "/machine-config",
            r#"{"vcpu_count":1}"#,
            "mem_size_mib",
        ),
        (
            "PUT",
            "/machine-config",
            r#"{"vcpu_count":64,"mem_size_mib":128}"#,
            "vcpu_count",
        ),
        (
            "PUT",
            "/drives/a",
            r#"{"drive_id":"b","is_root_device":false,"is_read_only":true,"path_on_host":"/"}"#,
            "does not match",
        ),
        ("PUT", "/vsock", r#"{"guest_cid":2,"uds_path":"/x"}"#, "CID"),
        (
            "PUT",
            "/nothing",
            "{}",
            "Invalid request method and/or path",
        ),
        (
            "POST",
            "/actions",
            r#"{"action_type":"InstanceStart"}"#,
            "Invalid request method and/or path",
        ),
    ] {
        let resp = raw_request(&sock, method, path, body).await;
        assert!(resp.starts_with("HTTP/1.1 400"), "{method} {path}: {resp}");
        assert!(
            resp.contains("fault_message") && resp.contains(needle),
            "{method} {path}: {resp}"
        );
    }
    assert!(fake.requests().iter().all(|r| !r.accepted));
    assert_eq!(fake.requests().len(), 7);
}

// ---------------------------------------------------------------------------------------------
// The launch sequence, with the fake as the `firecracker` binary.

fn config(img: &Images, plan: &Plan) -> LaunchConfig {
    std::fs::write(
        img.sandbox.join(PLAN_FILE),
        serde_json::to_vec(plan).unwrap(),
    )
    .unwrap();
    LaunchConfig {
        firecracker: FAKE.into(),
        dir: img.sandbox.clone(),
        vm_id: VmId::new("lg-0123456789abcdef").unwrap(),
        seccomp_filter: None,
        machine: MachineConfiguration::new(1, 128),
        kernel: img.kernel.clone(),
        initrd: Some(img.initrd.clone()),
        boot_args: KernelArgs::luminaguard_guest(64, 512).unwrap(),
        rootfs: img.rootfs.clone(),
        scratch: Some(img.scratch.clone()),
        entropy: true,
        log_level: LogLevel::Warning,
        timeouts: Timeouts {
            api_socket: Duration::from_secs(5),
            request: Duration::from_secs(5),
            boot: Duration::from_secs(5),
        },
        client: Default::default(),
        lifetime: Lifetime::DiesWithCreator,
        run_as: None,
        cgroup_procs: Vec::new(),
        jailer: None,
        network: None,
        console: launch::ConsoleLimits::DEFAULT,
    }
}

fn recorded(img: &Images) -> Vec<Recorded> {
    std::fs::read_to_string(img.sandbox.join(RECORD_FILE))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn process_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// After a failed launch: no process, no socket.
fn assert_torn_down(img: &Images, err: &LaunchError, pid: Option<u32>) {
    let files = VmFiles::in_dir(&img.sandbox);
    for s in [&files.api_socket, &files.vsock, &files.ready_socket] {
        assert!(!s.exists(), "{} left behind after: {err}", s.display());
    }
    // Nor a console keeper (whose descriptor on console.log root would see).
    assert_eq!(
        holders_of(&files.console),
        [],
        "console.log still open after: {err}"
    );
    if let Some(pid) = pid {
        assert!(
            !process_exists(pid),
            "firecracker {pid} still runs after: {err}"
        );
    }
}

/// The pid the fake ran as (from the `Exited` cause, or from the argv file's presence).
fn launched_pid(err: &LaunchError) -> Option<u32> {
    match &err.cause {
        Cause::Exited { pid, .. } => Some(*pid),
        _ => None,
    }
}

#[tokio::test]
async fn launch_configures_starts_and_handshakes_with_the_agent() {
    let img = images();
    let cfg = config(&img, &Plan::default());
    let vm = launch::launch(&cfg).await.unwrap();
    assert!(process_exists(vm.pid));

    let argv: Vec<String> =
        serde_json::from_slice(&std::fs::read(img.sandbox.join(ARGV_FILE)).unwrap()).unwrap();
    assert_eq!(
        argv,
        [
            "--api-sock",
            img.sandbox.join("fc.sock").to_str().unwrap(),
            "--id",
            "lg-0123456789abcdef",
        ]
    );

    let reqs = recorded(&img);
    let names: Vec<String> = reqs.iter().map(Recorded::request).collect();
    assert_eq!(
        names,
        [
            "PUT /logger",
            "PUT /metrics",
            "PUT /machine-config",
            "PUT /boot-source",
            "PUT /drives/rootfs",
            "PUT /drives/scratch",
            "PUT /vsock",
            "PUT /entropy",
            "PUT /actions",
        ]
    );
    assert!(reqs.iter().all(|r| r.accepted), "{reqs:#?}");
    let sb = &img.sandbox;
    assert_eq!(
        reqs[0].body,
        serde_json::json!({
            "log_path": "firecracker.log",
            "level": "Warning",
            "show_level": true,
            "show_log_origin": false,
        })
    );
    assert_eq!(
        reqs[1].body,
        serde_json::json!({"metrics_path": "metrics.json"})
    );
    assert_eq!(
        reqs[3].body,
        serde_json::json!({
            "kernel_image_path": img.kernel,
            "boot_args": "console=ttyS0 reboot=k panic=-1 quiet luminaguard.scratch_mb=64 luminaguard.pids=512",
            "initrd_path": img.initrd,
        })
    );
    assert_eq!(reqs[4].body["is_read_only"], true);
    assert_eq!(reqs[4].body["path_on_host"], img.rootfs.to_str().unwrap());
    assert_eq!(reqs[5].body["is_read_only"], false);
    // Per-VM files are named relative to Firecracker's working directory (the sandbox
    // directory); the scratch disk was linked there.
    assert_eq!(reqs[5].body["path_on_host"], "scratch.img");
    assert!(same_file(&img.scratch, &sb.join("scratch.img")));
    assert_eq!(
        reqs[6].body,
        serde_json::json!({"guest_cid": 3, "uds_path": "agent.sock"})
    );
    assert_eq!(reqs[7].body, serde_json::json!({}));
    assert_eq!(
        reqs[8].body,
        serde_json::json!({"action_type": "InstanceStart"})
    );
    assert!(sb.join("firecracker.log").exists() && sb.join("metrics.json").exists());

    // The agent answers over the vsock channel, and the API connection is still usable.
    vm.agent.ping().await.unwrap();
    assert_eq!(vm.agent.peer().software, "luminaguard-fake-guest");
    assert_eq!(
        vm.api.instance_info().await.unwrap().state,
        InstanceState::Running
    );
    // The ready listener is gone once the agent is reached.
    assert!(!vm.files.ready_socket.exists());
    assert!(vm.timings.total >= vm.timings.boot);

    // Shutdown through the agent powers the VM off: the VMM exits by itself.
    let mut child = vm.vmm;
    vm.agent.shutdown().await.unwrap();
    let status = tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .unwrap();
    assert_eq!(status, "exit status: 0");
}

fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (a, b) = (std::fs::metadata(a).unwrap(), std::fs::metadata(b).unwrap());
    (a.dev(), a.ino()) == (b.dev(), b.ino())
}

#[tokio::test]
async fn the_seccomp_filter_is_passed_and_a_missing_one_stops_the_launch() {
    let img = images();
    let filter = img.sandbox.join("../filter.bpf");
    std::fs::write(&filter, b"bpf").unwrap();
    let mut cfg = config(&img, &Plan::default());
    cfg.seccomp_filter = Some(filter.clone());
    cfg.scratch = None;
    cfg.entropy = false;
    let vm = launch::launch(&cfg).await.unwrap();
    let argv: Vec<String> =
        serde_json::from_slice(&std::fs::read(img.sandbox.join(ARGV_FILE)).unwrap()).unwrap();
    assert_eq!(argv[4..], ["--seccomp-filter", filter.to_str().unwrap()]);
    assert!(!argv.iter().any(|a| a == "--no-seccomp"));
    let names: Vec<String> = recorded(&img).iter().map(Recorded::request).collect();
    assert!(
        !names
            .iter()
            .any(|n| n == "PUT /drives/scratch" || n == "PUT /entropy"),
        "{names:?}"
    );
    drop(vm);

    let img = images();
    let mut cfg = config(&img, &Plan::default());
    cfg.seccomp_filter = Some(img.sandbox.join("missing.bpf"));
    let err = launch::launch(&cfg).await.unwrap_err();
    assert_eq!(err.step, Step::Prepare);
    assert!(err.to_string().contains("missing.bpf"), "{err}");
    assert!(!img.sandbox.join(ARGV_FILE).exists(), "nothing may run");
}

#[tokio::test]
async fn a_fault_at_each_step_names_the_step_carries_the_message_and_tears_down() {
    for (request, step) in [
        ("PUT /logger", Step::Logger),
        ("PUT /metrics", Step::Metrics),
        ("PUT /machine-config", Step::MachineConfig),
        ("PUT /boot-source", Step::BootSource),
        ("PUT /drives/rootfs", Step::RootDrive),
        ("PUT /drives/scratch", Step::ScratchDrive),
        ("PUT /vsock", Step::Vsock),
        ("PUT /entropy", Step::Entropy),
        ("PUT /actions", Step::InstanceStart),
    ] {
        let img = images();
        let message = format!("injected failure of {request}");
        let plan = Plan::default().fault(
            request,
            Fault::Status {
                status: 400,
                fault_message: message.clone(),
            },
        );
        let err = launch::launch(&config(&img, &plan)).await.unwrap_err();
        assert_eq!(err.step, step, "{request}: {err}");
        let text = err.to_string();
        assert!(
            text.contains(&format!("at step {}", step.as_str())),
            "{text}"
        );
        assert!(text.contains(&message), "{text}");
        assert!(text.contains(request), "{text}");
        match &err.cause {
            Cause::Api(api) => assert_eq!(api.fault_message(), Some(message.as_str())),
            other => panic!("{request}: expected an API fault, got {other:?}"),
        }
        // The requests stop at the failed one.
        let last = recorded(&img).last().map(Recorded::request);
        assert_eq!(last.as_deref(), Some(request));
        assert_torn_down(&img, &err, None);
        assert!(
            no_fake_running_in(&img.sandbox),
            "{request}: a fake still runs"
        );
    }
}

/// Whether no process has the sandbox's API socket on its command line.
fn no_fake_running_in(dir: &Path) -> bool {
    let needle = dir.join("fc.sock");
    let needle = needle.to_str().unwrap();
    std::fs::read_dir("/proc").unwrap().flatten().all(|e| {
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        !String::from_utf8_lossy(&cmdline).contains(needle)
    })
}

#[tokio::test]
async fn a_vmm_that_exits_before_its_socket_is_reported_with_status_and_stderr() {
    let img = images();
    let plan = Plan {
        startup: Startup::Exit {
            code: 3,
            stderr: "Error: no KVM here (os error 2)\n".into(),
        },
        ..Plan::default()
    };
    let start = Instant::now();
    let err = launch::launch(&config(&img, &plan)).await.unwrap_err();
    assert_eq!(err.step, Step::ApiSocket, "{err}");
    let text = err.to_string();
    assert!(text.contains("exit status: 3"), "{text}");
    assert!(text.contains("no KVM here"), "{text}");
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "noticed only after the deadline"
    );
    assert_torn_down(&img, &err, launched_pid(&err));
}

#[tokio::test]
async fn a_socket_that_never_appears_times_out_and_the_vmm_is_killed() {
    let img = images();
    let plan = Plan {
        startup: Startup::NeverCreateSocket,
        ..Plan::default()
    };
    let mut cfg = config(&img, &plan);
    cfg.timeouts.api_socket = Duration::from_millis(300);
    let err = launch::launch(&cfg).await.unwrap_err();
    assert_eq!(err.step, Step::ApiSocket, "{err}");
    assert!(matches!(err.cause, Cause::NoApiSocket { .. }), "{err:?}");
    assert!(err.to_string().contains("fc.sock"), "{err}");
    assert!(img.sandbox.join(ARGV_FILE).exists(), "the fake did run");
    assert_torn_down(&img, &err, None);
    assert!(no_fake_running_in(&img.sandbox), "the fake was not killed");
}

#[tokio::test]
async fn a_vmm_that_exits_mid_configuration_is_reported_at_that_step() {
    let img = images();
    let plan = Plan::default().fault(
        "PUT /vsock",
        Fault::Exit {
            code: 134,
            stderr: "thread 'fc_api' panicked at vsock\n".into(),
        },
    );
    let err = launch::launch(&config(&img, &plan)).await.unwrap_err();
    assert_eq!(err.step, Step::Vsock, "{err}");
    let text = err.to_string();
    assert!(text.contains("exit status: 134"), "{text}");
    assert!(text.contains("panicked at vsock"), "{text}");
    assert_torn_down(&img, &err, launched_pid(&err));
}

#[tokio::test]
async fn a_guest_that_crashes_during_boot_is_reported_with_the_vmms_exit() {
    let img = images();
    let plan = Plan {
        guest: GuestBehaviour::Crash {
            code: 1,
            stderr: "Kernel panic - not syncing: VFS\n".into(),
        },
        ..Plan::default()
    };
    let err = launch::launch(&config(&img, &plan)).await.unwrap_err();
    // The fake exits as soon as it starts the guest, which may be before or after its answer to
    // InstanceStart reaches us.
    assert!(
        matches!(err.step, Step::Agent | Step::InstanceStart),
        "{err}"
    );
    let text = err.to_string();
    assert!(text.contains("exit status: 1"), "{text}");
    assert!(text.contains("Kernel panic"), "{text}");
    assert_torn_down(&img, &err, launched_pid(&err));
}

#[tokio::test]
async fn a_silent_guest_times_out_at_the_agent_step() {
    let img = images();
    let plan = Plan {
        guest: GuestBehaviour::Silent,
        ..Plan::default()
    };
    let mut cfg = config(&img, &plan);
    cfg.timeouts.boot = Duration::from_millis(400);
    let err = launch::launch(&cfg).await.unwrap_err();
    assert_eq!(err.step, Step::Agent, "{err}");
    assert!(
        matches!(&err.cause, Cause::BootTimeout { waiting_for, .. } if waiting_for.contains("1025")),
        "{err:?}"
    );
    assert_torn_down(&img, &err, None);
    assert!(no_fake_running_in(&img.sandbox), "the fake was not killed");
}

#[tokio::test]
async fn a_refused_handshake_is_reported_with_the_agents_reason() {
    let img = images();
    let plan = Plan {
        guest: GuestBehaviour::RefuseHandshake {
            reason: "agent speaks protocol 9..=9".into(),
        },
        ..Plan::default()
    };
    let err = launch::launch(&config(&img, &plan)).await.unwrap_err();
    assert_eq!(err.step, Step::Agent, "{err}");
    assert!(matches!(err.cause, Cause::Handshake(_)), "{err:?}");
    assert!(
        err.to_string().contains("agent speaks protocol 9..=9"),
        "{err}"
    );
    assert_torn_down(&img, &err, None);
    assert!(no_fake_running_in(&img.sandbox), "the fake was not killed");
}

#[tokio::test]
async fn what_cannot_work_is_refused_before_anything_runs() {
    // A socket path over the Unix limit.
    let img = images();
    let deep = img.sandbox.join("d".repeat(100));
    std::fs::create_dir(&deep).unwrap();
    let mut cfg = config(&img, &Plan::default());
    cfg.dir = deep;
    let err = launch::launch(&cfg).await.unwrap_err();
    assert_eq!(err.step, Step::Prepare);
    assert!(err.to_string().contains("Unix socket allows"), "{err}");

    // A missing kernel, a bad machine config, a missing binary.
    let mut cfg = config(&img, &Plan::default());
    cfg.kernel = img.sandbox.join("no-vmlinux");
    let err = launch::launch(&cfg).await.unwrap_err();
    assert_eq!(err.step, Step::Prepare);
    assert!(err.to_string().contains("no-vmlinux"), "{err}");
    let mut cfg = config(&img, &Plan::default());
    cfg.machine = MachineConfiguration::new(0, 128);
    assert_eq!(launch::launch(&cfg).await.unwrap_err().step, Step::Prepare);
    let mut cfg = config(&img, &Plan::default());
    cfg.firecracker = img.sandbox.join("no-firecracker");
    let err = launch::launch(&cfg).await.unwrap_err();
    assert_eq!(err.step, Step::Prepare);
    assert!(err.to_string().contains("no-firecracker"), "{err}");
    assert!(!img.sandbox.join(ARGV_FILE).exists(), "nothing may run");
}

#[test]
fn vm_ids_are_what_firecracker_accepts() {
    assert!(VmId::new("lg-0123abcdef").is_ok());
    assert!(VmId::new(&"a".repeat(64)).is_ok());
    for bad in ["", "task_1", "a b", "../x", "é", &"a".repeat(65)] {
        assert!(VmId::new(bad).is_err(), "{bad:?} accepted");
    }
}

// ---------------------------------------------------------------------------------------------
// The Backend, with the fake as the `firecracker` binary (through a wrapper script that names
// the plan, since the backend creates the sandbox directory itself).

use std::os::unix::fs::PermissionsExt;

use luminaguard_backend::{Backend, BackendError, CreateRequest};
use luminaguard_core::{RuntimeDir, SandboxId, SandboxSpec};
use luminaguard_firecracker::testing::PLAN_ENV;
use luminaguard_firecracker::{FirecrackerBackend, GuestImage};

struct BackendFixture {
    _tmp: tempfile::TempDir,
    runtime: RuntimeDir,
    backend: FirecrackerBackend,
}

pub(crate) fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
}

/// Everything reachable by the VMM's own uid when the test runs as root: directories 0711,
/// files 0644, the wrapper 0755.
fn backend_fixture(plan: &Plan) -> BackendFixture {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o711)).unwrap();
    let file = |name: &str, contents: &[u8], mode: u32| {
        let p = root.join(name);
        std::fs::write(&p, contents).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    };
    let plan_file = file("plan.json", &serde_json::to_vec(plan).unwrap(), 0o644);
    let script = format!(
        "#!/bin/sh\n{PLAN_ENV}='{}' exec '{FAKE}' \"$@\"\n",
        plan_file.display()
    );
    let firecracker = file("firecracker", script.as_bytes(), 0o755);
    let image = GuestImage {
        digest: None,
        kernel: file("vmlinux", b"", 0o644),
        initrd: file("initramfs.cpio", b"", 0o644),
        rootfs: file("rootfs.ext4", b"", 0o644),
    };
    BackendFixture {
        runtime: RuntimeDir::new(root.join("rt")).unwrap(),
        backend: FirecrackerBackend::new(firecracker, image, Default::default()),
        _tmp: tmp,
    }
}

fn request(fx: &BackendFixture, id: &str, persistent: bool, without_cgroup: bool) -> CreateRequest {
    CreateRequest {
        id: SandboxId::new(id).unwrap(),
        spec: SandboxSpec::default(),
        workspace: None,
        persistent,
        without_cgroup,
        user: None,
        runtime: fx.runtime.clone(),
    }
}

fn status_ids(pid: i32, field: &str) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap()
        .split_whitespace()
        .skip(1)
        .map(|n| n.parse().unwrap())
        .collect()
}

#[tokio::test]
async fn the_backend_creates_records_attaches_and_destroys_a_sandbox() {
    let fx = backend_fixture(&Plan::default());
    let req = request(&fx, "fc-test-1", true, true);
    let id = req.id.clone();
    let sandbox = fx.backend.create(req).await.unwrap();
    sandbox.client().ping().await.unwrap();
    let meta = sandbox.meta.clone();
    let dir = sandbox.dir.clone();
    assert_eq!(meta.backend, "firecracker");
    assert_eq!(meta.agent_vsock_port, Some(1024));
    assert_eq!(meta.accel.as_deref(), Some("kvm"));
    let init = meta.init.expect("the VMM is recorded as init");
    assert!(init.alive());
    assert_eq!(meta.owner, init, "a long-lived sandbox is owned by its VMM");
    // The record on disk says the same.
    let on_disk: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("meta.json")).unwrap()).unwrap();
    assert_eq!(on_disk["init"]["pid"], init.pid);
    assert_eq!(on_disk["backend"], "firecracker");
    // Firecracker's id is derived from the sandbox id.
    let argv: Vec<String> =
        serde_json::from_slice(&std::fs::read(dir.join(ARGV_FILE)).unwrap()).unwrap();
    assert_eq!(argv[3], id.short_name());
    if is_root() {
        // The VMM runs as its own unprivileged user.
        let uid = meta.vmm_uid.expect("a VMM uid as root");
        assert_eq!(status_ids(init.pid, "Uid:"), [uid; 4]);
        assert_eq!(status_ids(init.pid, "Gid:"), [uid; 4]);
    }

    // The connection goes; the VM stays (long-lived), and is reached again from its record.
    drop(sandbox);
    assert!(init.alive());
    let attached = luminaguard_backend::attach(&fx.runtime, &id, Default::default())
        .await
        .unwrap();
    attached.client().ping().await.unwrap();
    attached.destroy().await.unwrap();
    assert!(!init.alive(), "the VMM outlived destroy");
    assert!(!dir.exists(), "the sandbox directory outlived destroy");
}

#[tokio::test]
async fn a_failed_create_names_the_step_and_leaves_nothing_behind() {
    let message = "Kernel file cannot be opened: injected";
    let fx = backend_fixture(&Plan::default().fault(
        "PUT /boot-source",
        Fault::Status {
            status: 400,
            fault_message: message.into(),
        },
    ));
    let req = request(&fx, "fc-test-2", false, true);
    let dir = fx.runtime.sandbox_dir(&req.id).unwrap();
    let err = fx.backend.create(req).await.unwrap_err();
    match &err {
        BackendError::Setup {
            backend,
            step,
            reason,
        } => {
            assert_eq!(*backend, "firecracker");
            assert_eq!(*step, "boot-source");
            assert!(
                reason.contains(message) && reason.contains("PUT /boot-source"),
                "{reason}"
            );
        }
        other => panic!("expected a setup error, got {other:?}"),
    }
    assert!(
        !dir.exists(),
        "the sandbox directory outlived a failed create"
    );
    assert!(no_fake_running_in(&dir), "a VMM outlived a failed create");
}

#[tokio::test]
async fn the_vmm_runs_inside_the_sandboxes_cgroup() {
    if !luminaguard_testkit::privileged("creating cgroups") {
        return;
    }
    let fx = backend_fixture(&Plan::default());
    let sandbox = fx
        .backend
        .create(request(&fx, "fc-test-3", false, false))
        .await
        .unwrap();
    let pid = sandbox.meta.init.unwrap().pid;
    let dirs = sandbox.meta.cgroup_dirs.clone();
    assert!(!dirs.is_empty());
    for d in &dirs {
        let procs = std::fs::read_to_string(d.join("cgroup.procs")).unwrap();
        assert!(
            procs.lines().any(|l| l == pid.to_string()),
            "{pid} not in {}: {procs}",
            d.display()
        );
    }
    sandbox.destroy().await.unwrap();
    for d in &dirs {
        assert!(!d.exists(), "{} outlived destroy", d.display());
    }
}

// ---------------------------------------------------------------------------------------------
// The guest's serial console: Firecracker's stdout, kept in a bounded `console.log` by a keeper.

use luminaguard_backend::ProcessRef;
use luminaguard_firecracker::launch::ConsoleLimits;
use luminaguard_firecracker::testing::{ConsoleOutput, FLOOD_FAILED, FLOOD_LINE, console_flood};

/// Small limits, so that a flood goes through many compactions.
pub(crate) fn small_console() -> ConsoleLimits {
    ConsoleLimits {
        head: 4 * 1024,
        tail: 16 * 1024,
        max: 64 * 1024,
    }
}

/// A plan whose guest prints the first `len` bytes of the console flood.
pub(crate) fn flooding(len: u64) -> Plan {
    Plan {
        console: ConsoleOutput { flood: len },
        ..Plan::default()
    }
}

/// Waits until the fake's flood of `len` bytes has reached `console` whole (the file ends with
/// the flood's last line), asserting at every look that the file is within `limits.max` and
/// that the fake's writes have not failed (its `stderr` would say so). Returns the file.
pub(crate) async fn flooded_console(
    console: &Path,
    stderr: &Path,
    len: u64,
    limits: ConsoleLimits,
) -> Vec<u8> {
    let last = console_flood(len - FLOOD_LINE..len);
    let start = Instant::now();
    loop {
        let bytes = std::fs::read(console).unwrap_or_default();
        assert!(
            bytes.len() as u64 <= limits.max,
            "console.log is {} bytes, over the maximum {}",
            bytes.len(),
            limits.max
        );
        if bytes.ends_with(&last) {
            // That read may have overlapped the last compaction; from now on the file no longer
            // changes, so this one is whole.
            return std::fs::read(console).unwrap();
        }
        let err = std::fs::read_to_string(stderr).unwrap_or_default();
        assert!(!err.contains(FLOOD_FAILED), "{err}");
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the flood's end did not reach console.log ({} bytes; stderr: {err})",
            bytes.len()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Asserts that `got` is what the keeper makes of the flood's first `len` bytes (more than
/// `limits.max`): the head as it was printed, one line saying how much was dropped, then the
/// newest output up to the last byte — at least `limits.tail` of it — and nothing else.
pub(crate) fn assert_bounded_flood(got: &[u8], len: u64, limits: ConsoleLimits) {
    assert!(len > limits.max, "not a flood");
    assert!(got.len() as u64 <= limits.max, "{} bytes", got.len());
    let head = usize::try_from(limits.head).unwrap();
    assert_eq!(
        got[..head],
        console_flood(0..limits.head)[..],
        "the head is kept"
    );
    let rest = std::str::from_utf8(&got[head..]).unwrap();
    let rest = rest.strip_prefix("\n[luminaguard: ").unwrap_or_else(|| {
        panic!(
            "no marker after the head: {:?}",
            &rest[..80.min(rest.len())]
        )
    });
    let (dropped, rest) = rest.split_once(' ').unwrap();
    let dropped: u64 = dropped.parse().unwrap();
    let body = rest
        .strip_prefix("bytes of console output dropped here]\n")
        .expect("the marker line");
    let body = body.as_bytes();
    assert!(
        body.len() as u64 >= limits.tail,
        "only {} bytes after the marker",
        body.len()
    );
    assert_eq!(
        body,
        &console_flood(len - body.len() as u64..len)[..],
        "after the marker: the newest output, in order, to the end"
    );
    assert_eq!(
        limits.head + dropped + body.len() as u64,
        len,
        "every byte is kept or counted as dropped"
    );
}

/// Live processes (pid, command name) with a descriptor open on `path`, or on the file that was
/// there before it was removed. Root sees every process's descriptors.
pub(crate) fn holders_of(path: &Path) -> Vec<(i32, String)> {
    let want = path.to_str().unwrap().to_owned();
    let deleted = format!("{want} (deleted)");
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_dir(format!("/proc/{pid}/fd"))
                .map(|fds| {
                    fds.flatten().any(|fd| {
                        std::fs::read_link(fd.path()).is_ok_and(|t| {
                            let t = t.to_string_lossy();
                            t == want || t == deleted
                        })
                    })
                })
                .unwrap_or(false)
        })
        .map(|pid| {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            (pid, comm.trim().to_owned())
        })
        .collect()
}

/// Asserts that `pid` is in every one of (some) cgroup directories `dirs`.
pub(crate) fn assert_in_cgroups(pid: i32, dirs: &[PathBuf]) {
    assert!(!dirs.is_empty(), "no cgroup");
    for d in dirs {
        let procs = std::fs::read_to_string(d.join("cgroup.procs")).unwrap();
        let me = pid.to_string();
        assert!(
            procs.lines().any(|l| l == me),
            "{pid} is not in {}: {procs}",
            d.display()
        );
    }
}

pub(crate) fn comm(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// Waits (at most 5 s) until `p` no longer runs.
pub(crate) async fn ended(p: ProcessRef) -> bool {
    let start = Instant::now();
    while p.alive() {
        if start.elapsed() > Duration::from_secs(5) {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    true
}

#[tokio::test]
async fn a_guest_flooding_its_console_leaves_a_bounded_log_with_head_and_newest_output() {
    let img = images();
    let limits = small_console();
    // 40 × the maximum, not a whole number of lines or pieces.
    let len = 40 * limits.max + 123;
    let mut cfg = config(&img, &flooding(len));
    cfg.console = limits;
    let vm = launch::launch(&cfg).await.unwrap();
    let keeper = vm.console.as_ref().expect("a console keeper").process;
    assert!(keeper.alive());
    assert_eq!(comm(keeper.pid), "lg-console");
    let console = img.sandbox.join("console.log");
    let got = flooded_console(&console, &vm.files.stderr, len, limits).await;
    assert_bounded_flood(&got, len, limits);
    // The VM serves on; stopping it ends the keeper too.
    vm.agent.ping().await.unwrap();
    vm.stop(true).await;
    // (It closes its descriptors a moment before it is gone.)
    assert!(ended(keeper).await, "the keeper outlived its VMM");
    assert_eq!(holders_of(&console), []);
}

/// The keeper dies (it is killed) while the guest floods: Firecracker's writes to its stdout
/// must fail (EPIPE, or ECONNRESET) rather than block, and the VM must keep serving.
#[tokio::test]
async fn a_vmm_whose_console_keeper_died_loses_console_output_not_its_progress() {
    let img = images();
    let mut cfg = config(&img, &flooding(u64::MAX));
    cfg.console = small_console();
    let vm = launch::launch(&cfg).await.unwrap();
    let keeper = vm.console.as_ref().unwrap().process;
    let console = img.sandbox.join("console.log");
    let start = Instant::now();
    while std::fs::metadata(&console).unwrap().len() == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no console output"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert!(keeper.alive());
    // SAFETY: a signal to a live process of ours (pid checked just before).
    assert_eq!(unsafe { libc::kill(keeper.pid, libc::SIGKILL) }, 0);
    assert!(ended(keeper).await, "the keeper survived SIGKILL");
    let start = Instant::now();
    let stderr = loop {
        let text = std::fs::read_to_string(&vm.files.stderr).unwrap_or_default();
        if text.contains(FLOOD_FAILED) {
            break text;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the VMM's console writes still neither fail nor finish: {text}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    // EPIPE, or ECONNRESET for the first write when the keeper died with output unread.
    assert!(
        stderr.contains("Broken pipe") || stderr.contains("Connection reset by peer"),
        "{stderr}"
    );
    vm.agent.ping().await.unwrap();
    assert_eq!(
        vm.api.instance_info().await.unwrap().state,
        InstanceState::Running
    );
    vm.stop(true).await;
}

/// The backend records the keeper beside Firecracker; it runs as the VMM's user in the
/// sandbox's cgroup; the log stays bounded; and destroy ends the keeper from the record alone
/// (it is stopped first, so it cannot end by itself when Firecracker exits).
#[tokio::test]
async fn a_sandbox_flooding_its_console_keeps_a_bounded_log_and_destroy_ends_its_keeper() {
    if !luminaguard_testkit::privileged("a console keeper as the VMM's user in its cgroup") {
        return;
    }
    // The backend's own limits.
    let limits = ConsoleLimits::DEFAULT;
    let len = 3 * limits.max + 4321;
    let fx = backend_fixture(&flooding(len));
    let sandbox = fx
        .backend
        .create(request(&fx, "fc-console", true, false))
        .await
        .unwrap();
    let meta = sandbox.meta.clone();
    let dir = sandbox.dir.clone();
    let init = meta.init.unwrap();
    assert_eq!(
        meta.helpers.len(),
        1,
        "the console keeper is recorded: {meta:?}"
    );
    let keeper = meta.helpers[0];
    assert!(keeper.alive());
    assert_eq!(comm(keeper.pid), "lg-console");
    let on_disk: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("meta.json")).unwrap()).unwrap();
    assert_eq!(on_disk["helpers"][0]["pid"], keeper.pid);
    let uid = meta.vmm_uid.unwrap();
    assert_eq!(status_ids(keeper.pid, "Uid:"), [uid; 4]);
    assert_in_cgroups(keeper.pid, &meta.cgroup_dirs);
    let console = dir.join("console.log");
    let got = flooded_console(&console, &dir.join("firecracker.stderr"), len, limits).await;
    assert_bounded_flood(&got, len, limits);
    sandbox.client().ping().await.unwrap();

    // SAFETY: a signal to the live keeper (checked above).
    assert_eq!(unsafe { libc::kill(keeper.pid, libc::SIGSTOP) }, 0);
    sandbox.destroy().await.unwrap();
    assert!(!init.alive(), "the VMM outlived destroy");
    assert!(ended(keeper).await, "the console keeper outlived destroy");
    assert_eq!(holders_of(&console), []);
    assert!(!dir.exists());
}

// ---------------------------------------------------------------------------------------------
// Against a real Firecracker: only where `LUMINAGUARD_FIRECRACKER` names the binary (CI and the
// development machines have none, and no usable KVM). See docs/firecracker-backend.md.

/// The real binary, or `None` with the reason the test is skipped printed.
fn real_firecracker(test: &str) -> Option<PathBuf> {
    match std::env::var_os("LUMINAGUARD_FIRECRACKER") {
        Some(p) => Some(PathBuf::from(p)),
        None => {
            eprintln!(
                "skipped {test}: set LUMINAGUARD_FIRECRACKER to a firecracker binary to run it \
                 (not available on this host)"
            );
            None
        }
    }
}

/// Our request bodies against the real API: accepted where they should be, and Firecracker's
/// own refusals surfaced verbatim. Needs no guest image.
#[tokio::test]
async fn real_firecracker_accepts_our_bodies_and_its_faults_come_back_verbatim() {
    let Some(fc) = real_firecracker("real_firecracker_accepts_our_bodies") else {
        return;
    };
    let img = images();
    let sock = img.sandbox.join("fc.sock");
    let id = VmId::new("lg-real-api").unwrap();
    let mut child = tokio::process::Command::new(&fc)
        .args(launch::argv(&sock, &id, None))
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let start = Instant::now();
    let api = loop {
        match ApiClient::connect(&sock, Duration::from_secs(5)).await {
            Ok(api) => break api,
            Err(e) if start.elapsed() > Duration::from_secs(5) => panic!("no API socket: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    };
    let info = api.instance_info().await.unwrap();
    assert_eq!(info.id, "lg-real-api");
    assert_eq!(info.state, InstanceState::NotStarted);
    assert!(!api.version().await.unwrap().firecracker_version.is_empty());
    let log = img.sandbox.join("firecracker.log");
    std::fs::File::create(&log).unwrap();
    api.put_logger(&Logger {
        log_path: Some(log),
        level: Some(LogLevel::Warning),
        show_level: Some(true),
        show_log_origin: Some(false),
        module: None,
    })
    .await
    .unwrap();
    let metrics = img.sandbox.join("metrics.json");
    std::fs::File::create(&metrics).unwrap();
    api.put_metrics(&Metrics {
        metrics_path: metrics,
    })
    .await
    .unwrap();
    api.put_machine_config(&MachineConfiguration::new(1, 128))
        .await
        .unwrap();
    api.put_boot_source(&boot_source(&img)).await.unwrap();
    api.put_drive(&Drive::new("rootfs", &img.rootfs, true))
        .await
        .unwrap();
    api.put_drive(&Drive::new("scratch", &img.scratch, false))
        .await
        .unwrap();
    api.put_vsock(&Vsock {
        guest_cid: 3,
        uds_path: img.sandbox.join("agent.sock"),
    })
    .await
    .unwrap();
    api.put_entropy(&EntropyDevice::default()).await.unwrap();
    // Refusals: a drive whose file does not exist; pausing before boot.
    let err = api
        .put_drive(&Drive::new("missing", "/nonexistent/disk.img", false))
        .await
        .unwrap_err();
    assert_eq!(err.status().map(|s| s.as_u16()), Some(400), "{err}");
    assert!(!err.fault_message().unwrap().is_empty(), "{err}");
    let err = api.patch_vm(VmState::Paused).await.unwrap_err();
    assert!(err.fault_message().is_some(), "{err}");
    child.start_kill().unwrap();
    child.wait().await.unwrap();
}

/// A whole sandbox on a real Firecracker: boot the image, talk to the agent, destroy.
#[tokio::test]
async fn real_firecracker_boots_a_sandbox_and_destroys_it() {
    let Some(fc) = real_firecracker("real_firecracker_boots_a_sandbox") else {
        return;
    };
    let Some(image) = luminaguard_firecracker::testing::real_image_from_env().unwrap() else {
        eprintln!(
            "skipped real_firecracker_boots_a_sandbox: also set {}",
            luminaguard_firecracker::testing::REAL_IMAGE_VARS
        );
        return;
    };
    let backend = FirecrackerBackend::new(
        fc,
        GuestImage::from_store(&image).unwrap(),
        Default::default(),
    )
    .with_seccomp_filter(std::env::var_os("LUMINAGUARD_FIRECRACKER_SECCOMP").map(PathBuf::from));
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let runtime = RuntimeDir::new(tmp.path().join("rt")).unwrap();
    let req = CreateRequest {
        id: SandboxId::new("fc-real-1").unwrap(),
        spec: SandboxSpec::default(),
        workspace: None,
        persistent: false,
        without_cgroup: !is_root(),
        user: None,
        runtime,
    };
    let (sandbox, timings) = backend.create_timed(req).await.unwrap();
    eprintln!("boot timings: {timings:?}");
    let info = sandbox.client().info().await.unwrap();
    assert_eq!(info.kernel_release, image.manifest.kernel_release);
    assert!(info.is_pid1);
    let init = sandbox.meta.init.unwrap();
    let dir = sandbox.dir.clone();
    sandbox.destroy().await.unwrap();
    assert!(!init.alive());
    assert!(!dir.exists());
}

// ---------------------------------------------------------------------------------------------
// Jailer mode and snapshots, with the fakes as real processes.

#[path = "firecracker/backend_jailed.rs"]
mod backend_jailed;
#[path = "firecracker/jailed.rs"]
mod jailed;
#[path = "firecracker/seccomp.rs"]
mod seccomp;
#[path = "firecracker/snapshots.rs"]
mod snapshots;
#[path = "firecracker/templates.rs"]
mod templates;

/// Alive and not a zombie.
pub(crate) fn running(pid: impl std::fmt::Display) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// Waits (polling) until `pid` is gone or a zombie; `false` if it still runs after `limit`.
pub(crate) async fn gone_within(pid: impl std::fmt::Display + Copy, limit: Duration) -> bool {
    let start = Instant::now();
    while running(pid) {
        if start.elapsed() > limit {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    true
}

/// No live process has `--id <id>` on its command line.
pub(crate) fn no_process_with_id(id: &str) -> bool {
    std::fs::read_dir("/proc").unwrap().flatten().all(|e| {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            return true;
        };
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        !args
            .windows(2)
            .any(|w| w[0] == b"--id" && w[1] == id.as_bytes())
            || !running(pid)
    })
}

/// `reqs` (what a fake Firecracker recorded) are a restore's and all were accepted: the load and
/// the resume, nothing configured before them, then the guest's reseed and its clock.
pub(crate) fn assert_restored(reqs: &[Recorded]) {
    let names: Vec<String> = reqs.iter().map(Recorded::request).collect();
    assert_eq!(
        names,
        [
            "PUT /snapshot/load",
            "PATCH /vm",
            "AGENT reseed",
            "AGENT set-clock"
        ],
        "restored, not booted"
    );
    assert!(reqs.iter().all(|r| r.accepted), "{reqs:#?}");
}

/// Direct mode (no jailer) with an egress policy: Firecracker is moved into the sandbox's router
/// namespace before it execs (`setns` in the launch), where its tap `sbx0` is; destroy removes
/// the namespace.
#[tokio::test]
async fn a_direct_mode_vmm_with_a_network_policy_runs_in_the_router_namespace() {
    use luminaguard_core::NetworkPolicy;
    use luminaguard_testkit::netlab::{FakeInternet, SERVER};
    if !luminaguard_testkit::privileged("network egress") {
        return;
    }
    let net = FakeInternet::new();
    let mut fx = backend_fixture(&Plan::default());
    fx.backend = fx.backend.clone().with_uplink(luminaguard_net::Uplink {
        netns: Some(net.host.clone()),
        pool: None,
    });
    let mut req = request(&fx, "fc-net-direct", false, false);
    req.spec.network = NetworkPolicy::Egress {
        allow: vec![format!("{SERVER}:80").parse().unwrap()],
        deny: vec![],
    };
    let router = std::path::Path::new("/run/netns")
        .join(luminaguard_net::NetNames::for_sandbox(&req.id).router_netns);
    let sandbox = fx.backend.create(req).await.unwrap();
    let pid = sandbox.meta.init.unwrap().pid;
    let ino =
        |p: &std::path::Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap());
    assert_eq!(
        ino(std::path::Path::new(&format!("/proc/{pid}/ns/net"))),
        ino(&router),
        "firecracker runs in the router namespace"
    );
    // And as the VMM's user, not root: the namespace was joined before the drop.
    let uid = sandbox.meta.vmm_uid.unwrap();
    assert_eq!(status_ids(pid, "Uid:"), vec![uid; 4]);
    sandbox.destroy().await.unwrap();
    assert!(!router.exists(), "the router namespace outlived destroy");
}
