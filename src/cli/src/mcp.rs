//! `luminaguard mcp serve`: LuminaGuard as an MCP server on stdio (`luminaguard-mcp`), over
//! the same way to the sandboxes as every other command (the daemon when one runs, else the
//! service in this process). stdout is the MCP channel: nothing here prints to it.

use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use luminaguard_core::Config;

use crate::front::{Choice, Front};
use crate::run::SandboxArgs;

#[derive(Debug, Subcommand)]
pub enum McpCommand {
    /// Serve MCP on stdin/stdout (what an MCP host launches): tools that run commands and
    /// edit files in a sandbox of the session, under the policy, approvals and audit log.
    Serve(Box<ServeArgs>),
    /// Print what an MCP host needs to launch `luminaguard mcp serve`: claude-code (a command
    /// line), claude-desktop, cursor, vscode (JSON entries), codex (a TOML table). Anything
    /// after `--` is passed to `serve` (e.g. `-- --workspace ~/project --memory 1G`).
    Config(ConfigArgs),
    /// Serve MCP on stdin/stdout (or --http) as a gateway to third-party MCP servers: each runs
    /// in a sandbox of its own, its tools offered as SERVER__TOOL, every call judged by the
    /// policy, kept free of secrets, checked against its pinned definition and audited.
    Gateway(Box<GatewayArgs>),
    /// The gateway's pinned tool definitions: list them, or approve a changed one.
    #[command(subcommand)]
    Pins(PinsCommand),
}

#[derive(Debug, Args)]
pub struct GatewayArgs {
    /// The gateway's configuration: its servers (see docs/mcp-gateway.md). (Positional:
    /// `--config` is LuminaGuard's own configuration file, as for every command.)
    #[arg(value_name = "GATEWAY.toml")]
    servers: std::path::PathBuf,
    /// The pin store (default: next to this user's audit log, `mcp-pins.json`).
    #[arg(long, value_name = "FILE")]
    pins: Option<std::path::PathBuf>,
    /// Seconds a call may wait for a person's approval before it answers `pending_approval`
    /// (which the `approval_wait` tool resumes); 0: wait as long as the card lasts.
    #[arg(long, value_name = "SECS", default_value_t = 45)]
    pending_after: u64,
    #[command(flatten)]
    http: HttpArgs,
}

