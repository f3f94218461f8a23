//! Jailer mode: Firecracker started through Firecracker's `jailer` (see its `docs/jailer.md`).
//!
//! The jailer builds `<chroot-base>/<exec-file-name>/<id>/root`, copies the Firecracker binary
//! in, creates cgroups from `--cgroup <file>=<value>` under `<controller>/<parent>/<id>`, sets
//! resource limits, joins a network namespace, pivots into the chroot, `mknod`s `/dev/kvm` and
//! `/dev/net/tun`, optionally daemonizes (double fork, stdio to `/dev/null`) and clones into a
//! new PID namespace, drops to `--uid`/`--gid` and execs Firecracker. It writes the pid of the
//! process that runs Firecracker to `<root>/<exec-file-name>.pid` in every mode; that pid, with
//! a pidfd opened on it, is how the VMM is supervised when the jailer is not its parent.
//!
//! What this module owns: the argv, the chroot's layout and the files placed in it (hard links,
//! or copies across file systems), the cgroup keys for the host's cgroup version, the pid file,
//! and removing all of it.

use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use luminaguard_cgroup::Limits;

use crate::launch::{RunAs, VmId};

/// `--parent-cgroup`: the jailer's cgroups go to `<controller mount>/luminaguard-fc/<id>`.
pub const PARENT_CGROUP: &str = "luminaguard-fc";
/// The chroot base inside the sandbox directory (`--chroot-base-dir`).
pub const CHROOT_BASE: &str = "jail";
/// The period CPU quotas are given in, microseconds.
const CPU_PERIOD_US: u64 = 100_000;

/// Why the jail could not be prepared, started or removed.
#[derive(Debug, thiserror::Error)]
pub enum JailError {
    #[error("cannot {what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the firecracker binary {} has no usable file name", .0.display())]
    ExecName(PathBuf),
    #[error("the jailer needs an unprivileged uid and gid to run firecracker as (run as root)")]
    NoIdentity,
    #[error("a file placed in the chroot must be a plain name, not {0:?}")]
    BadName(String),
    #[error(
        "the jailer did not write {} within {after:?}",
        pid_file.display()
    )]
    NoPidFile { pid_file: PathBuf, after: Duration },
    #[error("the jailer's pid file {} holds {content:?}, not a pid", pid_file.display())]
    BadPidFile { pid_file: PathBuf, content: String },
    #[error("pid {pid} from {} is not firecracker {id} (its command line is {cmdline:?})", pid_file.display())]
    WrongProcess {
        pid: u32,
        pid_file: PathBuf,
        id: String,
        cmdline: String,
    },
    #[error("cannot remove the cgroups {dirs:?}: {reason}")]
    Cgroup { dirs: Vec<PathBuf>, reason: String },
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> JailError + 'a {
    move |source| JailError::Io {
        what,
        path: path.to_owned(),
        source,
    }
}

/// `--cgroup-version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupVersion {
    V1,
    V2,
}

impl CgroupVersion {
    pub fn as_arg(self) -> &'static str {
        match self {
            Self::V1 => "1",
            Self::V2 => "2",
        }
    }

    pub fn number(self) -> u8 {
        match self {
            Self::V1 => 1,
            Self::V2 => 2,
        }
    }

    /// What the host has: v2 where its mount offers memory, pids and cpu, else v1 (the same
    /// decision as `luminaguard_cgroup::Hierarchy::detect`). Blocking.
    pub fn detect() -> Result<Self, luminaguard_cgroup::CgroupError> {
        Ok(match luminaguard_cgroup::Hierarchy::detect()?.version() {
            2 => Self::V2,
            _ => Self::V1,
        })
    }
}

/// One `--cgroup <file>=<value>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupKey {
    pub file: String,
    pub value: String,
}

impl CgroupKey {
    fn new(file: &str, value: impl std::fmt::Display) -> Self {
        Self {
            file: file.to_owned(),
            value: value.to_string(),
        }
    }

    /// The controller the file belongs to (`memory` of `memory.max`).
    pub fn controller(&self) -> &str {
        self.file.split('.').next().unwrap_or(&self.file)
    }
}

