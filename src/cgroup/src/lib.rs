//! cgroup limits for a sandbox: memory (no swap), PIDs and CPU — on cgroup v2 where its
//! controllers are available, else on the v1 `memory`, `pids` and `cpu` hierarchies.
//!
//! Where sandboxes' groups go: on v1, under the caller's *own* group in each hierarchy (so limits
//! nest inside whatever already confines the caller); on v2, under `<mount>/luminaguard`, because
//! v2 forbids enabling controllers below a group that holds processes (the caller's own group
//! does). Every file write is checked: a limit that cannot be set is an error, never a sandbox
//! without that limit.
//!
//! Blocking file I/O: call from a blocking context.

#![allow(clippy::disallowed_methods)] // blocking by design (see above)

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// CPU period for quotas, in microseconds.
const CPU_PERIOD_US: u64 = 100_000;
/// Name of the directory grouping LuminaGuard's sandboxes.
const PARENT: &str = "luminaguard";

/// Why a cgroup could not be found, set up or removed.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error(
        "no usable cgroup hierarchy: need cgroup v2 with memory, pids and cpu controllers, or cgroup v1 memory, pids and cpu hierarchies ({0})"
    )]
    Unavailable(String),
    #[error("cgroup: cannot {action} {path:?}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cgroup name {0:?} must be a single path component of [A-Za-z0-9_-]")]
    BadName(String),
    #[error("cgroup {path:?} still has processes after killing them")]
    Busy { path: PathBuf },
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> CgroupError + 'a {
    move |source| CgroupError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    fs::write(path, value).map_err(io("write", path))
}

/// Which hierarchy this host offers, with the directories sandboxes' groups are created in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hierarchy {
    /// `mount`: the cgroup2 mount point.
    V2 { mount: PathBuf },
    /// The caller's own group directory in each v1 hierarchy.
    V1 {
        memory: PathBuf,
        pids: PathBuf,
        cpu: PathBuf,
    },
}

/// Limits applied to a sandbox's group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub memory_bytes: u64,
    pub pids: u64,
    /// Whole CPUs of quota per period; `None` leaves CPU unlimited.
    pub cpus: Option<u32>,
}

impl Hierarchy {
    /// Reads `/proc/self/mountinfo` and `/proc/self/cgroup`.
    pub fn detect() -> Result<Self, CgroupError> {
        let mountinfo = fs::read_to_string("/proc/self/mountinfo")
            .map_err(io("read", Path::new("/proc/self/mountinfo")))?;
        let own = fs::read_to_string("/proc/self/cgroup")
            .map_err(io("read", Path::new("/proc/self/cgroup")))?;
        Self::from_proc(&mountinfo, &own, |p| fs::read_to_string(p).ok())
    }

