//! The launch's types: configuration, ids, files, steps, errors, timings.

use std::path::{Path, PathBuf};
use std::time::Duration;

use luminaguard_protocol::{AGENT_READY_VSOCK_PORT, Client, ClientError, ClientOptions};
use luminaguard_vsock::{DialError, ListenError};

use crate::boot_args::KernelArgs;
use crate::client::{ApiClient, ApiError};
use crate::jailer::{JailError, JailerConfig};
use crate::models::{LogLevel, MachineConfiguration};
use crate::vmm::Vmm;

/// The API socket, in the sandbox directory.
pub const API_SOCKET: &str = "fc.sock";
/// The vsock device's `uds_path` (what the host dials; guest connections arrive on `_<port>`).
pub const VSOCK_SOCKET: &str = "agent.sock";
/// Firecracker's own log (`PUT /logger`).
pub const LOG_FILE: &str = "firecracker.log";
/// Firecracker's metrics (`PUT /metrics`).
pub const METRICS_FILE: &str = "metrics.json";
/// The guest's serial console: Firecracker's stdout goes to a console keeper
/// ([`luminaguard_backend::console`]), which keeps it here within [`LaunchConfig::console`].
pub const CONSOLE_LOG: &str = "console.log";
/// Firecracker's stderr.
pub const STDERR_LOG: &str = "firecracker.stderr";
/// The scratch disk, in the VM's root (linked there from where the caller keeps it).
pub const SCRATCH_FILE: &str = "scratch.img";

/// The drive ids given to Firecracker.
pub const ROOT_DRIVE_ID: &str = "rootfs";
pub const SCRATCH_DRIVE_ID: &str = "scratch";

/// The guest's CID: each VM has its own vsock device and socket, so every guest can be 3.
pub const GUEST_CID: u32 = 3;

/// Longest path a Unix socket can be bound or connected at (`sun_path` holds 108 bytes with
/// the terminating NUL).
pub const MAX_SOCKET_PATH: usize = 107;

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
    /// `cgroup.procs` files Firecracker (or the jailer) writes itself into before it execs
    /// (every thread and page of it is then in the sandbox's cgroup).
    pub cgroup_procs: Vec<PathBuf>,
    /// Start Firecracker through the jailer (`run_as` is then required: it becomes `--uid` and
    /// `--gid`; supplementary groups are not kept — the jailer makes `/dev/kvm` in the chroot
    /// the VMM's own).
    pub jailer: Option<JailerConfig>,
    /// The guest's NIC: a tap Firecracker opens by name inside a network namespace it runs in.
    pub network: Option<LaunchNet>,
    /// How large `console.log` may grow. Firecracker's stdout (the guest's serial console) is a
    /// socket whose other end a console keeper reads ([`luminaguard_backend::console`]), as
    /// `run_as`, in the `cgroup_procs` cgroup (jailer mode: moved into the jailer's cgroup once
    /// the jailer made it). Unused with a daemonizing jailer, which sends Firecracker's stdio to
    /// `/dev/null`: no keeper runs, and `console.log` only says so.
    pub console: ConsoleLimits,
}

pub use luminaguard_backend::console::ConsoleLimits;

/// A guest NIC on a tap device that already exists (persistent, owned by the VMM's user) in
/// network namespace `netns`: Firecracker joins the namespace (through the jailer's `--netns`,
/// or `setns` before it execs in direct mode) and opens the tap by name, needing no capability.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchNet {
    /// `/run/netns/<name>`.
    pub netns: PathBuf,
    /// `host_dev_name`.
    pub tap: String,
}

/// The guest's interface id (also its name in the API's URL).
pub const GUEST_IFACE_ID: &str = "eth0";

/// A uid, gid and supplementary groups (e.g. `/dev/kvm`'s group) to run as: the identity every
/// microVM backend gives its VMM (`luminaguard_backend::VmmIdentity`).
pub use luminaguard_backend::VmmIdentity as RunAs;

