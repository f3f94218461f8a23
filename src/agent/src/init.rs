//! Duties of the agent when it is the first process of a VM or of a PID namespace.

use std::path::Path;

use nix::mount::{MsFlags, mount};
use nix::sys::stat::Mode;

/// Why an init step failed.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("cannot mount {fstype} on {target}: {source}")]
    Mount {
        fstype: &'static str,
        target: &'static str,
        source: nix::Error,
    },
    #[error("cannot become a child subreaper: {0}")]
    Subreaper(nix::Error),
}

/// Filesystems a PID 1 agent makes sure exist: (source, target, fstype, flags, data).
const MOUNTS: [(&str, &str, &str, MsFlags, &str); 6] = [
    (
        "proc",
        "/proc",
        "proc",
        MsFlags::MS_NOSUID
            .union(MsFlags::MS_NODEV)
            .union(MsFlags::MS_NOEXEC),
        "",
    ),
    (
        "sysfs",
        "/sys",
        "sysfs",
        MsFlags::MS_NOSUID
            .union(MsFlags::MS_NODEV)
            .union(MsFlags::MS_NOEXEC),
        "",
    ),
    (
        "devtmpfs",
        "/dev",
        "devtmpfs",
        MsFlags::MS_NOSUID,
        "mode=0755",
    ),
    (
        "devpts",
        "/dev/pts",
        "devpts",
        MsFlags::MS_NOSUID.union(MsFlags::MS_NOEXEC),
        "newinstance,ptmxmode=0666,mode=0620",
    ),
    (
        "tmpfs",
        "/dev/shm",
        "tmpfs",
        MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV),
        "mode=1777",
    ),
    (
        "tmpfs",
        "/tmp",
        "tmpfs",
        MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV),
        "mode=1777",
    ),
];

/// Whether `path` is a mount point: its device differs from its parent's (or it is `/`).
fn is_mount_point(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Ok(me), Some(Ok(parent))) = (
        std::fs::metadata(path),
        path.parent().map(std::fs::metadata),
    ) else {
        return false;
    };
    me.dev() != parent.dev() || me.ino() == parent.ino()
}

/// Mounts `/proc`, `/sys`, `/dev`, `/dev/pts`, `/dev/shm` and `/tmp` where nothing is mounted
/// yet. Returns the first failure; mounts before it stay.
pub fn mount_essentials() -> Result<(), InitError> {
    for (source, target, fstype, flags, data) in MOUNTS {
        let path = Path::new(target);
        if is_mount_point(path) {
            continue;
        }
        let _ = nix::unistd::mkdir(path, Mode::from_bits_truncate(0o755));
        let data = (!data.is_empty()).then_some(data);
        mount(Some(source), path, Some(fstype), flags, data).map_err(|source| {
            InitError::Mount {
                fstype,
                target,
                source,
            }
        })?;
    }
    Ok(())
}

/// As an ordinary process, adopt orphaned descendants so they can be reaped and attributed.
pub fn become_subreaper() -> Result<(), InitError> {
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes an integer argument and no pointers.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong, 0, 0, 0) };
    if rc < 0 {
        return Err(InitError::Subreaper(nix::Error::last()));
    }
    Ok(())
}

/// Flushes filesystems and powers the machine off. In a PID namespace this ends the namespace.
/// Falls back to exiting if the kernel refuses.
pub fn power_off() -> ! {
    nix::unistd::sync();
    let err = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_POWER_OFF);
    tracing::error!(error = ?err, "power off failed; exiting instead");
    std::process::exit(0)
}
