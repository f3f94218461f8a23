//! Host file system operations that a sandbox (or another user) cannot redirect.
//!
//! A sandbox owns its workspace, a host directory: it can put a symbolic link, a fifo or a device
//! node wherever the host later looks, and swap them while the host looks. Another user can
//! pre-create a predictable directory in `/tmp`. So the host side never resolves a path it
//! does not trust twice, and never follows a link there:
//!
//! - paths are opened with `openat2(RESOLVE_NO_SYMLINKS)`: a link anywhere in the path is an
//!   error that names it ([`HostFsError::Symlink`]);
//! - sources are opened `O_PATH` (no side effect, no wait on a fifo), checked to be regular files
//!   with `fstat` on that descriptor, and only then reopened for reading through it;
//! - a file written on the host is created with no name at all (`O_TMPFILE`) in a directory held
//!   open, given a random name with `linkat` only when complete and `renameat`ed over the target
//!   (a rename replaces a link, never follows it); where `O_TMPFILE` is unsupported, an
//!   unpredictable name created `O_EXCL|O_NOFOLLOW`, removed on drop unless committed;
//! - runtime directories are created with a restrictive mode, opened `O_DIRECTORY|O_NOFOLLOW`,
//!   and checked with `fstat` on that descriptor: ours, not group- or world-writable.
//!
//! Everything here is blocking; async callers use `spawn_blocking`.

use std::ffi::{OsStr, OsString};
use std::fmt::Write as _;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, AtFlags, OFlag, OpenHow, ResolveFlag, openat2, renameat};
use nix::sys::stat::{FileStat, Mode, SFlag, fchmod, fstat, fstatat, mkdirat};
use nix::unistd::{Uid, UnlinkatFlags, User, linkat, unlinkat};

/// What to do about a runtime directory that is not safe to use.
pub const RUNTIME_DIR_ADVICE: &str = "remove it (after checking that nothing in it is yours), \
     or use another runtime directory: --runtime-dir, LUMINAGUARD_RUNTIME_DIR or XDG_RUNTIME_DIR";

/// Why a host file operation was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum HostFsError {
    /// A symbolic link on the way (or at the end): never followed on the host side.
    #[error(
        "refusing {}: {} a symbolic link, and links are never followed on the host side (a \
         sandbox may have planted it); name the real path instead",
        path.display(),
        if link == path { "it is".to_owned() } else { format!("{} is", link.display()) }
    )]
    Symlink { path: PathBuf, link: PathBuf },
    /// A source that is not a regular file: a directory, fifo, device or socket.
    #[error("{path} is {kind}, not a regular file: only regular files are copied")]
    NotRegular { path: PathBuf, kind: &'static str },
    /// A destination that exists and is not a regular file, so it is not replaced.
    #[error("{path} exists and is {kind}: a copy only ever replaces a regular file")]
    DestinationNotFile { path: PathBuf, kind: &'static str },
    /// A path that must name a directory does not.
    #[error("{0} is not a directory")]
    NotADirectory(PathBuf),
    /// A destination that names no file (`/`, `..`), with no source name to use instead.
    #[error("{0}: names no file to write")]
    NoFileName(PathBuf),
    /// A runtime directory that another user could control.
    #[error("refusing runtime directory {path}: {problem}; {RUNTIME_DIR_ADVICE}")]
    UnsafeDir { path: PathBuf, problem: String },
    /// A directory that had to be new already exists.
    #[error("{0} already exists")]
    Exists(PathBuf),
    /// A system call failed (`error` is in the message, so it is not also a `source`).
    #[error("cannot {what} {}: {error}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        error: io::Error,
    },
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(Errno) -> HostFsError + 'a {
    move |e| HostFsError::Io {
        what,
        path: path.to_owned(),
        error: io::Error::from(e),
    }
}

/// `openat2` with `resolve`, retried when interrupted or when the kernel asks to (`EAGAIN`: a
/// rename raced the lookup).
fn open2(
    dir: BorrowedFd<'_>,
    path: &Path,
    flags: OFlag,
    mode: u32,
    resolve: ResolveFlag,
) -> nix::Result<OwnedFd> {
    let how = OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .mode(Mode::from_bits_truncate(mode))
        .resolve(resolve);
    let mut tries = 0;
    loop {
        match openat2(dir, path, how) {
            Err(Errno::EINTR | Errno::EAGAIN) if tries < 16 => tries += 1,
            other => return other,
        }
    }
}

