//! A deterministic cpio "newc" (`070701`) writer, the format the kernel unpacks an initramfs
//! from.
//!
//! The same entries always give the same bytes: entries are written sorted by path (so every
//! directory precedes what it holds), inode numbers count up from 1 in that order, and owner,
//! group and mtime are 0. Each entry is a 110-byte ASCII header, the NUL-terminated name padded to
//! a multiple of 4 bytes (header included), and the data padded likewise; a `TRAILER!!!` entry
//! ends the archive.
//!
//! Paths are relative (`init`, `dev/console`): no leading `/`, no `.` or `..` component, no empty
//! component, no NUL. Missing parent directories are added (mode 0755).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io::Write;
use std::path::{Path, PathBuf};

const MAGIC: &str = "070701";
const TRAILER: &str = "TRAILER!!!";
const HEADER_LEN: usize = 110;
const MAX_PATH: usize = 4095;

const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFCHR: u32 = 0o020_000;
const IMPLICIT_DIR_MODE: u32 = 0o755;
static ZEROS: [u8; 3] = [0; 3];

/// Why an entry cannot be added or the archive cannot be written.
#[derive(Debug, thiserror::Error)]
pub enum CpioError {
    /// The path is not a clean relative path.
    #[error("cpio entry {path:?}: {reason}")]
    BadPath { path: String, reason: &'static str },
    /// An entry already has that path.
    #[error("cpio entry {0:?} already exists")]
    Exists(String),
    /// A parent of the path is not a directory.
    #[error("cpio entry {path:?}: parent {parent:?} is not a directory")]
    ParentNotDir { path: String, parent: String },
    /// The mode has bits beyond the permission bits (0o7777).
    #[error("cpio entry {path:?}: mode {mode:#o} is not a permission mode (at most 0o7777)")]
    BadMode { path: String, mode: u32 },
    /// The file is larger than the format's 4 GiB.
    #[error("cpio entry {path:?}: {len} bytes is more than a newc archive can hold")]
    TooLarge { path: String, len: usize },
    /// The symlink target is empty, too long or holds NUL.
    #[error("cpio symlink {path:?}: target {target:?} is empty, too long or holds NUL")]
    BadTarget { path: String, target: String },
    /// Writing the archive failed.
    #[error("writing cpio archive to {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Dir,
    File(Vec<u8>),
    Symlink(String),
    CharDev { major: u32, minor: u32 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    kind: Kind,
    /// Permission bits.
    perm: u32,
    /// Added only as a parent of another entry (an explicit `dir` may still set its mode).
    implicit: bool,
}

/// An initramfs being assembled. Nothing is written until [`Archive::write_to`] or
/// [`Archive::to_bytes`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Archive {
    entries: BTreeMap<String, Entry>,
}

fn check_path(path: &str) -> Result<(), CpioError> {
    let bad = |reason| {
        Err(CpioError::BadPath {
            path: path.to_owned(),
            reason,
        })
    };
    if path.is_empty() {
        return bad("empty path");
    }
    if path.len() > MAX_PATH {
        return bad("path longer than 4095 bytes");
    }
    if path.contains('\0') {
        return bad("path holds NUL");
    }
    if path.starts_with('/') {
        return bad("absolute path (initramfs paths are relative to its root)");
    }
    if path == TRAILER {
        return bad("the archive's end marker is not an entry name");
    }
    for component in path.split('/') {
        match component {
            "" => return bad("empty path component ('//' or a trailing '/')"),
            "." | ".." => return bad("'.' or '..' component"),
            _ => {}
        }
    }
    Ok(())
}

impl Archive {
    /// An empty archive.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of entries (implicit directories included, the trailer not).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the archive has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether `path` has an entry.
    pub fn contains(&self, path: &str) -> bool {
        self.entries.contains_key(path)
    }

    fn add(&mut self, path: &str, kind: Kind, perm: u32) -> Result<(), CpioError> {
        check_path(path)?;
        if perm & !0o7777 != 0 {
            return Err(CpioError::BadMode {
                path: path.to_owned(),
                mode: perm,
            });
        }
        // Every parent must be a directory; add the missing ones.
        let mut end = 0;
        while let Some(slash) = path[end..].find('/') {
            let parent = &path[..end + slash];
            match self.entries.get(parent) {
                Some(Entry {
                    kind: Kind::Dir, ..
                }) => {}
                Some(_) => {
                    return Err(CpioError::ParentNotDir {
                        path: path.to_owned(),
                        parent: parent.to_owned(),
                    });
                }
                None => {
                    self.entries.insert(
                        parent.to_owned(),
                        Entry {
                            kind: Kind::Dir,
                            perm: IMPLICIT_DIR_MODE,
                            implicit: true,
                        },
                    );
                }
            }
            end += slash + 1;
        }
        match self.entries.get_mut(path) {
            // An explicit directory over one added as a parent: set its mode.
            Some(existing) if existing.implicit && kind == Kind::Dir => {
                existing.perm = perm;
                existing.implicit = false;
                Ok(())
            }
            Some(_) => Err(CpioError::Exists(path.to_owned())),
            None => {
                self.entries.insert(
                    path.to_owned(),
                    Entry {
                        kind,
                        perm,
                        implicit: false,
                    },
                );
                Ok(())
            }
        }
    }

