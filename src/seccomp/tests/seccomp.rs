//! The default profile, installed for real in a forked child: what it must deny fails with the
//! right errno, and what ordinary programs need still works.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)] // test code

use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Command;

use luminaguard_seccomp::Profile;

/// The probes, in the order the child reports them.
const PROBES: &[&str] = &[
    "ptrace",
    "mount",
    "umount2",
    "pivot_root",
    "unshare(NEWUSER)",
    "setns",
    "kexec_load",
    "init_module",
    "bpf",
    "perf_event_open",
    "keyctl",
    "add_key",
    "io_uring_setup",
    "userfaultfd",
    "reboot",
    "swapon",
    "socket(AF_INET)",
    "socket(AF_INET6)",
    "socket(AF_PACKET)",
    "socket(AF_NETLINK)",
    "socket(AF_INET, SOCK_RAW)",
    "clone(NEWNET)",
    "clone(NEWUSER)",
    "clone3",
    "socket(AF_UNIX)",
    "getpid",
    "fork",
    "no_new_privs",
];

/// A raw `clone` with namespace flags; if it is not denied, the new process exits at once.
unsafe fn clone_probe(flags: libc::c_int) -> i32 {
    unsafe {
        let rc = libc::syscall(
            libc::SYS_clone,
            (flags | libc::SIGCHLD) as libc::c_long,
            0,
            0,
            0,
            0,
        );
        if rc == 0 {
            libc::_exit(0);
        }
        if rc > 0 {
            libc::waitpid(rc as libc::pid_t, std::ptr::null_mut(), 0);
            return 0;
        }
        *libc::__errno_location()
    }
}

/// Result of each probe: 0 on success (or the value for `no_new_privs`), else the errno.
unsafe fn run_probes() -> Vec<i32> {
    unsafe {
        let r = |rc: libc::c_long| if rc < 0 { *libc::__errno_location() } else { 0 };
        let null = std::ptr::null::<libc::c_void>();
        let mut out = vec![
            r(libc::ptrace(libc::PTRACE_TRACEME, 0, null, null)),
            r(libc::mount(
                c"none".as_ptr(),
                c"/mnt".as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                null,
            ) as _),
            r(libc::umount2(c"/proc".as_ptr(), libc::MNT_DETACH) as _),
            r(libc::syscall(
                libc::SYS_pivot_root,
                c"/".as_ptr(),
                c"/".as_ptr(),
            )),
            r(libc::unshare(libc::CLONE_NEWUSER) as _),
            r(libc::setns(0, 0) as _),
            r(libc::syscall(libc::SYS_kexec_load, 0, 0, 0, 0)),
            r(libc::syscall(libc::SYS_init_module, 0, 0, 0)),
            r(libc::syscall(libc::SYS_bpf, 0, 0, 0)),
            r(libc::syscall(libc::SYS_perf_event_open, 0, 0, -1, -1, 0)),
            r(libc::syscall(libc::SYS_keyctl, 0, 0, 0, 0, 0)),
            r(libc::syscall(libc::SYS_add_key, 0, 0, 0, 0, 0)),
            r(libc::syscall(libc::SYS_io_uring_setup, 1, 0)),
            r(libc::syscall(libc::SYS_userfaultfd, 0)),
            r(libc::syscall(libc::SYS_reboot, 0, 0, 0, 0)),
            r(libc::syscall(libc::SYS_swapon, 0, 0)),
            r(libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) as _),
            r(libc::socket(libc::AF_INET6, libc::SOCK_DGRAM, 0) as _),
            r(libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) as _),
            r(libc::socket(libc::AF_NETLINK, libc::SOCK_RAW, 0) as _),
            r(libc::socket(libc::AF_INET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 1) as _),
            clone_probe(libc::CLONE_NEWNET),
            clone_probe(libc::CLONE_NEWUSER),
            r(libc::syscall(libc::SYS_clone3, 0, 0)),
        ];
        let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
        out.push(r(fd as _));
        out.push(r(libc::getpid() as _));
        let pid = libc::fork();
        if pid == 0 {
            libc::_exit(0);
        }
        out.push(if pid < 0 {
            *libc::__errno_location()
        } else {
            libc::waitpid(pid, std::ptr::null_mut(), 0);
            0
        });
        out.push(libc::prctl(libc::PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0));
        out
    }
}

