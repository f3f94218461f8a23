//! Waiting for a file to appear in a directory, told by inotify rather than found by polling.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// Why a directory cannot be watched.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("cannot {what} (watching {}): {source}", dir.display())]
    Io {
        what: &'static str,
        dir: PathBuf,
        source: io::Error,
    },
}

/// An inotify watch for entries created in (or moved into) one directory. Set it up *before*
/// whatever creates the entry starts, and no creation can be missed.
#[derive(Debug)]
pub struct DirWatch {
    fd: AsyncFd<OwnedFd>,
    dir: PathBuf,
}

/// Size of the fixed part of an inotify event (`wd`, `mask`, `cookie`, `len`).
const EVENT_HEADER: usize = 16;

impl DirWatch {
    /// Watches `dir`. Must be called within a tokio runtime.
    pub fn new(dir: &Path) -> Result<Self, WatchError> {
        let err = |what| {
            move |source| WatchError::Io {
                what,
                dir: dir.to_owned(),
                source,
            }
        };
        // SAFETY: plain system call.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if fd < 0 {
            return Err(err("create an inotify instance")(io::Error::last_os_error()));
        }
        // SAFETY: `fd` was just created and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let path = CString::new(dir.as_os_str().as_bytes())
            .map_err(|e| err("name the directory")(io::Error::other(e)))?;
        // SAFETY: `path` is a valid C string for the duration of the call.
        let wd = unsafe {
            libc::inotify_add_watch(
                fd.as_raw_fd(),
                path.as_ptr(),
                libc::IN_CREATE | libc::IN_MOVED_TO | libc::IN_ONLYDIR,
            )
        };
        if wd < 0 {
            return Err(err("add an inotify watch")(io::Error::last_os_error()));
        }
        // SAFETY: the `OwnedFd` is open and stays the same descriptor for as long as the
        // `AsyncFd` owns it.
        let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
            .map_err(|e| err("register the inotify descriptor")(io::Error::from(e)))?;
        Ok(Self {
            fd,
            dir: dir.to_owned(),
        })
    }

    /// Returns once `name` exists in the directory: at once if it does already, else when an
    /// event names it (or the event queue overflowed and a look finds it).
    pub async fn appeared(&self, name: &OsStr) -> Result<(), WatchError> {
        let path = self.dir.join(name);
        let exists = || std::fs::symlink_metadata(&path).is_ok();
        if exists() {
            return Ok(());
        }
        let mut buf = [0u8; 4096];
        loop {
            let mut guard = self.fd.readable().await.map_err(|source| WatchError::Io {
                what: "wait for inotify events",
                dir: self.dir.clone(),
                source,
            })?;
            let read = guard.try_io(|fd| {
                // SAFETY: `buf` is valid for `buf.len()` bytes.
                let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
                usize::try_from(n).map_err(|_| io::Error::last_os_error())
            });
            let n = match read {
                Ok(Ok(n)) => n,
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                Ok(Err(source)) => {
                    return Err(WatchError::Io {
                        what: "read inotify events",
                        dir: self.dir.clone(),
                        source,
                    });
                }
                Err(_would_block) => continue,
            };
            let (named, overflow) = events_name(buf.get(..n).unwrap_or_default(), name);
            if named || (overflow && exists()) {
                return Ok(());
            }
        }
    }
}

impl DirWatch {
    /// Closes the watch on a blocking thread: closing an inotify instance waits for an RCU grace
    /// period in the kernel (`fsnotify_destroy_group`), measured here at up to 16 ms on a busy
    /// machine — not something to do on an async thread or the boot's critical path.
    pub fn close_in_background(self) {
        let fd = self.fd.into_inner();
        tokio::task::spawn_blocking(move || drop(fd));
    }
}

/// Whether the inotify events in `buf` name `name`, and whether the queue overflowed.
fn events_name(buf: &[u8], name: &OsStr) -> (bool, bool) {
    let word = |b: &[u8], at: usize| {
        b.get(at..at + 4)
            .and_then(|s| s.try_into().ok())
            .map(u32::from_ne_bytes)
    };
    let (mut named, mut overflow) = (false, false);
    let mut rest = buf;
    while rest.len() >= EVENT_HEADER {
        let (Some(mask), Some(len)) = (word(rest, 4), word(rest, 12)) else {
            break;
        };
        let len = len as usize;
        let Some(raw) = rest.get(EVENT_HEADER..EVENT_HEADER + len) else {
            break;
        };
        if mask & libc::IN_Q_OVERFLOW != 0 {
            overflow = true;
        }
        // The name is NUL-padded.
        let end = raw.iter().position(|b| *b == 0).unwrap_or(raw.len());
        if raw.get(..end) == Some(name.as_bytes()) {
            named = true;
        }
        rest = rest.get(EVENT_HEADER + len..).unwrap_or_default();
    }
    (named, overflow)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::disallowed_methods)]
    use super::*;
    use std::future::Future;
    use std::task::Poll;
    use std::time::Duration;

    fn event(mask: u32, name: &[u8], padded: usize) -> Vec<u8> {
        let mut e = Vec::new();
        e.extend(1i32.to_ne_bytes());
        e.extend(mask.to_ne_bytes());
        e.extend(0u32.to_ne_bytes());
        e.extend((padded as u32).to_ne_bytes());
        let mut n = name.to_vec();
        n.resize(padded, 0);
        e.extend(n);
        e
    }

    #[test]
    fn events_are_parsed_by_name() {
        let mut buf = event(libc::IN_CREATE, b"agent.sock", 16);
        buf.extend(event(libc::IN_CREATE, b"vhost.sock", 16));
        assert_eq!(events_name(&buf, OsStr::new("vhost.sock")), (true, false));
        assert_eq!(events_name(&buf, OsStr::new("vhost")), (false, false));
        let o = event(libc::IN_Q_OVERFLOW, b"", 0);
        assert_eq!(events_name(&o, OsStr::new("x")), (false, true));
        // A truncated buffer is not read past its end.
        assert_eq!(
            events_name(&buf[..20], OsStr::new("agent.sock")),
            (false, false)
        );
    }

    #[tokio::test]
    async fn a_socket_bound_later_is_seen_and_an_existing_one_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let w = DirWatch::new(dir.path()).unwrap();
        let path = dir.path().join("s.sock");
        let waiting = w.appeared(OsStr::new("s.sock"));
        tokio::pin!(waiting);
        // Nothing there yet: the first poll must wait for an event.
        let first = std::future::poll_fn(|cx| Poll::Ready(waiting.as_mut().poll(cx))).await;
        assert!(first.is_pending());
        // Another name first: it must not end the wait.
        std::fs::write(dir.path().join("other"), b"").unwrap();
        let first = std::future::poll_fn(|cx| Poll::Ready(waiting.as_mut().poll(cx))).await;
        assert!(first.is_pending());
        let _l = tokio::net::UnixListener::bind(&path).unwrap();
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .unwrap()
            .unwrap();
        // Already there: no event needed.
        tokio::time::timeout(Duration::from_millis(100), w.appeared(OsStr::new("s.sock")))
            .await
            .unwrap()
            .unwrap();
        assert!(DirWatch::new(&dir.path().join("missing")).is_err());
    }
}
