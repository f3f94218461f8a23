//! Reading the audit log back for a caller (the web console's audit page), under the same rule
//! as the sandboxes: root reads every record; anyone else only the records they caused and
//! those about their own sandboxes (a sandbox is the user's from its `create` record, whose
//! actor is its owner, until another `create` reuses its name). And [`Service::verify_audit`]:
//! the whole log checked against the key beside it, as `luminaguard audit verify` does.

use std::collections::{HashMap, VecDeque};
use std::path::Path;

use luminaguard_audit::{AuditError, Finding, Record, VerifyReport};

use crate::{Caller, Service, ServiceError};

/// Which records to show; each given field must match.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// The record's `sandbox`, exactly.
    pub sandbox: Option<String>,
    /// The actor: its uid, its kind (`cli`, `daemon`, …) or its session (`console`, …),
    /// exactly.
    pub actor: Option<String>,
    /// The record's decision ([`decision`]), case-insensitively.
    pub decision: Option<String>,
}

impl AuditFilter {
    fn matches(&self, r: &Record) -> bool {
        let sandbox_ok = self
            .sandbox
            .as_deref()
            .is_none_or(|s| r.event.get("sandbox").and_then(|v| v.as_str()) == Some(s));
        let actor_ok = self.actor.as_deref().is_none_or(|a| {
            a == r.actor.uid.to_string()
                || a == r.actor.kind
                || r.actor.session.as_deref() == Some(a)
        });
        let decision_ok = self
            .decision
            .as_deref()
            .is_none_or(|d| decision(r).is_some_and(|x| x.eq_ignore_ascii_case(d)));
        sandbox_ok && actor_ok && decision_ok
    }
}

/// A record's decision: the policy's verdict (`allow`, `ask`, `deny`) on a judged action, or
/// a person's answer (`approve`, `decline`).
pub fn decision(r: &Record) -> Option<&str> {
    if let Some(v) = r
        .event
        .get("decision")
        .and_then(|d| d.get("verdict"))
        .and_then(|v| v.as_str())
    {
        return Some(v);
    }
    match r.event.get("type").and_then(|t| t.as_str()) {
        Some(t @ ("approve" | "decline")) => Some(t),
        _ => None,
    }
}

/// The newest records a caller may read that match a filter.
#[derive(Debug)]
pub struct AuditPage {
    /// Newest first, at most the cap asked for.
    pub records: Vec<Record>,
    /// How many records matched in all (more than `records.len()` when capped).
    pub matched: u64,
    /// Why reading stopped before the end of the log (a bad record: see
    /// [`Service::verify_audit`]), if it did.
    pub stopped: Option<String>,
}

impl Service {
    /// The last `cap` records `caller` may read that match `filter`, newest first. Reads the
    /// whole log on a blocking thread; no log yet is an empty page.
    pub async fn audit_records(
        &self,
        caller: &Caller,
        filter: AuditFilter,
        cap: usize,
    ) -> Result<AuditPage, ServiceError> {
        let dir = self.config.audit_dir.clone();
        let caller = caller.clone();
        tokio::task::spawn_blocking(move || read_blocking(&dir, &caller, &filter, cap)).await?
    }

    /// Verifies the whole audit log against the public key beside it (see
    /// `luminaguard_audit::verify`), on a blocking thread: `Ok(Err(finding))` names the first
    /// bad record; `Err` is a log that cannot be read at all (no key yet, unreadable files).
    pub async fn verify_audit(&self) -> Result<Result<VerifyReport, Finding>, ServiceError> {
        let dir = self.config.audit_dir.clone();
        tokio::task::spawn_blocking(move || {
            let key_path = luminaguard_audit::pub_path(&dir);
            let key = luminaguard_audit::read_verifier(&key_path).map_err(|e| {
                ServiceError::Audit(format!(
                    "reading the log's public key {}: {e}",
                    key_path.display()
                ))
            })?;
            match luminaguard_audit::verify(&dir, &key) {
                Ok(report) => Ok(Ok(report)),
                Err(AuditError::Tampered(finding)) => Ok(Err(*finding)),
                Err(e) => Err(ServiceError::Audit(format!(
                    "verifying the audit log in {}: {e}",
                    dir.display()
                ))),
            }
        })
        .await?
    }
}

