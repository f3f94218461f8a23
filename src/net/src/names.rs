//! Names of a sandbox's network objects.
//!
//! Every name derives from the SHA-256 of the whole sandbox id (never a truncation of the id
//! itself, so `task-1` and `task_1`, or two 64-character ids sharing a prefix, get different
//! objects), in lower-case hex, and fits the tightest limit that applies to it: interface names
//! are at most 15 bytes (IFNAMSIZ - 1), iptables chains 28, nftables tables and sets 256.

use luminaguard_core::SandboxId;
use sha2::{Digest, Sha256};

/// Longest interface name the kernel accepts.
pub const IFNAMSIZ_MAX: usize = 15;
/// Longest iptables chain name (the fallback firewall must fit too).
pub const IPTABLES_CHAIN_MAX: usize = 28;

/// The names of one sandbox's network objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetNames {
    /// The nftables table (family `inet`), and the iptables chain prefix of the fallback.
    pub table: String,
    /// The network namespace that routes and filters the sandbox's traffic (a name under
    /// `/run/netns`).
    pub router_netns: String,
    /// The network namespace the sandbox itself runs in.
    pub sandbox_netns: String,
    /// The uplink's end in the uplink namespace (the host's, by default) of the veth pair
    /// between it and the router namespace.
    pub uplink_host: String,
}

/// Interface names inside the per-sandbox namespaces: fixed, since each namespace holds one
/// sandbox's links only.
pub mod inner {
    /// The router's end of the uplink pair.
    pub const ROUTER_UPLINK: &str = "up0";
    /// The router's end of the pair towards the sandbox.
    pub const ROUTER_SANDBOX: &str = "sbx0";
    /// The sandbox's interface.
    pub const SANDBOX: &str = "eth0";
}

/// Prefixes of every object name, for finding leftovers.
pub const NETNS_PREFIXES: [&str; 2] = ["lgr-", "lgn-"];
pub const UPLINK_PREFIX: &str = "lgu";
pub const TABLE_PREFIX: &str = "lg";

impl NetNames {
    pub fn for_sandbox(id: &SandboxId) -> Self {
        let digest = Sha256::digest(id.as_str().as_bytes());
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        Self {
            // 2 + 20 = 22 characters: under the iptables chain limit with room for a suffix.
            table: format!("lg{}", &hex[..20]),
            router_netns: format!("lgr-{}", &hex[..20]),
            sandbox_netns: format!("lgn-{}", &hex[..20]),
            // 3 + 12 = 15: exactly IFNAMSIZ - 1. 48 bits of digest: collisions among live
            // sandboxes are checked for at creation rather than assumed away.
            uplink_host: format!("lgu{}", &hex[..12]),
        }
    }
}

/// Whether `name` is a valid interface name (what the kernel's `dev_valid_name` accepts).
pub fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= IFNAMSIZ_MAX
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b == 0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    fn names(id: &str) -> NetNames {
        NetNames::for_sandbox(&id.parse().unwrap())
    }

    #[test]
    fn lookalike_ids_get_different_objects() {
        let (a, b) = (names("task-1"), names("task_1"));
        assert_ne!(a.table, b.table);
        assert_ne!(a.uplink_host, b.uplink_host);
        assert_ne!(a.router_netns, b.router_netns);
        assert_ne!(a.sandbox_netns, b.sandbox_netns);
        // 64-character ids that differ only in the last character.
        let long = "x".repeat(63);
        assert_ne!(
            names(&format!("{long}a")).table,
            names(&format!("{long}b")).table
        );
    }

    proptest! {
        #[test]
        fn every_valid_id_yields_valid_names(id in "[A-Za-z0-9_][A-Za-z0-9_-]{0,63}") {
            let n = names(&id);
            prop_assert!(valid_ifname(&n.uplink_host));
            prop_assert!(n.table.len() <= IPTABLES_CHAIN_MAX);
            prop_assert!(n.table.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
            for ns in [&n.router_netns, &n.sandbox_netns] {
                prop_assert!(ns.len() <= 255 && !ns.contains('/'));
            }
        }
    }
}
