//! Hostile upper dirs and workspaces that move under the card: nothing may be written outside
//! the workspace, nothing may be applied once a check fails.
#![allow(
    clippy::disallowed_methods,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)] // test code

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::{Overlay, sh, tree};
use luminaguard_review::{ChangeKind, FileKind, Limits, RenderOptions, apply, render, scan};

fn fill(lower: &Path) {
    sh(
        lower,
        "printf 'line1\\n' > mod.txt
         mkdir sub && printf 'in sub\\n' > sub/keep
         mkdir gone && printf 'gone\\n' > gone/f",
    );
}

/// A directory outside the workspace, next to it, with one file.
fn outside(ov: &Overlay) -> std::path::PathBuf {
    let out = ov.dir.path().join("outside");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("secret"), b"secret\n").unwrap();
    out
}

#[test]
fn upper_symlinks_pointing_outside_are_applied_as_symlinks() {
    let Some(mut ov) = Overlay::new(true, fill) else {
        return;
    };
    let out = outside(&ov);
    let out_before = tree(&out);
    sh(
        &ov.merged,
        &format!(
            "ln -s {} escape && ln -s ../outside/secret rel",
            out.display()
        ),
    );
    ov.unmount();
    // Written straight into the upper dir: a dir of the lower replaced by a symlink to outside.
    std::fs::remove_dir_all(ov.upper.join("sub")).ok();
    std::os::unix::fs::symlink(&out, ov.upper.join("sub")).unwrap();

    let cs = scan(&ov.upper, &ov.lower, &Limits::default()).unwrap();
    let sub = cs
        .entries
        .iter()
        .find(|c| c.path.as_bytes() == b"sub")
        .unwrap();
    assert_eq!(sub.kind, ChangeKind::TypeChanged);
    assert!(
        !cs.entries
            .iter()
            .any(|c| c.path.as_bytes().starts_with(b"sub/secret")),
        "scan followed a symlink"
    );
    assert_eq!(
        cs.entries
            .iter()
            .find(|c| c.path.as_bytes() == b"sub/keep")
            .unwrap()
            .kind,
        ChangeKind::Deleted
    );
    let card = render(&cs, &ov.upper, &ov.lower, &RenderOptions::default());
    assert!(
        card.contains(&format!("A escape -> {}", out.display())),
        "{card}"
    );

    let ws = ov.workspace_copy("ws");
    apply(&cs, &ov.upper, &ws, Some((1000, 1000))).unwrap();
    assert_eq!(tree(&out), out_before, "nothing written outside");
    assert_eq!(std::fs::read_link(ws.join("escape")).unwrap(), out);
    assert_eq!(
        std::fs::read_link(ws.join("rel")).unwrap(),
        Path::new("../outside/secret")
    );
    assert_eq!(std::fs::read_link(ws.join("sub")).unwrap(), out);
}

#[test]
fn workspace_dir_swapped_for_symlink_after_the_card_is_refused() {
    let Some(mut ov) = Overlay::new(false, fill) else {
        return;
    };
    let out = outside(&ov);
    sh(
        &ov.merged,
        "printf 'new\\n' > sub/new.txt && printf 'more\\n' >> sub/keep",
    );
    ov.unmount();
    let cs = scan(&ov.upper, &ov.lower, &Limits::default()).unwrap();
    assert_eq!(cs.entries.len(), 2);

    let ws = ov.workspace_copy("ws");
    std::fs::rename(ws.join("sub"), ws.join("sub.real")).unwrap();
    std::os::unix::fs::symlink(&out, ws.join("sub")).unwrap();
    let (ws_before, out_before) = (tree(&ws), tree(&out));
    let err = apply(&cs, &ov.upper, &ws, None).unwrap_err();
    assert_eq!(err.code(), "workspace-changed", "{err}");
    assert_eq!(tree(&out), out_before, "nothing written outside");
    assert!(!out.join("new.txt").exists());
    assert_eq!(tree(&ws), ws_before, "nothing applied");
}

#[test]
fn special_and_setuid_files_are_refused() {
    let Some(mut ov) = Overlay::new(true, fill) else {
        return;
    };
    sh(
        &ov.merged,
        "mkfifo fifo && mknod dev c 1 3 && printf x > suid && chmod 4755 suid \
         && printf y > sgid && chmod 2755 sgid && printf 'ok\\n' > fine.txt",
    );
    drop(std::os::unix::net::UnixListener::bind(ov.merged.join("sock")).unwrap());
    ov.unmount();
    let cs = scan(&ov.upper, &ov.lower, &Limits::default()).unwrap();
    let reason = |p: &[u8]| match &cs
        .entries
        .iter()
        .find(|c| c.path.as_bytes() == p)
        .unwrap()
        .kind
    {
        ChangeKind::Refused { reason } => reason.clone(),
        k => panic!("{} not refused: {k:?}", String::from_utf8_lossy(p)),
    };
    assert_eq!(reason(b"fifo"), "fifo");
    assert_eq!(reason(b"dev"), "char device 1:3");
    assert_eq!(reason(b"sock"), "socket");
    assert!(reason(b"suid").contains("setuid"));
    assert!(reason(b"sgid").contains("setgid"));
    assert_eq!(cs.summary.refused, 5);
    let card = render(&cs, &ov.upper, &ov.lower, &RenderOptions::default());
    assert!(
        card.contains("5 refused entries: this change set cannot be applied"),
        "{card}"
    );
    assert!(card.contains("! fifo (refused: fifo)"), "{card}");

    let ws = ov.workspace_copy("ws");
    let before = tree(&ws);
    let err = apply(&cs, &ov.upper, &ws, None).unwrap_err();
    assert_eq!(err.code(), "refused-entry", "{err}");
    assert_eq!(tree(&ws), before, "nothing applied");
}

