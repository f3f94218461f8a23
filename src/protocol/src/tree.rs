//! A file tree as a byte stream: how a microVM review moves the workspace into the guest (the
//! input of [`crate::message::Request::ReviewSetup`]) and the guest's overlay upper layer back
//! out (the data of [`crate::message::Request::ReviewExport`]).
//!
//! The stream is a sequence of records: a little-endian `u32` length, then that many bytes of a
//! postcard-encoded [`TreeEntry`]. A [`TreeEntry::File`] record is followed by exactly `size`
//! bytes of content; the stream ends with [`TreeEntry::End`] and nothing after it. Parents come
//! before their children (a pre-order walk).
//!
//! Whoever reads a stream treats it as hostile: [`TreeDecoder`] bounds every record
//! ([`MAX_RECORD_LEN`]) and checks every path ([`check_path`]: relative, `/`-separated, no
//! empty, `.` or `..` component, no NUL, names of at most [`MAX_NAME_LEN`] bytes, at most
//! [`MAX_PATH_LEN`] in all) before anything acts on it. Names are bytes, not text.

use bytes::{Buf, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

/// Longest encoded record (a path and a link target of the longest allowed size fit).
pub const MAX_RECORD_LEN: usize = 16 << 10;
/// Longest name of one component (the kernel's `NAME_MAX`).
pub const MAX_NAME_LEN: usize = 255;
/// Longest path (the kernel's `PATH_MAX`).
pub const MAX_PATH_LEN: usize = 4096;
/// Longest symbolic link target.
pub const MAX_TARGET_LEN: usize = 4096;

/// A modification time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mtime {
    pub secs: i64,
    pub nanos: u32,
}

/// A file that is none of file, directory, symbolic link or whiteout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SpecialKind {
    Fifo,
    Socket,
    CharDevice { major: u32, minor: u32 },
    BlockDevice { major: u32, minor: u32 },
}

impl std::fmt::Display for SpecialKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Fifo => f.write_str("a fifo"),
            Self::Socket => f.write_str("a socket"),
            Self::CharDevice { major, minor } => write!(f, "a character device {major}:{minor}"),
            Self::BlockDevice { major, minor } => write!(f, "a block device {major}:{minor}"),
        }
    }
}

/// One record of a tree stream. Paths are relative to the tree's root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TreeEntry {
    /// A directory; `opaque`: an overlay upper directory that hides its lower counterpart.
    Dir {
        #[serde(with = "serde_bytes")]
        path: Vec<u8>,
        mode: u32,
        opaque: bool,
    },
    /// A regular file whose `size` bytes of content follow the record.
    File {
        #[serde(with = "serde_bytes")]
        path: Vec<u8>,
        mode: u32,
        size: u64,
        mtime: Option<Mtime>,
    },
    Symlink {
        #[serde(with = "serde_bytes")]
        path: Vec<u8>,
        #[serde(with = "serde_bytes")]
        target: Vec<u8>,
    },
    /// Another name of the regular file sent earlier in the same stream at `to`.
    HardLink {
        #[serde(with = "serde_bytes")]
        path: Vec<u8>,
        #[serde(with = "serde_bytes")]
        to: Vec<u8>,
    },
    /// An overlay whiteout: the lower entry of this name is deleted.
    Whiteout {
        #[serde(with = "serde_bytes")]
        path: Vec<u8>,
    },
    /// A fifo, socket or device: described, never carried.
    Special {
        #[serde(with = "serde_bytes")]
        path: Vec<u8>,
        kind: SpecialKind,
    },
    /// The last record: how many entries came before it and how many bytes of file content.
    End { entries: u64, file_bytes: u64 },
}

impl TreeEntry {
    /// The entry's path (`None` for [`TreeEntry::End`]).
    pub fn path(&self) -> Option<&[u8]> {
        match self {
            Self::Dir { path, .. }
            | Self::File { path, .. }
            | Self::Symlink { path, .. }
            | Self::HardLink { path, .. }
            | Self::Whiteout { path }
            | Self::Special { path, .. } => Some(path),
            Self::End { .. } => None,
        }
    }

