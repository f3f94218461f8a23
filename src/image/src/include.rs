//! Host files copied into an image's root at build time (`image build --include HOST:AT`).
//!
//! A microVM cannot take read-only host mounts, so what a sandbox must run (an MCP server's
//! `node_modules`, a Python venv) goes into the image. [`stage`] assembles the root the image is
//! built from: the base tree hard-linked (copied when links cannot be made) into a scratch
//! directory with every entry's mode, owner and mtime kept, then each include copied in at its
//! place. The staged tree is what [`crate::rootfs::scan_tree`] digests and
//! [`crate::rootfs::build_ext4`] writes, so an include's content, modes, owners and mtimes are
//! part of the image's inputs like the rest of the root, and the same inputs stage the same tree.
//!
//! Copying keeps symbolic links as links (a venv's `bin/python -> /usr/bin/python3` stays one),
//! keeps modes and mtimes (to the nanosecond) and, when run as root, owners; device files, FIFOs
//! and sockets are refused. Only the include's own top is followed when it is a link. Nothing is
//! ever written through a link of the base: an include whose place has a symbolic link among its
//! parents (`/lib` in a merged-`/usr` Debian) is refused, naming the link. A base file an include
//! replaces is unlinked first, never written through (it may be a hard link into the base).
//! Directories an include adds above its place get mode 0755 and the fixed mtime
//! [`crate::hostroot::FIXED_MTIME`]; base directories it adds to keep their mtimes.

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;

use nix::sys::stat::{UtimensatFlags, utimensat};
use nix::sys::time::TimeSpec;
use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::rootfs::{self, RootfsError};

/// Places in the guest's root an include may not be at, inside or above: what the guest kernel
/// and VM init mount or create over the root (`/proc`, `/sys`, `/dev`, `/run` with
/// `/run/luminaguard`) and the sandbox's own workspace.
pub const INCLUDE_RESERVED: &[&str] = &["/proc", "/sys", "/dev", "/run", "/workspace"];

/// At most this many includes in one build.
pub const MAX_INCLUDES: usize = 64;

/// Why an include is refused or cannot be copied.
#[derive(Debug, thiserror::Error)]
pub enum IncludeError {
    /// `HOST:AT` is not spelled so.
    #[error(
        "include {0:?}: expected HOST:AT (a host path, a colon, an absolute path in the image)"
    )]
    Syntax(String),
    /// The place in the image is unusable.
    #[error("include at {at}: {reason}")]
    Place { at: PathBuf, reason: String },
    /// Two includes at the same place, or one inside another.
    #[error("includes at {0} and {1} overlap: give each its own place")]
    Overlap(PathBuf, PathBuf),
    /// Too many includes.
    #[error("{0} includes; at most {MAX_INCLUDES}")]
    TooMany(usize),
    /// The host side cannot be copied.
    #[error("include {host}: {reason}")]
    Unsupported { host: PathBuf, reason: String },
    /// A parent of the place is a symbolic link in the root: writing through it could land
    /// anywhere, so it is refused.
    #[error(
        "include at {at}: {link} is a symbolic link in the root (to {target}); give the path it resolves to"
    )]
    LinkInPath {
        at: PathBuf,
        link: PathBuf,
        target: PathBuf,
    },
    /// The include and the root disagree on what is at a path.
    #[error("include at {at}: {path} is a {existing} in the root and a {incoming} in the include")]
    Conflict {
        at: PathBuf,
        path: PathBuf,
        existing: &'static str,
        incoming: &'static str,
    },
    /// A file operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    /// Digesting the copied tree failed.
    #[error(transparent)]
    Rootfs(#[from] RootfsError),
}

/// One `--include HOST:AT`: a host directory or file, copied into the image's root at `at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Include {
    /// The host directory or file (absolute).
    pub host: PathBuf,
    /// Where it goes in the guest's root (absolute, normal, see [`validate_at`]).
    pub at: PathBuf,
}

impl FromStr for Include {
    type Err = IncludeError;

