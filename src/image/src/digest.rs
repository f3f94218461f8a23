//! SHA-256 digests as lowercase hex: what names images and artifacts in the store.

use std::fmt;
use std::io::{Read, Write};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// Why a string is not a SHA-256 digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not a sha256 digest (64 lowercase hex digits)")]
pub struct DigestError {
    /// The refused string (truncated to 80 characters).
    pub value: String,
}

/// A SHA-256 digest: exactly 64 lowercase hex digits. Safe to use as a file name.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Digest(String);

impl Digest {
    /// Hex digits in a digest.
    pub const LEN: usize = 64;

    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest::from_hasher(Sha256::new_with_prefix(bytes))
    }

    /// The digest of labelled parts, each length-prefixed so that no two different lists of
    /// parts hash alike (`["ab", "c"]` vs `["a", "bc"]`). For a build's inputs digest.
    pub fn of_parts<'a>(parts: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> Digest {
        let mut hasher = Sha256::new();
        for (label, bytes) in parts {
            for field in [label.as_bytes(), bytes] {
                hasher.update((field.len() as u64).to_le_bytes());
                hasher.update(field);
            }
        }
        Digest::from_hasher(hasher)
    }

    /// The digest of everything `reader` yields, and how many bytes that was.
    pub fn of_reader(mut reader: impl Read) -> std::io::Result<(Digest, u64)> {
        let mut writer = HashingWriter::new(std::io::sink());
        std::io::copy(&mut reader, &mut writer)?;
        Ok(writer.finish())
    }

    pub(crate) fn from_hasher(hasher: Sha256) -> Digest {
        let hash = hasher.finalize();
        let mut hex = String::with_capacity(Self::LEN);
        for byte in hash {
            hex.push(char::from(b"0123456789abcdef"[usize::from(byte >> 4)]));
            hex.push(char::from(b"0123456789abcdef"[usize::from(byte & 15)]));
        }
        Digest(hex)
    }

    /// The 64 hex digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first 12 hex digits, for display.
    pub fn short(&self) -> &str {
        &self.0[..12]
    }
}

/// Whether `s` is made of lowercase hex digits only.
pub(crate) fn is_lower_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() == Self::LEN && is_lower_hex(s) {
            Ok(Digest(s.to_owned()))
        } else {
            Err(DigestError {
                value: s.chars().take(80).collect(),
            })
        }
    }
}

impl TryFrom<String> for Digest {
    type Error = DigestError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Digest> for String {
    fn from(d: Digest) -> String {
        d.0
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.0)
    }
}

/// A writer that hashes and counts what passes through it.
#[derive(Debug)]
pub(crate) struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    len: u64,
}

impl<W: Write> HashingWriter<W> {
    pub(crate) fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            len: 0,
        }
    }

    pub(crate) fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    /// The digest and length of everything written.
    pub(crate) fn finish(self) -> (Digest, u64) {
        (Digest::from_hasher(self.hasher), self.len)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

    use super::*;

    #[test]
    fn known_values() {
        assert_eq!(
            Digest::of(b"").as_str(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            Digest::of(b"abc").to_string(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let (d, n) = Digest::of_reader(&b"abc"[..]).unwrap();
        assert_eq!((d, n), (Digest::of(b"abc"), 3));
        assert_eq!(Digest::of(b"abc").short(), "ba7816bf8f01");
    }

    #[test]
    fn parts_are_unambiguous() {
        let a = Digest::of_parts([("x", &b"ab"[..]), ("y", b"c")]);
        let b = Digest::of_parts([("x", &b"a"[..]), ("y", b"bc")]);
        let c = Digest::of_parts([("x", &b"ab"[..]), ("y", b"c")]);
        assert_ne!(a, b);
        assert_eq!(a, c);
    }

    #[test]
    fn parsing_accepts_only_64_lowercase_hex() {
        let good = Digest::of(b"x").to_string();
        assert_eq!(good.parse::<Digest>().unwrap().as_str(), good);
        for bad in [
            String::new(),
            "../x".to_owned(),
            good[..63].to_owned(),
            format!("{good}0"),
            good.to_uppercase(),
            format!("{}g", &good[..63]),
            format!("../{}", &good[..61]),
        ] {
            assert!(bad.parse::<Digest>().is_err(), "{bad:?}");
        }
        let json = serde_json::to_string(&Digest::of(b"x")).unwrap();
        assert_eq!(json, format!("\"{good}\""));
        assert!(serde_json::from_str::<Digest>("\"../../etc\"").is_err());
    }
}
