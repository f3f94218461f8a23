//! A client for the daemon's socket: one HTTP/1.1 connection per request (a Unix socket
//! connects in microseconds), JSON bodies, command output and files streamed.

use std::path::{Path, PathBuf};

use bytes::{Buf, Bytes, BytesMut};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::header::HeaderValue;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::V1;
use crate::types::{
    ApprovalView, AuditView, CardView, CreateSandbox, DecideBody, ErrorBody, ExecBody, ExecEvent,
    GcView, Health, RunBody, SandboxView, StatView, ToolCallBody, ToolCallCleared, Written,
};

/// Why a request to the daemon failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No daemon answers on the socket.
    #[error("cannot reach the daemon at {socket}: {source}")]
    Connect {
        socket: PathBuf,
        source: std::io::Error,
    },
    /// The connection failed mid-request.
    #[error("talking to the daemon: {0}")]
    Http(#[from] hyper::Error),
    /// The daemon refused or failed the request; `error` is its stable code.
    #[error("{detail}")]
    Api {
        status: u16,
        error: String,
        detail: String,
    },
    /// The daemon sent something this client does not understand.
    #[error("unexpected answer from the daemon: {0}")]
    Protocol(String),
    /// Reading or writing local data.
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        source: std::io::Error,
    },
}

impl ClientError {
    /// The daemon's error code, when it answered with an error.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Api { error, .. } => Some(error),
            _ => None,
        }
    }
}

type Body = BoxBody<Bytes, std::io::Error>;

/// A client of one daemon.
#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
    /// The front-end session this client acts for ([`SESSION_HEADER`] on every request).
    session: Option<HeaderValue>,
}

/// The header that names the front-end session a request belongs to (an MCP session and its
/// client): the daemon puts it on the request's audit records. A label the client gives, never
/// an identity — the uid is the socket peer's.
pub const SESSION_HEADER: &str = "x-luminaguard-session";

/// The longest session name sent.
pub const SESSION_MAX: usize = 200;

