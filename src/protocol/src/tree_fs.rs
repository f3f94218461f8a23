//! Reading a directory into a tree stream ([`walk`]) and writing a tree stream into a directory
//! ([`TreeWriter`]), shared by both ends of a microVM review: the host reads the workspace and
//! the guest writes it as the overlay's lower dir; the guest reads its overlay's upper dir and
//! the host writes it where the Diff Card is made from.
//!
//! Neither side follows a symbolic link. [`walk`] opens each directory with
//! `openat(O_NOFOLLOW|O_DIRECTORY)` from a descriptor it holds, `lstat`s entries and opens files
//! `O_NOFOLLOW|O_NONBLOCK`, checking with `fstat` that it reads the inode it stat'ed.
//! [`TreeWriter`] takes a stream as hostile: every path is checked
//! ([`crate::tree::check_path`]), every parent resolved with
//! `openat2(RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS|RESOLVE_NO_MAGICLINKS|RESOLVE_NO_XDEV)` from the
//! root it was given, every final component created with a non-following `*at` call that fails
//! if the name exists (`O_CREAT|O_EXCL|O_NOFOLLOW`, `mkdirat`, `symlinkat`, `mknodat`, `linkat`
//! without `AT_SYMLINK_FOLLOW`); entries, file bytes, path bytes and depth are capped. It only
//! creates regular files, directories, symbolic links (as links), and — for an overlay layer —
//! whiteouts (character device 0:0), opaque markers (`trusted.overlay.opaque`, else
//! `user.overlay.opaque`, = `y`) and hard links between its own files. A fifo, socket or device
//! is refused, never created.
//!
//! Everything here is blocking: async callers use `spawn_blocking`.

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags, Stat, XattrFlags};
use rustix::io::Errno;

use crate::tree::{
    Mtime, SpecialKind, TreeDecoder, TreeEntry, TreeError, TreeEvent, depth, encode_entry, show,
    split_path,
};

/// What a tree is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TreeKind {
    /// A plain tree (a workspace): fifos, sockets and devices are skipped by [`walk`] and
    /// refused by [`TreeWriter`]; no whiteouts, opaque markers or hard links.
    Plain,
    /// An overlay upper layer: a character device 0:0 is a whiteout, `trusted.overlay.opaque`
    /// = `y` marks an opaque directory, several names of one file are hard links; a fifo,
    /// socket or other device is described ([`TreeEntry::Special`]) by [`walk`] and refused by
    /// [`TreeWriter`].
    Layer,
}

/// Bounds of a tree read or written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TreeLimits {
    pub max_entries: u64,
    /// Bytes of regular-file content in all.
    pub max_file_bytes: u64,
    /// Deepest nesting (components).
    pub max_depth: usize,
    /// Bytes of paths in all (what a writer keeps in memory is bounded by it).
    pub max_path_bytes: u64,
}

impl TreeLimits {
    /// The scan's own bounds (`luminaguard-review`'s default `Limits`: 100,000 entries, depth
    /// 128), with `max_file_bytes` of content and 64 MiB of paths.
    pub fn new(max_file_bytes: u64) -> Self {
        Self {
            max_entries: 100_000,
            max_file_bytes,
            max_depth: 128,
            max_path_bytes: 64 << 20,
        }
    }
}

/// Why reading or writing a tree failed.
#[derive(Debug, thiserror::Error)]
pub enum TreeFsError {
    /// A system call failed on `path` (relative to the tree's root; empty: the root).
    #[error("cannot {op} {:?}: {errno}", show(path))]
    Io {
        op: &'static str,
        path: Vec<u8>,
        errno: Errno,
    },
    /// The tree is over one of its limits.
    #[error("the tree holds more than {limit} {what}")]
    TooLarge { what: &'static str, limit: u64 },
    /// The stream is malformed or holds an invalid entry.
    #[error(transparent)]
    Stream(#[from] TreeError),
    /// An entry this kind of tree may not hold.
    #[error("{:?}: {why}", show(path))]
    Refused { path: Vec<u8>, why: String },
    /// A fifo, socket or device: never created.
    #[error(
        "{:?} is {kind}: a fifo, socket or device is never carried over",
        show(path)
    )]
    Special { path: Vec<u8>, kind: SpecialKind },
    /// A file changed (shrank, or was replaced) while it was being read.
    #[error("{:?} changed while it was being read", show(path))]
    Changed { path: Vec<u8> },
    /// The receiver of the stream went away.
    #[error("sending the tree: {0}")]
    Send(String),
}

fn io<'a>(op: &'static str, path: &'a [u8]) -> impl FnOnce(Errno) -> TreeFsError + 'a {
    move |errno| TreeFsError::Io {
        op,
        path: path.to_vec(),
        errno,
    }
}

