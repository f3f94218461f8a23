//! Starting a task, the same for every front that runs one (the CLI, the daemon): the model's
//! client checked, the task's sandbox made through the front (named for the task on every
//! record), its transcript begun — and, whatever fails, nothing left behind.

use luminaguard_front::{Front, FrontError, Held};
use luminaguard_llm::{Provider, ToolSpec};
use luminaguard_service::CreateOptions;

use crate::client::{Client, ClientError, ModelConfig, Retry, default_base_url, key_variable};
use crate::task::Limits;
use crate::tools::{ToolLimits, Toolbox};
use crate::transcript::{Status, Store, Summary, TaskId, TranscriptError, Writer, now_ms};

/// Everything a task is started with.
#[derive(Debug, Clone)]
pub struct Launch {
    pub model: ModelConfig,
    pub retry: Retry,
    pub limits: Limits,
    pub tool_limits: ToolLimits,
    /// The task's sandbox.
    pub sandbox: CreateOptions,
    /// The task as the person gave it (its first request).
    pub title: String,
    /// Whose task it is, when the store holds several users' (the daemon's).
    pub uid: Option<u32>,
    /// MCP servers whose tools the model is also given (`--mcp-config`).
    pub mcp: Option<std::sync::Arc<luminaguard_mcp::gateway::Gateway>>,
}

/// Why a task could not start.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error(
        "{provider} needs an API key: set {variable} (or give a base URL of a server that needs none)"
    )]
    NeedsKey {
        provider: Provider,
        variable: &'static str,
    },
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("making the task's sandbox: {}", luminaguard_mcp::ops::error_text(.0))]
    Sandbox(FrontError),
    #[error("starting the task's transcript: {0}")]
    Transcript(#[from] TranscriptError),
}

impl LaunchError {
    /// The stable code an API answers with.
    pub fn code(&self) -> String {
        match self {
            Self::NeedsKey { .. } | Self::Client(_) => "invalid-spec".to_owned(),
            Self::Sandbox(e) => e.code().unwrap_or_else(|| "internal".to_owned()),
            Self::Transcript(e) => e.code().to_owned(),
        }
    }
}

/// A task ready to run: its client, sandbox, tools and transcript.
#[derive(Debug)]
pub struct Prepared {
    pub id: TaskId,
    pub client: Client,
    pub tools: Toolbox,
    pub specs: Vec<ToolSpec>,
    pub limits: Limits,
    pub writer: Writer,
    /// The front the task acts through (named for the task).
    pub front: Front,
    held: Option<Held>,
}

/// Prepares a task: nothing is made when the client's settings are wrong, and the sandbox is
/// destroyed again when the transcript cannot be begun.
pub async fn prepare(
    front: &Front,
    store: &Store,
    launch: Launch,
) -> Result<Prepared, LaunchError> {
    let provider = launch.model.provider;
    let public = launch.model.base_url.trim_end_matches('/')
        == default_base_url(provider).trim_end_matches('/');
    if launch.model.api_key.is_none() && public && provider != Provider::Ollama {
        return Err(LaunchError::NeedsKey {
            provider,
            variable: key_variable(provider),
        });
    }
    let model = launch.model.model.clone();
    let client = Client::new(launch.model, launch.retry)?;
    let id = TaskId::generate();
    // Every record made for the task names it.
    let front = front.in_session(id.as_str());
    let held = front
        .hold(launch.sandbox)
        .await
        .map_err(LaunchError::Sandbox)?;
    let summary = Summary {
        id: id.clone(),
        uid: launch.uid,
        task: launch.title,
        provider: provider.to_string(),
        model,
        sandbox: held.id().to_string(),
        status: Status::Running,
        message: String::new(),
        steps: 0,
        usage: Default::default(),
        started_ms: now_ms(),
        ended_ms: None,
        pid: std::process::id(),
    };
    let writer = match store.create(summary).await {
        Ok(w) => w,
        Err(e) => {
            let _ = front.release(held).await;
            return Err(e.into());
        }
    };
    let mut tools = Toolbox::new(front.clone(), held.id().clone(), launch.tool_limits);
    let mut specs = crate::tools::builtin();
    if let Some(gateway) = launch.mcp {
        let mcp = std::sync::Arc::new(crate::mcp::McpTools::new(gateway));
        specs.extend(mcp.specs(&front).await);
        tools = tools.with_mcp(mcp);
    }
    Ok(Prepared {
        id,
        client,
        tools,
        specs,
        limits: launch.limits,
        writer,
        front,
        held: Some(held),
    })
}

impl Prepared {
    /// Destroys the task's sandbox (and its MCP servers').
    pub async fn release(&mut self) {
        if let Some(mcp) = self.tools.mcp() {
            mcp.release(&self.front).await;
        }
        if let Some(held) = self.held.take() {
            let id = held.id().clone();
            if let Err(e) = self.front.release(held).await {
                tracing::warn!(%id, error = %e, "destroying the task's sandbox");
            }
        }
    }
}

impl Prepared {
    /// Runs the task for request `task` to its end, or until `stop` resolves (with why), its
    /// transcript and audit records written; the summary it ended with.
    pub async fn run(
        &mut self,
        observer: &mut dyn crate::task::Observer,
        task: &str,
        stop: impl std::future::Future<Output = String>,
    ) -> Result<Summary, TranscriptError> {
        let mut agent = crate::task::Agent::start(
            &self.client,
            &self.tools,
            &self.specs,
            self.limits,
            &mut self.writer,
            observer,
        )
        .await?;
        let reply = tokio::select! {
            r = agent.say(task) => r?,
            why = stop => crate::task::Reply::Stopped(Status::Interrupted, why),
        };
        let (status, message) = match reply {
            crate::task::Reply::Answered(text) => (Status::Done, text),
            crate::task::Reply::Stopped(status, message) => (status, message),
        };
        agent.finish(status, message).await
    }
}
