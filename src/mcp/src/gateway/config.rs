//! The gateway's configuration: which MCP servers to run in which sandboxes, which of their tools
//! to expose, what environment (and secrets) they get, and what to do with secrets found in
//! tool calls. A TOML file, every table closed (`deny_unknown_fields`).
//!
//! Loading is pure but for reading files ([`GatewayConfig::load`], [`GatewayConfig::read_secrets`]):
//! call those off an async executor. Paths are resolved here (`~` against `$HOME`, relative
//! ones against the config file's directory); whether they exist is the sandbox's business.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read as _;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use luminaguard_core::network::EgressRule;
use luminaguard_core::size::ByteSize;
use luminaguard_core::spec::BackendChoice;
use serde::Deserialize;
use zeroize::Zeroizing;

pub use super::secrets::{ScanMode, Secret};

mod raw;

/// The whole configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct GatewayConfig {
    /// What to do with secrets in calls.
    pub scan: ScanConfig,
    /// The secrets file (`[secrets] file`), resolved.
    pub secrets_file: Option<PathBuf>,
    /// The servers by name (at least one).
    pub servers: BTreeMap<String, ServerConfig>,
}

/// `[scan]`: what to do when a call's arguments or its result carry a secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScanConfig {
    /// For tool-call arguments (default: block).
    pub arguments: ScanMode,
    /// For results coming back from a server (default: redact).
    pub results: ScanMode,
    /// Also look for common credential shapes, not only the configured values (default: yes).
    pub shapes: bool,
}

impl Default for ScanConfig {
    fn default() -> Self {
        Self {
            arguments: ScanMode::Block,
            results: ScanMode::Redact,
            shapes: true,
        }
    }
}

/// One `[servers.NAME]` table, validated and with its paths resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// The program and its arguments, run in the sandbox (never empty).
    pub command: Vec<String>,
    /// Which backend runs its sandbox.
    pub backend: BackendChoice,
    /// A guest image (digest or prefix); `None`: the default.
    pub image: Option<String>,
    /// The host directory shared at `/workspace`, absolute.
    pub workspace: Option<PathBuf>,
    /// The workspace is read-only (only with a workspace).
    pub read_only: bool,
    /// Egress allowed; empty: no network.
    pub network: Vec<EgressRule>,
    /// Its environment, by variable name.
    pub env: BTreeMap<String, EnvValue>,
    /// Which of its tools are exposed.
    pub tools: ToolFilter,
    /// When it is started.
    pub start: StartMode,
    /// Read-only host directories, host paths absolute.
    pub mounts: Vec<MountSpec>,
    /// Memory limit.
    pub memory: Option<ByteSize>,
    /// CPU limit.
    pub cpus: Option<u32>,
    /// Process limit.
    pub pids: Option<u32>,
    /// How long one tool call may take (default 120 s).
    pub call_timeout: Duration,
    /// Its working directory in the sandbox (absolute).
    pub cwd: Option<PathBuf>,
}

/// The default [`ServerConfig::call_timeout`].
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(120);

/// Where an environment variable's value comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum EnvValue {
    /// Written in the config (not secret).
    Literal(String),
    /// `{ secret = NAME }`: the secrets file's entry `NAME`.
    Secret(String),
    /// `{ env = VAR }`: the gateway's own environment variable `VAR`.
    Env(String),
}

impl fmt::Debug for EnvValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Literal(v) => write!(f, "Literal({v:?})"),
            Self::Secret(name) => write!(f, "Secret({name:?})"),
            Self::Env(var) => write!(f, "Env({var:?})"),
        }
    }
}

/// `tools = { allow = [..] }` or `{ deny = [..] }`: which tools a server exposes. Patterns are
/// globs whose only special character is `*` (any run of characters).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ToolFilter {
    /// Every tool.
    #[default]
    All,
    /// Only the tools matching one of these.
    Allow(Vec<String>),
    /// Every tool but those matching one of these.
    Deny(Vec<String>),
}

impl ToolFilter {
    /// Whether `tool` is exposed.
    pub fn allows(&self, tool: &str) -> bool {
        match self {
            Self::All => true,
            Self::Allow(globs) => globs.iter().any(|g| glob_match(g, tool)),
            Self::Deny(globs) => !globs.iter().any(|g| glob_match(g, tool)),
        }
    }
}

/// Whether `text` matches `glob`, where `*` matches any run of characters (also none).
fn glob_match(glob: &str, text: &str) -> bool {
    let mut parts = glob.split('*');
    let Some(first) = parts.next() else {
        return text.is_empty();
    };
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let middle: Vec<&str> = parts.collect();
    let Some((last, inner)) = middle.split_last() else {
        return rest.is_empty(); // no `*` at all
    };
    for part in inner {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// When a server is started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartMode {
    /// On first use (its tools are listed from the first start on).
    #[default]
    Lazy,
    /// When the gateway starts.
    Eager,
}

/// A read-only host directory in a server's sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountSpec {
    /// The host directory, absolute.
    pub host: PathBuf,
    /// Where it appears in the sandbox, absolute.
    pub at: PathBuf,
}