    /// The decision, from the text of mountinfo and /proc/self/cgroup; `read` reads a file (for
    /// `cgroup.controllers`). Pure, so it is tested without a real hierarchy.
    pub fn from_proc(
        mountinfo: &str,
        own: &str,
        read: impl Fn(&Path) -> Option<String>,
    ) -> Result<Self, CgroupError> {
        let mut v2_mount = None;
        let mut v1: std::collections::HashMap<String, (PathBuf, String)> = Default::default();
        for line in mountinfo.lines() {
            // id parent major:minor root mount-point options [optional…] - fstype source super-options
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let l: Vec<&str> = left.split(' ').collect();
            let r: Vec<&str> = right.split(' ').collect();
            if l.len() < 5 || r.len() < 3 {
                continue;
            }
            let (root, mount) = (l[3].to_owned(), PathBuf::from(l[4]));
            match r[0] {
                "cgroup2" => v2_mount = v2_mount.or(Some(mount)),
                "cgroup" => {
                    for opt in r[2].split(',') {
                        if matches!(opt, "memory" | "pids" | "cpu") {
                            v1.insert(opt.to_owned(), (mount.clone(), root.clone()));
                        }
                    }
                }
                _ => {}
            }
        }
        if let Some(mount) = v2_mount.clone() {
            let controllers = read(&mount.join("cgroup.controllers")).unwrap_or_default();
            let have: Vec<&str> = controllers.split_whitespace().collect();
            if ["memory", "pids", "cpu"].iter().all(|c| have.contains(c)) {
                return Ok(Self::V2 { mount });
            }
        }
        // v1: our group in each hierarchy is mount point + (our path relative to the mount's root).
        let own_path = |controller: &str| -> Option<PathBuf> {
            let (mount, root) = v1.get(controller)?;
            let path = own.lines().find_map(|l| {
                let mut f = l.splitn(3, ':');
                let (_, ctrls, path) = (f.next()?, f.next()?, f.next()?);
                ctrls
                    .split(',')
                    .any(|c| c == controller)
                    .then(|| path.to_owned())
            })?;
            let rel = path
                .strip_prefix(root.as_str())
                .unwrap_or(&path)
                .trim_start_matches('/');
            Some(mount.join(rel))
        };
        match (own_path("memory"), own_path("pids"), own_path("cpu")) {
            (Some(memory), Some(pids), Some(cpu)) => Ok(Self::V1 { memory, pids, cpu }),
            _ => Err(CgroupError::Unavailable(format!(
                "cgroup2 {}; v1 controllers mounted: {:?}",
                if v2_mount.is_some() {
                    "lacks memory/pids/cpu"
                } else {
                    "not mounted"
                },
                v1.keys().collect::<Vec<_>>()
            ))),
        }
    }

    pub fn version(&self) -> u8 {
        match self {
            Self::V2 { .. } => 2,
            Self::V1 { .. } => 1,
        }
    }

    /// The group `name` would have, without creating anything — so its directories can be
    /// recorded before they exist, and a crash in between leaves nothing untracked.
    pub fn planned(&self, name: &str) -> Result<Cgroup, CgroupError> {
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(CgroupError::BadName(name.to_owned()));
        }
        Ok(match self {
            Self::V2 { mount } => Cgroup {
                version: 2,
                dirs: vec![mount.join(PARENT).join(name)],
            },
            Self::V1 { memory, pids, cpu } => Cgroup {
                version: 1,
                dirs: [memory, pids, cpu]
                    .iter()
                    .map(|d| d.join(PARENT).join(name))
                    .collect(),
            },
        })
    }

    /// Creates the group `name` with `limits`. On any error, what was created is removed.
    pub fn create(&self, name: &str, limits: Limits) -> Result<Cgroup, CgroupError> {
        let planned = self.planned(name)?;
        if let Self::V2 { mount } = self {
            let parent = mount.join(PARENT);
            write(&mount.join("cgroup.subtree_control"), "+memory +pids +cpu")?;
            fs::create_dir_all(&parent).map_err(io("create", &parent))?;
            write(&parent.join("cgroup.subtree_control"), "+memory +pids +cpu")?;
        }
        let cg = planned;
        for d in &cg.dirs {
            fs::create_dir_all(d).map_err(io("create", d))?;
        }
        if let Err(e) = cg.apply(limits) {
            let _ = cg.remove();
            return Err(e);
        }
        Ok(cg)
    }
}

/// One sandbox's group (one directory on v2; memory, pids, cpu directories on v1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroup {
    version: u8,
    dirs: Vec<PathBuf>,
}

impl Cgroup {
    /// Re-opens a group by its directories (for cleanup by a later process).
    pub fn from_dirs(version: u8, dirs: Vec<PathBuf>) -> Self {
        Self { version, dirs }
    }

    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    pub fn version(&self) -> u8 {
        self.version
    }

    fn memory_dir(&self) -> &Path {
        &self.dirs[0]
    }

