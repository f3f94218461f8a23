//! No-follow file-system primitives shared by scan, render and apply.
//!
//! Two ways of resolving, on purpose:
//! - walking (scan): one `openat(O_NOFOLLOW|O_DIRECTORY)` per component from a directory fd we
//!   already hold, and `fstatat(AT_SYMLINK_NOFOLLOW)` for entries; a symlink is never opened;
//! - looking a path up (apply, render, verify): `openat2` with
//!   `RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS|RESOLVE_NO_MAGICLINKS`, one syscall in which the kernel
//!   refuses every symlink, `..` escape and magic link on the way, even if the tree changes
//!   between our check and our use. Final components are then handled with `*at` calls that do not
//!   follow (`O_NOFOLLOW`, `AT_SYMLINK_NOFOLLOW`, `unlinkat`, `renameat`, `linkat` without
//!   `AT_SYMLINK_FOLLOW`).
//!
//! rustix gives all of these without hand-written `unsafe`; cap-std would too, but it hides the
//! exact flags, and we need raw names as bytes, xattrs and `linkat`/`renameat` on our own fds.

use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags, Stat};
use rustix::io::Errno;
use sha2::{Digest, Sha256};

use crate::digest::hex;
use crate::model::{FileKind, Meta};
use crate::path::{ByteString, RelPath};

/// Longest symlink target read.
const MAX_LINK: usize = 4096;

