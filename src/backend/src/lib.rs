//! Sandbox lifecycle, independent of the backend that runs the sandbox.
//!
//! Every backend (process sandbox, QEMU, Firecracker) implements [`Backend::create`]: it sets up
//! its isolation, starts the guest agent and hands back a [`Sandbox`] once the agent has answered
//! the protocol handshake. Everything after that is the same for every backend, so it lives here
//! once: exec and file operations go through the agent ([`Sandbox::client`]); attach, status,
//! listing, destroy and garbage collection work from the on-disk record ([`state`]), which lists
//! every process, cgroup and file a backend created.

pub mod console;
pub mod copy;
pub mod gc;
pub mod hostfs;
pub mod network;
pub mod resolver;
pub mod review_layer;
pub mod seccomp_watch;
pub mod state;
pub mod vmm_identity;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use luminaguard_core::runtime::SandboxFile;
use luminaguard_core::{Protected, RuntimeDir, SandboxId, SandboxSpec, Workspace};
use luminaguard_protocol::message::{SeccompAudit, SeccompDenial};
use luminaguard_protocol::{Client, ClientError, ClientOptions};

pub use gc::{GcReport, RemoveError};
pub use state::{ProcessRef, SandboxMeta, SandboxState, StateError};
pub use vmm_identity::{VMM_ID_BASE, VMM_ID_RANGE, VmmIdentity};

/// What a creator writes on its link to a sandbox to hand it over (see [`Sandbox::hand_over`]).
pub use luminaguard_core::runtime::HANDED_OVER;

