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

/// What tests and benchmarks against a real Firecracker need to boot the project's image.
pub const REAL_IMAGE_VARS: &str = "LUMINAGUARD_IMAGE_STORE and LUMINAGUARD_FIRECRACKER_IMAGE (an \
     image digest or prefix with a vmlinux)";

/// The image [`REAL_IMAGE_VARS`] name, verified for boot; `None` when either variable is
/// unset; an error when the store or the image is unusable.
pub fn real_image_from_env() -> Result<Option<luminaguard_image::store::Image>, String> {
    let (Some(store), Some(reference)) = (
        std::env::var_os("LUMINAGUARD_IMAGE_STORE"),
        std::env::var("LUMINAGUARD_FIRECRACKER_IMAGE").ok(),
    ) else {
        return Ok(None);
    };
    let image = luminaguard_image::store::Store::open(std::path::Path::new(&store))
        .and_then(|s| s.verify_for_boot(&reference))
        .map_err(|e| format!("the image {reference} in {store:?}: {e}"))?;
    Ok(Some(image))
}

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
    /// What the guest prints on its serial console — the VMM's stdout — after `InstanceStart`
    /// (binary only).
    #[serde(default)]
    pub console: ConsoleOutput,
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
    /// Like [`GuestBehaviour::Agent`], but an agent from before `Reseed` and `SetClock`: it
    /// offers neither `entropy.reseed` nor `clock.set`, and refuses both requests.
    AgentWithoutReseed,
}

/// What the fake guest prints on its serial console.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleOutput {
    /// Print the first `flood` bytes of [`console_flood`] to stdout (from a thread of its own,
    /// while the API and the guest carry on), then report on stderr how it ended: a line
    /// starting with [`FLOOD_DONE`] or [`FLOOD_FAILED`] (followed by the error).
    #[serde(default)]
    pub flood: u64,
}

/// The stderr line the fake writes once its console flood is written whole.
pub const FLOOD_DONE: &str = "fake guest: console flood written";
/// The start of the stderr line the fake writes when writing its console flood failed.
pub const FLOOD_FAILED: &str = "fake guest: console flood failed: ";

/// Length of each line of [`console_flood`].
pub const FLOOD_LINE: u64 = 32;

/// Bytes `range` of an endless console text: numbered lines of [`FLOOD_LINE`] bytes,
/// `console flood line 000000000042\n`, so any stretch of it says where it came from.
pub fn console_flood(range: std::ops::Range<u64>) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(usize::try_from(range.end.saturating_sub(range.start)).unwrap_or(0));
    let mut at = range.start;
    while at < range.end {
        let line = at / FLOOD_LINE;
        let text = format!("console flood line {line:012}\n");
        let from = usize::try_from(at % FLOOD_LINE).unwrap_or(0);
        let take = usize::try_from((FLOOD_LINE - at % FLOOD_LINE).min(range.end - at)).unwrap_or(0);
        out.extend_from_slice(text.as_bytes().get(from..from + take).unwrap_or_default());
        at += take as u64;
    }
    out
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
