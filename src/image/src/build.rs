//! `image build`: a kernel, the static guest agent and a root directory in; a stored image out.
//!
//! [`build`] first digests its inputs (the kernel, the module files it will load, the agent,
//! the root tree and this builder's format); when the store already holds an image built from
//! the same inputs it returns that image and builds nothing. Otherwise it writes:
//!
//! - `vmlinux`: the uncompressed ELF kernel ([`crate::vmlinux::extract_vmlinux`]);
//! - `initramfs.cpio`: the agent as `/init`, the modules, `guest.json` ([`crate::initramfs`]);
//! - `rootfs.ext4`: the root tree as a reproducible ext4 image ([`crate::rootfs`]);
//! - `vmlinuz`: the kernel as given;
//!
//! and inserts them into the store with their manifest. Every step is deterministic, so the
//! same inputs give the same image digest even when built again from scratch.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::digest::Digest;
use crate::include::{self, Include, IncludeError};
use crate::initramfs::{self, GUEST_MODULES, InitramfsError, ROOT_DEVICE, ROOT_FSTYPE};
use crate::modules::{ModuleTree, ModulesError};
use crate::rootfs::{self, RootfsError};
use crate::store::{Image, NewImage, Source, Store, StoreError};
use crate::vmlinux::{self, VmlinuxError};

/// Changes whenever what [`build`] produces from the same inputs changes: part of the inputs
/// digest, so that an image built by an older builder is not reused.
pub const BUILD_FORMAT: &str = "luminaguard-image build 1";

