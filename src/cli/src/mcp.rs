//! `luminaguard mcp serve`: LuminaGuard as an MCP server on stdio (`luminaguard-mcp`), over
//! the same way to the sandboxes as every other command (the daemon when one runs, else the
//! service in this process). stdout is the MCP channel: nothing here prints to it.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use luminaguard_core::Config;

use crate::front::{Choice, Front};
use crate::run::SandboxArgs;

#[derive(Debug, Subcommand)]
pub enum McpCommand {
    /// Serve MCP on stdin/stdout (what an MCP host launches): tools that run commands and
    /// edit files in a sandbox of the session, under the policy, approvals and audit log.
    Serve(ServeArgs),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// How the session's sandboxes are made (as for `run`).
    #[command(flatten)]
    sandbox: SandboxArgs,
    /// Bytes of stdout and of stderr a command's result keeps (its head and tail).
    #[arg(long, value_name = "BYTES", default_value_t = 64 << 10)]
    output_limit: usize,
}

pub async fn run(cmd: McpCommand, config: Config, choice: &Choice) -> anyhow::Result<ExitCode> {
    match cmd {
        McpCommand::Serve(args) => {
            // Not `main::front`: an MCP server has no terminal to ask at; it asks its client.
            let front = Front::open(config, choice).await?;
            let settings = luminaguard_mcp::Settings {
                create: args.sandbox.options(None, false),
                output_limit: args.output_limit,
                ..luminaguard_mcp::Settings::default()
            };
            luminaguard_mcp::serve_stdio(front, settings).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
