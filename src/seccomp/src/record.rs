//! The on-disk record of denied system calls, kept by a supervisor outside the sandbox.
//!
//! The supervisor that answers a sandbox's seccomp notifications (see [`crate::audit`]) is a
//! host process the sandbox cannot reach; it writes what it answered into a fixed-size file in
//! the sandbox's runtime directory, and whoever wants the record (`luminaguard run`, `sandbox
//! audit`, the service) reads the file: no request goes through the sandbox, so nothing in it can
//! hide or invent a denial.
//!
//! The writer ([`Writer`]) makes only `pread`/`pwrite` calls on memory it owns and never
//! allocates, so it can run in a process forked from a multi-threaded one. The file is a
//! seqlock: the sequence number is odd while an update is under way, and a reader ([`read`])
//! retries until it sees the same even number before and after its read.
//!
//! Layout (little-endian, [`FILE_LEN`] bytes):
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 8 | magic `LGSCAUD1` |
//! | 8 | 8 | sequence number |
//! | 16 | 8 | denials ever recorded |
//! | 24 | 40 | reserved (zero) |
//! | 64 | 8 × [`COUNT_SLOTS`] | denials per system call number; the last slot counts numbers beyond it |
//! | 8256 | 48 × [`RING`] | the most recent denials, a ring indexed by the running total |

use std::collections::{BTreeMap, VecDeque};
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};

use crate::audit::{AuditLog, Denial};

const MAGIC: [u8; 8] = *b"LGSCAUD1";
const SEQ: u64 = 8;
const TOTAL: u64 = 16;
const HEADER: u64 = 64;
/// Per-number counters; numbers from `COUNT_SLOTS - 1` up (and negative ones) share the last.
pub const COUNT_SLOTS: u64 = 1024;
/// How many recent denials are kept in detail (as many as [`AuditLog::CAPACITY`]).
pub const RING: u64 = AuditLog::CAPACITY as u64;
const ENTRY: u64 = 48;
const COUNTS_AT: u64 = HEADER;
const RING_AT: u64 = COUNTS_AT + 8 * COUNT_SLOTS;
/// The file's size.
pub const FILE_LEN: u64 = RING_AT + ENTRY * RING;

/// Why the record could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("cannot read the seccomp record {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a seccomp record ({reason})")]
    Corrupt { path: PathBuf, reason: &'static str },
    #[error("the seccomp record {0} kept changing while it was read")]
    Busy(PathBuf),
}

/// One denied call, as the supervisor saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawDenial {
    pub unix_ms: u64,
    pub nr: i32,
    pub arg0: u64,
    /// In the sandbox's PID namespace (0 when it could not be read).
    pub pid: u32,
    /// In the supervisor's PID namespace.
    pub host_pid: u32,
    /// `comm`, NUL-padded.
    pub comm: [u8; 16],
}

impl RawDenial {
    fn encode(&self) -> [u8; ENTRY as usize] {
        let mut out = [0u8; ENTRY as usize];
        let fields: [&[u8]; 6] = [
            &self.unix_ms.to_le_bytes(),
            &self.arg0.to_le_bytes(),
            &self.nr.to_le_bytes(),
            &self.pid.to_le_bytes(),
            &self.host_pid.to_le_bytes(),
            &self.comm,
        ];
        let mut at = 0;
        for f in fields {
            if let Some(dst) = out.get_mut(at..at + f.len()) {
                dst.copy_from_slice(f);
            }
            at += f.len();
        }
        out
    }

    fn decode(b: &[u8]) -> Self {
        let u64_at = |at: usize| {
            let mut x = [0u8; 8];
            if let Some(s) = b.get(at..at + 8) {
                x.copy_from_slice(s);
            }
            u64::from_le_bytes(x)
        };
        let u32_at = |at: usize| {
            let mut x = [0u8; 4];
            if let Some(s) = b.get(at..at + 4) {
                x.copy_from_slice(s);
            }
            u32::from_le_bytes(x)
        };
        let mut comm = [0u8; 16];
        if let Some(s) = b.get(28..44) {
            comm.copy_from_slice(s);
        }
        Self {
            unix_ms: u64_at(0),
            arg0: u64_at(8),
            nr: i32::from_le_bytes(u32_at(16).to_le_bytes()),
            pid: u32_at(20),
            host_pid: u32_at(24),
            comm,
        }
    }
}

/// The counter slot of system call `nr`.
fn slot(nr: i32) -> u64 {
    u64::try_from(nr).map_or(COUNT_SLOTS - 1, |n| n.min(COUNT_SLOTS - 1))
}

/// Writes denials into a record file. Async-signal-safe: `pread`/`pwrite` only, no allocation.
/// A clone writes the same file: give each process that writes it exactly one.
#[derive(Debug, Clone)]
pub struct Writer {
    fd: RawFd,
    seq: u64,
    total: u64,
}

/// An `errno` value.
pub type Errno = i32;

