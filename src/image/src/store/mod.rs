//! A content-addressed store of built guest images.
//!
//! ```text
//! <root>/images/<digest>/manifest.json     the canonical manifest; <digest> is its SHA-256
//! <root>/images/<digest>/vmlinuz           the artifacts, named by kind, read-only
//! <root>/images/<digest>/initramfs.cpio ...
//! <root>/tmp/                              staging for inserts and removals (same filesystem)
//! ```
//!
//! An image appears atomically: [`Store::insert`] writes and syncs everything into a staging
//! directory, then renames it into `images/`. The manifest holds every artifact's digest and no
//! timestamp, so the same artifacts give the same image digest; inserting an image that exists
//! changes nothing. Loading an image checks that its manifest still hashes to its name;
//! [`Store::verify`] also re-hashes every artifact.

mod manifest;

use std::fs::File;
use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

pub use manifest::{Artifact, ArtifactKind, Manifest, SCHEMA};

use crate::digest::{Digest, HashingWriter, is_lower_hex};

const MANIFEST: &str = "manifest.json";
/// The shortest digest prefix [`Store::get`] accepts.
pub const MIN_PREFIX: usize = 8;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file-system operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// A string given as an image reference is not a digest or digest prefix.
    #[error("image reference {reference:?} is invalid: {reason}")]
    BadReference {
        reference: String,
        reason: &'static str,
    },
    /// No image matches the reference.
    #[error("no image {reference} in {root}")]
    NotFound { reference: String, root: PathBuf },
    /// Several images match a digest prefix.
    #[error("image reference {reference} is ambiguous: {count} images match")]
    Ambiguous { reference: String, count: usize },
    /// A manifest cannot be read or is invalid.
    #[error("manifest {path}: {reason}")]
    BadManifest { path: PathBuf, reason: String },
    /// An image's manifest no longer hashes to the image's digest.
    #[error("image {digest}: manifest.json hashes to {actual}; it was modified")]
    ManifestModified { digest: Digest, actual: Digest },
    /// An artifact is missing, or its contents differ from the manifest.
    #[error("image {digest} is corrupted: {file}: {reason}")]
    Corrupted {
        digest: Digest,
        file: String,
        reason: String,
    },
    /// A new image's description is invalid.
    #[error("new image: {0}")]
    Invalid(String),
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

/// Where an artifact's bytes come from.
#[derive(Debug, Clone, Copy)]
pub enum Source<'a> {
    /// These bytes.
    Bytes(&'a [u8]),
    /// A copy of this file.
    File(&'a Path),
}

/// A new image for [`Store::insert`].
#[derive(Debug, Clone)]
pub struct NewImage<'a> {
    /// The kernel's release.
    pub kernel_release: String,
    /// The kernel (bzImage).
    pub kernel: Source<'a>,
    /// The uncompressed ELF kernel, if built.
    pub vmlinux: Option<Source<'a>>,
    /// The initramfs.
    pub initramfs: Source<'a>,
    /// The root filesystem image, if built.
    pub rootfs: Option<Source<'a>>,
    /// The modules the initramfs loads, in load order.
    pub modules: Vec<String>,
    /// Digest of the build's inputs.
    pub inputs_digest: Digest,
    /// Builder and version, e.g. `luminaguard 0.1.0`.
    pub created_by: String,
    /// Packages added to the root's base (recorded in the manifest).
    pub packages: Vec<String>,
    /// What was copied into the root (recorded in the manifest).
    pub includes: Vec<crate::include::Included>,
}

/// An image in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// The image digest (SHA-256 of its manifest).
    pub digest: Digest,
    /// The image's directory.
    pub dir: PathBuf,
    /// Its manifest.
    pub manifest: Manifest,
}

impl Image {
    /// The path of the artifact of `kind`, if the image has one.
    pub fn artifact_path(&self, kind: ArtifactKind) -> Option<PathBuf> {
        self.manifest
            .artifact(kind)
            .map(|_| self.dir.join(kind.file_name()))
    }
}

