//! Against the real guest kernel: Debian's cloud kernel unpacked by `scripts/fetch-guest-kernel`,
//! whose output `LUMINAGUARD_GUEST_KERNEL_DIR` names (scripts/test exports it). Required in CI;
//! skipped with a message elsewhere when the variable is unset.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)] // test code

use std::path::{Path, PathBuf};

use luminaguard_image::Codec;
use luminaguard_image::modules::ModuleTree;
use luminaguard_image::vmlinux;

/// The modules DESIGN.md §5 loads in the guest, in its order.
const GUEST_MODULES: &[&str] = &[
    "virtio_ring",
    "virtio",
    "virtio_mmio",
    "virtio_console",
    "virtio_blk",
    "virtio_net",
    "vsock",
    "vmw_vsock_virtio_transport_common",
    "vmw_vsock_virtio_transport",
    "ext4",
    "overlay",
];

struct Kernel {
    release: String,
    vmlinuz: PathBuf,
    modules: PathBuf,
}

fn kernel() -> Option<Kernel> {
    let Some(dir) = std::env::var_os("LUMINAGUARD_GUEST_KERNEL_DIR") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must set LUMINAGUARD_GUEST_KERNEL_DIR (scripts/test exports the output of \
             scripts/fetch-guest-kernel)"
        );
        eprintln!(
            "skipped: LUMINAGUARD_GUEST_KERNEL_DIR is not set (export it from scripts/fetch-guest-kernel)"
        );
        return None;
    };
    let dir = PathBuf::from(dir);
    let boot: Vec<PathBuf> = std::fs::read_dir(dir.join("boot"))
        .unwrap_or_else(|e| panic!("{}/boot: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("vmlinuz-")
        })
        .collect();
    assert_eq!(boot.len(), 1, "one boot/vmlinuz-* in {}", dir.display());
    let vmlinuz = boot[0].clone();
    let release = vmlinuz.file_name().unwrap().to_str().unwrap()["vmlinuz-".len()..].to_owned();
    let modules = dir.join("lib/modules").join(&release);
    Some(Kernel {
        release,
        vmlinuz,
        modules,
    })
}

fn u16_at(d: &[u8], off: usize) -> u16 {
    u16::from_le_bytes(d[off..off + 2].try_into().unwrap())
}

#[test]
fn the_real_bzimage_yields_an_x86_64_vmlinux_and_its_release() {
    let Some(k) = kernel() else { return };
    let bz = std::fs::read(&k.vmlinuz).unwrap();
    assert_eq!(vmlinux::kernel_release(&bz).unwrap(), k.release);
    let codec = vmlinux::payload_codec(&bz).unwrap();
    eprintln!(
        "{}: {codec}; version {:?}",
        k.vmlinuz.display(),
        vmlinux::kernel_version(&bz).unwrap()
    );
    // Debian builds its cloud kernel with CONFIG_KERNEL_LZ4.
    let config = std::fs::read_to_string(k.vmlinuz.with_file_name(format!("config-{}", k.release)));
    if let Ok(config) = config
        && config.lines().any(|l| l == "CONFIG_KERNEL_LZ4=y")
    {
        assert_eq!(codec, Codec::Lz4Legacy);
    }

    let elf = vmlinux::extract_vmlinux(&bz).unwrap();
    // Check the header here byte by byte, independently of the crate's own parser.
    assert_eq!(&elf[..4], b"\x7fELF");
    assert_eq!(elf[4], 2, "ELFCLASS64");
    assert_eq!(elf[5], 1, "little-endian");
    assert_eq!(u16_at(&elf, 16), 2, "ET_EXEC");
    assert_eq!(u16_at(&elf, 18), 0x3e, "x86-64");
    let payload = vmlinux::payload(&bz).unwrap();
    let trailer = u32::from_le_bytes(payload[payload.len() - 4..].try_into().unwrap());
    assert_eq!(elf.len(), trailer as usize);
    // The kernel's banner (printed at boot, and what `/proc/version` shows) is in the text.
    let banner = format!("Linux version {} (", k.release);
    assert!(
        elf.windows(banner.len()).any(|w| w == banner.as_bytes()),
        "no {banner:?} in the extracted vmlinux"
    );
    eprintln!("vmlinux: {} bytes", elf.len());
}

#[test]
fn the_real_module_tree_resolves_the_guest_modules() {
    let Some(k) = kernel() else { return };
    let tree = ModuleTree::open(&k.modules).unwrap();
    let r = tree.resolve(GUEST_MODULES).unwrap();
    eprintln!(
        "{}: dependencies from {:?}\n  load order: {:?}\n  built in: {:?}",
        k.modules.display(),
        tree.dep_source(),
        r.names(),
        r.builtin
    );
    for want in GUEST_MODULES {
        assert!(
            r.names().contains(want) || r.builtin.iter().any(|b| b == want),
            "{want} neither loaded nor built in"
        );
    }
    // The order DESIGN.md §5 verified under QEMU must hold.
    let at = |name: &str| r.names().iter().position(|n| *n == name);
    for pair in [
        ["virtio_ring", "virtio"],
        ["virtio", "virtio_mmio"],
        ["virtio", "virtio_console"],
        ["virtio", "virtio_blk"],
        ["virtio", "virtio_net"],
        ["failover", "net_failover"],
        ["net_failover", "virtio_net"],
        ["vsock", "vmw_vsock_virtio_transport_common"],
        [
            "vmw_vsock_virtio_transport_common",
            "vmw_vsock_virtio_transport",
        ],
        ["virtio", "vmw_vsock_virtio_transport"],
    ] {
        let (Some(a), Some(b)) = (at(pair[0]), at(pair[1])) else {
            continue; // built in
        };
        assert!(
            a < b,
            "{} must load before {}: {:?}",
            pair[0],
            pair[1],
            r.names()
        );
    }
    for module in &r.modules {
        let plain = module.read().unwrap();
        assert_eq!(&plain[..4], b"\x7fELF", "{}", module.path.display());
        assert_eq!(u16_at(&plain, 16), 1, "{} is ET_REL", module.path.display());
    }
    assert!(
        tree.resolve(&["no_such_module_anywhere"]).is_err(),
        "an unknown name must be an error"
    );
}

#[test]
fn the_release_names_the_module_tree() {
    let Some(k) = kernel() else { return };
    assert!(
        Path::new(&k.modules).join("modules.builtin").is_file(),
        "{}",
        k.modules.display()
    );
}
