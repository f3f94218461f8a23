//! `luminaguard agent`: the agent loop on a real LLM provider, every tool call in a sandbox
//! (docs/agent.md). A thin front over `luminaguard-agent-loop`: it reads the flags, makes the
//! task's sandbox through the front, shows the task as it runs, and renders transcripts.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use luminaguard_agent_loop::client::{default_base_url, key_variable};
use luminaguard_agent_loop::launch::{Launch, Prepared, prepare};
use luminaguard_agent_loop::task::{Agent, Reply};
use luminaguard_agent_loop::tools::{Decision, ToolLimits};
use luminaguard_agent_loop::{
    ApiKey, Entry, Limits, ModelConfig, Observer, Retry, Status, Store, TaskId,
};
use luminaguard_api::types::ApprovalView;
use luminaguard_core::Config;
use luminaguard_llm::Provider;
use luminaguard_mcp::gateway::Gateway;
use luminaguard_service::Answer;

use crate::front::Front;
use crate::run::SandboxArgs;

#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Run a task to its end: a model proposes tool calls, each runs in the task's sandbox
    /// under the policy (asked about at this terminal, or through the daemon's approvals).
    Run(RunArgs),
    /// Talk with the agent: each line you type is a request in one conversation, one sandbox.
    Chat(TaskArgs),
    /// The tasks run so far, newest first.
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// A task's transcript: its requests, the model's answers, each tool call with its
    /// decision and result.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ProviderArg {
    /// OpenAI-compatible chat completions (OpenAI, vLLM, llama.cpp's server, LM Studio, …).
    Openai,
    /// Anthropic Messages.
    Anthropic,
    /// Ollama's native chat API.
    Ollama,
}

impl From<ProviderArg> for Provider {
    fn from(p: ProviderArg) -> Self {
        match p {
            ProviderArg::Openai => Provider::OpenAi,
            ProviderArg::Anthropic => Provider::Anthropic,
            ProviderArg::Ollama => Provider::Ollama,
        }
    }
}

/// What a task runs on, and its bounds.
#[derive(Debug, Args)]
pub struct TaskArgs {
    /// The provider's wire format (default: the configuration's `[agent] provider`, else
    /// openai).
    #[arg(long, value_enum, env = "LUMINAGUARD_AGENT_PROVIDER")]
    provider: Option<ProviderArg>,
    /// The model's name, as the provider knows it (default: the configuration's
    /// `[agent] model`).
    #[arg(long, env = "LUMINAGUARD_AGENT_MODEL")]
    model: Option<String>,
    /// The API's base URL (default: the configuration's, else the provider's;
    /// `http://127.0.0.1:8000/v1` for a local OpenAI-compatible server). The key is read from
    /// OPENAI_API_KEY, ANTHROPIC_API_KEY or OLLAMA_API_KEY, else from the configuration's
    /// `[agent] api_key_file` — never from a flag.
    #[arg(long, env = "LUMINAGUARD_AGENT_BASE_URL", value_name = "URL")]
    base_url: Option<String>,
    /// Model answers at most.
    #[arg(long, default_value_t = 50)]
    max_steps: u32,
    /// Tokens at most over the whole task, prompts and answers summed (as providers bill).
    #[arg(long, default_value_t = 2_000_000)]
    max_tokens: u64,
    /// Tokens at most in one answer.
    #[arg(long, default_value_t = 4096)]
    max_output_tokens: u32,
    /// The whole task's time.
    #[arg(long, default_value = "30m", value_parser = humantime::parse_duration)]
    wall_time: Duration,
    /// The most of one tool result the model is sent (its head and tail, the cut marked).
    #[arg(long, default_value_t = 16 << 10, value_name = "BYTES")]
    tool_output: usize,
    /// Model calls tried at most (429s and 5xx are retried with backoff).
    #[arg(long, default_value_t = 5, hide = true)]
    retries: u32,
    /// The first retry's wait (each next doubles; `retry-after` wins when given).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration, hide = true)]
    retry_base: Duration,
    /// MCP servers whose tools the model is also given (`SERVER__TOOL`), each in a sandbox of
    /// its own behind the gateway's checks: a gateway file as `luminaguard mcp gateway` takes.
    #[arg(long, value_name = "FILE")]
    mcp_config: Option<std::path::PathBuf>,
    /// The longest silence of the provider inside an answer before the try fails.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration, hide = true)]
    idle_timeout: Duration,
    #[command(flatten)]
    sandbox: SandboxArgs,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    task_args: TaskArgs,
    /// Each transcript entry as a JSON line on stdout (the model's text too, as `text`).
    #[arg(long)]
    json: bool,
    /// What to do.
    task: String,
}

