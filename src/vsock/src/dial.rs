//! Host → guest connections: `CONNECT <port>\n` on the VMM's Unix socket, `OK <host_port>\n` back.
//!
//! The reply line is read one byte at a time and never past its `\n`: whatever follows belongs
//! to the guest's stream (a guest that writes first, e.g. a greeting, may have its bytes arrive
//! in the same segment as the `OK` line), so no buffered reader may touch the socket here.
//!
//! When the guest is not listening on the port yet (still booting), the VMM answers by closing
//! the connection (Firecracker, vhost-device-vsock) or with a line other than `OK`;
//! [`connect_with_retry`] retries those until a deadline.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::time::Instant;

/// Longest reply line accepted from the VMM, its `\n` included. `OK 4294967295\n` is 14 bytes.
pub const MAX_REPLY_LINE: usize = 64;

/// A connection to a guest port, past the `CONNECT` handshake.
#[derive(Debug)]
pub struct HostStream {
    /// The byte stream to the guest's listener. Nothing of the guest's has been read from it.
    pub stream: UnixStream,
    /// The `<n>` of the VMM's `OK <n>`. Firecracker sends the host-side port it assigned to
    /// this connection; vhost-device-vsock (0.3.0) sends the guest port that was asked for.
    /// Informational only: nothing else in the protocol refers to it.
    pub local_port: u32,
}

impl HostStream {
    /// The stream alone.
    pub fn into_stream(self) -> UnixStream {
        self.stream
    }
}

/// Why a connection to a guest port could not be made.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    /// The VMM's Unix socket could not be connected to.
    #[error("cannot connect to the VMM vsock socket {} (for guest port {port}): {source}", path.display())]
    Connect {
        path: PathBuf,
        port: u32,
        source: io::Error,
    },
    /// Writing the `CONNECT` line failed.
    #[error("cannot send CONNECT {port} on {}: {source}", path.display())]
    Send {
        path: PathBuf,
        port: u32,
        source: io::Error,
    },
    /// Reading the reply failed.
    #[error("reading the reply to CONNECT {port} on {} failed: {source}", path.display())]
    Receive {
        path: PathBuf,
        port: u32,
        source: io::Error,
    },
    /// The VMM closed the connection before a whole reply line (usually: nothing listens on the
    /// guest port yet).
    #[error("the VMM closed {} without answering CONNECT {port} (is the guest listening on port {port}?); received \"{partial}\"", path.display())]
    Closed {
        path: PathBuf,
        port: u32,
        /// What arrived before the close, escaped.
        partial: String,
    },
    /// The reply line did not end within [`MAX_REPLY_LINE`] bytes.
    #[error("the reply to CONNECT {port} on {} is longer than {MAX_REPLY_LINE} bytes: \"{reply}\"", path.display())]
    TooLong {
        path: PathBuf,
        port: u32,
        /// The first [`MAX_REPLY_LINE`] bytes, escaped.
        reply: String,
    },
    /// The VMM answered with something other than `OK`.
    #[error("the VMM refused CONNECT {port} on {}: \"{reply}\"", path.display())]
    Refused {
        path: PathBuf,
        port: u32,
        /// The reply line without its `\n`, escaped.
        reply: String,
    },
    /// The VMM answered `OK` without a valid port number after it.
    #[error("malformed reply to CONNECT {port} on {}: \"{reply}\" (expected OK <port>)", path.display())]
    Malformed {
        path: PathBuf,
        port: u32,
        /// The reply line without its `\n`, escaped.
        reply: String,
    },
    /// Connecting, sending and reading the reply took longer than the deadline.
    #[error("CONNECT {port} on {} did not complete within {after:?}", path.display())]
    Timeout {
        path: PathBuf,
        port: u32,
        after: Duration,
    },
    /// [`connect_with_retry`] ran out of time; `last` is the last attempt's error.
    #[error("gave up connecting to guest port {port} through {} after {attempts} attempts in {waited:?}: {last}", path.display())]
    GaveUp {
        path: PathBuf,
        port: u32,
        attempts: u32,
        waited: Duration,
        last: Box<DialError>,
    },
}

impl DialError {
    /// Whether trying again later may succeed: the VMM socket does not exist yet or refuses
    /// connections, or the VMM turned the `CONNECT` down (guest not listening yet). Malformed
    /// and oversized replies are not transient: the socket does not speak hybrid vsock.
    pub fn is_transient(&self) -> bool {
        use io::ErrorKind as K;
        match self {
            Self::Connect { source, .. } => matches!(
                source.kind(),
                K::NotFound | K::ConnectionRefused | K::ConnectionReset | K::WouldBlock
            ),
            Self::Send { source, .. } | Self::Receive { source, .. } => matches!(
                source.kind(),
                K::BrokenPipe | K::ConnectionReset | K::ConnectionAborted
            ),
            Self::Closed { .. } | Self::Refused { .. } => true,
            Self::TooLong { .. } | Self::Malformed { .. } | Self::Timeout { .. } => false,
            Self::GaveUp { .. } => false,
        }
    }
}

