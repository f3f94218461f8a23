//! The descriptors a process sandbox's init is started with: the launcher (host side) puts
//! them there, the init (this crate) takes them. One definition for both sides.

use std::os::fd::RawFd;

/// The agent's channel to the host.
pub const AGENT_FD: RawFd = 3;
/// The start gate and creator link (see [`crate::init::Gate`]).
pub const START_GATE_FD: RawFd = 4;
/// Where the init hands its seccomp listener over.
pub const MONITOR_FD: RawFd = 5;
/// The idmapped workspace mount, when there is one.
pub const WORKSPACE_FD: RawFd = 6;
