//! `luminaguard-fake-jailer`: a stand-in for Firecracker's `jailer` in tests (feature
//! `testing`), following its `docs/jailer.md` and sources: the same options (unknown ones
//! refused), the chroot at `<chroot-base-dir>/<exec-file-name>/<id>/root` with the exec file
//! copied in, `--resource-limit` applied with setrlimit (default `no-file=2048`), `--netns`
//! joined with setns, `--cgroup <file>=<value>` written for real under
//! `<controller mount>/<parent-cgroup>/<id>` (v1) or `<cgroup2 mount>/<parent-cgroup>/<id>` (v2)
//! with its own pid attached, `/dev/kvm` and `/dev/net/tun` made with mknod, the chroot given to
//! `--uid`/`--gid`, `--daemonize` as a double fork with setsid and stdio on `/dev/null`,
//! `--new-pid-ns` as a child in a new PID namespace, and the pid of the process that runs the
//! exec file in `<root>/<exec-file-name>.pid`. The environment is cleared.
//!
//! One difference: it cannot chroot and then exec a dynamically linked test binary, so it execs
//! the copy by its host path and tells it (`LUMINAGUARD_FAKE_JAIL*`) to chroot and drop to the
//! uid/gid itself first thing — the fake firecracker does.
//!
//! If `LUMINAGUARD_FAKE_FIRECRACKER_RECORD_DIR` is set, the argv goes to
//! `fake-jailer.argv.json` there (and that variable, and the plan's, are passed on).

#![allow(clippy::disallowed_methods)] // a synchronous program: no async runtime to block

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use luminaguard_firecracker::testing::{
    JAIL_ENV, JAIL_GID_ENV, JAIL_UID_ENV, JAILER_ARGV_FILE, PLAN_ENV, RECORD_DIR_ENV,
};

#[derive(Default)]
struct Args {
    id: String,
    exec_file: PathBuf,
    uid: u32,
    gid: u32,
    chroot_base: PathBuf,
    cgroup_version: String,
    cgroups: Vec<(String, String)>,
    parent_cgroup: Option<String>,
    netns: Option<PathBuf>,
    resource_limits: Vec<(String, u64)>,
    daemonize: bool,
    new_pid_ns: bool,
    extra: Vec<String>,
}

fn parse(all: &[String]) -> Result<Args, String> {
    let mut a = Args {
        chroot_base: "/srv/jailer".into(),
        cgroup_version: "1".into(),
        ..Args::default()
    };
    let (mut id, mut exec, mut uid, mut gid) = (None, None, None, None);
    let mut it = all.iter();
    while let Some(arg) = it.next() {
        let mut value = || it.next().cloned().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--id" => id = Some(value()?),
            "--exec-file" => exec = Some(PathBuf::from(value()?)),
            "--uid" => uid = Some(value()?.parse::<u32>().map_err(|e| format!("--uid: {e}"))?),
            "--gid" => gid = Some(value()?.parse::<u32>().map_err(|e| format!("--gid: {e}"))?),
            "--chroot-base-dir" => a.chroot_base = value()?.into(),
            "--cgroup-version" => a.cgroup_version = value()?,
            "--cgroup" => {
                let v = value()?;
                let (file, val) = v
                    .split_once('=')
                    .ok_or(format!("--cgroup {v:?}: expected <file>=<value>"))?;
                a.cgroups.push((file.to_owned(), val.to_owned()));
            }
            "--parent-cgroup" => a.parent_cgroup = Some(value()?),
            "--netns" => a.netns = Some(value()?.into()),
            "--resource-limit" => {
                let v = value()?;
                let (name, n) = v.split_once('=').ok_or(format!(
                    "--resource-limit {v:?}: expected <resource>=<value>"
                ))?;
                let n = n.parse::<u64>().map_err(|e| format!("{v}: {e}"))?;
                if !matches!(name, "fsize" | "no-file") {
                    return Err(format!("invalid resource {name:?}"));
                }
                a.resource_limits.push((name.to_owned(), n));
            }
            "--daemonize" => a.daemonize = true,
            "--new-pid-ns" => a.new_pid_ns = true,
            "--" => {
                a.extra = it.cloned().collect();
                break;
            }
            other => {
                return Err(format!(
                    "Arguments parsing error: unknown argument {other:?}"
                ));
            }
        }
    }
    a.id = id.ok_or("--id is required")?;
    a.exec_file = exec.ok_or("--exec-file is required")?;
    a.uid = uid.ok_or("--uid is required")?;
    a.gid = gid.ok_or("--gid is required")?;
    if a.id.is_empty()
        || a.id.len() > 64
        || !a.id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err(format!("Invalid instance ID: {:?}", a.id));
    }
    if !matches!(a.cgroup_version.as_str(), "1" | "2") {
        return Err(format!("Invalid cgroup version: {}", a.cgroup_version));
    }
    Ok(a)
}

