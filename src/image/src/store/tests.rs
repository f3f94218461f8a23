#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::os::unix::fs::PermissionsExt;

use super::*;

const KERNEL: &[u8] = b"fake bzImage bytes";
const VMLINUX: &[u8] = b"\x7fELF fake vmlinux";
const INITRAMFS: &[u8] = b"070701 fake initramfs";

fn new_image<'a>(rootfs: &'a Path, initramfs: &'a [u8]) -> NewImage<'a> {
    NewImage {
        kernel_release: "6.1.0-28-cloud-amd64".to_owned(),
        kernel: Source::Bytes(KERNEL),
        vmlinux: Some(Source::Bytes(VMLINUX)),
        initramfs: Source::Bytes(initramfs),
        rootfs: Some(Source::File(rootfs)),
        modules: vec!["virtio_ring".to_owned(), "virtio".to_owned()],
        inputs_digest: Digest::of_parts([("kernel", KERNEL), ("initramfs", initramfs)]),
        created_by: "luminaguard 0.1.0".to_owned(),
        packages: Vec::new(),
        includes: Vec::new(),
    }
}

struct Fixture {
    dir: tempfile::TempDir,
    store: Store,
    rootfs: PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    let rootfs = dir.path().join("rootfs.ext4");
    std::fs::write(&rootfs, vec![0x53u8; 300_000]).unwrap();
    Fixture { dir, store, rootfs }
}

fn tmp_is_empty(store: &Store) -> bool {
    std::fs::read_dir(store.root().join("tmp"))
        .unwrap()
        .next()
        .is_none()
}

/// Makes an artifact writable again (the store writes them read-only) and applies `f` to it.
fn tamper(path: &Path, f: impl FnOnce(&Path)) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).unwrap();
    f(path);
}

#[test]
fn insert_then_get_by_digest_and_prefix() {
    let f = fixture();
    let image = f.store.insert(new_image(&f.rootfs, INITRAMFS)).unwrap();
    assert_eq!(
        image.dir,
        f.store.root().join("images").join(image.digest.as_str())
    );
    let m = &image.manifest;
    assert_eq!(m.kernel_release, "6.1.0-28-cloud-amd64");
    assert_eq!(m.kernel.sha256, Digest::of(KERNEL));
    assert_eq!(m.kernel.size, KERNEL.len() as u64);
    assert_eq!(m.initramfs.sha256, Digest::of(INITRAMFS));
    assert_eq!(
        m.rootfs.as_ref().unwrap().sha256,
        Digest::of(&std::fs::read(&f.rootfs).unwrap())
    );
    assert_eq!(m.modules, ["virtio_ring", "virtio"]);
    for (kind, bytes) in [
        (ArtifactKind::Kernel, KERNEL.to_vec()),
        (ArtifactKind::Vmlinux, VMLINUX.to_vec()),
        (ArtifactKind::Initramfs, INITRAMFS.to_vec()),
        (ArtifactKind::Rootfs, std::fs::read(&f.rootfs).unwrap()),
    ] {
        let path = image.artifact_path(kind).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), bytes, "{kind:?}");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o444, "{kind:?} is read-only");
    }
    // The digest is the SHA-256 of manifest.json, which is the canonical manifest.
    let manifest_bytes = std::fs::read(image.dir.join("manifest.json")).unwrap();
    assert_eq!(Digest::of(&manifest_bytes), image.digest);
    assert_eq!(manifest_bytes, m.canonical_bytes().unwrap());

    let full = image.digest.to_string();
    assert_eq!(f.store.get(&full).unwrap(), image);
    assert_eq!(f.store.get(&full[..8]).unwrap(), image);
    assert_eq!(
        f.store.get(&format!("sha256:{}", &full[..20])).unwrap(),
        image
    );
    assert!(tmp_is_empty(&f.store));
}