/// Why a sandbox operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("sandbox {0} does not exist")]
    NotFound(String),
    #[error("sandbox {0} already exists")]
    Exists(String),
    #[error("sandbox {id} is not running ({state})")]
    NotRunning { id: String, state: SandboxState },
    #[error("invalid runtime directory: {0}")]
    Runtime(#[from] luminaguard_core::runtime::RuntimeDirError),
    /// A host path that a sandbox or another user could redirect (a runtime directory that is
    /// not ours, a link, …).
    #[error(transparent)]
    HostFs(#[from] hostfs::HostFsError),
    /// The workspace breaks the workspace rules (see [`luminaguard_core::workspace`]).
    #[error(transparent)]
    Workspace(#[from] luminaguard_core::WorkspaceError),
    #[error("cannot {what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Remove(#[from] RemoveError),
    #[error("cgroup: {0}")]
    Cgroup(#[from] luminaguard_cgroup::CgroupError),
    /// A backend-specific set-up step failed; `step` names it.
    #[error("{backend} sandbox: {step}: {reason}")]
    Setup {
        backend: &'static str,
        step: &'static str,
        reason: String,
    },
    /// The agent did not answer; `log` holds the tail of the sandbox's console/log, if any.
    #[error("sandbox {id}: the agent did not come up: {source}{}", log_section(.log))]
    Agent {
        id: String,
        source: ClientError,
        log: String,
    },
    #[error("a blocking task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error(transparent)]
    Seccomp(#[from] luminaguard_seccomp::record::RecordError),
}

fn log_section(log: &str) -> String {
    if log.is_empty() {
        String::new()
    } else {
        format!(
            "\n--- last lines of the sandbox log ---\n{}",
            log.trim_end()
        )
    }
}

/// The last `max` bytes of the file at `path` — only those are read, however large the file
/// (a guest can grow its console log) — and whether anything came before them.
async fn read_tail(path: &Path, max: usize) -> Option<(Vec<u8>, bool)> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let mut file = tokio::fs::File::open(path).await.ok()?;
    let len = file.metadata().await.ok()?.len();
    let max = u64::try_from(max).unwrap_or(u64::MAX);
    let start = len.saturating_sub(max);
    file.seek(std::io::SeekFrom::Start(start)).await.ok()?;
    let mut bytes = Vec::new();
    file.take(max).read_to_end(&mut bytes).await.ok()?;
    Some((bytes, start > 0))
}

/// `bytes` as text, starting after the first line break when `cut` (the first line is partial).
fn from_line_boundary(bytes: &[u8], cut: bool) -> String {
    let text = String::from_utf8_lossy(bytes);
    match (cut, text.find('\n')) {
        (true, Some(i)) => text[i + 1..].to_owned(),
        _ => text.into_owned(),
    }
}

/// The last `max` bytes of the file at `path` (lossy UTF-8, starting at a line boundary), or
/// nothing when it cannot be read: for error messages.
pub async fn log_tail(path: &Path, max: usize) -> String {
    match read_tail(path, max).await {
        Some((bytes, cut)) => from_line_boundary(&bytes, cut),
        None => String::new(),
    }
}

/// How far back [`console_tail`] looks for a panic line.
const PANIC_SEARCH: usize = 64 * 1024;

/// [`log_tail`] of a guest's console, led by the guest kernel's panic line when the last 64 KiB
/// hold one: a panic report is long, and its call trace alone fills a short tail.
pub async fn console_tail(path: &Path, max: usize) -> String {
    let Some((wide, cut)) = read_tail(path, PANIC_SEARCH.max(max)).await else {
        return String::new();
    };
    let from = wide.len().saturating_sub(max);
    let tail = from_line_boundary(&wide[from..], cut || from > 0);
    let wide = String::from_utf8_lossy(&wide);
    match wide.lines().rev().find(|l| l.contains("Kernel panic")) {
        Some(panic) if !tail.contains(panic) => format!("{}\n[…]\n{tail}", panic.trim_end()),
        _ => tail,
    }
}

/// What to create.
#[derive(Debug, Clone)]
pub struct CreateRequest {
    pub id: SandboxId,
    pub spec: SandboxSpec,
    /// Host directory shared read-write at `/workspace` (`None`: a private scratch workspace).
    /// Only a [`Workspace`] — a resolved path that passed the workspace rules — can be given,
    /// and [`begin_create`] checks it once more.
    pub workspace: Option<Workspace>,
    /// Outlives the calling process (`sandbox create`), reachable again through [`attach`].
    pub persistent: bool,
    /// Run without cgroup limits (memory, PIDs, CPU). A weaker mode, only ever on explicit
    /// request — e.g. rootless on a host that delegates no cgroup to the user.
    pub without_cgroup: bool,
    pub runtime: RuntimeDir,
    /// The user the sandbox belongs to: who may see and use it through a service that serves
    /// several users. `None`: the creating process's effective uid.
    pub user: Option<u32>,
}

/// A running sandbox and a connection to its agent.
#[derive(Debug)]
pub struct Sandbox {
    pub id: SandboxId,
    pub dir: PathBuf,
    pub meta: SandboxMeta,
    client: Client,
    /// See [`Sandbox::with_graceful_shutdown`].
    shutdown_grace: Option<Duration>,
    /// See [`Sandbox::with_creator_link`].
    creator_link: Option<std::os::fd::OwnedFd>,
}

impl Sandbox {
    pub fn new(id: SandboxId, dir: PathBuf, meta: SandboxMeta, client: Client) -> Self {
        Self {
            id,
            dir,
            meta,
            client,
            shutdown_grace: None,
            creator_link: None,
        }
    }

    /// Keeps `link` open as long as this value lives, or until [`Sandbox::hand_over`]: a
    /// descriptor whose closing tells the sandbox its creator is gone, so that a sandbox ends
    /// with the process that created it, however that process ends, until that process says
    /// otherwise.
    pub fn with_creator_link(mut self, link: std::os::fd::OwnedFd) -> Self {
        self.creator_link = Some(link);
        self
    }

    /// Completes the create of a long-lived sandbox: from now on it lives as long as its init,
    /// not as long as the creating process. Call it once the caller has been told the sandbox
    /// exists (its id printed, recorded by whoever asked): a creator killed before this point
    /// leaves nothing running. Recorded first (the owner becomes the init), then told to the
    /// sandbox. Does nothing for a sandbox that is to live as long as its creator.
    pub async fn hand_over(&mut self) -> Result<(), BackendError> {
        if !self.meta.persistent {
            return Ok(());
        }
        if let Some(init) = self.meta.init {
            self.meta.owner = init;
            self.meta.save(&self.dir).await?;
        }
        if let Some(link) = self.creator_link.take() {
            nix::unistd::write(&link, &[HANDED_OVER]).map_err(|e| BackendError::Io {
                what: "hand over",
                path: self.dir.clone(),
                source: e.into(),
            })?;
        }
        Ok(())
    }

    /// The system calls the sandbox's seccomp policy denied, from the record its host-side
    /// supervisor keeps (never from the sandbox itself). `enabled: false` for a sandbox without
    /// one (a microVM, whose boundary is the VM).
    pub async fn seccomp_audit(&self) -> Result<SeccompAudit, BackendError> {
        seccomp_audit(&self.dir).await
    }

    /// [`Sandbox::destroy`] first asks the agent to shut down (a VM's guest powers off) and
    /// gives its init (or VMM) up to `grace` to exit, then kills whatever is left as usual.
    pub fn with_graceful_shutdown(mut self, grace: Duration) -> Self {
        self.shutdown_grace = Some(grace);
        self
    }

    /// The connection to the sandbox's agent: exec, files, info.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// How many times the kernel OOM-killed something in the sandbox's cgroup.
    pub async fn oom_kills(&self) -> Result<u64, BackendError> {
        let Some(version) = self.meta.cgroup_version else {
            return Ok(0);
        };
        let cg = luminaguard_cgroup::Cgroup::from_dirs(version, self.meta.cgroup_dirs.clone());
        Ok(tokio::task::spawn_blocking(move || cg.oom_kills()).await??)
    }

    /// Removes the sandbox: every process, cgroup and file it has.
    pub async fn destroy(self) -> Result<(), BackendError> {
        if let Some(grace) = self.shutdown_grace {
            shut_down_gracefully(&self.client, self.meta.init, grace).await;
        }
        drop(self.client);
        drop(self.creator_link);
        remove_dir_blocking(self.dir, Some(self.meta)).await
    }
}

/// The seccomp record of the sandbox whose directory is `dir` (see [`Sandbox::seccomp_audit`]).
pub async fn seccomp_audit(dir: &Path) -> Result<SeccompAudit, BackendError> {
    let path = dir.join(SandboxFile::SeccompRecord.file_name());
    let log =
        tokio::task::spawn_blocking(move || luminaguard_seccomp::record::read(&path)).await??;
    Ok(match log {
        None => SeccompAudit::default(),
        Some(log) => SeccompAudit {
            enabled: true,
            recent: log
                .recent
                .into_iter()
                .map(|d| SeccompDenial {
                    unix_ms: d.unix_ms,
                    pid: d.pid,
                    comm: d.comm,
                    syscall: d.syscall,
                    arg0: d.arg0,
                })
                .collect(),
            counts: log.counts.into_iter().collect(),
            dropped: log.dropped,
        },
    })
}

/// Asks the agent to stop and waits, within `grace` in all, for `init` to exit. Best effort:
/// whatever still runs afterwards is killed by the caller.
async fn shut_down_gracefully(client: &Client, init: Option<ProcessRef>, grace: Duration) {
    let start = tokio::time::Instant::now();
    match tokio::time::timeout(grace, client.shutdown()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "graceful shutdown refused; killing");
            return;
        }
        Err(_) => {
            tracing::debug!(?grace, "no answer to shutdown; killing");
            return;
        }
    }
    let Some(init) = init else { return };
    // Not our child in general (a detached init), so no exit notification but polling.
    let mut pause = Duration::from_millis(1);
    while init.alive() {
        if start.elapsed() >= grace {
            tracing::debug!(
                pid = init.pid,
                ?grace,
                "init still running after shutdown; killing"
            );
            return;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(20));
    }
    tracing::debug!(elapsed = ?start.elapsed(), "sandbox shut down gracefully");
}

/// A way to run sandboxes. Implementations set up isolation and start the agent; the rest of a
/// sandbox's life is handled by [`Sandbox`] and the functions of this crate.
pub trait Backend: Send + Sync {
    /// `process`, `qemu`, `firecracker`: what records and listings show.
    fn name(&self) -> &'static str;

    /// Creates the sandbox and returns once its agent has completed the handshake. On failure,
    /// everything created so far is removed before the error is returned.
    fn create(
        &self,
        request: CreateRequest,
    ) -> impl Future<Output = Result<Sandbox, BackendError>> + Send;
}

/// Why a microVM refuses a spec with read-only mounts.
pub const MOUNTS_NEED_PROCESS: &str =
    "read-only mounts need the process backend; bake the files into the image for microVMs";

/// What every backend's `create` starts with: the workspace checked once more (resolved again,
/// against the rules and this runtime directory), then the sandbox's private directory and its
/// record, saved before anything else exists. `prepare` fills in backend-specific fields first.
pub async fn begin_create(
    req: &CreateRequest,
    backend: &'static str,
    prepare: impl FnOnce(&mut SandboxMeta),
) -> Result<(PathBuf, SandboxMeta), BackendError> {
    // The process sandbox and QEMU have a speculative run's overlay (QEMU's in the guest, see
    // `review_layer`): any other backend asked for one must not run the command on the real
    // workspace instead.
    if req.spec.review.is_some() && !matches!(backend, "process" | "qemu") {
        return Err(BackendError::Setup {
            backend,
            step: "set up the review layer",
            reason: "a speculative run (review) needs the process or qemu backend for now".into(),
        });
    }
    // Only the process sandbox can show a host path; a microVM would start without it.
    if !req.spec.mounts.is_empty() && backend != "process" {
        return Err(BackendError::Setup {
            backend,
            step: "check the read-only mounts",
            reason: MOUNTS_NEED_PROCESS.into(),
        });
    }
    if let Some(ws) = &req.workspace {
        let ws = ws.clone();
        let runtime = Protected::new(req.runtime.root(), "the runtime directory");
        tokio::task::spawn_blocking(move || ws.recheck_blocking(&[runtime])).await??;
    }
    let Some(mut meta) = SandboxMeta::new(req.id.as_str(), backend, Some(req.spec.lifetime)) else {
        return Err(BackendError::Setup {
            backend,
            step: "identify the creating process",
            reason: "cannot read /proc/self/stat".into(),
        });
    };
    meta.persistent = req.persistent;
    meta.spec = Some(req.spec.clone());
    meta.workspace = req.workspace.as_ref().map(|w| w.path().to_owned());
    meta.user = Some(req.user.unwrap_or_else(|| nix::unistd::geteuid().as_raw()));
    prepare(&mut meta);
    let dir = create_sandbox_dir(&req.runtime, &req.id, &meta).await?;
    Ok((dir, meta))
}

/// After a failed create: removes everything the record names. A cleanup failure is logged;
/// the create's own error is what the caller reports.
pub async fn abandon_create(dir: PathBuf, meta: SandboxMeta) {
    if let Err(e) = remove_dir_blocking(dir.clone(), Some(meta)).await {
        tracing::error!(dir = %dir.display(), error = %e, "cleanup after a failed create");
    }
}

/// A microVM's cgroup limits: guest RAM plus the VMM's own `overhead`, `pids` for the VMM's
/// threads and helpers, a CPU per vCPU.
pub fn vmm_limits(
    spec: &SandboxSpec,
    overhead: luminaguard_core::ByteSize,
    pids: u64,
) -> luminaguard_cgroup::Limits {
    luminaguard_cgroup::Limits {
        memory_bytes: spec.memory.bytes().saturating_add(overhead.bytes()),
        pids,
        cpus: Some(spec.vcpus),
    }
}

/// The name of sandbox `id`'s cgroup, whose directory is `dir`: the id and a digest of the
/// directory, so that sandboxes of one name in two runtime directories never share a group —
/// nor does destroying one kill the other's processes.
pub fn cgroup_name(id: &SandboxId, dir: &Path) -> String {
    use sha2::Digest;
    use std::os::unix::ffi::OsStrExt;
    let digest = sha2::Sha256::digest(dir.as_os_str().as_bytes());
    let short: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
    format!("{id}-{short}")
}

/// Records the cgroup sandbox `id` will have (so that gc finds it even if creation is cut short
/// right after), then creates it with `limits`.
pub async fn create_cgroup(
    id: &SandboxId,
    dir: &Path,
    meta: &mut SandboxMeta,
    limits: luminaguard_cgroup::Limits,
) -> Result<luminaguard_cgroup::Cgroup, BackendError> {
    use luminaguard_cgroup::Hierarchy;
    let name = cgroup_name(id, dir);
    let (hierarchy, planned) = tokio::task::spawn_blocking({
        let name = name.clone();
        move || Hierarchy::detect().and_then(|h| h.planned(&name).map(|p| (h, p)))
    })
    .await??;
    meta.cgroup_version = Some(planned.version());
    meta.cgroup_dirs = planned.dirs().to_vec();
    meta.save(dir).await?;
    Ok(tokio::task::spawn_blocking(move || hierarchy.create(&name, limits)).await??)
}

/// The `cgroup.procs` files of `cg`, open for writing: a helper started in the sandbox's cgroup
/// writes itself into each before it runs (see [`console::start_console`]).
pub async fn open_cgroup_procs(
    cg: &luminaguard_cgroup::Cgroup,
) -> Result<Vec<std::os::fd::OwnedFd>, BackendError> {
    let mut fds = Vec::new();
    for d in cg.dirs() {
        let path = d.join("cgroup.procs");
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .await
            .map_err(|source| BackendError::Io {
                what: "open",
                path: path.clone(),
                source,
            })?;
        fds.push(std::os::fd::OwnedFd::from(file.into_std().await));
    }
    Ok(fds)
}

/// Mode of the runtime root and `sandboxes/`: only their owner may list or change them; others
/// may only pass through to an entry they already know the name of — which an unprivileged VMM
/// needs to reach its own sandbox directory (itself 0700, owned by it).
pub const PRIVATE_DIR_MODE: u32 = 0o711;

/// Creates `path` (or takes the one that exists) with mode [`PRIVATE_DIR_MODE`]. An existing
/// one must be a directory — not a link — owned by the effective uid and writable by no one
/// else, or it is refused with what to do ([`hostfs::ensure_dir`]): whoever controls it
/// controls every sandbox's socket and record.
pub async fn create_private_dir(path: &Path) -> Result<(), BackendError> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || hostfs::ensure_dir(&path, PRIVATE_DIR_MODE)).await??;
    Ok(())
}