impl Client {
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self {
            socket: socket.into(),
            session: None,
        }
    }

    /// This client acting for front-end session `name` (printable ASCII kept, at most
    /// [`SESSION_MAX`] bytes).
    pub fn in_session(&self, name: &str) -> Self {
        let clean: String = name
            .chars()
            .filter(|c| c.is_ascii_graphic() || *c == ' ')
            .take(SESSION_MAX)
            .collect();
        Self {
            socket: self.socket.clone(),
            session: HeaderValue::from_str(&clean).ok(),
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Sends `req` on a new connection; the response's headers are in, its body is to come.
    async fn send(&self, mut req: Request<Body>) -> Result<Response<Incoming>, ClientError> {
        if let Some(session) = &self.session {
            req.headers_mut().insert(SESSION_HEADER, session.clone());
        }
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|source| ClientError::Connect {
                socket: self.socket.clone(),
                source,
            })?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "daemon connection");
            }
        });
        let resp = sender.send_request(req).await?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        Err(api_error(resp).await)
    }

    fn request(method: Method, path: &str, body: Body) -> Result<Request<Body>, ClientError> {
        Request::builder()
            .method(method)
            .uri(format!("http://luminaguard{path}"))
            .header(hyper::header::HOST, "luminaguard")
            .body(body)
            .map_err(|e| ClientError::Protocol(e.to_string()))
    }

    async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, ClientError> {
        let resp = self.send(json_request(method, path, body)?).await?;
        let bytes = resp.into_body().collect().await?.to_bytes();
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Protocol(e.to_string()))
    }

    pub async fn health(&self) -> Result<Health, ClientError> {
        self.json(Method::GET, &format!("{V1}/health"), None::<&()>)
            .await
    }

    pub async fn create(&self, body: &CreateSandbox) -> Result<SandboxView, ClientError> {
        self.json(Method::POST, &format!("{V1}/sandboxes"), Some(body))
            .await
    }

    pub async fn list(&self) -> Result<Vec<SandboxView>, ClientError> {
        self.json(Method::GET, &format!("{V1}/sandboxes"), None::<&()>)
            .await
    }

    pub async fn get(&self, id: &str) -> Result<SandboxView, ClientError> {
        self.json(Method::GET, &sandbox_path(id, ""), None::<&()>)
            .await
    }

    pub async fn destroy(&self, id: &str) -> Result<(), ClientError> {
        let req = Self::request(Method::DELETE, &sandbox_path(id, ""), empty())?;
        self.send(req).await?;
        Ok(())
    }

    pub async fn gc(&self) -> Result<GcView, ClientError> {
        self.json(Method::POST, &format!("{V1}/gc"), None::<&()>)
            .await
    }

    /// The sandbox's seccomp record, as `sandbox audit --json` prints it.
    pub async fn audit(&self, id: &str) -> Result<AuditView, ClientError> {
        self.json(Method::GET, &sandbox_path(id, "/audit"), None::<&()>)
            .await
    }

    /// Starts a command; its events arrive as it runs.
    pub async fn exec(&self, id: &str, body: &ExecBody) -> Result<ExecEvents, ClientError> {
        let req = json_request(Method::POST, &sandbox_path(id, "/exec"), Some(body))?;
        Ok(ExecEvents::new(self.send(req).await?.into_body()))
    }

    /// What happens to the caller's sandboxes (root: everyone's) from now on
    /// (`GET /v1/events`).
    pub async fn events(&self) -> Result<Events, ClientError> {
        let req = Self::request(Method::GET, &format!("{V1}/events"), Body::default())?;
        Ok(Events {
            body: self.send(req).await?.into_body(),
            sse: crate::sse::Sse::default(),
            done: false,
        })
    }

    /// The Diff Card of speculative sandbox `id`'s changes so far, put up for an answer.
    pub async fn review(&self, id: &str) -> Result<CardView, ClientError> {
        self.json(Method::POST, &sandbox_path(id, "/review"), None::<&()>)
            .await
    }

    /// The approvals waiting for an answer that this client may see.
    pub async fn approvals(&self) -> Result<Vec<ApprovalView>, ClientError> {
        self.json(Method::GET, &format!("{V1}/approvals"), None::<&()>)
            .await
    }

    /// Approval `id`; with `wait`, once it is decided (or expired).
    pub async fn approval(&self, id: &str, wait: bool) -> Result<ApprovalView, ClientError> {
        let q = if wait { "?wait=true" } else { "" };
        self.json(
            Method::GET,
            &format!("{V1}/approvals/{}{q}", path_escape(id)),
            None::<&()>,
        )
        .await
    }

    /// Answers approval `id`.
    pub async fn decide(&self, id: &str, body: &DecideBody) -> Result<ApprovalView, ClientError> {
        self.json(
            Method::POST,
            &format!("{V1}/approvals/{}", path_escape(id)),
            Some(body),
        )
        .await
    }

    /// A disposable sandbox for one command.
    pub async fn run(&self, body: &RunBody) -> Result<ExecEvents, ClientError> {
        let req = json_request(Method::POST, &format!("{V1}/run"), Some(body))?;
        Ok(ExecEvents::new(self.send(req).await?.into_body()))
    }

    /// Streams `src` to the stdin of a command started with `stdin_stream`; its stdin ends
    /// when `src` does.
    pub async fn exec_stdin<R: AsyncRead + Send + Sync + 'static>(
        &self,
        id: &str,
        exec: &str,
        src: R,
    ) -> Result<(), ClientError> {
        let path = sandbox_path(id, &format!("/execs/{exec}/stdin"));
        let req = Self::request(Method::PUT, &path, reader_body(src))?;
        self.send(req).await?;
        Ok(())
    }

    /// What is at `path` in sandbox `id` (symbolic links followed with `follow`).
    pub async fn stat(&self, id: &str, path: &str, follow: bool) -> Result<StatView, ClientError> {
        let uri = sandbox_path(
            id,
            &format!("/stat?path={}&follow={follow}", query_escape(path)),
        );
        self.json(Method::GET, &uri, None::<&()>).await
    }

    /// Streams file `path` of sandbox `id` into `out`; returns the byte count.
    pub async fn read_file<W: AsyncWrite + Unpin>(
        &self,
        id: &str,
        path: &str,
        out: &mut W,
    ) -> Result<u64, ClientError> {
        let uri = sandbox_path(id, &format!("/files?path={}", query_escape(path)));
        let resp = self
            .send(Self::request(Method::GET, &uri, empty())?)
            .await?;
        let mut body = resp.into_body();
        let mut n = 0u64;
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame?.into_data() {
                out.write_all(&data)
                    .await
                    .map_err(|source| ClientError::Io {
                        what: "writing the file locally",
                        source,
                    })?;
                n += data.len() as u64;
            }
        }
        out.flush().await.map_err(|source| ClientError::Io {
            what: "writing the file locally",
            source,
        })?;
        Ok(n)
    }

    /// Writes file `path` of sandbox `id` from `src`, all or nothing (a new file gets mode
    /// 644).
    pub async fn write_file<R: AsyncRead + Send + Sync + 'static>(
        &self,
        id: &str,
        path: &str,
        src: R,
    ) -> Result<Written, ClientError> {
        self.write_file_mode(id, path, 0o644, src).await
    }

    /// An agent's write of `content` to `path`, judged by the policy as the write it is
    /// (`judge=true`): asked about, it returns once a person has answered.
    pub async fn put_file(
        &self,
        id: &str,
        path: &str,
        content: Vec<u8>,
    ) -> Result<Written, ClientError> {
        let uri = sandbox_path(
            id,
            &format!("/files?path={}&judge=true", query_escape(path)),
        );
        let body = Full::new(Bytes::from(content))
            .map_err(|never| match never {})
            .boxed();
        let resp = self.send(Self::request(Method::PUT, &uri, body)?).await?;
        let bytes = resp.into_body().collect().await?.to_bytes();
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// Has an MCP tool call judged before the caller forwards it to the server in sandbox
    /// `id`: cleared (after a person's approval, when asked), or refused.
    pub async fn judge_tool_call(
        &self,
        id: &str,
        body: &ToolCallBody,
    ) -> Result<ToolCallCleared, ClientError> {
        self.json(Method::POST, &sandbox_path(id, "/tool-calls"), Some(body))
            .await
    }

    /// Records what the gateway saw of a server's tools in sandbox `id` (a tool event: how a
    /// call ended, a call refused, a tool pinned or changed).
    pub async fn record_tool_event(
        &self,
        id: &str,
        event: &impl Serialize,
    ) -> Result<(), ClientError> {
        let req = json_request(Method::POST, &sandbox_path(id, "/tool-events"), Some(event))?;
        self.send(req).await?;
        Ok(())
    }

    /// A one-time login link to the daemon's web console, for this client's user.
    pub async fn console_login(&self) -> Result<crate::types::ConsoleLink, ClientError> {
        self.json(Method::POST, &format!("{V1}/console/login"), None::<&()>)
            .await
    }

    /// Records an agent task's step or end against sandbox `id`.
    pub async fn record_agent_event(
        &self,
        id: &str,
        event: &impl Serialize,
    ) -> Result<(), ClientError> {
        let req = json_request(
            Method::POST,
            &sandbox_path(id, "/agent-events"),
            Some(event),
        )?;
        self.send(req).await?;
        Ok(())
    }

    /// [`Client::write_file`] with the permission bits a new file gets.
    pub async fn write_file_mode<R: AsyncRead + Send + Sync + 'static>(
        &self,
        id: &str,
        path: &str,
        mode: u32,
        src: R,
    ) -> Result<Written, ClientError> {
        let uri = sandbox_path(
            id,
            &format!("/files?path={}&mode={:o}", query_escape(path), mode & 0o777),
        );
        let resp = self
            .send(Self::request(Method::PUT, &uri, reader_body(src))?)
            .await?;
        let bytes = resp.into_body().collect().await?.to_bytes();
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Protocol(e.to_string()))
    }
}

