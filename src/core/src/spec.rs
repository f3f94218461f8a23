//! What a sandbox is: [`SandboxSpec`], and the validation that refuses nonsense and anything that
//! would silently weaken isolation.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::network::NetworkPolicy;
use crate::size::ByteSize;

/// Which backend runs a sandbox.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackendChoice {
    /// The strongest isolation that is fast on this host: Firecracker with KVM, else QEMU with
    /// KVM, else the process sandbox.
    #[default]
    Auto,
    Firecracker,
    Qemu,
    Process,
}

impl BackendChoice {
    pub const ALL: [Self; 4] = [Self::Auto, Self::Firecracker, Self::Qemu, Self::Process];
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Firecracker => "firecracker",
            Self::Qemu => "qemu",
            Self::Process => "process",
        }
    }
}

impl fmt::Display for BackendChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for BackendChoice {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|b| b.as_str() == s)
            .ok_or_else(|| SpecError::UnknownBackend(s.to_owned()))
    }
}

/// A host directory or file shown read-only inside the sandbox (the process backend only):
/// `host` is resolved (every link followed) when the sandbox is made, and that resolved path is
/// what the spec records; `at` is where the sandbox sees it. `HOST:AT` on a command line
/// ([`ReadOnlyMount::from_str`]: split at the last `:`).
///
/// Mounted with a recursive bind, every mount of the tree then read-only, `nosuid`, `nodev`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadOnlyMount {
    /// Host path: a directory or a regular file.
    pub host: PathBuf,
    /// Absolute, normalized path inside the sandbox.
    pub at: PathBuf,
}

impl FromStr for ReadOnlyMount {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.rsplit_once(':') {
            Some((host, at)) if !host.is_empty() && !at.is_empty() => Ok(Self {
                host: host.into(),
                at: at.into(),
            }),
            _ => Err(SpecError::MountSyntax(s.to_owned())),
        }
    }
}

impl fmt::Display for ReadOnlyMount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host.display(), self.at.display())
    }
}

/// Where a sandbox's workspace is.
pub const WORKSPACE_PATH: &str = "/workspace";

/// Where a read-only mount may not be, nor lie inside, nor contain: the sandbox's own kernel
/// interfaces and workspace (except a mount *at* `/workspace` in a sandbox without one: a
/// read-only workspace), LuminaGuard's in-sandbox state, and the system directories the
/// process sandbox binds read-only from the host (a mount point cannot be made inside a
/// read-only bind).
pub const MOUNT_RESERVED: &[&str] = &[
    "/proc",
    "/sys",
    "/dev",
    "/workspace",
    "/run/luminaguard",
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/etc",
];

/// Per-sandbox resource limits beyond vCPUs and memory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Most processes/threads alive at once.
    pub pids: u32,
    /// Most open files per process (RLIMIT_NOFILE).
    pub open_files: u64,
    /// Largest file a process may write (RLIMIT_FSIZE).
    pub file_size: ByteSize,
    /// Default per-exec timeout, when an exec names none.
    #[serde(with = "duration_text")]
    pub exec_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            pids: 512,
            open_files: 1024,
            file_size: ByteSize(4 * ByteSize::GIB),
            exec_timeout: Duration::from_secs(300),
        }
    }
}

/// Everything that defines one sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SandboxSpec {
    pub backend: BackendChoice,
    /// vCPUs for a microVM; CPU quota (in whole CPUs) for the process sandbox.
    pub vcpus: u32,
    pub memory: ByteSize,
    /// Size of the sandbox's private writable layer.
    pub scratch: ByteSize,
    /// The sandbox is destroyed this long after creation, whatever it is doing.
    #[serde(with = "duration_text")]
    pub lifetime: Duration,
    pub network: NetworkPolicy,
    /// Host paths shown read-only (see [`ReadOnlyMount`]); at most [`SandboxSpec::MAX_MOUNTS`].
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<ReadOnlyMount>,
    pub env: BTreeMap<String, String>,
    pub limits: Limits,
    /// `Some(size)`: a speculative run. The workspace is shown to the sandbox as an overlay whose
    /// writes go to a private layer of at most `size` bytes (`<sandbox dir>/review`); the real
    /// workspace is untouched until a person approves the change set (`luminaguard-review`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub review: Option<ByteSize>,
}

impl Default for SandboxSpec {
    fn default() -> Self {
        Self {
            backend: BackendChoice::Auto,
            vcpus: 1,
            memory: ByteSize::mib(512),
            scratch: ByteSize::mib(1024),
            lifetime: Duration::from_secs(3600),
            network: NetworkPolicy::None,
            mounts: Vec::new(),
            env: BTreeMap::new(),
            limits: Limits::default(),
            review: None,
        }
    }
}

