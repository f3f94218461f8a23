//! Where the API listens: a Unix socket the daemon binds (`0660`, group-owned, made under a
//! temporary name and renamed into place so it is never reachable with looser permissions), or
//! the listening socket systemd passes (socket activation, `LISTEN_FDS`).

use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::sys::socket::{self, AddressFamily, SockType, SockaddrLike, sockopt};

/// Why the daemon cannot listen.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("a daemon is already listening on {0}")]
    InUse(PathBuf),
    #[error("{0} exists and is not a socket: refusing to replace it")]
    NotASocket(PathBuf),
    #[error("systemd passed {0} sockets: the daemon listens on exactly one")]
    FdCount(String),
    #[error("the socket systemd passed (fd 3) is not a listening Unix stream socket: {0}")]
    NotAListener(String),
}

/// The socket the daemon listens on.
#[derive(Debug)]
pub struct Bound {
    pub listener: UnixListener,
    /// The path the daemon made (removed when it stops, if still the same socket); `None` for
    /// a socket systemd owns.
    made: Option<(PathBuf, u64, u64)>,
}

impl Bound {
    /// The socket file the daemon made (none when systemd passed the socket).
    pub fn path(&self) -> Option<&std::path::Path> {
        self.made.as_ref().map(|(p, _, _)| p.as_path())
    }

    /// Removes the socket file the daemon made, if it is still the one it made (a newer
    /// daemon's socket at the same path is left alone).
    pub fn remove_blocking(&self) {
        let Some((path, dev, ino)) = &self.made else {
            return;
        };
        if let Ok(m) = std::fs::symlink_metadata(path)
            && m.dev() == *dev
            && m.ino() == *ino
            && let Err(e) = std::fs::remove_file(path)
        {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove the API socket");
        }
    }
}

/// The file descriptor systemd passes first.
const SD_LISTEN_FDS_START: i32 = 3;

/// Taken once: the inherited descriptor has one owner.
static TAKEN: AtomicBool = AtomicBool::new(false);

/// The listening socket systemd passed, if it passed one to this process (`LISTEN_PID` is ours
/// and `LISTEN_FDS` is 1).
pub fn from_systemd() -> Result<Option<Bound>, ListenError> {
    let ours = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        == Some(std::process::id());
    let Some(n) = std::env::var("LISTEN_FDS").ok().filter(|_| ours) else {
        return Ok(None);
    };
    if n != "1" {
        return Err(ListenError::FdCount(n));
    }
    if TAKEN.swap(true, Ordering::SeqCst) {
        return Ok(None);
    }
    // Open at all? (Wrapping a closed descriptor in an `OwnedFd` would abort when it drops.)
    // SAFETY: fcntl(F_GETFD) takes an integer and touches no memory; on a closed descriptor it
    // fails with EBADF.
    if unsafe { libc::fcntl(SD_LISTEN_FDS_START, libc::F_GETFD) } < 0 {
        return Err(ListenError::NotAListener(format!(
            "LISTEN_FDS=1, but descriptor {SD_LISTEN_FDS_START} is not open"
        )));
    }
    // SAFETY: systemd passed fd 3 to this process for us (LISTEN_PID is our pid, LISTEN_FDS is
    // 1); nothing else in the process owns it, and `TAKEN` makes this the only time it is
    // wrapped.
    let fd = unsafe { OwnedFd::from_raw_fd(SD_LISTEN_FDS_START) };
    let check = |what: &str, ok: Result<bool, nix::Error>| match ok {
        Ok(true) => Ok(()),
        Ok(false) => Err(ListenError::NotAListener(what.to_owned())),
        Err(e) => Err(ListenError::NotAListener(format!("{what}: {e}"))),
    };
    check(
        "not a stream socket",
        socket::getsockopt(&fd, sockopt::SockType).map(|t| t == SockType::Stream),
    )?;
    check(
        "not listening",
        socket::getsockopt(&fd, sockopt::AcceptConn),
    )?;
    check(
        "not a Unix socket",
        socket::getsockname::<socket::SockaddrStorage>(std::os::fd::AsRawFd::as_raw_fd(&fd))
            .map(|a| a.family() == Some(AddressFamily::Unix)),
    )?;
    nix::fcntl::fcntl(
        &fd,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )
    .map_err(|e| ListenError::NotAListener(format!("setting close-on-exec: {e}")))?;
    Ok(Some(Bound {
        listener: UnixListener::from(fd),
        made: None,
    }))
}

/// Binds the API socket at `path`: mode `0660`, group `gid` (when given). A stale socket
/// (nobody answers on it) is replaced; a live one, or anything that is not a socket, is not.
/// Blocking.
pub fn bind_blocking(path: &Path, gid: Option<u32>) -> Result<Bound, ListenError> {
    let io = |what, source| ListenError::Io {
        what,
        path: path.to_owned(),
        source,
    };
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            #[allow(clippy::disallowed_methods)] // blocking by contract
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(ListenError::InUse(path.to_owned()));
            }
        }
        Ok(_) => return Err(ListenError::NotASocket(path.to_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("checking", e)),
    }
    let name = path
        .file_name()
        .ok_or_else(|| io("binding", std::io::ErrorKind::InvalidInput.into()))?;
    let temp = path.with_file_name(format!(
        ".{}.{}.new",
        name.to_string_lossy(),
        std::process::id()
    ));
    let _ = std::fs::remove_file(&temp);
    let listener = UnixListener::bind(&temp).map_err(|e| io("binding", e))?;
    let made = (|| {
        std::os::unix::fs::chown(&temp, None, gid)?;
        std::fs::set_permissions(&temp, std::os::unix::fs::PermissionsExt::from_mode(0o660))?;
        std::fs::rename(&temp, path)?;
        std::fs::symlink_metadata(path)
    })();
    let m = match made {
        Ok(m) => m,
        Err(e) => {
            let _ = std::fs::remove_file(&temp);
            return Err(io("setting up", e));
        }
    };
    Ok(Bound {
        listener,
        made: Some((path.to_owned(), m.dev(), m.ino())),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::disallowed_methods)] // synchronous tests
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_socket_is_0660_and_a_live_one_or_a_file_is_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.sock");
        let bound = bind_blocking(&path, None).unwrap();
        let m = std::fs::symlink_metadata(&path).unwrap();
        assert!(m.file_type().is_socket());
        assert_eq!(m.permissions().mode() & 0o7777, 0o660);
        // Someone answers on it: a second daemon does not take it over.
        assert!(matches!(
            bind_blocking(&path, None),
            Err(ListenError::InUse(_))
        ));
        // Stale (nobody listens any more): replaced.
        drop(bound);
        let bound = bind_blocking(&path, None).unwrap();
        bound.remove_blocking();
        assert!(!path.exists());
        // A file that is not a socket is never removed.
        std::fs::write(&path, b"data").unwrap();
        assert!(matches!(
            bind_blocking(&path, None),
            Err(ListenError::NotASocket(_))
        ));
        assert_eq!(std::fs::read(&path).unwrap(), b"data");
    }
}
