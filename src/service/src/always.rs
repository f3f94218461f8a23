//! *Always*: a person approves an action for good. The policy gets a standing approval — an
//! `[[approved]]` entry naming exactly that action (see `luminaguard-policy`) — appended to its
//! file, which is checked whole before it replaces the file, and the service decides by the new
//! policy from then on. The entry is shown before anyone answers (`Approval::always`).
//!
//! Only a policy that is a file can take one (a preset is refused, with what to do instead);
//! through the daemon only root or the daemon's own user may change the daemon's policy, since
//! it decides for every caller.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use luminaguard_policy::{Action, Policy};

use crate::approvals::Decider;
use crate::{Caller, Service, ServiceError};

impl Service {
    /// The entries approving `actions` always would add, as the person is shown them; `None`
    /// when it cannot be done here.
    pub(crate) fn always_preview(&self, approval: &str, actions: &[Action]) -> Option<String> {
        if actions.is_empty() || self.policy().origin().starts_with("preset:") {
            return None;
        }
        actions
            .iter()
            .map(|a| luminaguard_policy::approved_entry(a, approval, "whoever approves it"))
            .collect::<Option<Vec<_>>>()
            .map(|v| v.concat())
    }

    /// Appends the standing approvals of `actions` (approval `approval`, answered by `by`) to
    /// the policy file and decides by it from now on. Returns what was added.
    pub(crate) async fn approve_always(
        &self,
        caller: &Caller,
        approval: &str,
        actions: &[Action],
        by: &Decider,
    ) -> Result<String, ServiceError> {
        let remote = self
            .remote_approvals
            .load(std::sync::atomic::Ordering::Relaxed);
        if remote && !(caller.is_root() || caller.uid == self.euid) {
            return Err(ServiceError::Forbidden(format!(
                "only root or uid {} may add to the daemon's policy: approve once or for the \
                 session",
                self.euid
            )));
        }
        let _writing = self.policy_write.lock().await;
        let policy = self.policy();
        if let Some(preset) = policy.origin().strip_prefix("preset:") {
            return Err(ServiceError::InvalidSpec(format!(
                "the policy in use is the preset `{preset}`, which cannot take an approval: \
                 save it to a file (`luminaguard policy show > FILE`), set `policy` to \
                 that file, and approve always again"
            )));
        }
        let by_text = format!("uid {} via {}", by.uid, by.via);
        let added = actions
            .iter()
            .map(|a| luminaguard_policy::approved_entry(a, approval, &by_text))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                ServiceError::InvalidSpec("this action cannot be approved always".into())
            })?
            .concat();
        let path = PathBuf::from(policy.origin());
        let (old, text) = (Arc::clone(&policy), added.clone());
        let new = tokio::task::spawn_blocking(move || rewrite(&path, &old, &text)).await??;
        *self
            .policy
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(new);
        Ok(added)
    }
}

/// `old`'s file with `added` appended, checked, then put in place of it (written beside it,
/// synced, renamed over it; its mode kept). Refused if the file is no longer what `old` was
/// loaded from.
#[allow(clippy::disallowed_methods)] // runs on a blocking thread
fn rewrite(path: &Path, old: &Policy, added: &str) -> Result<Policy, ServiceError> {
    let fail = |what: &'static str| {
        move |e: std::io::Error| ServiceError::internal(what, format!("{}: {e}", path.display()))
    };
    let on_disk = std::fs::read_to_string(path).map_err(fail("reading the policy file"))?;
    if on_disk != old.text() {
        return Err(ServiceError::Conflict(format!(
            "policy file {} changed since it was loaded: nothing was added (reload the \
             service, then answer again)",
            path.display()
        )));
    }
    let mut text = on_disk;
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(added);
    let new = Policy::from_text(&text, old.origin())?;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    let dir = dir.unwrap_or_else(|| Path::new("."));
    let mode = std::fs::metadata(path)
        .map_err(fail("reading the policy file's mode"))?
        .permissions()
        .mode();
    let mut tmp = tempfile_in(dir)?;
    tmp.as_file_mut()
        .write_all(text.as_bytes())
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(fail("writing the new policy file"))?;
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(mode & 0o7777))
        .map_err(fail("setting the new policy file's mode"))?;
    tmp.persist(path)
        .map_err(|e| fail("replacing the policy file")(e.error))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(new)
}

fn tempfile_in(dir: &Path) -> Result<tempfile::NamedTempFile, ServiceError> {
    tempfile::Builder::new()
        .prefix(".policy-")
        .tempfile_in(dir)
        .map_err(|e| {
            ServiceError::internal(
                "writing the new policy file",
                format!("{}: {e}", dir.display()),
            )
        })
}
