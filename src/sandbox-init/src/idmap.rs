//! An idmapped mount of a host workspace, for a root-created sandbox.
//!
//! A root-created sandbox runs as an unprivileged host uid of its own (see
//! `luminaguard_process_sandbox::launch::Identity::Mapped`). Bound plainly, a workspace owned by someone else would
//! be read-only to it, and what it creates would belong to that odd uid. Through an idmapped
//! mount, the workspace's owner appears inside as the sandbox's own uid 0, and every file the
//! sandbox creates there is written to disk as belonging to the workspace's owner — never to
//! root unless the workspace is root's, and never with a setuid or setgid bit (the seccomp
//! profile refuses to set one). Files of any other owner appear as the overflow id (`nobody`) and
//! stay as their mode allows others.
//!
//! Host side, as root: [`idmapped_workspace`] makes a detached mount (`open_tree`
//! `OPEN_TREE_CLONE`), gives it the mapping (`mount_setattr` `MOUNT_ATTR_IDMAP`, with the user
//! namespace of a short-lived helper whose maps say *owner ↔ sandbox uid*) and `nosuid`/`nodev`;
//! the init moves it into place ([`move_into_place`]).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

/// Why the workspace mount could not be made.
#[derive(Debug, thiserror::Error)]
pub enum IdmapError {
    #[error("cannot open the workspace {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot {step} for the workspace mapping: {source}")]
    Namespace {
        step: &'static str,
        source: std::io::Error,
    },
    #[error(
        "cannot make an idmapped mount of the workspace {path} ({source}); its filesystem may not \
         support idmapped mounts (ext4, xfs, btrfs, tmpfs and overlayfs do on current kernels)"
    )]
    Mount {
        path: PathBuf,
        source: std::io::Error,
    },
}

const OPEN_TREE_CLONE: u32 = 1;
const OPEN_TREE_CLOEXEC: u32 = libc::O_CLOEXEC as u32;
const AT_EMPTY_PATH: u32 = libc::AT_EMPTY_PATH as u32;
const AT_RECURSIVE: u32 = 0x8000;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;
const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
const MOVE_MOUNT_F_EMPTY_PATH: u32 = 0x4;

/// `struct mount_attr` (MOUNT_ATTR_SIZE_VER0).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

fn last() -> std::io::Error {
    std::io::Error::last_os_error()
}

/// A user namespace whose maps are `inside → outside` for the uid and the gid: the mapping an
/// idmapped mount applies (on-disk `inside` is seen, and written, as `outside`). Made by a
/// helper process that exists only while its maps are written and its namespace opened.
fn mapping_namespace(uid: (u32, u32), gid: (u32, u32)) -> Result<OwnedFd, IdmapError> {
    let ns = |step| move |source| IdmapError::Namespace { step, source };
    let parent = nix::unistd::getpid().as_raw();
    // The helper waits to be killed — not for a pipe's end of file: another thread's helper,
    // cloned while our pipe was open, would hold its write end (close-on-exec does nothing
    // without an exec), and each helper would wait for the other for ever.
    // SAFETY: a fork-like clone (no new stack, no shared memory); the child makes only
    // async-signal-safe system calls (prctl, getppid, pause) and exits.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (libc::CLONE_NEWUSER | libc::SIGCHLD) as libc::c_ulong,
            0,
            0,
            0,
            0,
        )
    };
    if pid == 0 {
        // SAFETY: as above. It dies with the thread that made it, should that thread die
        // first (and at once if it already has).
        unsafe {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            if libc::getppid() != parent {
                libc::_exit(0);
            }
            loop {
                libc::pause();
            }
        }
    }
    if pid < 0 {
        return Err(ns("create a user namespace")(last()));
    }
    let pid = i32::try_from(pid).unwrap_or(i32::MAX);
    let result = (|| {
        let proc = format!("/proc/{pid}");
        #[allow(clippy::disallowed_methods)] // blocking by contract (see idmapped_workspace)
        {
            std::fs::write(
                format!("{proc}/uid_map"),
                format!("{} {} 1\n", uid.0, uid.1),
            )
            .map_err(ns("write its uid map"))?;
            std::fs::write(
                format!("{proc}/gid_map"),
                format!("{} {} 1\n", gid.0, gid.1),
            )
            .map_err(ns("write its gid map"))?;
            std::fs::File::open(format!("{proc}/ns/user"))
                .map(OwnedFd::from)
                .map_err(ns("open it"))
        }
    })();
    let helper = nix::unistd::Pid::from_raw(pid);
    let _ = nix::sys::signal::kill(helper, nix::sys::signal::Signal::SIGKILL);
    let _ = nix::sys::wait::waitpid(helper, None);
    result
}

