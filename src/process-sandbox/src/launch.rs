//! On the host: start a sandbox — clone into fresh namespaces and exec the agent's sandbox init,
//! handing it one end of a socket pair as fd 3.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
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
        "cannot create a user namespace for a rootless sandbox ({0}): this host does not allow \
         unprivileged user namespaces (see sysctls user.max_user_namespaces, \
         kernel.unprivileged_userns_clone, kernel.apparmor_restrict_unprivileged_userns) — run \
         as root or allow them"
    )]
    NoUserNamespace(nix::Error),
    #[error("cannot map the caller's uid/gid into the sandbox's user namespace: {0}")]
    IdMap(std::io::Error),
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
    #[error(
        "a rootless sandbox cannot join a prepared network namespace (network egress needs root)"
    )]
    RootlessNetwork,
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

/// The init finds the start gate here: a pipe on which the launcher writes one byte once the init
/// is in its cgroup (see [`crate::init::pass_start_gate`]).
pub const START_GATE_FD: i32 = 4;

/// Starts the sandbox described by `cfg`, running `agent` (a binary with the `sandbox-init`
/// subcommand) as its init. With `netns`, the init joins that network namespace (one prepared
/// with the sandbox's egress path) instead of a new, empty one.
///
/// With a `cgroup`, the init runs its set-up (building its root, locking itself down) *while* the
/// parent moves it into the group — on cgroup v1 an attach costs an RCU grace period, often
/// longer than the whole set-up — and waits at the start gate until the move is done, before it
/// runs a single command or serves a request. Only the init's own set-up allocations can land
/// outside the group's accounting; if the move fails, the init is killed without ever serving.
pub fn launch(
    agent: &Path,
    cfg: &InitConfig,
    cgroup: Option<&Cgroup>,
    channel: AgentChannel,
    netns: Option<&OwnedFd>,
) -> Result<Launched, LaunchError> {
    let rootless = !nix::unistd::geteuid().is_root();
    if rootless && netns.is_some() {
        return Err(LaunchError::RootlessNetwork);
    }
    let netns_fd = netns.map(AsRawFd::as_raw_fd);
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
    let (go_r, go_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(LaunchError::Pipe)?;
    // Above every fd the child places (0-4), so that no dup2 below can clobber another source.
    let high = |fd: &OwnedFd| {
        nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(START_GATE_FD + 1))
            .map_err(LaunchError::Pipe)
    };
    let guest_fd = high(&guest)?;
    let go_fd = high(&go_r)?;
    // Rootless: the child must be uid 0 of its user namespace when it execs, or exec drops the
    // capabilities it needs to build its root; it waits here until the parent wrote its id maps.
    let (maps_r, maps_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(LaunchError::Pipe)?;
    let maps_fd = maps_r.as_raw_fd();
    let child = || -> isize {
        // SAFETY: read, dup2 and execve are async-signal-safe; argv/envp were built before the
        // clone.
        unsafe {
            let mut ready = 0u8;
            if rootless && libc::read(maps_fd, (&raw mut ready).cast(), 1) != 1 {
                return 123; // the parent could not map our ids
            }
            if let Some(fd) = netns_fd {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return 122; // never run in the host's network namespace
                }
            }
            if let Some((null, log)) = stdio_fds {
                if libc::dup2(null, 0) < 0 || libc::dup2(log, 1) < 0 || libc::dup2(log, 2) < 0 {
                    return 124;
                }
            }
            if libc::dup2(guest_fd, 3) < 0 || libc::dup2(go_fd, START_GATE_FD) < 0 {
                return 126;
            }
            let _ = nix::unistd::execve(&argv[0], &argv, &envp);
        }
        127
    };
    let mut flags = if rootless {
        NAMESPACES | CloneFlags::CLONE_NEWUSER
    } else {
        NAMESPACES
    };
    if netns.is_some() {
        flags.remove(CloneFlags::CLONE_NEWNET);
    }
    // cgroup v2: born in the group (clone3 + CLONE_INTO_CGROUP), so no migration — which would
    // wait for an RCU grace period — is needed. v1 has no such thing: the parent moves the child.
    let into = match cgroup.filter(|cg| cg.version() == 2) {
        Some(cg) => Some(cg.open_dir().map_err(LaunchError::Cgroup)?),
        None => None,
    };
    let cloned = match &into {
        Some(dir) => clone_into_cgroup(flags, dir, child),
        None => {
            let mut stack = vec![0u8; 256 << 10];
            // SAFETY: the child runs only `child` (read, dup2, execve) on its own stack.
            unsafe { nix::sched::clone(Box::new(child), &mut stack, flags, Some(libc::SIGCHLD)) }
        }
    };
    // SAFETY: both were returned by fcntl above and are owned by nobody else; the child has its
    // own copies.
    unsafe {
        drop(OwnedFd::from_raw_fd(guest_fd));
        drop(OwnedFd::from_raw_fd(go_fd));
    }
    let pid = cloned.map_err(|e| match e {
        nix::Error::EPERM | nix::Error::ENOSPC | nix::Error::EINVAL if rootless => {
            LaunchError::NoUserNamespace(e)
        }
        e => LaunchError::Clone(e),
    })?;
    drop(guest);
    drop(stdio);
    drop(go_r);
    drop(maps_r);
    let kill = |pid| {
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(pid, None);
    };
    if rootless {
        let mapped = write_id_maps(pid).and_then(|()| {
            nix::unistd::write(&maps_w, b"1")
                .map(drop)
                .map_err(std::io::Error::from)
        });
        if let Err(e) = mapped {
            kill(pid);
            return Err(LaunchError::IdMap(e));
        }
    }
    if let Some(cg) = cgroup.filter(|_| into.is_none()) {
        if let Err(e) = cg.add(pid.as_raw()) {
            // Never opened, the gate keeps the init from serving; kill it and reap it.
            kill(pid);
            return Err(e.into());
        }
    }
    if let Err(e) = nix::unistd::write(&go_w, b"1") {
        kill(pid);
        return Err(LaunchError::Pipe(e));
    }
    Ok(Launched { pid, socket: host })
}

