//! The canonical JSON serialization that record hashes are computed over.
//!
//! Rules (docs/audit.md repeats them for third-party verifiers):
//! - no whitespace outside strings;
//! - object members sorted by key, comparing the keys' UTF-8 bytes; keys are unique;
//! - strings: `"` and `\` escaped as `\"` and `\\`; U+0008, U+0009, U+000A, U+000C, U+000D as
//!   `\b`, `\t`, `\n`, `\f`, `\r`; every other code point below U+0020 as `\u00xx` (lowercase
//!   hex); everything else (including `/`, U+007F and all non-ASCII) as its literal UTF-8 bytes;
//! - numbers: integers (fitting i64/u64) in plain decimal; any other number as serde_json writes
//!   an f64 (the shortest digits that read back as the same f64, e.g. `0.1`, `1.0`, `1e21`);
//! - `true`, `false`, `null` as such.
//!
//! The key order is imposed here, not taken from `serde_json::Map`, so it does not depend on
//! whether some crate in the build enables serde_json's `preserve_order`.

use serde_json::Value;

/// Appends the canonical serialization of `v` to `out`.
pub fn write(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => out.extend_from_slice(n.to_string().as_bytes()),
        Value::String(s) => write_str(s, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write(item, out);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            let mut members: Vec<(&String, &Value)> = map.iter().collect();
            members.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (i, (k, val)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_str(k, out);
                out.push(b':');
                write(val, out);
            }
            out.push(b'}');
        }
    }
}

/// The canonical serialization of `v`.
pub fn to_vec(v: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    write(v, &mut out);
    out
}

fn write_str(s: &str, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    for &b in s.as_bytes() {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x09 => out.extend_from_slice(b"\\t"),
            0x0a => out.extend_from_slice(b"\\n"),
            0x0c => out.extend_from_slice(b"\\f"),
            0x0d => out.extend_from_slice(b"\\r"),
            0..0x20 => {
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0xf)]);
            }
            _ => out.push(b),
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn sorts_keys_and_has_no_whitespace() {
        let v = json!({"b": [1, 2.5, "x"], "a": {"z": null, "y": true}, "é": "\u{1}\n/"});
        assert_eq!(
            String::from_utf8(to_vec(&v)).unwrap(),
            r#"{"a":{"y":true,"z":null},"b":[1,2.5,"x"],"é":"\u0001\n/"}"#
        );
    }

    #[test]
    fn strings_match_serde_json_escaping() {
        let s: String = (0u32..0x250).filter_map(char::from_u32).collect();
        let mut ours = Vec::new();
        write_str(&s, &mut ours);
        assert_eq!(ours, serde_json::to_vec(&s).unwrap());
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<u64>().prop_map(|n| json!(n)),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| json!(f)),
            ".*".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(".*", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Parsing the canonical bytes gives back the same value, and serializing that again
        /// gives the same bytes: a verifier that re-serializes a record gets the writer's hash.
        #[test]
        fn canonical_is_a_fixed_point(v in arb_json()) {
            let bytes = to_vec(&v);
            let back: Value = serde_json::from_slice(&bytes).unwrap();
            prop_assert_eq!(&back, &v);
            prop_assert_eq!(to_vec(&back), bytes);
        }
    }
}
