//! The bodies of the API's requests and responses. Requests refuse unknown fields (a typo is
//! an error, not a silently ignored setting); responses may grow fields.

use std::collections::BTreeMap;
use std::time::Duration;

use luminaguard_core::spec::duration_text;
use luminaguard_core::{BackendChoice, ByteSize, EgressRule, SandboxId};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::chunk::Chunk;

/// `GET /v1/health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `ok`.
    pub status: String,
    /// The daemon's version.
    pub version: String,
}

/// Every failed request's body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// A stable code: `not-found`, `conflict`, `invalid-spec`, `forbidden`, `host-unsupported`,
    /// `internal`, `too-large`, `bad-request`, `unauthorized`, `unavailable`.
    pub error: String,
    /// What failed, on what, in words.
    pub detail: String,
}

/// `POST /v1/sandboxes`: the settings of `luminaguard sandbox create`. Each absent field takes
/// the daemon's configured default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSandbox {
    /// The sandbox's id: 1–64 of letters, digits, `-`, `_` (default: generated).
    #[schema(value_type = Option<String>)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<SandboxId>,
    /// `auto`, `process`, `qemu` or `firecracker`.
    #[schema(value_type = Option<String>)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<BackendChoice>,
    /// Memory limit, e.g. `512M`.
    #[schema(value_type = Option<String>)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<ByteSize>,
    /// Most processes and threads at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<u32>,
    /// CPU quota in whole CPUs (a microVM's vCPUs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<u32>,
    /// Default per-command timeout, e.g. `30s`.
    #[schema(value_type = Option<String>)]
    #[serde(
        default,
        with = "duration_text::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<Duration>,
    /// The sandbox is destroyed this long after it starts, e.g. `15m`.
    #[schema(value_type = Option<String>)]
    #[serde(
        default,
        with = "duration_text::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub lifetime: Option<Duration>,
    /// A host directory the caller owns, shared read-write at `/workspace`: an absolute path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<String>,
    /// Host directories or files shown read-only in the sandbox (process backend only; at most
    /// 16). A caller other than root and the daemon's user may mount only what it could read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<MountBody>,
    /// Egress allowed: addresses, CIDRs, `ADDR:PORT`, domains (`NAME`, `NAME:PORT`,
    /// `*.NAME`). Empty: no network at all.
    #[schema(value_type = Vec<String>)]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub net: Vec<EgressRule>,
    /// Egress never allowed, whatever `net` allows.
    #[schema(value_type = Vec<String>)]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub net_deny: Vec<EgressRule>,
    /// Guest image for a microVM: a digest or a unique prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Restore from this template instead of booting (Firecracker).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// Take a ready sandbox from this warm pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// Without memory, PID and CPU limits (only ever on explicit request).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_cgroup: bool,
    /// A speculative sandbox: its workspace is an overlay whose writes wait for a person's
    /// approval of their Diff Card (`POST /v1/sandboxes/{id}/review`, or the `card` event of
    /// `POST /v1/run`). Needs `workspace`; has no network.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub review: bool,
}

/// A read-only mount: a host path shown at `at` in the sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MountBody {
    /// An absolute host path: a directory or a regular file (resolved, links followed, when
    /// the sandbox is made; listings show the resolved path).
    pub host: String,
    /// Where the sandbox sees it: absolute, normalized, not `/`, not at, inside or above
    /// `/proc`, `/sys`, `/dev`, `/workspace`, `/run/luminaguard` or the host's system
    /// directories (`/usr`, `/bin`, `/sbin`, `/lib*`, `/etc`), nor at or inside another mount.
    pub at: String,
}

impl From<luminaguard_core::ReadOnlyMount> for MountBody {
    fn from(m: luminaguard_core::ReadOnlyMount) -> Self {
        Self {
            host: m.host.display().to_string(),
            at: m.at.display().to_string(),
        }
    }
}

impl From<MountBody> for luminaguard_core::ReadOnlyMount {
    fn from(m: MountBody) -> Self {
        Self {
            host: m.host.into(),
            at: m.at.into(),
        }
    }
}

