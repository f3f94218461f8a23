//! Diff Cards: the change set of a speculative run.
//!
//! LuminaGuard runs an agent's command in a sandbox whose `/workspace` is an overlayfs over the
//! real workspace. Afterwards the host [`scan`]s the overlay's upper dir against the workspace
//! into a [`ChangeSet`] (every added, modified, deleted, renamed, … path, with content hashes and
//! a digest over all of it), [`render`]s it as a text card for a person, and on approval
//! [`apply`]s exactly that change set to the workspace: everything is verified first (nothing is
//! applied if the workspace or the upper dir moved since the card), then each file is written
//! atomically, without ever following a symlink.
//!
//! The upper dir is attacker-controlled; see [`fsutil`](crate::fsutil) for how paths are
//! resolved, and `docs/review.md` for the rules and limits.

mod apply;
pub mod digest;
mod error;
mod fsutil;
mod links;
mod model;
pub mod path;
mod render;
mod scan;
mod verify;

pub use apply::{Applied, apply, apply_with_limits};
pub use error::ReviewError;
pub use model::{Change, ChangeKind, ChangeSet, FileKind, Limits, Meta, Summary};
pub use path::{ByteString, RelPath};
pub use render::{RenderOptions, Style, classify, render};
pub use scan::scan;