    fn apply(&self, l: Limits) -> Result<(), CgroupError> {
        let quota = l.cpus.map(|c| u64::from(c) * CPU_PERIOD_US);
        if self.version == 2 {
            let d = &self.dirs[0];
            write(&d.join("memory.max"), &l.memory_bytes.to_string())?;
            if d.join("memory.swap.max").exists() {
                write(&d.join("memory.swap.max"), "0")?;
            }
            write(&d.join("pids.max"), &l.pids.to_string())?;
            let cpu = quota.map_or_else(
                || format!("max {CPU_PERIOD_US}"),
                |q| format!("{q} {CPU_PERIOD_US}"),
            );
            write(&d.join("cpu.max"), &cpu)?;
        } else {
            let (mem, pids, cpu) = (&self.dirs[0], &self.dirs[1], &self.dirs[2]);
            write(
                &mem.join("memory.limit_in_bytes"),
                &l.memory_bytes.to_string(),
            )?;
            if mem.join("memory.memsw.limit_in_bytes").exists() {
                // memory+swap equal to memory: no swap.
                write(
                    &mem.join("memory.memsw.limit_in_bytes"),
                    &l.memory_bytes.to_string(),
                )?;
            }
            write(&pids.join("pids.max"), &l.pids.to_string())?;
            write(&cpu.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
            write(
                &cpu.join("cpu.cfs_quota_us"),
                &quota.map_or_else(|| "-1".to_owned(), |q| q.to_string()),
            )?;
        }
        Ok(())
    }

    /// Moves `pid` into the group (every hierarchy on v1).
    /// The group's (first) directory, opened as an `O_PATH` fd: what `clone3` with
    /// `CLONE_INTO_CGROUP` takes on cgroup v2.
    pub fn open_dir(&self) -> Result<std::os::fd::OwnedFd, CgroupError> {
        use std::os::unix::fs::OpenOptionsExt;
        let dir = self
            .dirs
            .first()
            .ok_or_else(|| CgroupError::Unavailable("a cgroup with no directory".into()))?;
        fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
            .open(dir)
            .map(Into::into)
            .map_err(io("open", dir))
    }

    pub fn add(&self, pid: i32) -> Result<(), CgroupError> {
        for d in &self.dirs {
            write(&d.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    /// Processes in the group. A directory that does not exist (never created, or already
    /// removed) holds none.
    pub fn pids(&self) -> Result<Vec<i32>, CgroupError> {
        let mut all = Vec::new();
        for d in &self.dirs {
            let p = d.join("cgroup.procs");
            let text = match fs::read_to_string(&p) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io("read", &p)(e)),
            };
            all.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
        }
        all.sort_unstable();
        all.dedup();
        Ok(all)
    }

    /// What the group uses now, against its limits, read from the kernel's files: on v2
    /// `memory.current`/`memory.max`, `pids.current`/`pids.max`, `cpu.stat`'s `usage_usec` and
    /// `cpu.max`; on v1 `memory.usage_in_bytes`/`memory.limit_in_bytes`,
    /// `pids.current`/`pids.max`, `cpuacct.usage` (when `cpuacct` is mounted with `cpu`) and
    /// `cpu.cfs_quota_us`/`cpu.cfs_period_us`. A group whose directory is gone is an error (the
    /// sandbox ended); a file a kernel does not offer leaves its figure `None`.
    pub fn usage(&self) -> Result<Usage, CgroupError> {
        let dir = |i: usize| {
            self.dirs.get(i).ok_or_else(|| {
                CgroupError::Unavailable(format!(
                    "a v{} group with {} directories, not {}",
                    self.version,
                    self.dirs.len(),
                    if self.version == 2 { 1 } else { 3 }
                ))
            })
        };
        if self.version == 2 {
            let d = dir(0)?;
            let cpu_max = read_opt(&d.join("cpu.max"))?;
            Ok(Usage {
                memory_bytes: number(&d.join("memory.current"))?,
                memory_limit: limit(&d.join("memory.max"))?,
                pids: number(&d.join("pids.current"))?,
                pids_limit: limit(&d.join("pids.max"))?,
                cpu_usec: read_opt(&d.join("cpu.stat"))?.and_then(|t| {
                    t.lines()
                        .find_map(|l| l.strip_prefix("usage_usec "))
                        .and_then(|n| n.trim().parse().ok())
                }),
                cpu_limit_millis: cpu_max.and_then(|t| {
                    let mut f = t.split_whitespace();
                    let (quota, period) = (f.next()?, f.next()?);
                    cpu_millis(quota.parse().ok()?, period.parse().ok()?)
                }),
            })
        } else {
            let (mem, pids, cpu) = (dir(0)?, dir(1)?, dir(2)?);
            let quota = read_opt(&cpu.join("cpu.cfs_quota_us"))?
                .and_then(|t| t.trim().parse::<i64>().ok())
                .and_then(|q| u64::try_from(q).ok());
            let period = read_opt(&cpu.join("cpu.cfs_period_us"))?
                .and_then(|t| t.trim().parse::<u64>().ok());
            Ok(Usage {
                memory_bytes: number(&mem.join("memory.usage_in_bytes"))?,
                // v1 says "no limit" with a huge page-aligned number.
                memory_limit: number(&mem.join("memory.limit_in_bytes"))?
                    .filter(|&n| n < V1_UNLIMITED),
                pids: number(&pids.join("pids.current"))?,
                pids_limit: limit(&pids.join("pids.max"))?,
                cpu_usec: number(&cpu.join("cpuacct.usage"))?.map(|ns| ns / 1000),
                cpu_limit_millis: quota.zip(period).and_then(|(q, p)| cpu_millis(q, p)),
            })
        }
    }

    /// How many times the kernel's OOM killer has killed in this group.
    pub fn oom_kills(&self) -> Result<u64, CgroupError> {
        let file = self.memory_dir().join(if self.version == 2 {
            "memory.events"
        } else {
            "memory.oom_control"
        });
        let text = fs::read_to_string(&file).map_err(io("read", &file))?;
        Ok(text
            .lines()
            .find_map(|l| l.strip_prefix("oom_kill "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0))
    }

    /// SIGKILLs every process in the group until only zombies are left (bounded). A zombie leaves
    /// the group when its parent reaps it; [`Cgroup::remove`] waits for that.
    pub fn kill_all(&self) -> Result<(), CgroupError> {
        if self.version == 2 {
            let kill = self.dirs[0].join("cgroup.kill");
            if kill.exists() {
                write(&kill, "1")?;
            }
        }
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        loop {
            let pids: Vec<i32> = self
                .pids()?
                .into_iter()
                .filter(|p| !is_zombie(*p))
                .collect();
            if pids.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(CgroupError::Busy {
                    path: self.dirs[0].clone(),
                });
            }
            for pid in pids {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            pause();
        }
    }

    /// Kills what is left and removes the group's directories.
    pub fn remove(&self) -> Result<(), CgroupError> {
        self.kill_all()?;
        for d in &self.dirs {
            // A killed process can hold the group for a moment after it is gone from
            // cgroup.procs, so rmdir may see EBUSY briefly; retry until the deadline.
            let deadline = Instant::now() + DRAIN_TIMEOUT;
            loop {
                match fs::remove_dir(d) {
                    Ok(()) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    Err(e) if Instant::now() > deadline => {
                        return Err(CgroupError::Io {
                            action: "remove",
                            path: d.clone(),
                            source: e,
                        });
                    }
                    Err(_) => pause(),
                }
            }
        }
        Ok(())
    }
}

/// How long killed processes get to leave a group before it is reported busy.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Between polls of a group that is emptying. Neither v1 nor (portably) v2 offers a blocking
/// "group is empty" wait, so this is a bounded poll of the condition itself.
/// A v1 memory limit at or above this is "unlimited" (the kernel writes `PAGE_COUNTER_MAX`
/// pages, about 2^63 bytes).
const V1_UNLIMITED: u64 = 1 << 62;

/// What a sandbox's group uses now, and its limits (`None`: unlimited, or not offered by this
/// kernel).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub memory_bytes: Option<u64>,
    pub memory_limit: Option<u64>,
    pub pids: Option<u64>,
    pub pids_limit: Option<u64>,
    /// CPU time used since the group was made, in microseconds (v1: only where `cpuacct` is
    /// mounted with `cpu`).
    pub cpu_usec: Option<u64>,
    /// The CPU quota in thousandths of a CPU (`2000`: two CPUs).
    pub cpu_limit_millis: Option<u64>,
}

/// A file's text; `None` if the kernel does not offer it. A group directory that is gone is an
/// error.
fn read_opt(path: &Path) -> Result<Option<String>, CgroupError> {
    match fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            match path.parent().map(Path::exists) {
                Some(false) => Err(io("read", path)(e)),
                _ => Ok(None),
            }
        }
        Err(e) => Err(io("read", path)(e)),
    }
}