/// The default store root: `/var/lib/luminaguard/images` for root, else
/// `$XDG_DATA_HOME/luminaguard/images` (or `~/.local/share/luminaguard/images`); `None` when
/// neither variable gives an absolute path. `LUMINAGUARD_IMAGE_STORE` overrides it in the CLI.
pub fn default_root(
    uid: u32,
    xdg_data_home: Option<&Path>,
    home: Option<&Path>,
) -> Option<PathBuf> {
    match (uid, xdg_data_home, home) {
        (0, _, _) => Some(PathBuf::from("/var/lib/luminaguard/images")),
        (_, Some(x), _) if x.is_absolute() => Some(x.join("luminaguard/images")),
        (_, _, Some(h)) if h.is_absolute() => Some(h.join(".local/share/luminaguard/images")),
        _ => None,
    }
}

/// A content-addressed image store rooted at a directory.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

/// A staging directory, removed on drop unless it was renamed away.
struct Staging {
    path: PathBuf,
    keep: bool,
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.keep
            && let Err(e) = std::fs::remove_dir_all(&self.path)
        {
            tracing::warn!(path = %self.path.display(), error = %e, "removing staging directory");
        }
    }
}

fn sync_dir(path: &Path) -> Result<(), StoreError> {
    File::open(path)
        .and_then(|d| d.sync_all())
        .map_err(io("syncing", path))
}

impl Store {
    /// Opens the store at `root`, creating its directories if needed.
    pub fn open(root: &Path) -> Result<Store, StoreError> {
        for dir in [root.join("images"), root.join("tmp")] {
            std::fs::create_dir_all(&dir).map_err(io("creating", &dir))?;
        }
        let store = Store {
            root: root.to_owned(),
        };
        store.clean_stale_staging();
        Ok(store)
    }

