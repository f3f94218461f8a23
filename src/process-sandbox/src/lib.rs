//! The process sandbox: isolation layers applied around the guest agent on hosts where no microVM
//! can run. Each layer is its own module and fails closed; see `docs/process-sandbox.md`.
//!
//! Built so far: [`landlock`] (filesystem access control), [`privileges`] (capabilities,
//! `no_new_privs`, rlimits). Seccomp lives in
//! `luminaguard-seccomp`, shared with the microVM backends.

pub mod backend;
pub mod launch;

/// The init's own steps live in `luminaguard-sandbox-init` (no host crates, for the static
/// guest agent); re-exported here for the host side and the tests.
pub use luminaguard_sandbox_init::{fds, idmap, init, landlock, privileges};
