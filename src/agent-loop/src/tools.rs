//! The tools the model is given, and how each runs: in the task's sandbox, through
//! [`Front`] — so the service judges every one (a command by the policy's command rules, a
//! write by its write rules with a Diff Card when asked) and records it on the audit log.
//! Nothing here decides whether a call may run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use luminaguard_api::types::ApprovalView;
use luminaguard_core::SandboxId;
use luminaguard_front::{Front, FrontError, Requested};
use luminaguard_llm::{ToolCall, ToolSpec};
use luminaguard_mcp::ops::{
    command_result, in_sandbox, list_argv, parse_listing, render_command, render_listing,
    run_bounded,
};
use luminaguard_service::ExecOptions;
use luminaguard_service::agent_event::AgentEvent;
use schemars::JsonSchema;

use crate::mcp::McpTools;
use serde::{Deserialize, Serialize};

/// The tools' names.
pub const SHELL: &str = "shell";
pub const READ_FILE: &str = "read_file";
pub const WRITE_FILE: &str = "write_file";
pub const EDIT_FILE: &str = "edit_file";
pub const LIST_FILES: &str = "list_files";

/// `shell`'s arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Shell {
    /// A shell command line, run by `sh -c` in /workspace.
    pub command: String,
    /// Seconds before the command and everything it started are killed (default 120).
    #[serde(default)]
    #[schemars(range(min = 1, max = 3600))]
    pub timeout: Option<u64>,
}

/// `read_file`'s arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadFile {
    /// The file: relative to /workspace, or absolute.
    pub path: String,
}

/// `write_file`'s arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WriteFile {
    /// The file: relative to /workspace, or absolute. Its directory must exist.
    pub path: String,
    /// The whole new content (UTF-8 text).
    pub content: String,
}

/// `edit_file`'s arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EditFile {
    /// The file: relative to /workspace, or absolute.
    pub path: String,
    /// The exact text to replace; it must occur exactly once unless `replace_all` is true.
    pub old_text: String,
    /// What replaces it.
    pub new_text: String,
    /// Replace every occurrence.
    #[serde(default)]
    pub replace_all: bool,
}

/// `list_files`'s arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListFiles {
    /// The directory (default /workspace).
    #[serde(default)]
    pub path: Option<String>,
}

fn spec<T: JsonSchema>(name: &str, description: &str) -> ToolSpec {
    let mut schema = serde_json::to_value(schemars::schema_for!(T)).unwrap_or_default();
    if let Some(o) = schema.as_object_mut() {
        // Providers want the object schema itself, not a document about it.
        o.remove("$schema");
        o.remove("title");
    }
    ToolSpec {
        name: name.to_owned(),
        description: description.to_owned(),
        input_schema: schema,
    }
}

/// The built-in tools, as offered to the model.
pub fn builtin() -> Vec<ToolSpec> {
    vec![
        spec::<Shell>(
            SHELL,
            "Run a shell command line in the task's sandbox (its working directory is \
             /workspace, the user's project). Returns the exit status and output.",
        ),
        spec::<ReadFile>(READ_FILE, "Read a text file from the sandbox."),
        spec::<WriteFile>(
            WRITE_FILE,
            "Create or replace a file in the sandbox with the given content.",
        ),
        spec::<EditFile>(
            EDIT_FILE,
            "Replace an exact piece of text in a file (it must occur exactly once unless \
             replace_all is set).",
        ),
        spec::<ListFiles>(LIST_FILES, "List a directory of the sandbox."),
    ]
}

/// How a call went, as far as the policy is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// It ran (whatever its own result).
    Allowed,
    /// The service refused it: the policy denied it, or a person did (or nobody could be
    /// asked).
    Refused,
    /// It never reached the service: the model's arguments were not valid, or the tool is
    /// unknown.
    Invalid,
    /// The service or the sandbox failed it.
    Failed,
}

/// A tool call's result, as the model is told it.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub content: String,
    pub is_error: bool,
    pub decision: Decision,
    /// The Diff Card a person approved it under, when asked (writes).
    pub approval: Option<String>,
    /// Approvals the call waited on (through the daemon, where they are seen waiting).
    pub asked: Vec<String>,
    pub duration: Duration,
}

/// Settings of the tools.
#[derive(Debug, Clone, Copy)]
pub struct ToolLimits {
    /// The most of a tool result the model is sent (head and tail kept, the cut marked).
    pub output: usize,
    /// The largest file read or written.
    pub max_file: u64,
    /// A shell command's timeout when the model gives none.
    pub shell_timeout: Duration,
}