/// The jailer's cgroups for a VM: version and keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JailCgroups {
    pub version: CgroupVersion,
    pub keys: Vec<CgroupKey>,
}

impl JailCgroups {
    /// Keys for `limits` in `version`'s file names: memory, PIDs and (if any) a CPU quota.
    pub fn for_limits(version: CgroupVersion, limits: &Limits) -> Self {
        let mut keys = Vec::new();
        match version {
            CgroupVersion::V2 => {
                keys.push(CgroupKey::new("memory.max", limits.memory_bytes));
                keys.push(CgroupKey::new("pids.max", limits.pids));
                if let Some(cpus) = limits.cpus {
                    keys.push(CgroupKey::new(
                        "cpu.max",
                        format!("{} {CPU_PERIOD_US}", u64::from(cpus) * CPU_PERIOD_US),
                    ));
                }
            }
            CgroupVersion::V1 => {
                keys.push(CgroupKey::new("memory.limit_in_bytes", limits.memory_bytes));
                keys.push(CgroupKey::new("pids.max", limits.pids));
                if let Some(cpus) = limits.cpus {
                    keys.push(CgroupKey::new("cpu.cfs_period_us", CPU_PERIOD_US));
                    keys.push(CgroupKey::new(
                        "cpu.cfs_quota_us",
                        u64::from(cpus) * CPU_PERIOD_US,
                    ));
                }
            }
        }
        Self { version, keys }
    }

    /// The directories the jailer creates for VM `id`, given `/proc/mounts`: on v2
    /// `<cgroup2 mount>/<parent>/<id>`; on v1 `<controller mount>/<parent>/<id>` per controller
    /// named by a key (controllers sharing a mount share a directory).
    pub fn dirs(&self, proc_mounts: &str, id: &VmId) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = Vec::new();
        let mut add = |mount: &Path| {
            let d = mount.join(PARENT_CGROUP).join(id.as_str());
            if !dirs.contains(&d) {
                dirs.push(d);
            }
        };
        for line in proc_mounts.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 4 {
                continue;
            }
            let (mount, fstype, opts) = (Path::new(f[1]), f[2], f[3]);
            match (self.version, fstype) {
                (CgroupVersion::V2, "cgroup2") => {
                    add(mount);
                    break;
                }
                (CgroupVersion::V1, "cgroup") => {
                    let opts: Vec<&str> = opts.split(',').collect();
                    if self.keys.iter().any(|k| opts.contains(&k.controller())) {
                        add(mount);
                    }
                }
                _ => {}
            }
        }
        dirs
    }
}

/// `--resource-limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceLimit {
    /// `fsize=<bytes>`: largest file the VMM may create.
    FileSize(u64),
    /// `no-file=<n>`: one more than the highest fd it may open.
    NoFile(u64),
}

impl ResourceLimit {
    fn arg(self) -> String {
        match self {
            Self::FileSize(n) => format!("fsize={n}"),
            Self::NoFile(n) => format!("no-file={n}"),
        }
    }
}

/// How to run the jailer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JailerConfig {
    /// The `jailer` binary (the same release as the `firecracker` binary).
    pub jailer: PathBuf,
    /// Cgroups the jailer creates and fills; `None`: no `--cgroup` (and no cgroup at all).
    pub cgroups: Option<JailCgroups>,
    /// `--new-pid-ns`: Firecracker is PID 1 of its own PID namespace.
    pub new_pid_ns: bool,
    /// `--daemonize`: the jailer detaches (its stdio, and so the guest console, go to
    /// `/dev/null`).
    pub daemonize: bool,
    /// `--netns`: a network namespace to join (e.g. `/var/run/netns/<name>`).
    pub netns: Option<PathBuf>,
    pub resource_limits: Vec<ResourceLimit>,
    /// How long the jailer may take to write its pid file.
    pub pid_file_timeout: Duration,
    /// `--chroot-base-dir` shared by many VMs (e.g. `<runtime root>/jail`, which keeps the
    /// socket paths in the chroot short); `None`: `<sandbox dir>/jail`, the VM's own. Under a
    /// shared base only `<base>/<exec-file-name>/<id>` is this VM's (and removed with it).
    pub chroot_base: Option<PathBuf>,
}