fn os_err(what: impl std::fmt::Display) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

fn cstr(p: &Path) -> Result<CString, String> {
    CString::new(p.as_os_str().as_bytes()).map_err(|e| e.to_string())
}

/// Writes the `--cgroup` values and attaches this process, like the jailer.
fn setup_cgroups(a: &Args, parent: &str) -> Result<(), String> {
    if a.cgroups.is_empty() {
        return Ok(());
    }
    let mounts =
        std::fs::read_to_string("/proc/mounts").map_err(|e| format!("/proc/mounts: {e}"))?;
    let v2 = a.cgroup_version == "2";
    let mut dirs: Vec<PathBuf> = Vec::new();
    for (file, value) in &a.cgroups {
        let controller = file.split('.').next().unwrap_or(file);
        let mount = mounts.lines().find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            match (v2, f.get(2).copied()) {
                (true, Some("cgroup2")) => Some(PathBuf::from(f[1])),
                (false, Some("cgroup")) if f[3].split(',').any(|o| o == controller) => {
                    Some(PathBuf::from(f[1]))
                }
                _ => None,
            }
        });
        let mount = mount.ok_or(format!(
            "Cgroup error: cannot find the {controller} controller"
        ))?;
        let dir = mount.join(parent).join(&a.id);
        if v2 {
            // Enable the controller from the mount down to the parent.
            let mut at = mount.clone();
            for part in Path::new(parent).components() {
                std::fs::write(at.join("cgroup.subtree_control"), format!("+{controller}"))
                    .map_err(|e| {
                        format!("Cgroup error: subtree_control in {}: {e}", at.display())
                    })?;
                at.push(part);
                std::fs::create_dir_all(&at).map_err(|e| format!("{}: {e}", at.display()))?;
            }
            std::fs::write(at.join("cgroup.subtree_control"), format!("+{controller}"))
                .map_err(|e| format!("Cgroup error: subtree_control in {}: {e}", at.display()))?;
        }
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("Cgroup error: {}: {e}", dir.display()))?;
        std::fs::write(dir.join(file), value).map_err(|e| {
            format!(
                "Cgroup error: writing {value} to {}: {e}",
                dir.join(file).display()
            )
        })?;
        if !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    let me = std::process::id().to_string();
    for dir in dirs {
        let f = dir.join(if v2 { "cgroup.procs" } else { "tasks" });
        std::fs::write(&f, &me).map_err(|e| format!("Cgroup error: {}: {e}", f.display()))?;
    }
    Ok(())
}

fn mknod_owned(path: &Path, major: u32, minor: u32, uid: u32, gid: u32) -> Result<(), String> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    let c = cstr(path)?;
    // SAFETY: mknod and chown on a valid C string.
    unsafe {
        if libc::mknod(
            c.as_ptr(),
            libc::S_IFCHR | libc::S_IRUSR | libc::S_IWUSR,
            libc::makedev(major, minor),
        ) != 0
        {
            return Err(os_err(format!("mknod {}", path.display())));
        }
        if libc::chown(c.as_ptr(), uid, gid) != 0 {
            return Err(os_err(format!("chown {}", path.display())));
        }
    }
    Ok(())
}

fn write_pid_file(path: &Path, pid: u32) -> Result<(), String> {
    use std::io::Write as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    write!(f, "{pid}").map_err(|e| format!("{}: {e}", path.display()))
}

