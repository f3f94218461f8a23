//! A microVM guest's serial console, kept in a file of bounded size.
//!
//! The VMM writes the serial port into one end of a socket pair — QEMU through
//! `-chardev socket,fd=N`, Firecracker as its stdout — and a small process of ours, the *console
//! keeper*, reads the other end and writes `console.log`:
//!
//! - the first [`ConsoleLimits::head`] bytes are kept for good (the boot: kernel version, the
//!   agent's start, whatever went wrong early);
//! - after them, output is appended until the file reaches [`ConsoleLimits::max`]; then the most
//!   recent [`ConsoleLimits::tail`] bytes are moved up behind the head, after a line saying how
//!   many bytes were dropped, and the file is cut there (*compaction*). So the file never exceeds
//!   `max`, its end is always the newest output (a kernel panic's last words, which error
//!   messages quote from the end of the file), and each byte is copied at most a few times
//!   whatever the guest prints.
//!
//! The keeper is forked from the creating process (no program to find or install) and then only
//! makes async-signal-safe system calls on memory allocated before the fork — the rules for the
//! child of a multi-threaded process. One fork (a fork copies the creator's page tables: a
//! second would double that on every create); a thread of the creator's reaps it, and once the
//! creator is gone init (or the nearest subreaper) does. It writes itself into the sandbox's
//! cgroup when given one, runs as the sandbox's unprivileged identity, not dumpable, in a
//! session of its own, with every other file descriptor closed. It ends when the VMM's end of the socket
//! pair closes (the VMM exited, for any reason) after writing what was left; `destroy` and `gc`
//! kill it like any process the record names (backends list it in `meta.helpers`).
//!
//! The pair is a blocking `SOCK_STREAM` pair, and the keeper's end exists only in the keeper
//! (close-on-exec here, dropped by the creator once forked). A keeper that lags fills the
//! socket's buffer: QEMU's chardev then waits, slowing the guest's UART as a real serial line
//! would, while Firecracker (which makes its stdout non-blocking) drops the bytes it cannot
//! write; a keeper that is gone leaves the VMM's end without a
//! reader, so its writes fail with `EPIPE` (both VMMs are Rust or ignore `SIGPIPE`; the first
//! one gets `ECONNRESET` if the keeper died with bytes unread) instead of blocking: QEMU's
//! socket chardev then drops console output, Firecracker's serial device counts a write error
//! and drops it, and the guest carries on.
//!
//! [`start_console`] does the whole set-up a backend needs: the file, the pair, the keeper.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use crate::seccomp_watch::SeccompWatch;
use crate::{ProcessRef, VmmIdentity};

/// Why the console keeper could not be started.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error(
        "console log limits head {head} + tail {tail} (+ {MARKER_MAX} for the marker) exceed the maximum {max}"
    )]
    Limits { head: u64, tail: u64, max: u64 },
    #[error("cannot {what} for the console keeper: {source}")]
    Sys {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("the console keeper's set-up failed at {step}: {source}")]
    Child {
        step: &'static str,
        source: std::io::Error,
    },
    #[error("the console keeper (pid {0}) exited before it could be recorded")]
    Gone(i32),
    #[error("cannot create the console log {}: {source}", path.display())]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the console keeper's start-up task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// How large `console.log` may grow and what of it is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsoleLimits {
    /// The first bytes of output, kept for good.
    pub head: u64,
    /// How much of the most recent output each compaction keeps.
    pub tail: u64,
    /// The file never grows beyond this.
    pub max: u64,
}

const KIB: u64 = 1024;

impl ConsoleLimits {
    /// 256 KiB of boot, at least the last 1 MiB of output, never more than 4 MiB on disk. The
    /// head is far more than a boot prints (about 2 KiB with `quiet`); the tail is far more than
    /// the 64 KiB error messages look through for a panic.
    pub const DEFAULT: Self = Self {
        head: 256 * KIB,
        tail: 1024 * KIB,
        max: 4096 * KIB,
    };

    /// Whether a compaction always has room: head, marker and tail fit below `max` with at least
    /// one byte to spare (so that appending makes progress).
    pub fn check(self) -> Result<Self, ConsoleError> {
        let needed = self
            .head
            .checked_add(self.tail)
            .and_then(|n| n.checked_add(MARKER_MAX as u64));
        match needed {
            Some(n) if n < self.max && self.tail > 0 => Ok(self),
            _ => Err(ConsoleError::Limits {
                head: self.head,
                tail: self.tail,
                max: self.max,
            }),
        }
    }
}

impl Default for ConsoleLimits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