/// Opens `path` relative to the current directory with no link anywhere in it.
fn open_no_links(path: &Path, flags: OFlag) -> Result<OwnedFd, HostFsError> {
    let path_or_dot = if path.as_os_str().is_empty() {
        Path::new(".")
    } else {
        path
    };
    open2(
        AT_FDCWD,
        path_or_dot,
        flags,
        0,
        ResolveFlag::RESOLVE_NO_SYMLINKS,
    )
    .map_err(|e| match e {
        Errno::ELOOP => symlink_error(path),
        Errno::ENOTDIR if flags.contains(OFlag::O_DIRECTORY) => {
            HostFsError::NotADirectory(path.to_owned())
        }
        e => io_err("open", path)(e),
    })
}

/// An `O_PATH` handle on the directory `path`, with no link anywhere in the path: what a sandbox
/// mounts as its workspace, taken once from the path that was checked (a resolved path has no
/// link; one that appears later is someone's swap) and never looked up by name again.
pub fn open_dir_no_links(path: &Path) -> Result<OwnedFd, HostFsError> {
    open_no_links(path, OFlag::O_PATH | OFlag::O_DIRECTORY)
}

/// The error for a path that `RESOLVE_NO_SYMLINKS` refused, naming the first link on it.
fn symlink_error(path: &Path) -> HostFsError {
    HostFsError::Symlink {
        path: path.to_owned(),
        link: first_symlink(path).unwrap_or_else(|| path.to_owned()),
    }
}

/// The first prefix of `path` that is a symbolic link (for messages only: it may have changed).
pub fn first_symlink(path: &Path) -> Option<PathBuf> {
    let mut prefix = PathBuf::new();
    for c in path.components() {
        prefix.push(c);
        if std::fs::symlink_metadata(&prefix).is_ok_and(|m| m.file_type().is_symlink()) {
            return Some(prefix);
        }
    }
    None
}

/// "a directory", "a fifo", … for messages.
fn kind(st: &FileStat) -> &'static str {
    match SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) {
        SFlag::S_IFREG => "a regular file",
        SFlag::S_IFDIR => "a directory",
        SFlag::S_IFIFO => "a fifo",
        SFlag::S_IFCHR => "a character device",
        SFlag::S_IFBLK => "a block device",
        SFlag::S_IFSOCK => "a socket",
        SFlag::S_IFLNK => "a symbolic link",
        _ => "of an unknown type",
    }
}

fn is(st: &FileStat, t: SFlag) -> bool {
    st.st_mode & SFlag::S_IFMT.bits() == t.bits()
}

/// An open regular file to copy from, and what `fstat` said about it.
#[derive(Debug)]
pub struct SourceFile {
    pub file: File,
    pub len: u64,
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
}

/// Opens `path` to read it: no link anywhere in the path, a regular file only. The path is
/// opened `O_PATH` first — which neither waits on a fifo nor runs a device's open — checked with
/// `fstat` on that descriptor, and only then reopened for reading through it, so what is read is
/// exactly what was checked.
pub fn open_source(path: &Path) -> Result<SourceFile, HostFsError> {
    let handle = open_no_links(path, OFlag::O_PATH)?;
    let st = fstat(&handle).map_err(io_err("stat", path))?;
    if !is(&st, SFlag::S_IFREG) {
        return Err(HostFsError::NotRegular {
            path: path.to_owned(),
            kind: kind(&st),
        });
    }
    let reopen = PathBuf::from(format!("/proc/self/fd/{}", handle.as_raw_fd()));
    let fd = nix::fcntl::open(
        &reopen,
        OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOCTTY,
        Mode::empty(),
    )
    .map_err(io_err("open for reading", path))?;
    Ok(SourceFile {
        file: File::from(fd),
        len: u64::try_from(st.st_size).unwrap_or(0),
        mode: st.st_mode & 0o7777,
    })
}

/// Whether `p` can only mean a directory (`dir/`, `dir/.`, `..`).
fn names_a_directory(p: &Path) -> bool {
    let b = p.as_os_str().as_bytes();
    b.ends_with(b"/") || b.ends_with(b"/.") || b.ends_with(b"/..") || b == b"." || b == b".."
}

