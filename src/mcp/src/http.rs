//! MCP's streamable HTTP transport (`luminaguard mcp serve --http ADDR|unix:PATH`): rmcp's
//! [`StreamableHttpService`] at `/mcp`, mounted in axum, behind an authentication gate that
//! fails closed.
//!
//! - **TCP** (`127.0.0.1:PORT`): every request carries `Authorization: Bearer TOKEN`, compared
//!   in constant time; anything else is a 401 with `WWW-Authenticate: Bearer`. The token is
//!   read from `--token-file` (refused if group or others may read it), else made here (256
//!   random bits) and written `0600` to `RUNTIME_DIR/mcp-http.token`, whose path — never the
//!   token — is said on stderr. Only a loopback address is bound unless `--http-public`.
//! - **Unix socket** (`unix:PATH`): the socket is made `0600`, and each connection's peer
//!   credentials (`SO_PEERCRED`, from the kernel) are checked: only this server's euid and root
//!   are served; anyone else gets a 403 for every request.
//!
//! Either way rmcp checks `Host` (loopback names only, the DNS-rebinding defence) and `Origin`
//! (a browser page of another origin is refused), and bounds a request's body.
//!
//! Each MCP session (`Mcp-Session-Id`, legacy session mode for the 2025-06-18 and 2025-11-25
//! revisions) is a [`crate::Server`] of its own — its own sandboxes — over the one [`Front`] all
//! share. A session ends with the client's DELETE, the idle timeout (rmcp's session keep-alive:
//! no message either way for [`HttpOptions::idle_timeout`]), or the server stopping (SIGTERM,
//! SIGINT, SIGHUP): its sandboxes are destroyed then.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, Request, Response, StatusCode, header};
use hyper_util::service::TowerToHyperService;
use luminaguard_front::Front;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::server::Hub;
use crate::{ServeError, Settings};

/// The largest request body served (a `write_file` of the largest file, JSON-escaped, fits).
const MAX_BODY: usize = 16 << 20;
/// For a request's head, and an idle kept-alive connection's next one.
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);
/// How long requests in flight may take to finish once the server stops.
const GRACE: Duration = Duration::from_secs(5);
/// The token file made when none is given, in the runtime directory.
pub const TOKEN_FILE: &str = "mcp-http.token";

/// Where to listen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl Listen {
    /// `unix:PATH` or `HOST:PORT` (an IP address and a port).
    pub fn parse(s: &str) -> Result<Self, HttpError> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(HttpError::Address(s.to_owned(), "no socket path".into()));
            }
            return Ok(Self::Unix(PathBuf::from(path)));
        }
        s.parse()
            .map(Self::Tcp)
            .map_err(|e| HttpError::Address(s.to_owned(), e.to_string()))
    }
}

/// How the HTTP server is set up.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    pub listen: Listen,
    /// `--http-public`: a TCP address other than loopback may be bound.
    pub public: bool,
    /// `--token-file`: the bearer token (TCP).
    pub token_file: Option<PathBuf>,
    /// Where a token is made when none is given.
    pub runtime_dir: PathBuf,
    /// A session with no request and no message either way for this long is ended (its
    /// sandboxes destroyed): a client that left without a `DELETE`. A call that runs silently
    /// for longer loses its session too, so this stays above the longest command and the
    /// approval card's expiry ([`DEFAULT_IDLE`]).
    pub idle_timeout: Duration,
}

/// The default idle timeout: an hour, the default sandbox lifetime (well past the ten minutes
/// an approval card waits).
pub const DEFAULT_IDLE: Duration = Duration::from_secs(3600);

/// Why the HTTP server could not start.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("--http {0}: {1} (give HOST:PORT, e.g. 127.0.0.1:8765, or unix:PATH)")]
    Address(String, String),
    #[error(
        "--http {0}: not a loopback address; anyone who can reach it could try the token — give \
         --http-public to serve there anyway"
    )]
    NotLoopback(SocketAddr),
    #[error("--token-file {path}: {reason}")]
    TokenFile { path: String, reason: String },
    #[error("writing the bearer token to {path}: {source}")]
    WriteToken {
        path: String,
        source: std::io::Error,
    },
    #[error("making a bearer token: {0}")]
    Random(String),
    #[error("listening on {what}: {source}")]
    Bind {
        what: String,
        source: std::io::Error,
    },
    #[error("{path} exists and is not a socket: not removed, not served on")]
    NotASocket { path: String },
}

