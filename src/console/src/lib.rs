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
