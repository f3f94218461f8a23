//! The session user's agent tasks (root: everyone's), as the daemon's `GET /v1/agent/tasks`
//! lists them for the same caller, each with its transcript; and cancelling a running one as
//! `DELETE /v1/agent/tasks/{id}` does. The transcript is shown as written: the model's words
//! and the tools' output are text in the page (escaped), never markup.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Form, Path, Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use futures_util::StreamExt;
use luminaguard_agent_loop::Entry;
use luminaguard_api::types::AgentTaskView;
use luminaguard_daemon::agent_tasks::AgentHost;
use luminaguard_daemon::error::ApiError;
use serde::Deserialize;

use super::figures::duration;
use super::login::CsrfForm;
use super::{Authed, SESSION_RECHECK, render};
use crate::Console;

/// A tool call's arguments are shown up to this many characters.
const ARGS_SHOWN: usize = 600;

/// One task as a row of the list and the head of its page.
struct Task {
    id: String,
    user: String,
    status: String,
    running: bool,
    task: String,
    model: String,
    sandbox: String,
    steps: u32,
    tokens: u64,
    started: String,
    took: String,
    message: String,
}

impl Task {
    fn new(v: AgentTaskView) -> Self {
        let started = std::time::UNIX_EPOCH + std::time::Duration::from_millis(v.started_unix_ms);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let end = v.ended_unix_ms.unwrap_or(now);
        Self {
            running: v.status == "running",
            user: v.user.map_or_else(String::new, |u| u.to_string()),
            status: v.status,
            task: v.task,
            model: format!("{} ({})", v.model, v.provider),
            sandbox: v.sandbox,
            steps: v.steps,
            tokens: v.input_tokens + v.output_tokens,
            started: humantime::format_rfc3339_seconds(started).to_string(),
            took: duration(end.saturating_sub(v.started_unix_ms)),
            message: v.message,
            id: v.id,
        }
    }
}

/// One entry of a transcript, as the page shows it.
struct Block {
    /// A CSS class: `user`, `model`, `tool`, `refused`, `note`, `end`.
    class: &'static str,
    title: String,
    text: String,
    /// A turn's tool calls: name, then the arguments (compact JSON, cut).
    calls: Vec<(String, String)>,
}

impl Block {
    /// A transcript line as written; one of another version is shown as it is, not dropped.
    fn of(v: serde_json::Value) -> Self {
        match serde_json::from_value::<Entry>(v.clone()) {
            Ok(e) => Block::new(e),
            Err(_) => Block {
                class: "note",
                title: "Entry".into(),
                text: v.to_string(),
                calls: Vec::new(),
            },
        }
    }

    fn new(e: Entry) -> Self {
        let block = |class, title: String, text: String| Block {
            class,
            title,
            text,
            calls: Vec::new(),
        };
        match e {
            Entry::Started {
                task,
                sandbox,
                tools,
                ..
            } => block(
                "user",
                format!("Task · sandbox {sandbox} · tools {}", tools.join(", ")),
                task,
            ),
            Entry::User { text } => block("user", "You".into(), text),
            Entry::Turn {
                step,
                text,
                tool_calls,
                usage,
                duration_ms,
                ..
            } => Block {
                class: "model",
                title: format!(
                    "Step {step} · {} tokens · {}",
                    usage.input_tokens + usage.output_tokens,
                    duration(duration_ms)
                ),
                text,
                calls: tool_calls
                    .into_iter()
                    .map(|c| {
                        let mut args = c.arguments.to_string();
                        if args.chars().count() > ARGS_SHOWN {
                            args = args.chars().take(ARGS_SHOWN).collect::<String>() + "…";
                        }
                        (c.name, args)
                    })
                    .collect(),
            },
            Entry::ToolResult {
                tool,
                decision,
                is_error,
                content,
                approval,
                asked,
                duration_ms,
                ..
            } => {
                let how = luminaguard_agent_loop::transcript::how_it_went(
                    decision,
                    approval.as_deref(),
                    &asked,
                );
                let class =
                    if decision == luminaguard_agent_loop::tools::Decision::Allowed && !is_error {
                        "tool"
                    } else {
                        "refused"
                    };
                block(class, format!("{tool}: {how} · {duration_ms} ms"), content)
            }
            Entry::Retry {
                attempt,
                wait_ms,
                code,
                message,
                ..
            } => block(
                "note",
                format!("Retry {attempt} after {wait_ms} ms ({code})"),
                message,
            ),
            Entry::Finished {
                status,
                message,
                steps,
                usage,
                duration_ms,
            } => block(
                "end",
                format!(
                    "Finished: {} · {steps} steps · {} tokens · {}",
                    status.as_str(),
                    usage.input_tokens + usage.output_tokens,
                    duration(duration_ms)
                ),
                message,
            ),
        }
    }
}

#[derive(Template)]
#[template(path = "tasks.html")]
struct TasksPage {
    csrf: String,
    /// Whether this daemon runs agent tasks at all.
    hosted: bool,
    tasks: Vec<Task>,
}

