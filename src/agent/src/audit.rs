//! Serving the seccomp listener of a process sandbox: a supervisor thread records each denied
//! system call (see `luminaguard_seccomp::audit`), and `SeccompAudit` requests read the record.

use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, PoisonError};

use luminaguard_protocol::message::{SeccompAudit, SeccompDenial};
use luminaguard_seccomp::audit::{AuditLog, supervise};

use crate::server::AgentContext;

pub type SharedLog = Arc<Mutex<AuditLog>>;

/// Starts the supervisor thread for `listener`. It must run before anything that could make a
/// denied call: until a denial is answered, the caller blocks.
pub fn start(listener: OwnedFd) -> std::io::Result<SharedLog> {
    let log = SharedLog::default();
    let sink = log.clone();
    std::thread::Builder::new()
        .name("lg-seccomp".into())
        .spawn(move || {
            let result = supervise(&listener, |d| {
                tracing::info!(pid = d.pid, comm = %d.comm, syscall = %d.syscall, "seccomp denied");
                sink.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .record(d);
            });
            // Closing the listener makes the kernel answer ENOSYS: still denied, not recorded.
            if let Err(e) = result {
                tracing::error!(error = %e, "seccomp supervisor stopped");
            }
        })?;
    Ok(log)
}

/// The record, for the host.
pub fn report(ctx: &AgentContext) -> SeccompAudit {
    let Some(log) = &ctx.audit else {
        return SeccompAudit::default();
    };
    let log = log.lock().unwrap_or_else(PoisonError::into_inner);
    SeccompAudit {
        enabled: true,
        recent: log
            .recent
            .iter()
            .map(|d| SeccompDenial {
                unix_ms: d.unix_ms,
                pid: d.pid,
                comm: d.comm.clone(),
                syscall: d.syscall.clone(),
                arg0: d.arg0,
            })
            .collect(),
        counts: log.counts.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        dropped: log.dropped,
    }
}
