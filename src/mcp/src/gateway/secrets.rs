//! Finding secrets in tool arguments and results, and taking them out.
//!
//! A [`Scanner`] looks, in every string of a JSON value (and in object keys), for the configured
//! secret values — literally, base64-encoded (standard and URL-safe, at any of the three byte
//! alignments, padded or not) and percent-encoded — and, when asked, for common credential
//! shapes (cloud keys, tokens, private keys, JWTs). Everything is one regex, built once.
//!
//! What it reports ([`Finding`]) names the secret or the shape and where it was (a JSON
//! pointer whose segments are themselves redacted), never the value. Secrets escaped inside a
//! JSON document carried in a string (`\"`, `\\`, `\uXXXX`) are not recognised in that form.

use std::collections::BTreeSet;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use regex::{Regex, RegexBuilder};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use zeroize::Zeroize;

/// The shortest secret value a scanner accepts: shorter ones match too much by chance.
pub const MIN_SECRET_LEN: usize = 8;

/// What replaces a string that still held a secret after its occurrences were replaced (the
/// scanner refuses secrets that occur in it).
const FALLBACK: &str = "[REDACTED]";

/// A secret value. Its `Debug` and `Display` never print it; it is wiped from memory on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself: only for handing it to where it is used (an environment variable).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// What to do with a secret found in a tool call's arguments or in its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScanMode {
    /// Refuse the call (or drop the result) and say what was found where.
    Block,
    /// Replace each occurrence with `[REDACTED:<name>]` and go on.
    Redact,
    /// Do not look.
    Off,
}

/// A credential shape recognised without being configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Shape {
    /// `AKIA` and 16 upper-case letters or digits.
    AwsAccessKeyId,
    /// `ghp_`, `gho_`, `ghu_`, `ghs_`, `ghr_` and 36 or more characters.
    GithubToken,
    /// `github_pat_…`, a fine-grained personal access token.
    GithubPat,
    /// `xoxa-`, `xoxb-`, `xoxp-`, `xoxr-`, `xoxs-`.
    SlackToken,
    /// A PEM `-----BEGIN … PRIVATE KEY-----` header.
    PrivateKey,
    /// `sk-ant-…`.
    AnthropicKey,
    /// `sk-…` (OpenAI and the like).
    OpenaiKey,
    /// `AIza` and 35 characters.
    GoogleApiKey,
    /// Three base64url parts, the first two JSON objects (`eyJ`).
    Jwt,
}

impl Shape {
    /// Every shape with its pattern; earlier entries win at the same position.
    const ALL: [(Self, &'static str); 9] = [
        (Self::PrivateKey, r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
        (Self::GithubPat, r"github_pat_[A-Za-z0-9_]{22,}"),
        (Self::GithubToken, r"gh[pousr]_[A-Za-z0-9]{36,}"),
        (Self::AwsAccessKeyId, r"AKIA[0-9A-Z]{16}"),
        (Self::SlackToken, r"xox[abprs]-[A-Za-z0-9-]{10,}"),
        (Self::AnthropicKey, r"sk-ant-[A-Za-z0-9_-]{20,}"),
        (Self::OpenaiKey, r"sk-[A-Za-z0-9_-]{20,}"),
        (Self::GoogleApiKey, r"AIza[0-9A-Za-z_-]{35}"),
        (
            Self::Jwt,
            r"eyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}",
        ),
    ];

    /// Its name in findings and redaction marks.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::AwsAccessKeyId => "aws-access-key-id",
            Self::GithubToken => "github-token",
            Self::GithubPat => "github-pat",
            Self::SlackToken => "slack-token",
            Self::PrivateKey => "private-key",
            Self::AnthropicKey => "anthropic-key",
            Self::OpenaiKey => "openai-key",
            Self::GoogleApiKey => "google-api-key",
            Self::Jwt => "jwt",
        }
    }
}

