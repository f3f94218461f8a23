//! A card's text side by side: the unified diffs of [`luminaguard_review::render`] re-laid as
//! two columns (before, after), every other line of the card across both. The lines' styles
//! come from [`luminaguard_review::classify`], so this knows the card's format only through
//! the renderer's own classifier.

use luminaguard_review::{Style, classify};

/// One cell: its CSS class and text (`None`: nothing on that side).
pub(crate) type Cell = Option<(&'static str, String)>;

/// A row of the side-by-side card.
pub(crate) enum SplitRow {
    /// A line across both columns (an entry, a file header, a hunk, a note).
    Across(&'static str, String),
    /// A diff line: the old side and the new.
    Pair(Cell, Cell),
}

/// The diff line's text without the card's indent and its `+`/`-`/` ` marker.
fn body(line: &str) -> String {
    let l = line.strip_prefix("    ").unwrap_or(line);
    l.get(1..).unwrap_or_default().to_owned()
}

/// Lays `text` out side by side: removed lines on the left, added on the right, paired in
/// order within each run of changes; context on both sides.
pub(crate) fn split(text: &str) -> Vec<SplitRow> {
    let mut rows = Vec::new();
    let (mut del, mut ins): (Vec<String>, Vec<String>) = (Vec::new(), Vec::new());
    let flush = |rows: &mut Vec<SplitRow>, del: &mut Vec<String>, ins: &mut Vec<String>| {
        let n = del.len().max(ins.len());
        let (mut d, mut i) = (del.drain(..), ins.drain(..));
        for _ in 0..n {
            rows.push(SplitRow::Pair(
                d.next().map(|t| ("del", t)),
                i.next().map(|t| ("ins", t)),
            ));
        }
    };
    for line in text.lines() {
        match classify(line) {
            Style::Remove => del.push(body(line)),
            Style::Insert => ins.push(body(line)),
            style => {
                flush(&mut rows, &mut del, &mut ins);
                if style == Style::Context {
                    let t = body(line);
                    rows.push(SplitRow::Pair(Some(("ctx", t.clone())), Some(("ctx", t))));
                } else {
                    rows.push(SplitRow::Across(style.class(), line.to_owned()));
                }
            }
        }
    }
    flush(&mut rows, &mut del, &mut ins);
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn show(rows: &[SplitRow]) -> Vec<String> {
        let cell = |c: &Cell| {
            c.as_ref()
                .map_or("·".to_owned(), |(k, t)| format!("{k}:{t}"))
        };
        rows.iter()
            .map(|r| match r {
                SplitRow::Across(k, t) => format!("{k}|{t}"),
                SplitRow::Pair(l, r) => format!("{} || {}", cell(l), cell(r)),
            })
            .collect()
    }

    #[test]
    fn changes_pair_up_and_context_is_on_both_sides() {
        let card = "Diff Card  1 changes  digest ab\n\
                    M a.txt\n    --- a/a.txt\n    +++ b/a.txt\n    @@ -1,4 +1,4 @@\n     one\n\
                    \x20   -two\n    -three\n    +TWO\n     four\n    +five\n";
        assert_eq!(
            show(&split(card)),
            [
                "title|Diff Card  1 changes  digest ab",
                "modified|M a.txt",
                "file|    --- a/a.txt",
                "file|    +++ b/a.txt",
                "hunk|    @@ -1,4 +1,4 @@",
                "ctx:one || ctx:one",
                "del:two || ins:TWO",
                "del:three || ·",
                "ctx:four || ctx:four",
                "· || ins:five",
            ]
        );
    }
}
