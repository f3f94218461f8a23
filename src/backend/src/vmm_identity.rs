//! The unprivileged identity a sandbox's host-side processes run as — a microVM's VMM and
//! helpers, a process sandbox's uid 0 and keeper — one scheme for every backend, so uids are
//! unique across all: [`crate::live_vmm_uids`] reads every backend's records.

use std::path::Path;

use luminaguard_core::{RuntimeDir, SandboxId};

use crate::{BackendError, SandboxMeta};

/// Picks sandbox `id`'s own identity (unique among the live sandboxes under `runtime`, with
/// `kvm_group` as its one supplementary group), records it in `meta` — the caller saves the
/// record before anything runs as it — and, with `own_dir`, gives it the sandbox directory.
/// Root only.
pub async fn claim_identity(
    runtime: &RuntimeDir,
    id: &SandboxId,
    dir: &Path,
    meta: &mut SandboxMeta,
    kvm_group: Option<u32>,
    own_dir: bool,
) -> Result<VmmIdentity, BackendError> {
    let runtime = runtime.clone();
    let taken = tokio::task::spawn_blocking(move || crate::live_vmm_uids(&runtime)).await?;
    let who = VmmIdentity::for_sandbox(id, &taken, kvm_group);
    meta.vmm_uid = Some(who.uid);
    if own_dir {
        std::os::unix::fs::chown(dir, Some(who.uid), Some(who.gid)).map_err(|source| {
            BackendError::Io {
                what: "give the sandbox's own user",
                path: dir.to_owned(),
                source,
            }
        })?;
    }
    Ok(who)
}

/// First uid/gid of the range VMMs run as, and its size: far above any account a distribution
/// creates, and unmapped to any name.
pub const VMM_ID_BASE: u32 = 0x5a00_0000;
pub const VMM_ID_RANGE: u32 = 1 << 20;

/// A uid and gid of a sandbox's own (so two VMMs cannot signal or trace each other), and no
/// supplementary groups but the owner group of `/dev/kvm` when KVM is used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmmIdentity {
    pub uid: u32,
    pub gid: u32,
    pub supplementary: Vec<u32>,
}

impl VmmIdentity {
    /// The identity of sandbox `id`: derived from a digest (SHA-256) of the whole id, moved on
    /// while `taken` (the uids of live VMMs, [`crate::live_vmm_uids`]) holds it.
    pub fn for_sandbox(id: &SandboxId, taken: &[u32], kvm_group: Option<u32>) -> Self {
        let mut offset = digest_seed(id) % VMM_ID_RANGE;
        while taken.contains(&(VMM_ID_BASE + offset)) {
            offset = (offset + 1) % VMM_ID_RANGE;
        }
        let uid = VMM_ID_BASE + offset;
        Self {
            uid,
            gid: uid,
            supplementary: kvm_group.into_iter().collect(),
        }
    }
}

/// The first four bytes of the id's SHA-256, little-endian.
fn digest_seed(id: &SandboxId) -> u32 {
    let hex = id.digest_hex();
    let mut bytes = [0u8; 4];
    for (i, b) in bytes.iter_mut().enumerate() {
        // `digest_hex` is 64 lowercase hex digits; a digit that is not hex cannot occur, and
        // would only move the uid, which `taken` still keeps unique.
        *b = hex
            .get(2 * i..2 * i + 2)
            .and_then(|h| u8::from_str_radix(h, 16).ok())
            .unwrap_or(0);
    }
    u32::from_le_bytes(bytes)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn id(s: &str) -> SandboxId {
        SandboxId::new(s).unwrap()
    }

    #[test]
    fn identities_are_stable_distinct_and_skip_taken_uids() {
        let a = VmmIdentity::for_sandbox(&id("task-1"), &[], None);
        assert_eq!(a, VmmIdentity::for_sandbox(&id("task-1"), &[], None));
        assert!(a.uid >= VMM_ID_BASE && a.uid < VMM_ID_BASE + VMM_ID_RANGE);
        assert_eq!(a.gid, a.uid);
        assert!(a.supplementary.is_empty());
        assert_ne!(
            a.uid,
            VmmIdentity::for_sandbox(&id("task_1"), &[], None).uid
        );
        let moved = VmmIdentity::for_sandbox(&id("task-1"), &[a.uid], Some(108));
        assert_eq!(moved.uid, a.uid + 1, "the next free uid");
        assert_eq!(moved.supplementary, [108]);
    }

    #[test]
    fn the_uid_is_the_one_both_backends_derived_before_the_move() {
        // SHA-256("task-1")[..4] little-endian, mod 2^20, + 0x5a000000 — what the QEMU and
        // Firecracker backends each computed with their own copy of this function: a VMM uid
        // recorded before the move is still recognised as the same sandbox's.
        assert_eq!(
            VmmIdentity::for_sandbox(&id("task-1"), &[], None).uid,
            0x5a03_fa7a
        );
        assert_eq!(
            VmmIdentity::for_sandbox(&id("task_1"), &[], None).uid,
            0x5a08_5d5f
        );
    }
}
