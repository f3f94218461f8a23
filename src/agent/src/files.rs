//! File operations inside the guest: read (streamed), atomic write, list, stat, mkdir, remove.
//!
//! The agent acts on its own filesystem with its own privileges; confinement is the sandbox's job.
//! Paths must be absolute and free of NUL bytes. Blocking filesystem calls run on the blocking
//! pool, never on an executor thread.

use std::fs;
use std::io::{self, IoSlice, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use luminaguard_protocol::message::{
    DirEntry, ErrorCode, ErrorReply, FileKind, FileStat, ReadFileRequest, Reply, WriteFileRequest,
};
use luminaguard_protocol::writer::BULK_BUDGET;
use luminaguard_protocol::{ChunkPool, FrameSender, MAX_CHUNK};
use tokio_util::sync::CancellationToken;

use crate::server::{StreamInput, StreamInputRx};

/// A listing stops (and says it was truncated) past this many entries…
const MAX_LIST_ENTRIES: usize = 50_000;
/// …or past this many bytes of names, so the reply always fits in one frame.
const MAX_LIST_NAME_BYTES: usize = 2 << 20;

fn io_error(path: &str, op: &str, e: &io::Error) -> ErrorReply {
    let code = match e.kind() {
        io::ErrorKind::NotFound => ErrorCode::NotFound,
        io::ErrorKind::PermissionDenied => ErrorCode::PermissionDenied,
        io::ErrorKind::AlreadyExists => ErrorCode::AlreadyExists,
        _ => ErrorCode::Io,
    };
    ErrorReply::new(code, format!("{op} {path}: {e}"))
}

/// Accepts absolute paths without NUL bytes.
pub fn check_path(path: &str) -> Result<PathBuf, ErrorReply> {
    if !path.starts_with('/') || path.contains('\0') {
        return Err(ErrorReply::new(
            ErrorCode::InvalidRequest,
            format!("path {path:?} must be absolute and free of NUL bytes"),
        ));
    }
    Ok(PathBuf::from(path))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ErrorReply> + Send + 'static,
) -> Result<T, ErrorReply> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(ErrorReply::new(
            ErrorCode::Internal,
            format!("file task failed: {e}"),
        ))
    })
}

/// Streams a file as `Data` chunks, then `ReadDone`.
pub async fn read(
    req: ReadFileRequest,
    id: u64,
    out: FrameSender,
    cancel: CancellationToken,
) -> Result<Reply, ErrorReply> {
    let path = check_path(&req.path)?;
    blocking(move || {
        #[allow(clippy::disallowed_methods)]
        let mut file = fs::File::open(&path).map_err(|e| io_error(&req.path, "open", &e))?;
        if file.metadata().map(|m| m.is_dir()).unwrap_or(false) {
            return Err(ErrorReply::new(
                ErrorCode::InvalidRequest,
                format!("read {}: is a directory", req.path),
            ));
        }
        if req.offset > 0 {
            file.seek(SeekFrom::Start(req.offset))
                .map_err(|e| io_error(&req.path, "seek", &e))?;
        }
        let mut left = req.limit.unwrap_or(u64::MAX);
        let mut sent = 0u64;
        // Each chunk is read into a buffer of its own, which the connection's writer then writes
        // to the socket as the frame's trailer (no copy between file and socket) and which comes
        // back to this pool once written.
        let pool = ChunkPool::new(MAX_CHUNK, BULK_BUDGET / MAX_CHUNK + 2);
        while left > 0 && !cancel.is_cancelled() {
            let want = usize::try_from(left.min(MAX_CHUNK as u64)).unwrap_or(MAX_CHUNK);
            let mut chunk = pool.take();
            // Zeroes only what was never written: a reused buffer is initialised already.
            chunk.resize(want, 0);
            let n = match file.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_error(&req.path, "read", &e)),
            };
            chunk.truncate(n);
            out.blocking_send(id, &Reply::Data(pool.share(chunk)))
                .map_err(|e| {
                    ErrorReply::new(ErrorCode::Internal, format!("read {}: {e}", req.path))
                })?;
            sent += n as u64;
            left -= n as u64;
        }
        if cancel.is_cancelled() {
            return Err(ErrorReply::new(
                ErrorCode::Io,
                format!("read {}: cancelled", req.path),
            ));
        }
        Ok(Reply::ReadDone { bytes: sent })
    })
    .await
}