#[test]
fn regular_file_whiteouts_count_only_in_xwhiteout_dirs() {
    let Some(mut ov) = Overlay::new(true, fill) else {
        return;
    };
    ov.unmount();
    // Written straight into the upper dir (overlayfs never creates these itself).
    for d in ["sub", "gone"] {
        std::fs::create_dir(ov.upper.join(d)).unwrap();
    }
    let xw = |p: &Path| {
        std::fs::write(p, b"").unwrap();
        rustix::fs::setxattr(
            p,
            "user.overlay.whiteout",
            b"",
            rustix::fs::XattrFlags::empty(),
        )
        .unwrap();
    };
    xw(&ov.upper.join("sub/keep"));
    xw(&ov.upper.join("gone/f"));
    rustix::fs::setxattr(
        ov.upper.join("gone"),
        "user.overlay.opaque",
        b"x",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    let cs = scan(&ov.upper, &ov.lower, &Limits::default()).unwrap();
    let kind = |p: &[u8]| {
        cs.entries
            .iter()
            .find(|c| c.path.as_bytes() == p)
            .unwrap()
            .kind
            .clone()
    };
    assert_eq!(kind(b"gone/f"), ChangeKind::Deleted);
    assert!(matches!(kind(b"sub/keep"), ChangeKind::Refused { .. }));
    assert_eq!(cs.entries.len(), 2, "{:?}", cs.entries);
}

#[test]
fn upper_changed_after_the_card_is_refused() {
    let Some(mut ov) = Overlay::new(true, fill) else {
        return;
    };
    sh(
        &ov.merged,
        "printf 'line2\\n' >> mod.txt && printf 'a\\n' > added.txt",
    );
    ov.unmount();
    let cs = scan(&ov.upper, &ov.lower, &Limits::default()).unwrap();
    let ws = ov.workspace_copy("ws");
    let before = tree(&ws);

    std::fs::write(ov.upper.join("added.txt"), b"swapped after approval\n").unwrap();
    let err = apply(&cs, &ov.upper, &ws, None).unwrap_err();
    assert_eq!(err.code(), "upper-changed", "{err}");
    assert!(err.to_string().contains("added.txt"), "{err}");
    assert_eq!(tree(&ws), before, "nothing applied");

    // An extra file smuggled in is a change too.
    std::fs::write(ov.upper.join("added.txt"), b"a\n").unwrap();
    std::fs::write(ov.upper.join("extra"), b"x").unwrap();
    let err = apply(&cs, &ov.upper, &ws, None).unwrap_err();
    assert_eq!(err.code(), "upper-changed", "{err}");
    assert_eq!(tree(&ws), before, "nothing applied");
    std::fs::remove_file(ov.upper.join("extra")).unwrap();
    apply(&cs, &ov.upper, &ws, None).unwrap();
    assert_eq!(
        std::fs::read(ws.join("mod.txt")).unwrap(),
        b"line1\nline2\n"
    );
}

#[test]
fn workspace_changed_after_the_card_is_refused() {
    let Some(mut ov) = Overlay::new(false, fill) else {
        return;
    };
    sh(
        &ov.merged,
        "printf 'line2\\n' >> mod.txt && rm -rf gone && printf 'n\\n' > new.txt",
    );
    ov.unmount();
    let cs = scan(&ov.upper, &ov.lower, &Limits::default()).unwrap();
    let ws = ov.workspace_copy("ws");

    // The user edited a file the card modifies.
    std::fs::write(ws.join("mod.txt"), b"user edit\n").unwrap();
    let before = tree(&ws);
    let err = apply(&cs, &ov.upper, &ws, None).unwrap_err();
    assert_eq!(err.code(), "workspace-changed", "{err}");
    assert!(err.to_string().contains("mod.txt"), "{err}");
    assert_eq!(tree(&ws), before, "workspace byte-identical");

    // A new file inside a dir the card deletes.
    std::fs::write(ws.join("mod.txt"), b"line1\n").unwrap();
    std::fs::write(ws.join("gone/precious"), b"keep me\n").unwrap();
    let before = tree(&ws);
    let err = apply(&cs, &ov.upper, &ws, None).unwrap_err();
    assert_eq!(err.code(), "workspace-changed", "{err}");
    assert_eq!(tree(&ws), before, "workspace byte-identical");

    // A path the card adds now exists; a mode the card relies on changed.
    std::fs::remove_file(ws.join("gone/precious")).unwrap();
    std::fs::write(ws.join("new.txt"), b"n\n").unwrap();
    assert_eq!(
        apply(&cs, &ov.upper, &ws, None).unwrap_err().code(),
        "workspace-changed"
    );
    std::fs::remove_file(ws.join("new.txt")).unwrap();
    std::fs::set_permissions(ws.join("mod.txt"), std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(
        apply(&cs, &ov.upper, &ws, None).unwrap_err().code(),
        "workspace-changed"
    );
    std::fs::set_permissions(ws.join("mod.txt"), std::fs::Permissions::from_mode(0o644)).unwrap();
    apply(&cs, &ov.upper, &ws, None).unwrap();
    assert!(!ws.join("gone").exists());
}

#[test]
fn tampered_card_is_refused() {
    let Some(mut ov) = Overlay::new(true, fill) else {
        return;
    };
    sh(&ov.merged, "printf 'a\\n' > added.txt");
    ov.unmount();
    let mut cs = scan(&ov.upper, &ov.lower, &Limits::default()).unwrap();
    cs.entries[0].after.as_mut().unwrap().mode = 0o777;
    let ws = ov.workspace_copy("ws");
    assert_eq!(
        apply(&cs, &ov.upper, &ws, None).unwrap_err().code(),
        "invalid-card"
    );
}

#[test]
fn fifty_thousand_entries_are_too_large_or_summarised() {
    let Some(mut ov) = Overlay::new(true, fill) else {
        return;
    };
    sh(
        &ov.merged,
        "i=0; while [ $i -lt 100 ]; do mkdir d$i; i=$((i+1)); done
         i=0; while [ $i -lt 50000 ]; do : > d$((i % 100))/f$i; i=$((i+1)); done
         printf 'many\\n' > d7/f7",
    );
    ov.unmount();
    let small = Limits {
        max_entries: 10_000,
        ..Limits::default()
    };
    let err = scan(&ov.upper, &ov.lower, &small).unwrap_err();
    assert_eq!(err.code(), "too-large", "{err}");

    let cs = scan(&ov.upper, &ov.lower, &Limits::default()).unwrap();
    assert_eq!(cs.entries.len(), 50_100);
    assert_eq!(cs.summary.added, 50_100);
    let card = render(&cs, &ov.upper, &ov.lower, &RenderOptions::default());
    assert!(card.contains("card summarised: 50100 entries"), "{card}");
    assert!(card.contains("top directories by changes:"), "{card}");
    assert!(card.lines().count() < 30, "{card}");
    assert!(card.contains(&cs.digest));
    // The digest covers every entry, shown or not.
    let mut fewer = cs.entries.clone();
    fewer.retain(|c| c.path.as_bytes() != b"d7/f7");
    assert_ne!(luminaguard_review::digest::digest(&fewer), cs.digest);
}

#[test]
fn too_deep_is_too_large() {
    let Some(mut ov) = Overlay::new(true, fill) else {
        return;
    };
    sh(&ov.merged, "mkdir -p a/b/c/d/e && printf x > a/b/c/d/e/f");
    ov.unmount();
    let shallow = Limits {
        max_depth: 4,
        ..Limits::default()
    };
    let err = scan(&ov.upper, &ov.lower, &shallow).unwrap_err();
    assert_eq!(err.code(), "too-large", "{err}");
    let cs = scan(&ov.upper, &ov.lower, &Limits::default()).unwrap();
    assert_eq!(cs.entries.len(), 6);
    assert!(
        cs.entries
            .iter()
            .any(|c| c.after.as_ref().unwrap().kind == FileKind::File)
    );
}

#[test]
fn diffs_are_capped_and_escaped() {
    let Some(mut ov) = Overlay::new(true, fill) else {
        return;
    };
    sh(
        &ov.merged,
        "i=0; while [ $i -lt 20000 ]; do echo \"line $i\"; i=$((i+1)); done > big.txt
         printf 'evil \\033[2J\\033]0;title\\007 \\342\\200\\256rev\\n' > esc.txt",
    );
    ov.unmount();
    let cs = scan(&ov.upper, &ov.lower, &Limits::default()).unwrap();
    let opts = RenderOptions {
        limits: Limits {
            max_diff_bytes_per_file: 2_000,
            ..Limits::default()
        },
        ..Default::default()
    };
    let card = render(&cs, &ov.upper, &ov.lower, &opts);
    assert!(card.contains("diff cut: "), "{card}");
    assert!(card.len() < 4_000, "{} bytes", card.len());
    assert!(!card.contains('\x1b') && !card.contains('\x07'), "{card:?}");
    assert!(
        card.contains("evil \\x1b[2J\\x1b]0;title\\x07 \\xe2\\x80\\xaerev"),
        "{card}"
    );

    let tight = RenderOptions {
        limits: Limits {
            max_diff_bytes_total: 1_000,
            ..Limits::default()
        },
        ..Default::default()
    };
    let card = render(&cs, &ov.upper, &ov.lower, &tight);
    assert!(card.contains("diff budget is used up"), "{card}");
    assert!(card.len() < 2_000, "{} bytes", card.len());
}