/// `<runtime root>/<name>` with `mode`, created (root included) or taken over under the same
/// checks as [`create_private_dir`]: for the jail base, templates, … .
pub async fn create_runtime_subdir(
    runtime: &RuntimeDir,
    name: &'static str,
    mode: u32,
) -> Result<PathBuf, BackendError> {
    let root = runtime.root().to_owned();
    Ok(tokio::task::spawn_blocking(move || {
        let fd = hostfs::ensure_dir(&root, PRIVATE_DIR_MODE)?;
        hostfs::ensure_subdir(&fd, &root, name, mode, hostfs::IfExists::Reuse)
            .map(|_| root.join(name))
    })
    .await??)
}

/// Checks what exists of the runtime root and its `sandboxes/` as [`create_private_dir`] does,
/// before anything in them (records, sockets) is believed. Blocking.
pub fn check_runtime_blocking(runtime: &RuntimeDir) -> Result<(), hostfs::HostFsError> {
    if let Some(fd) = hostfs::open_existing_dir(runtime.root())? {
        hostfs::open_existing_subdir(&fd, runtime.root(), RuntimeDir::SANDBOXES)?;
    }
    Ok(())
}

/// `<runtime root>/jail`: where jailed VMMs' chroots are ([`SandboxMeta::chroot`]); the only
/// place a recorded chroot is removed from.
pub const JAIL_DIR: &str = "jail";