    /// Checks every path and link target of the entry, and its mode.
    pub fn check(&self) -> Result<(), TreeError> {
        if let Some(p) = self.path() {
            check_path(p)?;
        }
        match self {
            Self::Dir { mode, .. } | Self::File { mode, .. } if mode & !0o7777 != 0 => {
                Err(TreeError::Invalid(format!(
                    "{}: mode {mode:#o} has bits beyond 0o7777",
                    show(self.path().unwrap_or_default())
                )))
            }
            Self::Symlink { path, target } => {
                if target.is_empty() || target.len() > MAX_TARGET_LEN || target.contains(&0) {
                    return Err(TreeError::Invalid(format!(
                        "{}: a link target must be 1 to {MAX_TARGET_LEN} bytes without NUL",
                        show(path)
                    )));
                }
                Ok(())
            }
            Self::HardLink { to, .. } => check_path(to),
            _ => Ok(()),
        }
    }
}

/// A path's bytes for a message: printable ASCII as is, everything else (newlines, escape
/// sequences, invalid UTF-8) as `\xNN`.
pub fn show(path: &[u8]) -> String {
    path.escape_ascii().to_string()
}

/// Accepts a relative, `/`-separated path without empty, `.` or `..` components or NUL bytes,
/// whose components are at most [`MAX_NAME_LEN`] and whose whole is at most [`MAX_PATH_LEN`]
/// bytes.
pub fn check_path(path: &[u8]) -> Result<(), TreeError> {
    let bad = |why: &str| Err(TreeError::Invalid(format!("path {:?}: {why}", show(path))));
    if path.is_empty() {
        return bad("empty");
    }
    if path.len() > MAX_PATH_LEN {
        return bad("longer than PATH_MAX");
    }
    if path.first() == Some(&b'/') {
        return bad("absolute");
    }
    if path.contains(&0) {
        return bad("contains NUL");
    }
    for c in path.split(|&b| b == b'/') {
        match c {
            b"" => return bad("has an empty component"),
            b"." | b".." => return bad("has a . or .. component"),
            c if c.len() > MAX_NAME_LEN => return bad("has a name longer than NAME_MAX"),
            _ => {}
        }
    }
    Ok(())
}

/// The parent of a checked path (`None` at the top) and its last component.
pub fn split_path(path: &[u8]) -> (Option<&[u8]>, &[u8]) {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => (Some(&path[..i]), &path[i + 1..]),
        None => (None, path),
    }
}

/// How deep a checked path is (1 for a top-level entry).
pub fn depth(path: &[u8]) -> usize {
    path.iter().filter(|&&b| b == b'/').count() + 1
}

/// Why a tree stream was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TreeError {
    /// A record's length is over [`MAX_RECORD_LEN`].
    #[error("a tree record of {0} bytes is over the {MAX_RECORD_LEN}-byte limit")]
    RecordTooLong(usize),
    /// A record does not decode.
    #[error("a tree record does not decode: {0}")]
    Malformed(String),
    /// A path, target or mode is not acceptable.
    #[error("invalid tree entry: {0}")]
    Invalid(String),
    /// The stream ended before its `End` record (or inside a file's content).
    #[error("the tree stream ended early")]
    Truncated,
    /// Bytes came after the `End` record.
    #[error("data after the end of the tree stream")]
    TrailingData,
}

/// Appends `entry` as one record to `out`.
pub fn encode_entry(entry: &TreeEntry, out: &mut Vec<u8>) -> Result<(), TreeError> {
    let bytes = postcard::to_allocvec(entry).map_err(|e| TreeError::Malformed(e.to_string()))?;
    if bytes.len() > MAX_RECORD_LEN {
        return Err(TreeError::RecordTooLong(bytes.len()));
    }
    let len = u32::try_from(bytes.len()).map_err(|_| TreeError::RecordTooLong(bytes.len()))?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&bytes);
    Ok(())
}

/// What a [`TreeDecoder`] found next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TreeEvent {
    /// An entry, checked ([`TreeEntry::check`]). A `File` is followed by its `Data` (if any)
    /// and a `FileEnd`.
    Entry(TreeEntry),
    /// The next piece of the current file's content.
    Data(Bytes),
    /// The current file's content is complete.
    FileEnd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Header,
    File { left: u64 },
    Ended,
}

/// An incremental decoder of a tree stream: [`TreeDecoder::push`] bytes as they arrive, take
/// events with [`TreeDecoder::next`] until it says `None`, and [`TreeDecoder::finish`] at the
/// end of the input.
#[derive(Debug)]
pub struct TreeDecoder {
    buf: BytesMut,
    state: State,
}

