//! Each kind of tampering is detected by `verify` (and refused by `open`) and named precisely.

#![allow(clippy::disallowed_methods)] // tests do blocking file I/O on purpose

mod common;

use common::{config, edit_lines, make_log, segment};
use luminaguard_audit::{
    AuditConfig, AuditError, AuditLog, CHECKPOINTS_FILE, Checkpoint, Finding, FindingKind, Hash32,
    KEY_FILE, NoteSigner, Record, VerifierKey, merkle, verify,
};

#[allow(clippy::panic)] // test helper
fn finding(dir: &std::path::Path, key: &VerifierKey) -> Finding {
    match verify(dir, key) {
        Err(AuditError::Tampered(f)) => {
            // Opening the log for appending refuses it too.
            let open = AuditLog::open_blocking(config(dir));
            assert!(
                matches!(&open, Err(AuditError::Tampered(g)) if **g == *f),
                "open: {open:?}"
            );
            *f
        }
        other => panic!("expected tampering, got {other:?}"),
    }
}

fn small_files() -> AuditConfig {
    AuditConfig {
        rotate_bytes: 2000,
        ..config(std::path::Path::new(""))
    }
}

#[test]
fn untouched_log_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let key = make_log(dir.path(), small_files(), 50);
    let report = verify(dir.path(), &key).unwrap();
    assert_eq!(report.records, 50);
    assert!(report.files > 3, "{report}");
    assert_eq!(report.unsigned_records, 0);
    assert!(report.torn_records.is_none());
    assert!(report.to_string().starts_with("ok: 50 record(s)"));
}

#[test]
fn edited_field() {
    let dir = tempfile::tempdir().unwrap();
    let key = make_log(dir.path(), config(dir.path()), 20);
    edit_lines(&segment(dir.path(), 0), |l| {
        l[4] = l[4].replace("\"uid\":1000", "\"uid\":0");
    });
    let f = finding(dir.path(), &key);
    assert!(matches!(f.kind, FindingKind::Edited { .. }), "{f}");
    assert_eq!(
        (f.file.as_deref(), f.line, f.seq),
        (Some("audit-000000.jsonl"), Some(5), Some(4))
    );
    assert!(
        f.to_string()
            .starts_with("audit-000000.jsonl line 5, seq 4: edited record")
    );
    assert_eq!(f.kind.code(), "edited-record");
}

#[test]
fn edited_and_rehashed_record_breaks_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let key = make_log(dir.path(), config(dir.path()), 20);
    edit_lines(&segment(dir.path(), 0), |l| {
        let mut r = Record::parse_line(l[4].as_bytes()).unwrap();
        r.actor.uid = 0;
        r.hash = merkle::leaf_hash(&r.leaf_bytes());
        l[4] = String::from_utf8(r.to_line()).unwrap();
    });
    let f = finding(dir.path(), &key);
    assert!(matches!(f.kind, FindingKind::ChainBroken { .. }), "{f}");
    assert_eq!((f.line, f.seq), (Some(6), Some(5)));
}

#[test]
fn edited_and_rehashed_last_record_fails_the_signed_root() {
    let dir = tempfile::tempdir().unwrap();
    let key = make_log(dir.path(), config(dir.path()), 20);
    edit_lines(&segment(dir.path(), 0), |l| {
        let mut r = Record::parse_line(l[19].as_bytes()).unwrap();
        r.event["exit"] = 1.into();
        r.hash = merkle::leaf_hash(&r.leaf_bytes());
        l[19] = String::from_utf8(r.to_line()).unwrap();
    });
    let f = finding(dir.path(), &key);
    assert!(
        matches!(f.kind, FindingKind::RootMismatch { size: 20, .. }),
        "{f}"
    );
    assert_eq!(f.file.as_deref(), Some(CHECKPOINTS_FILE));
}

#[test]
fn re_encoded_record() {
    let dir = tempfile::tempdir().unwrap();
    let key = make_log(dir.path(), config(dir.path()), 5);
    edit_lines(&segment(dir.path(), 0), |l| {
        l[2] = l[2].replacen(',', ", ", 1)
    });
    let f = finding(dir.path(), &key);
    assert_eq!(f.kind, FindingKind::NotCanonical, "{f}");
    assert_eq!(f.line, Some(3));
}

#[test]
fn deleted_record() {
    let dir = tempfile::tempdir().unwrap();
    let key = make_log(dir.path(), config(dir.path()), 20);
    edit_lines(&segment(dir.path(), 0), |l| {
        l.remove(7);
    });
    let f = finding(dir.path(), &key);
    assert_eq!(
        f.kind,
        FindingKind::RecordsDeleted {
            expected: 7,
            found: 8
        },
        "{f}"
    );
    assert_eq!(f.line, Some(8));
}

#[test]
fn swapped_pair() {
    let dir = tempfile::tempdir().unwrap();
    let key = make_log(dir.path(), config(dir.path()), 20);
    edit_lines(&segment(dir.path(), 0), |l| l.swap(3, 4));
    let f = finding(dir.path(), &key);
    assert_eq!(
        f.kind,
        FindingKind::Reordered {
            expected: 3,
            found: 4
        },
        "{f}"
    );
    assert_eq!(f.kind.code(), "reordered-records");
}