/// What [`walk`] sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WalkReport {
    pub entries: u64,
    pub file_bytes: u64,
    /// Fifos, sockets and devices of a [`TreeKind::Plain`] tree that were not sent (the first
    /// 100), and how many there were in all.
    pub skipped: Vec<(Vec<u8>, SpecialKind)>,
    pub skipped_count: u64,
}

const MAX_SKIPPED_SHOWN: usize = 100;

const OPAQUE_TRUSTED: &str = "trusted.overlay.opaque";
const OPAQUE_USER: &str = "user.overlay.opaque";

/// `fstatat(AT_SYMLINK_NOFOLLOW)`, `None` if the name is gone.
fn lstat_at(dir: impl AsFd, name: &[u8]) -> Result<Option<Stat>, Errno> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

fn open_dir_at(dir: impl AsFd, name: &[u8]) -> Result<OwnedFd, Errno> {
    rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// The names in a directory, without `.` and `..`, sorted bytewise.
fn list_dir(dir: impl AsFd) -> Result<Vec<Vec<u8>>, Errno> {
    let mut names = Vec::new();
    for ent in rustix::fs::Dir::read_from(dir)? {
        let name = ent?.file_name().to_bytes().to_vec();
        if name != b"." && name != b".." {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

#[allow(clippy::unnecessary_cast)] // the field types differ between architectures
fn special_kind(st: &Stat) -> Option<SpecialKind> {
    let dev = st.st_rdev as u64;
    let (major, minor) = (rustix::fs::major(dev as _), rustix::fs::minor(dev as _));
    Some(match FileType::from_raw_mode(st.st_mode as _) {
        FileType::Fifo => SpecialKind::Fifo,
        FileType::Socket => SpecialKind::Socket,
        FileType::CharacterDevice => SpecialKind::CharDevice { major, minor },
        FileType::BlockDevice => SpecialKind::BlockDevice { major, minor },
        _ => return None,
    })
}

#[allow(clippy::unnecessary_cast)] // the field types differ between architectures
fn inode_key(st: &Stat) -> (u64, u64) {
    (st.st_dev as u64, st.st_ino as u64)
}

/// Reads the tree under `root` (a directory descriptor) as a stream, handing it to `emit` in
/// pieces of at most `chunk` bytes (a file's content is read straight into them). Entries come
/// in a pre-order walk, names sorted bytewise; the last is [`TreeEntry::End`].
pub fn walk(
    root: &OwnedFd,
    kind: TreeKind,
    limits: &TreeLimits,
    chunk: usize,
    emit: &mut dyn FnMut(Vec<u8>) -> Result<(), TreeFsError>,
) -> Result<WalkReport, TreeFsError> {
    let chunk = chunk.max(MIN_CHUNK);
    let mut w = Walker {
        kind,
        limits,
        chunk,
        out: Vec::with_capacity(chunk),
        emit,
        report: WalkReport::default(),
        links: std::collections::HashMap::new(),
    };
    w.dir(root, None)?;
    let end = TreeEntry::End {
        entries: w.report.entries,
        file_bytes: w.report.file_bytes,
    };
    w.record(&end)?;
    if !w.out.is_empty() {
        let last = std::mem::take(&mut w.out);
        (w.emit)(last)?;
    }
    Ok(w.report)
}

/// A piece holds at least one whole record.
const MIN_CHUNK: usize = crate::tree::MAX_RECORD_LEN + 4;

struct Walker<'a> {
    kind: TreeKind,
    limits: &'a TreeLimits,
    chunk: usize,
    out: Vec<u8>,
    emit: &'a mut dyn FnMut(Vec<u8>) -> Result<(), TreeFsError>,
    report: WalkReport,
    /// Files with more than one link seen so far (a [`TreeKind::Layer`]), by (dev, ino).
    links: std::collections::HashMap<(u64, u64), Vec<u8>>,
}

impl Walker<'_> {
    /// Hands the current piece over when `need` more bytes would not fit.
    fn make_room(&mut self, need: usize) -> Result<(), TreeFsError> {
        if !self.out.is_empty() && self.out.len() + need > self.chunk {
            let full = std::mem::replace(&mut self.out, Vec::with_capacity(self.chunk));
            (self.emit)(full)?;
        }
        Ok(())
    }

    fn record(&mut self, e: &TreeEntry) -> Result<(), TreeFsError> {
        let mut rec = Vec::new();
        encode_entry(e, &mut rec)?;
        self.make_room(rec.len())?;
        self.out.extend_from_slice(&rec);
        Ok(())
    }

    fn count(&mut self, path: &[u8]) -> Result<(), TreeFsError> {
        self.report.entries += 1;
        if self.report.entries > self.limits.max_entries {
            return Err(TreeFsError::TooLarge {
                what: "entries",
                limit: self.limits.max_entries,
            });
        }
        if depth(path) > self.limits.max_depth {
            return Err(TreeFsError::TooLarge {
                what: "levels of directories",
                limit: self.limits.max_depth as u64,
            });
        }
        Ok(())
    }

    fn dir(&mut self, fd: &OwnedFd, prefix: Option<&[u8]>) -> Result<(), TreeFsError> {
        let here = prefix.unwrap_or_default();
        let names = list_dir(fd).map_err(io("list", here))?;
        for name in names {
            let path = match prefix {
                Some(p) => [p, b"/", &name].concat(),
                None => name.clone(),
            };
            let Some(st) = lstat_at(fd, &name).map_err(io("stat", &path))? else {
                continue; // gone since the listing
            };
            let mode = st.st_mode & 0o7777;
            match FileType::from_raw_mode(st.st_mode as _) {
                FileType::Directory => {
                    self.count(&path)?;
                    let sub = open_dir_at(fd, &name).map_err(io("open", &path))?;
                    let opaque = self.kind == TreeKind::Layer
                        && xattr(&sub, OPAQUE_TRUSTED)
                            .map_err(io("read the xattrs of", &path))?
                            .as_deref()
                            == Some(b"y");
                    self.record(&TreeEntry::Dir {
                        path: path.clone(),
                        mode,
                        opaque,
                    })?;
                    self.dir(&sub, Some(&path))?;
                }
                FileType::RegularFile => {
                    self.count(&path)?;
                    self.file(fd, &name, path, &st)?;
                }
                FileType::Symlink => {
                    self.count(&path)?;
                    let target = rustix::fs::readlinkat(fd, name.as_slice(), Vec::new())
                        .map_err(io("read the link", &path))?
                        .into_bytes();
                    self.record(&TreeEntry::Symlink { path, target })?;
                }
                FileType::CharacterDevice if self.kind == TreeKind::Layer && st.st_rdev == 0 => {
                    self.count(&path)?;
                    self.record(&TreeEntry::Whiteout { path })?;
                }
                _ => {
                    let Some(kind) = special_kind(&st) else {
                        continue;
                    };
                    match self.kind {
                        TreeKind::Layer => {
                            self.count(&path)?;
                            self.record(&TreeEntry::Special { path, kind })?;
                        }
                        TreeKind::Plain => {
                            self.report.skipped_count += 1;
                            if self.report.skipped.len() < MAX_SKIPPED_SHOWN {
                                self.report.skipped.push((path, kind));
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn file(
        &mut self,
        dir: &OwnedFd,
        name: &[u8],
        path: Vec<u8>,
        st: &Stat,
    ) -> Result<(), TreeFsError> {
        let fd = rustix::fs::openat(
            dir,
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(io("open", &path))?;
        let st2 = rustix::fs::fstat(&fd).map_err(io("stat", &path))?;
        if inode_key(st) != inode_key(&st2)
            || FileType::from_raw_mode(st2.st_mode as _) != FileType::RegularFile
        {
            return Err(TreeFsError::Changed { path });
        }
        if self.kind == TreeKind::Layer && st2.st_nlink > 1 {
            let key = inode_key(&st2);
            if let Some(to) = self.links.get(&key) {
                let to = to.clone();
                return self.record(&TreeEntry::HardLink { path, to });
            }
            self.links.insert(key, path.clone());
        }
        let size = u64::try_from(st2.st_size).unwrap_or(0);
        self.report.file_bytes = self.report.file_bytes.saturating_add(size);
        if self.report.file_bytes > self.limits.max_file_bytes {
            return Err(TreeFsError::TooLarge {
                what: "bytes of file content",
                limit: self.limits.max_file_bytes,
            });
        }
        self.record(&TreeEntry::File {
            path: path.clone(),
            mode: st2.st_mode & 0o7777,
            size,
            mtime: Some(Mtime {
                secs: st2.st_mtime as i64,
                nanos: u32::try_from(st2.st_mtime_nsec).unwrap_or(0),
            }),
        })?;
        let mut file = std::fs::File::from(fd);
        let mut left = size;
        while left > 0 {
            if self.out.len() >= self.chunk {
                self.make_room(1)?;
            }
            let room =
                (self.chunk - self.out.len()).min(usize::try_from(left).unwrap_or(usize::MAX));
            let start = self.out.len();
            self.out.resize(start + room, 0);
            let n = loop {
                match file.read(&mut self.out[start..]) {
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    other => break other,
                }
            };
            let n = match n {
                Ok(n) => n,
                Err(e) => {
                    return Err(TreeFsError::Io {
                        op: "read",
                        path,
                        errno: Errno::from_io_error(&e).unwrap_or(Errno::IO),
                    });
                }
            };
            self.out.truncate(start + n);
            if n == 0 {
                // It shrank: the stream promised `size` bytes.
                return Err(TreeFsError::Changed { path });
            }
            left -= n as u64;
        }
        Ok(())
    }
}

/// An xattr's value, `None` if absent or unsupported.
fn xattr(fd: impl AsFd, name: &str) -> Result<Option<Vec<u8>>, Errno> {
    let mut buf = [0u8; 64];
    match rustix::fs::fgetxattr(fd, name, &mut buf[..]) {
        Ok(n) => Ok(Some(buf[..n].to_vec())),
        Err(Errno::NODATA | Errno::OPNOTSUPP) => Ok(None),
        // Longer than any marker: present, but not one we interpret.
        Err(Errno::RANGE) => Ok(Some(b"?".to_vec())),
        Err(e) => Err(e),
    }
}

const BENEATH: ResolveFlags = ResolveFlags::BENEATH
    .union(ResolveFlags::NO_SYMLINKS)
    .union(ResolveFlags::NO_MAGICLINKS)
    .union(ResolveFlags::NO_XDEV);

fn open_beneath(root: impl AsFd, rel: &[u8]) -> Result<OwnedFd, Errno> {
    loop {
        match rustix::fs::openat2(
            root.as_fd(),
            rel,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
            BENEATH,
        ) {
            Err(Errno::INTR | Errno::AGAIN) => continue,
            other => return other,
        }
    }
}

/// What a [`TreeWriter`] wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteReport {
    pub entries: u64,
    pub file_bytes: u64,
}

/// Writes a tree stream into a directory (see the module documentation): [`TreeWriter::feed`]
/// the stream's bytes as they arrive, then [`TreeWriter::finish`]. On an error the caller
/// removes what was written ([`remove_tree`]).
#[derive(Debug)]
pub struct TreeWriter {
    root: OwnedFd,
    kind: TreeKind,
    limits: TreeLimits,
    decoder: TreeDecoder,
    /// The directory the last entry was created in, and its path.
    parent: Option<(Vec<u8>, OwnedFd)>,
    /// The file being written: its path, descriptor, mode and time.
    current: Option<(Vec<u8>, std::fs::File, u32, Option<Mtime>)>,
    /// Directories' final modes, set at the end (deepest first).
    dir_modes: Vec<(Vec<u8>, u32)>,
    report: WriteReport,
    path_bytes: u64,
    ended: bool,
}

impl TreeWriter {
    /// Writes under `root`, a directory descriptor (which should be empty).
    pub fn new(root: OwnedFd, kind: TreeKind, limits: TreeLimits) -> Self {
        Self {
            root,
            kind,
            limits,
            decoder: TreeDecoder::new(),
            parent: None,
            current: None,
            dir_modes: Vec::new(),
            report: WriteReport::default(),
            path_bytes: 0,
            ended: false,
        }
    }

    /// The next bytes of the stream.
    pub fn feed(&mut self, data: &[u8]) -> Result<(), TreeFsError> {
        self.decoder.push(data)?;
        while let Some(ev) = self.decoder.next_event()? {
            match ev {
                TreeEvent::Entry(e) => self.entry(e)?,
                TreeEvent::Data(d) => {
                    if let Some((path, file, ..)) = &mut self.current {
                        file.write_all(&d).map_err(|e| TreeFsError::Io {
                            op: "write",
                            path: path.clone(),
                            errno: Errno::from_io_error(&e).unwrap_or(Errno::IO),
                        })?;
                    }
                }
                TreeEvent::FileEnd => {
                    if let Some((path, file, mode, mtime)) = self.current.take() {
                        rustix::fs::fchmod(&file, Mode::from_raw_mode(mode))
                            .map_err(io("chmod", &path))?;
                        if let Some(t) = mtime {
                            let ts = rustix::fs::Timespec {
                                tv_sec: t.secs,
                                tv_nsec: i64::from(t.nanos.min(999_999_999)) as _,
                            };
                            let times = rustix::fs::Timestamps {
                                last_access: ts,
                                last_modification: ts,
                            };
                            rustix::fs::futimens(&file, &times)
                                .map_err(io("set the time of", &path))?;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// The stream is over: it must have ended with its `End` record. Sets directories' modes.
    pub fn finish(mut self) -> Result<WriteReport, TreeFsError> {
        self.decoder.finish()?;
        if !self.ended {
            return Err(TreeError::Truncated.into());
        }
        self.parent = None;
        self.dir_modes
            .sort_by_key(|(p, _)| std::cmp::Reverse(depth(p)));
        for (path, mode) in &self.dir_modes {
            let fd = open_beneath(&self.root, path).map_err(io("open", path))?;
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(*mode)).map_err(io("chmod", path))?;
        }
        Ok(self.report)
    }

    fn refuse(path: &[u8], why: impl Into<String>) -> TreeFsError {
        TreeFsError::Refused {
            path: path.to_vec(),
            why: why.into(),
        }
    }

    fn count(&mut self, path: &[u8]) -> Result<(), TreeFsError> {
        self.report.entries += 1;
        self.path_bytes += path.len() as u64;
        let over = |what, limit| Err(TreeFsError::TooLarge { what, limit });
        if self.report.entries > self.limits.max_entries {
            return over("entries", self.limits.max_entries);
        }
        if self.path_bytes > self.limits.max_path_bytes {
            return over("bytes of paths", self.limits.max_path_bytes);
        }
        if depth(path) > self.limits.max_depth {
            return over("levels of directories", self.limits.max_depth as u64);
        }
        Ok(())
    }

    /// The directory `path` is created in (resolved beneath the root, no link on the way),
    /// and its last component.
    fn parent_of<'p>(&mut self, path: &'p [u8]) -> Result<(&OwnedFd, &'p [u8]), TreeFsError> {
        let (parent, name) = split_path(path);
        let parent = parent.unwrap_or_default();
        let cached = matches!(&self.parent, Some((p, _)) if p == parent);
        if !cached {
            let fd = if parent.is_empty() {
                rustix::io::fcntl_dupfd_cloexec(&self.root, 0).map_err(io("open", b""))?
            } else {
                open_beneath(&self.root, parent).map_err(|e| match e {
                    Errno::LOOP | Errno::XDEV | Errno::NOTDIR | Errno::NOENT => Self::refuse(
                        path,
                        "its parent is not a directory made earlier in the stream",
                    ),
                    e => io("open the parent of", path)(e),
                })?
            };
            self.parent = Some((parent.to_vec(), fd));
        }
        match &self.parent {
            Some((_, fd)) => Ok((fd, name)),
            None => Err(io("open the parent of", path)(Errno::NOENT)),
        }
    }

    fn entry(&mut self, e: TreeEntry) -> Result<(), TreeFsError> {
        if self.ended {
            return Err(TreeError::TrailingData.into());
        }
        if let TreeEntry::End {
            entries,
            file_bytes,
        } = e
        {
            if (entries, file_bytes) != (self.report.entries, self.report.file_bytes) {
                return Err(Self::refuse(
                    b"",
                    format!(
                        "the stream's end says {entries} entries and {file_bytes} bytes, but it \
                         held {} and {}",
                        self.report.entries, self.report.file_bytes
                    ),
                ));
            }
            self.ended = true;
            return Ok(());
        }
        let layer = self.kind == TreeKind::Layer;
        let path = e.path().unwrap_or_default().to_vec();
        self.count(&path)?;
        match e {
            TreeEntry::Dir { mode, opaque, .. } => {
                if opaque && !layer {
                    return Err(Self::refuse(
                        &path,
                        "an opaque marker outside an overlay layer",
                    ));
                }
                let (dir, name) = self.parent_of(&path)?;
                rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(0o700))
                    .map_err(io("create the directory", &path))?;
                if opaque {
                    let fd = open_dir_at(dir, name).map_err(io("open", &path))?;
                    set_opaque(&fd).map_err(io("mark opaque", &path))?;
                }
                if mode != 0o700 {
                    self.dir_modes.push((path, mode));
                }
            }
            TreeEntry::File {
                mode, size, mtime, ..
            } => {
                self.report.file_bytes = self.report.file_bytes.saturating_add(size);
                if self.report.file_bytes > self.limits.max_file_bytes {
                    return Err(TreeFsError::TooLarge {
                        what: "bytes of file content",
                        limit: self.limits.max_file_bytes,
                    });
                }
                let (dir, name) = self.parent_of(&path)?;
                let fd = rustix::fs::openat(
                    dir,
                    name,
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::NOCTTY
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(io("create", &path))?;
                self.current = Some((path, std::fs::File::from(fd), mode, mtime));
            }
            TreeEntry::Symlink { target, .. } => {
                let (dir, name) = self.parent_of(&path)?;
                rustix::fs::symlinkat(target.as_slice(), dir, name)
                    .map_err(io("create the link", &path))?;
            }
            TreeEntry::HardLink { to, .. } => {
                if !layer {
                    return Err(Self::refuse(&path, "a hard link outside an overlay layer"));
                }
                let (to_parent, to_name) = split_path(&to);
                let from_dir = match to_parent {
                    Some(p) => open_beneath(&self.root, p).map_err(|_| {
                        Self::refuse(&path, "a hard link to a file not sent before it")
                    })?,
                    None => {
                        rustix::io::fcntl_dupfd_cloexec(&self.root, 0).map_err(io("open", b""))?
                    }
                };
                let target = lstat_at(&from_dir, to_name).map_err(io("stat", &to))?;
                if !target.is_some_and(|st| {
                    FileType::from_raw_mode(st.st_mode as _) == FileType::RegularFile
                }) {
                    return Err(Self::refuse(
                        &path,
                        "a hard link to a file not sent before it",
                    ));
                }
                let (dir, name) = self.parent_of(&path)?;
                rustix::fs::linkat(&from_dir, to_name, dir, name, AtFlags::empty())
                    .map_err(io("create the hard link", &path))?;
            }
            TreeEntry::Whiteout { .. } => {
                if !layer {
                    return Err(Self::refuse(&path, "a whiteout outside an overlay layer"));
                }
                let (dir, name) = self.parent_of(&path)?;
                rustix::fs::mknodat(dir, name, FileType::CharacterDevice, Mode::empty(), 0)
                    .map_err(io("create the whiteout (a character device 0:0)", &path))?;
            }
            TreeEntry::Special { kind, .. } => return Err(TreeFsError::Special { path, kind }),
            TreeEntry::End { .. } => {}
        }
        Ok(())
    }
}

/// Marks a directory opaque: `trusted.overlay.opaque` where we may write it, else
/// `user.overlay.opaque` (both are what `luminaguard-review`'s scan reads).
fn set_opaque(fd: &OwnedFd) -> Result<(), Errno> {
    match rustix::fs::fsetxattr(fd, OPAQUE_TRUSTED, b"y", XattrFlags::empty()) {
        Ok(()) => Ok(()),
        Err(Errno::PERM | Errno::ACCESS | Errno::OPNOTSUPP) => {
            rustix::fs::fsetxattr(fd, OPAQUE_USER, b"y", XattrFlags::empty())
        }
        Err(e) => Err(e),
    }
}

/// Removes `name` in `parent` and, for a directory, everything under it, never following a
/// link.
pub fn remove_tree(parent: &OwnedFd, name: &[u8]) -> Result<(), Errno> {
    let Some(st) = lstat_at(parent, name)? else {
        return Ok(());
    };
    if FileType::from_raw_mode(st.st_mode as _) == FileType::Directory {
        let fd = open_dir_at(parent, name)?;
        for child in list_dir(&fd)? {
            remove_tree(&fd, &child)?;
        }
        rustix::fs::unlinkat(parent, name, AtFlags::REMOVEDIR)
    } else {
        rustix::fs::unlinkat(parent, name, AtFlags::empty())
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods, clippy::type_complexity)] // blocking test code
mod tests {
    use std::collections::BTreeMap;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::path::Path;

    use super::*;

    fn open(p: &Path) -> OwnedFd {
        rustix::fs::open(
            p,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .unwrap()
    }

    fn read_tree(root: &Path, kind: TreeKind, limits: TreeLimits) -> (Vec<u8>, WalkReport) {
        let mut out = Vec::new();
        let report = walk(&open(root), kind, &limits, 0, &mut |c| {
            out.extend_from_slice(&c);
            Ok(())
        })
        .unwrap();
        (out, report)
    }

    fn write_tree(
        stream: &[u8],
        kind: TreeKind,
        to: &Path,
        piece: usize,
    ) -> Result<WriteReport, TreeFsError> {
        let mut w = TreeWriter::new(open(to), kind, TreeLimits::new(1 << 20));
        for c in stream.chunks(piece) {
            w.feed(c)?;
        }
        w.finish()
    }

    /// Kind, mode, content or target, link count of every entry.
    fn listing(root: &Path) -> BTreeMap<String, (String, u32, Vec<u8>, u64)> {
        fn go(root: &Path, p: &Path, out: &mut BTreeMap<String, (String, u32, Vec<u8>, u64)>) {
            for e in std::fs::read_dir(p).unwrap() {
                let p = e.unwrap().path();
                let m = p.symlink_metadata().unwrap();
                let rel = p.strip_prefix(root).unwrap().display().to_string();
                let ft = m.file_type();
                let (kind, body) = if ft.is_symlink() {
                    (
                        "link",
                        std::fs::read_link(&p)
                            .unwrap()
                            .into_os_string()
                            .into_encoded_bytes(),
                    )
                } else if ft.is_dir() {
                    ("dir", Vec::new())
                } else if ft.is_file() {
                    ("file", std::fs::read(&p).unwrap())
                } else {
                    ("other", m.rdev().to_le_bytes().to_vec())
                };
                out.insert(
                    rel,
                    (
                        kind.into(),
                        m.mode() & 0o7777,
                        body,
                        if ft.is_file() { m.nlink() } else { 0 },
                    ),
                );
                if ft.is_dir() {
                    go(root, &p, out);
                }
            }
        }
        let mut out = BTreeMap::new();
        go(root, root, &mut out);
        out
    }

    fn stream(entries: &[(TreeEntry, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (e, data) in entries {
            encode_entry(e, &mut out).unwrap();
            out.extend_from_slice(data);
        }
        out
    }

    fn end(entries: u64, file_bytes: u64) -> (TreeEntry, &'static [u8]) {
        (
            TreeEntry::End {
                entries,
                file_bytes,
            },
            b"",
        )
    }

    #[test]
    fn a_tree_walked_and_written_is_the_same_tree_and_specials_are_skipped() {
        let src = tempfile::tempdir().unwrap();
        let s = src.path();
        std::fs::create_dir_all(s.join("d/e/f")).unwrap();
        std::fs::write(s.join("d/a.txt"), "hello\n").unwrap();
        std::fs::write(s.join("big"), vec![7u8; 3 << 20]).unwrap();
        std::fs::write(s.join("new\nline"), "x").unwrap();
        std::fs::set_permissions(s.join("d/a.txt"), std::fs::Permissions::from_mode(0o751))
            .unwrap();
        std::fs::set_permissions(s.join("d/e"), std::fs::Permissions::from_mode(0o555)).unwrap();
        std::os::unix::fs::symlink("/etc", s.join("evil")).unwrap();
        std::os::unix::fs::symlink("a.txt", s.join("d/rel")).unwrap();
        nix::unistd::mkfifo(
            &s.join("fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .ok();
        let (bytes, report) = read_tree(s, TreeKind::Plain, TreeLimits::new(u64::MAX));
        assert_eq!(report.file_bytes, 6 + (3 << 20) + 1);
        assert_eq!(report.skipped_count, 1, "{report:?}");
        assert_eq!(report.skipped[0], (b"fifo".to_vec(), SpecialKind::Fifo));
        for piece in [1 << 20, 4096, 7] {
            let dst = tempfile::tempdir().unwrap();
            let w =
                write_tree_limited(&bytes, TreeKind::Plain, dst.path(), piece, u64::MAX).unwrap();
            assert_eq!(w.entries, report.entries);
            let mut want = listing(s);
            want.remove("fifo");
            assert_eq!(listing(dst.path()), want);
        }
        // The cap on content is checked before anything is sent past it.
        let mut sent = 0;
        let e = walk(
            &open(s),
            TreeKind::Plain,
            &TreeLimits::new(1 << 20),
            0,
            &mut |c| {
                sent += c.len();
                Ok(())
            },
        )
        .unwrap_err();
        assert!(
            matches!(
                e,
                TreeFsError::TooLarge {
                    what: "bytes of file content",
                    ..
                }
            ),
            "{e}"
        );
        assert!(sent < 1 << 20, "{sent}");
    }

    fn write_tree_limited(
        stream: &[u8],
        kind: TreeKind,
        to: &Path,
        piece: usize,
        max: u64,
    ) -> Result<WriteReport, TreeFsError> {
        let mut w = TreeWriter::new(open(to), kind, TreeLimits::new(max));
        for c in stream.chunks(piece) {
            w.feed(c)?;
        }
        w.finish()
    }

    #[test]
    fn a_layer_keeps_whiteouts_opaque_dirs_and_hard_links() {
        let src = tempfile::tempdir().unwrap();
        let s = src.path();
        std::fs::create_dir(s.join("opaque")).unwrap();
        rustix::fs::setxattr(
            s.join("opaque").as_path(),
            OPAQUE_TRUSTED,
            b"y",
            XattrFlags::empty(),
        )
        .unwrap();
        std::fs::write(s.join("opaque/kept"), "k").unwrap();
        std::fs::write(s.join("one"), "same inode").unwrap();
        std::fs::hard_link(s.join("one"), s.join("two")).unwrap();
        nix::sys::stat::mknod(
            &s.join("gone"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::empty(),
            0,
        )
        .unwrap();
        let (bytes, _) = read_tree(s, TreeKind::Layer, TreeLimits::new(u64::MAX));
        let dst = tempfile::tempdir().unwrap();
        write_tree(&bytes, TreeKind::Layer, dst.path(), 5).unwrap();
        assert_eq!(listing(dst.path()), listing(s));
        assert_eq!(
            xattr(open(&dst.path().join("opaque")), OPAQUE_TRUSTED)
                .unwrap()
                .as_deref(),
            Some(&b"y"[..])
        );
        // A plain tree takes none of these.
        let plain = tempfile::tempdir().unwrap();
        let e = write_tree(&bytes, TreeKind::Plain, plain.path(), 1 << 20).unwrap_err();
        assert!(matches!(e, TreeFsError::Refused { .. }), "{e}");
        // A layer's fifo is described, and refused by the writer.
        nix::unistd::mkfifo(
            &s.join("pipe"),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        let (bytes, _) = read_tree(s, TreeKind::Layer, TreeLimits::new(u64::MAX));
        let dst = tempfile::tempdir().unwrap();
        let e = write_tree(&bytes, TreeKind::Layer, dst.path(), 1 << 20).unwrap_err();
        assert!(
            matches!(&e, TreeFsError::Special { path, kind: SpecialKind::Fifo } if path == b"pipe"),
            "{e}"
        );
    }

    /// A hostile stream writes nothing outside the directory it is written into.
    #[test]
    fn a_hostile_stream_cannot_write_outside_its_root() {
        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("victim");
        std::fs::create_dir(&victim).unwrap();
        let v = victim.to_str().unwrap().as_bytes().to_vec();
        let file = |path: &[u8], data: &'static [u8]| {
            (
                TreeEntry::File {
                    path: path.to_vec(),
                    mode: 0o644,
                    size: data.len() as u64,
                    mtime: None,
                },
                data,
            )
        };
        let link = |path: &[u8], target: &[u8]| {
            (
                TreeEntry::Symlink {
                    path: path.to_vec(),
                    target: target.to_vec(),
                },
                &b""[..],
            )
        };
        let dir = |path: &[u8]| {
            (
                TreeEntry::Dir {
                    path: path.to_vec(),
                    mode: 0o755,
                    opaque: false,
                },
                &b""[..],
            )
        };
        let cases: Vec<(&str, Vec<(TreeEntry, &[u8])>)> = vec![
            (
                "a file under a symlink to outside",
                vec![link(b"evil", &v), file(b"evil/planted", b"x"), end(2, 1)],
            ),
            (
                "a file under a symlinked dir inside",
                vec![
                    dir(b"d"),
                    link(b"d/up", b".."),
                    file(b"d/up/x", b"x"),
                    end(3, 1),
                ],
            ),
            (
                "a dir under a symlink",
                vec![link(b"evil", &v), dir(b"evil/sub"), end(2, 0)],
            ),
            (
                "a whiteout under a symlink",
                vec![
                    link(b"evil", &v),
                    (
                        TreeEntry::Whiteout {
                            path: b"evil/w".to_vec(),
                        },
                        b"",
                    ),
                    end(2, 0),
                ],
            ),
            (
                "a hard link to a symlink",
                vec![
                    link(b"evil", &v),
                    (
                        TreeEntry::HardLink {
                            path: b"h".to_vec(),
                            to: b"evil".to_vec(),
                        },
                        b"",
                    ),
                    end(2, 0),
                ],
            ),
            (
                "a hard link to a file never sent",
                vec![
                    (
                        TreeEntry::HardLink {
                            path: b"h".to_vec(),
                            to: b"nothere".to_vec(),
                        },
                        b"",
                    ),
                    end(1, 0),
                ],
            ),
            (
                "the same name twice",
                vec![file(b"a", b"1"), link(b"a", &v), end(2, 1)],
            ),
            (
                "a file over the cap",
                vec![file(b"big", b"0123456789"), end(1, 10)],
            ),
            ("an end that disagrees", vec![file(b"a", b"1"), end(5, 1)]),
            ("no end", vec![file(b"a", b"1")]),
            (
                "a device",
                vec![
                    (
                        TreeEntry::Special {
                            path: b"mem".to_vec(),
                            kind: SpecialKind::CharDevice { major: 1, minor: 1 },
                        },
                        b"",
                    ),
                    end(1, 0),
                ],
            ),
        ];
        for (what, entries) in cases {
            let root = tempfile::tempdir().unwrap();
            let mut w = TreeWriter::new(open(root.path()), TreeKind::Layer, TreeLimits::new(4));
            let bytes = stream(&entries);
            let r = w.feed(&bytes).and_then(|()| w.finish());
            assert!(r.is_err(), "{what}: accepted");
            assert_eq!(
                std::fs::read_dir(&victim).unwrap().count(),
                0,
                "{what}: wrote outside"
            );
            // Nothing but what the stream named, under the root.
            for e in std::fs::read_dir(root.path()).unwrap() {
                let n = e.unwrap().file_name();
                assert!(
                    ["evil", "d", "a", "big", "h"].contains(&n.to_str().unwrap()),
                    "{what}: {n:?}"
                );
            }
            remove_tree(
                &open(root.path().parent().unwrap()),
                root.path().file_name().unwrap().as_encoded_bytes(),
            )
            .unwrap();
            assert!(!root.path().exists());
        }
        assert!(std::fs::read_dir(outside.path()).unwrap().count() == 1);
        // Limits: entries, depth.
        let root = tempfile::tempdir().unwrap();
        let mut limits = TreeLimits::new(100);
        limits.max_entries = 2;
        let mut w = TreeWriter::new(open(root.path()), TreeKind::Layer, limits);
        let e = w
            .feed(&stream(&[dir(b"a"), dir(b"b"), dir(b"c"), end(3, 0)]))
            .unwrap_err();
        assert!(
            matches!(
                e,
                TreeFsError::TooLarge {
                    what: "entries",
                    ..
                }
            ),
            "{e}"
        );
        let mut limits = TreeLimits::new(100);
        limits.max_depth = 2;
        let mut w = TreeWriter::new(open(root.path()), TreeKind::Layer, limits);
        let e = w
            .feed(&stream(&[dir(b"x"), dir(b"x/y"), dir(b"x/y/z"), end(3, 0)]))
            .unwrap_err();
        assert!(
            matches!(
                e,
                TreeFsError::TooLarge {
                    what: "levels of directories",
                    ..
                }
            ),
            "{e}"
        );
    }
}