/// A sandbox, as `luminaguard sandbox ls --json` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SandboxView {
    pub id: String,
    /// `process`, `qemu`, `firecracker`.
    pub backend: String,
    /// How a microVM's guest code runs: `kvm` or `tcg`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accel: Option<String>,
    /// `starting`, `running`, `expired`, `exited`.
    pub state: String,
    /// Lives across commands (every sandbox made through the API does).
    pub persistent: bool,
    /// The uid it belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<u32>,
    pub age_ms: u64,
    /// `null`: no lifetime.
    #[serde(default)]
    pub expires_in_ms: Option<u64>,
    /// The warm pool it waits in (only the daemon's own user and root see those).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// Its read-only mounts (host paths resolved).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<MountBody>,
}

/// `POST /v1/sandboxes/{id}/exec`: one command.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecBody {
    /// The program and its arguments (the program is looked up on the sandbox's `PATH`).
    pub argv: Vec<String>,
    /// Added to (and overriding) the sandbox's environment.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Working directory (default `/workspace`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Kill the command's process tree after this long (default: the sandbox's).
    #[schema(value_type = Option<String>)]
    #[serde(
        default,
        with = "duration_text::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<Duration>,
    /// The command's whole stdin, as text (default: empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<String>,
    /// The command's stdin stays open for `PUT /v1/sandboxes/{id}/execs/{exec}/stdin` (the
    /// exec id is in the `started` event); it ends with that request's body.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stdin_stream: bool,
}

/// `POST /v1/run`: a disposable sandbox for one command, destroyed when it ends (or when the
/// client goes away).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunBody {
    /// The program and its arguments.
    pub argv: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    #[schema(value_type = Option<String>)]
    #[serde(
        default,
        with = "duration_text::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stdin_stream: bool,
    /// The sandbox's settings (`name`: a front-end that must know the id before the sandbox
    /// exists; not with `pool`, whose sandboxes have theirs).
    #[serde(default)]
    pub sandbox: CreateSandbox,
}

impl RunBody {
    /// The sandbox's settings and the command.
    pub fn split(self) -> (CreateSandbox, ExecBody) {
        (
            self.sandbox,
            ExecBody {
                argv: self.argv,
                env: self.env,
                cwd: self.cwd,
                timeout: self.timeout,
                stdin: self.stdin,
                stdin_stream: self.stdin_stream,
            },
        )
    }
}

/// One line of an exec's response (`application/x-ndjson`): `started`, then `stdout` and
/// `stderr` chunks as the command prints them, then one `exit` — or one `error` if the sandbox
/// failed underneath the command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ExecEvent {
    Started {
        /// The command's pid in the sandbox.
        pid: u32,
        /// The exec's id, for its stdin stream.
        exec: String,
        /// The sandbox it runs in (for `POST /v1/run`, the one made for it).
        sandbox: String,
    },
    Stdout(Chunk),
    Stderr(Chunk),
    Exit(ExitView),
    Error(ErrorBody),
    /// `POST /v1/run` of a speculative sandbox, after `exit`: the Diff Card of what the command
    /// changed, waiting for an answer (`POST /v1/approvals/{id}`).
    Card(CardView),
    /// After `card` (when it has an approval): how it was answered. The response ends after it
    /// — and a client that goes away before it withdraws the card.
    Decision(ApprovalView),
}

/// A Diff Card: what a speculative run changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CardView {
    /// The approval a person answers; absent when the run changed nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<String>,
    pub sandbox: String,
    /// The real workspace the change set would be applied to (or the action would write).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<String>,
    /// For an action asked about before it runs, because it could not be previewed (a command
    /// on a workspace it writes directly, a sandbox's network): what it is. Absent on a Diff
    /// Card of a speculative run's changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<ActionView>,
    /// The change set (empty for an action): `entries` (path, kind, before, after), `digest`,
    /// `summary`.
    #[schema(value_type = Object)]
    pub changes: serde_json::Value,
    /// The card as a terminal shows it (diffs included, summarised when large).
    pub text: String,
    /// Why a person is asked: the policy's decisions that asked (empty: a review was asked for).
    #[serde(default)]
    pub asked: Vec<String>,
    /// The head of the run's latest command's output (stdout and stderr as they came, lossy
    /// UTF-8, at most 4 KiB); `output_cut`: there was more.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub output_head: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub output_cut: bool,
    /// What the run tried on the network, refused (a preview has none): program, socket
    /// family and count; destinations are not known.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub network_attempts: Vec<String>,
    /// The policy the card was made under: approved under another, nothing is applied.
    pub policy_digest: String,
    /// Unanswered by then, the card is denied.
    pub expires_unix_ms: u64,
}

