//! Pinned tool definitions: the defence against a server that changes what its tools say after
//! they were trusted ("rug pull", tool poisoning through a new description or schema).
//!
//! The first time a tool is seen its definition is pinned (trust on first use). Afterwards a
//! definition that differs from the pin is kept as *pending* and the tool is unusable until a
//! person approves it ([`PinStore::approve`]). The store is a JSON file, written atomically
//! (mode 0600, its directory 0700); every read-modify-write holds an exclusive `flock` on
//! `<file>.lock`, so gateways sharing it do not lose each other's pins. A file that cannot be
//! read is an error, never an empty store: that would trust every tool anew. Blocking I/O.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};

use rmcp::model::Tool;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

mod canonical;

pub use canonical::{ChangedField, canonical_json};
use canonical::{changes, now_ms};

/// The file format's version.
const VERSION: u32 = 1;

/// What of a tool is pinned: everything a model reads or a call is shaped by.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ToolDefinition {
    /// The tool's name (as the server gives it).
    pub name: String,
    /// Its title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Its description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The JSON Schema of its arguments.
    pub input_schema: Value,
    /// The JSON Schema of its structured result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_schema: Option<Value>,
    /// Its annotations (hints).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<Value>,
}

impl ToolDefinition {
    /// The pinned parts of `tool`.
    pub fn of(tool: &Tool) -> Result<Self, PinError> {
        let json = |what, e: serde_json::Error| PinError::Encode {
            what: format!("tool `{}` {what}", tool.name),
            message: e.to_string(),
        };
        Ok(Self {
            name: tool.name.to_string(),
            title: tool.title.clone(),
            description: tool.description.as_ref().map(ToString::to_string),
            input_schema: Value::Object((*tool.input_schema).clone()),
            output_schema: tool
                .output_schema
                .as_ref()
                .map(|s| Value::Object((**s).clone())),
            annotations: tool
                .annotations
                .as_ref()
                .map(serde_json::to_value)
                .transpose()
                .map_err(|e| json("annotations", e))?,
        })
    }

    /// The SHA-256 (hex) of its canonical JSON form.
    pub fn sha256(&self) -> Result<String, PinError> {
        let encode = |e: serde_json::Error| PinError::Encode {
            what: format!("tool `{}`", self.name),
            message: e.to_string(),
        };
        let value = serde_json::to_value(self).map_err(encode)?;
        let digest = Sha256::digest(canonical_json(&value).map_err(encode)?.as_bytes());
        Ok(digest.iter().map(|b| format!("{b:02x}")).collect())
    }
}

/// One pinned tool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pin {
    /// [`ToolDefinition::sha256`] of `definition`.
    pub sha256: String,
    /// The approved definition.
    pub definition: ToolDefinition,
    /// When the tool was first seen (unix ms).
    pub first_seen: u64,
    /// When `definition` was pinned (first seen, or approved; unix ms).
    pub approved: u64,
    /// A different definition the server now serves, awaiting approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<Pending>,
}

/// A changed definition awaiting approval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pending {
    /// Its hash.
    pub sha256: String,
    /// The definition.
    pub definition: ToolDefinition,
    /// When it was first served (unix ms).
    pub seen: u64,
}

/// The file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PinFile {
    version: u32,
    /// Server → tool → pin.
    servers: BTreeMap<String, BTreeMap<String, Pin>>,
}

/// How a served tool compares with its pin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinStatus {
    /// First seen: pinned now (trust on first use).
    New,
    /// As pinned.
    Same,
    /// Different from the pin: disabled until approved (kept as pending).
    Changed {
        /// What differs.
        changes: Vec<Change>,
    },
}

/// A served tool's status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinCheck {
    /// The tool's name.
    pub tool: String,
    /// Its status.
    pub status: PinStatus,
}

/// One changed part of a definition, with excerpts for display around the first difference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Which part.
    pub field: ChangedField,
    /// The pinned text (`None`: absent), abridged.
    pub old: Option<String>,
    /// The served text (`None`: absent), abridged.
    pub new: Option<String>,
}

/// A pending definition made the pinned one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approved {
    /// The server.
    pub server: String,
    /// The tool.
    pub tool: String,
    /// The hash now pinned.
    pub sha256: String,
}

