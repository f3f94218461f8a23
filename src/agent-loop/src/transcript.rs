//! A task's transcript: what the model was asked, each answer, each tool call with the
//! decision on it and its result, each retry, and how the task ended — one JSON object per
//! line in `TASKS/ID/transcript.jsonl`, beside a `task.json` summary kept current. Both are
//! the user's alone (0600 in a 0700 directory). The provider's key is never written: nothing
//! that holds it reaches here.

use std::path::{Path, PathBuf};

use luminaguard_llm::{StopReason, ToolCall, Usage};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

use crate::tools::Decision;

/// A task's id: `task-` and 12 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TaskId(String);

impl TaskId {
    pub fn generate() -> Self {
        let mut b = [0u8; 6];
        // Without randomness the clock still tells tasks apart.
        if getrandom::fill(&mut b).is_err() {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default();
            b.copy_from_slice(&nanos.to_le_bytes()[..6]);
        }
        Self(format!(
            "task-{}",
            b.iter().map(|x| format!("{x:02x}")).collect::<String>()
        ))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for TaskId {
    type Error = TranscriptError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        let ok = s.len() == 17
            && s.starts_with("task-")
            && s[5..]
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if ok {
            Ok(Self(s))
        } else {
            Err(TranscriptError::BadId(s.chars().take(64).collect()))
        }
    }
}

impl From<TaskId> for String {
    fn from(id: TaskId) -> Self {
        id.0
    }
}

impl std::fmt::Display for TaskId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// How a task ended (or that it has not).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Still running (a task whose process died reads as [`Status::Interrupted`] from the
    /// [`Store`]).
    Running,
    /// The model finished its answer.
    Done,
    /// It ran out of steps.
    MaxSteps,
    /// It ran out of tokens.
    MaxTokens,
    /// It ran out of time.
    WallTime,
    /// The model could not be called (after retries).
    ModelError,
    /// Its process ended without finishing it (killed, or an interrupt).
    Interrupted,
    /// It could not go on: a step could not be put on the audit log (nothing runs
    /// unrecorded), or the sandbox failed.
    Failed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Done => "done",
            Self::MaxSteps => "max_steps",
            Self::MaxTokens => "max_tokens",
            Self::WallTime => "wall_time",
            Self::ModelError => "model_error",
            Self::Interrupted => "interrupted",
            Self::Failed => "failed",
        }
    }
}

/// What `task.json` says of a task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub id: TaskId,
    /// Whose task it is, in a store several users' tasks share (the daemon's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    pub task: String,
    pub provider: String,
    pub model: String,
    pub sandbox: String,
    /// How it ended. As read from the [`Store`]: `interrupted` when `task.json` says running
    /// but its process is gone.
    pub status: Status,
    /// Why it ended, in words (the model's last text when done; the error otherwise).
    #[serde(default)]
    pub message: String,
    pub steps: u32,
    pub usage: Usage,
    pub started_ms: u64,
    #[serde(default)]
    pub ended_ms: Option<u64>,
    /// The process running it (to tell a dead one from a running one).
    pub pid: u32,
}

impl Summary {
    /// The summary with its status as it is now: `interrupted` when it says running but its
    /// process is gone. It looks at `/proc`: blocking, so only [`read_summary`] calls it.
    fn with_status_now(mut self) -> Self {
        if self.status == Status::Running && !Path::new(&format!("/proc/{}", self.pid)).exists() {
            self.status = Status::Interrupted;
        }
        self
    }
}

/// One line of a transcript.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Entry {
    /// The task began: what the model is told.
    Started {
        task_id: TaskId,
        at_ms: u64,
        task: String,
        system: String,
        provider: String,
        model: String,
        endpoint: String,
        sandbox: String,
        tools: Vec<String>,
    },
    /// The person said more (a chat's later requests; the first is `Started`'s task).
    User { text: String },
    /// The model answered.
    Turn {
        step: u32,
        text: String,
        tool_calls: Vec<ToolCall>,
        stop_reason: StopReason,
        usage: Usage,
        duration_ms: u64,
    },
    /// A tool call ran (or was refused).
    ToolResult {
        step: u32,
        call_id: String,
        tool: String,
        decision: Decision,
        is_error: bool,
        content: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        approval: Option<String>,
        /// Approvals it waited on.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        asked: Vec<String>,
        duration_ms: u64,
    },
    /// A model call failed and was tried again.
    Retry {
        step: u32,
        attempt: u32,
        wait_ms: u64,
        code: String,
        message: String,
    },
    /// The task ended.
    Finished {
        status: Status,
        message: String,
        steps: u32,
        usage: Usage,
        duration_ms: u64,
    },
}

