//! The canonical JSON form that pins hash, and the differences between two definitions.

use std::collections::BTreeMap;

use serde::{Serialize, Serializer};
use serde_json::Value;

use super::{Change, ToolDefinition};

/// Characters of a changed text shown before its first difference.
const CONTEXT: usize = 40;
/// Characters of a changed text shown in all.
const SHOWN: usize = 240;

/// `value` as JSON with every object's keys sorted (by their UTF-8 bytes) and no whitespace:
/// equal JSON gives equal text, whatever the order its keys came in (serde_json may keep
/// insertion order when its `preserve_order` feature is on anywhere in the build).
pub fn canonical_json(value: &Value) -> Result<String, serde_json::Error> {
    serde_json::to_string(&Sorted(value))
}

/// Serialises a value with sorted keys.
struct Sorted<'a>(&'a Value);

impl Serialize for Sorted<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Object(map) => {
                let sorted: BTreeMap<&str, Sorted<'_>> =
                    map.iter().map(|(k, v)| (k.as_str(), Sorted(v))).collect();
                sorted.serialize(s)
            }
            Value::Array(items) => s.collect_seq(items.iter().map(Sorted)),
            other => other.serialize(s),
        }
    }
}

/// A part of a tool definition that can change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChangedField {
    /// `title`.
    Title,
    /// `description`.
    Description,
    /// `inputSchema`.
    InputSchema,
    /// `outputSchema`.
    OutputSchema,
    /// `annotations`.
    Annotations,
}

impl ChangedField {
    /// Its name for display.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Title => "title",
            Self::Description => "description",
            Self::InputSchema => "input schema",
            Self::OutputSchema => "output schema",
            Self::Annotations => "annotations",
        }
    }
}

impl std::fmt::Display for ChangedField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What differs from `old` to `new`, each with excerpts around its first difference.
pub(super) fn changes(old: &ToolDefinition, new: &ToolDefinition) -> Vec<Change> {
    // For display only (the hash is taken elsewhere, and fails loudly).
    let json = |v: Option<&Value>| {
        v.map(|v| canonical_json(v).unwrap_or_else(|e| format!("(cannot show: {e})")))
    };
    let fields = [
        (ChangedField::Title, old.title.clone(), new.title.clone()),
        (
            ChangedField::Description,
            old.description.clone(),
            new.description.clone(),
        ),
        (
            ChangedField::InputSchema,
            json(Some(&old.input_schema)),
            json(Some(&new.input_schema)),
        ),
        (
            ChangedField::OutputSchema,
            json(old.output_schema.as_ref()),
            json(new.output_schema.as_ref()),
        ),
        (
            ChangedField::Annotations,
            json(old.annotations.as_ref()),
            json(new.annotations.as_ref()),
        ),
    ];
    let mut out = Vec::new();
    for (field, old, new) in fields {
        if old == new {
            continue;
        }
        let common = match (&old, &new) {
            (Some(a), Some(b)) => a.chars().zip(b.chars()).take_while(|(x, y)| x == y).count(),
            _ => 0,
        };
        let start = common.saturating_sub(CONTEXT);
        out.push(Change {
            field,
            old: old.map(|s| abridge(&s, start)),
            new: new.map(|s| abridge(&s, start)),
        });
    }
    out
}

/// At most [`SHOWN`] characters of `s` from character `start`, marked where cut.
fn abridge(s: &str, start: usize) -> String {
    let total = s.chars().count();
    let mut out = String::new();
    if start > 0 {
        out.push('…');
    }
    out.extend(s.chars().skip(start).take(SHOWN));
    let rest = total.saturating_sub(start + SHOWN);
    if rest > 0 {
        out.push_str(&format!("… ({rest} more characters)"));
    }
    out
}

/// Now, in unix milliseconds.
pub(super) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
