//! Guest-image building blocks for LuminaGuard's microVM backends.
//!
//! - [`vmlinux`]: an uncompressed ELF `vmlinux` (what Firecracker boots) out of an x86 bzImage,
//!   and the kernel release the bzImage names.
//! - [`cpio`]: a deterministic cpio "newc" writer for the initramfs.
//! - [`modules`]: which kernel modules the guest must load, in load order, from a kernel's module
//!   tree, and their decompressed bytes.
//! - [`store`]: a content-addressed store of built images, described by a [`Manifest`].
//! - [`rootfs`]: a reproducible read-only ext4 root file system from a directory.
//! - [`initramfs`]: the initramfs: the static guest agent as `/init`, modules, `guest.json`.
//! - [`build`]: all of it from a kernel, the agent and a root directory, into the store
//!   (idempotent).
//! - [`include`]: host files copied into the root at build time (`--include HOST:AT`).
//! - [`hostroot`]: a minimal root tree from the host's own programs (tests, CI).
//!
//! Everything here is synchronous and does blocking file I/O: async callers run it on a blocking
//! thread (`spawn_blocking`).
#![allow(clippy::disallowed_methods)] // deliberately blocking crate: callers run it off the executor

pub mod build;
pub mod cpio;
pub mod decompress;
pub mod digest;
mod elf;
pub mod hostroot;
pub mod include;
pub mod initramfs;
pub mod modules;
pub mod rootfs;
pub mod store;
pub mod vmlinux;

pub use decompress::Codec;
pub use digest::Digest;
pub use elf::ElfError;
pub use store::{Manifest, Store};
