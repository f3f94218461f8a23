//! Helpers shared by the integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::disallowed_methods)] // test helpers

use std::path::{Path, PathBuf};

use luminaguard_audit::{Actor, AuditConfig, AuditLog, VerifierKey};
use serde_json::json;

pub fn config(dir: &Path) -> AuditConfig {
    AuditConfig {
        checkpoint_every: 10,
        ..AuditConfig::new(dir)
    }
}

pub fn event(i: u64) -> serde_json::Value {
    json!({"type": "exec", "argv": ["echo", i.to_string()], "exit": 0})
}

/// A closed log of `n` records, written through the blocking path.
pub fn make_log(dir: &Path, cfg: AuditConfig, n: u64) -> VerifierKey {
    let log = AuditLog::open_blocking(AuditConfig {
        dir: dir.into(),
        ..cfg
    })
    .unwrap();
    let mut last = None;
    for i in 0..n {
        let r = log
            .append_blocking(Actor::new(1000, "cli").with_session("s"), event(i))
            .unwrap();
        assert!(last.is_none_or(|l| r.seq == l + 1), "gapless");
        last = Some(r.seq);
    }
    log.close_blocking().unwrap();
    log.verifier_key().clone()
}

pub fn segment(dir: &Path, i: u64) -> PathBuf {
    dir.join(luminaguard_audit::segment_name(i))
}

/// Rewrites the lines of a file.
pub fn edit_lines(path: &Path, f: impl FnOnce(&mut Vec<String>)) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    f(&mut lines);
    let mut out = lines.join("\n");
    out.push('\n');
    std::fs::write(path, out).unwrap();
}
