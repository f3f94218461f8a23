//! Typed bodies of the Firecracker API resources LuminaGuard uses, one module per resource.
//!
//! Field names and enum spellings are those of Firecracker's swagger
//! (`src/firecracker/swagger/firecracker.yaml`, release v1.16.1). Request bodies reject unknown
//! fields when deserialized (as Firecracker itself does), so the fake API server in
//! `crate::testing` (feature `testing`) refuses anything the real one would. Optional fields are left out of the
//! JSON when unset: Firecracker then applies its own documented default, and an older release
//! never sees a field it does not know. Response bodies ([`InstanceInfo`], [`FirecrackerVersion`],
//! [`FaultBody`]) accept unknown fields, so a newer Firecracker does not break us.

pub mod actions;
pub mod boot_source;
pub mod drive;
pub mod entropy;
pub mod error;
pub mod instance_info;
pub mod logger;
pub mod machine_config;
pub mod metrics;
pub mod network_interface;
pub mod rate_limiter;
pub mod snapshot;
pub mod vm;
pub mod vsock;

pub use actions::{ActionType, InstanceActionInfo};
pub use boot_source::BootSource;
pub use drive::{CacheType, Drive, IoEngine};
pub use entropy::EntropyDevice;
pub use error::FaultBody;
pub use instance_info::{FirecrackerVersion, InstanceInfo, InstanceState};
pub use logger::{LogLevel, Logger};
pub use machine_config::{HugePages, MachineConfiguration};
pub use metrics::Metrics;
pub use network_interface::{MacAddr, NetworkInterface};
pub use rate_limiter::{RateLimiter, TokenBucket};
pub use snapshot::{
    MemoryBackend, MemoryBackendType, NetworkOverride, SnapshotCreateParams, SnapshotLoadParams,
    SnapshotType, VsockOverride,
};
pub use vm::{Vm, VmState};
pub use vsock::Vsock;

/// Whether a resource id (a drive's `drive_id`, an interface's `iface_id`) can go into a URL
/// path as it is: non-empty, at most 64 bytes of `[A-Za-z0-9_-]`. Ids are chosen by us; this
/// keeps a bad one from ever turning into another path (`../`, `?`, `#`).
pub fn is_valid_resource_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_ids_that_could_escape_the_path_are_refused() {
        assert!(is_valid_resource_id("rootfs"));
        assert!(is_valid_resource_id("scratch_1-a"));
        for bad in [
            "",
            "../vm",
            "a/b",
            "a?b",
            "a#b",
            "a b",
            "é",
            &"a".repeat(65),
        ] {
            assert!(!is_valid_resource_id(bad), "{bad:?} accepted");
        }
    }
}
