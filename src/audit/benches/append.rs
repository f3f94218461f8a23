//! Audit append throughput with group commit, beside the anchor "one write + fsync per record"
//! measured in the same run on the same file system.
//!
//! `cargo bench -p luminaguard-audit --bench append [-- --quick]`
//!
//! - 64 concurrent async appenders through one `AuditLog` (group commit) vs sequential
//!   write+fsync of same-sized lines (what a log without group commit pays per record);
//! - 1 appender at a time through `AuditLog` vs the same anchor (the latency path);
//! - `verify` records/s vs reading the same files and SHA-256-hashing every line.
//!
//! The log lives on the file system of the current directory (not tmpfs, where fsync is free).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)] // bench code

use std::io::{BufRead, Write};
use std::time::Instant;

use luminaguard_audit::{Actor, AuditConfig, AuditLog, verify};
use sha2::Digest;

fn event(i: u64) -> serde_json::Value {
    serde_json::json!({"type": "exec", "argv": ["/usr/bin/make", "-j2", i.to_string()], "exit": 0, "policy": "allow"})
}

fn scratch() -> tempfile::TempDir {
    tempfile::tempdir_in(".").unwrap()
}

/// Records/s through `AuditLog` with `appenders` concurrent tasks.
async fn audit_log(n: u64, appenders: u64) -> (f64, tempfile::TempDir, usize) {
    let dir = scratch();
    let log = AuditLog::open(AuditConfig::new(dir.path())).await.unwrap();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..appenders {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = t;
            while i < n {
                log.append(Actor::new(1000, "daemon").with_session("bench"), event(i))
                    .await
                    .unwrap();
                i += appenders;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    log.close().await.unwrap();
    let rate = n as f64 / start.elapsed().as_secs_f64();
    let line_len = std::fs::read_to_string(dir.path().join("audit-000000.jsonl"))
        .unwrap()
        .lines()
        .next()
        .map_or(300, str::len);
    (rate, dir, line_len)
}

/// The anchor: sequential write + fsync of one line per record.
fn fsync_per_record(n: u64, line_len: usize) -> f64 {
    let dir = scratch();
    let mut f = std::fs::File::create(dir.path().join("anchor.jsonl")).unwrap();
    let mut line = vec![b'x'; line_len];
    line.push(b'\n');
    let start = Instant::now();
    for _ in 0..n {
        f.write_all(&line).unwrap();
        f.sync_data().unwrap();
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// Anchor for verify: read the same files and SHA-256 each line.
fn read_and_hash(dir: &std::path::Path) -> f64 {
    let start = Instant::now();
    let mut n = 0u64;
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    entries.sort();
    for p in entries {
        let r = std::io::BufReader::new(std::fs::File::open(p).unwrap());
        for line in r.split(b'\n') {
            std::hint::black_box(sha2::Sha256::digest(line.unwrap()));
            n += 1;
        }
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (group_n, seq_n, anchor_n) = if quick {
        (20_000, 1_000, 1_000)
    } else {
        (200_000, 5_000, 5_000)
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (group, dir, line_len) = rt.block_on(audit_log(group_n, 64));
    let anchor = fsync_per_record(anchor_n, line_len);
    let (single, _d, _) = rt.block_on(audit_log(seq_n, 1));
    let key = luminaguard_audit::read_verifier(&dir.path().join("audit.pub")).unwrap();
    let start = Instant::now();
    let report = verify(dir.path(), &key).unwrap();
    let verify_rate = report.records as f64 / start.elapsed().as_secs_f64();
    let hash_rate = read_and_hash(dir.path());

    println!(
        "audit append ({} records, {line_len}-byte lines){}",
        group_n,
        if quick { " [quick]" } else { "" }
    );
    println!(
        "{:<44} {:>12} {:>12} {:>8}",
        "measure", "luminaguard", "anchor", "ratio"
    );
    let row = |name: &str, a: f64, b: f64| {
        println!("{name:<44} {a:>12.0} {b:>12.0} {:>7.2}x", a / b);
    };
    row("64 appenders, group commit (records/s)", group, anchor);
    row("1 appender (records/s)", single, anchor);
    row(
        "verify vs read+SHA-256 lines (records/s)",
        verify_rate,
        hash_rate,
    );
    println!("anchor for append: sequential write + fsync per record on the same file system");
}