/// A plain file name: not empty, `.` or `..`, no `/`.
fn plain_name(name: &OsStr) -> bool {
    let b = name.as_bytes();
    !b.is_empty() && b != b"." && b != b".." && !b.contains(&b'/') && !b.contains(&0)
}

/// Where a copy lands on the host: a directory held open (no link on the way to it) and a name
/// in it that is absent or a regular file.
#[derive(Debug)]
pub struct Destination {
    dir: OwnedFd,
    dir_path: PathBuf,
    name: OsString,
}

impl Destination {
    /// `dst` as `cp` reads it: an existing directory (or a path ending in `/`) receives the
    /// file under `source_name`; anything else names the file itself, in a directory that must
    /// exist. Refuses a link anywhere on the way, and a destination that exists but is not a
    /// regular file (it would be replaced, not written into, but a directory or a device is
    /// never what a copy should replace).
    pub fn resolve(dst: &Path, source_name: Option<&OsStr>) -> Result<Self, HostFsError> {
        let as_dir = open2(
            AT_FDCWD,
            if dst.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dst
            },
            OFlag::O_RDONLY | OFlag::O_DIRECTORY,
            0,
            ResolveFlag::RESOLVE_NO_SYMLINKS,
        );
        let (dir, dir_path, name) = match as_dir {
            Ok(dir) => {
                let name = source_name
                    .filter(|n| plain_name(n))
                    .ok_or_else(|| HostFsError::NoFileName(dst.to_owned()))?;
                (dir, dst.to_owned(), name.to_owned())
            }
            Err(Errno::ELOOP) => return Err(symlink_error(dst)),
            Err(Errno::ENOENT | Errno::ENOTDIR) if !names_a_directory(dst) => {
                let name = dst
                    .file_name()
                    .filter(|n| plain_name(n))
                    .ok_or_else(|| HostFsError::NoFileName(dst.to_owned()))?;
                let parent = dst.parent().unwrap_or(Path::new("."));
                let dir = open_no_links(parent, OFlag::O_RDONLY | OFlag::O_DIRECTORY)?;
                (dir, parent.to_owned(), name.to_owned())
            }
            Err(Errno::ENOENT | Errno::ENOTDIR) => {
                return Err(HostFsError::NotADirectory(dst.to_owned()));
            }
            Err(e) => return Err(io_err("open", dst)(e)),
        };
        let dest = Self {
            dir,
            dir_path,
            name,
        };
        match fstatat(
            &dest.dir,
            dest.name.as_os_str(),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        ) {
            Err(Errno::ENOENT) => {}
            Err(e) => return Err(io_err("stat", &dest.path())(e)),
            Ok(st) if is(&st, SFlag::S_IFREG) => {}
            Ok(st) if is(&st, SFlag::S_IFLNK) => {
                return Err(HostFsError::Symlink {
                    path: dest.path(),
                    link: dest.path(),
                });
            }
            Ok(st) => {
                return Err(HostFsError::DestinationNotFile {
                    path: dest.path(),
                    kind: kind(&st),
                });
            }
        }
        Ok(dest)
    }

    /// The file this copy writes.
    pub fn path(&self) -> PathBuf {
        self.dir_path.join(&self.name)
    }

    /// A file to write the copy into: without a name (`O_TMPFILE`) where the file system
    /// supports it, else under a random name, created exclusively.
    pub fn into_temp(self) -> Result<TempFile, HostFsError> {
        self.into_temp_with(Strategy::Anonymous)
    }

    fn into_temp_with(self, strategy: Strategy) -> Result<TempFile, HostFsError> {
        if strategy == Strategy::Anonymous {
            match open2(
                self.dir.as_fd(),
                Path::new("."),
                OFlag::O_TMPFILE | OFlag::O_WRONLY,
                0o600,
                ResolveFlag::RESOLVE_NO_SYMLINKS,
            ) {
                Ok(fd) => {
                    return Ok(TempFile {
                        dest: self,
                        file: File::from(fd),
                        named: None,
                    });
                }
                // No O_TMPFILE on this file system (EOPNOTSUPP) or kernel (EISDIR).
                Err(Errno::EOPNOTSUPP | Errno::EISDIR) => {}
                Err(e) => return Err(io_err("create a temporary file in", &self.dir_path)(e)),
            }
        }
        for _ in 0..16 {
            let name = random_name()?;
            match open2(
                self.dir.as_fd(),
                Path::new(&name),
                OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_WRONLY,
                0o600,
                ResolveFlag::RESOLVE_NO_SYMLINKS | ResolveFlag::RESOLVE_BENEATH,
            ) {
                Ok(fd) => {
                    return Ok(TempFile {
                        dest: self,
                        file: File::from(fd),
                        named: Some(name),
                    });
                }
                Err(Errno::EEXIST) => continue,
                Err(e) => {
                    return Err(io_err("create a temporary file in", &self.dir_path)(e));
                }
            }
        }
        Err(HostFsError::Io {
            what: "find a free temporary name in",
            path: self.dir_path,
            error: io::Error::from(Errno::EEXIST),
        })
    }
}

