//! Removing sandboxes: one code path for `destroy` (on purpose) and `gc` (leftovers of sandboxes
//! whose owner died or whose lifetime ended). Both work from the on-disk record alone, so they
//! serve every backend and need no live connection to the sandbox.

use std::path::{Path, PathBuf};
use std::time::Duration;

use luminaguard_cgroup::Cgroup;
use luminaguard_core::RuntimeDir;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::Serialize;

use crate::state::{ProcessRef, SandboxMeta, now_unix_ms};

/// Why removing a sandbox's leftovers failed.
#[derive(Debug, thiserror::Error)]
pub enum RemoveError {
    #[error("cannot remove the cgroup of sandbox {id}: {source}")]
    Cgroup {
        id: String,
        source: luminaguard_cgroup::CgroupError,
    },
    #[error("process {pid} of sandbox {id} is still alive {after:?} after SIGKILL")]
    Unkillable {
        id: String,
        pid: i32,
        after: Duration,
    },
    #[error("cannot remove the network of sandbox {id}: {reason}")]
    Net { id: String, reason: String },
    #[error("sandbox {id} records the chroot {path}, which is not under {base}: not removed")]
    ForeignChroot {
        id: String,
        path: PathBuf,
        base: PathBuf,
    },
    #[error("cannot remove {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What `gc` did.
#[derive(Debug, Default, Serialize)]
pub struct GcReport {
    pub removed: Vec<String>,
    pub kept: Vec<String>,
    pub errors: Vec<String>,
}

/// A directory without a record is left alone this long: its creator may be writing the record.
const UNRECORDED_GRACE: Duration = Duration::from_secs(60);
/// How long a SIGKILLed sandbox process may take to disappear.
const KILL_WAIT: Duration = Duration::from_secs(10);

/// Removes every sandbox under `runtime` that is garbage (see [`SandboxMeta::is_garbage`]).
/// Blocking; run it off the async executor.
pub fn collect(runtime: &RuntimeDir) -> GcReport {
    let mut report = GcReport::default();
    // Records in a directory another user controls would name their processes and paths.
    if let Err(e) = crate::check_runtime_blocking(runtime) {
        report.errors.push(e.to_string());
        return report;
    }
    #[allow(clippy::disallowed_methods)] // blocking by contract
    let Ok(entries) = std::fs::read_dir(runtime.sandboxes_dir()) else {
        return report;
    };
    let now = now_unix_ms();
    for entry in entries.flatten() {
        let dir = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        // A directory still being created: garbage once its creator is gone. Nothing but its
        // record exists yet, so there is nothing else to remove.
        // A directory whose remover was killed part-way: the rest goes at once.
        if let Some(remover) = crate::removing_dir_owner(&name) {
            if remover.alive() {
                report.kept.push(name);
                continue;
            }
            #[allow(clippy::disallowed_methods)] // blocking by contract
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => report.removed.push(name),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => report
                    .errors
                    .push(format!("cannot remove {}: {e}", dir.display())),
            }
            continue;
        }
        if let Some(creator) = crate::creating_dir_owner(&name) {
            if creator.alive() {
                report.kept.push(name);
                continue;
            }
            #[allow(clippy::disallowed_methods)] // blocking by contract
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => report.removed.push(name),
                Err(e) => report
                    .errors
                    .push(format!("cannot remove {}: {e}", dir.display())),
            }
            continue;
        }
        let meta = SandboxMeta::load_blocking(&dir).ok();
        let garbage = match &meta {
            Some(m) => m.is_garbage(now),
            // No readable record (a sandbox directory is only ever published with one): left
            // by an older LuminaGuard, or damaged; kept a while in case it is being replaced.
            None => older_than(&dir, UNRECORDED_GRACE),
        };
        if !garbage {
            report.kept.push(name);
            continue;
        }
        match remove(&dir, meta.as_ref()) {
            Ok(()) => report.removed.push(name),
            Err(e) => report.errors.push(e.to_string()),
        }
    }
    report
}

fn older_than(dir: &Path, age: Duration) -> bool {
    #[allow(clippy::disallowed_methods)]
    std::fs::metadata(dir)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|a| a >= age)
}

