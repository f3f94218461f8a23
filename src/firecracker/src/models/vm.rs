//! `PATCH /vm`: `Vm`.

use serde::{Deserialize, Serialize};

/// The state to put a running microVM in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VmState {
    Paused,
    Resumed,
}

/// The body of `PATCH /vm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vm {
    pub state: VmState,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_state_json() {
        assert_eq!(
            serde_json::to_string(&Vm {
                state: VmState::Paused
            })
            .unwrap(),
            r#"{"state":"Paused"}"#
        );
        assert_eq!(
            serde_json::from_str::<Vm>(r#"{"state":"Resumed"}"#)
                .unwrap()
                .state,
            VmState::Resumed
        );
        assert!(serde_json::from_str::<Vm>(r#"{"state":"Running"}"#).is_err());
    }
}
