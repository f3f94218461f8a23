//! The launch sequence: spawn Firecracker, wait for its API socket, configure the VM, start it,
//! and wait for the guest agent.
//!
//! 1. **prepare**: check the configuration (ids, paths, socket path lengths, files that must
//!    exist), create the log and metrics files;
//! 2. **spawn** `firecracker --api-sock <dir>/fc.sock --id <id> [--seccomp-filter <bpf>]`
//!    (never `--no-seccomp`): stdout (the guest's serial console) to `console.log`, stderr to
//!    `firecracker.stderr`;
//! 3. **api-socket**: connect to the API socket as soon as it accepts, within a deadline — the
//!    one connection every later request uses;
//! 4. **configure**: logger and metrics to per-sandbox files, machine-config, boot-source, the
//!    root drive (`is_read_only: true`), the scratch drive (read-write) if any, vsock
//!    (`uds_path` = `<dir>/agent.sock`), entropy;
//! 5. **ready-listener**: listen on `<dir>/agent.sock_1025` for the agent's ready signal;
//! 6. **instance-start**: `PUT /actions {"action_type":"InstanceStart"}`;
//! 7. **agent**: wait for the ready signal, `CONNECT 1024` through `agent.sock`, and the protocol
//!    handshake, within the boot deadline.
//!
//! Every step after the spawn is raced against Firecracker exiting: an exit is reported at once
//! with its status and the tail of its stderr. A failure at any step kills Firecracker (if it
//! runs), reaps it, and removes the sockets made so far; the error names the step and carries
//! the cause — for an API request, Firecracker's own `fault_message`. Log files stay in the
//! directory for the caller (who owns it) to read or remove.

use std::ffi::OsString;
use std::future::Future;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use luminaguard_protocol::{
    AGENT_READY_VSOCK_PORT, AGENT_VSOCK_PORT, Client, ClientError, ClientOptions,
};
use luminaguard_vsock::{Backoff, DialError, ListenError};
use tokio::process::{Child, Command};

use crate::boot_args::KernelArgs;
use crate::client::{ApiClient, ApiError};
use crate::models::{
    ActionType, BootSource, Drive, EntropyDevice, LogLevel, Logger, MachineConfiguration, Metrics,
    Vsock,
};

/// The API socket, in the sandbox directory.
pub const API_SOCKET: &str = "fc.sock";
/// The vsock device's `uds_path` (what the host dials; guest connections arrive on `_<port>`).
pub const VSOCK_SOCKET: &str = "agent.sock";
/// Firecracker's own log (`PUT /logger`).
pub const LOG_FILE: &str = "firecracker.log";
/// Firecracker's metrics (`PUT /metrics`).
pub const METRICS_FILE: &str = "metrics.json";
/// Firecracker's stdout: the guest's serial console.
pub const CONSOLE_LOG: &str = "console.log";
/// Firecracker's stderr.
pub const STDERR_LOG: &str = "firecracker.stderr";

/// The drive ids given to Firecracker.
pub const ROOT_DRIVE_ID: &str = "rootfs";
pub const SCRATCH_DRIVE_ID: &str = "scratch";

/// The guest's CID: each VM has its own vsock device and socket, so every guest can be 3.
pub const GUEST_CID: u32 = 3;

/// Longest path a Unix socket can be bound or connected at (`sun_path` holds 108 bytes with
/// the terminating NUL).
pub const MAX_SOCKET_PATH: usize = 107;

/// How much of Firecracker's stderr an error quotes.
const STDERR_TAIL: u64 = 2048;
/// After an API request fails on a closed connection, how long to wait for the VMM's exit to
/// be seen before reporting the request's own error.
const EXIT_GRACE: Duration = Duration::from_millis(200);
/// How long teardown waits for a killed VMM to be reaped.
const REAP_TIMEOUT: Duration = Duration::from_secs(5);

/// A Firecracker instance id (`--id`): 1 to 64 of `[A-Za-z0-9-]`, the ASCII subset of what
/// Firecracker accepts.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VmId(String);

impl VmId {
    pub const MAX_LEN: usize = 64;

