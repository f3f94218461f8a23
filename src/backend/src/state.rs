//! What a sandbox leaves on disk while it exists: `<runtime>/sandboxes/<id>/meta.json`.
//!
//! The record is written *before* each resource it names is created, so a crash at any point
//! leaves nothing that [`crate::gc`] or [`crate::destroy`] cannot find. Processes are named by pid
//! *and* start time, so a recycled pid is never mistaken for ours.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use luminaguard_core::runtime::SandboxFile;
use serde::{Deserialize, Serialize};

/// Errors reading or writing a sandbox record.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot {what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("sandbox record {path} is not valid: {source}")]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// A process, by pid and start time (clock ticks since boot, `/proc/<pid>/stat` field 22).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessRef {
    pub pid: i32,
    pub start: u64,
}

impl ProcessRef {
    /// The process `pid` as it is now; `None` when there is none.
    pub fn of(pid: i32) -> Option<Self> {
        start_time(pid).map(|start| Self { pid, start })
    }

    /// The calling process.
    pub fn me() -> Option<Self> {
        Self::of(i32::try_from(std::process::id()).ok()?)
    }

    /// Still running (or an unreaped zombie), and still the same process.
    pub fn alive(&self) -> bool {
        start_time(self.pid) == Some(self.start)
    }
}

fn start_time(pid: i32) -> Option<u64> {
    #[allow(clippy::disallowed_methods)] // a few hundred bytes from procfs
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace();
    // Fields after the command: state is field 3, starttime field 22. A zombie is dead to us.
    if matches!(fields.next(), Some("Z" | "X")) {
        return None;
    }
    fields.nth(18)?.parse().ok()
}

/// `meta.json` of one sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxMeta {
    pub id: String,
    /// `process`, `qemu`, `firecracker`.
    pub backend: String,
    /// The process whose death makes this sandbox garbage: the creating command for a disposable
    /// sandbox; the sandbox's own init (or VMM) once a long-lived sandbox is up.
    pub owner: ProcessRef,
    /// Lives across commands (`sandbox create`) rather than for one (`run`).
    #[serde(default)]
    pub persistent: bool,
    /// The sandbox's init (process backend) or VMM process (microVM backends).
    pub init: Option<ProcessRef>,
    /// Other processes that belong to the sandbox (e.g. a vsock device helper).
    #[serde(default)]
    pub helpers: Vec<ProcessRef>,
    pub cgroup_version: Option<u8>,
    #[serde(default)]
    pub cgroup_dirs: Vec<PathBuf>,
    pub created_unix_ms: u64,
    /// When the sandbox's lifetime ends, whatever it is doing.
    pub expires_unix_ms: Option<u64>,
    /// `Some(port)`: the sandbox's agent socket is a hybrid-vsock socket (a VMM's), on which
    /// `CONNECT <port>` reaches the agent; `None`: the agent itself listens on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_vsock_port: Option<u32>,
    /// How a microVM's guest code runs (`kvm`, `tcg`), for status listings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accel: Option<String>,
    /// The uid (and gid) a microVM's VMM processes run as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vmm_uid: Option<u32>,
    /// A directory of the sandbox's outside its sandbox directory: a jailed Firecracker's
    /// chroot, `<runtime root>/jail/<exec-file-name>/<vm id>` (it lives there, not in the
    /// sandbox directory, to keep its socket paths within a Unix socket's 107 bytes). Removed
    /// with the sandbox, after its processes — and only if it lies under `<runtime root>/jail`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chroot: Option<PathBuf>,
    /// `Some`: the sandbox has an egress path (namespaces, links, tables named after its id)
    /// leaving through this uplink; recorded before any of it exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net: Option<luminaguard_net::Uplink>,
    /// What the sandbox was created with: every later exec applies the same defaults (timeout,
    /// environment) and reports against the same limits. `None` in records of older versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<luminaguard_core::SandboxSpec>,
    /// The user the sandbox belongs to (see `CreateRequest::user`); `None` in records of older
    /// versions, which only root may use through a service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<u32>,
    /// `Some(pool)`: made ahead for a warm pool, not yet handed out (see the service's pools).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// The host directory shared as `/workspace` (resolved and checked at create), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<PathBuf>,
}

