//! Applying an approved change set to the real workspace: verify everything first, then write
//! each file atomically (temp file in the same dir, fsync, mode, owner, `renameat`), resolving
//! every path with `openat2(RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS)` so nothing outside the
//! workspace can be touched.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use rustix::fs::{AtFlags, Gid, Mode, OFlags, Uid};
use rustix::io::Errno;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tracing::info;

use crate::digest::hex;
use crate::fsutil::{self, open_parent};
use crate::model::{Change, ChangeKind, ChangeSet, FileKind, Limits, Meta};
use crate::path::RelPath;
use crate::{ReviewError, verify};

/// What an apply did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// The digest of the applied change set.
    pub digest: String,
    /// Regular files written (added, modified, renamed, type-changed).
    pub files_written: usize,
    /// Symlinks created or replaced.
    pub symlinks: usize,
    /// Directories created.
    pub dirs_created: usize,
    /// Hard links created.
    pub hard_links: usize,
    /// Paths removed (files, symlinks, dirs).
    pub removed: usize,
    /// Permission-only changes.
    pub modes_changed: usize,
}

/// Applies `cs` (made by [`crate::scan`] of `upper` over `workspace`) to `workspace`, with the
/// default [`Limits`] for the re-scan. See [`apply_with_limits`].
pub fn apply(
    cs: &ChangeSet,
    upper: &Path,
    workspace: &Path,
    owner: Option<(u32, u32)>,
) -> Result<Applied, ReviewError> {
    apply_with_limits(cs, upper, workspace, owner, &Limits::default())
}

/// Applies `cs` to `workspace`.
///
/// First verifies, applying nothing on failure: the card is self-consistent, holds no refused
/// entry, the workspace holds every entry's `before` state ([`ReviewError::WorkspaceChanged`]),
/// and a fresh scan of `upper` over `workspace` (bounded by `limits`) yields the same digest
/// ([`ReviewError::UpperChanged`]). Then removes (deepest first), creates (parents first), links,
/// sets dir modes and fsyncs the touched dirs. Files and dirs created get `owner` (uid, gid) when
/// given, and modes without setuid/setgid/sticky. An I/O error midway leaves what was applied so
/// far; each single file is either its old or its new version.
///
/// Blocking; call it from `spawn_blocking` in async code.
pub fn apply_with_limits(
    cs: &ChangeSet,
    upper: &Path,
    workspace: &Path,
    owner: Option<(u32, u32)>,
    limits: &Limits,
) -> Result<Applied, ReviewError> {
    cs.check()?;
    if let Some((c, reason)) = cs.refused().next() {
        return Err(ReviewError::Refused {
            path: c.path.to_string(),
            reason: reason.to_string(),
        });
    }
    let ws = fsutil::open_root(workspace)
        .map_err(|e| ReviewError::io("open workspace", workspace.display(), e))?;
    let up = fsutil::open_root(upper)
        .map_err(|e| ReviewError::io("open upper dir", upper.display(), e))?;
    verify::check_workspace(&ws, cs)?;
    let now = crate::scan(upper, workspace, limits)?;
    verify::compare_rescan(cs, &now)?;

    let mut w = Writer {
        ws,
        up,
        owner: owner.map(|(u, g)| (Uid::from_raw_unchecked(u), Gid::from_raw_unchecked(g))),
        dirty: BTreeSet::new(),
        applied: Applied {
            digest: cs.digest.clone(),
            ..Applied::default()
        },
        seq: 0,
    };
    w.run(cs)?;
    info!(digest = %cs.digest, applied = ?w.applied, "change set applied");
    Ok(w.applied)
}

/// Whether the old object at a path must go before the new one can be put there (renaming over
/// works for file/symlink ↔ file/symlink, not to or from a dir).
fn must_remove(before: FileKind, after: FileKind) -> bool {
    before != after && (before == FileKind::Dir || after == FileKind::Dir)
}

struct Writer {
    ws: OwnedFd,
    up: OwnedFd,
    owner: Option<(Uid, Gid)>,
    /// Parent dirs to fsync (None: the workspace root).
    dirty: BTreeSet<Option<RelPath>>,
    applied: Applied,
    seq: u64,
}