#[test]
fn truncated_tail() {
    let dir = tempfile::tempdir().unwrap();
    let key = make_log(dir.path(), config(dir.path()), 20);
    edit_lines(&segment(dir.path(), 0), |l| l.truncate(17));
    let f = finding(dir.path(), &key);
    assert_eq!(
        f.kind,
        FindingKind::TruncatedTail {
            records: 17,
            checkpoint_size: 20
        },
        "{f}"
    );
}

#[test]
fn deleted_middle_file() {
    let dir = tempfile::tempdir().unwrap();
    let key = make_log(dir.path(), small_files(), 50);
    std::fs::remove_file(segment(dir.path(), 2)).unwrap();
    let f = finding(dir.path(), &key);
    assert_eq!(
        f.kind,
        FindingKind::MissingFile {
            name: "audit-000002.jsonl".into()
        },
        "{f}"
    );
}

#[test]
fn deleted_last_file_and_whole_log() {
    let dir = tempfile::tempdir().unwrap();
    let key = make_log(dir.path(), small_files(), 50);
    let segs: Vec<_> = (0..)
        .map(|i| segment(dir.path(), i))
        .take_while(|p| p.exists())
        .collect();
    std::fs::remove_file(segs.last().unwrap()).unwrap();
    let f = finding(dir.path(), &key);
    assert!(
        matches!(
            f.kind,
            FindingKind::TruncatedTail {
                checkpoint_size: 50,
                ..
            }
        ),
        "{f}"
    );
    for s in &segs[..segs.len() - 1] {
        std::fs::remove_file(s).unwrap();
    }
    let f = finding(dir.path(), &key);
    assert_eq!(
        f.kind,
        FindingKind::TruncatedTail {
            records: 0,
            checkpoint_size: 50
        },
        "{f}"
    );
}

#[test]
fn deleted_checkpoints_file() {
    let dir = tempfile::tempdir().unwrap();
    let key = make_log(dir.path(), config(dir.path()), 5);
    std::fs::remove_file(dir.path().join(CHECKPOINTS_FILE)).unwrap();
    let f = finding(dir.path(), &key);
    assert_eq!(f.kind, FindingKind::MissingCheckpoints, "{f}");
}

#[test]
fn checkpoints_resigned_with_another_key() {
    let dir = tempfile::tempdir().unwrap();
    let key = make_log(dir.path(), config(dir.path()), 20);
    // The attacker rewrites the records and re-signs every checkpoint with their own key of
    // the same name.
    let forger = NoteSigner::from_seed(key.name(), &[42; 32]).unwrap();
    let text = std::fs::read_to_string(dir.path().join(CHECKPOINTS_FILE)).unwrap();
    let mut forged = String::new();
    // The file is note, empty line, note, …; split on empty lines: body, signatures, body, …
    for body in text.split("\n\n").step_by(2).filter(|b| !b.is_empty()) {
        let cp = Checkpoint::parse(&format!("{body}\n")).unwrap();
        forged.push_str(&cp.sign(&forger).unwrap());
        forged.push('\n');
    }
    assert!(!forged.is_empty());
    std::fs::write(dir.path().join(CHECKPOINTS_FILE), forged).unwrap();
    let f = finding(dir.path(), &key);
    assert!(
        matches!(&f.kind, FindingKind::ForgedCheckpoint(why) if why.contains("no signature by the trusted key")),
        "{f}"
    );
    assert_eq!(
        (f.file.as_deref(), f.line),
        (Some(CHECKPOINTS_FILE), Some(1))
    );
    // The forged checkpoints are otherwise perfect: only the choice of trusted key tells.
    assert!(verify(dir.path(), &forger.verifier()).is_ok());
}

#[test]
fn altered_checkpoint_signature_fails() {
    let dir = tempfile::tempdir().unwrap();
    let key = make_log(dir.path(), config(dir.path()), 20);
    let p = dir.path().join(CHECKPOINTS_FILE);
    let text = std::fs::read_to_string(&p).unwrap();
    std::fs::write(&p, text.replacen("\n20\n", "\n21\n", 1)).unwrap();
    let f = finding(dir.path(), &key);
    assert!(
        matches!(&f.kind, FindingKind::ForgedCheckpoint(why) if why.contains("does not verify")),
        "{f}"
    );
}

#[test]
fn validly_signed_checkpoint_with_wrong_root() {
    let dir = tempfile::tempdir().unwrap();
    let key = make_log(dir.path(), config(dir.path()), 20);
    let signer =
        NoteSigner::parse(&std::fs::read_to_string(dir.path().join(KEY_FILE)).unwrap()).unwrap();
    let bad = Checkpoint {
        origin: key.name().into(),
        size: 20,
        root: Hash32([7; 32]),
    };
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.path().join(CHECKPOINTS_FILE))
        .unwrap();
    use std::io::Write;
    writeln!(f, "{}", bad.sign(&signer).unwrap()).unwrap();
    let f = finding(dir.path(), &key);
    assert!(
        matches!(f.kind, FindingKind::RootMismatch { size: 20, .. }),
        "{f}"
    );
}

#[test]
fn wrong_trusted_key() {
    let dir = tempfile::tempdir().unwrap();
    make_log(dir.path(), config(dir.path()), 3);
    let other = NoteSigner::from_seed("luminaguard/audit", &[1; 32]).unwrap();
    match verify(dir.path(), &other.verifier()) {
        Err(AuditError::Tampered(f)) => {
            assert!(matches!(f.kind, FindingKind::ForgedCheckpoint(_)), "{f}")
        }
        other => panic!("{other:?}"),
    }
}
