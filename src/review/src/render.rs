//! The text Diff Card a person reads in a terminal.
//!
//! Every name, link target and diff line is escaped ([`crate::path::escape_bytes`]): the content
//! was written by the sandboxed command and must not be able to move the cursor, recolour or
//! reorder the card. Contents are re-read for diffs and shown only if they still hash to the
//! card's value.

use std::collections::HashMap;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::Path;

use rustix::fs::OFlags;
use sha2::{Digest, Sha256};

use crate::digest::hex;
use crate::fsutil;
use crate::model::{Change, ChangeKind, ChangeSet, FileKind, Limits, Meta};
use crate::path::{RelPath, escape_bytes};

/// How to render a card.
#[derive(Clone, Debug, Default)]
pub struct RenderOptions {
    /// Colour with ANSI escapes.
    pub color: bool,
    /// Summarising threshold and diff caps.
    pub limits: Limits,
}

/// How many directories the summary of a large card lists.
const TOP_DIRS: usize = 10;

struct Card<'a> {
    out: String,
    opts: &'a RenderOptions,
    upper: Option<OwnedFd>,
    lower: Option<OwnedFd>,
    budget: usize,
}

/// Renders the card for `cs`, reading diff contents from `upper` (after) and `lower` (the
/// workspace, before). Never fails: unreadable content is shown as such.
pub fn render(cs: &ChangeSet, upper: &Path, lower: &Path, opts: &RenderOptions) -> String {
    let mut card = Card {
        out: String::new(),
        opts,
        upper: fsutil::open_root(upper).ok(),
        lower: fsutil::open_root(lower).ok(),
        budget: opts.limits.max_diff_bytes_total,
    };
    card.header(cs);
    if cs.entries.len() > opts.limits.max_shown {
        card.summarised(cs);
    } else {
        for c in &cs.entries {
            card.entry(c);
        }
    }
    card.out
}

fn counts(cs: &ChangeSet) -> String {
    let s = &cs.summary;
    let parts = [
        (s.added, "added"),
        (s.modified, "modified"),
        (s.deleted, "deleted"),
        (s.renamed, "renamed"),
        (s.type_changed, "type changed"),
        (s.mode_changed, "mode changed"),
        (s.hard_links, "hard links"),
        (s.refused, "REFUSED"),
    ];
    let shown: Vec<String> = parts
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, w)| format!("{n} {w}"))
        .collect();
    if shown.is_empty() {
        "no changes".into()
    } else {
        shown.join(", ")
    }
}

fn mode_note(c: &Change) -> String {
    match (&c.before, &c.after) {
        (Some(b), Some(a))
            if b.kind == a.kind && b.mode != a.mode && a.kind != FileKind::Symlink =>
        {
            format!(" {:04o} -> {:04o}", b.mode, a.mode)
        }
        _ => String::new(),
    }
}

fn is_text(b: &[u8]) -> bool {
    !b.contains(&0) && std::str::from_utf8(b).is_ok()
}

fn short(m: &Meta) -> String {
    let h = m.sha256.as_deref().unwrap_or("");
    format!("{} bytes sha256 {}", m.size, &h[..h.len().min(16)])
}

