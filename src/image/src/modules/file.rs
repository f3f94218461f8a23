//! One module file: its name, its compression, its plain `.ko` bytes and its `.modinfo`.

use std::path::Path;

use super::ModulesError;
use crate::decompress::{self, Codec};
use crate::elf::{self, ET_REL};

/// The largest decompressed module accepted.
const MAX_MODULE_LEN: usize = 256 << 20;

/// Module file suffixes and the compression each implies.
const SUFFIXES: &[(&str, Option<Codec>)] = &[
    (".ko", None),
    (".ko.xz", Some(Codec::Xz)),
    (".ko.zst", Some(Codec::Zstd)),
    (".ko.gz", Some(Codec::Gzip)),
];

/// A module name as the kernel compares them: `-` and `_` are the same character.
pub fn normalize_name(name: &str) -> String {
    name.replace('-', "_")
}

/// The normalised module name of a module file (`kernel/fs/fuse/virtio-fs.ko.xz` →
/// `virtio_fs`), or `None` if the file is not a module.
pub fn module_name(path: &Path) -> Option<String> {
    let file = path.file_name()?.to_str()?;
    SUFFIXES
        .iter()
        .find_map(|(suffix, _)| file.strip_suffix(suffix))
        .filter(|stem| !stem.is_empty())
        .map(normalize_name)
}

/// The file name of a module file once decompressed (`virtio-rng.ko.xz` → `virtio-rng.ko`), or
/// `None` if the file is not a module.
pub fn plain_file_name(path: &Path) -> Option<String> {
    let file = path.file_name()?.to_str()?;
    SUFFIXES
        .iter()
        .find_map(|(suffix, _)| file.strip_suffix(suffix))
        .filter(|stem| !stem.is_empty())
        .map(|stem| format!("{stem}.ko"))
}

/// The compression a module file's name implies (`None` for a plain `.ko`).
pub fn codec_of(path: &Path) -> Option<Codec> {
    let file = path.file_name()?.to_str()?;
    SUFFIXES
        .iter()
        .find(|(suffix, _)| file.ends_with(suffix))
        .and_then(|(_, codec)| *codec)
}

/// Reads a module file and returns it as a plain `.ko`: decompressed according to its suffix
/// (the content must carry the matching magic) and checked to be an ELF64 relocatable object.
pub fn read_module(path: &Path) -> Result<Vec<u8>, ModulesError> {
    let raw = std::fs::read(path).map_err(|source| ModulesError::Read {
        path: path.to_owned(),
        source,
    })?;
    let plain = match codec_of(path) {
        None => raw,
        Some(codec) => {
            let found = Codec::detect(&raw);
            if found != Some(codec) {
                return Err(ModulesError::CodecMismatch {
                    path: path.to_owned(),
                    expected: codec,
                    found,
                });
            }
            decompress::decompress(codec, &raw, MAX_MODULE_LEN).map_err(|source| {
                ModulesError::Decompress {
                    path: path.to_owned(),
                    source,
                }
            })?
        }
    };
    let parsed = elf::parse(&plain).map_err(|source| ModulesError::NotModule {
        path: path.to_owned(),
        source,
    })?;
    if parsed.e_type != ET_REL {
        return Err(ModulesError::NotRelocatable {
            path: path.to_owned(),
            e_type: parsed.e_type,
        });
    }
    Ok(plain)
}

