//! Appending, crash recovery, rotation, keys, export, proofs and scale.

#![allow(clippy::disallowed_methods)] // tests do blocking file I/O on purpose

mod common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::time::Instant;

use common::{config, event, make_log, segment};
use luminaguard_audit::{
    Actor, AuditConfig, AuditError, AuditLog, CHECKPOINTS_FILE, Export, KEY_FILE, PUB_FILE, prove,
    prove_consistency, read, read_verifier, root_at, verify, verify_consistency, verify_inclusion,
};
use rand::Rng;

#[test]
fn torn_tail_is_reported_then_truncated_on_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let key = make_log(dir.path(), config(dir.path()), 12);
    // A crash mid-write: half a record without its newline, as kill -9 during write(2) leaves.
    let seg = segment(dir.path(), 0);
    let mut f = std::fs::OpenOptions::new().append(true).open(&seg).unwrap();
    f.write_all(br#"{"actor":{"kind":"cli","uid":1000},"event":{"ty"#)
        .unwrap();
    drop(f);
    let report = verify(dir.path(), &key).unwrap();
    let torn = report.torn_records.clone().expect("torn tail reported");
    assert_eq!((torn.file.as_str(), torn.line), ("audit-000000.jsonl", 13));
    assert_eq!(report.records, 12);
    assert!(report.to_string().contains("torn tail"), "{report}");
    // Reading for display skips it too.
    assert_eq!(
        read(dir.path()).unwrap().map(|r| r.unwrap().seq).max(),
        Some(11)
    );

    let log = AuditLog::open_blocking(config(dir.path())).unwrap();
    let r = log
        .append_blocking(Actor::new(0, "daemon"), event(99))
        .unwrap();
    assert_eq!(r.seq, 12);
    log.close_blocking().unwrap();
    let report = verify(dir.path(), &key).unwrap();
    assert_eq!(report.records, 13);
    assert!(report.torn_records.is_none(), "{report}");
}

#[test]
fn torn_unparsable_terminated_line_and_torn_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let key = make_log(dir.path(), config(dir.path()), 3);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(segment(dir.path(), 0))
        .unwrap();
    f.write_all(b"\0\0\0\0\n").unwrap();
    let mut c = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.path().join(CHECKPOINTS_FILE))
        .unwrap();
    c.write_all(b"luminaguard/audit\n4\n").unwrap();
    let report = verify(dir.path(), &key).unwrap();
    assert!(
        report.torn_records.is_some() && report.torn_checkpoint.is_some(),
        "{report}"
    );
    AuditLog::open_blocking(config(dir.path()))
        .unwrap()
        .close_blocking()
        .unwrap();
    let report = verify(dir.path(), &key).unwrap();
    assert!(
        report.torn_records.is_none() && report.torn_checkpoint.is_none(),
        "{report}"
    );
    assert_eq!(report.records, 3);
}

#[test]
fn mid_log_garbage_is_tampering_not_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let key = make_log(dir.path(), config(dir.path()), 5);
    common::edit_lines(&segment(dir.path(), 0), |l| l[1] = "{\"seq\":1".into());
    match verify(dir.path(), &key) {
        Err(AuditError::Tampered(f)) => assert_eq!(f.kind.code(), "malformed-record", "{f}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn rotation_continues_chain_and_tree() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = AuditConfig {
        rotate_bytes: 1500,
        ..config(dir.path())
    };
    let key = make_log(dir.path(), cfg.clone(), 30);
    // Reopen and continue: the chain goes on in the last file and across new ones.
    make_log(dir.path(), cfg, 30);
    let report = verify(dir.path(), &key).unwrap();
    assert_eq!(report.records, 60);
    assert!(report.files >= 6, "{report}");
    let seqs: Vec<u64> = read(dir.path()).unwrap().map(|r| r.unwrap().seq).collect();
    assert_eq!(seqs, (0..60).collect::<Vec<_>>());
    let prefix = std::fs::read_to_string(segment(dir.path(), 1)).unwrap();
    assert!(prefix.lines().count() < 30);
}

#[test]
fn key_file_readable_by_others_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let key = make_log(dir.path(), config(dir.path()), 1);
    let key_path = dir.path().join(KEY_FILE);
    assert_eq!(
        std::fs::metadata(&key_path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(read_verifier(&dir.path().join(PUB_FILE)).unwrap(), key);
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = AuditLog::open_blocking(config(dir.path())).unwrap_err();
    assert_eq!(err.code(), "key-permissions", "{err}");
    assert!(err.to_string().contains("644"), "{err}");
}

#[test]
fn key_for_another_origin_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    make_log(dir.path(), config(dir.path()), 1);
    let cfg = AuditConfig {
        origin: "other.example/log".into(),
        ..config(dir.path())
    };
    let err = AuditLog::open_blocking(cfg).unwrap_err();
    assert_eq!(err.code(), "bad-key", "{err}");
}