impl Writer {
    fn run(&mut self, cs: &ChangeSet) -> Result<(), ReviewError> {
        // 1. Removals, deepest first.
        let mut removals: Vec<(&RelPath, FileKind)> = Vec::new();
        for c in &cs.entries {
            let Some(b) = &c.before else { continue };
            match (&c.kind, &c.after) {
                (ChangeKind::Renamed { from }, _) => removals.push((from, b.kind)),
                (_, None) => removals.push((&c.path, b.kind)),
                (_, Some(a)) if must_remove(b.kind, a.kind) => removals.push((&c.path, b.kind)),
                _ => {}
            }
        }
        removals.sort_by(|a, b| b.0.cmp(a.0));
        for (p, kind) in removals {
            self.remove(p, kind)?;
        }
        // 2. Creations, parents first.
        let mut dir_modes: Vec<(&RelPath, u32)> = Vec::new();
        for c in &cs.entries {
            let Some(a) = &c.after else { continue };
            match (&c.kind, a.kind) {
                (ChangeKind::HardLink { .. }, _) => {}
                (_, FileKind::Dir) => {
                    if c.before.as_ref().is_none_or(|b| b.kind != FileKind::Dir) {
                        self.mkdir(&c.path)?;
                    } else {
                        self.applied.modes_changed += 1;
                    }
                    dir_modes.push((&c.path, a.mode));
                }
                (ChangeKind::ModeChanged, FileKind::File) => self.chmod_file(&c.path, a.mode)?,
                (_, FileKind::File) => self.write_file(c, a)?,
                (_, FileKind::Symlink) => self.write_symlink(&c.path, a)?,
            }
        }
        // 3. Hard links, once every target exists.
        for c in &cs.entries {
            if let ChangeKind::HardLink { target } = &c.kind {
                self.link(target, &c.path)?;
            }
        }
        // 4. Dir modes, deepest first (a read-only dir is finished before it is locked).
        for (p, mode) in dir_modes.into_iter().rev() {
            let fd =
                fsutil::open_beneath(&self.ws, p.as_bytes(), OFlags::RDONLY | OFlags::DIRECTORY)
                    .map_err(|e| ReviewError::io("open dir", p, e))?;
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode & 0o777))
                .map_err(|e| ReviewError::io("chmod", p, e))?;
        }
        // 5. Make the new names durable.
        for d in std::mem::take(&mut self.dirty) {
            let fd = match &d {
                Some(p) => {
                    fsutil::open_beneath(&self.ws, p.as_bytes(), OFlags::RDONLY | OFlags::DIRECTORY)
                }
                None => rustix::io::fcntl_dupfd_cloexec(&self.ws, 0),
            };
            let shown = d
                .as_ref()
                .map(|p| p.to_string())
                .unwrap_or_else(|| ".".into());
            let fd = match fd {
                Ok(fd) => fd,
                // A removed dir (now gone, or another type): its parent is in the set too.
                Err(Errno::NOENT | Errno::NOTDIR | Errno::LOOP) => continue,
                Err(e) => return Err(ReviewError::io("open dir", &shown, e)),
            };
            rustix::fs::fsync(&fd).map_err(|e| ReviewError::io("fsync dir", &shown, e))?;
        }
        Ok(())
    }

    fn parent(&mut self, p: &RelPath) -> Result<OwnedFd, ReviewError> {
        let (fd, _) = open_parent(&self.ws, p).map_err(|e| ReviewError::io("open parent", p, e))?;
        self.dirty.insert(p.parent());
        Ok(fd)
    }

    fn remove(&mut self, p: &RelPath, kind: FileKind) -> Result<(), ReviewError> {
        let dir = self.parent(p)?;
        let r = if kind == FileKind::Dir {
            remove_tree(&dir, p.file_name())
        } else {
            rustix::fs::unlinkat(&dir, p.file_name(), AtFlags::empty())
        };
        match r {
            Ok(()) | Err(Errno::NOENT) => {
                self.applied.removed += 1;
                Ok(())
            }
            Err(e) => Err(ReviewError::io("remove", p, e)),
        }
    }

    fn mkdir(&mut self, p: &RelPath) -> Result<(), ReviewError> {
        let dir = self.parent(p)?;
        rustix::fs::mkdirat(&dir, p.file_name(), Mode::from_raw_mode(0o700))
            .map_err(|e| ReviewError::io("mkdir", p, e))?;
        if let Some((u, g)) = self.owner {
            rustix::fs::chownat(
                &dir,
                p.file_name(),
                Some(u),
                Some(g),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(|e| ReviewError::io("chown", p, e))?;
        }
        self.applied.dirs_created += 1;
        Ok(())
    }

    fn chmod_file(&mut self, p: &RelPath, mode: u32) -> Result<(), ReviewError> {
        let fd = fsutil::open_beneath(&self.ws, p.as_bytes(), OFlags::RDONLY | OFlags::NONBLOCK)
            .map_err(|e| ReviewError::io("open", p, e))?;
        let st = rustix::fs::fstat(&fd).map_err(|e| ReviewError::io("stat", p, e))?;
        if fsutil::kind_of(&st) != Some(FileKind::File) {
            return Err(ReviewError::WorkspaceChanged {
                path: p.to_string(),
                what: "no longer a regular file".into(),
            });
        }
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode & 0o777))
            .map_err(|e| ReviewError::io("chmod", p, e))?;
        self.applied.modes_changed += 1;
        Ok(())
    }

    /// Creates a fresh temp name in `dir` with `make`, retrying on a name clash.
    fn temp<T>(
        &mut self,
        p: &RelPath,
        mut make: impl FnMut(&[u8]) -> Result<T, Errno>,
    ) -> Result<(Vec<u8>, T), ReviewError> {
        loop {
            self.seq += 1;
            let name = format!(".lg-review-{}-{}.tmp", std::process::id(), self.seq).into_bytes();
            match make(&name) {
                Ok(t) => return Ok((name, t)),
                Err(Errno::EXIST) if !self.seq.is_multiple_of(1000) => continue,
                Err(e) => return Err(ReviewError::io("create temp for", p, e)),
            }
        }
    }

    fn commit(&mut self, dir: &OwnedFd, tmp: &[u8], p: &RelPath) -> Result<(), ReviewError> {
        rustix::fs::renameat(dir, tmp, dir, p.file_name()).map_err(|e| {
            let _ = rustix::fs::unlinkat(dir, tmp, AtFlags::empty());
            ReviewError::io("rename into place", p, e)
        })?;
        // Renaming onto another name of the same inode does nothing and leaves the temp name.
        let _ = rustix::fs::unlinkat(dir, tmp, AtFlags::empty());
        Ok(())
    }

    fn write_file(&mut self, c: &Change, a: &Meta) -> Result<(), ReviewError> {
        let p = &c.path;
        let src = fsutil::open_beneath(&self.up, p.as_bytes(), OFlags::RDONLY | OFlags::NONBLOCK)
            .map_err(|e| ReviewError::io("open upper", p, e))?;
        let st = rustix::fs::fstat(&src).map_err(|e| ReviewError::io("stat upper", p, e))?;
        if fsutil::kind_of(&st) != Some(FileKind::File) {
            return Err(ReviewError::UpperChanged {
                path: p.to_string(),
                what: "no longer a regular file".into(),
            });
        }
        let dir = self.parent(p)?;
        let (tmp, fd) = self.temp(p, |name| {
            rustix::fs::openat(
                &dir,
                name,
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            )
        })?;
        let r = self.fill(fd, src, a, p);
        if let Err(e) = r {
            let _ = rustix::fs::unlinkat(&dir, &tmp, AtFlags::empty());
            return Err(e);
        }
        self.commit(&dir, &tmp, p)?;
        self.applied.files_written += 1;
        Ok(())
    }

    /// Copies `src` into the temp file `fd`, checking the content is the card's, then fsync,
    /// owner and mode.
    fn fill(&self, fd: OwnedFd, src: OwnedFd, a: &Meta, p: &RelPath) -> Result<(), ReviewError> {
        let io = |op| move |e: std::io::Error| ReviewError::std_io(op, p, e);
        let mut out = std::fs::File::from(fd);
        let mut inp = std::fs::File::from(src);
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = inp.read(&mut buf).map_err(io("read upper"))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            out.write_all(&buf[..n]).map_err(io("write"))?;
        }
        if Some(hex(&h.finalize())) != a.sha256 {
            return Err(ReviewError::UpperChanged {
                path: p.to_string(),
                what: "content differs from the card".into(),
            });
        }
        out.sync_all().map_err(io("fsync"))?;
        if let Some((u, g)) = self.owner {
            rustix::fs::fchown(&out, Some(u), Some(g))
                .map_err(|e| ReviewError::io("chown", p, e))?;
        }
        rustix::fs::fchmod(&out, Mode::from_raw_mode(a.mode & 0o777))
            .map_err(|e| ReviewError::io("chmod", p, e))?;
        Ok(())
    }

    fn write_symlink(&mut self, p: &RelPath, a: &Meta) -> Result<(), ReviewError> {
        let target = a.target.as_ref().map(|t| t.0.clone()).unwrap_or_default();
        let dir = self.parent(p)?;
        let (tmp, ()) = self.temp(p, |name| {
            rustix::fs::symlinkat(target.as_slice(), &dir, name)
        })?;
        if let Some((u, g)) = self.owner {
            rustix::fs::chownat(
                &dir,
                tmp.as_slice(),
                Some(u),
                Some(g),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(|e| ReviewError::io("chown", p, e))?;
        }
        self.commit(&dir, &tmp, p)?;
        self.applied.symlinks += 1;
        Ok(())
    }

    fn link(&mut self, target: &RelPath, p: &RelPath) -> Result<(), ReviewError> {
        let (tdir, tname) =
            open_parent(&self.ws, target).map_err(|e| ReviewError::io("open parent", target, e))?;
        let dir = self.parent(p)?;
        let (tmp, ()) = self.temp(p, |name| {
            rustix::fs::linkat(&tdir, tname, &dir, name, AtFlags::empty())
        })?;
        self.commit(&dir, &tmp, p)?;
        self.applied.hard_links += 1;
        Ok(())
    }
}

/// Removes `name` in `dir` and everything below it, never following a symlink.
fn remove_tree(dir: impl AsFd, name: &[u8]) -> Result<(), Errno> {
    let sub = fsutil::open_dir_at(dir.as_fd(), name)?;
    for n in fsutil::list_dir(&sub)? {
        match fsutil::lstat_at(&sub, &n)? {
            Some(st) if fsutil::kind_of(&st) == Some(FileKind::Dir) => remove_tree(&sub, &n)?,
            Some(_) => rustix::fs::unlinkat(&sub, n.as_slice(), AtFlags::empty())?,
            None => {}
        }
    }
    rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR)
}
