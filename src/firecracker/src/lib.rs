//! The Firecracker backend, against Firecracker's documented API.
//!
//! - [`models`]: typed bodies of the API resources used, one module per resource, with the
//!   swagger's field names.
//! - [`boot_args`]: the guest kernel command line from typed parts.
//! - [`client`]: the API client — HTTP/1.1 over the API Unix socket, one connection for every
//!   request, each request with a deadline, Firecracker's `fault_message` in every error.
//! - [`launch`]: spawn Firecracker, wait for its API socket, configure the VM, start it, and wait
//!   for the guest agent over hybrid vsock; any failure tears down what was set up.
//! - [`jailer`]: jailer mode — argv, the chroot and what is linked into it, cgroup keys for the
//!   host's cgroup version, the pid file, removal.
//! - [`vmm`]: the Firecracker process — our child, or (jailer with a new PID namespace or
//!   daemonized) a process held by a pidfd.
//! - [`seccomp`]: which filter is in force; the custom policy and its compilation.
//! - [`snapshot`]: pause, full snapshot, resume; restore into a new VM (whose guest kernel is
//!   reseeded with fresh entropy).
//! - [`template`]: a snapshot of a freshly booted sandbox and what it holds; the backend
//!   restores sandboxes from one instead of booting them.
//! - [`tools`]: where `firecracker`, `jailer` and `seccompiler-bin` are found.
//! - [`backend`]: [`FirecrackerBackend`], the `luminaguard_backend::Backend` on top of the launch:
//!   the sandbox's record, cgroup, unprivileged VMM user, jailer mode and the seccomp filter,
//!   and cleanup.
//! - `testing` (feature `testing`): a fake API server that checks every body against these
//!   types and injects faults, and the guest it pretends to boot.
//!
//! See `docs/firecracker-backend.md`.

pub mod backend;
pub mod boot_args;
pub mod client;
pub mod jailer;
pub mod launch;
pub mod models;
pub mod seccomp;
pub mod snapshot;
pub mod template;
#[cfg(feature = "testing")]
pub mod testing;
pub mod tools;
pub mod vmm;

pub use backend::{FirecrackerBackend, GuestImage};
pub use boot_args::{BootArgsError, KernelArgs};
pub use client::{ApiClient, ApiError, Endpoint};
pub use template::{Template, TemplateManifest};
