//! Scan, render and apply against real overlay mounts: every kind of change made through the
//! overlay with ordinary tools, then applied to a copy of the lower dir, which must end up equal
//! to the overlay's merged view.
#![allow(
    clippy::disallowed_methods,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)] // test code

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use common::{Overlay, os, sh, tree};
use luminaguard_review::{
    ChangeKind, ChangeSet, FileKind, Limits, RelPath, RenderOptions, apply, render, scan,
};

const NON_UTF8: &[u8] = b"caf\xe9-\xff.txt";

fn fill(lower: &Path) {
    sh(
        lower,
        "printf 'same\\n' > keep.txt
         printf 'line1\\nline2\\nline3\\n' > mod.txt
         printf 'delete me\\n' > del.txt
         mkdir -p deldir/sub && printf 'deldir a\\n' > deldir/a && printf 'deldir b\\n' > deldir/sub/b
         mkdir repl && printf 'repl x\\n' > repl/x && printf 'repl y\\n' > repl/y
         printf 'rename me\\n' > ren_src.txt
         mkdir mvdir && printf 'moved 1\\n' > mvdir/f1 && printf 'moved 2\\n' > mvdir/f2
         printf '#!/bin/sh\\n' > mode.sh && chmod 644 mode.sh
         printf 'linked\\n' > link_me.txt
         printf 'was a file\\n' > typ
         printf 'bin\\000\\001\\002' > bin.dat
         printf 'long text\\n' > trunc.txt
         mkdir sub && printf 'in sub\\n' > sub/keep",
    );
}

fn changes(merged: &Path) {
    sh(
        merged,
        "printf 'line4\\n' >> mod.txt
         rm del.txt
         rm -rf deldir
         rm -rf repl && mkdir repl && printf 'repl new\\n' > repl/z
         mv ren_src.txt ren_dst.txt
         mv mvdir newdir
         chmod 755 mode.sh
         ln link_me.txt hard.txt
         rm typ && ln -s keep.txt typ
         printf '\\003' >> bin.dat
         truncate -s 0 trunc.txt
         printf 'hello\\n' > added.txt
         mkdir emptydir
         ln -s keep.txt sym
         cp /bin/true newbin",
    );
    std::fs::write(merged.join(os(NON_UTF8)), b"non-utf8 name\n").unwrap();
}

fn p(s: &[u8]) -> RelPath {
    RelPath::new(s.to_vec()).unwrap()
}

fn kind_of<'a>(cs: &'a ChangeSet, path: &[u8]) -> &'a ChangeKind {
    let c = cs
        .entries
        .iter()
        .find(|c| c.path.as_bytes() == path)
        .unwrap_or_else(|| panic!("no entry for {}", String::from_utf8_lossy(path)));
    &c.kind
}

