//! Network egress for sandboxes: everything a policy needs before a packet moves.
//!
//! - [`names`]: the names of each sandbox's kernel objects (nftables table, interfaces, network
//!   namespaces), derived from a digest of the *whole* sandbox id so that distinct ids never share
//!   one, and short enough for every kernel limit.
//! - [`plan`]: a [`luminaguard_core::NetworkPolicy`] compiled into what the firewall enforces:
//!   the user's deny list first (it always wins), destinations named explicitly inside the
//!   always-denied ranges (private, link-local, loopback, metadata, the host's own addresses), the
//!   always-denied ranges, then everything else allowed.
//! - [`nft`]: that plan as one nftables table, applied and removed as one atomic batch.
//! - [`topology`]: the per-sandbox router and sandbox namespaces, veth links, addresses, NAT and
//!   both tables — created step by step with rollback, removed by name, leftovers found by
//!   prefix.
//! - [`resolver`]: the DNS-pinning resolver for domain allowlists — answers only allowed names
//!   and admits their addresses through the router table before replying.
//! - [`resolver_service`]: that resolver as a process of its own per sandbox — listening in the
//!   router namespace, asking upstream from the uplink's — and how a backend starts it;
//!   [`pin_helper`]: its privileged half, which can only pin.
//! - [`tap`]: microVM tap devices, made persistent and owned by the VMM in a router namespace
//!   with the TUN ioctls, and opened there for a VMM.
//! - [`cmd`]: running `ip`, `nft` and `sysctl` in a chosen namespace.
//!
//! See `docs/network.md`.

pub mod cmd;
pub mod names;
pub mod nft;
pub mod pin_helper;
pub mod plan;
pub mod resolver;
pub mod resolver_service;
pub mod tap;
pub mod topology;

pub use names::NetNames;
pub use plan::{FirewallPlan, PlanError};
pub use topology::{Egress, NetError, Uplink};
