//! Inside the sandbox: the first process of the new namespaces builds the sandbox's root, switches
//! to it, and locks itself down before it starts serving.
//!
//! Runs as PID 1 of fresh user, mount, PID, network, IPC, UTS and cgroup namespaces (see
//! `luminaguard_process_sandbox::launch`), single-threaded, in a freshly exec'd image — so it may allocate and open
//! files freely. Order:
//!
//! 1. not dumpable (so that nothing in the sandbox may trace it, open its descriptors or read
//!    its memory); all mounts private, so nothing propagates back to the host;
//! 2. a tmpfs root; system directories bound read-only (`nosuid`, `nodev`); host secrets masked;
//! 3. a fresh `/proc` with its dangerous files masked and `/proc/sys` read-only; a minimal `/dev`;
//!    one size-capped *scratch* tmpfs shared by `/tmp`, `/dev/shm` and a private workspace (so
//!    that together they never exceed the size the host chose to fit inside the memory limit);
//!    a host workspace (an idmapped mount the host made, or a bind when rootless); the read-only
//!    mounts asked for, each a recursive bind with every mount of it read-only;
//! 4. `pivot_root`, the old root detached, the new root remounted read-only;
//! 5. hostname; the Landlock ruleset prepared (read-only but for workspace, `/tmp`, `/dev`) for
//!    the commands it will start; privileges dropped; seccomp installed, its notification
//!    listener handed to the host's keeper at once and closed here.
//!
//! Any failure aborts the sandbox with an error naming the step: it never serves half-isolated.

use std::ffi::CString;
use std::fs;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use serde::{Deserialize, Serialize};

use crate::landlock::{Enforcement, FsPolicy};
use crate::privileges::{Rlimits, drop_privileges};

/// What `/workspace` is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WorkspaceSource {
    /// A private directory on the scratch tmpfs.
    Scratch,
    /// This host directory (resolved: no link on its path), bound read-write by the init
    /// (rootless: the sandbox runs as the caller, who owns it), opened with no link allowed
    /// anywhere on the way.
    Bind(PathBuf),
    /// The detached, idmapped mount the launcher passed as [`crate::fds::WORKSPACE_FD`].
    Mount,
}

/// Everything the init needs, passed from the launcher as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitConfig {
    /// An empty host directory the new root is built on (inside the sandbox's mount namespace).
    pub staging_root: PathBuf,
    pub workspace: WorkspaceSource,
    /// Size of the one tmpfs behind `/tmp`, `/dev/shm` and a private workspace.
    pub scratch_size: u64,
    pub hostname: String,
    pub open_files: u64,
    pub file_size: u64,
    /// Fail when the kernel enforces no Landlock.
    pub landlock_required: bool,
    /// Built-in seccomp profile name.
    pub seccomp_profile: String,
    /// The sandbox ends (its init exits, taking every process with it) this many milliseconds
    /// after it starts serving; `None`: when the host destroys it.
    #[serde(default)]
    pub lifetime_ms: Option<u64>,
    /// A host file shown read-only as the sandbox's `/etc/resolv.conf` (a sandbox behind
    /// LuminaGuard's resolver); `None`: the host's.
    #[serde(default)]
    pub resolv_conf: Option<PathBuf>,
    /// A speculative run: a host directory (the sandbox's review layer, a tmpfs owned by the
    /// sandbox's uid) whose `upper/` and `work/` take every write to `/workspace`, which becomes
    /// an overlay over the workspace. `None`: the workspace is written directly.
    #[serde(default)]
    pub review: Option<PathBuf>,
    /// Host directories and files shown read-only (resolved by the host: no link on the way,
    /// checked; `at` validated by `SandboxSpec::validate`, which keeps it out of the system
    /// directories and of other mounts). Mounted after everything else but the last empty
    /// directories, each read-only with every submount.
    #[serde(default)]
    pub mounts: Vec<luminaguard_core::ReadOnlyMount>,
}

