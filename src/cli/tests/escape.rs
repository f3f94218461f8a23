//! The escape suite: each case tries to get out of a `luminaguard run` sandbox and must be
//! blocked; after each, the host is unaffected and a new sandbox still works. Root; required in CI.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)] // test code

use std::net::{TcpListener, UdpSocket};
use std::path::Path;
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_luminaguard");

fn run(rt: &Path, flags: &[&str], script: &str) -> Output {
    Command::new(BIN)
        .arg("--runtime-dir")
        .arg(rt)
        .arg("run")
        .args(flags)
        .args(["--", "sh", "-c", script])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Runs a Perl probe in a sandbox; it prints `ok` if the operation succeeded, else the errno name.
fn probe(rt: &Path, perl: &str) -> String {
    probe_audited(rt, perl).0
}

const AUDIT_LINE: &str = "luminaguard: the sandbox's seccomp policy denied: ";

/// The probe's stdout and unexpected stderr, and the seccomp audit line `run` printed, if any.
fn probe_audited(rt: &Path, perl: &str) -> (String, Option<String>) {
    let script = format!("exec perl -e 'use POSIX; use Errno; {perl}'");
    let out = run(rt, &[], &script);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let (audit, rest): (Vec<&str>, Vec<&str>) =
        stderr.lines().partition(|l| l.starts_with(AUDIT_LINE));
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned() + &rest.join("\n");
    (
        text,
        audit.first().map(|l| l[AUDIT_LINE.len()..].to_owned()),
    )
}

/// After an attempt: the host is as it was and a fresh sandbox works.
fn still_fine(rt: &Path) {
    let out = run(rt, &[], "echo alive");
    assert_eq!(
        out.stdout,
        b"alive\n",
        "a new sandbox no longer works ({:?}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_dir(rt.join("sandboxes")).unwrap().count(),
        0,
        "a sandbox was left behind"
    );
}

#[test]
fn every_escape_attempt_is_blocked() {
    if !luminaguard_testkit::privileged("the escape suite") {
        return;
    }
    let rt = tempfile::tempdir().unwrap();
    let rt = rt.path();

    // ---- network: a listener on the host's loopback, UDP/DNS out, raw and packet sockets.
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (tport, uport) = (
        tcp.local_addr().unwrap().port(),
        udp.local_addr().unwrap().port(),
    );
    let net_cases = [
        (
            "tcp to host loopback",
            format!(
                "socket(my $s, AF_INET, SOCK_STREAM, 0) or die qq(socket:$!\\n); connect($s, pack_sockaddr_in({tport}, inet_aton(q(127.0.0.1)))) or die qq(connect:$!\\n); print qq(ok\\n);"
            ),
        ),
        (
            "udp to host loopback",
            format!(
                "socket(my $s, AF_INET, SOCK_DGRAM, 0) or die qq(socket:$!\\n); send($s, q(x), 0, pack_sockaddr_in({uport}, inet_aton(q(127.0.0.1)))) or die qq(send:$!\\n); print qq(ok\\n);"
            ),
        ),
        (
            "udp socket for DNS",
            "socket(my $s, AF_INET, SOCK_DGRAM, 0) or die qq(socket:$!\\n); print qq(ok\\n);"
                .to_owned(),
        ),
        (
            "ipv6 socket",
            "socket(my $s, 10, SOCK_STREAM, 0) or die qq(socket:$!\\n); print qq(ok\\n);"
                .to_owned(),
        ),
        (
            "raw socket",
            "socket(my $s, AF_INET, SOCK_RAW, 1) or die qq(socket:$!\\n); print qq(ok\\n);"
                .to_owned(),
        ),
        (
            "packet socket",
            "socket(my $s, 17, SOCK_RAW, 0) or die qq(socket:$!\\n); print qq(ok\\n);".to_owned(),
        ),
    ];
    for (name, perl) in &net_cases {
        let got = probe(rt, &format!("use Socket; {perl}"));
        assert!(
            !got.starts_with("ok") && got.contains("socket:"),
            "{name}: not blocked at socket(): {got}"
        );
        still_fine(rt);
    }
    tcp.set_nonblocking(true).unwrap();
    assert!(
        tcp.accept().is_err(),
        "the host listener received a connection"
    );
    let mut buf = [0u8; 8];
    udp.set_nonblocking(true).unwrap();
    assert!(
        udp.recv(&mut buf).is_err(),
        "the host UDP socket received a datagram"
    );

    // ---- privilege: raw system calls by number (x86_64).
    let host_pid = std::process::id();
    let syscalls = [
        (
            "ptrace attach to a host process",
            format!("101, 16, {host_pid}, 0, 0"),
        ),
        ("mount", "165, 0, 0, 0, 0, 0".to_owned()),
        ("unshare(CLONE_NEWUSER)", "272, 0x10000000".to_owned()),
        ("setns", "308, 0, 0".to_owned()),
        ("kexec_load", "246, 0, 0, 0, 0".to_owned()),
        ("bpf", "321, 0, 0, 0".to_owned()),
        ("io_uring_setup", "425, 1, 0".to_owned()),
        ("keyctl", "250, 0, 0, 0, 0, 0".to_owned()),
        ("init_module", "175, 0, 0, 0".to_owned()),
        ("perf_event_open", "298, 0, 0, -1, -1, 0".to_owned()),
    ];
    for (name, args) in &syscalls {
        let (got, audit) = probe_audited(
            rt,
            &format!(
                "my $r = syscall({args}); print $r == -1 ? ($!{{EPERM}} ? qq(EPERM\\n) : qq(errno $!\\n)) : qq(ok\\n);"
            ),
        );
        assert_eq!(got, "EPERM", "{name}: expected EPERM, got {got:?}");
        // The denial is on record, under its name.
        let syscall = match *name {
            "ptrace attach to a host process" => "ptrace",
            other => other.split('(').next().unwrap(),
        };
        assert_eq!(audit.as_deref(), Some(&*format!("{syscall} x1")), "{name}");
        still_fine(rt);
    }
    let out = run(
        rt,
        &[],
        "grep -E '^(NoNewPrivs|CapEff|CapBnd):' /proc/self/status",
    );
    let status = String::from_utf8_lossy(&out.stdout);
    for line in [
        "NoNewPrivs:\t1",
        "CapEff:\t0000000000000000",
        "CapBnd:\t0000000000000000",
    ] {
        assert!(
            status.lines().any(|l| l == line),
            "{line:?} missing:\n{status}"
        );
    }
    // The host's processes are not even visible.
    let out = run(
        rt,
        &[],
        &format!("test -e /proc/{host_pid} && echo visible || echo hidden"),
    );
    assert_eq!(out.stdout, b"hidden\n");

    // ---- filesystem: outside the workspace, host secrets, symlink and .. tricks, device nodes.
    let ws = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("target"), "untouched").unwrap();
    let wsf = ["--workspace", ws.path().to_str().unwrap()];
    let script = format!(
        "for p in /etc/passwd /usr/bin/x /x /var/tmp/x {o}/target; do (echo pwned > $p) 2>/dev/null && echo WROTE $p; done; \
         ln -s {o}/target /workspace/link; (echo pwned > /workspace/link) 2>/dev/null && echo WROTE link; \
         (echo pwned > /workspace/../etc/x) 2>/dev/null && echo WROTE dotdot; \
         for s in /etc/shadow /root/.ssh/id_rsa /home /var/run/docker.sock /run/containerd/containerd.sock /proc/kcore; do \
           test -s $s -a -r $s && cat $s >/dev/null 2>&1 && echo READ $s; done; \
         ls /dev; mknod /workspace/sda b 8 0 2>/dev/null && echo MKNOD; true",
        o = outside.path().display()
    );
    let out = run(rt, &wsf, &script);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !text.contains("WROTE") && !text.contains("READ") && !text.contains("MKNOD"),
        "{text}"
    );
    let devs: Vec<&str> = text.lines().collect();
    for d in &devs {
        assert!(
            [
                "fd", "full", "null", "ptmx", "pts", "random", "shm", "stderr", "stdin", "stdout",
                "tty", "urandom", "zero"
            ]
            .contains(d),
            "unexpected device {d:?}"
        );
    }
    assert_eq!(
        std::fs::read_to_string(outside.path().join("target")).unwrap(),
        "untouched"
    );
    still_fine(rt);

    // ---- resources: fork bomb, memory hog, disk filler, runaway.
    let out = run(
        rt,
        &["--pids", "32"],
        "exec perl -e '$|=1; my $n=0; for (1..200) { my $p=fork(); last unless defined $p; if (!$p) { sleep 60; exit 0 } $n++ } print qq($n\\n)'",
    );
    let forked: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert!(
        forked < 32,
        "fork bomb got {forked} children under --pids 32"
    );
    still_fine(rt);
    let out = run(
        rt,
        &["--memory", "48M"],
        "x=$(head -c 300000000 /dev/zero | tr '\\0' a); echo survived",
    );
    assert_eq!(out.status.code(), Some(137));
    assert!(String::from_utf8_lossy(&out.stderr).contains("out of memory"));
    still_fine(rt);
    // /tmp, /dev/shm and a private workspace share one tmpfs, sized to fit inside the memory
    // limit with room to spare: filling all three gives ENOSPC, never an OOM kill of the agent,
    // and the sandbox goes on serving.
    let out = run(
        rt,
        &["--memory", "256M"],
        "head -c 400000000 /dev/zero > /tmp/fill && echo FILLED; \
         head -c 400000000 /dev/zero > /dev/shm/fill && echo FILLED; \
         head -c 400000000 /dev/zero > /workspace/fill && echo FILLED; \
         df -k /tmp | tail -1; echo still-serving",
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("FILLED"), "the disk filler was not stopped");
    assert!(text.contains("still-serving"), "{text}");
    let size_kib: u64 = text
        .lines()
        .find(|l| l.starts_with("tmpfs"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no df line: {text}"));
    assert!(
        size_kib * 1024 < 256 << 20,
        "scratch of {size_kib} KiB does not fit in the 256M limit"
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    still_fine(rt);
    let out = run(rt, &["--timeout", "500ms"], "sleep 100 & sleep 100 & wait");
    assert_eq!(out.status.code(), Some(137));
    still_fine(rt);
    let leftover = luminaguard_testkit::live_processes_matching(&["sleep 100"]);
    assert!(leftover.is_empty(), "orphans survived: {leftover:?}");
}
