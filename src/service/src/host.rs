//! What the service needs to know about the host it runs on: where sandboxes' traffic leaves,
//! which resolver sandboxes' resolvers ask, where images are, which binary runs inside process
//! sandboxes, and what a workspace may never be. Read once, in one place, when the service is
//! made; nothing below the service reads the environment.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use luminaguard_core::Config;
use luminaguard_core::config::{ConfigPaths, HostConfig};
use luminaguard_core::{RuntimeDir, WorkspacePolicy};

use crate::ServiceError;

/// Where Firecracker's compiled seccomp filters are cached: beside the image store.
pub const SECCOMP_CACHE: &str = "firecracker-seccomp";

/// The host's settings for sandboxes.
#[derive(Debug, Clone)]
pub struct HostSettings {
    /// Where sandboxes' egress traffic leaves: the host's network namespace, or a named one
    /// (e.g. routed through a VPN; the tests' fake internet).
    pub uplink: luminaguard_net::Uplink,
    /// The resolver sandboxes' resolvers ask; `None`: the uplink's `resolv.conf` decides.
    pub dns_upstream: Option<SocketAddr>,
    /// The image store; `None` when there is none to find (no `HOME` to put it under).
    pub image_store: Option<PathBuf>,
    /// The binary with the `sandbox-init` and `dns-resolver` subcommands (this program).
    pub exe: PathBuf,
    /// The user's configuration directory, which no workspace may expose.
    pub config_dir: Option<PathBuf>,
    /// Where the VMMs' programs are, when configured (`[host]`); else they are looked for.
    pub programs: HostConfig,
    /// The audit log, which no workspace may expose (a sandbox would rewrite its own record).
    pub audit_dir: PathBuf,
}

impl HostSettings {
    /// From the configuration's `[host]` section (which the `LUMINAGUARD_*` variables set),
    /// with the image store defaulting to this user's (under `XDG_DATA_HOME` or `HOME`), and
    /// `XDG_CONFIG_HOME`/`HOME` for the configuration directory.
    pub fn from_config(config: &Config) -> Result<Self, ServiceError> {
        let env_path = |k: &str| std::env::var_os(k).map(PathBuf::from);
        let config_dir = ConfigPaths::standard(
            env_path("XDG_CONFIG_HOME").as_deref(),
            env_path("HOME").as_deref(),
        )
        .user
        .as_deref()
        .and_then(Path::parent)
        .map(Path::to_owned);
        let exe = std::env::current_exe().map_err(|e| {
            ServiceError::internal("finding our own binary (the sandbox init and resolver)", e)
        })?;
        let host = &config.host;
        Ok(Self {
            uplink: luminaguard_net::Uplink {
                netns: host.uplink_netns.clone(),
                pool: None,
            },
            dns_upstream: host.dns_upstream,
            image_store: host.image_store.clone().or_else(|| {
                luminaguard_image::store::default_root(
                    nix::unistd::getuid().as_raw(),
                    env_path("XDG_DATA_HOME").as_deref(),
                    env_path("HOME").as_deref(),
                )
            }),
            exe,
            config_dir,
            programs: host.clone(),
            audit_dir: config.audit_dir.clone(),
        })
    }

    /// The image store, or why there is none.
    pub fn image_store(&self) -> Result<&Path, ServiceError> {
        self.image_store.as_deref().ok_or_else(|| {
            ServiceError::HostUnsupported(
                "no image store: set LUMINAGUARD_IMAGE_STORE or HOME".into(),
            )
        })
    }

    /// The image `reference` names, or the newest one, verified against its manifest; `None`
    /// when the store has none. Blocking.
    pub fn find_image(
        &self,
        reference: Option<&str>,
    ) -> Result<Option<luminaguard_image::store::Image>, ServiceError> {
        find_image(self.image_store()?, reference)
    }

    /// What a workspace may not be, contain or lie inside besides the system directories:
    /// LuminaGuard's own state — the runtime directory, the image store and Firecracker's
    /// compiled seccomp filters beside it, the user's configuration directory. A sandbox that
    /// could write these could reach every later sandbox.
    pub fn protected_state(&self, runtime: &RuntimeDir) -> WorkspacePolicy {
        let mut policy = WorkspacePolicy::new().protect(runtime.root(), "the runtime directory");
        if let Some(store) = &self.image_store {
            policy = policy
                .protect(
                    store.with_file_name(SECCOMP_CACHE),
                    "LuminaGuard's compiled seccomp filters",
                )
                .protect(store, "LuminaGuard's image store");
        }
        if let Some(dir) = &self.config_dir {
            policy = policy.protect(dir, "LuminaGuard's configuration");
        }
        policy.protect(&self.audit_dir, "LuminaGuard's audit log")
    }
}

/// The image in the store at `root` that `reference` names, or the newest one, verified against
/// its manifest (nothing boots from an image whose files no longer match it); `None` when the
/// store has none. Blocking.
pub fn find_image(
    root: &Path,
    reference: Option<&str>,
) -> Result<Option<luminaguard_image::store::Image>, ServiceError> {
    if reference.is_none() && !root.exists() {
        return Ok(None);
    }
    let image_err = |e: luminaguard_image::store::StoreError| match e {
        luminaguard_image::store::StoreError::NotFound { .. }
        | luminaguard_image::store::StoreError::Ambiguous { .. } => {
            ServiceError::NotFound(e.to_string())
        }
        e => ServiceError::internal("the image store", e),
    };
    let store = luminaguard_image::Store::open(root).map_err(image_err)?;
    let image = match reference {
        Some(r) => store.get(r).map_err(image_err)?,
        None => match luminaguard_qemu::newest_image(&store).map_err(image_err)? {
            Some(image) => image,
            None => return Ok(None),
        },
    };
    Ok(Some(
        store
            .verify_for_boot(image.digest.as_str())
            .map_err(image_err)?,
    ))
}