/// Which step failed, and why.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("sandbox init: {step}: {reason}")]
    Step { step: String, reason: String },
    #[error(transparent)]
    Landlock(#[from] crate::landlock::LandlockError),
    #[error(transparent)]
    Privileges(#[from] crate::privileges::PrivilegeError),
    #[error(transparent)]
    Seccomp(#[from] luminaguard_seccomp::SeccompError),
}

fn step<T, E: std::fmt::Display>(what: impl Into<String>, r: Result<T, E>) -> Result<T, InitError> {
    r.map_err(|e| InitError::Step {
        step: what.into(),
        reason: e.to_string(),
    })
}

/// Host directories shared read-only. Symlinks (merged-/usr hosts) are recreated as symlinks.
const SYSTEM_DIRS: [&str; 7] = ["/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/etc"];
/// Files and directories under the system directories that a sandbox must not read (the host
/// refuses a read-only mount that is, lies inside or contains one of these, too).
pub const MASKED_FILES: [&str; 4] = [
    "/etc/shadow",
    "/etc/gshadow",
    "/etc/sudoers",
    "/etc/security/opasswd",
];
pub const MASKED_DIRS: [&str; 3] = ["/etc/ssh", "/etc/sudoers.d", "/etc/ssl/private"];
const PROC_MASKED_FILES: [&str; 6] = [
    "/proc/kcore",
    "/proc/keys",
    "/proc/sysrq-trigger",
    "/proc/timer_list",
    "/proc/kallsyms",
    "/proc/latency_stats",
];
const PROC_MASKED_DIRS: [&str; 3] = ["/proc/acpi", "/proc/scsi", "/proc/fs"];
const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];
/// Where the scratch tmpfs is mounted while the root is built; gone before anything runs.
const SCRATCH: &str = ".scratch";

const RO: MsFlags = MsFlags::MS_RDONLY
    .union(MsFlags::MS_NOSUID)
    .union(MsFlags::MS_NODEV);
const NONE: Option<&str> = None;

fn mount_tmpfs(target: &Path, size: u64, mode: &str, flags: MsFlags) -> Result<(), InitError> {
    let data = format!("size={size},mode={mode}");
    step(
        format!("mount tmpfs on {}", target.display()),
        mount(
            Some("tmpfs"),
            target,
            Some("tmpfs"),
            flags,
            Some(data.as_str()),
        ),
    )
}

/// Bind `src` on `dst` read-only (a bind ignores MS_RDONLY until remounted). Recursive: every
/// mount of the tree is made read-only, not only its top one (a remount changes one mount).
fn bind_ro(src: &Path, dst: &Path, recursive: bool) -> Result<(), InitError> {
    let what = format!("bind {} read-only", src.display());
    let rec = if recursive {
        MsFlags::MS_REC
    } else {
        MsFlags::empty()
    };
    step(
        &what,
        mount(Some(src), dst, NONE, MsFlags::MS_BIND | rec, NONE),
    )?;
    if recursive {
        return step(&what, crate::idmap::read_only_tree(dst));
    }
    step(
        &what,
        mount(
            NONE,
            dst,
            NONE,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | RO,
            NONE,
        ),
    )
}

/// Shows the host path `m.host` read-only at `m.at` in the new root: opened with no link
/// anywhere on the way (the host resolved and checked it: a link now is a swap), its mount
/// point made on the root's tmpfs (a directory, or an empty file for a file), then bound from
/// that very descriptor, recursively and read-only ([`bind_ro`]).
fn place_mount(root: &Path, m: &luminaguard_core::ReadOnlyMount) -> Result<(), InitError> {
    let shown = format!("{} at {}", m.host.display(), m.at.display());
    let how = nix::fcntl::OpenHow::new()
        .flags(nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC)
        .resolve(nix::fcntl::ResolveFlag::RESOLVE_NO_SYMLINKS);
    let src = step(
        format!("open mount {shown}"),
        nix::fcntl::openat2(nix::fcntl::AT_FDCWD, m.host.as_path(), how),
    )?;
    let stat = step(format!("stat mount {shown}"), nix::sys::stat::fstat(&src))?;
    let kind =
        nix::sys::stat::SFlag::from_bits_truncate(stat.st_mode) & nix::sys::stat::SFlag::S_IFMT;
    let Ok(rel) = m.at.strip_prefix("/") else {
        return Err(InitError::Step {
            step: format!("place mount {shown}"),
            reason: "the sandbox path is not absolute".into(),
        });
    };
    let target = root.join(rel);
    if kind == nix::sys::stat::SFlag::S_IFDIR {
        mkdirs(&target)?;
    } else if kind == nix::sys::stat::SFlag::S_IFREG {
        if let Some(parent) = target.parent() {
            mkdirs(parent)?;
        }
        touch(&target)?;
    } else {
        return Err(InitError::Step {
            step: format!("place mount {shown}"),
            reason: "neither a directory nor a regular file".into(),
        });
    }
    let from = PathBuf::from(format!("/proc/self/fd/{}", src.as_raw_fd()));
    step(
        format!("mount {shown}"),
        mount(
            Some(from.as_path()),
            &target,
            NONE,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            NONE,
        ),
    )?;
    step(
        format!("make mount {shown} read-only"),
        crate::idmap::read_only_tree(&target),
    )
}

fn mkdirs(p: &Path) -> Result<(), InitError> {
    step(format!("mkdir {}", p.display()), fs::create_dir_all(p))
}

fn touch(p: &Path) -> Result<(), InitError> {
    step(
        format!("create {}", p.display()),
        fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(p)
            .map(drop),
    )
}

/// Hides files and directories (those that exist) by mounting empty things over them.
fn mask(root: &Path, files: &[&str], dirs: &[&str]) -> Result<(), InitError> {
    for f in files {
        let target = root.join(f.trim_start_matches('/'));
        if target.is_file() {
            bind_ro(Path::new("/dev/null"), &target, false)?;
        }
    }
    for d in dirs {
        let target = root.join(d.trim_start_matches('/'));
        if target.is_dir() {
            mount_tmpfs(&target, 4096, "0555", RO)?;
        }
    }
    Ok(())
}

/// Binds `src` read-only where the sandbox's `/etc/resolv.conf` leads. `/etc` is the host's,
/// read-only, and its `resolv.conf` may be a symlink (systemd-resolved's points into `/run`):
/// then the link's target, made inside the new root, is what gets the file — on the root's
/// tmpfs when the target lies outside the bound system directories.
fn place_resolv_conf(root: &Path, src: &Path) -> Result<(), InitError> {
    let link = root.join("etc/resolv.conf");
    let target = match fs::symlink_metadata(&link) {
        Ok(m) if m.file_type().is_symlink() => {
            let to = step("read link /etc/resolv.conf", fs::read_link(&link))?;
            let inside = match to.strip_prefix("/") {
                Ok(rel) => root.join(rel),
                Err(_) => root.join("etc").join(&to),
            };
            if fs::symlink_metadata(&inside).is_ok_and(|m| m.file_type().is_symlink()) {
                return Err(InitError::Step {
                    step: "place /etc/resolv.conf".into(),
                    reason: format!(
                        "the host's /etc/resolv.conf is a chain of symlinks ({} → {});                          only one level is followed",
                        link.display(),
                        to.display()
                    ),
                });
            }
            if let Some(parent) = inside.parent() {
                mkdirs(parent)?;
            }
            inside
        }
        _ => link,
    };
    if !target.exists() {
        touch(&target)?;
    }
    bind_ro(src, &target, false)
}

fn build_root(cfg: &InitConfig) -> Result<(), InitError> {
    let root = &cfg.staging_root;
    step(
        "make mounts private",
        mount(NONE, "/", NONE, MsFlags::MS_REC | MsFlags::MS_PRIVATE, NONE),
    )?;
    mount_tmpfs(
        root,
        16 << 20,
        "0755",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
    )?;

    for dir in SYSTEM_DIRS {
        let host = Path::new(dir);
        let target = root.join(dir.trim_start_matches('/'));
        match fs::symlink_metadata(host) {
            Ok(m) if m.file_type().is_symlink() => {
                let link = step(format!("read link {dir}"), fs::read_link(host))?;
                step(format!("symlink {dir}"), symlink(link, &target))?;
            }
            Ok(m) if m.is_dir() => {
                mkdirs(&target)?;
                bind_ro(host, &target, true)?;
            }
            _ => {}
        }
    }
    mask(root, &MASKED_FILES, &MASKED_DIRS)?;
    if let Some(src) = &cfg.resolv_conf {
        place_resolv_conf(root, src)?;
    }

    let proc_dir = root.join("proc");
    mkdirs(&proc_dir)?;
    let proc_flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    step(
        "mount /proc",
        mount(Some("proc"), &proc_dir, Some("proc"), proc_flags, NONE),
    )?;
    mask(root, &PROC_MASKED_FILES, &PROC_MASKED_DIRS)?;
    bind_ro(&proc_dir.join("sys"), &proc_dir.join("sys"), false)?;

    let dev = root.join("dev");
    mkdirs(&dev)?;
    mount_tmpfs(
        &dev,
        1 << 20,
        "0755",
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
    )?;
    for name in DEVICES {
        let (host, target) = (Path::new("/dev").join(name), dev.join(name));
        if host.exists() {
            touch(&target)?;
            step(
                format!("bind /dev/{name}"),
                mount(Some(&host), &target, NONE, MsFlags::MS_BIND, NONE),
            )?;
        }
    }
    mkdirs(&dev.join("pts"))?;
    step(
        "mount /dev/pts",
        mount(
            Some("devpts"),
            &dev.join("pts"),
            Some("devpts"),
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            Some("newinstance,ptmxmode=0666,mode=0620"),
        ),
    )?;
    step("link /dev/ptmx", symlink("pts/ptmx", dev.join("ptmx")))?;
    for (name, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        step(format!("link /dev/{name}"), symlink(target, dev.join(name)))?;
    }
    // One scratch tmpfs behind /tmp, /dev/shm and a private workspace: one size cap for all
    // three, which the host sets to fit inside the memory limit with room left for the agent.
    let scratch = root.join(SCRATCH);
    mkdirs(&scratch)?;
    mount_tmpfs(
        &scratch,
        cfg.scratch_size,
        "0755",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
    )?;
    let ws = root.join("workspace");
    mkdirs(&ws)?;
    let mut shared = vec![("tmp", root.join("tmp")), ("shm", dev.join("shm"))];
    if cfg.workspace == WorkspaceSource::Scratch {
        shared.push(("workspace", ws.clone()));
    }
    for (name, target) in &shared {
        let dir = scratch.join(name);
        mkdirs(&dir)?;
        let mode = if *name == "workspace" { 0o777 } else { 0o1777 };
        step(
            format!("set the mode of scratch {name}"),
            fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(mode)),
        )?;
        mkdirs(target)?;
        step(
            format!("bind scratch {name} on {}", target.display()),
            mount(
                Some(dir.as_path()),
                target,
                NONE,
                MsFlags::MS_BIND | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                NONE,
            ),
        )?;
    }
    match &cfg.workspace {
        WorkspaceSource::Scratch => {}
        WorkspaceSource::Bind(host) => {
            // Opened with no link anywhere on the path (the host checked its resolved form,
            // which has none: a link now is a swap), and bound from that very descriptor.
            let how = nix::fcntl::OpenHow::new()
                .flags(
                    nix::fcntl::OFlag::O_PATH
                        | nix::fcntl::OFlag::O_DIRECTORY
                        | nix::fcntl::OFlag::O_CLOEXEC,
                )
                .resolve(nix::fcntl::ResolveFlag::RESOLVE_NO_SYMLINKS);
            let dir = step(
                format!("open workspace {}", host.display()),
                nix::fcntl::openat2(nix::fcntl::AT_FDCWD, host.as_path(), how),
            )?;
            step(
                format!("bind workspace {}", host.display()),
                mount(
                    Some(Path::new(&format!(
                        "/proc/self/fd/{}",
                        std::os::fd::AsRawFd::as_raw_fd(&dir)
                    ))),
                    &ws,
                    NONE,
                    MsFlags::MS_BIND | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                    NONE,
                ),
            )?
        }
        WorkspaceSource::Mount => step(
            "move the workspace mount into place",
            crate::idmap::move_into_place(crate::fds::WORKSPACE_FD, &ws),
        )?,
    }
    if let Some(layer) = &cfg.review {
        overlay_workspace(&ws, layer)?;
    }
    for m in &cfg.mounts {
        place_mount(root, m)?;
    }
    for d in ["root", "home", "run", "var/tmp"] {
        mkdirs(&root.join(d))?;
    }
    Ok(())
}

