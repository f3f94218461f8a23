//! `luminaguard image build|ls|rm` end to end, with the real guest kernel
//! (`LUMINAGUARD_GUEST_KERNEL_DIR`) and the static agent (`LUMINAGUARD_STATIC_AGENT`), both
//! exported by scripts/test: required in CI, skipped with a message elsewhere. (Booting an
//! image is tested in src/image/tests/boot.rs.)
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)] // test code

use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_luminaguard");

fn lg(store: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(["image"])
        .args(args)
        .arg("--store")
        .arg(store)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

fn json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn build_twice_list_and_remove() {
    if std::env::var_os("LUMINAGUARD_GUEST_KERNEL_DIR").is_none()
        || std::env::var_os("LUMINAGUARD_STATIC_AGENT").is_none()
    {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must set LUMINAGUARD_GUEST_KERNEL_DIR and LUMINAGUARD_STATIC_AGENT"
        );
        eprintln!("skipped: LUMINAGUARD_GUEST_KERNEL_DIR or LUMINAGUARD_STATIC_AGENT is not set");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");

    let first = json(&lg(&store, &["build", "--json"]));
    assert_eq!(first["reused"], false);
    let digest = first["digest"].as_str().unwrap().to_owned();
    let files: Vec<&str> = first["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["file"].as_str().unwrap())
        .collect();
    for want in ["vmlinux", "initramfs.cpio", "rootfs.ext4"] {
        assert!(files.contains(&want), "{files:?}");
    }

    let second = json(&lg(&store, &["build", "--json"]));
    assert_eq!(second["reused"], true, "{second}");
    assert_eq!(second["digest"], digest.as_str());

    let list = json(&lg(&store, &["ls", "--json"]));
    let digests: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["digest"].as_str().unwrap())
        .collect();
    assert_eq!(digests, vec![digest.as_str()]);

    let removed = json(&lg(&store, &["rm", "--json", &digest[..12]]));
    assert_eq!(removed["removed"][0], digest.as_str());
    assert_eq!(json(&lg(&store, &["ls", "--json"])), serde_json::json!([]));
    // Removing it again names it in the error.
    let out = lg(&store, &["rm", &digest]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&digest),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Nothing is left in the store's scratch space.
    assert_eq!(
        std::fs::read_dir(store.join("tmp")).unwrap().count(),
        0,
        "leftovers in the store's tmp/"
    );
}