impl Default for ToolLimits {
    fn default() -> Self {
        Self {
            output: 16 << 10,
            max_file: 1 << 20,
            shell_timeout: Duration::from_secs(120),
        }
    }
}

/// The tools of one task: its sandbox, through the front.
#[derive(Debug, Clone)]
pub struct Toolbox {
    front: Front,
    sandbox: SandboxId,
    limits: ToolLimits,
    pending: Option<tokio::sync::mpsc::UnboundedSender<ApprovalView>>,
    mcp: Option<Arc<McpTools>>,
}

/// How often a call looks for approvals it waits on when the service's events cannot be had.
const WATCH_EVERY: Duration = Duration::from_millis(250);

type Result<T> = std::result::Result<T, (String, Decision)>;

fn invalid(text: impl Into<String>) -> (String, Decision) {
    (text.into(), Decision::Invalid)
}

fn failed(what: &str, e: FrontError) -> (String, Decision) {
    let refused = e.code().as_deref() == Some("forbidden");
    let text = format!("{what}: {}", luminaguard_mcp::ops::error_text(&e));
    if refused {
        (
            format!("refused — {text}. Do not try to work around this refusal."),
            Decision::Refused,
        )
    } else {
        (text, Decision::Failed)
    }
}

fn args<T: serde::de::DeserializeOwned>(call: &ToolCall) -> Result<T> {
    if let Some(why) = &call.malformed {
        return Err(invalid(format!(
            "the arguments of this {} call are not valid JSON ({why}); call it again with a \
             JSON object",
            call.name
        )));
    }
    serde_json::from_value(call.arguments.clone()).map_err(|e| {
        invalid(format!(
            "invalid arguments for {}: {e}; see the tool's schema",
            call.name
        ))
    })
}

impl Toolbox {
    pub fn new(front: Front, sandbox: SandboxId, limits: ToolLimits) -> Self {
        Self {
            front,
            sandbox,
            limits,
            pending: None,
            mcp: None,
        }
    }

    /// Also offers the tools of the gateway's MCP servers.
    pub fn with_mcp(mut self, mcp: Arc<McpTools>) -> Self {
        self.mcp = Some(mcp);
        self
    }

    pub fn mcp(&self) -> Option<&Arc<McpTools>> {
        self.mcp.as_ref()
    }

    pub fn sandbox(&self) -> &SandboxId {
        &self.sandbox
    }

    /// Records `event` on the audit log against the task's sandbox.
    pub async fn record(&self, event: &AgentEvent) -> std::result::Result<(), FrontError> {
        self.front.record_agent_event(&self.sandbox, event).await
    }

    /// Approvals a call waits on are sent to `to` as they are seen, for the front to put to
    /// its person: through the daemon every one (anyone may also answer with `luminaguard
    /// approvals` or the console); in-process the Diff Cards of asked writes (an action the
    /// service cannot preview it asks about at the terminal itself).
    pub fn report_pending(&mut self, to: tokio::sync::mpsc::UnboundedSender<ApprovalView>) {
        self.pending = Some(to);
    }

    /// Runs `work`, meanwhile watching for approvals on this sandbox (or its MCP servers')
    /// that it waits on: as the service announces them, or — if its events cannot be had —
    /// by listing the waiting approvals every [`WATCH_EVERY`].
    async fn watched<T>(&self, work: impl std::future::Future<Output = T>) -> (T, Vec<String>) {
        let mut seen = Vec::<String>::new();
        // Subscribing runs beside the work (through the daemon it is a request of its own);
        // once subscribed, one look finds what was asked meanwhile.
        let subscribe = self.front.approval_requests();
        let mut requests: Option<luminaguard_front::ApprovalRequests> = None;
        let mut subscribed = false;
        tokio::pin!(work, subscribe);
        loop {
            let got = tokio::select! {
                out = &mut work => return (out, seen),
                r = &mut subscribe, if !subscribed => {
                    subscribed = true;
                    requests = r.ok();
                    self.look(&mut seen).await;
                    continue;
                }
                got = async {
                    match requests.as_mut() {
                        Some(r) => r.next().await,
                        None => {
                            tokio::time::sleep(WATCH_EVERY).await;
                            Some(Requested::Missed)
                        }
                    }
                }, if subscribed => got,
            };
            match got {
                Some(Requested::Approval(id, sandbox)) => {
                    if self.ours(&sandbox)
                        && !seen.contains(&id)
                        && let Ok(a) = self.front.approval(&id, false).await
                    {
                        self.report(a, &mut seen);
                    }
                }
                Some(Requested::Missed) => self.look(&mut seen).await,
                None => {
                    // The stream ended (a daemon restarting, say): list from now on.
                    requests = None;
                    self.look(&mut seen).await;
                }
            }
        }
    }

