//! Inside the sandbox: the first process of the new namespaces builds the sandbox's root, switches
//! to it, and locks itself down before it starts serving.
//!
//! Runs as PID 1 of fresh mount, PID, network, IPC, UTS and cgroup namespaces (see [`crate::launch`]),
//! single-threaded, in a freshly exec'd image — so it may allocate and open files freely. Order:
//!
//! 1. all mounts private, so nothing propagates back to the host;
//! 2. a tmpfs root; system directories bound read-only (`nosuid`, `nodev`); host secrets masked;
//! 3. a fresh `/proc` with its dangerous files masked and `/proc/sys` read-only; a minimal `/dev`;
//!    size-capped `/tmp` and `/dev/shm`; the workspace (a host directory, or a size-capped tmpfs);
//! 4. `pivot_root`, the old root detached, the new root remounted read-only;
//! 5. hostname; Landlock (read-only but for workspace, `/tmp`, `/dev`); privileges dropped; seccomp.
//!
//! Any failure aborts the sandbox with an error naming the step: it never serves half-isolated.

use std::ffi::CString;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use serde::{Deserialize, Serialize};

use crate::landlock::{Enforcement, FsPolicy};
use crate::privileges::{Rlimits, drop_privileges};

/// Everything the init needs, passed from the launcher as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitConfig {
    /// An empty host directory the new root is built on (inside the sandbox's mount namespace).
    pub staging_root: PathBuf,
    /// Host directory mounted read-write at `/workspace`; `None` gives a tmpfs of `workspace_size`.
    pub workspace: Option<PathBuf>,
    pub workspace_size: u64,
    pub tmp_size: u64,
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
/// Files and directories under the system directories that a sandbox must not read.
const MASKED_FILES: [&str; 4] = [
    "/etc/shadow",
    "/etc/gshadow",
    "/etc/sudoers",
    "/etc/security/opasswd",
];
const MASKED_DIRS: [&str; 3] = ["/etc/ssh", "/etc/sudoers.d", "/etc/ssl/private"];
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

/// Bind `src` on `dst` read-only (a bind ignores MS_RDONLY until remounted).
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
    mkdirs(&dev.join("shm"))?;
    mount_tmpfs(
        &dev.join("shm"),
        cfg.tmp_size,
        "1777",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
    )?;

    mkdirs(&root.join("tmp"))?;
    mount_tmpfs(
        &root.join("tmp"),
        cfg.tmp_size,
        "1777",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
    )?;
    let ws = root.join("workspace");
    mkdirs(&ws)?;
    match &cfg.workspace {
        Some(host) => step(
            format!("bind workspace {}", host.display()),
            mount(
                Some(host.as_path()),
                &ws,
                NONE,
                MsFlags::MS_BIND | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                NONE,
            ),
        )?,
        None => mount_tmpfs(
            &ws,
            cfg.workspace_size,
            "0777",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        )?,
    }
    for d in ["root", "home", "run", "var/tmp"] {
        mkdirs(&root.join(d))?;
    }
    Ok(())
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

/// Builds and enters the sandbox. On success the calling process is confined; run the agent next.
///
/// Refuses to run unless it is PID 1 (of the fresh namespaces `launch` creates): run by hand in the
/// host's namespaces, its first step would change the host's mount propagation.
pub fn enter(cfg: &InitConfig) -> Result<Option<std::os::fd::OwnedFd>, InitError> {
    if std::process::id() != 1 {
        return Err(InitError::Step {
            step: "check the process is a sandbox's first process".into(),
            reason: format!(
                "running as pid {}, not 1: sandbox-init is started by `luminaguard run`, never by hand",
                std::process::id()
            ),
        });
    }
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
    };
    let prepared = landlock.prepare()?;
    // Compiled before privileges go; installed last, after no_new_privs is set.
    let seccomp = luminaguard_seccomp::Profile::load(&cfg.seccomp_profile)?;
    prepared.restrict_self()?;
    drop_privileges(Rlimits {
        open_files: cfg.open_files,
        file_size: cfg.file_size,
    })?;
    // Denials are reported to a listener the caller must serve (see luminaguard_seccomp::audit).
    let listener = seccomp.apply_audited()?;
    pass_start_gate()?;
    Ok(listener)
}

/// Waits until the launcher has put this process into its cgroup (it writes one byte on
/// [`crate::launch::START_GATE_FD`]); nothing is served or run before. EOF means the launcher
/// gave up: the sandbox must not start.
pub fn pass_start_gate() -> Result<(), InitError> {
    use std::os::fd::FromRawFd;
    // SAFETY: the launcher placed the gate's read end at this fd for us alone; we take it over.
    let gate = unsafe { std::os::fd::OwnedFd::from_raw_fd(crate::launch::START_GATE_FD) };
    let mut byte = [0u8; 1];
    loop {
        match nix::unistd::read(&gate, &mut byte) {
            Ok(1) => return Ok(()),
            Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) => {
                return Err(InitError::Step {
                    step: "wait for the cgroup".into(),
                    reason: "the launcher closed the start gate".into(),
                });
            }
            Err(e) => return step("wait for the cgroup", Err(e)),
        }
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

/// Sets `IFF_UP` on the namespace's `lo` (a new network namespace starts with it down).
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
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &raw const req) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}
