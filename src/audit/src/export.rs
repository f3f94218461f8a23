//! Mirroring records, once durable, to syslog or to an extra file for shipping.
//!
//! Export is best effort: the log itself is the record of truth, so a failed export is
//! reported through `tracing` and does not fail the append.

use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};

use crate::error::{AuditError, Result};

/// Where to mirror records.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Export {
    /// Nowhere.
    #[default]
    None,
    /// To the local syslog daemon at `/dev/log`, one datagram per record (BSD format, facility
    /// authpriv, severity info, tag `luminaguard-audit`).
    Syslog,
    /// To a syslog-style datagram socket at this path (as [`Export::Syslog`]).
    SyslogAt(PathBuf),
    /// Appended, one JSON line per record, to this file.
    File(PathBuf),
}

/// facility authpriv (10) * 8 + severity info (6).
const PRI: u8 = 10 * 8 + 6;

/// An open export target.
#[derive(Debug)]
pub(crate) enum Exporter {
    None,
    Syslog { socket: UnixDatagram, path: PathBuf },
    File { file: std::fs::File, path: PathBuf },
}

impl Exporter {
    /// Opens the target of `export`.
    pub(crate) fn open(export: &Export) -> Result<Exporter> {
        match export {
            Export::None => Ok(Exporter::None),
            Export::Syslog => Exporter::syslog(Path::new("/dev/log")),
            Export::SyslogAt(p) => Exporter::syslog(p),
            Export::File(p) => {
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .map_err(|e| AuditError::io("open export file", p, e))?;
                Ok(Exporter::File {
                    file,
                    path: p.clone(),
                })
            }
        }
    }

    fn syslog(path: &Path) -> Result<Exporter> {
        // Non-blocking: a syslog daemon that stops reading must not stall the audit writer;
        // a datagram that does not fit is dropped and reported.
        let socket = UnixDatagram::unbound()
            .and_then(|s| s.connect(path).map(|()| s))
            .and_then(|s| s.set_nonblocking(true).map(|()| s))
            .map_err(|e| AuditError::io("connect syslog socket", path, e))?;
        Ok(Exporter::Syslog {
            socket,
            path: path.to_owned(),
        })
    }

    /// Mirrors a batch of record lines (each without newline). Failures are logged.
    pub(crate) fn export(&mut self, lines: &[Vec<u8>]) {
        match self {
            Exporter::None => {}
            Exporter::File { file, path } => {
                let mut buf = Vec::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
                for l in lines {
                    buf.extend_from_slice(l);
                    buf.push(b'\n');
                }
                if let Err(e) = file.write_all(&buf) {
                    tracing::warn!(path = %path.display(), error = %e, "audit export to file failed");
                }
            }
            Exporter::Syslog { socket, path } => {
                for l in lines {
                    let mut msg = format!("<{PRI}>luminaguard-audit: ").into_bytes();
                    msg.extend_from_slice(l);
                    if let Err(e) = socket.send(&msg) {
                        tracing::warn!(path = %path.display(), error = %e, "audit export to syslog failed");
                    }
                }
            }
        }
    }
}
