//! Landlock enforced for real on a child shell: writes land only where the policy allows.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)] // test code

use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::Mutex;

use luminaguard_process_sandbox::landlock::{Enforcement, FsPolicy, LandlockError, Outcome};

#[test]
fn writes_outside_the_writable_paths_fail() {
    let ws = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("existing"), "keep me").unwrap();
    let policy = FsPolicy {
        read_only: vec!["/".into()],
        read_write: vec![ws.path().to_owned(), "/dev/null".into()],
        enforcement: Enforcement::Required,
    };
    let prepared = Mutex::new(Some(policy.prepare().unwrap()));
    let script = format!(
        "echo in > {ws}/new && echo ws-ok; \
         echo out > {out}/new 2>/dev/null || echo outside-denied; \
         echo clobber > {out}/existing 2>/dev/null || echo overwrite-denied; \
         rm {out}/existing 2>/dev/null || echo remove-denied; \
         mkdir {out}/d 2>/dev/null || echo mkdir-denied; \
         ln -s {out}/existing {ws}/link && (echo x > {ws}/link) 2>/dev/null || echo symlink-escape-denied; \
         cat /etc/hostname > /dev/null && echo read-ok; \
         echo discard > /dev/null && echo devnull-ok",
        ws = ws.path().display(),
        out = outside.path().display()
    );
    let mut cmd = Command::new("/bin/sh");
    cmd.args(["-c", &script]);
    // SAFETY: restrict_self makes the landlock/prctl system calls on a ruleset built in the parent.
    unsafe {
        cmd.pre_exec(move || {
            let p = prepared
                .lock()
                .map_err(|_| std::io::Error::other("poisoned"))?
                .take()
                .ok_or_else(|| std::io::Error::other("used"))?;
            match p.restrict_self() {
                Ok(Outcome::Full | Outcome::Partial) => Ok(()),
                Ok(Outcome::None) | Err(_) => Err(std::io::Error::other("landlock not enforced")),
            }
        });
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    for expect in [
        "ws-ok",
        "outside-denied",
        "overwrite-denied",
        "remove-denied",
        "mkdir-denied",
        "symlink-escape-denied",
        "read-ok",
        "devnull-ok",
    ] {
        assert!(
            text.lines().any(|l| l == expect),
            "missing {expect:?} in:\n{text}"
        );
    }
    assert_eq!(
        std::fs::read_to_string(outside.path().join("existing")).unwrap(),
        "keep me"
    );
    assert!(!outside.path().join("new").exists());
    assert_eq!(
        std::fs::read_to_string(ws.path().join("new")).unwrap(),
        "in\n"
    );
}

#[test]
fn a_missing_path_is_an_error_naming_it() {
    let policy = FsPolicy {
        read_only: vec!["/definitely/not/here".into()],
        read_write: vec![],
        enforcement: Enforcement::Required,
    };
    let err = policy.prepare().unwrap_err();
    assert!(
        matches!(&err, LandlockError::Rule { path, .. } if path.ends_with("here")),
        "{err}"
    );
    assert!(err.to_string().contains("/definitely/not/here"));
}