/// A temporary file that is removed unless committed.
struct PendingFile {
    tmp: PathBuf,
    file: Option<fs::File>,
}

impl PendingFile {
    /// The file is in place: nothing to clean up any more.
    fn committed(mut self) {
        self.file = None;
    }
}

impl Drop for PendingFile {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// Receives `Input` chunks until `InputEnd`, then atomically replaces the target (write to a
/// temporary file beside it, fsync, rename). Cancel or a closed connection leaves nothing behind.
///
/// The whole write runs on one blocking-pool thread that takes chunks straight off the stream's
/// input channel; the channel closes when the stream is cancelled or its connection ends. Chunks
/// arrive as slices of the connection's read buffer and go to the file from there; chunks that
/// are already waiting are written together with one `writev`.
pub async fn write(req: WriteFileRequest, input: StreamInputRx) -> Result<Reply, ErrorReply> {
    let target = check_path(&req.path)?;
    let Some(name) = target.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return Err(ErrorReply::new(
            ErrorCode::InvalidRequest,
            format!("write {}: not a file path", req.path),
        ));
    };
    let dir = target
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/"));
    let tmp = dir.join(format!(
        ".{name}.lg-{}-{:x}",
        std::process::id(),
        rand_suffix()
    ));
    let (mode, path) = (req.mode & 0o7777, req.path);
    let StreamInputRx { mut rx, cancel } = input;
    blocking(move || {
        if req.parents {
            fs::create_dir_all(&dir).map_err(|e| io_error(&path, "create parents of", &e))?;
        }
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(|e| io_error(&path, "create", &e))?;
        let mut pending = PendingFile {
            tmp,
            file: Some(file),
        };
        let mut written = 0u64;
        let mut batch: Vec<Bytes> = Vec::with_capacity(WRITE_BATCH);
        let mut ended = false;
        while !ended {
            match rx.blocking_recv() {
                _ if cancel.is_cancelled() => return Err(cancelled(&path)),
                Some(StreamInput::Data(data)) => batch.push(data),
                Some(StreamInput::End) => break,
                // Cancelled, or the connection went away: `pending` drops and removes the file.
                None => return Err(cancelled(&path)),
            }
            // Whatever else has arrived already goes out with the same system call.
            while batch.len() < WRITE_BATCH {
                match rx.try_recv() {
                    Ok(StreamInput::Data(data)) => batch.push(data),
                    Ok(StreamInput::End) => {
                        ended = true;
                        break;
                    }
                    // Empty, or closed (the next `blocking_recv` says so).
                    Err(_) => break,
                }
            }
            if cancel.is_cancelled() {
                return Err(cancelled(&path));
            }
            let f = pending
                .file
                .as_mut()
                .ok_or_else(|| ErrorReply::new(ErrorCode::Internal, "write: file lost"))?;
            written += write_all_chunks(f, &batch).map_err(|e| io_error(&path, "write", &e))?;
            batch.clear();
        }
        let file = pending
            .file
            .as_ref()
            .ok_or_else(|| ErrorReply::new(ErrorCode::Internal, "write: file lost"))?;
        // create_new applied the umask; set the exact mode asked for.
        file.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(|e| io_error(&path, "chmod", &e))?;
        file.sync_all().map_err(|e| io_error(&path, "fsync", &e))?;
        fs::rename(&pending.tmp, &target).map_err(|e| io_error(&path, "rename into", &e))?;
        pending.committed();
        Ok(Reply::Written { bytes: written })
    })
    .await
}

/// Chunks written to a file with one `writev` at most.
const WRITE_BATCH: usize = 2;