/// How [`Destination::into_temp_with`] makes its file (tests force the fallback).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Strategy {
    Anonymous,
    #[cfg_attr(not(test), allow(dead_code))]
    Named,
}

/// `.lg-cp-` and 128 random bits in hex: no one can predict it.
fn random_name() -> Result<OsString, HostFsError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| HostFsError::Io {
        what: "draw random bytes for",
        path: PathBuf::from("a temporary file name"),
        error: io::Error::other(e.to_string()),
    })?;
    let mut name = String::from(".lg-cp-");
    for b in bytes {
        let _ = write!(name, "{b:02x}");
    }
    Ok(name.into())
}

/// The file a copy is written into, not yet at its destination. Dropped without
/// [`TempFile::commit`], it leaves nothing: an unnamed file vanishes with its descriptor, a
/// named one is unlinked.
#[derive(Debug)]
pub struct TempFile {
    dest: Destination,
    file: File,
    /// The temporary name, when the file has one (no `O_TMPFILE`).
    named: Option<OsString>,
}

impl TempFile {
    /// Another descriptor of the file, to write through (e.g. as a `tokio::fs::File`).
    pub fn writer(&self) -> Result<File, HostFsError> {
        self.file.try_clone().map_err(|error| HostFsError::Io {
            what: "duplicate the descriptor of the temporary file in",
            path: self.dest.dir_path.clone(),
            error,
        })
    }

    /// The destination path the commit replaces.
    pub fn destination(&self) -> PathBuf {
        self.dest.path()
    }

    /// Sets the mode, flushes the data to disk, and puts the file in place: linked under a
    /// random name (if it has none yet), renamed over the destination (replacing whatever entry
    /// is there, never writing through it), the directory synced. On failure nothing is left.
    pub fn commit(mut self, mode: u32) -> Result<PathBuf, HostFsError> {
        let dst = self.dest.path();
        let dir_path = self.dest.dir_path.clone();
        fchmod(&self.file, Mode::from_bits_truncate(mode & 0o777))
            .map_err(io_err("set the mode of", &dst))?;
        self.file.sync_all().map_err(|error| HostFsError::Io {
            what: "flush",
            path: dst.clone(),
            error,
        })?;
        let temp = match self.named.clone() {
            Some(name) => name,
            None => {
                let name = self.link_anonymous()?;
                self.named = Some(name.clone());
                name
            }
        };
        renameat(
            &self.dest.dir,
            temp.as_os_str(),
            &self.dest.dir,
            self.dest.name.as_os_str(),
        )
        .map_err(io_err("move the copy into place at", &dst))?;
        // In place: nothing to remove any more.
        self.named = None;
        nix::unistd::fsync(&self.dest.dir).map_err(io_err("sync the directory", &dir_path))?;
        Ok(dst)
    }

