//! LuminaGuard's configuration: TOML files, environment and flags, merged in that order.
//!
//! Precedence, lowest first: built-in defaults, the system file (`/etc/luminaguard/config.toml`),
//! the user file (`$XDG_CONFIG_HOME/luminaguard/config.toml`, else
//! `~/.config/luminaguard/config.toml`), `LUMINAGUARD_*` environment variables, command-line flags.
//! Each source is parsed into a [`ConfigLayer`] whose fields are all optional; later layers
//! override earlier ones field by field.
//!
//! Networking cannot be switched on from configuration: a sandbox's network policy is given per
//! sandbox, so no file on the machine can silently open every sandbox to the network.
//!
//! Loading reads files synchronously; call it before starting an async runtime or from
//! `spawn_blocking`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::runtime::{RuntimeDir, RuntimeDirError};
use crate::size::ByteSize;
use crate::spec::{BackendChoice, SandboxSpec, SpecError, duration_text};

/// Why configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file exists but could not be read.
    #[error("cannot read config file {path:?}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A file is not valid TOML for this schema (the message carries line and column).
    #[error("invalid config file {path:?}: {message}")]
    Parse { path: PathBuf, message: String },
    /// An environment variable has a value we cannot use.
    #[error("environment variable {var}={value:?}: {reason}")]
    Env {
        var: &'static str,
        value: String,
        reason: String,
    },
    /// The merged sandbox defaults are not a valid spec.
    #[error("configured sandbox defaults are invalid: {0}")]
    Defaults(#[from] SpecError),
    #[error(transparent)]
    RuntimeDir(#[from] RuntimeDirError),
    /// A merged setting has a value that cannot work.
    #[error("{key} = {value}: {reason}")]
    Value {
        key: &'static str,
        value: String,
        reason: &'static str,
    },
}

/// One source of configuration. Every field is optional; absent means "not set here".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigLayer {
    /// Root of per-sandbox runtime state.
    pub runtime_dir: Option<PathBuf>,
    /// Default `tracing` filter (`info`, `luminaguard=debug`, …).
    pub log: Option<String>,
    /// Where the audit log lives.
    pub audit_dir: Option<PathBuf>,
    /// The policy every action is judged by: a preset (`strict`, `default`, `permissive`) or a
    /// policy file.
    pub policy: Option<String>,
    #[serde(default)]
    pub defaults: DefaultsLayer,
    #[serde(default)]
    pub copy: CopyLayer,
    #[serde(default)]
    pub review: ReviewLayer,
    #[serde(default)]
    pub daemon: DaemonLayer,
    #[serde(default)]
    pub agent: AgentLayer,
    /// Warm pools the daemon keeps (`[pools.NAME]`); a later layer's pool of the same name
    /// replaces an earlier one's whole.
    #[serde(default)]
    pub pools: BTreeMap<String, PoolConfig>,
    #[serde(default)]
    pub host: HostLayer,
}

/// Where this host's programs and LuminaGuard's images are, and how sandboxes' traffic leaves
/// it. Every field also has an environment variable (below); unset, LuminaGuard looks for
/// itself (programs on `PATH`, the image store under the user's data directory).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostLayer {
    /// `LUMINAGUARD_IMAGE_STORE`.
    pub image_store: Option<PathBuf>,
    /// A network namespace sandboxes' egress leaves through (`LUMINAGUARD_UPLINK_NETNS`).
    pub uplink_netns: Option<String>,
    /// The resolver sandboxes' resolvers ask: `IP` or `IP:PORT` (`LUMINAGUARD_DNS_UPSTREAM`;
    /// default: the uplink's `resolv.conf`).
    pub dns_upstream: Option<String>,
    /// `qemu-system-x86_64` (`LUMINAGUARD_QEMU`).
    pub qemu: Option<PathBuf>,
    /// `vhost-device-vsock` (`LUMINAGUARD_VHOST_DEVICE_VSOCK`).
    pub vhost_device_vsock: Option<PathBuf>,
    /// `firecracker` (`LUMINAGUARD_FIRECRACKER`).
    pub firecracker: Option<PathBuf>,
    /// Firecracker's `jailer` (`LUMINAGUARD_JAILER`; default: next to `firecracker`).
    pub jailer: Option<PathBuf>,
    /// Firecracker's `seccompiler-bin` (`LUMINAGUARD_SECCOMPILER`; default: next to
    /// `firecracker`).
    pub seccompiler: Option<PathBuf>,
}