/// Connects to guest port `port` through the VMM's hybrid-vsock socket `uds_path`, once.
/// `deadline` bounds the whole exchange (connect, `CONNECT`, reply).
pub async fn connect(
    uds_path: &Path,
    port: u32,
    deadline: Duration,
) -> Result<HostStream, DialError> {
    match tokio::time::timeout(deadline, dial(uds_path, port)).await {
        Ok(result) => result,
        Err(_) => Err(DialError::Timeout {
            path: uds_path.to_owned(),
            port,
            after: deadline,
        }),
    }
}

async fn dial(uds_path: &Path, port: u32) -> Result<HostStream, DialError> {
    let path = || uds_path.to_owned();
    let mut stream = UnixStream::connect(uds_path)
        .await
        .map_err(|source| DialError::Connect {
            path: path(),
            port,
            source,
        })?;
    stream
        .write_all(format!("CONNECT {port}\n").as_bytes())
        .await
        .map_err(|source| DialError::Send {
            path: path(),
            port,
            source,
        })?;
    let line = match read_reply_line(&mut stream).await {
        Ok(line) => line,
        Err(LineError::Io(source)) => {
            return Err(DialError::Receive {
                path: path(),
                port,
                source,
            });
        }
        Err(LineError::Eof(partial)) => {
            return Err(DialError::Closed {
                path: path(),
                port,
                partial: escape(&partial),
            });
        }
        Err(LineError::TooLong(head)) => {
            return Err(DialError::TooLong {
                path: path(),
                port,
                reply: escape(&head),
            });
        }
    };
    match parse_reply(&line) {
        Reply::Accepted(local_port) => {
            tracing::debug!(path = %uds_path.display(), port, local_port, "vsock: connected to guest port");
            Ok(HostStream { stream, local_port })
        }
        Reply::Malformed => Err(DialError::Malformed {
            path: path(),
            port,
            reply: escape(&line),
        }),
        Reply::Other => Err(DialError::Refused {
            path: path(),
            port,
            reply: escape(&line),
        }),
    }
}

/// How long [`connect_with_retry`] waits between attempts: `initial`, doubled after each
/// attempt, at most `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    /// 1 ms, doubling up to 50 ms: a guest that starts listening is found within ~50 ms.
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(1),
            max: Duration::from_millis(50),
        }
    }
}

/// Shortest wait between attempts, whatever the [`Backoff`] says (no busy loop).
const MIN_DELAY: Duration = Duration::from_micros(100);

/// Like [`connect`], but retries transient failures ([`DialError::is_transient`]: the socket is
/// not there yet, the guest is not listening yet) until `deadline` has passed since the call,
/// waiting per `backoff` between attempts. Other failures are returned at once; running out of
/// time returns [`DialError::GaveUp`] with the attempt count and the last attempt's error.
pub async fn connect_with_retry(
    uds_path: &Path,
    port: u32,
    deadline: Duration,
    backoff: Backoff,
) -> Result<HostStream, DialError> {
    let start = Instant::now();
    // None: a deadline too far away to represent, i.e. none.
    let end = start.checked_add(deadline);
    let remaining = || end.map_or(deadline, |e| e.saturating_duration_since(Instant::now()));
    let max_delay = backoff.max.max(MIN_DELAY);
    let mut delay = backoff.initial.clamp(MIN_DELAY, max_delay);
    let mut attempts: u32 = 0;
    loop {
        attempts = attempts.saturating_add(1);
        let err = match connect(uds_path, port, remaining()).await {
            Ok(stream) => {
                tracing::debug!(
                    path = %uds_path.display(),
                    port,
                    attempts,
                    elapsed = ?start.elapsed(),
                    "vsock: guest port reached"
                );
                return Ok(stream);
            }
            Err(e) => e,
        };
        let gave_up = |last: DialError| DialError::GaveUp {
            path: uds_path.to_owned(),
            port,
            attempts,
            waited: start.elapsed(),
            last: Box::new(last),
        };
        // A timed-out attempt used up what was left of the deadline.
        if matches!(err, DialError::Timeout { .. }) {
            return Err(gave_up(err));
        }
        if !err.is_transient() {
            return Err(err);
        }
        if remaining().is_zero() {
            return Err(gave_up(err));
        }
        tracing::trace!(path = %uds_path.display(), port, attempts, error = %err, ?delay, "vsock: retrying");
        tokio::time::sleep(delay.min(remaining())).await;
        // Out of time while waiting: the last real failure is the one to report.
        if remaining().is_zero() {
            return Err(gave_up(err));
        }
        delay = delay.saturating_mul(2).min(max_delay);
    }
}

/// Why no reply line could be read.
#[derive(Debug)]
enum LineError {
    Io(io::Error),
    /// End of stream before `\n`, with what had arrived.
    Eof(Vec<u8>),
    /// No `\n` within [`MAX_REPLY_LINE`] bytes; the bytes read.
    TooLong(Vec<u8>),
}