/// The files of one VM, as the host sees them. In direct mode they are all in the sandbox
/// directory; in jailer mode the ones Firecracker opens are in the chroot, while its console
/// and stderr stay in the sandbox directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmFiles {
    /// Where Firecracker's own files are: the sandbox directory, or the chroot.
    pub root: PathBuf,
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
    /// Direct mode: everything in `dir`.
    pub fn in_dir(dir: &Path) -> Self {
        Self::rooted(dir, dir)
    }

    /// Firecracker's files in `root` (the chroot), console and stderr in `dir`.
    pub fn rooted(root: &Path, dir: &Path) -> Self {
        let vsock = root.join(VSOCK_SOCKET);
        Self {
            root: root.to_owned(),
            api_socket: root.join(API_SOCKET),
            ready_socket: luminaguard_vsock::listener_path(&vsock, AGENT_READY_VSOCK_PORT),
            vsock,
            log: root.join(LOG_FILE),
            metrics: root.join(METRICS_FILE),
            console: dir.join(CONSOLE_LOG),
            stderr: dir.join(STDERR_LOG),
        }
    }

    /// The sockets, for checks and removal.
    pub fn sockets(&self) -> [&Path; 3] {
        [&self.api_socket, &self.vsock, &self.ready_socket]
    }
}

/// The steps of the launch, as errors name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Prepare,
    Jail,
    Spawn,
    Jailer,
    ApiSocket,
    SnapshotFiles,
    SnapshotLoad,
    Resume,
    Reseed,
    Clock,
    Logger,
    Metrics,
    MachineConfig,
    BootSource,
    RootDrive,
    ScratchDrive,
    Vsock,
    NetworkInterface,
    Entropy,
    ReadyListener,
    InstanceStart,
    Agent,
}

impl Step {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Prepare => "prepare",
            Self::Jail => "jail",
            Self::Spawn => "spawn",
            Self::Jailer => "jailer",
            Self::ApiSocket => "api-socket",
            Self::SnapshotFiles => "snapshot-files",
            Self::SnapshotLoad => "snapshot-load",
            Self::Resume => "resume",
            Self::Reseed => "reseed",
            Self::Clock => "clock",
            Self::Logger => "logger",
            Self::Metrics => "metrics",
            Self::MachineConfig => "machine-config",
            Self::BootSource => "boot-source",
            Self::RootDrive => "root-drive",
            Self::ScratchDrive => "scratch-drive",
            Self::Vsock => "vsock",
            Self::NetworkInterface => "network-interface",
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
    /// The jail could not be built, or the jailer did not hand over a Firecracker pid.
    #[error("{0}")]
    Jail(JailError),
    /// The jailer exited with an error before Firecracker ran.
    #[error("the jailer (pid {pid}) failed ({status}){}", tail_section(stderr))]
    JailerFailed {
        pid: u32,
        status: String,
        stderr: String,
    },
    /// The process named by the jailer's pid file cannot be tracked.
    #[error("{0}")]
    Track(crate::vmm::VmmError),
    /// The guest console's keeper could not be started, or moved into the jailer's cgroup.
    #[error("{0}")]
    Console(luminaguard_backend::console::ConsoleError),
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
    /// A restored guest could not be given fresh entropy: it would go on drawing the
    /// snapshot's random numbers, so it is not used.
    #[error("the restored guest's kernel could not be reseeded: {0}")]
    Reseed(String),
    /// A restored guest's wall clock could not be set: it would keep the snapshot's time.
    #[error("the restored guest's clock could not be set: {0}")]
    Clock(String),
}

pub(crate) fn tail_section(tail: &str) -> String {
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
    pub vmm: Vmm,
    pub pid: u32,
    /// The API connection (kept for pause/resume, snapshots, `SendCtrlAltDel`).
    pub api: ApiClient,
    pub agent: Client,
    pub files: VmFiles,
    /// The jail, in jailer mode (removed by [`Launched::stop`]).
    pub jail: Option<crate::jailer::Jail>,
    /// The keeper of `console.log` (`None` with a daemonizing jailer).
    pub console: Option<super::console::ConsoleKeeper>,
    pub timings: LaunchTimings,
}