/// The normalised names in a plain module's `.modinfo` `depends=` field (what `modpost` recorded
/// and `depmod` turns into `modules.dep`), sorted.
pub fn modinfo_depends(path: &Path, plain: &[u8]) -> Result<Vec<String>, ModulesError> {
    let parsed = elf::parse(plain).map_err(|source| ModulesError::NotModule {
        path: path.to_owned(),
        source,
    })?;
    let modinfo = parsed
        .section(".modinfo")
        .map_err(|source| ModulesError::NotModule {
            path: path.to_owned(),
            source,
        })?
        .ok_or_else(|| ModulesError::NoModinfo {
            path: path.to_owned(),
        })?;
    let mut deps: Vec<String> = modinfo
        .split(|&b| b == 0)
        .filter_map(|field| field.strip_prefix(b"depends="))
        .flat_map(|list| list.split(|&b| b == b','))
        .filter(|name| !name.is_empty())
        .map(|name| normalize_name(&String::from_utf8_lossy(name)))
        .collect();
    deps.sort();
    deps.dedup();
    Ok(deps)
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

    use super::*;
    use crate::decompress::tests as codecs;
    use crate::elf::EM_X86_64;
    use crate::elf::tests::build as build_elf;

    /// A fake module named `name` depending on `depends`, as plain `.ko` bytes.
    pub(crate) fn fake_module(name: &str, depends: &[&str]) -> Vec<u8> {
        let modinfo = format!(
            "license=GPL\0depends={}\0retpoline=Y\0name={name}\0vermagic=6.1.0 SMP mod_unload\0",
            depends.join(",")
        );
        build_elf(
            ET_REL,
            EM_X86_64,
            &[(".text", name.as_bytes()), (".modinfo", modinfo.as_bytes())],
        )
    }

    /// `plain` compressed as a file called `file` would be.
    pub(crate) fn compress_for(file: &str, plain: &[u8]) -> Vec<u8> {
        match codec_of(Path::new(file)) {
            None => plain.to_vec(),
            Some(Codec::Xz) => codecs::xz(plain),
            Some(Codec::Zstd) => codecs::zstd(plain),
            Some(Codec::Gzip) => codecs::gzip(plain),
            Some(other) => panic!("no module suffix for {other}"),
        }
    }

    #[test]
    fn names_and_codecs_come_from_the_file_name() {
        let cases = [
            (
                "kernel/drivers/virtio/virtio_mmio.ko",
                Some("virtio_mmio"),
                None,
            ),
            ("a/virtio-rng.ko.xz", Some("virtio_rng"), Some(Codec::Xz)),
            ("b/vsock.ko.zst", Some("vsock"), Some(Codec::Zstd)),
            ("c/ext4.ko.gz", Some("ext4"), Some(Codec::Gzip)),
            ("d/modules.dep", None, None),
            ("e/.ko", None, None),
            ("f/notes.ko.txt", None, None),
            ("g/x.kontrol.ko.zst", Some("x.kontrol"), Some(Codec::Zstd)),
        ];
        for (path, name, codec) in cases {
            let path = Path::new(path);
            assert_eq!(module_name(path).as_deref(), name, "{path:?}");
            assert_eq!(plain_file_name(path).is_some(), name.is_some(), "{path:?}");
            assert_eq!(codec_of(path), codec, "{path:?}");
        }
    }

    #[test]
    fn plain_file_names_drop_only_the_compression_suffix() {
        for (path, plain) in [
            ("a/virtio-rng.ko.xz", "virtio-rng.ko"),
            ("b/vsock.ko", "vsock.ko"),
            ("c/x.kontrol.ko.gz", "x.kontrol.ko"),
        ] {
            assert_eq!(plain_file_name(Path::new(path)).unwrap(), plain);
        }
    }

    #[test]
    fn reads_every_compression_back_to_the_plain_module() {
        let dir = tempfile::tempdir().unwrap();
        let plain = fake_module("virtio_blk", &["virtio", "virtio_ring"]);
        for file in ["m.ko", "m.ko.xz", "m.ko.zst", "m.ko.gz"] {
            let path = dir.path().join(file);
            std::fs::write(&path, compress_for(file, &plain)).unwrap();
            assert_eq!(read_module(&path).unwrap(), plain, "{file}");
            assert_eq!(
                modinfo_depends(&path, &plain).unwrap(),
                ["virtio", "virtio_ring"]
            );
        }
    }

    #[test]
    fn bad_module_files_are_errors_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let plain = fake_module("m", &[]);
        // Suffix says xz, content is zstd.
        let path = dir.path().join("wrong.ko.xz");
        std::fs::write(&path, codecs::zstd(&plain)).unwrap();
        let err = read_module(&path).unwrap_err();
        assert!(
            matches!(
                err,
                ModulesError::CodecMismatch {
                    found: Some(Codec::Zstd),
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("wrong.ko.xz"), "{err}");
        // Truncated xz.
        let path = dir.path().join("cut.ko.xz");
        let xz = codecs::xz(&plain);
        std::fs::write(&path, &xz[..xz.len() / 2]).unwrap();
        let err = read_module(&path).unwrap_err();
        assert!(matches!(err, ModulesError::Decompress { .. }), "{err}");
        // Not ELF, and an ELF executable instead of a relocatable object.
        let path = dir.path().join("text.ko");
        std::fs::write(
            &path,
            b"hello, this is not an ELF file at all ......................",
        )
        .unwrap();
        let err = read_module(&path).unwrap_err();
        assert!(matches!(err, ModulesError::NotModule { .. }), "{err}");
        let path = dir.path().join("exec.ko");
        std::fs::write(&path, build_elf(elf::ET_EXEC, EM_X86_64, &[])).unwrap();
        let err = read_module(&path).unwrap_err();
        assert!(
            matches!(err, ModulesError::NotRelocatable { e_type: 2, .. }),
            "{err}"
        );
        // Missing file.
        let err = read_module(&dir.path().join("gone.ko")).unwrap_err();
        assert!(err.to_string().contains("gone.ko"), "{err}");
        // No .modinfo.
        let bare = build_elf(ET_REL, EM_X86_64, &[(".text", b"x")]);
        let err = modinfo_depends(Path::new("bare.ko"), &bare).unwrap_err();
        assert!(err.to_string().contains("bare.ko"), "{err}");
    }

    #[test]
    fn empty_depends_means_no_dependencies() {
        let plain = fake_module("virtio_ring", &[]);
        assert!(
            modinfo_depends(Path::new("virtio_ring.ko"), &plain)
                .unwrap()
                .is_empty()
        );
        let plain = fake_module("x", &["b-dash", "a", "a"]);
        assert_eq!(
            modinfo_depends(Path::new("x.ko"), &plain).unwrap(),
            ["a", "b_dash"]
        );
    }
}