/// One transcript entry alone: what a running task's live stream sends.
#[derive(Template)]
#[template(path = "entry.html")]
struct EntryFragment {
    b: Block,
}

#[derive(Template)]
#[template(path = "task.html")]
struct TaskPage {
    csrf: String,
    t: Task,
    blocks: Vec<Block>,
}

/// The daemon's answer as a page's: its status, its code and words.
fn failed(e: ApiError) -> Response {
    (e.status, format!("{}: {}", e.code, e.detail)).into_response()
}

fn host(console: &Console) -> Result<&dyn AgentHost, ApiError> {
    console.agents.as_deref().ok_or_else(|| {
        ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            "host-unsupported",
            "this daemon runs no agent tasks",
        )
    })
}

pub(crate) async fn list(State(console): State<Arc<Console>>, who: Authed) -> Response {
    let Some(host) = console.agents.as_deref() else {
        return render(&TasksPage {
            csrf: who.session.csrf,
            hosted: false,
            tasks: Vec::new(),
        });
    };
    match host.list(&who.caller()).await {
        Ok(v) => render(&TasksPage {
            csrf: who.session.csrf,
            hosted: true,
            tasks: v.into_iter().map(Task::new).collect(),
        }),
        Err(e) => failed(e),
    }
}

pub(crate) async fn show(
    State(console): State<Arc<Console>>,
    who: Authed,
    Path(id): Path<String>,
) -> Response {
    let host = match host(&console) {
        Ok(h) => h,
        Err(e) => return failed(e),
    };
    let d = match host.get(&who.caller(), &id).await {
        Ok(d) => d,
        Err(e) => return failed(e),
    };
    let blocks = d.entries.into_iter().map(Block::of).collect();
    render(&TaskPage {
        csrf: who.session.csrf,
        t: Task::new(d.task),
        blocks,
    })
}

#[derive(Deserialize)]
pub(crate) struct After {
    /// Entries the page has already (they are not sent again).
    #[serde(default)]
    after: usize,
}

/// A task's transcript as it is written, as server-sent events: `entry` (an entry's HTML, as
/// the page renders it) for each after the first `after`, then `end` when the task has
/// ended (the page reloads for its final facts). The stream also ends within
/// [`SESSION_RECHECK`] of the session's end.
pub(crate) async fn events(
    State(console): State<Arc<Console>>,
    who: Authed,
    Path(id): Path<String>,
    Query(q): Query<After>,
) -> Response {
    let host = match host(&console) {
        Ok(h) => h,
        Err(e) => return failed(e),
    };
    let entries = match host.events(&who.caller(), &id).await {
        Ok(s) => s,
        Err(e) => return failed(e),
    };
    let state = (entries, Arc::clone(&console), who.id, q.after, false);
    let stream = futures_util::stream::unfold(
        state,
        |(mut entries, console, sid, mut skip, over)| async move {
            if over {
                return None;
            }
            loop {
                let next = tokio::time::timeout(SESSION_RECHECK, entries.next()).await;
                if !console.sessions.alive(&sid) {
                    return None;
                }
                let chunk = match next {
                    Err(_elapsed) => continue,
                    Ok(Some(chunk)) => chunk,
                    Ok(None) => {
                        let end = Event::default().event("end").data("ended");
                        return Some((vec![end], (entries, console, sid, skip, true)));
                    }
                };
                let mut events = Vec::new();
                for line in chunk.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                    if skip > 0 {
                        skip -= 1;
                        continue;
                    }
                    let v = serde_json::from_slice(line).unwrap_or_else(|_| {
                        serde_json::Value::String(String::from_utf8_lossy(line).into_owned())
                    });
                    let html = EntryFragment { b: Block::of(v) }.render();
                    events.push(match html {
                        Ok(html) => Event::default().event("entry").data(html),
                        Err(_) => Event::default().event("end").data("render"),
                    });
                }
                if !events.is_empty() {
                    return Some((events, (entries, console, sid, skip, false)));
                }
            }
        },
    );
    let flat = stream.flat_map(|v| {
        futures_util::stream::iter(v.into_iter().map(Ok::<_, std::convert::Infallible>))
    });
    Sse::new(flat)
        .keep_alive(KeepAlive::default())
        .into_response()
}

pub(crate) async fn cancel(
    State(console): State<Arc<Console>>,
    who: Authed,
    Path(id): Path<String>,
    Form(f): Form<CsrfForm>,
) -> Response {
    if let Err(refused) = who.check(&f.csrf) {
        return refused.into_response();
    }
    let host = match host(&console) {
        Ok(h) => h,
        Err(e) => return failed(e),
    };
    match host.cancel(&who.caller(), &id).await {
        // The id was found: it is a task id, safe in a path.
        Ok(()) => Redirect::to(&format!("/tasks/{id}")).into_response(),
        Err(e) => failed(e),
    }
}