    /// Gives the unnamed file a random name in its directory (`linkat` through
    /// `/proc/self/fd`, which needs no capability).
    fn link_anonymous(&self) -> Result<OsString, HostFsError> {
        let proc_path = PathBuf::from(format!("/proc/self/fd/{}", self.file.as_raw_fd()));
        for _ in 0..16 {
            let name = random_name()?;
            match linkat(
                AT_FDCWD,
                &proc_path,
                &self.dest.dir,
                name.as_os_str(),
                AtFlags::AT_SYMLINK_FOLLOW,
            ) {
                Ok(()) => return Ok(name),
                Err(Errno::EEXIST) => continue,
                Err(e) => return Err(io_err("link the copy into", &self.dest.dir_path)(e)),
            }
        }
        Err(HostFsError::Io {
            what: "find a free temporary name in",
            path: self.dest.dir_path.clone(),
            error: io::Error::from(Errno::EEXIST),
        })
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(name) = self.named.take() {
            // One metadata system call, also when dropped on an async executor (a cancelled
            // copy): the alternative is a file left behind.
            if let Err(e) = unlinkat(&self.dest.dir, name.as_os_str(), UnlinkatFlags::NoRemoveDir) {
                tracing::warn!(
                    dir = %self.dest.dir_path.display(),
                    name = %name.to_string_lossy(),
                    error = %e,
                    "cannot remove an abandoned temporary file"
                );
            }
        }
    }
}

/// The process's umask, read from `/proc/self/status` (setting it to read it would race with
/// other threads creating files); `0o022` if it cannot be read.
pub fn umask() -> u32 {
    #[allow(clippy::disallowed_methods)] // blocking by contract (module docs)
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    parse_umask(&status).unwrap_or(0o022)
}

fn parse_umask(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Umask:"))
        .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
}

/// `uid` with its user name, when it has one: `65534 (nobody)`.
fn who(uid: u32) -> String {
    match User::from_uid(Uid::from_raw(uid)) {
        Ok(Some(u)) => format!("{uid} ({})", u.name),
        _ => uid.to_string(),
    }
}

/// Refuses a directory (open at `fd`) that another user controls: not a directory, not owned
/// by the effective uid, or writable by its group or others.
fn check_ours(fd: &OwnedFd, path: &Path) -> Result<(), HostFsError> {
    let st = fstat(fd).map_err(io_err("stat", path))?;
    let unsafe_dir = |problem: String| HostFsError::UnsafeDir {
        path: path.to_owned(),
        problem,
    };
    if !is(&st, SFlag::S_IFDIR) {
        return Err(unsafe_dir(format!("it is {}, not a directory", kind(&st))));
    }
    let me = nix::unistd::geteuid().as_raw();
    if st.st_uid != me {
        return Err(unsafe_dir(format!(
            "it is owned by uid {}, not by uid {} who runs LuminaGuard, and its owner could \
             control every sandbox's socket and record in it",
            who(st.st_uid),
            who(me)
        )));
    }
    let mode = st.st_mode & 0o7777;
    if mode & 0o022 != 0 {
        let by = match (mode & 0o020 != 0, mode & 0o002 != 0) {
            (true, true) => "its group and everyone",
            (true, false) => "its group",
            _ => "everyone",
        };
        return Err(unsafe_dir(format!(
            "it is writable by {by} (mode {mode:04o}), who could plant sockets and records in it"
        )));
    }
    Ok(())
}

/// Opens an existing directory `name` in `parent` (or `path` itself when `parent` is `None`)
/// without following a link at the end, and checks it is ours ([`check_ours`]).
fn open_checked(
    parent: Option<BorrowedFd<'_>>,
    path: &Path,
    name: &Path,
) -> Result<OwnedFd, HostFsError> {
    let fd = nix::fcntl::openat(
        parent.unwrap_or(AT_FDCWD),
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| match e {
        // O_DIRECTORY makes a link at the end fail with ENOTDIR: look (for the message only —
        // it is refused either way) at what is there.
        Errno::ELOOP | Errno::ENOTDIR => HostFsError::UnsafeDir {
            path: path.to_owned(),
            problem: match fstatat(
                parent.unwrap_or(AT_FDCWD),
                name,
                AtFlags::AT_SYMLINK_NOFOLLOW,
            ) {
                Ok(st) if is(&st, SFlag::S_IFLNK) => "it is a symbolic link".into(),
                Ok(st) => format!("it is {}, not a directory", kind(&st)),
                Err(_) => "it is not a directory".into(),
            },
        },
        e => io_err("open", path)(e),
    })?;
    check_ours(&fd, path)?;
    Ok(fd)
}

