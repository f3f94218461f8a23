//! `PUT /vsock`: `Vsock` (virtio-vsock, host side a Unix socket; see `luminaguard-vsock`).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The lowest CID a guest may have (0–2 are reserved; 2 is the host).
pub const MIN_GUEST_CID: u32 = 3;

/// The vsock device. The deprecated `vsock_id` is not modelled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vsock {
    /// At least [`MIN_GUEST_CID`].
    pub guest_cid: u32,
    /// Firecracker listens here for host-initiated connections (`CONNECT <port>`); guest
    /// connections to host port `P` go to `<uds_path>_P`.
    pub uds_path: PathBuf,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vsock_json() {
        let v = Vsock {
            guest_cid: 3,
            uds_path: "/run/s/agent.sock".into(),
        };
        assert_eq!(
            serde_json::to_string(&v).unwrap(),
            r#"{"guest_cid":3,"uds_path":"/run/s/agent.sock"}"#
        );
        assert!(
            serde_json::from_str::<Vsock>(r#"{"guest_cid":3,"uds_path":"/x","vsock_id":"v"}"#)
                .is_err()
        );
    }
}
