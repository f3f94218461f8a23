//! A file write an agent's front-end asks for (the MCP server's `write_file`), judged by the
//! policy as the write it is — and, when the policy asks about a file of a workspace the
//! sandbox writes directly, shown to a person first as a **Diff Card** of exactly that change:
//! the new content is staged beside the sandbox, read against the workspace into a change set
//! (the same scan and rendering as a speculative run's), and applied by the same hostile-safe
//! apply once approved. Nothing is written before; a denial writes nothing.
//!
//! (The owner's own copies — `sandbox cp`, `PUT /v1/sandboxes/{id}/files` — are a person's
//! actions, not an agent's, and are not judged: see [`Service::write_file`].)

use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::Instant;

use luminaguard_core::SandboxId;
use luminaguard_policy::Verdict;
use luminaguard_review::{ChangeSet, Limits, RenderOptions};
use sha2::{Digest, Sha256};

use crate::approvals::{self, Approval, Outcome};
use crate::ask::Withdraw;
use crate::{Action, Caller, EventKind, Service, ServiceError};

/// The largest content a judged write takes.
pub const MAX_PUT: u64 = 16 << 20;

/// Where a sandbox's workspace is, inside it.
const WORKSPACE: &str = "/workspace";

/// A judged write done.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Put {
    pub path: String,
    pub bytes: u64,
    /// The Diff Card a person approved it under, when one was asked.
    pub approval: Option<String>,
}

impl Service {
    /// Writes `content` to `path` (absolute, in sandbox `id`) as an agent's write: on the
    /// record with the policy's decision; denied, it is refused; asked about, a person sees the
    /// change first — as a Diff Card when the file is in a workspace the sandbox writes
    /// directly (applied to the workspace once approved), else as an action card (written once
    /// approved).
    pub async fn put_file(
        &self,
        caller: &Caller,
        id: &SandboxId,
        path: &str,
        content: Vec<u8>,
    ) -> Result<Put, ServiceError> {
        self.admit(
            caller,
            &Action::WriteFile {
                id: id.clone(),
                path: path.to_owned(),
            },
        )
        .await?;
        let bytes = content.len() as u64;
        if bytes > MAX_PUT {
            return Err(ServiceError::TooLarge(format!(
                "{bytes} bytes for {path} in sandbox {id}: a judged write takes at most \
                 {MAX_PUT}"
            )));
        }
        if !path.starts_with('/') {
            return Err(ServiceError::InvalidSpec(format!(
                "{path:?}: give the path absolute, as the sandbox sees it"
            )));
        }
        let decision = self.policy().decide(&luminaguard_policy::Action::Write {
            path: path.to_owned(),
        });
        self.audit
            .record(
                caller,
                serde_json::json!({
                    "type": "write",
                    "sandbox": id,
                    "path": path,
                    "bytes": bytes,
                    "sha256": hex(&Sha256::digest(&content)),
                    "decision": crate::decision_json(&decision),
                }),
            )
            .await?;
        let put = |approval| Put {
            path: path.to_owned(),
            bytes,
            approval,
        };
        match decision.verdict {
            Verdict::Deny => Err(ServiceError::Denied(decision.to_string())),
            Verdict::Allow => {
                self.write_in(caller, id, path, content).await?;
                Ok(put(None))
            }
            Verdict::Ask => {
                let (_, meta) = luminaguard_backend::record(&self.runtime, id).await?;
                let speculative = meta.spec.as_ref().is_some_and(|s| s.review.is_some());
                match (&meta.workspace, in_workspace(path)) {
                    (Some(ws), Some(rel)) if !speculative => {
                        let approval = self
                            .card_for_write(
                                caller, id, meta.user, ws, &rel, path, content, &decision,
                            )
                            .await?;
                        Ok(put(approval))
                    }
                    _ => {
                        // A speculative sandbox shows it on its run's card; elsewhere the
                        // command path's rule holds: asked before it is written.
                        self.hold_unpreviewable(
                            caller,
                            id,
                            crate::Unpreviewable::Write(path),
                            &decision,
                        )
                        .await?;
                        self.write_in(caller, id, path, content).await?;
                        Ok(put(None))
                    }
                }
            }
        }
    }