/// What was found: a configured secret (by name) or a credential shape.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FindingKind {
    /// The value of the configured secret of this name.
    Secret(String),
    /// Something that looks like a credential of this kind.
    Shape(Shape),
}

impl fmt::Display for FindingKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Secret(name) => f.write_str(name),
            Self::Shape(shape) => f.write_str(shape.as_str()),
        }
    }
}

/// How a configured secret was written where it was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Encoding {
    /// As it is.
    Plain,
    /// Base64, standard or URL-safe.
    Base64,
    /// Percent-encoded (as in a URL).
    Percent,
}

/// One secret found: what and where, never the value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Finding {
    /// The secret's name or the shape.
    pub kind: FindingKind,
    /// How it was written.
    pub encoding: Encoding,
    /// A JSON pointer (RFC 6901) to the string that holds it; its segments are redacted.
    pub pointer: String,
    /// Found in the name of the object member at `pointer`, not in its value.
    pub in_key: bool,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pointer = if self.pointer.is_empty() {
            "(the whole value)"
        } else {
            &self.pointer
        };
        write!(f, "{} at {pointer}", self.kind)?;
        if self.encoding != Encoding::Plain {
            write!(f, " ({:?}-encoded)", self.encoding)?;
        }
        if self.in_key {
            f.write_str(" (in a member name)")?;
        }
        Ok(())
    }
}

/// A value refused because it carries secrets ([`ScanMode::Block`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("blocked: it carries {}", list(.findings))]
pub struct Blocked {
    /// What was found where.
    pub findings: Vec<Finding>,
}

fn list(findings: &[Finding]) -> String {
    let all: Vec<String> = findings.iter().map(ToString::to_string).collect();
    all.join(", ")
}

/// Why a scanner cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScanError {
    /// A secret value too short to look for without matching ordinary text.
    #[error(
        "secret `{name}` is {len} bytes long: values shorter than {MIN_SECRET_LEN} bytes cannot be \
         scanned for safely (use a longer secret, or a literal value if it is not secret)"
    )]
    TooShort { name: String, len: usize },
    /// A secret value that occurs in the redaction marks themselves.
    #[error("secret `{name}`'s value occurs in a redaction mark; it cannot be redacted")]
    InMarker { name: String },
    /// The combined pattern would not compile (too many or too long secrets).
    #[error("cannot build the secret scanner: {0}")]
    Build(String),
}

/// Finds and redacts secrets in JSON values. Build once, use for every call.
#[derive(Clone)]
pub struct Scanner {
    /// One capture group per alternative, in `labels` order.
    regex: Option<Regex>,
    labels: Vec<(FindingKind, Encoding)>,
}

impl fmt::Debug for Scanner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kinds: BTreeSet<String> = self.labels.iter().map(|(k, _)| k.to_string()).collect();
        f.debug_struct("Scanner")
            .field("looks_for", &kinds)
            .finish()
    }
}

impl Scanner {
    /// A scanner for these named secrets and, with `shapes`, the credential shapes.
    pub fn new(values: Vec<(String, Secret)>, shapes: bool) -> Result<Self, ScanError> {
        let mut alternatives: Vec<(String, FindingKind, Encoding)> = Vec::new();
        for (name, secret) in &values {
            let value = secret.expose();
            if value.len() < MIN_SECRET_LEN {
                return Err(ScanError::TooShort {
                    name: name.clone(),
                    len: value.len(),
                });
            }
            let kind = FindingKind::Secret(name.clone());
            for (form, encoding) in forms(value) {
                alternatives.push((form, kind.clone(), encoding));
            }
        }
        // Longest first: where two secrets overlap, the whole of the longer one goes.
        alternatives.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        alternatives.dedup_by(|a, b| a.0 == b.0);
        let mut pattern = String::new();
        let mut labels = Vec::new();
        for (form, kind, encoding) in alternatives {
            push_alternative(&mut pattern, &regex::escape(&form));
            labels.push((kind, encoding));
        }
        if shapes {
            for (shape, re) in Shape::ALL {
                push_alternative(&mut pattern, re);
                labels.push((FindingKind::Shape(shape), Encoding::Plain));
            }
        }
        let regex = if labels.is_empty() {
            None
        } else {
            let built = RegexBuilder::new(&pattern)
                .size_limit(64 << 20)
                .build()
                .map_err(|e| ScanError::Build(e.to_string()))?;
            Some(built)
        };
        let scanner = Self { regex, labels };
        // A mark that still held a secret could not be told from the secret itself.
        for (name, _) in &values {
            let mark = mark(&FindingKind::Secret(name.clone()));
            if let Some((kind, _)) = scanner.first_match(&mark).or(scanner.first_match(FALLBACK)) {
                let name = match kind {
                    FindingKind::Secret(n) => n,
                    FindingKind::Shape(s) => s.as_str().to_owned(),
                };
                return Err(ScanError::InMarker { name });
            }
        }
        Ok(scanner)
    }

