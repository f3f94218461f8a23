//! The messages carried in frames. Host → guest: [`Request`]; guest → host: [`Reply`].
//!
//! Every request opens a *stream* identified by the frame id the host chose. The guest answers on
//! the same id with zero or more non-terminal replies (exec output, file data) and exactly one
//! terminal reply ([`Reply::is_terminal`]). While a stream is open the host may send
//! [`Request::Input`], [`Request::InputEnd`] and [`Request::Cancel`] on its id.
//!
//! Encoding is postcard (compact, non-self-describing); compatibility is handled by the handshake
//! (see `handshake`), not by tolerant decoding. Variant order is part of the wire format: append,
//! never reorder.
//!
//! Bulk data ([`Request::Input`], [`Reply::Stdout`], [`Reply::Stderr`], [`Reply::Data`]) is not
//! part of the serde encoding (`#[serde(skip)]`: the variant encodes as its tag alone); the frame
//! carries it as a raw trailer after the encoded message (see `frame`, [`Message::trailer`]).
//! Serializing these messages with serde alone therefore drops their data: always go through the
//! frame codec.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::frame::Message;
use crate::handshake::{Hello, HelloReply};

/// Host → guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Must be the first frame of a connection, on id 0.
    Hello(Hello),
    /// Liveness check; answered with [`Reply::Pong`].
    Ping,
    /// Run a process.
    Exec(ExecRequest),
    /// Bytes for an open stream: stdin of an exec, contents of a file write (the frame's
    /// trailer).
    Input(#[serde(skip)] Bytes),
    /// No more input for an open stream (closes stdin; commits a file write).
    InputEnd,
    /// Abandon an open stream: kills an exec's process tree, discards a partial file write.
    Cancel,
    ReadFile(ReadFileRequest),
    WriteFile(WriteFileRequest),
    ListDir {
        path: String,
    },
    Stat {
        path: String,
        follow_symlinks: bool,
    },
    Mkdir {
        path: String,
        mode: u32,
        parents: bool,
    },
    Remove {
        path: String,
        recursive: bool,
    },
    /// Facts about the guest: kernel, uptime, memory.
    Info,
    /// Stop the agent; as PID 1 of a VM, power the VM off.
    Shutdown,
    /// The system calls the sandbox's seccomp policy denied; answered with
    /// [`Reply::SeccompAudit`].
    SeccompAudit,
    /// Mix these fresh random bytes into the guest kernel's entropy pool, credited, and reseed
    /// its CSPRNG at once; answered with [`Reply::Done`]. Sent after a VM is restored from a
    /// snapshot, whose kernel would otherwise go on from the snapshot's random state (every
    /// restore of one snapshot drawing the same "random" numbers). At most
    /// [`RESEED_MAX_BYTES`], at least [`RESEED_MIN_BYTES`].
    Reseed {
        entropy: Vec<u8>,
    },
    /// Set the guest's wall clock (`CLOCK_REALTIME`) to this many nanoseconds since the Unix
    /// epoch; answered with [`Reply::Done`]. Sent after a VM is restored from a snapshot, whose
    /// clock would otherwise resume at the snapshot's time.
    SetClock {
        unix_nanos: u64,
    },
    /// Make `/workspace` a speculative run's overlay (a microVM review): the stream's input is
    /// the workspace as a tree stream (`tree`), written into a fresh tmpfs of `lower_bytes`
    /// that becomes the overlay's read-only lower dir; upper and work dirs go on a tmpfs of
    /// `layer_bytes`. Answered with [`Reply::Written`] (the content bytes written) once the
    /// overlay is mounted. Once per guest.
    ReviewSetup(ReviewSetupRequest),
    /// The overlay's upper dir as a tree stream (`tree`, an overlay layer: whiteouts, opaque
    /// markers, hard links): [`Reply::Data`] chunks, then [`Reply::ReadDone`] with the stream's
    /// length. Refused past `max_entries` entries or `max_file_bytes` of content.
    ReviewExport(ReviewExportRequest),
}

/// The least entropy a [`Request::Reseed`] may carry: 256 bits, what the kernel's CRNG needs
/// to count as seeded.
pub const RESEED_MIN_BYTES: usize = 32;
/// The most entropy a [`Request::Reseed`] may carry (the kernel's own input pool is 256 bits;
/// more is accepted but adds nothing).
pub const RESEED_MAX_BYTES: usize = 512;

