//! Snapshots against the fake: pause → full snapshot → resume on a running VM (with its
//! scratch disk copied while paused), then a new VM restored from it in another directory —
//! request bodies checked, and the scratch disk never shared.

use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use luminaguard_firecracker::launch::{self, LaunchConfig, Step};

use luminaguard_firecracker::seccomp;
use luminaguard_firecracker::snapshot::{self, RestoreFrom, Snapshot};
use luminaguard_firecracker::testing::{Fault, Plan, Recorded};

use super::{config, images, recorded};

fn names(reqs: &[Recorded]) -> Vec<String> {
    reqs.iter().map(Recorded::request).collect()
}

#[tokio::test]
async fn snapshot_then_restore_into_a_new_sandbox() {
    let img = images();
    std::fs::write(&img.scratch, b"scratch before the snapshot").unwrap();
    let cfg = config(&img, &Plan::default());
    let mut vm = launch::launch(&cfg).await.unwrap();
    let booted = recorded(&img).len();

    let dest = tempfile::tempdir().unwrap();
    let snap = snapshot::create(&mut vm, &cfg, dest.path()).await.unwrap();
    assert_eq!(snap, Snapshot::in_dir(dest.path(), true));
    assert!(snap.state.is_file() && snap.memory.is_file());
    // Moved out of the VM's directory.
    assert!(!img.sandbox.join("vm.snap").exists() && !img.sandbox.join("vm.mem").exists());
    let reqs = recorded(&img);
    assert_eq!(
        names(&reqs[booted..]),
        ["PATCH /vm", "PUT /snapshot/create", "PATCH /vm"]
    );
    assert!(reqs.iter().all(|r| r.accepted), "{reqs:#?}");
    assert_eq!(reqs[booted].body, serde_json::json!({"state": "Paused"}));
    assert_eq!(
        reqs[booted + 1].body,
        serde_json::json!({"snapshot_path": "vm.snap", "mem_file_path": "vm.mem", "snapshot_type": "Full"})
    );
    assert_eq!(
        reqs[booted + 2].body,
        serde_json::json!({"state": "Resumed"})
    );
    // The snapshot's scratch disk is a copy, not the VM's file.
    let scratch = snap.scratch.clone().unwrap();
    assert_eq!(
        std::fs::read(&scratch).unwrap(),
        b"scratch before the snapshot"
    );
    assert!(!super::same_file(
        &scratch,
        &img.sandbox.join("scratch.img")
    ));
    // The snapshot reset the vsock connections; the agent was reached again.
    vm.agent.ping().await.unwrap();
    // The original keeps writing its own disk.
    std::fs::write(img.sandbox.join("scratch.img"), b"written after").unwrap();
    assert_eq!(
        std::fs::read(&scratch).unwrap(),
        b"scratch before the snapshot"
    );

    // Restore into another sandbox directory, while the original still runs.
    let img2 = images();
    let cfg2: LaunchConfig = config(&img2, &Plan::default());
    let from = RestoreFrom {
        snapshot: snap.clone(),
        vsock_override: true,
    };
    let restored = snapshot::restore(&cfg2, &from).await.unwrap();
    let reqs = recorded(&img2);
    super::assert_restored(&reqs);
    // The state and memory files are linked into the new VM's directory and named relative
    // to it, so a VMM running as its own user (or chrooted) opens them.
    assert_eq!(
        reqs[0].body,
        serde_json::json!({
            "snapshot_path": "vm.snap",
            "mem_backend": {"backend_type": "File", "backend_path": "vm.mem"},
            "resume_vm": false,
            "vsock_override": {"uds_path": "agent.sock"},
        })
    );
    for name in ["vm.snap", "vm.mem"] {
        assert!(super::same_file(
            &img2.sandbox.join(name),
            &dest.path().join(name)
        ));
    }
    assert_eq!(reqs[1].body, serde_json::json!({"state": "Resumed"}));
    let first_seed = reseed_bytes(&reqs[2]);
    assert_eq!(first_seed.len(), snapshot::RESEED_BYTES);
    // The guest's clock is set to the host's, after the reseed.
    let set_to = reqs[3].body["unix_nanos"].as_u64().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    assert!(
        set_to <= now && now - set_to < 60_000_000_000,
        "the clock was set to {set_to}, now is {now}"
    );
    restored.agent.ping().await.unwrap();
    // The new VM has its own vsock socket, and its own copy of the scratch disk.
    assert!(img2.sandbox.join("agent.sock").exists());
    let own = img2.sandbox.join("scratch.img");
    assert_eq!(std::fs::read(&own).unwrap(), b"scratch before the snapshot");
    assert!(!super::same_file(&own, &scratch));
    assert_ne!(
        std::fs::metadata(&own).unwrap().ino(),
        std::fs::metadata(img.sandbox.join("scratch.img"))
            .unwrap()
            .ino()
    );
    assert!(restored.timings.total >= restored.timings.boot);
    eprintln!("restore-to-ready against the fake: {:?}", restored.timings);

    // A second restore of the same snapshot gets other entropy.
    let img3 = images();
    let again = snapshot::restore(&config(&img3, &Plan::default()), &from)
        .await
        .unwrap();
    let second_seed = reseed_bytes(&recorded(&img3)[2]);
    assert_eq!(second_seed.len(), snapshot::RESEED_BYTES);
    assert_ne!(first_seed, second_seed, "two restores, one seed");
    again.stop(true).await;

    // Both VMs run side by side and stop cleanly.
    vm.agent.ping().await.unwrap();
    let s1 = restored.stop(true).await;
    assert!(s1.contains("signal: 9"), "{s1}");
    assert!(!img2.sandbox.join("agent.sock").exists());
    vm.stop(true).await;
}

