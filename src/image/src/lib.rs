//! Guest-image building blocks for LuminaGuard's microVM backends.
//!
//! - [`vmlinux`]: an uncompressed ELF `vmlinux` (what Firecracker boots) out of an x86 bzImage,
//!   and the kernel release the bzImage names.
//! - [`cpio`]: a deterministic cpio "newc" writer for the initramfs.
//! - [`modules`]: which kernel modules the guest must load, in load order, from a kernel's module
//!   tree, and their decompressed bytes.
//! - [`store`]: a content-addressed store of built images, described by a [`Manifest`].
//!
//! Everything here is synchronous and does blocking file I/O: async callers run it on a blocking
//! thread (`spawn_blocking`).
#![allow(clippy::disallowed_methods)] // deliberately blocking crate: callers run it off the executor

pub mod cpio;
pub mod decompress;
pub mod digest;
mod elf;
pub mod modules;
pub mod store;
pub mod vmlinux;

pub use decompress::Codec;
pub use digest::Digest;
pub use elf::ElfError;
pub use store::{Manifest, Store};