    /// Whether this scanner looks for anything at all.
    pub fn is_empty(&self) -> bool {
        self.regex.is_none()
    }

    /// Every secret in `v`: what and where.
    pub fn scan(&self, v: &Value) -> Vec<Finding> {
        let mut found = Vec::new();
        if self.regex.is_some() {
            let mut pointer = String::new();
            self.scan_at(v, &mut pointer, &mut found);
        }
        found
    }

    /// Replaces every secret in `v`'s strings, numbers and member names with
    /// `[REDACTED:<name or shape>]`; returns how many were replaced.
    pub fn redact(&self, v: &mut Value) -> usize {
        if self.regex.is_none() {
            return 0;
        }
        match v {
            Value::String(s) => {
                let (out, n) = self.redact_str(s);
                if n > 0 {
                    *s = out;
                }
                n
            }
            Value::Number(num) => {
                let (out, n) = self.redact_str(&num.to_string());
                if n > 0 {
                    *v = Value::String(out);
                }
                n
            }
            Value::Array(items) => items.iter_mut().map(|i| self.redact(i)).sum(),
            Value::Object(map) => {
                let mut count = 0;
                let old = std::mem::take(map);
                for (key, mut value) in old {
                    count += self.redact(&mut value);
                    let (redacted, n) = self.redact_str(&key);
                    count += n;
                    // Two names redacted alike must not overwrite each other.
                    let mut key = redacted.clone();
                    let mut i = 1;
                    while n > 0 && map.contains_key(&key) {
                        i += 1;
                        key = format!("{redacted}#{i}");
                    }
                    map.insert(key, value);
                }
                count
            }
            Value::Null | Value::Bool(_) => 0,
        }
    }