/// Covers the workspace mount at `ws` with an overlay: the workspace below, read-only through
/// the overlay; every write in `layer`'s `upper/`. Mounted in the sandbox's user namespace, so
/// the overlay keeps its own metadata in `user.overlay.*` xattrs (`userxattr`). A path with a
/// character the option string cannot carry is refused (the layer is the runtime directory's).
fn overlay_workspace(ws: &Path, layer: &Path) -> Result<(), InitError> {
    let upper = layer.join("upper");
    let work = layer.join("work");
    let mut opts = String::from("userxattr");
    for (key, path) in [("lowerdir", ws), ("upperdir", &upper), ("workdir", &work)] {
        let text = path.to_str().filter(|t| !t.contains([',', ':', '\\']));
        let Some(text) = text else {
            return Err(InitError::Step {
                step: "mount the workspace overlay".into(),
                reason: format!(
                    "{key} {} cannot be named in overlay options",
                    path.display()
                ),
            });
        };
        opts.push_str(&format!(",{key}={text}"));
    }
    step(
        "mount the workspace overlay",
        mount(
            Some("overlay"),
            ws,
            Some("overlay"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(opts.as_str()),
        ),
    )
}

fn switch_root(root: &Path) -> Result<(), InitError> {
    let old = root.join(".old-root");
    mkdirs(&old)?;
    step("pivot_root", nix::unistd::pivot_root(root, &old))?;
    step("chdir /", nix::unistd::chdir("/"))?;
    step(
        "detach the old root",
        umount2("/.old-root", MntFlags::MNT_DETACH),
    )?;
    step("remove /.old-root", fs::remove_dir("/.old-root"))?;
    // The scratch tmpfs lives on through its binds (/tmp, /dev/shm, a private workspace).
    let scratch = Path::new("/").join(SCRATCH);
    step(
        "detach the scratch mount point",
        umount2(&scratch, MntFlags::MNT_DETACH),
    )?;
    step("remove the scratch mount point", fs::remove_dir(&scratch))?;
    // The root itself becomes read-only too: only the mounts made writable above are.
    step(
        "remount / read-only",
        mount(
            NONE,
            "/",
            NONE,
            MsFlags::MS_REMOUNT | MsFlags::MS_BIND | RO,
            NONE,
        ),
    )
}

/// What the init keeps once it has entered the sandbox.
#[derive(Debug)]
pub struct Entered {
    /// The Landlock ruleset for every command the agent starts
    /// ([`crate::landlock::restrict_with`] between fork and exec); `None` only when Landlock
    /// is not required and this kernel has none.
    pub landlock: Option<OwnedFd>,
    /// The creator link (see [`Gate`]), past its start byte.
    pub gate: Gate,
}

/// Builds and enters the sandbox. On success the calling process is confined (but for
/// Landlock, which it applies to what it starts: see [`Entered::landlock`]); run the agent next.
///
/// Refuses to run unless it is PID 1 (of the fresh namespaces `launch` creates): run by hand in the
/// host's namespaces, its first step would change the host's mount propagation.
pub fn enter(cfg: &InitConfig) -> Result<Entered, InitError> {
    if std::process::id() != 1 {
        return Err(InitError::Step {
            step: "check the process is a sandbox's first process".into(),
            reason: format!(
                "running as pid {}, not 1: sandbox-init is started by `luminaguard run`, never by hand",
                std::process::id()
            ),
        });
    }
    // Before anything else: no process of the sandbox may trace this one, open its descriptors
    // (/proc/1/fd, pidfd_getfd) or read its memory.
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
        return step(
            "make the init not dumpable",
            Err(std::io::Error::last_os_error()),
        );
    }
    // Taken over at once, so that an early failure closes it (EOF: the launcher gives up).
    let gate = Gate::take();
    build_root(cfg)?;
    switch_root(&cfg.staging_root)?;
    step("sethostname", nix::unistd::sethostname(&cfg.hostname))?;
    step("bring lo up", loopback_up())?;
    let landlock = FsPolicy {
        read_only: vec![PathBuf::from("/")],
        read_write: ["/workspace", "/tmp", "/dev"].map(PathBuf::from).to_vec(),
        enforcement: if cfg.landlock_required {
            Enforcement::Required
        } else {
            Enforcement::BestEffort
        },
    }
    .prepare()?
    .into_fd()?;
    // Compiled before privileges go; installed last, after no_new_privs is set.
    let seccomp = luminaguard_seccomp::Profile::load(&cfg.seccomp_profile)?;
    drop_privileges(Rlimits {
        open_files: cfg.open_files,
        file_size: cfg.file_size,
    })?;
    // Denied calls become notifications; the listener goes to the host's keeper, which answers
    // them, and is closed here before anything untrusted runs.
    let listener = seccomp.apply_audited()?;
    hand_over_listener(listener)?;
    gate.wait_start()?;
    Ok(Entered { landlock, gate })
}