/// Writes every chunk, in order, with as few `writev` calls as the kernel allows.
fn write_all_chunks(file: &mut fs::File, chunks: &[Bytes]) -> io::Result<u64> {
    let mut slices: Vec<IoSlice<'_>> = chunks.iter().map(|c| IoSlice::new(c)).collect();
    let mut rest = &mut slices[..];
    IoSlice::advance_slices(&mut rest, 0);
    let mut written = 0u64;
    while !rest.is_empty() {
        match file.write_vectored(rest) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                written += n as u64;
                IoSlice::advance_slices(&mut rest, n);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(written)
}

fn cancelled(path: &str) -> ErrorReply {
    ErrorReply::new(
        ErrorCode::Io,
        format!("write {path}: cancelled before the end of input"),
    )
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

fn kind_of(ft: fs::FileType) -> FileKind {
    if ft.is_symlink() {
        FileKind::Symlink
    } else if ft.is_dir() {
        FileKind::Dir
    } else if ft.is_file() {
        FileKind::File
    } else {
        FileKind::Other
    }
}

pub async fn list(path: String) -> Result<Reply, ErrorReply> {
    let dir = check_path(&path)?;
    blocking(move || {
        #[allow(clippy::disallowed_methods)]
        let iter = fs::read_dir(&dir).map_err(|e| io_error(&path, "list", &e))?;
        let (mut entries, mut name_bytes, mut truncated) = (Vec::new(), 0usize, false);
        for entry in iter {
            let entry = entry.map_err(|e| io_error(&path, "list", &e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if entries.len() >= MAX_LIST_ENTRIES || name_bytes + name.len() > MAX_LIST_NAME_BYTES {
                truncated = true;
                break;
            }
            name_bytes += name.len();
            let meta = entry.metadata().ok();
            entries.push(DirEntry {
                name,
                kind: meta
                    .as_ref()
                    .map(|m| kind_of(m.file_type()))
                    .unwrap_or(FileKind::Other),
                size: meta.as_ref().map(|m| m.len()).unwrap_or(0),
                mode: meta.as_ref().map(|m| m.mode() & 0o7777).unwrap_or(0),
            });
        }
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Reply::DirListing { entries, truncated })
    })
    .await
}

pub async fn stat(path: String, follow: bool) -> Result<Reply, ErrorReply> {
    let p = check_path(&path)?;
    blocking(move || {
        let meta = if follow {
            fs::metadata(&p)
        } else {
            fs::symlink_metadata(&p)
        }
        .map_err(|e| io_error(&path, "stat", &e))?;
        let symlink_target = if meta.file_type().is_symlink() {
            fs::read_link(&p)
                .ok()
                .map(|t| t.to_string_lossy().into_owned())
        } else {
            None
        };
        Ok(Reply::Stat(FileStat {
            kind: kind_of(meta.file_type()),
            size: meta.len(),
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
            mtime_unix_ms: meta
                .mtime()
                .saturating_mul(1000)
                .saturating_add(meta.mtime_nsec() / 1_000_000),
            symlink_target,
        }))
    })
    .await
}

pub async fn mkdir(path: String, mode: u32, parents: bool) -> Result<Reply, ErrorReply> {
    let p = check_path(&path)?;
    blocking(move || {
        let mut b = fs::DirBuilder::new();
        b.recursive(parents).mode(mode & 0o7777);
        b.create(&p).map_err(|e| io_error(&path, "mkdir", &e))?;
        Ok(Reply::Done)
    })
    .await
}

pub async fn remove(path: String, recursive: bool) -> Result<Reply, ErrorReply> {
    let p = check_path(&path)?;
    if p.parent().is_none() {
        return Err(ErrorReply::new(
            ErrorCode::InvalidRequest,
            "refusing to remove /",
        ));
    }
    blocking(move || {
        let meta = fs::symlink_metadata(&p).map_err(|e| io_error(&path, "remove", &e))?;
        let r = match (meta.is_dir(), recursive) {
            (true, true) => fs::remove_dir_all(&p),
            (true, false) => fs::remove_dir(&p),
            (false, _) => fs::remove_file(&p),
        };
        r.map_err(|e| io_error(&path, "remove", &e))?;
        Ok(Reply::Done)
    })
    .await
}
