//! The gateway's servers as one MCP session sees them: each started in its sandbox on first
//! use (or at once, `start = "eager"`), restarted with backoff when it crashes, its tools
//! listed, filtered, checked against their pins and offered as `SERVER__TOOL`; and every call
//! taken through the same steps — offered? pinned? secrets in its arguments? the policy (and
//! the Approval Cliff) → forwarded → secrets in its result → on the record.
//!
//! The servers' prompts and resources go the same way: prompts are offered as
//! `SERVER__PROMPT`; resources keep the URIs their servers give them (see [`Routes`]); a
//! `prompts/get` or `resources/read` is an action on a third-party server like a tool call —
//! judged as tool `prompts/get` (arguments `{"name", "arguments"}`) or `resources/read`
//! (`{"uri"}`) of its server, so that a policy's `mcp` rules match them, its result scanned
//! and recorded ([`forward`], the one path of all three).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use luminaguard_front::{Front, Held};
use luminaguard_service::tool_call::{ToolCall, ToolEvent, ToolOutcome};
use rmcp::model::{
    CallToolRequestParams, CallToolResult, ContentBlock, GetPromptRequestParams, GetPromptResult,
    JsonObject, Prompt, ReadResourceRequestParams, ReadResourceResult, Resource, ResourceTemplate,
    Tool,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::Gateway;
use super::downstream::{Downstream, DownstreamError};
use crate::approve::Shared;

/// The separator of an exposed tool's name: `SERVER__TOOL`.
pub const SEPARATOR: &str = "__";

/// A server that ran this long before it crashed starts its backoff afresh.
const HEALTHY: Duration = Duration::from_secs(60);
/// The longest wait between restarts of a server that keeps crashing.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How long listing a server's tools may take.
const LIST_TIMEOUT: Duration = Duration::from_secs(30);

/// One session's servers.
#[derive(Debug)]
pub struct Servers {
    slots: BTreeMap<String, Slot>,
    /// Changed pins already on the record (server, tool, served hash): said once a session.
    reported: Mutex<BTreeSet<(String, String, String)>>,
    /// Which server serves which resource, as last listed.
    routes: Mutex<Routes>,
}

/// Which server a `resources/read` goes to. A resource keeps the URI its server gives it — the
/// URIs a server hands out elsewhere (resource links in tool results, resources embedded in
/// prompts, a template the client expands) stay readable as they are, which a rewritten URI
/// (`lg-gw://SERVER/…`) would break — so the gateway routes by the last listing: a URI a
/// server listed goes to it; else the server of the template whose literal start (before its
/// first `{`) is the longest that begins the URI. A URI neither matches is refused, never
/// sent to a guessed server. Two servers listing the same URI (or template start) is said in
/// the log; the first in the gateway's order of servers (by name) serves it, the other's is
/// not listed.
#[derive(Debug, Default)]
struct Routes {
    /// A resource's URI → its server (the last `resources/list`).
    uris: BTreeMap<String, String>,
    /// A template's literal start → its server (the last `resources/templates/list`).
    templates: BTreeMap<String, String>,
}

impl Routes {
    fn route(&self, uri: &str) -> Option<String> {
        if let Some(server) = self.uris.get(uri) {
            return Some(server.clone());
        }
        self.templates
            .iter()
            .filter(|(start, _)| uri.starts_with(start.as_str()))
            .max_by_key(|(start, _)| start.len())
            .map(|(_, server)| server.clone())
    }
}

/// The literal start of URI template `t` (before its first expression).
fn template_start(t: &str) -> &str {
    t.split('{').next().unwrap_or_default()
}

/// Why a prompt or a resource was not served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No server serves that name or URI.
    Unknown(String),
    /// Not forwarded: its arguments carry a secret, or the policy (or a person) refused it.
    Refused(String),
    /// Forwarded and failed, or its result was withheld; or its server is unavailable.
    Failed(String),
}

impl Refusal {
    /// What it says.
    pub fn text(self) -> String {
        match self {
            Self::Unknown(t) | Self::Refused(t) | Self::Failed(t) => t,
        }
    }
}

/// The judged arguments of a `resources/read`.
#[derive(Debug, Serialize, Deserialize)]
struct ReadArguments {
    uri: String,
}

