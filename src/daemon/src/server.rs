//! Accepting connections: each is authenticated by its peer credentials, served HTTP/1.1 by
//! hyper with a deadline for each request's head, and counted against a bound — beyond it, new
//! connections wait in the listen backlog. On shutdown the listener closes first; requests in
//! flight get a grace period to finish.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use hyper_util::service::TowerToHyperService;
use luminaguard_service::Caller;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tower::ServiceExt;

use crate::auth::Authorizer;
use crate::error::ApiError;
use crate::metrics::Metrics;

/// How the server treats connections.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_connections: usize,
    /// For a request's head (and an idle kept-alive connection's next one).
    pub request_timeout: Duration,
    pub shutdown_grace: Duration,
}

/// Serves `router` on `listener` until `shutdown` resolves; then stops accepting, lets
/// requests in flight finish within the grace period, and returns.
pub async fn serve(
    listener: UnixListener,
    router: Router,
    auth: Arc<Authorizer>,
    metrics: Arc<Metrics>,
    limits: Limits,
    idle: Arc<tokio::sync::Notify>,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut conns = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            () = &mut shutdown => break,
            p = Arc::clone(&slots).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let stream = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors and the like: the next accept may succeed.
                    tracing::warn!(error = %e, "accepting a connection");
                    continue;
                }
            },
        };
        // Reap finished connection tasks as we go.
        while conns.try_join_next().is_some() {}
        let (router, auth, metrics, limits) = (
            router.clone(),
            Arc::clone(&auth),
            Arc::clone(&metrics),
            limits.clone(),
        );
        let stop = stop_rx.clone();
        let idle = Arc::clone(&idle);
        conns.spawn(async move {
            metrics.connections.inc();
            connection(stream, router, &auth, &metrics, &limits, stop).await;
            // The last connection gone: background work may use the machine now.
            if metrics.connections.dec() == 1 {
                idle.notify_waiters();
            }
            drop(permit);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(limits.shutdown_grace, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            left = conns.len(),
            "requests still running after the shutdown grace period: cutting them off"
        );
        conns.shutdown().await;
    }
}

/// Serves one connection: as its peer's user, or (not admitted) with a 403 for every request.
async fn connection(
    stream: UnixStream,
    router: Router,
    auth: &Authorizer,
    metrics: &Arc<Metrics>,
    limits: &Limits,
    stop: watch::Receiver<bool>,
) {
    let caller = match stream.peer_cred() {
        Ok(cred) => {
            let auth = auth.clone();
            tokio::task::spawn_blocking(move || {
                auth.admit_blocking(cred.uid(), cred.gid(), cred.pid())
            })
            .await
            .unwrap_or_else(|e| Err(format!("checking the peer's credentials: {e}")))
        }
        Err(e) => Err(format!("reading the peer's credentials: {e}")),
    };
    if let Err(why) = &caller {
        tracing::info!(%why, "connection refused");
    }
    let metrics = Arc::clone(metrics);
    let svc = tower::service_fn(move |mut req: Request<hyper::body::Incoming>| {
        let (router, caller, metrics) = (router.clone(), caller.clone(), Arc::clone(&metrics));
        async move {
            metrics.requests.inc();
            let resp = match caller {
                Ok(caller) => {
                    // The front-end session the client says it acts for: a label on the
                    // request's audit records (the uid stays the socket peer's).
                    let caller = match req
                        .headers()
                        .get(luminaguard_api::client::SESSION_HEADER)
                        .and_then(|v| v.to_str().ok())
                        .map(|s| s.trim())
                        .filter(|s| !s.is_empty())
                    {
                        Some(s) => caller.in_session(
                            s.chars()
                                .filter(|c| !c.is_control())
                                .take(luminaguard_api::client::SESSION_MAX)
                                .collect::<String>(),
                        ),
                        None => caller,
                    };
                    req.extensions_mut().insert::<Caller>(caller);
                    router.oneshot(req.map(axum::body::Body::new)).await?
                }
                Err(why) => axum::response::IntoResponse::into_response(ApiError::new(
                    axum::http::StatusCode::FORBIDDEN,
                    "unauthorized",
                    why,
                )),
            };
            if resp.status().is_client_error() || resp.status().is_server_error() {
                let code = match resp.extensions().get::<crate::error::Failed>() {
                    Some(f) => f.0.to_owned(),
                    None => resp.status().as_u16().to_string(),
                };
                metrics
                    .errors
                    .get_or_create(&crate::metrics::Code { code })
                    .inc();
            }
            Ok::<_, std::convert::Infallible>(resp)
        }
    });
    luminaguard_api::serve::connection(
        stream,
        TowerToHyperService::new(svc),
        limits.request_timeout,
        stop,
    )
    .await;
}
