//! `luminaguard-agent`: the guest agent as a standalone (static) binary for guest images.

use clap::Parser;

#[derive(Debug, Parser)]
#[command(name = "luminaguard-agent", version, about = "LuminaGuard guest agent")]
struct Cli {
    #[command(flatten)]
    agent: luminaguard_agent::AgentArgs,
}

fn main() -> std::process::ExitCode {
    luminaguard_agent::init_tracing("info");
    luminaguard_agent::main_with(Cli::parse().agent)
}