/// The judged arguments of a `prompts/get`.
#[derive(Debug, Serialize, Deserialize)]
struct PromptArguments {
    name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    arguments: Option<JsonObject>,
}

/// The audited tool name of a resource read.
pub const READ_RESOURCE: &str = "resources/read";
/// The audited tool name of a prompt get.
pub const GET_PROMPT: &str = "prompts/get";

/// What a server answers to an action the gateway forwards.
pub trait Answer: Serialize + DeserializeOwned {
    /// Whether it says it failed (a tool's `isError`).
    fn is_error(&self) -> bool {
        false
    }
}

impl Answer for CallToolResult {
    fn is_error(&self) -> bool {
        self.is_error == Some(true)
    }
}

impl Answer for GetPromptResult {}
impl Answer for ReadResourceResult {}

/// One server of a session.
#[derive(Debug, Default)]
struct Slot {
    state: Mutex<State>,
    /// One start at a time.
    gate: tokio::sync::Mutex<()>,
}

#[derive(Debug, Default)]
struct State {
    running: Option<Arc<Downstream>>,
    /// Its tools as last listed: offered (filtered, pinned) by the server's own names.
    offered: Vec<Tool>,
    /// Tools it serves that are not offered, and why.
    withheld: BTreeMap<String, String>,
    /// Crashes (and failed starts) in a row.
    failures: u32,
    /// No start before this.
    retry_at: Option<Instant>,
    /// Why it last failed.
    last_error: Option<String>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The wait before start number `failures + 1` of a server that failed `failures` times in a
/// row: none for the first restart, then 1 s, 2 s, 4 s, … up to [`MAX_BACKOFF`].
pub fn backoff(failures: u32) -> Duration {
    match failures {
        0 | 1 => Duration::ZERO,
        n => Duration::from_secs(1u64 << (n - 2).min(5)).min(MAX_BACKOFF),
    }
}

/// Splits an exposed name into server and tool.
pub fn split(name: &str) -> Option<(&str, &str)> {
    name.split_once(SEPARATOR)
        .filter(|(s, t)| !s.is_empty() && !t.is_empty())
}

/// A failed call's result for the model (`isError`).
fn error_result(text: impl Into<String>) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(text.into())])
}

impl Servers {
    pub fn new(gw: &Gateway) -> Self {
        Self {
            slots: gw
                .servers
                .keys()
                .map(|name| (name.clone(), Slot::default()))
                .collect(),
            reported: Mutex::default(),
            routes: Mutex::default(),
        }
    }

    /// The sandboxes of the servers running, taken for the caller to release.
    pub fn take_helds(&self) -> Vec<Held> {
        self.slots
            .values()
            .filter_map(|s| lock(&s.state).running.take())
            .filter_map(|d| d.take_held())
            .collect()
    }

    /// Starts the servers configured to start at once (in parallel); a failure is logged,
    /// and tried again on first use.
    pub async fn start_eager(&self, gw: &Gateway, front: &Front, shared: &Shared) {
        let starts = gw
            .servers
            .iter()
            .filter(|(_, s)| s.eager)
            .map(|(name, _)| async move {
                if let Err(e) = self.running(gw, front, shared, name).await {
                    tracing::warn!(server = %name, error = %e, "starting an MCP server");
                }
            });
        futures_util::future::join_all(starts).await;
    }

    /// Every server's offered tools, as the host sees them (`SERVER__TOOL`). A server that
    /// cannot start is left out (and said why in the log).
    pub async fn tools(&self, gw: &Gateway, front: &Front, shared: &Shared) -> Vec<Tool> {
        let listed = self
            .each(gw, front, shared, "tools", |name, _| async move {
                Ok(self
                    .slots
                    .get(name)
                    .map_or_else(Vec::new, |slot| lock(&slot.state).offered.clone()))
            })
            .await;
        listed
            .into_iter()
            .flat_map(|(name, tools)| tools.into_iter().map(move |t| exposed(name, &t)))
            .collect()
    }

