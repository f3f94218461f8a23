//! `luminaguard run`: a disposable sandbox for one command.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use luminaguard_backend::{Backend, CreateRequest, Sandbox};
use luminaguard_core::{ByteSize, Config, SandboxId, SandboxSpec};
use luminaguard_process_sandbox::backend::ProcessBackend;
use luminaguard_protocol::ClientOptions;
use luminaguard_protocol::message::ExecRequest;

/// Settings shared by every command that creates a sandbox.
#[derive(Debug, Args)]
pub struct SandboxArgs {
    /// Host directory mounted read-write at /workspace (default: an empty tmpfs).
    #[arg(long, value_name = "DIR")]
    pub workspace: Option<PathBuf>,
    /// Memory limit (no swap), e.g. 512M.
    #[arg(long)]
    pub memory: Option<ByteSize>,
    /// Most processes/threads at once.
    #[arg(long)]
    pub pids: Option<u32>,
    /// CPU quota in whole CPUs.
    #[arg(long)]
    pub cpus: Option<u32>,
    /// Default per-command timeout: the command's whole process tree is killed after this long.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub timeout: Option<Duration>,
    /// The sandbox is destroyed this long after it starts, whatever it is doing.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub lifetime: Option<Duration>,
    /// Run WITHOUT memory, PID and CPU limits (e.g. rootless where no cgroup is delegated).
    #[arg(long)]
    pub no_cgroup: bool,
}

impl SandboxArgs {
    /// The configured defaults with these flags applied, validated.
    pub fn spec(&self, config: &Config) -> anyhow::Result<SandboxSpec> {
        let mut spec = config.defaults.clone();
        if let Some(m) = self.memory {
            spec.memory = m;
        }
        if let Some(p) = self.pids {
            spec.limits.pids = p;
        }
        if let Some(c) = self.cpus {
            spec.vcpus = c;
        }
        if let Some(t) = self.timeout {
            spec.limits.exec_timeout = t;
        }
        if let Some(l) = self.lifetime {
            spec.lifetime = l;
        }
        spec.validate().context("invalid sandbox settings")?;
        Ok(spec)
    }

    /// Builds what [`Backend::create`] needs; also removes leftovers of dead sandboxes first
    /// (cheap when there are none).
    pub async fn request(
        &self,
        config: &Config,
        id: SandboxId,
        persistent: bool,
    ) -> anyhow::Result<CreateRequest> {
        let spec = self.spec(config)?;
        let workspace = match &self.workspace {
            Some(w) => Some(
                tokio::fs::canonicalize(w)
                    .await
                    .with_context(|| format!("workspace {}", w.display()))?,
            ),
            None => None,
        };
        let runtime = config.runtime()?;
        let report = luminaguard_backend::collect_garbage(&runtime).await?;
        for e in &report.errors {
            tracing::warn!("gc: {e}");
        }
        if self.no_cgroup {
            eprintln!(
                "luminaguard: WARNING: --no-cgroup: this sandbox has no memory, PID or CPU limits"
            );
        }
        Ok(CreateRequest {
            id,
            spec,
            workspace,
            persistent,
            without_cgroup: self.no_cgroup,
            runtime,
        })
    }
}

/// The backend for a request. Only the process sandbox exists so far.
pub fn backend(spec: &SandboxSpec) -> anyhow::Result<ProcessBackend> {
    use luminaguard_core::BackendChoice;
    match spec.backend {
        BackendChoice::Auto | BackendChoice::Process => {}
        other => anyhow::bail!("backend {} is not available yet", other.as_str()),
    }
    let exe =
        std::env::current_exe().context("finding our own binary to run as the sandbox init")?;
    Ok(ProcessBackend::new(
        exe,
        ClientOptions {
            default_exec_timeout: spec.limits.exec_timeout,
            ..Default::default()
        },
    ))
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    sandbox: SandboxArgs,
    /// Print the exit status as one JSON line on stderr.
    #[arg(long)]
    json: bool,
    /// The command and its arguments.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    argv: Vec<String>,
}

pub async fn run(args: RunArgs, config: &Config) -> anyhow::Result<ExitCode> {
    let req = args
        .sandbox
        .request(config, SandboxId::generate(), false)
        .await?;
    let spec = req.spec.clone();
    let sandbox = backend(&spec)?
        .create(req)
        .await
        .context("starting the sandbox")?;
    let result = run_in(&sandbox, &spec, &args).await;
    if let Err(e) = sandbox.destroy().await {
        eprintln!("luminaguard: cleanup: {e}");
    }
    result
}

async fn run_in(sandbox: &Sandbox, spec: &SandboxSpec, args: &RunArgs) -> anyhow::Result<ExitCode> {
    let req = ExecRequest {
        argv: args.argv.clone(),
        env: spec
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        cwd: Some("/workspace".into()),
        stdin: true,
        timeout_ms: Some(u64::try_from(spec.limits.exec_timeout.as_millis()).unwrap_or(u64::MAX)),
        ..Default::default()
    };
    let status = crate::stream::exec_streamed(sandbox.client(), req, args.json).await?;
    crate::stream::report_oom(sandbox, &status, spec.memory).await;
    crate::stream::report_denials(sandbox).await;
    Ok(crate::stream::exit_code(&status))
}