    /// Writes `content` to `path` in sandbox `id` through its agent (already judged).
    async fn write_in(
        &self,
        caller: &Caller,
        id: &SandboxId,
        path: &str,
        content: Vec<u8>,
    ) -> Result<(), ServiceError> {
        let mode = match self.stat(caller, id, path, false).await {
            Ok(st) if st.kind == luminaguard_protocol::message::FileKind::File => st.mode,
            _ => 0o644,
        };
        self.write_through_agent(caller, id, path, mode, MAX_PUT, content.as_slice())
            .await
            .map(drop)
    }

    /// Shows the write of `rel` in workspace `ws` as a Diff Card and waits for the answer;
    /// approved, the card's change set is applied to the workspace. Returns the approval (none
    /// when the write changes nothing).
    #[allow(clippy::too_many_arguments)]
    async fn card_for_write(
        &self,
        caller: &Caller,
        id: &SandboxId,
        user: Option<u32>,
        ws: &Path,
        rel: &Path,
        path: &str,
        content: Vec<u8>,
        decision: &luminaguard_policy::Decision,
    ) -> Result<Option<String>, ServiceError> {
        let approval =
            approvals::new_id().map_err(|e| ServiceError::internal("making an approval id", e))?;
        let staged = Staged(
            self.runtime
                .sandbox_dir(id)
                .map_err(|e| ServiceError::internal("finding the sandbox's directory", e))?
                .join(format!("staged-{approval}")),
        );
        let (dir, ws_owned, rel_owned) = (staged.0.clone(), ws.to_owned(), rel.to_owned());
        let (changes, text) = tokio::task::spawn_blocking(move || {
            stage(&dir, &ws_owned, &rel_owned, &content)?;
            let cs = luminaguard_review::scan(&dir, &ws_owned, &Limits::default())
                .map_err(ServiceError::Review)?;
            let text = luminaguard_review::render(&cs, &dir, &ws_owned, &RenderOptions::default());
            Ok::<(ChangeSet, String), ServiceError>((cs, text))
        })
        .await??;
        if changes.entries.is_empty() {
            // The file holds this content already.
            return Ok(None);
        }
        let asked = vec![decision.to_string()];
        let mut card = format!(
            "Write {path} in sandbox {id}, on workspace {}:\n",
            ws.display()
        );
        for why in &asked {
            card.push_str(&format!("asked by policy: {why}\n"));
        }
        card.push_str(&text);
        let expiry = self.config.review.card_expiry;
        let now_ms = luminaguard_backend::state::now_unix_ms();
        self.audit
            .record(
                caller,
                serde_json::json!({"type": "review", "sandbox": id, "approval": approval,
                    "digest": changes.digest, "summary": changes.summary, "write": path}),
            )
            .await?;
        self.approvals.open(
            Approval {
                id: approval.clone(),
                sandbox: id.clone(),
                user,
                workspace: Some(ws.to_owned()),
                changes,
                action: None,
                always: None,
                network_attempts: Vec::new(),
                policy_actions: vec![luminaguard_policy::Action::Write {
                    path: path.to_owned(),
                }],
                text: card,
                asked: asked.clone(),
                output_head: String::new(),
                output_cut: false,
                policy_digest: self.policy().digest().to_owned(),
                requested_unix_ms: now_ms,
                expires_unix_ms: now_ms
                    .saturating_add(u64::try_from(expiry.as_millis()).unwrap_or(u64::MAX)),
                outcome: None,
                staged: Some(staged.0.clone()),
            },
            Instant::now() + expiry,
            false,
        );
        self.events
            .send_approval(EventKind::ApprovalRequested, &approval, id, user);
        let _withdraw_if_dropped = Withdraw {
            service: self.clone(),
            caller: caller.clone(),
            id: approval.clone(),
        };
        let decided = self.wait_approval(caller, &approval).await?;
        match decided.outcome {
            Some(Outcome::Applied { .. }) => Ok(Some(approval)),
            Some(o) => Err(ServiceError::Denied(format!(
                "{}; a person was asked ({approval}): {o}",
                asked.join("; ")
            ))),
            None => Err(ServiceError::internal(
                "waiting for an approval",
                format!("{approval} ended undecided"),
            )),
        }
    }
}

/// `path` relative to the workspace, if it is in it (`/workspace/…`, no `..` on the way).
fn in_workspace(path: &str) -> Option<PathBuf> {
    let rel = Path::new(path).strip_prefix(WORKSPACE).ok()?;
    let clean = rel.components().all(|c| matches!(c, Component::Normal(_)));
    (clean && rel.components().next().is_some()).then(|| rel.to_owned())
}

