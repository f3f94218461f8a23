#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use super::*;

/// One entry as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    name: String,
    ino: u32,
    mode: u32,
    uid: u32,
    gid: u32,
    nlink: u32,
    mtime: u32,
    rdev: (u32, u32),
    data: Vec<u8>,
}

/// A strict newc reader: checks the magic, the alignment of every header, name and data, the
/// name's NUL, and that nothing follows the trailer.
fn read_newc(bytes: &[u8]) -> Vec<Record> {
    let field = |at: usize, i: usize| {
        let s = std::str::from_utf8(&bytes[at + 6 + i * 8..at + 14 + i * 8]).unwrap();
        assert!(s.bytes().all(|b| b.is_ascii_hexdigit()), "field {i} {s:?}");
        u32::from_str_radix(s, 16).unwrap()
    };
    let mut records = Vec::new();
    let mut pos = 0;
    loop {
        assert_eq!(pos % 4, 0, "header at {pos} is not 4-aligned");
        assert_eq!(&bytes[pos..pos + 6], b"070701", "magic at {pos}");
        let namesize = field(pos, 11) as usize;
        let size = field(pos, 6) as usize;
        assert_eq!(field(pos, 12), 0, "check field");
        let name_at = pos + HEADER_LEN;
        let name = &bytes[name_at..name_at + namesize];
        assert_eq!(name.last(), Some(&0), "name NUL-terminated");
        let name = std::str::from_utf8(&name[..namesize - 1])
            .unwrap()
            .to_owned();
        let data_at = (name_at + namesize).next_multiple_of(4);
        assert!(bytes[name_at + namesize..data_at].iter().all(|&b| b == 0));
        let data = bytes[data_at..data_at + size].to_vec();
        let next = (data_at + size).next_multiple_of(4);
        assert!(bytes[data_at + size..next].iter().all(|&b| b == 0));
        assert_eq!((field(pos, 7), field(pos, 8)), (0, 0), "devmajor/devminor");
        let record = Record {
            ino: field(pos, 0),
            mode: field(pos, 1),
            uid: field(pos, 2),
            gid: field(pos, 3),
            nlink: field(pos, 4),
            mtime: field(pos, 5),
            rdev: (field(pos, 9), field(pos, 10)),
            name,
            data,
        };
        pos = next;
        if record.name == TRAILER {
            assert_eq!(pos, bytes.len(), "bytes after the trailer");
            return records;
        }
        records.push(record);
    }
}

fn sample() -> Archive {
    let mut a = Archive::new();
    a.file("init", 0o755, b"#!/bin/sh\necho hi\n".to_vec())
        .unwrap();
    a.dir("dev", 0o755).unwrap();
    a.char_device("dev/console", 0o600, 5, 1).unwrap();
    a.dir("proc", 0o555).unwrap();
    a.symlink("bin/sh", "/bin/busybox").unwrap();
    a.file(
        "lib/modules/6.1.0/kernel/drivers/virtio/virtio_ring.ko",
        0o644,
        vec![7u8; 1001],
    )
    .unwrap();
    a.file("etc/empty", 0o600, Vec::new()).unwrap();
    a
}