    /// Whether `sandbox` is the task's, or one of its MCP servers'.
    fn ours(&self, sandbox: &str) -> bool {
        sandbox == self.sandbox.as_str() || self.mcp.as_ref().is_some_and(|m| m.owns(sandbox))
    }

    /// Lists the waiting approvals and reports those of ours not seen yet.
    async fn look(&self, seen: &mut Vec<String>) {
        if let Ok(list) = self.front.approvals().await {
            for a in list {
                if self.ours(&a.card.sandbox) {
                    self.report(a, seen);
                }
            }
        }
    }

    /// Reports pending approval `a` once.
    fn report(&self, a: ApprovalView, seen: &mut Vec<String>) {
        if a.state == "pending" && !seen.contains(&a.id) {
            seen.push(a.id.clone());
            if let Some(to) = &self.pending {
                let _ = to.send(a);
            }
        }
    }

    /// Runs `call`; whatever happens, the model gets a result to read.
    pub async fn call(&self, call: &ToolCall) -> Outcome {
        let started = Instant::now();
        let (done, asked) = self.watched(self.dispatch(call)).await;
        let (content, is_error, decision, approval) = match done {
            Ok((text, approval)) => (text, false, Decision::Allowed, approval),
            Err((text, decision)) => (text, true, decision, None),
        };
        Outcome {
            content: cut(content, self.limits.output),
            is_error,
            decision,
            approval,
            asked,
            duration: started.elapsed(),
        }
    }

    async fn dispatch(&self, call: &ToolCall) -> Result<(String, Option<String>)> {
        match call.name.as_str() {
            SHELL => self.shell(args(call)).await.map(|t| (t, None)),
            READ_FILE => self.read_file(args(call)).await.map(|t| (t, None)),
            WRITE_FILE => self.write_file(args(call)).await,
            EDIT_FILE => self.edit_file(args(call)).await,
            LIST_FILES => self.list_files(args(call)).await.map(|t| (t, None)),
            name if self.mcp.as_ref().is_some_and(|m| m.serves(name)) => {
                let mcp = self.mcp.as_ref().map(Arc::clone);
                match (mcp, &call.malformed) {
                    (_, Some(why)) => Err(invalid(format!(
                        "the arguments of this {name} call are not valid JSON ({why}); call it \
                         again with a JSON object"
                    ))),
                    (Some(mcp), None) => mcp.call(&self.front, call).await.map(|t| (t, None)),
                    (None, None) => Err(invalid(format!("there is no tool {name:?}"))),
                }
            }
            other => Err(invalid(format!(
                "there is no tool {other:?}; the tools are {SHELL}, {READ_FILE}, {WRITE_FILE}, \
                 {EDIT_FILE}, {LIST_FILES}{}",
                if self.mcp.is_some() {
                    " and the MCP servers' (SERVER__TOOL)"
                } else {
                    ""
                }
            ))),
        }
    }

    async fn shell(&self, a: Result<Shell>) -> Result<String> {
        let a = a?;
        let opts = ExecOptions {
            argv: vec!["sh".into(), "-c".into(), a.command],
            cwd: Some("/workspace".into()),
            timeout: Some(
                a.timeout
                    .map(Duration::from_secs)
                    .unwrap_or(self.limits.shell_timeout),
            ),
            ..ExecOptions::default()
        };
        let (report, out, err) = run_bounded(
            &self.front,
            &self.sandbox,
            opts,
            None,
            self.limits.output,
            &|_| {},
        )
        .await
        .map_err(|e| failed("the command did not run", e))?;
        let result = command_result(&report, &out, &err, &self.sandbox, Vec::new());
        Ok(render_command(&result, &report))
    }

    async fn read(&self, path: &str) -> Result<String> {
        let bytes = self
            .front
            .read(&self.sandbox, path, self.limits.max_file)
            .await
            .map_err(|e| failed(&format!("reading {path}"), e))?;
        String::from_utf8(bytes).map_err(|e| {
            invalid(format!(
                "{path} is not UTF-8 text ({} bytes); use the shell to inspect it",
                e.as_bytes().len()
            ))
        })
    }

