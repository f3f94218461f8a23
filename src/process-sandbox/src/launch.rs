//! On the host: start a sandbox — clone into fresh namespaces (a user namespace always) and exec
//! the agent's sandbox init with exactly the descriptors it needs and nothing else.
//!
//! What the init starts with, and only that (every other descriptor of the caller is closed
//! before the exec — an inherited `7</etc/shadow` must not reach the sandbox):
//!
//! | fd | what |
//! | --- | --- |
//! | 0 | `/dev/null` |
//! | 1, 2 | its console: the keeper's socket pair (never a host file, never the caller's terminal) |
//! | 3 | [`AGENT_FD`]: the host's connection(s) to the agent |
//! | 4 | [`START_GATE_FD`]: the start gate and creator link (see [`crate::init::Gate`]) |
//! | 5 | [`MONITOR_FD`]: where the init hands its seccomp listener to the keeper |
//! | 6 | [`WORKSPACE_FD`]: an idmapped detached mount of the workspace, when there is one |
//!
//! It runs in a session of its own (`setsid`): no sandbox process ever has a controlling
//! terminal of the host's. Its uid 0 is an unprivileged host uid: the caller's when rootless, the
//! sandbox's own ([`Identity::Mapped`]) when root — nothing in a sandbox is ever host root.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
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
    #[error("cannot map the sandbox's uid/gid into its user namespace: {0}")]
    IdMap(std::io::Error),
    #[error("cannot create the agent socket pair: {0}")]
    Socket(std::io::Error),
    #[error(transparent)]
    Init(#[from] crate::init::InitError),
    #[error("cannot clone into new namespaces: {0}")]
    Clone(nix::Error),
    #[error("cannot join the sandbox's network namespace: {0}")]
    Netns(nix::Error),
    #[error("cannot create the start-up pipe: {0}")]
    Pipe(nix::Error),
    #[error("cannot put the sandbox into its cgroup: {0}")]
    Cgroup(#[from] CgroupError),
    #[error(
        "a rootless sandbox cannot join a prepared network namespace (network egress needs root)"
    )]
    RootlessNetwork,
    #[error("starting the sandbox init failed at {step}: {source}")]
    Child {
        step: &'static str,
        source: std::io::Error,
    },
}

/// How the host reaches the sandbox's agent, which always finds it as [`AGENT_FD`].
#[derive(Debug)]
pub enum AgentChannel {
    /// A socket pair: one connection for the life of the sandbox, returned in [`Launched`].
    Pair,
    /// A bound, listening Unix socket the agent accepts connections on, one per client, so that
    /// the sandbox outlives the process that started it.
    Detached { listener: OwnedFd },
}

/// Who the sandbox's processes are on the host. Inside, they are uid and gid 0 (without any
/// capability); outside, never root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Identity {
    /// Rootless: the caller's own uid and gid (the one mapping an unprivileged process may
    /// write).
    Caller,
    /// As root: an unprivileged uid and gid of the sandbox's own (see
    /// `luminaguard_backend::VmmIdentity`), so that its processes can signal, trace or share a
    /// keyring with nobody else's, and nothing they do is done as host root.
    Mapped { uid: u32, gid: u32 },
}

/// Everything a launch needs.
#[derive(Debug)]
pub struct Launch<'a> {
    /// A binary with the `sandbox-init` subcommand (`luminaguard` or `luminaguard-agent`).
    pub agent: &'a Path,
    pub config: &'a InitConfig,
    pub cgroup: Option<&'a Cgroup>,
    pub channel: AgentChannel,
    /// A network namespace prepared with the sandbox's egress path; `None`: a new, empty one.
    pub netns: Option<&'a OwnedFd>,
    pub identity: Identity,
    /// The init's stdout and stderr: the console keeper's socket pair end.
    pub console: OwnedFd,
    /// Where the init sends its seccomp listener: the keeper's handoff pair end.
    pub monitor: OwnedFd,
    /// A detached, idmapped mount of the workspace ([`crate::idmap`]) for the init to move into
    /// place (root); `None` when the init binds the workspace itself (rootless) or has none.
    pub workspace: Option<OwnedFd>,
}

/// A started sandbox.
#[derive(Debug)]
pub struct Launched {
    /// Its init's pid, in the host's PID namespace.
    pub pid: Pid,
    /// For [`AgentChannel::Pair`], the host end of the agent's socket.
    pub socket: Option<UnixStream>,
    /// The creator link: while the init has not been handed over, closing this ends the
    /// sandbox. Write [`crate::init::HANDED_OVER`] to let it outlive its creator.
    pub creator: OwnedFd,
    /// Where the cloned child reports a step that failed before its exec (see
    /// [`Launched::failed_before_exec`]).
    pub before_exec: OwnedFd,
}