/// [`HostLayer`], merged and checked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HostConfig {
    pub image_store: Option<PathBuf>,
    pub uplink_netns: Option<String>,
    pub dns_upstream: Option<std::net::SocketAddr>,
    pub qemu: Option<PathBuf>,
    pub vhost_device_vsock: Option<PathBuf>,
    pub firecracker: Option<PathBuf>,
    pub jailer: Option<PathBuf>,
    pub seccompiler: Option<PathBuf>,
}

/// `IP` (port 53) or `IP:PORT`.
pub fn parse_dns_upstream(value: &str) -> Option<std::net::SocketAddr> {
    value.parse().ok().or_else(|| {
        value
            .parse::<std::net::IpAddr>()
            .ok()
            .map(|ip| std::net::SocketAddr::new(ip, 53))
    })
}

impl HostLayer {
    fn merge(self, over: Self) -> Self {
        Self {
            image_store: over.image_store.or(self.image_store),
            uplink_netns: over.uplink_netns.or(self.uplink_netns),
            dns_upstream: over.dns_upstream.or(self.dns_upstream),
            qemu: over.qemu.or(self.qemu),
            vhost_device_vsock: over.vhost_device_vsock.or(self.vhost_device_vsock),
            firecracker: over.firecracker.or(self.firecracker),
            jailer: over.jailer.or(self.jailer),
            seccompiler: over.seccompiler.or(self.seccompiler),
        }
    }

    fn resolve(self) -> Result<HostConfig, ConfigError> {
        let dns_upstream = match self.dns_upstream.filter(|v| !v.is_empty()) {
            None => None,
            Some(v) => Some(parse_dns_upstream(&v).ok_or(ConfigError::Value {
                key: "host.dns_upstream",
                value: v,
                reason: "not an IP address or IP:PORT",
            })?),
        };
        // An empty value (`LUMINAGUARD_QEMU=`) is unset, not a path.
        let set = |p: Option<PathBuf>| p.filter(|p| !p.as_os_str().is_empty());
        Ok(HostConfig {
            image_store: set(self.image_store),
            uplink_netns: self.uplink_netns.filter(|n| !n.is_empty()),
            dns_upstream,
            qemu: set(self.qemu),
            vhost_device_vsock: set(self.vhost_device_vsock),
            firecracker: set(self.firecracker),
            jailer: set(self.jailer),
            seccompiler: set(self.seccompiler),
        })
    }
}

/// One warm pool: `size` sandboxes made ahead with these settings, each handed out once.
/// Unset settings take `[defaults]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    /// How many ready sandboxes the daemon keeps (1–64).
    pub size: u32,
    /// A ready sandbox older than this is replaced by a fresh one (default 10m).
    #[serde(default, with = "duration_text::option")]
    pub max_age: Option<Duration>,
    pub backend: Option<BackendChoice>,
    /// Guest image (microVMs): digest or unique prefix.
    pub image: Option<String>,
    /// Firecracker template to restore from.
    pub template: Option<String>,
    pub memory: Option<ByteSize>,
    pub pids: Option<u32>,
    pub cpus: Option<u32>,
    /// Default per-command timeout.
    #[serde(default, with = "duration_text::option")]
    pub timeout: Option<Duration>,
    /// How long a sandbox lives once handed out.
    #[serde(default, with = "duration_text::option")]
    pub lifetime: Option<Duration>,
    /// Egress allowed (as `--net`); empty: no network.
    #[serde(default)]
    pub net: Vec<crate::network::EgressRule>,
    #[serde(default)]
    pub net_deny: Vec<crate::network::EgressRule>,
}

impl PoolConfig {
    /// A ready member is replaced after this long.
    pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(600);
    /// Most members one pool keeps.
    pub const MAX_SIZE: u32 = 64;

    pub fn max_age(&self) -> Duration {
        self.max_age.unwrap_or(Self::DEFAULT_MAX_AGE)
    }

    /// Whether a member made for `self` is one of `other`'s: every setting but the size is
    /// the same (the age counts too: a member's own lifetime backstop is made from it).
    pub fn makes_same_as(&self, other: &Self) -> bool {
        Self {
            size: other.size,
            ..self.clone()
        } == *other
    }
}

/// `luminaguard daemon` settings a layer may set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonLayer {
    /// The API socket (default `<runtime_dir>/api.sock`).
    pub socket: Option<PathBuf>,
    /// The group whose members may connect (besides root).
    pub group: Option<String>,
    /// Most connections at once; more wait to be accepted.
    pub max_connections: Option<u32>,
    /// How long a client has to send a request's headers, and its body.
    #[serde(default, with = "duration_text::option")]
    pub request_timeout: Option<Duration>,
    /// Largest JSON request body.
    pub max_body: Option<ByteSize>,
    /// How long a stopping daemon lets requests in flight finish.
    #[serde(default, with = "duration_text::option")]
    pub shutdown_grace: Option<Duration>,
    /// Destroy every sandbox when the daemon stops (default: leave long-lived ones running for
    /// the next daemon).
    pub destroy_on_exit: Option<bool>,
    /// The pool one-shot runs (`run`, `POST /v1/run`) are served from when they name none and
    /// ask for nothing it does not give.
    pub run_pool: Option<String>,
}

