//! Reading an overlay's upper dir against its lower dir into a [`ChangeSet`].
//!
//! Overlay semantics (kernel `Documentation/filesystems/overlayfs.rst`, metacopy and
//! redirect_dir off): an upper entry replaces the lower entry of the same name, except that two
//! directories merge unless the upper one is opaque (`overlay.opaque` = `y`, in the `trusted.` or,
//! for `userxattr` mounts, the `user.` namespace); opacity holds for the whole subtree below. A
//! whiteout (char device 0:0, or inside a dir whose `overlay.opaque` is `x` a zero-size regular
//! file with `overlay.whiteout`) hides the lower entry. The upper dir is attacker-written: no
//! symlink is ever followed (see [`crate::fsutil`]), depth and entry count are bounded, special
//! files and setuid/setgid files become refused entries.

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use rustix::fs::{FileType, Stat};
use tracing::debug;

use crate::fsutil::{self, kind_of, lstat_at, meta_at, open_dir_at};
use crate::model::{Change, ChangeKind, ChangeSet, FileKind, Limits, Meta};
use crate::path::{RelPath, child};
use crate::{ReviewError, links};

/// Scans `upper` (an overlay's upper dir, after the overlay is unmounted or quiescent) against
/// `lower` (the workspace it was layered over) and returns every change.
///
/// Blocking; call it from `spawn_blocking` in async code.
pub fn scan(upper: &Path, lower: &Path, limits: &Limits) -> Result<ChangeSet, ReviewError> {
    let up = fsutil::open_root(upper)
        .map_err(|e| ReviewError::io("open upper dir", upper.display(), e))?;
    let low = fsutil::open_root(lower)
        .map_err(|e| ReviewError::io("open lower dir", lower.display(), e))?;
    let mut s = Scanner {
        limits,
        visited: 0,
        entries: Vec::new(),
        links: HashMap::new(),
    };
    // The upper root may carry the markers too (written directly by the command).
    let root_opaque = fsutil::overlay_xattr(&up, "opaque")
        .map_err(|e| ReviewError::io("read xattr", upper.display(), e))?;
    let root = Dir {
        opaque: root_opaque.as_deref() == Some(b"y"),
        xwhiteouts: root_opaque.as_deref() == Some(b"x"),
    };
    s.walk(&up, Some(&low), None, root)?;
    let mut entries = s.entries;
    links::fold_hard_links(&mut entries, s.links);
    links::fold_renames(&mut entries);
    let cs = ChangeSet::new(entries);
    debug!(entries = cs.entries.len(), visited = s.visited, digest = %cs.digest, "scanned upper dir");
    Ok(cs)
}

/// How the overlay treats a directory's lower counterpart.
#[derive(Clone, Copy, Default)]
struct Dir {
    /// The lower dir is hidden (this dir or an ancestor is opaque).
    opaque: bool,
    /// `overlay.opaque` = `x`: zero-size files with `overlay.whiteout` are whiteouts.
    xwhiteouts: bool,
}

struct Scanner<'a> {
    limits: &'a Limits,
    visited: usize,
    entries: Vec<Change>,
    /// Upper regular files with more than one link, by (dev, ino): path, before, after.
    links: HashMap<(u64, u64), Vec<links::LinkEnd>>,
}

fn io_err<'a>(
    op: &'static str,
    path: &'a RelPath,
) -> impl FnOnce(std::io::Error) -> ReviewError + 'a {
    move |e| ReviewError::std_io(op, path, e)
}

fn errno<'a>(
    op: &'static str,
    path: &'a RelPath,
) -> impl FnOnce(rustix::io::Errno) -> ReviewError + 'a {
    move |e| ReviewError::io(op, path, e)
}

