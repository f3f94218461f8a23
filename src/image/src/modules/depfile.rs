//! Parsing `modules.dep` and `modules.builtin`, the index files `depmod` and the kernel build
//! write into `lib/modules/<release>/`.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

use super::ModulesError;
use super::file::module_name;

/// One line of `modules.dep`: `kernel/a/x.ko: kernel/b/y.ko kernel/c/z.ko`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DepLine {
    /// The module's path, relative to the module directory.
    pub path: PathBuf,
    /// Its dependencies' paths, in file order (`modprobe` loads them last first).
    pub deps: Vec<PathBuf>,
}

/// Parses `modules.dep` (`file` names it in errors). Blank lines are skipped.
pub fn parse_modules_dep(file: &Path, text: &str) -> Result<Vec<DepLine>, ModulesError> {
    let mut lines = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line_no = index + 1;
        if line.trim().is_empty() {
            continue;
        }
        let (module, deps) = line.split_once(':').ok_or_else(|| ModulesError::Parse {
            path: file.to_owned(),
            line: line_no,
            reason: "no ':' after the module path".to_owned(),
        })?;
        lines.push(DepLine {
            path: module_path(file, line_no, module.trim())?,
            deps: deps
                .split_whitespace()
                .map(|dep| module_path(file, line_no, dep))
                .collect::<Result<_, _>>()?,
        });
    }
    Ok(lines)
}

/// Parses `modules.builtin` (one module path a line) into normalised module names.
pub fn parse_builtin(file: &Path, text: &str) -> Result<BTreeSet<String>, ModulesError> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(index, line)| {
            let path = module_path(file, index + 1, line.trim())?;
            module_name(&path).ok_or_else(|| ModulesError::Parse {
                path: file.to_owned(),
                line: index + 1,
                reason: format!("{line:?} is not a module path"),
            })
        })
        .collect()
}

/// A module path from an index file: relative, without `..`, naming a module file. The path is
/// joined to the module directory, so anything else could reach outside it.
fn module_path(file: &Path, line: usize, entry: &str) -> Result<PathBuf, ModulesError> {
    let bad = |reason: &str| ModulesError::Parse {
        path: file.to_owned(),
        line,
        reason: format!("module path {entry:?} {reason}"),
    };
    let path = Path::new(entry);
    if entry.is_empty() {
        return Err(bad("is empty"));
    }
    if !path.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(bad(
            "must be relative to the module directory, without '..' or '.'",
        ));
    }
    if module_name(path).is_none() {
        return Err(bad("does not end in .ko, .ko.xz, .ko.zst or .ko.gz"));
    }
    Ok(path.to_owned())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

    use super::*;

    #[test]
    fn parses_lines_with_and_without_dependencies() {
        let text = "kernel/drivers/virtio/virtio_mmio.ko.xz: kernel/drivers/virtio/virtio.ko.xz \
                    kernel/drivers/virtio/virtio_ring.ko.xz\n\
                    kernel/drivers/virtio/virtio_ring.ko.xz:\n\
                    \n\
                    kernel/fs/overlayfs/overlay.ko:   \n";
        let lines = parse_modules_dep(Path::new("modules.dep"), text).unwrap();
        assert_eq!(lines.len(), 3);
        assert_eq!(
            lines[0].path,
            Path::new("kernel/drivers/virtio/virtio_mmio.ko.xz")
        );
        assert_eq!(
            lines[0].deps,
            [
                Path::new("kernel/drivers/virtio/virtio.ko.xz"),
                Path::new("kernel/drivers/virtio/virtio_ring.ko.xz")
            ]
        );
        assert!(lines[1].deps.is_empty());
        assert_eq!(lines[2].path, Path::new("kernel/fs/overlayfs/overlay.ko"));
    }

    #[test]
    fn refuses_malformed_and_escaping_lines() {
        let file = Path::new("/x/modules.dep");
        for (text, needle) in [
            ("kernel/a.ko kernel/b.ko\n", "no ':'"),
            ("kernel/a.ko: ../../etc/shadow.ko\n", "without '..'"),
            ("/lib/modules/6.1/kernel/a.ko:\n", "must be relative"),
            ("kernel/a.ko: kernel/b.txt\n", "does not end in .ko"),
            (": kernel/b.ko\n", "is empty"),
        ] {
            let err = parse_modules_dep(file, text).unwrap_err();
            let msg = err.to_string();
            assert!(
                msg.contains(needle) && msg.contains("/x/modules.dep:1"),
                "{text:?}: {msg}"
            );
        }
    }

    #[test]
    fn builtin_names_are_normalised() {
        let text = "kernel/fs/ext4/ext4.ko\nkernel/drivers/char/hw_random/virtio-rng.ko\n\n";
        let names = parse_builtin(Path::new("modules.builtin"), text).unwrap();
        assert_eq!(
            names.into_iter().collect::<Vec<_>>(),
            ["ext4", "virtio_rng"]
        );
        let err = parse_builtin(Path::new("modules.builtin"), "kernel/x.ko\nbogus\n").unwrap_err();
        assert!(err.to_string().contains("modules.builtin:2"), "{err}");
    }
}
