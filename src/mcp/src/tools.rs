//! The tools: what each takes and gives back, as serde types whose JSON Schemas (made by
//! `schemars`) are the tools' input and output schemas — one definition for the wire and the
//! schema, so the two cannot drift.

use std::collections::BTreeMap;
use std::sync::Arc;

use rmcp::model::{JsonObject, Tool, ToolAnnotations};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The tools' names.
pub const RUN_COMMAND: &str = "run_command";
pub const READ_FILE: &str = "read_file";
pub const WRITE_FILE: &str = "write_file";
pub const LIST_FILES: &str = "list_files";
pub const DELETE_FILE: &str = "delete_file";
pub const SANDBOX_CREATE: &str = "sandbox_create";
pub const SANDBOX_DESTROY: &str = "sandbox_destroy";
pub const SANDBOX_LIST: &str = "sandbox_list";
pub const APPROVAL_WAIT: &str = "approval_wait";

/// The `status` of a call that waits for a person.
pub const PENDING_APPROVAL: &str = "pending_approval";

/// What a call that waits for a person past the server's `--pending-after` answers (every
/// tool that may be asked about can answer this instead of its result).
#[derive(Debug, Serialize, JsonSchema)]
pub struct Pending {
    /// `pending_approval`.
    pub status: String,
    /// The approval a person answers (`luminaguard approvals approve|deny ID`); pass it to
    /// `approval_wait` to get the call's result.
    pub approval_id: String,
    /// The tool called.
    pub tool: String,
}

/// `approval_wait`'s arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApprovalWait {
    /// The `approval_id` of a `pending_approval` result.
    pub approval_id: String,
}

/// What `approval_wait` gives back: the resumed call's result, or that it still waits.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Resumed {
    /// `done` (the call ended: its result is `result`) or `pending_approval` (still waiting).
    pub status: String,
    /// The tool of the call resumed.
    pub tool: String,
    /// The call's own result (as that tool's output schema says), when done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Map<String, serde_json::Value>>,
    /// The approval it still waits on, when pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_id: Option<String>,
}

/// `run_command`'s arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunCommand {
    /// A shell command line, run by `sh -c` (give this or `argv`).
    #[serde(default)]
    pub command: Option<String>,
    /// The program and its arguments, run without a shell (give this or `command`).
    #[serde(default)]
    pub argv: Option<Vec<String>>,
    /// Working directory in the sandbox (default /workspace).
    #[serde(default)]
    pub cwd: Option<String>,
    /// Environment variables added to the sandbox's.
    #[serde(default)]
    pub env: Option<BTreeMap<String, String>>,
    /// Seconds before the command's whole process tree is killed (default: the sandbox's).
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub timeout: Option<u64>,
    /// Which of this session's sandboxes (default: the session's own, made on first use).
    #[serde(default)]
    pub sandbox_id: Option<String>,
}

/// How a command ended, with its output.
#[derive(Debug, Serialize, JsonSchema)]
pub struct CommandResult {
    /// The exit status (absent when a signal ended it).
    pub exit_code: Option<i32>,
    /// The signal that ended it, if one did.
    pub signal: Option<i32>,
    /// What it printed on stdout (head and tail, when longer than the limit).
    pub stdout: String,
    /// What it printed on stderr (head and tail, when longer than the limit).
    pub stderr: String,
    /// Whether output was cut (the middle of stdout or stderr dropped, marked where).
    pub truncated: bool,
    /// Killed for running past its timeout.
    pub timed_out: bool,
    pub duration_ms: u64,
    /// The sandbox it ran in.
    pub sandbox_id: String,
    /// People asked about it while it was held (approval id and how each ended).
    pub approvals: Vec<String>,
}

/// `read_file`'s arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadFile {
    /// Absolute path in the sandbox, or relative to /workspace.
    pub path: String,
    #[serde(default)]
    pub sandbox_id: Option<String>,
}

/// A file's content.
#[derive(Debug, Serialize, JsonSchema)]
pub struct FileContent {
    pub path: String,
    /// The content: text as it is, anything that is not UTF-8 as base64.
    pub content: String,
    /// `utf-8` or `base64`.
    pub encoding: String,
    pub size: u64,
    pub sandbox_id: String,
}