    /// `HOST:AT`, split at the first `:` that is followed by `/` (so a host path may not hold
    /// `:/`); both sides validated.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (host, at) = s
            .match_indices(":/")
            .next()
            .map(|(i, _)| (&s[..i], &s[i + 1..]))
            .ok_or_else(|| IncludeError::Syntax(s.to_owned()))?;
        let include = Include {
            host: PathBuf::from(host),
            at: PathBuf::from(at),
        };
        include.validate()?;
        Ok(include)
    }
}

impl Include {
    /// The checks that need no file system: `host` absolute, `at` per [`validate_at`].
    pub fn validate(&self) -> Result<(), IncludeError> {
        if !self.host.is_absolute() || self.host.as_os_str().as_encoded_bytes().contains(&0) {
            return Err(IncludeError::Unsupported {
                host: self.host.clone(),
                reason: "the host path must be absolute".to_owned(),
            });
        }
        validate_at(&self.at)
    }
}

/// A place an include may go: absolute, spelled plainly (no `.`, `..`, `//`, trailing `/`), not
/// `/`, not at, inside or above an [`INCLUDE_RESERVED`] path.
pub fn validate_at(at: &Path) -> Result<(), IncludeError> {
    let place = |reason: &str| IncludeError::Place {
        at: at.to_owned(),
        reason: reason.to_owned(),
    };
    let plain = at.as_os_str() == at.components().collect::<PathBuf>().as_os_str();
    let normal = at.is_absolute()
        && at
            .components()
            .skip(1)
            .all(|c| matches!(c, Component::Normal(_)));
    if !plain || !normal || at.as_os_str().as_encoded_bytes().contains(&0) {
        return Err(place(
            "must be absolute, without '.', '..', '//' or a trailing '/'",
        ));
    }
    if at == Path::new("/") {
        return Err(place(
            "an include cannot be the whole root (use --rootfs DIR)",
        ));
    }
    if at.as_os_str().as_encoded_bytes().contains(&b'\n') {
        return Err(place("a newline in a path is not supported"));
    }
    for r in INCLUDE_RESERVED {
        if at.starts_with(r) || Path::new(r).starts_with(at) {
            return Err(place(&format!(
                "{r} is the guest's own (mounted or made by the guest at boot); an include may \
                 not be at, inside or above it"
            )));
        }
    }
    Ok(())
}

/// Validates a build's includes together: each one, their number, and that no two overlap.
pub fn validate_all(includes: &[Include]) -> Result<(), IncludeError> {
    if includes.len() > MAX_INCLUDES {
        return Err(IncludeError::TooMany(includes.len()));
    }
    for (i, inc) in includes.iter().enumerate() {
        inc.validate()?;
        if let Some(other) = includes[..i]
            .iter()
            .find(|o| o.at.starts_with(&inc.at) || inc.at.starts_with(&o.at))
        {
            return Err(IncludeError::Overlap(other.at.clone(), inc.at.clone()));
        }
    }
    Ok(())
}

/// What an image records of an include: its place and the digest of what was copied there (the
/// [`rootfs::scan_tree`] digest of a directory — paths, types, modes, owners, mtimes, contents
/// — or the SHA-256 of a file's bytes). The host path is not recorded: the image depends on
/// the content, not on where it was found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Included {
    /// The place in the guest's root.
    pub at: String,
    /// The digest of what is there.
    pub sha256: Digest,
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> IncludeError {
    let path = path.to_owned();
    move |source| IncludeError::Io { what, path, source }
}

fn kind_of(ft: fs::FileType) -> &'static str {
    if ft.is_dir() {
        "directory"
    } else if ft.is_file() {
        "file"
    } else if ft.is_symlink() {
        "symbolic link"
    } else {
        "special file"
    }
}

/// Sets `path`'s owner (when allowed: as root, or to oneself) and mtime, not following a link.
fn set_owner_and_mtime(path: &Path, meta: &fs::Metadata) -> Result<(), IncludeError> {
    match std::os::unix::fs::lchown(path, Some(meta.uid()), Some(meta.gid())) {
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {}
        other => other.map_err(io_err("setting the owner of", path))?,
    }
    set_mtime(path, meta.mtime(), meta.mtime_nsec())
}

