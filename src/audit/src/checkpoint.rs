//! Checkpoints (<https://c2sp.org/tlog-checkpoint>): the body `<origin>\n<size>\n<base64
//! root>\n` signed as a note, and the append-only checkpoints file that holds one note after
//! another, each followed by one empty line.

use std::fmt;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use crate::error::{AuditError, Result};
use crate::hash::Hash32;
use crate::note::{NoteSigner, VerifierKey};

/// A checkpoint body: the log's origin, a tree size and the Merkle root at that size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's origin line (its key name).
    pub origin: String,
    /// How many records the tree has.
    pub size: u64,
    /// The RFC 6962 root of those records.
    pub root: Hash32,
}

impl fmt::Display for Checkpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            B64.encode(self.root.0)
        )
    }
}

impl Checkpoint {
    /// Parses a checkpoint body (extension lines after the third are ignored).
    pub fn parse(text: &str) -> Result<Checkpoint> {
        let bad = |why: &str| AuditError::BadNote(format!("checkpoint body: {why}"));
        let mut lines = text.split('\n');
        let (Some(origin), Some(size), Some(root)) = (lines.next(), lines.next(), lines.next())
        else {
            return Err(bad("fewer than three lines"));
        };
        if origin.is_empty() {
            return Err(bad("empty origin"));
        }
        let size_ok = !size.is_empty()
            && size.bytes().all(|c| c.is_ascii_digit())
            && (size == "0" || !size.starts_with('0'));
        let size: u64 = match size_ok {
            true => size.parse().map_err(|_| bad("tree size out of range"))?,
            false => return Err(bad("tree size is not a decimal number")),
        };
        let root: [u8; 32] = B64
            .decode(root)
            .ok()
            .and_then(|r| r.try_into().ok())
            .ok_or_else(|| bad("root hash is not base64 of 32 bytes"))?;
        Ok(Checkpoint {
            origin: origin.to_owned(),
            size,
            root: Hash32(root),
        })
    }

    /// Signs the checkpoint: the whole signed note.
    pub fn sign(&self, signer: &NoteSigner) -> Result<String> {
        signer.sign(&self.to_string())
    }

    /// Verifies a signed checkpoint note with `key` and parses it; its origin must be the
    /// key's name.
    pub fn verify(note: &str, key: &VerifierKey) -> Result<Checkpoint> {
        let cp = Checkpoint::parse(key.verify(note)?)?;
        if cp.origin != key.name() {
            return Err(AuditError::BadNote(format!(
                "origin {:?} is not the key's name {:?}",
                cp.origin,
                key.name()
            )));
        }
        Ok(cp)
    }
}

/// The notes in a checkpoints file, and whether its end was torn.
#[derive(Debug, Default)]
pub struct CheckpointFile {
    /// Each complete note, with the 1-based line it starts on.
    pub notes: Vec<(usize, String)>,
    /// Byte length of the complete part; anything after it is a torn tail.
    pub good_len: u64,
    /// Bytes after `good_len` (an interrupted write).
    pub torn_bytes: u64,
}

/// Reads the checkpoints file (missing file = no notes). A note ends at the empty line after
/// its signature lines; a final note without that empty line is a torn tail.
#[allow(clippy::disallowed_methods)] // sync code, run on a blocking thread or the writer thread
pub fn read_file(path: &Path) -> Result<CheckpointFile> {
    let mut data = Vec::new();
    match std::fs::File::open(path) {
        Ok(mut f) => f
            .read_to_end(&mut data)
            .map_err(|e| AuditError::io("read", path, e))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(AuditError::io("open", path, e)),
    };
    let mut out = CheckpointFile::default();
    let (mut start, mut line_no, mut note_line) = (0usize, 1usize, 1usize);
    let mut in_sigs = false;
    let mut pos = 0usize;
    while let Some(off) = data[pos..].iter().position(|&b| b == b'\n') {
        let line = &data[pos..pos + off];
        pos += off + 1;
        line_no += 1;
        if !line.is_empty() {
            continue;
        }
        if !in_sigs {
            in_sigs = true; // the blank line between text and signatures
            continue;
        }
        let note = String::from_utf8_lossy(&data[start..pos - 1]).into_owned();
        out.notes.push((note_line, note));
        start = pos;
        note_line = line_no;
        in_sigs = false;
    }
    out.good_len = start as u64;
    out.torn_bytes = (data.len() - start) as u64;
    Ok(out)
}

/// Appends `note` and an empty line to the checkpoints file and fsyncs it.
pub fn append(file: &mut std::fs::File, path: &Path, note: &str) -> Result<()> {
    let mut buf = note.as_bytes().to_vec();
    buf.push(b'\n');
    file.seek(SeekFrom::End(0))
        .and_then(|_| file.write_all(&buf))
        .and_then(|()| file.sync_data())
        .map_err(|e| AuditError::io("append checkpoint to", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_round_trip_and_strict_parse() {
        let cp = Checkpoint {
            origin: "example.com/log".into(),
            size: 42,
            root: Hash32([3; 32]),
        };
        assert_eq!(Checkpoint::parse(&cp.to_string()).unwrap(), cp);
        assert!(Checkpoint::parse("o\n042\nAAAA\n").is_err());
        assert!(Checkpoint::parse("o\n-1\nAAAA\n").is_err());
        assert!(Checkpoint::parse("o\n1\nAAAA\n").is_err());
        assert!(Checkpoint::parse("\n1\n").is_err());
    }

    #[test]
    fn file_with_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("checkpoints");
        let s = NoteSigner::from_seed("o", &[1; 32]).unwrap();
        let mut f = std::fs::File::create(&p).unwrap();
        for size in [0, 5] {
            let cp = Checkpoint {
                origin: "o".into(),
                size,
                root: Hash32([size as u8; 32]),
            };
            append(&mut f, &p, &cp.sign(&s).unwrap()).unwrap();
        }
        let whole = read_file(&p).unwrap();
        assert_eq!(whole.notes.len(), 2);
        assert_eq!(whole.torn_bytes, 0);
        assert_eq!(whole.notes[1].0, 7);
        let v = s.verifier();
        assert_eq!(Checkpoint::verify(&whole.notes[1].1, &v).unwrap().size, 5);
        f.write_all(b"o\n9\n").unwrap();
        let torn = read_file(&p).unwrap();
        assert_eq!(torn.notes.len(), 2);
        assert_eq!((torn.good_len, torn.torn_bytes), (whole.good_len, 4));
    }
}
