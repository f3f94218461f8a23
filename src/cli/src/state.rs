//! What a sandbox leaves on disk while it runs (`<runtime>/sandboxes/<id>/meta.json`), and the
//! garbage collector that removes the leftovers of sandboxes whose owner died.
//!
//! The record is written before each resource it names is created, so a crash at any point leaves
//! nothing the collector cannot find. Processes are identified by pid *and* start time, so a
//! recycled pid is never mistaken for ours.

use std::path::{Path, PathBuf};

use luminaguard_core::RuntimeDir;
use luminaguard_core::runtime::SandboxFile;
use luminaguard_process_sandbox::cgroup::Cgroup;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

/// A process, by pid and start time (clock ticks since boot, `/proc/<pid>/stat` field 22).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessRef {
    pub pid: i32,
    pub start: u64,
}

impl ProcessRef {
    pub fn of(pid: i32) -> Option<Self> {
        start_time(pid).map(|start| Self { pid, start })
    }

    /// Still running, and still the same process.
    pub fn alive(&self) -> bool {
        start_time(self.pid) == Some(self.start)
    }
}

fn start_time(pid: i32) -> Option<u64> {
    #[allow(clippy::disallowed_methods)]
    // a few hundred bytes from procfs; called at start-up and in gc
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    // Fields after the command: state is field 3, starttime field 22.
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// `meta.json` of one sandbox.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SandboxMeta {
    pub id: String,
    pub backend: String,
    pub owner: ProcessRef,
    pub init: Option<ProcessRef>,
    pub cgroup_version: Option<u8>,
    pub cgroup_dirs: Vec<PathBuf>,
    pub created_unix_ms: u128,
}

impl SandboxMeta {
    pub async fn save(&self, dir: &Path) -> anyhow::Result<()> {
        let path = dir.join(SandboxFile::Metadata.file_name());
        let tmp = dir.join(".meta.json.tmp");
        tokio::fs::write(&tmp, serde_json::to_vec_pretty(self)?).await?;
        tokio::fs::rename(&tmp, &path).await?;
        Ok(())
    }
}

/// What `gc` did.
#[derive(Debug, Default, Serialize)]
pub struct GcReport {
    pub removed: Vec<String>,
    pub kept: Vec<String>,
    pub errors: Vec<String>,
}

/// Removes every sandbox under `runtime` whose owner is gone: kills its init (if it is still that
/// process), removes its cgroup and its directory. Blocking; run it off the async executor.
pub fn collect(runtime: &RuntimeDir) -> GcReport {
    let mut report = GcReport::default();
    #[allow(clippy::disallowed_methods)] // blocking by contract
    let Ok(entries) = std::fs::read_dir(runtime.sandboxes_dir()) else {
        return report;
    };
    for entry in entries.flatten() {
        let dir = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let meta_path = dir.join(SandboxFile::Metadata.file_name());
        #[allow(clippy::disallowed_methods)]
        let meta: Option<SandboxMeta> = std::fs::read(&meta_path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        match &meta {
            Some(m) if m.owner.alive() => {
                report.kept.push(name);
                continue;
            }
            // No record: the owner died before writing it, so it created nothing else either —
            // unless it is being written right now, which the age check rules out.
            None if !older_than(&dir, 60) => {
                report.kept.push(name);
                continue;
            }
            _ => {}
        }
        match remove_leftovers(&dir, meta.as_ref()) {
            Ok(()) => report.removed.push(name),
            Err(e) => report.errors.push(format!("{name}: {e}")),
        }
    }
    report
}

fn older_than(dir: &Path, secs: u64) -> bool {
    std::fs::metadata(dir)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age.as_secs() >= secs)
}

fn remove_leftovers(dir: &Path, meta: Option<&SandboxMeta>) -> anyhow::Result<()> {
    if let Some(m) = meta {
        if let Some(init) = m.init.filter(ProcessRef::alive) {
            // The init is PID 1 of the sandbox's namespace: killing it kills everything in it.
            let _ = kill(Pid::from_raw(init.pid), Signal::SIGKILL);
        }
        if let Some(version) = m.cgroup_version {
            Cgroup::from_dirs(version, m.cgroup_dirs.clone()).remove()?;
        }
    }
    std::fs::remove_dir_all(dir)?;
    Ok(())
}
