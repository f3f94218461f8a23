//! `GET /` (`InstanceInfo`) and `GET /version` (`FirecrackerVersion`): responses.

use serde::{Deserialize, Serialize};

/// What the VMM is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum InstanceState {
    #[serde(rename = "Not started")]
    NotStarted,
    Running,
    Paused,
}

/// General information about the instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceInfo {
    /// `Firecracker`.
    pub app_name: String,
    /// The `--id` it was started with.
    pub id: String,
    pub state: InstanceState,
    pub vmm_version: String,
}

/// The body of `GET /version`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirecrackerVersion {
    pub firecracker_version: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_info_parses_every_state_and_tolerates_new_fields() {
        for (text, state) in [
            ("Not started", InstanceState::NotStarted),
            ("Running", InstanceState::Running),
            ("Paused", InstanceState::Paused),
        ] {
            let json = format!(
                r#"{{"app_name":"Firecracker","id":"lg0123","state":"{text}","vmm_version":"1.16.1","future":1}}"#
            );
            let info: InstanceInfo = serde_json::from_str(&json).unwrap();
            assert_eq!(info.state, state);
            assert_eq!(info.id, "lg0123");
            assert_eq!(serde_json::to_value(state).unwrap(), text);
        }
        assert!(
            serde_json::from_str::<InstanceInfo>(
                r#"{"app_name":"F","id":"x","state":"Starting","vmm_version":"1"}"#
            )
            .is_err()
        );
    }
}