/// A staging directory, removed when dropped.
struct Staged(PathBuf);

impl Drop for Staged {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %self.0.display(), error = %e, "removing a staged write");
        }
    }
}

/// Lays out `content` at `rel` under `dir` as an overlay's upper layer would hold it: each
/// directory on the way with its workspace counterpart's mode (so only the file is a change),
/// the file with the mode it has now (new: 0644). The workspace is the sandbox's to write: no
/// symbolic link on the way is followed, and a parent that is not a directory refuses.
fn stage(dir: &Path, ws: &Path, rel: &Path, content: &[u8]) -> Result<(), ServiceError> {
    let bad = |why: String| ServiceError::InvalidSpec(format!("writing {}: {why}", rel.display()));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(dir)
        .map_err(|e| ServiceError::internal("making the staging directory", e))?;
    let mut here = PathBuf::new();
    let parts: Vec<_> = rel.components().collect();
    let (file, parents) = parts
        .split_last()
        .ok_or_else(|| bad("no file name".into()))?;
    for part in parents {
        here.push(part);
        let meta = std::fs::symlink_metadata(ws.join(&here)).map_err(|e| {
            bad(format!(
                "{}: {e} (the directory must exist)",
                here.display()
            ))
        })?;
        if !meta.is_dir() {
            return Err(bad(format!("{} is not a directory", here.display())));
        }
        let staged = dir.join(&here);
        std::fs::create_dir(&staged)
            .and_then(|()| {
                std::fs::set_permissions(
                    &staged,
                    std::fs::Permissions::from_mode(meta.mode() & 0o7777),
                )
            })
            .map_err(|e| ServiceError::internal("staging a directory", e))?;
    }
    here.push(file);
    let mode = match std::fs::symlink_metadata(ws.join(&here)) {
        Ok(m) if m.is_file() => m.mode() & 0o777,
        Ok(m) if m.is_dir() => return Err(bad("it is a directory".into())),
        _ => 0o644,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(dir.join(&here))
        .map_err(|e| ServiceError::internal("staging the file", e))?;
    std::io::Write::write_all(&mut f, content)
        .map_err(|e| ServiceError::internal("staging the file", e))?;
    // The umask may have narrowed it.
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(|e| ServiceError::internal("staging the file", e))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::disallowed_methods)]
mod tests {
    use super::*;

    #[test]
    fn only_clean_workspace_paths_are_in_it() {
        assert_eq!(
            in_workspace("/workspace/a/b.txt"),
            Some(PathBuf::from("a/b.txt"))
        );
        assert_eq!(in_workspace("/workspace"), None);
        assert_eq!(in_workspace("/workspace/../etc/passwd"), None);
        assert_eq!(in_workspace("/workspace/a/../../x"), None);
        assert_eq!(in_workspace("/workspacex/a"), None);
        assert_eq!(in_workspace("/etc/passwd"), None);
    }

    #[test]
    fn a_staged_write_is_exactly_one_change() {
        let ws = tempfile::tempdir().unwrap();
        let st = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(ws.path().join("a/b")).unwrap();
        std::fs::set_permissions(ws.path().join("a"), std::fs::Permissions::from_mode(0o750))
            .unwrap();
        std::fs::write(ws.path().join("a/b/old.txt"), "old\n").unwrap();
        std::fs::write(ws.path().join("a/other"), "x").unwrap();
        let dir = st.path().join("s");
        stage(&dir, ws.path(), Path::new("a/b/old.txt"), b"new\n").unwrap();
        let cs = luminaguard_review::scan(&dir, ws.path(), &Limits::default()).unwrap();
        assert_eq!(cs.entries.len(), 1, "{:?}", cs.entries);
        let dir2 = st.path().join("s2");
        stage(&dir2, ws.path(), Path::new("a/new.txt"), b"hi").unwrap();
        let cs = luminaguard_review::scan(&dir2, ws.path(), &Limits::default()).unwrap();
        assert_eq!(cs.entries.len(), 1, "{:?}", cs.entries);
        // No parent, or a link on the way: refused.
        assert!(stage(&st.path().join("s3"), ws.path(), Path::new("nope/x"), b"").is_err());
        std::os::unix::fs::symlink("/etc", ws.path().join("link")).unwrap();
        assert!(
            stage(
                &st.path().join("s4"),
                ws.path(),
                Path::new("link/passwd"),
                b""
            )
            .is_err()
        );
    }
}
