//! On the host: start a sandbox — clone into fresh namespaces and exec the agent's sandbox init,
//! handing it one end of a socket pair as fd 3.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use nix::sched::CloneFlags;
use nix::unistd::Pid;

use crate::init::{InitConfig, init_argv};
use luminaguard_cgroup::{Cgroup, CgroupError};

/// Why a sandbox could not be started.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error(
        "the process sandbox needs root for now (rootless user namespaces are not implemented yet)"
    )]
    NotRoot,
    #[error("cannot create the agent socket pair: {0}")]
    Socket(std::io::Error),
    #[error(transparent)]
    Init(#[from] crate::init::InitError),
    #[error("cannot clone into new namespaces: {0}")]
    Clone(nix::Error),
    #[error("cannot create the start-up pipe: {0}")]
    Pipe(nix::Error),
    #[error("cannot put the sandbox into its cgroup: {0}")]
    Cgroup(#[from] CgroupError),
}

/// How the host reaches the sandbox's agent, which always finds it as fd 3.
#[derive(Debug)]
pub enum AgentChannel {
    /// A socket pair: one connection for the life of the sandbox, returned in [`Launched`].
    Pair,
    /// A bound, listening Unix socket the agent accepts connections on, one per client, so that
    /// the sandbox outlives the process that started it. Its stdin is `/dev/null` and its
    /// stdout/stderr go to `log`: the caller's stdio may be a pipe whose reader waits for EOF.
    Detached { listener: OwnedFd, log: OwnedFd },
}

/// A started sandbox: its init's pid (in the host's PID namespace) and, for
/// [`AgentChannel::Pair`], the host end of its socket.
#[derive(Debug)]
pub struct Launched {
    pub pid: Pid,
    pub socket: Option<UnixStream>,
}

/// Namespaces every process sandbox gets.
pub const NAMESPACES: CloneFlags = CloneFlags::CLONE_NEWNS
    .union(CloneFlags::CLONE_NEWPID)
    .union(CloneFlags::CLONE_NEWNET)
    .union(CloneFlags::CLONE_NEWIPC)
    .union(CloneFlags::CLONE_NEWUTS)
    .union(CloneFlags::CLONE_NEWCGROUP);

const PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Starts the sandbox described by `cfg`, running `agent` (a binary with the `sandbox-init`
/// subcommand) as its init. With a `cgroup`, the init is in it before it runs a single instruction
/// of its own: the cloned child waits on a pipe until the parent has moved it.
pub fn launch(
    agent: &Path,
    cfg: &InitConfig,
    cgroup: Option<&Cgroup>,
    channel: AgentChannel,
) -> Result<Launched, LaunchError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(LaunchError::NotRoot);
    }
    let (host, guest, stdio) = match channel {
        AgentChannel::Pair => {
            let (host, guest) = UnixStream::pair().map_err(LaunchError::Socket)?;
            (Some(host), OwnedFd::from(guest), None)
        }
        AgentChannel::Detached { listener, log } => {
            let null = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/null")
                .map_err(LaunchError::Socket)?;
            (None, listener, Some((OwnedFd::from(null), log)))
        }
    };
    let stdio_fds = stdio
        .as_ref()
        .map(|(null, log)| (null.as_raw_fd(), log.as_raw_fd()));
    // Everything the child needs is built here: after clone it only makes system calls.
    let argv = init_argv(agent, cfg)?;
    let envp = [
        CString::new(PATH_ENV).map_err(|e| LaunchError::Socket(std::io::Error::other(e)))?,
        c"RUST_LOG=warn".to_owned(),
    ];
    let guest_fd = guest.as_raw_fd();
    let (go_r, go_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(LaunchError::Pipe)?;
    let go_fd = go_r.as_raw_fd();
    let mut stack = vec![0u8; 256 << 10];
    let child = Box::new(|| -> isize {
        // SAFETY: read, dup2 and execve are async-signal-safe; argv/envp were built before the clone.
        unsafe {
            let mut go = 0u8;
            if libc::read(go_fd, (&raw mut go).cast(), 1) != 1 {
                return 125; // the parent gave up before releasing us
            }
            // Standard fds first: their targets (0-2) cannot clobber the fds still to be placed.
            if let Some((null, log)) = stdio_fds {
                if libc::dup2(null, 0) < 0 || libc::dup2(log, 1) < 0 || libc::dup2(log, 2) < 0 {
                    return 124;
                }
            }
            // dup2 onto itself is a no-op that would keep O_CLOEXEC: clear the flag instead.
            let placed = if guest_fd == 3 {
                libc::fcntl(3, libc::F_SETFD, 0)
            } else {
                libc::dup2(guest_fd, 3)
            };
            if placed < 0 {
                return 126;
            }
            let _ = nix::unistd::execve(&argv[0], &argv, &envp);
        }
        127
    });
    // SAFETY: the child runs only the closure above (dup2 + execve) on its own stack.
    let pid = unsafe { nix::sched::clone(child, &mut stack, NAMESPACES, Some(libc::SIGCHLD)) }
        .map_err(LaunchError::Clone)?;
    drop(guest);
    drop(stdio);
    drop(go_r);
    if let Some(cg) = cgroup {
        if let Err(e) = cg.add(pid.as_raw()) {
            // Closing the pipe unblocks the child, which exits without running anything.
            drop(go_w);
            let _ = nix::sys::wait::waitpid(pid, None);
            return Err(e.into());
        }
    }
    nix::unistd::write(&go_w, b"1").map_err(LaunchError::Pipe)?;
    Ok(Launched { pid, socket: host })
}