#[test]
fn invalid_events_fail_alone_and_take_no_seq() {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open_blocking(config(dir.path())).unwrap();
    let a = Actor::new(1, "mcp");
    assert_eq!(log.append_blocking(a.clone(), event(0)).unwrap().seq, 0);
    let err = log
        .append_blocking(a.clone(), serde_json::json!({"no": "type"}))
        .unwrap_err();
    assert_eq!(err.code(), "invalid-event");
    assert_eq!(log.append_blocking(a.clone(), event(1)).unwrap().seq, 1);
    log.close_blocking().unwrap();
    let err = log.append_blocking(a, event(2)).unwrap_err();
    assert_eq!(err.code(), "audit-closed");
}

#[test]
fn export_to_file_mirrors_each_record() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ship.jsonl");
    let cfg = AuditConfig {
        export: Export::File(out.clone()),
        ..config(&dir.path().join("log"))
    };
    make_log(&dir.path().join("log"), cfg, 7);
    let shipped = std::fs::read_to_string(&out).unwrap();
    let stored = std::fs::read_to_string(segment(&dir.path().join("log"), 0)).unwrap();
    assert_eq!(shipped, stored);
}

#[test]
fn export_to_syslog_socket() {
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("log.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    let cfg = AuditConfig {
        export: Export::SyslogAt(sock_path),
        ..config(&dir.path().join("log"))
    };
    make_log(&dir.path().join("log"), cfg, 3);
    sock.set_nonblocking(true).unwrap();
    let mut buf = vec![0u8; 65536];
    for i in 0..3 {
        let n = sock.recv(&mut buf).unwrap();
        let msg = std::str::from_utf8(&buf[..n]).unwrap();
        let json = msg.strip_prefix("<86>luminaguard-audit: ").unwrap();
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(v["seq"], i);
    }
    assert!(sock.recv(&mut buf).is_err());
}

