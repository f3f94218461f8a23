//! Diff Card cost for a small change in a large workspace, beside `git status` in the same run.
//!
//! `cargo bench -p luminaguard-review --bench scan [-- --quick]` (root: it mounts overlays)
//!
//! A 10,000-file git repository is the lower dir. Each round mounts a fresh overlay over it
//! (upper+work on a tmpfs), changes 10 files through it, unmounts, then scans and renders the
//! card. The anchor is `git status --porcelain` on a copy of the repository with the same 10
//! changes, measured in the same rounds. The goal: overlay set-up + scan ≤ 50 ms.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)] // bench code

use std::ffi::CString;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use luminaguard_review::{Limits, RenderOptions, render, scan};
use rustix::mount::{MountFlags, UnmountFlags};

const FILES: usize = 10_000;
const DIRS: usize = 100;
const CHANGED: usize = 10;

fn sh(dir: &Path, script: &str) {
    let ok = Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .status()
        .unwrap();
    assert!(ok.success(), "{script}");
}

fn make_repo(dir: &Path) {
    for d in 0..DIRS {
        std::fs::create_dir_all(dir.join(format!("src/m{d:03}"))).unwrap();
    }
    for i in 0..FILES {
        let body = format!("// file {i}\nfn f{i}() -> u32 {{\n    {i}\n}}\n");
        std::fs::write(dir.join(format!("src/m{:03}/f{i:05}.rs", i % DIRS)), body).unwrap();
    }
    sh(
        dir,
        "git init -q . && git config gc.auto 0 && git config maintenance.auto false && git add -A && git -c user.name=bench -c user.email=bench@example.invalid commit -qm init",
    );
}

/// The same 10 edits, applied through the overlay or to the git copy.
fn change(root: &Path) {
    for i in 0..CHANGED {
        let idx = i * (FILES / CHANGED);
        let p = root.join(format!("src/m{:03}/f{idx:05}.rs", idx % DIRS));
        let mut body = std::fs::read(&p).unwrap();
        body.extend_from_slice(b"// edited by the agent\n");
        std::fs::write(&p, body).unwrap();
    }
}

fn median(v: &mut [Duration]) -> f64 {
    v.sort();
    v[v.len() / 2].as_secs_f64() * 1e3
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let rounds = if quick { 5 } else { 30 };
    let tmp = tempfile::tempdir().unwrap();
    let lower = tmp.path().join("repo");
    let copy = tmp.path().join("copy");
    let tmpfs = tmp.path().join("tmpfs");
    let merged = tmp.path().join("merged");
    for d in [&lower, &tmpfs, &merged] {
        std::fs::create_dir(d).unwrap();
    }
    make_repo(&lower);
    assert!(
        Command::new("cp")
            .arg("-a")
            .arg(&lower)
            .arg(&copy)
            .status()
            .unwrap()
            .success()
    );
    change(&copy);
    if let Err(e) = rustix::mount::mount("tmpfs", &tmpfs, "tmpfs", MountFlags::empty(), None) {
        eprintln!("cannot mount tmpfs ({e}): this benchmark needs root");
        return;
    }

    let (mut mount_t, mut scan_t, mut render_t, mut umount_t, mut git_t) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut entries = 0;
    let mut card_len = 0;
    for r in 0..rounds + 1 {
        let up = tmpfs.join(format!("r{r}/upper"));
        let wk = tmpfs.join(format!("r{r}/work"));
        std::fs::create_dir_all(&up).unwrap();
        std::fs::create_dir_all(&wk).unwrap();
        let data = CString::new(format!(
            "lowerdir={},upperdir={},workdir={},userxattr",
            lower.display(),
            up.display(),
            wk.display()
        ))
        .unwrap();

        let t = Instant::now();
        rustix::mount::mount(
            "overlay",
            &merged,
            "overlay",
            MountFlags::empty(),
            data.as_c_str(),
        )
        .unwrap();
        let t_mount = t.elapsed();
        change(&merged);
        let t = Instant::now();
        rustix::mount::unmount(&merged, UnmountFlags::empty()).unwrap();
        let t_umount = t.elapsed();

        let t = Instant::now();
        let cs = scan(&up, &lower, &Limits::default()).unwrap();
        let t_scan = t.elapsed();
        let t = Instant::now();
        let card = render(&cs, &up, &lower, &RenderOptions::default());
        let t_render = t.elapsed();

        let t = Instant::now();
        let out = Command::new("git")
            .args(["status", "--porcelain"])
            .current_dir(&copy)
            .output()
            .unwrap();
        let t_git = t.elapsed();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).lines().count(),
            CHANGED
        );
        assert_eq!(cs.entries.len(), CHANGED);
        entries = cs.entries.len();
        card_len = card.len();
        if r == 0 {
            continue; // warm-up
        }
        mount_t.push(t_mount);
        umount_t.push(t_umount);
        scan_t.push(t_scan);
        render_t.push(t_render);
        git_t.push(t_git);
    }
    let _ = rustix::mount::unmount(&tmpfs, UnmountFlags::empty());

    let mut total: Vec<Duration> = (0..mount_t.len())
        .map(|i| mount_t[i] + scan_t[i] + render_t[i])
        .collect();
    let mount = median(&mut mount_t);
    let scan = median(&mut scan_t);
    let render = median(&mut render_t);
    let umount = median(&mut umount_t);
    let git = median(&mut git_t);
    println!(
        "Diff Card: {FILES}-file git repo, {CHANGED} files changed through the overlay, {entries} entries, {card_len}-byte card; medians of {rounds} rounds"
    );
    println!(
        "{:<34} {:>12} {:>16} {:>8}",
        "step", "luminaguard", "git status (ms)", "ratio"
    );
    for (name, v) in [
        ("overlay mount", mount),
        ("scan (upper vs lower)", scan),
        ("render card", render),
        ("mount + scan (goal <= 50 ms)", mount + scan),
        ("mount + scan + render", median(&mut total)),
    ] {
        println!("{name:<34} {v:>9.3} ms {git:>16.3} {:>8.3}", v / git);
    }
    println!("{:<34} {umount:>9.3} ms", "overlay unmount (not in total)");
}