impl Card<'_> {
    fn paint(&self, code: &str, s: &str) -> String {
        if self.opts.color {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }

    fn line(&mut self, s: &str) {
        self.out.push_str(s);
        self.out.push('\n');
    }

    fn header(&mut self, cs: &ChangeSet) {
        let title = self.paint(
            "1",
            &format!(
                "Diff Card  {} changes  digest {}",
                cs.entries.len(),
                cs.digest
            ),
        );
        self.line(&title);
        let s = &cs.summary;
        let body = format!(
            "{}  (+{} / -{} bytes)",
            counts(cs),
            s.bytes_added,
            s.bytes_removed
        );
        self.line(&body);
        if s.refused > 0 {
            let warn = self.paint(
                "1;31",
                &format!(
                    "{} refused entries: this change set cannot be applied",
                    s.refused
                ),
            );
            self.line(&warn);
        }
    }

    fn summarised(&mut self, cs: &ChangeSet) {
        let note = format!(
            "card summarised: {} entries is more than {} shown; the digest covers every entry",
            cs.entries.len(),
            self.opts.limits.max_shown
        );
        let note = self.paint("33", &note);
        self.line(&note);
        let mut dirs: HashMap<Option<RelPath>, usize> = HashMap::new();
        for c in &cs.entries {
            *dirs.entry(c.path.parent()).or_default() += 1;
        }
        let mut dirs: Vec<_> = dirs.into_iter().collect();
        dirs.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        self.line("top directories by changes:");
        for (d, n) in dirs.iter().take(TOP_DIRS) {
            let name = d
                .as_ref()
                .map(|p| format!("{p}/"))
                .unwrap_or_else(|| "./".into());
            self.line(&format!("  {n:>7}  {name}"));
        }
        for c in cs
            .entries
            .iter()
            .filter(|c| matches!(c.kind, ChangeKind::Refused { .. }))
        {
            self.entry_line(c);
        }
    }

    fn entry_line(&mut self, c: &Change) {
        let p = &c.path;
        let word = |m: &Option<Meta>| m.as_ref().map(|m| m.kind.word()).unwrap_or("nothing");
        let (code, text) = match &c.kind {
            ChangeKind::Added => {
                let extra = match &c.after {
                    Some(m) if m.kind == FileKind::Dir => "/".to_string(),
                    Some(Meta {
                        kind: FileKind::Symlink,
                        target: Some(t),
                        ..
                    }) => format!(" -> {t}"),
                    _ => String::new(),
                };
                ("32", format!("A {p}{extra}"))
            }
            ChangeKind::Modified => {
                let extra = match (&c.before, &c.after) {
                    (
                        Some(Meta {
                            target: Some(b), ..
                        }),
                        Some(Meta {
                            target: Some(a), ..
                        }),
                    ) => {
                        format!(" (symlink {b} -> {a})")
                    }
                    _ => mode_note(c),
                };
                ("33", format!("M {p}{extra}"))
            }
            ChangeKind::ModeChanged => ("36", format!("m {p}{}", mode_note(c))),
            ChangeKind::Deleted => {
                let slash = if word(&c.before) == "dir" { "/" } else { "" };
                ("31", format!("D {p}{slash}"))
            }
            ChangeKind::TypeChanged => {
                let target = match &c.after {
                    Some(Meta {
                        target: Some(t), ..
                    }) => format!(" -> {t}"),
                    _ => String::new(),
                };
                (
                    "35",
                    format!("T {p} ({} -> {}{target})", word(&c.before), word(&c.after)),
                )
            }
            ChangeKind::Renamed { from } => ("36", format!("R {from} -> {p}{}", mode_note(c))),
            ChangeKind::HardLink { target } => ("36", format!("L {p} => {target} (hard link)")),
            ChangeKind::Refused { reason } => (
                "1;31",
                format!(
                    "! {p} (refused: {})",
                    escape_bytes(reason.as_bytes(), false)
                ),
            ),
        };
        let text = self.paint(code, &text);
        self.line(&text);
    }

    fn entry(&mut self, c: &Change) {
        self.entry_line(c);
        let after = match &c.after {
            Some(a) if a.kind == FileKind::File => a,
            _ => return,
        };
        let before = c.before.as_ref().filter(|b| b.kind == FileKind::File);
        let before_path = match &c.kind {
            ChangeKind::Renamed { from } => from,
            ChangeKind::Added | ChangeKind::Modified | ChangeKind::TypeChanged => &c.path,
            _ => return,
        };
        if before.is_some_and(|b| b.sha256 == after.sha256) {
            return;
        }
        self.diff(before_path, before, &c.path, after);
    }

    /// Reads a file for a diff: `Err(note)` if too large, unreadable or changed since the card.
    fn read(&self, root: &Option<OwnedFd>, p: &RelPath, m: &Meta) -> Result<Vec<u8>, String> {
        if m.size > self.opts.limits.max_diff_input_bytes {
            return Err("too large to diff".into());
        }
        let root = root.as_ref().ok_or("dir unavailable")?;
        let fd = fsutil::open_beneath(root, p.as_bytes(), OFlags::RDONLY | OFlags::NONBLOCK)
            .map_err(|e| format!("unreadable: {e}"))?;
        let mut buf = Vec::new();
        std::fs::File::from(fd)
            .take(self.opts.limits.max_diff_input_bytes + 1)
            .read_to_end(&mut buf)
            .map_err(|e| format!("unreadable: {e}"))?;
        if Some(hex(&Sha256::digest(&buf))) != m.sha256 {
            return Err("changed since the card was made".into());
        }
        Ok(buf)
    }

    fn diff(&mut self, bp: &RelPath, before: Option<&Meta>, ap: &RelPath, after: &Meta) {
        let old = match before {
            Some(b) => self.read(&self.lower, bp, b),
            None => Ok(Vec::new()),
        };
        let new = self.read(&self.upper, ap, after);
        let sizes = format!(
            "{} -> {}",
            before.map(short).unwrap_or_else(|| "nothing".into()),
            short(after)
        );
        let (old, new) = match (old, new) {
            (Ok(o), Ok(n)) if is_text(&o) && is_text(&n) => (o, n),
            (Ok(_), Ok(_)) => return self.line(&format!("    binary: {sizes}")),
            (Err(e), _) | (_, Err(e)) => return self.line(&format!("    ({e}): {sizes}")),
        };
        if self.budget == 0 {
            return self.line(&format!(
                "    (diff omitted: the card's diff budget is used up): {sizes}"
            ));
        }
        let (o, n) = (String::from_utf8_lossy(&old), String::from_utf8_lossy(&new));
        let text = similar::TextDiff::from_lines(o.as_ref(), n.as_ref())
            .unified_diff()
            .context_radius(3)
            .to_string();
        // Our own header: the paths are already escaped, the hunk lines are escaped below.
        let header = self.paint("1", &format!("    --- a/{bp}\n    +++ b/{ap}"));
        self.line(&header);
        let cap = self.opts.limits.max_diff_bytes_per_file.min(self.budget);
        let mut shown = 0;
        for l in text.lines() {
            let l = escape_bytes(l.as_bytes(), true);
            if shown + l.len() + 1 > cap {
                let cut = format!("    ... diff cut: {shown} of {} bytes shown", text.len());
                let cut = self.paint("33", &cut);
                self.line(&cut);
                break;
            }
            shown += l.len() + 1;
            let code = match l.as_bytes().first() {
                Some(b'+') => "32",
                Some(b'-') => "31",
                Some(b'@') => "36",
                _ => "0",
            };
            let l = self.paint(code, &format!("    {l}"));
            self.line(&l);
        }
        self.budget -= shown.min(self.budget);
    }
}
