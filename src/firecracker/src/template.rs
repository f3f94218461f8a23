//! Templates: a snapshot of a freshly booted sandbox, from which new sandboxes are restored
//! instead of booted (what a warm pool builds on).
//!
//! A template is a directory holding the snapshot's `vm.snap` and `vm.mem` and
//! `template.json`, the [`TemplateManifest`]: what the snapshotted VM was — image, vCPUs,
//! memory, the guest's tmpfs size, its network shape, whether it ran under the jailer. A restore
//! gets exactly that VM, so a request that asks for anything else is refused
//! ([`TemplateManifest::check`]) rather than silently given the template's shape.
//!
//! The directory and its files belong to root: the directory `0700`, the files `0644` (every
//! VMM reads them through a hard link in its own directory or chroot, and none may change
//! them — the VMM that wrote them ran as a uid a later sandbox may get).

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::snapshot::{MEMORY_FILE, STATE_FILE, Snapshot};

/// The manifest's file name in a template directory.
pub const MANIFEST_FILE: &str = "template.json";
/// The manifest format this build writes and reads.
pub const FORMAT: u32 = 1;

/// Why a template cannot be used or written.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("template {}: cannot {what}: {source}", dir.display())]
    Io {
        dir: PathBuf,
        what: &'static str,
        source: std::io::Error,
    },
    #[error("template {}: {MANIFEST_FILE} is not a template manifest: {source}", dir.display())]
    Manifest {
        dir: PathBuf,
        source: serde_json::Error,
    },
    #[error("template {}: format {found}, this build reads {FORMAT}", dir.display())]
    Format { dir: PathBuf, found: u32 },
    #[error("template {}: {reason}", dir.display())]
    Mismatch { dir: PathBuf, reason: String },
}

/// The network a template's VM had: restoring brings back its NIC (or its absence) and the
/// guest's configuration from its boot, so a restore needs the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NetShape {
    /// No NIC.
    None,
    /// `eth0` on the sandbox's tap, no resolver.
    Addresses,
    /// `eth0` and the sandbox's DNS-pinning resolver in `resolv.conf`.
    Resolver,
}

impl std::fmt::Display for NetShape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::None => "no network",
            Self::Addresses => "a network policy of addresses only",
            Self::Resolver => "a network policy naming domains",
        })
    }
}

/// What the snapshotted VM was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateManifest {
    pub format: u32,
    /// The image's digest (`None`: boot files not from the store).
    pub image: Option<String>,
    pub vcpus: u8,
    pub memory_mib: u64,
    /// The guest's writable tmpfs (`luminaguard.scratch_mb`).
    pub scratch_mib: u64,
    pub network: NetShape,
    /// Made under the jailer: the snapshot names the root file system by its name in the
    /// chroot, where a direct-mode VM names it by its host path.
    pub jailed: bool,
    /// Firecracker's version (`GET /version`) when the snapshot was taken.
    pub firecracker_version: String,
    pub created_unix_ms: u64,
}

/// What a restore would need the template to be; compared with [`TemplateManifest::check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted<'a> {
    pub image: Option<&'a str>,
    pub vcpus: u8,
    pub memory_mib: u64,
    pub scratch_mib: u64,
    pub network: NetShape,
    pub jailed: bool,
}

impl TemplateManifest {
    /// Refuses a restore that would not give the VM asked for; the reason names every
    /// difference.
    pub fn check(&self, dir: &Path, want: &Wanted<'_>) -> Result<(), TemplateError> {
        let mut diffs = Vec::new();
        if let (Some(have), Some(want)) = (&self.image, want.image)
            && have != want
        {
            diffs.push(format!("image {have}, not {want}"));
        }
        if self.vcpus != want.vcpus {
            diffs.push(format!("{} vCPUs, not {}", self.vcpus, want.vcpus));
        }
        if self.memory_mib != want.memory_mib {
            diffs.push(format!(
                "{} MiB of memory, not {}",
                self.memory_mib, want.memory_mib
            ));
        }
        if self.scratch_mib != want.scratch_mib {
            diffs.push(format!(
                "{} MiB of scratch, not {}",
                self.scratch_mib, want.scratch_mib
            ));
        }
        if self.network != want.network {
            diffs.push(format!("{}, not {}", self.network, want.network));
        }
        if self.jailed != want.jailed {
            let mode = |j: bool| if j { "under the jailer" } else { "unjailed" };
            diffs.push(format!(
                "made {}, restoring {}",
                mode(self.jailed),
                mode(want.jailed)
            ));
        }
        if diffs.is_empty() {
            return Ok(());
        }
        Err(TemplateError::Mismatch {
            dir: dir.to_owned(),
            reason: format!(
                "it holds a VM with {}; make a template for this request",
                diffs.join(", ")
            ),
        })
    }
}

/// A template on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub dir: PathBuf,
    pub manifest: TemplateManifest,
}

impl Template {
    /// Reads the template in `dir`; its snapshot files must be there.
    pub async fn open(dir: &Path) -> Result<Self, TemplateError> {
        let io = |what| {
            let dir = dir.to_owned();
            move |source| TemplateError::Io { dir, what, source }
        };
        let bytes = tokio::fs::read(dir.join(MANIFEST_FILE))
            .await
            .map_err(io("read its manifest"))?;
        let manifest: TemplateManifest =
            serde_json::from_slice(&bytes).map_err(|source| TemplateError::Manifest {
                dir: dir.to_owned(),
                source,
            })?;
        if manifest.format != FORMAT {
            return Err(TemplateError::Format {
                dir: dir.to_owned(),
                found: manifest.format,
            });
        }
        for name in [STATE_FILE, MEMORY_FILE] {
            let meta = tokio::fs::metadata(dir.join(name))
                .await
                .map_err(io("find its snapshot file"))?;
            if !meta.is_file() {
                return Err(TemplateError::Mismatch {
                    dir: dir.to_owned(),
                    reason: format!("{name} is not a regular file"),
                });
            }
        }
        Ok(Self {
            dir: dir.to_owned(),
            manifest,
        })
    }