    async fn read_file(&self, a: Result<ReadFile>) -> Result<String> {
        let path = in_sandbox(&a?.path);
        self.read(&path).await
    }

    async fn put(&self, path: &str, content: String) -> Result<(String, Option<String>)> {
        let written = self
            .front
            .put_file(&self.sandbox, path, content.into_bytes())
            .await
            .map_err(|e| failed(&format!("writing {path}"), e))?;
        let approved = written
            .approval
            .as_deref()
            .map(|a| format!(" (approved by a person: {a})"))
            .unwrap_or_default();
        Ok((
            format!("wrote {} bytes to {path}{approved}", written.bytes),
            written.approval,
        ))
    }

    async fn write_file(&self, a: Result<WriteFile>) -> Result<(String, Option<String>)> {
        let a = a?;
        self.check_size(&a.path, a.content.len())?;
        self.put(&in_sandbox(&a.path), a.content).await
    }

    fn check_size(&self, path: &str, len: usize) -> Result<()> {
        if len as u64 > self.limits.max_file {
            return Err(invalid(format!(
                "{len} bytes for {path}: the limit is {} bytes",
                self.limits.max_file
            )));
        }
        Ok(())
    }

    async fn edit_file(&self, a: Result<EditFile>) -> Result<(String, Option<String>)> {
        let a = a?;
        if a.old_text.is_empty() {
            return Err(invalid("old_text is empty: give the exact text to replace"));
        }
        let path = in_sandbox(&a.path);
        let before = self.read(&path).await?;
        let count = before.matches(&a.old_text).count();
        let after = match (count, a.replace_all) {
            (0, _) => {
                return Err(invalid(format!(
                    "old_text does not occur in {path}; read the file and give its exact text"
                )));
            }
            (1, _) | (_, true) => before.replace(&a.old_text, &a.new_text),
            (n, false) => {
                return Err(invalid(format!(
                    "old_text occurs {n} times in {path}: give more context to make it unique, \
                     or set replace_all"
                )));
            }
        };
        self.check_size(&path, after.len())?;
        let (text, approval) = self.put(&path, after).await?;
        Ok((format!("replaced {count} occurrence(s); {text}"), approval))
    }

    async fn list_files(&self, a: Result<ListFiles>) -> Result<String> {
        let path = in_sandbox(a?.path.as_deref().unwrap_or("/workspace"));
        let opts = ExecOptions {
            argv: list_argv(&path),
            ..ExecOptions::default()
        };
        let (report, out, err) = run_bounded(
            &self.front,
            &self.sandbox,
            opts,
            None,
            self.limits.output.max(64 << 10),
            &|_| {},
        )
        .await
        .map_err(|e| failed(&format!("listing {path}"), e))?;
        if report.shell_code() != 0 {
            return Err((
                format!(
                    "listing {path} failed (status {}): {}",
                    report.shell_code(),
                    err.text().trim()
                ),
                Decision::Allowed,
            ));
        }
        let (entries, truncated) = parse_listing(&out.text(), out.truncated());
        Ok(render_listing(&path, &entries, truncated))
    }
}

/// `text` cut to at most `limit` bytes: its head and tail, the cut marked.
pub fn cut(text: String, limit: usize) -> String {
    if text.len() <= limit {
        return text;
    }
    let half = limit / 2;
    let mut head_end = half;
    while !text.is_char_boundary(head_end) {
        head_end -= 1;
    }
    let mut tail_start = text.len() - half;
    while !text.is_char_boundary(tail_start) {
        tail_start += 1;
    }
    format!(
        "{}\n[... {} bytes cut here: the result was longer than {limit} bytes ...]\n{}",
        &text[..head_end],
        tail_start - head_end,
        &text[tail_start..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn every_tool_has_an_object_schema() {
        for t in builtin() {
            assert_eq!(t.input_schema["type"], "object", "{}", t.name);
            assert!(t.input_schema.get("$schema").is_none());
        }
    }

    proptest! {
        #[test]
        fn a_cut_is_bounded_and_keeps_both_ends(text in "\\PC{0,400}", limit in 8usize..200) {
            let out = cut(text.clone(), limit);
            if text.len() <= limit {
                prop_assert_eq!(out, text);
            } else {
                prop_assert!(out.len() <= limit + 100, "{}", out.len());
                prop_assert!(out.contains("bytes cut here"));
                let head: String = text.chars().take(1).collect();
                prop_assert!(out.starts_with(&head) || limit / 2 < head.len());
            }
        }
    }
}
