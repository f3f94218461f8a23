//! The canonical serialisation of a change set's entries and its SHA-256 digest.
//!
//! Format (version tag `luminaguard-review/changeset/v1`): entries in the order given (callers
//! sort by path: [`crate::ChangeSet::new`]); every field is written as a one-byte tag, a
//! big-endian `u64` length and the bytes, so no two different entry lists serialise the same.
//! Everything is covered: paths, kinds with their extra path or reason, and both metas (kind,
//! mode, size, content hash, link target), with explicit markers for absent values.

use sha2::{Digest, Sha256};

use crate::model::{Change, ChangeKind, FileKind, Meta};

const VERSION: &[u8] = b"luminaguard-review/changeset/v1";

struct Canon(Sha256);

impl Canon {
    fn field(&mut self, tag: u8, bytes: &[u8]) {
        self.0.update([tag]);
        self.0.update((bytes.len() as u64).to_be_bytes());
        self.0.update(bytes);
    }

    fn meta(&mut self, m: &Option<Meta>) {
        let Some(m) = m else {
            self.field(b'-', b"");
            return;
        };
        let kind: &[u8] = match m.kind {
            FileKind::File => b"f",
            FileKind::Dir => b"d",
            FileKind::Symlink => b"l",
        };
        self.field(b'+', kind);
        self.field(b'm', &m.mode.to_be_bytes());
        self.field(b's', &m.size.to_be_bytes());
        match &m.sha256 {
            Some(h) => self.field(b'h', h.as_bytes()),
            None => self.field(b'H', b""),
        }
        match &m.target {
            Some(t) => self.field(b't', &t.0),
            None => self.field(b'T', b""),
        }
    }

    fn entry(&mut self, c: &Change) {
        self.field(b'p', c.path.as_bytes());
        match &c.kind {
            ChangeKind::Added => self.field(b'k', b"added"),
            ChangeKind::Modified => self.field(b'k', b"modified"),
            ChangeKind::ModeChanged => self.field(b'k', b"mode_changed"),
            ChangeKind::Deleted => self.field(b'k', b"deleted"),
            ChangeKind::TypeChanged => self.field(b'k', b"type_changed"),
            ChangeKind::Renamed { from } => {
                self.field(b'k', b"renamed");
                self.field(b'r', from.as_bytes());
            }
            ChangeKind::HardLink { target } => {
                self.field(b'k', b"hard_link");
                self.field(b'r', target.as_bytes());
            }
            ChangeKind::Refused { reason } => {
                self.field(b'k', b"refused");
                self.field(b'r', reason.as_bytes());
            }
        }
        self.meta(&c.before);
        self.meta(&c.after);
    }
}

/// Hex SHA-256 of the canonical serialisation of `entries`, in the order given.
pub fn digest(entries: &[Change]) -> String {
    let mut c = Canon(Sha256::new());
    c.field(b'v', VERSION);
    c.field(b'n', &(entries.len() as u64).to_be_bytes());
    for e in entries {
        c.entry(e);
    }
    hex(&c.0.finalize())
}