impl JailerConfig {
    /// Defaults: a new PID namespace, no daemonizing, `no-file=2048` (the jailer's own default
    /// made explicit), a 5 s deadline for the pid file.
    pub fn new(jailer: PathBuf) -> Self {
        Self {
            jailer,
            cgroups: None,
            new_pid_ns: true,
            daemonize: false,
            netns: None,
            resource_limits: vec![ResourceLimit::NoFile(2048)],
            pid_file_timeout: Duration::from_secs(5),
            chroot_base: None,
        }
    }
}

/// The names files get inside the chroot (and so in the API).
pub mod names {
    pub const KERNEL: &str = "vmlinux";
    pub const INITRD: &str = "initrd.img";
    pub const ROOTFS: &str = "rootfs.img";
    pub const SECCOMP: &str = "seccomp.bpf";
}

/// One VM's jail: where things are on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jail {
    /// `--chroot-base-dir`: `<sandbox dir>/jail`, or a base shared by many VMs.
    pub base: PathBuf,
    /// What is this VM's alone, and removing it removes everything of the jail but its
    /// cgroups: `base` when it is the sandbox's own, `<base>/<exec-file-name>/<id>` under a
    /// shared base.
    pub own: PathBuf,
    /// `<base>/<exec-file-name>/<id>/root`: `/` for the jailed Firecracker.
    pub root: PathBuf,
    /// The file name of the Firecracker binary (after resolving links), as the jailer sees it.
    pub exec_name: String,
    /// `<root>/<exec-file-name>.pid`.
    pub pid_file: PathBuf,
    /// The cgroup directories the jailer creates (removed with the jail).
    pub cgroup_dirs: Vec<PathBuf>,
    pub cgroup_version: Option<CgroupVersion>,
}