/// A pin as `luminaguard mcp pins ls` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PinView {
    /// The server.
    pub server: String,
    /// The tool.
    pub tool: String,
    /// The first 12 hex digits of the pinned hash.
    pub sha256: String,
    /// When it was pinned (unix ms).
    pub approved: u64,
    /// What a pending definition changes (`None`: nothing pending).
    pub pending: Option<Vec<ChangedField>>,
}

/// Why the pin store cannot be used. Fails closed: nothing here is read as "no pins".
#[derive(Debug, thiserror::Error)]
pub enum PinError {
    /// Reading, writing or locking failed.
    #[error("pin store {}: cannot {action}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is not a pin store (refused, not replaced: that would re-trust every tool).
    #[error(
        "pin store {} is unreadable ({message}); fix or remove it by hand — removing it trusts \
         every tool again on first use",
        path.display()
    )]
    Corrupt { path: PathBuf, message: String },
    /// A definition could not be put in JSON.
    #[error("cannot encode {what}: {message}")]
    Encode { what: String, message: String },
    /// Nothing to approve.
    #[error("server `{server}` tool `{tool}` has no pending change to approve")]
    NothingPending { server: String, tool: String },
}

/// The pins, backed by their file.
#[derive(Debug)]
pub struct PinStore {
    path: PathBuf,
    pins: PinFile,
}

impl PinStore {
    /// Opens the store at `path` (no file yet: no pins). A file that is not a pin store is an
    /// error.
    pub fn open(path: &Path) -> Result<Self, PinError> {
        let pins = read(path)?;
        Ok(Self {
            path: path.to_owned(),
            pins,
        })
    }

    /// Where it is kept.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Compares `server`'s served `tools` with their pins: pins new ones, records changed ones
    /// as pending, drops a pending change a server no longer serves. Tools not served keep
    /// their pins. Saved before it returns. A name served twice with different definitions
    /// leaves the tool pending (unusable): the gateway should refuse such a list anyway.
    pub fn check(&mut self, server: &str, tools: &[Tool]) -> Result<Vec<PinCheck>, PinError> {
        let served = tools
            .iter()
            .map(|t| {
                let def = ToolDefinition::of(t)?;
                let hash = def.sha256()?;
                Ok((def, hash))
            })
            .collect::<Result<Vec<_>, PinError>>()?;
        self.update(|file| {
            let now = now_ms();
            let pins = file.servers.entry(server.to_owned()).or_default();
            let mut out = Vec::with_capacity(served.len());
            for (def, hash) in served {
                let tool = def.name.clone();
                let status = match pins.get_mut(&tool) {
                    None => {
                        let pin = Pin {
                            sha256: hash,
                            definition: def,
                            first_seen: now,
                            approved: now,
                            pending: None,
                        };
                        pins.insert(tool.clone(), pin);
                        PinStatus::New
                    }
                    Some(pin) if pin.sha256 == hash => {
                        pin.pending = None;
                        PinStatus::Same
                    }
                    Some(pin) => {
                        let changes = changes(&pin.definition, &def);
                        if pin.pending.as_ref().is_none_or(|p| p.sha256 != hash) {
                            pin.pending = Some(Pending {
                                sha256: hash,
                                definition: def,
                                seen: now,
                            });
                        }
                        PinStatus::Changed { changes }
                    }
                };
                out.push(PinCheck { tool, status });
            }
            Ok(out)
        })
    }

    /// Makes `tool`'s pending definition the pinned one.
    pub fn approve(&mut self, server: &str, tool: &str) -> Result<Approved, PinError> {
        self.update(|file| {
            let nothing = || PinError::NothingPending {
                server: server.to_owned(),
                tool: tool.to_owned(),
            };
            let pin = file
                .servers
                .get_mut(server)
                .and_then(|s| s.get_mut(tool))
                .ok_or_else(nothing)?;
            let pending = pin.pending.take().ok_or_else(nothing)?;
            pin.sha256 = pending.sha256;
            pin.definition = pending.definition;
            pin.approved = now_ms();
            Ok(Approved {
                server: server.to_owned(),
                tool: tool.to_owned(),
                sha256: pin.sha256.clone(),
            })
        })
    }

    /// Approves every pending change of `server` (none: an empty list).
    pub fn approve_all(&mut self, server: &str) -> Result<Vec<Approved>, PinError> {
        self.update(|file| {
            let now = now_ms();
            let mut out = Vec::new();
            for (tool, pin) in file.servers.get_mut(server).into_iter().flatten() {
                if let Some(pending) = pin.pending.take() {
                    pin.sha256 = pending.sha256;
                    pin.definition = pending.definition;
                    pin.approved = now;
                    out.push(Approved {
                        server: server.to_owned(),
                        tool: tool.clone(),
                        sha256: pin.sha256.clone(),
                    });
                }
            }
            Ok(out)
        })
    }

