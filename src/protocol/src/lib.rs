//! The LuminaGuard host↔guest protocol.
//!
//! - [`frame`]: length-prefixed frames with a hard size limit, and their codec.
//! - [`message`]: what the frames carry (serde types; postcard on the wire).
//! - [`handshake`]: version and capability negotiation.
//! - [`writer`]: the single writer task that owns a connection's write half.
//! - [`pool`]: reusable buffers for bulk data.
//! - [`client`]: the multiplexing host client (one reader task, replies routed by id).
//! - [`ops`]: typed operations (exec, files, info) on the client.
//! - [`tree`], [`tree_fs`]: a file tree as a byte stream, read from and written to directories
//!   (the workspace and the overlay layer of a microVM review).
//!
//! Transport-agnostic: anything `AsyncRead + AsyncWrite` — a Unix socket, a vsock stream.
//! See `docs/protocol.md`.

pub mod client;
pub mod frame;
pub mod handshake;
pub mod message;
pub mod ops;
pub mod pool;
pub mod tree;
pub mod tree_fs;
pub mod writer;

pub use client::{Client, ClientError, ClientOptions, InputHandle, PeerInfo, ReplyStream};
pub use frame::{Frame, FrameCodec, FrameError, Incoming, MAX_CHUNK, MAX_FRAME_LEN};
pub use message::{
    DirEntry, ErrorCode, ErrorReply, ExecRequest, ExitStatus, FileKind, FileStat, GuestInfo,
    ReadFileRequest, Reply, Request, ReviewExportRequest, ReviewSetupRequest, WriteFileRequest,
};
pub use ops::{ExecEvent, ExecOutput, ExecStream};
pub use pool::ChunkPool;
pub use writer::{FrameSender, SendError, frame_writer};

/// The AF_VSOCK port the guest agent of a microVM listens on (every VMM, every image).
pub const AGENT_VSOCK_PORT: u32 = 1024;

/// The host-side vsock port a microVM's agent connects to once it listens (the connection is
/// the signal), so the host need not poll for it.
pub const AGENT_READY_VSOCK_PORT: u32 = 1025;
