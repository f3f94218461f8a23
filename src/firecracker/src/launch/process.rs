//! Steps 1 and 2: checks, files, the jail, and the Firecracker process (directly, or through
//! the jailer with its pid taken from the jailer's pid file).

use std::ffi::OsString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::process::{Child, Command};

use super::configure::tail;
use super::types::*;
use crate::jailer::{self, Jail, names};
use crate::vmm::{self, Vmm};

/// How much of the jailer's stderr an error quotes.
const STDERR_TAIL: u64 = 2048;

/// Firecracker's command line: `--api-sock <socket> --id <id> [--seccomp-filter <bpf>]`. There
/// is no way to ask for `--no-seccomp`.
pub fn argv(api_socket: &Path, vm_id: &VmId, seccomp_filter: Option<&Path>) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec![
        "--api-sock".into(),
        api_socket.into(),
        "--id".into(),
        vm_id.as_str().into(),
    ];
    push_seccomp(&mut args, seccomp_filter);
    args
}

fn push_seccomp(args: &mut Vec<OsString>, seccomp_filter: Option<&Path>) {
    if let Some(filter) = seccomp_filter {
        args.push("--seccomp-filter".into());
        args.push(filter.into());
    }
}

fn invalid(step: Step, message: impl Into<String>) -> (Step, Cause) {
    (step, Cause::Invalid(message.into()))
}

fn io_err(
    step: Step,
    what: &'static str,
    path: &Path,
) -> impl FnOnce(std::io::Error) -> (Step, Cause) {
    let path = path.to_owned();
    move |source| (step, Cause::Io { what, path, source })
}

/// The files (and, in jailer mode, the planned jail) of `cfg`; checks what can be checked and
/// creates the log and metrics files, and the jail with everything linked into it.
pub(super) async fn prepare(cfg: &LaunchConfig) -> Result<(VmFiles, Option<Jail>), (Step, Cause)> {
    let jail = match &cfg.jailer {
        None => None,
        Some(j) => Some(plan_jail(cfg, j).await?),
    };
    let files = match &jail {
        None => VmFiles::in_dir(&cfg.dir),
        Some(j) => VmFiles::rooted(&j.root, &cfg.dir),
    };
    check(cfg, &files).await?;
    match &jail {
        None => {
            if let Some(scratch) = &cfg.scratch {
                let dst = cfg.dir.join(SCRATCH_FILE);
                if *scratch != dst {
                    jailer::place_file(scratch, &dst, cfg.run_as.as_ref())
                        .await
                        .map_err(|e| (Step::Prepare, Cause::Jail(e)))?;
                }
            }
        }
        Some(j) => {
            if let Err(e) = build_jail(cfg, j).await {
                if let Err(e) = j.remove().await {
                    tracing::warn!(error = %e, "cannot remove a half-built jail");
                }
                return Err(e);
            }
        }
    }
    create_file(&files.log, cfg.run_as.as_ref()).await?;
    create_file(&files.metrics, cfg.run_as.as_ref()).await?;
    Ok((files, jail))
}

pub(super) async fn plan_jail(
    cfg: &LaunchConfig,
    j: &jailer::JailerConfig,
) -> Result<Jail, (Step, Cause)> {
    if cfg.run_as.is_none() {
        return Err((Step::Prepare, Cause::Jail(jailer::JailError::NoIdentity)));
    }
    // The jailer names the chroot after the resolved binary.
    let firecracker = tokio::fs::canonicalize(&cfg.firecracker)
        .await
        .map_err(io_err(
            Step::Prepare,
            "find the firecracker binary",
            &cfg.firecracker,
        ))?;
    let mounts = if j.cgroups.is_some() {
        tokio::fs::read_to_string("/proc/mounts")
            .await
            .map_err(io_err(Step::Prepare, "read", Path::new("/proc/mounts")))?
    } else {
        String::new()
    };
    let jail = Jail::plan(
        &cfg.dir,
        j.chroot_base.as_deref(),
        &firecracker,
        &cfg.vm_id,
        j.cgroups.as_ref(),
        &mounts,
    )
    .map_err(|e| (Step::Prepare, Cause::Jail(e)))?;
    if j.cgroups.is_some() && jail.cgroup_dirs.is_empty() {
        return Err(invalid(
            Step::Prepare,
            "no cgroup hierarchy of the chosen version is mounted (/proc/mounts) for the jailer's --cgroup keys",
        ));
    }
    Ok(jail)
}

