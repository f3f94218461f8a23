//! One third-party MCP server, running in a sandbox of its own: its command is an exec in the
//! sandbox with a streamed stdin, and the gateway speaks MCP to it as a client (rmcp) over that
//! exec's stdout and stdin — the same way in-process and through the daemon, over vsock for a
//! microVM. The server's stderr is kept (its tail) to say why it failed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use luminaguard_core::SandboxId;
use luminaguard_front::{Execution, Front, FrontError, Held, StdinWriter};
use luminaguard_service::{CreateOptions, ExecOptions, ExecOutput, ExitReport};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ClientCapabilities, ClientConfig,
    GetPromptRequestParams, GetPromptResponse, GetPromptResult, Implementation, Prompt,
    ReadResourceRequestParams, ReadResourceResponse, ReadResourceResult, Resource,
    ResourceTemplate, ServerCapabilities, Tool,
};
use rmcp::service::{NotificationContext, RunningService};
use rmcp::{ClientHandler, RoleClient, ServiceExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;

use crate::approve::Shared;
use crate::bounded::Bounded;

/// How long a server's command may run: as long as its sandbox (the gateway's session) lives.
const SERVER_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);
/// Bytes of a server's stderr kept to explain a failure (its last half, its first half).
const STDERR_KEPT: usize = 8 << 10;
/// How much of the server's output may wait for the MCP client in the gateway.
const PIPE: usize = 256 << 10;

/// How a server is run: what its configuration resolves to.
#[derive(Clone)]
pub struct ServerSpec {
    /// Its name in the configuration (the `SERVER` of `SERVER__TOOL`).
    pub name: String,
    pub command: Vec<String>,
    /// Its environment, secrets resolved: given to the exec only, never logged.
    pub env: Vec<(String, String)>,
    pub cwd: Option<String>,
    /// Its sandbox.
    pub create: CreateOptions,
    /// How long a call may wait for its result.
    pub call_timeout: Duration,
    /// How long the server may take to start and answer `initialize` and `tools/list`.
    pub start_timeout: Duration,
}

impl std::fmt::Debug for ServerSpec {
    /// Without the environment's values (secrets).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerSpec")
            .field("name", &self.name)
            .field("command", &self.command)
            .field(
                "env",
                &self.env.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
            )
            .field("cwd", &self.cwd)
            .finish_non_exhaustive()
    }
}

/// Why a server could not be started or called. The texts may quote the server's stderr: the
/// gateway redacts secrets from them before anyone sees them.
#[derive(Debug, thiserror::Error)]
pub enum DownstreamError {
    /// Its sandbox could not be made, or its command could not start there.
    #[error("starting MCP server {server}: {source}")]
    Sandbox {
        server: String,
        #[source]
        source: FrontError,
    },
    /// It started but did not speak MCP (or exited first).
    #[error("MCP server {server} did not start: {reason}{}", stderr_note(.stderr))]
    Handshake {
        server: String,
        reason: String,
        stderr: String,
    },
    /// It ended while a call ran, or before.
    #[error("MCP server {server} {ended}{}", stderr_note(.stderr))]
    Gone {
        server: String,
        ended: String,
        stderr: String,
    },
    /// No result within the call timeout (the call is cancelled at the server).
    #[error("MCP server {server} gave no result for {tool} within {} s (the call was cancelled)", .after.as_secs())]
    Timeout {
        server: String,
        tool: String,
        after: Duration,
    },
    /// The server answered with an MCP error.
    #[error("MCP server {server}: {message}")]
    Remote { server: String, message: String },
    /// The request could not be made of what the scanner left of its arguments.
    #[error("MCP server {server}: the request could not be made: {reason}")]
    Request { server: String, reason: String },
}

fn stderr_note(stderr: &str) -> String {
    let s = stderr.trim();
    if s.is_empty() {
        String::new()
    } else {
        format!("; its stderr ends with:\n{s}")
    }
}

/// The gateway as the server's MCP client: it notes a changed tool list (listed again before
/// the next use) and answers nothing else the server asks (no sampling, no elicitation, no
/// roots: a server in a sandbox gets no way back to the host's model or person).
#[derive(Debug, Clone, Default)]
struct Client {
    tools_changed: Arc<AtomicBool>,
}

