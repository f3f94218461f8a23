//! Templates through the backend, against the fake: a template made from a fresh sandbox
//! (which is removed), sandboxes restored from it — each reseeded with its own entropy, each
//! with its own VMM user — and requests the template cannot serve refused before anything runs.

use std::os::unix::fs::MetadataExt;

use luminaguard_backend::{Backend, BackendError};
use luminaguard_firecracker::template::{NetShape, Template};
use luminaguard_firecracker::testing::{FAKE_VERSION, Fault, Plan, RECORD_FILE, Recorded};

use super::{backend_fixture, is_root, no_fake_running_in, request, same_file};

fn records(dir: &std::path::Path) -> Vec<Recorded> {
    std::fs::read_to_string(dir.join(RECORD_FILE))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn sandboxes_left(fx: &super::BackendFixture) -> Vec<std::path::PathBuf> {
    match std::fs::read_dir(fx.runtime.root().join("sandboxes")) {
        Ok(entries) => entries.flatten().map(|e| e.path()).collect(),
        Err(_) => Vec::new(),
    }
}

#[tokio::test]
async fn sandboxes_are_restored_from_a_template_each_with_fresh_entropy() {
    let fx = backend_fixture(&Plan::default());
    let dest = fx.runtime.root().parent().unwrap().join("template-1");
    let template = fx
        .backend
        .create_template(request(&fx, "fc-tpl-src", true, true), &dest)
        .await
        .unwrap();
    // What the snapshotted VM was.
    let m = &template.manifest;
    assert_eq!((m.vcpus, m.memory_mib), (1, 512), "{m:?}");
    assert_eq!(m.network, NetShape::None);
    assert!(!m.jailed);
    assert_eq!(m.firecracker_version, FAKE_VERSION);
    assert_eq!(Template::open(&dest).await.unwrap(), template);
    // Root's, read-only for the VMMs; the template's own sandbox is gone.
    assert_eq!(std::fs::metadata(&dest).unwrap().mode() & 0o777, 0o700);
    for name in ["vm.snap", "vm.mem"] {
        let meta = std::fs::metadata(dest.join(name)).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o644, "{name}");
        if is_root() {
            assert_eq!((meta.uid(), meta.gid()), (0, 0), "{name}");
        }
    }
    assert!(sandboxes_left(&fx).is_empty(), "{:?}", sandboxes_left(&fx));

    let restoring = fx.backend.clone().with_template(Some(template.clone()));
    let mut seeds = Vec::new();
    let mut sandboxes = Vec::new();
    for id in ["fc-tpl-a", "fc-tpl-b"] {
        let sandbox = restoring
            .create(request(&fx, id, true, true))
            .await
            .unwrap();
        sandbox.client().ping().await.unwrap();
        let reqs = records(&sandbox.dir);
        super::assert_restored(&reqs);
        assert_eq!(reqs[0].body["snapshot_path"], "vm.snap");
        assert_eq!(reqs[0].body["mem_backend"]["backend_path"], "vm.mem");
        // The VMM read the template's own files through links in its directory.
        for name in ["vm.snap", "vm.mem"] {
            assert!(same_file(&sandbox.dir.join(name), &dest.join(name)));
        }
        let seed: Vec<u8> = serde_json::from_value(reqs[2].body["entropy"].clone()).unwrap();
        assert_eq!(seed.len(), 64);
        seeds.push(seed);
        sandboxes.push(sandbox);
    }
    assert_ne!(seeds[0], seeds[1], "two restores, one seed");
    if is_root() {
        let uids: Vec<_> = sandboxes.iter().map(|s| s.meta.vmm_uid.unwrap()).collect();
        assert_ne!(uids[0], uids[1], "each restored VMM has its own user");
    }
    for sandbox in sandboxes {
        let (dir, init) = (sandbox.dir.clone(), sandbox.meta.init.unwrap());
        sandbox.destroy().await.unwrap();
        assert!(!init.alive() && !dir.exists());
        assert!(no_fake_running_in(&dir));
    }
    // The template outlives its sandboxes, unchanged.
    assert_eq!(Template::open(&dest).await.unwrap(), template);
    assert!(std::fs::metadata(dest.join("vm.mem")).unwrap().nlink() == 1);
}