    /// Every pin, by server and tool.
    pub fn list(&self) -> Vec<PinView> {
        let mut out = Vec::new();
        for (server, tools) in &self.pins.servers {
            for (tool, pin) in tools {
                out.push(PinView {
                    server: server.clone(),
                    tool: tool.clone(),
                    sha256: pin.sha256.chars().take(12).collect(),
                    approved: pin.approved,
                    pending: pin.pending.as_ref().map(|p| {
                        changes(&pin.definition, &p.definition)
                            .into_iter()
                            .map(|c| c.field)
                            .collect()
                    }),
                });
            }
        }
        out
    }

    /// The pin of `server`'s `tool`.
    pub fn get(&self, server: &str, tool: &str) -> Option<&Pin> {
        self.pins.servers.get(server)?.get(tool)
    }

    /// Whether `tool` may be called: pinned, and what the server serves is the pin (no change
    /// pending). As of the last [`check`](Self::check) or [`reload`](Self::reload).
    pub fn is_usable(&self, server: &str, tool: &str) -> bool {
        self.get(server, tool).is_some_and(|p| p.pending.is_none())
    }

    /// Re-reads the file (another process may have approved changes).
    pub fn reload(&mut self) -> Result<(), PinError> {
        self.pins = read(&self.path)?;
        Ok(())
    }

    /// Under the lock: re-reads the file, applies `f`, writes it back (only if `f` succeeded).
    fn update<T>(
        &mut self,
        f: impl FnOnce(&mut PinFile) -> Result<T, PinError>,
    ) -> Result<T, PinError> {
        let _lock = lock(&self.path)?;
        let mut pins = read(&self.path)?;
        let out = f(&mut pins)?;
        write(&self.path, &pins)?;
        self.pins = pins;
        Ok(out)
    }
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> PinError {
    let path = path.to_owned();
    move |source| PinError::Io {
        action,
        path,
        source,
    }
}

/// The store's directory, made (0700) if missing.
fn make_dir(path: &Path) -> Result<(), PinError> {
    use std::os::unix::fs::DirBuilderExt as _;
    let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) else {
        return Ok(());
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io("create its directory", dir))
}

/// An exclusive `flock` on `<path>.lock`, released when dropped.
fn lock(path: &Path) -> Result<nix::fcntl::Flock<File>, PinError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    make_dir(path)?;
    let lock_path = sibling(path, ".lock");
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&lock_path)
        .map_err(io("open its lock file", &lock_path))?;
    loop {
        match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive) {
            Ok(held) => return Ok(held),
            Err((f, nix::errno::Errno::EINTR)) => file = f,
            Err((_, errno)) => return Err(io("lock", &lock_path)(errno.into())),
        }
    }
}

/// `path` with `suffix` appended to its file name.
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(suffix);
    path.with_file_name(name)
}

fn read(path: &Path) -> Result<PinFile, PinError> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(PinFile {
                version: VERSION,
                servers: BTreeMap::new(),
            });
        }
        Err(e) => return Err(io("read", path)(e)),
    };
    let mut text = String::new();
    file.read_to_string(&mut text).map_err(io("read", path))?;
    let corrupt = |message: String| PinError::Corrupt {
        path: path.to_owned(),
        message,
    };
    let pins: PinFile = serde_json::from_str(&text).map_err(|e| corrupt(e.to_string()))?;
    if pins.version != VERSION {
        return Err(corrupt(format!(
            "version {} is not {VERSION}",
            pins.version
        )));
    }
    Ok(pins)
}

/// Writes `pins` to `path` atomically: a 0600 temporary file beside it, synced, renamed over.
fn write(path: &Path, pins: &PinFile) -> Result<(), PinError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let data = serde_json::to_vec_pretty(pins).map_err(|e| PinError::Encode {
        what: "the pin store".into(),
        message: e.to_string(),
    })?;
    make_dir(path)?;
    let tmp = sibling(path, &format!(".tmp-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io("write", &tmp))?;
    let written = file
        .write_all(&data)
        .and_then(|()| file.sync_all())
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(io("write", path)(e));
    }
    // The rename itself is durable once the directory is synced.
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io("sync its directory", dir))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
