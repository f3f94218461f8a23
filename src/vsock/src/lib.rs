//! The host side of hybrid vsock: how the host reaches a guest's AF_VSOCK sockets through the
//! Unix socket of its VMM.
//!
//! Firecracker and rust-vmm's `vhost-device-vsock` (which the QEMU backend uses) speak the same
//! protocol, so this one implementation serves both:
//!
//! - **Host → guest** ([`connect`], [`connect_with_retry`]): connect to the VMM's Unix socket
//!   (`uds_path`), write `CONNECT <port>\n`, read `OK <host_port>\n`; from then on the socket is
//!   a byte stream to the guest's listener on `<port>`. Nothing after the `\n` is consumed: those
//!   bytes are the guest's.
//! - **Guest → host** ([`listen`]): a guest connecting to CID 2 (the host), port `<port>`,
//!   arrives as a connection to the Unix socket `<uds_path>_<port>`, which the host listens on.
//!
//! The channel carries the `luminaguard-protocol` stream unchanged: a [`HostStream`]'s
//! `stream` goes straight into `luminaguard_protocol::Client::connect`.

pub mod dial;
pub mod listen;

pub use dial::{Backoff, DialError, HostStream, MAX_REPLY_LINE, connect, connect_with_retry};
pub use listen::{HostListener, ListenError, listen, listener_path};
