//! `luminaguard-agent`: the guest agent as a standalone (static) binary for guest images and
//! process sandboxes.

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "luminaguard-agent",
    version,
    about = "LuminaGuard guest agent",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Cli {
    #[command(subcommand)]
    mode: Option<Mode>,
    #[command(flatten)]
    agent: luminaguard_agent::AgentArgs,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// First process of a process sandbox (started by the host launcher, not by hand).
    #[command(hide = true)]
    SandboxInit { config_json: String },
}

fn main() -> std::process::ExitCode {
    // The kernel's /init in a guest image: no arguments of ours (docs/images.md).
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    if luminaguard_agent::vm_init::is_vm_init(std::process::id(), &args) {
        return luminaguard_agent::vm_init::main();
    }
    luminaguard_agent::init_tracing("info");
    let cli = Cli::parse();
    match cli.mode {
        Some(Mode::SandboxInit { config_json }) => {
            luminaguard_agent::sandbox_init_main(&config_json)
        }
        None => luminaguard_agent::main_with(cli.agent),
    }
}