/// Who a connection may act as.
#[derive(Debug, Clone)]
enum Gate {
    /// TCP: each request must carry this token.
    Token(Arc<[u8]>),
    /// A unix socket connection whose peer was admitted (its uid).
    Peer(u32),
    /// A unix socket connection whose peer was not: why.
    Refused(Arc<str>),
}

/// The principal a request was admitted as (in the request's extensions, for the handlers).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Principal {
    /// The client on stdio (the process that launched this server).
    Stdio,
    /// The holder of the bearer token (TCP).
    Token,
    /// A unix socket peer of this uid.
    Uid(u32),
}

impl std::fmt::Display for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Stdio => f.write_str("the stdio client"),
            Self::Token => f.write_str("the bearer token"),
            Self::Uid(uid) => write!(f, "uid {uid}"),
        }
    }
}

/// Serves MCP over streamable HTTP on `opts.listen` until SIGTERM, SIGINT or SIGHUP; then
/// ends every session (its sandboxes destroyed) and returns.
pub(crate) async fn serve_http(
    front: Front,
    settings: Settings,
    opts: HttpOptions,
) -> Result<(), ServeError> {
    let listener = bind(&opts).await?;
    let hub = Hub::new(front, settings);
    let stop = CancellationToken::new();
    let config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(true)
        .with_cancellation_token(stop.child_token())
        .with_max_request_body_bytes(MAX_BODY);
    let config = match allowed_origins(&listener) {
        // A unix socket has no web origin: any `Origin` is a browser's page elsewhere.
        origins if origins.is_empty() => config.enforce_origin_validation(),
        origins => config.with_allowed_origins(origins),
    };
    let config = match &opts.listen {
        // --http-public on every address: clients name the machine however they reach it, so
        // `Host` cannot be checked (the token still is, and a browser page cannot know it).
        Listen::Tcp(addr) if addr.ip().is_unspecified() => config.disable_allowed_hosts(),
        // --http-public on one address: that address is a name of this server too.
        Listen::Tcp(addr) if !addr.ip().is_loopback() => config.with_allowed_hosts([
            "localhost".to_owned(),
            "127.0.0.1".into(),
            "::1".into(),
            addr.ip().to_string(),
        ]),
        _ => config,
    };
    let factory_hub = Arc::clone(&hub);
    let mut sessions = LocalSessionManager::default();
    sessions.session_config.keep_alive = Some(opts.idle_timeout);
    let mcp =
        StreamableHttpService::new(move || Ok(factory_hub.server()), Arc::new(sessions), config);
    let router = axum::Router::new().nest_service("/mcp", mcp);
    let signals = crate::server::stop_signals()?;
    let accepting = accept(listener, router, stop.clone());
    tokio::pin!(accepting);
    tokio::select! {
        () = &mut accepting => {}
        () = signals => {
            tracing::info!("stopping: ending every MCP session");
            stop.cancel();
            accepting.await;
        }
    }
    hub.stop().await;
    if let Listen::Unix(path) = &opts.listen {
        let _ = tokio::fs::remove_file(path).await;
    }
    Ok(())
}

/// A bound listener and its gate.
enum Bound {
    Tcp(tokio::net::TcpListener, Arc<[u8]>),
    Unix(tokio::net::UnixListener, u32),
}

/// The origins a browser page may call from: this server's own (loopback) ones. A request with
/// any other `Origin` is refused (one without is not a browser's, and passes).
fn allowed_origins(listener: &Bound) -> Vec<String> {
    let port = match listener {
        Bound::Tcp(l, _) => match l.local_addr() {
            Ok(a) => a.port(),
            Err(_) => return Vec::new(),
        },
        Bound::Unix(..) => return Vec::new(),
    };
    ["localhost", "127.0.0.1", "[::1]"]
        .iter()
        .map(|h| format!("http://{h}:{port}"))
        .collect()
}