fn scenario(userxattr: bool) {
    let Some(mut ov) = Overlay::new(userxattr, fill) else {
        return;
    };
    changes(&ov.merged);
    let merged_tree = tree(&ov.merged);
    ov.unmount();

    // The opaque dir is marked in the namespace the mount uses.
    let ns = if userxattr { "user" } else { "trusted" };
    let mut val = [0u8; 8];
    let n = rustix::fs::getxattr(
        ov.upper.join("repl"),
        format!("{ns}.overlay.opaque").as_str(),
        &mut val[..],
    )
    .expect("opaque xattr");
    assert_eq!(&val[..n], b"y");

    let cs = scan(&ov.upper, &ov.lower, &Limits::default()).unwrap();
    let k = |path: &[u8]| kind_of(&cs, path).clone();
    assert!(!cs.entries.iter().any(|c| c.path.as_bytes() == b"keep.txt"));
    assert!(
        !cs.entries.iter().any(|c| c.path.as_bytes() == b"sub"),
        "copied-up parent is no change"
    );
    assert_eq!(k(b"mod.txt"), ChangeKind::Modified);
    assert_eq!(k(b"del.txt"), ChangeKind::Deleted);
    for d in [&b"deldir"[..], b"deldir/a", b"deldir/sub", b"deldir/sub/b"] {
        assert_eq!(k(d), ChangeKind::Deleted, "{}", String::from_utf8_lossy(d));
    }
    assert_eq!(k(b"repl/x"), ChangeKind::Deleted);
    assert_eq!(k(b"repl/y"), ChangeKind::Deleted);
    assert_eq!(k(b"repl/z"), ChangeKind::Added);
    assert!(!cs.entries.iter().any(|c| c.path.as_bytes() == b"repl"));
    assert_eq!(
        k(b"ren_dst.txt"),
        ChangeKind::Renamed {
            from: p(b"ren_src.txt")
        }
    );
    assert!(
        !cs.entries
            .iter()
            .any(|c| c.path.as_bytes() == b"ren_src.txt")
    );
    assert_eq!(k(b"mvdir"), ChangeKind::Deleted);
    assert_eq!(k(b"newdir"), ChangeKind::Added);
    assert_eq!(
        k(b"newdir/f1"),
        ChangeKind::Renamed {
            from: p(b"mvdir/f1")
        }
    );
    assert_eq!(
        k(b"newdir/f2"),
        ChangeKind::Renamed {
            from: p(b"mvdir/f2")
        }
    );
    assert_eq!(k(b"mode.sh"), ChangeKind::ModeChanged);
    assert_eq!(
        k(b"hard.txt"),
        ChangeKind::HardLink {
            target: p(b"link_me.txt")
        }
    );
    assert_eq!(k(b"typ"), ChangeKind::TypeChanged);
    assert_eq!(k(b"bin.dat"), ChangeKind::Modified);
    assert_eq!(k(b"trunc.txt"), ChangeKind::Modified);
    assert_eq!(k(b"added.txt"), ChangeKind::Added);
    assert_eq!(k(b"emptydir"), ChangeKind::Added);
    assert_eq!(k(b"sym"), ChangeKind::Added);
    assert_eq!(k(b"newbin"), ChangeKind::Added);
    assert_eq!(k(NON_UTF8), ChangeKind::Added);
    let sym = cs
        .entries
        .iter()
        .find(|c| c.path.as_bytes() == b"sym")
        .unwrap();
    assert_eq!(sym.after.as_ref().unwrap().kind, FileKind::Symlink);
    assert_eq!(
        sym.after.as_ref().unwrap().target.as_ref().unwrap().0,
        b"keep.txt"
    );
    let trunc = cs
        .entries
        .iter()
        .find(|c| c.path.as_bytes() == b"trunc.txt")
        .unwrap();
    assert_eq!(trunc.after.as_ref().unwrap().size, 0);
    assert_eq!(cs.summary.refused, 0);
    assert_eq!(cs.summary.renamed, 3);

    // A card travels as JSON, non-UTF-8 names included.
    let json = serde_json::to_string(&cs).unwrap();
    let back: ChangeSet = serde_json::from_str(&json).unwrap();
    assert_eq!(back, cs);
    back.check().unwrap();
    assert!(json.contains("caf\\\\xe9-\\\\xff.txt"), "{json}");

    let card = render(&cs, &ov.upper, &ov.lower, &RenderOptions::default());
    println!("{card}");
    for needle in [
        "M mod.txt",
        "+line4",
        "D del.txt",
        "D deldir/",
        "R ren_src.txt -> ren_dst.txt",
        "R mvdir/f1 -> newdir/f1",
        "m mode.sh 0644 -> 0755",
        "L hard.txt => link_me.txt (hard link)",
        "T typ (file -> symlink -> keep.txt)",
        "A sym -> keep.txt",
        "A emptydir/",
        "A caf\\xe9-\\xff.txt",
        "binary:",
        &cs.digest,
    ] {
        assert!(card.contains(needle), "card lacks {needle:?}:\n{card}");
    }
    assert!(!card.contains('\x1b'), "no colour unless asked");
    let coloured = render(
        &cs,
        &ov.upper,
        &ov.lower,
        &RenderOptions {
            color: true,
            ..Default::default()
        },
    );
    assert!(coloured.contains("\x1b[32mA added.txt\x1b[0m"));

    // Apply onto a copy of the lower: the result is the merged view, owned by the user.
    let ws = ov.workspace_copy("ws");
    let applied = apply(&cs, &ov.upper, &ws, Some((1234, 5678))).unwrap();
    assert_eq!(applied.digest, cs.digest);
    assert_eq!(tree(&ws), merged_tree);
    for f in [
        &b"added.txt"[..],
        b"emptydir",
        b"sym",
        NON_UTF8,
        b"newdir/f1",
        b"mod.txt",
    ] {
        let md = std::fs::symlink_metadata(ws.join(os(f))).unwrap();
        assert_eq!(
            (md.uid(), md.gid()),
            (1234, 5678),
            "{}",
            String::from_utf8_lossy(f)
        );
    }
    let hard = std::fs::metadata(ws.join("hard.txt")).unwrap();
    let orig = std::fs::metadata(ws.join("link_me.txt")).unwrap();
    assert_eq!(hard.ino(), orig.ino(), "hard link preserved");
    // No temp files left behind.
    assert!(
        !tree(&ws)
            .keys()
            .any(|k| k.windows(10).any(|w| w == b".lg-review"))
    );

    // Applying twice is refused: the workspace no longer holds the before states.
    let again = apply(&cs, &ov.upper, &ws, None).unwrap_err();
    assert_eq!(again.code(), "workspace-changed", "{again}");
}

#[test]
fn overlay_with_userxattr_scans_renders_applies() {
    scenario(true);
}

#[test]
fn overlay_with_trusted_xattrs_scans_renders_applies() {
    scenario(false);
}

#[test]
fn nothing_changed_is_an_empty_card() {
    let Some(mut ov) = Overlay::new(true, fill) else {
        return;
    };
    sh(&ov.merged, "cat mod.txt >/dev/null; ls -R >/dev/null");
    ov.unmount();
    let cs = scan(&ov.upper, &ov.lower, &Limits::default()).unwrap();
    assert!(cs.entries.is_empty(), "{:?}", cs.entries);
    assert!(render(&cs, &ov.upper, &ov.lower, &RenderOptions::default()).contains("no changes"));
}

#[test]
fn copy_up_without_change_is_not_a_change() {
    // chmod to the same mode and touch copy a file up without changing it.
    let Some(mut ov) = Overlay::new(false, fill) else {
        return;
    };
    sh(&ov.merged, "chmod 644 mode.sh && touch keep.txt sub/keep");
    ov.unmount();
    assert!(ov.upper.join("keep.txt").exists(), "copied up");
    let cs = scan(&ov.upper, &ov.lower, &Limits::default()).unwrap();
    assert!(cs.entries.is_empty(), "{:?}", cs.entries);
}
