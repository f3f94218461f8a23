//! A closer look at the caller's sandboxes than [`Service::list`] gives: whose each is (uid
//! and user name), what it was made with (network policy, limits) and what it uses now (its
//! cgroup's memory, processes and CPU time, read from the kernel's files) — what the web
//! console's sandboxes page shows.

use luminaguard_backend::state::SandboxMeta;
use luminaguard_core::{NetworkPolicy, RuntimeDir, SandboxId};

use crate::{Caller, Listing, Service, ServiceError};

/// One sandbox, looked at.
#[derive(Debug, Clone)]
pub struct Inspection {
    /// What a listing shows (id, backend, state, owner, age, time left, pool).
    pub listing: Listing,
    /// The owner's user name, if this host's user database knows the uid.
    pub user_name: Option<String>,
    /// Its network policy (`None`: a record of an older version, without its spec).
    pub network: Option<NetworkPolicy>,
    /// What its cgroup uses and allows now; `Err` says why there is nothing to read (no cgroup,
    /// or it is gone).
    pub usage: Result<luminaguard_cgroup::Usage, String>,
}

impl Service {
    /// The caller's sandboxes (root: every sandbox), sorted by id, each with its owner's name,
    /// network policy and cgroup usage. Reads only the sandboxes' records and cgroup files, on
    /// a blocking thread.
    pub async fn inspect(&self, caller: &Caller) -> Result<Vec<Inspection>, ServiceError> {
        // The same listing, and so the same owner rule, as `list`.
        let listing = self.list(caller).await?;
        let runtime = self.runtime.clone();
        let out = tokio::task::spawn_blocking(move || {
            let mut names = std::collections::HashMap::new();
            listing
                .into_iter()
                .map(|l| inspect_blocking(&runtime, l, &mut names))
                .collect()
        })
        .await?;
        Ok(out)
    }
}

fn inspect_blocking(
    runtime: &RuntimeDir,
    listing: Listing,
    names: &mut std::collections::HashMap<u32, Option<String>>,
) -> Inspection {
    let user_name = listing
        .user
        .and_then(|uid| names.entry(uid).or_insert_with(|| user_name(uid)).clone());
    let meta = listing
        .id
        .parse::<SandboxId>()
        .map_err(|e| format!("sandbox id {:?}: {e}", listing.id))
        .and_then(|id| runtime.sandbox_dir(&id).map_err(|e| e.to_string()))
        .and_then(|dir| {
            SandboxMeta::load_blocking(&dir)
                .map_err(|e| format!("reading the record of sandbox {}: {e}", listing.id))
        });
    let (network, usage) = match meta {
        Ok(m) => (m.spec.as_ref().map(|s| s.network.clone()), usage(&m)),
        Err(e) => (None, Err(e)),
    };
    Inspection {
        listing,
        user_name,
        network,
        usage,
    }
}

/// What the cgroup the record names uses now.
fn usage(m: &SandboxMeta) -> Result<luminaguard_cgroup::Usage, String> {
    match m.cgroup_version {
        Some(v) if !m.cgroup_dirs.is_empty() => {
            luminaguard_cgroup::Cgroup::from_dirs(v, m.cgroup_dirs.clone())
                .usage()
                .map_err(|e| e.to_string())
        }
        _ => Err("no cgroup: created without limits".into()),
    }
}

/// The name `uid` has in this host's user database (blocking: it may read /etc/passwd).
fn user_name(uid: u32) -> Option<String> {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code
    use super::*;

    #[test]
    fn root_has_a_name_and_a_record_without_a_cgroup_says_so() {
        assert_eq!(user_name(0).as_deref(), Some("root"));
        let meta: SandboxMeta = serde_json::from_value(serde_json::json!({
            "id": "sb-1", "backend": "process",
            "owner": {"pid": 1, "start": 0},
            "init": null, "cgroup_version": null, "created_unix_ms": 0,
            "expires_unix_ms": null
        }))
        .unwrap();
        assert_eq!(
            usage(&meta).unwrap_err(),
            "no cgroup: created without limits"
        );
    }
}