/// Sends the seccomp listener to the keeper on [`crate::fds::MONITOR_FD`] and closes both.
fn hand_over_listener(listener: Option<OwnedFd>) -> Result<(), InitError> {
    // SAFETY: the launcher placed the keeper's socket at this fd for us alone; we take it over.
    let monitor = unsafe { OwnedFd::from_raw_fd(crate::fds::MONITOR_FD) };
    let Some(listener) = listener else {
        return Ok(());
    };
    let fds = [listener.as_raw_fd()];
    let cmsg = [nix::sys::socket::ControlMessage::ScmRights(&fds)];
    let iov = [std::io::IoSlice::new(b"L")];
    step(
        "hand the seccomp listener to the keeper",
        nix::sys::socket::sendmsg::<()>(
            monitor.as_raw_fd(),
            &iov,
            &cmsg,
            nix::sys::socket::MsgFlags::empty(),
            None,
        ),
    )?;
    Ok(())
}

/// The start gate, which is also the creator link: the launcher writes [`START`] once the init
/// is in its cgroup (nothing is served or run before), and — when the sandbox is to outlive its
/// creator — [`HANDED_OVER`] once the creator has recorded it as complete. End of file before
/// that means the creator died mid-create (or, for a sandbox that lives as long as its creator,
/// that the creator is gone): the sandbox must stop.
#[derive(Debug)]
pub struct Gate(OwnedFd);