#[test]
fn same_inputs_give_the_same_digest_in_any_store() {
    let f = fixture();
    let a = f.store.insert(new_image(&f.rootfs, INITRAMFS)).unwrap();
    let b = f.store.insert(new_image(&f.rootfs, INITRAMFS)).unwrap();
    assert_eq!(a, b);
    assert_eq!(f.store.list().unwrap().len(), 1);
    assert!(tmp_is_empty(&f.store));
    // A second store, elsewhere, computes the same digest.
    let other = Store::open(&f.dir.path().join("other")).unwrap();
    assert_eq!(
        other
            .insert(new_image(&f.rootfs, INITRAMFS))
            .unwrap()
            .digest,
        a.digest
    );
    // Different content, different digest.
    let c = f
        .store
        .insert(new_image(&f.rootfs, b"another initramfs"))
        .unwrap();
    assert_ne!(c.digest, a.digest);
    let mut no_vmlinux = new_image(&f.rootfs, INITRAMFS);
    no_vmlinux.vmlinux = None;
    let d = f.store.insert(no_vmlinux).unwrap();
    assert_ne!(d.digest, a.digest);
    assert_eq!(d.artifact_path(ArtifactKind::Vmlinux), None);
    assert!(!d.dir.join("vmlinux").exists());
    let digests: Vec<Digest> = f
        .store
        .list()
        .unwrap()
        .into_iter()
        .map(|i| i.unwrap().digest)
        .collect();
    let mut sorted = digests.clone();
    sorted.sort();
    assert_eq!(digests.len(), 3);
    assert_eq!(digests, sorted);
}

#[test]
fn find_by_inputs_finds_the_built_image() {
    let f = fixture();
    let image = f.store.insert(new_image(&f.rootfs, INITRAMFS)).unwrap();
    let inputs = image.manifest.inputs_digest.clone();
    assert_eq!(f.store.find_by_inputs(&inputs).unwrap(), Some(image));
    assert_eq!(f.store.find_by_inputs(&Digest::of(b"other")).unwrap(), None);
}

#[test]
fn remove_deletes_the_image_and_leaves_nothing() {
    let f = fixture();
    let image = f.store.insert(new_image(&f.rootfs, INITRAMFS)).unwrap();
    let removed = f.store.remove(&image.digest.as_str()[..10]).unwrap();
    assert_eq!(removed, image.digest);
    assert!(!image.dir.exists());
    assert!(matches!(
        f.store.get(image.digest.as_str()),
        Err(StoreError::NotFound { .. })
    ));
    assert!(f.store.list().unwrap().is_empty());
    assert!(tmp_is_empty(&f.store));
    assert!(matches!(
        f.store.remove(image.digest.as_str()),
        Err(StoreError::NotFound { .. })
    ));
}

#[test]
fn verify_passes_an_intact_image() {
    let f = fixture();
    let image = f.store.insert(new_image(&f.rootfs, INITRAMFS)).unwrap();
    assert_eq!(f.store.verify(image.digest.as_str()).unwrap(), image);
}

#[test]
fn verify_names_the_corrupted_artifact() {
    type Damage = fn(&Path);
    let cases: [(&str, Damage); 4] = [
        ("initramfs.cpio", |p| {
            std::fs::write(p, b"070701 fake initramfX").unwrap()
        }),
        ("rootfs.ext4", |p| {
            std::fs::OpenOptions::new()
                .write(true)
                .open(p)
                .unwrap()
                .set_len(1000)
                .unwrap()
        }),
        ("vmlinux", |p| std::fs::remove_file(p).unwrap()),
        ("vmlinuz", |p| std::fs::write(p, b"").unwrap()),
    ];
    for (file, damage) in cases {
        let f = fixture();
        let image = f.store.insert(new_image(&f.rootfs, INITRAMFS)).unwrap();
        tamper(&image.dir.join(file), damage);
        let err = f.store.verify(image.digest.as_str()).unwrap_err();
        assert!(
            matches!(&err, StoreError::Corrupted { file: named, .. } if named == file),
            "{file}: {err}"
        );
        assert!(err.to_string().contains(file), "{err}");
    }
}

#[test]
fn verify_reports_a_file_that_is_not_part_of_the_image() {
    let f = fixture();
    let image = f.store.insert(new_image(&f.rootfs, INITRAMFS)).unwrap();
    std::fs::write(image.dir.join("backdoor.sh"), b"x").unwrap();
    let err = f.store.verify(image.digest.as_str()).unwrap_err();
    assert!(err.to_string().contains("backdoor.sh"), "{err}");
}