/// Whether an existing directory may be taken over or must be new.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IfExists {
    /// Use it, once it passes the checks.
    Reuse,
    /// Fail with [`HostFsError::Exists`].
    Refuse,
}

/// Creates directory `name` in `parent` (or `path` itself when `parent` is `None`), or takes
/// the existing one, and returns it open, checked and with exactly `mode`. It is made `0700`
/// (never wider than meant, whatever the umask), opened `O_NOFOLLOW`, checked on that
/// descriptor ([`check_ours`]) and `fchmod`ed: no path is looked up twice.
fn ensure(
    parent: Option<BorrowedFd<'_>>,
    path: &Path,
    name: &Path,
    mode: u32,
    if_exists: IfExists,
) -> Result<OwnedFd, HostFsError> {
    match mkdirat(parent.unwrap_or(AT_FDCWD), name, Mode::S_IRWXU) {
        Ok(()) => {}
        Err(Errno::EEXIST) if if_exists == IfExists::Reuse => {}
        Err(Errno::EEXIST) => return Err(HostFsError::Exists(path.to_owned())),
        Err(e) => return Err(io_err("create", path)(e)),
    }
    let fd = open_checked(parent, path, name)?;
    fchmod(&fd, Mode::from_bits_truncate(mode)).map_err(io_err("set the permissions of", path))?;
    Ok(fd)
}

/// A runtime directory (absolute `path`), created with `mode` or taken over if it exists and
/// is ours (see [`ensure`]). Links earlier in the path are the administrator's (e.g.
/// `/var/run`); the directory itself may not be one.
pub fn ensure_dir(path: &Path, mode: u32) -> Result<OwnedFd, HostFsError> {
    ensure(None, path, path, mode, IfExists::Reuse)
}

/// Directory `name` inside `parent` (open at `parent_fd`), created with `mode`, or taken over
/// when `if_exists` allows and it is ours.
pub fn ensure_subdir(
    parent_fd: &OwnedFd,
    parent: &Path,
    name: &str,
    mode: u32,
    if_exists: IfExists,
) -> Result<OwnedFd, HostFsError> {
    let path = parent.join(name);
    if !plain_name(OsStr::new(name)) {
        return Err(HostFsError::NoFileName(path));
    }
    ensure(
        Some(parent_fd.as_fd()),
        &path,
        Path::new(name),
        mode,
        if_exists,
    )
}

/// An existing runtime directory `path`, checked as [`ensure_dir`] checks it; `None` if there is
/// none (nothing to read there).
pub fn open_existing_dir(path: &Path) -> Result<Option<OwnedFd>, HostFsError> {
    match open_checked(None, path, path) {
        Err(HostFsError::Io { error, .. }) if error.kind() == io::ErrorKind::NotFound => Ok(None),
        other => other.map(Some),
    }
}

