//! `luminaguard daemon`: serve the sandbox service's API on a Unix socket until SIGTERM or
//! SIGINT; SIGHUP reloads the configuration's pools (see `luminaguard_daemon`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use luminaguard_core::Config;
use luminaguard_service::Service;

#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// The API socket (default: daemon.socket in the configuration, `<runtime_dir>/api.sock`).
    /// Ignored when systemd passes the listening socket (socket activation).
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Also serve the web console on this address (`127.0.0.1:PORT`; docs/console.md). Log in
    /// with the link `luminaguard console url` prints.
    #[arg(long, value_name = "ADDR")]
    console: Option<std::net::SocketAddr>,
}

pub fn run(
    args: DaemonArgs,
    mut config: Config,
    load: impl Fn() -> anyhow::Result<Config> + Send + Sync + 'static,
) -> anyhow::Result<ExitCode> {
    if let Some(socket) = args.socket {
        config.daemon.socket = socket;
    }
    let service = Service::new(config.clone())?;
    service.set_front_kind("daemon");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        service
            .prepare_runtime()
            .await
            .context("preparing the runtime directory")?;
        // The log is verified whole before anything is served: a log that fails verification
        // stops the daemon here, rather than failing every request.
        service
            .open_audit()
            .await
            .context("opening the audit log")?;
        let socket = config.daemon.socket.clone();
        let group = config.daemon.group.clone();
        let bound = tokio::task::spawn_blocking(move || {
            if let Some(bound) = luminaguard_daemon::listen::from_systemd()? {
                return Ok(bound);
            }
            let gid = match nix::unistd::Group::from_name(&group) {
                Ok(Some(g)) => Some(g.gid.as_raw()),
                _ => None,
            };
            luminaguard_daemon::listen::bind_blocking(&socket, gid)
        })
        .await??;
        // Agent tasks run here keep their transcripts beside the daemon's audit log.
        let agents: std::sync::Arc<dyn luminaguard_daemon::agent_tasks::AgentHost> =
            std::sync::Arc::new(luminaguard_agent_loop::host::Host::new(
                luminaguard_agent_loop::Store::for_config(service.config()),
            ));
        let mut extensions = luminaguard_daemon::Extensions {
            agents: Some(agents.clone()),
            console: None,
        };
        let console = match args.console {
            Some(addr) => {
                if !addr.ip().is_loopback() {
                    eprintln!(
                        "luminaguard: WARNING: --console {addr}: not a loopback address; the \
                         console is plain HTTP, reachable from the network"
                    );
                }
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding the console to {addr}"))?;
                let bound = listener.local_addr()?;
                let console =
                    luminaguard_console::Console::new(service.clone(), Some(agents), bound);
                extensions.console = Some(console.clone());
                tracing::info!(%bound, "serving the console");
                let d = &service.config().daemon;
                let limits = luminaguard_console::Limits {
                    head_timeout: d.request_timeout,
                    max_connections: usize::try_from(d.max_connections).unwrap_or(usize::MAX),
                };
                Some(tokio::spawn(luminaguard_console::serve(
                    listener, console, limits,
                )))
            }
            None => None,
        };
        let (reloads, reloaded) = tokio::sync::mpsc::channel(1);
        let hangups = tokio::spawn(reload_on_hangup(std::sync::Arc::new(load), reloads));
        let served =
            luminaguard_daemon::run(service, bound, stop_signal(), reloaded, extensions).await;
        hangups.abort();
        if let Some(c) = console {
            c.abort();
        }
        served?;
        anyhow::Ok(())
    })?;
    rt.shutdown_background();
    Ok(ExitCode::SUCCESS)
}

/// Resolves at the first SIGTERM or SIGINT.
async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            tracing::error!("cannot catch SIGTERM/SIGINT: the daemon stops only when killed");
            std::future::pending::<()>().await;
        }
    }
    tracing::info!("stopping");
}

/// Loads the configuration again at each SIGHUP and hands it to the daemon; a configuration
/// that does not load is reported and the one in use kept.
async fn reload_on_hangup(
    load: std::sync::Arc<dyn Fn() -> anyhow::Result<Config> + Send + Sync>,
    reloads: tokio::sync::mpsc::Sender<Config>,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::error!("cannot catch SIGHUP: the configuration is not reloadable");
        return;
    };
    while hup.recv().await.is_some() {
        let load = std::sync::Arc::clone(&load);
        match tokio::task::spawn_blocking(move || load()).await {
            Ok(Ok(config)) => {
                if reloads.send(config).await.is_err() {
                    return;
                }
            }
            Ok(Err(e)) => {
                tracing::error!("reload: {e:#}; the configuration in use is kept");
            }
            Err(e) => tracing::error!("reload: {e}"),
        }
    }
}