/// `sandbox cp` settings a layer may set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CopyLayer {
    /// Largest file `sandbox cp` copies, in either direction.
    pub max_size: Option<ByteSize>,
}

/// The agent loop's defaults (`luminaguard agent`, docs/agent.md); its flags and
/// `LUMINAGUARD_AGENT_*` variables come first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentLayer {
    /// `openai`, `anthropic` or `ollama`.
    pub provider: Option<String>,
    /// The model's name, as the provider knows it.
    pub model: Option<String>,
    /// The API's base URL.
    pub base_url: Option<String>,
    /// A file holding the provider's key (only the user may read it: mode 0600 or stricter),
    /// read when the provider's variable (`OPENAI_API_KEY`, …) is not set. Never the key
    /// itself: a configuration file is shown by `config show`.
    pub api_key_file: Option<PathBuf>,
}

impl AgentLayer {
    fn merge(self, over: Self) -> Self {
        Self {
            provider: over.provider.or(self.provider),
            model: over.model.or(self.model),
            base_url: over.base_url.or(self.base_url),
            api_key_file: over.api_key_file.or(self.api_key_file),
        }
    }
}

/// Speculative-run (`--review`) settings a layer may set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReviewLayer {
    /// Largest change set a speculative run may write (its private layer's size).
    pub max_layer: Option<ByteSize>,
    /// How long a Diff Card may be approved after it is shown; later, it is refused.
    #[serde(default, with = "duration_text::option")]
    pub card_expiry: Option<Duration>,
}

/// Sandbox defaults a layer may set. Network policy is deliberately absent (see module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefaultsLayer {
    pub backend: Option<BackendChoice>,
    pub vcpus: Option<u32>,
    pub memory: Option<ByteSize>,
    pub scratch: Option<ByteSize>,
    #[serde(default, with = "duration_text::option")]
    pub lifetime: Option<Duration>,
    #[serde(default, with = "duration_text::option")]
    pub exec_timeout: Option<Duration>,
    pub pids: Option<u32>,
}