/// Kills every process the record names, removes its cgroup, then the directory. Blocking.
///
/// Processes go first (the init of a process sandbox is PID 1 of its namespace: killing it kills
/// everything in it; a VMM takes its guest with it), and are waited for, so that the cgroup is
/// empty when it is removed.
pub fn remove(dir: &Path, meta: Option<&SandboxMeta>) -> Result<(), RemoveError> {
    if let Some(m) = meta {
        let procs: Vec<ProcessRef> = m.init.iter().chain(&m.helpers).copied().collect();
        for p in procs.iter().filter(|p| p.alive()) {
            let _ = kill(Pid::from_raw(p.pid), Signal::SIGKILL);
        }
        for p in &procs {
            wait_gone(p, KILL_WAIT).map_err(|after| RemoveError::Unkillable {
                id: m.id.clone(),
                pid: p.pid,
                after,
            })?;
        }
        if let Some(uplink) = &m.net {
            remove_net(&m.id, uplink).map_err(|reason| RemoveError::Net {
                id: m.id.clone(),
                reason,
            })?;
        }
        if let Some(version) = m.cgroup_version {
            Cgroup::from_dirs(version, m.cgroup_dirs.clone())
                .remove()
                .map_err(|source| RemoveError::Cgroup {
                    id: m.id.clone(),
                    source,
                })?;
        }
        if let Some(chroot) = &m.chroot {
            remove_chroot(dir, &m.id, chroot)?;
        }
    }
    unmount_review_layer(dir)?;
    // Out of the sandbox's name first, in one step: a removal killed part-way (its caller
    // SIGKILLed) then leaves a directory named for its dead remover, which the next gc removes
    // at once — not a record-less remnant under the sandbox's name, which gc must leave alone a
    // while (its creator may be writing its record). A late writer of the record (below) finds
    // no directory under that name either.
    let doomed = match crate::state::ProcessRef::me() {
        Some(me) => {
            let name = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let to = dir.with_file_name(format!(
                "{}{}-{}-{name}",
                crate::REMOVING_PREFIX,
                me.pid,
                me.start
            ));
            #[allow(clippy::disallowed_methods)] // blocking by contract
            match std::fs::rename(dir, &to) {
                Ok(()) => to,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(source) => {
                    return Err(RemoveError::Dir {
                        path: dir.to_owned(),
                        source,
                    });
                }
            }
        }
        None => dir.to_owned(),
    };
    let dir = doomed.as_path();
    // A creator killed part-way may have left a process the record does not name yet (a
    // keeper finishing a hand-over) that writes the record once more while the directory is
    // being removed: the removal then meets a file it did not list. That writer is on its way
    // out; try again a bounded number of times.
    let mut tries = 0;
    loop {
        #[allow(clippy::disallowed_methods)] // blocking by contract
        match std::fs::remove_dir_all(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::DirectoryNotEmpty && tries < REMOVE_TRIES => {
                tries += 1;
                #[allow(clippy::disallowed_methods)] // blocking by contract; bounded
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => {
                return Err(RemoveError::Dir {
                    path: dir.to_owned(),
                    source: e,
                });
            }
        }
    }
}

/// How many times a sandbox directory that gained a file while it was removed is tried again.
const REMOVE_TRIES: u32 = 50;

/// Detaches a speculative run's review layer (a tmpfs the host mounted in the sandbox
/// directory), if there is one: after the sandbox's processes, before its directory goes.
/// Never follows a link; "not a mount point" and "not there" are the usual answers.
fn unmount_review_layer(dir: &Path) -> Result<(), RemoveError> {
    let layer = dir.join(luminaguard_core::runtime::SandboxFile::Review.file_name());
    // Only ever made as root; without one there is nothing to ask (and rootless, umount2
    // would answer EPERM whatever the path).
    if layer.symlink_metadata().is_err() {
        return Ok(());
    }
    match nix::mount::umount2(
        &layer,
        nix::mount::MntFlags::MNT_DETACH | nix::mount::MntFlags::UMOUNT_NOFOLLOW,
    ) {
        Ok(()) | Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => Ok(()),
        Err(e) => Err(RemoveError::Dir {
            path: layer,
            source: e.into(),
        }),
    }
}

/// Removes a sandbox's chroot (see [`SandboxMeta::chroot`]) — only strictly below
/// `<runtime root>/jail`, the runtime root being the sandbox directory's grandparent
/// (`<root>/sandboxes/<id>`), and only a path without `..`: a record names what it may remove,
/// it cannot name anything else. Symbolic links inside are removed, never followed.
fn remove_chroot(dir: &Path, id: &str, chroot: &Path) -> Result<(), RemoveError> {
    let base = dir
        .parent()
        .and_then(Path::parent)
        .map(|root| root.join(crate::JAIL_DIR));
    let inside = base.as_ref().is_some_and(|base| {
        chroot.is_absolute()
            && chroot.starts_with(base)
            && chroot != base
            && chroot
                .components()
                .all(|c| !matches!(c, std::path::Component::ParentDir))
    });
    if !inside {
        return Err(RemoveError::ForeignChroot {
            id: id.to_owned(),
            path: chroot.to_owned(),
            base: base.unwrap_or_default(),
        });
    }
    #[allow(clippy::disallowed_methods)] // blocking by contract
    std::fs::remove_dir_all(chroot).or_else(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Ok(()),
        _ => Err(RemoveError::Dir {
            path: chroot.to_owned(),
            source: e,
        }),
    })
}