impl ClientHandler for Client {
    fn on_tool_list_changed(
        &self,
        _context: NotificationContext<RoleClient>,
    ) -> impl Future<Output = ()> + Send + '_ {
        self.tools_changed.store(true, Ordering::Relaxed);
        std::future::ready(())
    }

    fn get_info(&self) -> ClientConfig {
        ClientConfig::new(
            ClientCapabilities::default(),
            Implementation::new("luminaguard-gateway", env!("CARGO_PKG_VERSION")),
        )
    }
}

/// A server running in its sandbox.
pub struct Downstream {
    pub name: String,
    /// Its sandbox, until released.
    held: Mutex<Option<Held>>,
    id: SandboxId,
    client: RunningService<RoleClient, Client>,
    tools_changed: Arc<AtomicBool>,
    /// Why it ended, once it has.
    ended: Arc<Mutex<Option<String>>>,
    stderr: Arc<Mutex<Bounded>>,
    started: Instant,
    pumps: [JoinHandle<()>; 2],
}

impl std::fmt::Debug for Downstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Downstream")
            .field("name", &self.name)
            .field("sandbox", &self.id)
            .finish_non_exhaustive()
    }
}

impl Drop for Downstream {
    fn drop(&mut self) {
        for p in &self.pumps {
            p.abort();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Downstream {
    /// Starts `spec`'s server in a sandbox of its own (tracked in `shared`, so that what a
    /// person is asked about it reaches the session) and says hello to it.
    pub async fn start(
        front: &Front,
        spec: &ServerSpec,
        shared: &Shared,
    ) -> Result<Self, DownstreamError> {
        let mut create = spec.create.clone();
        let id = SandboxId::generate();
        create.id = Some(id.clone());
        shared.track(&id);
        let held = match front.hold(create).await {
            Ok(held) => held,
            Err(source) => {
                shared.untrack(&id);
                return Err(DownstreamError::Sandbox {
                    server: spec.name.clone(),
                    source,
                });
            }
        };
        // Whatever fails from here, the sandbox goes with it (one place).
        match Self::connect(front, spec, id.clone()).await {
            Ok(d) => {
                *lock(&d.held) = Some(held);
                Ok(d)
            }
            Err(e) => {
                let _ = front.release(held).await;
                shared.untrack(&id);
                Err(e)
            }
        }
    }

    /// Starts the server's command in sandbox `id` and says hello to it (its sandbox is the
    /// caller's to keep or release).
    async fn connect(
        front: &Front,
        spec: &ServerSpec,
        id: SandboxId,
    ) -> Result<Self, DownstreamError> {
        let sandbox = |source| DownstreamError::Sandbox {
            server: spec.name.clone(),
            source,
        };
        let opts = ExecOptions {
            argv: spec.command.clone(),
            env: spec.env.clone(),
            cwd: spec.cwd.clone(),
            timeout: Some(SERVER_LIFETIME),
            stdin: true,
        };
        let mut exec = front.exec(&id, opts).await.map_err(sandbox)?;
        let stdin = exec.take_stdin().ok_or_else(|| {
            sandbox(FrontError::Protocol(
                "the server's command has no stdin to write to".into(),
            ))
        })?;
        let (client_read, server_out) = tokio::io::duplex(PIPE);
        let (client_write, server_in) = tokio::io::duplex(PIPE);
        let ended = Arc::new(Mutex::new(None));
        let stderr = Arc::new(Mutex::new(Bounded::new(STDERR_KEPT)));
        let pumps = [
            tokio::spawn(pump_out(
                spec.name.clone(),
                exec,
                server_out,
                Arc::clone(&ended),
                Arc::clone(&stderr),
            )),
            tokio::spawn(pump_in(server_in, stdin)),
        ];
        let handler = Client::default();
        let tools_changed = Arc::clone(&handler.tools_changed);
        let hello = tokio::time::timeout(
            spec.start_timeout,
            handler.serve((client_read, client_write)),
        )
        .await;
        let client = match hello {
            Ok(Ok(client)) => client,
            failed => {
                for p in &pumps {
                    p.abort();
                }
                let reason = match failed {
                    Ok(Err(e)) => lock(&ended).clone().unwrap_or_else(|| e.to_string()),
                    _ => format!(
                        "no answer to `initialize` within {} s",
                        spec.start_timeout.as_secs()
                    ),
                };
                return Err(DownstreamError::Handshake {
                    server: spec.name.clone(),
                    reason,
                    stderr: lock(&stderr).text(),
                });
            }
        };
        if let Some(info) = client.peer_info() {
            let (implementation, version) = info
                .server_info
                .as_ref()
                .map(|i| (i.name.clone(), i.version.clone()))
                .unwrap_or_default();
            tracing::info!(
                server = %spec.name,
                sandbox = %id,
                %implementation,
                %version,
                protocol = %info.protocol_version,
                "MCP server started"
            );
        }
        Ok(Self {
            name: spec.name.clone(),
            held: Mutex::new(None),
            id,
            client,
            tools_changed,
            ended,
            stderr,
            started: Instant::now(),
            pumps,
        })
    }

    /// The sandbox it runs in.
    pub fn sandbox(&self) -> &SandboxId {
        &self.id
    }

    /// Its sandbox, for the caller to release (once: `None` after).
    pub fn take_held(&self) -> Option<Held> {
        lock(&self.held).take()
    }

    /// How long it has been up.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Why it ended, if it has (its command exited, or its output stopped).
    pub fn ended(&self) -> Option<String> {
        lock(&self.ended).clone().or_else(|| {
            self.client
                .is_closed()
                .then(|| "closed its MCP stream".to_owned())
        })
    }

    /// Whether the server said its tools changed since they were last listed.
    pub fn tools_changed(&self) -> bool {
        self.tools_changed.load(Ordering::Relaxed)
    }

    /// Has its tools listed again before their next use.
    pub fn mark_tools_changed(&self) {
        self.tools_changed.store(true, Ordering::Relaxed);
    }

    /// Its tools, as it lists them now.
    pub async fn list_tools(&self, timeout: Duration) -> Result<Vec<Tool>, DownstreamError> {
        self.tools_changed.store(false, Ordering::Relaxed);
        self.within("tools/list", timeout, self.client.peer().list_all_tools())
            .await
    }

    /// What it declared it serves (`initialize`).
    fn declares(&self, what: impl Fn(&ServerCapabilities) -> bool) -> bool {
        self.client
            .peer_info()
            .is_some_and(|i| what(&i.capabilities))
    }

    /// Its prompts (none when it did not declare the prompts capability).
    pub async fn list_prompts(&self, timeout: Duration) -> Result<Vec<Prompt>, DownstreamError> {
        if !self.declares(|c| c.prompts.is_some()) {
            return Ok(Vec::new());
        }
        self.within(
            "prompts/list",
            timeout,
            self.client.peer().list_all_prompts(),
        )
        .await
    }

    /// Its resources (none when it did not declare the resources capability).
    pub async fn list_resources(
        &self,
        timeout: Duration,
    ) -> Result<Vec<Resource>, DownstreamError> {
        if !self.declares(|c| c.resources.is_some()) {
            return Ok(Vec::new());
        }
        self.within(
            "resources/list",
            timeout,
            self.client.peer().list_all_resources(),
        )
        .await
    }

    /// Its resource templates (none when it did not declare the resources capability).
    pub async fn list_resource_templates(
        &self,
        timeout: Duration,
    ) -> Result<Vec<ResourceTemplate>, DownstreamError> {
        if !self.declares(|c| c.resources.is_some()) {
            return Ok(Vec::new());
        }
        self.within(
            "resources/templates/list",
            timeout,
            self.client.peer().list_all_resource_templates(),
        )
        .await
    }

    /// Gets prompt `params.name` (the server's own name for it).
    pub async fn get_prompt(
        &self,
        params: GetPromptRequestParams,
        timeout: Duration,
    ) -> Result<GetPromptResult, DownstreamError> {
        let what = format!("prompts/get {}", params.name);
        match self
            .within(&what, timeout, self.client.peer().get_prompt_once(params))
            .await?
        {
            GetPromptResponse::Complete(result) => Ok(result),
            _ => Err(self.unforwarded(&what)),
        }
    }

    /// Reads resource `params.uri`.
    pub async fn read_resource(
        &self,
        params: ReadResourceRequestParams,
        timeout: Duration,
    ) -> Result<ReadResourceResult, DownstreamError> {
        let what = format!("resources/read {}", params.uri);
        match self
            .within(
                &what,
                timeout,
                self.client.peer().read_resource_once(params),
            )
            .await?
        {
            ReadResourceResponse::Complete(result) => Ok(result),
            _ => Err(self.unforwarded(&what)),
        }
    }

    /// Calls tool `params.name` (the server's own name for it).
    pub async fn call(
        &self,
        params: CallToolRequestParams,
        timeout: Duration,
    ) -> Result<CallToolResult, DownstreamError> {
        let tool = params.name.to_string();
        match self
            .within(&tool, timeout, self.client.peer().call_tool_once(params))
            .await?
        {
            CallToolResponse::Complete(result) => Ok(result),
            _ => Err(self.unforwarded(&tool)),
        }
    }

    /// Request `what`'s answer within `timeout` (a request that takes longer is cancelled at
    /// the server: the future that sent it is dropped), its failure mapped.
    async fn within<T>(
        &self,
        what: &str,
        timeout: Duration,
        request: impl Future<Output = Result<T, rmcp::ServiceError>>,
    ) -> Result<T, DownstreamError> {
        match tokio::time::timeout(timeout, request).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(e)) => Err(self.failed(e)),
            Err(_) => Err(DownstreamError::Timeout {
                server: self.name.clone(),
                tool: what.to_owned(),
                after: timeout,
            }),
        }
    }

    /// A request that could not be made of what the scanner left of its arguments.
    pub fn unmade(&self, reason: impl std::fmt::Display) -> DownstreamError {
        DownstreamError::Request {
            server: self.name.clone(),
            reason: reason.to_string(),
        }
    }

    /// An answer the gateway does not forward (an input request, a task).
    fn unforwarded(&self, what: &str) -> DownstreamError {
        DownstreamError::Remote {
            server: self.name.clone(),
            message: format!(
                "{what} answered with an input request or a task, which the gateway does not \
                 forward"
            ),
        }
    }

    /// A failed request as the server's end (when it has ended) or its error.
    fn failed(&self, e: rmcp::ServiceError) -> DownstreamError {
        if let rmcp::ServiceError::McpError(data) = &e {
            return DownstreamError::Remote {
                server: self.name.clone(),
                message: data.message.to_string(),
            };
        }
        match self.ended() {
            Some(ended) => DownstreamError::Gone {
                server: self.name.clone(),
                ended,
                stderr: lock(&self.stderr).text(),
            },
            None => DownstreamError::Remote {
                server: self.name.clone(),
                message: e.to_string(),
            },
        }
    }

    /// Says goodbye: the MCP stream is closed, the command killed with its sandbox (by the
    /// caller's release of [`Downstream::take_held`]).
    pub async fn stop(&self) {
        self.client.cancellation_token().cancel();
        for p in &self.pumps {
            p.abort();
        }
    }
}

/// The server's output into the MCP client (stdout) and the kept tail (stderr), until its
/// command exits; then its end, said.
async fn pump_out(
    name: String,
    mut exec: Execution,
    mut to_client: tokio::io::DuplexStream,
    ended: Arc<Mutex<Option<String>>>,
    stderr: Arc<Mutex<Bounded>>,
) {
    let why = loop {
        match exec.next().await {
            Ok(Some(ExecOutput::Started { .. })) => {}
            Ok(Some(ExecOutput::Stdout(b))) => {
                if to_client.write_all(&b).await.is_err() {
                    // The client is gone: the command goes with `exec`.
                    break "was stopped".to_owned();
                }
            }
            Ok(Some(ExecOutput::Stderr(b))) => {
                tracing::debug!(server = %name, bytes = b.len(), "stderr");
                lock(&stderr).push(&b);
            }
            Ok(Some(ExecOutput::Exit(report))) => break exited(&report),
            Ok(None) => break "ended its output without an exit status".to_owned(),
            Err(e) => break format!("was lost: {e}"),
        }
    };
    tracing::info!(server = %name, ended = %why, "MCP server ended");
    *lock(&ended) = Some(why);
    let _ = to_client.shutdown().await;
}

/// The MCP client's messages into the server's stdin.
async fn pump_in(mut from_client: tokio::io::DuplexStream, mut stdin: StdinWriter) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match from_client.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if stdin.write(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
    let _ = stdin.close().await;
}

/// How a server's command ended, said.
fn exited(r: &ExitReport) -> String {
    let mut s = match (r.code, r.signal) {
        (Some(c), _) => format!("exited with code {c}"),
        (None, Some(sig)) => format!("was killed by signal {sig}"),
        (None, None) => "ended".to_owned(),
    };
    if r.oom_killed {
        s.push_str(" (out of memory: the sandbox's memory limit)");
    }
    if let Some(e) = &r.error {
        s.push_str(&format!(" ({e})"));
    }
    s
}