/// How a tool call went, in a line for a person: `allowed`, `refused, approved (ap-…)`,
/// `allowed, asked ap-… ap-…`.
pub fn how_it_went(decision: Decision, approval: Option<&str>, asked: &[String]) -> String {
    let mut how = format!("{decision:?}").to_lowercase();
    if let Some(a) = approval {
        how.push_str(&format!(", approved ({a})"));
    }
    if !asked.is_empty() {
        how.push_str(&format!(", asked {}", asked.join(" ")));
    }
    how
}

/// Why the transcripts could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum TranscriptError {
    #[error("{0:?} is not a task id (task- and 12 hex digits)")]
    BadId(String),
    #[error("no task {0}")]
    NotFound(TaskId),
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: line {line}: {source}", path.display())]
    Parse {
        path: PathBuf,
        line: usize,
        source: serde_json::Error,
    },
}

impl TranscriptError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadId(_) => "invalid-spec",
            Self::NotFound(_) => "not-found",
            Self::Io { .. } | Self::Parse { .. } => "internal",
        }
    }
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> TranscriptError {
    let path = path.to_owned();
    move |source| TranscriptError::Io { op, path, source }
}

/// Milliseconds since the epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

/// The directory of every task's transcript.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    /// The tasks directory of a configuration: `agent-tasks` beside the audit log.
    pub fn for_config(config: &luminaguard_core::Config) -> Self {
        let base = config
            .audit_dir
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| config.audit_dir.clone());
        Self::new(base.join("agent-tasks"))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Starts the transcript of a new task.
    pub async fn create(&self, summary: Summary) -> Result<Writer, TranscriptError> {
        let dir = self.dir.join(summary.id.as_str());
        tokio::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .await
            .map_err(io("creating", &self.dir))?;
        tokio::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .await
            .map_err(io("creating", &dir))?;
        let path = dir.join("transcript.jsonl");
        let file = tokio::fs::OpenOptions::new()
            .create_new(true)
            .append(true)
            .mode(0o600)
            .open(&path)
            .await
            .map_err(io("creating", &path))?;
        let mut writer = Writer {
            dir,
            path,
            file,
            summary,
        };
        writer.save_summary().await?;
        Ok(writer)
    }

    /// Every task, newest first (a directory that is not a task's is skipped).
    pub async fn list(&self) -> Result<Vec<Summary>, TranscriptError> {
        let mut out = Vec::new();
        let mut dir = match tokio::fs::read_dir(&self.dir).await {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(io("reading", &self.dir)(e)),
        };
        while let Some(entry) = dir.next_entry().await.map_err(io("reading", &self.dir))? {
            let Ok(id) = TaskId::try_from(entry.file_name().to_string_lossy().into_owned()) else {
                continue;
            };
            match self.summary(&id).await {
                Ok(s) => out.push(s),
                Err(e) => tracing::warn!(%id, error = %e, "skipping a task"),
            }
        }
        out.sort_by_key(|s| std::cmp::Reverse(s.started_ms));
        Ok(out)
    }

    /// Task `id`'s summary, its status as it is now (`interrupted` when its process died),
    /// read on a blocking thread.
    pub async fn summary(&self, id: &TaskId) -> Result<Summary, TranscriptError> {
        let path = self.dir.join(id.as_str()).join("task.json");
        let (read, id) = (path.clone(), id.clone());
        tokio::task::spawn_blocking(move || read_summary(read, id))
            .await
            .map_err(|e| io("reading", &path)(std::io::Error::other(e)))?
    }

    /// Task `id`'s transcript.
    pub async fn entries(&self, id: &TaskId) -> Result<Vec<Entry>, TranscriptError> {
        let path = self.dir.join(id.as_str()).join("transcript.jsonl");
        let text = match tokio::fs::read_to_string(&path).await {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(TranscriptError::NotFound(id.clone()));
            }
            Err(e) => return Err(io("reading", &path)(e)),
        };
        text.lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| {
                serde_json::from_str(l).map_err(|source| TranscriptError::Parse {
                    path: path.clone(),
                    line: i + 1,
                    source,
                })
            })
            .collect()
    }
}

