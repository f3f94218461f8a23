//! Audit records: what one line of a log file holds, its canonical bytes and its hash.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::canonical;
use crate::error::AuditError;
use crate::hash::Hash32;
use crate::merkle;

/// Who caused an audited event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Actor {
    /// The Unix user id of the person or service.
    pub uid: u32,
    /// Which front end acted: `"cli"`, `"daemon"`, `"mcp"`, `"agent"`, … (free text).
    pub kind: String,
    /// The session the action belongs to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
}

impl Actor {
    /// An actor of `kind` with `uid` and no session.
    pub fn new(uid: u32, kind: impl Into<String>) -> Actor {
        Actor {
            uid,
            kind: kind.into(),
            session: None,
        }
    }

    /// The same actor within `session`.
    pub fn with_session(mut self, session: impl Into<String>) -> Actor {
        self.session = Some(session.into());
        self
    }
}

/// One audit record, as stored on one line of a log file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// Position in the log, from 0, without gaps.
    pub seq: u64,
    /// When it was appended, Unix time in milliseconds.
    pub time: u64,
    /// Who caused it.
    pub actor: Actor,
    /// What happened: a JSON object with a string `"type"` field, as the caller gave it.
    pub event: Value,
    /// The previous record's `hash` (all zeros for seq 0).
    pub prev: Hash32,
    /// This record's Merkle leaf hash: SHA-256(0x00 || canonical bytes of the record without
    /// `hash`).
    pub hash: Hash32,
}

/// Why a line is not a valid record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// Not JSON, or not a record (missing/extra/mistyped field).
    #[error("not a record: {0}")]
    Parse(String),
    /// The event is not an object with a string `"type"`.
    #[error("invalid event: {0}")]
    Event(String),
    /// The stored `hash` is not the hash of the record's content.
    #[error("hash mismatch: content hashes to {computed}, the record says {stored}")]
    HashMismatch {
        /// The hash of the content as read.
        computed: Hash32,
        /// The `hash` field.
        stored: Hash32,
    },
    /// The line is not the canonical serialization of the record it holds.
    #[error("line is not in canonical form (whitespace, key order or escaping changed)")]
    NotCanonical,
}

/// Checks that `event` is a JSON object with a string `"type"` field.
pub fn check_event(event: &Value) -> Result<(), RecordError> {
    match event.get("type") {
        Some(Value::String(_)) if event.is_object() => Ok(()),
        _ if !event.is_object() => Err(RecordError::Event("not a JSON object".into())),
        _ => Err(RecordError::Event("no string \"type\" field".into())),
    }
}

impl Record {
    /// Builds record `seq` after `prev` and computes its hash.
    pub fn new(
        seq: u64,
        time: u64,
        actor: Actor,
        event: Value,
        prev: Hash32,
    ) -> Result<Record, AuditError> {
        Record::build(seq, time, actor, event, prev).map(|(r, _)| r)
    }

    /// [`Record::new`], also returning the record's line.
    pub(crate) fn build(
        seq: u64,
        time: u64,
        actor: Actor,
        event: Value,
        prev: Hash32,
    ) -> Result<(Record, Vec<u8>), AuditError> {
        check_event(&event).map_err(|e| AuditError::InvalidEvent(e.to_string()))?;
        let mut r = Record {
            seq,
            time,
            actor,
            event,
            prev,
            hash: Hash32::ZERO,
        };
        let leaf = r.leaf_bytes();
        r.hash = merkle::leaf_hash(&leaf);
        let line = Record::line_from_leaf(&leaf, &r.hash);
        Ok((r, line))
    }

    /// The record as a JSON value without its `hash` member.
    fn to_value(&self) -> Value {
        let mut members = serde_json::Map::new();
        members.insert("seq".into(), Value::from(self.seq));
        members.insert("time".into(), Value::from(self.time));
        let mut actor = serde_json::Map::new();
        actor.insert("uid".into(), Value::from(self.actor.uid));
        actor.insert("kind".into(), Value::from(self.actor.kind.clone()));
        if let Some(s) = &self.actor.session {
            actor.insert("session".into(), Value::from(s.clone()));
        }
        members.insert("actor".into(), Value::Object(actor));
        members.insert("event".into(), self.event.clone());
        members.insert("prev".into(), Value::from(self.prev.to_string()));
        Value::Object(members)
    }

    /// The Merkle leaf bytes: the canonical serialization of the record without `hash`.
    pub fn leaf_bytes(&self) -> Vec<u8> {
        canonical::to_vec(&self.to_value())
    }

    /// The line stored in the log: the canonical serialization with `hash`, without newline.
    pub fn to_line(&self) -> Vec<u8> {
        Record::line_from_leaf(&self.leaf_bytes(), &self.hash)
    }

    /// The line from the leaf bytes: the top-level members are sorted (`actor`, `event`,
    /// `hash`, `prev`, `seq`, `time`), so `"hash"` goes right before the last `,"prev":"` —
    /// nothing after the top-level `prev` (hex digits and two integers) can contain it.
    fn line_from_leaf(leaf: &[u8], hash: &Hash32) -> Vec<u8> {
        const PREV: &[u8] = b",\"prev\":\"";
        let at = leaf
            .windows(PREV.len())
            .rposition(|w| w == PREV)
            .unwrap_or(leaf.len());
        let mut line = Vec::with_capacity(leaf.len() + 76);
        line.extend_from_slice(&leaf[..at]);
        line.extend_from_slice(b",\"hash\":\"");
        line.extend_from_slice(hash.to_string().as_bytes());
        line.push(b'"');
        line.extend_from_slice(&leaf[at..]);
        line
    }

