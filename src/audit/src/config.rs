//! The configuration the caller fills in to open a log.

use std::path::PathBuf;

use crate::export::Export;

/// How to open and run an audit log. Fill in `dir`, keep `..AuditConfig::default()` for the rest.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    /// The audit directory (created with mode 0700 if missing).
    pub dir: PathBuf,
    /// Write a signed checkpoint after at least this many records since the last one
    /// (default 1000). A checkpoint is also written on open and on close.
    pub checkpoint_every: u64,
    /// Start a new segment file once the current one holds this many bytes (default 64 MiB).
    pub rotate_bytes: u64,
    /// How many appends may wait for the writer before `append` waits (default 4096).
    pub queue_capacity: usize,
    /// The log's origin: the checkpoint's first line and the signing key's name
    /// (default `luminaguard/audit`). No spaces or `+`.
    pub origin: String,
    /// Where to mirror each record once it is durable (default none).
    pub export: Export,
    /// Verify the whole log when opening it, and refuse a tampered one (default). `false`:
    /// open from the tail — the last record whole, self-consistent and the leaf file's last
    /// entry — in time independent of the log's length; for short-lived writers (one CLI
    /// command) beside a long-lived one that verifies. A tail that is not sound falls back to
    /// the full scan either way.
    pub verify_on_open: bool,
}

impl Default for AuditConfig {
    fn default() -> AuditConfig {
        AuditConfig {
            dir: PathBuf::from("/var/lib/luminaguard/audit"),
            checkpoint_every: 1000,
            rotate_bytes: 64 << 20,
            queue_capacity: 4096,
            origin: "luminaguard/audit".into(),
            export: Export::None,
            verify_on_open: true,
        }
    }
}

impl AuditConfig {
    /// The defaults with `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> AuditConfig {
        AuditConfig {
            dir: dir.into(),
            ..AuditConfig::default()
        }
    }
}
