//! The LuminaGuard guest agent.
//!
//! One static binary that runs inside every sandbox — as PID 1 of a microVM, as PID 1 of a
//! process sandbox's namespaces, or as an ordinary process — and serves the host protocol
//! (`luminaguard-protocol`) on a Unix socket, an inherited descriptor or an AF_VSOCK port.

pub mod clock;
pub mod entropy;
pub mod exec;
pub mod files;
pub mod guest_net;
pub mod info;
pub mod init;
pub mod listen;
pub mod proctree;
pub mod reaper;
pub mod review;
pub mod server;
pub mod vm_init;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

pub use listen::ListenAddr;
use reaper::Reaper;
use server::AgentContext;

/// What to do when the agent stops as PID 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnExit {
    /// Power off when PID 1, exit otherwise.
    Auto,
    /// Power the machine (or PID namespace) off.
    Poweroff,
    /// Just exit.
    Exit,
}

/// Command line of the agent (also the hidden `luminaguard guest-agent`).
#[derive(Debug, Clone, clap::Args)]
pub struct AgentArgs {
    /// Where to listen: unix:PATH, fd:N (an inherited socket) or vsock:PORT. Repeatable.
    #[arg(long = "listen", value_name = "ADDR", required = true)]
    pub listen: Vec<ListenAddr>,
    /// What to do on exit when running as PID 1.
    #[arg(long, value_enum, default_value_t = OnExit::Auto)]
    pub on_exit: OnExit,
    /// Worker threads for the async runtime.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// As PID 1, do not mount /proc, /sys, /dev, /tmp (a sandbox init already built the root).
    #[arg(long)]
    pub no_init_mounts: bool,
    /// Stop (and, as PID 1, end the sandbox) this long after starting, whatever is running.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub lifetime: Option<Duration>,
    /// Once every listener is bound, connect to the host's vsock PORT (CID 2) and close: the
    /// VMM's host side learns the agent is up without polling.
    #[arg(long, value_name = "PORT")]
    pub notify_ready_vsock: Option<u32>,
}

/// Errors that stop the agent from starting.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Init(#[from] init::InitError),
    #[error(transparent)]
    Reaper(#[from] reaper::ReaperError),
    #[error(transparent)]
    Listen(#[from] listen::ListenError),
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
}

/// How long the agent waits for its connections to finish when stopping.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// Runs the agent until a signal or the host stops it. Returns whether to power off.
pub fn run(args: AgentArgs) -> Result<bool, AgentError> {
    run_with(args, None)
}

/// [`run`], confining every command with `confine` (a process sandbox's agent).
fn run_with(args: AgentArgs, confine: Option<exec::Confinement>) -> Result<bool, AgentError> {
    let pid1 = std::process::id() == 1;
    if pid1 && !args.no_init_mounts {
        // A missing mount makes some commands fail, but the host can still be told about it;
        // refusing to serve would leave it with nothing but a timeout.
        if let Err(e) = init::mount_essentials() {
            tracing::error!(error = %e, "init: mounting essential filesystems failed");
        }
    } else {
        init::become_subreaper()?;
    }
    let reaper = Reaper::start()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .thread_name("lg-agent")
        .enable_all()
        .build()
        .map_err(AgentError::Runtime)?;
    let ctx = Arc::new(AgentContext {
        reaper,
        confine,
        shutdown: CancellationToken::new(),
    });
    if let Some(lifetime) = args.lifetime {
        let stop = ctx.shutdown.clone();
        runtime.spawn(async move {
            tokio::time::sleep(lifetime).await;
            tracing::warn!("lifetime of {lifetime:?} is over: stopping");
            stop.cancel();
        });
    }
    runtime.block_on(serve(args.listen, args.notify_ready_vsock, ctx))?;
    runtime.shutdown_timeout(Duration::from_secs(1));
    Ok(pid1 && args.on_exit != OnExit::Exit || args.on_exit == OnExit::Poweroff)
}

async fn serve(
    addrs: Vec<ListenAddr>,
    notify_ready_vsock: Option<u32>,
    ctx: Arc<AgentContext>,
) -> Result<(), AgentError> {
    // Bind everything first: a bad address fails startup instead of half-starting.
    let mut bound = Vec::with_capacity(addrs.len());
    for addr in &addrs {
        bound.push((addr.to_string(), addr.bind()?));
        tracing::info!(%addr, "listening");
    }
    if let Some(port) = notify_ready_vsock {
        tokio::spawn(notify_ready(port));
    }
    let stop = ctx.shutdown.clone();
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::error!("cannot install SIGTERM/SIGINT handlers");
            return;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: stopping"),
            _ = int.recv() => tracing::info!("SIGINT: stopping"),
            _ = stop.cancelled() => {}
        }
        stop.cancel();
    });
    let mut listeners = tokio::task::JoinSet::new();
    for (addr, b) in bound {
        listeners.spawn(b.serve(addr, ctx.clone()));
    }
    // The agent runs until it is told to stop or every listener has ended (an inherited
    // single connection closing ends the agent).
    let mut first_error = None;
    loop {
        tokio::select! {
            _ = ctx.shutdown.cancelled() => break,
            next = listeners.join_next() => match next {
                None => break,
                Some(Ok(Err(e))) => {
                    tracing::error!(error = %e, "listener failed");
                    first_error.get_or_insert(e);
                }
                Some(_) => {}
            },
        }
    }
    ctx.shutdown.cancel();
    if tokio::time::timeout(STOP_TIMEOUT, async {
        while listeners.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        tracing::warn!("connections did not finish within {STOP_TIMEOUT:?}");
    }
    first_error.map_or(Ok(()), |e| Err(e.into()))
}

