//! The `Error` body Firecracker sends with every 4xx/5xx: `{"fault_message": "..."}`.

use serde::{Deserialize, Serialize};

/// Firecracker's description of what went wrong, verbatim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultBody {
    pub fault_message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fault_message_is_read_verbatim() {
        let body: FaultBody = serde_json::from_str(
            r#"{"fault_message":"The requested operation is not supported after starting the microVM."}"#,
        )
        .unwrap();
        assert_eq!(
            body.fault_message,
            "The requested operation is not supported after starting the microVM."
        );
        assert!(serde_json::from_str::<FaultBody>("{}").is_err());
    }
}