/// `write_file`'s arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WriteFile {
    /// Absolute path in the sandbox, or relative to /workspace; its directory must exist.
    pub path: String,
    /// The new content (UTF-8 text), replacing the file's.
    pub content: String,
    #[serde(default)]
    pub sandbox_id: Option<String>,
}

/// A file written.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Written {
    pub path: String,
    pub bytes: u64,
    pub sandbox_id: String,
    /// People asked about it (approval id and how each ended).
    pub approvals: Vec<String>,
}

/// `list_files`' arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListFiles {
    /// A directory: absolute in the sandbox, or relative to /workspace (default /workspace).
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub sandbox_id: Option<String>,
}

/// A directory's entries.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Listing {
    pub path: String,
    pub entries: Vec<Entry>,
    /// More entries than the limit: the rest are not listed.
    pub truncated: bool,
    pub sandbox_id: String,
}

/// One entry of a directory.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Entry {
    pub name: String,
    /// `file`, `dir`, `symlink` or `other`.
    pub kind: String,
    pub size: u64,
    /// Permission bits, octal (e.g. `644`).
    pub mode: String,
}

/// `delete_file`'s arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeleteFile {
    /// A file or symbolic link (not a directory): absolute, or relative to /workspace.
    pub path: String,
    #[serde(default)]
    pub sandbox_id: Option<String>,
}

/// A file deleted.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Deleted {
    pub path: String,
    pub sandbox_id: String,
    pub approvals: Vec<String>,
}

/// `sandbox_create`'s arguments: none (the server's settings apply).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SandboxCreate {}

/// `sandbox_destroy`'s arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SandboxDestroy {
    /// One of this session's sandboxes.
    pub sandbox_id: String,
}

/// `sandbox_list`'s arguments: none.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SandboxList {}

/// A sandbox of this session.
#[derive(Debug, Serialize, JsonSchema)]
pub struct SandboxInfo {
    pub sandbox_id: String,
    /// The session's own (what the tools use when no `sandbox_id` is given).
    pub default: bool,
}

/// This session's sandboxes.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Sandboxes {
    pub sandboxes: Vec<SandboxInfo>,
}

/// A sandbox made or destroyed.
#[derive(Debug, Serialize, JsonSchema)]
pub struct SandboxDone {
    pub sandbox_id: String,
}

/// `T`'s schema as a JSON object: for inputs, what deserializes; for outputs, what
/// serializes.
fn schema<T: JsonSchema>(output: bool) -> Arc<JsonObject> {
    let mut settings = schemars::generate::SchemaSettings::draft2020_12();
    if output {
        settings = settings.for_serialize();
    }
    let schema = settings.into_generator().into_root_schema_for::<T>();
    match serde_json::to_value(schema) {
        Ok(serde_json::Value::Object(o)) => Arc::new(o),
        // A derived schema is always an object; an empty schema accepts anything.
        _ => Arc::new(JsonObject::new()),
    }
}

fn tool<I: JsonSchema, O: JsonSchema>(
    name: &'static str,
    title: &str,
    description: &'static str,
    annotations: ToolAnnotations,
) -> Tool {
    Tool::new_with_raw(name, Some(description.into()), schema::<I>(false))
        .with_title(title)
        .with_raw_output_schema(schema::<O>(true))
        .with_annotations(annotations)
}

/// A tool that may be asked about: its result, or [`Pending`].
fn asked_tool<I: JsonSchema, O: JsonSchema>(
    name: &'static str,
    title: &str,
    description: &'static str,
    annotations: ToolAnnotations,
) -> Tool {
    let output = either(&schema::<O>(true), &schema::<Pending>(true));
    tool::<I, O>(name, title, description, annotations).with_raw_output_schema(Arc::new(output))
}