/// Tells the host the agent listens: one connection to the host (CID 2) on `port`, closed at
/// once — the connection itself is the signal. Best effort (a host that does not listen for it
/// still finds the agent by dialing), so a failure is only logged.
async fn notify_ready(port: u32) {
    let addr = tokio_vsock::VsockAddr::new(tokio_vsock::VMADDR_CID_HOST, port);
    match tokio::time::timeout(
        Duration::from_secs(5),
        tokio_vsock::VsockStream::connect(addr),
    )
    .await
    {
        Ok(Ok(_stream)) => tracing::debug!(port, "told the host the agent is ready"),
        Ok(Err(e)) => {
            tracing::warn!(port, error = %e, "could not tell the host the agent is ready")
        }
        Err(_) => tracing::warn!(port, "telling the host the agent is ready timed out"),
    }
}

/// `luminaguard-agent sandbox-init CONFIG_JSON`: PID 1 of a process sandbox's new namespaces.
/// Builds and enters the sandbox (root, privileges, seccomp — its listener handed to the host),
/// then serves the host on fd 3, confining each command it starts with Landlock. Any failure
/// exits non-zero before anything is served.
pub fn sandbox_init_main(config_json: &str) -> std::process::ExitCode {
    let cfg: luminaguard_sandbox_init::init::InitConfig = match serde_json::from_str(config_json) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("luminaguard-agent: sandbox-init: invalid config: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let entered = match luminaguard_sandbox_init::init::enter(&cfg) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("luminaguard-agent: {e}");
            return std::process::ExitCode::from(3);
        }
    };
    // Until its creator hands it over, the sandbox lives only as long as its creator: a create
    // killed half-way leaves nothing running.
    let gate = entered.gate;
    let watch = std::thread::Builder::new()
        .name("lg-creator".into())
        .spawn(move || {
            if !gate.wait_handover() {
                eprintln!("luminaguard-agent: the sandbox's creator is gone: stopping");
                std::process::exit(0);
            }
        });
    if let Err(e) = watch {
        eprintln!("luminaguard-agent: cannot watch the sandbox's creator: {e}");
        return std::process::ExitCode::from(3);
    }
    main_inner(
        AgentArgs {
            listen: vec![ListenAddr::Fd(luminaguard_sandbox_init::fds::AGENT_FD)],
            on_exit: OnExit::Exit,
            threads: 2,
            no_init_mounts: true,
            lifetime: cfg.lifetime_ms.map(Duration::from_millis),
            notify_ready_vsock: None,
        },
        Some(exec::Confinement {
            landlock: entered.landlock,
            commands_cgroup: None,
        }),
    )
}

/// Sends `tracing` output to stderr, filtered by `RUST_LOG` or `default`.
pub fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

/// Entry point shared by `luminaguard-agent` and `luminaguard guest-agent`: runs, then exits or powers
/// off. Never returns as PID 1 (PID 1 returning would panic the kernel).
pub fn main_with(args: AgentArgs) -> std::process::ExitCode {
    main_inner(args, None)
}

fn main_inner(args: AgentArgs, confine: Option<exec::Confinement>) -> std::process::ExitCode {
    let on_exit = args.on_exit;
    let result = run_with(args, confine);
    let (code, poweroff) = match result {
        Ok(poweroff) => (0, poweroff),
        Err(e) => {
            tracing::error!(error = %e, "agent failed");
            eprintln!("luminaguard-agent: {e}");
            (1, std::process::id() == 1 && on_exit != OnExit::Exit)
        }
    };
    if poweroff {
        init::power_off();
    }
    std::process::ExitCode::from(code)
}
