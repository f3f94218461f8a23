//! `luminaguard mcp pins ls|approve`: the gateway's pinned tool definitions. A tool whose
//! definition changed since it was pinned is disabled by every gateway until a person approves
//! the new version here.

use std::path::PathBuf;
use std::process::ExitCode;

use luminaguard_mcp::gateway::pins::PinStore;

use crate::mcp::PinsCommand;

/// Runs a pins command (blocking: on a thread of its own).
pub fn run(cmd: PinsCommand, default: PathBuf) -> anyhow::Result<ExitCode> {
    match cmd {
        PinsCommand::Ls { pins, json } => {
            let store = PinStore::open(&pins.unwrap_or(default))?;
            let list = store.list();
            if json {
                outln!("{}", serde_json::to_string_pretty(&list)?);
                return Ok(ExitCode::SUCCESS);
            }
            if list.is_empty() {
                eprintln!("luminaguard: no pinned tools in {}", store.path().display());
                return Ok(ExitCode::SUCCESS);
            }
            outln!("{:<16} {:<32} {:<12} STATE", "SERVER", "TOOL", "SHA256");
            for p in &list {
                let state = match &p.pending {
                    None => "pinned".to_owned(),
                    Some(fields) => format!(
                        "CHANGED ({}): disabled until approved",
                        fields
                            .iter()
                            .map(|f| f.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                };
                outln!("{:<16} {:<32} {:<12} {state}", p.server, p.tool, p.sha256);
            }
            Ok(ExitCode::SUCCESS)
        }
        PinsCommand::Approve {
            server,
            tool,
            all,
            pins,
        } => {
            let mut store = PinStore::open(&pins.unwrap_or(default))?;
            let approved = match (tool, all) {
                (Some(tool), _) => vec![store.approve(&server, &tool)?],
                (None, true) => store.approve_all(&server)?,
                (None, false) => anyhow::bail!("name a TOOL of {server}, or give --all"),
            };
            if approved.is_empty() {
                eprintln!("luminaguard: {server} has no changed tool to approve");
            }
            for a in approved {
                outln!(
                    "approved {}__{}: pinned {}",
                    a.server,
                    a.tool,
                    &a.sha256[..a.sha256.len().min(12)]
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