/// `<runtime root>/jail`, see [`JAIL_DIR`].
pub fn jail_base(runtime: &RuntimeDir) -> PathBuf {
    runtime.root().join(JAIL_DIR)
}

/// The VMM uids recorded by sandboxes under `runtime` whose init (VMM) still runs. Blocking.
pub fn live_vmm_uids(runtime: &RuntimeDir) -> Vec<u32> {
    #[allow(clippy::disallowed_methods)] // blocking by contract
    let Ok(entries) = std::fs::read_dir(runtime.sandboxes_dir()) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| SandboxMeta::load_blocking(&e.path()).ok())
        .filter(|m| m.init.is_none_or(|i| i.alive()))
        .filter_map(|m| m.vmm_uid)
        .collect()
}

/// Prefix of a sandbox directory still being created: `.new-<pid>-<start>-<n>`, naming the
/// creating process (see [`creating_dir_owner`]).
pub const CREATING_PREFIX: &str = ".new-";

/// Prefix of a sandbox directory being removed: `.rm-<pid>-<start>-<id>`, naming the removing
/// process. A removal killed part-way leaves it under this name — never a half-removed
/// directory under the sandbox's own name, which would look like a record being written.
pub const REMOVING_PREFIX: &str = ".rm-";

/// The creator a [`CREATING_PREFIX`] directory's name records.
pub fn creating_dir_owner(name: &str) -> Option<ProcessRef> {
    owner_in(name.strip_prefix(CREATING_PREFIX)?)
}

