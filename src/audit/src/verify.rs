//! What verification reports: [`VerifyReport`] for a log that holds together, [`Finding`] for
//! the first thing that does not, and the [`verify`] entry point.

use std::fmt;
use std::path::Path;

use crate::checkpoint::Checkpoint;
use crate::error::Result;
use crate::hash::Hash32;
use crate::note::VerifierKey;
use crate::scan;

/// The first problem verification found, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// What is wrong.
    pub kind: FindingKind,
    /// The file it is in (a segment, or `checkpoints`), if it is in one.
    pub file: Option<String>,
    /// The 1-based line in that file.
    pub line: Option<usize>,
    /// The record's sequence number, or the position one was expected at.
    pub seq: Option<u64>,
}

/// The kinds of tampering (or damage) verification names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FindingKind {
    /// A line in the middle of the log is not a record at all.
    Malformed(String),
    /// A record's content was changed: its stored hash is not the hash of its content.
    Edited {
        /// Hash of the content as read.
        computed: Hash32,
        /// The record's `hash` field.
        stored: Hash32,
    },
    /// A record's text was re-encoded (whitespace, key order, escapes) — not written by us.
    NotCanonical,
    /// Records are missing: the next record's seq is past the expected one.
    RecordsDeleted {
        /// The seq that should come next.
        expected: u64,
        /// The seq found instead.
        found: u64,
    },
    /// Records are out of order (swapped, moved or duplicated).
    Reordered {
        /// The seq that should come next.
        expected: u64,
        /// The seq found instead.
        found: u64,
    },
    /// A record's `prev` is not the previous record's hash (a record before it was replaced,
    /// with its hash recomputed).
    ChainBroken {
        /// The previous record's hash.
        expected: Hash32,
        /// The `prev` field.
        found: Hash32,
    },
    /// A whole segment file is missing.
    MissingFile {
        /// Its expected name.
        name: String,
    },
    /// There are fewer records than a signed checkpoint covers: the tail (or the whole log)
    /// was removed.
    TruncatedTail {
        /// Records present.
        records: u64,
        /// Records the checkpoint signs for.
        checkpoint_size: u64,
    },
    /// The checkpoints file is missing although records exist.
    MissingCheckpoints,
    /// A checkpoint's signature does not verify with the trusted key (forged, re-signed with
    /// another key, or altered), or it is malformed.
    ForgedCheckpoint(String),
    /// A validly signed checkpoint's root does not match the records.
    RootMismatch {
        /// The checkpoint's tree size.
        size: u64,
        /// The root it signs.
        signed: Hash32,
        /// The root of the records.
        computed: Hash32,
    },
    /// A checkpoint's size is smaller than an earlier checkpoint's.
    CheckpointsOutOfOrder {
        /// The earlier, larger size.
        previous: u64,
        /// This size.
        size: u64,
    },
}

impl FindingKind {
    /// A stable, machine-readable name of the kind.
    pub fn code(&self) -> &'static str {
        match self {
            FindingKind::Malformed(_) => "malformed-record",
            FindingKind::Edited { .. } => "edited-record",
            FindingKind::NotCanonical => "re-encoded-record",
            FindingKind::RecordsDeleted { .. } => "deleted-records",
            FindingKind::Reordered { .. } => "reordered-records",
            FindingKind::ChainBroken { .. } => "broken-chain",
            FindingKind::MissingFile { .. } => "missing-file",
            FindingKind::TruncatedTail { .. } => "truncated-tail",
            FindingKind::MissingCheckpoints => "missing-checkpoints",
            FindingKind::ForgedCheckpoint(_) => "forged-checkpoint",
            FindingKind::RootMismatch { .. } => "root-mismatch",
            FindingKind::CheckpointsOutOfOrder { .. } => "checkpoints-out-of-order",
        }
    }
}