impl ConfigLayer {
    /// Parses a TOML document; `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &Path) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_owned(),
            message: e.to_string(),
        })
    }

    /// Reads a file; a missing file is an empty layer, any other failure an error.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        #[allow(clippy::disallowed_methods)] // documented as sync: runs before the runtime starts
        match std::fs::read_to_string(path) {
            Ok(text) => Self::from_toml(&text, path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(source) => Err(ConfigError::Read {
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// The layer described by `LUMINAGUARD_*` variables among `vars`.
    pub fn from_env<I, K, V>(vars: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: Into<String>,
    {
        fn parse<T: std::str::FromStr>(var: &'static str, value: String) -> Result<T, ConfigError>
        where
            T::Err: std::fmt::Display,
        {
            value.parse::<T>().map_err(|e| ConfigError::Env {
                var,
                reason: e.to_string(),
                value,
            })
        }
        let mut layer = Self::default();
        for (k, v) in vars {
            let v: String = v.into();
            match k.as_ref() {
                "LUMINAGUARD_RUNTIME_DIR" => layer.runtime_dir = Some(PathBuf::from(v)),
                "LUMINAGUARD_LOG" => layer.log = Some(v),
                "LUMINAGUARD_AUDIT_DIR" => layer.audit_dir = Some(PathBuf::from(v)),
                "LUMINAGUARD_POLICY" => layer.policy = Some(v),
                "LUMINAGUARD_BACKEND" => {
                    layer.defaults.backend = Some(parse("LUMINAGUARD_BACKEND", v)?)
                }
                "LUMINAGUARD_VCPUS" => layer.defaults.vcpus = Some(parse("LUMINAGUARD_VCPUS", v)?),
                "LUMINAGUARD_MEMORY" => {
                    layer.defaults.memory = Some(parse("LUMINAGUARD_MEMORY", v)?)
                }
                "LUMINAGUARD_EXEC_TIMEOUT" => {
                    let d = humantime::parse_duration(&v).map_err(|e| ConfigError::Env {
                        var: "LUMINAGUARD_EXEC_TIMEOUT",
                        reason: e.to_string(),
                        value: v.clone(),
                    })?;
                    layer.defaults.exec_timeout = Some(d);
                }
                "LUMINAGUARD_COPY_MAX_SIZE" => {
                    layer.copy.max_size = Some(parse("LUMINAGUARD_COPY_MAX_SIZE", v)?)
                }
                "LUMINAGUARD_DAEMON_SOCKET" => layer.daemon.socket = Some(PathBuf::from(v)),
                "LUMINAGUARD_DAEMON_GROUP" => layer.daemon.group = Some(v),
                "LUMINAGUARD_IMAGE_STORE" => layer.host.image_store = Some(PathBuf::from(v)),
                "LUMINAGUARD_UPLINK_NETNS" => layer.host.uplink_netns = Some(v),
                "LUMINAGUARD_DNS_UPSTREAM" => layer.host.dns_upstream = Some(v),
                "LUMINAGUARD_QEMU" => layer.host.qemu = Some(PathBuf::from(v)),
                "LUMINAGUARD_VHOST_DEVICE_VSOCK" => {
                    layer.host.vhost_device_vsock = Some(PathBuf::from(v))
                }
                "LUMINAGUARD_FIRECRACKER" => layer.host.firecracker = Some(PathBuf::from(v)),
                "LUMINAGUARD_JAILER" => layer.host.jailer = Some(PathBuf::from(v)),
                "LUMINAGUARD_SECCOMPILER" => layer.host.seccompiler = Some(PathBuf::from(v)),
                _ => {}
            }
        }
        Ok(layer)
    }

    /// `over` wins wherever it sets a field.
    pub fn merge(self, over: ConfigLayer) -> ConfigLayer {
        let (a, b) = (self.defaults, over.defaults);
        ConfigLayer {
            runtime_dir: over.runtime_dir.or(self.runtime_dir),
            log: over.log.or(self.log),
            audit_dir: over.audit_dir.or(self.audit_dir),
            policy: over.policy.or(self.policy),
            defaults: DefaultsLayer {
                backend: b.backend.or(a.backend),
                vcpus: b.vcpus.or(a.vcpus),
                memory: b.memory.or(a.memory),
                scratch: b.scratch.or(a.scratch),
                lifetime: b.lifetime.or(a.lifetime),
                exec_timeout: b.exec_timeout.or(a.exec_timeout),
                pids: b.pids.or(a.pids),
            },
            copy: CopyLayer {
                max_size: over.copy.max_size.or(self.copy.max_size),
            },
            review: ReviewLayer {
                max_layer: over.review.max_layer.or(self.review.max_layer),
                card_expiry: over.review.card_expiry.or(self.review.card_expiry),
            },
            daemon: self.daemon.merge(over.daemon),
            agent: self.agent.merge(over.agent),
            pools: {
                let mut pools = self.pools;
                pools.extend(over.pools);
                pools
            },
            host: self.host.merge(over.host),
        }
    }
}

impl DaemonLayer {
    fn merge(self, over: Self) -> Self {
        Self {
            socket: over.socket.or(self.socket),
            group: over.group.or(self.group),
            max_connections: over.max_connections.or(self.max_connections),
            request_timeout: over.request_timeout.or(self.request_timeout),
            max_body: over.max_body.or(self.max_body),
            shutdown_grace: over.shutdown_grace.or(self.shutdown_grace),
            destroy_on_exit: over.destroy_on_exit.or(self.destroy_on_exit),
            run_pool: over.run_pool.or(self.run_pool),
        }
    }
}

/// Where configuration files are looked for.
#[derive(Debug, Clone)]
pub struct ConfigPaths {
    pub system: PathBuf,
    pub user: Option<PathBuf>,
}

impl ConfigPaths {
    pub const SYSTEM: &'static str = "/etc/luminaguard/config.toml";

    /// Standard locations, from `XDG_CONFIG_HOME` / `HOME` as given.
    pub fn standard(xdg_config_home: Option<&Path>, home: Option<&Path>) -> Self {
        let user = match (xdg_config_home, home) {
            (Some(x), _) if x.is_absolute() => Some(x.join("luminaguard/config.toml")),
            (_, Some(h)) if h.is_absolute() => Some(h.join(".config/luminaguard/config.toml")),
            _ => None,
        };
        Self {
            system: PathBuf::from(Self::SYSTEM),
            user,
        }
    }
}

/// The effective configuration after merging every layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Config {
    pub runtime_dir: PathBuf,
    pub log: String,
    /// The audit log's directory (`luminaguard audit …`, docs/audit.md).
    pub audit_dir: PathBuf,
    /// The policy every action is judged by: `strict`, `default`, `permissive` or a file.
    pub policy: String,
    /// Defaults for new sandboxes (always a valid spec with no network).
    pub defaults: SandboxSpec,
    pub copy: CopyConfig,
    pub review: ReviewConfig,
    pub daemon: DaemonConfig,
    /// Warm pools, by name (validated: names are ids, sizes 1–64).
    pub pools: BTreeMap<String, PoolConfig>,
    /// Where the host's programs and images are.
    pub host: HostConfig,
    /// The agent loop's defaults.
    pub agent: AgentLayer,
}

/// How `luminaguard daemon` serves its API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DaemonConfig {
    /// The API socket: `0660`, owned by root and [`DaemonConfig::group`].
    pub socket: PathBuf,
    /// Members of this group (and root) may connect; each sees only its own sandboxes.
    pub group: String,
    pub max_connections: u32,
    #[serde(with = "duration_text")]
    pub request_timeout: Duration,
    pub max_body: ByteSize,
    #[serde(with = "duration_text")]
    pub shutdown_grace: Duration,
    pub destroy_on_exit: bool,
    /// One-shot runs that name no pool are served from this one when they ask for nothing it
    /// does not give (else made as usual). Names a configured pool.
    pub run_pool: Option<String>,
}

impl DaemonConfig {
    /// The socket's file name in the runtime directory, by default.
    pub const SOCKET_NAME: &'static str = "api.sock";
    pub const DEFAULT_GROUP: &'static str = "luminaguard";
}

/// How `sandbox cp` behaves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CopyConfig {
    /// Largest file copied in either direction; a bigger one is refused and nothing is left
    /// behind.
    pub max_size: ByteSize,
}

impl CopyConfig {
    /// 1 GiB: the size of a sandbox's default scratch workspace (so a default sandbox never
    /// holds a file this refuses), big enough for build artefacts and logs, small enough that a
    /// routine copy out of a sandbox that serves an endless or huge file cannot fill the
    /// host's disk unnoticed.
    pub const DEFAULT_MAX_SIZE: ByteSize = ByteSize(1 << 30);
}

/// How speculative runs (`run --review`) behave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReviewConfig {
    /// The private layer that takes a speculative run's writes: a tmpfs of this size. A
    /// command that writes more gets ENOSPC, and the host's disk is never touched.
    pub max_layer: ByteSize,
    /// A card not approved within this long after it was shown is refused.
    #[serde(with = "duration_text")]
    pub card_expiry: Duration,
}

impl ReviewConfig {
    pub const DEFAULT_MAX_LAYER: ByteSize = ByteSize(1 << 30);
    pub const DEFAULT_CARD_EXPIRY: Duration = Duration::from_secs(600);
}

impl Default for CopyConfig {
    fn default() -> Self {
        Self {
            max_size: Self::DEFAULT_MAX_SIZE,
        }
    }
}

impl Config {
    /// Merges `layers` (lowest precedence first) over built-in defaults and validates the result.
    pub fn resolve(
        uid: u32,
        xdg_runtime_dir: Option<&Path>,
        layers: impl IntoIterator<Item = ConfigLayer>,
    ) -> Result<Self, ConfigError> {
        let merged = layers
            .into_iter()
            .fold(ConfigLayer::default(), ConfigLayer::merge);
        let runtime_dir = merged
            .runtime_dir
            .unwrap_or_else(|| RuntimeDir::default_root(uid, xdg_runtime_dir));
        RuntimeDir::new(&runtime_dir)?;
        let mut spec = SandboxSpec::default();
        let d = merged.defaults;
        spec.backend = d.backend.unwrap_or(spec.backend);
        spec.vcpus = d.vcpus.unwrap_or(spec.vcpus);
        spec.memory = d.memory.unwrap_or(spec.memory);
        spec.scratch = d.scratch.unwrap_or(spec.scratch);
        spec.lifetime = d.lifetime.unwrap_or(spec.lifetime);
        spec.limits.exec_timeout = d.exec_timeout.unwrap_or(spec.limits.exec_timeout);
        spec.limits.pids = d.pids.unwrap_or(spec.limits.pids);
        spec.validate()?;
        let max_size = merged.copy.max_size.unwrap_or(CopyConfig::DEFAULT_MAX_SIZE);
        if max_size.bytes() == 0 {
            return Err(ConfigError::Value {
                key: "copy.max_size",
                value: max_size.to_string(),
                reason: "must be at least one byte",
            });
        }
        let max_layer = merged
            .review
            .max_layer
            .unwrap_or(ReviewConfig::DEFAULT_MAX_LAYER);
        if max_layer < ByteSize::mib(1) {
            return Err(ConfigError::Value {
                key: "review.max_layer",
                value: max_layer.to_string(),
                reason: "must be at least 1M",
            });
        }
        let d = merged.daemon;
        let daemon = DaemonConfig {
            socket: d
                .socket
                .unwrap_or_else(|| runtime_dir.join(DaemonConfig::SOCKET_NAME)),
            group: d
                .group
                .unwrap_or_else(|| DaemonConfig::DEFAULT_GROUP.to_owned()),
            max_connections: d.max_connections.unwrap_or(256),
            request_timeout: d.request_timeout.unwrap_or(Duration::from_secs(10)),
            max_body: d.max_body.unwrap_or(ByteSize(1 << 20)),
            shutdown_grace: d.shutdown_grace.unwrap_or(Duration::from_secs(30)),
            destroy_on_exit: d.destroy_on_exit.unwrap_or(false),
            run_pool: d.run_pool,
        };
        if let Some(pool) = &daemon.run_pool
            && !merged.pools.contains_key(pool)
        {
            return Err(ConfigError::Value {
                key: "daemon.run_pool",
                value: pool.clone(),
                reason: "names no [pools.NAME] section",
            });
        }
        if daemon.max_connections == 0 {
            return Err(ConfigError::Value {
                key: "daemon.max_connections",
                value: "0".into(),
                reason: "must be at least 1",
            });
        }
        for (name, pool) in &merged.pools {
            if name.parse::<crate::SandboxId>().is_err() {
                return Err(ConfigError::Value {
                    key: "pools",
                    value: name.clone(),
                    reason: "a pool's name is 1–64 of letters, digits, '-', '_'",
                });
            }
            if pool.size == 0 || pool.size > PoolConfig::MAX_SIZE {
                return Err(ConfigError::Value {
                    key: "pools.*.size",
                    value: format!("{} (pool {name})", pool.size),
                    reason: "must be between 1 and 64",
                });
            }
            if pool.max_age() < Duration::from_secs(1) {
                return Err(ConfigError::Value {
                    key: "pools.*.max_age",
                    value: format!("{:?} (pool {name})", pool.max_age()),
                    reason: "must be at least 1s",
                });
            }
        }
        let host = merged.host.resolve()?;
        if let Some(p) = merged.agent.provider.as_deref()
            && !matches!(p, "openai" | "anthropic" | "ollama")
        {
            return Err(ConfigError::Value {
                key: "agent.provider",
                value: p.to_owned(),
                reason: "openai, anthropic or ollama",
            });
        }
        Ok(Self {
            host,
            agent: merged.agent.clone(),
            pools: merged.pools,
            audit_dir: merged.audit_dir.unwrap_or_else(|| {
                if uid == 0 {
                    PathBuf::from(Self::SYSTEM_AUDIT_DIR)
                } else {
                    runtime_dir.join("audit")
                }
            }),
            policy: merged
                .policy
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| "default".to_owned()),
            runtime_dir,
            // Quiet by default: stderr belongs to the commands run in sandboxes.
            log: merged.log.unwrap_or_else(|| "warn".to_owned()),
            defaults: spec,
            copy: CopyConfig { max_size },
            review: ReviewConfig {
                max_layer,
                card_expiry: merged
                    .review
                    .card_expiry
                    .unwrap_or(ReviewConfig::DEFAULT_CARD_EXPIRY),
            },
            daemon,
        })
    }

    /// Loads system file, user file and environment, then applies `flags` on top.
    pub fn load<I, K, V>(
        paths: &ConfigPaths,
        env: I,
        uid: u32,
        xdg_runtime_dir: Option<&Path>,
        flags: ConfigLayer,
    ) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: Into<String>,
    {
        let env: Vec<(String, String)> = env
            .into_iter()
            .map(|(k, v)| (k.as_ref().to_owned(), v.into()))
            .collect();
        // The lowest layer: where this user's state lives by default.
        let state = ConfigLayer {
            audit_dir: Self::user_audit_dir(uid, &env),
            ..ConfigLayer::default()
        };
        let system = ConfigLayer::from_file(&paths.system)?;
        let user = match &paths.user {
            Some(p) => ConfigLayer::from_file(p)?,
            None => ConfigLayer::default(),
        };
        let env = ConfigLayer::from_env(env)?;
        Self::resolve(uid, xdg_runtime_dir, [state, system, user, env, flags])
    }

    /// Root's audit log, by default.
    pub const SYSTEM_AUDIT_DIR: &'static str = "/var/lib/luminaguard/audit";

    /// A user's audit log, by default: `$XDG_STATE_HOME/luminaguard/audit`, else
    /// `~/.local/state/luminaguard/audit` when the home directory exists, else (`None`) the
    /// runtime directory's `audit` (root: [`Config::SYSTEM_AUDIT_DIR`]).
    fn user_audit_dir(uid: u32, env: &[(String, String)]) -> Option<PathBuf> {
        if uid == 0 {
            return Some(PathBuf::from(Self::SYSTEM_AUDIT_DIR));
        }
        let var = |k: &str| {
            env.iter()
                .find(|(key, v)| key == k && v.starts_with('/'))
                .map(|(_, v)| PathBuf::from(v))
        };
        // A home that does not exist (`nobody`'s `/nonexistent`) holds no state: the runtime
        // directory's `audit` is the fallback then.
        var("XDG_STATE_HOME")
            .map(|s| s.join("luminaguard/audit"))
            .or_else(|| {
                var("HOME")
                    .filter(|h| h.is_dir())
                    .map(|h| h.join(".local/state/luminaguard/audit"))
            })
    }

    /// The runtime directory as a validated [`RuntimeDir`].
    pub fn runtime(&self) -> Result<RuntimeDir, RuntimeDirError> {
        RuntimeDir::new(&self.runtime_dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(text: &str) -> ConfigLayer {
        ConfigLayer::from_toml(text, Path::new("test.toml")).unwrap()
    }

    #[test]
    fn host_paths_come_from_the_file_or_the_environment_and_are_checked() {
        let file = layer(
            "[host]\nqemu = \"/opt/qemu\"\nfirecracker = \"/opt/fc\"\nuplink_netns = \"vpn\"",
        );
        let env = ConfigLayer::from_env([
            ("LUMINAGUARD_FIRECRACKER", "/env/fc"),
            ("LUMINAGUARD_DNS_UPSTREAM", "10.0.0.2"),
            ("LUMINAGUARD_JAILER", ""),
            ("LUMINAGUARD_IMAGE_STORE", "/srv/images"),
        ])
        .unwrap();
        let c = Config::resolve(0, None, [file, env]).unwrap();
        assert_eq!(c.host.qemu.as_deref(), Some(Path::new("/opt/qemu")));
        assert_eq!(c.host.firecracker.as_deref(), Some(Path::new("/env/fc")));
        assert_eq!(c.host.jailer, None, "an empty variable is unset");
        assert_eq!(c.host.uplink_netns.as_deref(), Some("vpn"));
        assert_eq!(c.host.dns_upstream, Some("10.0.0.2:53".parse().unwrap()));
        assert_eq!(
            c.host.image_store.as_deref(),
            Some(Path::new("/srv/images"))
        );
        let bad = ConfigLayer::from_env([("LUMINAGUARD_DNS_UPSTREAM", "dns.example")]).unwrap();
        let e = Config::resolve(0, None, [bad]).unwrap_err().to_string();
        assert!(e.contains("host.dns_upstream"), "{e}");
        assert!(ConfigLayer::from_toml("[host]\nqemmu = \"/x\"", Path::new("t.toml")).is_err());
    }

    #[test]
    fn pools_are_named_by_ids_and_sized_within_bounds() {
        let ok = layer("[pools.fast]\nsize = 4\nmemory = \"256M\"\nmax_age = \"1m\"");
        let c = Config::resolve(0, None, [ok]).unwrap();
        assert_eq!(c.pools["fast"].size, 4);
        assert_eq!(c.pools["fast"].max_age(), Duration::from_secs(60));
        let named = layer("[daemon]\nrun_pool = \"fast\"\n[pools.fast]\nsize = 1");
        let c = Config::resolve(0, None, [named]).unwrap();
        assert_eq!(c.daemon.run_pool.as_deref(), Some("fast"));
        for bad in [
            "[pools.fast]\nsize = 0",
            "[pools.fast]\nsize = 65",
            "[pools.\"a b\"]\nsize = 1",
            "[pools.fast]\nsize = 1\nmax_age = \"10ms\"",
            "[daemon]\nrun_pool = \"slow\"\n[pools.fast]\nsize = 1",
        ] {
            assert!(Config::resolve(0, None, [layer(bad)]).is_err(), "{bad}");
        }
        assert!(
            ConfigLayer::from_toml("[pools.fast]\nsize = 1\nmemroy = \"1G\"", Path::new("t"))
                .is_err()
        );
    }

    #[test]
    fn flags_beat_env_beat_user_beat_system() {
        let system = layer(
            "runtime_dir = \"/sys-rt\"\nlog = \"warn\"\n[defaults]\nmemory = \"256M\"\nvcpus = 2\npids = 100",
        );
        let user = layer("[defaults]\nmemory = \"1G\"\nvcpus = 3");
        let env = ConfigLayer::from_env([("LUMINAGUARD_VCPUS", "4"), ("PATH", "/bin")]).unwrap();
        let flags = ConfigLayer {
            runtime_dir: Some("/flag-rt".into()),
            ..Default::default()
        };
        let c = Config::resolve(0, None, [system, user, env, flags]).unwrap();
        assert_eq!(c.runtime_dir, PathBuf::from("/flag-rt"));
        assert_eq!(c.log, "warn");
        assert_eq!(c.defaults.memory, ByteSize::mib(1024));
        assert_eq!(c.defaults.vcpus, 4);
        assert_eq!(c.defaults.limits.pids, 100);
    }

    #[test]
    fn files_load_from_disk_and_missing_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let user = dir.path().join("config.toml");
        #[allow(clippy::disallowed_methods)]
        std::fs::write(
            &user,
            "[defaults]\nbackend = \"process\"\nexec_timeout = \"45s\"\n",
        )
        .unwrap();
        let paths = ConfigPaths {
            system: dir.path().join("absent.toml"),
            user: Some(user),
        };
        let c = Config::load(
            &paths,
            [("LUMINAGUARD_MEMORY", "128M")],
            1000,
            None,
            ConfigLayer::default(),
        )
        .unwrap();
        assert_eq!(c.defaults.backend, BackendChoice::Process);
        assert_eq!(c.defaults.limits.exec_timeout, Duration::from_secs(45));
        assert_eq!(c.defaults.memory, ByteSize::mib(128));
        assert_eq!(c.runtime_dir, PathBuf::from("/tmp/luminaguard-1000"));
    }

    #[test]
    fn errors_name_their_source() {
        let err =
            ConfigLayer::from_toml("[defaults]\nmemory = \"lots\"", Path::new("/etc/lg.toml"))
                .unwrap_err()
                .to_string();
        assert!(
            err.contains("/etc/lg.toml") && err.contains("lots"),
            "{err}"
        );
        let err = ConfigLayer::from_toml("network = \"egress\"", Path::new("u.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("network"),
            "network may not be configured globally: {err}"
        );
        let err = ConfigLayer::from_env([("LUMINAGUARD_BACKEND", "docker")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("LUMINAGUARD_BACKEND") && err.contains("docker"),
            "{err}"
        );
        let err = Config::resolve(0, None, [layer("[defaults]\nvcpus = 0")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("vcpus"), "{err}");
        let err = Config::resolve(0, None, [layer("runtime_dir = \"rel/dir\"")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("absolute"), "{err}");
    }

    #[test]
    fn copy_max_size_files_then_env_then_flags() {
        let c = Config::resolve(0, None, []).unwrap();
        assert_eq!(c.copy.max_size, ByteSize(1 << 30), "default");
        let file = layer("[copy]\nmax_size = \"2M\"");
        let c = Config::resolve(0, None, [file.clone()]).unwrap();
        assert_eq!(c.copy.max_size, ByteSize::mib(2));
        let env = ConfigLayer::from_env([("LUMINAGUARD_COPY_MAX_SIZE", "3M")]).unwrap();
        let c = Config::resolve(0, None, [file.clone(), env.clone()]).unwrap();
        assert_eq!(c.copy.max_size, ByteSize::mib(3));
        let flags = ConfigLayer {
            copy: CopyLayer {
                max_size: Some(ByteSize::mib(4)),
            },
            ..Default::default()
        };
        let c = Config::resolve(0, None, [file, env, flags]).unwrap();
        assert_eq!(c.copy.max_size, ByteSize::mib(4));

        let err = ConfigLayer::from_env([("LUMINAGUARD_COPY_MAX_SIZE", "lots")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("LUMINAGUARD_COPY_MAX_SIZE"), "{err}");
        let err = Config::resolve(0, None, [layer("[copy]\nmax_size = 0")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("copy.max_size"), "{err}");
        assert!(
            ConfigLayer::from_toml("[copy]\nmax = \"1M\"", Path::new("c.toml")).is_err(),
            "unknown keys are errors"
        );
    }

    #[test]
    fn standard_paths() {
        let p = ConfigPaths::standard(Some(Path::new("/x")), Some(Path::new("/home/u")));
        assert_eq!(p.user, Some(PathBuf::from("/x/luminaguard/config.toml")));
        let p = ConfigPaths::standard(None, Some(Path::new("/home/u")));
        assert_eq!(
            p.user,
            Some(PathBuf::from("/home/u/.config/luminaguard/config.toml"))
        );
        assert_eq!(p.system, PathBuf::from("/etc/luminaguard/config.toml"));
    }
}