#[test]
fn round_trips_through_a_reader() {
    let records = read_newc(&sample().to_bytes());
    let names: Vec<&str> = records.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "bin",
            "bin/sh",
            "dev",
            "dev/console",
            "etc",
            "etc/empty",
            "init",
            "lib",
            "lib/modules",
            "lib/modules/6.1.0",
            "lib/modules/6.1.0/kernel",
            "lib/modules/6.1.0/kernel/drivers",
            "lib/modules/6.1.0/kernel/drivers/virtio",
            "lib/modules/6.1.0/kernel/drivers/virtio/virtio_ring.ko",
            "proc",
        ]
    );
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r.ino as usize, i + 1, "inodes count up: {}", r.name);
        assert_eq!((r.uid, r.gid, r.mtime), (0, 0, 0), "{}", r.name);
    }
    let get = |name: &str| records.iter().find(|r| r.name == name).unwrap();
    assert_eq!(get("init").mode, 0o100_755);
    assert_eq!(get("init").data, b"#!/bin/sh\necho hi\n");
    assert_eq!(get("init").nlink, 1);
    assert_eq!(get("bin").mode, 0o040_755, "implicit parent");
    assert_eq!(get("bin").nlink, 2);
    assert_eq!(get("proc").mode, 0o040_555);
    assert_eq!(get("bin/sh").mode, 0o120_777);
    assert_eq!(get("bin/sh").data, b"/bin/busybox");
    assert_eq!(get("dev/console").mode, 0o020_600);
    assert_eq!(get("dev/console").rdev, (5, 1));
    assert!(get("dev/console").data.is_empty());
    assert_eq!(
        get("lib/modules/6.1.0/kernel/drivers/virtio/virtio_ring.ko").data,
        vec![7u8; 1001]
    );
    assert!(get("etc/empty").data.is_empty());
}

#[test]
fn the_bytes_are_exactly_newc() {
    let mut a = Archive::new();
    a.file("init", 0o755, b"hi".to_vec()).unwrap();
    // Fields: ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor, rdevmajor,
    // rdevminor, namesize, check; then the name, padded so header + name is a multiple of 4, and
    // the data, padded likewise.
    let expected = [
        "070701",
        "00000001",
        "000081ED",
        "00000000",
        "00000000",
        "00000001",
        "00000000",
        "00000002",
        "00000000",
        "00000000",
        "00000000",
        "00000000",
        "00000005",
        "00000000",
        "init\0\0",
        "hi\0\0",
        "070701",
        "00000000",
        "00000000",
        "00000000",
        "00000000",
        "00000001",
        "00000000",
        "00000000",
        "00000000",
        "00000000",
        "00000000",
        "00000000",
        "0000000B",
        "00000000",
        "TRAILER!!!\0\0\0\0",
    ]
    .concat();
    assert_eq!(String::from_utf8(a.to_bytes()).unwrap(), expected);
}

#[test]
fn same_entries_give_the_same_bytes_whatever_the_order() {
    let a = sample().to_bytes();
    let mut b = Archive::new();
    b.file("etc/empty", 0o600, Vec::new()).unwrap();
    b.file(
        "lib/modules/6.1.0/kernel/drivers/virtio/virtio_ring.ko",
        0o644,
        vec![7u8; 1001],
    )
    .unwrap();
    b.symlink("bin/sh", "/bin/busybox").unwrap();
    b.dir("proc", 0o555).unwrap();
    b.char_device("dev/console", 0o600, 5, 1).unwrap();
    b.file("init", 0o755, b"#!/bin/sh\necho hi\n".to_vec())
        .unwrap();
    // dev was implicit here first, then made explicit with the same mode.
    b.dir("dev", 0o755).unwrap();
    assert_eq!(a, b.to_bytes());
    assert_eq!(a.len() % 4, 0);
    let mut written = Vec::new();
    assert_eq!(sample().write_to(&mut written).unwrap(), a.len() as u64);
    assert_eq!(written, a);
}

#[test]
fn an_explicit_mode_replaces_an_implicit_directory() {
    let mut a = Archive::new();
    a.file("usr/bin/x", 0o755, b"x".to_vec()).unwrap();
    a.dir("usr", 0o700).unwrap();
    let records = read_newc(&a.to_bytes());
    assert_eq!(records[0].name, "usr");
    assert_eq!(records[0].mode, 0o040_700);
    // But an explicit directory cannot be added twice.
    assert!(matches!(a.dir("usr", 0o755), Err(CpioError::Exists(_))));
}

