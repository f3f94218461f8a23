//! LuminaGuard's action policy: for one action an agent wants to take — a command, a file
//! change, a network connection, an MCP tool call — decide `allow`, `ask` (stop at the approval
//! step) or `deny`, with a risk, a reason for the person, and the rule (file and line) that
//! decided.
//!
//! A policy is a TOML file of ordered rules (see `docs/policy.md`); every rule that matches is
//! considered and the strictest wins. Commands are understood the way a shell runs them: `sh -c`
//! scripts are parsed into their simple commands, wrappers (`env`, `timeout`, `xargs`, `sudo`, …)
//! are unwrapped, redirections become writes, and anything the policy cannot see (a script file,
//! `eval`, a variable in command position) is never allowed unless a rule names it.
//!
//! ```
//! use luminaguard_policy::{Action, Policy, Verdict};
//! let policy = Policy::preset("default").unwrap();
//! let d = policy.decide(&Action::shell("cargo test && rm -rf target"));
//! assert_eq!(d.verdict, Verdict::Ask);
//! ```

mod action;
mod approved;
mod classify;
mod decide;
mod decision;
mod effects;
mod error;
mod exec;
mod file;
mod lint;
mod paths;
mod pattern;
mod policy;
mod rule;
mod script;
mod wrappers;

pub use action::Action;
pub use approved::entry_text as approved_entry;
pub use decision::{CommandDecision, Decision, Risk, RuleRef, Verdict};
pub use error::PolicyError;
pub use lint::{DEFAULT_INTERPRETERS, Problem, lint};
pub use policy::{PRESETS, Policy, RuleInfo};
