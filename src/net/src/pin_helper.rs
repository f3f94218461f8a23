//! Privilege separation for the resolver process: the half that parses the sandbox's DNS runs
//! with no privilege at all; pinning — the one thing that needs `CAP_NET_ADMIN` — is done by a
//! small child that can do nothing else.
//!
//! ```text
//!  resolver (uid nobody, no capabilities,          pin helper (uid nobody, CAP_NET_ADMIN only,
//!  no_new_privs; uplink netns) ── datagram ──▶      router netns): builds the nft script itself
//!  "pin these addresses for N s"   socketpair        from typed addresses, runs `nft -f -`
//! ```
//!
//! The helper is forked by the still-privileged, still single-threaded resolver process while it
//! is in the router namespace; it then lives there. It takes requests of one shape — addresses,
//! ports and a TTL, as JSON — and writes the `nft` script from them with
//! [`crate::resolver::pin_script`]: the resolver cannot make it run any other command. It dies
//! with the resolver (`PR_SET_PDEATHSIG`), and when its socket closes.

use std::net::IpAddr;
use std::os::unix::net::UnixDatagram as StdDatagram;
use std::process::{Command, Stdio};
use std::time::Duration;

use caps::{CapSet, Capability, CapsHashSet};
use serde::{Deserialize, Serialize};
use tokio::net::UnixDatagram;
use tokio::sync::Mutex;

use crate::cmd::CmdError;
use crate::resolver::{PinAddr, PinError, Pinner, pin_script};

/// Largest request or reply, bytes (a request holds one answer's addresses).
const MAX_MESSAGE: usize = 64 * 1024;
/// The user both halves run as when the host has no `nobody`.
pub const NOBODY: u32 = 65534;

#[derive(Debug, Serialize, Deserialize)]
struct PinRequest {
    addrs: Vec<(IpAddr, Option<u16>)>,
    ttl_secs: u64,
}

/// Why the privileges could not be set up as described.
#[derive(Debug, thiserror::Error)]
pub enum PrivError {
    #[error("cannot {what}: {source}")]
    Sys {
        what: &'static str,
        source: nix::Error,
    },
    #[error("cannot {what}: {reason}")]
    Caps { what: &'static str, reason: String },
}

fn sys(what: &'static str) -> impl FnOnce(nix::Error) -> PrivError {
    move |source| PrivError::Sys { what, source }
}

fn caps_err(what: &'static str) -> impl FnOnce(caps::errors::CapsError) -> PrivError {
    move |e| PrivError::Caps {
        what,
        reason: e.to_string(),
    }
}

/// Becomes `uid`/`gid` (no supplementary groups), keeping exactly the capabilities in `keep`
/// — in the permitted, effective, inheritable and ambient sets, so that a program it runs has
/// them too — and nothing in the bounding set beyond them; sets `no_new_privs` and makes the
/// process undumpable. With `keep` empty, every capability is gone for good.
pub fn become_user(uid: u32, gid: u32, keep: &[Capability]) -> Result<(), PrivError> {
    use nix::unistd::{Gid, Uid, setgroups, setresgid, setresuid};
    let keep_set: CapsHashSet = keep.iter().copied().collect();
    // Bounding first: dropping from it needs CAP_SETPCAP, which goes below.
    for cap in caps::runtime::thread_all_supported() {
        if !keep_set.contains(&cap) {
            caps::drop(None, CapSet::Bounding, cap).map_err(caps_err("shrink the bounding set"))?;
        }
    }
    if !keep.is_empty() {
        // Keep the permitted set across the change of uid below.
        nix::sys::prctl::set_keepcaps(true).map_err(sys("set keepcaps"))?;
    }
    setgroups(&[]).map_err(sys("drop supplementary groups"))?;
    setresgid(Gid::from_raw(gid), Gid::from_raw(gid), Gid::from_raw(gid))
        .map_err(sys("change group"))?;
    setresuid(Uid::from_raw(uid), Uid::from_raw(uid), Uid::from_raw(uid))
        .map_err(sys("change user"))?;
    for set in [CapSet::Permitted, CapSet::Effective, CapSet::Inheritable] {
        caps::set(None, set, &keep_set).map_err(caps_err("set the capabilities kept"))?;
    }
    caps::clear(None, CapSet::Ambient).map_err(caps_err("clear the ambient set"))?;
    for cap in keep {
        caps::raise(None, CapSet::Ambient, *cap)
            .map_err(caps_err("raise an ambient capability"))?;
    }
    nix::sys::prctl::set_keepcaps(false).map_err(sys("clear keepcaps"))?;
    nix::sys::prctl::set_no_new_privs().map_err(sys("set no_new_privs"))?;
    nix::sys::prctl::set_dumpable(false).map_err(sys("make the process undumpable"))?;
    Ok(())
}

/// A socket pair: the resolver's end and the helper's.
pub fn channel() -> std::io::Result<(StdDatagram, StdDatagram)> {
    StdDatagram::pair()
}

/// On the resolver's end of [`channel`], before anything else: waits (at most `limit`) for the
/// helper to say it is set up. `Err` carries why not.
pub fn wait_ready(sock: &StdDatagram, limit: Duration) -> Result<(), String> {
    let mut buf = [0u8; 1024];
    sock.set_read_timeout(Some(limit))
        .map_err(|e| e.to_string())?;
    let n = sock
        .recv(&mut buf)
        .map_err(|e| format!("no word from it: {e}"))?;
    let _ = sock.set_read_timeout(None);
    match buf.get(..n).unwrap_or_default() {
        b if b == OK.as_bytes() => Ok(()),
        [] => Err("it exited".into()),
        why => Err(String::from_utf8_lossy(why).into_owned()),
    }
}

/// The helper's life, in the child forked by process `resolver`: serves pin requests on `sock`
/// for `table` (in the calling thread's network namespace) until the resolver dies. Never
/// returns.
pub fn serve(sock: StdDatagram, table: &str, resolver: i32, uid: u32, gid: u32) -> ! {
    // The first message tells the resolver whether the helper is set up: [`OK`] or why not.
    let fail = |why: String| -> ! {
        let _ = sock.send(why.as_bytes());
        std::process::exit(1)
    };
    if let Err(e) = become_user(uid, gid, &[Capability::CAP_NET_ADMIN]) {
        fail(e.to_string());
    }
    // The resolver's death ends the helper (a datagram socket does not tell). Set after the
    // change of user, which clears it; then make sure the resolver did not die before.
    if let Err(e) = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL) {
        fail(format!("cannot set its death signal: {e}"));
    }
    if nix::unistd::getppid().as_raw() != resolver {
        std::process::exit(1);
    }
    if sock.send(OK.as_bytes()).is_err() {
        std::process::exit(1);
    }
    let mut buf = vec![0u8; MAX_MESSAGE];
    loop {
        let n = match sock.recv(&mut buf) {
            Ok(0) | Err(_) => std::process::exit(0),
            Ok(n) => n,
        };
        let reply = match serde_json::from_slice::<PinRequest>(buf.get(..n).unwrap_or_default()) {
            Ok(req) => run_nft(&pin_script(
                table,
                &req.addrs,
                Duration::from_secs(req.ttl_secs),
            )),
            Err(e) => format!("bad pin request: {e}"),
        };
        if sock.send(reply.as_bytes()).is_err() {
            std::process::exit(0);
        }
    }
}

