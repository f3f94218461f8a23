//! A fake Firecracker for tests (feature `testing`): an API server on a Unix socket that behaves
//! like Firecracker's for the resources LuminaGuard uses, and the guest it pretends to boot.
//!
//! - [`server`]: the API server. Every request is recorded ([`Recorded`]) — method, path, JSON
//!   body, and whether the body deserialized into the swagger type with unknown fields refused.
//!   It keeps Firecracker's rules that the launch sequence depends on (pre-boot-only resources,
//!   `InstanceStart` needs a boot source, the files named must exist, the vsock socket is bound
//!   at `PUT /vsock`), and a [`Plan`] injects a [`Fault`] at any step.
//! - [`guest`]: after `InstanceStart`, what the "guest" does: the agent's ready signal on
//!   `<uds_path>_1025`, `CONNECT 1024` answered on `uds_path`, and the protocol handshake.
//! - The `luminaguard-fake-firecracker` binary runs both as a process with Firecracker's command
//!   line, so spawning, exiting early and never creating the socket are real. It reads its plan
//!   from [`PLAN_FILE`] next to its API socket and appends each request as a JSON line to
//!   [`RECORD_FILE`] there.

pub mod guest;
pub mod server;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use server::{FakeApi, FakeEvent};

/// The plan the fake binary reads, next to its API socket.
pub const PLAN_FILE: &str = "fake-firecracker.plan.json";
/// An environment variable naming the plan file instead (for a sandbox directory that the
/// code under test creates).
pub const PLAN_ENV: &str = "LUMINAGUARD_FAKE_FIRECRACKER_PLAN";
/// Where the fake binary appends one JSON [`Recorded`] per request.
pub const RECORD_FILE: &str = "fake-firecracker.requests.jsonl";
/// Where the fake binary writes the arguments it was started with (a JSON array).
pub const ARGV_FILE: &str = "fake-firecracker.argv.json";
/// Set by the fake jailer for the fake firecracker: the chroot it must enter (the fake jailer
/// cannot chroot and then exec a dynamically linked binary), and the uid and gid to drop to.
pub const JAIL_ENV: &str = "LUMINAGUARD_FAKE_JAIL";
pub const JAIL_UID_ENV: &str = "LUMINAGUARD_FAKE_JAIL_UID";
pub const JAIL_GID_ENV: &str = "LUMINAGUARD_FAKE_JAIL_GID";
/// Where the fakes write their records (`fake-firecracker.*`, `fake-jailer.argv.json`) instead
/// of next to the API socket — a directory that outlives the chroot.
pub const RECORD_DIR_ENV: &str = "LUMINAGUARD_FAKE_FIRECRACKER_RECORD_DIR";
/// Where the fake jailer writes the arguments it was started with.
pub const JAILER_ARGV_FILE: &str = "fake-jailer.argv.json";
/// The version the fake reports.
pub const FAKE_VERSION: &str = "1.16.1-fake";

/// What the fake does wrong, and when.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// Faults by request, keyed `"<METHOD> <path>"`, e.g. `"PUT /drives/scratch"`. A fault
    /// fires every time its request arrives (after the request is recorded).
    #[serde(default)]
    pub faults: BTreeMap<String, Fault>,
    /// How the process starts (binary only).
    #[serde(default)]
    pub startup: Startup,
    /// What the guest does after `InstanceStart` (binary only).
    #[serde(default)]
    pub guest: GuestBehaviour,
}

impl Plan {
    /// Adds a fault for `"<METHOD> <path>"`.
    pub fn fault(mut self, request: &str, fault: Fault) -> Self {
        self.faults.insert(request.to_owned(), fault);
        self
    }
}

/// An injected failure of one request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Fault {
    /// Answer with this status and Firecracker's error body `{"fault_message": ...}`.
    Status { status: u16, fault_message: String },
    /// Answer with this status and this body as it is (not Firecracker's error body).
    Raw { status: u16, body: String },
    /// Close the connection without answering.
    CloseConnection,
    /// Never answer (the connection stays open).
    Stall,
    /// The VMM exits with `code`, writing `stderr` first, without answering (binary only; in
    /// process, the server stops and drops every connection).
    Exit { code: i32, stderr: String },
}

/// How the fake process starts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Startup {
    /// Bind the API socket and serve.
    #[default]
    Serve,
    /// Run, but never create the API socket (until killed).
    NeverCreateSocket,
    /// Exit with `code` before creating the socket, writing `stderr` first.
    Exit { code: i32, stderr: String },
}

/// What the guest does once started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum GuestBehaviour {
    /// Like the real agent: listen on vsock port 1024, connect to the host's port 1025 (the
    /// ready signal), accept the handshake, answer `Ping`; `Shutdown` powers the VM off (the
    /// VMM exits 0).
    #[default]
    Agent,
    /// Nothing ever listens and no signal comes: every `CONNECT` is closed unanswered.
    Silent,
    /// Signals ready and accepts `CONNECT 1024`, then refuses the handshake with `reason`.
    RefuseHandshake { reason: String },
    /// The VMM exits with `code` during boot (a guest kernel panic ends Firecracker), writing
    /// `stderr` first.
    Crash { code: i32, stderr: String },
}

/// One request as the fake received it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// The JSON body (`null` for none; a string holding the raw text when it was not JSON).
    pub body: serde_json::Value,
    /// Whether the body deserialized into the request's swagger type (unknown fields refused)
    /// and passed Firecracker's checks; `false` for an unknown path too.
    pub accepted: bool,
    /// The fault injected, if any.
    pub fault: Option<Fault>,
}

impl Recorded {
    /// `"<METHOD> <path>"`.
    pub fn request(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
}