/// Why a file type may not be applied, `None` for file/dir/symlink.
fn special_reason(st: &Stat) -> Option<String> {
    let rdev = st.st_rdev as _;
    Some(match FileType::from_raw_mode(st.st_mode as _) {
        FileType::Fifo => "fifo".into(),
        FileType::Socket => "socket".into(),
        FileType::BlockDevice => format!(
            "block device {}:{}",
            rustix::fs::major(rdev),
            rustix::fs::minor(rdev)
        ),
        FileType::CharacterDevice => format!(
            "char device {}:{}",
            rustix::fs::major(rdev),
            rustix::fs::minor(rdev)
        ),
        _ => return None,
    })
}

/// (dev, ino) as u64 on every architecture.
#[allow(clippy::unnecessary_cast)] // the field types differ between architectures
fn inode_key(st: &Stat) -> (u64, u64) {
    (st.st_dev as u64, st.st_ino as u64)
}

fn is_whiteout_dev(st: &Stat) -> bool {
    FileType::from_raw_mode(st.st_mode as _) == FileType::CharacterDevice && st.st_rdev == 0
}

impl Scanner<'_> {
    fn count(&mut self, path: &RelPath) -> Result<(), ReviewError> {
        self.visited += 1;
        if self.visited > self.limits.max_entries {
            return Err(ReviewError::TooLarge {
                what: "entries",
                limit: self.limits.max_entries,
            });
        }
        if path.depth() > self.limits.max_depth {
            return Err(ReviewError::TooLarge {
                what: "depth",
                limit: self.limits.max_depth,
            });
        }
        Ok(())
    }

    fn push(&mut self, path: RelPath, kind: ChangeKind, before: Option<Meta>, after: Option<Meta>) {
        self.entries.push(Change {
            path,
            kind,
            before,
            after,
        });
    }

    fn refuse(
        &mut self,
        path: RelPath,
        reason: impl Into<String>,
        before: Option<Meta>,
        after: Option<Meta>,
    ) {
        self.push(
            path,
            ChangeKind::Refused {
                reason: reason.into(),
            },
            before,
            after,
        );
    }

    /// Walks one upper directory; `low` is the lower dir at the same path, if there is one.
    fn walk(
        &mut self,
        up: &OwnedFd,
        low: Option<&OwnedFd>,
        dir: Option<&RelPath>,
        how: Dir,
    ) -> Result<(), ReviewError> {
        let here = dir.map(|d| d.to_string()).unwrap_or_else(|| ".".into());
        let names =
            fsutil::list_dir(up).map_err(|e| ReviewError::io("list upper dir", &here, e))?;
        for name in &names {
            let path = child(dir, name)?;
            self.count(&path)?;
            self.entry(up, low, &path, name, how)?;
        }
        if let (true, Some(low)) = (how.opaque, low) {
            // Opaque: everything of lower that upper lacks is gone.
            let lower_names =
                fsutil::list_dir(low).map_err(|e| ReviewError::io("list lower dir", &here, e))?;
            for name in lower_names
                .iter()
                .filter(|n| names.binary_search(n).is_err())
            {
                let path = child(dir, name)?;
                self.delete_lower(low, name, path)?;
            }
        }
        Ok(())
    }

    /// The lower entry's stat and meta (`Err(reason)` for a special file there).
    fn lower_meta(
        &mut self,
        low: Option<&OwnedFd>,
        name: &[u8],
        path: &RelPath,
    ) -> Result<Option<(Stat, Option<Meta>)>, ReviewError> {
        let Some(low) = low else { return Ok(None) };
        let Some(st) = lstat_at(low, name).map_err(errno("stat lower", path))? else {
            return Ok(None);
        };
        let meta = meta_at(low, name, &st).map_err(io_err("read lower", path))?;
        Ok(Some((st, meta)))
    }

    fn entry(
        &mut self,
        up: &OwnedFd,
        low: Option<&OwnedFd>,
        path: &RelPath,
        name: &[u8],
        how: Dir,
    ) -> Result<(), ReviewError> {
        let st = lstat_at(up, name)
            .map_err(errno("stat upper", path))?
            .ok_or_else(|| ReviewError::UpperChanged {
                path: path.to_string(),
                what: "vanished while scanning".into(),
            })?;
        if is_whiteout_dev(&st) {
            return self.whiteout(low, name, path);
        }
        if let Some(reason) = special_reason(&st) {
            let before = self.lower_meta(low, name, path)?.and_then(|(_, m)| m);
            self.refuse(path.clone(), reason, before, None);
            return Ok(());
        }
        let (after, upper_fd) = self.upper_meta(up, name, path, &st)?;
        let after = match after {
            UpperEntry::Meta(m) => m,
            UpperEntry::Whiteout => {
                if how.xwhiteouts {
                    return self.whiteout(low, name, path);
                }
                let before = self.lower_meta(low, name, path)?.and_then(|(_, m)| m);
                self.refuse(
                    path.clone(),
                    "regular-file whiteout outside an xwhiteout dir",
                    before,
                    None,
                );
                return Ok(());
            }
            UpperEntry::Refused(reason, m) => {
                let before = self.lower_meta(low, name, path)?.and_then(|(_, m)| m);
                self.refuse(path.clone(), reason, before, Some(m));
                return Ok(());
            }
        };
        let lower = self.lower_meta(low, name, path)?;
        let before = match &lower {
            Some((_, None)) => {
                self.refuse(
                    path.clone(),
                    "replaces a special file in the workspace",
                    None,
                    Some(after),
                );
                return Ok(());
            }
            Some((_, Some(m))) => Some(m.clone()),
            None => None,
        };
        if after.kind == FileKind::File && st.st_nlink > 1 {
            self.links
                .entry(inode_key(&st))
                .or_default()
                .push(links::LinkEnd {
                    path: path.clone(),
                    before: before.clone(),
                    after: after.clone(),
                });
        }
        let before_kind = before.as_ref().map(|b| b.kind);
        if let (Some(FileKind::Dir), false) = (before_kind, after.kind == FileKind::Dir) {
            // A file or symlink over a lower dir hides the dir's whole subtree.
            if let Some(low) = low {
                let ldir = open_dir_at(low, name).map_err(errno("open lower dir", path))?;
                self.delete_children(&ldir, path)?;
            }
        }
        if let Some(kind) = classify(before.as_ref(), &after) {
            self.push(path.clone(), kind, before.clone(), Some(after.clone()));
        }
        if let Some(up_dir) = upper_fd {
            let opaque =
                fsutil::overlay_xattr(&up_dir, "opaque").map_err(errno("read xattr", path))?;
            let mut sub = Dir {
                opaque: how.opaque || opaque.as_deref() == Some(b"y"),
                xwhiteouts: opaque.as_deref() == Some(b"x"),
            };
            let low_dir = match (before_kind, low) {
                (Some(FileKind::Dir), Some(low)) => {
                    Some(open_dir_at(low, name).map_err(errno("open lower dir", path))?)
                }
                _ => None,
            };
            if low_dir.is_none() {
                sub.opaque = false;
            }
            self.walk(&up_dir, low_dir.as_ref(), Some(path), sub)?;
        }
        Ok(())
    }

    /// A whiteout: the lower entry (and its subtree) is deleted.
    fn whiteout(
        &mut self,
        low: Option<&OwnedFd>,
        name: &[u8],
        path: &RelPath,
    ) -> Result<(), ReviewError> {
        match low {
            Some(low)
                if lstat_at(low, name)
                    .map_err(errno("stat lower", path))?
                    .is_some() =>
            {
                self.delete_lower(low, name, path.clone())
            }
            _ => Ok(()),
        }
    }

    /// Records the deletion of lower entry `name` in `low` and, for a dir, of its subtree.
    fn delete_lower(
        &mut self,
        low: &OwnedFd,
        name: &[u8],
        path: RelPath,
    ) -> Result<(), ReviewError> {
        self.count(&path)?;
        let Some(st) = lstat_at(low, name).map_err(errno("stat lower", &path))? else {
            return Ok(());
        };
        let Some(meta) = meta_at(low, name, &st).map_err(io_err("read lower", &path))? else {
            self.refuse(path, "deletes a special file in the workspace", None, None);
            return Ok(());
        };
        if meta.kind == FileKind::Dir {
            let d = open_dir_at(low, name).map_err(errno("open lower dir", &path))?;
            self.delete_children(&d, &path)?;
        }
        self.push(path, ChangeKind::Deleted, Some(meta), None);
        Ok(())
    }

    fn delete_children(&mut self, dir: &OwnedFd, path: &RelPath) -> Result<(), ReviewError> {
        let names = fsutil::list_dir(dir).map_err(errno("list lower dir", path))?;
        for n in &names {
            self.delete_lower(dir, n, path.join(n)?)?;
        }
        Ok(())
    }

    /// Reads an upper file/dir/symlink: its meta, and for a dir its open fd.
    fn upper_meta(
        &mut self,
        up: &OwnedFd,
        name: &[u8],
        path: &RelPath,
        st: &Stat,
    ) -> Result<(UpperEntry, Option<OwnedFd>), ReviewError> {
        let Some(kind) = kind_of(st) else {
            return Err(ReviewError::UpperChanged {
                path: path.to_string(),
                what: "changed type while scanning".into(),
            });
        };
        match kind {
            FileKind::Dir => {
                let fd = open_dir_at(up, name).map_err(errno("open upper dir", path))?;
                let m = meta_at(up.as_fd(), name, st).map_err(io_err("read upper", path))?;
                let m = m.ok_or_else(|| ReviewError::UpperChanged {
                    path: path.to_string(),
                    what: "changed type while scanning".into(),
                })?;
                Ok((UpperEntry::Meta(m), Some(fd)))
            }
            FileKind::Symlink => {
                let m = meta_at(up, name, st).map_err(io_err("read upper", path))?;
                let m = m.ok_or_else(|| ReviewError::UpperChanged {
                    path: path.to_string(),
                    what: "changed type while scanning".into(),
                })?;
                Ok((UpperEntry::Meta(m), None))
            }
            FileKind::File => {
                let fd = fsutil::open_file_at(up, name).map_err(errno("open upper file", path))?;
                if st.st_size == 0
                    && fsutil::overlay_xattr(&fd, "whiteout")
                        .map_err(errno("read xattr", path))?
                        .is_some()
                {
                    return Ok((UpperEntry::Whiteout, None));
                }
                let metacopy =
                    fsutil::overlay_xattr(&fd, "metacopy").map_err(errno("read xattr", path))?;
                let (hash, size) =
                    fsutil::hash_checked(fd, st).map_err(io_err("read upper", path))?;
                let m = Meta {
                    kind,
                    mode: fsutil::perm(st),
                    size,
                    sha256: Some(hash),
                    target: None,
                };
                if metacopy.is_some() {
                    return Ok((
                        UpperEntry::Refused("metacopy file (metacopy is off)".into(), m),
                        None,
                    ));
                }
                if m.mode & 0o6000 != 0 {
                    return Ok((
                        UpperEntry::Refused(format!("setuid/setgid file (mode {:04o})", m.mode), m),
                        None,
                    ));
                }
                Ok((UpperEntry::Meta(m), None))
            }
        }
    }
}

enum UpperEntry {
    Meta(Meta),
    Whiteout,
    Refused(String, Meta),
}

/// The change from `before` to `after` at one path, `None` if there is none.
fn classify(before: Option<&Meta>, after: &Meta) -> Option<ChangeKind> {
    let Some(b) = before else {
        return Some(ChangeKind::Added);
    };
    if b.kind != after.kind {
        return Some(ChangeKind::TypeChanged);
    }
    match after.kind {
        FileKind::File if b.sha256 != after.sha256 => Some(ChangeKind::Modified),
        FileKind::Symlink if b.target != after.target => Some(ChangeKind::Modified),
        // A symlink's mode is meaningless (always 0777 on Linux).
        FileKind::Symlink => None,
        _ if b.mode != after.mode => Some(ChangeKind::ModeChanged),
        _ => None,
    }
}