/// The reply to a pin that succeeded; any other reply is the error.
const OK: &str = "ok";

/// Runs `nft -f -` on `script`: [`OK`] on success, else nft's complaint. Blocking: the helper
/// is a plain single-threaded process that does one pin at a time.
#[allow(clippy::disallowed_methods)]
fn run_nft(script: &str) -> String {
    use std::io::Write as _;
    let child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => return format!("cannot run nft: {e}"),
    };
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(script.as_bytes());
    }
    match child.wait_with_output() {
        Ok(out) if out.status.success() => OK.to_owned(),
        Ok(out) => {
            let msg = String::from_utf8_lossy(&out.stderr).trim().to_owned();
            if msg.is_empty() {
                format!("nft failed: {}", out.status)
            } else {
                msg
            }
        }
        Err(e) => format!("waiting for nft: {e}"),
    }
}

/// The resolver's side: asks the helper to pin, one request at a time.
#[derive(Debug)]
pub struct HelperPinner {
    sock: Mutex<UnixDatagram>,
    table: String,
}

impl HelperPinner {
    /// Over the resolver's end of [`channel`] (call inside a runtime).
    pub fn new(sock: StdDatagram, table: String) -> std::io::Result<Self> {
        sock.set_nonblocking(true)?;
        Ok(Self {
            sock: Mutex::new(UnixDatagram::from_std(sock)?),
            table,
        })
    }
}

impl Pinner for HelperPinner {
    async fn pin(&self, addrs: &[PinAddr], ttl: Duration) -> Result<(), PinError> {
        if addrs.is_empty() {
            return Ok(());
        }
        let failed = |message: String| PinError::Nft {
            table: self.table.clone(),
            addrs: addrs
                .iter()
                .map(|(a, p)| p.map_or_else(|| a.to_string(), |p| format!("{a} port {p}")))
                .collect::<Vec<_>>()
                .join(", "),
            source: CmdError::Failed {
                command: "nft -f - (pin helper)".into(),
                message,
            },
        };
        let req = PinRequest {
            addrs: addrs.to_vec(),
            ttl_secs: ttl.as_secs().max(1),
        };
        let bytes = serde_json::to_vec(&req).map_err(|e| failed(e.to_string()))?;
        let sock = self.sock.lock().await;
        sock.send(&bytes)
            .await
            .map_err(|e| failed(format!("the pin helper is gone: {e}")))?;
        let mut buf = vec![0u8; MAX_MESSAGE];
        let n = sock
            .recv(&mut buf)
            .await
            .map_err(|e| failed(format!("the pin helper is gone: {e}")))?;
        match buf.get(..n).unwrap_or_default() {
            b if b == OK.as_bytes() => Ok(()),
            [] => Err(failed("the pin helper is gone".into())),
            msg => Err(failed(String::from_utf8_lossy(msg).into_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_resolver_waits_for_the_helpers_word_and_carries_its_complaint() {
        let (resolver, helper) = channel().unwrap();
        helper.send(OK.as_bytes()).unwrap();
        assert_eq!(wait_ready(&resolver, Duration::from_secs(1)), Ok(()));

        helper.send(b"cannot change user: EPERM").unwrap();
        assert_eq!(
            wait_ready(&resolver, Duration::from_secs(1)),
            Err("cannot change user: EPERM".to_owned())
        );

        // A helper that says nothing is not taken as ready.
        let e = wait_ready(&resolver, Duration::from_millis(50)).unwrap_err();
        assert!(e.contains("no word"), "{e}");
    }
}