/// The remover a [`REMOVING_PREFIX`] directory's name records.
pub fn removing_dir_owner(name: &str) -> Option<ProcessRef> {
    owner_in(name.strip_prefix(REMOVING_PREFIX)?)
}

/// `<pid>-<start>-…` as the process it names.
fn owner_in(rest: &str) -> Option<ProcessRef> {
    let mut parts = rest.split('-');
    let pid = parts.next()?.parse().ok()?;
    let start = parts.next()?.parse().ok()?;
    Some(ProcessRef { pid, start })
}

/// Creates the runtime root and its `sandboxes/` directory ([`PRIVATE_DIR_MODE`], checked as
/// [`create_private_dir`] does) and `sandboxes/<id>/` (0700) holding `meta`'s record —
/// atomically: the directory is made and the record written under a temporary name that names
/// the creating process, then renamed into place, never over an existing one. So a sandbox
/// directory always has a record, and a creator killed before the rename leaves only a
/// temporary whose creator is visibly dead, which gc removes at once.
/// Fails when the sandbox directory already exists.
pub async fn create_sandbox_dir(
    runtime: &RuntimeDir,
    id: &SandboxId,
    meta: &SandboxMeta,
) -> Result<PathBuf, BackendError> {
    use hostfs::IfExists;
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = runtime.sandbox_dir(id)?;
    let root = runtime.root().to_owned();
    let sandboxes = runtime.sandboxes_dir();
    let tmp_name = format!(
        "{CREATING_PREFIX}{}-{}-{}",
        meta.owner.pid,
        meta.owner.start,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let tmp = sandboxes.join(&tmp_name);
    let sb_fd = {
        let (root, sandboxes, tmp_name) = (root.clone(), sandboxes.clone(), tmp_name.clone());
        tokio::task::spawn_blocking(move || {
            let root_fd = hostfs::ensure_dir(&root, PRIVATE_DIR_MODE)?;
            let sb_fd = hostfs::ensure_subdir(
                &root_fd,
                &root,
                RuntimeDir::SANDBOXES,
                PRIVATE_DIR_MODE,
                IfExists::Reuse,
            )?;
            hostfs::ensure_subdir(&sb_fd, &sandboxes, &tmp_name, 0o700, IfExists::Refuse)?;
            Ok::<_, BackendError>(sb_fd)
        })
        .await??
    };
    let publish = async {
        meta.save(&tmp).await?;
        let (tmp_name, id) = (tmp_name.clone(), id.clone());
        tokio::task::spawn_blocking(move || {
            nix::fcntl::renameat2(
                &sb_fd,
                tmp_name.as_str(),
                &sb_fd,
                id.as_str(),
                nix::fcntl::RenameFlags::RENAME_NOREPLACE,
            )
            .map_err(|e| match e {
                nix::Error::EEXIST => BackendError::Exists(id.to_string()),
                e => BackendError::Io {
                    what: "move into place",
                    path: sandboxes.join(id.as_str()),
                    source: e.into(),
                },
            })
        })
        .await?
    };
    match publish.await {
        Ok(()) => Ok(dir),
        Err(e) => {
            let _ = tokio::fs::remove_dir_all(&tmp).await;
            Err(e)
        }
    }
}

/// One line of `sandbox ls`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Listing {
    pub id: String,
    pub backend: String,
    /// How a microVM's guest code runs (`kvm`, `tcg`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accel: Option<String>,
    pub state: SandboxState,
    pub persistent: bool,
    /// The user it belongs to (`None`: a record of an older version, root's alone).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<u32>,
    pub age_ms: u64,
    pub expires_in_ms: Option<u64>,
    /// The warm pool it waits in, until handed out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// The host paths it shows read-only (resolved), and where.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<luminaguard_core::ReadOnlyMount>,
}

