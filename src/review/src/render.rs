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

/// What a line of a card is: how a terminal paints it, and how a front-end that shows the
/// plain text (the web console) styles it again ([`classify`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Style {
    /// The card's first line.
    Title,
    /// Entry lines: `A`, `M`, `D`, `T`, and `m`/`R`/`L` (mode, rename, hard link).
    Added,
    Modified,
    Deleted,
    TypeChanged,
    Moved,
    /// A refused entry, or the warning that the set cannot be applied.
    Refused,
    /// A remark of the card's own: summarised, diff cut.
    Note,
    /// A diff's `---`/`+++` lines, hunk headers, and its lines.
    FileHeader,
    Hunk,
    Insert,
    Remove,
    Context,
    /// Unpainted (counts, notes on unreadable or binary content, action cards).
    Plain,
}

impl Style {
    /// The ANSI SGR code a terminal card is painted with (`None`: not painted).
    pub const fn ansi(self) -> Option<&'static str> {
        Some(match self {
            Self::Title | Self::FileHeader => "1",
            Self::Added | Self::Insert => "32",
            Self::Modified | Self::Note => "33",
            Self::Deleted | Self::Remove => "31",
            Self::TypeChanged => "35",
            Self::Moved | Self::Hunk => "36",
            Self::Refused => "1;31",
            Self::Context => "0",
            Self::Plain => return None,
        })
    }

    /// A CSS class name for it.
    pub const fn class(self) -> &'static str {
        match self {
            Self::Title => "title",
            Self::Added => "added",
            Self::Modified => "modified",
            Self::Deleted => "deleted",
            Self::TypeChanged => "type-changed",
            Self::Moved => "moved",
            Self::Refused => "refused",
            Self::Note => "note",
            Self::FileHeader => "file",
            Self::Hunk => "hunk",
            Self::Insert => "ins",
            Self::Remove => "del",
            Self::Context => "ctx",
            Self::Plain => "plain",
        }
    }
}

