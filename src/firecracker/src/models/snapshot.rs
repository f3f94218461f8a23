//! `PUT /snapshot/create` (`SnapshotCreateParams`) and `PUT /snapshot/load`
//! (`SnapshotLoadParams`). The deprecated `mem_file_path` and `enable_diff_snapshots` of the
//! load request are not modelled: `mem_backend` replaces them.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// A full snapshot holds all guest memory; a diff only what was dirtied since the last one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SnapshotType {
    Full,
    Diff,
}

/// The body of `PUT /snapshot/create` (the VM must be paused).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotCreateParams {
    /// The file that will hold the microVM state.
    pub snapshot_path: PathBuf,
    /// The file that will hold guest memory.
    pub mem_file_path: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_type: Option<SnapshotType>,
}

/// Where restored guest memory comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemoryBackendType {
    /// A memory file, mapped privately.
    File,
    /// A Unix socket where a page-fault handler waits for the userfaultfd.
    Uffd,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryBackend {
    pub backend_type: MemoryBackendType,
    pub backend_path: PathBuf,
}

/// A different TAP device for an interface on restore.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkOverride {
    pub iface_id: String,
    pub host_dev_name: String,
}

/// A different vsock `uds_path` on restore (each restored sandbox has its own directory).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VsockOverride {
    pub uds_path: PathBuf,
}

/// The body of `PUT /snapshot/load` (only on a fresh VMM, after logger and metrics at most).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotLoadParams {
    pub snapshot_path: PathBuf,
    pub mem_backend: MemoryBackend,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track_dirty_pages: Option<bool>,
    /// Resume the VM as soon as it is loaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume_vm: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_overrides: Option<Vec<NetworkOverride>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vsock_override: Option<VsockOverride>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_params_use_swagger_names() {
        let p = SnapshotCreateParams {
            snapshot_path: "/s/vm.state".into(),
            mem_file_path: "/s/vm.mem".into(),
            snapshot_type: Some(SnapshotType::Diff),
        };
        assert_eq!(
            serde_json::to_value(&p).unwrap(),
            serde_json::json!({
                "snapshot_path": "/s/vm.state",
                "mem_file_path": "/s/vm.mem",
                "snapshot_type": "Diff",
            })
        );
        assert!(
            serde_json::from_str::<SnapshotCreateParams>(
                r#"{"snapshot_path":"/a","mem_file_path":"/b","version":"1.0"}"#
            )
            .is_err()
        );
    }

    #[test]
    fn load_params_use_swagger_names() {
        let p = SnapshotLoadParams {
            snapshot_path: "/s/vm.state".into(),
            mem_backend: MemoryBackend {
                backend_type: MemoryBackendType::File,
                backend_path: "/s/vm.mem".into(),
            },
            track_dirty_pages: None,
            resume_vm: Some(true),
            network_overrides: Some(vec![NetworkOverride {
                iface_id: "eth0".into(),
                host_dev_name: "lgtap9".into(),
            }]),
            vsock_override: Some(VsockOverride {
                uds_path: "/run/s2/agent.sock".into(),
            }),
        };
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "snapshot_path": "/s/vm.state",
                "mem_backend": {"backend_type": "File", "backend_path": "/s/vm.mem"},
                "resume_vm": true,
                "network_overrides": [{"iface_id": "eth0", "host_dev_name": "lgtap9"}],
                "vsock_override": {"uds_path": "/run/s2/agent.sock"},
            })
        );
        assert_eq!(
            serde_json::from_value::<SnapshotLoadParams>(json).unwrap(),
            p
        );
        assert!(
            serde_json::from_str::<SnapshotLoadParams>(
                r#"{"snapshot_path":"/a","mem_backend":{"backend_type":"Ram","backend_path":"/b"}}"#
            )
            .is_err()
        );
    }
}