impl CardView {
    /// The change set's digest (what an approval may name to be sure of what it approves).
    pub fn digest(&self) -> &str {
        self.changes
            .get("digest")
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default()
    }

    /// How many changes the card lists.
    pub fn len(&self) -> usize {
        self.changes
            .get("entries")
            .and_then(serde_json::Value::as_array)
            .map_or(0, Vec::len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What the card is about, in one line.
    pub fn what(&self) -> String {
        let ws = self.workspace.as_deref().unwrap_or("-");
        match &self.action {
            Some(a) if a.kind == "network" => format!("reach {}", a.network.join(", ")),
            Some(a) if a.kind == "write" => {
                format!("write {}", a.path.as_deref().unwrap_or_default())
            }
            Some(a) => format!(
                "run {} on {ws}",
                a.argv.as_deref().unwrap_or_default().join(" ")
            ),
            None => format!("{} changes to {ws}", self.len()),
        }
    }
}

/// An action asked about before it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ActionView {
    /// `exec`, `write` or `network`.
    pub kind: String,
    /// The command, for `exec`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub argv: Option<Vec<String>>,
    /// The file, for `write`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Egress destinations it would reach, for `network`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub network: Vec<String>,
    /// The server, tool and arguments, for `tool-call` (an MCP gateway's call).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<ToolCallBody>,
    /// Why it could not be previewed.
    pub unpreviewable: String,
}

/// `GET /v1/approvals[/{id}]`: a Diff Card waiting for a person's answer, or answered not
/// long ago.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ApprovalView {
    /// `ap-` and 16 hex digits.
    pub id: String,
    /// Whose action it is (they and root may answer it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<u32>,
    /// `pending`, `approved` (an action: it runs), `applied` (a change set), `apply-refused`,
    /// `denied`, `expired`, `withdrawn`.
    pub state: String,
    pub requested_unix_ms: u64,
    pub card: CardView,
    /// What answering *always* would add to the policy file (absent: it cannot be approved
    /// always — a Diff Card, or a preset policy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub always: Option<String>,
    /// How it ended (absent while pending): `state`, `by` (`uid`, `via`), and `applied`,
    /// `reason` or `code` as the state has them.
    #[schema(value_type = Option<Object>)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<serde_json::Value>,
    /// The outcome as a sentence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome_text: Option<String>,
}

/// `POST /v1/approvals/{id}`: a person's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecideBody {
    /// `approve` or `deny`.
    pub decision: String,
    /// Why (on the audit record).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The change set's digest the person saw: if given and not the card's, nothing happens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// `once` (default); `session`: approve this action and the same action again in the
    /// same sandbox without asking; `always`: add it to the policy file as a standing approval
    /// (the card's `always` shows the entry). The last two only for actions asked about before
    /// they run; `always` only by root or the daemon's user, with a policy file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

/// How a command ended.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ExitView {
    /// Exit code, when it exited.
    pub code: Option<i32>,
    /// The signal that killed it, when one did.
    pub signal: Option<i32>,
    /// Killed for running past its timeout.
    pub timed_out: bool,
    /// Killed because the sandbox is stopping, or the client went away.
    pub cancelled: bool,
    /// Output beyond the limit was dropped.
    pub output_truncated: bool,
    pub duration_ms: u64,
    /// Killed by the kernel's OOM killer.
    #[serde(default)]
    pub oom_killed: bool,
    /// The sandbox's memory limit, when `oom_killed`.
    #[schema(value_type = Option<String>)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_limit: Option<ByteSize>,
    /// System calls the seccomp policy denied while it ran, with counts.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub seccomp_denied: BTreeMap<String, u64>,
    /// Why the command never started (code 127: not found; 126: not runnable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ExitView {
    /// The shell convention: the code, or 128 + signal.
    pub fn shell_code(&self) -> i32 {
        match (self.code, self.signal) {
            (Some(c), _) => c,
            (None, Some(s)) => 128 + s,
            (None, None) => 255,
        }
    }
}

/// `GET /v1/events` (server-sent events): what happened to a sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct EventView {
    /// `created`, `destroyed`, `expired`, `oom-killed`, `approval-requested`,
    /// `approval-decided`.
    pub kind: String,
    pub sandbox: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<u32>,
    /// The approval, for `approval-*` events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<String>,
    pub unix_ms: u64,
}

/// `POST /v1/gc`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct GcView {
    /// Sandboxes (and network objects) removed.
    pub removed: Vec<String>,
    pub errors: Vec<String>,
}

