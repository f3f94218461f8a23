//! One pass over a log directory that checks everything verification checks and returns the
//! state an appender continues from. Both [`crate::verify`] and opening a log use it, so the
//! writer never continues a log that would not verify.

use std::iter::Peekable;
use std::path::{Path, PathBuf};

use crate::checkpoint::{self, Checkpoint};
use crate::error::{AuditError, Result};
use crate::hash::Hash32;
use crate::merkle::Frontier;
use crate::note::VerifierKey;
use crate::record::{Record, RecordError};
use crate::segments::{self, Line, Lines};
use crate::verify::{Finding, FindingKind, TornTail, VerifyReport};

/// The checkpoints file's name in the audit dir.
pub const CHECKPOINTS_FILE: &str = "checkpoints";

/// What a scan found.
#[derive(Debug)]
pub struct Scan {
    /// Records that verified.
    pub count: u64,
    /// The last record's hash (zero if none).
    pub last_hash: Hash32,
    /// The tree of all records.
    pub frontier: Frontier,
    /// The segment files, in order.
    pub segments: Vec<(u64, PathBuf)>,
    /// Checkpoints that verified.
    pub checkpoints: usize,
    /// The latest checkpoint.
    pub last_checkpoint: Option<Checkpoint>,
    /// A torn line at the end of the last segment.
    pub torn_records: Option<TornTail>,
    /// A torn note at the end of the checkpoints file.
    pub torn_checkpoint: Option<TornTail>,
}

impl Scan {
    /// The report a person reads.
    pub fn report(&self) -> VerifyReport {
        VerifyReport {
            records: self.count,
            files: self.segments.len(),
            checkpoints: self.checkpoints,
            last_checkpoint: self.last_checkpoint.clone(),
            root: self.frontier.root(),
            unsigned_records: self.count - self.last_checkpoint.as_ref().map_or(0, |c| c.size),
            torn_records: self.torn_records.clone(),
            torn_checkpoint: self.torn_checkpoint.clone(),
        }
    }
}