/// A file holding one number.
fn number(path: &Path) -> Result<Option<u64>, CgroupError> {
    Ok(read_opt(path)?.and_then(|t| t.trim().parse().ok()))
}

/// A file holding a number or `max`.
fn limit(path: &Path) -> Result<Option<u64>, CgroupError> {
    Ok(read_opt(path)?.and_then(|t| match t.trim() {
        "max" => None,
        n => n.parse().ok(),
    }))
}

/// `quota` per `period` microseconds, in thousandths of a CPU.
fn cpu_millis(quota: u64, period: u64) -> Option<u64> {
    (period > 0).then(|| quota.saturating_mul(1000) / period)
}

fn pause() {
    std::thread::sleep(Duration::from_millis(1));
}

/// Whether `pid` has exited and awaits reaping (or is gone).
fn is_zombie(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with(['Z', 'X']))
        })
        .unwrap_or(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO_V1: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw";
    const OWN_V1: &str = "8:pids:/\n4:memory:/process_api/abc\n1:cpu:/\n0::/";

    #[test]
    fn detects_v1_when_cgroup2_has_no_controllers() {
        let h = Hierarchy::from_proc(MOUNTINFO_V1, OWN_V1, |_| Some(String::new())).unwrap();
        assert_eq!(
            h,
            Hierarchy::V1 {
                memory: "/sys/fs/cgroup/memory/process_api/abc".into(),
                pids: "/sys/fs/cgroup/pids".into(),
                cpu: "/sys/fs/cgroup/cpu".into()
            }
        );
    }

    #[test]
    fn prefers_v2_with_its_controllers() {
        let mi = "30 1 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw";
        let h = Hierarchy::from_proc(mi, "0::/user.slice", |_| {
            Some("cpuset cpu io memory pids\n".into())
        })
        .unwrap();
        assert_eq!(
            h,
            Hierarchy::V2 {
                mount: "/sys/fs/cgroup".into()
            }
        );
    }

    #[test]
    fn fails_closed_without_controllers() {
        let err = Hierarchy::from_proc("1 0 0:1 / / rw - ext4 /dev/vda rw", "0::/", |_| None)
            .unwrap_err();
        assert!(matches!(err, CgroupError::Unavailable(_)), "{err}");
    }

    #[test]
    fn v2_usage_is_read_against_its_limits() {
        let fake = tempfile::tempdir().unwrap();
        let d = fake.path();
        for (f, v) in [
            ("memory.current", "1048576\n"),
            ("memory.max", "67108864\n"),
            ("pids.current", "3\n"),
            ("pids.max", "max\n"),
            ("cpu.stat", "usage_usec 2500000\nuser_usec 2000000\n"),
            ("cpu.max", "150000 100000\n"),
        ] {
            fs::write(d.join(f), v).unwrap();
        }
        let u = Cgroup::from_dirs(2, vec![d.to_owned()]).usage().unwrap();
        assert_eq!(
            u,
            Usage {
                memory_bytes: Some(1 << 20),
                memory_limit: Some(64 << 20),
                pids: Some(3),
                pids_limit: None,
                cpu_usec: Some(2_500_000),
                cpu_limit_millis: Some(1500),
            }
        );
        fs::write(d.join("cpu.max"), "max 100000\n").unwrap();
        assert_eq!(
            Cgroup::from_dirs(2, vec![d.to_owned()])
                .usage()
                .unwrap()
                .cpu_limit_millis,
            None
        );
    }

    #[test]
    fn v1_usage_is_read_from_each_hierarchy() {
        let fake = tempfile::tempdir().unwrap();
        let (mem, pids, cpu) = (
            fake.path().join("memory"),
            fake.path().join("pids"),
            fake.path().join("cpu"),
        );
        for d in [&mem, &pids, &cpu] {
            fs::create_dir(d).unwrap();
        }
        fs::write(mem.join("memory.usage_in_bytes"), "4096\n").unwrap();
        fs::write(mem.join("memory.limit_in_bytes"), "9223372036854771712\n").unwrap();
        fs::write(pids.join("pids.current"), "2\n").unwrap();
        fs::write(pids.join("pids.max"), "64\n").unwrap();
        fs::write(cpu.join("cpu.cfs_quota_us"), "200000\n").unwrap();
        fs::write(cpu.join("cpu.cfs_period_us"), "100000\n").unwrap();
        let cg = Cgroup::from_dirs(1, vec![mem.clone(), pids.clone(), cpu.clone()]);
        let u = cg.usage().unwrap();
        assert_eq!(
            u,
            Usage {
                memory_bytes: Some(4096),
                memory_limit: None,
                pids: Some(2),
                pids_limit: Some(64),
                // No cpuacct.usage: cpuacct is not mounted with cpu.
                cpu_usec: None,
                cpu_limit_millis: Some(2000),
            }
        );
        fs::write(cpu.join("cpuacct.usage"), "3000000\n").unwrap();
        fs::write(cpu.join("cpu.cfs_quota_us"), "-1\n").unwrap();
        let u = cg.usage().unwrap();
        assert_eq!((u.cpu_usec, u.cpu_limit_millis), (Some(3000), None));
        // A group that is gone is an error, not a sandbox using nothing.
        fs::remove_dir_all(&pids).unwrap();
        let err = cg.usage().unwrap_err();
        assert!(err.to_string().contains("pids.current"), "{err}");
        assert!(matches!(
            Cgroup::from_dirs(1, vec![mem]).usage(),
            Err(CgroupError::Unavailable(_))
        ));
    }

    #[test]
    fn v2_limits_are_written_where_the_kernel_reads_them() {
        let fake = tempfile::tempdir().unwrap();
        let h = Hierarchy::V2 {
            mount: fake.path().to_owned(),
        };
        let cg = h
            .create(
                "sb1",
                Limits {
                    memory_bytes: 64 << 20,
                    pids: 32,
                    cpus: Some(2),
                },
            )
            .unwrap();
        let d = fake.path().join("luminaguard/sb1");
        let read = |f: &str| fs::read_to_string(d.join(f)).unwrap();
        assert_eq!(read("memory.max"), (64u64 << 20).to_string());
        assert_eq!(read("pids.max"), "32");
        assert_eq!(read("cpu.max"), "200000 100000");
        assert_eq!(
            fs::read_to_string(fake.path().join("cgroup.subtree_control")).unwrap(),
            "+memory +pids +cpu"
        );
        assert_eq!(cg.dirs(), [d]);
        assert!(matches!(
            h.create(
                "../x",
                Limits {
                    memory_bytes: 1,
                    pids: 1,
                    cpus: None
                }
            ),
            Err(CgroupError::BadName(_))
        ));
    }
}