/// A snapshot of a freshly launched VM (stopped since), in the returned directory; the VM's
/// boot files (which a restore opens again) live as long as the returned `Images`.
async fn snapshot_of_a_stopped_vm() -> (Snapshot, super::Images, tempfile::TempDir) {
    let img = images();
    let cfg = config(&img, &Plan::default());
    let mut vm = launch::launch(&cfg).await.unwrap();
    let dest = tempfile::tempdir().unwrap();
    let snap = snapshot::create(&mut vm, &cfg, dest.path()).await.unwrap();
    vm.stop(true).await;
    (snap, img, dest)
}

/// The bytes of an `AGENT reseed` record.
fn reseed_bytes(r: &Recorded) -> Vec<u8> {
    assert_eq!(r.request(), "AGENT reseed");
    serde_json::from_value(r.body["entropy"].clone()).unwrap()
}

/// A restored guest whose agent cannot reseed would go on drawing the snapshot's random
/// numbers: the restore fails at step `reseed` and leaves no VMM, socket or link.
#[tokio::test]
async fn a_restored_guest_that_cannot_reseed_is_not_used() {
    let (snap, _img, _dest) = snapshot_of_a_stopped_vm().await;

    let img2 = images();
    let plan = Plan {
        guest: luminaguard_firecracker::testing::GuestBehaviour::AgentWithoutReseed,
        ..Plan::default()
    };
    let err = snapshot::restore(
        &config(&img2, &plan),
        &RestoreFrom {
            snapshot: snap,
            vsock_override: true,
        },
    )
    .await
    .unwrap_err();
    assert_eq!(err.step, Step::Reseed, "{err}");
    assert!(
        err.to_string().contains("does not offer entropy.reseed"),
        "{err}"
    );
    assert!(!img2.sandbox.join("fc.sock").exists());
    assert!(!img2.sandbox.join("agent.sock").exists());
    assert!(super::no_fake_running_in(&img2.sandbox));
}

#[tokio::test]
async fn a_refused_load_names_the_step_and_tears_down() {
    let (snap, _img, _dest) = snapshot_of_a_stopped_vm().await;

    let img2 = images();
    let plan = Plan::default().fault(
        "PUT /snapshot/load",
        Fault::Status {
            status: 400,
            fault_message: "Load snapshot error: injected".into(),
        },
    );
    let cfg2 = config(&img2, &plan);
    let err = snapshot::restore(
        &cfg2,
        &RestoreFrom {
            snapshot: snap,
            vsock_override: false,
        },
    )
    .await
    .unwrap_err();
    assert_eq!(err.step, Step::SnapshotLoad, "{err}");
    assert!(
        err.to_string().contains("Load snapshot error: injected"),
        "{err}"
    );
    let body = &recorded(&img2)[0].body;
    assert!(body.get("vsock_override").is_none(), "{body}");
    assert!(!img2.sandbox.join("fc.sock").exists());
    assert!(super::no_fake_running_in(&img2.sandbox));
}

#[tokio::test]
async fn a_snapshot_refused_by_firecracker_still_resumes_the_vm() {
    let img = images();
    let plan = Plan::default().fault(
        "PUT /snapshot/create",
        Fault::Status {
            status: 400,
            fault_message: "Create snapshot error: injected".into(),
        },
    );
    let cfg = config(&img, &plan);
    let mut vm = launch::launch(&cfg).await.unwrap();
    let dest = tempfile::tempdir().unwrap();
    let err = snapshot::create(&mut vm, &cfg, dest.path())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("Create snapshot error: injected"),
        "{err}"
    );
    let reqs = recorded(&img);
    assert_eq!(reqs.last().unwrap().request(), "PATCH /vm");
    assert_eq!(
        reqs.last().unwrap().body,
        serde_json::json!({"state": "Resumed"})
    );
    assert_eq!(
        vm.api.instance_info().await.unwrap().state,
        luminaguard_firecracker::models::InstanceState::Running
    );
    // The agent still answers (reconnected if the failed create had reset vsock).
    tokio::time::timeout(Duration::from_secs(2), vm.agent.ping())
        .await
        .unwrap()
        .unwrap();
    vm.stop(true).await;
}

