//! Sandbox identifiers, validated at the boundary.
//!
//! A [`SandboxId`] names files, sockets, cgroups and firewall objects, so it must never be able to
//! name anything outside its own space: only ASCII letters, digits, `-` and `_` are accepted, 1 to
//! [`SandboxId::MAX_LEN`] characters, not starting with `-` (so it can never be read as an option).
//! Objects whose names have tighter limits than a path (iptables chains allow 28 characters) use
//! [`SandboxId::short_name`], a digest of the *whole* id, so `task-1` and `task_1` never collide and
//! a 64-character id never overflows.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Why a string is not a valid sandbox id. Each message names the offending input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The id is empty.
    #[error("sandbox id is empty")]
    Empty,
    /// The id is longer than the maximum.
    #[error("sandbox id is {len} characters long; at most {max} are allowed")]
    TooLong { len: usize, max: usize },
    /// The id starts with `-`, which a command line would read as an option.
    #[error("sandbox id {0:?} starts with '-'")]
    LeadingDash(String),
    /// The id holds a character outside `[A-Za-z0-9_-]`.
    #[error(
        "sandbox id {id:?} contains {ch:?}; only ASCII letters, digits, '-' and '_' are allowed"
    )]
    BadChar { id: String, ch: char },
}

/// A validated sandbox id: `[A-Za-z0-9_][A-Za-z0-9_-]{0,63}`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SandboxId(String);

impl SandboxId {
    /// Longest accepted id, in bytes (all accepted characters are one byte).
    pub const MAX_LEN: usize = 64;
    /// Length of [`SandboxId::short_name`]: `lg` plus 20 hex digits (80 bits of SHA-256).
    pub const SHORT_NAME_LEN: usize = 22;

    /// Parses and validates an id.
    pub fn new(id: &str) -> Result<Self, IdError> {
        if id.is_empty() {
            return Err(IdError::Empty);
        }
        // Count characters, not bytes, so a multi-byte id gets an honest length in the message.
        let len = id.chars().count();
        if len > Self::MAX_LEN {
            return Err(IdError::TooLong {
                len,
                max: Self::MAX_LEN,
            });
        }
        if let Some(ch) = id
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        {
            return Err(IdError::BadChar {
                id: id.to_owned(),
                ch,
            });
        }
        if id.starts_with('-') {
            return Err(IdError::LeadingDash(id.to_owned()));
        }
        Ok(Self(id.to_owned()))
    }

    /// A fresh random id (`sb-` and 16 hex digits) for sandboxes the user did not name.
    pub fn generate() -> Self {
        use std::time::{SystemTime, UNIX_EPOCH};
        // Not a secret, only unique: time, pid and a process-local counter, hashed.
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let mut h = Sha256::new();
        h.update(nanos.to_le_bytes());
        h.update(std::process::id().to_le_bytes());
        h.update(n.to_le_bytes());
        let digest = h.finalize();
        Self(format!("sb-{}", hex(&digest[..8])))
    }

    /// The id as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Full SHA-256 of the id, in hex.
    pub fn digest_hex(&self) -> String {
        hex(&Sha256::digest(self.0.as_bytes()))
    }

    /// A short name derived from a digest of the whole id, for kernel objects with tight name
    /// limits (nftables tables, iptables chains, interface names are 15 bytes — use a prefix of
    /// this). Always [`SandboxId::SHORT_NAME_LEN`] characters of `[a-z0-9]`.
    pub fn short_name(&self) -> String {
        let digest = Sha256::digest(self.0.as_bytes());
        format!("lg{}", &hex(&digest[..10]))
    }
}

fn hex(bytes: &[u8]) -> String {
    use fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

impl fmt::Display for SandboxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for SandboxId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl TryFrom<String> for SandboxId {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(&s)
    }
}

impl From<SandboxId> for String {
    fn from(id: SandboxId) -> String {
        id.0
    }
}