fn last_errno() -> Errno {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

fn pwrite_all(fd: RawFd, buf: &[u8], off: u64) -> Result<(), Errno> {
    let mut done = 0;
    while let Some(rest) = buf.get(done..).filter(|r| !r.is_empty()) {
        let o = libc::off_t::try_from(off + done as u64).map_err(|_| libc::EFBIG)?;
        // SAFETY: `rest` is valid for `rest.len()` bytes.
        let n = unsafe { libc::pwrite(fd, rest.as_ptr().cast(), rest.len(), o) };
        match usize::try_from(n) {
            Ok(0) => return Err(libc::EIO),
            Ok(n) => done += n,
            Err(_) if last_errno() == libc::EINTR => {}
            Err(_) => return Err(last_errno()),
        }
    }
    Ok(())
}

fn pread_u64(fd: RawFd, off: u64) -> Result<u64, Errno> {
    let mut b = [0u8; 8];
    let o = libc::off_t::try_from(off).map_err(|_| libc::EFBIG)?;
    loop {
        // SAFETY: `b` is valid for 8 bytes.
        let n = unsafe { libc::pread(fd, b.as_mut_ptr().cast(), b.len(), o) };
        match usize::try_from(n) {
            Ok(8) => return Ok(u64::from_le_bytes(b)),
            Ok(_) => return Err(libc::EIO),
            Err(_) if last_errno() == libc::EINTR => {}
            Err(_) => return Err(last_errno()),
        }
    }
}

impl Writer {
    /// Starts a new record in `fd`: an empty file open for reading and writing, which this
    /// makes [`FILE_LEN`] bytes long. Call it before forking the supervisor (it may be the only
    /// step that fails).
    pub fn create(fd: RawFd) -> Result<Self, Errno> {
        let len = libc::off_t::try_from(FILE_LEN).map_err(|_| libc::EFBIG)?;
        // SAFETY: plain system call on the caller's descriptor.
        if unsafe { libc::ftruncate(fd, len) } != 0 {
            return Err(last_errno());
        }
        pwrite_all(fd, &MAGIC, 0)?;
        Ok(Self {
            fd,
            seq: 0,
            total: 0,
        })
    }

    fn set_seq(&mut self, seq: u64) -> Result<(), Errno> {
        self.seq = seq;
        pwrite_all(self.fd, &seq.to_le_bytes(), SEQ)
    }

    /// Records one denial. Must be called before the denied call is answered, so that by the
    /// time the call returns in the sandbox, its record exists.
    pub fn record(&mut self, d: &RawDenial) -> Result<(), Errno> {
        self.set_seq(self.seq.wrapping_add(1) | 1)?;
        let at = RING_AT + ENTRY * (self.total % RING);
        let result = pwrite_all(self.fd, &d.encode(), at).and_then(|()| {
            let count_at = COUNTS_AT + 8 * slot(d.nr);
            let count = pread_u64(self.fd, count_at)?.saturating_add(1);
            pwrite_all(self.fd, &count.to_le_bytes(), count_at)?;
            self.total = self.total.saturating_add(1);
            pwrite_all(self.fd, &self.total.to_le_bytes(), TOTAL)
        });
        // Even again whatever happened: a reader must not spin on a half-done update forever.
        let closed = self.set_seq(self.seq.wrapping_add(1) & !1);
        result.and(closed)
    }
}

fn u64_le(b: &[u8], at: u64) -> u64 {
    let mut x = [0u8; 8];
    let at = usize::try_from(at).unwrap_or(usize::MAX);
    if let Some(s) = b.get(at..at.saturating_add(8)) {
        x.copy_from_slice(s);
    }
    u64::from_le_bytes(x)
}

/// Decodes a consistent image of the file.
fn decode(path: &Path, b: &[u8]) -> Result<AuditLog, RecordError> {
    let corrupt = |reason| RecordError::Corrupt {
        path: path.to_owned(),
        reason,
    };
    if b.len() as u64 != FILE_LEN {
        return Err(corrupt("wrong size"));
    }
    if b.get(..8) != Some(&MAGIC[..]) {
        return Err(corrupt("wrong magic"));
    }
    let total = u64_le(b, TOTAL);
    let kept = total.min(RING);
    let recent: VecDeque<Denial> = (total - kept..total)
        .map(|i| {
            let at = usize::try_from(RING_AT + ENTRY * (i % RING)).unwrap_or(usize::MAX);
            let raw = RawDenial::decode(b.get(at..).unwrap_or_default());
            let len = raw.comm.iter().position(|c| *c == 0).unwrap_or(16);
            Denial {
                unix_ms: raw.unix_ms,
                pid: raw.pid,
                comm: String::from_utf8_lossy(raw.comm.get(..len).unwrap_or_default()).into_owned(),
                syscall: crate::names::name(i64::from(raw.nr)),
                arg0: raw.arg0,
            }
        })
        .collect();
    let mut counts = BTreeMap::new();
    for s in 0..COUNT_SLOTS {
        let n = u64_le(b, COUNTS_AT + 8 * s);
        if n > 0 {
            let name = if s == COUNT_SLOTS - 1 {
                format!("syscall {}+ or negative", COUNT_SLOTS - 1)
            } else {
                crate::names::name(i64::try_from(s).unwrap_or(-1))
            };
            counts.insert(name, n);
        }
    }
    Ok(AuditLog {
        recent,
        counts,
        dropped: total - kept,
    })
}

/// Reads the record at `path`; `None` when there is no such file (no supervisor ran).
/// Blocking (a 20 KiB file): call it from a blocking context.
pub fn read(path: &Path) -> Result<Option<AuditLog>, RecordError> {
    use std::os::unix::fs::FileExt;
    let io = |source| RecordError::Io {
        path: path.to_owned(),
        source,
    };
    #[allow(clippy::disallowed_methods)] // blocking by contract
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(e)),
    };
    let mut image = vec![0u8; usize::try_from(FILE_LEN).unwrap_or(0)];
    // An update takes a few microseconds and each one waits for a denied call's round trip
    // through the kernel and the supervisor, so a read soon finds a quiet moment.
    let mut pause = std::time::Duration::from_micros(1);
    for _ in 0..64 {
        let mut n = 0;
        while n < image.len() {
            match file.read_at(image.get_mut(n..).unwrap_or_default(), n as u64) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io(e)),
            }
        }
        image.truncate(n);
        if n as u64 != FILE_LEN {
            return decode(path, &image).map(Some);
        }
        let before = u64_le(&image, SEQ);
        let mut after = [0u8; 8];
        file.read_exact_at(&mut after, SEQ).map_err(io)?;
        if before.is_multiple_of(2) && before == u64::from_le_bytes(after) {
            return decode(path, &image).map(Some);
        }
        image.resize(usize::try_from(FILE_LEN).unwrap_or(0), 0);
        #[allow(clippy::disallowed_methods)] // blocking by contract
        std::thread::sleep(pause);
        pause = (pause * 2).min(std::time::Duration::from_millis(10));
    }
    Err(RecordError::Busy(path.to_owned()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::disallowed_methods)]
    use super::*;
    use std::os::fd::AsRawFd;

    fn denial(nr: i32, i: u64) -> RawDenial {
        let mut comm = [0u8; 16];
        comm[..4].copy_from_slice(b"perl");
        RawDenial {
            unix_ms: i,
            nr,
            arg0: i * 2,
            pid: 7,
            host_pid: 7000,
            comm,
        }
    }

    #[test]
    fn records_round_trip_and_the_ring_keeps_the_newest() {
        let f = tempfile::NamedTempFile::new().unwrap();
        let mut w = Writer::create(f.as_file().as_raw_fd()).unwrap();
        assert_eq!(read(f.path()).unwrap().unwrap(), AuditLog::default());
        let extra = 10;
        for i in 0..RING + extra {
            let nr = if i % 2 == 0 {
                libc::SYS_mount as i32
            } else {
                5000
            };
            w.record(&denial(nr, i)).unwrap();
        }
        let log = read(f.path()).unwrap().unwrap();
        assert_eq!(log.recent.len() as u64, RING);
        assert_eq!(log.dropped, extra);
        assert_eq!(log.recent.front().unwrap().unix_ms, extra, "oldest kept");
        assert_eq!(log.recent.back().unwrap().unix_ms, RING + extra - 1);
        let last = log.recent.back().unwrap();
        assert_eq!(
            (last.pid, last.comm.as_str(), last.arg0),
            (7, "perl", 2 * (RING + extra - 1))
        );
        assert_eq!(log.counts["mount"], (RING + extra) / 2);
        assert_eq!(log.total(), RING + extra);
        assert_eq!(log.recent[0].syscall, "mount");
        assert!(
            log.recent[1].syscall.contains("5000"),
            "{}",
            log.recent[1].syscall
        );
    }

    #[test]
    fn a_missing_file_is_no_record_and_a_foreign_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read(&dir.path().join("none")).unwrap().is_none());
        let bad = dir.path().join("bad");
        std::fs::write(&bad, vec![0u8; FILE_LEN as usize]).unwrap();
        assert!(matches!(read(&bad), Err(RecordError::Corrupt { .. })));
        std::fs::write(&bad, b"short").unwrap();
        assert!(matches!(read(&bad), Err(RecordError::Corrupt { .. })));
    }

    #[test]
    fn a_reader_never_sees_an_update_half_done() {
        let f = tempfile::NamedTempFile::new().unwrap();
        let mut w = Writer::create(f.as_file().as_raw_fd()).unwrap();
        let path = f.path().to_owned();
        let reader = std::thread::spawn(move || {
            for _ in 0..200 {
                let log = read(&path).unwrap().unwrap();
                // Every update writes the entry, the count and the total together.
                assert_eq!(log.total(), log.recent.len() as u64 + log.dropped);
            }
        });
        // Each denial is a round trip through the kernel and the supervisor: model its pause.
        for i in 0..5_000 {
            w.record(&denial(libc::SYS_ptrace as i32, i)).unwrap();
            std::thread::sleep(std::time::Duration::from_micros(10));
        }
        reader.join().unwrap();
    }
}
