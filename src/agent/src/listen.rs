//! Where the agent listens: a Unix socket path, an inherited file descriptor, or an AF_VSOCK port.

use std::fmt;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use nix::sys::socket::{getsockopt, sockopt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

use crate::server::{AgentContext, serve_connection};

/// Connections served at once per listener; further ones wait to be accepted.
const MAX_CONNECTIONS: usize = 64;

/// A place to listen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    /// `unix:/path/agent.sock` — created with mode 0600; a stale socket there is replaced.
    Unix(PathBuf),
    /// `fd:3` — an inherited socket: a listening one is accepted on; a connected one is served
    /// as the only connection.
    Fd(RawFd),
    /// `vsock:1024` — AF_VSOCK, any CID, this port (inside a microVM).
    Vsock(u32),
}

/// Errors setting up or running a listener.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("invalid listen address {0:?}: expected unix:PATH, fd:N or vsock:PORT")]
    Parse(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("inherited fd {fd} is not a usable socket: {reason}")]
    BadFd { fd: RawFd, reason: String },
    #[error("accept on {addr} failed: {source}")]
    Accept {
        addr: String,
        source: std::io::Error,
    },
}

impl FromStr for ListenAddr {
    type Err = ListenError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ListenError::Parse(s.to_owned());
        match s.split_once(':').ok_or_else(bad)? {
            ("unix", path) if path.starts_with('/') => Ok(Self::Unix(PathBuf::from(path))),
            ("fd", n) => n
                .parse::<RawFd>()
                .ok()
                .filter(|fd| *fd >= 0)
                .map(Self::Fd)
                .ok_or_else(bad),
            ("vsock", port) => port.parse().map(Self::Vsock).map_err(|_| bad()),
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unix(p) => write!(f, "unix:{}", p.display()),
            Self::Fd(fd) => write!(f, "fd:{fd}"),
            Self::Vsock(port) => write!(f, "vsock:{port}"),
        }
    }
}

/// A bound listener, ready to serve.
#[derive(Debug)]
pub enum Bound {
    Unix {
        listener: UnixListener,
        path: PathBuf,
    },
    Single(UnixStream),
    Vsock(tokio_vsock::VsockListener),
}

impl ListenAddr {
    /// Binds (or adopts) the socket. Done before serving so that a bad address fails startup.
    pub fn bind(&self) -> Result<Bound, ListenError> {
        let err = |source| ListenError::Bind {
            addr: self.to_string(),
            source,
        };
        match self {
            Self::Unix(path) => {
                if let Ok(meta) = std::fs::symlink_metadata(path) {
                    if !meta.file_type().is_socket() {
                        return Err(err(std::io::Error::new(
                            std::io::ErrorKind::AlreadyExists,
                            "path exists and is not a socket",
                        )));
                    }
                    std::fs::remove_file(path).map_err(err)?;
                }
                let listener = UnixListener::bind(path).map_err(err)?;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                    .map_err(err)?;
                Ok(Bound::Unix {
                    listener,
                    path: path.clone(),
                })
            }
            Self::Fd(fd) => adopt_fd(*fd),
            Self::Vsock(port) => {
                let addr = tokio_vsock::VsockAddr::new(tokio_vsock::VMADDR_CID_ANY, *port);
                tokio_vsock::VsockListener::bind(addr)
                    .map(Bound::Vsock)
                    .map_err(err)
            }
        }
    }
}