/// The launcher's first byte on the gate: start.
pub const START: u8 = b'S';
/// The creator's last byte on the gate: the sandbox is handed over, it may outlive its creator
/// (`luminaguard_backend::Sandbox::hand_over`).
pub const HANDED_OVER: u8 = luminaguard_core::runtime::HANDED_OVER;

impl Gate {
    fn take() -> Self {
        // SAFETY: the launcher placed the gate's read end at this fd for us alone.
        Self(unsafe { OwnedFd::from_raw_fd(crate::fds::START_GATE_FD) })
    }

    fn read_byte(&self) -> nix::Result<Option<u8>> {
        let mut byte = [0u8; 1];
        loop {
            match nix::unistd::read(&self.0, &mut byte) {
                Ok(1) => return Ok(Some(byte[0])),
                Ok(_) => return Ok(None),
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Waits until the launcher has put this process into its cgroup.
    pub fn wait_start(&self) -> Result<(), InitError> {
        match self.read_byte() {
            Ok(Some(START)) => Ok(()),
            Ok(_) => Err(InitError::Step {
                step: "wait for the cgroup".into(),
                reason: "the launcher closed the start gate".into(),
            }),
            Err(e) => step("wait for the cgroup", Err(e)),
        }
    }

    /// Blocks until the creator hands the sandbox over (`true`) or is gone without doing so
    /// (`false`). Run it on a thread of its own.
    pub fn wait_handover(self) -> bool {
        matches!(self.read_byte(), Ok(Some(HANDED_OVER)))
    }
}

/// `argv` for the init: the agent binary, its `sandbox-init` subcommand and the config as JSON.
pub fn init_argv(agent: &Path, cfg: &InitConfig) -> Result<Vec<CString>, InitError> {
    let json = step("encode init config", serde_json::to_string(cfg))?;
    [
        agent.as_os_str().as_encoded_bytes().to_vec(),
        b"sandbox-init".to_vec(),
        json.into_bytes(),
    ]
    .into_iter()
    .map(|a| step("build init argv", CString::new(a)))
    .collect()
}

/// Sets `IFF_UP` on the namespace's `lo` (a new network namespace starts with it down; one the
/// host prepared has it up already, and the init has no right to change it).
fn loopback_up() -> std::io::Result<()> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    // SAFETY: socket() returns a new fd or -1.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh fd nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain data; zeroed is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the valid, exclusively borrowed `req`.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &raw mut req) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if req.ifr_ifru.ifru_flags & libc::IFF_UP as libc::c_short != 0 {
            return Ok(());
        }
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &raw const req) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}