    /// Every server's prompts (`SERVER__PROMPT`), servers started as for [`Servers::tools`].
    pub async fn prompts(&self, gw: &Gateway, front: &Front, shared: &Shared) -> Vec<Prompt> {
        let listed = self
            .each(gw, front, shared, "prompts", |_, d| async move {
                d.list_prompts(LIST_TIMEOUT)
                    .await
                    .map_err(|e| gw.redact_text(&e.to_string()))
            })
            .await;
        listed
            .into_iter()
            .flat_map(|(name, prompts)| {
                prompts.into_iter().map(move |mut p| {
                    p.name = format!("{name}{SEPARATOR}{}", p.name);
                    p
                })
            })
            .collect()
    }

    /// Every server's resources, under their own URIs (named `SERVER__NAME`); the routes of
    /// `resources/read` replaced by this listing's (see [`Routes`]).
    pub async fn resources(&self, gw: &Gateway, front: &Front, shared: &Shared) -> Vec<Resource> {
        let listed = self
            .each(gw, front, shared, "resources", |_, d| async move {
                d.list_resources(LIST_TIMEOUT)
                    .await
                    .map_err(|e| gw.redact_text(&e.to_string()))
            })
            .await;
        let mut uris = BTreeMap::new();
        let mut out = Vec::new();
        for (name, resources) in listed {
            for mut r in resources {
                if let Some(first) = uris.get(&r.uri) {
                    if first != name {
                        tracing::warn!(uri = %r.uri, %first, other = %name, "two MCP servers list the same resource: it is read from the first");
                    }
                    continue;
                }
                uris.insert(r.uri.clone(), name.to_owned());
                r.name = format!("{name}{SEPARATOR}{}", r.name);
                out.push(r);
            }
        }
        lock(&self.routes).uris = uris;
        out
    }

    /// Every server's resource templates (named `SERVER__NAME`); the template routes of
    /// `resources/read` replaced by this listing's (see [`Routes`]).
    pub async fn resource_templates(
        &self,
        gw: &Gateway,
        front: &Front,
        shared: &Shared,
    ) -> Vec<ResourceTemplate> {
        let listed = self
            .each(gw, front, shared, "resource templates", |_, d| async move {
                d.list_resource_templates(LIST_TIMEOUT)
                    .await
                    .map_err(|e| gw.redact_text(&e.to_string()))
            })
            .await;
        let mut starts = BTreeMap::new();
        let mut out = Vec::new();
        for (name, templates) in listed {
            for mut t in templates {
                let start = template_start(&t.uri_template);
                if start.is_empty() {
                    // It would match every URI: nothing is routed by it.
                    tracing::warn!(server = %name, template = %t.uri_template, "a resource template without a literal start: its resources cannot be routed");
                } else if let Some(first) = starts.get(start) {
                    if first != name {
                        tracing::warn!(template = %t.uri_template, %first, other = %name, "two MCP servers list resource templates of the same start: they are read from the first");
                        continue;
                    }
                } else {
                    starts.insert(start.to_owned(), name.to_owned());
                }
                t.name = format!("{name}{SEPARATOR}{}", t.name);
                out.push(t);
            }
        }
        lock(&self.routes).templates = starts;
        out
    }

