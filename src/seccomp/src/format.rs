//! seccompiler's JSON format, as serde types: fragments are parsed strictly (an unknown field is
//! an error, not a silently ignored rule) and the merged profile is written back for seccompiler
//! to compile. seccompiler's own types only deserialize, hence these.

use serde::{Deserialize, Serialize};

/// What a filter answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Allow,
    Errno(u32),
    KillThread,
    KillProcess,
    Log,
    Trace(u32),
    Trap,
}

/// One filter: `match_action` when any rule matches, else `mismatch_action`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    pub mismatch_action: Action,
    pub match_action: Action,
    pub filter: Vec<Rule>,
}

/// A system call, matched when all its conditions hold (rules for the same call are alternatives).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub syscall: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<Condition>,
}

/// A comparison of one argument with a constant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    pub index: u8,
    /// `dword` compares the low 32 bits only, `qword` all 64.
    #[serde(rename = "type")]
    pub width: Width,
    pub op: Op,
    pub val: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Width {
    Dword,
    Qword,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    /// `arg & mask == val & mask`.
    MaskedEq(u64),
}
