//! LuminaGuard's HTTP API, version 1: what `luminaguard daemon` serves on its Unix socket.
//!
//! - [`types`]: every request and response body, with the OpenAPI schemas the daemon's
//!   `GET /v1/openapi.json` is generated from;
//! - [`chunk`]: how command output (bytes) travels in JSON: UTF-8 text where it is text,
//!   base64 where it is not, never splitting a character;
//! - [`client`]: a client for the socket (what the CLI uses when a daemon is running);
//! - [`serve`]: one served HTTP/1.1 connection, as the daemon, the MCP server and the console
//!   serve each of theirs (a slow request head cut off, a graceful stop).

pub mod chunk;
pub mod client;
pub mod serve;
pub mod sse;
pub mod types;

pub use client::{Client, ClientError};

/// The path prefix of this version of the API.
pub const V1: &str = "/v1";
