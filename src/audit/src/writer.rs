//! The synchronous core of the log: opening (with crash recovery), appending a batch with one
//! write and one fsync, rotating segments, and writing checkpoints. It runs on one thread (the
//! writer thread of [`crate::AuditLog`]).
//!
//! Several processes may append to one log (CLI commands next to a daemon): every open, batch
//! and checkpoint holds an exclusive `flock` on the directory's `lock` file, and a writer that
//! finds the files changed since its own last write (another process appended, rotated or
//! crashed mid-append) loads the log afresh — the same verified scan as an open — before it
//! writes.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::checkpoint::{self, Checkpoint};
use crate::config::AuditConfig;
use crate::error::{AuditError, Result};
use crate::export::Exporter;
use crate::hash::Hash32;
use crate::keyfile;
use crate::leaves::LeafSync;
use crate::merkle::Frontier;
use crate::note::{NoteSigner, VerifierKey, check_name};
use crate::record::{Actor, Record};
use crate::scan::{self, CHECKPOINTS_FILE};
use crate::segments::{self, MAX_LINE};

/// What an append returns once the record is durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Receipt {
    /// The record's sequence number.
    pub seq: u64,
    /// The record's hash (its Merkle leaf hash).
    pub hash: Hash32,
}

/// The open log, owned by the writer thread.
#[derive(Debug)]
pub(crate) struct Writer {
    /// `<dir>/lock`, held (flock) for every open, batch and checkpoint.
    lock: File,
    dir: PathBuf,
    cfg: AuditConfig,
    signer: NoteSigner,
    seq: u64,
    last_hash: Hash32,
    frontier: Frontier,
    segment: u64,
    seg_file: File,
    seg_len: u64,
    leaves: File,
    checkpoints: File,
    last_checkpoint: u64,
    exporter: Exporter,
    /// Set after a failed write or fsync: the file's state is unknown, so nothing more is
    /// appended (reopening the log recovers).
    failed: Option<String>,
}

/// What [`Writer::open_from_tail`] learns.
struct Tail {
    count: u64,
    last_hash: Hash32,
    frontier: Frontier,
    segment: u64,
    seg_len: u64,
}

/// The file every writer of a log holds an exclusive `flock` on while it writes.
pub const LOCK_FILE: &str = "lock";

/// An exclusive `flock` on a log's lock file, released when dropped.
struct Held<'a>(&'a File);

impl<'a> Held<'a> {
    fn take(file: &'a File, path: &Path) -> Result<Held<'a>> {
        use std::os::fd::AsFd;
        loop {
            #[allow(deprecated)] // nix's Flock guard owns the file; this lock is on a borrowed one
            match nix::fcntl::flock(
                std::os::fd::AsRawFd::as_raw_fd(&file.as_fd()),
                nix::fcntl::FlockArg::LockExclusive,
            ) {
                Ok(()) => return Ok(Held(file)),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(AuditError::io("lock", path, e.into())),
            }
        }
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        #[allow(deprecated)] // see Held::take
        let _ = nix::fcntl::flock(
            std::os::fd::AsRawFd::as_raw_fd(self.0),
            nix::fcntl::FlockArg::Unlock,
        );
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[allow(clippy::disallowed_methods)] // sync code, run on a blocking thread
fn open_append(path: &Path) -> Result<File> {
    File::options()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| AuditError::io("open", path, e))
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| AuditError::io("fsync dir", dir, e))
}

/// Cuts a torn tail off `path` at `offset`, durably.
fn truncate(path: &Path, offset: u64) -> Result<()> {
    File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.set_len(offset).and_then(|()| f.sync_all()))
        .map_err(|e| AuditError::io("truncate torn tail of", path, e))
}

fn hash_of(chunk: &[u8]) -> Hash32 {
    let mut h = [0u8; 32];
    h.copy_from_slice(chunk);
    Hash32(h)
}

/// The newest segment's last record, if the files agree on it: the segment ends with a whole
/// line that parses and hashes to itself, it is record `count - 1`, and its hash is the last of
/// `leaves` (the leaf file's bytes, or at least its last 32).
struct LastRecord {
    record: Record,
    segment: u64,
    seg_len: u64,
}