impl Launched {
    /// Resolves only if the child failed before it could exec the init — with the step it
    /// failed at — and never once it has exec'd: race it against the sandbox's handshake, so
    /// that such a failure is reported at once, and by name.
    pub async fn failed_before_exec(fd: OwnedFd) -> LaunchError {
        use tokio::io::AsyncReadExt;
        let mut report = [0u8; 8];
        let read = match tokio::net::unix::pipe::Receiver::from_owned_fd(fd) {
            Ok(mut pipe) => pipe.read_exact(&mut report).await.is_ok(),
            Err(_) => false,
        };
        if !read {
            // End of file: the exec happened (the pipe is close-on-exec).
            std::future::pending::<()>().await;
        }
        let word = |i: usize| {
            let mut b = [0u8; 4];
            b.copy_from_slice(report.get(i * 4..i * 4 + 4).unwrap_or(&[0; 4]));
            i32::from_ne_bytes(b)
        };
        LaunchError::Child {
            step: CHILD_STEPS
                .get(usize::try_from(word(0) - 1).unwrap_or(usize::MAX))
                .copied()
                .unwrap_or("an unknown step"),
            source: std::io::Error::from_raw_os_error(word(1)),
        }
    }
}

/// Namespaces every process sandbox gets (a user namespace, always: see [`Identity`]).
pub const NAMESPACES: CloneFlags = CloneFlags::CLONE_NEWUSER
    .union(CloneFlags::CLONE_NEWNS)
    .union(CloneFlags::CLONE_NEWPID)
    .union(CloneFlags::CLONE_NEWNET)
    .union(CloneFlags::CLONE_NEWIPC)
    .union(CloneFlags::CLONE_NEWUTS)
    .union(CloneFlags::CLONE_NEWCGROUP);

const PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The descriptors the init is started with (one definition, the init's own crate's).
pub use luminaguard_sandbox_init::fds::{AGENT_FD, MONITOR_FD, START_GATE_FD, WORKSPACE_FD};
/// The first descriptor the init does not get.
const FIRST_CLOSED: RawFd = 7;

/// A NULL-terminated array of pointers into `CString`s that outlive it, for `execve`, built
/// before the clone and only read by the child.
struct PtrArray(Vec<*const libc::c_char>);

impl PtrArray {
    fn of(strings: &[CString]) -> Self {
        Self(
            strings
                .iter()
                .map(|s| s.as_ptr())
                .chain(std::iter::once(std::ptr::null()))
                .collect(),
        )
    }

    fn first(&self) -> *const libc::c_char {
        self.0.first().copied().unwrap_or(std::ptr::null())
    }

    fn as_ptr(&self) -> *const *const libc::c_char {
        self.0.as_ptr()
    }
}

// SAFETY: the pointers are only read — by the child of a fork-like clone, possibly made on
// another thread — while the `CString`s they point into are alive in the launching function.
unsafe impl Send for PtrArray {}
// SAFETY: as above; nothing writes through them.
unsafe impl Sync for PtrArray {}

/// The child's steps before exec, as it reports a failure (step 1 first).
const CHILD_STEPS: [&str; 6] = [
    "waiting for its id maps",
    "becoming the sandbox's uid and gid",
    "placing its descriptors",
    "closing every other descriptor",
    "starting a session",
    "exec",
];

/// Opens `/dev/null` for reading and writing, close-on-exec.
fn dev_null() -> std::io::Result<OwnedFd> {
    use std::os::unix::fs::OpenOptionsExt;
    #[allow(clippy::disallowed_methods)] // called from a blocking context (see launch)
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open("/dev/null")?;
    Ok(OwnedFd::from(f))
}

/// A close-on-exec copy of `fd` numbered at least [`FIRST_CLOSED`], so that no `dup2` in the
/// child can clobber another source before it is placed.
fn high(fd: &OwnedFd) -> Result<OwnedFd, LaunchError> {
    nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(FIRST_CLOSED))
        .map_err(LaunchError::Pipe)
        // SAFETY: fcntl returned a new descriptor that nobody else owns.
        .map(|raw| unsafe { OwnedFd::from_raw_fd(raw) })
}

