//! Real overlay mounts for the tests: lower in a tempdir, upper+work on a tmpfs, overlay on a
//! third dir. Needs root; when `CI` is set a failed mount fails the test instead of skipping it.
#![allow(
    dead_code,
    clippy::disallowed_methods,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)] // test helpers

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

pub struct Overlay {
    pub dir: tempfile::TempDir,
    pub lower: PathBuf,
    pub upper: PathBuf,
    pub work: PathBuf,
    pub merged: PathBuf,
    tmpfs: PathBuf,
    mounted: bool,
    userxattr: bool,
}

fn run(cmd: &mut Command) -> bool {
    match cmd.status() {
        Ok(s) => s.success(),
        Err(_) => false,
    }
}

/// `sh -c script` in `dir`, asserting success.
pub fn sh(dir: &Path, script: &str) {
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "`{script}` failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Overlay {
    /// A lower dir filled by `fill`, not yet mounted. `None` (skip) if overlays cannot be
    /// mounted here and `CI` is not set.
    pub fn new(userxattr: bool, fill: impl FnOnce(&Path)) -> Option<Overlay> {
        let dir = tempfile::tempdir().unwrap();
        let lower = dir.path().join("lower");
        let tmpfs = dir.path().join("tmpfs");
        let merged = dir.path().join("merged");
        for d in [&lower, &tmpfs, &merged] {
            std::fs::create_dir(d).unwrap();
        }
        fill(&lower);
        if !run(Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=512m", "tmpfs"])
            .arg(&tmpfs))
        {
            return skip("cannot mount tmpfs");
        }
        let upper = tmpfs.join("upper");
        let work = tmpfs.join("work");
        std::fs::create_dir(&upper).unwrap();
        std::fs::create_dir(&work).unwrap();
        let mut ov = Overlay {
            dir,
            lower,
            upper,
            work,
            merged,
            tmpfs,
            mounted: false,
            userxattr,
        };
        if !ov.mount() {
            return skip("cannot mount overlay");
        }
        Some(ov)
    }

    fn mount(&mut self) -> bool {
        let mut opts = format!(
            "lowerdir={},upperdir={},workdir={}",
            self.lower.display(),
            self.upper.display(),
            self.work.display()
        );
        // With userxattr the kernel never creates redirects (redirect_dir=nofollow) and
        // refuses metacopy; without it, say so explicitly.
        opts.push_str(if self.userxattr {
            ",userxattr"
        } else {
            ",redirect_dir=off,metacopy=off,index=off"
        });
        self.mounted = run(Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o", &opts])
            .arg(&self.merged));
        self.mounted
    }

    /// Unmounts the overlay, keeping upper and work on the tmpfs.
    pub fn unmount(&mut self) {
        if self.mounted {
            assert!(run(Command::new("umount").arg(&self.merged)));
            self.mounted = false;
        }
    }

    /// A fresh copy of the lower dir (the workspace to apply onto).
    pub fn workspace_copy(&self, name: &str) -> PathBuf {
        let ws = self.dir.path().join(name);
        assert!(run(Command::new("cp").arg("-a").arg(&self.lower).arg(&ws)));
        ws
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        if self.mounted {
            let _ = run(Command::new("umount").arg(&self.merged));
        }
        let _ = run(Command::new("umount").arg(&self.tmpfs));
    }
}

fn skip<T>(why: &str) -> Option<T> {
    if std::env::var_os("CI").is_some() {
        panic!("{why} (CI is set: a missing prerequisite is a failure)");
    }
    eprintln!("SKIP: {why} (needs root and overlayfs)");
    None
}

/// Every entry below `root`: type, permission bits, content hash or link target, and for files
/// the link count. Never follows symlinks.
pub fn tree(root: &Path) -> BTreeMap<Vec<u8>, String> {
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<Vec<u8>, String>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let p = e.path();
        let rel = p
            .strip_prefix(root)
            .unwrap()
            .as_os_str()
            .as_bytes()
            .to_vec();
        let md = std::fs::symlink_metadata(&p).unwrap();
        let mode = md.mode() & 0o7777;
        let desc = if md.file_type().is_symlink() {
            format!("link {:?}", std::fs::read_link(&p).unwrap())
        } else if md.is_dir() {
            walk(root, &p, out);
            format!("dir {mode:o}")
        } else if md.is_file() {
            let h = Sha256::digest(std::fs::read(&p).unwrap());
            format!("file {mode:o} nlink {} {h:x}", md.nlink())
        } else {
            format!("special {:o}", md.mode())
        };
        out.insert(rel, desc);
    }
}

pub fn os(b: &[u8]) -> &OsStr {
    OsStr::from_bytes(b)
}