#[test]
fn a_modified_manifest_is_detected_on_load() {
    let f = fixture();
    let image = f.store.insert(new_image(&f.rootfs, INITRAMFS)).unwrap();
    let path = image.dir.join("manifest.json");
    tamper(&path, |p| {
        let mut m: Manifest = serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap();
        m.modules.push("evil".to_owned());
        std::fs::write(p, m.canonical_bytes().unwrap()).unwrap();
    });
    for result in [
        f.store.get(image.digest.as_str()),
        f.store.verify(image.digest.as_str()),
    ] {
        assert!(
            matches!(result, Err(StoreError::ManifestModified { .. })),
            "{result:?}"
        );
    }
    // list reports it as an error entry instead of failing or hiding it.
    let listed = f.store.list().unwrap();
    assert_eq!(listed.len(), 1);
    assert!(listed[0].is_err());
    assert_eq!(
        f.store
            .find_by_inputs(&image.manifest.inputs_digest)
            .unwrap(),
        None
    );
}

#[test]
fn hostile_references_are_refused_before_touching_files() {
    let f = fixture();
    let image = f.store.insert(new_image(&f.rootfs, INITRAMFS)).unwrap();
    let full = image.digest.to_string();
    for bad in [
        "",
        "../x",
        "../../../../etc/passwd",
        "abc",
        &full[..7],
        "zzzzzzzzzzzz",
        &full.to_uppercase(),
        &format!("{full}0"),
        &format!("{}/..", &full[..10]),
        "sha256:",
        &format!("{}\0", &full[..10]),
    ] {
        for result in [f.store.get(bad), f.store.verify(bad)] {
            assert!(
                matches!(result, Err(StoreError::BadReference { .. })),
                "{bad:?}: {result:?}"
            );
        }
        assert!(
            matches!(f.store.remove(bad), Err(StoreError::BadReference { .. })),
            "{bad:?}"
        );
    }
    assert!(image.dir.exists());
}

#[test]
fn an_ambiguous_prefix_is_an_error() {
    let f = fixture();
    let images = f.store.root().join("images");
    let a = format!("deadbeef{}", "0".repeat(56));
    let b = format!("deadbeef{}", "1".repeat(56));
    std::fs::create_dir(images.join(&a)).unwrap();
    std::fs::create_dir(images.join(&b)).unwrap();
    let err = f.store.get("deadbeef").unwrap_err();
    assert!(
        matches!(err, StoreError::Ambiguous { count: 2, .. }),
        "{err}"
    );
    // A longer prefix picks one; that one has no manifest, which is an error naming it.
    let err = f.store.get("deadbeef0").unwrap_err();
    assert!(err.to_string().contains(&a), "{err}");
}

#[test]
fn a_failed_insert_leaves_nothing_behind() {
    let f = fixture();
    let missing = f.dir.path().join("no-such-rootfs.img");
    let err = f.store.insert(new_image(&missing, INITRAMFS)).unwrap_err();
    assert!(err.to_string().contains("no-such-rootfs.img"), "{err}");
    assert!(f.store.list().unwrap().is_empty());
    assert!(tmp_is_empty(&f.store));

    let mut bad = new_image(&f.rootfs, INITRAMFS);
    bad.kernel_release = "../6.1".to_owned();
    assert!(matches!(f.store.insert(bad), Err(StoreError::Invalid(_))));
    let mut bad = new_image(&f.rootfs, INITRAMFS);
    bad.modules.push("virtio mmio".to_owned());
    assert!(matches!(f.store.insert(bad), Err(StoreError::Invalid(_))));
    assert!(f.store.list().unwrap().is_empty());
    assert!(tmp_is_empty(&f.store));
}

#[test]
fn unknown_manifest_fields_are_refused() {
    let f = fixture();
    let image = f.store.insert(new_image(&f.rootfs, INITRAMFS)).unwrap();
    let mut json: serde_json::Value =
        serde_json::from_slice(&image.manifest.canonical_bytes().unwrap()).unwrap();
    json["extra"] = serde_json::Value::Bool(true);
    let err = serde_json::from_value::<Manifest>(json).unwrap_err();
    assert!(err.to_string().contains("extra"), "{err}");
}