fn adopt_fd(fd: RawFd) -> Result<Bound, ListenError> {
    let bad = |reason: String| ListenError::BadFd { fd, reason };
    // Only take ownership of a descriptor that is open.
    // SAFETY: borrowed only for this fcntl; on a closed descriptor it fails with EBADF.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    if nix::fcntl::fcntl(borrowed, nix::fcntl::FcntlArg::F_GETFD).is_err() {
        return Err(bad("not an open descriptor".into()));
    }
    // SAFETY: the descriptor is open (checked above) and was handed to us to own; nothing else in
    // this process uses it.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let listening =
        getsockopt(&owned, sockopt::AcceptConn).map_err(|e| bad(format!("not a socket ({e})")))?;
    let _ = nix::fcntl::fcntl(
        &owned,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    );
    if listening {
        let std_listener = std::os::unix::net::UnixListener::from(owned);
        std_listener
            .set_nonblocking(true)
            .map_err(|e| bad(e.to_string()))?;
        let listener = UnixListener::from_std(std_listener).map_err(|e| bad(e.to_string()))?;
        Ok(Bound::Unix {
            listener,
            path: PathBuf::new(),
        })
    } else {
        let std_stream = std::os::unix::net::UnixStream::from(owned);
        std_stream
            .set_nonblocking(true)
            .map_err(|e| bad(e.to_string()))?;
        UnixStream::from_std(std_stream)
            .map(Bound::Single)
            .map_err(|e| bad(e.to_string()))
    }
}

impl Bound {
    /// Accepts and serves until the agent shuts down (or, for a single connection, until it
    /// ends); waits for open connections to finish before returning.
    pub async fn serve(self, addr: String, ctx: Arc<AgentContext>) -> Result<(), ListenError> {
        match self {
            Bound::Single(stream) => {
                serve_connection(stream, ctx).await;
                Ok(())
            }
            Bound::Unix { listener, path } => {
                let l = &listener;
                let result =
                    accept_loop(
                        &addr,
                        &ctx,
                        || async move { l.accept().await.map(|(s, _)| s) },
                    )
                    .await;
                if !path.as_os_str().is_empty() {
                    let _ = std::fs::remove_file(&path);
                }
                result
            }
            Bound::Vsock(listener) => {
                let l = &listener;
                accept_loop(
                    &addr,
                    &ctx,
                    || async move { l.accept().await.map(|(s, _)| s) },
                )
                .await
            }
        }
    }
}

async fn accept_loop<S, F, Fut>(
    addr: &str,
    ctx: &Arc<AgentContext>,
    mut accept: F,
) -> Result<(), ListenError>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
    F: FnMut() -> Fut,
    Fut: Future<Output = std::io::Result<S>>,
{
    let conns = TaskTracker::new();
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let result = loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break Ok(());
        };
        let accepted = tokio::select! {
            _ = ctx.shutdown.cancelled() => break Ok(()),
            a = accept() => a,
        };
        match accepted {
            Ok(stream) => {
                let ctx = ctx.clone();
                conns.spawn(async move {
                    serve_connection(stream, ctx).await;
                    drop(slot);
                });
            }
            Err(e) if is_transient(&e) => {
                tracing::warn!(%addr, error = %e, "accept failed; continuing")
            }
            Err(e) => {
                break Err(ListenError::Accept {
                    addr: addr.to_owned(),
                    source: e,
                });
            }
        }
    };
    conns.close();
    conns.wait().await;
    result
}

fn is_transient(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc::ECONNABORTED
                | libc::EINTR
                | libc::EMFILE
                | libc::ENFILE
                | libc::ENOBUFS
                | libc::ENOMEM
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_addresses() {
        assert_eq!(
            "unix:/run/a.sock".parse::<ListenAddr>().unwrap(),
            ListenAddr::Unix("/run/a.sock".into())
        );
        assert_eq!("fd:3".parse::<ListenAddr>().unwrap(), ListenAddr::Fd(3));
        assert_eq!(
            "vsock:1024".parse::<ListenAddr>().unwrap(),
            ListenAddr::Vsock(1024)
        );
        for bad in [
            "unix:rel.sock",
            "fd:-1",
            "fd:x",
            "vsock:",
            "tcp:1.2.3.4:5",
            "nothing",
        ] {
            assert!(bad.parse::<ListenAddr>().is_err(), "{bad}");
        }
        assert_eq!(ListenAddr::Vsock(5).to_string(), "vsock:5");
    }
}