    /// Parses one line (without its newline) and checks it is self-consistent: its event is
    /// valid, its `hash` is the hash of its content, and the line is in canonical form. Linking
    /// to the previous record (`seq`, `prev`) is the caller's job.
    pub fn parse_line(line: &[u8]) -> Result<Record, RecordError> {
        let r: Record =
            serde_json::from_slice(line).map_err(|e| RecordError::Parse(e.to_string()))?;
        check_event(&r.event)?;
        let leaf = r.leaf_bytes();
        let computed = merkle::leaf_hash(&leaf);
        if computed != r.hash {
            return Err(RecordError::HashMismatch {
                computed,
                stored: r.hash,
            });
        }
        if Record::line_from_leaf(&leaf, &r.hash) != line {
            return Err(RecordError::NotCanonical);
        }
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn sample() -> Record {
        Record::new(
            7,
            1_700_000_000_000,
            Actor::new(1000, "cli").with_session("s1"),
            json!({"type": "exec", "argv": ["ls", "-l"], "ok": true}),
            Hash32([1; 32]),
        )
        .unwrap()
    }

    #[test]
    fn line_round_trips_and_hash_is_leaf_hash_of_canonical_bytes() {
        let r = sample();
        let line = r.to_line();
        assert!(!line.contains(&b'\n'));
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(
            line,
            canonical::to_vec(&v),
            "line is the canonical form with hash"
        );
        assert_eq!(Record::parse_line(&line).unwrap(), r);
        let mut pre = vec![0u8];
        pre.extend_from_slice(&r.leaf_bytes());
        use sha2::Digest;
        assert_eq!(r.hash.0, <[u8; 32]>::from(sha2::Sha256::digest(&pre)));
        assert!(String::from_utf8(r.leaf_bytes()).unwrap().starts_with(
            r#"{"actor":{"kind":"cli","session":"s1","uid":1000},"event":{"argv":["ls","-l"],"ok":true,"type":"exec"},"prev":"0101"#
        ));
    }

    #[test]
    fn edits_are_named() {
        let line = String::from_utf8(sample().to_line()).unwrap();
        let edited = line.replace("\"-l\"", "\"-a\"");
        assert!(matches!(
            Record::parse_line(edited.as_bytes()),
            Err(RecordError::HashMismatch { .. })
        ));
        let spaced = line.replacen(",", ", ", 1);
        assert_eq!(
            Record::parse_line(spaced.as_bytes()),
            Err(RecordError::NotCanonical)
        );
        let extra = line.replacen("{", "{\"x\":1,", 1);
        assert!(matches!(
            Record::parse_line(extra.as_bytes()),
            Err(RecordError::Parse(_))
        ));
    }

    #[test]
    fn event_must_be_object_with_type() {
        let bad = |e| Record::new(0, 0, Actor::new(0, "cli"), e, Hash32::ZERO).is_err();
        assert!(bad(json!("x")));
        assert!(bad(json!({"kind": "x"})));
        assert!(bad(json!({"type": 3})));
        assert!(!bad(json!({"type": "x"})));
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = Record::parse_line(&bytes);
        }

        /// Random JSON objects shaped more or less like records: the parser returns an error or
        /// a record whose own line is exactly the input.
        #[test]
        fn random_json_lines_parse_or_fail_cleanly(
            seq in prop::option::of(any::<u64>()),
            time in prop::option::of(any::<u64>()),
            kind in prop::option::of("[a-z]{0,6}"),
            ty in prop::option::of(".{0,8}"),
            prev in prop::option::of("[0-9a-fA-F]{62,66}"),
            hash in prop::option::of("[0-9a-f]{64}"),
            extra in prop::option::of(any::<i32>()),
            fix_hash in any::<bool>(),
        ) {
            let mut m = serde_json::Map::new();
            if let Some(s) = seq { m.insert("seq".into(), json!(s)); }
            if let Some(t) = time { m.insert("time".into(), json!(t)); }
            if let Some(k) = kind { m.insert("actor".into(), json!({"uid": 1, "kind": k})); }
            m.insert("event".into(), match ty { Some(t) => json!({"type": t}), None => json!([1]) });
            if let Some(p) = prev { m.insert("prev".into(), json!(p)); }
            if let Some(h) = hash { m.insert("hash".into(), json!(h)); }
            if let Some(x) = extra { m.insert("extra".into(), json!(x)); }
            let mut line = canonical::to_vec(&Value::Object(m.clone()));
            if fix_hash && let Ok(mut r) = serde_json::from_slice::<Record>(&line) {
                r.hash = merkle::leaf_hash(&r.leaf_bytes());
                line = r.to_line();
            }
            if let Ok(r) = Record::parse_line(&line) {
                prop_assert_eq!(r.to_line(), line);
                prop_assert_eq!(r.hash, merkle::leaf_hash(&r.leaf_bytes()));
            }
        }

        #[test]
        fn valid_records_round_trip(seq in any::<u64>(), time in any::<u64>(), uid in any::<u32>(),
                                    ty in ".*", s in prop::option::of(".*"), n in any::<f64>()) {
            prop_assume!(n.is_finite());
            let mut a = Actor::new(uid, "daemon");
            a.session = s;
            let r = Record::new(seq, time, a, json!({"type": ty.clone(), "n": n, "prev": ty, "x": ",\"prev\":\""}), Hash32([9; 32])).unwrap();
            prop_assert_eq!(Record::parse_line(&r.to_line()).unwrap(), r);
        }
    }
}