#[test]
fn export_to_dev_log_when_present() {
    // Optional by design: without a syslog daemon, export_to_syslog_socket covers the path.
    if !std::path::Path::new("/dev/log").exists() {
        eprintln!("no /dev/log here; covered by export_to_syslog_socket");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = AuditConfig {
        export: Export::Syslog,
        ..config(dir.path())
    };
    make_log(dir.path(), cfg, 1);
}

#[test]
fn inclusion_proofs_for_random_seqs() {
    let dir = tempfile::tempdir().unwrap();
    let key = make_log(dir.path(), config(dir.path()), 300);
    let mut rng = rand::rng();
    for _ in 0..40 {
        let seq = rng.random_range(0..300);
        let proof = prove(dir.path(), seq).unwrap();
        assert_eq!(proof.tree_size, 300);
        let cp = verify_inclusion(&proof, &key).unwrap();
        assert_eq!(cp.size, 300);
        // A third party gets it as JSON.
        let json = serde_json::to_string(&proof).unwrap();
        let back = serde_json::from_str(&json).unwrap();
        verify_inclusion(&back, &key).unwrap();
        // Flip one bit of one path node: rejected.
        let mut bad = proof.clone();
        let i = rng.random_range(0..bad.path.len());
        bad.path[i].0[rng.random_range(0..32)] ^= 1 << rng.random_range(0..8);
        assert!(verify_inclusion(&bad, &key).is_err());
        // Claim another record: rejected.
        let mut bad = proof.clone();
        bad.record.actor.uid = 0;
        assert!(verify_inclusion(&bad, &key).is_err());
    }
    assert!(prove(dir.path(), 300).is_err());
}

#[test]
fn consistency_proofs_between_random_sizes() {
    let dir = tempfile::tempdir().unwrap();
    make_log(dir.path(), config(dir.path()), 257);
    let mut rng = rand::rng();
    for _ in 0..40 {
        let new = rng.random_range(1..=257);
        let old = rng.random_range(0..=new);
        let p = prove_consistency(dir.path(), old, new).unwrap();
        let (o, n) = (
            root_at(dir.path(), old).unwrap(),
            root_at(dir.path(), new).unwrap(),
        );
        verify_consistency(&p, &o, &n).unwrap();
        if old > 0 && old < new {
            let wrong = root_at(dir.path(), old - 1).unwrap();
            assert!(verify_consistency(&p, &wrong, &n).is_err());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_are_gapless_and_chained() {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(AuditConfig {
        queue_capacity: 64,
        ..config(dir.path())
    })
    .await
    .unwrap();
    let mut tasks = Vec::new();
    for t in 0..64u32 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for i in 0..50 {
                let a = Actor::new(t, "agent");
                seqs.push(log.append(a, event(i)).await.unwrap().seq);
            }
            seqs
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        let seqs = t.await.unwrap();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "per-task order kept");
        all.extend(seqs);
    }
    all.sort_unstable();
    assert_eq!(all, (0..64 * 50).collect::<Vec<u64>>());
    log.close().await.unwrap();
    let report = verify(dir.path(), log.verifier_key()).unwrap();
    assert_eq!(report.records, 3200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_thousand_records_append_and_verify() {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(AuditConfig {
        rotate_bytes: 8 << 20,
        ..AuditConfig::new(dir.path())
    })
    .await
    .unwrap();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..64u32 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..100_000 / 64 + u64::from(t < 100_000 % 64) {
                log.append(Actor::new(t, "daemon"), event(i)).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    log.close().await.unwrap();
    let appended = start.elapsed();
    let key = log.verifier_key().clone();
    let d = dir.path().to_owned();
    let report = tokio::task::spawn_blocking(move || verify(&d, &key))
        .await
        .unwrap()
        .unwrap();
    eprintln!(
        "100k: append {appended:?}, verify {:?}; {report}",
        start.elapsed() - appended
    );
    assert_eq!(report.records, 100_000);
    assert!(report.files >= 2, "{report}");
    // One at open, one per ≥ 1000 records (batches may overshoot), one at close.
    assert!(report.checkpoints >= 90, "{report}");
    assert_eq!(report.unsigned_records, 0);
}

/// Two writers on one directory — two processes' logs, here two handles with their own file
/// descriptions, which `flock` keeps apart just the same — interleave without a gap, a
/// duplicate sequence number or a broken chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_writers_on_one_log_take_turns() {
    let dir = tempfile::tempdir().unwrap();
    // As CLI commands open it: from the tail, catching up on each other's records.
    let tail = AuditConfig {
        verify_on_open: false,
        ..config(dir.path())
    };
    let a = AuditLog::open(tail.clone()).await.unwrap();
    let b = AuditLog::open(tail).await.unwrap();
    let mut tasks = Vec::new();
    for (w, log) in [a.clone(), b.clone()].into_iter().enumerate() {
        for t in 0..4u32 {
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                let mut seqs = Vec::new();
                for i in 0..50 {
                    let who = Actor::new(u32::try_from(w).unwrap() * 100 + t, "cli");
                    seqs.push(log.append(who, event(i)).await.unwrap().seq);
                }
                seqs
            }));
        }
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort_unstable();
    assert_eq!(all, (0..400).collect::<Vec<u64>>(), "gapless, no seq twice");
    a.close().await.unwrap();
    b.close().await.unwrap();
    let report = verify(dir.path(), a.verifier_key()).unwrap();
    assert_eq!(report.records, 400);
    assert_eq!(report.unsigned_records, 0);
    // The leaf-hash file (what proofs and the next tail open read) is every record's hash,
    // in order: neither writer wrote over the other's.
    let leaves = std::fs::read(dir.path().join(luminaguard_audit::LEAVES_FILE)).unwrap();
    let hashes: Vec<u8> = luminaguard_audit::read(dir.path())
        .unwrap()
        .flat_map(|r| r.unwrap().hash.0)
        .collect();
    assert!(
        leaves == hashes,
        "leaves.bin differs from the records' hashes"
    );
}

/// Opening from the tail continues the chain where it ended; a torn last line (a crash
/// mid-append) sends the open to the full scan, which cuts it; `verify` passes after both.
#[test]
fn tail_open_continues_the_chain_and_a_torn_tail_falls_back_to_the_scan() {
    let dir = tempfile::tempdir().unwrap();
    let key = make_log(dir.path(), config(dir.path()), 30);
    let tail = AuditConfig {
        verify_on_open: false,
        ..config(dir.path())
    };
    let log = AuditLog::open_blocking(tail.clone()).unwrap();
    assert_eq!(
        log.append_blocking(Actor::new(1, "cli"), event(30))
            .unwrap()
            .seq,
        30
    );
    log.close_blocking().unwrap();
    drop(log);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(segment(dir.path(), 0))
        .unwrap();
    f.write_all(b"{\"seq\":31,\"ti").unwrap();
    drop(f);
    let log = AuditLog::open_blocking(tail).unwrap();
    assert_eq!(
        log.append_blocking(Actor::new(1, "cli"), event(31))
            .unwrap()
            .seq,
        31
    );
    log.close_blocking().unwrap();
    let report = verify(dir.path(), &key).unwrap();
    assert_eq!((report.records, report.torn_records), (32, None));
}