fn set_mtime(path: &Path, secs: i64, nsecs: i64) -> Result<(), IncludeError> {
    let t = TimeSpec::new(secs, nsecs);
    utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &t,
        &t,
        UtimensatFlags::NoFollowSymlink,
    )
    .map_err(|e| IncludeError::Io {
        what: "setting the mtime of",
        path: path.to_owned(),
        source: io::Error::from(e),
    })
}

/// Copies one non-directory entry (`meta` is `from`'s, not followed) to the absent `to`.
fn copy_leaf(from: &Path, to: &Path, meta: &fs::Metadata) -> Result<(), IncludeError> {
    let ft = meta.file_type();
    if ft.is_symlink() {
        let target = fs::read_link(from).map_err(io_err("reading the link", from))?;
        std::os::unix::fs::symlink(&target, to).map_err(io_err("creating the link", to))?;
    } else if ft.is_file() {
        fs::copy(from, to).map_err(io_err("copying to", to))?;
        fs::set_permissions(to, fs::Permissions::from_mode(meta.mode() & 0o7777))
            .map_err(io_err("setting the mode of", to))?;
    } else {
        return Err(IncludeError::Unsupported {
            host: from.to_owned(),
            reason: "device files, FIFOs and sockets cannot be included".to_owned(),
        });
    }
    set_owner_and_mtime(to, meta)
}

/// Makes `to` a directory like `meta` (mode, owner; the mtime after its children).
fn make_dir(to: &Path, meta: &fs::Metadata) -> Result<(), IncludeError> {
    fs::create_dir(to).map_err(io_err("creating", to))?;
    fs::set_permissions(to, fs::Permissions::from_mode(meta.mode() & 0o7777))
        .map_err(io_err("setting the mode of", to))?;
    match std::os::unix::fs::lchown(to, Some(meta.uid()), Some(meta.gid())) {
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => Ok(()),
        other => other.map_err(io_err("setting the owner of", to)),
    }
}

fn sorted_children(dir: &Path) -> Result<Vec<std::ffi::OsString>, IncludeError> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err("reading", dir))? {
        names.push(entry.map_err(io_err("reading", dir))?.file_name());
    }
    names.sort();
    Ok(names)
}

/// The base tree at `from` into the absent `to`: directories made alike, everything else hard
/// linked (copied when the link cannot be made, e.g. across file systems).
fn link_tree(from: &Path, to: &Path) -> Result<(), IncludeError> {
    let meta = fs::symlink_metadata(from).map_err(io_err("reading", from))?;
    if !meta.is_dir() {
        if fs::hard_link(from, to).is_err() {
            copy_leaf(from, to, &meta)?;
        }
        return Ok(());
    }
    make_dir(to, &meta)?;
    for name in sorted_children(from)? {
        link_tree(&from.join(&name), &to.join(&name))?;
    }
    set_mtime(to, meta.mtime(), meta.mtime_nsec())
}

/// Copies the include tree at `from` to `to`, merging into a directory already there.
fn copy_tree(at: &Path, from: &Path, to: &Path, follow: bool) -> Result<(), IncludeError> {
    let meta = if follow {
        fs::metadata(from)
    } else {
        fs::symlink_metadata(from)
    }
    .map_err(io_err("reading", from))?;
    let existing = fs::symlink_metadata(to).ok();
    if let Some(old) = existing
        .as_ref()
        .filter(|old| old.is_dir() != meta.is_dir())
    {
        return Err(IncludeError::Conflict {
            at: at.to_owned(),
            path: to.to_owned(),
            existing: kind_of(old.file_type()),
            incoming: kind_of(meta.file_type()),
        });
    }
    if !meta.is_dir() {
        if existing.is_some() {
            // Possibly a hard link into the base: unlink, never write through.
            fs::remove_file(to).map_err(io_err("replacing", to))?;
        }
        return copy_leaf(from, to, &meta);
    }
    if existing.is_some() {
        fs::set_permissions(to, fs::Permissions::from_mode(meta.mode() & 0o7777))
            .map_err(io_err("setting the mode of", to))?;
    } else {
        make_dir(to, &meta)?;
    }
    for name in sorted_children(from)? {
        copy_tree(at, &from.join(&name), &to.join(&name), false)?;
    }
    set_owner_and_mtime(to, &meta)
}