/// The secrets file's entries, by name. `Debug` shows the names only.
#[derive(Default, Clone)]
pub struct Secrets(BTreeMap<String, Secret>);

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

impl Secrets {
    /// Secrets given directly (tests, or a caller with its own store).
    pub fn from_map(map: BTreeMap<String, Secret>) -> Self {
        Self(map)
    }

    /// The secret of this name.
    pub fn get(&self, name: &str) -> Option<&Secret> {
        self.0.get(name)
    }
}

/// Why a configuration (or its secrets) cannot be used. Never carries a secret's value.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file could not be read.
    #[error("cannot read {what} {}: {source}", path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// An error in a config file, with the file's name.
    #[error("{}: {source}", path.display())]
    InFile {
        path: PathBuf,
        source: Box<ConfigError>,
    },
    /// Not valid TOML, or not the expected tables and keys (with line and column).
    #[error("{}{message}", server.as_ref().map(|s| format!("server `{s}`: ")).unwrap_or_default())]
    Syntax {
        server: Option<String>,
        message: String,
    },
    /// No `[servers.NAME]` table.
    #[error("no servers: add at least one [servers.NAME] table")]
    NoServers,
    /// A server name that cannot be used.
    #[error("server name {name:?} is invalid: {reason}")]
    BadServerName { name: String, reason: &'static str },
    /// A server's settings do not make sense.
    #[error("server `{server}`: {reason}")]
    Server { server: String, reason: String },
    /// The secrets file is readable or writable by others, or not a regular file of its own.
    #[error("secrets file {}: {reason}", path.display())]
    SecretsFileUnsafe { path: PathBuf, reason: String },
    /// The secrets file is not `NAME = "value"` lines; only the position is given (the text
    /// there may be a secret).
    #[error(
        "secrets file {}: line {line}, column {column}: not NAME = \"value\" (the text there is \
         not shown: it may be a secret)",
        path.display()
    )]
    SecretsFileSyntax {
        path: PathBuf,
        line: usize,
        column: usize,
    },
    /// A `{ secret = NAME }` whose name is not in the secrets file.
    #[error("server `{server}`: env {var}: secret `{secret}` is not in the secrets file")]
    MissingSecret {
        server: String,
        var: String,
        secret: String,
    },
    /// A `{ env = VAR }` whose variable is not set.
    #[error("server `{server}`: env {var}: the gateway's environment has no variable `{env}`")]
    MissingEnv {
        server: String,
        var: String,
        env: String,
    },
    /// A server not in the config.
    #[error("no server `{0}` in the gateway config")]
    UnknownServer(String),
}

impl ConfigError {
    fn server(server: &str, reason: impl Into<String>) -> Self {
        Self::Server {
            server: server.to_owned(),
            reason: reason.into(),
        }
    }
}