#[test]
fn refuses_hostile_and_conflicting_paths() {
    let mut a = Archive::new();
    for bad in [
        "",
        "/init",
        "../etc/passwd",
        "a/../../b",
        "a/./b",
        ".",
        "a//b",
        "dir/",
        "nul\0byte",
        "TRAILER!!!",
    ] {
        let err = a.file(bad, 0o644, Vec::new()).unwrap_err();
        assert!(matches!(err, CpioError::BadPath { .. }), "{bad:?}: {err}");
    }
    assert!(matches!(
        a.file(&"x/".repeat(2048), 0o644, Vec::new()),
        Err(CpioError::BadPath { .. })
    ));
    a.file("init", 0o755, b"x".to_vec()).unwrap();
    assert!(matches!(
        a.file("init", 0o755, Vec::new()),
        Err(CpioError::Exists(_))
    ));
    assert!(matches!(a.dir("init", 0o755), Err(CpioError::Exists(_))));
    let err = a.file("init/x", 0o644, Vec::new()).unwrap_err();
    assert!(
        matches!(&err, CpioError::ParentNotDir { parent, .. } if parent == "init"),
        "{err}"
    );
    assert!(matches!(
        a.file("m", 0o100_644, Vec::new()),
        Err(CpioError::BadMode { .. })
    ));
    assert!(matches!(
        a.symlink("l", ""),
        Err(CpioError::BadTarget { .. })
    ));
    assert!(matches!(
        a.symlink("l", "a\0b"),
        Err(CpioError::BadTarget { .. })
    ));
    // Nothing half-added by the failures: only init.
    assert_eq!(a.len(), 1);
    assert!(a.contains("init"));
}

#[test]
fn write_file_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("initramfs.cpio");
    let n = sample().write_file(&path).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), sample().to_bytes());
    assert_eq!(n, sample().to_bytes().len() as u64);
    let err = sample()
        .write_file(&dir.path().join("no/such/dir/initramfs.cpio"))
        .unwrap_err();
    assert!(
        err.to_string().contains("no/such/dir/initramfs.cpio"),
        "{err}"
    );
}

/// `ls -l`-style mode string.
fn mode_string(mode: u32) -> String {
    let kind = match mode & 0o170_000 {
        S_IFDIR => 'd',
        S_IFLNK => 'l',
        S_IFCHR => 'c',
        _ => '-',
    };
    let mut s = String::from(kind);
    for shift in [6, 3, 0] {
        let bits = (mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    s
}

/// GNU cpio lists the archive as the reader above reads it: names, types, modes, link counts,
/// sizes, device numbers and link targets. Skipped when `cpio` is not installed.
#[test]
fn gnu_cpio_lists_it_identically() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.cpio");
    let bytes = sample().to_bytes();
    std::fs::write(&path, &bytes).unwrap();
    let out = match std::process::Command::new("cpio")
        .args(["-itv", "--quiet"])
        .env("LC_ALL", "C")
        .env("TZ", "UTC")
        .stdin(std::fs::File::open(&path).unwrap())
        .output()
    {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("skipped: cpio is not installed");
            return;
        }
        Err(e) => panic!("running cpio: {e}"),
    };
    assert!(
        out.status.success(),
        "cpio -itv: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: Vec<(String, String, String, String)> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let toks: Vec<&str> = line.split_whitespace().collect();
            let year = toks.iter().position(|t| *t == "1970").expect(line);
            // mode, nlink, owner, group, size or "major," "minor", month, day, 1970, name...
            let size = toks[4..year - 2].concat();
            assert_eq!((toks[2], toks[3]), ("root", "root"), "{line}");
            (
                toks[0].to_owned(),
                toks[1].to_owned(),
                size,
                toks[year + 1..].join(" "),
            )
        })
        .collect();
    let expected: Vec<(String, String, String, String)> = read_newc(&bytes)
        .into_iter()
        .map(|r| {
            let size = if r.mode & 0o170_000 == S_IFCHR {
                format!("{},{}", r.rdev.0, r.rdev.1)
            } else {
                r.data.len().to_string()
            };
            let name = if r.mode & 0o170_000 == S_IFLNK {
                format!("{} -> {}", r.name, String::from_utf8(r.data).unwrap())
            } else {
                r.name
            };
            (mode_string(r.mode), r.nlink.to_string(), size, name)
        })
        .collect();
    assert_eq!(listed, expected);
}
