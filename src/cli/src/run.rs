//! `luminaguard run`: a disposable process sandbox for one command.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use luminaguard_core::{ByteSize, Config, SandboxId};
use luminaguard_process_sandbox::cgroup::{Cgroup, Hierarchy, Limits};
use luminaguard_process_sandbox::init::InitConfig;
use luminaguard_process_sandbox::launch::launch;
use luminaguard_protocol::message::ExecRequest;
use luminaguard_protocol::{Client, ClientOptions};

use crate::state::{ProcessRef, SandboxMeta};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Host directory mounted read-write at /workspace (default: an empty tmpfs).
    #[arg(long, value_name = "DIR")]
    workspace: Option<PathBuf>,
    /// Memory limit (no swap), e.g. 512M.
    #[arg(long)]
    memory: Option<ByteSize>,
    /// Most processes/threads at once.
    #[arg(long)]
    pids: Option<u32>,
    /// CPU quota in whole CPUs.
    #[arg(long)]
    cpus: Option<u32>,
    /// Kill the command's whole process tree after this long.
    #[arg(long, value_parser = humantime::parse_duration)]
    timeout: Option<Duration>,
    /// Print the exit status as one JSON line on stderr.
    #[arg(long)]
    json: bool,
    /// The command and its arguments.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    argv: Vec<String>,
}

/// What was set up, so that teardown removes exactly that — also after a failure halfway.
#[derive(Default)]
struct Sandbox {
    dir: Option<PathBuf>,
    cgroup: Option<Cgroup>,
    init: Option<Pid>,
}

impl Sandbox {
    async fn teardown(mut self) {
        if let Some(pid) = self.init.take() {
            // A disposable sandbox has nothing to flush: killing its init ends the PID namespace,
            // and the kernel kills every process in it. Reap the init, then the group drains.
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            let _ = tokio::task::spawn_blocking(move || waitpid(pid, None)).await;
        }
        if let Some(cg) = self.cgroup.take() {
            if let Ok(Err(e)) = tokio::task::spawn_blocking(move || cg.remove()).await {
                eprintln!("luminaguard: cleanup: {e}");
            }
        }
        if let Some(dir) = self.dir.take() {
            if let Err(e) = tokio::fs::remove_dir_all(&dir).await {
                eprintln!("luminaguard: cleanup: removing {}: {e}", dir.display());
            }
        }
    }
}

pub async fn run(args: RunArgs, config: &Config) -> anyhow::Result<ExitCode> {
    let mut spec = config.defaults.clone();
    if let Some(m) = args.memory {
        spec.memory = m;
    }
    if let Some(p) = args.pids {
        spec.limits.pids = p;
    }
    if let Some(c) = args.cpus {
        spec.vcpus = c;
    }
    if let Some(t) = args.timeout {
        spec.limits.exec_timeout = t;
    }
    spec.validate().context("invalid sandbox settings")?;
    let workspace = match &args.workspace {
        Some(w) => Some(
            tokio::fs::canonicalize(w)
                .await
                .with_context(|| format!("workspace {}", w.display()))?,
        ),
        None => None,
    };

    // Leftovers of sandboxes whose owner died go first (cheap when there are none).
    if let Ok(runtime) = config.runtime() {
        let report = tokio::task::spawn_blocking(move || crate::state::collect(&runtime)).await?;
        for e in &report.errors {
            tracing::warn!("gc: {e}");
        }
    }
    let id = SandboxId::generate();
    let mut sb = Sandbox::default();
    let result = start_and_run(&args, &spec, workspace, &id, config, &mut sb).await;
    sb.teardown().await;
    result
}

async fn start_and_run(
    args: &RunArgs,
    spec: &luminaguard_core::SandboxSpec,
    workspace: Option<PathBuf>,
    id: &SandboxId,
    config: &Config,
    sb: &mut Sandbox,
) -> anyhow::Result<ExitCode> {
    let runtime = config.runtime()?;
    let dir = runtime.sandbox_dir(id)?;
    create_private_dir(runtime.root()).await?;
    create_private_dir(&runtime.sandboxes_dir()).await?;
    tokio::fs::create_dir(&dir)
        .await
        .with_context(|| format!("creating {}", dir.display()))?;
    sb.dir = Some(dir.clone());
    let staging = dir.join("root");
    tokio::fs::create_dir(&staging).await?;

    let limits = Limits {
        memory_bytes: spec.memory.bytes(),
        pids: u64::from(spec.limits.pids),
        cpus: Some(spec.vcpus),
    };
    // Record what is about to exist before it exists, so `gc` can always find it.
    let name = id.to_string();
    let planned = tokio::task::spawn_blocking({
        let name = name.clone();
        move || Hierarchy::detect().and_then(|h| h.planned(&name).map(|p| (h, p)))
    })
    .await??;
    let (hierarchy, planned) = planned;
    let mut meta = SandboxMeta {
        id: name.clone(),
        backend: "process".into(),
        owner: ProcessRef::of(std::process::id() as i32).context("reading our own start time")?,
        init: None,
        cgroup_version: Some(planned.version()),
        cgroup_dirs: planned.dirs().to_vec(),
        created_unix_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0),
    };
    meta.save(&dir).await?;
    let cg = tokio::task::spawn_blocking(move || hierarchy.create(&name, limits)).await??;
    let cg = sb.cgroup.insert(cg).clone();

    let init = InitConfig {
        staging_root: staging,
        workspace,
        workspace_size: spec.scratch.bytes(),
        tmp_size: (spec.scratch.bytes() / 4).max(ByteSize::MIB),
        hostname: "luminaguard".into(),
        open_files: spec.limits.open_files,
        file_size: spec.limits.file_size.bytes(),
        landlock_required: true,
        seccomp_profile: "default".into(),
    };
    let exe =
        std::env::current_exe().context("finding our own binary to run as the sandbox init")?;
    let launched = launch(&exe, &init, Some(&cg)).context("starting the process sandbox")?;
    sb.init = Some(launched.pid);
    meta.init = ProcessRef::of(launched.pid.as_raw());
    meta.save(&dir).await?;
    launched.socket.set_nonblocking(true)?;
    let stream = tokio::net::UnixStream::from_std(launched.socket)?;
    let opts = ClientOptions {
        default_exec_timeout: spec.limits.exec_timeout,
        ..Default::default()
    };
    let client = Client::connect(stream, opts)
        .await
        .context("the sandbox did not come up")?;

    let timeout_ms = u64::try_from(spec.limits.exec_timeout.as_millis()).unwrap_or(u64::MAX);
    let env = spec
        .env
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let req = ExecRequest {
        argv: args.argv.clone(),
        env,
        cwd: Some("/workspace".into()),
        stdin: true,
        timeout_ms: Some(timeout_ms),
        ..Default::default()
    };
    let status = crate::stream::exec_streamed(&client, req, args.json).await?;
    if status.signal == Some(9) && !status.timed_out && !status.cancelled {
        let cg = cg.clone();
        if tokio::task::spawn_blocking(move || cg.oom_kills()).await?? > 0 {
            eprintln!(
                "luminaguard: the command was killed: out of memory (limit {})",
                spec.memory
            );
        }
    }
    Ok(crate::stream::exit_code(&status))
}

async fn create_private_dir(path: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    match tokio::fs::create_dir(path).await {
        Ok(()) => tokio::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).await?,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e).with_context(|| format!("creating {}", path.display())),
    }
    Ok(())
}
