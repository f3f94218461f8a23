//! `luminaguard template create|ls|rm`: snapshots of freshly booted Firecracker sandboxes, from
//! which `run --template` and `sandbox create --template` restore instead of booting.
//!
//! Templates live in `<runtime root>/templates/<name>`: on the file system of the sandbox
//! directories and jail chroots, so each restore hard-links the snapshot's files instead of
//! copying guest memory (and restored VMs share its pages copy-on-write). Like the rest of the
//! runtime directory they do not survive a reboot (`/run` is a tmpfs); make them again.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use luminaguard_core::{BackendChoice, Config, RuntimeDir, SandboxId};
use luminaguard_firecracker::Template;

use crate::run::SandboxArgs;

#[derive(Debug, Subcommand)]
pub enum TemplateCommand {
    /// Boot a Firecracker sandbox with these settings, snapshot it once its agent answers, and
    /// keep the snapshot as template NAME; the sandbox itself is removed.
    Create(CreateArgs),
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

/// The directory of the runtime root that holds templates.
const TEMPLATES_DIR: &str = "templates";

/// Where template `name` lives; refuses a name that is not one plain, short component.
pub fn dir(runtime: &RuntimeDir, name: &str) -> anyhow::Result<PathBuf> {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && name.as_bytes()[0].is_ascii_alphanumeric();
    if !ok {
        bail!(
            "template name {name:?}: use 1 to 64 of a-z, 0-9, '-' and '_', starting with a letter \
             or digit"
        );
    }
    Ok(runtime.root().join(TEMPLATES_DIR).join(name))
}

/// The template `name`, read and checked.
pub async fn open(runtime: &RuntimeDir, name: &str) -> anyhow::Result<Template> {
    let dir = dir(runtime, name)?;
    if tokio::fs::symlink_metadata(&dir).await.is_err() {
        bail!("no template named {name}: make it with `luminaguard template create {name}`");
    }
    Ok(Template::open(&dir).await?)
}

pub async fn run(cmd: TemplateCommand, config: &Config) -> anyhow::Result<ExitCode> {
    let runtime = config.runtime()?;
    match cmd {
        TemplateCommand::Create(args) => create(args, config, &runtime).await,
        TemplateCommand::Ls { json } => ls(&runtime, json).await,
        TemplateCommand::Rm { names } => {
            for name in &names {
                // A template, or what a `template create` killed half-way left: any directory
                // of that name under templates/ (never a symbolic link's target).
                let dir = dir(&runtime, name)?;
                match tokio::fs::symlink_metadata(&dir).await {
                    Ok(m) if m.is_dir() => tokio::fs::remove_dir_all(&dir)
                        .await
                        .with_context(|| format!("removing template {name}"))?,
                    _ => bail!("no template named {name}"),
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn create(
    args: CreateArgs,
    config: &Config,
    runtime: &RuntimeDir,
) -> anyhow::Result<ExitCode> {
    let dest = dir(runtime, &args.name)?;
    if args.sandbox.template.is_some() {
        bail!("a template is made by booting: --template does not apply");
    }
    let req = args
        .sandbox
        .request(config, SandboxId::generate(), false)
        .await?;
    if !matches!(
        req.spec.backend,
        BackendChoice::Auto | BackendChoice::Firecracker
    ) {
        bail!(
            "templates are Firecracker snapshots: --backend {} cannot make one",
            req.spec.backend
        );
    }
    // `<runtime root>/templates`, made (or taken over) under the runtime directory's checks.
    luminaguard_backend::create_runtime_subdir(
        runtime,
        TEMPLATES_DIR,
        luminaguard_backend::PRIVATE_DIR_MODE,
    )
    .await?;
    let backend = crate::run::firecracker_for(&req.spec, args.sandbox.image.as_deref()).await?;
    let template = backend
        .create_template(req, &dest)
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

async fn ls(runtime: &RuntimeDir, json: bool) -> anyhow::Result<ExitCode> {
    let base = runtime.root().join(TEMPLATES_DIR);
    let mut found = Vec::new();
    match tokio::fs::read_dir(&base).await {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", base.display())),
        Ok(mut entries) => {
            while let Some(entry) = entries.next_entry().await? {
                let name = entry.file_name().to_string_lossy().into_owned();
                match Template::open(&entry.path()).await {
                    Ok(t) => found.push((name, t)),
                    Err(e) => tracing::warn!("{e}"),
                }
            }
        }
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_names_are_one_plain_component() {
        let rt = RuntimeDir::new("/run/luminaguard").unwrap();
        assert_eq!(
            dir(&rt, "py-3_12").unwrap(),
            PathBuf::from("/run/luminaguard/templates/py-3_12")
        );
        for bad in ["", "..", "a/b", "../x", "-x", "A", "x y", &"a".repeat(65)] {
            assert!(dir(&rt, bad).is_err(), "{bad:?}");
        }
    }
}