    pub fn new(id: &str) -> Result<Self, String> {
        if id.is_empty() || id.len() > Self::MAX_LEN {
            return Err(format!(
                "firecracker id {id:?} must be 1 to {} characters",
                Self::MAX_LEN
            ));
        }
        if let Some(c) = id
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
        {
            return Err(format!(
                "firecracker id {id:?} has {c:?}; only [A-Za-z0-9-] are allowed"
            ));
        }
        Ok(Self(id.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for VmId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Deadlines of the launch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// From spawn until the API socket accepts a connection.
    pub api_socket: Duration,
    /// Each API request.
    pub request: Duration,
    /// From `InstanceStart` to a finished handshake with the agent.
    pub boot: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            api_socket: Duration::from_secs(5),
            request: crate::client::DEFAULT_REQUEST_TIMEOUT,
            boot: Duration::from_secs(10),
        }
    }
}

/// Whether the VMM outlives the process that launched it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifetime {
    /// Killed (`PR_SET_PDEATHSIG`) when the thread that spawned it exits: no orphaned VM when
    /// the creator dies.
    DiesWithCreator,
    /// Its own session; lives on after the creator (a long-lived sandbox).
    Detached,
}

/// Everything the launch needs.
#[derive(Debug, Clone)]
pub struct LaunchConfig {
    /// The `firecracker` binary.
    pub firecracker: PathBuf,
    /// The sandbox directory (exists; sockets and logs go here).
    pub dir: PathBuf,
    pub vm_id: VmId,
    /// A seccompiler-bin BPF file for `--seccomp-filter`; `None` uses Firecracker's built-in
    /// default filters. Seccomp is never turned off.
    pub seccomp_filter: Option<PathBuf>,
    pub machine: MachineConfiguration,
    /// The uncompressed ELF `vmlinux`.
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub boot_args: KernelArgs,
    /// The shared root file system: attached read-only.
    pub rootfs: PathBuf,
    /// A per-sandbox disk image, attached read-write.
    pub scratch: Option<PathBuf>,
    /// Attach a virtio-rng device.
    pub entropy: bool,
    pub log_level: LogLevel,
    pub timeouts: Timeouts,
    /// The protocol client used for the agent.
    pub client: ClientOptions,
    pub lifetime: Lifetime,
    /// The unprivileged identity Firecracker runs as (`None`: the caller's). The log and
    /// metrics files and the ready-signal socket are given to it; the directory must already
    /// be reachable and writable by it.
    pub run_as: Option<RunAs>,
    /// `cgroup.procs` files Firecracker writes itself into before it execs (every thread and
    /// page of it is then in the sandbox's cgroup).
    pub cgroup_procs: Vec<PathBuf>,
}

/// A uid, gid and supplementary groups (e.g. `/dev/kvm`'s group) to run as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

/// The files of one VM, all in its sandbox directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmFiles {
    pub api_socket: PathBuf,
    pub vsock: PathBuf,
    /// `<vsock>_1025`: where the agent's ready signal arrives.
    pub ready_socket: PathBuf,
    pub log: PathBuf,
    pub metrics: PathBuf,
    pub console: PathBuf,
    pub stderr: PathBuf,
}

impl VmFiles {
    pub fn in_dir(dir: &Path) -> Self {
        let vsock = dir.join(VSOCK_SOCKET);
        Self {
            api_socket: dir.join(API_SOCKET),
            ready_socket: luminaguard_vsock::listener_path(&vsock, AGENT_READY_VSOCK_PORT),
            vsock,
            log: dir.join(LOG_FILE),
            metrics: dir.join(METRICS_FILE),
            console: dir.join(CONSOLE_LOG),
            stderr: dir.join(STDERR_LOG),
        }
    }
}

/// The steps of the launch, as errors name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Prepare,
    Spawn,
    ApiSocket,
    Logger,
    Metrics,
    MachineConfig,
    BootSource,
    RootDrive,
    ScratchDrive,
    Vsock,
    Entropy,
    ReadyListener,
    InstanceStart,
    Agent,
}