/// Why an image cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// An input cannot be read.
    #[error("reading {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// A kernel tree does not have the expected layout.
    #[error("kernel tree {path}: {reason}")]
    KernelTree { path: PathBuf, reason: String },
    /// The modules directory is for another kernel.
    #[error(
        "kernel {kernel} is release {release}, but the modules in {modules} are for {modules_release:?}"
    )]
    ReleaseMismatch {
        kernel: PathBuf,
        release: String,
        modules: PathBuf,
        modules_release: String,
    },
    /// The kernel image is unusable.
    #[error("kernel {path}: {source}")]
    Kernel { path: PathBuf, source: VmlinuxError },
    /// The kernel modules cannot be resolved or read.
    #[error(transparent)]
    Modules(#[from] ModulesError),
    /// The initramfs cannot be built.
    #[error(transparent)]
    Initramfs(#[from] InitramfsError),
    /// The root file system cannot be built.
    #[error(transparent)]
    Rootfs(#[from] RootfsError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An include cannot be copied into the root.
    #[error(transparent)]
    Include(#[from] IncludeError),
    /// Scratch space for the build cannot be made.
    #[error("build scratch directory {path}: {source}")]
    Scratch {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A guest kernel: a bzImage and its module directory (`lib/modules/<release>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelSource {
    /// The bzImage (`vmlinuz`).
    pub bzimage: PathBuf,
    /// Its module directory, named after its release.
    pub modules_dir: PathBuf,
}

impl KernelSource {
    /// The kernel in an unpacked kernel package (what `scripts/fetch-guest-kernel` prints):
    /// exactly one `boot/vmlinuz-<release>` and its `lib/modules/<release>/`.
    pub fn from_tree(dir: &Path) -> Result<Self, BuildError> {
        let boot = dir.join("boot");
        let bad = |reason: String| BuildError::KernelTree {
            path: dir.to_owned(),
            reason,
        };
        let mut kernels = Vec::new();
        for entry in std::fs::read_dir(&boot).map_err(|source| BuildError::Read {
            what: "kernel tree",
            path: boot.clone(),
            source,
        })? {
            let entry = entry.map_err(|source| BuildError::Read {
                what: "kernel tree",
                path: boot.clone(),
                source,
            })?;
            if let Some(release) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.strip_prefix("vmlinuz-"))
            {
                kernels.push((release.to_owned(), entry.path()));
            }
        }
        let (release, bzimage) = match kernels.len() {
            1 => kernels.remove(0),
            0 => return Err(bad("no boot/vmlinuz-* in it".to_owned())),
            n => return Err(bad(format!("{n} boot/vmlinuz-* in it; expected one"))),
        };
        let modules_dir = dir.join("lib/modules").join(&release);
        if !modules_dir.is_dir() {
            return Err(bad(format!(
                "no lib/modules/{release}/ for boot/vmlinuz-{release}"
            )));
        }
        Ok(Self {
            bzimage,
            modules_dir,
        })
    }
}

/// What [`build`] is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildInputs {
    /// The guest kernel.
    pub kernel: KernelSource,
    /// The static guest agent (`scripts/build-static-agent`).
    pub agent: PathBuf,
    /// The directory that becomes the read-only root file system (with `includes` copied in).
    pub rootfs: PathBuf,
    /// Host files copied into the root at build time ([`crate::include`]).
    pub includes: Vec<Include>,
    /// Packages the root's base was made with beyond its defaults: only recorded (the root
    /// tree, which they are part of, is what is digested).
    pub packages: Vec<String>,
    /// Program and version recorded as the image's builder, e.g. `luminaguard 0.1.0`.
    pub created_by: String,
}

/// The outcome of [`build`].
#[derive(Debug, Clone)]
pub struct Built {
    /// The stored image.
    pub image: Image,
    /// Whether an image built from the same inputs was already there (nothing was built).
    pub reused: bool,
    /// How long each step took, in order.
    pub steps: Vec<(&'static str, Duration)>,
}

/// Times steps and reports each on stderr (through `tracing`) as it ends.
struct Steps(Vec<(&'static str, Duration)>, Instant);

impl Steps {
    fn done(&mut self, step: &'static str, detail: &str) {
        let took = self.1.elapsed();
        tracing::info!("image build: {step} {detail}({took:.2?})");
        self.0.push((step, took));
        self.1 = Instant::now();
    }
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, BuildError> {
    std::fs::read(path).map_err(|source| BuildError::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

/// Builds the image of `inputs` into `store`, or finds the one already built from the same
/// inputs. Blocking; takes seconds (the root file system and hashing dominate).
pub fn build(store: &Store, inputs: &BuildInputs) -> Result<Built, BuildError> {
    let mut steps = Steps(Vec::new(), Instant::now());
    let kernel_path = &inputs.kernel.bzimage;
    let bzimage = read("kernel", kernel_path)?;
    let release = vmlinux::kernel_release(&bzimage)
        .map_err(|source| BuildError::Kernel {
            path: kernel_path.clone(),
            source,
        })?
        .to_owned();
    let modules_dir = &inputs.kernel.modules_dir;
    let modules_release = modules_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if modules_release != release {
        return Err(BuildError::ReleaseMismatch {
            kernel: kernel_path.clone(),
            release,
            modules: modules_dir.clone(),
            modules_release,
        });
    }
    let tree = ModuleTree::open(modules_dir)?;
    let resolution = tree.resolve(GUEST_MODULES)?;
    let agent = read("guest agent", &inputs.agent)?;
    let agent_name = inputs.agent.display().to_string();
    initramfs::check_static_agent(&agent, &agent_name)?;
    // With includes, the root is staged in scratch space: the base linked in, each include
    // copied to its place. The staged tree is what is digested and written, so the includes'
    // content is an input like the rest of the root.
    let mut scratch = None;
    let (root_dir, included) = if inputs.includes.is_empty() {
        (inputs.rootfs.clone(), Vec::new())
    } else {
        let s = scratch.insert(Scratch::new(store)?);
        let staged = s.0.join("root");
        let included = include::stage(&inputs.rootfs, &inputs.includes, &staged)?;
        steps.done(
            "stage root",
            &format!("{} includes ", inputs.includes.len()),
        );
        (staged, included)
    };
    let root_tree = rootfs::scan_tree(&root_dir)?;
    steps.done(
        "read inputs",
        &format!("kernel {release}, {} root entries ", root_tree.entries),
    );

    // Everything the output depends on, each part labelled.
    let mut module_digests = Vec::new();
    for module in &resolution.modules {
        module_digests.push(format!(
            "{} {} {}",
            module.name,
            module.relative.display(),
            Digest::of(&read("kernel module", &module.path)?)
        ));
    }
    let module_digests = module_digests.join("\n");
    let format = format!(
        "{BUILD_FORMAT}\nmodules {}\nroot {ROOT_DEVICE} {ROOT_FSTYPE}",
        GUEST_MODULES.join(",")
    );
    let kernel_digest = Digest::of(&bzimage);
    let agent_digest = Digest::of(&agent);
    let mut packages = inputs.packages.clone();
    packages.sort();
    packages.dedup();
    let packages_part = packages.join(",");
    let includes_part = included
        .iter()
        .map(|i| format!("{} {}", i.at, i.sha256))
        .collect::<Vec<_>>()
        .join("\n");
    let mut parts = vec![
        ("format", format.as_bytes()),
        ("kernel", kernel_digest.as_str().as_bytes()),
        ("modules", module_digests.as_bytes()),
        ("agent", agent_digest.as_str().as_bytes()),
        ("rootfs", root_tree.digest.as_str().as_bytes()),
        ("created_by", inputs.created_by.as_bytes()),
    ];
    // Only when present, so that the images of builds without them keep their inputs digest.
    // (The root tree covers their effect; these cover what the manifest records of them.)
    if !packages.is_empty() {
        parts.push(("packages", packages_part.as_bytes()));
    }
    if !included.is_empty() {
        parts.push(("includes", includes_part.as_bytes()));
    }
    let inputs_digest = Digest::of_parts(parts);
    if let Some(image) = store.find_by_inputs(&inputs_digest)? {
        steps.done(
            "found",
            &format!("image {} built from the same inputs ", image.digest.short()),
        );
        return Ok(Built {
            image,
            reused: true,
            steps: steps.0,
        });
    }

    let vmlinux = vmlinux::extract_vmlinux(&bzimage).map_err(|source| BuildError::Kernel {
        path: kernel_path.clone(),
        source,
    })?;
    steps.done("vmlinux", &format!("{} bytes ", vmlinux.len()));

    let initramfs = initramfs::build(&agent, &agent_name, &tree, &release, GUEST_MODULES)?;
    let initramfs_bytes = initramfs.archive.to_bytes();
    steps.done(
        "initramfs",
        &format!(
            "{} bytes, modules {} ",
            initramfs_bytes.len(),
            initramfs.modules.join(",")
        ),
    );

    let scratch = match scratch {
        Some(s) => s,
        None => Scratch::new(store)?,
    };
    let rootfs_path = scratch.0.join("rootfs.ext4");
    let ext4 = rootfs::build_ext4(&root_dir, &rootfs_path, Some(root_tree))?;
    steps.done("rootfs", &format!("{} bytes ", ext4.size));

    let image = store.insert(NewImage {
        kernel_release: release,
        kernel: Source::Bytes(&bzimage),
        vmlinux: Some(Source::Bytes(&vmlinux)),
        initramfs: Source::Bytes(&initramfs_bytes),
        rootfs: Some(Source::File(&rootfs_path)),
        modules: initramfs.modules,
        inputs_digest,
        created_by: inputs.created_by.clone(),
        packages,
        includes: included,
    })?;
    steps.done("store", &format!("image {} ", image.digest.short()));
    Ok(Built {
        image,
        reused: false,
        steps: steps.0,
    })
}

/// A scratch directory in the store's `tmp/` (same file system, cleaned by `Store::open` if
/// this process dies), removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(store: &Store) -> Result<Self, BuildError> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let path = store
            .root()
            .join("tmp")
            .join(format!("build-{}-{nanos}", std::process::id()));
        std::fs::create_dir(&path).map_err(|source| BuildError::Scratch {
            path: path.clone(),
            source,
        })?;
        Ok(Self(path))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            tracing::warn!(path = %self.0.display(), error = %e, "removing build scratch directory");
        }
    }
}
