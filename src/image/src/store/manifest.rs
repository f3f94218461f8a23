//! An image's manifest: what it holds, and the bytes its digest is computed from.

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::include::Included;
use crate::vmlinux::is_valid_release;

/// The manifest format this crate writes and reads.
pub const SCHEMA: u32 = 1;

/// The files of an image, each with a fixed name in the image's directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ArtifactKind {
    /// The kernel as given (a bzImage, for QEMU).
    Kernel,
    /// The uncompressed ELF kernel (for Firecracker).
    Vmlinux,
    /// The initramfs (cpio newc).
    Initramfs,
    /// The read-only root filesystem image.
    Rootfs,
}

impl ArtifactKind {
    /// Every kind, in manifest order.
    pub const ALL: [ArtifactKind; 4] = [
        ArtifactKind::Kernel,
        ArtifactKind::Vmlinux,
        ArtifactKind::Initramfs,
        ArtifactKind::Rootfs,
    ];

    /// The artifact's file name in the image directory.
    pub fn file_name(self) -> &'static str {
        match self {
            ArtifactKind::Kernel => "vmlinuz",
            ArtifactKind::Vmlinux => "vmlinux",
            ArtifactKind::Initramfs => "initramfs.cpio",
            ArtifactKind::Rootfs => "rootfs.ext4",
        }
    }
}

/// One artifact file: its digest and size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Artifact {
    /// SHA-256 of the file.
    pub sha256: Digest,
    /// Size in bytes.
    pub size: u64,
}

/// What an image holds. Its canonical form ([`Manifest::canonical_bytes`]) is the image's
/// `manifest.json`, and its SHA-256 the image's digest; it holds no timestamps, so the same
/// build gives the same digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Always [`SCHEMA`].
    pub schema: u32,
    /// The guest kernel's release (`uname -r` in the guest), e.g. `6.1.0-28-cloud-amd64`.
    pub kernel_release: String,
    /// The kernel as given (bzImage).
    pub kernel: Artifact,
    /// The uncompressed ELF kernel, when built.
    pub vmlinux: Option<Artifact>,
    /// The initramfs.
    pub initramfs: Artifact,
    /// The root filesystem image, when built.
    pub rootfs: Option<Artifact>,
    /// The kernel modules the initramfs loads, in load order.
    pub modules: Vec<String>,
    /// Digest of everything the image was built from (the builder defines it), so that a build
    /// with the same inputs can find the image instead of building it again.
    pub inputs_digest: Digest,
    /// The program and version that built the image, e.g. `luminaguard 0.1.0`.
    pub created_by: String,
    /// Packages installed into the root's base beyond its defaults (`image build --debian
    /// --package`), sorted. Absent from the JSON when empty, so older manifests keep their digest.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub packages: Vec<String>,
    /// What was copied into the root at build time (`image build --include`), in order.
    /// Absent from the JSON when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub includes: Vec<Included>,
}

impl Manifest {
    /// The manifest's canonical bytes: compact JSON, fields in declaration order, absent
    /// artifacts as `null`.
    pub fn canonical_bytes(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(self)
    }

    /// The image digest: SHA-256 of the canonical bytes.
    pub fn digest(&self) -> Result<Digest, serde_json::Error> {
        Ok(Digest::of(&self.canonical_bytes()?))
    }

    /// The artifacts this manifest lists.
    pub fn artifacts(&self) -> Vec<(ArtifactKind, &Artifact)> {
        ArtifactKind::ALL
            .into_iter()
            .filter_map(|kind| self.artifact(kind).map(|a| (kind, a)))
            .collect()
    }

    /// The artifact of `kind`, if the image has one.
    pub fn artifact(&self, kind: ArtifactKind) -> Option<&Artifact> {
        match kind {
            ArtifactKind::Kernel => Some(&self.kernel),
            ArtifactKind::Vmlinux => self.vmlinux.as_ref(),
            ArtifactKind::Initramfs => Some(&self.initramfs),
            ArtifactKind::Rootfs => self.rootfs.as_ref(),
        }
    }

    /// Checks the fields serde cannot: the schema, and names that are used in paths or shown.
    pub fn validate(&self) -> Result<(), String> {
        if self.schema != SCHEMA {
            return Err(format!(
                "manifest schema {} is not supported (this build reads {SCHEMA})",
                self.schema
            ));
        }
        if !is_valid_release(&self.kernel_release) {
            return Err(format!(
                "kernel release {:?} is invalid",
                self.kernel_release
            ));
        }
        if let Some(bad) = self.modules.iter().find(|m| {
            m.is_empty()
                || m.len() > 64
                || !m.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        }) {
            return Err(format!("module name {bad:?} is invalid"));
        }
        if self.created_by.len() > 200 || self.created_by.chars().any(char::is_control) {
            return Err(format!("created_by {:?} is invalid", self.created_by));
        }
        Ok(())
    }
}