/// Opens a host directory we were handed (upper dir, workspace root).
pub(crate) fn open_root(path: &Path) -> Result<OwnedFd, Errno> {
    rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// Opens the directory `name` in `dir`, refusing a symlink.
pub(crate) fn open_dir_at(dir: impl AsFd, name: &[u8]) -> Result<OwnedFd, Errno> {
    rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// Opens the file `name` in `dir` for reading without following a symlink, without blocking on
/// a fifo and without acquiring a controlling terminal. The caller checks the type with fstat.
pub(crate) fn open_file_at(dir: impl AsFd, name: &[u8]) -> Result<OwnedFd, Errno> {
    rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

const BENEATH: ResolveFlags = ResolveFlags::BENEATH
    .union(ResolveFlags::NO_SYMLINKS)
    .union(ResolveFlags::NO_MAGICLINKS);

/// Opens `rel` under `root` with `openat2(RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS|…)`.
pub(crate) fn open_beneath(root: impl AsFd, rel: &[u8], flags: OFlags) -> Result<OwnedFd, Errno> {
    rustix::fs::openat2(
        root,
        rel,
        flags | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY,
        Mode::empty(),
        BENEATH,
    )
}

/// The directory holding `rel` (opened beneath `root`, or a duplicate of `root` for a
/// top-level entry), and `rel`'s last component.
pub(crate) fn open_parent(root: impl AsFd, rel: &RelPath) -> Result<(OwnedFd, &[u8]), Errno> {
    let dir = match rel.parent() {
        Some(p) => open_beneath(root, p.as_bytes(), OFlags::RDONLY | OFlags::DIRECTORY)?,
        None => rustix::io::fcntl_dupfd_cloexec(root, 0)?,
    };
    Ok((dir, rel.file_name()))
}

/// `fstatat(AT_SYMLINK_NOFOLLOW)`, `None` if the name does not exist.
pub(crate) fn lstat_at(dir: impl AsFd, name: &[u8]) -> Result<Option<Stat>, Errno> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The names in a directory, without `.` and `..`, sorted bytewise.
pub(crate) fn list_dir(dir: impl AsFd) -> Result<Vec<Vec<u8>>, Errno> {
    let mut names = Vec::new();
    for ent in rustix::fs::Dir::read_from(dir)? {
        let ent = ent?;
        let name = ent.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(name.to_vec());
        }
    }
    names.sort();
    Ok(names)
}

/// An xattr's value, `None` if absent or unsupported.
pub(crate) fn xattr(fd: impl AsFd, name: &str) -> Result<Option<Vec<u8>>, Errno> {
    let mut buf = [0u8; 64];
    match rustix::fs::fgetxattr(fd, name, &mut buf[..]) {
        Ok(n) => Ok(Some(buf[..n].to_vec())),
        Err(Errno::NODATA | Errno::OPNOTSUPP) => Ok(None),
        // Longer than any overlay marker: present, but not a value we interpret.
        Err(Errno::RANGE) => Ok(Some(b"?".to_vec())),
        Err(e) => Err(e),
    }
}

/// Whether `fd` carries the overlay xattr `suffix` in either namespace
/// (`trusted.overlay.*`, or `user.overlay.*` for `userxattr` mounts); its value if so.
pub(crate) fn overlay_xattr(fd: impl AsFd, suffix: &str) -> Result<Option<Vec<u8>>, Errno> {
    if let Some(v) = xattr(fd.as_fd(), &format!("trusted.overlay.{suffix}"))? {
        return Ok(Some(v));
    }
    xattr(fd, &format!("user.overlay.{suffix}"))
}

/// The kind of a stat, or `None` for special files.
pub(crate) fn kind_of(st: &Stat) -> Option<FileKind> {
    match FileType::from_raw_mode(st.st_mode as _) {
        FileType::RegularFile => Some(FileKind::File),
        FileType::Directory => Some(FileKind::Dir),
        FileType::Symlink => Some(FileKind::Symlink),
        _ => None,
    }
}

/// Permission bits of a stat, including setuid/setgid/sticky.
pub(crate) fn perm(st: &Stat) -> u32 {
    st.st_mode & 0o7777
}

/// Whether two stats are the same inode.
pub(crate) fn same_inode(a: &Stat, b: &Stat) -> bool {
    a.st_dev == b.st_dev && a.st_ino == b.st_ino
}

/// Hex SHA-256 and length of everything readable from `fd`.
pub(crate) fn hash_fd(fd: OwnedFd) -> std::io::Result<(String, u64)> {
    let mut f = std::fs::File::from(fd);
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut n_total = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        n_total += n as u64;
    }
    Ok((hex(&h.finalize()), n_total))
}

/// Reads a symlink's target.
pub(crate) fn readlink_at(dir: impl AsFd, name: &[u8]) -> Result<Vec<u8>, Errno> {
    let t = rustix::fs::readlinkat(dir, name, Vec::with_capacity(256))?;
    let t = t.into_bytes();
    if t.len() > MAX_LINK {
        return Err(Errno::NAMETOOLONG);
    }
    Ok(t)
}

/// The [`Meta`] of `name` in `dir`, whose `lstat` is `st` (file, dir or symlink; `None` for
/// anything else). A file is opened without following and re-checked to be the same inode
/// before it is hashed.
pub(crate) fn meta_at(dir: impl AsFd, name: &[u8], st: &Stat) -> std::io::Result<Option<Meta>> {
    let Some(kind) = kind_of(st) else {
        return Ok(None);
    };
    let mut m = Meta {
        kind,
        mode: perm(st),
        size: 0,
        sha256: None,
        target: None,
    };
    match kind {
        FileKind::Dir => {}
        FileKind::Symlink => {
            let t = readlink_at(dir, name)?;
            m.size = t.len() as u64;
            m.target = Some(ByteString(t));
        }
        FileKind::File => {
            let fd = open_file_at(dir, name)?;
            let (hash, size) = hash_checked(fd, st)?;
            m.size = size;
            m.sha256 = Some(hash);
        }
    }
    Ok(Some(m))
}

/// Hashes an open file after checking it is still the regular file `st` described.
pub(crate) fn hash_checked(fd: OwnedFd, st: &Stat) -> std::io::Result<(String, u64)> {
    let st2 = rustix::fs::fstat(&fd)?;
    if !same_inode(st, &st2) || kind_of(&st2) != Some(FileKind::File) {
        return Err(std::io::Error::other("file replaced while being read"));
    }
    hash_fd(fd)
}