/// `GET /v1/sandboxes/{id}/stat`: what is at a path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StatView {
    /// `file`, `dir`, `symlink`, `other`.
    pub kind: String,
    pub size: u64,
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime_unix_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symlink_target: Option<String>,
}

/// `PUT /v1/sandboxes/{id}/files`: what was written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Written {
    pub path: String,
    pub bytes: u64,
    /// The Diff Card a person approved an agent's write under (`judge=true`), if asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<String>,
}

/// `POST /v1/sandboxes/{id}/tool-calls`: an MCP tool call the caller is about to forward to
/// the server running in the sandbox (the MCP gateway), to be judged by the policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ToolCallBody {
    /// The server's name.
    pub server: String,
    /// The tool's name as the server knows it.
    pub tool: String,
    /// The arguments as they will be forwarded.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub arguments: serde_json::Value,
}

/// `POST /v1/sandboxes/{id}/tool-calls`: the call may be forwarded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ToolCallCleared {
    /// `allow`, or `ask` when a person approved it.
    pub verdict: String,
    /// The deciding rule's reason.
    pub reason: String,
    /// The card a person approved it under, if asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<String>,
}

/// `GET /v1/sandboxes/{id}/audit`: the system calls the sandbox's seccomp policy denied.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuditView {
    /// Whether denials are recorded (not in a microVM, whose boundary is the VM).
    pub enabled: bool,
    /// The most recent denials, oldest first.
    pub recent: Vec<DenialView>,
    /// Every denial since the sandbox started: `[system call, count]` pairs.
    #[schema(value_type = Vec<Vec<serde_json::Value>>)]
    pub counts: Vec<(String, u64)>,
    /// Denials older than those in `recent`, no longer kept in detail.
    pub dropped: u64,
}

/// One denied system call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DenialView {
    pub unix_ms: u64,
    /// Pid inside the sandbox.
    pub pid: u32,
    pub comm: String,
    pub syscall: String,
    /// The first argument (e.g. the address family of a denied `socket`).
    pub arg0: u64,
}

/// `POST /v1/agent/tasks`: an agent task the daemon runs (docs/agent.md): a model on a
/// provider proposes tool calls, each run in the task's sandbox under the daemon's policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentTaskBody {
    /// What to do.
    pub task: String,
    /// `openai` (OpenAI-compatible chat completions), `anthropic` or `ollama`.
    pub provider: String,
    /// The model's name, as the provider knows it.
    pub model: String,
    /// The API's base URL (default: the provider's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// The provider's key: held in the daemon's memory for the task, never written or logged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    /// Model answers at most (default 50).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_steps: Option<u32>,
    /// Tokens at most over the task, prompts and answers summed (default 2 000 000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    /// Tokens at most in one answer (default 4096).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<u32>,
    /// The whole task's time, e.g. `30m` (the default).
    #[schema(value_type = Option<String>)]
    #[serde(
        default,
        with = "duration_text::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub wall_time: Option<Duration>,
    /// The task's sandbox, as `POST /v1/sandboxes` takes it (its workspace, limits, network).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<CreateSandbox>,
}

/// An agent task, as the daemon lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AgentTaskView {
    /// `task-` and 12 hex digits.
    pub id: String,
    /// Whose task it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<u32>,
    /// `running`, `done`, `max_steps`, `max_tokens`, `wall_time`, `model_error`,
    /// `interrupted` (cancelled, or its process died), `failed`.
    pub status: String,
    pub task: String,
    pub provider: String,
    pub model: String,
    /// Its sandbox.
    pub sandbox: String,
    pub steps: u32,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub started_unix_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_unix_ms: Option<u64>,
    /// How it ended, in words (the model's last answer when done).
    #[serde(default)]
    pub message: String,
}

/// `GET /v1/agent/tasks/{id}`: a task and its transcript.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AgentTaskDetail {
    pub task: AgentTaskView,
    /// Its transcript's entries (each an object tagged by `type`: `started`, `user`, `turn`,
    /// `tool_result`, `retry`, `finished`).
    #[schema(value_type = Vec<Object>)]
    pub entries: Vec<serde_json::Value>,
}

/// `POST /v1/console/login`: a one-time login link to the web console.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ConsoleLink {
    /// Open it in a browser: it logs in once.
    pub url: String,
    /// Seconds it stays good.
    pub expires_in_secs: u64,
}