    /// `s` with every secret replaced by `[REDACTED:<name or shape>]`, and how many there were.
    pub fn redact_str(&self, s: &str) -> (String, usize) {
        let Some(regex) = &self.regex else {
            return (s.to_owned(), 0);
        };
        let mut count = 0;
        let out = regex.replace_all(s, |caps: &regex::Captures<'_>| {
            count += 1;
            match self.label(caps) {
                Some((kind, _)) => mark(kind),
                None => FALLBACK.to_owned(),
            }
        });
        // What is left between the marks cannot hold a secret, unless it spans a mark: then
        // the whole string goes.
        if count > 0 && regex.is_match(&out) {
            return (FALLBACK.to_owned(), count);
        }
        (out.into_owned(), count)
    }

    /// Applies `mode` to `v`: nothing, redaction (the count), or refusal if it carries secrets.
    pub fn apply(&self, mode: ScanMode, v: &mut Value) -> Result<usize, Blocked> {
        match mode {
            ScanMode::Off => Ok(0),
            ScanMode::Redact => Ok(self.redact(v)),
            ScanMode::Block => {
                let findings = self.scan(v);
                if findings.is_empty() {
                    Ok(0)
                } else {
                    Err(Blocked { findings })
                }
            }
        }
    }

    fn scan_at(&self, v: &Value, pointer: &mut String, found: &mut Vec<Finding>) {
        match v {
            Value::String(s) => self.scan_str(s, pointer, false, found),
            Value::Number(n) => self.scan_str(&n.to_string(), pointer, false, found),
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    let len = pointer.len();
                    pointer.push('/');
                    pointer.push_str(&i.to_string());
                    self.scan_at(item, pointer, found);
                    pointer.truncate(len);
                }
            }
            Value::Object(map) => {
                for (key, value) in map {
                    let len = pointer.len();
                    pointer.push('/');
                    let (segment, _) = self.redact_str(key);
                    pointer.push_str(&segment.replace('~', "~0").replace('/', "~1"));
                    self.scan_str(key, pointer, true, found);
                    self.scan_at(value, pointer, found);
                    pointer.truncate(len);
                }
            }
            Value::Null | Value::Bool(_) => {}
        }
    }

    fn scan_str(&self, s: &str, pointer: &str, in_key: bool, found: &mut Vec<Finding>) {
        let Some(regex) = &self.regex else { return };
        let mut here = BTreeSet::new();
        for caps in regex.captures_iter(s) {
            if let Some((kind, encoding)) = self.label(&caps) {
                here.insert((kind.clone(), *encoding));
            }
        }
        found.extend(here.into_iter().map(|(kind, encoding)| Finding {
            kind,
            encoding,
            pointer: pointer.to_owned(),
            in_key,
        }));
    }

    fn first_match(&self, s: &str) -> Option<(FindingKind, Encoding)> {
        let caps = self.regex.as_ref()?.captures(s)?;
        self.label(&caps).cloned()
    }

    /// Which alternative matched (group `i + 1` is `labels[i]`).
    fn label(&self, caps: &regex::Captures<'_>) -> Option<&(FindingKind, Encoding)> {
        let group = caps.iter().skip(1).position(|g| g.is_some())?;
        self.labels.get(group)
    }
}

/// `[REDACTED:<name or shape>]`.
fn mark(kind: &FindingKind) -> String {
    format!("[REDACTED:{kind}]")
}

fn push_alternative(pattern: &mut String, re: &str) {
    if !pattern.is_empty() {
        pattern.push('|');
    }
    pattern.push('(');
    pattern.push_str(re);
    pattern.push(')');
}

/// Every way `value` may be written that the scanner looks for.
fn forms(value: &str) -> Vec<(String, Encoding)> {
    let mut out = vec![(value.to_owned(), Encoding::Plain)];
    // Base64 of the value alone, whole (with its final partial group and padding).
    for engine in [STANDARD, URL_SAFE] {
        out.push((engine.encode(value), Encoding::Base64));
    }
    for engine in [STANDARD_NO_PAD, URL_SAFE_NO_PAD] {
        out.push((engine.encode(value), Encoding::Base64));
        // Base64 of a text holding the value at offset ≡ r (mod 3): the characters whose six
        // bits all come from the value are the same whatever surrounds it.
        for r in 0..3usize {
            let mut bytes = vec![0u8; r];
            bytes.extend_from_slice(value.as_bytes());
            let encoded = engine.encode(&bytes);
            let first = (8 * r).div_ceil(6);
            let end = (8 * (r + value.len())) / 6;
            if let Some(core) = encoded.get(first..end) {
                out.push((core.to_owned(), Encoding::Base64));
            }
        }
    }
    for upper in [true, false] {
        out.push((percent_encode(value, upper), Encoding::Percent));
    }
    out.retain(|(form, encoding)| *encoding == Encoding::Plain || form != value);
    out
}

/// Every byte but the URL-unreserved ones (`A-Z a-z 0-9 - . _ ~`) as `%XX`.
fn percent_encode(value: &str, upper: bool) -> String {
    let mut out = String::with_capacity(value.len() * 3);
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else if upper {
            out.push_str(&format!("%{b:02X}"));
        } else {
            out.push_str(&format!("%{b:02x}"));
        }
    }
    out
}

#[cfg(test)]
mod tests;
