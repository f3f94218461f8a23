//! The daemon's agent tasks: [`Host`] is the [`AgentHost`] the binary gives the daemon. A task
//! runs in the daemon on after the request that started it, through a [`Front`] on the
//! daemon's own service acting for the caller — so its sandbox is the caller's, judged by the
//! daemon's policy, its questions in the daemon's approvals. Its transcript is in the daemon's
//! state directory, marked with the caller's uid: another user's task is not found.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode;
use bytes::Bytes;
use luminaguard_api::types::{AgentTaskBody, AgentTaskDetail, AgentTaskView};
use luminaguard_daemon::agent_tasks::{AgentHost, EntryStream, HostFuture};
use luminaguard_daemon::error::ApiError;
use luminaguard_front::Front;
use luminaguard_llm::Provider;
use luminaguard_service::{Caller, CreateOptions, Service};

use crate::client::{ApiKey, ModelConfig, Retry, default_base_url};
use crate::launch::{Launch, LaunchError, prepare};
use crate::task::{Limits, Observer};
use crate::tools::ToolLimits;
use crate::transcript::{Entry, Store, Summary, TaskId, TranscriptError};

/// The daemon's agent tasks.
#[derive(Debug)]
pub struct Host {
    store: Store,
    running: Mutex<HashMap<TaskId, Arc<Live>>>,
}

/// A running task as its watchers see it.
#[derive(Debug)]
struct Live {
    /// Its entries so far (as JSON), and whether it has ended.
    state: Mutex<(Vec<serde_json::Value>, bool)>,
    changed: tokio::sync::watch::Sender<u64>,
    cancel: tokio::sync::Notify,
}

