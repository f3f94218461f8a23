//! The change set data model: what a card shows, travels as JSON, and what `apply` executes.

use serde::{Deserialize, Serialize};

use crate::ReviewError;
use crate::path::{ByteString, RelPath};

/// The type of a file-system object on either side of a change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link (never followed).
    Symlink,
}

impl FileKind {
    /// A short word for the card.
    pub fn word(self) -> &'static str {
        match self {
            FileKind::File => "file",
            FileKind::Dir => "dir",
            FileKind::Symlink => "symlink",
        }
    }
}

/// One side (before or after) of a change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// File, dir or symlink.
    pub kind: FileKind,
    /// Permission bits including setuid/setgid/sticky (`st_mode & 0o7777`).
    pub mode: u32,
    /// Size in bytes (files: content length; symlinks: target length; dirs: 0).
    pub size: u64,
    /// Hex SHA-256 of the content (files only).
    pub sha256: Option<String>,
    /// Link target (symlinks only), raw bytes.
    pub target: Option<ByteString>,
}

/// What happened to a path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ChangeKind {
    /// A new path (`before` is `None`).
    Added,
    /// Same type, different content or link target (mode may differ too).
    Modified,
    /// Same type and content, different permission bits.
    ModeChanged,
    /// The path is gone (`after` is `None`).
    Deleted,
    /// The path holds a different type of object (file → symlink, dir → file, …).
    TypeChanged,
    /// A file moved: `from` (whose state is `before`) is deleted and `path` (`after`) added with
    /// the same content. Applied as delete + add.
    Renamed {
        /// The old path.
        from: RelPath,
    },
    /// `path` is a hard link to `target` (same inode in the upper dir); `after` is the shared
    /// file's state and `before` whatever `path` held.
    HardLink {
        /// The other name of the inode (the primary name of its link group: one the workspace
        /// already holds unchanged if there is one, else the smallest path).
        target: RelPath,
    },
    /// An entry that cannot be applied; a change set holding one cannot be applied at all.
    Refused {
        /// Why (fifo, socket, device, setuid file, …).
        reason: String,
    },
}

/// One change: a path and its states before (in the workspace) and after (in the upper dir).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// The path, relative to the workspace root.
    pub path: RelPath,
    /// What happened.
    pub kind: ChangeKind,
    /// The workspace state (`None`: did not exist).
    pub before: Option<Meta>,
    /// The upper state (`None`: removed).
    pub after: Option<Meta>,
}

/// Counts on the card's header.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Added paths (files, dirs, symlinks).
    pub added: usize,
    /// Content / link target changes.
    pub modified: usize,
    /// Removed paths.
    pub deleted: usize,
    /// Permission-only changes.
    pub mode_changed: usize,
    /// Type changes.
    pub type_changed: usize,
    /// Renames.
    pub renamed: usize,
    /// Hard links.
    pub hard_links: usize,
    /// Refused entries.
    pub refused: usize,
    /// Bytes of file content the apply writes that the workspace does not hold yet (added,
    /// modified, type-changed files; renames move bytes and count in neither).
    pub bytes_added: u64,
    /// Bytes of workspace file content the apply replaces or removes.
    pub bytes_removed: u64,
}

/// Bounds on scanning and rendering.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Hard cap on entries visited in the upper dir (and in deleted lower subtrees); beyond it,
    /// [`ReviewError::TooLarge`].
    pub max_entries: usize,
    /// More entries than this and the card is summarised.
    pub max_shown: usize,
    /// Unified diff bytes shown per file before it is cut.
    pub max_diff_bytes_per_file: usize,
    /// Unified diff bytes shown on the whole card.
    pub max_diff_bytes_total: usize,
    /// Files larger than this (either side) are not diffed; size and hash are shown instead.
    pub max_diff_input_bytes: u64,
    /// Deepest nesting scanned (components); beyond it, [`ReviewError::TooLarge`].
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_entries: 100_000,
            max_shown: 200,
            max_diff_bytes_per_file: 16 * 1024,
            max_diff_bytes_total: 256 * 1024,
            max_diff_input_bytes: 1024 * 1024,
            max_depth: 128,
        }
    }
}

/// Everything a speculative run changed, with a digest over all of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeSet {
    /// The changes, sorted by path.
    pub entries: Vec<Change>,
    /// Hex SHA-256 over the canonical serialisation of all entries ([`crate::digest`]).
    pub digest: String,
    /// Counts.
    pub summary: Summary,
}

impl ChangeSet {
    /// Builds a change set: sorts the entries by path, computes the summary and the digest.
    pub fn new(mut entries: Vec<Change>) -> Self {
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        let digest = crate::digest::digest(&entries);
        let summary = summarise(&entries);
        ChangeSet {
            entries,
            digest,
            summary,
        }
    }

    /// Checks that a card (e.g. one received as JSON) holds together: entries sorted with unique
    /// paths, and the digest matching them.
    pub fn check(&self) -> Result<(), ReviewError> {
        if self.entries.windows(2).any(|w| w[0].path >= w[1].path) {
            return Err(ReviewError::InvalidCard {
                what: "entries are not sorted by path with unique paths".into(),
            });
        }
        let d = crate::digest::digest(&self.entries);
        if d != self.digest {
            return Err(ReviewError::InvalidCard {
                what: format!("digest {} does not match its entries ({d})", self.digest),
            });
        }
        Ok(())
    }

    /// The refused entries.
    pub fn refused(&self) -> impl Iterator<Item = (&Change, &str)> {
        self.entries.iter().filter_map(|c| match &c.kind {
            ChangeKind::Refused { reason } => Some((c, reason.as_str())),
            _ => None,
        })
    }
}

fn file_bytes(m: &Option<Meta>) -> u64 {
    match m {
        Some(m) if m.kind == FileKind::File => m.size,
        _ => 0,
    }
}

fn summarise(entries: &[Change]) -> Summary {
    let mut s = Summary::default();
    for c in entries {
        match &c.kind {
            ChangeKind::Added => s.added += 1,
            ChangeKind::Modified => s.modified += 1,
            ChangeKind::ModeChanged => s.mode_changed += 1,
            ChangeKind::Deleted => s.deleted += 1,
            ChangeKind::TypeChanged => s.type_changed += 1,
            ChangeKind::Renamed { .. } => s.renamed += 1,
            ChangeKind::HardLink { .. } => s.hard_links += 1,
            ChangeKind::Refused { .. } => s.refused += 1,
        }
        match &c.kind {
            ChangeKind::Renamed { .. } | ChangeKind::ModeChanged | ChangeKind::Refused { .. } => {}
            ChangeKind::HardLink { .. } => s.bytes_removed += file_bytes(&c.before),
            _ => {
                s.bytes_added += file_bytes(&c.after);
                s.bytes_removed += file_bytes(&c.before);
            }
        }
    }
    s
}
