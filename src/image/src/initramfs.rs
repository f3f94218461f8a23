//! The initramfs of a guest image: the static guest agent as `/init`, the kernel modules the
//! guest must load, and `/etc/luminaguard/guest.json` telling the agent's VM init what to load
//! and what to mount (`docs/images.md`).
//!
//! ```text
//! init                                   the guest agent (static ELF), 0755
//! etc/luminaguard/guest.json             {"modules": [...], "root": {"device", "fstype"}}
//! lib/modules/<release>/<path>.ko        each module to load, decompressed
//! dev/console (5,1), dev/null (1,3)      the kernel opens /dev/console for init's stdio
//! proc/ sys/ run/luminaguard/{lower,scratch,root}/   mount points VM init uses
//! ```

use serde::{Deserialize, Serialize};

use crate::cpio::{Archive, CpioError};
use crate::elf::{self, EM_X86_64, ET_EXEC, ElfError};
use crate::modules::{ModuleTree, ModulesError};

/// The modules a guest needs, in the order it loads them (dependencies are added by
/// [`ModuleTree::resolve`]): the virtio-mmio bus, the block driver for the root disk, the
/// network driver (for a sandbox with an egress policy: Debian's cloud kernel has
/// `CONFIG_VIRTIO_NET=m`; it binds nothing when the VM has no NIC), vsock with its virtio
/// transport (the host protocol), overlayfs (the writable layer), and ext4 (the root file
/// system; built into Debian's cloud kernel, so usually nothing to load).
pub const GUEST_MODULES: &[&str] = &[
    "virtio_ring",
    "virtio",
    "virtio_mmio",
    "virtio_blk",
    "virtio_net",
    "vsock",
    "vmw_vsock_virtio_transport_common",
    "vmw_vsock_virtio_transport",
    "overlay",
    "ext4",
];

/// The guest's root device: the first virtio-blk drive.
pub const ROOT_DEVICE: &str = "/dev/vda";
/// The root file system's type.
pub const ROOT_FSTYPE: &str = "ext4";
/// Where the guest configuration goes in the initramfs.
pub const GUEST_CONFIG_PATH: &str = "etc/luminaguard/guest.json";
/// Mount points VM init uses inside the initramfs (it also creates missing ones).
const MOUNT_POINTS: &[&str] = &[
    "proc",
    "sys",
    "run/luminaguard/lower",
    "run/luminaguard/scratch",
    "run/luminaguard/root",
];
/// `ET_DYN`: a position-independent executable (static-pie included).
const ET_DYN: u16 = 3;

/// Why an initramfs cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum InitramfsError {
    /// The agent binary is not a static x86-64 executable.
    #[error("guest agent {path}: {reason}")]
    BadAgent { path: String, reason: String },
    /// The agent binary is not an ELF.
    #[error("guest agent {path}: {source}")]
    AgentElf { path: String, source: ElfError },
    /// A module could not be resolved or read.
    #[error(transparent)]
    Modules(#[from] ModulesError),
    /// A module path cannot be stored in the archive.
    #[error("module {0} has a path that is not UTF-8")]
    ModulePath(String),
    /// An entry could not be added.
    #[error(transparent)]
    Cpio(#[from] CpioError),
    /// The guest configuration could not be serialised.
    #[error("serialising guest.json: {0}")]
    Config(serde_json::Error),
}

/// `/etc/luminaguard/guest.json`: what VM init loads and mounts. The agent's
/// `vm_init::GuestConfig` reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestConfig {
    /// Absolute paths inside the initramfs of the modules to load, in load order.
    pub modules: Vec<String>,
    /// The read-only root file system.
    pub root: GuestRoot,
}

/// The root file system of [`GuestConfig`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestRoot {
    /// Block device, e.g. `/dev/vda`.
    pub device: String,
    /// File system type, e.g. `ext4`.
    pub fstype: String,
}

/// A built initramfs.
#[derive(Debug, Clone)]
pub struct Initramfs {
    /// The archive.
    pub archive: Archive,
    /// Names of the modules it loads, in load order.
    pub modules: Vec<String>,
    /// Wanted modules that are built into the kernel.
    pub builtin: Vec<String>,
    /// Its guest configuration.
    pub config: GuestConfig,
}

/// Checks that `agent` is an x86-64 executable with no ELF interpreter (static): the guest
/// has no dynamic loader next to `/init`.
pub fn check_static_agent(agent: &[u8], path: &str) -> Result<(), InitramfsError> {
    let elf = elf::parse(agent).map_err(|source| InitramfsError::AgentElf {
        path: path.to_owned(),
        source,
    })?;
    let bad = |reason: String| InitramfsError::BadAgent {
        path: path.to_owned(),
        reason,
    };
    if elf.machine != EM_X86_64 {
        return Err(bad(format!("machine {:#x} is not x86-64", elf.machine)));
    }
    if elf.e_type != ET_EXEC && elf.e_type != ET_DYN {
        return Err(bad(format!("ELF type {} is not an executable", elf.e_type)));
    }
    let interp = elf
        .section(".interp")
        .map_err(|source| InitramfsError::AgentElf {
            path: path.to_owned(),
            source,
        })?;
    if interp.is_some() {
        return Err(bad(
            "is dynamically linked (has an ELF interpreter); build the static agent with \
             scripts/build-static-agent"
                .to_owned(),
        ));
    }
    Ok(())
}

/// Builds the initramfs: `agent` (checked by [`check_static_agent`]; `agent_path` names it in
/// errors) as `/init`, the modules `wanted` resolves to in `tree` (kernel `release`), and the
/// guest configuration. Deterministic: the same inputs give the same bytes.
pub fn build(
    agent: &[u8],
    agent_path: &str,
    tree: &ModuleTree,
    release: &str,
    wanted: &[&str],
) -> Result<Initramfs, InitramfsError> {
    check_static_agent(agent, agent_path)?;
    let resolution = tree.resolve(wanted)?;
    let mut archive = Archive::new();
    archive.dir("dev", 0o755)?;
    archive.char_device("dev/console", 0o600, 5, 1)?;
    archive.char_device("dev/null", 0o666, 1, 3)?;
    for dir in MOUNT_POINTS {
        archive.dir(dir, 0o755)?;
    }
    archive.dir("etc", 0o755)?;
    archive.dir("etc/luminaguard", 0o755)?;
    archive.file("init", 0o755, agent)?;
    let mut paths = Vec::with_capacity(resolution.modules.len());
    for module in &resolution.modules {
        let relative = module.plain_relative();
        let relative = relative
            .to_str()
            .ok_or_else(|| InitramfsError::ModulePath(module.path.display().to_string()))?;
        let path = format!("lib/modules/{release}/{relative}");
        archive.file(&path, 0o644, module.read()?)?;
        paths.push(format!("/{path}"));
    }
    let config = GuestConfig {
        modules: paths,
        root: GuestRoot {
            device: ROOT_DEVICE.to_owned(),
            fstype: ROOT_FSTYPE.to_owned(),
        },
    };
    let mut json = serde_json::to_vec_pretty(&config).map_err(InitramfsError::Config)?;
    json.push(b'\n');
    archive.file(GUEST_CONFIG_PATH, 0o644, json)?;
    Ok(Initramfs {
        archive,
        modules: resolution.names().into_iter().map(str::to_owned).collect(),
        builtin: resolution.builtin,
        config,
    })
}
