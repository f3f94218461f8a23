//! The log's record files (`audit-000000.jsonl`, `audit-000001.jsonl`, …): naming, listing, and
//! reading them line by line with positions.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use crate::error::{AuditError, Result};

/// The longest line (record) the log writes or reads: 16 MiB. A longer line is read as an
/// unterminated line of this length.
pub const MAX_LINE: usize = 16 << 20;

/// The file name of segment `index`.
pub fn name(index: u64) -> String {
    format!("audit-{index:06}.jsonl")
}

/// The segment index in a file name, if it is a segment's name.
pub fn parse_name(file_name: &str) -> Option<u64> {
    let digits = file_name.strip_prefix("audit-")?.strip_suffix(".jsonl")?;
    match digits.len() >= 6 && digits.bytes().all(|c| c.is_ascii_digit()) {
        true => digits.parse().ok(),
        false => None,
    }
}

/// The segments in `dir`, sorted by index (gaps are the caller's to judge).
#[allow(clippy::disallowed_methods)] // sync code, run on a blocking thread
pub fn list(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| AuditError::io("list", dir, e))? {
        let entry = entry.map_err(|e| AuditError::io("list", dir, e))?;
        if let Some(i) = entry.file_name().to_str().and_then(parse_name) {
            out.push((i, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// One line of a segment.
#[derive(Debug)]
pub struct Line {
    /// Index into the segment list this line came from.
    pub segment: usize,
    /// 1-based line number in its file.
    pub number: usize,
    /// Byte offset of the line's start in its file.
    pub offset: u64,
    /// The line without its newline.
    pub bytes: Vec<u8>,
    /// Whether it ended with a newline (false only for a file's last line).
    pub terminated: bool,
}

/// Reads the lines of several segments in order, one line in memory at a time.
#[derive(Debug)]
pub struct Lines {
    files: Vec<PathBuf>,
    current: Option<(usize, BufReader<std::fs::File>, usize, u64)>,
    next_file: usize,
}

impl Lines {
    /// Lines of `files`, in the given order.
    pub fn new(files: Vec<PathBuf>) -> Lines {
        Lines {
            files,
            current: None,
            next_file: 0,
        }
    }

    fn read_line(&mut self) -> Result<Option<Line>> {
        loop {
            if self.current.is_none() {
                let Some(path) = self.files.get(self.next_file) else {
                    return Ok(None);
                };
                let f = std::fs::File::open(path).map_err(|e| AuditError::io("open", path, e))?;
                self.current = Some((self.next_file, BufReader::with_capacity(256 << 10, f), 0, 0));
                self.next_file += 1;
            }
            let Some((segment, reader, number, offset)) = self.current.as_mut() else {
                continue;
            };
            let mut bytes = Vec::new();
            let n = reader
                .by_ref()
                .take(MAX_LINE as u64 + 1)
                .read_until(b'\n', &mut bytes)
                .map_err(|e| AuditError::io("read", &self.files[*segment], e))?;
            if n == 0 {
                self.current = None;
                continue;
            }
            let terminated = bytes.last() == Some(&b'\n');
            if terminated {
                bytes.pop();
            }
            *number += 1;
            let line = Line {
                segment: *segment,
                number: *number,
                offset: *offset,
                bytes,
                terminated,
            };
            *offset += n as u64;
            return Ok(Some(line));
        }
    }
}

impl Iterator for Lines {
    type Item = Result<Line>;
    fn next(&mut self) -> Option<Result<Line>> {
        self.read_line().transpose()
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests do blocking file I/O on purpose
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(name(1), "audit-000001.jsonl");
        assert_eq!(parse_name("audit-000001.jsonl"), Some(1));
        assert_eq!(parse_name("audit-1234567.jsonl"), Some(1_234_567));
        assert_eq!(parse_name("audit-01.jsonl"), None);
        assert_eq!(parse_name("audit-00000x.jsonl"), None);
        assert_eq!(parse_name("leaves.bin"), None);
    }

    #[test]
    fn lines_across_files_with_positions() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join(name(0));
        let b = dir.path().join(name(1));
        std::fs::write(&a, "x\nyy\n").unwrap();
        std::fs::write(&b, "z\npartial").unwrap();
        let got: Vec<_> = Lines::new(list(dir.path()).unwrap().into_iter().map(|x| x.1).collect())
            .map(|l| {
                let l = l.unwrap();
                (
                    l.segment,
                    l.number,
                    l.offset,
                    String::from_utf8(l.bytes).unwrap(),
                    l.terminated,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (0, 1, 0, "x".into(), true),
                (0, 2, 2, "yy".into(), true),
                (1, 1, 0, "z".into(), true),
                (1, 2, 2, "partial".into(), false),
            ]
        );
    }
}