    /// The snapshot files (a template has no scratch disk: the guest's writable layer is its
    /// tmpfs, part of the memory file).
    pub fn snapshot(&self) -> Snapshot {
        Snapshot::in_dir(&self.dir, false)
    }

    /// Seals a directory holding a fresh snapshot as a template: the snapshot files become
    /// root's, read-only for others, the directory root's alone, and the manifest is written
    /// last (through a temporary file and a rename), so a directory without one is not a
    /// template.
    pub async fn seal(dir: &Path, manifest: TemplateManifest) -> Result<Self, TemplateError> {
        let io = |what| {
            let dir = dir.to_owned();
            move |source| TemplateError::Io { dir, what, source }
        };
        for name in [STATE_FILE, MEMORY_FILE] {
            let path = dir.join(name);
            std::os::unix::fs::lchown(&path, Some(0), Some(0))
                .or_else(|e| match e.raw_os_error() {
                    // Not root: the files are already the caller's (no VMM uid).
                    Some(libc::EPERM) => Ok(()),
                    _ => Err(e),
                })
                .map_err(io("give a snapshot file to root"))?;
            tokio::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))
                .await
                .map_err(io("make a snapshot file read-only"))?;
        }
        tokio::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .await
            .map_err(io("restrict the template directory"))?;
        let json =
            serde_json::to_vec_pretty(&manifest).map_err(|source| TemplateError::Manifest {
                dir: dir.to_owned(),
                source,
            })?;
        let partial = dir.join(format!("{MANIFEST_FILE}.partial"));
        tokio::fs::write(&partial, json)
            .await
            .map_err(io("write its manifest"))?;
        tokio::fs::rename(&partial, dir.join(MANIFEST_FILE))
            .await
            .map_err(io("write its manifest"))?;
        Ok(Self {
            dir: dir.to_owned(),
            manifest,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> TemplateManifest {
        TemplateManifest {
            format: FORMAT,
            image: Some("sha256:aa".into()),
            vcpus: 1,
            memory_mib: 256,
            scratch_mib: 64,
            network: NetShape::None,
            jailed: true,
            firecracker_version: "1.16.1".into(),
            created_unix_ms: 1,
        }
    }

    fn wanted() -> Wanted<'static> {
        Wanted {
            image: Some("sha256:aa"),
            vcpus: 1,
            memory_mib: 256,
            scratch_mib: 64,
            network: NetShape::None,
            jailed: true,
        }
    }

    #[test]
    fn a_matching_request_passes_and_every_difference_is_named() {
        let dir = Path::new("/t");
        manifest().check(dir, &wanted()).unwrap();
        let want = Wanted {
            image: Some("sha256:bb"),
            vcpus: 2,
            memory_mib: 512,
            scratch_mib: 128,
            network: NetShape::Resolver,
            jailed: false,
        };
        let err = manifest().check(dir, &want).unwrap_err().to_string();
        for part in [
            "image sha256:aa, not sha256:bb",
            "1 vCPUs, not 2",
            "256 MiB of memory, not 512",
            "64 MiB of scratch, not 128",
            "no network, not a network policy naming domains",
            "made under the jailer, restoring unjailed",
        ] {
            assert!(err.contains(part), "{part}: {err}");
        }
    }

    #[tokio::test]
    async fn seal_then_open_round_trips_and_a_directory_without_a_manifest_is_no_template() {
        let dir = tempfile::tempdir().unwrap();
        for name in [STATE_FILE, MEMORY_FILE] {
            tokio::fs::write(dir.path().join(name), name).await.unwrap();
        }
        let err = Template::open(dir.path()).await.unwrap_err().to_string();
        assert!(err.contains("read its manifest"), "{err}");
        let sealed = Template::seal(dir.path(), manifest()).await.unwrap();
        assert_eq!(Template::open(dir.path()).await.unwrap(), sealed);
        assert!(!dir.path().join("template.json.partial").exists());
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(dir.path()), 0o700);
        assert_eq!(mode(&dir.path().join(MEMORY_FILE)), 0o644);
        assert_eq!(sealed.snapshot(), Snapshot::in_dir(dir.path(), false));
    }

    async fn write_manifest(dir: &Path, m: &TemplateManifest) {
        let json = serde_json::to_vec(m).unwrap();
        tokio::fs::write(dir.join(MANIFEST_FILE), json)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_damaged_template_is_refused_clearly() {
        let dir = tempfile::tempdir().unwrap();
        tokio::fs::write(dir.path().join(MANIFEST_FILE), b"{\"format\": 1}")
            .await
            .unwrap();
        let err = Template::open(dir.path()).await.unwrap_err().to_string();
        assert!(err.contains("is not a template manifest"), "{err}");
        let mut m = manifest();
        m.format = 9;
        write_manifest(dir.path(), &m).await;
        let err = Template::open(dir.path()).await.unwrap_err().to_string();
        assert!(err.contains("format 9, this build reads 1"), "{err}");
        m.format = FORMAT;
        write_manifest(dir.path(), &m).await;
        let err = Template::open(dir.path()).await.unwrap_err().to_string();
        assert!(err.contains("find its snapshot file"), "{err}");
    }
}
