//! `luminaguard daemon`: the sandbox service behind an HTTP/1.1 + JSON API on a Unix socket.
//!
//! - [`listen`]: the socket — bound `0660 root:<group>`, or passed by systemd;
//! - [`auth`]: who may connect (root, the daemon's user, the group's members), by peer
//!   credentials; each connection acts as its peer's uid;
//! - [`server`]: connections, bounded, with request deadlines and a graceful stop;
//! - [`api`]: the routes of `/v1` and the OpenAPI document generated from them;
//! - [`execs`]: command output streamed as NDJSON, stdin streamed in;
//! - [`metrics`]: `GET /metrics`.
//!
//! Every request goes through the [`Service`], which applies the owner rule and everything
//! else; the daemon adds transport, not policy.

pub mod agent_tasks;
pub mod api;
pub mod approvals;
pub mod auth;
pub mod console_links;
pub mod error;
pub mod execs;
pub mod listen;
pub mod metrics;
pub mod notify;
pub mod server;
pub mod tool_calls;

use std::sync::Arc;
use std::time::Duration;

use luminaguard_service::Service;

/// What every handler shares.
#[derive(Debug, Clone)]
pub struct AppState {
    pub service: Service,
    pub execs: Arc<execs::Registry>,
    pub metrics: Arc<metrics::Metrics>,
    /// What runs agent tasks (`/v1/agent/tasks`), when the binary supplies it.
    pub agents: Option<Arc<dyn agent_tasks::AgentHost>>,
    /// The web console's login links (`/v1/console/login`), when it serves one.
    pub console: Option<Arc<dyn console_links::ConsoleLinks>>,
}

/// What the binary hands the daemon beside its service.
#[derive(Debug, Default, Clone)]
pub struct Extensions {
    pub agents: Option<Arc<dyn agent_tasks::AgentHost>>,
    pub console: Option<Arc<dyn console_links::ConsoleLinks>>,
}

impl AppState {
    pub fn new(service: Service) -> Self {
        Self {
            service,
            execs: Arc::default(),
            metrics: Arc::default(),
            agents: None,
            console: None,
        }
    }

    /// The same, running agent tasks with `host`.
    #[must_use]
    pub fn with_agents(mut self, host: Arc<dyn agent_tasks::AgentHost>) -> Self {
        self.agents = Some(host);
        self
    }
}

/// How often dead sandboxes' leftovers are collected, at most this long between expiry checks.
const HOUSEKEEPING: Duration = Duration::from_secs(30);

/// Runs the daemon on `bound` until `shutdown` resolves: serves the API, expires sandboxes
/// whose lifetime ends (the moment it ends), collects leftovers of dead ones, counts events.
/// When it returns, the socket is removed and the service has let go of its sandboxes (or
/// destroyed them all, with `daemon.destroy_on_exit`).
pub async fn run(
    service: Service,
    bound: listen::Bound,
    shutdown: impl Future<Output = ()>,
    reloads: tokio::sync::mpsc::Receiver<luminaguard_core::Config>,
    extensions: Extensions,
) -> std::io::Result<()> {
    let config = service.config().daemon.clone();
    let group = config.group.clone();
    let auth = Arc::new(
        tokio::task::spawn_blocking(move || auth::Authorizer::new_blocking(&group))
            .await
            .map_err(std::io::Error::other)?,
    );
    bound.listener.set_nonblocking(true)?;
    let std_listener = bound.listener.try_clone()?;
    let listener = tokio::net::UnixListener::from_std(std_listener)?;
    let mut st = AppState::new(service.clone());
    st.agents = extensions.agents;
    st.console = extensions.console;
    let housekeeping = tokio::spawn(housekeep(st.clone()));
    let idle = Arc::new(tokio::sync::Notify::new());
    let filling = tokio::spawn(fill_pools(
        st.service.clone(),
        Arc::clone(&st.metrics),
        Arc::clone(&idle),
    ));
    let counting = tokio::spawn(count_events(st.clone()));
    let reloading = tokio::spawn(reload(service.clone(), reloads));
    let limits = server::Limits {
        max_connections: usize::try_from(config.max_connections).unwrap_or(usize::MAX),
        request_timeout: config.request_timeout,
        shutdown_grace: config.shutdown_grace,
    };
    match bound.path() {
        Some(path) => tracing::info!(socket = %path.display(), "serving the API"),
        None => tracing::info!("serving the API on the socket systemd passed"),
    }
    notify::ready();
    server::serve(
        listener,
        api::router(st.clone()),
        auth,
        Arc::clone(&st.metrics),
        limits,
        idle,
        shutdown,
    )
    .await;
    housekeeping.abort();
    counting.abort();
    reloading.abort();
    // The filler finishes the sandbox it is making (a half-made one would be left for gc).
    service.stop_filling();
    let _ = filling.await;
    tokio::task::spawn_blocking(move || bound.remove_blocking())
        .await
        .map_err(std::io::Error::other)?;
    service.close(config.destroy_on_exit).await;
    Ok(())
}

