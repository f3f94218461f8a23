#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use super::*;

fn inc(host: &Path, at: &str) -> Include {
    Include {
        host: host.to_owned(),
        at: PathBuf::from(at),
    }
}

#[test]
fn places_must_be_plain_absolute_and_clear_of_the_guests_own() {
    for ok in ["/opt/mcp/node", "/usr/local/lib/x", "/etc/app.conf", "/srv"] {
        validate_at(Path::new(ok)).unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
    for bad in [
        "opt/x",
        "/",
        "/opt/../etc",
        "/opt/./x",
        "/opt/",
        "//opt",
        "/opt//x",
        "/proc",
        "/proc/x",
        "/sys/fs",
        "/dev/null",
        "/run",
        "/run/luminaguard/lower",
        "/workspace",
        "/workspace/x",
        "/a\nb",
    ] {
        assert!(validate_at(Path::new(bad)).is_err(), "{bad:?} accepted");
    }
    let e = validate_at(Path::new("/run/luminaguard/x")).unwrap_err();
    assert!(e.to_string().contains("/run"), "{e}");
}

#[test]
fn host_colon_at_parses_and_is_checked() {
    let i: Include = "/var/cache/x:/opt/x".parse().unwrap();
    assert_eq!(i, inc(Path::new("/var/cache/x"), "/opt/x"));
    // A colon in the host path that is not followed by '/' is part of it.
    let i: Include = "/data/a:b:/opt/x".parse().unwrap();
    assert_eq!(i.host, Path::new("/data/a:b"));
    for bad in [
        "/var/cache/x",
        "relative:/opt/x",
        "/x:opt",
        "/x:/proc/y",
        "/x:/",
        ":/opt",
    ] {
        assert!(bad.parse::<Include>().is_err(), "{bad:?} accepted");
    }
    let overlapping = [
        inc(Path::new("/a"), "/opt/x"),
        inc(Path::new("/b"), "/opt/x/y"),
    ];
    assert!(matches!(
        validate_all(&overlapping),
        Err(IncludeError::Overlap(..))
    ));
}

/// A base root: /etc/hosts, /opt, /lib -> usr/lib, /usr/lib; and an include tree with a file,
/// an executable, a relative and an absolute link and a sub-directory.
fn fixture(dir: &Path) -> (PathBuf, PathBuf) {
    let base = dir.join("base");
    for d in ["etc", "opt", "usr/lib"] {
        fs::create_dir_all(base.join(d)).unwrap();
    }
    fs::write(base.join("etc/hosts"), "base hosts\n").unwrap();
    std::os::unix::fs::symlink("usr/lib", base.join("lib")).unwrap();
    let src = dir.join("venv");
    fs::create_dir_all(src.join("bin")).unwrap();
    fs::create_dir_all(src.join("lib/site")).unwrap();
    fs::write(src.join("lib/site/mod.py"), "x = 1\n").unwrap();
    fs::write(src.join("bin/tool"), "#!/bin/sh\n").unwrap();
    fs::set_permissions(src.join("bin/tool"), fs::Permissions::from_mode(0o750)).unwrap();
    std::os::unix::fs::symlink("/usr/bin/python3", src.join("bin/python3")).unwrap();
    std::os::unix::fs::symlink("python3", src.join("bin/python")).unwrap();
    for p in [&base, &src] {
        // Fixed mtimes everywhere, so that two fixtures digest alike.
        let mut all = vec![p.clone()];
        let mut i = 0;
        while i < all.len() {
            if fs::symlink_metadata(&all[i]).unwrap().is_dir() {
                for e in fs::read_dir(&all[i]).unwrap() {
                    all.push(e.unwrap().path());
                }
            }
            i += 1;
        }
        for q in all.iter().rev() {
            set_mtime(q, 1_600_000_000, 5).unwrap();
        }
    }
    (base, src)
}

#[test]
fn staging_links_the_base_copies_the_include_and_keeps_links_and_modes() {
    let t = tempfile::tempdir().unwrap();
    let (base, src) = fixture(t.path());
    let hosts = t.path().join("hosts");
    fs::write(&hosts, "included hosts\n").unwrap();
    let out = t.path().join("out");
    let recorded = stage(
        &base,
        &[inc(&src, "/opt/mcp/python"), inc(&hosts, "/etc/hosts")],
        &out,
    )
    .unwrap();
    assert_eq!(recorded.len(), 2);
    assert_eq!(recorded[0].at, "/opt/mcp/python");
    assert_eq!(recorded[1].sha256, Digest::of(b"included hosts\n"));
    let py = out.join("opt/mcp/python");
    assert_eq!(
        fs::read_link(py.join("bin/python3")).unwrap(),
        Path::new("/usr/bin/python3")
    );
    assert_eq!(
        fs::read_link(py.join("bin/python")).unwrap(),
        Path::new("python3")
    );
    let tool = fs::symlink_metadata(py.join("bin/tool")).unwrap();
    assert_eq!(tool.mode() & 0o7777, 0o750);
    assert_eq!((tool.mtime(), tool.mtime_nsec()), (1_600_000_000, 5));
    assert_eq!(
        fs::read_to_string(py.join("lib/site/mod.py")).unwrap(),
        "x = 1\n"
    );
    // The replaced base file was unlinked, not written through.
    assert_eq!(
        fs::read_to_string(out.join("etc/hosts")).unwrap(),
        "included hosts\n"
    );
    assert_eq!(
        fs::read_to_string(base.join("etc/hosts")).unwrap(),
        "base hosts\n"
    );
    // A directory made above the place has the fixed mtime; a base parent keeps its own.
    let made = fs::metadata(out.join("opt/mcp")).unwrap();
    assert_eq!(made.mtime(), crate::hostroot::FIXED_MTIME as i64);
    let opt = fs::metadata(out.join("opt")).unwrap();
    assert_eq!((opt.mtime(), opt.mtime_nsec()), (1_600_000_000, 5));
    let etc = fs::metadata(out.join("etc")).unwrap();
    assert_eq!((etc.mtime(), etc.mtime_nsec()), (1_600_000_000, 5));
    // The base's link is still a link.
    assert_eq!(
        fs::read_link(out.join("lib")).unwrap(),
        Path::new("usr/lib")
    );
}

#[test]
fn the_staged_digest_follows_the_include_content_and_nothing_else() {
    let t = tempfile::tempdir().unwrap();
    let (base, src) = fixture(t.path());
    let digest = |name: &str| {
        let out = t.path().join(name);
        stage(&base, &[inc(&src, "/opt/mcp/python")], &out).unwrap();
        rootfs::scan_tree(&out).unwrap().digest
    };
    let first = digest("a");
    assert_eq!(digest("b"), first, "the same inputs stage the same tree");
    let plain = rootfs::scan_tree(&base).unwrap().digest;
    assert_ne!(first, plain, "the include is part of the tree");
    // One byte changed, same size, same mtime: a different tree.
    let f = src.join("lib/site/mod.py");
    fs::write(&f, "x = 2\n").unwrap();
    set_mtime(&f, 1_600_000_000, 5).unwrap();
    set_mtime(&src.join("lib/site"), 1_600_000_000, 5).unwrap();
    let changed = digest("c");
    assert_ne!(changed, first, "the include's content is an input");
    // A link's target is content too.
    let l = src.join("bin/python");
    fs::remove_file(&l).unwrap();
    std::os::unix::fs::symlink("python3.11", &l).unwrap();
    set_mtime(&l, 1_600_000_000, 5).unwrap();
    set_mtime(&src.join("bin"), 1_600_000_000, 5).unwrap();
    assert_ne!(digest("d"), changed);
}

#[test]
fn links_in_the_path_special_files_and_kind_conflicts_are_refused() {
    let t = tempfile::tempdir().unwrap();
    let (base, src) = fixture(t.path());
    let e = stage(&base, &[inc(&src, "/lib/python")], &t.path().join("a")).unwrap_err();
    assert!(
        matches!(&e, IncludeError::LinkInPath { link, .. } if link == Path::new("/lib")),
        "{e}"
    );
    let e = stage(&base, &[inc(&src, "/etc/hosts")], &t.path().join("b")).unwrap_err();
    assert!(matches!(e, IncludeError::Conflict { .. }), "{e}");
    let e = stage(&base, &[inc(&src, "/etc/hosts/x")], &t.path().join("c")).unwrap_err();
    assert!(matches!(e, IncludeError::Conflict { .. }), "{e}");
    nix::unistd::mkfifo(
        &src.join("lib/fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    let e = stage(&base, &[inc(&src, "/opt/x")], &t.path().join("d")).unwrap_err();
    assert!(e.to_string().contains("FIFOs"), "{e}");
    let e = stage(
        &base,
        &[inc(&t.path().join("absent"), "/opt/x")],
        &t.path().join("e"),
    )
    .unwrap_err();
    assert!(e.to_string().contains("absent"), "{e}");
    assert!(
        !t.path().join("e").exists(),
        "nothing staged for a missing include"
    );
}
