//! C2SP signed notes (<https://c2sp.org/signed-note>) with Ed25519 keys: signing, verifying, and
//! the text forms of keys (`<name>+<hex id>+<base64(0x01 || key)>` for a verifier key, and Go's
//! `PRIVATE+KEY+<name>+<hex id>+<base64(0x01 || seed)>` for a signing key).

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signer, Verifier};
use sha2::{Digest, Sha256};

use crate::error::{AuditError, Result};

/// The signature-line prefix: U+2014 EM DASH and a space.
const DASH: &str = "\u{2014} ";
/// The Ed25519 signature type byte.
const ALG_ED25519: u8 = 0x01;

fn bad_key(what: &str, reason: impl Into<String>) -> AuditError {
    AuditError::BadKey {
        what: what.into(),
        reason: reason.into(),
    }
}

/// Checks a key name: non-empty, no `+`, no whitespace.
pub fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name.contains('+') || name.chars().any(char::is_whitespace) {
        return Err(bad_key(
            "key name",
            format!("{name:?} must be non-empty, without '+' or whitespace"),
        ));
    }
    Ok(())
}

/// The key id: the first 4 bytes of SHA-256(name || 0x0A || 0x01 || public key), big-endian.
pub fn key_id(name: &str, public: &[u8; 32]) -> u32 {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([b'\n', ALG_ED25519]);
    h.update(public);
    let d = h.finalize();
    u32::from_be_bytes([d[0], d[1], d[2], d[3]])
}

/// Splits `<name>+<8 hex digits>+<base64>` and checks the base64 part is 0x01 || 32 bytes.
fn split_key<'a>(s: &'a str, what: &str) -> Result<(&'a str, u32, [u8; 32])> {
    // The name has no '+'; the base64 part may.
    let mut parts = s.trim_end().splitn(3, '+');
    let (Some(name), Some(hex), Some(b64)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad_key(what, "want <name>+<hex id>+<base64 key>"));
    };
    check_name(name)?;
    let id = match hex.len() == 8 && hex.bytes().all(|c| c.is_ascii_hexdigit()) {
        true => u32::from_str_radix(hex, 16).map_err(|e| bad_key(what, e.to_string()))?,
        false => return Err(bad_key(what, "key id is not 8 hex digits")),
    };
    let raw = B64
        .decode(b64)
        .map_err(|e| bad_key(what, format!("base64: {e}")))?;
    match raw.split_first() {
        Some((&ALG_ED25519, key)) => {
            let key: [u8; 32] = key
                .try_into()
                .map_err(|_| bad_key(what, "key is not 32 bytes"))?;
            Ok((name, id, key))
        }
        _ => Err(bad_key(what, "not an Ed25519 (type 0x01) key")),
    }
}

/// A note signing key: a name and an Ed25519 key.
pub struct NoteSigner {
    name: String,
    id: u32,
    key: ed25519_dalek::SigningKey,
}

impl fmt::Debug for NoteSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NoteSigner({}+{:08x})", self.name, self.id)
    }
}

impl NoteSigner {
    /// The signer for `name` from a 32-byte Ed25519 seed.
    pub fn from_seed(name: &str, seed: &[u8; 32]) -> Result<NoteSigner> {
        check_name(name)?;
        let key = ed25519_dalek::SigningKey::from_bytes(seed);
        let id = key_id(name, key.verifying_key().as_bytes());
        Ok(NoteSigner {
            name: name.to_owned(),
            id,
            key,
        })
    }

    /// A new random key for `name` (seed from the OS random source).
    pub fn generate(name: &str) -> Result<NoteSigner> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| bad_key("new signing key", e.to_string()))?;
        NoteSigner::from_seed(name, &seed)
    }

    /// Parses Go's `PRIVATE+KEY+<name>+<hex id>+<base64(0x01 || seed)>` form.
    pub fn parse(s: &str) -> Result<NoteSigner> {
        let what = "signing key";
        let rest = s
            .trim_end()
            .strip_prefix("PRIVATE+KEY+")
            .ok_or_else(|| bad_key(what, "does not start with PRIVATE+KEY+"))?;
        let (name, id, seed) = split_key(rest, what)?;
        let signer = NoteSigner::from_seed(name, &seed)?;
        if signer.id != id {
            return Err(bad_key(what, "key id does not match the key"));
        }
        Ok(signer)
    }

    /// The `PRIVATE+KEY+…` text form.
    pub fn to_private_string(&self) -> String {
        let mut raw = vec![ALG_ED25519];
        raw.extend_from_slice(self.key.as_bytes());
        format!(
            "PRIVATE+KEY+{}+{:08x}+{}",
            self.name,
            self.id,
            B64.encode(raw)
        )
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The matching verifier key.
    pub fn verifier(&self) -> VerifierKey {
        VerifierKey {
            name: self.name.clone(),
            id: self.id,
            key: self.key.verifying_key(),
        }
    }

    /// Signs `text` (which must end in a newline) and returns the whole note.
    pub fn sign(&self, text: &str) -> Result<String> {
        if !text.ends_with('\n') {
            return Err(AuditError::BadNote(
                "note text must end in a newline".into(),
            ));
        }
        let sig = self.key.sign(text.as_bytes());
        let mut blob = self.id.to_be_bytes().to_vec();
        blob.extend_from_slice(&sig.to_bytes());
        Ok(format!(
            "{text}\n{DASH}{} {}\n",
            self.name,
            B64.encode(blob)
        ))
    }
}