fn tampered(
    kind: FindingKind,
    file: Option<String>,
    line: Option<usize>,
    seq: Option<u64>,
) -> AuditError {
    AuditError::Tampered(Box::new(Finding {
        kind,
        file,
        line,
        seq,
    }))
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// A checkpoint and the line of the checkpoints file it starts on.
type Located = (usize, Checkpoint);

/// Reads and verifies the checkpoints file: signatures, origin, sizes never decreasing.
fn read_checkpoints(dir: &Path, key: &VerifierKey) -> Result<(Vec<Located>, Option<TornTail>)> {
    let path = dir.join(CHECKPOINTS_FILE);
    let file = checkpoint::read_file(&path)?;
    let mut out: Vec<Located> = Vec::with_capacity(file.notes.len());
    for (line, note) in &file.notes {
        let at = |kind| tampered(kind, Some(CHECKPOINTS_FILE.into()), Some(*line), None);
        let cp = Checkpoint::verify(note, key)
            .map_err(|e| at(FindingKind::ForgedCheckpoint(e.to_string())))?;
        if let Some((_, prev)) = out.last()
            && cp.size < prev.size
        {
            return Err(at(FindingKind::CheckpointsOutOfOrder {
                previous: prev.size,
                size: cp.size,
            }));
        }
        out.push((*line, cp));
    }
    let torn = (file.torn_bytes > 0).then(|| TornTail {
        file: CHECKPOINTS_FILE.into(),
        line: file
            .notes
            .last()
            .map_or(1, |(l, n)| l + n.lines().count() + 1),
        offset: file.good_len,
        bytes: file.torn_bytes,
    });
    Ok((out, torn))
}

/// Scans the log in `dir`, verifying it with `key`; `on_leaf(seq, hash)` sees each record's
/// leaf hash in order. The first problem is returned as [`AuditError::Tampered`].
#[allow(clippy::disallowed_methods)] // sync code, run on a blocking thread
pub fn scan(
    dir: &Path,
    key: &VerifierKey,
    on_leaf: &mut dyn FnMut(u64, &Hash32) -> Result<()>,
) -> Result<Scan> {
    std::fs::metadata(dir).map_err(|e| AuditError::io("open audit dir", dir, e))?;
    let (checkpoints, torn_checkpoint) = read_checkpoints(dir, key)?;
    let segments = segments::list(dir)?;
    for (want, (have, _)) in segments.iter().enumerate() {
        if *have != want as u64 {
            return Err(tampered(
                FindingKind::MissingFile {
                    name: segments::name(want as u64),
                },
                None,
                None,
                None,
            ));
        }
    }
    let names: Vec<String> = segments.iter().map(|(_, p)| file_name(p)).collect();
    let mut lines = Lines::new(segments.iter().map(|(_, p)| p.clone()).collect()).peekable();
    let mut s = Scan {
        count: 0,
        last_hash: Hash32::ZERO,
        frontier: Frontier::new(),
        segments: segments.clone(),
        checkpoints: checkpoints.len(),
        last_checkpoint: checkpoints.last().map(|(_, c)| c.clone()),
        torn_records: None,
        torn_checkpoint,
    };
    let mut pending = checkpoints.iter().peekable();
    check_roots(&mut pending, &s.frontier)?;
    while let Some(line) = lines.next() {
        let line = line?;
        let is_last = lines.peek().is_none();
        let at = |kind, seq| {
            tampered(
                kind,
                Some(names[line.segment].clone()),
                Some(line.number),
                seq,
            )
        };
        let parsed = match line.terminated {
            true => Record::parse_line(&line.bytes),
            false => Err(RecordError::Parse("no newline at the end".into())),
        };
        let r = match parsed {
            Ok(r) => r,
            Err(RecordError::Parse(_)) if is_last => {
                s.torn_records = Some(TornTail {
                    file: names[line.segment].clone(),
                    line: line.number,
                    offset: line.offset,
                    bytes: line.bytes.len() as u64 + u64::from(line.terminated),
                });
                break;
            }
            Err(RecordError::Parse(why) | RecordError::Event(why)) => {
                return Err(at(FindingKind::Malformed(why), Some(s.count)));
            }
            Err(RecordError::HashMismatch { computed, stored }) => {
                return Err(at(FindingKind::Edited { computed, stored }, seq_of(&line)));
            }
            Err(RecordError::NotCanonical) => {
                return Err(at(FindingKind::NotCanonical, seq_of(&line)));
            }
        };
        if r.seq != s.count {
            return Err(at(seq_finding(s.count, r.seq, &mut lines), Some(r.seq)));
        }
        if r.prev != s.last_hash {
            return Err(at(
                FindingKind::ChainBroken {
                    expected: s.last_hash,
                    found: r.prev,
                },
                Some(r.seq),
            ));
        }
        on_leaf(r.seq, &r.hash)?;
        s.frontier.push(r.hash);
        s.last_hash = r.hash;
        s.count += 1;
        check_roots(&mut pending, &s.frontier)?;
    }
    // Name the latest checkpoint: it says how much is missing in all.
    if let Some((line, cp)) = pending.last() {
        return Err(tampered(
            FindingKind::TruncatedTail {
                records: s.count,
                checkpoint_size: cp.size,
            },
            Some(CHECKPOINTS_FILE.into()),
            Some(*line),
            Some(s.count),
        ));
    }
    if checkpoints.is_empty() && s.count > 0 {
        return Err(tampered(FindingKind::MissingCheckpoints, None, None, None));
    }
    Ok(s)
}

/// The seq a line claims, for locating a finding (best effort on a record that did not check).
fn seq_of(line: &Line) -> Option<u64> {
    serde_json::from_slice::<serde_json::Value>(&line.bytes)
        .ok()
        .and_then(|v| v.get("seq").and_then(serde_json::Value::as_u64))
}

/// Names a seq discontinuity: a swapped pair (found = expected + 1 and the next line is
/// `expected`) or going backwards is a reordering; a jump forward is a deletion.
fn seq_finding(expected: u64, found: u64, lines: &mut Peekable<Lines>) -> FindingKind {
    let next_seq = match lines.peek() {
        Some(Ok(next)) => seq_of(next),
        _ => None,
    };
    if found < expected || next_seq.is_some_and(|n| n < found) {
        FindingKind::Reordered { expected, found }
    } else {
        FindingKind::RecordsDeleted { expected, found }
    }
}

/// Checks every pending checkpoint whose size is the frontier's size against its root.
fn check_roots<'a>(
    pending: &mut Peekable<impl Iterator<Item = &'a (usize, Checkpoint)>>,
    frontier: &Frontier,
) -> Result<()> {
    while let Some((line, cp)) = pending.next_if(|(_, cp)| cp.size == frontier.size()) {
        let computed = frontier.root();
        if computed != cp.root {
            return Err(tampered(
                FindingKind::RootMismatch {
                    size: cp.size,
                    signed: cp.root,
                    computed,
                },
                Some(CHECKPOINTS_FILE.into()),
                Some(*line),
                Some(cp.size),
            ));
        }
    }
    Ok(())
}