impl Request {
    /// Short name for logs and errors.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Hello(_) => "hello",
            Self::Ping => "ping",
            Self::Exec(_) => "exec",
            Self::Input(_) => "input",
            Self::InputEnd => "input-end",
            Self::Cancel => "cancel",
            Self::ReadFile(_) => "read-file",
            Self::WriteFile(_) => "write-file",
            Self::ListDir { .. } => "list-dir",
            Self::Stat { .. } => "stat",
            Self::Mkdir { .. } => "mkdir",
            Self::Remove { .. } => "remove",
            Self::Info => "info",
            Self::Shutdown => "shutdown",
            Self::SeccompAudit => "seccomp-audit",
            Self::Reseed { .. } => "reseed",
            Self::SetClock { .. } => "set-clock",
            Self::ReviewSetup(_) => "review-setup",
            Self::ReviewExport(_) => "review-export",
        }
    }

    /// Messages that belong to a stream opened earlier rather than opening one.
    pub fn is_stream_control(&self) -> bool {
        matches!(self, Self::Input(_) | Self::InputEnd | Self::Cancel)
    }
}

impl Message for Request {
    fn kind(&self) -> &'static str {
        Request::kind(self)
    }
    fn trailer(&self) -> Option<&Bytes> {
        match self {
            Self::Input(data) => Some(data),
            _ => None,
        }
    }
    fn set_trailer(&mut self, trailer: Bytes) -> Result<(), Bytes> {
        match self {
            Self::Input(data) => {
                *data = trailer;
                Ok(())
            }
            _ => Err(trailer),
        }
    }
}

/// What [`Request::Exec`] runs, and how.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecRequest {
    /// Program and arguments; `argv[0]` is looked up in `PATH` when it has no `/`.
    pub argv: Vec<String>,
    /// Variables added to (or, with `clear_env`, forming) the environment.
    pub env: Vec<(String, String)>,
    pub clear_env: bool,
    pub cwd: Option<String>,
    /// Whether the host will stream stdin ([`Request::Input`]); otherwise stdin is `/dev/null`.
    pub stdin: bool,
    /// Kill the whole process tree after this long.
    pub timeout_ms: Option<u64>,
    /// Forward at most this many bytes of stdout+stderr together; the rest is counted and dropped.
    pub output_limit: Option<u64>,
}

/// How an exec ended. Exactly one of `code` / `signal` is set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitStatus {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub timed_out: bool,
    pub cancelled: bool,
    /// Output beyond `output_limit` was dropped.
    pub output_truncated: bool,
    /// Bytes of stdout+stderr the process produced (including any dropped).
    pub output_bytes: u64,
    pub duration_ms: u64,
}

impl ExitStatus {
    /// Shell convention: the code, or 128 + signal.
    pub fn shell_code(&self) -> i32 {
        match (self.code, self.signal) {
            (Some(c), _) => c,
            (None, Some(s)) => 128 + s,
            (None, None) => 255,
        }
    }

    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadFileRequest {
    pub path: String,
    pub offset: u64,
    /// Read at most this many bytes; `None` reads to the end.
    pub limit: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteFileRequest {
    pub path: String,
    /// Permission bits of the new file.
    pub mode: u32,
    /// Create missing parent directories.
    pub parents: bool,
}

/// What [`Request::ReviewSetup`] sets up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReviewSetupRequest {
    /// Size of the tmpfs holding the workspace's copy (the overlay's lower dir).
    pub lower_bytes: u64,
    /// Size of the tmpfs holding the upper and work dirs: what the commands may write.
    pub layer_bytes: u64,
}

/// The bounds of a [`Request::ReviewExport`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReviewExportRequest {
    pub max_entries: u64,
    pub max_file_bytes: u64,
}