fn empty() -> Body {
    Full::new(Bytes::new())
        .map_err(|never| match never {})
        .boxed()
}

fn json_request(
    method: Method,
    path: &str,
    body: Option<&impl Serialize>,
) -> Result<Request<Body>, ClientError> {
    let body = match body {
        Some(b) => Full::new(Bytes::from(
            serde_json::to_vec(b).map_err(|e| ClientError::Protocol(e.to_string()))?,
        ))
        .map_err(|never| match never {})
        .boxed(),
        None => empty(),
    };
    let mut req = Client::request(method, path, body)?;
    req.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    Ok(req)
}

/// A request body streamed from `src`.
fn reader_body<R: AsyncRead + Send + Sync + 'static>(src: R) -> Body {
    use futures_util::StreamExt;
    let frames = tokio_util::io::ReaderStream::new(src).map(|r| r.map(Frame::data));
    BodyExt::boxed(StreamBody::new(frames))
}

fn sandbox_path(id: &str, rest: &str) -> String {
    format!("{V1}/sandboxes/{}{rest}", path_escape(id))
}

/// Percent-encodes everything but unreserved characters (RFC 3986).
fn escape(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || (keep_slash && b == b'/') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn path_escape(s: &str) -> String {
    escape(s, false)
}

fn query_escape(s: &str) -> String {
    escape(s, true)
}

async fn api_error(resp: Response<Incoming>) -> ClientError {
    let status = resp.status();
    let bytes = match resp.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return ClientError::Http(e),
    };
    match serde_json::from_slice::<ErrorBody>(&bytes) {
        Ok(e) => ClientError::Api {
            status: status.as_u16(),
            error: e.error,
            detail: e.detail,
        },
        Err(_) => ClientError::Api {
            status: status.as_u16(),
            error: default_code(status).into(),
            detail: String::from_utf8_lossy(&bytes).trim().to_owned(),
        },
    }
}

