//! `luminaguard audit ls|show|verify|prove`: read and check the audit log (`audit_dir`).
//! The log itself is `luminaguard-audit`'s; docs/audit.md has its format.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use luminaguard_audit::{AuditError, Record};
use luminaguard_core::Config;

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// List records, oldest first.
    Ls {
        /// Only records from this sequence number on.
        #[arg(long, value_name = "SEQ")]
        since: Option<u64>,
        /// One JSON record per line.
        #[arg(long)]
        json: bool,
    },
    /// One record in full.
    Show {
        seq: u64,
        #[arg(long)]
        json: bool,
    },
    /// Check every record, the hash chain, the Merkle tree and every signed checkpoint; exits
    /// non-zero and names the first bad record if anything was edited, removed, reordered or
    /// forged.
    Verify {
        /// The log's public key in note verifier form (default: the one beside the log; give
        /// your own copy to check a log you do not trust the host of).
        #[arg(long, value_name = "FILE")]
        key: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Print record SEQ's inclusion proof against the latest signed checkpoint (RFC 6962 audit
    /// path, C2SP signed note), as JSON a third party can check.
    Prove { seq: u64 },
}

pub fn run(cmd: AuditCommand, config: &Config) -> anyhow::Result<ExitCode> {
    let dir = config.audit_dir.as_path();
    match cmd {
        AuditCommand::Ls { since, json } => {
            for r in records(dir)? {
                let r = r?;
                if since.is_some_and(|s| r.seq < s) {
                    continue;
                }
                if json {
                    outln!("{}", serde_json::to_string(&r)?);
                } else {
                    outln!("{}", summary(&r));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Show { seq, json } => {
            let r = luminaguard_audit::find(dir, seq)
                .with_context(|| format!("reading the audit log in {}", dir.display()))?
                .with_context(|| format!("no record {seq} in {}", dir.display()))?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                out!(
                    "seq     {}\ntime    {}\nactor   uid {} ({}{})\nprev    {}\nhash    {}\nevent   {}\n",
                    r.seq,
                    time(r.time),
                    r.actor.uid,
                    r.actor.kind,
                    r.actor
                        .session
                        .as_deref()
                        .map(|s| format!(", session {s}"))
                        .unwrap_or_default(),
                    r.prev,
                    r.hash,
                    serde_json::to_string_pretty(&r.event)?
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Verify { key, json } => verify(dir, key.as_deref(), json),
        AuditCommand::Prove { seq } => {
            let proof = luminaguard_audit::prove(dir, seq)
                .with_context(|| format!("proving record {seq} of {}", dir.display()))?;
            outln!("{}", serde_json::to_string_pretty(&proof)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn records(dir: &Path) -> anyhow::Result<luminaguard_audit::Records> {
    luminaguard_audit::read(dir)
        .with_context(|| format!("reading the audit log in {}", dir.display()))
}

/// `verify`'s answer for `--json`.
#[derive(serde::Serialize)]
struct Verdict {
    ok: bool,
    records: u64,
    checkpoints: usize,
    unsigned_records: u64,
    root: Option<String>,
    torn: Option<String>,
    problem: Option<String>,
}

fn verify(dir: &Path, key: Option<&Path>, json: bool) -> anyhow::Result<ExitCode> {
    let key_path = key
        .map(Path::to_owned)
        .unwrap_or_else(|| luminaguard_audit::pub_path(dir));
    let key = luminaguard_audit::read_verifier(&key_path)
        .with_context(|| format!("reading the log's public key {}", key_path.display()))?;
    let (verdict, text) = match luminaguard_audit::verify(dir, &key) {
        Ok(report) => {
            let torn = report
                .torn_records
                .as_ref()
                .map(|t| format!("{t:?}"))
                .or_else(|| report.torn_checkpoint.as_ref().map(|t| format!("{t:?}")));
            (
                Verdict {
                    ok: true,
                    records: report.records,
                    checkpoints: report.checkpoints,
                    unsigned_records: report.unsigned_records,
                    root: Some(report.root.to_string()),
                    torn,
                    problem: None,
                },
                report.to_string(),
            )
        }
        Err(AuditError::Tampered(finding)) => (
            Verdict {
                ok: false,
                records: 0,
                checkpoints: 0,
                unsigned_records: 0,
                root: None,
                torn: None,
                problem: Some(finding.to_string()),
            },
            format!("NOT VERIFIED: {finding}"),
        ),
        Err(e) => return Err(e).with_context(|| format!("verifying {}", dir.display())),
    };
    if json {
        outln!("{}", serde_json::to_string(&verdict)?);
    } else {
        outln!("{text}");
    }
    Ok(if verdict.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// One line per record: seq, time, who, what.
fn summary(r: &Record) -> String {
    let kind = r.event.get("type").and_then(|t| t.as_str()).unwrap_or("?");
    let mut rest = r.event.clone();
    if let Some(o) = rest.as_object_mut() {
        o.remove("type");
    }
    format!(
        "{:>6}  {}  uid {:<5} {:<7} {:<10} {}",
        r.seq,
        time(r.time),
        r.actor.uid,
        r.actor.kind,
        kind,
        rest
    )
}

fn time(unix_ms: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(unix_ms);
    humantime::format_rfc3339_millis(t).to_string()
}