/// The chroot, and the files Firecracker opens, linked (or copied) into it.
async fn build_jail(cfg: &LaunchConfig, jail: &Jail) -> Result<(), (Step, Cause)> {
    let fail = |e| (Step::Jail, Cause::Jail(e));
    jail.create().await.map_err(fail)?;
    jail.place(&cfg.kernel, names::KERNEL, None)
        .await
        .map_err(fail)?;
    jail.place(&cfg.rootfs, names::ROOTFS, None)
        .await
        .map_err(fail)?;
    if let Some(initrd) = &cfg.initrd {
        jail.place(initrd, names::INITRD, None)
            .await
            .map_err(fail)?;
    }
    if let Some(scratch) = &cfg.scratch {
        jail.place(scratch, SCRATCH_FILE, cfg.run_as.as_ref())
            .await
            .map_err(fail)?;
    }
    if let Some(filter) = &cfg.seccomp_filter {
        jail.place(filter, names::SECCOMP, None)
            .await
            .map_err(fail)?;
    }
    Ok(())
}

/// Checks what can be checked before anything starts.
async fn check(cfg: &LaunchConfig, files: &VmFiles) -> Result<(), (Step, Cause)> {
    cfg.machine
        .check()
        .map_err(|e| invalid(Step::Prepare, format!("machine config: {e}")))?;
    for socket in files.sockets() {
        let len = socket.as_os_str().len();
        if len > MAX_SOCKET_PATH {
            return Err(invalid(
                Step::Prepare,
                format!(
                    "the socket path {} is {len} bytes, over the {MAX_SOCKET_PATH} a Unix socket allows; use a shorter runtime directory",
                    socket.display()
                ),
            ));
        }
    }
    for path in [files.api_socket.as_path(), files.vsock.as_path()] {
        if tokio::fs::symlink_metadata(path).await.is_ok() {
            return Err(invalid(
                Step::Prepare,
                format!(
                    "{} already exists: is another VMM using this directory?",
                    path.display()
                ),
            ));
        }
    }
    let mut needed: Vec<(&'static str, &Path)> = vec![
        ("find the firecracker binary", &cfg.firecracker),
        ("find the kernel", &cfg.kernel),
        ("find the root file system", &cfg.rootfs),
    ];
    if let Some(j) = &cfg.jailer {
        needed.push(("find the jailer binary", &j.jailer));
        if let Some(netns) = &j.netns {
            needed.push(("find the network namespace", netns));
        }
    }
    if let Some(p) = &cfg.initrd {
        needed.push(("find the initrd", p));
    }
    if let Some(p) = &cfg.scratch {
        needed.push(("find the scratch disk", p));
    }
    if let Some(p) = &cfg.seccomp_filter {
        needed.push(("find the seccomp filter", p));
    }
    for (what, path) in needed {
        if let Err(source) = tokio::fs::metadata(path).await {
            return Err((
                Step::Prepare,
                Cause::Io {
                    what,
                    path: path.to_owned(),
                    source,
                },
            ));
        }
    }
    Ok(())
}

/// Creates (or truncates) a file Firecracker will write to, owned by `owner` if given.
async fn create_file(path: &Path, owner: Option<&RunAs>) -> Result<(), (Step, Cause)> {
    tokio::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(path)
        .await
        .map_err(io_err(Step::Prepare, "create", path))?;
    if let Some(who) = owner {
        std::os::unix::fs::chown(path, Some(who.uid), Some(who.gid)).map_err(io_err(
            Step::Prepare,
            "chown",
            path,
        ))?;
    }
    Ok(())
}