/// Guest → host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    Hello(HelloReply),
    Pong,
    /// The exec's process started (non-terminal).
    Started {
        pid: u32,
    },
    /// Output of an exec (non-terminal; the frame's trailer).
    Stdout(#[serde(skip)] Bytes),
    Stderr(#[serde(skip)] Bytes),
    /// The exec ended (terminal).
    Exited(ExitStatus),
    /// A chunk of a file being read (non-terminal; the frame's trailer).
    Data(#[serde(skip)] Bytes),
    /// A read finished after this many bytes (terminal).
    ReadDone {
        bytes: u64,
    },
    /// A write was committed atomically (terminal).
    Written {
        bytes: u64,
    },
    DirListing {
        entries: Vec<DirEntry>,
        truncated: bool,
    },
    Stat(FileStat),
    Info(GuestInfo),
    /// Success with nothing to say (mkdir, remove, shutdown).
    Done,
    /// The request failed (terminal), or — on id 0 — the connection has a problem.
    Error(ErrorReply),
    SeccompAudit(SeccompAudit),
}

impl Reply {
    /// Whether this reply closes its stream.
    pub fn is_terminal(&self) -> bool {
        !matches!(
            self,
            Self::Started { .. } | Self::Stdout(_) | Self::Stderr(_) | Self::Data(_)
        )
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Self::Hello(_) => "hello",
            Self::Pong => "pong",
            Self::Started { .. } => "started",
            Self::Stdout(_) => "stdout",
            Self::Stderr(_) => "stderr",
            Self::Exited(_) => "exited",
            Self::Data(_) => "data",
            Self::ReadDone { .. } => "read-done",
            Self::Written { .. } => "written",
            Self::DirListing { .. } => "dir-listing",
            Self::Stat(_) => "stat",
            Self::Info(_) => "info",
            Self::Done => "done",
            Self::Error(_) => "error",
            Self::SeccompAudit(_) => "seccomp-audit",
        }
    }
}

impl Message for Reply {
    fn kind(&self) -> &'static str {
        Reply::kind(self)
    }
    fn trailer(&self) -> Option<&Bytes> {
        match self {
            Self::Stdout(data) | Self::Stderr(data) | Self::Data(data) => Some(data),
            _ => None,
        }
    }
    fn set_trailer(&mut self, trailer: Bytes) -> Result<(), Bytes> {
        match self {
            Self::Stdout(data) | Self::Stderr(data) | Self::Data(data) => {
                *data = trailer;
                Ok(())
            }
            _ => Err(trailer),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileKind {
    File,
    Dir,
    Symlink,
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirEntry {
    pub name: String,
    pub kind: FileKind,
    pub size: u64,
    pub mode: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileStat {
    pub kind: FileKind,
    pub size: u64,
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime_unix_ms: i64,
    pub symlink_target: Option<String>,
}

/// A bounded record of the system calls a sandbox's seccomp policy denied.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeccompAudit {
    /// Whether denials are recorded at all (no supervisor runs where no policy is installed,
    /// e.g. inside a microVM guest, whose boundary is the VM).
    pub enabled: bool,
    /// The most recent denials, oldest first.
    pub recent: Vec<SeccompDenial>,
    /// Every denial since the sandbox started, by system call name.
    pub counts: Vec<(String, u64)>,
    /// Denials older than those in `recent`, no longer kept in detail.
    pub dropped: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeccompDenial {
    pub unix_ms: u64,
    /// Pid inside the sandbox.
    pub pid: u32,
    pub comm: String,
    pub syscall: String,
    /// First argument (e.g. the address family of a denied `socket`).
    pub arg0: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestInfo {
    pub agent_version: String,
    pub kernel_release: String,
    pub hostname: String,
    pub pid: u32,
    /// The agent is the init process of its PID namespace or VM.
    pub is_pid1: bool,
    pub uptime_ms: u64,
    pub mem_total_bytes: u64,
    pub mem_available_bytes: u64,
    pub cpus: u32,
}

/// A failure, with a machine-readable code and a message for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct ErrorReply {
    pub code: ErrorCode,
    pub message: String,
}

impl ErrorReply {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// Why a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorCode {
    /// A frame's payload did not decode as any known request (malformed or an unknown type).
    Malformed,
    /// A frame was larger than the limit; the connection is closed after this error.
    FrameTooLarge,
    /// A request arrived before the handshake.
    HandshakeRequired,
    /// The peers share no protocol version.
    IncompatibleVersion,
    /// The request is well-formed but its contents are not acceptable (empty argv, relative path).
    InvalidRequest,
    /// A new request reused the id of a stream that is still open, or used id 0.
    BadStreamId,
    NotFound,
    PermissionDenied,
    AlreadyExists,
    /// Any other I/O failure; the message has the OS error.
    Io,
    /// The process could not be started.
    SpawnFailed,
    /// The agent is shutting down.
    ShuttingDown,
    Internal,
    /// The program to run does not exist (a shell's exit status 127). Appended, so that the
    /// codes before it keep their wire values.
    CommandNotFound,
    /// The program exists but cannot be run: not executable, not a program (a shell's 126).
    NotExecutable,
}