/// A schema for an object that is `a` or `b` (each a root schema of an object), their
/// definitions shared.
fn either(a: &JsonObject, b: &JsonObject) -> JsonObject {
    let mut defs = JsonObject::new();
    let mut branch = |root: &JsonObject| {
        let mut root = root.clone();
        root.remove("$schema");
        if let Some(serde_json::Value::Object(d)) = root.remove("$defs") {
            defs.extend(d);
        }
        serde_json::Value::Object(root)
    };
    let (a, b) = (branch(a), branch(b));
    let mut out = JsonObject::new();
    out.insert(
        "$schema".into(),
        "https://json-schema.org/draft/2020-12/schema".into(),
    );
    out.insert("type".into(), "object".into());
    out.insert("anyOf".into(), serde_json::Value::Array(vec![a, b]));
    if !defs.is_empty() {
        out.insert("$defs".into(), serde_json::Value::Object(defs));
    }
    out
}

/// The tools, as `tools/list` gives them. Annotations: only `read_file`, `list_files` and
/// `sandbox_list` change nothing; commands, writes and deletes may destroy (what is in the
/// sandbox's workspace is the host directory it shares); nothing reaches past the sandbox
/// unless the server was given a network (`--net`), so `run_command` is open-world only then.
pub fn all(network: bool) -> Vec<Tool> {
    let reads = |title: &str| {
        ToolAnnotations::with_title(title)
            .read_only(true)
            .open_world(false)
    };
    let changes = |title: &str, destructive: bool, idempotent: bool| {
        ToolAnnotations::with_title(title)
            .read_only(false)
            .destructive(destructive)
            .idempotent(idempotent)
            .open_world(false)
    };
    vec![
        asked_tool::<RunCommand, CommandResult>(
            RUN_COMMAND,
            "Run a command in the sandbox",
            "Runs a command in this session's sandbox (state is kept between calls; /workspace \
             is the shared workspace) and returns its exit status and output (long output: head \
             and tail). The policy judges it first: a denied command is refused with the rule \
             that denied it; one the policy asks about waits for a person's approval.",
            changes("Run a command in the sandbox", true, false).open_world(network),
        ),
        tool::<ReadFile, FileContent>(
            READ_FILE,
            "Read a file in the sandbox",
            "Reads a file of this session's sandbox (text as is, anything else as base64).",
            reads("Read a file in the sandbox"),
        ),
        asked_tool::<WriteFile, Written>(
            WRITE_FILE,
            "Write a file in the sandbox",
            "Creates or replaces a file of this session's sandbox. The policy judges it as the \
             write it is (e.g. repository metadata or files outside the workspace are asked \
             about).",
            changes("Write a file in the sandbox", true, true),
        ),
        asked_tool::<ListFiles, Listing>(
            LIST_FILES,
            "List a directory in the sandbox",
            "Lists a directory of this session's sandbox (default /workspace): name, kind, size \
             and mode of each entry.",
            reads("List a directory in the sandbox"),
        ),
        asked_tool::<DeleteFile, Deleted>(
            DELETE_FILE,
            "Delete a file in the sandbox",
            "Deletes a file or symbolic link of this session's sandbox, under the policy.",
            changes("Delete a file in the sandbox", true, true),
        ),
        tool::<SandboxCreate, SandboxDone>(
            SANDBOX_CREATE,
            "Create another sandbox",
            "Makes another sandbox with the server's settings, for this session (destroyed \
             with it); pass its id as `sandbox_id` to the other tools.",
            changes("Create another sandbox", false, false),
        ),
        tool::<SandboxDestroy, SandboxDone>(
            SANDBOX_DESTROY,
            "Destroy a sandbox",
            "Destroys one of this session's sandboxes and everything in it (its workspace \
             directory on the host stays).",
            changes("Destroy a sandbox", true, true),
        ),
        tool::<SandboxList, Sandboxes>(
            SANDBOX_LIST,
            "List this session's sandboxes",
            "Lists this session's sandboxes.",
            reads("List this session's sandboxes"),
        ),
        tool::<ApprovalWait, Resumed>(
            APPROVAL_WAIT,
            "Wait for a person's approval",
            "Resumes a call that answered `pending_approval`: waits for the person's answer \
             (again up to the server's bound) and gives the call's own result under `result` \
             — what the person approved runs; nothing else does, and nothing runs twice.",
            // What it resumes may change things (once a person approved it).
            changes("Wait for a person's approval", true, false),
        ),
    ]
}