/// A detached mount of the directory `dir` (an `O_PATH` handle on it, taken when its path was
/// checked; `path` names it in errors) through which its owner (on disk) is the host uid and gid
/// `sandbox` (what the sandbox's uid and gid 0 are), `nosuid` and `nodev`. Root only; blocking.
pub fn idmapped_workspace(
    dir: &OwnedFd,
    path: &Path,
    sandbox: (u32, u32),
) -> Result<OwnedFd, IdmapError> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::File::from(dir.try_clone().map_err(|source| IdmapError::Open {
        path: path.to_owned(),
        source,
    })?)
    .metadata()
    .map_err(|source| IdmapError::Open {
        path: path.to_owned(),
        source,
    })?;
    let userns = mapping_namespace((meta.uid(), sandbox.0), (meta.gid(), sandbox.1))?;
    let mount_err = |source| IdmapError::Mount {
        path: path.to_owned(),
        source,
    };
    // SAFETY: an empty path relative to our own O_PATH descriptor; the kernel returns a new fd.
    let tree = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            dir.as_raw_fd(),
            c"".as_ptr(),
            OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH,
        )
    };
    if tree < 0 {
        return Err(mount_err(last()));
    }
    // SAFETY: open_tree returned a new descriptor nothing else owns.
    let tree = unsafe { OwnedFd::from_raw_fd(RawFd::try_from(tree).unwrap_or(-1)) };
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
        attr_clr: 0,
        propagation: 0,
        userns_fd: u64::try_from(userns.as_raw_fd()).unwrap_or(u64::MAX),
    };
    // SAFETY: `attr` is a valid mount_attr of the size passed; the path is empty (AT_EMPTY_PATH).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            AT_EMPTY_PATH | AT_RECURSIVE,
            &raw const attr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc != 0 {
        return Err(mount_err(last()));
    }
    Ok(tree)
}

/// Makes the mount at `target` and every mount below it read-only, `nosuid` and `nodev`
/// (`mount_setattr` with `AT_RECURSIVE`): a remount of a recursive bind changes only its top
/// mount, and a submount of the tree would stay as writable as it was on the host.
pub fn read_only_tree(target: &Path) -> std::io::Result<()> {
    let target = std::ffi::CString::new(target.as_os_str().as_encoded_bytes())
        .map_err(std::io::Error::other)?;
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: `target` is NUL-terminated; `attr` is a valid mount_attr of the size passed.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            target.as_ptr(),
            AT_RECURSIVE,
            &raw const attr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc != 0 {
        return Err(last());
    }
    Ok(())
}

/// In the sandbox's mount namespace: attaches the detached mount `fd` at `target`.
pub fn move_into_place(fd: RawFd, target: &Path) -> std::io::Result<()> {
    let target = std::ffi::CString::new(target.as_os_str().as_encoded_bytes())
        .map_err(std::io::Error::other)?;
    // SAFETY: both paths are NUL-terminated; the source is the empty path of `fd`.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            fd,
            c"".as_ptr(),
            libc::AT_FDCWD,
            target.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if rc != 0 {
        return Err(last());
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    /// Helpers made from many threads at once all end: none waits on another's descriptors.
    /// (Helpers that waited for their pipe's end of file held each other's write ends, each
    /// cloned while the other's pipe was open, and hung for ever.)
    #[test]
    fn concurrent_mapping_namespaces_never_wait_on_each_other() {
        if !nix::unistd::geteuid().is_root() {
            assert!(std::env::var_os("CI").is_none(), "needs root, which CI has");
            eprintln!("skipped: needs root");
            return;
        }
        let (tx, rx) = std::sync::mpsc::channel();
        for t in 0..8 {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for _ in 0..150 {
                    mapping_namespace((0, 1000 + t), (0, 1000 + t)).unwrap();
                }
                let _ = tx.send(t);
            });
        }
        drop(tx);
        for _ in 0..8 {
            rx.recv_timeout(std::time::Duration::from_secs(120))
                .unwrap_or_else(|_| panic!("mapping namespaces made at once hung"));
        }
    }
}