/// Exit status of a task a bound stopped (steps, tokens, time).
const STOPPED: u8 = 3;

pub async fn run(
    cmd: AgentCommand,
    config: Config,
    choice: &crate::front::Choice,
) -> anyhow::Result<ExitCode> {
    let store = Store::for_config(&config);
    match cmd {
        AgentCommand::Ls { json } => list(&store, json).await,
        AgentCommand::Show { id, json } => show(&store, &id, json).await,
        AgentCommand::Run(args) => {
            let model = model_config(&args.task_args, &config).await?;
            let mcp = gateway(&args.task_args, &config).await?;
            let front = crate::front(config, choice).await?;
            let result = async {
                let mut task = Task::begin(
                    &args.task_args,
                    front.clone(),
                    &store,
                    &args.task,
                    args.json,
                    model,
                    mcp,
                )
                .await?;
                let reply = task.say(&args.task).await;
                task.end(reply).await
            }
            .await;
            front.finish().await;
            result
        }
        AgentCommand::Chat(args) => {
            let model = model_config(&args, &config).await?;
            let mcp = gateway(&args, &config).await?;
            let front = crate::front(config, choice).await?;
            let result = chat(&args, front.clone(), &store, model, mcp).await;
            front.finish().await;
            result
        }
    }
}

/// The model a task runs on: flags (and their variables) first, then the configuration's
/// `[agent]`; the key from the provider's variable, else `[agent] api_key_file`.
async fn model_config(a: &TaskArgs, config: &Config) -> anyhow::Result<ModelConfig> {
    let c = &config.agent;
    let provider = match (a.provider, c.provider.as_deref()) {
        (Some(p), _) => Provider::from(p),
        (None, Some("anthropic")) => Provider::Anthropic,
        (None, Some("ollama")) => Provider::Ollama,
        (None, _) => Provider::OpenAi,
    };
    let model = a.model.clone().or_else(|| c.model.clone()).context(
        "which model? give --model (or LUMINAGUARD_AGENT_MODEL, or `model` in the \
         configuration's [agent])",
    )?;
    let base_url = a
        .base_url
        .clone()
        .or_else(|| c.base_url.clone())
        .unwrap_or_else(|| default_base_url(provider).to_owned());
    let api_key = match std::env::var(key_variable(provider))
        .ok()
        .and_then(|k| ApiKey::new(&k))
    {
        Some(k) => Some(k),
        None => match &c.api_key_file {
            Some(file) => Some(read_key(file).await?),
            None => None,
        },
    };
    Ok(ModelConfig {
        provider,
        model,
        base_url,
        api_key,
        max_tokens: a.max_output_tokens,
    })
}

/// The key in `file`, which only its owner — this user — may read.
async fn read_key(file: &std::path::Path) -> anyhow::Result<ApiKey> {
    use std::os::unix::fs::MetadataExt;
    let shown = file.display();
    let meta = tokio::fs::metadata(file)
        .await
        .with_context(|| format!("[agent] api_key_file {shown}"))?;
    anyhow::ensure!(
        meta.uid() == nix::unistd::geteuid().as_raw(),
        "[agent] api_key_file {shown}: not owned by this user; refusing a key another user controls"
    );
    anyhow::ensure!(
        meta.mode() & 0o077 == 0,
        "[agent] api_key_file {shown}: others may read it (mode {:o}); chmod 600 it",
        meta.mode() & 0o777
    );
    let text = tokio::fs::read_to_string(file)
        .await
        .with_context(|| format!("[agent] api_key_file {shown}"))?;
    ApiKey::new(&text).with_context(|| format!("[agent] api_key_file {shown} is empty"))
}

/// The gateway of `--mcp-config`, if given.
async fn gateway(a: &TaskArgs, config: &Config) -> anyhow::Result<Option<Arc<Gateway>>> {
    let Some(file) = &a.mcp_config else {
        return Ok(None);
    };
    let pins = crate::mcp::pins_file(config);
    Ok(Some(Arc::new(
        crate::mcp::load_gateway(file.clone(), pins).await?,
    )))
}

/// A task being run here: its client, sandbox and transcript, and how it is shown.
struct Task {
    prepared: Prepared,
    display: Display,
    asker: Option<tokio::task::JoinHandle<()>>,
}