async fn bind(opts: &HttpOptions) -> Result<Bound, HttpError> {
    match &opts.listen {
        Listen::Tcp(addr) => {
            if !addr.ip().is_loopback() {
                if !opts.public {
                    return Err(HttpError::NotLoopback(*addr));
                }
                tracing::warn!(
                    %addr,
                    "serving MCP on a non-loopback address (--http-public): anyone who can reach \
                     it may try the bearer token, and the traffic is not encrypted"
                );
                eprintln!(
                    "luminaguard: WARNING: MCP over plain HTTP on the non-loopback address {addr} \
                     (--http-public): the bearer token crosses the network unencrypted"
                );
            }
            let token = token(opts).await?;
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| HttpError::Bind {
                    what: addr.to_string(),
                    source,
                })?;
            let local = listener.local_addr().map_err(|source| HttpError::Bind {
                what: addr.to_string(),
                source,
            })?;
            eprintln!("luminaguard: serving MCP on http://{local}/mcp");
            Ok(Bound::Tcp(listener, token))
        }
        Listen::Unix(path) => {
            let what = path.display().to_string();
            match tokio::fs::symlink_metadata(path).await {
                Ok(m) => {
                    use std::os::unix::fs::FileTypeExt;
                    if !m.file_type().is_socket() {
                        return Err(HttpError::NotASocket { path: what });
                    }
                    // A stale socket (of a server that died): a live one would be stolen
                    // from, so only one nobody answers on is removed.
                    if tokio::net::UnixStream::connect(path).await.is_ok() {
                        return Err(HttpError::Bind {
                            what,
                            source: std::io::Error::new(
                                std::io::ErrorKind::AddrInUse,
                                "another server answers on this socket",
                            ),
                        });
                    }
                    tokio::fs::remove_file(path)
                        .await
                        .map_err(|source| HttpError::Bind {
                            what: what.clone(),
                            source,
                        })?;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(HttpError::Bind { what, source }),
            }
            // Made 0600 from the start: the umask covers the window between bind and chmod.
            let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
            let bound = tokio::net::UnixListener::bind(path);
            nix::sys::stat::umask(old);
            let listener = bound.map_err(|source| HttpError::Bind {
                what: what.clone(),
                source,
            })?;
            use std::os::unix::fs::PermissionsExt;
            tokio::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                .await
                .map_err(|source| HttpError::Bind {
                    what: what.clone(),
                    source,
                })?;
            eprintln!("luminaguard: serving MCP on unix:{what} (path /mcp)");
            Ok(Bound::Unix(listener, nix::unistd::geteuid().as_raw()))
        }
    }
}

/// The bearer token: `--token-file`'s (which nobody but its owner may read), else a new one
/// written to the runtime directory.
async fn token(opts: &HttpOptions) -> Result<Arc<[u8]>, HttpError> {
    if let Some(path) = &opts.token_file {
        return Ok(read_token(path).await?.as_bytes().into());
    }
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw).map_err(|e| HttpError::Random(e.to_string()))?;
    let token: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    let path = opts.runtime_dir.join(TOKEN_FILE);
    let shown = path.display().to_string();
    let write = {
        let (path, token) = (path.clone(), token.clone());
        tokio::task::spawn_blocking(move || write_private(&path, token.as_bytes()))
    };
    write
        .await
        .map_err(|e| HttpError::WriteToken {
            path: shown.clone(),
            source: std::io::Error::other(e),
        })?
        .map_err(|source| HttpError::WriteToken {
            path: shown.clone(),
            source,
        })?;
    eprintln!("luminaguard: the bearer token is in {shown} (send `Authorization: Bearer TOKEN`)");
    Ok(token.as_bytes().into())
}

/// The bearer token in `path`, a file nobody but its owner may read (else refused).
pub async fn read_token(path: &Path) -> Result<String, HttpError> {
    let shown = path.display().to_string();
    let fail = |reason: String| HttpError::TokenFile {
        path: shown.clone(),
        reason,
    };
    let meta = tokio::fs::metadata(path)
        .await
        .map_err(|e| fail(e.to_string()))?;
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(fail(format!(
            "mode {mode:04o} lets others read it: `chmod 600 {shown}`"
        )));
    }
    let text = tokio::fs::read_to_string(path)
        .await
        .map_err(|e| fail(e.to_string()))?;
    let token = text.trim();
    if token.len() < 16 {
        return Err(fail(
            "the token is shorter than 16 characters: too easy to guess".into(),
        ));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(fail(
            "the token has spaces or bytes an HTTP header cannot carry".into(),
        ));
    }
    Ok(token.to_owned())
}