/// Runs `work` to completion from a blocking context: on the caller's runtime if it has one,
/// on a private one otherwise.
fn block_on<T>(work: impl std::future::Future<Output = T>) -> Result<T, String> {
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => Ok(rt.block_on(work)),
        Err(_) => Ok(tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start a runtime: {e}"))?
            .block_on(work)),
    }
}

/// Removes the sandbox's network objects (see `luminaguard_net::topology`). Blocking.
fn remove_net(id: &str, uplink: &luminaguard_net::Uplink) -> Result<(), String> {
    let id: luminaguard_core::SandboxId = id.parse().map_err(|e| format!("{e}"))?;
    let names = luminaguard_net::NetNames::for_sandbox(&id);
    block_on(luminaguard_net::topology::remove(&names, uplink))?.map_err(|e| e.to_string())
}

/// Removes network objects (namespaces, uplink links and registrations in `uplink`) that belong
/// to no sandbox under `runtime` — what a sandbox directory removed by hand leaves behind.
/// Sandboxes removed by [`remove`] take theirs with them. Blocking; returns what was removed.
pub fn collect_network(
    runtime: &RuntimeDir,
    uplink: &luminaguard_net::Uplink,
) -> Result<Vec<String>, String> {
    #[allow(clippy::disallowed_methods)] // blocking by contract
    let live: Vec<luminaguard_core::SandboxId> = match std::fs::read_dir(runtime.sandboxes_dir()) {
        Ok(entries) => entries
            .flatten()
            .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => {
            return Err(format!(
                "cannot list {}: {e}",
                runtime.sandboxes_dir().display()
            ));
        }
    };
    block_on(async {
        let found = luminaguard_net::topology::leftovers(&live, uplink)
            .await
            .map_err(|e| e.to_string())?;
        luminaguard_net::topology::remove_leftovers(&found, uplink)
            .await
            .map_err(|e| e.to_string())?;
        Ok(found
            .netns
            .into_iter()
            .map(|n| format!("network namespace {n}"))
            .chain(found.links.into_iter().map(|l| format!("link {l}")))
            .chain(
                found
                    .registered
                    .into_iter()
                    .map(|l| format!("uplink registration {l}")),
            )
            .collect())
    })?
}