fn default_code(status: StatusCode) -> &'static str {
    match status {
        StatusCode::NOT_FOUND => "not-found",
        StatusCode::CONFLICT => "conflict",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::PAYLOAD_TOO_LARGE => "too-large",
        s if s.is_client_error() => "bad-request",
        _ => "internal",
    }
}

/// One of the daemon's events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DaemonEvent {
    Happened(crate::types::EventView),
    /// The stream fell behind and lost this many events: what they said must be read anew.
    Lagged(u64),
}

/// The daemon's event stream (`GET /v1/events`).
#[derive(Debug)]
pub struct Events {
    body: Incoming,
    sse: crate::sse::Sse,
    done: bool,
}

impl Events {
    /// The next event; `Ok(None)` once the daemon has ended the stream.
    pub async fn next(&mut self) -> Result<Option<DaemonEvent>, ClientError> {
        loop {
            match self.sse.next_event() {
                Some(Ok(e)) if e.event == "lagged" => {
                    return Ok(Some(DaemonEvent::Lagged(
                        e.data.trim().parse().unwrap_or(0),
                    )));
                }
                Some(Ok(e)) => {
                    return serde_json::from_str(&e.data)
                        .map(|v| Some(DaemonEvent::Happened(v)))
                        .map_err(|err| ClientError::Protocol(format!("bad event: {err}")));
                }
                Some(Err(e)) => return Err(ClientError::Protocol(e.to_string())),
                None if self.done => return Ok(None),
                None => {}
            }
            match self.body.frame().await {
                None => self.done = true,
                Some(frame) => {
                    if let Ok(data) = frame?.into_data() {
                        self.sse.push(&data);
                    }
                }
            }
        }
    }
}

/// The events of a running command, read line by line from the response.
#[derive(Debug)]
pub struct ExecEvents {
    body: Incoming,
    buf: BytesMut,
    done: bool,
}

/// The longest event line accepted (a chunk of output, JSON-escaped, is far below this).
const MAX_LINE: usize = 4 << 20;

impl ExecEvents {
    fn new(body: Incoming) -> Self {
        Self {
            body,
            buf: BytesMut::new(),
            done: false,
        }
    }

    /// The next event; `Ok(None)` once the response has ended.
    pub async fn next(&mut self) -> Result<Option<ExecEvent>, ClientError> {
        loop {
            if let Some(nl) = self.buf.iter().position(|&b| b == b'\n') {
                let line = self.buf.split_to(nl + 1);
                let line = &line[..nl];
                if line.is_empty() {
                    continue;
                }
                return serde_json::from_slice(line)
                    .map(Some)
                    .map_err(|e| ClientError::Protocol(format!("bad event line: {e}")));
            }
            if self.done {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                return Err(ClientError::Protocol(
                    "the event stream ended inside a line".into(),
                ));
            }
            if self.buf.len() > MAX_LINE {
                return Err(ClientError::Protocol("an event line is too long".into()));
            }
            match self.body.frame().await {
                None => self.done = true,
                Some(frame) => {
                    if let Ok(mut data) = frame?.into_data() {
                        while data.has_remaining() {
                            let chunk = data.chunk();
                            self.buf.extend_from_slice(chunk);
                            let n = chunk.len();
                            data.advance(n);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_queries_are_escaped() {
        assert_eq!(path_escape("sb-1_x"), "sb-1_x");
        assert_eq!(path_escape("../x"), "..%2Fx");
        assert_eq!(query_escape("/work space/a&b=c"), "/work%20space/a%26b%3Dc");
    }
}