/// Expires sandboxes when their lifetime ends, and collects leftovers of dead ones now and
/// then.
async fn housekeep(st: AppState) {
    let root = luminaguard_service::Caller {
        uid: nix::unistd::geteuid().as_raw(),
        gid: nix::unistd::getegid().as_raw(),
        pid: None,
        session: None,
        front: None,
    };
    // The first round collects at once what a crashed predecessor left (its one-shot
    // sandboxes, their network objects).
    let mut last_gc: Option<tokio::time::Instant> = None;
    loop {
        let (expired, next) = st.service.expire().await;
        for id in expired {
            tracing::info!(%id, "sandbox expired");
        }
        if last_gc.is_none_or(|t| t.elapsed() >= HOUSEKEEPING) {
            if let Ok(report) = st.service.gc(&root).await {
                for e in report.errors {
                    tracing::warn!("gc: {e}");
                }
            }
            last_gc = Some(tokio::time::Instant::now());
        }
        // Until the next lifetime ends (a little after, so it is over), or the next round.
        let wait = next
            .map(|d| d + Duration::from_millis(5))
            .unwrap_or(HOUSEKEEPING)
            .min(HOUSEKEEPING);
        tokio::time::sleep(wait).await;
    }
}

/// Keeps the warm pools full: at start, when a member ages out, and after one is taken —
/// once no request is in flight (at most [`REFILL_DEFER`] later): on a small host a refill
/// racing the request that took the member would slow that very request.
async fn fill_pools(
    service: luminaguard_service::Service,
    metrics: Arc<metrics::Metrics>,
    idle: Arc<tokio::sync::Notify>,
) {
    loop {
        let next = service.fill_pools().await.unwrap_or(HOUSEKEEPING);
        let taken = tokio::select! {
            more = service.pool_taken() => {
                if !more {
                    return;
                }
                true
            }
            () = tokio::time::sleep(next) => false,
        };
        if taken {
            let quiet = async {
                loop {
                    let notified = idle.notified();
                    if metrics.connections.get() == 0 {
                        return;
                    }
                    notified.await;
                }
            };
            let _ = tokio::time::timeout(REFILL_DEFER, quiet).await;
        }
    }
}

/// Applies each reloaded configuration: the pools (`[pools.*]`, `daemon.run_pool`) change at
/// once; any other setting that changed is named as waiting for a restart.
async fn reload(
    service: Service,
    mut reloads: tokio::sync::mpsc::Receiver<luminaguard_core::Config>,
) {
    while let Some(config) = reloads.recv().await {
        for change in service.reload_pools(&config).await {
            tracing::info!("reload: {change}");
        }
        let started = service.config();
        let mut rest = config.clone();
        rest.pools.clone_from(&started.pools);
        rest.daemon.run_pool.clone_from(&started.daemon.run_pool);
        rest.daemon.socket.clone_from(&started.daemon.socket);
        if rest != *started {
            tracing::warn!(
                "reload: settings other than the pools changed; they take effect when the \
                 daemon restarts"
            );
        }
    }
}

/// The longest a refill waits for the daemon to be idle.
const REFILL_DEFER: Duration = Duration::from_secs(1);

/// Counts the service's events into the metrics.
async fn count_events(st: AppState) {
    let mut rx = st.service.subscribe();
    loop {
        match rx.recv().await {
            Ok(e) => {
                let kind = e.kind.as_str();
                st.metrics
                    .events
                    .get_or_create(&metrics::Kind { kind: kind.into() })
                    .inc();
            }
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}
