//! Guest → host connections: a guest connecting to CID 2 (the host), port `P`, reaches the host
//! as a connection to the Unix socket `<uds_path>_P`, which the host must be listening on.
//!
//! The socket file is created with the process umask; callers keep it in a directory only they
//! (and the VMM, e.g. a jailed Firecracker's uid) can reach.

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use tokio::net::{UnixListener, UnixStream};

/// Why a listener for guest connections could not be set up or accept.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    /// Something other than a socket is at the path; it is left alone.
    #[error("cannot listen for guest port {port} on {}: a {kind} is in the way (only a stale socket is replaced)", path.display())]
    NotASocket {
        path: PathBuf,
        port: u32,
        kind: &'static str,
    },
    /// The path could not be inspected.
    #[error("cannot inspect {} (listener for guest port {port}): {source}", path.display())]
    Inspect {
        path: PathBuf,
        port: u32,
        source: io::Error,
    },
    /// A stale socket could not be removed.
    #[error("cannot remove the stale socket {} (listener for guest port {port}): {source}", path.display())]
    RemoveStale {
        path: PathBuf,
        port: u32,
        source: io::Error,
    },
    /// Binding the socket failed.
    #[error("cannot bind {} for guest port {port}: {source}", path.display())]
    Bind {
        path: PathBuf,
        port: u32,
        source: io::Error,
    },
    /// Called outside a tokio runtime (the listener needs its reactor).
    #[error("cannot listen on {} for guest port {port}: not called within a tokio runtime", path.display())]
    NoRuntime { path: PathBuf, port: u32 },
    /// Accepting a connection failed.
    #[error("accepting a guest connection to port {port} on {} failed: {source}", path.display())]
    Accept {
        path: PathBuf,
        port: u32,
        source: io::Error,
    },
}

/// The Unix socket on which guest connections to `port` arrive: `<uds_path>_<port>`.
pub fn listener_path(uds_path: &Path, port: u32) -> PathBuf {
    let mut path = uds_path.as_os_str().to_owned();
    path.push(format!("_{port}"));
    PathBuf::from(path)
}

/// Listens for guest connections to host port `port` of the VMM whose hybrid-vsock socket is
/// `uds_path`, i.e. on `<uds_path>_<port>`. A stale socket at that path is replaced; any other
/// kind of file there is an error and is not touched. The socket file is removed when the
/// listener is dropped (if it is still the one this listener bound). Must be called within a
/// tokio runtime.
pub fn listen(uds_path: &Path, port: u32) -> Result<HostListener, ListenError> {
    let path = listener_path(uds_path, port);
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(ListenError::NoRuntime { path, port });
    }
    match std::fs::symlink_metadata(&path) {
        Ok(meta) if meta.file_type().is_socket() => {
            tracing::debug!(path = %path.display(), port, "vsock: replacing a stale socket");
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => return Err(ListenError::RemoveStale { path, port, source }),
            }
        }
        Ok(meta) => {
            let kind = file_kind(&meta.file_type());
            return Err(ListenError::NotASocket { path, port, kind });
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => return Err(ListenError::Inspect { path, port, source }),
    }
    let listener = match UnixListener::bind(&path) {
        Ok(l) => l,
        Err(source) => return Err(ListenError::Bind { path, port, source }),
    };
    // Identify the file we created, so that drop never removes a socket someone else bound
    // there later.
    let identity = std::fs::symlink_metadata(&path)
        .ok()
        .map(|m| (m.dev(), m.ino()));
    tracing::debug!(path = %path.display(), port, "vsock: listening for guest connections");
    Ok(HostListener {
        listener,
        path,
        port,
        identity,
    })
}

fn file_kind(t: &std::fs::FileType) -> &'static str {
    if t.is_file() {
        "regular file"
    } else if t.is_dir() {
        "directory"
    } else if t.is_symlink() {
        "symbolic link"
    } else if t.is_fifo() {
        "FIFO"
    } else if t.is_block_device() || t.is_char_device() {
        "device"
    } else {
        "file"
    }
}

/// Accepts guest-initiated connections to one port. Removes its socket file on drop.
#[derive(Debug)]
pub struct HostListener {
    listener: UnixListener,
    path: PathBuf,
    port: u32,
    /// Device and inode of the socket file this listener created.
    identity: Option<(u64, u64)>,
}

impl HostListener {
    /// Waits for the next guest connection. The stream carries the guest's bytes from the
    /// first one (no handshake on this side).
    pub async fn accept(&self) -> Result<UnixStream, ListenError> {
        match self.listener.accept().await {
            Ok((stream, _)) => Ok(stream),
            Err(source) => Err(ListenError::Accept {
                path: self.path.clone(),
                port: self.port,
                source,
            }),
        }
    }

    /// The socket file: `<uds_path>_<port>`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The port guests connect to.
    pub fn port(&self) -> u32 {
        self.port
    }
}

impl Drop for HostListener {
    fn drop(&mut self) {
        let ours = std::fs::symlink_metadata(&self.path)
            .ok()
            .filter(|m| m.file_type().is_socket())
            .map(|m| (m.dev(), m.ino()));
        if ours.is_some()
            && ours == self.identity
            && let Err(e) = std::fs::remove_file(&self.path)
        {
            tracing::warn!(path = %self.path.display(), error = %e, "vsock: cannot remove listener socket");
        }
    }
}
