//! `PUT /actions`: `InstanceActionInfo`.

use serde::{Deserialize, Serialize};

/// A synchronous action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ActionType {
    /// Flush the metrics to the metrics file now.
    FlushMetrics,
    /// Boot the configured microVM.
    InstanceStart,
    /// Send Ctrl+Alt+Del to the guest (x86: the guest reboots; with `reboot=t` Firecracker exits).
    SendCtrlAltDel,
}

impl ActionType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::FlushMetrics => "FlushMetrics",
            Self::InstanceStart => "InstanceStart",
            Self::SendCtrlAltDel => "SendCtrlAltDel",
        }
    }
}

/// The body of `PUT /actions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceActionInfo {
    pub action_type: ActionType,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_are_spelled_as_in_the_swagger() {
        for (action, json) in [
            (
                ActionType::InstanceStart,
                r#"{"action_type":"InstanceStart"}"#,
            ),
            (
                ActionType::FlushMetrics,
                r#"{"action_type":"FlushMetrics"}"#,
            ),
            (
                ActionType::SendCtrlAltDel,
                r#"{"action_type":"SendCtrlAltDel"}"#,
            ),
        ] {
            let body = InstanceActionInfo {
                action_type: action,
            };
            assert_eq!(serde_json::to_string(&body).unwrap(), json);
            assert_eq!(
                serde_json::from_str::<InstanceActionInfo>(json).unwrap(),
                body
            );
            assert_eq!(json, format!(r#"{{"action_type":"{}"}}"#, action.as_str()));
        }
        assert!(serde_json::from_str::<InstanceActionInfo>(r#"{"action_type":"Reboot"}"#).is_err());
        assert!(
            serde_json::from_str::<InstanceActionInfo>(
                r#"{"action_type":"InstanceStart","force":true}"#
            )
            .is_err()
        );
    }
}
