//! Names as bytes: validated relative paths ([`RelPath`]), raw byte strings ([`ByteString`], for
//! symlink targets) and the reversible escaping that shows them in a terminal and carries them in
//! JSON.
//!
//! Escaping: printable UTF-8 stays as it is; a backslash becomes `\\`; every byte of an invalid
//! UTF-8 sequence, of a control character, or of a character that can disguise text in a
//! terminal (bidi overrides, zero-width characters, BOM) becomes `\xNN` (lowercase hex).
//! [`unescape`] inverts it exactly, so any byte string round-trips.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::ReviewError;

/// Characters that reorder or hide text on a terminal: shown escaped.
fn is_deceptive(c: char) -> bool {
    matches!(c as u32,
        0x061C | 0x200B..=0x200F | 0x202A..=0x202E | 0x2060..=0x2069 | 0xFEFF)
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    for b in bytes {
        out.push_str(&format!("\\x{b:02x}"));
    }
}

/// Escapes a byte string for display (see the module docs). With `keep_tab`, a tab stays a tab
/// (diff lines); otherwise it is escaped like every other control character (names).
pub fn escape_bytes(bytes: &[u8], keep_tab: bool) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c == '\\' {
                out.push_str("\\\\");
            } else if (c == '\t' && keep_tab) || !(c.is_control() || is_deceptive(c)) {
                out.push(c);
            } else {
                let mut buf = [0u8; 4];
                push_hex(&mut out, c.encode_utf8(&mut buf).as_bytes());
            }
        }
        push_hex(&mut out, chunk.invalid());
    }
    out
}

/// Text from an untrusted source (a model's words, a tool's output) made safe to print on a
/// terminal: lines and tabs stay, backslashes stay (it is for reading, not round-tripping);
/// every other control character (escape sequences, carriage returns that overwrite a line,
/// bells) and every character that disguises text becomes `\xNN`.
pub fn for_terminal(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c == '\n' || c == '\t' || !(c.is_control() || is_deceptive(c)) {
            out.push(c);
        } else {
            let mut buf = [0u8; 4];
            push_hex(&mut out, c.encode_utf8(&mut buf).as_bytes());
        }
    }
    out
}

/// Inverts [`escape_bytes`] (with `keep_tab == false`; a literal tab is accepted too).
pub fn unescape(s: &str) -> Result<Vec<u8>, &'static str> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            out.push(b[i]);
            i += 1;
            continue;
        }
        match b.get(i + 1) {
            Some(b'\\') => {
                out.push(b'\\');
                i += 2;
            }
            Some(b'x') => {
                let hex = b.get(i + 2..i + 4).ok_or("truncated \\x escape")?;
                let hex = std::str::from_utf8(hex).map_err(|_| "bad \\x escape")?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| "bad \\x escape")?);
                i += 4;
            }
            _ => return Err("unknown escape (only \\\\ and \\xNN)"),
        }
    }
    Ok(out)
}

/// A raw byte string (a symlink target), shown and serialised escaped.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct ByteString(pub Vec<u8>);

impl fmt::Display for ByteString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&escape_bytes(&self.0, false))
    }
}

impl Serialize for ByteString {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&escape_bytes(&self.0, false))
    }
}

impl<'de> Deserialize<'de> for ByteString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        unescape(&s)
            .map(ByteString)
            .map_err(serde::de::Error::custom)
    }
}

/// A path relative to the workspace root: non-empty, `/`-separated, no empty, `.` or `..`
/// component, no leading `/`, no NUL byte. Any other bytes are allowed (names are bytes).
///
/// Ordered bytewise, so a directory sorts before everything inside it.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct RelPath(Vec<u8>);

impl RelPath {
    /// Validates `bytes` as a relative path.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<Self, ReviewError> {
        let bytes = bytes.into();
        let bad = |reason| ReviewError::InvalidPath {
            path: escape_bytes(&bytes, false),
            reason,
        };
        if bytes.is_empty() {
            return Err(bad("empty"));
        }
        if bytes.contains(&0) {
            return Err(bad("contains a NUL byte"));
        }
        if bytes[0] == b'/' {
            return Err(bad("absolute"));
        }
        for comp in bytes.split(|&b| b == b'/') {
            match comp {
                b"" => return Err(bad("empty component")),
                b"." => return Err(bad("`.` component")),
                b".." => return Err(bad("`..` component")),
                _ => {}
            }
        }
        Ok(RelPath(bytes))
    }

    /// Parses the escaped form (as shown on the card and carried in JSON) and validates it.
    pub fn parse_escaped(s: &str) -> Result<Self, ReviewError> {
        let bytes = unescape(s).map_err(|reason| ReviewError::InvalidPath {
            path: s.to_string(),
            reason,
        })?;
        RelPath::new(bytes)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The path with one more component (`name` must be a single valid component).
    pub fn join(&self, name: &[u8]) -> Result<Self, ReviewError> {
        let mut v = self.0.clone();
        v.push(b'/');
        v.extend_from_slice(name);
        RelPath::new(v)
    }

    /// The last component.
    pub fn file_name(&self) -> &[u8] {
        match self.0.iter().rposition(|&b| b == b'/') {
            Some(i) => &self.0[i + 1..],
            None => &self.0,
        }
    }

    /// The parent path, `None` for a top-level entry.
    pub fn parent(&self) -> Option<RelPath> {
        self.0
            .iter()
            .rposition(|&b| b == b'/')
            .map(|i| RelPath(self.0[..i].to_vec()))
    }

    /// Whether `self` is `other` or lies inside it.
    pub fn starts_with(&self, other: &RelPath) -> bool {
        self.0 == other.0
            || (self.0.len() > other.0.len()
                && self.0.starts_with(&other.0)
                && self.0[other.0.len()] == b'/')
    }

    /// Number of components.
    pub fn depth(&self) -> usize {
        self.0.iter().filter(|&&b| b == b'/').count() + 1
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&escape_bytes(&self.0, false))
    }
}

