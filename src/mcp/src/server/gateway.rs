//! The gateway's side of the MCP server (`mcp gateway`): its servers' tools, prompts and
//! resources listed and served inside watched flights (a server started on the way may be
//! asked about), and its eager servers started with the session.

use std::sync::Arc;

use rmcp::model::Tool;
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer};

use super::{Server, Session};
use crate::flight::{Asking, Cancelled, Flight, Step, Track, Watch, Work};
use crate::gateway::Gateway;
use crate::gateway::servers::{Refusal, Servers};

impl Server {
    /// The gateway's servers' tools for session `s` (see [`Server::gateway_flight`]).
    pub(super) async fn gateway_tools(
        gw: &Arc<Gateway>,
        s: &Arc<Session>,
        context: &RequestContext<RoleServer>,
    ) -> Result<Vec<Tool>, ErrorData> {
        Self::gateway_flight(gw, s, context, "tools/list", |gw, s| async move {
            Ok(servers(&s)?.tools(&gw, &s.front, &s.shared).await)
        })
        .await
    }

    /// `work` on the gateway's servers for session `s` — a listing (which starts the servers
    /// not yet running), a prompt's get, a resource's read — watched like a call: a server's
    /// start may be asked about (its command is judged like any other), and so may a get or a
    /// read, so the question reaches the client's user (or, with nobody to ask in-process, the
    /// server or the action is refused).
    pub(super) async fn gateway_flight<T, Fut>(
        gw: &Arc<Gateway>,
        s: &Arc<Session>,
        context: &RequestContext<RoleServer>,
        what: &str,
        work: impl FnOnce(Arc<Gateway>, Arc<Session>) -> Fut,
    ) -> Result<T, ErrorData>
    where
        T: Send + 'static,
        Fut: Future<Output = Work<T>> + Send + 'static,
    {
        let mut flight = Flight::start(
            what.to_owned(),
            None,
            None,
            Arc::new(Track::default()),
            work(Arc::clone(gw), Arc::clone(s)),
        );
        // These requests cannot answer with a question: the client is asked on the side, or
        // nobody.
        let asking = match Self::asking(s, context) {
            Asking::InputRequired => Asking::Nobody,
            a => a,
        };
        let watch = Watch {
            front: &s.front,
            shared: &s.shared,
            asking,
            progress: None,
            pending_after: None,
            cancelled: &context.ct,
        };
        match flight.watch(&watch).await {
            Ok(Step::Done(done)) => done,
            Ok(_) => Err(ErrorData::internal_error(
                format!("{what} stopped at a question it cannot ask"),
                None,
            )),
            Err(Cancelled) => Err(ErrorData::invalid_request(
                format!("{what}: cancelled by the client"),
                None,
            )),
        }
    }

    /// Starts the gateway's servers configured to start at once, for session `s`, in the
    /// background — watched like a call, so that a question about a server's launch reaches
    /// the client's user (asked once the session is up).
    pub(super) fn start_eager(gw: &Arc<crate::gateway::Gateway>, s: &Arc<Session>) {
        if !gw.servers.values().any(|e| e.eager) {
            return;
        }
        let (gw, session) = (Arc::clone(gw), Arc::downgrade(s));
        tokio::spawn(async move {
            let Some(s) = session.upgrade() else { return };
            let work = {
                let s = Arc::clone(&s);
                async move {
                    if let Some(servers) = &s.servers {
                        servers.start_eager(&gw, &s.front, &s.shared).await;
                    }
                    Ok(())
                }
            };
            let mut flight =
                Flight::start("start".into(), None, None, Arc::new(Track::default()), work);
            let asking = match s.shared.elicitor() {
                Some(peer) => Asking::Elicit(peer.clone()),
                None => Asking::Nobody,
            };
            let never = tokio_util::sync::CancellationToken::new();
            let watch = Watch {
                front: &s.front,
                shared: &s.shared,
                asking,
                progress: None,
                pending_after: None,
                cancelled: &never,
            };
            let _ = flight.watch(&watch).await;
        });
    }
}

/// A gateway session's servers.
pub(super) fn servers(s: &Session) -> Result<&Servers, ErrorData> {
    s.servers
        .as_ref()
        .ok_or_else(|| ErrorData::internal_error("a gateway session without servers", None))
}

/// A prompt or resource the gateway did not serve, as the client's error.
pub(super) fn refusal(r: Refusal) -> ErrorData {
    match r {
        Refusal::Unknown(t) => ErrorData::invalid_params(t, None),
        Refusal::Refused(t) => ErrorData::invalid_request(t, None),
        Refusal::Failed(t) => ErrorData::internal_error(t, None),
    }
}
