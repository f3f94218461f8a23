//! `luminaguard policy check|lint|show`: what the policy (`--policy`, config `policy`) decides
//! for a command, whether a policy file is sound, and a policy's text. The policy itself is
//! `luminaguard-policy`'s; docs/policy.md has the format.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use luminaguard_core::Config;
use luminaguard_policy::{Action, Policy};

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// What the policy decides for CMD — allow, ask or deny — which rule (file and line) decided
    /// and why, with a line for each command a `sh -c` script runs.
    Check {
        #[arg(long)]
        json: bool,
        /// The command and its arguments, as they would be run.
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        argv: Vec<String>,
    },
    /// Check a policy file: every problem with its line; exits 1 if there is any.
    Lint { file: PathBuf },
    /// Print a policy: a preset's text (strict, default, permissive) or a file's.
    Show {
        /// A preset name or a file (default: the policy in use).
        name: Option<String>,
    },
}

pub fn run(cmd: PolicyCommand, config: &Config) -> anyhow::Result<ExitCode> {
    match cmd {
        PolicyCommand::Check { json, argv } => {
            let policy = load(&config.policy)?;
            let decision = policy.decide(&Action::exec(&argv));
            if json {
                outln!("{}", serde_json::to_string(&decision)?);
            } else {
                outln!("{decision}");
                if decision.commands.len() > 1 {
                    for c in &decision.commands {
                        let rule = c
                            .rule
                            .as_ref()
                            .map(|r| format!(" — {r}"))
                            .unwrap_or_default();
                        outln!(
                            "  {:<5} {} {}: {}{rule}",
                            c.verdict.as_str(),
                            c.action,
                            c.argv.join(" "),
                            c.reason
                        );
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        PolicyCommand::Lint { file } => {
            #[allow(clippy::disallowed_methods)] // no runtime here: a plain read
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let origin = file.display().to_string();
            let problems = luminaguard_policy::lint(&text, &origin);
            for p in &problems {
                outln!("{p}");
            }
            if problems.is_empty() {
                outln!("{origin}: ok");
                Ok(ExitCode::SUCCESS)
            } else {
                Ok(ExitCode::from(1))
            }
        }
        PolicyCommand::Show { name } => {
            let policy = load(name.as_deref().unwrap_or(&config.policy))?;
            out!("{}", policy.text());
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn load(name_or_path: &str) -> anyhow::Result<Policy> {
    Policy::load(name_or_path).with_context(|| format!("loading policy {name_or_path}"))
}
