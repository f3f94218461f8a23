//! Telling a service manager the daemon is ready (`sd_notify`'s `READY=1` on `NOTIFY_SOCKET`):
//! systemd's `Type=notify` starts dependants only then, and tests wait for the same message
//! rather than polling the socket.

use std::os::unix::net::UnixDatagram;

/// Sends `READY=1` to `$NOTIFY_SOCKET`, if set (a path, or `@name` in the abstract namespace).
/// Failing to tell is logged, never fatal.
pub fn ready() {
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sent = UnixDatagram::unbound().and_then(|sock| {
        let bytes = target.as_encoded_bytes();
        if let Some(name) = bytes.strip_prefix(b"@") {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            sock.send_to_addr(b"READY=1", &addr)
        } else {
            sock.send_to(b"READY=1", &target)
        }
    });
    if let Err(e) = sent {
        tracing::warn!(error = %e, "cannot notify the service manager");
    }
}