async fn open_log(path: &Path) -> std::io::Result<std::fs::File> {
    Ok(tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .await?
        .into_std()
        .await)
}

/// Step 2: Firecracker, or the jailer and then the Firecracker it starts, with `stdout` (the
/// console keeper's socket, see [`super::console`]) as its stdout.
pub(super) async fn start(
    cfg: &LaunchConfig,
    files: &VmFiles,
    jail: Option<&Jail>,
    stdout: Stdio,
) -> Result<Vmm, (Step, Cause)> {
    match (jail, &cfg.jailer, &cfg.run_as) {
        (Some(jail), Some(j), Some(who)) => {
            let mut fc_args: Vec<OsString> = vec!["--api-sock".into(), API_SOCKET.into()];
            push_seccomp(
                &mut fc_args,
                cfg.seccomp_filter
                    .as_ref()
                    .map(|_| Path::new(names::SECCOMP)),
            );
            let firecracker = tokio::fs::canonicalize(&cfg.firecracker)
                .await
                .map_err(io_err(
                    Step::Spawn,
                    "find the firecracker binary",
                    &cfg.firecracker,
                ))?;
            // The guest's NIC: the jailer joins the tap's namespace before it execs Firecracker.
            let mut j = j.clone();
            if let Some(net) = &cfg.network {
                j.netns = Some(net.netns.clone());
            }
            let args = jailer::argv(&j, &firecracker, &cfg.vm_id, who, jail, fc_args);
            // The jailer must start as root: it drops to --uid/--gid itself.
            let child = spawn_process(cfg, files, &j.jailer, args, stdout, None, None).await?;
            follow_jailer(cfg, &j, jail, files, child).await
        }
        _ => {
            let args = argv(&files.api_socket, &cfg.vm_id, cfg.seccomp_filter.as_deref());
            let child = spawn_process(
                cfg,
                files,
                &cfg.firecracker,
                args,
                stdout,
                cfg.run_as.clone(),
                Some(&cfg.dir),
            )
            .await?;
            let pid = child.id().unwrap_or(0);
            Ok(Vmm::child(child, pid))
        }
    }
}

/// The `cgroup.procs` files of `cfg`, open for writing.
pub(super) async fn open_cgroup_procs(cfg: &LaunchConfig) -> Result<Vec<OwnedFd>, (Step, Cause)> {
    let mut fds = Vec::new();
    for procs in &cfg.cgroup_procs {
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .open(procs)
            .await
            .map_err(io_err(Step::Spawn, "open", procs))?;
        fds.push(OwnedFd::from(file.into_std().await));
    }
    Ok(fds)
}

/// Spawns `program` with `stdout` (the console keeper's socket) and stderr to the stderr log,
/// in the sandbox's cgroup, as `who`, with `cwd` as its working directory. Our copy of `stdout`
/// is closed before this returns: from then on Firecracker holds the only writing end.
async fn spawn_process(
    cfg: &LaunchConfig,
    files: &VmFiles,
    program: &Path,
    args: Vec<OsString>,
    stdout: Stdio,
    who: Option<RunAs>,
    cwd: Option<&Path>,
) -> Result<Child, (Step, Cause)> {
    let stderr =
        open_log(&files.stderr)
            .await
            .map_err(io_err(Step::Spawn, "open", &files.stderr))?;
    let cgroup_fds = open_cgroup_procs(cfg).await?;
    let fds: Vec<i32> = cgroup_fds.iter().map(AsRawFd::as_raw_fd).collect();
    // Direct mode with a NIC: Firecracker runs in the tap's namespace (the jailer does this
    // itself, with --netns).
    let netns = match (&cfg.network, &cfg.jailer) {
        (Some(net), None) => Some(OwnedFd::from(
            tokio::fs::File::open(&net.netns)
                .await
                .map_err(io_err(Step::Spawn, "open", &net.netns))?
                .into_std()
                .await,
        )),
        _ => None,
    };
    let netns_fd = netns.as_ref().map(AsRawFd::as_raw_fd);
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::from(stderr))
        .kill_on_drop(cfg.lifetime == Lifetime::DiesWithCreator);
    if let Some(dir) = cwd {
        cmd.current_dir(dir);
    }
    let detached = cfg.lifetime == Lifetime::Detached;
    // SAFETY: the closure runs in the child between fork and exec; `enter_helper` makes only
    // async-signal-safe system calls, on memory allocated before the fork.
    unsafe {
        cmd.pre_exec(move || {
            luminaguard_core::child::enter_helper(&luminaguard_core::child::HelperSetup {
                netns: netns_fd,
                cgroup_procs: &fds,
                keep: &[],
                user: who.as_ref().map(|w| luminaguard_core::child::Credentials {
                    uid: w.uid,
                    gid: w.gid,
                    groups: &w.supplementary,
                }),
                die_with_parent: !detached,
            })
        });
    }
    let child = cmd.spawn().map_err(|source| {
        (
            Step::Spawn,
            Cause::Spawn {
                program: program.to_owned(),
                source,
            },
        )
    });
    drop(cmd);
    drop(cgroup_fds);
    drop(netns);
    child
}

