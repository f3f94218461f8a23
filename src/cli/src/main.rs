//! `luminaguard`: the command-line face of LuminaGuard.

#[macro_use]
mod out;
mod agent;
mod approvals;
mod auditlog;
mod daemon;
mod debug;
mod doctor;
mod front;
mod image;
mod mcp;
mod mcp_pins;
mod policy;
mod review;
mod run;
mod sandbox;
mod stream;
mod template;
mod tty;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use luminaguard_core::Config;
use luminaguard_core::config::{ConfigLayer, ConfigPaths};
use luminaguard_service::Service;

#[derive(Debug, Parser)]
#[command(
    name = "luminaguard",
    version,
    about = "A secure runtime for AI agents"
)]
struct Cli {
    /// Configuration file to use instead of the user file.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Runtime directory (overrides config and LUMINAGUARD_RUNTIME_DIR).
    #[arg(long, global = true, value_name = "DIR")]
    runtime_dir: Option<PathBuf>,
    /// The policy actions are judged by: strict, default, permissive or a policy file
    /// (overrides config `policy` and LUMINAGUARD_POLICY).
    #[arg(long, global = true, value_name = "NAME|FILE")]
    policy: Option<String>,
    /// Say more on stderr: -v what LuminaGuard decides (which backend, why), -vv its steps.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Do not use a running daemon: manage sandboxes in this process (by default `run`,
    /// `sandbox …` and `gc` go through the daemon when one answers on its socket).
    #[arg(long, global = true)]
    no_daemon: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print version information.
    Version {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Run a command in a disposable sandbox; exits with the command's status.
    Run(run::RunArgs),
    /// Sandboxes that live across several commands.
    #[command(subcommand)]
    Sandbox(sandbox::SandboxCommand),
    /// Remove what sandboxes whose owner died, or whose lifetime ended, left behind.
    Gc {
        #[arg(long)]
        json: bool,
    },
    /// What the policy decides for a command, and whether a policy file is sound: check, lint,
    /// show.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Diff Cards waiting for a person's answer (in the daemon): ls, show, approve, deny, wait.
    #[command(subcommand)]
    Approvals(approvals::ApprovalsCommand),
    /// The tamper-evident audit log of every decision and execution: ls, show, verify, prove.
    #[command(subcommand)]
    Audit(auditlog::AuditCommand),
    /// The web console the daemon serves: `console url` prints a one-time login link.
    #[command(subcommand)]
    Console(ConsoleCommand),
    /// Serve the sandbox API on a Unix socket (HTTP/1.1 + JSON under /v1).
    Daemon(daemon::DaemonArgs),
    /// LuminaGuard as an MCP server: `mcp serve` (stdio) gives any MCP host sandboxed tools.
    #[command(subcommand)]
    Mcp(mcp::McpCommand),
    /// An agent loop on a real LLM provider whose every tool call runs in a sandbox: run, chat,
    /// ls, show.
    #[command(subcommand)]
    Agent(agent::AgentCommand),
    /// Run the guest agent (what runs inside every sandbox; also the `luminaguard-agent` binary).
    #[command(hide = true, name = "guest-agent")]
    GuestAgent(luminaguard_agent::AgentArgs),
    /// First process of a process sandbox (started by `run`, not by hand).
    #[command(hide = true)]
    SandboxInit { config_json: String },
    /// A sandbox's DNS-pinning resolver (started by `run` for a policy naming domains).
    #[command(hide = true, name = "dns-resolver")]
    DnsResolver { config_json: String },
    /// Drive a guest agent over its Unix socket (for debugging).
    Debug(debug::DebugArgs),
    /// Inspect configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Which backends this host can run, and why not.
    Doctor(doctor::DoctorArgs),
    /// Guest images for the microVM backends: build, ls, rm.
    #[command(subcommand)]
    Image(image::ImageCommand),
    /// Snapshots of booted Firecracker sandboxes to restore new ones from: create, ls, rm.
    #[command(subcommand)]
    Template(template::TemplateCommand),
}

#[derive(Debug, Subcommand)]
enum ConsoleCommand {
    /// Print a one-time link that logs a browser into the daemon's console as you.
    Url,
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print the effective configuration (files, environment and flags merged).
    Show {
        #[arg(long)]
        json: bool,
    },
}

#[derive(serde::Serialize)]
struct VersionInfo {
    luminaguard: &'static str,
    protocol_min: u16,
    protocol_max: u16,
}

fn load_config(cli: &Cli) -> anyhow::Result<Config> {
    load_config_from(
        cli.config.as_deref(),
        cli.runtime_dir.clone(),
        cli.policy.clone(),
        cli.verbose,
    )
}

fn load_config_from(
    file: Option<&std::path::Path>,
    runtime_dir: Option<PathBuf>,
    policy: Option<String>,
    verbose: u8,
) -> anyhow::Result<Config> {
    let env_path = |k: &str| std::env::var_os(k).map(PathBuf::from);
    let mut paths = ConfigPaths::standard(
        env_path("XDG_CONFIG_HOME").as_deref(),
        env_path("HOME").as_deref(),
    );
    if let Some(file) = file {
        anyhow::ensure!(
            file.exists(),
            "config file {} does not exist",
            file.display()
        );
        paths.user = Some(file.to_owned());
    }
    let flags = ConfigLayer {
        runtime_dir,
        policy,
        log: match verbose {
            0 => None,
            1 => Some("info".to_owned()),
            _ => Some("debug".to_owned()),
        },
        ..Default::default()
    };
    let uid = nix::unistd::getuid().as_raw();
    Config::load(
        &paths,
        std::env::vars(),
        uid,
        env_path("XDG_RUNTIME_DIR").as_deref(),
        flags,
    )
    .context("loading configuration")
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::GuestAgent(args) => {
            luminaguard_agent::init_tracing("info");
            return luminaguard_agent::main_with(args);
        }
        Command::SandboxInit { config_json } => {
            luminaguard_agent::init_tracing("warn");
            return luminaguard_agent::sandbox_init_main(&config_json);
        }
        Command::DnsResolver { config_json } => {
            luminaguard_agent::init_tracing("info");
            return luminaguard_net::resolver_service::main(&config_json);
        }
        _ => {}
    }
    match run(cli) {
        Ok(code) => code,
        Err(e) if e.is::<stream::StdoutClosed>() => {
            ExitCode::from(u8::try_from(out::CLOSED_STDOUT).unwrap_or(1))
        }
        Err(e) => {
            eprintln!("luminaguard: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let config = load_config(&cli)?;
    luminaguard_agent::init_tracing(&config.log);
    // The system daemon is also tried when nothing points this command elsewhere.
    let daemon = front::Choice {
        never: cli.no_daemon,
        system_too: cli.runtime_dir.is_none()
            && cli.config.is_none()
            && std::env::var_os("LUMINAGUARD_RUNTIME_DIR").is_none()
            && std::env::var_os("LUMINAGUARD_DAEMON_SOCKET").is_none(),
    };
    match cli.command {
        Command::Version { json } => {
            let v = VersionInfo {
                luminaguard: env!("CARGO_PKG_VERSION"),
                protocol_min: luminaguard_protocol::handshake::MIN_VERSION,
                protocol_max: luminaguard_protocol::handshake::MAX_VERSION,
            };
            if json {
                outln!("{}", serde_json::to_string(&v)?);
            } else {
                outln!(
                    "luminaguard {} (protocol {}..={})",
                    v.luminaguard,
                    v.protocol_min,
                    v.protocol_max
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Config(ConfigCommand::Show { json }) => {
            if json {
                outln!("{}", serde_json::to_string_pretty(&config)?);
            } else {
                out!("{}", toml::to_string_pretty(&config)?);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Image(cmd) => image::run(cmd, &config),
        Command::Audit(cmd) => auditlog::run(cmd, &config),
        Command::Approvals(cmd) => with_runtime(async {
            let front = front(config, &daemon).await?;
            approvals::run(cmd, &front).await
        }),
        Command::Policy(cmd) => policy::run(cmd, &config),
        Command::Console(ConsoleCommand::Url) => with_runtime(async {
            let front = front::Front::open(config, &daemon).await?;
            let front::Front::Daemon(client) = front else {
                anyhow::bail!(
                    "no daemon answers on its socket: the console is served by `luminaguard \
                     daemon --console 127.0.0.1:PORT`"
                );
            };
            let link = client.console_login().await?;
            outln!("{}", link.url);
            eprintln!(
                "luminaguard: the link logs one browser in as you, once, within {}s",
                link.expires_in_secs
            );
            Ok(ExitCode::SUCCESS)
        }),
        Command::Daemon(args) => {
            let (file, runtime_dir, policy, verbose) =
                (cli.config, cli.runtime_dir, cli.policy, cli.verbose);
            daemon::run(args, config, move || {
                load_config_from(
                    file.as_deref(),
                    runtime_dir.clone(),
                    policy.clone(),
                    verbose,
                )
            })
        }
        Command::Mcp(cmd) => with_runtime(Box::pin(mcp::run(cmd, config, &daemon))),
        Command::Agent(cmd) => with_runtime(Box::pin(agent::run(cmd, config, &daemon))),
        Command::Debug(args) => with_runtime(debug::run(args, &config)),
        Command::Doctor(args) => with_runtime(doctor::run(args, &config)),
        Command::Run(mut args) => {
            args.route_by_policy(&config)?;
            with_runtime(async {
                let front = front(config, &daemon).await?;
                let result = run::run(args, &front).await;
                front.finish().await;
                result
            })
        }
        Command::Sandbox(cmd) => with_runtime(async {
            let front = front(config.clone(), &daemon).await?;
            let result = sandbox::run(cmd, &front, &config).await;
            front.finish().await;
            result
        }),
        Command::Template(cmd) => {
            with_runtime(async { template::run(cmd, &Service::new(config)?).await })
        }
        Command::Gc { json } => {
            let report = with_runtime(async {
                let front = front(config, &daemon).await?;
                let report = front.gc().await;
                front.finish().await;
                Ok(report?)
            })?;
            if json {
                outln!("{}", serde_json::to_string(&report)?);
            } else {
                for id in &report.removed {
                    outln!("removed {id}");
                }
                for e in &report.errors {
                    eprintln!("luminaguard: gc: {e}");
                }
            }
            Ok(if report.errors.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::GuestAgent(_) | Command::SandboxInit { .. } | Command::DnsResolver { .. } => {
            unreachable_agent()
        }
    }
}

async fn front(config: Config, choice: &front::Choice) -> anyhow::Result<front::Front> {
    let front = front::Front::open(config, choice).await?;
    if let Some(service) = front.service() {
        // What cannot be previewed is asked about at this terminal (none: refused).
        service.set_asker(tty::asker());
    }
    Ok(front)
}

fn with_runtime<T>(job: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let code = rt.block_on(job);
    // A read of our stdin may still be parked on a blocking thread; do not wait for it.
    rt.shutdown_background();
    code
}

/// `guest-agent` is dispatched before configuration is loaded (it runs inside sandboxes, where host
/// configuration does not apply).
fn unreachable_agent() -> anyhow::Result<ExitCode> {
    anyhow::bail!("internal error: agent command reached the host dispatcher")
}