/// Existing directory `name` inside `parent` (open at `parent_fd`), checked; `None` if absent.
pub fn open_existing_subdir(
    parent_fd: &OwnedFd,
    parent: &Path,
    name: &str,
) -> Result<Option<OwnedFd>, HostFsError> {
    let path = parent.join(name);
    match open_checked(Some(parent_fd.as_fd()), &path, Path::new(name)) {
        Err(HostFsError::Io { error, .. }) if error.kind() == io::ErrorKind::NotFound => Ok(None),
        other => other.map(Some),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::disallowed_methods)]
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn sources_are_regular_files_reached_without_links() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("file"), b"data").unwrap();
        std::fs::set_permissions(d.join("file"), std::fs::Permissions::from_mode(0o4751)).unwrap();
        let mut src = open_source(&d.join("file")).unwrap();
        let mut text = String::new();
        src.file.read_to_string(&mut text).unwrap();
        assert_eq!((text.as_str(), src.len, src.mode), ("data", 4, 0o4751));

        std::os::unix::fs::symlink(d.join("file"), d.join("link")).unwrap();
        std::os::unix::fs::symlink(d, d.join("dirlink")).unwrap();
        for (p, link) in [
            (d.join("link"), d.join("link")),
            (d.join("dirlink/file"), d.join("dirlink")),
        ] {
            match open_source(&p) {
                Err(HostFsError::Symlink { link: l, .. }) => assert_eq!(l, link),
                other => panic!("{}: {other:?}", p.display()),
            }
        }
        // A fifo is refused without waiting for a writer; so are a directory and a device.
        nix::unistd::mkfifo(&d.join("fifo"), Mode::S_IRWXU).unwrap();
        for p in [d.join("fifo"), d.to_owned(), PathBuf::from("/dev/zero")] {
            let err = open_source(&p).unwrap_err();
            assert!(
                matches!(err, HostFsError::NotRegular { .. }),
                "{}: {err}",
                p.display()
            );
            assert!(err.to_string().contains("not a regular file"), "{err}");
        }
    }

    #[test]
    fn a_destination_link_or_linked_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let victims = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(victims.path().join("v"), d.join("out")).unwrap();
        std::os::unix::fs::symlink(victims.path(), d.join("sub")).unwrap();
        let err = Destination::resolve(&d.join("out"), None).unwrap_err();
        assert!(matches!(err, HostFsError::Symlink { .. }), "{err}");
        let err = Destination::resolve(&d.join("sub/out"), None).unwrap_err();
        assert!(
            matches!(&err, HostFsError::Symlink { link, .. } if *link == d.join("sub")),
            "{err}"
        );
        // Also as a directory to copy into.
        let err = Destination::resolve(&d.join("sub"), Some(OsStr::new("x"))).unwrap_err();
        assert!(matches!(err, HostFsError::Symlink { .. }), "{err}");
        std::fs::create_dir(d.join("dir")).unwrap();
        nix::unistd::mkfifo(&d.join("fifo"), Mode::S_IRWXU).unwrap();
        for p in ["dir/", "fifo"] {
            let err = Destination::resolve(&d.join(p), None).unwrap_err();
            assert!(
                matches!(
                    err,
                    HostFsError::DestinationNotFile { .. } | HostFsError::NoFileName(_)
                ),
                "{p}: {err}"
            );
        }
        let err = Destination::resolve(&d.join("missing/"), Some(OsStr::new("x"))).unwrap_err();
        assert!(matches!(err, HostFsError::NotADirectory(_)), "{err}");
        assert!(entries(victims.path()).is_empty());
    }

    fn write_and_commit(dest: Destination, strategy: Strategy, data: &[u8], mode: u32) -> PathBuf {
        let temp = dest.into_temp_with(strategy).unwrap();
        temp.writer().unwrap().write_all(data).unwrap();
        temp.commit(mode).unwrap()
    }

    #[test]
    fn a_committed_copy_replaces_the_target_and_leaves_no_temporary() {
        for strategy in [Strategy::Anonymous, Strategy::Named] {
            let dir = tempfile::tempdir().unwrap();
            let d = dir.path();
            std::fs::write(d.join("out"), b"old").unwrap();
            let dest = Destination::resolve(&d.join("out"), None).unwrap();
            let path = write_and_commit(dest, strategy, b"new", 0o6755);
            assert_eq!(path, d.join("out"));
            assert_eq!(std::fs::read(&path).unwrap(), b"new");
            let m = std::fs::metadata(&path).unwrap();
            assert_eq!(
                m.mode() & 0o7777,
                0o755,
                "{strategy:?}: setuid/setgid dropped"
            );
            assert_eq!(m.uid(), nix::unistd::geteuid().as_raw());
            assert_eq!(entries(d), ["out"], "{strategy:?}");

            // Into an existing directory, under the source's name.
            std::fs::create_dir(d.join("into")).unwrap();
            let dest = Destination::resolve(&d.join("into"), Some(OsStr::new("src.txt"))).unwrap();
            assert_eq!(dest.path(), d.join("into/src.txt"));
            write_and_commit(dest, strategy, b"x", 0o644);
            assert_eq!(entries(&d.join("into")), ["src.txt"]);
        }
    }

    #[test]
    fn an_abandoned_copy_leaves_nothing() {
        for strategy in [Strategy::Anonymous, Strategy::Named] {
            let dir = tempfile::tempdir().unwrap();
            let d = dir.path();
            let temp = Destination::resolve(&d.join("out"), None)
                .unwrap()
                .into_temp_with(strategy)
                .unwrap();
            temp.writer().unwrap().write_all(b"partial").unwrap();
            // While the copy runs, a named temporary is the only trace; an unnamed one is none.
            let during = entries(d);
            match strategy {
                Strategy::Anonymous => assert!(during.is_empty(), "{during:?}"),
                Strategy::Named => {
                    assert_eq!(during.len(), 1);
                    assert!(during[0].starts_with(".lg-cp-") && during[0].len() == 7 + 32);
                }
            }
            drop(temp);
            assert!(entries(d).is_empty(), "{strategy:?}: {:?}", entries(d));
        }
    }

    #[test]
    fn a_link_planted_after_the_check_is_replaced_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let victims = tempfile::tempdir().unwrap();
        let victim = victims.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        let temp = Destination::resolve(&d.join("out"), None)
            .unwrap()
            .into_temp()
            .unwrap();
        temp.writer().unwrap().write_all(b"copy").unwrap();
        // The sandbox wins the race: the destination becomes a link after the check.
        std::os::unix::fs::symlink(&victim, d.join("out")).unwrap();
        temp.commit(0o644).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        let m = std::fs::symlink_metadata(d.join("out")).unwrap();
        assert!(m.is_file());
        assert_eq!(std::fs::read(d.join("out")).unwrap(), b"copy");
    }

    #[test]
    fn runtime_directories_are_made_with_their_mode_and_must_be_ours() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // New: exactly the mode asked for, whatever the umask.
        let root = d.join("rt");
        let fd = ensure_dir(&root, 0o711).unwrap();
        assert_eq!(std::fs::metadata(&root).unwrap().mode() & 0o7777, 0o711);
        ensure_subdir(&fd, &root, "sandboxes", 0o711, IfExists::Reuse).unwrap();
        let err = ensure_subdir(&fd, &root, "sandboxes", 0o700, IfExists::Refuse).unwrap_err();
        assert!(matches!(err, HostFsError::Exists(_)), "{err}");
        // Existing and ours: taken over, its mode set.
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
        ensure_dir(&root, 0o711).unwrap();
        assert_eq!(std::fs::metadata(&root).unwrap().mode() & 0o7777, 0o711);

        // Writable by others: refused, and left as it is.
        let open = d.join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = ensure_dir(&open, 0o711).unwrap_err().to_string();
        assert!(
            err.contains("writable by its group and everyone (mode 0777)")
                && err.contains("--runtime-dir"),
            "{err}"
        );
        assert!(open_existing_dir(&open).is_err());
        assert_eq!(std::fs::metadata(&open).unwrap().mode() & 0o7777, 0o777);
        // A link, even to a directory of ours: refused, its target untouched.
        let link = d.join("link");
        std::os::unix::fs::symlink(&root, &link).unwrap();
        let err = ensure_dir(&link, 0o700).unwrap_err().to_string();
        assert!(err.contains("symbolic link"), "{err}");
        assert_eq!(std::fs::metadata(&root).unwrap().mode() & 0o7777, 0o711);
        // A subdirectory that is a link.
        std::os::unix::fs::symlink(&open, root.join("jail")).unwrap();
        let err = ensure_subdir(&fd, &root, "jail", 0o700, IfExists::Reuse)
            .unwrap_err()
            .to_string();
        assert!(err.contains("symbolic link"), "{err}");
        // Nothing there: nothing to check.
        assert!(open_existing_dir(&d.join("absent")).unwrap().is_none());
        assert!(
            open_existing_subdir(&fd, &root, "absent")
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn a_runtime_directory_another_user_owns_is_refused() {
        if !luminaguard_testkit::privileged("chown to another user") {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let theirs = dir.path().join("theirs");
        std::fs::create_dir(&theirs).unwrap();
        std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
        let err = ensure_dir(&theirs, 0o711).unwrap_err().to_string();
        assert!(err.contains("owned by uid 65534"), "{err}");
        assert!(open_existing_dir(&theirs).is_err());
        // Left exactly as it was.
        let m = std::fs::metadata(&theirs).unwrap();
        assert_eq!((m.uid(), m.mode() & 0o7777), (65534, 0o755));
    }

    #[test]
    fn the_umask_is_read_from_procfs() {
        assert_eq!(
            parse_umask("Name:\tx\nUmask:\t0027\nState:\tR\n"),
            Some(0o027)
        );
        assert_eq!(parse_umask("Name:\tx\n"), None);
        assert!(umask() <= 0o777);
    }
}
