#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::collections::BTreeMap;

use super::file::tests::{compress_for, fake_module};
use super::*;

/// (relative path, dependencies by name) of a small tree shaped like Debian's cloud kernel.
const TREE: &[(&str, &[&str])] = &[
    ("kernel/drivers/virtio/virtio_ring.ko.xz", &[]),
    ("kernel/drivers/virtio/virtio.ko.xz", &["virtio_ring"]),
    (
        "kernel/drivers/virtio/virtio_mmio.ko.xz",
        &["virtio", "virtio_ring"],
    ),
    (
        "kernel/drivers/block/virtio_blk.ko.zst",
        &["virtio", "virtio_ring"],
    ),
    ("kernel/net/vmw_vsock/vsock.ko", &[]),
    (
        "kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko",
        &["vsock"],
    ),
    (
        "kernel/net/vmw_vsock/vmw_vsock_virtio_transport.ko",
        &[
            "vmw_vsock_virtio_transport_common",
            "vsock",
            "virtio",
            "virtio_ring",
        ],
    ),
    ("kernel/fs/overlayfs/overlay.ko.gz", &[]),
    (
        "kernel/drivers/char/hw_random/virtio-rng.ko.gz",
        &["virtio", "virtio_ring"],
    ),
];

const BUILTIN: &str = "kernel/fs/ext4/ext4.ko\nkernel/fs/jbd2/jbd2.ko\nkernel/fs/mbcache.ko\n";

const WANTED: &[&str] = &[
    "virtio_mmio",
    "virtio_blk",
    "vmw_vsock_virtio_transport",
    "ext4",
    "overlay",
];

const EXPECTED: &[&str] = &[
    "virtio_ring",
    "virtio",
    "virtio_mmio",
    "virtio_blk",
    "vsock",
    "vmw_vsock_virtio_transport_common",
    "vmw_vsock_virtio_transport",
    "overlay",
];

fn path_of(name: &str) -> &'static str {
    TREE.iter()
        .map(|(path, _)| *path)
        .find(|path| module_name(Path::new(path)).as_deref() == Some(name))
        .unwrap()
}

/// Writes the tree's module files, `modules.builtin`, and `modules.dep` if asked (listing each
/// module's dependencies the way depmod does: last to load first).
fn write_tree(dir: &Path, with_modules_dep: bool) {
    let mut dep = String::new();
    for (path, deps) in TREE {
        let name = module_name(Path::new(path)).unwrap();
        let file = dir.join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, compress_for(path, &fake_module(&name, deps))).unwrap();
        let listed: Vec<&str> = deps.iter().rev().map(|d| path_of(d)).collect();
        dep.push_str(&format!("{path}: {}\n", listed.join(" ")));
    }
    std::fs::write(dir.join("modules.builtin"), BUILTIN).unwrap();
    if with_modules_dep {
        std::fs::write(dir.join("modules.dep"), dep).unwrap();
    }
}

/// Every module comes after all its dependencies.
fn assert_load_order(resolution: &Resolution) {
    let deps: BTreeMap<String, &[&str]> = TREE
        .iter()
        .map(|(path, deps)| (module_name(Path::new(path)).unwrap(), *deps))
        .collect();
    let names = resolution.names();
    for (i, name) in names.iter().enumerate() {
        for dep in deps[*name] {
            let at = names.iter().position(|n| n == dep);
            assert!(
                at.is_some_and(|at| at < i),
                "{dep} must load before {name}: {names:?}"
            );
        }
    }
}

#[test]
fn resolves_the_closure_in_load_order_from_modules_dep() {
    let dir = tempfile::tempdir().unwrap();
    write_tree(dir.path(), true);
    let tree = ModuleTree::open(dir.path()).unwrap();
    assert_eq!(tree.dep_source(), DepSource::ModulesDep);
    let resolution = tree.resolve(WANTED).unwrap();
    assert_eq!(resolution.names(), EXPECTED);
    assert_eq!(resolution.builtin, ["ext4"]);
    assert_load_order(&resolution);
}

#[test]
fn resolves_the_same_from_modinfo_without_modules_dep() {
    let dir = tempfile::tempdir().unwrap();
    write_tree(dir.path(), false);
    let tree = ModuleTree::open(dir.path()).unwrap();
    assert_eq!(tree.dep_source(), DepSource::Modinfo);
    let resolution = tree.resolve(WANTED).unwrap();
    assert_eq!(resolution.names(), EXPECTED);
    assert_eq!(resolution.builtin, ["ext4"]);
    assert_load_order(&resolution);
}

#[test]
fn resolution_is_deterministic_and_lists_each_module_once() {
    let dir = tempfile::tempdir().unwrap();
    write_tree(dir.path(), false);
    let tree = ModuleTree::open(dir.path()).unwrap();
    let twice: Vec<&str> = WANTED.iter().chain(WANTED).copied().collect();
    let a = tree.resolve(&twice).unwrap();
    let b = ModuleTree::open(dir.path())
        .unwrap()
        .resolve(WANTED)
        .unwrap();
    assert_eq!(a, b);
    // Wanted order matters: virtio alone first puts it (and its dependency) first.
    let c = tree.resolve(&["vsock", "virtio_mmio"]).unwrap();
    assert_eq!(c.names(), ["vsock", "virtio_ring", "virtio", "virtio_mmio"]);
}

