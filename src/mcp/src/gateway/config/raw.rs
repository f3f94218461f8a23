//! The config file as written (serde types), and its validation into [`GatewayConfig`].

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use luminaguard_core::network::EgressRule;
use luminaguard_core::size::ByteSize;
use luminaguard_core::spec::BackendChoice;
use serde::Deserialize;

use super::{
    ConfigError, DEFAULT_CALL_TIMEOUT, EnvValue, GatewayConfig, MountSpec, ScanConfig,
    ServerConfig, StartMode, ToolFilter, resolve_path,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    scan: ScanConfig,
    secrets: Option<RawSecrets>,
    #[serde(default)]
    servers: BTreeMap<String, RawServer>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSecrets {
    file: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    command: Vec<String>,
    #[serde(default)]
    backend: BackendChoice,
    image: Option<String>,
    workspace: Option<PathBuf>,
    #[serde(default)]
    read_only: bool,
    #[serde(default)]
    network: Vec<EgressRule>,
    #[serde(default)]
    env: BTreeMap<String, RawEnv>,
    tools: Option<RawTools>,
    #[serde(default)]
    start: StartMode,
    #[serde(default)]
    mounts: Vec<RawMount>,
    memory: Option<ByteSize>,
    cpus: Option<u32>,
    pids: Option<u32>,
    call_timeout: Option<HumanDuration>,
    cwd: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(
    untagged,
    expecting = "an env value: a string, { secret = \"NAME\" } or { env = \"VAR\" }"
)]
enum RawEnv {
    Literal(String),
    Ref(RawEnvRef),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEnvRef {
    secret: Option<String>,
    env: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTools {
    allow: Option<Vec<String>>,
    deny: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMount {
    host: PathBuf,
    at: PathBuf,
}

/// A duration as people write it: `60s`, `2m`, `1h 30m`.
#[derive(Deserialize)]
#[serde(try_from = "String")]
struct HumanDuration(Duration);

impl TryFrom<String> for HumanDuration {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        humantime::parse_duration(&s)
            .map(Self)
            .map_err(|e| format!("duration {s:?}: {e} (examples: 60s, 2m, 1h)"))
    }
}

/// Only the tables' spans: which server an error is in. (A table written as a `[header]` spans
/// its header only; an inline one, all of it.)
#[derive(Deserialize)]
struct Spans {
    scan: Option<toml::Spanned<toml::Value>>,
    secrets: Option<toml::Spanned<toml::Value>>,
    #[serde(default)]
    servers: BTreeMap<String, toml::Spanned<toml::Value>>,
}

impl Spans {
    /// The server whose table holds byte `at`: the one whose span holds it, else the one whose
    /// header is the last before it (unless another table's header comes between).
    fn server_at(text: &str, at: usize) -> Option<String> {
        let spans: Self = toml::from_str(text).ok()?;
        if let Some((name, _)) = spans.servers.iter().find(|(_, v)| v.span().contains(&at)) {
            return Some(name.clone());
        }
        let others = [spans.scan, spans.secrets];
        let sections = spans
            .servers
            .iter()
            .map(|(name, v)| (v.span().start, Some(name)))
            .chain(others.iter().flatten().map(|v| (v.span().start, None)));
        sections
            .filter(|(start, _)| *start <= at)
            .max_by_key(|(start, _)| *start)
            .and_then(|(_, name)| name.cloned())
    }
}

pub(super) fn parse(
    text: &str,
    base: &Path,
    home: Option<&Path>,
) -> Result<GatewayConfig, ConfigError> {
    let raw: RawConfig = toml::from_str(text).map_err(|e| {
        // Name the server the error is in, when it is in one.
        let server = e.span().and_then(|s| Spans::server_at(text, s.start));
        ConfigError::Syntax {
            server,
            message: e.to_string().trim_end().to_owned(),
        }
    })?;
    if raw.servers.is_empty() {
        return Err(ConfigError::NoServers);
    }
    let secrets_file = match raw.secrets.and_then(|s| s.file) {
        Some(p) => Some(
            resolve_path(&p, base, home).map_err(|reason| ConfigError::Syntax {
                server: None,
                message: format!("[secrets] file: {reason}"),
            })?,
        ),
        None => None,
    };
    let mut servers = BTreeMap::new();
    for (name, server) in raw.servers {
        check_server_name(&name)?;
        let config = server_config(&name, server, base, home, secrets_file.is_some())?;
        servers.insert(name, config);
    }
    Ok(GatewayConfig {
        scan: raw.scan,
        secrets_file,
        servers,
    })
}

/// `[a-z0-9][a-z0-9_-]{0,31}` without `__`.
fn check_server_name(name: &str) -> Result<(), ConfigError> {
    let bad = |reason| ConfigError::BadServerName {
        name: name.to_owned(),
        reason,
    };
    if name.is_empty() || name.len() > 32 {
        return Err(bad("a server name is 1 to 32 characters"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    {
        return Err(bad("use only a-z, 0-9, `_` and `-`"));
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit()) {
        return Err(bad("it must start with a letter or digit"));
    }
    if name.contains("__") {
        return Err(bad(
            "`__` separates server and tool in exposed tool names (SERVER__TOOL)",
        ));
    }
    Ok(())
}

fn server_config(
    name: &str,
    raw: RawServer,
    base: &Path,
    home: Option<&Path>,
    have_secrets: bool,
) -> Result<ServerConfig, ConfigError> {
    let err = |reason: String| ConfigError::server(name, reason);
    if raw.command.first().is_none_or(|c| c.is_empty()) {
        return Err(err(
            "command is empty: give the program and its arguments".into()
        ));
    }
    if raw.image.as_deref() == Some("") {
        return Err(err("image is empty: leave it out for the default".into()));
    }
    let workspace = match &raw.workspace {
        Some(p) => Some(resolve_path(p, base, home).map_err(|r| err(format!("workspace: {r}")))?),
        None => None,
    };
    if raw.read_only && workspace.is_none() {
        return Err(err("read_only is set but there is no workspace".into()));
    }
    let mut env = BTreeMap::new();
    for (var, value) in raw.env {
        check_env_name(&var).map_err(|r| err(format!("env {var:?}: {r}")))?;
        let value = match value {
            RawEnv::Literal(v) => EnvValue::Literal(v),
            RawEnv::Ref(RawEnvRef {
                secret: Some(s),
                env: None,
            }) => {
                if s.is_empty() {
                    return Err(err(format!("env {var}: the secret's name is empty")));
                }
                if !have_secrets {
                    return Err(err(format!(
                        "env {var} uses secret `{s}` but there is no [secrets] file"
                    )));
                }
                EnvValue::Secret(s)
            }
            RawEnv::Ref(RawEnvRef {
                secret: None,
                env: Some(e),
            }) => {
                if !is_env_name(&e) {
                    return Err(err(format!(
                        "env {var}: {e:?} is not an environment variable name"
                    )));
                }
                EnvValue::Env(e)
            }
            RawEnv::Ref(_) => {
                return Err(err(format!(
                    "env {var}: give exactly one of `secret` and `env`"
                )));
            }
        };
        env.insert(var, value);
    }
    let tools = match raw.tools {
        None => ToolFilter::All,
        Some(RawTools {
            allow: Some(_),
            deny: Some(_),
        }) => {
            return Err(err("tools: give `allow` or `deny`, not both".into()));
        }
        Some(RawTools {
            allow: Some(globs), ..
        }) => {
            if globs.is_empty() {
                return Err(err(
                    "tools.allow is empty: the server would expose no tools".into(),
                ));
            }
            check_globs(&globs).map_err(|r| err(format!("tools.allow: {r}")))?;
            ToolFilter::Allow(globs)
        }
        Some(RawTools {
            deny: Some(globs), ..
        }) => {
            check_globs(&globs).map_err(|r| err(format!("tools.deny: {r}")))?;
            ToolFilter::Deny(globs)
        }
        Some(RawTools { .. }) => ToolFilter::All,
    };
    let mut mounts = Vec::with_capacity(raw.mounts.len());
    for m in raw.mounts {
        let host = resolve_path(&m.host, base, home).map_err(|r| err(format!("mount: {r}")))?;
        let at = sandbox_path(&m.at).map_err(|r| err(format!("mount at: {r}")))?;
        mounts.push(MountSpec { host, at });
    }
    if raw.cpus == Some(0) || raw.pids == Some(0) {
        return Err(err("cpus and pids must be at least 1".into()));
    }
    let call_timeout = raw.call_timeout.map_or(DEFAULT_CALL_TIMEOUT, |d| d.0);
    if call_timeout.is_zero() {
        return Err(err("call_timeout must be more than zero".into()));
    }
    let cwd = match &raw.cwd {
        Some(p) => Some(sandbox_path(p).map_err(|r| err(format!("cwd: {r}")))?),
        None => None,
    };
    Ok(ServerConfig {
        command: raw.command,
        backend: raw.backend,
        image: raw.image,
        workspace,
        read_only: raw.read_only,
        network: raw.network,
        env,
        tools,
        start: raw.start,
        mounts,
        memory: raw.memory,
        cpus: raw.cpus,
        pids: raw.pids,
        call_timeout,
        cwd,
    })
}

fn is_env_name(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// A valid name, and not one of the dynamic loader's (`LD_PRELOAD`, `LD_LIBRARY_PATH`,
/// `LD_AUDIT`, …): those pick code that every process of the server loads without it showing in
/// `command`, which is what a person reviews — a config pasted from a server's README could
/// hide an injected library in them.
fn check_env_name(var: &str) -> Result<(), &'static str> {
    if !is_env_name(var) {
        return Err("not an environment variable name ([A-Za-z_][A-Za-z0-9_]*)");
    }
    if var.starts_with("LD_") {
        return Err("dynamic loader variables (LD_*) are refused: they inject code unseen");
    }
    Ok(())
}

fn check_globs(globs: &[String]) -> Result<(), String> {
    for g in globs {
        if g.is_empty() || g.chars().any(char::is_whitespace) {
            return Err(format!("{g:?} is not a tool name pattern"));
        }
    }
    Ok(())
}

/// An absolute path in the sandbox, without `.` or `..`.
fn sandbox_path(p: &Path) -> Result<PathBuf, String> {
    if !p.is_absolute() {
        return Err(format!("{} is not absolute", p.display()));
    }
    if p.components()
        .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
    {
        return Err(format!("{} has `.` or `..` in it", p.display()));
    }
    Ok(p.to_owned())
}
