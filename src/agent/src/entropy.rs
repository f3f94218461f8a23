//! `Reseed`: fresh entropy from the host into the guest kernel, and a CSPRNG reseed.
//!
//! A VM restored from a snapshot resumes with the snapshot's kernel random state: without
//! help, every VM restored from one snapshot would produce the same "random" numbers (keys,
//! nonces, TCP sequence numbers, ASLR of new processes). Linux reseeds by itself when the VMM
//! offers a VM generation id (`CONFIG_VMGENID`), but not every guest kernel has that driver —
//! the Debian cloud kernel LuminaGuard's images boot does not. So after a restore the host
//! sends 32+ bytes from its own CSPRNG and the agent, PID 1 and root in the guest:
//!
//! 1. `RNDADDENTROPY` on `/dev/urandom`: mixes them into the input pool, credited;
//! 2. `RNDRESEEDCRNG`: makes the kernel's CRNG take a new key from the pool now, rather than
//!    at its next scheduled reseed (up to a minute later in Linux ≥ 5.18).
//!
//! Both need `CAP_SYS_ADMIN`; an agent without it (a process sandbox, whose kernel is the
//! host's and needs nothing of the kind) answers `PermissionDenied`.

use std::os::fd::AsRawFd;

use luminaguard_protocol::message::{
    ErrorCode, ErrorReply, RESEED_MAX_BYTES, RESEED_MIN_BYTES, Reply,
};

/// `struct rand_pool_info` with room for the largest request.
#[repr(C)]
struct RandPoolInfo {
    entropy_count: libc::c_int,
    buf_size: libc::c_int,
    buf: [u8; RESEED_MAX_BYTES],
}

// RNDADDENTROPY is _IOW('R', 0x03, int[2]): the size in the request code is the header's, the
// buffer after it is as long as `buf_size` says.
nix::ioctl_write_ptr_bad!(
    rnd_add_entropy,
    nix::request_code_write!(b'R', 0x03, 2 * std::mem::size_of::<libc::c_int>()),
    RandPoolInfo
);
nix::ioctl_none!(rnd_reseed_crng, b'R', 0x07);

/// Checks the request, then feeds and reseeds the kernel (blocking system calls, off the
/// runtime's threads).
pub async fn reseed(entropy: Vec<u8>) -> Result<Reply, ErrorReply> {
    check_len(entropy.len())?;
    tokio::task::spawn_blocking(move || reseed_kernel(&entropy))
        .await
        .map_err(|e| ErrorReply::new(ErrorCode::Internal, format!("reseed task: {e}")))??;
    Ok(Reply::Done)
}

fn check_len(len: usize) -> Result<(), ErrorReply> {
    if (RESEED_MIN_BYTES..=RESEED_MAX_BYTES).contains(&len) {
        return Ok(());
    }
    Err(ErrorReply::new(
        ErrorCode::InvalidRequest,
        format!(
            "reseed needs {RESEED_MIN_BYTES} to {RESEED_MAX_BYTES} bytes of entropy, got {len}"
        ),
    ))
}

fn reseed_kernel(entropy: &[u8]) -> Result<(), ErrorReply> {
    let urandom = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/urandom")
        .map_err(|e| ErrorReply::new(ErrorCode::Io, format!("opening /dev/urandom: {e}")))?;
    let mut info = RandPoolInfo {
        entropy_count: 0,
        buf_size: 0,
        buf: [0; RESEED_MAX_BYTES],
    };
    info.buf[..entropy.len()].copy_from_slice(entropy);
    // Lengths are at most RESEED_MAX_BYTES (checked), far below c_int's range.
    info.buf_size = libc::c_int::try_from(entropy.len()).unwrap_or(0);
    info.entropy_count = info.buf_size.saturating_mul(8);
    // SAFETY: `info` is a valid, initialized rand_pool_info whose `buf` holds `buf_size`
    // bytes; the kernel only reads from it.
    unsafe { rnd_add_entropy(urandom.as_raw_fd(), &info) }
        .map_err(|e| ioctl_error("RNDADDENTROPY", e))?;
    // SAFETY: RNDRESEEDCRNG takes no argument.
    unsafe { rnd_reseed_crng(urandom.as_raw_fd()) }.map_err(|e| ioctl_error("RNDRESEEDCRNG", e))?;
    Ok(())
}

fn ioctl_error(what: &str, e: nix::errno::Errno) -> ErrorReply {
    let code = match e {
        nix::errno::Errno::EPERM => ErrorCode::PermissionDenied,
        _ => ErrorCode::Io,
    };
    ErrorReply::new(code, format!("{what} on /dev/urandom: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn too_little_or_too_much_entropy_is_refused_before_any_system_call() {
        for len in [0, RESEED_MIN_BYTES - 1, RESEED_MAX_BYTES + 1] {
            let err = reseed(vec![7; len]).await.unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidRequest, "{len}: {err:?}");
            assert!(err.message.contains(&len.to_string()), "{err:?}");
        }
    }

    /// As root the host kernel takes it: the same ioctls the agent makes as the guest's PID 1.
    /// (Mixing 32 random bytes into the host's pool is harmless.)
    #[tokio::test]
    async fn root_feeds_and_reseeds_the_kernel() {
        if !luminaguard_testkit::privileged("feeding the kernel's entropy pool") {
            return;
        }
        let bytes: Vec<u8> = (0..RESEED_MIN_BYTES).map(|_| rand::random()).collect();
        assert_eq!(reseed(bytes).await.unwrap(), Reply::Done);
    }

    /// Without CAP_SYS_ADMIN (a process sandbox's agent) the answer says permission denied.
    #[test]
    fn without_cap_sys_admin_the_answer_is_permission_denied() {
        if !luminaguard_testkit::privileged("dropping CAP_SYS_ADMIN in a thread") {
            return;
        }
        // Capabilities are per thread: this one drops CAP_SYS_ADMIN from its effective set.
        let err = std::thread::spawn(|| {
            caps::drop(
                None,
                caps::CapSet::Effective,
                caps::Capability::CAP_SYS_ADMIN,
            )
            .unwrap();
            reseed_kernel(&[1; RESEED_MIN_BYTES]).unwrap_err()
        })
        .join()
        .unwrap();
        assert_eq!(err.code, ErrorCode::PermissionDenied, "{err:?}");
        assert!(err.message.contains("RNDADDENTROPY"), "{err:?}");
    }
}