/// The style of one line of an uncoloured card, as [`render`] painted it: the card's text is
/// kept plain (the API's `text`), and a front-end colours it again from this, in one place
/// with the renderer that wrote it.
pub fn classify(line: &str) -> Style {
    if let Some(d) = line.strip_prefix("    ") {
        return if d.starts_with("--- a/") || d.starts_with("+++ b/") {
            Style::FileHeader
        } else if d.starts_with("... diff cut: ") {
            Style::Note
        } else {
            match d.as_bytes().first() {
                Some(b'+') => Style::Insert,
                Some(b'-') => Style::Remove,
                Some(b'@') => Style::Hunk,
                Some(b' ' | b'\\') => Style::Context,
                _ => Style::Plain,
            }
        };
    }
    if line.starts_with("Diff Card  ") {
        return Style::Title;
    }
    if line.starts_with("card summarised: ") {
        return Style::Note;
    }
    if line.ends_with(" refused entries: this change set cannot be applied") {
        return Style::Refused;
    }
    match line.split_at_checked(2) {
        Some(("A ", _)) => Style::Added,
        Some(("M ", _)) => Style::Modified,
        Some(("D ", _)) => Style::Deleted,
        Some(("T ", _)) => Style::TypeChanged,
        Some(("m " | "R " | "L ", _)) => Style::Moved,
        Some(("! ", _)) => Style::Refused,
        _ => Style::Plain,
    }
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
    fn paint(&self, style: Style, s: &str) -> String {
        match style.ansi() {
            Some(code) if self.opts.color => format!("\x1b[{code}m{s}\x1b[0m"),
            _ => s.to_string(),
        }
    }

    fn line(&mut self, s: &str) {
        self.out.push_str(s);
        self.out.push('\n');
    }

    fn header(&mut self, cs: &ChangeSet) {
        let title = self.paint(
            Style::Title,
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
                Style::Refused,
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
        let note = self.paint(Style::Note, &note);
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
                (Style::Added, format!("A {p}{extra}"))
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
                (Style::Modified, format!("M {p}{extra}"))
            }
            ChangeKind::ModeChanged => (Style::Moved, format!("m {p}{}", mode_note(c))),
            ChangeKind::Deleted => {
                let slash = if word(&c.before) == "dir" { "/" } else { "" };
                (Style::Deleted, format!("D {p}{slash}"))
            }
            ChangeKind::TypeChanged => {
                let target = match &c.after {
                    Some(Meta {
                        target: Some(t), ..
                    }) => format!(" -> {t}"),
                    _ => String::new(),
                };
                (
                    Style::TypeChanged,
                    format!("T {p} ({} -> {}{target})", word(&c.before), word(&c.after)),
                )
            }
            ChangeKind::Renamed { from } => {
                (Style::Moved, format!("R {from} -> {p}{}", mode_note(c)))
            }
            ChangeKind::HardLink { target } => {
                (Style::Moved, format!("L {p} => {target} (hard link)"))
            }
            ChangeKind::Refused { reason } => (
                Style::Refused,
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
        for header in [format!("    --- a/{bp}"), format!("    +++ b/{ap}")] {
            let header = self.paint(Style::FileHeader, &header);
            self.line(&header);
        }
        let cap = self.opts.limits.max_diff_bytes_per_file.min(self.budget);
        let mut shown = 0;
        for l in text.lines() {
            let l = escape_bytes(l.as_bytes(), true);
            if shown + l.len() + 1 > cap {
                let cut = format!("    ... diff cut: {shown} of {} bytes shown", text.len());
                let cut = self.paint(Style::Note, &cut);
                self.line(&cut);
                break;
            }
            shown += l.len() + 1;
            let code = match l.as_bytes().first() {
                Some(b'+') => Style::Insert,
                Some(b'-') => Style::Remove,
                Some(b'@') => Style::Hunk,
                _ => Style::Context,
            };
            let l = self.paint(code, &format!("    {l}"));
            self.line(&l);
        }
        self.budget -= shown.min(self.budget);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::disallowed_methods)] // test code
    use super::*;

    /// Every line of a coloured card is classified, from its plain text, as the style it was
    /// painted with.
    #[test]
    fn classify_agrees_with_the_painter() {
        let dir = tempfile::tempdir().unwrap();
        let (upper, lower) = (dir.path().join("upper"), dir.path().join("lower"));
        std::fs::create_dir_all(&upper).unwrap();
        std::fs::create_dir_all(&lower).unwrap();
        let body: String = (0..40).map(|i| format!("line {i}\n")).collect();
        std::fs::write(lower.join("a.txt"), &body).unwrap();
        std::fs::write(
            upper.join("a.txt"),
            body.replace("line 3\n", "three\n+plus\n")
                .replace("line 30\n", "-x\n"),
        )
        .unwrap();
        std::fs::write(upper.join("new.txt"), "    --- a/looks like a header\n").unwrap();
        std::fs::write(upper.join("bin"), b"\0\x01\x02").unwrap();
        std::fs::create_dir(upper.join("d")).unwrap();
        let cs = crate::scan(&upper, &lower, &Limits::default()).unwrap();
        let opts = RenderOptions {
            color: true,
            limits: Limits::default(),
        };
        let card = render(&cs, &upper, &lower, &opts);
        let mut seen = std::collections::HashSet::new();
        for line in card.lines() {
            let (code, plain) = match line.strip_prefix("\x1b[") {
                Some(rest) => {
                    let (code, rest) = rest.split_once('m').unwrap();
                    (Some(code), rest.strip_suffix("\x1b[0m").unwrap())
                }
                None => (None, line),
            };
            let style = classify(plain);
            assert_eq!(style.ansi(), code, "{plain:?} classified {style:?}");
            seen.insert(style);
        }
        for s in [
            Style::Title,
            Style::Added,
            Style::Modified,
            Style::FileHeader,
            Style::Hunk,
            Style::Insert,
            Style::Remove,
            Style::Context,
            Style::Plain,
        ] {
            assert!(seen.contains(&s), "{s:?} not in the card:\n{card}");
        }
    }
}
