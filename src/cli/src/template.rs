//! `luminaguard template create|ls|rm`: snapshots of freshly booted Firecracker sandboxes, from
//! which `run --template` and `sandbox create --template` restore instead of booting.
//!
//! Where they live and why: [`luminaguard_service::templates`].

use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use luminaguard_service::{Caller, Service};

use crate::run::SandboxArgs;

#[derive(Debug, Subcommand)]
pub enum TemplateCommand {
    /// Boot a Firecracker sandbox with these settings, snapshot it once its agent answers, and
    /// keep the snapshot as template NAME; the sandbox itself is removed.
    Create(Box<CreateArgs>),
    /// List templates: name, what VM they hold.
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Remove templates (sandboxes restored from them keep running).
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The template's name: 1–64 of [a-z0-9_-], starting with a letter or digit.
    name: String,
    #[command(flatten)]
    sandbox: SandboxArgs,
    #[arg(long)]
    json: bool,
}

pub async fn run(cmd: TemplateCommand, service: &Service) -> anyhow::Result<ExitCode> {
    let caller = &Caller::current();
    match cmd {
        TemplateCommand::Create(args) => {
            let template = service
                .create_template(caller, &args.name, &args.sandbox.options(None, false))
                .await
                .with_context(|| format!("making template {}", args.name))?;
            if args.json {
                outln!(
                    "{}",
                    serde_json::json!({
                        "name": args.name,
                        "dir": template.dir,
                        "manifest": template.manifest,
                    })
                );
            } else {
                outln!("{}", args.name);
            }
            Ok(ExitCode::SUCCESS)
        }
        TemplateCommand::Ls { json } => ls(service, caller, json).await,
        TemplateCommand::Rm { names } => {
            for name in &names {
                service.remove_template(caller, name).await?;
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn ls(service: &Service, caller: &Caller, json: bool) -> anyhow::Result<ExitCode> {
    let found = service.templates(caller).await?;
    if json {
        let list: Vec<_> = found
            .iter()
            .map(
                |(name, t)| serde_json::json!({"name": name, "dir": t.dir, "manifest": t.manifest}),
            )
            .collect();
        outln!("{}", serde_json::Value::Array(list));
    } else {
        for (name, t) in &found {
            let m = &t.manifest;
            outln!(
                "{name}\t{} vCPU, {} MiB, {}{}",
                m.vcpus,
                m.memory_mib,
                m.network,
                if m.jailed { ", jailed" } else { "" }
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