impl Default for TreeDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl TreeDecoder {
    pub fn new() -> Self {
        Self {
            buf: BytesMut::new(),
            state: State::Header,
        }
    }

    /// More of the stream.
    pub fn push(&mut self, data: &[u8]) -> Result<(), TreeError> {
        if self.state == State::Ended && !data.is_empty() {
            return Err(TreeError::TrailingData);
        }
        self.buf.extend_from_slice(data);
        Ok(())
    }

    /// The next event, `None` when more input is needed (or the stream has ended).
    pub fn next_event(&mut self) -> Result<Option<TreeEvent>, TreeError> {
        match self.state {
            State::Ended => {
                if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(TreeError::TrailingData)
                }
            }
            State::File { left: 0 } => {
                self.state = State::Header;
                Ok(Some(TreeEvent::FileEnd))
            }
            State::File { left } => {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                let n = usize::try_from(left)
                    .unwrap_or(usize::MAX)
                    .min(self.buf.len());
                let data = self.buf.split_to(n).freeze();
                self.state = State::File {
                    left: left - n as u64,
                };
                Ok(Some(TreeEvent::Data(data)))
            }
            State::Header => {
                let Some(len) = self.buf.get(..4) else {
                    return Ok(None);
                };
                let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
                if len > MAX_RECORD_LEN {
                    return Err(TreeError::RecordTooLong(len));
                }
                if self.buf.len() < 4 + len {
                    return Ok(None);
                }
                self.buf.advance(4);
                let record = self.buf.split_to(len);
                let (entry, rest): (TreeEntry, _) = postcard::take_from_bytes(&record)
                    .map_err(|e| TreeError::Malformed(e.to_string()))?;
                if !rest.is_empty() {
                    return Err(TreeError::Malformed(format!(
                        "{} bytes after the record's entry",
                        rest.len()
                    )));
                }
                entry.check()?;
                self.state = match &entry {
                    TreeEntry::File { size, .. } => State::File { left: *size },
                    TreeEntry::End { .. } => State::Ended,
                    _ => State::Header,
                };
                Ok(Some(TreeEvent::Entry(entry)))
            }
        }
    }

    /// The input is over: the stream must have ended with its `End` record, nothing after.
    pub fn finish(&self) -> Result<(), TreeError> {
        match self.state {
            State::Ended if self.buf.is_empty() => Ok(()),
            State::Ended => Err(TreeError::TrailingData),
            _ => Err(TreeError::Truncated),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(entries: &[(TreeEntry, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (e, data) in entries {
            encode_entry(e, &mut out).unwrap();
            out.extend_from_slice(data);
        }
        out
    }

    fn decode_in_pieces(bytes: &[u8], piece: usize) -> Result<Vec<TreeEvent>, TreeError> {
        let mut d = TreeDecoder::new();
        let mut events = Vec::new();
        for chunk in bytes.chunks(piece.max(1)) {
            d.push(chunk)?;
            while let Some(e) = d.next_event()? {
                events.push(e);
            }
        }
        d.finish()?;
        // Merge data pieces so that any split gives the same events.
        let mut merged: Vec<TreeEvent> = Vec::new();
        for e in events {
            match (merged.last_mut(), e) {
                (Some(TreeEvent::Data(a)), TreeEvent::Data(b)) => {
                    let mut v = a.to_vec();
                    v.extend_from_slice(&b);
                    *a = Bytes::from(v);
                }
                (_, e) => merged.push(e),
            }
        }
        Ok(merged)
    }

    fn sample() -> Vec<(TreeEntry, &'static [u8])> {
        vec![
            (
                TreeEntry::Dir {
                    path: b"d".to_vec(),
                    mode: 0o755,
                    opaque: true,
                },
                b"",
            ),
            (
                TreeEntry::File {
                    path: b"d/new\nline".to_vec(),
                    mode: 0o644,
                    size: 5,
                    mtime: Some(Mtime { secs: 1, nanos: 2 }),
                },
                b"hello",
            ),
            (
                TreeEntry::File {
                    path: b"empty".to_vec(),
                    mode: 0o600,
                    size: 0,
                    mtime: None,
                },
                b"",
            ),
            (
                TreeEntry::Symlink {
                    path: b"l".to_vec(),
                    target: b"/etc".to_vec(),
                },
                b"",
            ),
            (
                TreeEntry::HardLink {
                    path: b"h".to_vec(),
                    to: b"empty".to_vec(),
                },
                b"",
            ),
            (
                TreeEntry::Whiteout {
                    path: b"w\xff".to_vec(),
                },
                b"",
            ),
            (
                TreeEntry::End {
                    entries: 6,
                    file_bytes: 5,
                },
                b"",
            ),
        ]
    }

    #[test]
    fn a_stream_decodes_the_same_however_it_is_split() {
        let bytes = stream(&sample());
        let whole = decode_in_pieces(&bytes, bytes.len()).unwrap();
        assert_eq!(whole.len(), 10, "{whole:?}");
        assert_eq!(whole[2], TreeEvent::Data(Bytes::from_static(b"hello")));
        assert_eq!(whole[3], TreeEvent::FileEnd);
        assert_eq!(whole[5], TreeEvent::FileEnd);
        for piece in [1, 2, 3, 7, 64] {
            assert_eq!(decode_in_pieces(&bytes, piece).unwrap(), whole, "{piece}");
        }
    }

    #[test]
    fn truncated_trailing_and_oversized_streams_are_refused() {
        let bytes = stream(&sample());
        for cut in [1, 4, 10, bytes.len() - 1] {
            assert_eq!(
                decode_in_pieces(&bytes[..cut], 3),
                Err(TreeError::Truncated),
                "{cut}"
            );
        }
        let mut more = bytes.clone();
        more.push(0);
        assert_eq!(
            decode_in_pieces(&more, 5).unwrap_err(),
            TreeError::TrailingData
        );
        let mut long = (MAX_RECORD_LEN as u32 + 1).to_le_bytes().to_vec();
        long.extend(vec![0u8; 64]);
        assert!(matches!(
            decode_in_pieces(&long, 64),
            Err(TreeError::RecordTooLong(_))
        ));
        let garbage = [3u8, 0, 0, 0, 0xff, 0xff, 0xff];
        assert!(matches!(
            decode_in_pieces(&garbage, 7),
            Err(TreeError::Malformed(_))
        ));
    }

    #[test]
    fn hostile_paths_targets_and_modes_are_refused() {
        let long_name = vec![b'a'; MAX_NAME_LEN + 1];
        let long_path = [b"a/".repeat(MAX_PATH_LEN / 2), b"a".to_vec()].concat();
        for p in [
            &b""[..],
            b"/etc/passwd",
            b"..",
            b"a/../b",
            b"./a",
            b"a//b",
            b"a/",
            b"a\0b",
            &long_name,
            &long_path,
        ] {
            let e = TreeEntry::Whiteout { path: p.to_vec() };
            let bytes = stream(&[(e, b"")]);
            assert!(
                matches!(decode_in_pieces(&bytes, 9), Err(TreeError::Invalid(_))),
                "{}",
                show(p)
            );
        }
        for bad in [
            TreeEntry::Symlink {
                path: b"l".to_vec(),
                target: Vec::new(),
            },
            TreeEntry::Symlink {
                path: b"l".to_vec(),
                target: b"a\0".to_vec(),
            },
            TreeEntry::HardLink {
                path: b"h".to_vec(),
                to: b"../../etc/shadow".to_vec(),
            },
            TreeEntry::Dir {
                path: b"d".to_vec(),
                mode: 0o40755,
                opaque: false,
            },
        ] {
            let bytes = stream(&[(bad.clone(), b"")]);
            assert!(
                matches!(decode_in_pieces(&bytes, 9), Err(TreeError::Invalid(_))),
                "{bad:?}"
            );
        }
        assert!(check_path(&vec![b'a'; MAX_NAME_LEN]).is_ok());
        assert!(check_path(b"a/b c/\n\x1b[31m").is_ok());
        assert_eq!(show(b"a\nb\x1b"), "a\\nb\\x1b");
    }

    #[test]
    fn paths_split_into_parent_and_name() {
        assert_eq!(split_path(b"a"), (None, &b"a"[..]));
        assert_eq!(split_path(b"a/b/c"), (Some(&b"a/b"[..]), &b"c"[..]));
        assert_eq!(depth(b"a"), 1);
        assert_eq!(depth(b"a/b/c"), 3);
    }
}