#[allow(clippy::disallowed_methods)] // sync code, run on a blocking thread
fn last_record(dir: &Path, count: u64, leaves: &[u8]) -> Result<Option<LastRecord>> {
    use std::io::{Read, Seek, SeekFrom};
    if count == 0 || leaves.len() < 32 || !leaves.len().is_multiple_of(32) {
        return Ok(None);
    }
    let Some((segment, seg_path)) = segments::list(dir)?.pop() else {
        return Ok(None);
    };
    let mut f = File::open(&seg_path).map_err(|e| AuditError::io("open", &seg_path, e))?;
    let seg_len = f
        .metadata()
        .map_err(|e| AuditError::io("stat", &seg_path, e))?
        .len();
    // The last line, whole: the segment must end with a newline, and the line before it start
    // after another newline (or at the file's start) within the window read.
    let window = seg_len.min(256 << 10);
    let mut buf = vec![0u8; usize::try_from(window).unwrap_or(0)];
    f.seek(SeekFrom::Start(seg_len - window))
        .and_then(|_| f.read_exact(&mut buf))
        .map_err(|e| AuditError::io("read the tail of", &seg_path, e))?;
    if buf.last() != Some(&b'\n') {
        return Ok(None);
    }
    let body = &buf[..buf.len() - 1];
    let line = match body.iter().rposition(|b| *b == b'\n') {
        Some(i) => &body[i + 1..],
        None if window == seg_len => body,
        None => return Ok(None),
    };
    let Ok(record) = Record::parse_line(line) else {
        return Ok(None);
    };
    if record.seq + 1 != count || record.hash.0.as_slice() != &leaves[leaves.len() - 32..] {
        return Ok(None);
    }
    Ok(Some(LastRecord {
        record,
        segment,
        seg_len,
    }))
}

