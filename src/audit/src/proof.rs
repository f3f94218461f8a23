//! Inclusion and consistency proofs for a log directory, in a form a third party can check with
//! only the log's verifier key, RFC 6962/9162 and docs/audit.md.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::checkpoint::{self, Checkpoint};
use crate::error::{AuditError, Result};
use crate::hash::Hash32;
use crate::leaves::LeafFile;
use crate::merkle::{self, LeafSource};
use crate::note::VerifierKey;
use crate::reader;
use crate::record::Record;
use crate::scan::CHECKPOINTS_FILE;

/// Proof that record `seq` is in the tree a signed checkpoint commits to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InclusionProof {
    /// The record's sequence number (its leaf index).
    pub seq: u64,
    /// The checkpoint's tree size.
    pub tree_size: u64,
    /// The record's leaf hash.
    pub leaf_hash: Hash32,
    /// The RFC 6962 audit path, leaf to root.
    pub path: Vec<Hash32>,
    /// The signed checkpoint note.
    pub checkpoint: String,
    /// The record itself, so its leaf hash can be recomputed.
    pub record: Record,
}

/// Proof that the tree of `old_size` records is a prefix of the tree of `new_size`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsistencyProof {
    /// The smaller tree size.
    pub old_size: u64,
    /// The larger tree size.
    pub new_size: u64,
    /// The RFC 6962 consistency proof.
    pub path: Vec<Hash32>,
}

/// The text of a signed note without checking its signature (for picking a checkpoint; the
/// verifier checks it).
fn unverified_checkpoint(note: &str) -> Option<Checkpoint> {
    let text = &note[..=note.rfind("\n\n")?];
    Checkpoint::parse(text).ok()
}

/// Proves record `seq` is in the latest checkpoint of the log in `dir`.
pub fn prove(dir: &Path, seq: u64) -> Result<InclusionProof> {
    let file = checkpoint::read_file(&dir.join(CHECKPOINTS_FILE))?;
    let (note, cp) = file
        .notes
        .iter()
        .rev()
        .find_map(|(_, n)| unverified_checkpoint(n).map(|c| (n, c)))
        .filter(|(_, c)| c.size > seq)
        .ok_or_else(|| {
            AuditError::Proof(format!(
                "no checkpoint covers seq {seq} yet (write one with checkpoint() or close())"
            ))
        })?;
    let record = reader::find(dir, seq)?
        .ok_or_else(|| AuditError::Proof(format!("no record with seq {seq}")))?;
    let mut leaves = LeafFile::open(dir)?;
    if leaves.leaf(seq)? != record.hash {
        return Err(AuditError::Proof(format!(
            "leaf-hash file disagrees with record {seq}; reopen the log to rebuild it"
        )));
    }
    let path = merkle::inclusion_proof(&mut leaves, seq, cp.size)?;
    Ok(InclusionProof {
        seq,
        tree_size: cp.size,
        leaf_hash: record.hash,
        path,
        checkpoint: note.clone(),
        record,
    })
}

/// Checks an inclusion proof with the log's verifier key: the checkpoint's signature and
/// origin, the record's leaf hash, and the audit path to the signed root. Returns the verified
/// checkpoint.
pub fn verify_inclusion(proof: &InclusionProof, key: &VerifierKey) -> Result<Checkpoint> {
    let cp = Checkpoint::verify(&proof.checkpoint, key)?;
    if cp.size != proof.tree_size {
        return Err(AuditError::Proof(format!(
            "proof is for tree size {}, the checkpoint is for {}",
            proof.tree_size, cp.size
        )));
    }
    let leaf = merkle::leaf_hash(&proof.record.leaf_bytes());
    if proof.record.seq != proof.seq || leaf != proof.leaf_hash || proof.record.hash != leaf {
        return Err(AuditError::Proof(
            "the record does not hash to the proof's leaf hash (or has another seq)".into(),
        ));
    }
    merkle::verify_inclusion(&leaf, proof.seq, cp.size, &proof.path, &cp.root)?;
    Ok(cp)
}

/// Proves the log in `dir` at `old_size` records is a prefix of itself at `new_size`.
pub fn prove_consistency(dir: &Path, old_size: u64, new_size: u64) -> Result<ConsistencyProof> {
    let mut leaves = LeafFile::open(dir)?;
    if new_size > leaves.len() {
        return Err(AuditError::Proof(format!(
            "the log has {} records, not {new_size}",
            leaves.len()
        )));
    }
    let path = merkle::consistency_proof(&mut leaves, old_size, new_size)?;
    Ok(ConsistencyProof {
        old_size,
        new_size,
        path,
    })
}

/// Checks a consistency proof between two roots (e.g. from two verified checkpoints).
pub fn verify_consistency(
    proof: &ConsistencyProof,
    old_root: &Hash32,
    new_root: &Hash32,
) -> Result<()> {
    merkle::verify_consistency(
        proof.old_size,
        proof.new_size,
        old_root,
        new_root,
        &proof.path,
    )
}

/// The Merkle root of the first `size` records of the log in `dir` (from the leaf-hash file).
pub fn root_at(dir: &Path, size: u64) -> Result<Hash32> {
    let mut leaves = LeafFile::open(dir)?;
    if size > leaves.len() {
        return Err(AuditError::Proof(format!(
            "the log has {} records, not {size}",
            leaves.len()
        )));
    }
    leaves.subtree_root(0, size)
}