/// Writes `data` to `path` readable by its owner alone (replacing what was there).
fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    if let Some(dir) = path.parent() {
        // The runtime directory, as the service makes it: its owner's alone.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Accepts connections until `stop` is cancelled; then lets requests in flight finish within
/// the grace period.
async fn accept(listener: Bound, router: axum::Router, stop: CancellationToken) {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut conns = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => break,
            a = accept_one(&listener) => a,
        };
        while conns.try_join_next().is_some() {}
        let (io, gate) = match accepted {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "accepting a connection");
                continue;
            }
        };
        let (router, stop) = (router.clone(), stop_rx.clone());
        conns.spawn(async move { connection(io, gate, router, stop).await });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let drained =
        tokio::time::timeout(GRACE, async { while conns.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(
            left = conns.len(),
            "cutting off requests after the grace period"
        );
        conns.shutdown().await;
    }
}

trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

async fn accept_one(listener: &Bound) -> std::io::Result<(Box<dyn Io>, Gate)> {
    match listener {
        Bound::Tcp(l, token) => {
            let (s, _) = l.accept().await?;
            Ok((Box::new(s), Gate::Token(Arc::clone(token))))
        }
        Bound::Unix(l, euid) => {
            let (s, _) = l.accept().await?;
            let gate = match s.peer_cred() {
                Ok(c) if c.uid() == *euid || c.uid() == 0 => Gate::Peer(c.uid()),
                Ok(c) => Gate::Refused(
                    format!(
                        "uid {} may not use this MCP server: it serves only uid {euid} and root",
                        c.uid()
                    )
                    .into(),
                ),
                Err(e) => Gate::Refused(format!("reading the peer's credentials: {e}").into()),
            };
            if let Gate::Refused(why) = &gate {
                tracing::info!(%why, "connection refused");
            }
            Ok((Box::new(s), gate))
        }
    }
}

async fn connection(
    io: Box<dyn Io>,
    gate: Gate,
    router: axum::Router,
    stop: watch::Receiver<bool>,
) {
    let svc = tower::service_fn(move |req: Request<hyper::body::Incoming>| {
        let (router, gate) = (router.clone(), gate.clone());
        async move {
            let mut req = req.map(Body::new);
            let resp = match admit(&gate, &req) {
                Ok(principal) => {
                    req.extensions_mut().insert(principal);
                    router.oneshot(req).await?
                }
                Err((status, why)) => refuse(status, &why),
            };
            Ok::<_, std::convert::Infallible>(resp)
        }
    });
    luminaguard_api::serve::connection(io, TowerToHyperService::new(svc), HEAD_TIMEOUT, stop).await;
}

/// The principal `req` acts as, or the status and reason refusing it.
fn admit(gate: &Gate, req: &Request<Body>) -> Result<Principal, (StatusCode, Arc<str>)> {
    match gate {
        Gate::Peer(uid) => Ok(Principal::Uid(*uid)),
        Gate::Refused(why) => Err((StatusCode::FORBIDDEN, Arc::clone(why))),
        Gate::Token(token) => {
            let given = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
            match given {
                Some(given) if same(given, token) => Ok(Principal::Token),
                Some(_) => Err((StatusCode::UNAUTHORIZED, "wrong bearer token".into())),
                None => Err((
                    StatusCode::UNAUTHORIZED,
                    "a bearer token is required (Authorization: Bearer TOKEN)".into(),
                )),
            }
        }
    }
}

fn refuse(status: StatusCode, why: &str) -> Response<Body> {
    let mut resp = Response::new(Body::from(format!("{why}\n")));
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if status == StatusCode::UNAUTHORIZED {
        headers.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"luminaguard-mcp\""),
        );
    }
    resp
}

/// Whether `a` and `b` are equal, in time that depends on their lengths only.
fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a
        .iter()
        .zip(b)
        .fold(0u8, |acc, (x, y)| acc | std::hint::black_box(x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_and_tokens_compare() {
        assert_eq!(
            Listen::parse("unix:/run/x.sock").ok(),
            Some(Listen::Unix("/run/x.sock".into()))
        );
        assert!(matches!(
            Listen::parse("127.0.0.1:8765"),
            Ok(Listen::Tcp(a)) if a.port() == 8765
        ));
        assert!(Listen::parse("localhost:8765").is_err());
        assert!(Listen::parse("unix:").is_err());
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"abcd"));
    }
}