/// Starts the sandbox described by `l`, running `l.agent` as its init. With `l.netns`, the init
/// joins that network namespace (one prepared with the sandbox's egress path) instead of a new,
/// empty one: the launching thread joins it before the clone, since a process in the new user
/// namespace has no right to.
///
/// With a cgroup, the init runs its set-up (building its root, locking itself down) *while* the
/// parent moves it into the group — on cgroup v1 an attach costs an RCU grace period, often
/// longer than the whole set-up — and waits at the start gate until the move is done, before it
/// runs a single command or serves a request. Only the init's own set-up allocations can land
/// outside the group's accounting; if the move fails, the init is killed without ever serving.
///
/// Blocking: run it on a blocking thread.
pub fn launch(l: Launch<'_>) -> Result<Launched, LaunchError> {
    let rootless = !nix::unistd::geteuid().is_root();
    if rootless && l.netns.is_some() {
        return Err(LaunchError::RootlessNetwork);
    }
    let (host, agent_end) = match l.channel {
        AgentChannel::Pair => {
            let (host, guest) = UnixStream::pair().map_err(LaunchError::Socket)?;
            (Some(host), OwnedFd::from(guest))
        }
        AgentChannel::Detached { listener } => (None, listener),
    };
    let null = dev_null().map_err(LaunchError::Socket)?;
    let (gate_r, gate_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(LaunchError::Pipe)?;
    // The child waits on this until the parent has written its id maps: it must be uid 0 of
    // its user namespace when it execs, or exec drops the capabilities it needs to build its
    // root.
    let (maps_r, maps_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(LaunchError::Pipe)?;
    // The child's report of a failed step before exec (close-on-exec: EOF once it has exec'd).
    let (err_r, err_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(LaunchError::Pipe)?;

    let sources = [
        (0, high(&null)?),
        (1, high(&l.console)?),
        (2, high(&l.console)?),
        (AGENT_FD, high(&agent_end)?),
        (START_GATE_FD, high(&gate_r)?),
        (MONITOR_FD, high(&l.monitor)?),
    ];
    let workspace = l.workspace.as_ref().map(high).transpose()?;
    let placed: Vec<(RawFd, RawFd)> = sources
        .iter()
        .map(|(to, fd)| (*to, fd.as_raw_fd()))
        .chain(workspace.as_ref().map(|w| (WORKSPACE_FD, w.as_raw_fd())))
        .collect();
    let first_closed = u32::try_from(placed.iter().map(|(to, _)| to + 1).max().unwrap_or(3))
        .unwrap_or(FIRST_CLOSED as u32);
    // Everything the child needs is built here: after clone it only makes system calls.
    let argv = init_argv(l.agent, l.config)?;
    let envp = [
        CString::new(PATH_ENV).map_err(|e| LaunchError::Socket(std::io::Error::other(e)))?,
        c"RUST_LOG=warn".to_owned(),
    ];
    // The exec's NULL-terminated pointer arrays, built here: the child must not allocate (a
    // lock another thread held at the clone would be held for ever in the child).
    let argv_ptrs = PtrArray::of(&argv);
    let envp_ptrs = PtrArray::of(&envp);
    // What the child itself reads and writes before its exec is numbered high too: a pipe the
    // parent happened to get at 3–6 (free, in a busy daemon, while another launch closes its
    // descriptors) would be clobbered by the child's own `dup2`s below, and the child would
    // wait for its maps on the wrong descriptor for ever.
    let (maps_r, err_w) = {
        let (low_maps_r, low_err_w) = (maps_r, err_w);
        (high(&low_maps_r)?, high(&low_err_w)?)
    };
    let (maps_fd, maps_w_fd) = (maps_r.as_raw_fd(), maps_w.as_raw_fd());
    let err_fd = err_w.as_raw_fd();
    let mapped = matches!(l.identity, Identity::Mapped { .. });
    let child = || -> isize {
        // Reports which step failed (and its errno) to the parent, then gives up.
        let fail = |step: i32| -> isize {
            let errno = nix::errno::Errno::last_raw();
            let report = [step, errno];
            // SAFETY: writing 8 bytes from a local array to our own pipe.
            unsafe { libc::write(err_fd, report.as_ptr().cast(), 8) };
            120 + step as isize
        };
        // SAFETY: the whole block: read, setgroups, setres[ug]id, dup2, close_range, setsid and
        // execve are async-signal-safe; everything they use was built before the clone.
        unsafe {
            // Our copy of the write end goes first: if the parent dies before it maps our ids,
            // the read below sees end of file and this child exits instead of waiting forever.
            libc::close(maps_w_fd);
            // Meanwhile (the parent is writing the maps) what needs no id: descriptors, session.
            for (to, from) in &placed {
                if libc::dup2(*from, *to) < 0 {
                    return fail(3);
                }
            }
            // A session of its own: no controlling terminal, now or ever (it never opens one).
            if libc::setsid() < 0 {
                return fail(5);
            }
            let mut ready = 0u8;
            if libc::read(maps_fd, (&raw mut ready).cast(), 1) != 1 {
                return fail(1); // the parent could not map our ids
            }
            // As root the child is still host uid 0 (unmapped here, so shown as the overflow
            // id) with the caller's groups: become the sandbox's own identity, no groups. Raw
            // system calls: glibc's wrappers would try to change every thread of the parent,
            // which this child of a raw clone still believes it has, and wait for them forever.
            if mapped
                && (libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()) != 0
                    || libc::syscall(libc::SYS_setresgid, 0, 0, 0) != 0
                    || libc::syscall(libc::SYS_setresuid, 0, 0, 0) != 0)
            {
                return fail(2);
            }
            // Every other descriptor the caller had, inherited or not, is gone.
            if libc::syscall(libc::SYS_close_range, first_closed, u32::MAX, 0u32) != 0 {
                return fail(4);
            }
            libc::execve(argv_ptrs.first(), argv_ptrs.as_ptr(), envp_ptrs.as_ptr());
        }
        fail(6)
    };
    let mut flags = NAMESPACES;
    if l.netns.is_some() {
        flags.remove(CloneFlags::CLONE_NEWNET);
    }
    // cgroup v2: born in the group (clone3 + CLONE_INTO_CGROUP), so no migration — which would
    // wait for an RCU grace period — is needed. v1 has no such thing: the parent moves the child.
    let into = match l.cgroup.filter(|cg| cg.version() == 2) {
        Some(cg) => Some(cg.open_dir().map_err(LaunchError::Cgroup)?),
        None => None,
    };
    let spawn = || match &into {
        Some(dir) => clone_into_cgroup(flags, dir, child),
        None => {
            let mut stack = vec![0u8; 256 << 10];
            // SAFETY: the child runs only `child` (async-signal-safe calls) on its own stack.
            unsafe { nix::sched::clone(Box::new(child), &mut stack, flags, Some(libc::SIGCHLD)) }
        }
    };
    let cloned = match l.netns {
        None => spawn().map_err(|e| clone_error(e, rootless)),
        // A network namespace is per thread: a thread of our own joins it, clones, and ends.
        Some(netns) => std::thread::scope(|s| {
            s.spawn(move || {
                nix::sched::setns(netns, CloneFlags::CLONE_NEWNET).map_err(LaunchError::Netns)?;
                spawn().map_err(|e| clone_error(e, rootless))
            })
            .join()
            .unwrap_or(Err(LaunchError::Clone(nix::Error::EIO)))
        }),
    };
    drop(sources);
    drop(workspace);
    let pid = cloned?;
    drop(agent_end);
    drop(null);
    drop(gate_r);
    drop(maps_r);
    drop(err_w);
    let kill = |pid| {
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(pid, None);
    };
    let mapped_ok = write_id_maps(pid, l.identity).and_then(|()| {
        nix::unistd::write(&maps_w, b"1")
            .map(drop)
            .map_err(std::io::Error::from)
    });
    if let Err(e) = mapped_ok {
        kill(pid);
        return Err(LaunchError::IdMap(e));
    }
    drop(maps_w);
    if let Some(cg) = l.cgroup.filter(|_| into.is_none())
        && let Err(e) = cg.add(pid.as_raw())
    {
        // Never opened, the gate keeps the init from serving; kill it and reap it.
        kill(pid);
        return Err(e.into());
    }
    // Not waited for: a child that fails before its exec says so on `err_r`, which the caller
    // reads only if the sandbox does not come up (`Launched::failed_before_exec`).
    if let Err(e) = nix::unistd::write(&gate_w, &[crate::init::START]) {
        kill(pid);
        return Err(LaunchError::Pipe(e));
    }
    Ok(Launched {
        pid,
        socket: host,
        creator: gate_w,
        before_exec: err_r,
    })
}

fn clone_error(e: nix::Error, rootless: bool) -> LaunchError {
    match e {
        nix::Error::EPERM | nix::Error::ENOSPC | nix::Error::EINVAL if rootless => {
            LaunchError::NoUserNamespace(e)
        }
        e => LaunchError::Clone(e),
    }
}

/// Writes the child's id maps: uid and gid 0 inside become the caller's (rootless, after
/// denying `setgroups`, the one mapping an unprivileged process may write) or the sandbox's own
/// identity (root).
fn write_id_maps(pid: Pid, identity: Identity) -> std::io::Result<()> {
    let proc = format!("/proc/{pid}");
    let (uid, gid) = match identity {
        Identity::Caller => {
            #[allow(clippy::disallowed_methods)] // called from a blocking context (see launch)
            std::fs::write(format!("{proc}/setgroups"), "deny")?;
            (
                nix::unistd::geteuid().as_raw(),
                nix::unistd::getegid().as_raw(),
            )
        }
        Identity::Mapped { uid, gid } => (uid, gid),
    };
    #[allow(clippy::disallowed_methods)] // called from a blocking context (see launch)
    {
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