/// Every sandbox with a readable record under `runtime`, sorted by id; refuses a runtime
/// directory another user controls ([`check_runtime_blocking`]). Blocking.
pub fn list_blocking(runtime: &RuntimeDir) -> Result<Vec<Listing>, hostfs::HostFsError> {
    check_runtime_blocking(runtime)?;
    #[allow(clippy::disallowed_methods)] // blocking by contract
    let Ok(entries) = std::fs::read_dir(runtime.sandboxes_dir()) else {
        return Ok(Vec::new());
    };
    let now = state::now_unix_ms();
    let mut out: Vec<Listing> = entries
        .flatten()
        .filter_map(|e| SandboxMeta::load_blocking(&e.path()).ok())
        .map(|m| Listing::new(m, now))
        .collect();
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(out)
}

impl Listing {
    /// The listing of the sandbox `meta` records, at `now_unix_ms`.
    pub fn new(m: SandboxMeta, now_unix_ms: u64) -> Self {
        Self {
            state: m.state(now_unix_ms),
            age_ms: now_unix_ms.saturating_sub(m.created_unix_ms),
            expires_in_ms: m.expires_unix_ms.map(|e| e.saturating_sub(now_unix_ms)),
            id: m.id,
            backend: m.backend,
            accel: m.accel,
            persistent: m.persistent,
            user: m.user,
            pool: m.pool,
            mounts: m.spec.map(|s| s.mounts).unwrap_or_default(),
        }
    }
}