impl Task {
    async fn begin(
        a: &TaskArgs,
        front: Front,
        store: &Store,
        title: &str,
        json: bool,
        model: ModelConfig,
        mcp: Option<Arc<Gateway>>,
    ) -> anyhow::Result<Self> {
        if let Some(service) = front.service() {
            service.set_front_kind("agent");
        }
        let launch = Launch {
            model,
            retry: Retry {
                attempts: a.retries.max(1),
                base: a.retry_base,
                idle: a.idle_timeout,
                ..Retry::default()
            },
            limits: Limits {
                max_steps: a.max_steps,
                max_tokens: a.max_tokens,
                wall: a.wall_time,
            },
            tool_limits: ToolLimits {
                output: a.tool_output.max(256),
                ..ToolLimits::default()
            },
            sandbox: a.sandbox.options(None, false),
            title: title.to_owned(),
            uid: None,
            mcp,
        };
        let mut prepared = prepare(&front, store, launch).await?;
        let asker = {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            prepared.tools.report_pending(tx);
            Some(tokio::spawn(ask_pending(prepared.front.clone(), rx)))
        };
        let display = Display::new(json, prepared.id.clone());
        Ok(Self {
            prepared,
            display,
            asker,
        })
    }

    /// Runs the task for one request to its end (or Ctrl-C).
    async fn say(&mut self, text: &str) -> anyhow::Result<(Status, String)> {
        let interrupted = async {
            let _ = tokio::signal::ctrl_c().await;
            "interrupted (Ctrl-C)".to_owned()
        };
        let summary = self
            .prepared
            .run(&mut self.display, text, interrupted)
            .await?;
        Ok((summary.status, summary.message))
    }

    /// Releases the sandbox; the exit status the task ended with.
    async fn end(mut self, reply: anyhow::Result<(Status, String)>) -> anyhow::Result<ExitCode> {
        if let Some(a) = self.asker.take() {
            a.abort();
        }
        self.prepared.release().await;
        let (status, _) = reply?;
        Ok(match status {
            Status::Done => ExitCode::SUCCESS,
            Status::MaxSteps | Status::MaxTokens | Status::WallTime => ExitCode::from(STOPPED),
            _ => ExitCode::from(1),
        })
    }
}

async fn chat(
    a: &TaskArgs,
    front: Front,
    store: &Store,
    model: ModelConfig,
    mcp: Option<Arc<Gateway>>,
) -> anyhow::Result<ExitCode> {
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let prompt = || eprint!("› ");
    prompt();
    let Some(first) = next_request(&mut lines).await? else {
        return Ok(ExitCode::SUCCESS);
    };
    let mut task = Task::begin(a, front, store, &first, false, model, mcp).await?;
    let result = async {
        let p = &mut task.prepared;
        let mut agent =
            Agent::start(&p.client, &p.tools, &p.specs, p.limits, &mut p.writer, &mut task.display)
                .await?;
        let mut request = first;
        let (status, message) = loop {
            let reply = tokio::select! {
                r = agent.say(&request) => r?,
                _ = tokio::signal::ctrl_c() => Reply::Stopped(Status::Interrupted, "interrupted (Ctrl-C)".into()),
            };
            if let Reply::Stopped(s, m) = reply {
                break (s, m);
            }
            outln!("");
            prompt();
            match next_request(&mut lines).await? {
                Some(next) => request = next,
                None => break (Status::Done, "the person ended the chat".to_owned()),
            }
        };
        agent.finish(status, message.clone()).await?;
        Ok((status, message))
    }
    .await;
    task.end(result).await
}

/// The next non-empty line (`None` at the end of input or `/exit`).
async fn next_request(
    lines: &mut tokio::io::Lines<tokio::io::BufReader<tokio::io::Stdin>>,
) -> anyhow::Result<Option<String>> {
    while let Some(line) = lines.next_line().await.context("reading your request")? {
        let line = line.trim();
        if line == "/exit" || line == "/quit" {
            return Ok(None);
        }
        if !line.is_empty() {
            return Ok(Some(line.to_owned()));
        }
    }
    Ok(None)
}