impl fmt::Display for FindingKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FindingKind::Malformed(why) => write!(f, "malformed record: {why}"),
            FindingKind::Edited { computed, stored } => write!(
                f,
                "edited record: its content hashes to {computed} but its hash field says {stored}"
            ),
            FindingKind::NotCanonical => {
                write!(f, "re-encoded record: the line is not in canonical form")
            }
            FindingKind::RecordsDeleted { expected, found } => write!(
                f,
                "deleted record(s): expected seq {expected}, found {found} ({} missing)",
                found - expected
            ),
            FindingKind::Reordered { expected, found } => write!(
                f,
                "reordered records: expected seq {expected}, found {found}"
            ),
            FindingKind::ChainBroken { expected, found } => write!(
                f,
                "broken hash chain: prev is {found}, the previous record's hash is {expected}"
            ),
            FindingKind::MissingFile { name } => write!(f, "deleted file: {name} is missing"),
            FindingKind::TruncatedTail {
                records,
                checkpoint_size,
            } => write!(
                f,
                "truncated tail: {records} record(s) present, a signed checkpoint covers {checkpoint_size}"
            ),
            FindingKind::MissingCheckpoints => {
                write!(f, "checkpoints file is missing but records exist")
            }
            FindingKind::ForgedCheckpoint(why) => write!(f, "forged checkpoint: {why}"),
            FindingKind::RootMismatch {
                size,
                signed,
                computed,
            } => write!(
                f,
                "checkpoint root mismatch at size {size}: signed {signed}, records give {computed}"
            ),
            FindingKind::CheckpointsOutOfOrder { previous, size } => write!(
                f,
                "checkpoints out of order: size {size} after size {previous}"
            ),
        }
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut wrote = false;
        if let Some(file) = &self.file {
            write!(f, "{file}")?;
            if let Some(line) = self.line {
                write!(f, " line {line}")?;
            }
            wrote = true;
        }
        if let Some(seq) = self.seq {
            write!(f, "{}seq {seq}", if wrote { ", " } else { "" })?;
            wrote = true;
        }
        if wrote {
            write!(f, ": ")?;
        }
        write!(f, "{}", self.kind)
    }
}

/// A log's tail cut by a crash: an unterminated or unparsable last line, or an incomplete last
/// checkpoint. Not tampering: nothing in it was ever acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    /// The file (a segment or `checkpoints`).
    pub file: String,
    /// The 1-based line where the torn part starts.
    pub line: usize,
    /// Its byte offset; opening the log for appending truncates the file here.
    pub offset: u64,
    /// How many bytes are torn.
    pub bytes: u64,
}

impl fmt::Display for TornTail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "torn tail: {} line {} ({} byte(s) from offset {}) is an interrupted write",
            self.file, self.line, self.bytes, self.offset
        )
    }
}

/// The result of verifying a log that holds together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Records verified.
    pub records: u64,
    /// Segment files read.
    pub files: usize,
    /// Checkpoints verified.
    pub checkpoints: usize,
    /// The latest checkpoint.
    pub last_checkpoint: Option<Checkpoint>,
    /// The Merkle root of all records.
    pub root: Hash32,
    /// Records after the latest checkpoint (chained, but not yet signed).
    pub unsigned_records: u64,
    /// A torn record line at the end of the last segment.
    pub torn_records: Option<TornTail>,
    /// A torn checkpoint at the end of the checkpoints file.
    pub torn_checkpoint: Option<TornTail>,
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "ok: {} record(s) in {} file(s), hash chain intact, root {}",
            self.records, self.files, self.root
        )?;
        match &self.last_checkpoint {
            Some(cp) => writeln!(
                f,
                "{} checkpoint(s) signed by {}, the latest at size {}; {} record(s) after it",
                self.checkpoints, cp.origin, cp.size, self.unsigned_records
            )?,
            None => writeln!(f, "no checkpoints yet")?,
        }
        for torn in [&self.torn_records, &self.torn_checkpoint]
            .into_iter()
            .flatten()
        {
            writeln!(f, "{torn} (not tampering; opening the log truncates it)")?;
        }
        Ok(())
    }
}

/// Verifies the log in `dir` against the trusted verifier key: every record's hash, the `prev`
/// chain, `seq` continuity, every segment file's presence, every checkpoint's signature and
/// its root against the records. Returns [`crate::AuditError::Tampered`] with the first
/// [`Finding`]; a torn tail after a crash is reported in the [`VerifyReport`], not as an error.
/// Reads the log once, in O(log n) memory (plus the checkpoint notes).
pub fn verify(dir: &Path, key: &VerifierKey) -> Result<VerifyReport> {
    let scan = scan::scan(dir, key, &mut |_, _| Ok(()))?;
    Ok(scan.report())
}