/// The record of sandbox `id` and its directory; [`BackendError::NotFound`] when there is none.
pub async fn record(
    runtime: &RuntimeDir,
    id: &SandboxId,
) -> Result<(PathBuf, SandboxMeta), BackendError> {
    load(runtime, id).await
}

async fn load(
    runtime: &RuntimeDir,
    id: &SandboxId,
) -> Result<(PathBuf, SandboxMeta), BackendError> {
    let dir = runtime.sandbox_dir(id)?;
    let d = dir.clone();
    let rt = runtime.clone();
    let loaded = tokio::task::spawn_blocking(move || {
        check_runtime_blocking(&rt)?;
        Ok::<_, BackendError>(SandboxMeta::load_blocking(&d))
    })
    .await??;
    match loaded {
        Ok(m) => Ok((dir, m)),
        Err(StateError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            Err(BackendError::NotFound(id.to_string()))
        }
        Err(e) => Err(e.into()),
    }
}

/// How long attaching waits for the agent's handshake.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects to the agent of a running long-lived sandbox.
pub async fn attach(
    runtime: &RuntimeDir,
    id: &SandboxId,
    opts: ClientOptions,
) -> Result<Sandbox, BackendError> {
    let (dir, meta) = load(runtime, id).await?;
    let state = meta.state(state::now_unix_ms());
    if state != SandboxState::Running {
        return Err(BackendError::NotRunning {
            id: id.to_string(),
            state,
        });
    }
    let sock = dir.join(SandboxFile::AgentSocket.file_name());
    let agent = |source| BackendError::Agent {
        id: id.to_string(),
        source,
        log: String::new(),
    };
    let stream = match meta.agent_vsock_port {
        None => tokio::net::UnixStream::connect(&sock)
            .await
            .map_err(|source| BackendError::Io {
                what: "connect to",
                path: sock.clone(),
                source,
            })?,
        Some(port) => luminaguard_vsock::connect(&sock, port, ATTACH_TIMEOUT)
            .await
            .map_err(|e| BackendError::Setup {
                backend: "vm",
                step: "reach the agent over vsock",
                reason: e.to_string(),
            })?
            .into_stream(),
    };
    let client = tokio::time::timeout(ATTACH_TIMEOUT, Client::connect(stream, opts))
        .await
        .map_err(|_| {
            agent(ClientError::Timeout {
                what: "handshake",
                after: ATTACH_TIMEOUT,
            })
        })?
        .map_err(agent)?;
    Ok(Sandbox::new(id.clone(), dir, meta, client))
}