/// Why a spec is refused. Each message says which field and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("unknown backend {0:?} (expected auto, firecracker, qemu or process)")]
    UnknownBackend(String),
    #[error("vcpus = {0}: must be between 1 and {max}", max = SandboxSpec::MAX_VCPUS)]
    Vcpus(u32),
    #[error("memory = {0}: must be between {min} and {max}", min = SandboxSpec::MIN_MEMORY, max = SandboxSpec::MAX_MEMORY)]
    Memory(ByteSize),
    #[error("scratch = {0}: must be at least {min}", min = SandboxSpec::MIN_SCRATCH)]
    Scratch(ByteSize),
    #[error("{field} = {value:?}: must be more than zero and at most {max:?}")]
    Duration {
        field: &'static str,
        value: Duration,
        max: Duration,
    },
    #[error("limits.pids = {0}: must be between 1 and 4194304")]
    Pids(u32),
    #[error("limits.open_files = {0}: must be between 16 and 1048576")]
    OpenFiles(u64),
    #[error("limits.file_size must be more than zero")]
    FileSize,
    #[error("mount {path:?}: {reason}")]
    Mount { path: PathBuf, reason: &'static str },
    #[error("mount {at:?}: {reason} {reserved}")]
    MountReserved {
        at: PathBuf,
        reason: &'static str,
        reserved: &'static str,
    },
    #[error("mounts at {0:?} and {1:?}: two mounts at the same place, or one inside the other")]
    DuplicateMount(PathBuf, PathBuf),
    #[error("{0} mounts: at most {max}", max = SandboxSpec::MAX_MOUNTS)]
    TooManyMounts(usize),
    #[error(
        "mount {0:?}: expected HOST:AT (a host path, a colon, an absolute path in the sandbox)"
    )]
    MountSyntax(String),
    #[error("environment variable {0:?}: names must be non-empty and hold no '=' or NUL")]
    EnvName(String),
    #[error("environment variable {0:?}: the value holds a NUL byte")]
    EnvValue(String),
    #[error(
        "network: egress is enabled but its allowlist is empty; \
         say what may be reached, or use mode = \"none\""
    )]
    NetworkWithoutPolicy,
}

impl SandboxSpec {
    pub const MAX_VCPUS: u32 = 64;
    pub const MIN_MEMORY: ByteSize = ByteSize::mib(32);
    pub const MAX_MEMORY: ByteSize = ByteSize(1 << 40);
    pub const MIN_SCRATCH: ByteSize = ByteSize::mib(1);
    pub const MAX_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);
    /// Most read-only mounts one sandbox may have.
    pub const MAX_MOUNTS: usize = 16;

    /// Checks every field; returns the first problem found.
    pub fn validate(&self) -> Result<(), SpecError> {
        if !(1..=Self::MAX_VCPUS).contains(&self.vcpus) {
            return Err(SpecError::Vcpus(self.vcpus));
        }
        if self.memory < Self::MIN_MEMORY || self.memory > Self::MAX_MEMORY {
            return Err(SpecError::Memory(self.memory));
        }
        if self.scratch < Self::MIN_SCRATCH {
            return Err(SpecError::Scratch(self.scratch));
        }
        check_duration("lifetime", self.lifetime, Self::MAX_LIFETIME)?;
        check_duration(
            "limits.exec_timeout",
            self.limits.exec_timeout,
            Self::MAX_LIFETIME,
        )?;
        if !(1..=4_194_304).contains(&self.limits.pids) {
            return Err(SpecError::Pids(self.limits.pids));
        }
        if !(16..=1_048_576).contains(&self.limits.open_files) {
            return Err(SpecError::OpenFiles(self.limits.open_files));
        }
        if self.limits.file_size.bytes() == 0 {
            return Err(SpecError::FileSize);
        }
        self.validate_mounts()?;
        for (k, v) in &self.env {
            if k.is_empty() || k.contains(['=', '\0']) {
                return Err(SpecError::EnvName(k.clone()));
            }
            if v.contains('\0') {
                return Err(SpecError::EnvValue(k.clone()));
            }
        }
        if let NetworkPolicy::Egress { allow, .. } = &self.network
            && allow.is_empty()
        {
            return Err(SpecError::NetworkWithoutPolicy);
        }
        Ok(())
    }

    /// The mount rules that need no file system: at most [`Self::MAX_MOUNTS`]; `host`
    /// absolute; `at` absolute and normal, not `/`, not at, inside or above a
    /// [`MOUNT_RESERVED`] path; no two at the same place or one inside another. (`host` is
    /// resolved and checked by whoever makes the sandbox.)
    fn validate_mounts(&self) -> Result<(), SpecError> {
        if self.mounts.len() > Self::MAX_MOUNTS {
            return Err(SpecError::TooManyMounts(self.mounts.len()));
        }
        for (i, m) in self.mounts.iter().enumerate() {
            let err = |path: &Path, reason| SpecError::Mount {
                path: path.to_owned(),
                reason,
            };
            if !m.host.is_absolute() || m.host.as_os_str().as_encoded_bytes().contains(&0) {
                return Err(err(&m.host, "host path must be absolute"));
            }
            let spelled_plainly =
                m.at.as_os_str() == m.at.components().collect::<PathBuf>().as_os_str();
            if !is_absolute_normal(&m.at) || !spelled_plainly {
                return Err(err(
                    &m.at,
                    "sandbox path must be absolute, without '.', '..', '//' or a trailing '/'",
                ));
            }
            if m.at == Path::new("/") {
                return Err(err(&m.at, "a mount cannot replace the sandbox's root"));
            }
            for r in MOUNT_RESERVED {
                // A directory shared read-only as the workspace (the service refuses it beside
                // a workspace).
                if *r == WORKSPACE_PATH && m.at == Path::new(WORKSPACE_PATH) {
                    continue;
                }
                let reason = if m.at.starts_with(r) {
                    "is or lies inside"
                } else if Path::new(r).starts_with(&m.at) {
                    "would cover"
                } else {
                    continue;
                };
                return Err(SpecError::MountReserved {
                    at: m.at.clone(),
                    reason,
                    reserved: r,
                });
            }
            if let Some(other) = self.mounts[..i]
                .iter()
                .find(|o| o.at.starts_with(&m.at) || m.at.starts_with(&o.at))
            {
                return Err(SpecError::DuplicateMount(other.at.clone(), m.at.clone()));
            }
        }
        Ok(())
    }
}