    /// `list` of every server, each running (started if it is not), in parallel; in the
    /// gateway's order of servers. A server that cannot start or answer is left out (and said
    /// why in the log).
    async fn each<'g, T, F, Fut>(
        &self,
        gw: &'g Gateway,
        front: &Front,
        shared: &Shared,
        what: &str,
        list: F,
    ) -> Vec<(&'g str, Vec<T>)>
    where
        F: Fn(&'g str, Arc<Downstream>) -> Fut,
        Fut: Future<Output = Result<Vec<T>, String>>,
    {
        let lists = gw.servers.keys().map(|name| {
            let list = &list;
            async move {
                let listed = match self.running(gw, front, shared, name).await {
                    Ok(d) => list(name.as_str(), d).await,
                    Err(e) => Err(e),
                };
                match listed {
                    Ok(items) => Some((name.as_str(), items)),
                    Err(e) => {
                        tracing::warn!(server = %name, error = %e, "MCP server unavailable: its {what} are not listed");
                        None
                    }
                }
            }
        });
        futures_util::future::join_all(lists)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    /// Server `name` running, started (again) if it is not, its tools listed anew when it
    /// started or says they changed.
    async fn running(
        &self,
        gw: &Gateway,
        front: &Front,
        shared: &Shared,
        name: &str,
    ) -> Result<Arc<Downstream>, String> {
        let Some(slot) = self.slots.get(name) else {
            return Err(format!("no server {name:?} in the gateway's configuration"));
        };
        let Some(entry) = gw.servers.get(name) else {
            return Err(format!("no server {name:?} in the gateway's configuration"));
        };
        let _gate = slot.gate.lock().await;
        let alive = {
            let mut st = lock(&slot.state);
            match st.running.clone() {
                Some(d) if d.ended().is_none() => Some(d),
                Some(d) => {
                    // Crashed: its sandbox goes; the next start waits its backoff.
                    st.running = None;
                    st.offered.clear();
                    st.failures = if d.uptime() >= HEALTHY {
                        1
                    } else {
                        st.failures + 1
                    };
                    let ended = d.ended().unwrap_or_default();
                    tracing::warn!(server = %name, %ended, failures = st.failures, "MCP server crashed");
                    st.last_error = Some(format!("the server {ended}"));
                    st.retry_at = Some(Instant::now() + backoff(st.failures));
                    release(front, &d);
                    None
                }
                None => None,
            }
        };
        let downstream = match alive {
            Some(d) => d,
            None => {
                let (retry_at, last_error) = {
                    let st = lock(&slot.state);
                    (st.retry_at, st.last_error.clone())
                };
                if let Some(at) = retry_at
                    && Instant::now() < at
                {
                    return Err(format!(
                        "{}; it is restarted in {} s",
                        last_error.as_deref().unwrap_or("it failed"),
                        at.saturating_duration_since(Instant::now()).as_secs() + 1
                    ));
                }
                match Downstream::start(front, &entry.spec, shared).await {
                    Ok(d) => {
                        let d = Arc::new(d);
                        let mut st = lock(&slot.state);
                        st.running = Some(Arc::clone(&d));
                        st.retry_at = None;
                        // (The listing below marks it stale.)
                        drop(st);
                        d.mark_tools_changed();
                        d
                    }
                    Err(e) => {
                        let text = gw.redact_text(&e.to_string());
                        let mut st = lock(&slot.state);
                        st.failures += 1;
                        st.retry_at = Some(Instant::now() + backoff(st.failures + 1));
                        st.last_error = Some(text.clone());
                        return Err(text);
                    }
                }
            }
        };
        if downstream.tools_changed() {
            let served = downstream
                .list_tools(LIST_TIMEOUT)
                .await
                .map_err(|e| gw.redact_text(&e.to_string()))?;
            let (offered, withheld) = self.judge_tools(gw, front, &downstream, served).await;
            let mut st = lock(&slot.state);
            st.offered = offered;
            st.withheld = withheld;
        }
        Ok(downstream)
    }

    /// Which of a server's tools are offered: those its filter allows whose definition is the
    /// one pinned (a tool seen first is pinned now); the rest withheld, with why.
    async fn judge_tools(
        &self,
        gw: &Gateway,
        front: &Front,
        d: &Downstream,
        served: Vec<Tool>,
    ) -> (Vec<Tool>, BTreeMap<String, String>) {
        let name = &d.name;
        let mut withheld = BTreeMap::new();
        let allowed: Vec<Tool> = served
            .into_iter()
            .filter(|t| {
                let ok = gw.allows(name, &t.name);
                if !ok {
                    withheld.insert(
                        t.name.to_string(),
                        "not offered by the gateway's configuration (its tools filter)".into(),
                    );
                }
                ok
            })
            .collect();
        let verdicts = match gw.pin(name, &allowed).await {
            Ok(v) => v,
            Err(e) => {
                // Fail closed: a pin store that cannot be read offers nothing.
                tracing::error!(server = %name, error = %e, "the pin store");
                for t in &allowed {
                    withheld.insert(t.name.to_string(), format!("the pin store failed: {e}"));
                }
                return (Vec::new(), withheld);
            }
        };
        let mut offered = Vec::new();
        for (tool, verdict) in allowed.into_iter().zip(verdicts) {
            match verdict {
                super::PinVerdict::Pinned { sha256 } => {
                    record(
                        front,
                        d,
                        ToolEvent::Pinned {
                            server: name.clone(),
                            tool: tool.name.to_string(),
                            sha256,
                        },
                    )
                    .await;
                    offered.push(tool);
                }
                super::PinVerdict::Same => offered.push(tool),
                super::PinVerdict::Changed {
                    changed,
                    pinned,
                    served,
                } => {
                    let key = (name.clone(), tool.name.to_string(), served.clone());
                    let first = lock(&self.reported).insert(key);
                    tracing::warn!(server = %name, tool = %tool.name, ?changed, "a tool's definition changed since it was pinned: disabled until approved");
                    withheld.insert(
                        tool.name.to_string(),
                        format!(
                            "its definition changed since it was pinned ({}): disabled until a \
                             person approves the new version (`luminaguard mcp pins approve \
                             {name} {}`)",
                            changed.join(", "),
                            tool.name
                        ),
                    );
                    if first {
                        record(
                            front,
                            d,
                            ToolEvent::PinChanged {
                                server: name.clone(),
                                tool: tool.name.to_string(),
                                changed,
                                pinned,
                                served,
                            },
                        )
                        .await;
                    }
                }
            }
        }
        (offered, withheld)
    }

    /// Calls exposed tool `req.name` — the work of one flight.
    pub async fn call(
        &self,
        gw: &Gateway,
        front: &Front,
        shared: &Shared,
        req: CallToolRequestParams,
    ) -> CallToolResult {
        self.call_tool(gw, front, shared, req)
            .await
            .unwrap_or_else(|r| error_result(r.text()))
    }

    /// Calls exposed tool `req.name`: the server's result, or why it was not called (or its
    /// result withheld) — for a caller that tells a refusal from a failure (the agent loop).
    pub async fn call_tool(
        &self,
        gw: &Gateway,
        front: &Front,
        shared: &Shared,
        req: CallToolRequestParams,
    ) -> Result<CallToolResult, Refusal> {
        let Some((server, tool)) = split(&req.name) else {
            return Err(Refusal::Unknown(format!(
                "unknown tool {:?}: the gateway's tools are named SERVER{SEPARATOR}TOOL \
                 (tools/list lists them)",
                req.name
            )));
        };
        let d = match self.running(gw, front, shared, server).await {
            Ok(d) => d,
            Err(e) => {
                return Err(Refusal::Failed(format!(
                    "MCP server {server} is unavailable: {e}"
                )));
            }
        };
        let (offered, withheld) = {
            let st = self.slots.get(server).map(|s| lock(&s.state));
            let offered = st
                .as_ref()
                .is_some_and(|st| st.offered.iter().any(|t| t.name == tool));
            let withheld = st.as_ref().and_then(|st| st.withheld.get(tool).cloned());
            (offered, withheld)
        };
        if !offered {
            let reason = withheld.unwrap_or_else(|| {
                format!("server {server} offers no tool {tool:?} (tools/list lists them)")
            });
            return Err(Refusal::Refused(refuse(front, &d, tool, reason).await));
        }
        let arguments = serde_json::Value::Object(req.arguments.clone().unwrap_or_default());
        let timeout = gw.call_timeout(server);
        forward(gw, front, &d, tool, arguments, |arguments| {
            let mut params = req.clone();
            params.name = tool.to_owned().into();
            params.arguments = match arguments {
                serde_json::Value::Object(m) => Some(m),
                _ => None,
            };
            params.request_state = None;
            params.input_responses = None;
            d.call(params, timeout)
        })
        .await
    }

    /// Gets exposed prompt `params.name` (`SERVER__PROMPT`) — the work of one flight.
    pub async fn get_prompt(
        &self,
        gw: &Gateway,
        front: &Front,
        shared: &Shared,
        params: GetPromptRequestParams,
    ) -> Result<GetPromptResult, Refusal> {
        let Some((server, prompt)) = split(&params.name) else {
            return Err(Refusal::Unknown(format!(
                "unknown prompt {:?}: the gateway's prompts are named SERVER{SEPARATOR}PROMPT \
                 (prompts/list lists them)",
                params.name
            )));
        };
        if !gw.servers.contains_key(server) {
            return Err(Refusal::Unknown(format!(
                "unknown prompt {:?}: the gateway has no server {server:?} (prompts/list lists \
                 the prompts)",
                params.name
            )));
        }
        let d = self
            .running(gw, front, shared, server)
            .await
            .map_err(|e| Refusal::Failed(format!("MCP server {server} is unavailable: {e}")))?;
        let judged = PromptArguments {
            name: prompt.to_owned(),
            arguments: params.arguments,
        };
        let timeout = gw.call_timeout(server);
        forward(
            gw,
            front,
            &d,
            GET_PROMPT,
            to_value(&judged),
            |arguments| async {
                let a: PromptArguments =
                    serde_json::from_value(arguments).map_err(|e| d.unmade(e))?;
                let mut params = GetPromptRequestParams::new(a.name);
                params.arguments = a.arguments;
                d.get_prompt(params, timeout).await
            },
        )
        .await
    }

    /// Reads resource `uri` from the server that listed it (see [`Routes`]) — the work of one
    /// flight. A URI no listing routes is listed for once more (the servers' resources may
    /// have changed, or the client reads a URI it got elsewhere) before it is refused.
    pub async fn read_resource(
        &self,
        gw: &Gateway,
        front: &Front,
        shared: &Shared,
        uri: String,
    ) -> Result<ReadResourceResult, Refusal> {
        let routed = lock(&self.routes).route(&uri);
        let server = match routed {
            Some(server) => server,
            None => {
                futures_util::future::join(
                    self.resources(gw, front, shared),
                    self.resource_templates(gw, front, shared),
                )
                .await;
                lock(&self.routes).route(&uri).ok_or_else(|| {
                    Refusal::Unknown(format!(
                        "no server of the gateway serves resource {uri:?} (resources/list and \
                         resources/templates/list list them)"
                    ))
                })?
            }
        };
        let d = self
            .running(gw, front, shared, &server)
            .await
            .map_err(|e| Refusal::Failed(format!("MCP server {server} is unavailable: {e}")))?;
        let timeout = gw.call_timeout(&server);
        let judged = ReadArguments { uri };
        forward(
            gw,
            front,
            &d,
            READ_RESOURCE,
            to_value(&judged),
            |arguments| async {
                let a: ReadArguments =
                    serde_json::from_value(arguments).map_err(|e| d.unmade(e))?;
                d.read_resource(ReadResourceRequestParams::new(a.uri), timeout)
                    .await
            },
        )
        .await
    }
}

/// Judged arguments as JSON (an object of strings: it cannot fail).
fn to_value(v: &impl Serialize) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or_default()
}

/// One action on server `d`, tool `tool` as the policy and the audit log see it (a tool's own
/// name, [`GET_PROMPT`], [`READ_RESOURCE`]): its arguments through the secret scanner, judged
/// (the policy, a person), forwarded by `send` (given the arguments as scanned), its answer
/// through the scanner, and how it ended on the record.
async fn forward<T, Fut>(
    gw: &Gateway,
    front: &Front,
    d: &Downstream,
    tool: &str,
    mut arguments: serde_json::Value,
    send: impl FnOnce(serde_json::Value) -> Fut,
) -> Result<T, Refusal>
where
    T: Answer,
    Fut: Future<Output = Result<T, DownstreamError>>,
{
    let server = d.name.as_str();
    if let Err(blocked) = gw.scan_arguments(&mut arguments) {
        return Err(Refusal::Refused(refuse(front, d, tool, blocked).await));
    }
    let call = ToolCall {
        server: server.to_owned(),
        tool: tool.to_owned(),
        arguments: arguments.clone(),
    };
    let cleared = front
        .judge_tool_call(d.sandbox(), &call)
        .await
        .map_err(|e| Refusal::Refused(crate::ops::error_text(&e)))?;
    let started = Instant::now();
    let answered = send(arguments).await;
    let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let mut outcome = ToolOutcome {
        server: server.to_owned(),
        tool: tool.to_owned(),
        approval: cleared.approval,
        duration_ms,
        ..ToolOutcome::default()
    };
    let result = match answered {
        Ok(answer) => {
            let mut value = serde_json::to_value(&answer).unwrap_or_default();
            outcome.result_bytes = serde_json::to_vec(&value).map_or(0, |v| v.len() as u64);
            outcome.is_error = answer.is_error();
            match gw.scan_result(&mut value) {
                Ok(redacted) => {
                    outcome.redacted = redacted as u64;
                    serde_json::from_value(value).map_err(|e| {
                        Refusal::Failed(format!(
                            "the server's result did not survive redaction: {e}"
                        ))
                    })
                }
                Err(blocked) => {
                    outcome.failed = Some(format!("result withheld: {blocked}"));
                    Err(Refusal::Failed(format!(
                        "{server}{SEPARATOR}{tool}: the server's result was withheld: {blocked}"
                    )))
                }
            }
        }
        Err(e) => {
            let text = gw.redact_text(&e.to_string());
            outcome.failed = Some(text.clone());
            let note = if d.ended().is_some() {
                " (the server is restarted on the next call)"
            } else {
                ""
            };
            Err(Refusal::Failed(format!("{text}{note}")))
        }
    };
    record(front, d, ToolEvent::Result(outcome)).await;
    result
}

/// A call refused before it was judged: on the record; what the model is told.
async fn refuse(front: &Front, d: &Downstream, tool: &str, reason: String) -> String {
    let server = d.name.clone();
    let text = format!("{server}{SEPARATOR}{tool}: {reason}");
    record(
        front,
        d,
        ToolEvent::Refused {
            server,
            tool: tool.to_owned(),
            reason,
        },
    )
    .await;
    text
}

/// Tool `t` of server `server` as the host sees it.
fn exposed(server: &str, t: &Tool) -> Tool {
    let mut t = t.clone();
    t.name = format!("{server}{SEPARATOR}{}", t.name).into();
    t
}

/// Puts `event` on the audit log (a failure is logged: the call it is about has happened).
async fn record(front: &Front, d: &Downstream, event: ToolEvent) {
    if let Err(e) = front.record_tool_event(d.sandbox(), &event).await {
        tracing::warn!(server = %d.name, error = %e, "recording a tool event");
    }
}

/// Releases a server's sandbox in the background.
fn release(front: &Front, d: &Downstream) {
    if let Some(held) = d.take_held() {
        let front = front.clone();
        tokio::spawn(async move {
            let id = held.id().clone();
            if let Err(e) = front.release(held).await {
                tracing::warn!(%id, error = %e, "destroying a crashed MCP server's sandbox");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_back_off_after_the_first() {
        assert_eq!(backoff(1), Duration::ZERO);
        assert_eq!(backoff(2), Duration::from_secs(1));
        assert_eq!(backoff(3), Duration::from_secs(2));
        assert_eq!(backoff(6), Duration::from_secs(16));
        assert_eq!(backoff(7), MAX_BACKOFF);
        assert_eq!(backoff(100), MAX_BACKOFF);
    }

    #[test]
    fn resources_route_by_uri_then_by_the_longest_template_start() {
        let mut r = Routes::default();
        r.uris.insert("demo://static/a".into(), "one".into());
        r.templates.insert("demo://".into(), "two".into());
        r.templates
            .insert(template_start("demo://dynamic/{id}").into(), "three".into());
        assert_eq!(r.route("demo://static/a").as_deref(), Some("one"));
        assert_eq!(r.route("demo://static/b").as_deref(), Some("two"));
        assert_eq!(r.route("demo://dynamic/7").as_deref(), Some("three"));
        assert_eq!(
            r.route("file:///etc/passwd"),
            None,
            "never a guessed server"
        );
        assert_eq!(template_start("{+path}"), "");
        assert_eq!(template_start("file:///{path}"), "file:///");
    }

    #[test]
    fn exposed_names_split_at_the_first_separator() {
        assert_eq!(split("fs__read_file"), Some(("fs", "read_file")));
        assert_eq!(split("fs__a__b"), Some(("fs", "a__b")));
        assert_eq!(split("fs__"), None);
        assert_eq!(split("__x"), None);
        assert_eq!(split("plain"), None);
    }
}
