//! Post-passes over a scanned entry list: hard-link groups and rename detection.

use std::collections::{HashMap, HashSet};

use crate::model::{Change, ChangeKind, FileKind, Meta};
use crate::path::RelPath;

/// One name of an upper inode with several links.
#[derive(Debug)]
pub(crate) struct LinkEnd {
    pub path: RelPath,
    pub before: Option<Meta>,
    pub after: Meta,
}

/// For every upper inode with two or more names, keeps one name (preferably one whose content
/// the workspace already holds, else the smallest path) as it is and turns
/// every other name into a [`ChangeKind::HardLink`] to it (replacing whatever change that path
/// had, and adding one where the path's content was unchanged but its link was not).
pub(crate) fn fold_hard_links(
    entries: &mut Vec<Change>,
    groups: HashMap<(u64, u64), Vec<LinkEnd>>,
) {
    let mut replace: HashMap<RelPath, Change> = HashMap::new();
    for (_, mut ends) in groups {
        if ends.len() < 2 {
            continue;
        }
        // The primary name: one the workspace already holds as it is, else the smallest path.
        ends.sort_by_key(|e| (e.before.as_ref() != Some(&e.after), e.path.clone()));
        let primary = ends[0].path.clone();
        for end in ends.into_iter().skip(1) {
            replace.insert(
                end.path.clone(),
                Change {
                    path: end.path,
                    kind: ChangeKind::HardLink {
                        target: primary.clone(),
                    },
                    before: end.before,
                    after: Some(end.after),
                },
            );
        }
    }
    if replace.is_empty() {
        return;
    }
    entries.retain(|c| !replace.contains_key(&c.path));
    entries.extend(replace.into_values());
}

/// Pairs deleted files with added files of the same (non-empty) content and turns each pair
/// into one [`ChangeKind::Renamed`] (at the new path, `before` = the old path's state). A
/// candidate with the same file name is preferred; otherwise the smallest old path.
pub(crate) fn fold_renames(entries: &mut Vec<Change>) {
    let file_hash = |m: &Option<Meta>| -> Option<String> {
        match m {
            Some(m) if m.kind == FileKind::File && m.size > 0 => m.sha256.clone(),
            _ => None,
        }
    };
    let mut deleted: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, c) in entries.iter().enumerate() {
        if c.kind == ChangeKind::Deleted
            && let Some(h) = file_hash(&c.before)
        {
            deleted.entry(h).or_default().push(i);
        }
    }
    if deleted.is_empty() {
        return;
    }
    for v in deleted.values_mut() {
        v.sort_by(|&a, &b| entries[a].path.cmp(&entries[b].path));
    }
    let mut added: Vec<usize> = (0..entries.len())
        .filter(|&i| entries[i].kind == ChangeKind::Added && file_hash(&entries[i].after).is_some())
        .collect();
    added.sort_by(|&a, &b| entries[a].path.cmp(&entries[b].path));
    let mut used: HashSet<usize> = HashSet::new();
    for ai in added {
        let Some(h) = file_hash(&entries[ai].after) else {
            continue;
        };
        let Some(cands) = deleted.get(&h) else {
            continue;
        };
        let name = entries[ai].path.file_name().to_vec();
        let free = |&&d: &&usize| !used.contains(&d);
        let pick = cands
            .iter()
            .filter(free)
            .find(|&&d| entries[d].path.file_name() == name)
            .or_else(|| cands.iter().find(free))
            .copied();
        let Some(di) = pick else { continue };
        used.insert(di);
        let from = entries[di].path.clone();
        let before = entries[di].before.clone();
        let a = &mut entries[ai];
        a.kind = ChangeKind::Renamed { from };
        a.before = before;
    }
    let mut i = 0;
    entries.retain(|_| {
        let keep = !used.contains(&i);
        i += 1;
        keep
    });
}