/// Reads one `\n`-terminated line, one byte per read so that nothing after the `\n` is
/// consumed. Returns the line without its `\n`.
async fn read_reply_line<R: AsyncRead + Unpin>(r: &mut R) -> Result<Vec<u8>, LineError> {
    let mut line = Vec::with_capacity(16);
    loop {
        let mut byte = [0u8; 1];
        match r.read(&mut byte).await {
            Ok(0) => return Err(LineError::Eof(line)),
            Ok(_) if byte[0] == b'\n' => return Ok(line),
            Ok(_) => {
                line.push(byte[0]);
                // With its `\n` still to come, the line would exceed the limit.
                if line.len() >= MAX_REPLY_LINE {
                    return Err(LineError::TooLong(line));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(LineError::Io(e)),
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Reply {
    Accepted(u32),
    /// `OK` without a valid port.
    Malformed,
    /// Anything else.
    Other,
}

/// Parses a reply line (without `\n`): exactly `OK <decimal u32>`.
fn parse_reply(line: &[u8]) -> Reply {
    let Some(rest) = line.strip_prefix(b"OK") else {
        return Reply::Other;
    };
    let Some(digits) = rest.strip_prefix(b" ") else {
        // "OK" alone, or "OKAY ...".
        return if rest.is_empty() {
            Reply::Malformed
        } else {
            Reply::Other
        };
    };
    // Digits only: no sign, no spaces, no trailing `\r`; u32 parsing rejects overflow.
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Reply::Malformed;
    }
    std::str::from_utf8(digits)
        .ok()
        .and_then(|s| s.parse::<u32>().ok())
        .map_or(Reply::Malformed, Reply::Accepted)
}

/// Bytes from the VMM made safe to print: printable ASCII as is, everything else escaped
/// (`\n`, `\xff`, `\"`), at most [`MAX_REPLY_LINE`] input bytes.
fn escape(bytes: &[u8]) -> String {
    bytes
        .iter()
        .take(MAX_REPLY_LINE)
        .flat_map(|b| std::ascii::escape_default(*b))
        .map(char::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ok_lines() {
        assert_eq!(
            parse_reply(b"OK 1073741824"),
            Reply::Accepted(1_073_741_824)
        );
        assert_eq!(parse_reply(b"OK 0"), Reply::Accepted(0));
        assert_eq!(parse_reply(b"OK 4294967295"), Reply::Accepted(u32::MAX));
        assert_eq!(parse_reply(b"OK 007"), Reply::Accepted(7));
    }

    #[test]
    fn rejects_bad_ok_lines() {
        for bad in [
            &b"OK"[..],
            b"OK ",
            b"OK 4294967296",
            b"OK 99999999999999999999",
            b"OK -1",
            b"OK +1",
            b"OK 12 ",
            b"OK  12",
            b"OK 12\r",
            b"OK abc",
            b"OK 1a",
        ] {
            assert_eq!(parse_reply(bad), Reply::Malformed, "{bad:?}");
        }
        for other in [
            &b""[..],
            b"ERR",
            b"ok 5",
            b"OKAY 5",
            b"HTTP/1.1 400",
            b"\xff",
        ] {
            assert_eq!(parse_reply(other), Reply::Other, "{other:?}");
        }
    }

    #[test]
    fn escapes_and_truncates() {
        assert_eq!(escape(b"OK\n\"x\"\xff"), "OK\\n\\\"x\\\"\\xff");
        assert_eq!(escape(&[b'a'; 200]).len(), MAX_REPLY_LINE);
    }

    #[tokio::test]
    async fn reads_exactly_one_line() {
        let mut input: &[u8] = b"OK 5\nguest bytes";
        let line = read_reply_line(&mut input).await.unwrap();
        assert_eq!(line, b"OK 5");
        assert_eq!(input, b"guest bytes");
    }

    #[tokio::test]
    async fn line_limit_counts_the_newline() {
        let mut fits = [b'x'; MAX_REPLY_LINE];
        fits[MAX_REPLY_LINE - 1] = b'\n';
        let mut input: &[u8] = &fits;
        assert_eq!(
            read_reply_line(&mut input).await.unwrap().len(),
            MAX_REPLY_LINE - 1
        );

        let mut over = [b'x'; MAX_REPLY_LINE + 1];
        over[MAX_REPLY_LINE] = b'\n';
        let mut input: &[u8] = &over;
        match read_reply_line(&mut input).await {
            Err(LineError::TooLong(head)) => assert_eq!(head.len(), MAX_REPLY_LINE),
            other => panic!("expected TooLong, got {other:?}"),
        }
        // It stopped reading at the limit.
        assert_eq!(input, b"\n");
    }

    #[tokio::test]
    async fn eof_keeps_the_partial_line() {
        let mut input: &[u8] = b"OK 1";
        match read_reply_line(&mut input).await {
            Err(LineError::Eof(partial)) => assert_eq!(partial, b"OK 1"),
            other => panic!("expected Eof, got {other:?}"),
        }
    }
}
