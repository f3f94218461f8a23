//! The workspace, the tree comparison and the two ways of answering (no terminal, a real
//! pseudo-terminal) shared by the review tests of every backend (`src/cli/tests/review.rs`,
//! `src/cli/tests/qemu.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers: a failure fails the test

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Kind, mode, owner and content (or link target) of every entry of a tree, by path.
pub type Tree = BTreeMap<String, (String, u32, u32, Vec<u8>)>;

/// What the command does to the workspace: every kind of change a card shows.
pub const CHANGES: &str = "set -e
cd /workspace
echo three >> edit.txt
echo fresh > new.txt
rm gone.txt
rm -r olddir
mkdir -p newdir/empty
chmod 755 run.sh
ln -s edit.txt link
mv moved.txt renamed.txt
printf 'a\\0b' > blob.bin
echo outside > /tmp/outside
echo done";

#[derive(Debug)]
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub ws: PathBuf,
    pub runtime: PathBuf,
}

/// A workspace owned by uid 1000 (the person whose files these are) with one file of each
/// kind the command changes.
pub fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    std::fs::create_dir(&ws).unwrap();
    for (name, body) in [
        ("edit.txt", "one\ntwo\n"),
        ("keep.txt", "kept\n"),
        ("gone.txt", "to be deleted\n"),
        ("run.sh", "#!/bin/sh\necho hi\n"),
        ("moved.txt", "moving\n"),
        ("olddir/inner.txt", "inner\n"),
    ] {
        let p = ws.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, body).unwrap();
    }
    std::fs::set_permissions(ws.join("run.sh"), std::fs::Permissions::from_mode(0o644)).unwrap();
    chown_tree(&ws, 1000, 1000);
    Fixture {
        runtime: dir.path().join("rt"),
        ws,
        dir,
    }
}

pub fn chown_tree(p: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(p, Some(uid), Some(gid)).unwrap();
    if p.symlink_metadata().unwrap().is_dir() {
        for e in std::fs::read_dir(p).unwrap() {
            chown_tree(&e.unwrap().path(), uid, gid);
        }
    }
}

/// Every entry of a tree: kind, mode, owner and content (or link target).
pub fn tree(root: &Path) -> Tree {
    fn walk(root: &Path, p: &Path, out: &mut Tree) {
        let m = p.symlink_metadata().unwrap();
        let rel = p.strip_prefix(root).unwrap().display().to_string();
        let (kind, body) = if m.file_type().is_symlink() {
            (
                "link",
                std::fs::read_link(p)
                    .unwrap()
                    .into_os_string()
                    .into_encoded_bytes(),
            )
        } else if m.is_dir() {
            ("dir", Vec::new())
        } else {
            ("file", std::fs::read(p).unwrap())
        };
        out.insert(rel, (kind.into(), m.mode() & 0o7777, m.uid(), body));
        if m.is_dir() {
            for e in std::fs::read_dir(p).unwrap() {
                walk(root, &e.unwrap().path(), out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// Runs the CLI in a session of its own with no controlling terminal.
pub fn without_terminal(bin: &str, args: &[&str]) -> Output {
    Command::new("setsid")
        .arg("-w")
        .arg(bin)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Runs the CLI on a pseudo-terminal (`script`), waits for the card's question, calls
/// `before_answer`, types `answer`, and returns the exit status and everything on the screen.
pub fn on_terminal(
    bin: &str,
    args: &[&str],
    before_answer: impl FnOnce(),
    answer: &str,
) -> (Option<i32>, String) {
    let line = std::iter::once(bin)
        .chain(args.iter().copied())
        .map(quote)
        .collect::<Vec<_>>()
        .join(" ");
    let mut child = Command::new("script")
        .args(["-qefc", &line, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut screen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !String::from_utf8_lossy(&screen).contains("Apply these changes") {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(chunk) => screen.extend(chunk),
            Err(_) => panic!(
                "no question within 60 s:\n{}",
                String::from_utf8_lossy(&screen)
            ),
        }
    }
    before_answer();
    let mut stdin = child.stdin.take().unwrap();
    // The program may have ended already (its card expired): then nobody reads the answer.
    let _ = stdin
        .write_all(answer.as_bytes())
        .and_then(|()| stdin.flush());
    let status = child.wait().unwrap();
    drop(stdin);
    reader.join().unwrap();
    screen.extend(rx.try_iter().flatten());
    (status.code(), String::from_utf8_lossy(&screen).into_owned())
}

/// `card` (the CLI's stderr) names every change [`CHANGES`] makes, with the text diff.
pub fn assert_card_lists_changes(card: &str) {
    for line in [
        "edit.txt",
        "+three",
        "new.txt",
        "gone.txt",
        "olddir",
        "newdir/empty",
        "run.sh",
        "link",
        "renamed.txt",
        "blob.bin",
        "change set ",
    ] {
        assert!(card.contains(line), "the card lacks {line:?}:\n{card}");
    }
}

/// `after` (the workspace's [`tree`]) is the [`fixture`] with exactly what [`CHANGES`] does,
/// every entry owned by `owner`.
pub fn assert_changes_applied(after: &Tree, owner: u32) {
    let get = |p: &str| {
        after
            .get(p)
            .unwrap_or_else(|| panic!("{p} missing: {after:#?}"))
    };
    assert_eq!(get("edit.txt").3, b"one\ntwo\nthree\n");
    assert_eq!(get("new.txt").3, b"fresh\n");
    assert_eq!(get("renamed.txt").3, b"moving\n");
    assert_eq!(get("blob.bin").3, b"a\0b");
    assert_eq!(get("run.sh").1, 0o755);
    assert_eq!(
        (get("link").0.as_str(), get("link").3.as_slice()),
        ("link", &b"edit.txt"[..])
    );
    assert_eq!(get("newdir/empty").0, "dir");
    for gone in ["gone.txt", "olddir", "olddir/inner.txt", "moved.txt"] {
        assert!(!after.contains_key(gone), "{gone} survived");
    }
    assert_eq!(get("keep.txt").3, b"kept\n");
    // Every entry is the workspace owner's, not the sandbox's.
    for (path, (_, _, uid, _)) in after {
        assert_eq!(*uid, owner, "{path} belongs to uid {uid}");
    }
}