    /// Best effort: removes staging directories whose process (named in the directory's name)
    /// no longer runs, i.e. what an insert or removal that crashed left behind.
    fn clean_stale_staging(&self) {
        let tmp = self.root.join("tmp");
        let Ok(entries) = std::fs::read_dir(&tmp) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(pid) = name
                .to_str()
                .and_then(|n| n.split('-').nth(1))
                .and_then(|p| p.parse::<u32>().ok())
            else {
                continue;
            };
            if pid == std::process::id() || Path::new("/proc").join(pid.to_string()).exists() {
                continue;
            }
            let path = entry.path();
            match std::fs::remove_dir_all(&path) {
                Ok(()) => {
                    tracing::info!(path = %path.display(), "removed a crashed insert's leftovers")
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "removing stale staging directory")
                }
            }
        }
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn images_dir(&self) -> PathBuf {
        self.root.join("images")
    }

    /// A new, empty directory under `tmp/`, named uniquely (process id, time, counter).
    fn staging(&self, what: &str) -> Result<Staging, StoreError> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let path = self.root.join("tmp").join(format!(
            "{what}-{}-{nanos}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir(&path).map_err(io("creating", &path))?;
        Ok(Staging { path, keep: false })
    }

    /// Adds an image, or finds it already there; either way returns it. Artifacts are written
    /// read-only.
    pub fn insert(&self, new: NewImage<'_>) -> Result<Image, StoreError> {
        if !crate::vmlinux::is_valid_release(&new.kernel_release) {
            return Err(StoreError::Invalid(format!(
                "kernel release {:?} is invalid",
                new.kernel_release
            )));
        }
        let staging = self.staging("insert")?;
        let write = |kind: ArtifactKind, source: Source<'_>| {
            write_artifact(&staging.path.join(kind.file_name()), source)
        };
        let manifest = Manifest {
            schema: SCHEMA,
            kernel_release: new.kernel_release,
            kernel: write(ArtifactKind::Kernel, new.kernel)?,
            vmlinux: new
                .vmlinux
                .map(|s| write(ArtifactKind::Vmlinux, s))
                .transpose()?,
            initramfs: write(ArtifactKind::Initramfs, new.initramfs)?,
            rootfs: new
                .rootfs
                .map(|s| write(ArtifactKind::Rootfs, s))
                .transpose()?,
            modules: new.modules,
            inputs_digest: new.inputs_digest,
            created_by: new.created_by,
            packages: new.packages,
            includes: new.includes,
        };
        manifest.validate().map_err(StoreError::Invalid)?;
        let bytes = manifest
            .canonical_bytes()
            .map_err(|e| StoreError::Invalid(format!("serialising the manifest: {e}")))?;
        let digest = Digest::of(&bytes);
        let manifest_path = staging.path.join(MANIFEST);
        write_artifact(&manifest_path, Source::Bytes(&bytes))?;
        sync_dir(&staging.path)?;

        let target = self.images_dir().join(digest.as_str());
        if target.exists() {
            tracing::info!(%digest, "image already in the store");
            return self.load(&digest);
        }
        let mut staging = staging;
        match std::fs::rename(&staging.path, &target) {
            Ok(()) => staging.keep = true,
            // Another insert of the same image won the race.
            Err(e) if target.exists() => {
                tracing::debug!(%digest, error = %e, "image appeared while inserting it");
                return self.load(&digest);
            }
            Err(e) => return Err(io("renaming staging directory to", &target)(e)),
        }
        sync_dir(&self.images_dir())?;
        tracing::info!(%digest, dir = %target.display(), "image added to the store");
        Ok(Image {
            digest,
            dir: target,
            manifest,
        })
    }

    /// The image whose digest is `reference`, or starts with it (at least [`MIN_PREFIX`] hex
    /// digits; a `sha256:` prefix is allowed). Checks that its manifest hashes to its digest.
    pub fn get(&self, reference: &str) -> Result<Image, StoreError> {
        let digest = self.resolve(reference)?;
        self.load(&digest)
    }

    /// Turns a reference into the digest of the one image it names.
    fn resolve(&self, reference: &str) -> Result<Digest, StoreError> {
        let bad = |reason| StoreError::BadReference {
            reference: reference.chars().take(80).collect(),
            reason,
        };
        let hex = reference.strip_prefix("sha256:").unwrap_or(reference);
        if !is_lower_hex(hex) {
            return Err(bad("not lowercase hex"));
        }
        if hex.len() < MIN_PREFIX {
            return Err(bad("shorter than 8 hex digits"));
        }
        if hex.len() > Digest::LEN {
            return Err(bad("longer than a sha256 digest"));
        }
        let not_found = || StoreError::NotFound {
            reference: hex.to_owned(),
            root: self.root.clone(),
        };
        if let Ok(digest) = hex.parse::<Digest>() {
            return match self.images_dir().join(hex).is_dir() {
                true => Ok(digest),
                false => Err(not_found()),
            };
        }
        let mut matches = self
            .digests()?
            .into_iter()
            .filter(|d| d.as_str().starts_with(hex));
        match (matches.next(), matches.count()) {
            (None, _) => Err(not_found()),
            (Some(digest), 0) => Ok(digest),
            (Some(_), more) => Err(StoreError::Ambiguous {
                reference: hex.to_owned(),
                count: more + 1,
            }),
        }
    }

    /// The digests of every image directory, sorted. Other names under `images/` are ignored.
    fn digests(&self) -> Result<Vec<Digest>, StoreError> {
        let dir = self.images_dir();
        let mut digests = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(io("reading", &dir))? {
            let entry = entry.map_err(io("reading", &dir))?;
            match entry.file_name().to_str().map(str::parse::<Digest>) {
                Some(Ok(digest)) => digests.push(digest),
                _ => {
                    tracing::warn!(name = ?entry.file_name(), dir = %dir.display(), "ignoring a non-image entry")
                }
            }
        }
        digests.sort();
        Ok(digests)
    }

    /// Reads and checks an image's manifest.
    fn load(&self, digest: &Digest) -> Result<Image, StoreError> {
        let dir = self.images_dir().join(digest.as_str());
        let path = dir.join(MANIFEST);
        let bytes = std::fs::read(&path).map_err(io("reading", &path))?;
        let actual = Digest::of(&bytes);
        if &actual != digest {
            return Err(StoreError::ManifestModified {
                digest: digest.clone(),
                actual,
            });
        }
        let manifest: Manifest =
            serde_json::from_slice(&bytes).map_err(|e| StoreError::BadManifest {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        manifest
            .validate()
            .map_err(|reason| StoreError::BadManifest { path, reason })?;
        Ok(Image {
            digest: digest.clone(),
            dir,
            manifest,
        })
    }

    /// Every image, sorted by digest; an image that cannot be loaded is listed as its error.
    pub fn list(&self) -> Result<Vec<Result<Image, StoreError>>, StoreError> {
        Ok(self.digests()?.iter().map(|d| self.load(d)).collect())
    }

    /// An intact image built from `inputs`, if there is one (the first by digest).
    pub fn find_by_inputs(&self, inputs: &Digest) -> Result<Option<Image>, StoreError> {
        Ok(self
            .list()?
            .into_iter()
            .flatten()
            .find(|image| &image.manifest.inputs_digest == inputs))
    }

    /// [`Store::verify`], skipped when no artifact changed since the last full verification.
    ///
    /// What a boot calls: re-hashing ~100 MB per boot would cost more than the boot's own
    /// orchestration. After a full verification the store keeps each artifact's
    /// `(dev, ino, size, mtime, ctime)` in `verified/<digest>.json`; any write to a file, or
    /// any change to its metadata, moves its ctime, which userspace cannot set back — so a
    /// changed stamp means a full re-hash, and only an unchanged one skips it.
    pub fn verify_for_boot(&self, reference: &str) -> Result<Image, StoreError> {
        let image = self.get(reference)?;
        let stamp_path = self
            .verified_dir()
            .join(format!("{}.json", image.digest.as_str()));
        let current = stat_stamp(&image);
        #[allow(clippy::disallowed_methods)] // blocking by contract
        let recorded = std::fs::read(&stamp_path)
            .ok()
            .and_then(|b| serde_json::from_slice::<Vec<FileStamp>>(&b).ok());
        if current.is_some() && recorded == current {
            tracing::debug!(digest = %image.digest, "image unchanged since its last verification");
            return Ok(image);
        }
        let image = self.verify(reference)?;
        if let Some(stamp) = stat_stamp(&image) {
            let dir = self.verified_dir();
            let tmp = dir.join(format!(".{}.{}", image.digest.as_str(), std::process::id()));
            let written = std::fs::create_dir_all(&dir)
                .and_then(|()| serde_json::to_vec(&stamp).map_err(std::io::Error::other))
                .and_then(|bytes| std::fs::write(&tmp, bytes))
                .and_then(|()| std::fs::rename(&tmp, &stamp_path));
            if let Err(e) = written {
                // Only a cache: the next boot verifies in full again.
                tracing::warn!(path = %stamp_path.display(), error = %e, "cannot record the verification");
            }
        }
        Ok(image)
    }

    fn verified_dir(&self) -> PathBuf {
        self.root.join("verified")
    }

    /// Removes an image (atomically: it is renamed away before it is deleted). Returns its
    /// digest.
    pub fn remove(&self, reference: &str) -> Result<Digest, StoreError> {
        let digest = self.resolve(reference)?;
        let _ = std::fs::remove_file(
            self.verified_dir()
                .join(format!("{}.json", digest.as_str())),
        );
        let dir = self.images_dir().join(digest.as_str());
        let mut trash = self.staging("remove")?;
        let target = trash.path.join(digest.as_str());
        std::fs::rename(&dir, &target).map_err(io("moving away", &dir))?;
        sync_dir(&self.images_dir())?;
        std::fs::remove_dir_all(&trash.path).map_err(io("deleting", &trash.path))?;
        trash.keep = true; // already gone
        tracing::info!(%digest, "image removed from the store");
        Ok(digest)
    }

    /// Re-hashes every artifact of an image against its manifest; an image directory holding
    /// anything else is reported too. Returns the intact image.
    pub fn verify(&self, reference: &str) -> Result<Image, StoreError> {
        let image = self.get(reference)?;
        let corrupted = |file: &str, reason: String| StoreError::Corrupted {
            digest: image.digest.clone(),
            file: file.to_owned(),
            reason,
        };
        for (kind, artifact) in image.manifest.artifacts() {
            let path = image.dir.join(kind.file_name());
            let file = match File::open(&path) {
                Ok(file) => file,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(corrupted(kind.file_name(), "missing".to_owned()));
                }
                Err(e) => return Err(io("opening", &path)(e)),
            };
            let (sha256, size) =
                Digest::of_reader(BufReader::new(file)).map_err(io("reading", &path))?;
            if size != artifact.size || sha256 != artifact.sha256 {
                return Err(corrupted(
                    kind.file_name(),
                    format!(
                        "{size} bytes with sha256 {sha256}, but the manifest says {} bytes with \
                         sha256 {}",
                        artifact.size, artifact.sha256
                    ),
                ));
            }
        }
        let expected: Vec<&str> = std::iter::once(MANIFEST)
            .chain(
                image
                    .manifest
                    .artifacts()
                    .iter()
                    .map(|(k, _)| k.file_name()),
            )
            .collect();
        for entry in std::fs::read_dir(&image.dir).map_err(io("reading", &image.dir))? {
            let name = entry.map_err(io("reading", &image.dir))?.file_name();
            let name = name.to_string_lossy();
            if !expected.contains(&name.as_ref()) {
                return Err(corrupted(&name, "not part of the image".to_owned()));
            }
        }
        tracing::debug!(digest = %image.digest, "image verified");
        Ok(image)
    }
}