const MARKER_START: &[u8] = b"\n[luminaguard: ";
const MARKER_END: &[u8] = b" bytes of console output dropped here]\n";
/// The longest marker line: a 20-digit count.
pub const MARKER_MAX: usize = MARKER_START.len() + 20 + MARKER_END.len();

/// `n` in decimal, written into the end of `buf`; returns the digits. No allocation.
pub(crate) fn decimal(n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut n = n;
    let mut i = buf.len();
    loop {
        i -= 1;
        // n % 10 < 10: the cast cannot truncate.
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 || i == 0 {
            break;
        }
    }
    &buf[i..]
}

/// The marker line for `dropped` bytes, in `out`; returns its length. No allocation.
fn marker(dropped: u64, out: &mut [u8; MARKER_MAX]) -> usize {
    let mut digits = [0u8; 20];
    let digits = decimal(dropped, &mut digits);
    let mut len = 0;
    for part in [MARKER_START, digits, MARKER_END] {
        for b in part {
            out[len] = *b;
            len += 1;
        }
    }
    len
}

/// An `errno`.
type Errno = i32;

fn errno() -> Errno {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// `console.log` as the keeper writes it: its length and what has been dropped so far. Every
/// method makes only async-signal-safe system calls (`pwrite`, `pread`, `ftruncate`) and never
/// allocates or panics.
#[derive(Debug)]
pub struct BoundedLog {
    fd: RawFd,
    limits: ConsoleLimits,
    /// The file's length.
    len: u64,
    /// The marker's length behind the head; 0 before the first compaction.
    marker_len: u64,
    /// Output dropped so far.
    dropped: u64,
    /// A write failed halfway through a compaction and the file could not be reset: from then on
    /// output is counted as dropped, not written.
    broken: bool,
}

impl BoundedLog {
    /// The log in `fd`, an empty file open for reading and writing.
    pub fn new(fd: RawFd, limits: ConsoleLimits) -> Result<Self, ConsoleError> {
        Ok(Self {
            fd,
            limits: limits.check()?,
            len: 0,
            marker_len: 0,
            dropped: 0,
            broken: false,
        })
    }

    /// Bytes of output dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// The file's length.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn pwrite_all(&self, mut buf: &[u8], mut off: u64) -> Result<(), Errno> {
        while !buf.is_empty() {
            let o = libc::off_t::try_from(off).map_err(|_| libc::EFBIG)?;
            // SAFETY: `buf` is valid for `buf.len()` bytes.
            let n = unsafe { libc::pwrite(self.fd, buf.as_ptr().cast(), buf.len(), o) };
            if n < 0 {
                let e = errno();
                if e == libc::EINTR {
                    continue;
                }
                return Err(e);
            }
            let n = usize::try_from(n).map_err(|_| libc::EIO)?;
            if n == 0 {
                return Err(libc::EIO);
            }
            buf = buf.get(n..).unwrap_or_default();
            off = off.saturating_add(n as u64);
        }
        Ok(())
    }

    fn pread_exact(&self, buf: &mut [u8], mut off: u64) -> Result<(), Errno> {
        let mut done = 0;
        while let Some(rest) = buf.get_mut(done..) {
            if rest.is_empty() {
                break;
            }
            let o = libc::off_t::try_from(off).map_err(|_| libc::EFBIG)?;
            // SAFETY: `rest` is valid for `rest.len()` bytes.
            let n = unsafe { libc::pread(self.fd, rest.as_mut_ptr().cast(), rest.len(), o) };
            if n < 0 {
                let e = errno();
                if e == libc::EINTR {
                    continue;
                }
                return Err(e);
            }
            let n = usize::try_from(n).map_err(|_| libc::EIO)?;
            if n == 0 {
                return Err(libc::EIO);
            }
            done += n;
            off = off.saturating_add(n as u64);
        }
        Ok(())
    }

    /// Appends `data`, compacting whenever the file is full. `scratch` is the buffer compaction
    /// copies through (any size; larger is faster). A failed write drops what it was writing.
    pub fn append(&mut self, data: &[u8], scratch: &mut [u8]) -> Result<(), Errno> {
        let mut rest = data;
        while !rest.is_empty() {
            if self.broken {
                self.dropped = self.dropped.saturating_add(rest.len() as u64);
                return Ok(());
            }
            let room = self.limits.max.saturating_sub(self.len);
            if room == 0 {
                self.compact(scratch)?;
                continue;
            }
            let n = usize::try_from(room).unwrap_or(usize::MAX).min(rest.len());
            let (now, later) = rest.split_at(n);
            if let Err(e) = self.pwrite_all(now, self.len) {
                self.dropped = self.dropped.saturating_add(rest.len() as u64);
                // What was partly written stays; where the file ends is no longer known.
                self.resync();
                return Err(e);
            }
            self.len += n as u64;
            rest = later;
        }
        Ok(())
    }

    /// Takes the file's length from the file itself after a failed write.
    fn resync(&mut self) {
        // SAFETY: an all-zero `stat` is a valid value for fstat to fill in.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: `st` is a valid, writable `stat`.
        if unsafe { libc::fstat(self.fd, &mut st) } == 0 {
            self.len = u64::try_from(st.st_size).unwrap_or(0).min(self.limits.max);
        } else {
            self.broken = true;
        }
    }

    /// Moves the last `tail` bytes up behind the head and a new marker, and cuts the file there.
    /// Only called with a full file (`len == max`), so the source lies behind the destination.
    fn compact(&mut self, scratch: &mut [u8]) -> Result<(), Errno> {
        let ConsoleLimits { head, tail, max } = self.limits;
        let src = max - tail;
        let body = head + self.marker_len;
        let dropped = self.dropped.saturating_add(src.saturating_sub(body));
        let mut text = [0u8; MARKER_MAX];
        let mlen = marker(dropped, &mut text);
        let dst = head + mlen as u64;
        let result = self.move_down(src, dst, tail, scratch).and_then(|()| {
            self.pwrite_all(text.get(..mlen).unwrap_or_default(), head)?;
            self.truncate(dst + tail)
        });
        match result {
            Ok(()) => {
                self.len = dst + tail;
                self.marker_len = mlen as u64;
                self.dropped = dropped;
                Ok(())
            }
            Err(e) => {
                // Half-moved: keep the head, drop the rest.
                self.dropped = self.dropped.saturating_add(self.len.saturating_sub(body));
                if self.truncate(head).is_ok() {
                    self.len = head;
                    self.marker_len = 0;
                } else {
                    self.broken = true;
                }
                Err(e)
            }
        }
    }

    /// Copies `len` bytes from `src` down to `dst` (`dst <= src`), front to back: each chunk is
    /// read before anything overwrites it.
    fn move_down(&self, src: u64, dst: u64, len: u64, scratch: &mut [u8]) -> Result<(), Errno> {
        if scratch.is_empty() || dst > src {
            return Err(libc::EINVAL);
        }
        let mut done = 0;
        while done < len {
            let n = usize::try_from(len - done)
                .unwrap_or(usize::MAX)
                .min(scratch.len());
            let buf = scratch.get_mut(..n).ok_or(libc::EINVAL)?;
            self.pread_exact(buf, src + done)?;
            self.pwrite_all(buf, dst + done)?;
            done += n as u64;
        }
        Ok(())
    }

    fn truncate(&self, len: u64) -> Result<(), Errno> {
        let l = libc::off_t::try_from(len).map_err(|_| libc::EFBIG)?;
        loop {
            // SAFETY: plain system call on our descriptor.
            if unsafe { libc::ftruncate(self.fd, l) } == 0 {
                return Ok(());
            }
            let e = errno();
            if e != libc::EINTR {
                return Err(e);
            }
        }
    }
}