fn read_blocking(
    dir: &Path,
    caller: &Caller,
    filter: &AuditFilter,
    cap: usize,
) -> Result<AuditPage, ServiceError> {
    let mut page = AuditPage {
        records: Vec::new(),
        matched: 0,
        stopped: None,
    };
    #[allow(clippy::disallowed_methods)] // on a blocking thread
    if !dir.exists() {
        return Ok(page);
    }
    let records = luminaguard_audit::read(dir).map_err(|e| {
        ServiceError::Audit(format!("reading the audit log in {}: {e}", dir.display()))
    })?;
    // Whose each sandbox is, as the log goes.
    let mut owner: HashMap<String, u32> = HashMap::new();
    let mut last: VecDeque<Record> = VecDeque::with_capacity(cap.min(1024));
    for r in records {
        let r = match r {
            Ok(r) => r,
            Err(e) => {
                page.stopped = Some(e.to_string());
                break;
            }
        };
        let sandbox = r.event.get("sandbox").and_then(|v| v.as_str());
        if let Some(s) = sandbox
            && r.event.get("type").and_then(|t| t.as_str()) == Some("create")
        {
            owner.insert(s.to_owned(), r.actor.uid);
        }
        let mine = caller.is_root()
            || r.actor.uid == caller.uid
            || sandbox.is_some_and(|s| owner.get(s) == Some(&caller.uid));
        if !mine || !filter.matches(&r) {
            continue;
        }
        page.matched += 1;
        if cap == 0 {
            continue;
        }
        if last.len() == cap {
            last.pop_front();
        }
        last.push_back(r);
    }
    page.records = last.into_iter().rev().collect();
    Ok(page)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code
    use super::*;
    use luminaguard_audit::{Actor, AuditConfig, AuditLog};
    use serde_json::json;

    fn actor(uid: u32) -> Actor {
        Actor {
            uid,
            kind: "daemon".into(),
            session: None,
        }
    }

    fn caller(uid: u32) -> Caller {
        Caller {
            uid,
            gid: uid,
            pid: None,
            session: None,
            front: None,
        }
    }

    #[test]
    fn a_user_reads_their_own_records_and_root_all_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open_blocking(AuditConfig::new(dir.path())).unwrap();
        for (uid, event) in [
            (1000, json!({"type": "create", "sandbox": "a"})),
            (1001, json!({"type": "create", "sandbox": "b"})),
            (
                1000,
                json!({"type": "exec", "sandbox": "a", "decision": {"verdict": "deny"}}),
            ),
            // Root acting on 1000's sandbox: 1000 reads it.
            (0, json!({"type": "destroy", "sandbox": "a"})),
            // The name reused by 1001: no longer 1000's.
            (1001, json!({"type": "create", "sandbox": "a"})),
            (1001, json!({"type": "destroy", "sandbox": "a"})),
        ] {
            log.append_blocking(actor(uid), event).unwrap();
        }
        log.close_blocking().unwrap();
        let all = |uid, f: AuditFilter, cap| read_blocking(dir.path(), &caller(uid), &f, cap);
        let seqs = |p: AuditPage| p.records.iter().map(|r| r.seq).collect::<Vec<_>>();
        assert_eq!(
            seqs(all(1000, AuditFilter::default(), 100).unwrap()),
            [3, 2, 0]
        );
        assert_eq!(
            seqs(all(1001, AuditFilter::default(), 100).unwrap()),
            [5, 4, 1]
        );
        let root = all(0, AuditFilter::default(), 2).unwrap();
        assert_eq!((root.matched, seqs(root)), (6, vec![5, 4]));
        let denied = AuditFilter {
            decision: Some("DENY".into()),
            ..AuditFilter::default()
        };
        assert_eq!(seqs(all(0, denied, 100).unwrap()), [2]);
        let by_root_on_a = AuditFilter {
            sandbox: Some("a".into()),
            actor: Some("0".into()),
            ..AuditFilter::default()
        };
        assert_eq!(seqs(all(0, by_root_on_a, 100).unwrap()), [3]);
        // No log yet: nothing, not an error.
        let none = read_blocking(
            &dir.path().join("none"),
            &caller(0),
            &AuditFilter::default(),
            10,
        )
        .unwrap();
        assert_eq!((none.matched, none.records.len()), (0, 0));
    }
}
