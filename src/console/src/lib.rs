//! The web console (`luminaguard daemon --console ADDR`): what a person approving an agent's
//! actions wants to look at — the approvals waiting for them with their cards, and decisions
//! made with a click. Server-side rendered HTML (askama templates, escaped by default), a
//! little progressive JavaScript, every asset embedded: it works offline, and with JavaScript
//! off for reading.
//!
//! A front-end like the CLI: it calls the daemon's service, which judges and records; it
//! decides nothing. Its own job is who may use it ([`auth`]) and what a browser may be tricked
//! into ([`guard`]).

pub mod auth;
pub mod guard;
mod pages;

use std::sync::Arc;

use axum::Router;
use luminaguard_service::Service;

/// The console of one daemon.
#[derive(Debug)]
pub struct Console {
    pub(crate) service: Service,
    /// The daemon's agent tasks, when it runs them.
    pub(crate) agents: Option<Arc<dyn luminaguard_daemon::agent_tasks::AgentHost>>,
    pub sessions: auth::Sessions,
    /// The `Host` values it answers for (`127.0.0.1:PORT`, and `localhost:PORT` for a
    /// loopback address).
    pub(crate) hosts: Vec<String>,
}

impl Console {
    /// A console for `service` (and the daemon's agent tasks, if it runs them), answering for
    /// the address `bound` (`IP:PORT`).
    pub fn new(
        service: Service,
        agents: Option<Arc<dyn luminaguard_daemon::agent_tasks::AgentHost>>,
        bound: std::net::SocketAddr,
    ) -> Arc<Self> {
        let mut hosts = vec![bound.to_string()];
        if bound.ip().is_loopback() {
            hosts.push(format!("localhost:{}", bound.port()));
        }
        Arc::new(Self {
            service,
            agents,
            sessions: auth::Sessions::default(),
            hosts,
        })
    }

    /// The login link for a new session of `uid`, good once for [`auth::LINK_TTL`].
    pub fn login_url(&self, uid: u32, gid: u32) -> Result<String, getrandom::Error> {
        let t = self.sessions.mint(uid, gid)?;
        let host = self.hosts.first().map(String::as_str).unwrap_or_default();
        Ok(format!("http://{host}/login?token={t}"))
    }
}

impl luminaguard_daemon::console_links::ConsoleLinks for Console {
    fn login_link(
        &self,
        caller: &luminaguard_service::Caller,
    ) -> Result<luminaguard_api::types::ConsoleLink, luminaguard_daemon::error::ApiError> {
        let url = self.login_url(caller.uid, caller.gid).map_err(|e| {
            luminaguard_daemon::error::ApiError::new(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!("no randomness for a login token: {e}"),
            )
        })?;
        Ok(luminaguard_api::types::ConsoleLink {
            url,
            expires_in_secs: auth::LINK_TTL.as_secs(),
        })
    }
}

/// The console's routes, behind [`guard::guard`].
pub fn router(console: Arc<Console>) -> Router {
    pages::routes()
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&console),
            guard::guard,
        ))
        .with_state(console)
}

/// How the console serves its connections (the daemon's `[daemon]` limits).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A request head that has not arrived by then is cut off (`request_timeout`).
    pub head_timeout: std::time::Duration,
    /// Connections open at once; more wait unaccepted (`max_connections`). Anyone on the
    /// machine can connect before a session is asked for, so without a bound they could
    /// take every descriptor of the daemon, its API's included.
    pub max_connections: usize,
}

/// Serves the console on `listener` until the future is dropped (its connections with it):
/// each connection as the daemon serves its socket's ([`luminaguard_api::serve::connection`]),
/// within `limits`.
pub async fn serve(listener: tokio::net::TcpListener, console: Arc<Console>, limits: Limits) {
    let app = router(console);
    // Never turned: connections end with their clients, or with this future.
    let (_stop, stopping) = tokio::sync::watch::channel(false);
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // Out of descriptors and the like: the next accept may succeed.
                tracing::warn!(error = %e, "accepting a console connection");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        while conns.try_join_next().is_some() {}
        let svc = hyper_util::service::TowerToHyperService::new(tower::ServiceExt::map_request(
            app.clone(),
            |r: axum::http::Request<hyper::body::Incoming>| r.map(axum::body::Body::new),
        ));
        let stopping = stopping.clone();
        conns.spawn(async move {
            luminaguard_api::serve::connection(stream, svc, limits.head_timeout, stopping).await;
            drop(permit);
        });
    }
}