/// Reads `input` until end of file and keeps what arrives in `log`. Async-signal-safe.
fn keep(input: RawFd, log: &mut BoundedLog, buf: &mut [u8], scratch: &mut [u8]) {
    loop {
        // SAFETY: `buf` is valid for `buf.len()` bytes.
        let n = unsafe { libc::read(input, buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            if errno() == libc::EINTR {
                continue;
            }
            return;
        }
        let Ok(n) = usize::try_from(n) else { return };
        if n == 0 {
            return;
        }
        // A failed write drops that output; the keeper carries on (the guest must not stall).
        let _ = log.append(buf.get(..n).unwrap_or_default(), scratch);
    }
}

/// Size of the keeper's read buffer and of its compaction buffer.
const BUF: usize = 64 * 1024;

/// Closes every descriptor but `keep` (sorted; negative entries are ignored). Async-signal-safe.
fn close_all_but(keep: &[RawFd]) {
    let mut from: u32 = 0;
    for &fd in keep {
        let Ok(fd) = u32::try_from(fd) else { continue };
        if fd > from {
            close_range(from, fd - 1);
        }
        from = fd.saturating_add(1);
    }
    close_range(from, u32::MAX);
}

fn close_range(first: u32, last: u32) {
    // SAFETY: plain system call; closing descriptors this process no longer uses.
    let r = unsafe { libc::syscall(libc::SYS_close_range, first, last, 0u32) };
    if r == 0 {
        return;
    }
    // No close_range (Linux < 5.9): close one by one, up to the descriptor limit.
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit.
    let max = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        u32::try_from(lim.rlim_cur).unwrap_or(1 << 20).min(1 << 20)
    } else {
        1024
    };
    for fd in first..=last.min(max) {
        // SAFETY: as above.
        unsafe { libc::close(fd as libc::c_int) };
    }
}