    /// Adds a directory with permission bits `perm` (e.g. `0o755`).
    pub fn dir(&mut self, path: &str, perm: u32) -> Result<(), CpioError> {
        self.add(path, Kind::Dir, perm)
    }

    /// Adds a regular file with permission bits `perm` (e.g. `0o755` for `init`).
    pub fn file(
        &mut self,
        path: &str,
        perm: u32,
        data: impl Into<Vec<u8>>,
    ) -> Result<(), CpioError> {
        let data = data.into();
        if u32::try_from(data.len()).is_err() {
            return Err(CpioError::TooLarge {
                path: path.to_owned(),
                len: data.len(),
            });
        }
        self.add(path, Kind::File(data), perm)
    }

    /// Adds a symbolic link to `target` (which may be absolute: it is resolved in the guest).
    pub fn symlink(&mut self, path: &str, target: &str) -> Result<(), CpioError> {
        if target.is_empty() || target.len() > MAX_PATH || target.contains('\0') {
            return Err(CpioError::BadTarget {
                path: path.to_owned(),
                target: target.to_owned(),
            });
        }
        self.add(path, Kind::Symlink(target.to_owned()), 0o777)
    }

    /// Adds a character device node, e.g. `dev/console` 5:1 (which the kernel opens for init's
    /// stdio before any devtmpfs is mounted).
    pub fn char_device(
        &mut self,
        path: &str,
        perm: u32,
        major: u32,
        minor: u32,
    ) -> Result<(), CpioError> {
        self.add(path, Kind::CharDev { major, minor }, perm)
    }

    /// Emits the archive as a sequence of byte slices.
    fn encode<E>(&self, mut emit: impl FnMut(&[u8]) -> Result<(), E>) -> Result<(), E> {
        let mut offset = 0usize;
        let mut put = |bytes: &[u8], offset: &mut usize| {
            *offset += bytes.len();
            emit(bytes)
        };
        let pad = |offset: usize| &ZEROS[..(4 - offset % 4) % 4];
        let records = self.entries.iter().zip(1u32..).map(|((path, entry), ino)| {
            let (mode, nlink, data, rdev): (u32, u32, &[u8], (u32, u32)) = match &entry.kind {
                Kind::Dir => (S_IFDIR, 2, &[], (0, 0)),
                Kind::File(data) => (S_IFREG, 1, data, (0, 0)),
                Kind::Symlink(target) => (S_IFLNK, 1, target.as_bytes(), (0, 0)),
                Kind::CharDev { major, minor } => (S_IFCHR, 1, &[], (*major, *minor)),
            };
            (path.as_str(), ino, mode | entry.perm, nlink, data, rdev)
        });
        for (name, ino, mode, nlink, data, rdev) in
            records.chain([(TRAILER, 0, 0, 1, &[][..], (0, 0))])
        {
            // Lengths were bounded when the entry was added (paths ≤ 4095, data < 4 GiB).
            let header = format!(
                "{MAGIC}{ino:08X}{mode:08X}{uid:08X}{gid:08X}{nlink:08X}{mtime:08X}{size:08X}\
                 {devmajor:08X}{devminor:08X}{rmajor:08X}{rminor:08X}{namesize:08X}{check:08X}",
                uid = 0,
                gid = 0,
                mtime = 0,
                size = data.len(),
                devmajor = 0,
                devminor = 0,
                rmajor = rdev.0,
                rminor = rdev.1,
                namesize = name.len() + 1,
                check = 0,
            );
            debug_assert_eq!(header.len(), HEADER_LEN);
            put(header.as_bytes(), &mut offset)?;
            put(name.as_bytes(), &mut offset)?;
            put(&[0], &mut offset)?;
            put(pad(offset), &mut offset)?;
            put(data, &mut offset)?;
            put(pad(offset), &mut offset)?;
        }
        Ok(())
    }

    /// The archive's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let Ok(()) = self.encode::<Infallible>(|bytes| {
            out.extend_from_slice(bytes);
            Ok(())
        });
        out
    }

    /// Writes the archive to `w`; returns the number of bytes written.
    pub fn write_to(&self, w: &mut impl Write) -> std::io::Result<u64> {
        let mut written = 0u64;
        self.encode(|bytes| {
            written += bytes.len() as u64;
            w.write_all(bytes)
        })?;
        Ok(written)
    }

    /// Writes the archive to a new file at `path` (replacing any), and syncs it.
    pub fn write_file(&self, path: &Path) -> Result<u64, CpioError> {
        let err = |source| CpioError::Write {
            path: path.to_owned(),
            source,
        };
        let mut file = std::io::BufWriter::new(std::fs::File::create(path).map_err(err)?);
        let n = self.write_to(&mut file).map_err(err)?;
        let file = file.into_inner().map_err(|e| err(e.into_error()))?;
        file.sync_all().map_err(err)?;
        tracing::debug!(path = %path.display(), bytes = n, entries = self.len(), "wrote cpio archive");
        Ok(n)
    }
}

#[cfg(test)]
mod tests;