impl Serialize for RelPath {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&escape_bytes(&self.0, false))
    }
}

impl<'de> Deserialize<'de> for RelPath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        RelPath::parse_escaped(&s).map_err(serde::de::Error::custom)
    }
}

/// Joins an optional directory path and a name (the root has no path).
pub(crate) fn child(dir: Option<&RelPath>, name: &[u8]) -> Result<RelPath, ReviewError> {
    match dir {
        Some(d) => d.join(name),
        None => RelPath::new(name.to_vec()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rejects_bad_paths() {
        for bad in [
            &b""[..],
            b"/a",
            b"a//b",
            b"a/",
            b"..",
            b"a/../b",
            b"./a",
            b"a/.",
            b"a\0b",
        ] {
            assert!(RelPath::new(bad.to_vec()).is_err(), "{bad:?}");
        }
        for good in [&b"a"[..], b"a/b", b"...", b"..a", b"\xff/\x1b", b"a b/c\\d"] {
            assert!(RelPath::new(good.to_vec()).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn escapes_terminal_tricks() {
        let p = RelPath::new(b"a\x1b[31m\xff\\\xe2\x80\xae".to_vec()).unwrap();
        assert_eq!(p.to_string(), "a\\x1b[31m\\xff\\\\\\xe2\\x80\\xae");
        assert_eq!(RelPath::parse_escaped(&p.to_string()).unwrap(), p);
        assert_eq!(escape_bytes(b"a\tb", true), "a\tb");
        assert!(unescape("\\q").is_err());
        assert!(unescape("\\x4").is_err());
    }

    #[test]
    fn parent_and_prefix() {
        let p = RelPath::new(b"a/b/c".to_vec()).unwrap();
        assert_eq!(p.parent().unwrap().as_bytes(), b"a/b");
        assert_eq!(p.file_name(), b"c");
        assert!(p.starts_with(&RelPath::new(b"a".to_vec()).unwrap()));
        assert!(
            !RelPath::new(b"ab".to_vec())
                .unwrap()
                .starts_with(&RelPath::new(b"a".to_vec()).unwrap())
        );
    }

    proptest! {
        /// Every byte string round-trips through the escaping.
        #[test]
        fn escape_round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let e = escape_bytes(&bytes, false);
            prop_assert!(!e.chars().any(|c| c.is_control()));
            let t = for_terminal(&String::from_utf8_lossy(&bytes));
            prop_assert!(!t.chars().any(|c| (c.is_control() && c != '\n' && c != '\t') || is_deceptive(c)));
            prop_assert_eq!(unescape(&e).unwrap(), bytes);
        }

        /// Validation accepts exactly the paths whose components are all ordinary names, and an
        /// accepted path survives JSON.
        #[test]
        fn validation_matches_components(comps in proptest::collection::vec(
            prop_oneof![
                Just(b"".to_vec()), Just(b".".to_vec()), Just(b"..".to_vec()),
                proptest::collection::vec(any::<u8>().prop_filter("no slash", |b| *b != b'/'), 1..6),
            ], 0..5), lead in any::<bool>())
        {
            let mut bytes = if lead { b"/".to_vec() } else { Vec::new() };
            bytes.extend(comps.join(&b'/'));
            let ok = !lead && !comps.is_empty() && comps.iter().all(|c| {
                !c.is_empty() && c != b"." && c != b".." && !c.contains(&0)
            });
            let parsed = RelPath::new(bytes.clone());
            prop_assert_eq!(parsed.is_ok(), ok, "{:?}", bytes);
            if let Ok(p) = parsed {
                let json = serde_json::to_string(&p).unwrap();
                let back: RelPath = serde_json::from_str(&json).unwrap();
                prop_assert_eq!(back, p);
            }
        }

        /// JSON never smuggles in a path that validation would refuse.
        #[test]
        fn deserialize_validates(s in "\\PC{0,20}") {
            let json = serde_json::to_string(&s).unwrap();
            let r: Result<RelPath, _> = serde_json::from_str(&json);
            if let Ok(p) = r {
                prop_assert!(RelPath::new(p.as_bytes().to_vec()).is_ok());
            }
        }
    }
}