/// What [`Store::verify_for_boot`] compares: an artifact's identity and change times.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct FileStamp {
    name: String,
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

/// The stamps of every artifact of `image` and of its manifest; `None` if any cannot be read.
fn stat_stamp(image: &Image) -> Option<Vec<FileStamp>> {
    use std::os::unix::fs::MetadataExt;
    std::iter::once(MANIFEST)
        .chain(
            image
                .manifest
                .artifacts()
                .iter()
                .map(|(k, _)| k.file_name()),
        )
        .map(|name| {
            let m = std::fs::metadata(image.dir.join(name)).ok()?;
            Some(FileStamp {
                name: name.to_owned(),
                dev: m.dev(),
                ino: m.ino(),
                size: m.size(),
                mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
                ctime_ns: i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec()),
            })
        })
        .collect()
}

/// Writes `source` to a new read-only file at `dest`, synced; returns its digest and size.
fn write_artifact(dest: &Path, source: Source<'_>) -> Result<Artifact, StoreError> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o444)
        .open(dest)
        .map_err(io("creating", dest))?;
    let mut writer = HashingWriter::new(std::io::BufWriter::new(file));
    match source {
        Source::Bytes(bytes) => writer.write_all(bytes).map_err(io("writing", dest))?,
        Source::File(path) => {
            let mut from = File::open(path).map_err(io("opening", path))?;
            std::io::copy(&mut from, &mut writer).map_err(|e| StoreError::Io {
                op: "copying",
                path: path.to_owned(),
                source: std::io::Error::new(e.kind(), format!("to {}: {e}", dest.display())),
            })?;
        }
    }
    writer.flush().map_err(io("writing", dest))?;
    writer
        .get_mut()
        .get_ref()
        .sync_all()
        .map_err(io("syncing", dest))?;
    let (sha256, size) = writer.finish();
    Ok(Artifact { sha256, size })
}

#[cfg(test)]
mod tests;