impl Step {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Prepare => "prepare",
            Self::Spawn => "spawn",
            Self::ApiSocket => "api-socket",
            Self::Logger => "logger",
            Self::Metrics => "metrics",
            Self::MachineConfig => "machine-config",
            Self::BootSource => "boot-source",
            Self::RootDrive => "root-drive",
            Self::ScratchDrive => "scratch-drive",
            Self::Vsock => "vsock",
            Self::Entropy => "entropy",
            Self::ReadyListener => "ready-listener",
            Self::InstanceStart => "instance-start",
            Self::Agent => "agent",
        }
    }
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a launch failed: the step, and what went wrong there.
#[derive(Debug, thiserror::Error)]
#[error("launching firecracker {vm_id} failed at step {step}: {cause}")]
pub struct LaunchError {
    pub vm_id: String,
    pub step: Step,
    pub cause: Cause,
}

/// What went wrong at a launch step.
#[derive(Debug, thiserror::Error)]
pub enum Cause {
    /// The configuration cannot work (checked before anything starts).
    #[error("{0}")]
    Invalid(String),
    /// A file could not be prepared.
    #[error("cannot {what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// Firecracker could not be started.
    #[error("cannot run {}: {source}", program.display())]
    Spawn {
        program: PathBuf,
        source: std::io::Error,
    },
    /// Firecracker exited; `stderr` is the tail of its stderr, `while_doing` what was under way
    /// when the exit was seen (an API request that failed because of it, if any).
    #[error("firecracker (pid {pid}) exited ({status}){}{}", while_doing.as_ref().map(|w| format!(" while {w}")).unwrap_or_default(), tail_section(stderr))]
    Exited {
        pid: u32,
        status: String,
        stderr: String,
        while_doing: Option<String>,
    },
    /// The API socket never accepted a connection.
    #[error("the API socket {} did not accept a connection within {after:?}; last: {last}", socket.display())]
    NoApiSocket {
        socket: PathBuf,
        after: Duration,
        last: String,
    },
    /// An API request failed; the error carries Firecracker's `fault_message`.
    #[error("{0}")]
    Api(ApiError),
    /// The ready-signal socket could not be set up.
    #[error("{0}")]
    Listen(ListenError),
    /// The agent did not signal, answer `CONNECT` and finish the handshake in time.
    #[error(
        "the guest agent was not ready within {after:?} ({waiting_for}){}",
        tail_section(console)
    )]
    BootTimeout {
        after: Duration,
        waiting_for: &'static str,
        console: String,
    },
    /// `CONNECT 1024` failed.
    #[error("cannot reach the guest agent: {0}")]
    Dial(DialError),
    /// The protocol handshake failed.
    #[error("handshake with the guest agent failed: {0}")]
    Handshake(ClientError),
}

fn tail_section(tail: &str) -> String {
    if tail.trim().is_empty() {
        String::new()
    } else {
        format!("; last output:\n{}", tail.trim_end())
    }
}

/// How long each phase took, for the orchestration-overhead budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaunchTimings {
    /// Spawn until the API connection is up.
    pub api_ready: Duration,
    /// Logger through `InstanceStart` answered.
    pub configure: Duration,
    /// `InstanceStart` answered until the agent's handshake completed.
    pub boot: Duration,
    pub total: Duration,
}

/// A running VM whose agent has answered the handshake.
#[derive(Debug)]
pub struct Launched {
    pub vmm: Child,
    pub pid: u32,
    /// The API connection (kept for pause/resume, snapshots, `SendCtrlAltDel`).
    pub api: ApiClient,
    pub agent: Client,
    pub files: VmFiles,
    pub timings: LaunchTimings,
}

/// Firecracker's command line: `--api-sock <socket> --id <id> [--seccomp-filter <bpf>]`. There
/// is no way to ask for `--no-seccomp`.
pub fn argv(api_socket: &Path, vm_id: &VmId, seccomp_filter: Option<&Path>) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec![
        "--api-sock".into(),
        api_socket.into(),
        "--id".into(),
        vm_id.as_str().into(),
    ];
    if let Some(filter) = seccomp_filter {
        args.push("--seccomp-filter".into());
        args.push(filter.into());
    }
    args
}

