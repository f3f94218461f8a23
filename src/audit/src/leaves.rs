//! The leaf-hash file `leaves.bin`: leaf hash `i` at byte offset `32 * i`. It is derived data
//! (rebuilt from the records when a log is opened) that lets proofs be made without reading
//! records or holding the tree in memory.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::error::{AuditError, Result};
use crate::hash::Hash32;
use crate::merkle::LeafSource;

/// The leaf-hash file's name in the audit dir.
pub const LEAVES_FILE: &str = "leaves.bin";

/// Reads leaf hashes from the leaf-hash file, sequential reads buffered.
#[derive(Debug)]
pub(crate) struct LeafFile {
    path: PathBuf,
    reader: BufReader<File>,
    /// Index of the leaf the reader's position is at.
    pos: u64,
    len: u64,
}

impl LeafFile {
    /// Opens `dir/leaves.bin` for reading.
    pub fn open(dir: &Path) -> Result<LeafFile> {
        let path = dir.join(LEAVES_FILE);
        let f = File::open(&path).map_err(|e| AuditError::io("open", &path, e))?;
        let len = f
            .metadata()
            .map_err(|e| AuditError::io("stat", &path, e))?
            .len()
            / 32;
        Ok(LeafFile {
            path,
            reader: BufReader::with_capacity(64 << 10, f),
            pos: 0,
            len,
        })
    }

    /// How many whole leaf hashes the file holds.
    pub fn len(&self) -> u64 {
        self.len
    }
}

impl LeafSource for LeafFile {
    fn leaf(&mut self, index: u64) -> Result<Hash32> {
        if index >= self.len {
            return Err(AuditError::Proof(format!(
                "leaf {index} is past the end of {} ({} leaves)",
                self.path.display(),
                self.len
            )));
        }
        if index != self.pos {
            self.reader
                .seek(SeekFrom::Start(index * 32))
                .map_err(|e| AuditError::io("seek", &self.path, e))?;
        }
        let mut h = [0u8; 32];
        self.reader
            .read_exact(&mut h)
            .map_err(|e| AuditError::io("read", &self.path, e))?;
        self.pos = index + 1;
        Ok(Hash32(h))
    }
}

/// Brings the leaf-hash file in line with the records while they are scanned: existing entries
/// that match are kept; from the first difference on, the file is rewritten.
#[derive(Debug)]
pub(crate) struct LeafSync {
    path: PathBuf,
    reader: Option<BufReader<File>>,
    writer: Option<BufWriter<File>>,
    existing: u64,
    repaired_from: Option<u64>,
}

impl LeafSync {
    /// Starts syncing `dir/leaves.bin` (created if missing).
    pub fn new(dir: &Path) -> Result<LeafSync> {
        let path = dir.join(LEAVES_FILE);
        let f = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| AuditError::io("open", &path, e))?;
        let existing = f
            .metadata()
            .map_err(|e| AuditError::io("stat", &path, e))?
            .len()
            / 32;
        Ok(LeafSync {
            path,
            reader: Some(BufReader::with_capacity(64 << 10, f)),
            writer: None,
            existing,
            repaired_from: None,
        })
    }

    /// Leaf `seq` has hash `h`.
    pub fn leaf(&mut self, seq: u64, h: &Hash32) -> Result<()> {
        if let Some(r) = self.reader.as_mut() {
            let mut have = [0u8; 32];
            if seq < self.existing && r.read_exact(&mut have).is_ok() && have == h.0 {
                return Ok(());
            }
            self.switch_to_writing(seq)?;
        }
        if let Some(w) = self.writer.as_mut() {
            w.write_all(&h.0)
                .map_err(|e| AuditError::io("write", &self.path, e))?;
        }
        Ok(())
    }

    fn switch_to_writing(&mut self, seq: u64) -> Result<()> {
        let Some(r) = self.reader.take() else {
            return Ok(());
        };
        let mut f = r.into_inner();
        f.set_len(seq * 32)
            .and_then(|()| f.seek(SeekFrom::Start(seq * 32)).map(drop))
            .map_err(|e| AuditError::io("truncate", &self.path, e))?;
        if seq < self.existing {
            self.repaired_from = Some(seq);
        }
        self.writer = Some(BufWriter::with_capacity(64 << 10, f));
        Ok(())
    }

    /// Ends the sync with `count` leaves and returns the file, positioned at its end, for
    /// appending.
    pub fn finish(mut self, count: u64) -> Result<File> {
        if self.reader.is_some() {
            self.switch_to_writing(count)?;
        }
        if let Some(seq) = self.repaired_from {
            tracing::warn!(path = %self.path.display(), from = seq, "leaf-hash file did not match the records; rebuilt it");
        }
        let w = self.writer.take().ok_or_else(|| {
            AuditError::io("finish", &self.path, std::io::Error::other("no writer"))
        })?;
        let mut f = w
            .into_inner()
            .map_err(|e| AuditError::io("write", &self.path, e.into_error()))?;
        f.seek(SeekFrom::End(0))
            .map_err(|e| AuditError::io("seek", &self.path, e))?;
        Ok(f)
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests do blocking file I/O on purpose
mod tests {
    use super::*;

    fn h(i: u64) -> Hash32 {
        crate::merkle::leaf_hash(&i.to_le_bytes())
    }

    #[test]
    fn sync_keeps_good_prefix_and_repairs_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = LeafSync::new(dir.path()).unwrap();
        for i in 0..10 {
            s.leaf(i, &h(i)).unwrap();
        }
        drop(s.finish(10).unwrap());
        // Corrupt leaf 4 and add junk at the end.
        let p = dir.path().join(LEAVES_FILE);
        let mut bytes = std::fs::read(&p).unwrap();
        bytes[4 * 32] ^= 1;
        bytes.extend_from_slice(&[0; 40]);
        std::fs::write(&p, bytes).unwrap();
        let mut s = LeafSync::new(dir.path()).unwrap();
        for i in 0..8 {
            s.leaf(i, &h(i)).unwrap();
        }
        drop(s.finish(8).unwrap());
        let mut lf = LeafFile::open(dir.path()).unwrap();
        assert_eq!(lf.len(), 8);
        for i in (0..8).rev() {
            assert_eq!(lf.leaf(i).unwrap(), h(i));
        }
        assert!(lf.leaf(8).is_err());
    }
}