/// Waits for the jailer's pid file and takes hold of the Firecracker it names: the jailer
/// itself when it execs in place, else (new PID namespace, daemonized) a process that is not
/// our child, held by a pidfd. On failure whatever runs is killed.
async fn follow_jailer(
    cfg: &LaunchConfig,
    j: &jailer::JailerConfig,
    jail: &Jail,
    files: &VmFiles,
    mut jailer: Child,
) -> Result<Vmm, (Step, Cause)> {
    let jailer_pid = jailer.id().unwrap_or(0);
    let read = jail
        .read_pid(j.pid_file_timeout, || match jailer.try_wait() {
            Ok(Some(status)) if !status.success() => Some(status.to_string()),
            Err(e) => Some(format!("wait failed: {e}")),
            _ => None,
        })
        .await;
    let pid = match read {
        Ok(Ok(pid)) => pid,
        Ok(Err(e)) => {
            kill_jailer(&mut jailer).await;
            return Err((Step::Jailer, Cause::Jail(e)));
        }
        Err(status) => {
            return Err((
                Step::Jailer,
                Cause::JailerFailed {
                    pid: jailer_pid,
                    status,
                    stderr: tail(&files.stderr, STDERR_TAIL).await,
                },
            ));
        }
    };
    if pid == jailer_pid {
        // No new PID namespace, no daemonizing: the jailer execs Firecracker in place.
        return Ok(Vmm::child(jailer, pid));
    }
    let pidfd = match vmm::pidfd_open(pid) {
        Ok(fd) => fd,
        Err(e) => {
            kill_jailer(&mut jailer).await;
            return Err((Step::Jailer, Cause::Track(e)));
        }
    };
    let kill_on_drop = cfg.lifetime == Lifetime::DiesWithCreator;
    let checked = jail.check_process(pid, &cfg.vm_id).await;
    let tracked = checked
        .map_err(Cause::Jail)
        .and_then(|()| Vmm::tracked(pid, pidfd, kill_on_drop).map_err(Cause::Track));
    match tracked {
        Ok(vmm) => {
            // The jailer (or its first fork) exits once Firecracker runs: reap it.
            tokio::spawn(async move {
                let status = jailer.wait().await;
                tracing::debug!(pid = jailer_pid, ?status, "jailer exited");
            });
            Ok(vmm)
        }
        Err(cause) => {
            kill_jailer(&mut jailer).await;
            Err((Step::Jailer, cause))
        }
    }
}

async fn kill_jailer(jailer: &mut Child) {
    if let Ok(None) = jailer.try_wait() {
        let _ = jailer.start_kill();
    }
    let _ = jailer.wait().await;
}

/// The path Firecracker is given for a per-VM file: relative to its working directory.
pub(crate) fn api_path(name: &str) -> PathBuf {
    PathBuf::from(name)
}