impl GatewayConfig {
    /// Reads and validates the config file at `path` (relative paths in it are relative to its
    /// directory, `~` is `$HOME`). Blocking.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = read_file(path, "gateway config")?;
        let base = path.parent().unwrap_or(Path::new("."));
        let home = std::env::var_os("HOME").map(PathBuf::from);
        Self::parse(&text, base, home.as_deref()).map_err(|e| ConfigError::InFile {
            path: path.to_owned(),
            source: Box::new(e),
        })
    }

    /// Parses and validates a config's text; relative paths are taken against `base_dir`, `~`
    /// against `home` (`~` is an error without one).
    pub fn parse(text: &str, base_dir: &Path, home: Option<&Path>) -> Result<Self, ConfigError> {
        raw::parse(text, base_dir, home)
    }

    /// The server of this name.
    pub fn server(&self, name: &str) -> Result<&ServerConfig, ConfigError> {
        self.servers
            .get(name)
            .ok_or_else(|| ConfigError::UnknownServer(name.to_owned()))
    }

    /// Reads the secrets file (none configured: no secrets). It must be a regular file owned by
    /// this user and neither readable nor writable by group or others. Blocking.
    pub fn read_secrets(&self) -> Result<Secrets, ConfigError> {
        let Some(path) = &self.secrets_file else {
            return Ok(Secrets::default());
        };
        let unsafe_file = |reason: String| ConfigError::SecretsFileUnsafe {
            path: path.clone(),
            reason,
        };
        let read = |source| ConfigError::Read {
            what: "secrets file",
            path: path.clone(),
            source,
        };
        let mut file = std::fs::File::open(path).map_err(read)?;
        let meta = file.metadata().map_err(read)?;
        if !meta.is_file() {
            return Err(unsafe_file("not a regular file".into()));
        }
        {
            use std::os::unix::fs::MetadataExt as _;
            let mode = meta.mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(unsafe_file(format!(
                    "its mode is {mode:04o}: group and others must have no access \
                     (chmod 600 {})",
                    path.display()
                )));
            }
            let me = nix::unistd::geteuid().as_raw();
            if meta.uid() != me {
                return Err(unsafe_file(format!(
                    "owned by uid {}, not by this user (uid {me})",
                    meta.uid()
                )));
            }
        }
        let mut text = Zeroizing::new(String::new());
        file.read_to_string(&mut text).map_err(read)?;
        parse_secrets(&text).map_err(|(line, column)| ConfigError::SecretsFileSyntax {
            path: path.clone(),
            line,
            column,
        })
    }

    /// Every environment variable of `server` with its value: literals as written, `{ secret }`
    /// from `secrets`, `{ env }` through `lookup_env`. A missing one is an error naming it.
    pub fn resolve_env(
        &self,
        server: &str,
        secrets: &Secrets,
        lookup_env: impl Fn(&str) -> Option<String>,
    ) -> Result<Vec<(String, Secret)>, ConfigError> {
        let config = self.server(server)?;
        let mut out = Vec::with_capacity(config.env.len());
        for (var, value) in &config.env {
            let resolved =
                match value {
                    EnvValue::Literal(v) => Secret::new(v.clone()),
                    EnvValue::Secret(name) => {
                        secrets
                            .get(name)
                            .cloned()
                            .ok_or_else(|| ConfigError::MissingSecret {
                                server: server.to_owned(),
                                var: var.clone(),
                                secret: name.clone(),
                            })?
                    }
                    EnvValue::Env(name) => lookup_env(name).map(Secret::new).ok_or_else(|| {
                        ConfigError::MissingEnv {
                            server: server.to_owned(),
                            var: var.clone(),
                            env: name.clone(),
                        }
                    })?,
                };
            out.push((var.clone(), resolved));
        }
        Ok(out)
    }

    /// Every secret value the config hands to a server, named for findings: a `{ secret = NAME }`
    /// as `NAME`, an `{ env = VAR }` as `env:VAR` (literal values are not secrets). Each once.
    pub fn secret_values(
        &self,
        secrets: &Secrets,
        lookup_env: impl Fn(&str) -> Option<String>,
    ) -> Result<Vec<(String, Secret)>, ConfigError> {
        let mut out: BTreeMap<String, Secret> = BTreeMap::new();
        for (server, config) in &self.servers {
            let resolved = self.resolve_env(server, secrets, &lookup_env)?;
            for ((_, value), (_, how)) in resolved.into_iter().zip(&config.env) {
                let name = match how {
                    EnvValue::Literal(_) => continue,
                    EnvValue::Secret(name) => name.clone(),
                    EnvValue::Env(var) => format!("env:{var}"),
                };
                out.entry(name).or_insert(value);
            }
        }
        Ok(out.into_iter().collect())
    }
}

/// Reads a config file (a regular file, not too large). Blocking.
fn read_file(path: &Path, what: &'static str) -> Result<String, ConfigError> {
    let read = |source| ConfigError::Read {
        what,
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read)?;
    let mut text = String::new();
    file.take(1 << 20).read_to_string(&mut text).map_err(read)?;
    Ok(text)
}

/// The secrets file's text as a map; an error gives only the position (line, column from 1).
fn parse_secrets(text: &str) -> Result<Secrets, (usize, usize)> {
    let map: BTreeMap<String, String> = toml::from_str(text).map_err(|e| {
        let at = e.span().map_or(0, |s| s.start);
        line_col(text, at)
    })?;
    // Each value moves into a `Secret`, which wipes it when dropped.
    Ok(Secrets(
        map.into_iter().map(|(k, v)| (k, Secret::new(v))).collect(),
    ))
}

/// The 1-based line and column of byte `at` in `text`.
fn line_col(text: &str, at: usize) -> (usize, usize) {
    let before = text.get(..at).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Expands `~` (against `home`) and makes `p` absolute (against `base`), lexically normalised.
fn resolve_path(p: &Path, base: &Path, home: Option<&Path>) -> Result<PathBuf, String> {
    let text = p.to_string_lossy();
    let expanded = if text == "~" || text.starts_with("~/") {
        let home = home.ok_or("`~` used but $HOME is not set")?;
        home.join(text.trim_start_matches('~').trim_start_matches('/'))
    } else if text.starts_with('~') {
        return Err(format!("{text:?}: only `~` and `~/…` are expanded"));
    } else {
        base.join(p)
    };
    if !expanded.is_absolute() {
        return Err(format!(
            "{text:?} resolves to the relative path {} (the config's directory is relative)",
            expanded.display()
        ));
    }
    Ok(normalize(&expanded))
}

/// `p` without `.` and with `..` applied (lexically).
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests;
