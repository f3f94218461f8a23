//! `PUT /drives/{drive_id}`: `Drive` (virtio-block).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::RateLimiter;

/// How the block device caches writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CacheType {
    /// Firecracker's default: flushes from the guest are not passed to the host.
    Unsafe,
    /// Guest flushes become host `fsync`s.
    Writeback,
}

/// Which I/O engine serves the drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum IoEngine {
    Sync,
    /// io_uring; host kernels newer than 5.10.51.
    Async,
}

/// A virtio-block drive. Only the virtio-block fields are modelled (not vhost-user-block's
/// `socket`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Drive {
    /// Also the last segment of the URL; see [`super::is_valid_resource_id`].
    pub drive_id: String,
    /// Whether Firecracker adds `root=/dev/vda` (or the `partuuid`) and `ro`/`rw` to the kernel
    /// command line for this drive. LuminaGuard boots from its initramfs, which mounts the root
    /// itself, so this is `false` for every drive it attaches.
    pub is_root_device: bool,
    /// Required for virtio-block.
    pub is_read_only: bool,
    /// Required for virtio-block.
    pub path_on_host: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partuuid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_type: Option<CacheType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limiter: Option<RateLimiter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io_engine: Option<IoEngine>,
}

impl Drive {
    /// A drive with Firecracker's defaults for everything but its id, file and writability.
    pub fn new(
        drive_id: impl Into<String>,
        path_on_host: impl Into<PathBuf>,
        read_only: bool,
    ) -> Self {
        Self {
            drive_id: drive_id.into(),
            is_root_device: false,
            is_read_only: read_only,
            path_on_host: path_on_host.into(),
            partuuid: None,
            cache_type: None,
            rate_limiter: None,
            io_engine: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::TokenBucket;

    #[test]
    fn a_read_only_drive_says_so_in_the_swagger_names() {
        let d = Drive::new("rootfs", "/img/rootfs.ext4", true);
        assert_eq!(
            serde_json::to_value(&d).unwrap(),
            serde_json::json!({
                "drive_id": "rootfs",
                "is_root_device": false,
                "is_read_only": true,
                "path_on_host": "/img/rootfs.ext4",
            })
        );
    }

    #[test]
    fn optional_fields_round_trip_and_unknown_ones_are_refused() {
        let d = Drive {
            cache_type: Some(CacheType::Writeback),
            io_engine: Some(IoEngine::Async),
            partuuid: Some("0eaa91a0-01".into()),
            rate_limiter: Some(RateLimiter {
                bandwidth: Some(TokenBucket {
                    size: 1 << 20,
                    refill_time: 100,
                    one_time_burst: None,
                }),
                ops: None,
            }),
            ..Drive::new("scratch", "/run/s/scratch.img", false)
        };
        let json = serde_json::to_value(&d).unwrap();
        assert_eq!(json["cache_type"], "Writeback");
        assert_eq!(json["io_engine"], "Async");
        assert_eq!(json["rate_limiter"]["bandwidth"]["refill_time"], 100);
        assert!(json["rate_limiter"].get("ops").is_none());
        assert_eq!(serde_json::from_value::<Drive>(json).unwrap(), d);
        assert!(
            serde_json::from_str::<Drive>(
                r#"{"drive_id":"a","is_root_device":false,"is_read_only":true,"path_on_host":"/x","readonly":true}"#
            )
            .is_err()
        );
        // `is_read_only` is required for virtio-block: a drive without it is refused.
        assert!(
            serde_json::from_str::<Drive>(
                r#"{"drive_id":"a","is_root_device":false,"path_on_host":"/x"}"#
            )
            .is_err()
        );
    }
}
