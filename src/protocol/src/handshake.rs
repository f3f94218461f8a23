//! The handshake: the first frame each way, on id 0.
//!
//! The host sends [`Hello`] with the range of protocol versions it speaks; the agent answers with
//! the highest version both speak, or refuses with its own range, and closes. `Hello` and
//! `HelloReply` are frozen: every version of either side must be able to decode them, so a peer
//! that is too old or too new gets a clear refusal instead of a decode error.

use serde::{Deserialize, Serialize};

/// `LGRD` — rejects peers that are not speaking this protocol at all.
pub const MAGIC: u32 = u32::from_be_bytes(*b"LGRD");
/// Lowest protocol version this build speaks.
///
/// Versions: 1 carried bulk data (`Input`, `Stdout`, `Stderr`, `Data`) inside the postcard
/// message as a length-prefixed byte string; 2 carries it as the frame's raw trailer after the
/// message (see `frame`). The two are not interchangeable, so this build speaks only 2 and
/// refuses a version-1 peer in the handshake, which both versions encode alike.
pub const MIN_VERSION: u16 = 2;
/// Highest protocol version this build speaks.
pub const MAX_VERSION: u16 = 2;

/// Optional features an agent may offer. Unknown names are ignored by both sides.
pub mod capability {
    pub const EXEC: &str = "exec";
    pub const EXEC_STDIN: &str = "exec.stdin";
    pub const FILES: &str = "files";
    pub const INFO: &str = "info";
    pub const SHUTDOWN: &str = "shutdown";
    pub const SECCOMP_AUDIT: &str = "seccomp-audit";
    /// The agent takes [`crate::message::Request::Reseed`].
    pub const RESEED: &str = "entropy.reseed";
    /// The agent takes [`crate::message::Request::SetClock`].
    pub const SET_CLOCK: &str = "clock.set";
    /// The agent takes [`crate::message::Request::ReviewSetup`] and
    /// [`crate::message::Request::ReviewExport`] (a microVM review).
    pub const REVIEW: &str = "review.layer";
}

/// Host → guest, first frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub magic: u32,
    pub min_version: u16,
    pub max_version: u16,
    pub capabilities: Vec<String>,
    /// Name and version of the host software, for logs.
    pub software: String,
}

impl Hello {
    /// The hello this build sends.
    pub fn ours(software: impl Into<String>) -> Self {
        Self {
            magic: MAGIC,
            min_version: MIN_VERSION,
            max_version: MAX_VERSION,
            capabilities: Vec::new(),
            software: software.into(),
        }
    }
}

/// Guest → host, answer to [`Hello`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HelloReply {
    Accepted {
        version: u16,
        capabilities: Vec<String>,
        software: String,
    },
    Refused {
        reason: String,
        min_version: u16,
        max_version: u16,
    },
}

/// The version to speak with a peer that sent `hello`, or why there is none.
pub fn negotiate(hello: &Hello, our_min: u16, our_max: u16) -> Result<u16, String> {
    if hello.magic != MAGIC {
        return Err(format!(
            "bad magic {:#010x}: peer is not a LuminaGuard host",
            hello.magic
        ));
    }
    if hello.min_version > hello.max_version {
        return Err(format!(
            "peer sent an empty version range {}..={}",
            hello.min_version, hello.max_version
        ));
    }
    let version = hello.max_version.min(our_max);
    if version < hello.min_version.max(our_min) {
        return Err(format!(
            "no common protocol version: host speaks {}..={}, agent speaks {our_min}..={our_max}",
            hello.min_version, hello.max_version
        ));
    }
    Ok(version)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(min: u16, max: u16) -> Hello {
        Hello {
            min_version: min,
            max_version: max,
            ..Hello::ours("test")
        }
    }

    #[test]
    fn picks_highest_common_version() {
        assert_eq!(negotiate(&hello(1, 5), 2, 3), Ok(3));
        assert_eq!(negotiate(&hello(1, 1), 1, 1), Ok(1));
    }

    #[test]
    fn refuses_disjoint_ranges_and_strangers() {
        assert!(
            negotiate(&hello(4, 9), 1, 3)
                .unwrap_err()
                .contains("no common protocol version")
        );
        assert!(negotiate(&hello(1, 1), 2, 3).is_err());
        assert!(
            negotiate(&hello(3, 1), 1, 3)
                .unwrap_err()
                .contains("empty version range")
        );
        let stranger = Hello {
            magic: 0,
            ..Hello::ours("x")
        };
        assert!(negotiate(&stranger, 1, 1).unwrap_err().contains("magic"));
    }
}