#[tokio::test]
async fn a_request_the_template_does_not_hold_is_refused_before_anything_runs() {
    let fx = backend_fixture(&Plan::default());
    let dest = fx.runtime.root().parent().unwrap().join("template-2");
    let template = fx
        .backend
        .create_template(request(&fx, "fc-tpl-src2", false, true), &dest)
        .await
        .unwrap();
    let restoring = fx.backend.clone().with_template(Some(template));
    let mut req = request(&fx, "fc-tpl-c", false, true);
    req.spec.vcpus = 2;
    let dir = fx.runtime.sandbox_dir(&req.id).unwrap();
    match restoring.create(req).await.unwrap_err() {
        BackendError::Setup { step, reason, .. } => {
            assert_eq!(step, "restore the template");
            assert!(reason.contains("1 vCPUs, not 2"), "{reason}");
        }
        other => panic!("expected a setup error, got {other:?}"),
    }
    assert!(!dir.exists());
    assert!(no_fake_running_in(&dir));
}

#[tokio::test]
async fn a_failed_template_leaves_no_template_and_no_sandbox() {
    let fx = backend_fixture(&Plan::default().fault(
        "PUT /snapshot/create",
        Fault::Status {
            status: 400,
            fault_message: "Create snapshot error: injected".into(),
        },
    ));
    let dest = fx.runtime.root().parent().unwrap().join("template-3");
    let err = fx
        .backend
        .create_template(request(&fx, "fc-tpl-src3", false, true), &dest)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("Create snapshot error: injected"), "{err}");
    assert!(!dest.exists(), "a failed template left its directory");
    assert!(sandboxes_left(&fx).is_empty(), "{:?}", sandboxes_left(&fx));
    // An existing directory is never overwritten.
    std::fs::create_dir(&dest).unwrap();
    let fx2 = backend_fixture(&Plan::default());
    let err = fx2
        .backend
        .create_template(request(&fx2, "fc-tpl-src4", false, true), &dest)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("File exists"), "{err}");
    assert!(dest.exists());
}

/// On a real Firecracker (see docs/firecracker-backend.md for the variables): a template of the
/// project's image, two sandboxes restored from it, each reading `/dev/urandom` — which must
/// differ: without the reseed both would go on from the snapshot's CRNG state and read the same
/// bytes. Jailed when `LUMINAGUARD_JAILER` is set (root). Prints boot and restore timings.
#[tokio::test]
async fn real_firecracker_restores_sandboxes_that_draw_different_random_numbers() {
    use luminaguard_core::{RuntimeDir, SandboxId, SandboxSpec};
    use luminaguard_firecracker::{FirecrackerBackend, GuestImage};
    use luminaguard_protocol::ReadFileRequest;
    let test = "real_firecracker_restores_sandboxes";
    let Some(fc) = super::real_firecracker(test) else {
        return;
    };
    let Some(image) = luminaguard_firecracker::testing::real_image_from_env().unwrap() else {
        eprintln!(
            "skipped {test}: also set {}",
            luminaguard_firecracker::testing::REAL_IMAGE_VARS
        );
        return;
    };
    let mut backend = FirecrackerBackend::new(
        fc,
        GuestImage::from_store(&image).unwrap(),
        Default::default(),
    );
    if let (Some(jailer), true) = (std::env::var_os("LUMINAGUARD_JAILER"), is_root()) {
        backend = backend.with_jailer(Some(jailer.into()));
    }
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o711),
    )
    .unwrap();
    let runtime = RuntimeDir::new(tmp.path().join("rt")).unwrap();
    std::fs::create_dir_all(runtime.root()).unwrap();
    let req = |id: &str| luminaguard_backend::CreateRequest {
        id: SandboxId::new(id).unwrap(),
        spec: SandboxSpec::default(),
        workspace: None,
        persistent: false,
        without_cgroup: !is_root(),
        user: None,
        runtime: runtime.clone(),
    };
    let (booted, boot) = backend.create_timed(req("fc-real-boot")).await.unwrap();
    booted.destroy().await.unwrap();
    let template = backend
        .create_template(req("fc-real-tpl"), &runtime.root().join("template"))
        .await
        .unwrap();
    let restoring = backend.clone().with_template(Some(template));
    let mut draws = Vec::new();
    for id in ["fc-real-r1", "fc-real-r2"] {
        let (sandbox, restore) = restoring.create_timed(req(id)).await.unwrap();
        eprintln!("boot-to-ready {boot:?}; restore-to-ready {restore:?}");
        let mut bytes = Vec::new();
        let req = ReadFileRequest {
            path: "/dev/urandom".into(),
            offset: 0,
            limit: Some(32),
        };
        sandbox
            .client()
            .read_file_to(req, &mut bytes)
            .await
            .unwrap();
        assert_eq!(bytes.len(), 32);
        draws.push(bytes);
        sandbox.destroy().await.unwrap();
    }
    assert_ne!(
        draws[0], draws[1],
        "two restores read the same random bytes"
    );
}
