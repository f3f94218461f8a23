//! `luminaguard mcp gateway`: third-party MCP servers behind one gateway, each in a sandbox of
//! its own — its configuration, the pins of the tools it exposes, the scanner that keeps
//! secrets out of tool arguments and results, the servers as a session runs them
//! ([`servers`], [`downstream`]) and what every session shares ([`Gateway`]).

pub mod config;
pub mod downstream;
mod hub;
pub mod pins;
pub mod secrets;
pub mod servers;

pub use hub::{Entry, Gateway, GatewayError, PinVerdict};