/// A pipe as (read, write) ends.
fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// Forks, installs `profile` in the child, runs the probes there, and returns their results.
/// With `audited`, the profile's denials go to a supervisor process (forked by the child after
/// installing), which writes the name of each denied call to a pipe: those names come back too.
fn probe_under(profile: &Profile, audited: bool) -> (Vec<i32>, Vec<String>) {
    let (r, w) = pipe();
    let (audit_r, audit_w) = pipe();
    // SAFETY: the child makes raw system calls and leaves with _exit; glibc keeps malloc usable
    // after fork, which the result vectors rely on.
    match unsafe { libc::fork() } {
        0 => unsafe {
            drop(audit_r);
            // If the filter let something through, it must not touch the host: probe from
            // private mount and network namespaces (entered before the filter forbids it).
            let private = libc::unshare(libc::CLONE_NEWNS | libc::CLONE_NEWNET) == 0
                && libc::mount(
                    std::ptr::null(),
                    c"/".as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ) == 0;
            if !private {
                libc::_exit(98);
            }
            let mut supervisor = 0;
            if audited {
                let Ok(Some(listener)) = profile.apply_audited() else {
                    libc::_exit(97);
                };
                supervisor = libc::fork();
                if supervisor == 0 {
                    let _ = luminaguard_seccomp::audit::supervise(&listener, |d| {
                        let line = format!("{}\n", d.syscall);
                        libc::write(audit_w.as_raw_fd(), line.as_ptr().cast(), line.len());
                    });
                    libc::_exit(0);
                }
            } else if profile.apply().is_err() {
                libc::_exit(99);
            }
            drop(audit_w);
            let results = run_probes();
            let bytes: Vec<u8> = results.iter().flat_map(|v| v.to_le_bytes()).collect();
            libc::write(w.as_raw_fd(), bytes.as_ptr().cast(), bytes.len());
            if supervisor > 0 {
                libc::kill(supervisor, libc::SIGKILL);
                libc::waitpid(supervisor, std::ptr::null_mut(), 0);
            }
            libc::_exit(0);
        },
        pid if pid > 0 => {
            // (98: needs root for private namespaces; CI runs as root.)
            drop(w);
            drop(audit_w);
            let mut buf = Vec::new();
            std::fs::File::from(r).read_to_end(&mut buf).unwrap();
            let mut status = 0;
            unsafe { libc::waitpid(pid, &mut status, 0) };
            assert!(
                libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
                "probe child failed: status {status:#x}"
            );
            let mut denied = String::new();
            std::fs::File::from(audit_r)
                .read_to_string(&mut denied)
                .unwrap();
            let results = buf
                .chunks(4)
                .map(|c| i32::from_le_bytes(c.try_into().unwrap()))
                .collect();
            (results, denied.lines().map(str::to_owned).collect())
        }
        _ => panic!("fork failed"),
    }
}

fn expected_errno(probe: &str) -> i32 {
    match probe {
        "clone3" => libc::ENOSYS,
        "socket(AF_UNIX)" | "getpid" | "fork" => 0,
        "no_new_privs" => 1,
        _ => libc::EPERM,
    }
}

#[test]
fn default_profile_denies_what_it_must_and_allows_the_rest() {
    if !luminaguard_testkit::privileged("probing seccomp in private namespaces") {
        return;
    }
    let profile = Profile::load("default").unwrap();
    let (got, denied) = probe_under(&profile, false);
    assert_eq!(got.len(), PROBES.len());
    assert!(denied.is_empty());
    let result: std::collections::BTreeMap<&str, i32> = PROBES.iter().copied().zip(got).collect();
    for (probe, errno) in &result {
        let expected = expected_errno(probe);
        assert_eq!(
            *errno, expected,
            "{probe}: got {errno}, expected {expected} (all: {result:?})"
        );
    }
}

#[test]
fn audited_profile_denies_the_same_and_records_every_denial() {
    if !luminaguard_testkit::privileged("probing seccomp in private namespaces") {
        return;
    }
    let profile = Profile::load("default").unwrap();
    let (got, denied) = probe_under(&profile, true);
    let result: Vec<(&str, i32)> = PROBES.iter().copied().zip(got).collect();
    for (probe, errno) in &result {
        assert_eq!(*errno, expected_errno(probe), "{probe} (all: {result:?})");
    }
    // One record per EPERM probe, named by its system call, in order.
    let expected: Vec<&str> = PROBES
        .iter()
        .filter(|p| **p != "no_new_privs" && expected_errno(p) == libc::EPERM)
        .map(|p| p.split('(').next().unwrap())
        .collect();
    assert_eq!(denied, expected);
}

#[test]
fn ordinary_programs_run_under_the_profile() {
    let profile = Profile::load("default").unwrap();
    let mut cmd = Command::new("/bin/sh");
    cmd.args(["-c", "echo ok; ls / > /dev/null; cat /proc/self/status | grep -E '^(NoNewPrivs|Seccomp):'; (true &); wait"]);
    // SAFETY: Profile::apply only makes prctl/seccomp calls.
    unsafe {
        use std::os::unix::process::CommandExt;
        let p = profile.clone();
        cmd.pre_exec(move || p.apply().map_err(std::io::Error::other));
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("ok\n"), "{text}");
    assert!(
        text.contains("NoNewPrivs:\t1") && text.contains("Seccomp:\t2"),
        "{text}"
    );
}

#[test]
fn network_profile_opens_inet_sockets_and_nothing_else() {
    if !luminaguard_testkit::privileged("probing seccomp in private namespaces") {
        return;
    }
    let profile = Profile::load("network").unwrap();
    let (got, _) = probe_under(&profile, false);
    let result: Vec<(&str, i32)> = PROBES.iter().copied().zip(got).collect();
    for (probe, errno) in &result {
        let expected = match *probe {
            // What an egress policy needs (the firewall decides where they may go)…
            "socket(AF_INET)" | "socket(AF_INET6)" => 0,
            // …and still nothing that reaches below IP, whatever the family.
            other => expected_errno(other),
        };
        assert_eq!(*errno, expected, "{probe} (all: {result:?})");
    }
}
