//! Before anything is applied: the workspace must still hold every entry's `before` state, and
//! the upper dir must still hold exactly the card's `after` states.

use std::collections::HashSet;
use std::os::fd::OwnedFd;

use rustix::fs::OFlags;
use rustix::io::Errno;

use crate::ReviewError;
use crate::fsutil::{self, lstat_at, meta_at, open_parent};
use crate::model::{Change, ChangeKind, ChangeSet, FileKind, Meta};
use crate::path::RelPath;

/// What is at a workspace path, resolved without following any symlink.
pub(crate) enum State {
    /// Nothing (or a parent is missing).
    Absent,
    /// A file, dir or symlink.
    Present(Meta),
    /// Something we will not touch: why.
    Blocked(String),
}

/// The state of `rel` under `root`.
pub(crate) fn state(root: &OwnedFd, rel: &RelPath) -> Result<State, ReviewError> {
    let (dir, name) = match open_parent(root, rel) {
        Ok(x) => x,
        Err(Errno::NOENT) => return Ok(State::Absent),
        Err(Errno::LOOP | Errno::XDEV) => {
            return Ok(State::Blocked(
                "a parent is a symlink or leaves the workspace".into(),
            ));
        }
        Err(Errno::NOTDIR) => return Ok(State::Blocked("a parent is not a directory".into())),
        Err(e) => return Err(ReviewError::io("open parent", rel, e)),
    };
    let Some(st) = lstat_at(&dir, name).map_err(|e| ReviewError::io("stat", rel, e))? else {
        return Ok(State::Absent);
    };
    match meta_at(&dir, name, &st).map_err(|e| ReviewError::std_io("read", rel, e))? {
        Some(m) => Ok(State::Present(m)),
        None => Ok(State::Blocked("a special file".into())),
    }
}

fn describe(m: &Meta) -> String {
    match m.kind {
        FileKind::File => format!(
            "file {:04o} {} bytes sha256 {}",
            m.mode,
            m.size,
            m.sha256.as_deref().unwrap_or("?")
        ),
        FileKind::Dir => format!("dir {:04o}", m.mode),
        FileKind::Symlink => format!(
            "symlink -> {}",
            m.target.as_ref().map(|t| t.to_string()).unwrap_or_default()
        ),
    }
}

/// Fails with [`ReviewError::WorkspaceChanged`] unless `rel` holds `expected`.
fn expect(root: &OwnedFd, rel: &RelPath, expected: Option<&Meta>) -> Result<(), ReviewError> {
    let changed = |what: String| ReviewError::WorkspaceChanged {
        path: rel.to_string(),
        what,
    };
    match (state(root, rel)?, expected) {
        (State::Blocked(why), _) => Err(changed(why)),
        (State::Absent, None) => Ok(()),
        (State::Absent, Some(m)) => Err(changed(format!("missing, expected {}", describe(m)))),
        (State::Present(m), None) => Err(changed(format!(
            "exists ({}), expected nothing",
            describe(&m)
        ))),
        (State::Present(m), Some(e)) if &m == e => Ok(()),
        (State::Present(m), Some(e)) => Err(changed(format!(
            "is {}, expected {}",
            describe(&m),
            describe(e)
        ))),
    }
}

/// Checks every entry's `before` state in the workspace, that deleted dirs hold nothing the
/// card does not delete, and that the target of every hard link outside the set holds the
/// linked content.
pub(crate) fn check_workspace(root: &OwnedFd, cs: &ChangeSet) -> Result<(), ReviewError> {
    let paths: HashSet<&RelPath> = cs.entries.iter().map(|c| &c.path).collect();
    let mut removed: HashSet<&RelPath> = HashSet::new();
    for c in &cs.entries {
        match &c.kind {
            ChangeKind::Renamed { from } => {
                expect(root, from, c.before.as_ref())?;
                expect(root, &c.path, None)?;
                removed.insert(from);
            }
            ChangeKind::HardLink { target } => {
                expect(root, &c.path, c.before.as_ref())?;
                if !paths.contains(target) {
                    expect(root, target, c.after.as_ref())?;
                }
            }
            _ => expect(root, &c.path, c.before.as_ref())?,
        }
        if c.before.is_some() && c.after.as_ref().is_none_or(|a| a.kind != FileKind::Dir) {
            removed.insert(&c.path);
        }
    }
    for c in &cs.entries {
        if c.before.as_ref().is_some_and(|b| b.kind == FileKind::Dir)
            && c.after.as_ref().is_none_or(|a| a.kind != FileKind::Dir)
        {
            let dir =
                fsutil::open_beneath(root, c.path.as_bytes(), OFlags::RDONLY | OFlags::DIRECTORY)
                    .map_err(|e| ReviewError::io("open dir", &c.path, e))?;
            let names =
                fsutil::list_dir(&dir).map_err(|e| ReviewError::io("list dir", &c.path, e))?;
            for n in names {
                let p = c.path.join(&n)?;
                if !removed.contains(&p) {
                    return Err(ReviewError::WorkspaceChanged {
                        path: p.to_string(),
                        what: format!("appeared inside {}, which the card removes", c.path),
                    });
                }
            }
        }
    }
    Ok(())
}

/// Compares a fresh scan with the card: any difference means the upper dir (or, for entries
/// whose `before` differs, the workspace) changed since the card was made.
pub(crate) fn compare_rescan(card: &ChangeSet, now: &ChangeSet) -> Result<(), ReviewError> {
    if card.digest == now.digest {
        return Ok(());
    }
    let find = |cs: &'_ ChangeSet, p: &RelPath| -> Option<Change> {
        cs.entries
            .binary_search_by(|c| c.path.cmp(p))
            .ok()
            .map(|i| cs.entries[i].clone())
    };
    let all: std::collections::BTreeSet<&RelPath> = card
        .entries
        .iter()
        .chain(&now.entries)
        .map(|c| &c.path)
        .collect();
    for p in all {
        let (a, b) = (find(card, p), find(now, p));
        if a == b {
            continue;
        }
        let before = |c: &Option<Change>| c.as_ref().and_then(|c| c.before.clone());
        let (what, upper) = match (&a, &b) {
            (Some(_), None) => ("no longer differs from the workspace".to_string(), true),
            (None, Some(n)) => (format!("new change: {:?}", n.kind), before(&b).is_none()),
            _ if before(&a) != before(&b) => ("workspace state differs".into(), false),
            _ => ("upper state differs".into(), true),
        };
        return Err(if upper {
            ReviewError::UpperChanged {
                path: p.to_string(),
                what,
            }
        } else {
            ReviewError::WorkspaceChanged {
                path: p.to_string(),
                what,
            }
        });
    }
    Err(ReviewError::UpperChanged {
        path: ".".into(),
        what: format!("digest {} is now {}", card.digest, now.digest),
    })
}