/// Waits until `p` is no longer alive (a zombie counts as gone: it holds no resources but its
/// pid, and its parent reaps it). Through a pidfd, which becomes readable when the process
/// exits — whoever its parent is — so nothing is polled by sleeping.
fn wait_gone(p: &ProcessRef, limit: Duration) -> Result<(), Duration> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    // SAFETY: pidfd_open takes integers and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, p.pid, 0) };
    let Ok(fd) = i32::try_from(fd) else {
        return Ok(());
    };
    if fd < 0 {
        // ESRCH: no such process at all.
        return if p.alive() { Err(limit) } else { Ok(()) };
    }
    // SAFETY: a new descriptor nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // The pid may have been reused since the kill: only the recorded process is waited for
    // (while it is alive, its pid cannot be reused, so the pidfd is its).
    if !p.alive() {
        return Ok(());
    }
    let deadline = std::time::Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = i32::try_from(left.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: one valid pollfd.
        match unsafe { libc::poll(&raw mut pfd, 1, ms) } {
            n if n > 0 => return Ok(()),
            0 => return Err(limit),
            _ if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted => {}
            _ => return if p.alive() { Err(limit) } else { Ok(()) },
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::disallowed_methods)] // test code: blocking I/O is fine
    use super::*;

    /// A runtime root with one sandbox directory and a chroot of it under `<root>/jail`.
    fn layout() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("sandboxes").join("sb-1");
        std::fs::create_dir_all(&dir).unwrap();
        let chroot = tmp.path().join("jail").join("firecracker").join("lg1");
        std::fs::create_dir_all(chroot.join("root").join("dev")).unwrap();
        std::fs::write(chroot.join("root").join("vmlinux"), b"k").unwrap();
        (tmp, dir, chroot)
    }

    fn meta_with_chroot(chroot: &Path) -> SandboxMeta {
        let mut m = SandboxMeta::new("sb-1", "firecracker", None).unwrap();
        m.chroot = Some(chroot.to_owned());
        m
    }

    #[test]
    fn the_recorded_chroot_goes_with_the_sandbox_and_its_neighbours_stay() {
        let (tmp, dir, chroot) = layout();
        let neighbour = tmp.path().join("jail").join("firecracker").join("lg2");
        std::fs::create_dir_all(&neighbour).unwrap();
        // A link out of the chroot is removed, not followed.
        let outside = tmp.path().join("precious");
        std::fs::write(&outside, b"x").unwrap();
        std::os::unix::fs::symlink(&outside, chroot.join("root").join("link")).unwrap();
        remove(&dir, Some(&meta_with_chroot(&chroot))).unwrap();
        assert!(!chroot.exists() && !dir.exists());
        assert!(neighbour.exists(), "another VM's chroot was removed");
        assert!(outside.exists(), "a symlink was followed");
        // Already gone: nothing to do, no error.
        std::fs::create_dir_all(&dir).unwrap();
        remove(&dir, Some(&meta_with_chroot(&chroot))).unwrap();
    }

    /// A removal SIGKILLed part-way (its caller killed while gc ran) leaves its directory under
    /// a name that says who was removing it; the next gc finishes it at once. Under the
    /// sandbox's own name a record-less remnant would be kept a minute (its creator might be
    /// writing the record).
    #[test]
    fn a_removal_killed_part_way_is_finished_by_the_next_gc() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("rt");
        let sandboxes = root.join("sandboxes");
        std::fs::create_dir_all(&sandboxes).unwrap();
        for d in [&root, &sandboxes] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o711)).unwrap();
        }
        let runtime = RuntimeDir::new(&root).unwrap();
        // Removed: the directory is gone under both names.
        let dir = sandboxes.join("sb-1");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("console.log"), b"x").unwrap();
        remove(&dir, None).unwrap();
        assert_eq!(std::fs::read_dir(&sandboxes).unwrap().count(), 0);
        // A remover that died (pid 0 never names a live process) left what it had not removed.
        let remnant = sandboxes.join(format!("{}0-1-sb-2", crate::REMOVING_PREFIX));
        std::fs::create_dir(&remnant).unwrap();
        std::fs::write(remnant.join("console.log"), b"x").unwrap();
        let report = collect(&runtime);
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        assert!(!remnant.exists(), "left: {report:?}");
        // One whose remover lives (this process) is its to finish.
        let me = crate::state::ProcessRef::me().unwrap();
        let busy = sandboxes.join(format!(
            "{}{}-{}-sb-3",
            crate::REMOVING_PREFIX,
            me.pid,
            me.start
        ));
        std::fs::create_dir(&busy).unwrap();
        let report = collect(&runtime);
        assert!(busy.exists(), "removed under its live remover: {report:?}");
    }

    #[test]
    fn a_chroot_outside_the_runtimes_jail_is_refused_and_left_alone() {
        let (tmp, dir, chroot) = layout();
        let victim = tmp.path().join("victim");
        std::fs::create_dir(&victim).unwrap();
        let jail = tmp.path().join("jail");
        for bad in [
            victim.clone(),
            jail.clone(),
            jail.join("..").join("victim"),
            PathBuf::from("jail/firecracker/lg1"),
        ] {
            let e = remove(&dir, Some(&meta_with_chroot(&bad))).unwrap_err();
            assert!(
                matches!(e, RemoveError::ForeignChroot { .. }),
                "{bad:?}: {e}"
            );
        }
        assert!(victim.exists() && chroot.exists() && dir.exists());
    }
}
