//! `SetClock`: the guest's wall clock, set by the host.
//!
//! A VM restored from a snapshot resumes with the snapshot's wall clock (plus what its
//! clocksource counted while it ran): a template made yesterday would wake up believing it is
//! yesterday, and certificate checks, timestamps and token expiry inside it would be wrong.
//! After a restore the host sends its own `CLOCK_REALTIME` and the agent, root and PID 1 in
//! the guest, sets it (`clock_settime`, which needs `CAP_SYS_TIME`; an agent without it — a
//! process sandbox, whose clock is the host's — answers `PermissionDenied`).

use luminaguard_protocol::message::{ErrorCode, ErrorReply, Reply};
use nix::sys::time::TimeSpec;
use nix::time::{ClockId, clock_settime};

/// The latest time accepted: the year 2262 is where `i64` nanoseconds end, and no host clock
/// is that far off.
const MAX_SECS: u64 = i64::MAX as u64 / 1_000_000_000;

/// Sets `CLOCK_REALTIME` to `unix_nanos` (one system call: no need to leave the async thread).
pub fn set(unix_nanos: u64) -> Result<Reply, ErrorReply> {
    let secs = unix_nanos / 1_000_000_000;
    if secs >= MAX_SECS {
        return Err(ErrorReply::new(
            ErrorCode::InvalidRequest,
            format!("set-clock to {unix_nanos} ns since the epoch: out of range"),
        ));
    }
    let nanos = unix_nanos % 1_000_000_000;
    // Both fit: secs < MAX_SECS < i64::MAX, nanos < 10^9.
    let spec = TimeSpec::new(
        i64::try_from(secs).unwrap_or(i64::MAX),
        i64::try_from(nanos).unwrap_or(0),
    );
    clock_settime(ClockId::CLOCK_REALTIME, spec).map_err(|e| {
        let code = match e {
            nix::errno::Errno::EPERM => ErrorCode::PermissionDenied,
            _ => ErrorCode::Io,
        };
        ErrorReply::new(code, format!("clock_settime(CLOCK_REALTIME): {e}"))
    })?;
    Ok(Reply::Done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_time_past_2262_is_refused_before_the_system_call() {
        let err = set(u64::MAX).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidRequest, "{err:?}");
    }

    /// Without CAP_SYS_TIME (a process sandbox's agent) the answer says permission denied —
    /// and the host's clock is not touched (the positive case runs in a real guest:
    /// `the_guest_agent_reseeds_the_guest_kernel_and_takes_the_hosts_time` in the QEMU tests).
    #[test]
    fn without_cap_sys_time_the_answer_is_permission_denied() {
        if !luminaguard_testkit::privileged("dropping CAP_SYS_TIME in a thread") {
            return;
        }
        let err = std::thread::spawn(|| {
            caps::drop(
                None,
                caps::CapSet::Effective,
                caps::Capability::CAP_SYS_TIME,
            )
            .unwrap();
            // The current time: should the drop not have worked, the host's clock stays right.
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap();
            set(u64::try_from(now.as_nanos()).unwrap()).unwrap_err()
        })
        .join()
        .unwrap();
        assert_eq!(err.code, ErrorCode::PermissionDenied, "{err:?}");
        assert!(err.message.contains("clock_settime"), "{err:?}");
    }
}
