//! The gateway as every session shares it: the servers' resolved specs and filters, the
//! secret scanner, and the pin store.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use luminaguard_service::CreateOptions;
use rmcp::model::Tool;

use super::config::{GatewayConfig, ServerConfig, StartMode, ToolFilter};
use super::downstream::ServerSpec;
use super::pins::{PinError, PinStatus, PinStore, ToolDefinition};
use super::secrets::{ScanMode, Scanner};

/// How long a server may take to start and answer `initialize` (an `npx -y` that fetches its
/// package first takes a while).
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// Why the gateway cannot start.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(transparent)]
    Config(#[from] super::config::ConfigError),
    #[error(transparent)]
    Pins(#[from] PinError),
    #[error("the secret scanner: {0}")]
    Scan(#[from] super::secrets::ScanError),
    /// A setting the gateway cannot honour.
    #[error("server {server}: {reason}")]
    Server { server: String, reason: String },
}

/// One configured server.
#[derive(Debug)]
pub struct Entry {
    pub spec: ServerSpec,
    pub filter: ToolFilter,
    pub eager: bool,
}

/// How a served tool compares with its pin (as the gateway acts on it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinVerdict {
    /// Seen first: pinned now.
    Pinned {
        sha256: String,
    },
    Same,
    /// Not the pinned definition: disabled until approved.
    Changed {
        changed: Vec<String>,
        pinned: String,
        served: String,
    },
}

/// The gateway: its servers, scanner and pins.
pub struct Gateway {
    pub(crate) servers: BTreeMap<String, Entry>,
    scanner: Scanner,
    arguments: ScanMode,
    results: ScanMode,
    pins: tokio::sync::Mutex<PinStore>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("servers", &self.servers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// The gateway of `config`: every server's environment resolved now (a missing secret is
    /// an error at start, not at first use), the scanner built from every secret the config
    /// hands out, the pins read from `pins` (created if missing).
    pub fn new(
        config: &GatewayConfig,
        pins: &Path,
        lookup_env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, GatewayError> {
        let secrets = config.read_secrets()?;
        let mut servers = BTreeMap::new();
        for (name, server) in &config.servers {
            let env = config
                .resolve_env(name, &secrets, &lookup_env)?
                .into_iter()
                .map(|(k, v)| (k, v.expose().to_owned()))
                .collect();
            servers.insert(
                name.clone(),
                Entry {
                    spec: spec(name, server, env)?,
                    filter: server.tools.clone(),
                    eager: server.start == StartMode::Eager,
                },
            );
        }
        let scanner = Scanner::new(
            config.secret_values(&secrets, &lookup_env)?,
            config.scan.shapes,
        )?;
        Ok(Self {
            servers,
            scanner,
            arguments: config.scan.arguments,
            results: config.scan.results,
            pins: tokio::sync::Mutex::new(PinStore::open(pins)?),
        })
    }

    /// Whether server `server` offers `tool` by the configuration.
    pub fn allows(&self, server: &str, tool: &str) -> bool {
        self.servers
            .get(server)
            .is_some_and(|e| e.filter.allows(tool))
    }

    /// How long a call to `server` may take.
    pub fn call_timeout(&self, server: &str) -> Duration {
        self.servers
            .get(server)
            .map_or(super::config::DEFAULT_CALL_TIMEOUT, |e| e.spec.call_timeout)
    }

    /// Checks `tools` of `server` against their pins (pinning those seen first).
    pub async fn pin(&self, server: &str, tools: &[Tool]) -> Result<Vec<PinVerdict>, PinError> {
        let mut pins = self.pins.lock().await;
        // Another gateway (or `mcp pins approve`) may have changed the file.
        pins.reload()?;
        let checks = pins.check(server, tools)?;
        let mut out = Vec::with_capacity(checks.len());
        for (check, tool) in checks.into_iter().zip(tools) {
            let served = ToolDefinition::of(tool)?.sha256()?;
            out.push(match check.status {
                PinStatus::New => PinVerdict::Pinned { sha256: served },
                PinStatus::Same => PinVerdict::Same,
                PinStatus::Changed { changes } => PinVerdict::Changed {
                    changed: changes
                        .iter()
                        .map(|c| c.field.as_str().to_owned())
                        .collect(),
                    pinned: pins
                        .get(server, &check.tool)
                        .map(|p| p.sha256.clone())
                        .unwrap_or_default(),
                    served,
                },
            });
        }
        Ok(out)
    }

    /// Arguments as they may be forwarded: refused (saying what was found where, never the
    /// value) or redacted by the configuration.
    pub fn scan_arguments(&self, v: &mut serde_json::Value) -> Result<(), String> {
        self.scanner
            .apply(self.arguments, v)
            .map(drop)
            .map_err(|b| format!("the arguments were not forwarded: {b}"))
    }

    /// A result as it may reach the host: redacted (the count) or withheld.
    pub fn scan_result(&self, v: &mut serde_json::Value) -> Result<usize, String> {
        self.scanner
            .apply(self.results, v)
            .map_err(|b| b.to_string())
    }

    /// Text the gateway shows (an error quoting a server's stderr) with every secret redacted.
    pub fn redact_text(&self, text: &str) -> String {
        self.scanner.redact_str(text).0
    }
}

/// How server `name` is run.
fn spec(
    name: &str,
    s: &ServerConfig,
    env: Vec<(String, String)>,
) -> Result<ServerSpec, GatewayError> {
    let mut mounts: Vec<luminaguard_core::ReadOnlyMount> = s
        .mounts
        .iter()
        .map(|m| luminaguard_core::ReadOnlyMount {
            host: m.host.clone(),
            at: m.at.clone(),
        })
        .collect();
    // A read-only workspace is the directory mounted read-only at /workspace (process
    // sandboxes; a microVM refuses mounts).
    let workspace = match (&s.workspace, s.read_only) {
        (Some(ws), true) => {
            mounts.push(luminaguard_core::ReadOnlyMount {
                host: ws.clone(),
                at: luminaguard_core::spec::WORKSPACE_PATH.into(),
            });
            None
        }
        (ws, _) => ws.clone(),
    };
    let create = CreateOptions {
        workspace,
        memory: s.memory,
        pids: s.pids,
        cpus: s.cpus,
        backend: Some(s.backend),
        image: s.image.clone(),
        net_allow: s.network.clone(),
        mounts,
        ..CreateOptions::default()
    };
    Ok(ServerSpec {
        name: name.to_owned(),
        command: s.command.clone(),
        env,
        cwd: s.cwd.as_ref().map(|p| p.display().to_string()),
        create,
        call_timeout: s.call_timeout,
        start_timeout: START_TIMEOUT,
    })
}
