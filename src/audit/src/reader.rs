//! Reading records back for display (`luminaguard audit ls|show`). Records are checked one by
//! one (hash, canonical form) but not linked; [`crate::verify`] checks the whole log.

use std::path::Path;

use crate::error::{AuditError, Result};
use crate::record::{Record, RecordError};
use crate::segments::{self, Lines};
use crate::verify::{Finding, FindingKind};

/// The records of a log, in order. A torn last line (crash) is skipped with a warning; any
/// other bad line yields an error and ends the iteration.
#[derive(Debug)]
pub struct Records {
    lines: std::iter::Peekable<Lines>,
    names: Vec<String>,
    done: bool,
}

/// Reads the records of the log in `dir`.
pub fn read(dir: &Path) -> Result<Records> {
    let segs = segments::list(dir)?;
    let names = segs.iter().map(|(i, _)| segments::name(*i)).collect();
    Ok(Records {
        lines: Lines::new(segs.into_iter().map(|(_, p)| p).collect()).peekable(),
        names,
        done: false,
    })
}

/// The record with sequence number `seq`, if the log has it.
pub fn find(dir: &Path, seq: u64) -> Result<Option<Record>> {
    for r in read(dir)? {
        let r = r?;
        if r.seq == seq {
            return Ok(Some(r));
        }
    }
    Ok(None)
}

impl Iterator for Records {
    type Item = Result<Record>;

    fn next(&mut self) -> Option<Result<Record>> {
        if self.done {
            return None;
        }
        let line = match self.lines.next()? {
            Ok(l) => l,
            Err(e) => {
                self.done = true;
                return Some(Err(e));
            }
        };
        let is_last = self.lines.peek().is_none();
        let parsed = match line.terminated {
            true => Record::parse_line(&line.bytes),
            false => Err(RecordError::Parse("no newline at the end".into())),
        };
        match parsed {
            Ok(r) => Some(Ok(r)),
            Err(RecordError::Parse(why)) if is_last => {
                tracing::warn!(file = %self.names[line.segment], line = line.number, "skipping torn last line: {why}");
                None
            }
            Err(e) => {
                self.done = true;
                let kind = match e {
                    RecordError::HashMismatch { computed, stored } => {
                        FindingKind::Edited { computed, stored }
                    }
                    RecordError::NotCanonical => FindingKind::NotCanonical,
                    RecordError::Parse(w) | RecordError::Event(w) => FindingKind::Malformed(w),
                };
                Some(Err(AuditError::Tampered(Box::new(Finding {
                    kind,
                    file: Some(self.names[line.segment].clone()),
                    line: Some(line.number),
                    seq: None,
                }))))
            }
        }
    }
}