/// On a real Firecracker and jailer (gated; see docs/firecracker-backend.md): boot the image
/// through the jailer with the custom seccomp filter compiled by the user's seccompiler-bin,
/// check the root drive is read-only from inside, snapshot, restore into a new jail, reach the
/// restored agent, and print restore-to-ready.
#[tokio::test]
async fn real_jailed_firecracker_with_custom_seccomp_snapshots_and_restores() {
    use luminaguard_firecracker::jailer::JailerConfig;
    use luminaguard_firecracker::launch::RunAs;
    let test = "real_jailed_firecracker_with_custom_seccomp_snapshots_and_restores";
    let vars = (
        std::env::var_os("LUMINAGUARD_FIRECRACKER"),
        std::env::var_os("LUMINAGUARD_JAILER"),
        luminaguard_firecracker::testing::real_image_from_env().unwrap(),
    );
    let (Some(fc), Some(jailer), Some(image)) = vars else {
        eprintln!(
            "skipped {test}: set LUMINAGUARD_FIRECRACKER, LUMINAGUARD_JAILER, {} (runs as root)",
            luminaguard_firecracker::testing::REAL_IMAGE_VARS
        );
        return;
    };
    assert!(super::is_root(), "{test}: the jailer needs root");
    let fc = std::path::PathBuf::from(fc);
    let guest = luminaguard_firecracker::GuestImage::from_store(&image).unwrap();
    let compiler = seccomp::find_seccompiler(None, Some(&fc))
        .await
        .expect("seccompiler-bin (LUMINAGUARD_SECCOMPILER, next to firecracker, or on PATH)");
    let cache = tempfile::tempdir().unwrap();
    let bpf = seccomp::compile(&compiler, seccomp::POLICY_X86_64, cache.path())
        .await
        .unwrap();
    let img = images();
    // A 64 MiB scratch disk of zeroes (the guest does not have to mount it).
    std::fs::File::create(&img.scratch)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    let mut cfg = config(&img, &Plan::default());
    cfg.firecracker = fc;
    cfg.kernel = guest.kernel.clone();
    cfg.initrd = Some(guest.initrd.clone());
    cfg.rootfs = guest.rootfs.clone();
    cfg.seccomp_filter = Some(bpf);
    cfg.timeouts.boot = Duration::from_secs(30);
    cfg.run_as = Some(RunAs {
        uid: 0x5a0f_f100,
        gid: 0x5a0f_f100,
        supplementary: vec![],
    });
    let mut j = JailerConfig::new(jailer.into());
    j.new_pid_ns = true;
    cfg.jailer = Some(j);
    let mut vm = launch::launch(&cfg).await.unwrap();
    eprintln!("jailed boot: {:?}", vm.timings);
    let info = vm.agent.info().await.unwrap();
    assert_eq!(info.kernel_release, image.manifest.kernel_release);
    // The root drive is read-only from inside: writing to it fails.
    let out = vm
        .agent
        .exec_output(
            luminaguard_protocol::ExecRequest {
                argv: vec!["/bin/sh".into(), "-c".into(), "echo x > /dev/vda".into()],
                env: vec![],
                clear_env: false,
                cwd: None,
                stdin: false,
                timeout_ms: Some(10_000),
                output_limit: Some(4096),
            },
            None,
        )
        .await
        .unwrap();
    assert_ne!(
        out.status.code,
        Some(0),
        "the root drive took a write: {out:?}"
    );

    let dest = tempfile::tempdir().unwrap();
    let snap = snapshot::create(&mut vm, &cfg, dest.path()).await.unwrap();
    vm.agent.ping().await.unwrap();
    let img2 = images();
    let mut cfg2 = cfg.clone();
    cfg2.dir = img2.sandbox.clone();
    let version = vm.api.version().await.unwrap().firecracker_version;
    let restored = snapshot::restore(
        &cfg2,
        &RestoreFrom {
            snapshot: snap,
            vsock_override: snapshot::has_vsock_override(&version),
        },
    )
    .await
    .unwrap();
    eprintln!(
        "restore-to-ready (spawn to handshake): {:?}; load+resume {:?}; agent {:?}",
        restored.timings.total, restored.timings.configure, restored.timings.boot
    );
    restored.agent.ping().await.unwrap();
    let jail2 = restored.jail.clone().unwrap();
    restored.stop(true).await;
    let jail1 = vm.jail.clone().unwrap();
    vm.stop(true).await;
    assert!(!jail1.base.exists() && !jail2.base.exists());
}
