//! `RateLimiter` and `TokenBucket`: I/O limits shared by drives, network interfaces and the
//! entropy device.

use serde::{Deserialize, Serialize};

/// A token bucket: `size` tokens, refilled over `refill_time` milliseconds, plus an initial
/// `one_time_burst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenBucket {
    /// The total number of tokens the bucket holds.
    pub size: u64,
    /// Milliseconds to refill the bucket.
    pub refill_time: u64,
    /// The initial burst, spent before the refill starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub one_time_burst: Option<u64>,
}

/// Independent limits on bytes per second (`bandwidth`) and operations per second (`ops`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimiter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth: Option<TokenBucket>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ops: Option<TokenBucket>,
}