impl Writer {
    /// Opens (creating if needed) the log: loads or creates the key, verifies the whole log,
    /// cuts a torn tail, rebuilds the leaf-hash file if needed, and writes a checkpoint if the
    /// latest one does not cover every record.
    #[allow(clippy::disallowed_methods)] // sync code, run on a blocking thread
    pub(crate) fn open(cfg: AuditConfig) -> Result<Writer> {
        check_name(&cfg.origin).map_err(|e| AuditError::Config(e.to_string()))?;
        if cfg.checkpoint_every == 0 || cfg.queue_capacity == 0 || cfg.rotate_bytes == 0 {
            return Err(AuditError::Config(
                "checkpoint_every, queue_capacity and rotate_bytes must be at least 1".into(),
            ));
        }
        let dir = cfg.dir.clone();
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| AuditError::io("create audit dir", &dir, e))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| AuditError::io("open", &lock_path, e))?;
        let _held = Held::take(&lock, &lock_path)?;
        let verify = cfg.verify_on_open;
        Self::open_locked(
            cfg,
            lock.try_clone()
                .map_err(|e| AuditError::io("dup", &lock_path, e))?,
            verify,
        )
    }

    /// [`Writer::open`] with the lock held: from the files' tail when they agree (the last
    /// record is whole, self-consistent and the leaf-hash file's last entry), else by the full,
    /// verifying scan that also repairs a crash's leftovers. Checking the whole log is
    /// [`crate::verify`]'s job: a short-lived process (one CLI command) must not read every
    /// record to append one.
    fn open_locked(cfg: AuditConfig, lock: File, verify: bool) -> Result<Writer> {
        let signer = keyfile::load_or_create(&cfg.dir, &cfg.origin)?;
        let tail = match verify {
            true => None,
            false => Self::open_from_tail(&cfg)?,
        };
        match tail {
            Some(tail) => {
                let seg_path = cfg.dir.join(segments::name(tail.segment));
                let seg_file = open_append(&seg_path)?;
                let leaves = open_append(&cfg.dir.join(crate::leaves::LEAVES_FILE))?;
                let checkpoints = open_append(&cfg.dir.join(CHECKPOINTS_FILE))?;
                tracing::debug!(dir = %cfg.dir.display(), records = tail.count, "audit log open (tail)");
                Ok(Writer {
                    lock,
                    exporter: Exporter::open(&cfg.export)?,
                    dir: cfg.dir.clone(),
                    signer,
                    seq: tail.count,
                    last_hash: tail.last_hash,
                    frontier: tail.frontier,
                    segment: tail.segment,
                    seg_file,
                    seg_len: tail.seg_len,
                    leaves,
                    checkpoints,
                    // Unknown without reading every note; the next checkpoint is due after
                    // another `checkpoint_every` records, or at close.
                    last_checkpoint: tail.count,
                    failed: None,
                    cfg,
                })
            }
            None => Self::open_full(cfg, lock),
        }
    }

    /// The log's state from its tail, if the tail is sound; `None` sends the caller to the
    /// full scan (a fresh log, a torn last line, a leaf file out of step).
    #[allow(clippy::disallowed_methods)] // sync code, run on a blocking thread
    fn open_from_tail(cfg: &AuditConfig) -> Result<Option<Tail>> {
        let dir = &cfg.dir;
        let leaves_path = dir.join(crate::leaves::LEAVES_FILE);
        let Ok(leaves) = std::fs::read(&leaves_path) else {
            return Ok(None);
        };
        let count = (leaves.len() / 32) as u64;
        let Some(last) = last_record(dir, count, &leaves)? else {
            return Ok(None);
        };
        let mut frontier = Frontier::new();
        for chunk in leaves.chunks_exact(32) {
            frontier.push(hash_of(chunk));
        }
        Ok(Some(Tail {
            count,
            last_hash: last.record.hash,
            frontier,
            segment: last.segment,
            seg_len: last.seg_len,
        }))
    }

    /// [`Writer::open`] by the full, verifying scan.
    #[allow(clippy::disallowed_methods)] // sync code, run on a blocking thread
    fn open_full(cfg: AuditConfig, lock: File) -> Result<Writer> {
        let dir = cfg.dir.clone();
        let signer = keyfile::load_or_create(&dir, &cfg.origin)?;
        let mut sync = LeafSync::new(&dir)?;
        let scan = scan::scan(&dir, &signer.verifier(), &mut |seq, h| sync.leaf(seq, h))?;
        // Repaired, then reopened for appending: a descriptor with its own position would
        // write over what another process appended in the meantime.
        drop(sync.finish(scan.count)?);
        let leaves = open_append(&dir.join(crate::leaves::LEAVES_FILE))?;
        for torn in [&scan.torn_records, &scan.torn_checkpoint]
            .into_iter()
            .flatten()
        {
            tracing::warn!(dir = %dir.display(), "{torn}; truncating it");
            truncate(&dir.join(&torn.file), torn.offset)?;
        }
        let (segment, seg_path) = match scan.segments.last() {
            Some((i, p)) => (*i, p.clone()),
            None => (0, dir.join(segments::name(0))),
        };
        let seg_file = open_append(&seg_path)?;
        let seg_len = seg_file
            .metadata()
            .map_err(|e| AuditError::io("stat", &seg_path, e))?
            .len();
        let checkpoints = open_append(&dir.join(CHECKPOINTS_FILE))?;
        sync_dir(&dir)?;
        let mut w = Writer {
            lock,
            exporter: Exporter::open(&cfg.export)?,
            dir,
            cfg,
            signer,
            seq: scan.count,
            last_hash: scan.last_hash,
            frontier: scan.frontier,
            segment,
            seg_file,
            seg_len,
            leaves,
            checkpoints,
            last_checkpoint: scan.last_checkpoint.as_ref().map_or(0, |c| c.size),
            failed: None,
        };
        if scan.last_checkpoint.is_none_or(|c| c.size != w.seq) {
            w.checkpoint_locked()?;
        }
        tracing::debug!(dir = %w.dir.display(), records = w.seq, "audit log open");
        Ok(w)
    }

    /// The trusted key for this log.
    pub(crate) fn verifier(&self) -> VerifierKey {
        self.signer.verifier()
    }

    /// Appends a batch with one write and one fsync. Each item gets its own result: an invalid
    /// event fails alone; a failed write fails the batch and stops the writer.
    pub(crate) fn append_batch(&mut self, items: Vec<(Actor, Value)>) -> Vec<Result<Receipt>> {
        let lock_path = self.dir.join(LOCK_FILE);
        let held = match self
            .lock
            .try_clone()
            .map_err(|e| AuditError::io("dup", &lock_path, e))
        {
            Ok(f) => f,
            Err(e) => return items.iter().map(|_| Err(e.clone_io())).collect(),
        };
        let _held = match Held::take(&held, &lock_path) {
            Ok(h) => h,
            Err(e) => return items.iter().map(|_| Err(e.clone_io())).collect(),
        };
        if let Err(e) = self.catch_up() {
            return items.iter().map(|_| Err(e.clone_io())).collect();
        }
        if let Some(why) = &self.failed {
            return items
                .iter()
                .map(|_| Err(AuditError::Closed(Some(why.clone()))))
                .collect();
        }
        let time = now_ms();
        let mut results = Vec::with_capacity(items.len());
        let mut lines = Vec::with_capacity(items.len());
        let mut buf = Vec::new();
        let (mut seq, mut prev) = (self.seq, self.last_hash);
        let mut hashes = Vec::with_capacity(items.len());
        for (actor, event) in items {
            let rec = Record::build(seq, time, actor, event, prev).and_then(|(r, line)| {
                match line.len() < MAX_LINE {
                    true => Ok((r, line)),
                    false => Err(AuditError::InvalidEvent(format!(
                        "record is {} bytes, the limit is {MAX_LINE}",
                        line.len()
                    ))),
                }
            });
            match rec {
                Ok((r, line)) => {
                    buf.extend_from_slice(&line);
                    buf.push(b'\n');
                    lines.push(line);
                    hashes.push(r.hash);
                    results.push(Ok(Receipt { seq, hash: r.hash }));
                    (seq, prev) = (seq + 1, r.hash);
                }
                Err(e) => results.push(Err(e)),
            }
        }
        if hashes.is_empty() {
            return results;
        }
        if let Err(e) = self.write_durably(&buf, &hashes) {
            let why = e.to_string();
            tracing::error!(dir = %self.dir.display(), error = %why, "audit write failed; the log stops accepting records");
            self.failed = Some(why.clone());
            return results
                .into_iter()
                .map(|r| r.and(Err(AuditError::Closed(Some(why.clone())))))
                .collect();
        }
        for h in &hashes {
            self.frontier.push(*h);
        }
        (self.seq, self.last_hash) = (seq, prev);
        self.exporter.export(&lines);
        if self.seq - self.last_checkpoint >= self.cfg.checkpoint_every
            && let Err(e) = self.checkpoint_locked()
        {
            tracing::warn!(error = %e, "audit checkpoint failed; will retry after the next batch");
        }
        results
    }

    fn write_durably(&mut self, buf: &[u8], hashes: &[Hash32]) -> Result<()> {
        if self.seg_len >= self.cfg.rotate_bytes {
            self.rotate()?;
        }
        let path = self.dir.join(segments::name(self.segment));
        self.seg_file
            .write_all(buf)
            .and_then(|()| self.seg_file.sync_data())
            .map_err(|e| AuditError::io("append records to", &path, e))?;
        self.seg_len += buf.len() as u64;
        let leaf_bytes: Vec<u8> = hashes.iter().flat_map(|h| h.0).collect();
        self.leaves
            .write_all(&leaf_bytes)
            .map_err(|e| AuditError::io("append to leaf-hash file in", &self.dir, e))
    }

    fn rotate(&mut self) -> Result<()> {
        let next = self.segment + 1;
        let path = self.dir.join(segments::name(next));
        let file = File::options()
            .create_new(true)
            .append(true)
            .open(&path)
            .map_err(|e| AuditError::io("create segment", &path, e))?;
        sync_dir(&self.dir)?;
        tracing::info!(path = %path.display(), first_seq = self.seq, "audit log rotated");
        (self.segment, self.seg_file, self.seg_len) = (next, file, 0);
        Ok(())
    }

    /// Signs and appends a checkpoint for the current size (of every process's records).
    pub(crate) fn checkpoint(&mut self) -> Result<Checkpoint> {
        let lock_path = self.dir.join(LOCK_FILE);
        let held = self
            .lock
            .try_clone()
            .map_err(|e| AuditError::io("dup", &lock_path, e))?;
        let _held = Held::take(&held, &lock_path)?;
        self.catch_up()?;
        self.checkpoint_locked()
    }

    /// Whether the files are no longer as this writer left them: another process appended,
    /// rotated or crashed mid-append since.
    #[allow(clippy::disallowed_methods)] // sync code, run on a blocking thread
    fn stale(&self) -> Result<bool> {
        let newest = segments::list(&self.dir)?.last().map(|(i, _)| *i);
        if newest.is_some_and(|i| i != self.segment) {
            return Ok(true);
        }
        let seg = self.dir.join(segments::name(self.segment));
        let seg_len = std::fs::metadata(&seg).map_or(0, |m| m.len());
        let leaves = self
            .leaves
            .metadata()
            .map_err(|e| AuditError::io("stat", &self.dir, e))?
            .len();
        Ok(seg_len != self.seg_len || leaves != self.seq * 32)
    }

    /// Catches up with what another process appended: only the new leaves when the files
    /// agree on them (time proportional to what is new), else the log loaded afresh from its
    /// tail, or by the full scan that also cuts a torn tail.
    fn catch_up(&mut self) -> Result<()> {
        if self.failed.is_some() || !self.stale()? {
            return Ok(());
        }
        if self.catch_up_appended()? {
            return Ok(());
        }
        tracing::debug!(dir = %self.dir.display(), "audit log changed by another process; reloading");
        let lock_path = self.dir.join(LOCK_FILE);
        let lock = self
            .lock
            .try_clone()
            .map_err(|e| AuditError::io("dup", &lock_path, e))?;
        *self = Writer::open_locked(self.cfg.clone(), lock, false)?;
        Ok(())
    }

    /// Takes in the records another process appended after this writer's last one, if the
    /// leaf file and the newest segment's last record agree on them.
    #[allow(clippy::disallowed_methods)] // sync code, run on a blocking thread
    fn catch_up_appended(&mut self) -> Result<bool> {
        use std::io::{Read, Seek, SeekFrom};
        let path = self.dir.join(crate::leaves::LEAVES_FILE);
        let mut f = File::open(&path).map_err(|e| AuditError::io("open", &path, e))?;
        let len = f
            .metadata()
            .map_err(|e| AuditError::io("stat", &path, e))?
            .len();
        let count = len / 32;
        if count <= self.seq || !len.is_multiple_of(32) {
            return Ok(false);
        }
        let mut new = vec![0u8; usize::try_from((count - self.seq) * 32).unwrap_or(0)];
        f.seek(SeekFrom::Start(self.seq * 32))
            .and_then(|_| f.read_exact(&mut new))
            .map_err(|e| AuditError::io("read", &path, e))?;
        let Some(last) = last_record(&self.dir, count, &new)? else {
            return Ok(false);
        };
        for chunk in new.chunks_exact(32) {
            self.frontier.push(hash_of(chunk));
        }
        if last.segment != self.segment {
            let seg_path = self.dir.join(segments::name(last.segment));
            self.seg_file = open_append(&seg_path)?;
            self.segment = last.segment;
        }
        (self.seq, self.last_hash, self.seg_len) = (count, last.record.hash, last.seg_len);
        Ok(true)
    }

    /// Signs and appends a checkpoint for the current size; the lock is held.
    fn checkpoint_locked(&mut self) -> Result<Checkpoint> {
        if let Some(why) = &self.failed {
            return Err(AuditError::Closed(Some(why.clone())));
        }
        let cp = Checkpoint {
            origin: self.signer.name().to_owned(),
            size: self.seq,
            root: self.frontier.root(),
        };
        let note = cp.sign(&self.signer)?;
        checkpoint::append(
            &mut self.checkpoints,
            &self.dir.join(CHECKPOINTS_FILE),
            &note,
        )?;
        self.last_checkpoint = cp.size;
        Ok(cp)
    }
}
