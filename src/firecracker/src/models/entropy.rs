//! `PUT /entropy`: `EntropyDevice` (virtio-rng).

use serde::{Deserialize, Serialize};

use super::RateLimiter;

/// A virtio-rng device feeding the guest from the host's RNG.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntropyDevice {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limiter: Option<RateLimiter>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unlimited_device_is_an_empty_object() {
        assert_eq!(
            serde_json::to_string(&EntropyDevice::default()).unwrap(),
            "{}"
        );
        assert!(serde_json::from_str::<EntropyDevice>(r#"{"rate":1}"#).is_err());
    }
}