/// Puts the approvals a call waits on to the person at this terminal (the card, then yes/no),
/// and answers them through the front.
///
/// - Through the daemon: every one, and says where else to answer it (`luminaguard approvals`,
///   the console) — with no terminal here it waits for someone there, or its expiry.
/// - In-process: a write's Diff Card (the service asks about actions itself); with no terminal
///   nobody could answer it, and it is denied at once rather than left to expire.
async fn ask_pending(front: Front, mut rx: tokio::sync::mpsc::UnboundedReceiver<ApprovalView>) {
    let in_process = !front.answerable_elsewhere();
    while let Some(a) = rx.recv().await {
        if in_process && a.card.action.is_some() {
            continue;
        }
        if !in_process {
            eprintln!(
                "\nluminaguard: approval {} waits for a person (`luminaguard approvals approve|deny {}`, or the console)",
                a.id, a.id
            );
        }
        let question = format!("{}Allow it? [y]es / [N]o ", a.card.text);
        let asked = tokio::task::spawn_blocking(move || crate::tty::ask(&question)).await;
        let (answer, reason) = match asked {
            Ok(crate::tty::Asked::Yes | crate::tty::Asked::Session | crate::tty::Asked::Always) => {
                (Answer::Approve, None)
            }
            Ok(crate::tty::Asked::No) => (Answer::Deny, None),
            Ok(crate::tty::Asked::NoTerminal(_)) | Err(_) if in_process => (
                Answer::Deny,
                Some(
                    "nobody to ask: no terminal, no daemon (run it through the daemon and \
                     answer with `luminaguard approvals`, or under a policy that allows it)"
                        .to_owned(),
                ),
            ),
            Ok(crate::tty::Asked::NoTerminal(_)) | Err(_) => continue,
        };
        if let Err(e) = front.answer(&a.id, answer, reason, a.card.digest()).await {
            // Answered elsewhere first, or expired: the call's result says how it ended.
            tracing::info!(approval = %a.id, error = %e, "answering at the terminal");
        }
    }
}

/// The task as it runs, on stdout: the model's text as it streams, each tool call and result;
/// or every entry as a JSON line.
struct Display {
    json: bool,
    id: TaskId,
    mid_line: bool,
}

impl Display {
    fn new(json: bool, id: TaskId) -> Self {
        Self {
            json,
            id,
            mid_line: false,
        }
    }

    fn end_line(&mut self) {
        if self.mid_line {
            outln!("");
            self.mid_line = false;
        }
    }
}

impl Observer for Display {
    fn text(&mut self, text: &str) {
        if self.json {
            outln!("{}", serde_json::json!({"type": "text", "text": text}));
        } else {
            out!("{}", safe(text));
            self.mid_line = !text.ends_with('\n');
        }
    }

    fn entry(&mut self, entry: &Entry) {
        if self.json {
            if let Ok(line) = serde_json::to_string(entry) {
                outln!("{line}");
            }
            return;
        }
        match entry {
            Entry::Started {
                model,
                endpoint,
                sandbox,
                ..
            } => eprintln!(
                "luminaguard: {} · {model} at {endpoint} · sandbox {sandbox}",
                self.id
            ),
            Entry::Turn { tool_calls, .. } => {
                self.end_line();
                for call in tool_calls {
                    outln!("{}", call_line(call));
                }
            }
            Entry::ToolResult {
                decision,
                is_error,
                content,
                ..
            } => {
                // A refusal's text says so itself.
                let mark = match (decision, is_error) {
                    (Decision::Invalid, _) => "✗ invalid:",
                    (_, true) => "✗",
                    (_, false) => "✓",
                };
                outln!("  {mark} {}", result_text(content, 12));
            }
            Entry::Retry {
                message,
                wait_ms,
                attempt,
                ..
            } => {
                self.end_line();
                eprintln!(
                    "luminaguard: {message}; try {} in {:.1}s",
                    attempt + 1,
                    *wait_ms as f64 / 1000.0
                );
            }
            Entry::Finished {
                status,
                message,
                steps,
                usage,
                duration_ms,
            } => {
                self.end_line();
                if *status != Status::Done {
                    eprintln!("luminaguard: {}", safe(message));
                }
                eprintln!(
                    "luminaguard: {} {} · {steps} steps · {} tokens · {:.1}s · luminaguard agent show {}",
                    self.id,
                    status.as_str(),
                    usage.input_tokens + usage.output_tokens,
                    *duration_ms as f64 / 1000.0,
                    self.id
                );
            }
            Entry::User { .. } => {}
        }
    }
}

/// Text from the model or a tool, safe to print: no escape sequence, carriage return or
/// disguising character reaches the terminal (each is shown as `\xNN`).
fn safe(text: &str) -> String {
    luminaguard_review::path::for_terminal(text)
}

/// A tool call as the live display and `agent show` print it: `▸ name arguments`.
fn call_line(call: &luminaguard_llm::ToolCall) -> String {
    format!("▸ {} {}", safe(&call.name), call_summary(call))
}

/// A tool result's first `lines` lines, safe to print, indented under its call.
fn result_text(content: &str, lines: usize) -> String {
    indent(&safe(&head(content, lines)))
}