/// A task's `task.json` at `path`, its status as it is now. Blocking (the file, `/proc`): for
/// [`Store::summary`]'s blocking thread.
#[allow(clippy::disallowed_methods)] // runs on a blocking thread (Store::summary)
fn read_summary(path: PathBuf, id: TaskId) -> Result<Summary, TranscriptError> {
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(TranscriptError::NotFound(id));
        }
        Err(e) => return Err(io("reading", &path)(e)),
    };
    let summary: Summary =
        serde_json::from_slice(&bytes).map_err(|source| TranscriptError::Parse {
            path,
            line: 1,
            source,
        })?;
    Ok(summary.with_status_now())
}

/// Appends to one task's transcript.
#[derive(Debug)]
pub struct Writer {
    dir: PathBuf,
    path: PathBuf,
    file: tokio::fs::File,
    summary: Summary,
}

impl Writer {
    pub fn summary(&self) -> &Summary {
        &self.summary
    }

    pub fn summary_mut(&mut self) -> &mut Summary {
        &mut self.summary
    }

    /// Appends `entry` (one line, written whole).
    pub async fn append(&mut self, entry: &Entry) -> Result<(), TranscriptError> {
        let mut line = serde_json::to_vec(entry).map_err(|source| TranscriptError::Parse {
            path: self.path.clone(),
            line: 0,
            source,
        })?;
        line.push(b'\n');
        self.file
            .write_all(&line)
            .await
            .map_err(io("writing", &self.path))
    }

    /// Writes the summary (atomically: a reader sees the old or the new).
    pub async fn save_summary(&mut self) -> Result<(), TranscriptError> {
        let path = self.dir.join("task.json");
        let tmp = self.dir.join(".task.json.tmp");
        let bytes =
            serde_json::to_vec_pretty(&self.summary).map_err(|source| TranscriptError::Parse {
                path: path.clone(),
                line: 0,
                source,
            })?;
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .await
            .map_err(io("writing", &tmp))?;
        file.write_all(&bytes).await.map_err(io("writing", &tmp))?;
        file.sync_data().await.map_err(io("writing", &tmp))?;
        tokio::fs::rename(&tmp, &path)
            .await
            .map_err(io("renaming", &path))
    }

    /// Flushes the transcript to disk.
    pub async fn sync(&mut self) -> Result<(), TranscriptError> {
        self.file
            .sync_data()
            .await
            .map_err(io("syncing", &self.path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked() {
        let id = TaskId::generate();
        assert!(TaskId::try_from(id.to_string()).is_ok());
        for bad in [
            "task-../../etc",
            "task-ABCDEF012345",
            "x",
            "task-0123456789ab/",
            "",
        ] {
            assert!(TaskId::try_from(bad.to_owned()).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn a_running_task_whose_process_is_gone_reads_as_interrupted() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path().join("tasks"));
        // No process has this pid (pid_max is at most 2^22).
        let cases = [
            (Status::Running, std::process::id(), Status::Running),
            (Status::Running, u32::MAX, Status::Interrupted),
            (Status::Done, u32::MAX, Status::Done),
        ];
        let mut ids = Vec::new();
        for (i, (status, pid, _)) in cases.iter().enumerate() {
            let writer = store
                .create(Summary {
                    id: TaskId::generate(),
                    uid: None,
                    task: "t".into(),
                    provider: "openai".into(),
                    model: "m".into(),
                    sandbox: "s".into(),
                    status: *status,
                    message: String::new(),
                    steps: 0,
                    usage: Usage::default(),
                    started_ms: i as u64,
                    ended_ms: None,
                    pid: *pid,
                })
                .await
                .unwrap();
            ids.push(writer.summary().id.clone());
        }
        let listed = store.list().await.unwrap();
        for ((_, _, now), id) in cases.iter().zip(&ids) {
            assert_eq!(store.summary(id).await.unwrap().status, *now, "{id}");
            let in_list = listed.iter().find(|s| &s.id == id).unwrap();
            assert_eq!(in_list.status, *now, "{id}");
        }
        let missing = TaskId::generate();
        assert!(matches!(
            store.summary(&missing).await,
            Err(TranscriptError::NotFound(id)) if id == missing
        ));
    }
}