/// Lowercase hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ChangeSet;
    use crate::path::{ByteString, RelPath};
    use proptest::prelude::*;

    fn meta() -> impl Strategy<Value = Option<Meta>> {
        proptest::option::of(
            (
                prop_oneof![
                    Just(FileKind::File),
                    Just(FileKind::Dir),
                    Just(FileKind::Symlink)
                ],
                0u32..0o7777,
                0u64..1000,
                proptest::option::of("[0-9a-f]{4}"),
                proptest::option::of(proptest::collection::vec(any::<u8>(), 0..6)),
            )
                .prop_map(|(kind, mode, size, sha256, target)| Meta {
                    kind,
                    mode,
                    size,
                    sha256,
                    target: target.map(ByteString),
                }),
        )
    }

    fn change() -> impl Strategy<Value = Change> {
        (
            "[a-c]{1,3}(/[a-c]{1,3}){0,2}",
            prop_oneof![
                Just(ChangeKind::Added),
                Just(ChangeKind::Modified),
                Just(ChangeKind::Deleted),
                Just(ChangeKind::ModeChanged),
                Just(ChangeKind::TypeChanged),
                "[a-c]{1,3}".prop_map(|p| ChangeKind::Renamed {
                    from: RelPath::new(p.into_bytes()).unwrap()
                }),
                "[a-c]{1,3}".prop_map(|p| ChangeKind::HardLink {
                    target: RelPath::new(p.into_bytes()).unwrap()
                }),
                "[a-z ]{0,5}".prop_map(|reason| ChangeKind::Refused { reason }),
            ],
            meta(),
            meta(),
        )
            .prop_map(|(p, kind, before, after)| Change {
                path: RelPath::new(p.into_bytes()).unwrap(),
                kind,
                before,
                after,
            })
    }

    fn unique(v: Vec<Change>) -> Vec<Change> {
        let mut seen = std::collections::HashSet::new();
        v.into_iter()
            .filter(|c| seen.insert(c.path.clone()))
            .collect()
    }

    /// Changes one field of one entry.
    fn mutate(c: &mut Change, which: u8) {
        let m = |m: &mut Option<Meta>, which: u8| match m {
            None => {
                *m = Some(Meta {
                    kind: FileKind::File,
                    mode: 0,
                    size: 0,
                    sha256: None,
                    target: None,
                })
            }
            Some(x) => match which % 5 {
                0 => x.mode ^= 1,
                1 => x.size += 1,
                2 => x.sha256 = Some(format!("{}x", x.sha256.clone().unwrap_or_default())),
                3 => {
                    let mut t = x.target.clone().map(|t| t.0).unwrap_or_default();
                    t.push(b'z');
                    x.target = Some(ByteString(t));
                }
                _ => {
                    x.kind = match x.kind {
                        FileKind::File => FileKind::Dir,
                        _ => FileKind::File,
                    }
                }
            },
        };
        match which % 4 {
            0 => c.path = c.path.join(b"z").unwrap(),
            1 => {
                c.kind = match &c.kind {
                    ChangeKind::Added => ChangeKind::Modified,
                    ChangeKind::Renamed { from } => ChangeKind::HardLink {
                        target: from.clone(),
                    },
                    ChangeKind::Refused { reason } => ChangeKind::Refused {
                        reason: format!("{reason}!"),
                    },
                    _ => ChangeKind::Added,
                }
            }
            2 => m(&mut c.before, which / 4),
            _ => m(&mut c.after, which / 4),
        }
    }

    proptest! {
        /// Any order of the same entries gives the same card digest.
        #[test]
        fn order_does_not_matter(entries in proptest::collection::vec(change(), 0..12), seed in any::<u64>()) {
            let entries = unique(entries);
            let a = ChangeSet::new(entries.clone());
            let mut shuffled = entries;
            let n = shuffled.len().max(1);
            for i in 0..shuffled.len() {
                shuffled.swap(i, (seed as usize).wrapping_mul(i + 7) % n);
            }
            let b = ChangeSet::new(shuffled);
            prop_assert_eq!(&a.digest, &b.digest);
            prop_assert!(a.check().is_ok());
        }

        /// Any changed field of any entry changes the digest.
        #[test]
        fn any_change_changes_digest(entries in proptest::collection::vec(change(), 1..8),
                                     idx in any::<usize>(), which in any::<u8>()) {
            let entries = unique(entries);
            let a = digest(&entries);
            let mut b = entries.clone();
            let i = idx % b.len();
            mutate(&mut b[i], which);
            prop_assume!(b[i] != entries[i]);
            prop_assert_ne!(a, digest(&b));
        }

        /// Dropping an entry changes the digest.
        #[test]
        fn dropping_changes_digest(entries in proptest::collection::vec(change(), 1..8), idx in any::<usize>()) {
            let mut b = unique(entries);
            let a = digest(&b);
            b.remove(idx % b.len());
            prop_assert_ne!(a, digest(&b));
        }
    }

    #[test]
    fn tampered_card_fails_check() {
        let mut cs = ChangeSet::new(vec![Change {
            path: RelPath::new(b"a".to_vec()).unwrap(),
            kind: ChangeKind::Added,
            before: None,
            after: None,
        }]);
        assert!(cs.check().is_ok());
        cs.entries[0].kind = ChangeKind::Deleted;
        assert_eq!(cs.check().unwrap_err().code(), "invalid-card");
    }
}