impl Live {
    fn push(&self, entry: Option<serde_json::Value>, ended: bool) {
        {
            let mut s = lock(&self.state);
            s.0.extend(entry);
            s.1 |= ended;
        }
        self.changed.send_modify(|n| *n += 1);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Feeds a running task's entries to its watchers.
struct Feed(Arc<Live>);

impl Observer for Feed {
    fn text(&mut self, _: &str) {}

    fn entry(&mut self, entry: &Entry) {
        self.0.push(serde_json::to_value(entry).ok(), false);
    }
}

fn api(e: TranscriptError) -> ApiError {
    let status = match e.code() {
        "not-found" => StatusCode::NOT_FOUND,
        "invalid-spec" => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let code = match e.code() {
        "not-found" => "not-found",
        "invalid-spec" => "bad-request",
        _ => "internal",
    };
    ApiError::new(status, code, e.to_string())
}

fn launch_error(e: LaunchError) -> ApiError {
    let code = e.code();
    let (status, code) = match code.as_str() {
        "forbidden" => (StatusCode::FORBIDDEN, "forbidden"),
        "not-found" => (StatusCode::NOT_FOUND, "not-found"),
        "invalid-spec" => (StatusCode::UNPROCESSABLE_ENTITY, "invalid-spec"),
        "too-large" => (StatusCode::PAYLOAD_TOO_LARGE, "too-large"),
        "host-unsupported" => (StatusCode::NOT_IMPLEMENTED, "host-unsupported"),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
    };
    ApiError::new(status, code, e.to_string())
}

/// A task as the API shows it.
pub fn view(s: &Summary) -> AgentTaskView {
    AgentTaskView {
        id: s.id.to_string(),
        user: s.uid,
        status: s.status.as_str().to_owned(),
        task: s.task.clone(),
        provider: s.provider.clone(),
        model: s.model.clone(),
        sandbox: s.sandbox.clone(),
        steps: s.steps,
        input_tokens: s.usage.input_tokens,
        output_tokens: s.usage.output_tokens,
        started_unix_ms: s.started_ms,
        ended_unix_ms: s.ended_ms,
        message: s.message.clone(),
    }
}

fn provider(name: &str) -> Result<Provider, ApiError> {
    match name {
        "openai" => Ok(Provider::OpenAi),
        "anthropic" => Ok(Provider::Anthropic),
        "ollama" => Ok(Provider::Ollama),
        other => Err(ApiError::bad_request(format!(
            "provider {other:?}: openai, anthropic or ollama"
        ))),
    }
}

impl Host {
    /// Tasks kept in `store`.
    pub fn new(store: Store) -> Self {
        Self {
            store,
            running: Mutex::default(),
        }
    }

    /// Task `id`'s summary, if `caller` may see it.
    async fn summary(&self, caller: &Caller, id: &str) -> Result<Summary, ApiError> {
        let id = TaskId::try_from(id.to_owned()).map_err(api)?;
        let summary = self.store.summary(&id).await.map_err(api)?;
        if !caller.is_root() && summary.uid != Some(caller.uid) {
            return Err(api(TranscriptError::NotFound(id)));
        }
        Ok(summary)
    }

    fn live(&self, id: &TaskId) -> Option<Arc<Live>> {
        lock(&self.running).get(id).cloned()
    }

    fn launch(
        caller: &Caller,
        body: &AgentTaskBody,
        sandbox: CreateOptions,
    ) -> Result<Launch, ApiError> {
        let provider = provider(&body.provider)?;
        if body.task.trim().is_empty() || body.model.trim().is_empty() {
            return Err(ApiError::bad_request("a task and a model are required"));
        }
        let defaults = Limits::default();
        Ok(Launch {
            model: ModelConfig {
                provider,
                model: body.model.clone(),
                base_url: body
                    .base_url
                    .clone()
                    .unwrap_or_else(|| default_base_url(provider).to_owned()),
                api_key: body.api_key.as_deref().and_then(ApiKey::new),
                max_tokens: body.max_output_tokens.unwrap_or(4096),
            },
            retry: Retry::default(),
            limits: Limits {
                max_steps: body.max_steps.unwrap_or(defaults.max_steps),
                max_tokens: body.max_tokens.unwrap_or(defaults.max_tokens),
                wall: body.wall_time.unwrap_or(defaults.wall),
            },
            tool_limits: ToolLimits::default(),
            sandbox,
            title: body.task.clone(),
            uid: Some(caller.uid),
            mcp: None,
        })
    }
}

impl AgentHost for Host {
    fn start<'a>(
        &'a self,
        service: Service,
        caller: Caller,
        body: AgentTaskBody,
        sandbox: CreateOptions,
    ) -> HostFuture<'a, AgentTaskView> {
        Box::pin(async move {
            let launch = Self::launch(&caller, &body, sandbox)?;
            let front = Front::Local(Box::new(service), caller.clone());
            let mut prepared = prepare(&front, &self.store, launch)
                .await
                .map_err(launch_error)?;
            let summary = prepared.writer.summary().clone();
            let (changed, _) = tokio::sync::watch::channel(0);
            let live = Arc::new(Live {
                state: Mutex::default(),
                changed,
                cancel: tokio::sync::Notify::new(),
            });
            self.prune();
            lock(&self.running).insert(summary.id.clone(), Arc::clone(&live));
            let task = body.task;
            let id = summary.id.clone();
            let running = Arc::clone(&live);
            tokio::spawn(async move {
                let mut feed = Feed(Arc::clone(&running));
                let stop = async {
                    running.cancel.notified().await;
                    "cancelled through the API".to_owned()
                };
                if let Err(e) = prepared.run(&mut feed, &task, stop).await {
                    tracing::warn!(%id, error = %e, "an agent task's transcript failed");
                }
                prepared.release().await;
                running.push(None, true);
            });
            Ok(view(&summary))
        })
    }

    fn list<'a>(&'a self, caller: &'a Caller) -> HostFuture<'a, Vec<AgentTaskView>> {
        Box::pin(async move {
            let all = self.store.list().await.map_err(api)?;
            Ok(all
                .iter()
                .filter(|s| caller.is_root() || s.uid == Some(caller.uid))
                .map(view)
                .collect())
        })
    }

    fn get<'a>(&'a self, caller: &'a Caller, id: &'a str) -> HostFuture<'a, AgentTaskDetail> {
        Box::pin(async move {
            let summary = self.summary(caller, id).await?;
            let entries = self.store.entries(&summary.id).await.map_err(api)?;
            Ok(AgentTaskDetail {
                task: view(&summary),
                entries: entries
                    .iter()
                    .filter_map(|e| serde_json::to_value(e).ok())
                    .collect(),
            })
        })
    }

    fn events<'a>(&'a self, caller: &'a Caller, id: &'a str) -> HostFuture<'a, EntryStream> {
        Box::pin(async move {
            let summary = self.summary(caller, id).await?;
            let Some(live) = self.live(&summary.id) else {
                // Ended: its transcript, whole.
                let entries = self.store.entries(&summary.id).await.map_err(api)?;
                let body = lines(entries.iter().filter_map(|e| serde_json::to_value(e).ok()));
                let once: EntryStream = Box::pin(futures_util::stream::iter(
                    (!body.is_empty()).then_some(body),
                ));
                return Ok(once);
            };
            let rx = live.changed.subscribe();
            let stream = futures_util::stream::unfold(
                (live, 0usize, rx, false),
                |(live, sent, mut rx, over)| async move {
                    if over {
                        return None;
                    }
                    loop {
                        let (batch, ended) = {
                            let s = lock(&live.state);
                            (s.0[sent.min(s.0.len())..].to_vec(), s.1)
                        };
                        if !batch.is_empty() {
                            let n = sent + batch.len();
                            return Some((lines(batch), (live, n, rx, ended)));
                        }
                        if ended || rx.changed().await.is_err() {
                            return None;
                        }
                    }
                },
            );
            let stream: EntryStream = Box::pin(stream);
            Ok(stream)
        })
    }

    fn cancel<'a>(&'a self, caller: &'a Caller, id: &'a str) -> HostFuture<'a, ()> {
        Box::pin(async move {
            let summary = self.summary(caller, id).await?;
            let live = self.live(&summary.id).filter(|l| !lock(&l.state).1);
            let Some(live) = live else {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "conflict",
                    format!("task {id} has ended ({})", summary.status.as_str()),
                ));
            };
            live.cancel.notify_one();
            // Answered once it has ended (its sandbox destroyed), within reason.
            let mut rx = live.changed.subscribe();
            let ended = async {
                while !lock(&live.state).1 {
                    if rx.changed().await.is_err() {
                        break;
                    }
                }
            };
            let _ = tokio::time::timeout(Duration::from_secs(30), ended).await;
            Ok(())
        })
    }
}

impl Host {
    /// Forgets tasks that have ended (their transcripts stay in the store).
    fn prune(&self) {
        lock(&self.running).retain(|_, live| !lock(&live.state).1);
    }
}

/// NDJSON lines.
fn lines(values: impl IntoIterator<Item = serde_json::Value>) -> Bytes {
    let mut out = Vec::new();
    for v in values {
        if serde_json::to_writer(&mut out, &v).is_ok() {
            out.push(b'\n');
        }
    }
    Bytes::from(out)
}