/// A call's arguments in a line: the command, the path, else compact JSON.
fn call_summary(call: &luminaguard_llm::ToolCall) -> String {
    if let Some(why) = &call.malformed {
        return format!("(arguments not JSON: {why})");
    }
    let a = &call.arguments;
    let s = |k: &str| a.get(k).and_then(serde_json::Value::as_str);
    let text = match (s("command"), s("path")) {
        (Some(c), _) => c.to_owned(),
        (None, Some(p)) => match s("content") {
            Some(c) => format!("{p} ({} bytes)", c.len()),
            None => p.to_owned(),
        },
        _ if a.as_object().is_some_and(serde_json::Map::is_empty) => "(no arguments)".to_owned(),
        _ => a.to_string(),
    };
    let mut text: String = safe(&text.replace('\n', "⏎"));
    if text.chars().count() > 200 {
        text = text.chars().take(200).collect::<String>() + "…";
    }
    text
}

fn head(text: &str, lines: usize) -> String {
    let mut out: Vec<&str> = text.lines().take(lines).collect();
    let total = text.lines().count();
    let more = format!("… ({} more lines)", total.saturating_sub(lines));
    if total > lines {
        out.push(&more);
        return out.join("\n");
    }
    out.join("\n")
}

fn indent(text: &str) -> String {
    text.replace('\n', "\n    ")
}

async fn list(store: &Store, json: bool) -> anyhow::Result<ExitCode> {
    let tasks = store.list().await?;
    if json {
        let rows: Vec<serde_json::Value> = tasks
            .iter()
            .map(|t| serde_json::to_value(t).unwrap_or_default())
            .collect();
        outln!("{}", serde_json::to_string(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    if tasks.is_empty() {
        eprintln!("luminaguard: no tasks yet (in {})", store.dir().display());
        return Ok(ExitCode::SUCCESS);
    }
    outln!(
        "{:<17}  {:<11}  {:>5}  {:>9}  {:<20}  TASK",
        "ID",
        "STATUS",
        "STEPS",
        "TOKENS",
        "STARTED"
    );
    for t in tasks {
        let started = humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + Duration::from_millis(t.started_ms),
        );
        let title: String = safe(&t.task.replace('\n', " ")).chars().take(60).collect();
        outln!(
            "{:<17}  {:<11}  {:>5}  {:>9}  {:<20}  {title}",
            t.id,
            t.status.as_str(),
            t.steps,
            t.usage.input_tokens + t.usage.output_tokens,
            started
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn show(store: &Store, id: &str, json: bool) -> anyhow::Result<ExitCode> {
    let id = TaskId::try_from(id.to_owned())?;
    let summary = store.summary(&id).await?;
    let entries = store.entries(&id).await?;
    if json {
        let s = serde_json::to_value(&summary)?;
        outln!(
            "{}",
            serde_json::to_string(&serde_json::json!({"task": s, "entries": entries}))?
        );
        return Ok(ExitCode::SUCCESS);
    }
    outln!(
        "{} · {} · {} ({})",
        id,
        summary.status.as_str(),
        summary.model,
        summary.provider
    );
    for e in &entries {
        match e {
            Entry::Started {
                task,
                sandbox,
                endpoint,
                ..
            } => {
                outln!("endpoint {endpoint} · sandbox {sandbox}");
                outln!("\n» {}", safe(task));
            }
            Entry::User { text } => outln!("\n» {}", safe(text)),
            Entry::Turn {
                step,
                text,
                tool_calls,
                usage,
                ..
            } => {
                outln!(
                    "\n[step {step} · {} tokens]",
                    usage.input_tokens + usage.output_tokens
                );
                if !text.is_empty() {
                    outln!("{}", safe(text));
                }
                for c in tool_calls {
                    outln!("{}", call_line(c));
                }
            }
            Entry::ToolResult {
                tool,
                decision,
                content,
                approval,
                asked,
                duration_ms,
                ..
            } => {
                let how = luminaguard_agent_loop::transcript::how_it_went(
                    *decision,
                    approval.as_deref(),
                    asked,
                );
                outln!("  {}: {} · {duration_ms} ms", safe(tool), safe(&how));
                outln!("    {}", result_text(content, 20));
            }
            Entry::Retry {
                message, wait_ms, ..
            } => {
                outln!("  (retry after {wait_ms} ms: {})", safe(message));
            }
            Entry::Finished {
                status,
                message,
                steps,
                usage,
                duration_ms,
            } => {
                outln!(
                    "\n— {} · {steps} steps · {} tokens · {:.1}s",
                    status.as_str(),
                    usage.input_tokens + usage.output_tokens,
                    *duration_ms as f64 / 1000.0
                );
                if *status != Status::Done {
                    outln!("{}", safe(message));
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