/// Milliseconds since the Unix epoch, now.
pub fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl SandboxMeta {
    /// A fresh record for sandbox `id`, owned by the calling process.
    pub fn new(id: &str, backend: &str, lifetime: Option<Duration>) -> Option<Self> {
        let now = now_unix_ms();
        Some(Self {
            id: id.to_owned(),
            backend: backend.to_owned(),
            owner: ProcessRef::me()?,
            persistent: false,
            init: None,
            helpers: Vec::new(),
            cgroup_version: None,
            cgroup_dirs: Vec::new(),
            created_unix_ms: now,
            expires_unix_ms: lifetime
                .map(|l| now.saturating_add(u64::try_from(l.as_millis()).unwrap_or(u64::MAX))),
            agent_vsock_port: None,
            accel: None,
            vmm_uid: None,
            chroot: None,
            net: None,
            spec: None,
            user: None,
            pool: None,
            workspace: None,
        })
    }

    /// Path of the record in sandbox directory `dir`.
    pub fn path(dir: &Path) -> PathBuf {
        dir.join(SandboxFile::Metadata.file_name())
    }

    /// Writes the record atomically (temp file + rename).
    pub async fn save(&self, dir: &Path) -> Result<(), StateError> {
        let path = Self::path(dir);
        let tmp = dir.join(".meta.json.tmp");
        let bytes = serde_json::to_vec_pretty(self).map_err(|source| StateError::Corrupt {
            path: path.clone(),
            source,
        })?;
        let io = |what| {
            let path = path.clone();
            move |source| StateError::Io { what, path, source }
        };
        tokio::fs::write(&tmp, bytes).await.map_err(io("write"))?;
        tokio::fs::rename(&tmp, &path)
            .await
            .map_err(io("rename into"))?;
        Ok(())
    }

    /// Reads the record of sandbox directory `dir` (blocking).
    pub fn load_blocking(dir: &Path) -> Result<Self, StateError> {
        let path = Self::path(dir);
        #[allow(clippy::disallowed_methods)] // blocking by contract; records are small
        let bytes = std::fs::read(&path).map_err(|source| StateError::Io {
            what: "read",
            path: path.clone(),
            source,
        })?;
        serde_json::from_slice(&bytes).map_err(|source| StateError::Corrupt { path, source })
    }

    /// Whether the sandbox is garbage: its owner is gone, or its lifetime is over.
    pub fn is_garbage(&self, now_unix_ms: u64) -> bool {
        !self.owner.alive() || self.expires_unix_ms.is_some_and(|e| now_unix_ms >= e)
    }

    /// What a listing shows.
    pub fn state(&self, now_unix_ms: u64) -> SandboxState {
        match self.init {
            None => SandboxState::Starting,
            Some(init) if !init.alive() => SandboxState::Exited,
            Some(_) if self.expires_unix_ms.is_some_and(|e| now_unix_ms >= e) => {
                SandboxState::Expired
            }
            Some(_) => SandboxState::Running,
        }
    }
}

/// A sandbox's state as `sandbox ls` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SandboxState {
    /// Its record exists, its init or VMM does not yet.
    Starting,
    Running,
    /// Past its lifetime; the next `gc` (or any create) removes it.
    Expired,
    /// Its init or VMM is gone; the next `gc` removes what is left.
    Exited,
}

impl std::fmt::Display for SandboxState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Expired => "expired",
            Self::Exited => "exited",
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn me_is_alive_and_a_made_up_start_time_is_not() {
        let me = ProcessRef::me().unwrap();
        assert!(me.alive());
        let impostor = ProcessRef {
            start: me.start + 1,
            ..me
        };
        assert!(!impostor.alive(), "a recycled pid must not pass for ours");
    }

    #[test]
    fn garbage_when_owner_dead_or_expired() {
        let mut m = SandboxMeta::new("t", "process", Some(Duration::from_secs(10))).unwrap();
        let now = m.created_unix_ms;
        assert!(!m.is_garbage(now));
        assert!(m.is_garbage(now + 10_000), "expired");
        m.owner.start += 1;
        assert!(m.is_garbage(now), "owner gone");
    }

    #[tokio::test]
    async fn record_round_trips_and_corruption_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let m = SandboxMeta::new("t", "process", None).unwrap();
        m.save(dir.path()).await.unwrap();
        assert_eq!(SandboxMeta::load_blocking(dir.path()).unwrap(), m);
        tokio::fs::write(SandboxMeta::path(dir.path()), b"{")
            .await
            .unwrap();
        let e = SandboxMeta::load_blocking(dir.path()).unwrap_err();
        assert!(e.to_string().contains("meta.json"), "{e}");
    }
}
