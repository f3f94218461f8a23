//! LuminaGuard's audit log: every policy decision, approval and sandboxed execution as one
//! JSON line, hash-chained, in an RFC 6962 Merkle tree, with C2SP signed checkpoints.
//!
//! - [`AuditLog`] appends (async or blocking) with group commit: a record is acknowledged only
//!   once fsync'd, and all records queued during one fsync share the next.
//! - [`verify`] checks a log directory against a trusted [`VerifierKey`] and names the first
//!   problem ([`Finding`]); a crash's torn tail is reported, not treated as tampering.
//! - [`prove`] / [`verify_inclusion`] give and check a record's inclusion proof against a
//!   signed checkpoint; [`prove_consistency`] / [`verify_consistency`] the append-only proof.
//! - [`read`] iterates over records for display.
//!
//! The on-disk format, the canonical serialization and how a third party verifies are in
//! `docs/audit.md`.

mod canonical;
mod checkpoint;
mod config;
mod error;
mod export;
mod hash;
mod keyfile;
mod leaves;
mod log;
pub mod merkle;
mod note;
mod proof;
mod reader;
mod record;
mod scan;
mod segments;
mod verify;
mod writer;

pub use checkpoint::Checkpoint;
pub use config::AuditConfig;
pub use error::{AuditError, Result};
pub use export::Export;
pub use hash::Hash32;
pub use keyfile::{KEY_FILE, PUB_FILE, pub_path, read_verifier};
pub use leaves::LEAVES_FILE;
pub use log::AuditLog;
pub use note::{NoteSigner, VerifierKey};
pub use proof::{
    ConsistencyProof, InclusionProof, prove, prove_consistency, root_at, verify_consistency,
    verify_inclusion,
};
pub use reader::{Records, find, read};
pub use record::{Actor, Record, RecordError};
pub use scan::CHECKPOINTS_FILE;
pub use segments::name as segment_name;
pub use verify::{Finding, FindingKind, TornTail, VerifyReport, verify};
pub use writer::Receipt;

/// The canonical JSON serialization record hashes are computed over (see the module docs).
pub fn canonical_json(v: &serde_json::Value) -> Vec<u8> {
    canonical::to_vec(v)
}