fn invalid(step: Step, message: impl Into<String>) -> (Step, Cause) {
    (step, Cause::Invalid(message.into()))
}

/// Checks what can be checked before anything starts.
async fn check(cfg: &LaunchConfig, files: &VmFiles) -> Result<(), (Step, Cause)> {
    cfg.machine
        .check()
        .map_err(|e| invalid(Step::Prepare, format!("machine config: {e}")))?;
    for socket in [&files.api_socket, &files.vsock, &files.ready_socket] {
        let len = socket.as_os_str().len();
        if len > MAX_SOCKET_PATH {
            return Err(invalid(
                Step::Prepare,
                format!(
                    "the socket path {} is {len} bytes, over the {MAX_SOCKET_PATH} a Unix socket allows; use a shorter runtime directory",
                    socket.display()
                ),
            ));
        }
    }
    for path in [files.api_socket.as_path(), files.vsock.as_path()] {
        if tokio::fs::symlink_metadata(path).await.is_ok() {
            return Err(invalid(
                Step::Prepare,
                format!(
                    "{} already exists: is another VMM using this directory?",
                    path.display()
                ),
            ));
        }
    }
    let mut needed: Vec<(&'static str, &Path)> = vec![
        ("find the firecracker binary", &cfg.firecracker),
        ("find the kernel", &cfg.kernel),
        ("find the root file system", &cfg.rootfs),
    ];
    if let Some(p) = &cfg.initrd {
        needed.push(("find the initrd", p));
    }
    if let Some(p) = &cfg.scratch {
        needed.push(("find the scratch disk", p));
    }
    if let Some(p) = &cfg.seccomp_filter {
        needed.push(("find the seccomp filter", p));
    }
    for (what, path) in needed {
        if let Err(source) = tokio::fs::metadata(path).await {
            return Err((
                Step::Prepare,
                Cause::Io {
                    what,
                    path: path.to_owned(),
                    source,
                },
            ));
        }
    }
    Ok(())
}

/// Creates (or truncates) a file Firecracker will write to, owned by `owner` if given.
async fn create_file(path: &Path, owner: Option<&RunAs>) -> Result<(), (Step, Cause)> {
    let io = |what| {
        move |source| {
            (
                Step::Prepare,
                Cause::Io {
                    what,
                    path: path.to_owned(),
                    source,
                },
            )
        }
    };
    tokio::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(path)
        .await
        .map_err(io("create"))?;
    if let Some(who) = owner {
        std::os::unix::fs::chown(path, Some(who.uid), Some(who.gid)).map_err(io("chown"))?;
    }
    Ok(())
}

async fn open_log(path: &Path) -> std::io::Result<std::fs::File> {
    Ok(tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .await?
        .into_std()
        .await)
}