/// A pipe whose ends are closed on exec.
fn pipe() -> Result<(OwnedFd, OwnedFd), ConsoleError> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` has room for two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(ConsoleError::Sys {
            what: "create a pipe",
            source: std::io::Error::last_os_error(),
        });
    }
    // SAFETY: both descriptors were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// The keeper's report: its pid once set up, or the step that failed and its errno.
#[derive(Debug, Clone, Copy)]
#[repr(C)]
struct Report {
    pid: i32,
    step: i32,
    errno: i32,
}

const STEPS: [&str; 5] = [
    "joining the cgroup",
    "starting a session",
    "dropping privileges",
    "forking the keeper",
    "reporting",
];

fn report(fd: RawFd, r: Report) {
    // SAFETY: `r` is a plain `repr(C)` value of `size_of::<Report>()` bytes.
    unsafe {
        libc::write(
            fd,
            std::ptr::from_ref(&r).cast(),
            std::mem::size_of::<Report>(),
        );
    }
}

/// A running console keeper.
#[derive(Debug)]
pub struct Keeper {
    /// Its pid (it is not our child: it belongs to init, or the nearest subreaper).
    pub pid: i32,
    /// The read end of a pipe whose only write end the keeper holds: end of file once it exited.
    done: OwnedFd,
}

impl Keeper {
    /// Waits, at most `limit`, until the keeper has exited — i.e. written everything the VMM sent
    /// it before the VMM exited. Whether it did.
    pub async fn finished(self, limit: std::time::Duration) -> bool {
        use tokio::io::AsyncReadExt;
        let Ok(mut rx) = tokio::net::unix::pipe::Receiver::from_owned_fd(self.done) else {
            return false;
        };
        let mut byte = [0u8; 1];
        let eof = async {
            loop {
                match rx.read(&mut byte).await {
                    Ok(0) => return true,
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => return false,
                }
            }
        };
        tokio::time::timeout(limit, eof).await.unwrap_or(false)
    }
}

/// Starts the console keeper: it reads `input` (its end of the VMM's serial socket pair) and
/// keeps what arrives in `log` (an empty file open for reading and writing) within `limits`,
/// inside the cgroup whose `cgroup.procs` files are `cgroup_procs`, as `who`. Blocking (a fork,
/// and a wait for the keeper's report that it is set up): call it from a blocking task.
pub fn start_keeper(
    input: OwnedFd,
    log: OwnedFd,
    limits: ConsoleLimits,
    cgroup_procs: &[RawFd],
    who: &VmmIdentity,
) -> Result<Keeper, ConsoleError> {
    start(input, log, limits, cgroup_procs, Some(who), None)
}

/// A console keeper started for a VMM by [`start_console`].
#[derive(Debug)]
pub struct StartedConsole {
    /// The end of the socket pair the VMM writes its serial port into (QEMU's
    /// `-chardev socket,fd=N`, Firecracker's stdout). Once the VMM holds it, drop this copy: the
    /// keeper ends when the last writer is gone.
    pub vmm_end: OwnedFd,
    /// The keeper, by pid and start time: for the sandbox's record (`meta.helpers`).
    pub process: ProcessRef,
    pub keeper: Keeper,
}

/// Creates the console log at `path` (a new file, mode 0600, replacing whatever was there), a
/// socket pair, and the keeper of the log ([`start_keeper`]), in the cgroup whose
/// `cgroup.procs` files are `cgroup_procs`, as `who` (`None`: as the caller, who then need not
/// be root). The work runs on a blocking thread, started before this returns: the caller can do
/// something else meanwhile and await the result later.
///
/// With `watch`, the keeper is also the sandbox's seccomp supervisor (see
/// [`crate::seccomp_watch`]): a process sandbox's PID 1 writes its console into the pair and
/// hands its seccomp listener over on `watch.handoff`.
pub fn start_console(
    path: &Path,
    limits: ConsoleLimits,
    cgroup_procs: &[OwnedFd],
    who: Option<&VmmIdentity>,
    watch: Option<SeccompWatch>,
) -> impl std::future::Future<Output = Result<StartedConsole, ConsoleError>> + Send + use<> {
    let pending = spawn_console(path, limits, cgroup_procs, who, watch);
    async move {
        let pending = pending?;
        let vmm_end = pending.vmm_end;
        let (process, keeper) = PendingConsole::started(pending.task).await?;
        Ok(StartedConsole {
            vmm_end,
            process,
            keeper,
        })
    }
}

/// A console whose keeper is being started: the socket pair's other end is ready at once, so
/// the writer (a process sandbox's init) can start while the keeper is still being forked.
#[derive(Debug)]
pub struct PendingConsole {
    /// The end the console is written into (see [`StartedConsole::vmm_end`]).
    pub vmm_end: OwnedFd,
    task: tokio::task::JoinHandle<Result<Keeper, ConsoleError>>,
}

impl PendingConsole {
    /// Waits until the keeper runs: its pid and start time, for the sandbox's record.
    pub async fn keeper(self) -> Result<(ProcessRef, Keeper), ConsoleError> {
        Self::started(self.task).await
    }

    async fn started(
        task: tokio::task::JoinHandle<Result<Keeper, ConsoleError>>,
    ) -> Result<(ProcessRef, Keeper), ConsoleError> {
        let keeper = task.await??;
        let process = ProcessRef::of(keeper.pid).ok_or(ConsoleError::Gone(keeper.pid))?;
        Ok((process, keeper))
    }
}

/// [`start_console`], returning as soon as the socket pair exists, with the keeper's start (two
/// forks and a wait, in the sandbox's cgroup) under way on a blocking thread.
pub fn spawn_console(
    path: &Path,
    limits: ConsoleLimits,
    cgroup_procs: &[OwnedFd],
    who: Option<&VmmIdentity>,
    watch: Option<SeccompWatch>,
) -> Result<PendingConsole, ConsoleError> {
    // Its own copies: the task may outlive the caller's on an early return.
    let procs = cgroup_procs
        .iter()
        .map(OwnedFd::try_clone)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| ConsoleError::Sys {
            what: "duplicate the cgroup.procs descriptors",
            source,
        })?;
    // Both ends close-on-exec: only the VMM (which gets its end as a named descriptor or as
    // stdout) and the keeper ever hold one.
    let (keeper_end, vmm_end) =
        std::os::unix::net::UnixStream::pair().map_err(|source| ConsoleError::Sys {
            what: "create the serial socket pair",
            source,
        })?;
    let who = who.cloned();
    let path = path.to_owned();
    let task = tokio::task::spawn_blocking(move || {
        let log = create_log(&path)?;
        let raw: Vec<RawFd> = procs.iter().map(AsRawFd::as_raw_fd).collect();
        start(
            OwnedFd::from(keeper_end),
            log,
            limits,
            &raw,
            who.as_ref(),
            watch,
        )
    });
    Ok(PendingConsole {
        vmm_end: OwnedFd::from(vmm_end),
        task,
    })
}

/// The console log at `path`: a new file, mode 0600, replacing whatever was there (never one
/// found there, nor what a link found there points to). Blocking.
fn create_log(path: &Path) -> Result<OwnedFd, ConsoleError> {
    use std::os::unix::fs::OpenOptionsExt;
    #[allow(clippy::disallowed_methods)] // blocking by contract
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(ConsoleError::Create {
                path: path.to_owned(),
                source,
            });
        }
    }
    #[allow(clippy::disallowed_methods)] // blocking by contract
    let log = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .map_err(|source| ConsoleError::Create {
            path: path.to_owned(),
            source,
        })?;
    Ok(OwnedFd::from(log))
}

/// The keeper of a process sandbox whose creator outlives it (`luminaguard run`; later, a
/// daemon): a thread of the creator's rather than a process, so no fork lies on the create's
/// path. The same loop as the keeper process ([`crate::seccomp_watch`]): it keeps the console
/// written into the returned end in the log at `path`, and answers and records the seccomp
/// notifications of the listener the sandbox hands over on `watch.handoff`; it ends when the
/// console's writers are gone and the listener has no process left. Blocking (creates the
/// log): call it from a blocking task.
pub fn keep_in_thread(
    path: &Path,
    limits: ConsoleLimits,
    watch: SeccompWatch,
) -> Result<OwnedFd, ConsoleError> {
    use std::os::fd::IntoRawFd;
    let log = create_log(path)?;
    let mut bounded = BoundedLog::new(log.as_raw_fd(), limits)?;
    let (keeper_end, writer_end) =
        std::os::unix::net::UnixStream::pair().map_err(|source| ConsoleError::Sys {
            what: "create the console socket pair",
            source,
        })?;
    let SeccompWatch {
        handoff,
        record,
        mut writer,
    } = watch;
    std::thread::Builder::new()
        .name("lg-keeper".into())
        .spawn(move || {
            let (mut buf, mut scratch) = (vec![0u8; BUF], vec![0u8; BUF]);
            // The loop closes the handoff socket (and the listener it receives) itself.
            let handoff = handoff.into_raw_fd();
            crate::seccomp_watch::serve(
                keeper_end.as_raw_fd(),
                &mut bounded,
                &mut buf,
                &mut scratch,
                handoff,
                &mut writer,
            );
            drop((keeper_end, log, record));
        })
        .map_err(|source| ConsoleError::Sys {
            what: "start the keeper thread",
            source,
        })?;
    Ok(OwnedFd::from(writer_end))
}

/// [`start_keeper`], as `who` or (`None`) as the caller; with `watch`, also supervising a
/// process sandbox's seccomp listener.
fn start(
    input: OwnedFd,
    log: OwnedFd,
    limits: ConsoleLimits,
    cgroup_procs: &[RawFd],
    who: Option<&VmmIdentity>,
    watch: Option<SeccompWatch>,
) -> Result<Keeper, ConsoleError> {
    let mut bounded = BoundedLog::new(log.as_raw_fd(), limits)?;
    // Everything the children use is allocated here, before the fork.
    let mut buf = vec![0u8; BUF];
    let mut scratch = vec![0u8; BUF];
    let (report_r, report_w) = pipe()?;
    let (done_r, done_w) = pipe()?;
    let groups = who.map(|w| w.supplementary.clone());
    let ids = who.map(|w| (w.uid, w.gid));
    let input_fd = input.as_raw_fd();
    let log_fd = log.as_raw_fd();
    let (handoff_fd, record_fd) = watch
        .as_ref()
        .map_or((-1, -1), |w| (w.handoff.as_raw_fd(), w.record.as_raw_fd()));
    let mut writer = watch.as_ref().map(|w| w.writer.clone());
    let mut keep_fds = [input_fd, log_fd, done_w.as_raw_fd(), handoff_fd, record_fd];
    keep_fds.sort_unstable();
    let name = c"lg-console";

    // SAFETY: the child of this fork runs only async-signal-safe system calls on memory allocated
    // above, and leaves with `_exit`: it never returns into Rust code that could allocate, lock
    // or unwind.
    let keeper = unsafe { libc::fork() };
    if keeper < 0 {
        return Err(ConsoleError::Sys {
            what: "fork",
            source: std::io::Error::last_os_error(),
        });
    }
    if keeper == 0 {
        // The keeper.
        let w = report_w.as_raw_fd();
        let fail = |step: i32| -> ! {
            report(
                w,
                Report {
                    pid: 0,
                    step,
                    errno: errno(),
                },
            );
            // SAFETY: leaving the child without running any Rust destructors.
            unsafe { libc::_exit(1) }
        };
        // SAFETY: the whole block makes async-signal-safe system calls on memory allocated before the fork.
        unsafe {
            let procs: &[i32] = cgroup_procs;
            if luminaguard_core::child::join_cgroups(procs).is_err() {
                fail(0);
            }
            if libc::setsid() < 0 {
                fail(1);
            }
            if let (Some(groups), Some((uid, gid))) = (&groups, ids)
                && luminaguard_core::child::become_user(luminaguard_core::child::Credentials {
                    uid,
                    gid,
                    groups,
                })
                .is_err()
            {
                fail(2);
            }
            libc::prctl(libc::PR_SET_NAME, name.as_ptr(), 0, 0, 0);
            libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
            report(
                w,
                Report {
                    pid: libc::getpid(),
                    step: -1,
                    errno: 0,
                },
            );
            close_all_but(&keep_fds);
            match writer.as_mut() {
                Some(w) => crate::seccomp_watch::serve(
                    input_fd,
                    &mut bounded,
                    &mut buf,
                    &mut scratch,
                    handoff_fd,
                    w,
                ),
                None => keep(input_fd, &mut bounded, &mut buf, &mut scratch),
            }
            libc::_exit(0);
        }
    }
    drop(report_w);
    drop(done_w);
    drop(input);
    drop(log);
    drop(watch);
    // Reaped whenever it ends, on a plain thread of the creator's (a runtime's blocking pool
    // would keep a short-lived creator from exiting): no zombie while the creator lives, and
    // once it is gone, init (or the nearest subreaper) inherits it.
    let reap = std::thread::Builder::new()
        .name(format!("lg-reap-{keeper}"))
        .spawn(move || {
            let mut status = 0;
            // SAFETY: waiting for our own child; `status` is writable.
            while unsafe { libc::waitpid(keeper, &mut status, 0) } < 0 && errno() == libc::EINTR {}
        });
    let mut r = Report {
        pid: 0,
        step: 4,
        errno: libc::EIO,
    };
    // SAFETY: reading at most `size_of::<Report>()` bytes into `r`, a plain `repr(C)` value.
    let n = unsafe {
        libc::read(
            report_r.as_raw_fd(),
            std::ptr::from_mut(&mut r).cast(),
            std::mem::size_of::<Report>(),
        )
    };
    if usize::try_from(n).ok() != Some(std::mem::size_of::<Report>()) {
        r = Report {
            pid: 0,
            step: 4,
            errno: libc::EIO,
        };
    }
    if let Err(source) = reap {
        // SAFETY: killing our own child, which nothing else will reap.
        unsafe { libc::kill(keeper, libc::SIGKILL) };
        return Err(ConsoleError::Sys {
            what: "start the keeper's reaper thread",
            source,
        });
    }
    if r.pid == keeper {
        return Ok(Keeper {
            pid: keeper,
            done: done_r,
        });
    }
    Err(ConsoleError::Child {
        step: usize::try_from(r.step)
            .ok()
            .and_then(|i| STEPS.get(i))
            .copied()
            .unwrap_or("an unknown step"),
        source: std::io::Error::from_raw_os_error(r.errno),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::disallowed_methods)]
    use super::*;

    fn small() -> ConsoleLimits {
        ConsoleLimits {
            head: 100,
            tail: 300,
            max: 100 + 300 + MARKER_MAX as u64 + 50,
        }
    }

    fn file() -> (tempfile::NamedTempFile, std::fs::File) {
        let f = tempfile::NamedTempFile::new().unwrap();
        let h = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(f.path())
            .unwrap();
        (f, h)
    }

    #[test]
    fn the_marker_names_the_count() {
        let mut out = [0u8; MARKER_MAX];
        let n = marker(0, &mut out);
        assert_eq!(
            &out[..n],
            b"\n[luminaguard: 0 bytes of console output dropped here]\n"
        );
        let n = marker(u64::MAX, &mut out);
        assert_eq!(n, MARKER_MAX);
        assert!(String::from_utf8_lossy(&out[..n]).contains("18446744073709551615 bytes"));
    }

    #[test]
    fn limits_without_room_are_refused() {
        assert!(ConsoleLimits::DEFAULT.check().is_ok());
        assert!(
            ConsoleLimits {
                head: 10,
                tail: 10,
                max: 20 + MARKER_MAX as u64
            }
            .check()
            .is_err()
        );
        assert!(
            ConsoleLimits {
                head: 0,
                tail: 0,
                max: 1 << 20
            }
            .check()
            .is_err()
        );
    }

    /// Feeds `input` in pieces of `piece` bytes and checks the file against it.
    fn check(input: &[u8], piece: usize, limits: ConsoleLimits, scratch: usize) {
        let (f, h) = file();
        let mut log = BoundedLog::new(h.as_raw_fd(), limits).unwrap();
        let mut scratch = vec![0u8; scratch];
        for c in input.chunks(piece) {
            log.append(c, &mut scratch).unwrap();
            assert!(log.len() <= limits.max);
        }
        let got = std::fs::read(f.path()).unwrap();
        assert_eq!(got.len() as u64, log.len());
        assert!(got.len() as u64 <= limits.max, "{} bytes", got.len());
        if input.len() as u64 <= limits.max {
            assert_eq!(got, input, "nothing is dropped below the maximum");
            assert_eq!(log.dropped(), 0);
            return;
        }
        let head = limits.head as usize;
        assert_eq!(&got[..head], &input[..head], "the head is kept");
        let mut m = [0u8; MARKER_MAX];
        let mlen = marker(log.dropped(), &mut m);
        assert_eq!(&got[head..head + mlen], &m[..mlen], "then the marker");
        let body = &got[head + mlen..];
        assert!(
            body.len() as u64 >= limits.tail,
            "at least the tail is kept"
        );
        assert!(
            input.ends_with(body),
            "the body is the newest output, in order"
        );
        assert_eq!(
            head as u64 + log.dropped() + body.len() as u64,
            input.len() as u64,
            "every byte is either kept or counted as dropped"
        );
    }

    #[test]
    fn output_is_kept_whole_until_the_maximum() {
        let input: Vec<u8> = (0..small().max).map(|i| (i % 251) as u8).collect();
        check(&input, 7, small(), 16);
    }

    #[test]
    fn a_flood_keeps_head_marker_and_newest_tail() {
        let input: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
        for piece in [1, 13, 333, 4096, 100_000] {
            for scratch in [1, 64, 4096] {
                check(&input, piece, small(), scratch);
            }
        }
        // The real sizes, with a flood of 3 × the maximum in 64 KiB reads.
        let d = ConsoleLimits::DEFAULT;
        let input: Vec<u8> = (0..3 * d.max).map(|i| (i % 241) as u8).collect();
        check(&input, BUF, d, BUF);
    }

    #[tokio::test]
    async fn the_keeper_drains_its_input_and_ends_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        let log = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .unwrap();
        let (r, w) = std::os::unix::net::UnixStream::pair().unwrap();
        // The keeper drops to the given identity, which takes root (setgroups).
        if !luminaguard_testkit::privileged("a keeper dropping to a given identity") {
            return;
        }
        let me = VmmIdentity {
            uid: 0,
            gid: 0,
            supplementary: Vec::new(),
        };
        let limits = small();
        let keeper = start_keeper(OwnedFd::from(r), OwnedFd::from(log), limits, &[], &me).unwrap();
        let pid = keeper.pid;
        // It names itself once it runs (the pid is reported as soon as it is forked).
        let start = std::time::Instant::now();
        loop {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
            if comm.trim() == "lg-console" {
                break;
            }
            assert!(
                start.elapsed() < std::time::Duration::from_secs(5),
                "named {comm:?}"
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let mut w = w;
        let input: Vec<u8> = (0..50_000u32).map(|i| (i % 199) as u8).collect();
        std::io::Write::write_all(&mut w, &input).unwrap();
        drop(w);
        assert!(
            keeper.finished(std::time::Duration::from_secs(10)).await,
            "the keeper ends with its input"
        );
        // Its descriptors close just before it becomes a zombie.
        let start = std::time::Instant::now();
        while ProcessRef::of(pid).is_some() {
            assert!(
                start.elapsed() < std::time::Duration::from_secs(5),
                "keeper {pid} still runs"
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let got = std::fs::read(&path).unwrap();
        assert!(got.len() as u64 <= limits.max);
        assert_eq!(&got[..100], &input[..100]);
        assert!(input.ends_with(&got[got.len() - 300..]));
    }

    /// Waits (polling, at most 5 s) until no process is `pid` any more (a zombie counts as gone:
    /// its descriptors are closed).
    fn wait_gone(pid: i32) {
        let start = std::time::Instant::now();
        while ProcessRef::of(pid).is_some() {
            assert!(
                start.elapsed() < std::time::Duration::from_secs(5),
                "process {pid} still runs"
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    #[tokio::test]
    async fn start_console_creates_the_log_and_keeps_what_the_vmm_end_carries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        // A stale log is emptied: the keeper's bookkeeping starts from an empty file.
        std::fs::write(&path, b"an earlier boot's console").unwrap();
        let limits = small();
        let started = start_console(&path, limits, &[], None, None).await.unwrap();
        assert!(started.process.alive());
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let mut w = std::os::unix::net::UnixStream::from(started.vmm_end);
        let input: Vec<u8> = (0..100_000u32).map(|i| (i % 211) as u8).collect();
        std::io::Write::write_all(&mut w, &input).unwrap();
        drop(w);
        assert!(
            started
                .keeper
                .finished(std::time::Duration::from_secs(10))
                .await,
            "the keeper ends with the VMM's end"
        );
        wait_gone(started.process.pid);
        let got = std::fs::read(&path).unwrap();
        assert!(got.len() as u64 <= limits.max, "{} bytes", got.len());
        assert_eq!(&got[..100], &input[..100], "the head is kept");
        assert!(
            input.ends_with(&got[got.len() - 300..]),
            "the end is the newest output"
        );
    }

    /// A VMM whose keeper died must lose its console output, never block on it: the pair's other
    /// end has no reader left, so a write fails with EPIPE (SIGPIPE is ignored in Rust programs).
    #[tokio::test]
    async fn writing_after_the_keeper_died_fails_with_epipe_instead_of_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        let started = start_console(&path, small(), &[], None, None)
            .await
            .unwrap();
        let mut w = std::os::unix::net::UnixStream::from(started.vmm_end);
        // A write that blocks shows up as a timeout, not as a hung test.
        w.set_write_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        std::io::Write::write_all(&mut w, b"boot\n").unwrap();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(started.process.pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        wait_gone(started.process.pid);
        // More than a socket buffer holds: a reader that merely stopped reading would block it.
        let flood = vec![b'x'; 8 << 20];
        let err = std::io::Write::write_all(&mut w, &flood).unwrap_err();
        // ECONNRESET instead when the keeper died with bytes unread; EPIPE after that.
        assert!(
            matches!(
                err.kind(),
                std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
            ),
            "{err}"
        );
        let err = std::io::Write::write_all(&mut w, b"more").unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::BrokenPipe, "{err}");
    }
}
