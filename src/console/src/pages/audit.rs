//! The audit log as the session's user may read it (root: all of it; anyone else: the records
//! they caused and those about their own sandboxes), newest first, the last [`CAP`] that match
//! the page's filters; above it, the whole log verified against the key beside it. The
//! reading, the owner rule and the verification are the service's.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Query, State};
use axum::response::Response;
use luminaguard_audit::{Finding, Record, VerifyReport};
use luminaguard_service::ServiceError;
use luminaguard_service::auditlog::{AuditFilter, AuditPage, decision};
use serde::Deserialize;

use super::{Authed, render};
use crate::Console;

/// At most this many records on the page.
pub(crate) const CAP: usize = 200;

/// A filter's longest value: anything longer matches nothing a record holds.
const MAX_FILTER: usize = 256;

/// The filters, from the page's GET form (an empty field is no filter).
#[derive(Deserialize, Default)]
pub(crate) struct AuditQuery {
    #[serde(default)]
    sandbox: String,
    #[serde(default)]
    actor: String,
    #[serde(default)]
    decision: String,
}

/// One record as the page shows it.
struct Row {
    seq: u64,
    time: String,
    uid: u32,
    kind: String,
    session: Option<String>,
    what: String,
    sandbox: Option<String>,
    decision: Option<String>,
    /// The rest of the event, as compact JSON.
    details: String,
}

/// The verification's verdict.
enum Verdict {
    Intact {
        records: u64,
        /// Who signed the latest checkpoint, its size, and records after it.
        checkpoint: Option<(String, u64, u64)>,
        torn: Vec<String>,
    },
    Tampered(String),
    Unreadable(String),
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditHtml {
    csrf: String,
    root: bool,
    verdict: Verdict,
    sandbox: String,
    actor: String,
    decision: String,
    rows: Vec<Row>,
    matched: u64,
    cap: usize,
    stopped: Option<String>,
    error: Option<String>,
}

pub(crate) async fn page(
    State(console): State<Arc<Console>>,
    who: Authed,
    Query(q): Query<AuditQuery>,
) -> Response {
    let caller = who.caller();
    let some = |s: &str| {
        let s = s.trim();
        (!s.is_empty()).then(|| s.chars().take(MAX_FILTER).collect::<String>())
    };
    let filter = AuditFilter {
        sandbox: some(&q.sandbox),
        actor: some(&q.actor),
        decision: some(&q.decision),
    };
    // Both read the log on blocking threads.
    let (verified, read) = tokio::join!(
        console.service.verify_audit(),
        console.service.audit_records(&caller, filter, CAP)
    );
    let (rows, matched, stopped, error) = match read {
        Ok(AuditPage {
            records,
            matched,
            stopped,
        }) => (
            records.into_iter().map(row).collect(),
            matched,
            stopped,
            None,
        ),
        Err(e) => (Vec::new(), 0, None, Some(e.to_string())),
    };
    render(&AuditHtml {
        csrf: who.session.csrf,
        root: caller.is_root(),
        verdict: verdict(verified),
        sandbox: q.sandbox,
        actor: q.actor,
        decision: q.decision,
        rows,
        matched,
        cap: CAP,
        stopped,
        error,
    })
}

fn verdict(v: Result<Result<VerifyReport, Finding>, ServiceError>) -> Verdict {
    match v {
        Ok(Ok(r)) => Verdict::Intact {
            records: r.records,
            checkpoint: r
                .last_checkpoint
                .map(|cp| (cp.origin, cp.size, r.unsigned_records)),
            torn: [r.torn_records, r.torn_checkpoint]
                .into_iter()
                .flatten()
                .map(|t| t.to_string())
                .collect(),
        },
        Ok(Err(finding)) => Verdict::Tampered(finding.to_string()),
        Err(e) => Verdict::Unreadable(e.to_string()),
    }
}

fn row(r: Record) -> Row {
    let mut rest = r.event.clone();
    if let Some(o) = rest.as_object_mut() {
        o.remove("type");
        o.remove("sandbox");
    }
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(r.time);
    Row {
        seq: r.seq,
        time: humantime::format_rfc3339_seconds(t).to_string(),
        uid: r.actor.uid,
        kind: r.actor.kind.clone(),
        session: r.actor.session.clone(),
        what: r
            .event
            .get("type")
            .and_then(|t| t.as_str())
            .unwrap_or("?")
            .to_owned(),
        sandbox: r
            .event
            .get("sandbox")
            .and_then(|s| s.as_str())
            .map(str::to_owned),
        decision: decision(&r).map(str::to_owned),
        details: serde_json::to_string(&rest).unwrap_or_default(),
    }
}
