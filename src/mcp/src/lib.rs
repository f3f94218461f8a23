//! LuminaGuard as an MCP server (`luminaguard mcp serve`): any MCP host — Claude Code, Claude
//! Desktop, Cursor, … — runs its commands and file edits in a LuminaGuard sandbox, under the
//! policy and the Approval Cliff, on the audit log.
//!
//! A thin front-end, like the CLI: it parses tool calls, calls the sandboxes through
//! [`luminaguard_front::Front`] (the daemon when one runs, else the service in this process)
//! and renders the answers. Every judgement is the service's: a command is judged by the
//! policy there; a file write or delete is sent as the command that does it (`cat > PATH`,
//! `rm -- PATH`), which the policy judges as the write or delete it is; an `ask` is put to a
//! person through the service's approvals, which this server answers with the MCP client's
//! elicitation when the client offers it.
//!
//! One sandbox per MCP session, made on first use with the server's settings and destroyed
//! when the session ends — however it ends (see [`luminaguard_front::Held`]).
//!
//! Two transports, one code path: [`serve_stdio`] serves one session on stdin/stdout;
//! [`serve_http`] serves MCP's streamable HTTP at `/mcp` on TCP (a bearer token on every
//! request) or a unix socket (peer credentials), one session per `Mcp-Session-Id`, each with
//! its own sandboxes (see [`http`]). Either way the sessions share one hub — one
//! [`Front`], so one service and audit log in this process — and each acts through a view of
//! it that carries the session's name ([`Front::in_session`]): its audit records name it, and
//! the service's questions about its calls go to its own client's elicitation. A session's
//! sandboxes are destroyed when rmcp drops its service (a `DELETE`, the idle timeout, the
//! server stopping).
//!
//! stdout is the MCP channel on stdio; over HTTP nothing is written to it. Logs go to stderr.

mod approve;
pub mod bounded;
mod flight;
pub mod gateway;
pub mod hosts;
pub mod http;
pub mod ops;
mod server;
mod stdio;
pub mod tools;

use luminaguard_front::Front;
use luminaguard_service::CreateOptions;

pub use approve::Shared;
pub use server::Server;

/// What the server was started with.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How the session's sandboxes are made (the `run` flags).
    pub create: CreateOptions,
    /// Bytes of stdout and of stderr a `run_command` result keeps (head and tail).
    pub output_limit: usize,
    /// The largest file `read_file` returns and `write_file` takes.
    pub max_file: u64,
    /// How long a call may wait for a person before it answers `pending_approval` (hosts
    /// give up on a tool call after about a minute); `None`: as long as the card lasts.
    pub pending_after: Option<std::time::Duration>,
    /// `mcp gateway`: the servers whose tools are offered (instead of the sandbox tools).
    pub gateway: Option<std::sync::Arc<gateway::Gateway>>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            create: CreateOptions::default(),
            output_limit: 64 << 10,
            max_file: 4 << 20,
            pending_after: Some(std::time::Duration::from_secs(45)),
            gateway: None,
        }
    }
}

/// Why the server could not serve.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The MCP session could not begin on stdio (the client sent no `initialize`, or went
    /// away first).
    #[error("starting the MCP session on stdio: {0}")]
    Start(String),
    /// The session's task failed.
    #[error("the MCP session on stdio failed: {0}")]
    Session(#[from] tokio::task::JoinError),
    /// The HTTP server could not start.
    #[error(transparent)]
    Http(#[from] http::HttpError),
    /// A signal handler could not be installed.
    #[error("installing a handler for {signal}: {source}")]
    Signal {
        signal: &'static str,
        source: std::io::Error,
    },
}

/// Serves one MCP session on stdin/stdout until the client closes it (or this process is told
/// to stop: SIGTERM, SIGINT, SIGHUP); then destroys the session's sandboxes.
pub async fn serve_stdio(front: Front, settings: Settings) -> Result<(), ServeError> {
    // Boxed: the SDK's session future is deep enough to overflow the compiler's layout
    // queries of every future that holds it inline.
    let serving: std::pin::Pin<Box<dyn Future<Output = Result<(), ServeError>> + Send>> =
        Box::pin(server::serve_stdio(front, settings));
    serving.await
}

/// Serves MCP over streamable HTTP (`--http`): one MCP session per client session, each with
/// its own sandboxes, over one `front`, until SIGTERM, SIGINT or SIGHUP; then ends every
/// session and destroys their sandboxes. See [`http`] for the authentication.
pub async fn serve_http(
    front: Front,
    settings: Settings,
    opts: http::HttpOptions,
) -> Result<(), ServeError> {
    let serving: std::pin::Pin<Box<dyn Future<Output = Result<(), ServeError>> + Send>> =
        Box::pin(http::serve_http(front, settings, opts));
    serving.await
}