async fn spawn_vmm(cfg: &LaunchConfig, files: &VmFiles) -> Result<Child, (Step, Cause)> {
    let io_err = |what, path: &Path| {
        let path = path.to_owned();
        move |source| (Step::Spawn, Cause::Io { what, path, source })
    };
    let stdout = open_log(&files.console)
        .await
        .map_err(io_err("open", &files.console))?;
    let stderr = open_log(&files.stderr)
        .await
        .map_err(io_err("open", &files.stderr))?;
    let mut cgroup_fds: Vec<OwnedFd> = Vec::new();
    for procs in &cfg.cgroup_procs {
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .open(procs)
            .await
            .map_err(io_err("open", procs))?;
        cgroup_fds.push(OwnedFd::from(file.into_std().await));
    }
    let fds: Vec<i32> = cgroup_fds.iter().map(AsRawFd::as_raw_fd).collect();
    let mut cmd = Command::new(&cfg.firecracker);
    cmd.args(argv(
        &files.api_socket,
        &cfg.vm_id,
        cfg.seccomp_filter.as_deref(),
    ))
    .stdin(Stdio::null())
    .stdout(Stdio::from(stdout))
    .stderr(Stdio::from(stderr))
    .kill_on_drop(cfg.lifetime == Lifetime::DiesWithCreator);
    let detached = cfg.lifetime == Lifetime::Detached;
    let who = cfg.run_as.clone();
    // SAFETY: the closure runs in the child between fork and exec and only makes
    // async-signal-safe system calls (write, setsid, setgroups, setresgid, setresuid, prctl) on
    // memory allocated before the fork.
    unsafe {
        cmd.pre_exec(move || {
            for fd in &fds {
                // "0": the writing process itself.
                if libc::write(*fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if detached && libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if let Some(who) = &who {
                // Groups, then gid, then uid; the kernel clears PDEATHSIG on a credential
                // change, so it is set after.
                if libc::setgroups(who.groups.len(), who.groups.as_ptr()) != 0
                    || libc::setresgid(who.gid, who.gid, who.gid) != 0
                    || libc::setresuid(who.uid, who.uid, who.uid) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if !detached && libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|source| {
        (
            Step::Spawn,
            Cause::Spawn {
                program: cfg.firecracker.clone(),
                source,
            },
        )
    });
    drop(cgroup_fds);
    child
}

/// The last `max` bytes of a file, lossily decoded (empty when it cannot be read).
pub async fn tail(path: &Path, max: u64) -> String {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let read = async {
        let mut f = tokio::fs::File::open(path).await?;
        let len = f.metadata().await?.len();
        f.seek(std::io::SeekFrom::Start(len.saturating_sub(max)))
            .await?;
        let mut buf = Vec::new();
        f.take(max).read_to_end(&mut buf).await?;
        Ok::<_, std::io::Error>(buf)
    };
    read.await
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

fn describe(status: std::io::Result<ExitStatus>) -> String {
    status.map_or_else(|e| format!("wait failed: {e}"), |s| s.to_string())
}

/// Runs `fut` unless Firecracker exits first.
async fn racing<T>(
    child: &mut Child,
    step: Step,
    fut: impl Future<Output = Result<T, Cause>>,
) -> Result<T, (Step, Cause)> {
    tokio::select! {
        r = fut => r.map_err(|cause| (step, cause)),
        status = child.wait() => Err((step, Cause::Exited {
            pid: 0,
            status: describe(status),
            stderr: String::new(),
            while_doing: None,
        })),
    }
}

/// Connects to the API socket once it accepts connections, polling (1 ms doubling to 20 ms)
/// until `limit`. Firecracker gives no other sign that its API is up.
async fn connect_api(
    socket: &Path,
    limit: Duration,
    request: Duration,
) -> Result<ApiClient, Cause> {
    let start = Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        let last = match ApiClient::connect(socket, request).await {
            Ok(api) => return Ok(api),
            Err(ApiError::Connect { source, .. })
                if matches!(
                    source.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                ) =>
            {
                source.to_string()
            }
            Err(e) => return Err(Cause::Api(e)),
        };
        if start.elapsed() >= limit {
            return Err(Cause::NoApiSocket {
                socket: socket.to_owned(),
                after: limit,
                last,
            });
        }
        tokio::time::sleep(pause.min(limit.saturating_sub(start.elapsed()))).await;
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// Launches a VM: [`spawn`], then [`Spawned::boot`]. See the module docs for the steps.
pub async fn launch(cfg: &LaunchConfig) -> Result<Launched, LaunchError> {
    spawn(cfg).await?.boot(cfg).await
}

/// Firecracker, started (steps 1 and 2) but not yet configured: the caller can record its pid
/// before anything else happens, then [`Spawned::boot`] it or [`Spawned::abort`] it.
#[derive(Debug)]
pub struct Spawned {
    child: Child,
    pid: u32,
    files: VmFiles,
    t0: Instant,
}

/// Steps 1 and 2: checks, files, and the Firecracker process.
pub async fn spawn(cfg: &LaunchConfig) -> Result<Spawned, LaunchError> {
    let files = VmFiles::in_dir(&cfg.dir);
    let fail = |(step, cause): (Step, Cause)| LaunchError {
        vm_id: cfg.vm_id.to_string(),
        step,
        cause,
    };
    check(cfg, &files).await.map_err(fail)?;
    create_file(&files.log, cfg.run_as.as_ref())
        .await
        .map_err(fail)?;
    create_file(&files.metrics, cfg.run_as.as_ref())
        .await
        .map_err(fail)?;
    let t0 = Instant::now();
    let child = spawn_vmm(cfg, &files).await.map_err(fail)?;
    let pid = child.id().unwrap_or(0);
    tracing::debug!(id = %cfg.vm_id, pid, "firecracker spawned");
    Ok(Spawned {
        child,
        pid,
        files,
        t0,
    })
}

impl Spawned {
    /// Firecracker's pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn files(&self) -> &VmFiles {
        &self.files
    }

    /// Steps 3 to 7: API socket, configuration, `InstanceStart`, the agent. `cfg` must be the
    /// one given to [`spawn`]. On failure Firecracker is killed and reaped and the sockets are
    /// removed.
    pub async fn boot(mut self, cfg: &LaunchConfig) -> Result<Launched, LaunchError> {
        match run(cfg, &self.files, &mut self.child, self.t0).await {
            Ok((api, agent, timings)) => {
                tracing::debug!(id = %cfg.vm_id, pid = self.pid, ?timings, "firecracker VM ready");
                Ok(Launched {
                    vmm: self.child,
                    pid: self.pid,
                    api,
                    agent,
                    files: self.files,
                    timings,
                })
            }
            Err((step, cause)) => {
                let cause = explain(cause, &mut self.child, self.pid, &self.files).await;
                teardown(&mut self.child, &self.files).await;
                Err(LaunchError {
                    vm_id: cfg.vm_id.to_string(),
                    step,
                    cause,
                })
            }
        }
    }

    /// Kills and reaps Firecracker and removes its sockets, without booting.
    pub async fn abort(mut self) {
        teardown(&mut self.child, &self.files).await;
    }
}

/// Steps 3 to 7.
async fn run(
    cfg: &LaunchConfig,
    files: &VmFiles,
    child: &mut Child,
    t0: Instant,
) -> Result<(ApiClient, Client, LaunchTimings), (Step, Cause)> {
    let t = cfg.timeouts;
    let api = racing(
        child,
        Step::ApiSocket,
        connect_api(&files.api_socket, t.api_socket, t.request),
    )
    .await?;
    let api_ready = t0.elapsed();
    let t_cfg = Instant::now();

    let logger = Logger {
        log_path: Some(files.log.clone()),
        level: Some(cfg.log_level),
        show_level: Some(true),
        show_log_origin: Some(false),
        module: None,
    };
    let metrics = Metrics {
        metrics_path: files.metrics.clone(),
    };
    let boot = BootSource {
        kernel_image_path: cfg.kernel.clone(),
        boot_args: Some(cfg.boot_args.clone()),
        initrd_path: cfg.initrd.clone(),
    };
    let root = Drive::new(ROOT_DRIVE_ID, &cfg.rootfs, true);
    let vsock = Vsock {
        guest_cid: GUEST_CID,
        uds_path: files.vsock.clone(),
    };
    let api_step = |r: Result<(), ApiError>| r.map_err(Cause::Api);
    racing(child, Step::Logger, async {
        api_step(api.put_logger(&logger).await)
    })
    .await?;
    racing(child, Step::Metrics, async {
        api_step(api.put_metrics(&metrics).await)
    })
    .await?;
    racing(child, Step::MachineConfig, async {
        api_step(api.put_machine_config(&cfg.machine).await)
    })
    .await?;
    racing(child, Step::BootSource, async {
        api_step(api.put_boot_source(&boot).await)
    })
    .await?;
    racing(child, Step::RootDrive, async {
        api_step(api.put_drive(&root).await)
    })
    .await?;
    if let Some(scratch) = &cfg.scratch {
        let drive = Drive::new(SCRATCH_DRIVE_ID, scratch, false);
        racing(child, Step::ScratchDrive, async {
            api_step(api.put_drive(&drive).await)
        })
        .await?;
    }
    racing(child, Step::Vsock, async {
        api_step(api.put_vsock(&vsock).await)
    })
    .await?;
    if cfg.entropy {
        racing(child, Step::Entropy, async {
            api_step(api.put_entropy(&EntropyDevice::default()).await)
        })
        .await?;
    }
    // Listen for the agent's ready signal before the guest can send it.
    let ready = luminaguard_vsock::listen(&files.vsock, AGENT_READY_VSOCK_PORT)
        .map_err(|e| (Step::ReadyListener, Cause::Listen(e)))?;
    if let Some(who) = &cfg.run_as {
        // Firecracker connects to it as its own user.
        std::os::unix::fs::chown(ready.path(), Some(who.uid), Some(who.gid)).map_err(|source| {
            (
                Step::ReadyListener,
                Cause::Io {
                    what: "chown",
                    path: ready.path().to_owned(),
                    source,
                },
            )
        })?;
    }
    racing(child, Step::InstanceStart, async {
        api_step(api.action(ActionType::InstanceStart).await)
    })
    .await?;
    let configure = t_cfg.elapsed();
    let t_boot = Instant::now();

    let agent = racing(child, Step::Agent, async {
        let mut waiting_for = "the ready signal on vsock port 1025";
        let attempt = async {
            if let Err(e) = ready.accept().await {
                return Err(Cause::Listen(e));
            }
            waiting_for = "CONNECT 1024 to be answered";
            let left = t.boot.saturating_sub(t_boot.elapsed());
            let stream = luminaguard_vsock::connect_with_retry(
                &files.vsock,
                AGENT_VSOCK_PORT,
                left,
                Backoff::default(),
            )
            .await
            .map_err(Cause::Dial)?;
            waiting_for = "the protocol handshake";
            Client::connect(stream.into_stream(), cfg.client.clone())
                .await
                .map_err(Cause::Handshake)
        };
        match tokio::time::timeout(t.boot, attempt).await {
            Ok(r) => r,
            Err(_) => Err(Cause::BootTimeout {
                after: t.boot,
                waiting_for,
                console: tail(&files.console, STDERR_TAIL).await,
            }),
        }
    })
    .await?;
    drop(ready);
    let boot = t_boot.elapsed();
    Ok((
        api,
        agent,
        LaunchTimings {
            api_ready,
            configure,
            boot,
            total: t0.elapsed(),
        },
    ))
}

/// Turns a failure into its best explanation: if Firecracker has exited (or exits within
/// [`EXIT_GRACE`] of a broken connection), its exit status and stderr, with what was under way.
async fn explain(cause: Cause, child: &mut Child, pid: u32, files: &VmFiles) -> Cause {
    let (status, while_doing) = match cause {
        Cause::Exited {
            status,
            while_doing,
            ..
        } => (Some(status), while_doing),
        other => {
            let connection_lost = matches!(
                other,
                Cause::Api(ApiError::Transport { .. } | ApiError::Broken { .. })
                    | Cause::Dial(_)
                    | Cause::Handshake(_)
            );
            let exited = if connection_lost {
                tokio::time::timeout(EXIT_GRACE, child.wait()).await.ok()
            } else {
                child.try_wait().transpose()
            };
            match exited {
                Some(status) => (Some(describe(status)), Some(other.to_string())),
                None => return other,
            }
        }
    };
    Cause::Exited {
        pid,
        status: status.unwrap_or_default(),
        stderr: tail(&files.stderr, STDERR_TAIL).await,
        while_doing,
    }
}

/// Kills and reaps Firecracker, and removes the sockets it and we made.
async fn teardown(child: &mut Child, files: &VmFiles) {
    if let Ok(None) = child.try_wait() {
        if let Err(e) = child.start_kill() {
            tracing::warn!(error = %e, "cannot kill firecracker");
        }
    }
    if tokio::time::timeout(REAP_TIMEOUT, child.wait())
        .await
        .is_err()
    {
        tracing::warn!("firecracker did not exit within {REAP_TIMEOUT:?} of SIGKILL");
    }
    for socket in [&files.api_socket, &files.vsock, &files.ready_socket] {
        match tokio::fs::remove_file(socket).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(path = %socket.display(), error = %e, "cannot remove socket"),
        }
    }
}