#[derive(Debug, Subcommand)]
pub enum PinsCommand {
    /// Every pinned tool, and what changed in those disabled until approved.
    Ls {
        #[arg(long, value_name = "FILE")]
        pins: Option<std::path::PathBuf>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Approve the changed definition of TOOL of SERVER (or, with --all, of every changed tool
    /// of SERVER): the gateway offers it again.
    Approve {
        server: String,
        #[arg(required_unless_present = "all")]
        tool: Option<String>,
        #[arg(long, conflicts_with = "tool")]
        all: bool,
        #[arg(long, value_name = "FILE")]
        pins: Option<std::path::PathBuf>,
    },
}

#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// claude-code, claude-desktop, cursor, codex or vscode.
    #[arg(value_parser = host_name)]
    host: String,
    /// `serve`'s flags, after `--`.
    #[arg(last = true, conflicts_with = "url")]
    serve_args: Vec<String>,
    /// Connect the host to a running `mcp serve --http` at this URL
    /// (`http://127.0.0.1:PORT/mcp`) instead of launching a server: claude-code, cursor and
    /// vscode take it (the snippet holds the bearer token).
    #[arg(long, value_name = "URL")]
    url: Option<String>,
    /// The server's bearer token (default: RUNTIME_DIR/mcp-http.token, what `serve --http`
    /// writes).
    #[arg(long, value_name = "FILE", requires = "url")]
    token_file: Option<std::path::PathBuf>,
}

fn host_name(s: &str) -> Result<String, String> {
    match luminaguard_mcp::hosts::Host::parse(s) {
        Some(_) => Ok(s.to_owned()),
        None => Err(format!(
            "no snippet for {s:?}: one of {}",
            luminaguard_mcp::hosts::Host::ALL
                .iter()
                .map(|h| h.name())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// How the session's sandboxes are made (as for `run`).
    #[command(flatten)]
    sandbox: SandboxArgs,
    /// Bytes of stdout and of stderr a command's result keeps (its head and tail).
    #[arg(long, value_name = "BYTES", default_value_t = 64 << 10)]
    output_limit: usize,
    /// Seconds a call may wait for a person's approval before it answers
    /// `pending_approval` (which the `approval_wait` tool resumes); 0: wait as long as the
    /// card lasts. Below the hosts' own limit on a tool call (about a minute).
    #[arg(long, value_name = "SECS", default_value_t = 45)]
    pending_after: u64,
    #[command(flatten)]
    http: HttpArgs,
}

/// How MCP is served over HTTP instead of stdio.
#[derive(Debug, Args)]
pub struct HttpArgs {
    /// Serve MCP's streamable HTTP at /mcp instead of stdio: on HOST:PORT (TCP, a bearer token
    /// on every request) or unix:PATH (a 0600 socket; only this user and root are served).
    /// Each MCP session gets its own sandboxes.
    #[arg(long, value_name = "ADDR|unix:PATH")]
    http: Option<String>,
    /// The bearer token for --http on TCP, in a file only its owner may read (default: a new
    /// random token, written to RUNTIME_DIR/mcp-http.token).
    #[arg(long, value_name = "FILE", requires = "http")]
    token_file: Option<std::path::PathBuf>,
    /// Let --http bind an address other than loopback (the token then crosses the network in
    /// plain HTTP: put TLS in front).
    #[arg(long, requires = "http")]
    http_public: bool,
    /// End an HTTP session (destroying its sandboxes) after this many seconds with no message
    /// either way — a client gone without saying goodbye. Keep it above the longest silent call
    /// (a command, a wait for approval).
    #[arg(long, value_name = "SECS", default_value_t = luminaguard_mcp::http::DEFAULT_IDLE.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..), requires = "http")]
    http_idle_timeout: u64,
}

pub async fn run(cmd: McpCommand, config: Config, choice: &Choice) -> anyhow::Result<ExitCode> {
    match cmd {
        McpCommand::Config(args) => {
            let Some(host) = luminaguard_mcp::hosts::Host::parse(&args.host) else {
                anyhow::bail!("no snippet for {}", args.host);
            };
            if let Some(url) = &args.url {
                anyhow::ensure!(
                    url.starts_with("http://") || url.starts_with("https://"),
                    "--url {url}: an http:// or https:// URL (hosts cannot reach a unix socket)"
                );
                let file = args
                    .token_file
                    .clone()
                    .unwrap_or_else(|| config.runtime_dir.join(luminaguard_mcp::http::TOKEN_FILE));
                let token = luminaguard_mcp::http::read_token(&file).await?;
                let Some(snippet) = luminaguard_mcp::hosts::http_snippet(host, url, &token) else {
                    anyhow::bail!(
                        "{} takes no remote MCP server in its configuration: use `luminaguard mcp \
                         config {}` (it launches the server itself)",
                        host.name(),
                        host.name()
                    );
                };
                out!("{snippet}");
                eprintln!(
                    "luminaguard: {} — the snippet holds the bearer token: keep it private",
                    host.where_it_goes()
                );
                return Ok(ExitCode::SUCCESS);
            }
            // The host launches this very binary, by its full path.
            let exe = std::env::current_exe().context("finding this program's path")?;
            let exe = exe
                .to_str()
                .context("this program's path is not UTF-8, which hosts cannot name")?;
            let serve_args = absolute_workspace(args.serve_args)?;
            out!(
                "{}",
                luminaguard_mcp::hosts::snippet(host, exe, &serve_args)
            );
            eprintln!("luminaguard: {}", host.where_it_goes());
            Ok(ExitCode::SUCCESS)
        }
        McpCommand::Serve(args) => {
            // Checked before anything is opened: a bad address is refused at once.
            let http = args.http.options(&config)?;
            // Not `main::front`: an MCP server has no terminal to ask at; it asks its client.
            let front = Front::open(config, choice).await?;
            let settings = luminaguard_mcp::Settings {
                create: args.sandbox.options(None, false),
                output_limit: args.output_limit,
                pending_after: pending_after(args.pending_after),
                ..luminaguard_mcp::Settings::default()
            };
            serve(front, settings, http).await
        }
        McpCommand::Gateway(args) => {
            let http = args.http.options(&config)?;
            let pins = args.pins.clone().unwrap_or_else(|| pins_file(&config));
            let gateway = load_gateway(args.servers.clone(), pins).await?;
            let front = Front::open(config, choice).await?;
            let settings = luminaguard_mcp::Settings {
                pending_after: pending_after(args.pending_after),
                gateway: Some(std::sync::Arc::new(gateway)),
                ..luminaguard_mcp::Settings::default()
            };
            serve(front, settings, http).await
        }
        McpCommand::Pins(cmd) => {
            let default = pins_file(&config);
            tokio::task::spawn_blocking(move || crate::mcp_pins::run(cmd, default)).await?
        }
    }
}

/// The default pin store: beside the audit log.
/// The gateway of configuration file `servers` with pins in `pins` (secrets from this
/// process's environment or the configuration's secrets file).
pub async fn load_gateway(
    servers: std::path::PathBuf,
    pins: std::path::PathBuf,
) -> anyhow::Result<luminaguard_mcp::gateway::Gateway> {
    tokio::task::spawn_blocking(move || {
        let config = luminaguard_mcp::gateway::config::GatewayConfig::load(&servers)?;
        anyhow::Ok(luminaguard_mcp::gateway::Gateway::new(
            &config,
            &pins,
            |k| std::env::var(k).ok(),
        )?)
    })
    .await?
}

pub fn pins_file(config: &Config) -> std::path::PathBuf {
    config
        .audit_dir
        .parent()
        .unwrap_or(&config.runtime_dir)
        .join("mcp-pins.json")
}

fn pending_after(secs: u64) -> Option<std::time::Duration> {
    (secs > 0).then(|| std::time::Duration::from_secs(secs))
}

async fn serve(
    front: Front,
    settings: luminaguard_mcp::Settings,
    http: Option<luminaguard_mcp::http::HttpOptions>,
) -> anyhow::Result<ExitCode> {
    match http {
        Some(opts) => luminaguard_mcp::serve_http(front, settings, opts).await?,
        None => luminaguard_mcp::serve_stdio(front, settings).await?,
    }
    Ok(ExitCode::SUCCESS)
}

impl HttpArgs {
    /// The HTTP options, checked (a bad address is refused before anything is opened).
    fn options(
        &self,
        config: &Config,
    ) -> anyhow::Result<Option<luminaguard_mcp::http::HttpOptions>> {
        Ok(match &self.http {
            Some(addr) => Some(luminaguard_mcp::http::HttpOptions {
                listen: luminaguard_mcp::http::Listen::parse(addr)?,
                public: self.http_public,
                token_file: self.token_file.clone(),
                runtime_dir: config.runtime_dir.clone(),
                idle_timeout: std::time::Duration::from_secs(self.http_idle_timeout),
            }),
            None => None,
        })
    }
}

/// `serve_args` with a relative `--workspace` made absolute: a host starts the server in a
/// directory of its own choosing.
fn absolute_workspace(mut serve_args: Vec<String>) -> anyhow::Result<Vec<String>> {
    let mut i = 0;
    while i < serve_args.len() {
        let (value_at, inline) = match serve_args[i].as_str() {
            "--workspace" => (Some(i + 1), false),
            a if a.starts_with("--workspace=") => (Some(i), true),
            _ => (None, false),
        };
        if let Some(at) = value_at
            && let Some(v) = serve_args.get(at).cloned()
        {
            let path = if inline {
                v.trim_start_matches("--workspace=").to_owned()
            } else {
                v
            };
            let abs = std::path::absolute(&path)
                .with_context(|| format!("resolving workspace {path}"))?;
            let abs = abs
                .to_str()
                .with_context(|| format!("workspace {path} is not UTF-8"))?
                .to_owned();
            serve_args[at] = if inline {
                format!("--workspace={abs}")
            } else {
                abs
            };
        }
        i += 1;
    }
    Ok(serve_args)
}