#[test]
fn open_removes_what_crashed_inserts_left_behind() {
    let f = fixture();
    let tmp = f.store.root().join("tmp");
    // No process has pid 999999999 (the kernel's maximum is 4194304).
    let stale = tmp.join("insert-999999999-1-0");
    std::fs::create_dir(&stale).unwrap();
    std::fs::write(stale.join("vmlinuz"), b"half written").unwrap();
    let ours = tmp.join(format!("insert-{}-1-0", std::process::id()));
    std::fs::create_dir(&ours).unwrap();
    let alien = tmp.join("unrelated");
    std::fs::create_dir(&alien).unwrap();
    Store::open(f.store.root()).unwrap();
    assert!(!stale.exists());
    assert!(ours.exists(), "a live process's staging directory stays");
    assert!(alien.exists(), "names the store did not make stay");
}

#[test]
fn default_root_per_user() {
    use std::path::PathBuf;
    assert_eq!(
        super::default_root(0, Some(Path::new("/x")), None),
        Some(PathBuf::from("/var/lib/luminaguard/images"))
    );
    assert_eq!(
        super::default_root(1000, Some(Path::new("/x")), Some(Path::new("/home/u"))),
        Some(PathBuf::from("/x/luminaguard/images"))
    );
    assert_eq!(
        super::default_root(1000, Some(Path::new("rel")), Some(Path::new("/home/u"))),
        Some(PathBuf::from("/home/u/.local/share/luminaguard/images"))
    );
    assert_eq!(
        super::default_root(1000, None, Some(Path::new("rel"))),
        None
    );
}

#[test]
fn verify_for_boot_catches_a_same_size_overwrite_after_a_cached_verification() {
    let f = fixture();
    let image = f.store.insert(new_image(&f.rootfs, INITRAMFS)).unwrap();
    let digest = image.digest.as_str().to_owned();
    // First boot: full verification, then the stamp is recorded.
    f.store.verify_for_boot(&digest).unwrap();
    let stamp = f
        .store
        .root()
        .join("verified")
        .join(format!("{digest}.json"));
    assert!(stamp.exists());
    // Unchanged: passes again (from the stamp).
    f.store.verify_for_boot(&digest).unwrap();
    // One byte flipped in place, same size and the mtime put back: the ctime still moved.
    let rootfs = image.dir.join("rootfs.ext4");
    let mtime = std::fs::metadata(&rootfs).unwrap().modified().unwrap();
    tamper(&rootfs, |p| {
        use std::io::{Seek, SeekFrom, Write};
        let mut file = std::fs::OpenOptions::new().write(true).open(p).unwrap();
        file.seek(SeekFrom::Start(1234)).unwrap();
        file.write_all(b"X").unwrap();
        file.set_modified(mtime).unwrap();
    });
    let err = f.store.verify_for_boot(&digest).unwrap_err();
    assert!(
        matches!(&err, StoreError::Corrupted { file, .. } if file == "rootfs.ext4"),
        "{err}"
    );
    // Removing the image removes its stamp.
    tamper(&rootfs, |p| {
        std::fs::write(p, vec![0x53u8; 300_000]).unwrap()
    });
    f.store.remove(&digest).unwrap();
    assert!(!stamp.exists());
}

#[test]
fn packages_and_includes_are_recorded_and_absent_when_empty() {
    let f = fixture();
    let plain = f.store.insert(new_image(&f.rootfs, INITRAMFS)).unwrap();
    let bytes = plain.manifest.canonical_bytes().unwrap();
    let json = String::from_utf8(bytes).unwrap();
    // Older manifests have neither key: leaving them out keeps those images' digests.
    assert!(
        !json.contains("packages") && !json.contains("includes"),
        "{json}"
    );
    let mut with = new_image(&f.rootfs, b"070701 another initramfs");
    with.packages = vec!["nodejs".to_owned()];
    with.includes = vec![crate::include::Included {
        at: "/opt/mcp/node".to_owned(),
        sha256: Digest::of(b"tree"),
    }];
    let image = f.store.insert(with).unwrap();
    let again = f.store.get(image.digest.as_str()).unwrap();
    assert_eq!(again.manifest.packages, ["nodejs"]);
    assert_eq!(again.manifest.includes[0].at, "/opt/mcp/node");
    assert_ne!(image.digest, plain.digest);
}