/// Maps uid and gid 0 of the child's new user namespace to the caller's — the one mapping an
/// unprivileged process may write (after denying `setgroups`, for the gid map).
fn write_id_maps(pid: Pid) -> std::io::Result<()> {
    let proc = format!("/proc/{pid}");
    let (uid, gid) = (nix::unistd::geteuid(), nix::unistd::getegid());
    #[allow(clippy::disallowed_methods)] // called from a blocking context (see launch)
    {
        std::fs::write(format!("{proc}/setgroups"), "deny")?;
        std::fs::write(format!("{proc}/uid_map"), format!("0 {uid} 1\n"))?;
        std::fs::write(format!("{proc}/gid_map"), format!("0 {gid} 1\n"))?;
    }
    Ok(())
}

/// `clone3(CLONE_INTO_CGROUP | flags)`: like fork (no shared memory), the child starting life in
/// the cgroup whose directory `dir` is. The child runs `child` and exits with its result.
fn clone_into_cgroup(
    flags: CloneFlags,
    dir: &OwnedFd,
    child: impl FnOnce() -> isize,
) -> nix::Result<Pid> {
    /// `struct clone_args` up to `cgroup` (CLONE_ARGS_SIZE_VER2).
    #[repr(C)]
    struct CloneArgs {
        flags: u64,
        pidfd: u64,
        child_tid: u64,
        parent_tid: u64,
        exit_signal: u64,
        stack: u64,
        stack_size: u64,
        tls: u64,
        set_tid: u64,
        set_tid_size: u64,
        cgroup: u64,
    }
    const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;
    let args = CloneArgs {
        flags: u64::from(flags.bits() as u32) | CLONE_INTO_CGROUP,
        pidfd: 0,
        child_tid: 0,
        parent_tid: 0,
        exit_signal: libc::SIGCHLD as u64,
        stack: 0,
        stack_size: 0,
        tls: 0,
        set_tid: 0,
        set_tid_size: 0,
        cgroup: u64::from(dir.as_raw_fd() as u32),
    };
    // SAFETY: fork-like clone3 (no CLONE_VM, no new stack): the child continues on a copy of
    // this stack and runs only `child`, which makes async-signal-safe calls, then _exit.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &raw const args,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    match rc {
        0 => {
            let code = child();
            // SAFETY: leaving the child without running the parent's atexit handlers.
            unsafe { libc::_exit(i32::try_from(code).unwrap_or(127)) }
        }
        pid if pid > 0 => Ok(Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX))),
        _ => Err(nix::Error::last()),
    }
}