fn check_duration(field: &'static str, value: Duration, max: Duration) -> Result<(), SpecError> {
    if value.is_zero() || value > max {
        return Err(SpecError::Duration { field, value, max });
    }
    Ok(())
}

fn is_absolute_normal(p: &Path) -> bool {
    p.is_absolute()
        && p.components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
        && !p.as_os_str().as_encoded_bytes().contains(&0)
}

/// Durations in files as `"30s"`, `"5m"`, `"1h 30m"` (humantime).
pub mod duration_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!("duration {text:?}: {e} (examples: 30s, 5m, 1h)"))
        })
    }

    pub mod option {
        use std::time::Duration;

        use serde::{Deserialize, Deserializer, Serializer};

        pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
            match d {
                Some(d) => super::serialize(d, s),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            Option::<String>::deserialize(d)?
                .map(|text| {
                    humantime::parse_duration(&text).map_err(|e| {
                        serde::de::Error::custom(format!(
                            "duration {text:?}: {e} (examples: 30s, 5m, 1h)"
                        ))
                    })
                })
                .transpose()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::EgressRule;

    #[test]
    fn default_spec_is_valid_and_offline() {
        let spec = SandboxSpec::default();
        spec.validate().unwrap();
        assert!(spec.network.is_none());
    }

    #[test]
    fn refuses_nonsense() {
        let bad = |f: fn(&mut SandboxSpec)| {
            let mut s = SandboxSpec::default();
            f(&mut s);
            s.validate().unwrap_err()
        };
        assert_eq!(bad(|s| s.vcpus = 0), SpecError::Vcpus(0));
        assert_eq!(
            bad(|s| s.memory = ByteSize::mib(1)),
            SpecError::Memory(ByteSize::mib(1))
        );
        assert!(matches!(
            bad(|s| s.lifetime = Duration::ZERO),
            SpecError::Duration {
                field: "lifetime",
                ..
            }
        ));
        assert_eq!(bad(|s| s.limits.pids = 0), SpecError::Pids(0));
        assert!(matches!(
            bad(|s| s
                .env
                .insert("A=B".into(), "x".into())
                .map(drop)
                .unwrap_or(())),
            SpecError::EnvName(_)
        ));
    }

    fn with_mounts(mounts: &[(&str, &str)]) -> Result<(), SpecError> {
        SandboxSpec {
            mounts: mounts
                .iter()
                .map(|(host, at)| ReadOnlyMount {
                    host: host.into(),
                    at: at.into(),
                })
                .collect(),
            ..SandboxSpec::default()
        }
        .validate()
    }

    #[test]
    fn refuses_mounts_that_escape_shadow_or_sit_in_a_read_only_system_dir() {
        assert!(with_mounts(&[("/var/cache/x", "/opt/mcp/node")]).is_ok());
        assert!(with_mounts(&[("/home/me/../x", "/srv/x"), ("/a", "/tmp/b")]).is_ok());
        for (host, at) in [
            ("relative", "/opt/x"),
            ("/home/me", "opt/x"),
            ("/home/me", "../x"),
            ("/home/me", "/opt/../etc"),
            ("/home/me", "/opt/./x"),
            ("/home/me", "/opt/x/"),
            ("/home/me", "//opt/x"),
            ("/home/me", "/"),
        ] {
            assert!(
                matches!(with_mounts(&[(host, at)]), Err(SpecError::Mount { .. })),
                "{host} -> {at}"
            );
        }
        for at in [
            "/etc/x",
            "/etc",
            "/proc/x",
            "/sys",
            "/dev/shm",
            "/workspace/x",
            "/usr/local/lib/x",
            "/lib64/x",
            "/bin",
            "/run",
            "/run/luminaguard/x",
        ] {
            assert!(
                matches!(
                    with_mounts(&[("/a", at)]),
                    Err(SpecError::MountReserved { .. })
                ),
                "{at}"
            );
        }
        // A mount at /workspace itself is a read-only workspace (the service refuses it beside
        // a workspace).
        assert!(with_mounts(&[("/a", "/workspace")]).is_ok());
        // Component-wise: /etcetera is not /etc.
        assert!(with_mounts(&[("/a", "/etcetera")]).is_ok());
    }

    #[test]
    fn refuses_duplicate_nested_and_too_many_mounts() {
        for pair in [
            [("/a", "/opt/x"), ("/b", "/opt/x")],
            [("/a", "/opt/x"), ("/b", "/opt/x/y")],
            [("/a", "/opt/x/y"), ("/b", "/opt/x")],
        ] {
            assert!(
                matches!(with_mounts(&pair), Err(SpecError::DuplicateMount(..))),
                "{pair:?}"
            );
        }
        assert!(with_mounts(&[("/a", "/opt/x"), ("/b", "/opt/xy")]).is_ok());
        let at: Vec<String> = (0..=SandboxSpec::MAX_MOUNTS)
            .map(|i| format!("/opt/m{i}"))
            .collect();
        let many: Vec<(&str, &str)> = at.iter().map(|a| ("/a", a.as_str())).collect();
        assert!(with_mounts(&many[1..]).is_ok());
        assert_eq!(
            with_mounts(&many),
            Err(SpecError::TooManyMounts(SandboxSpec::MAX_MOUNTS + 1))
        );
    }

    #[test]
    fn a_mount_parses_as_host_colon_at() {
        let m: ReadOnlyMount = "/var/cache/a:b:/opt/x".parse().unwrap();
        assert_eq!(m.host, Path::new("/var/cache/a:b"));
        assert_eq!(m.at, Path::new("/opt/x"));
        assert_eq!(m.to_string(), "/var/cache/a:b:/opt/x");
        for bad in ["/a", ":/x", "/a:", ""] {
            assert!(bad.parse::<ReadOnlyMount>().is_err(), "{bad}");
        }
        let spec: SandboxSpec =
            toml::from_str("[[mounts]]\nhost = \"/a\"\nat = \"/opt/a\"").unwrap();
        assert_eq!(spec.mounts.len(), 1);
        assert!(
            toml::from_str::<SandboxSpec>("[[mounts]]\nhost = \"/a\"\nguest = \"/x\"").is_err()
        );
    }

    #[test]
    fn networking_without_a_policy_is_refused() {
        let mut s = SandboxSpec {
            network: NetworkPolicy::Egress {
                allow: vec![],
                deny: vec!["10.0.0.0/8".parse().unwrap()],
            },
            ..SandboxSpec::default()
        };
        assert_eq!(s.validate(), Err(SpecError::NetworkWithoutPolicy));
        s.network = NetworkPolicy::Egress {
            allow: vec!["api.example.com:443".parse::<EgressRule>().unwrap()],
            deny: vec![],
        };
        s.validate().unwrap();
    }

    #[test]
    fn toml_round_trip_and_unknown_fields_refused() {
        let text = r#"
            backend = "process"
            memory = "256M"
            lifetime = "10m"
            [network]
            mode = "egress"
            allow = ["*.github.com", "1.2.3.4:443"]
            [limits]
            pids = 64
            exec_timeout = "30s"
        "#;
        let spec: SandboxSpec = toml::from_str(text).unwrap();
        assert_eq!(spec.backend, BackendChoice::Process);
        assert_eq!(spec.memory, ByteSize::mib(256));
        assert_eq!(spec.limits.exec_timeout, Duration::from_secs(30));
        spec.validate().unwrap();
        let again: SandboxSpec = toml::from_str(&toml::to_string(&spec).unwrap()).unwrap();
        assert_eq!(again, spec);

        let err = toml::from_str::<SandboxSpec>("memroy = \"1G\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("memroy"), "{err}");
        let err = toml::from_str::<SandboxSpec>("[network]\nmode = \"open\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("open"), "{err}");
    }
}
