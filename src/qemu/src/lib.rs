//! The QEMU `microvm` backend: a real VM per sandbox.
//!
//! - [`cmdline`]: QEMU's, the guest kernel's and vhost-device-vsock's command lines, from typed
//!   parts.
//! - [`kvm`]: whether KVM can really run a guest here (a vCPU runs real code to `hlt`); TCG
//!   otherwise.
//! - [`host`]: finding QEMU, vhost-device-vsock and the newest image.
//! - [`tsc`]: the host TSC frequency handed to the guest kernel.
//! - [`watch`]: waiting for a socket to appear (inotify).
//! - [`backend`]: [`QemuBackend`], the [`luminaguard_backend::Backend`] that boots the guest
//!   image behind vhost-device-vsock and reaches its agent over hybrid vsock.

pub mod backend;
pub mod cmdline;
pub mod host;
pub mod kvm;
pub mod tsc;
pub mod watch;

pub use backend::{BootTimings, GuestImage, QemuBackend};
pub use cmdline::Accel;
pub use host::{find_program, newest_image};
pub use kvm::KvmProbe;
/// The guest console's bounds (the keeper itself is `luminaguard_backend::console`, shared with
/// the Firecracker backend).
pub use luminaguard_backend::console::ConsoleLimits;