/// Puts `include` into the staged root `root`: checks and makes its parents, copies it, puts
/// the parents' mtimes back, and returns what the image records of it.
fn place(root: &Path, include: &Include) -> Result<Included, IncludeError> {
    let at = &include.at;
    let rel: Vec<&OsStr> = at
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n),
            _ => None,
        })
        .collect();
    // The parents of the place, outermost first, with the mtime each had (None: made here).
    let mut parents: Vec<(PathBuf, Option<(i64, i64)>)> = vec![];
    let mut dir = root.to_owned();
    let root_meta = fs::symlink_metadata(root).map_err(io_err("reading", root))?;
    parents.push((
        dir.clone(),
        Some((root_meta.mtime(), root_meta.mtime_nsec())),
    ));
    for name in &rel[..rel.len().saturating_sub(1)] {
        dir.push(name);
        match fs::symlink_metadata(&dir) {
            Ok(m) if m.is_dir() => parents.push((dir.clone(), Some((m.mtime(), m.mtime_nsec())))),
            Ok(m) if m.file_type().is_symlink() => {
                return Err(IncludeError::LinkInPath {
                    at: at.clone(),
                    link: Path::new("/").join(dir.strip_prefix(root).unwrap_or(&dir)),
                    target: fs::read_link(&dir).unwrap_or_default(),
                });
            }
            Ok(m) => {
                return Err(IncludeError::Conflict {
                    at: at.clone(),
                    path: Path::new("/").join(dir.strip_prefix(root).unwrap_or(&dir)),
                    existing: kind_of(m.file_type()),
                    incoming: "directory",
                });
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir(&dir).map_err(io_err("creating", &dir))?;
                fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))
                    .map_err(io_err("setting the mode of", &dir))?;
                parents.push((dir.clone(), None));
            }
            Err(source) => {
                return Err(IncludeError::Io {
                    what: "reading",
                    path: dir,
                    source,
                });
            }
        }
    }
    let to = root.join(at.strip_prefix("/").unwrap_or(at));
    copy_tree(at, &include.host, &to, true)?;
    // Innermost first, so that setting a parent's mtime is the last change to it.
    for (dir, mtime) in parents.iter().rev() {
        let (secs, nsecs) =
            mtime.unwrap_or((i64::try_from(crate::hostroot::FIXED_MTIME).unwrap_or(0), 0));
        set_mtime(dir, secs, nsecs)?;
    }
    let sha256 = if fs::symlink_metadata(&to)
        .map_err(io_err("reading", &to))?
        .is_dir()
    {
        rootfs::scan_tree(&to)?.digest
    } else if fs::symlink_metadata(&to)
        .map_err(io_err("reading", &to))?
        .is_file()
    {
        let file = fs::File::open(&to).map_err(io_err("reading", &to))?;
        Digest::of_reader(file).map_err(io_err("reading", &to))?.0
    } else {
        Digest::of(
            fs::read_link(&to)
                .map_err(io_err("reading the link", &to))?
                .as_os_str()
                .as_encoded_bytes(),
        )
    };
    Ok(Included {
        at: at.display().to_string(),
        sha256,
    })
}

/// Stages the root an image with `includes` is built from into `dest` (absent; on the same
/// file system as `base` for hard links to be made): `base` linked in, then each include copied
/// to its place, in the order given. Returns what the image records of each include.
pub fn stage(
    base: &Path,
    includes: &[Include],
    dest: &Path,
) -> Result<Vec<Included>, IncludeError> {
    validate_all(includes)?;
    for inc in includes {
        fs::metadata(&inc.host).map_err(|source| IncludeError::Io {
            what: "reading the include",
            path: inc.host.clone(),
            source,
        })?;
    }
    link_tree(base, dest)?;
    includes.iter().map(|inc| place(dest, inc)).collect()
}

#[cfg(test)]
mod tests;