#[test]
fn dashes_and_underscores_are_the_same_name() {
    let dir = tempfile::tempdir().unwrap();
    write_tree(dir.path(), true);
    let tree = ModuleTree::open(dir.path()).unwrap();
    let r = tree
        .resolve(&["virtio_rng", "vmw-vsock-virtio-transport"])
        .unwrap();
    assert_eq!(
        r.names(),
        [
            "virtio_ring",
            "virtio",
            "virtio_rng",
            "vsock",
            "vmw_vsock_virtio_transport_common",
            "vmw_vsock_virtio_transport"
        ]
    );
    assert_eq!(
        r.modules[2].relative,
        Path::new("kernel/drivers/char/hw_random/virtio-rng.ko.gz")
    );
    assert!(tree.is_builtin("ext4"));
    assert!(!tree.is_builtin("virtio"));
}

#[test]
fn resolved_modules_read_back_as_plain_ko() {
    let dir = tempfile::tempdir().unwrap();
    write_tree(dir.path(), true);
    let tree = ModuleTree::open(dir.path()).unwrap();
    let resolution = tree.resolve(WANTED).unwrap();
    for module in &resolution.modules {
        let plain = module.read().unwrap();
        let deps = TREE
            .iter()
            .find(|(p, _)| Path::new(p) == module.relative)
            .unwrap()
            .1;
        assert_eq!(plain, fake_module(&module.name, deps), "{}", module.name);
        assert_eq!(
            module.plain_relative().extension().unwrap(),
            "ko",
            "{:?}",
            module.relative
        );
    }
    let blk = tree.module("virtio_blk").unwrap();
    assert_eq!(
        blk.plain_relative(),
        Path::new("kernel/drivers/block/virtio_blk.ko")
    );
    assert_eq!(
        blk.path,
        dir.path().join("kernel/drivers/block/virtio_blk.ko.zst")
    );
}

#[test]
fn unknown_and_malformed_names_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    write_tree(dir.path(), true);
    let tree = ModuleTree::open(dir.path()).unwrap();
    let err = tree.resolve(&["virtio_mmio", "no_such_mod"]).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, ModulesError::NotFound { .. })
            && msg.contains("\"no_such_mod\"")
            && msg.contains(&dir.path().display().to_string()),
        "{msg}"
    );
    for bad in ["", "../x", "a b", "x.ko"] {
        assert!(
            matches!(tree.resolve(&[bad]), Err(ModulesError::BadName(_))),
            "{bad:?}"
        );
    }
}

#[test]
fn a_missing_dependency_names_both_modules() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("modules.dep"),
        "kernel/a.ko: kernel/gone.ko\n",
    )
    .unwrap();
    let tree = ModuleTree::open(dir.path()).unwrap();
    let err = tree.resolve(&["a"]).unwrap_err();
    assert!(
        matches!(&err, ModulesError::MissingDependency { module, dependency, .. }
            if module == "a" && dependency == "gone"),
        "{err}"
    );
    // The same through .modinfo.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.ko"), fake_module("a", &["gone"])).unwrap();
    let err = ModuleTree::open(dir.path())
        .unwrap()
        .resolve(&["a"])
        .unwrap_err();
    assert!(
        matches!(err, ModulesError::MissingDependency { .. }),
        "{err}"
    );
}

#[test]
fn cycles_are_reported_with_their_chain() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("modules.dep"),
        "kernel/a.ko: kernel/b.ko\nkernel/b.ko: kernel/c.ko\nkernel/c.ko: kernel/a.ko\n",
    )
    .unwrap();
    let err = ModuleTree::open(dir.path())
        .unwrap()
        .resolve(&["a"])
        .unwrap_err();
    assert!(
        err.to_string().ends_with("cycle: a -> b -> c -> a"),
        "{err}"
    );
}

#[test]
fn a_long_dependency_chain_does_not_overflow_the_stack() {
    let dir = tempfile::tempdir().unwrap();
    let n = 50_000;
    let dep: String = (0..n)
        .map(|i| {
            if i + 1 < n {
                format!("m{i}.ko: m{}.ko\n", i + 1)
            } else {
                format!("m{i}.ko:\n")
            }
        })
        .collect();
    std::fs::write(dir.path().join("modules.dep"), dep).unwrap();
    let r = ModuleTree::open(dir.path())
        .unwrap()
        .resolve(&["m0"])
        .unwrap();
    assert_eq!(r.modules.len(), n);
    assert_eq!(r.modules[0].name, format!("m{}", n - 1));
    assert_eq!(r.modules[n - 1].name, "m0");
}

#[test]
fn the_same_module_twice_in_a_tree_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("kernel")).unwrap();
    std::fs::create_dir_all(dir.path().join("updates")).unwrap();
    std::fs::write(
        dir.path().join("kernel/virtio-x.ko"),
        fake_module("virtio_x", &[]),
    )
    .unwrap();
    std::fs::write(dir.path().join("updates/virtio_x.ko.xz"), b"").unwrap();
    let err = ModuleTree::open(dir.path()).unwrap_err();
    assert!(
        matches!(err, ModulesError::Duplicate { ref name, .. } if name == "virtio_x"),
        "{err}"
    );
}

#[test]
fn a_missing_tree_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let gone = dir.path().join("lib/modules/9.9.9");
    let err = ModuleTree::open(&gone).unwrap_err();
    assert!(err.to_string().contains("lib/modules/9.9.9"), "{err}");
}