/// Destroys sandbox `id` from its record: kills its processes, removes its cgroup and files.
pub async fn destroy(runtime: &RuntimeDir, id: &SandboxId) -> Result<(), BackendError> {
    let (dir, meta) = load(runtime, id).await?;
    remove_dir_blocking(dir, Some(meta)).await
}

async fn remove_dir_blocking(dir: PathBuf, meta: Option<SandboxMeta>) -> Result<(), BackendError> {
    Ok(tokio::task::spawn_blocking(move || gc::remove(&dir, meta.as_ref())).await??)
}

/// Removes every garbage sandbox (see [`gc::collect`]).
pub async fn collect_garbage(runtime: &RuntimeDir) -> Result<GcReport, BackendError> {
    let runtime = runtime.clone();
    Ok(tokio::task::spawn_blocking(move || gc::collect(&runtime)).await?)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    #[tokio::test]
    async fn a_panic_line_leads_the_console_tail() {
        let dir = tempfile::tempdir().unwrap();
        let console = dir.path().join("console.log");
        let mut text =
            String::from("[    1.0] booting\n[    1.5] Kernel panic - not syncing: sysrq\n");
        for i in 0..200 {
            text.push_str(&format!("[    1.6] frame {i}\n"));
        }
        tokio::fs::write(&console, &text).await.unwrap();
        let tail = super::console_tail(&console, 512).await;
        assert!(
            tail.starts_with("[    1.5] Kernel panic - not syncing: sysrq\n[…]\n"),
            "{tail}"
        );
        assert!(tail.ends_with("frame 199\n"), "{tail}");
        // No panic: just the tail.
        tokio::fs::write(&console, "a\nb\n").await.unwrap();
        assert_eq!(super::console_tail(&console, 512).await, "a\nb\n");
    }

    #[tokio::test]
    async fn a_tail_starts_at_a_line_boundary_and_reads_only_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        // 4 MiB of numbered lines: the tail of 100 bytes holds only the last whole lines.
        let text: String = (0..400_000).map(|i| format!("line {i:06}\n")).collect();
        tokio::fs::write(&log, &text).await.unwrap();
        let tail = super::log_tail(&log, 100).await;
        assert!(
            tail.ends_with("line 399999\n") && tail.len() <= 100,
            "{tail}"
        );
        assert!(tail.starts_with("line "), "starts mid-line: {tail:?}");
        assert_eq!(super::log_tail(&dir.path().join("missing"), 100).await, "");
        // A file shorter than the tail is returned whole, first line included.
        tokio::fs::write(&log, "first\nsecond\n").await.unwrap();
        assert_eq!(super::log_tail(&log, 100).await, "first\nsecond\n");
    }
}