impl Jail {
    /// The jail of VM `id` in sandbox directory `dir` (or under the shared `chroot_base`).
    /// `firecracker` must already be canonical (the jailer names the chroot after the resolved
    /// binary's file name).
    pub fn plan(
        dir: &Path,
        chroot_base: Option<&Path>,
        firecracker: &Path,
        id: &VmId,
        cgroups: Option<&JailCgroups>,
        proc_mounts: &str,
    ) -> Result<Self, JailError> {
        let exec_name = firecracker
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| !n.is_empty())
            .ok_or_else(|| JailError::ExecName(firecracker.to_owned()))?
            .to_owned();
        let base = chroot_base.map_or_else(|| dir.join(CHROOT_BASE), Path::to_owned);
        let vm = base.join(&exec_name).join(id.as_str());
        let root = vm.join("root");
        Ok(Self {
            pid_file: root.join(format!("{exec_name}.pid")),
            own: if chroot_base.is_some() {
                vm
            } else {
                base.clone()
            },
            base,
            root,
            exec_name,
            cgroup_dirs: cgroups.map(|c| c.dirs(proc_mounts, id)).unwrap_or_default(),
            cgroup_version: cgroups.map(|c| c.version),
        })
    }

    /// The host path of `name` inside the chroot; `name` must be one plain component, so
    /// nothing given here can leave the chroot.
    pub fn host_path(&self, name: &str) -> Result<PathBuf, JailError> {
        let mut parts = Path::new(name).components();
        match (parts.next(), parts.next()) {
            (Some(Component::Normal(_)), None) => Ok(self.root.join(name)),
            _ => Err(JailError::BadName(name.to_owned())),
        }
    }

    /// Creates the chroot directory (the jailer leaves an existing one as it is).
    pub async fn create(&self) -> Result<(), JailError> {
        tokio::fs::create_dir_all(&self.root)
            .await
            .map_err(io("create", &self.root))
    }

    /// Places `src` in the chroot as `name`: a hard link, or a copy where a link is impossible
    /// (another file system, or a link the kernel refuses). Given to `owner` if set (for a file
    /// the VMM writes). Returns the host path.
    pub async fn place(
        &self,
        src: &Path,
        name: &str,
        owner: Option<&RunAs>,
    ) -> Result<PathBuf, JailError> {
        let dst = self.host_path(name)?;
        place_file(src, &dst, owner).await?;
        Ok(dst)
    }

    /// Removes the chroot tree (what is this VM's alone: [`Jail::own`]) and the jailer's
    /// cgroups. The VMM must be gone.
    pub async fn remove(&self) -> Result<(), JailError> {
        let own = self.own.clone();
        match tokio::fs::remove_dir_all(&own).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("remove", &own)(e)),
        }
        if let (Some(version), false) = (self.cgroup_version, self.cgroup_dirs.is_empty()) {
            let dirs = self.cgroup_dirs.clone();
            let cg = luminaguard_cgroup::Cgroup::from_dirs(version.number(), dirs.clone());
            tokio::task::spawn_blocking(move || cg.remove())
                .await
                .map_err(|e| JailError::Cgroup {
                    dirs: dirs.clone(),
                    reason: e.to_string(),
                })?
                .map_err(|e| JailError::Cgroup {
                    dirs,
                    reason: e.to_string(),
                })?;
        }
        Ok(())
    }

    /// Waits for the jailer's pid file and reads the pid in it, polling (1 ms doubling to
    /// 20 ms) until `limit`; `jailer_failed` is polled in between and stops the wait with its
    /// error (the jailer exited non-zero before writing the file).
    pub async fn read_pid<E>(
        &self,
        limit: Duration,
        mut jailer_failed: impl FnMut() -> Option<E>,
    ) -> Result<Result<u32, JailError>, E> {
        let start = Instant::now();
        let mut pause = Duration::from_millis(1);
        loop {
            match tokio::fs::read_to_string(&self.pid_file).await {
                // Created and written in two steps: an empty file is not finished.
                Ok(text) if !text.trim().is_empty() => {
                    return Ok(text
                        .trim()
                        .parse::<u32>()
                        .map_err(|_| JailError::BadPidFile {
                            pid_file: self.pid_file.clone(),
                            content: text.clone(),
                        }));
                }
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Ok(Err(io("read", &self.pid_file)(e))),
            }
            if let Some(e) = jailer_failed() {
                return Err(e);
            }
            if start.elapsed() >= limit {
                return Ok(Err(JailError::NoPidFile {
                    pid_file: self.pid_file.clone(),
                    after: limit,
                }));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }

    /// Checks that `pid` runs as VM `id` (`--id <id>` on its command line: the jailer's before
    /// it execs, Firecracker's after). Called after a pidfd is open on `pid`, so the process
    /// checked is the one the pidfd holds.
    ///
    /// An empty command line is not an answer yet: a process in the middle of `execve` (the
    /// jailer's child becoming Firecracker) shows none for a moment; it is read again, for up
    /// to [`CMDLINE_SETTLE`].
    pub async fn check_process(&self, pid: u32, id: &VmId) -> Result<(), JailError> {
        let start = Instant::now();
        let mut cmdline = Vec::new();
        while start.elapsed() < CMDLINE_SETTLE {
            match tokio::fs::read(format!("/proc/{pid}/cmdline")).await {
                Ok(c) if !c.is_empty() => {
                    cmdline = c;
                    break;
                }
                // Gone: nothing to wait for.
                Err(_) => break,
                Ok(_) => tokio::time::sleep(Duration::from_millis(2)).await,
            }
        }
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let named = args
            .windows(2)
            .any(|w| w[0] == b"--id" && w[1] == id.as_str().as_bytes());
        if named {
            Ok(())
        } else {
            Err(JailError::WrongProcess {
                pid,
                pid_file: self.pid_file.clone(),
                id: id.to_string(),
                cmdline: String::from_utf8_lossy(&cmdline).replace('\0', " "),
            })
        }
    }
}

/// How long [`Jail::check_process`] waits for a process's command line to appear.
pub const CMDLINE_SETTLE: Duration = Duration::from_millis(500);

/// Hard-links `src` to `dst`, or copies it when linking is impossible; gives it to `owner`.
pub async fn place_file(src: &Path, dst: &Path, owner: Option<&RunAs>) -> Result<(), JailError> {
    match tokio::fs::hard_link(src, dst).await {
        Ok(()) => {}
        // EXDEV: another file system; EPERM: fs.protected_hardlinks refused a file we do not
        // own. Both can be copied.
        Err(e) if matches!(e.raw_os_error(), Some(libc::EXDEV | libc::EPERM)) => {
            tracing::debug!(src = %src.display(), error = %e, "cannot hard-link; copying");
            tokio::fs::copy(src, dst).await.map_err(io("copy", src))?;
        }
        Err(e) => return Err(io("hard-link", src)(e)),
    }
    if let Some(who) = owner {
        std::os::unix::fs::chown(dst, Some(who.uid), Some(who.gid)).map_err(io("chown", dst))?;
    }
    Ok(())
}

/// The jailer's command line. `firecracker_args` go after `--` (the jailer passes `--id` to
/// Firecracker itself).
pub fn argv(
    cfg: &JailerConfig,
    firecracker: &Path,
    id: &VmId,
    who: &RunAs,
    jail: &Jail,
    firecracker_args: Vec<OsString>,
) -> Vec<OsString> {
    let mut a: Vec<OsString> = vec![
        "--id".into(),
        id.as_str().into(),
        "--exec-file".into(),
        firecracker.into(),
        "--uid".into(),
        who.uid.to_string().into(),
        "--gid".into(),
        who.gid.to_string().into(),
        "--chroot-base-dir".into(),
        jail.base.clone().into(),
    ];
    if let Some(cg) = &cfg.cgroups {
        a.push("--cgroup-version".into());
        a.push(cg.version.as_arg().into());
        a.push("--parent-cgroup".into());
        a.push(PARENT_CGROUP.into());
        for k in &cg.keys {
            a.push("--cgroup".into());
            a.push(format!("{}={}", k.file, k.value).into());
        }
    }
    if cfg.new_pid_ns {
        a.push("--new-pid-ns".into());
    }
    if let Some(netns) = &cfg.netns {
        a.push("--netns".into());
        a.push(netns.into());
    }
    for l in &cfg.resource_limits {
        a.push("--resource-limit".into());
        a.push(l.arg().into());
    }
    if cfg.daemonize {
        a.push("--daemonize".into());
    }
    a.push("--".into());
    a.extend(firecracker_args);
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTS: &str = "\
sysfs /sys sysfs rw 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,nosuid,nodev,noexec,relatime,nsdelegate 0 0
cgroup /sys/fs/cgroup/memory cgroup rw,nosuid,nodev,noexec,relatime,memory 0 0
cgroup /sys/fs/cgroup/pids cgroup rw,nosuid,nodev,noexec,relatime,pids 0 0
cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,nosuid,nodev,noexec,relatime,cpu,cpuacct 0 0
";

    fn limits() -> Limits {
        Limits {
            memory_bytes: 512 << 20,
            pids: 64,
            cpus: Some(2),
        }
    }

    #[test]
    fn cgroup_keys_follow_the_version() {
        let v2 = JailCgroups::for_limits(CgroupVersion::V2, &limits());
        let keys: Vec<String> = v2
            .keys
            .iter()
            .map(|k| format!("{}={}", k.file, k.value))
            .collect();
        assert_eq!(
            keys,
            [
                "memory.max=536870912",
                "pids.max=64",
                "cpu.max=200000 100000"
            ]
        );
        let v1 = JailCgroups::for_limits(CgroupVersion::V1, &limits());
        let keys: Vec<String> = v1
            .keys
            .iter()
            .map(|k| format!("{}={}", k.file, k.value))
            .collect();
        assert_eq!(
            keys,
            [
                "memory.limit_in_bytes=536870912",
                "pids.max=64",
                "cpu.cfs_period_us=100000",
                "cpu.cfs_quota_us=200000"
            ]
        );
    }

    #[test]
    fn cgroup_dirs_are_where_the_jailer_creates_them() {
        let id = VmId::new("lg-1").unwrap();
        let v1 = JailCgroups::for_limits(CgroupVersion::V1, &limits());
        assert_eq!(
            v1.dirs(MOUNTS, &id),
            [
                PathBuf::from("/sys/fs/cgroup/memory/luminaguard-fc/lg-1"),
                PathBuf::from("/sys/fs/cgroup/pids/luminaguard-fc/lg-1"),
                PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/luminaguard-fc/lg-1"),
            ]
        );
        let v2 = JailCgroups::for_limits(CgroupVersion::V2, &limits());
        assert_eq!(
            v2.dirs(MOUNTS, &id),
            [PathBuf::from("/sys/fs/cgroup/unified/luminaguard-fc/lg-1")]
        );
    }

    #[test]
    fn the_chroot_is_named_like_the_jailer_names_it_and_names_cannot_escape() {
        let id = VmId::new("lg-1").unwrap();
        let jail = Jail::plan(
            Path::new("/run/lg/sb"),
            None,
            Path::new("/opt/fc/firecracker-v1.16.1"),
            &id,
            None,
            MOUNTS,
        )
        .unwrap();
        assert_eq!(
            jail.root,
            Path::new("/run/lg/sb/jail/firecracker-v1.16.1/lg-1/root")
        );
        assert_eq!(
            jail.pid_file,
            Path::new("/run/lg/sb/jail/firecracker-v1.16.1/lg-1/root/firecracker-v1.16.1.pid")
        );
        assert!(jail.cgroup_dirs.is_empty());
        assert_eq!(
            jail.own,
            Path::new("/run/lg/sb/jail"),
            "all of it is this VM's"
        );
        // Under a shared base, only this VM's part of it.
        let shared = Jail::plan(
            Path::new("/run/lg/sb"),
            Some(Path::new("/run/lg/jail")),
            Path::new("/opt/fc/firecracker-v1.16.1"),
            &id,
            None,
            MOUNTS,
        )
        .unwrap();
        assert_eq!(shared.base, Path::new("/run/lg/jail"));
        assert_eq!(
            shared.root,
            Path::new("/run/lg/jail/firecracker-v1.16.1/lg-1/root")
        );
        assert_eq!(
            shared.own,
            Path::new("/run/lg/jail/firecracker-v1.16.1/lg-1")
        );
        assert_eq!(
            jail.host_path("vmlinux").unwrap(),
            jail.root.join("vmlinux")
        );
        for bad in ["", "../x", "/etc/passwd", "a/b", ".", ".."] {
            assert!(jail.host_path(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn argv_has_every_option_and_firecrackers_after_the_separator() {
        let id = VmId::new("lg-1").unwrap();
        let jail = Jail::plan(
            Path::new("/sb"),
            None,
            Path::new("/bin/firecracker"),
            &id,
            None,
            "",
        )
        .unwrap();
        let mut cfg = JailerConfig::new("/bin/jailer".into());
        cfg.cgroups = Some(JailCgroups::for_limits(CgroupVersion::V2, &limits()));
        cfg.daemonize = true;
        cfg.netns = Some("/var/run/netns/lg".into());
        cfg.resource_limits.push(ResourceLimit::FileSize(1 << 30));
        let who = RunAs {
            uid: 1000,
            gid: 1001,
            supplementary: vec![],
        };
        let a = argv(
            &cfg,
            Path::new("/bin/firecracker"),
            &id,
            &who,
            &jail,
            vec!["--api-sock".into(), "/fc.sock".into()],
        );
        let a: Vec<String> = a.iter().map(|s| s.to_string_lossy().into_owned()).collect();
        assert_eq!(
            a,
            [
                "--id",
                "lg-1",
                "--exec-file",
                "/bin/firecracker",
                "--uid",
                "1000",
                "--gid",
                "1001",
                "--chroot-base-dir",
                "/sb/jail",
                "--cgroup-version",
                "2",
                "--parent-cgroup",
                "luminaguard-fc",
                "--cgroup",
                "memory.max=536870912",
                "--cgroup",
                "pids.max=64",
                "--cgroup",
                "cpu.max=200000 100000",
                "--new-pid-ns",
                "--netns",
                "/var/run/netns/lg",
                "--resource-limit",
                "no-file=2048",
                "--resource-limit",
                "fsize=1073741824",
                "--daemonize",
                "--",
                "--api-sock",
                "/fc.sock",
            ]
        );
    }
}