/// A note verifier key: the trusted public half of a [`NoteSigner`].
#[derive(Clone, PartialEq, Eq)]
pub struct VerifierKey {
    name: String,
    id: u32,
    key: ed25519_dalek::VerifyingKey,
}

impl fmt::Debug for VerifierKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VerifierKey({self})")
    }
}

impl fmt::Display for VerifierKey {
    /// The `<name>+<hex id>+<base64(0x01 || key)>` form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut raw = vec![ALG_ED25519];
        raw.extend_from_slice(self.key.as_bytes());
        write!(f, "{}+{:08x}+{}", self.name, self.id, B64.encode(raw))
    }
}

impl std::str::FromStr for VerifierKey {
    type Err = AuditError;
    fn from_str(s: &str) -> Result<VerifierKey> {
        VerifierKey::parse(s)
    }
}

impl VerifierKey {
    /// Parses the `<name>+<hex id>+<base64(0x01 || key)>` form; the id must match.
    pub fn parse(s: &str) -> Result<VerifierKey> {
        let what = "verifier key";
        let (name, id, raw) = split_key(s, what)?;
        if key_id(name, &raw) != id {
            return Err(bad_key(what, "key id does not match the key"));
        }
        let key = ed25519_dalek::VerifyingKey::from_bytes(&raw)
            .map_err(|e| bad_key(what, e.to_string()))?;
        Ok(VerifierKey {
            name: name.to_owned(),
            id,
            key,
        })
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Verifies `note` and returns its text. Signatures by other keys are ignored; there must
    /// be one by this key (same name and id) and it must verify.
    pub fn verify<'a>(&self, note: &'a str) -> Result<&'a str> {
        let bad = |why: String| Err(AuditError::BadNote(why));
        let Some(split) = note.rfind("\n\n") else {
            return bad("no blank line before the signatures".into());
        };
        let (text, sigs) = (&note[..=split], &note[split + 2..]);
        if sigs.is_empty() || !sigs.ends_with('\n') {
            return bad("signature block missing or not newline-terminated".into());
        }
        let mut seen_ours = false;
        for line in sigs.lines() {
            let Some(rest) = line.strip_prefix(DASH) else {
                return bad(format!("malformed signature line {line:?}"));
            };
            let Some((name, b64)) = rest.split_once(' ') else {
                return bad(format!("malformed signature line {line:?}"));
            };
            let blob = match B64.decode(b64) {
                Ok(b) if b.len() >= 5 => b,
                _ => return bad(format!("signature of {name} is not valid base64")),
            };
            let id = u32::from_be_bytes([blob[0], blob[1], blob[2], blob[3]]);
            if name != self.name || id != self.id {
                continue;
            }
            seen_ours = true;
            let sig = ed25519_dalek::Signature::from_slice(&blob[4..])
                .map_err(|e| AuditError::BadNote(format!("signature of {name}: {e}")))?;
            if self.key.verify(text.as_bytes(), &sig).is_err() {
                return bad(format!("signature by {self} does not verify"));
            }
        }
        match seen_ours {
            true => Ok(text),
            false => bad(format!("no signature by the trusted key {self}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The example from golang.org/x/mod/sumdb/note (also in c2sp.org/signed-note's history).
    const SKEY: &str =
        "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
    const VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
    const TEXT: &str = "If you think cryptography is the answer to your problem,\n\
                        then you don't know what your problem is.\n";
    const SIG: &str = "\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";

    #[test]
    fn go_reference_vector() {
        let signer = NoteSigner::parse(SKEY).unwrap();
        assert_eq!(signer.to_private_string(), SKEY);
        assert_eq!(signer.verifier().to_string(), VKEY);
        let note = signer.sign(TEXT).unwrap();
        assert_eq!(note, format!("{TEXT}\n{SIG}"));
        let v = VerifierKey::parse(VKEY).unwrap();
        assert_eq!(v.verify(&note).unwrap(), TEXT);
    }

    #[test]
    fn tampered_notes_and_wrong_keys_fail() {
        let v = VerifierKey::parse(VKEY).unwrap();
        let note = format!("{TEXT}\n{SIG}");
        assert!(v.verify(&note.replace("problem,", "problem;")).is_err());
        let other = NoteSigner::from_seed("PeterNeumann", &[7; 32]).unwrap();
        let forged = other.sign(TEXT).unwrap();
        let err = v.verify(&forged).unwrap_err().to_string();
        assert!(err.contains("no signature by the trusted key"), "{err}");
        // Another key's extra signature is ignored; ours still verifies.
        let cosigned = format!("{note}{}", forged.rsplit('\n').nth(1).unwrap());
        assert_eq!(v.verify(&format!("{cosigned}\n")).unwrap(), TEXT);
        assert!(v.verify(TEXT).is_err());
        assert!(
            VerifierKey::parse(
                "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
            )
            .is_err()
        );
        assert!(NoteSigner::from_seed("a b", &[1; 32]).is_err());
        assert!(NoteSigner::from_seed("a+b", &[1; 32]).is_err());
    }
}