impl AsRef<str> for SandboxId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_ordinary_ids() {
        for ok in ["a", "task-1", "task_1", "_x", "A9", &"z".repeat(64)] {
            assert_eq!(SandboxId::new(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn rejects_hostile_ids_with_clear_errors() {
        assert_eq!(SandboxId::new(""), Err(IdError::Empty));
        assert!(matches!(
            SandboxId::new("../../etc/passwd"),
            Err(IdError::BadChar { ch: '.', .. })
        ));
        assert!(matches!(
            SandboxId::new("a/b"),
            Err(IdError::BadChar { ch: '/', .. })
        ));
        assert!(matches!(
            SandboxId::new("."),
            Err(IdError::BadChar { ch: '.', .. })
        ));
        assert!(matches!(SandboxId::new(".."), Err(IdError::BadChar { .. })));
        assert!(matches!(
            SandboxId::new("a\0b"),
            Err(IdError::BadChar { ch: '\0', .. })
        ));
        assert!(matches!(
            SandboxId::new("a b"),
            Err(IdError::BadChar { ch: ' ', .. })
        ));
        assert!(matches!(SandboxId::new("é"), Err(IdError::BadChar { .. })));
        assert!(matches!(
            SandboxId::new("-rf"),
            Err(IdError::LeadingDash(_))
        ));
        assert_eq!(
            SandboxId::new(&"a".repeat(65)),
            Err(IdError::TooLong { len: 65, max: 64 })
        );
        let msg = SandboxId::new("../../etc/passwd").unwrap_err().to_string();
        assert!(
            msg.contains("../../etc/passwd") && msg.contains("'.'"),
            "{msg}"
        );
    }

    #[test]
    fn serde_validates() {
        let ok: SandboxId = serde_json::from_str("\"task-1\"").unwrap();
        assert_eq!(ok.as_str(), "task-1");
        assert!(serde_json::from_str::<SandboxId>("\"../x\"").is_err());
    }

    #[test]
    fn short_names_differ_for_lookalikes_and_fit_limits() {
        let a = SandboxId::new("task-1").unwrap().short_name();
        let b = SandboxId::new("task_1").unwrap().short_name();
        assert_ne!(a, b);
        let long = SandboxId::new(&"x".repeat(64)).unwrap().short_name();
        assert_eq!(long.len(), SandboxId::SHORT_NAME_LEN);
        assert!(
            long.len() <= 28,
            "iptables chain names are limited to 28 characters"
        );
    }

    #[test]
    fn generated_ids_are_valid_and_distinct() {
        let a = SandboxId::generate();
        let b = SandboxId::generate();
        assert_ne!(a, b);
        assert_eq!(SandboxId::new(a.as_str()).unwrap(), a);
    }

    proptest! {
        #[test]
        fn valid_ids_round_trip(s in "[A-Za-z0-9_][A-Za-z0-9_-]{0,63}") {
            let id = SandboxId::new(&s).unwrap();
            prop_assert_eq!(id.as_str(), s.as_str());
            let name = id.short_name();
            prop_assert_eq!(name.len(), SandboxId::SHORT_NAME_LEN);
            prop_assert!(name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
        }

        #[test]
        fn distinct_ids_never_share_a_short_name(
            a in "[A-Za-z0-9_][A-Za-z0-9_-]{0,63}",
            b in "[A-Za-z0-9_][A-Za-z0-9_-]{0,63}",
        ) {
            prop_assume!(a != b);
            let (a, b) = (SandboxId::new(&a).unwrap(), SandboxId::new(&b).unwrap());
            prop_assert_ne!(a.short_name(), b.short_name());
            prop_assert_ne!(a.digest_hex(), b.digest_hex());
        }

        #[test]
        fn arbitrary_strings_are_either_rejected_or_safe(s in "\\PC{0,80}") {
            if let Ok(id) = SandboxId::new(&s) {
                prop_assert!(!id.as_str().contains(['/', '.', '\0']));
                prop_assert!(id.as_str().len() <= SandboxId::MAX_LEN);
            }
        }
    }
}