fn run() -> Result<(), String> {
    let all: Vec<String> = std::env::args().skip(1).collect();
    let record_dir = std::env::var_os(RECORD_DIR_ENV);
    if let Some(dir) = &record_dir {
        std::fs::write(
            Path::new(dir).join(JAILER_ARGV_FILE),
            serde_json::to_vec(&all).unwrap_or_default(),
        )
        .map_err(|e| format!("cannot record argv: {e}"))?;
    }
    let passed_on: Vec<(&str, std::ffi::OsString)> = [PLAN_ENV, RECORD_DIR_ENV]
        .into_iter()
        .filter_map(|k| std::env::var_os(k).map(|v| (k, v)))
        .collect();
    let a = parse(&all)?;
    let exec = std::fs::canonicalize(&a.exec_file)
        .map_err(|e| format!("Failed to canonicalize path {}: {e}", a.exec_file.display()))?;
    if !exec.is_file() {
        return Err(format!("{} is not a file", exec.display()));
    }
    let exec_name = exec
        .file_name()
        .ok_or("exec file has no name")?
        .to_string_lossy()
        .into_owned();
    let base = std::fs::canonicalize(&a.chroot_base).map_err(|e| {
        format!(
            "Failed to canonicalize path {}: {e}",
            a.chroot_base.display()
        )
    })?;
    if !base.is_dir() {
        return Err(format!("{} is not a directory", base.display()));
    }
    let root = base.join(&exec_name).join(&a.id).join("root");
    std::fs::create_dir_all(&root).map_err(|e| format!("{}: {e}", root.display()))?;
    let jailed_exec = root.join(&exec_name);
    std::fs::copy(&exec, &jailed_exec).map_err(|e| format!("copy exec file: {e}"))?;

    let mut limits = a.resource_limits.clone();
    if !limits.iter().any(|(n, _)| n == "no-file") {
        limits.push(("no-file".into(), 2048));
    }
    for (name, n) in &limits {
        let resource = if name == "fsize" {
            libc::RLIMIT_FSIZE
        } else {
            libc::RLIMIT_NOFILE
        };
        let lim = libc::rlimit {
            rlim_cur: *n,
            rlim_max: *n,
        };
        // SAFETY: setrlimit with a valid struct.
        if unsafe { libc::setrlimit(resource, &lim) } != 0 {
            return Err(os_err(format!("setrlimit {name}={n}")));
        }
    }
    if let Some(netns) = &a.netns {
        let f = std::fs::File::open(netns).map_err(|e| format!("{}: {e}", netns.display()))?;
        // SAFETY: setns with an open namespace fd.
        if unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&f), libc::CLONE_NEWNET) } != 0 {
            return Err(os_err("setns"));
        }
    }
    let parent = a.parent_cgroup.clone().unwrap_or_else(|| exec_name.clone());
    setup_cgroups(&a, &parent)?;
    let dev_null = if a.daemonize {
        Some(
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/null")
                .map_err(|e| format!("/dev/null: {e}"))?,
        )
    } else {
        None
    };
    mknod_owned(&root.join("dev/kvm"), 10, 232, a.uid, a.gid)?;
    mknod_owned(&root.join("dev/net/tun"), 10, 200, a.uid, a.gid)?;
    let c_root = cstr(&root)?;
    // SAFETY: chown on a valid C string.
    if unsafe { libc::chown(c_root.as_ptr(), a.uid, a.gid) } != 0 {
        return Err(os_err("chown the chroot"));
    }
    if let Some(null) = dev_null {
        use std::os::fd::AsRawFd;
        // SAFETY: fork/setsid/dup2/_exit in a single-threaded program.
        unsafe {
            match libc::fork() {
                -1 => return Err(os_err("fork")),
                0 => {}
                _ => libc::_exit(0),
            }
            if libc::setsid() < 0 {
                return Err(os_err("setsid"));
            }
            match libc::fork() {
                -1 => return Err(os_err("fork")),
                0 => {}
                _ => libc::_exit(0),
            }
            for fd in 0..3 {
                libc::dup2(null.as_raw_fd(), fd);
            }
        }
    }
    let pid_file = root.join(format!("{exec_name}.pid"));
    let mut cmd = Command::new(&jailed_exec);
    cmd.args([
        "--id",
        &a.id,
        "--start-time-us",
        "1",
        "--start-time-cpu-us",
        "1",
    ])
    .args(["--parent-cpu-time-us", "1"])
    .args(&a.extra)
    .env_clear()
    .env(JAIL_ENV, &root)
    .env(JAIL_UID_ENV, a.uid.to_string())
    .env(JAIL_GID_ENV, a.gid.to_string())
    .envs(passed_on);
    if a.new_pid_ns {
        // SAFETY: unshare/fork/_exit in a single-threaded program.
        unsafe {
            if libc::unshare(libc::CLONE_NEWPID) != 0 {
                return Err(os_err("unshare(CLONE_NEWPID)"));
            }
            match libc::fork() {
                -1 => return Err(os_err("fork")),
                0 => return Err(format!("exec: {}", cmd.exec())),
                child => {
                    let pid = u32::try_from(child).map_err(|e| e.to_string())?;
                    write_pid_file(&pid_file, pid)?;
                    libc::_exit(0)
                }
            }
        }
    }
    write_pid_file(&pid_file, std::process::id())?;
    Err(format!("exec: {}", cmd.exec()))
}

fn main() {
    if let Err(e) = run() {
        eprintln!("Jailer error: {e}");
        std::process::exit(1);
    }
}
