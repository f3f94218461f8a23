//! The inside of a process sandbox: what its first process (the guest agent, entered as
//! `sandbox-init`) does to itself before it serves — mounts and `pivot_root`, the idmapped
//! workspace, Landlock, capabilities and rlimits, seccomp with its listener handed out. The
//! host side (launch, cgroups, network) is `luminaguard-process-sandbox`; this crate depends on
//! no host crate, so the static guest agent carries none of them.

pub mod fds;
pub mod idmap;
pub mod init;
pub mod landlock;
pub mod privileges;
