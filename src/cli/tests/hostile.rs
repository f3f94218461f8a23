//! The hostile-tenant suite: each test is an attack a review made from inside a process sandbox
//! — a command run by `luminaguard run` or `sandbox exec` behaving as an attacker would — and
//! what must hold afterwards. Every attack runs against a root-created sandbox and, where the
//! attack applies, a rootless one (as `nobody`, which is also why these tests need root).
//! Required in CI.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)] // test code

use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use luminaguard_testkit::terminal::{self, drain, pending_input};
use luminaguard_testkit::text;

const BIN: &str = env!("CARGO_BIN_EXE_luminaguard");
const NOBODY: u32 = 65534;

/// Who creates the sandboxes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Root,
    /// `nobody`, with `--no-cgroup` (no cgroup is delegated to it on these hosts).
    Rootless,
}

const BOTH: [Who; 2] = [Who::Root, Who::Rootless];

/// A runtime directory and the identity that uses it.
struct Host {
    who: Who,
    _dir: tempfile::TempDir,
    rt: PathBuf,
}

/// A directory `who` owns (mode 0700).
fn owned_dir(who: Who) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    if who == Who::Rootless {
        std::os::unix::fs::chown(d.path(), Some(NOBODY), Some(NOBODY)).unwrap();
    }
    d
}

impl Host {
    fn new(who: Who) -> Self {
        let dir = owned_dir(who);
        let rt = dir.path().join("rt");
        Self { who, _dir: dir, rt }
    }

    /// `luminaguard --runtime-dir RT args…` as this host's user.
    fn command(&self, args: &[&str]) -> Command {
        let mut c = match self.who {
            Who::Root => Command::new(BIN),
            Who::Rootless => {
                let mut c = Command::new("setpriv");
                c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
                    .arg(BIN)
                    .env("HOME", "/nonexistent")
                    .env_remove("XDG_RUNTIME_DIR");
                c
            }
        };
        c.arg("--runtime-dir").arg(&self.rt).args(args);
        c.env("RUST_LOG", "warn");
        // The hostile tenant's code runs as a person allowed it: what is under test is what the
        // sandbox lets it do, not what the policy would have asked (docs/approval.md).
        c.env("LUMINAGUARD_POLICY", "permissive");
        c
    }

    /// Flags every sandbox of this host needs.
    fn create_flags(&self) -> Vec<&'static str> {
        match self.who {
            Who::Root => vec![],
            Who::Rootless => vec!["--no-cgroup"],
        }
    }

    /// `run [flags] -- argv…` with `stdin` fed to the command.
    fn run(&self, flags: &[&str], argv: &[&str], stdin: &str) -> Output {
        let mut args = vec!["run"];
        args.extend(self.create_flags());
        args.extend(flags);
        args.push("--");
        args.extend(argv);
        let mut child = self
            .command(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    fn lg(&self, args: &[&str]) -> Output {
        self.command(args).stdin(Stdio::null()).output().unwrap()
    }

    fn sandboxes_left(&self) -> usize {
        std::fs::read_dir(self.rt.join("sandboxes"))
            .map(|d| d.count())
            .unwrap_or(0)
    }
}

fn ok(what: &str, out: &Output) -> String {
    assert!(
        out.status.success(),
        "{what}: {:?}\nstdout: {}\nstderr: {}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Perl that tries every way a process of the sandbox could take, use or answer the seccomp
/// listener, or any other descriptor of PID 1: `pidfd_getfd` on every fd of every visible
/// process, `/proc/*/fd` of PID 1, its memory and environment, ptrace, `process_vm_readv`,
/// `kcmp`, signals. Prints `GOT …` for each that worked, then how each call the profile denies
/// fares afterwards.
const STEAL: &str = r#"
use strict; use warnings; use POSIX ();
my @got;
opendir(my $d, "/proc") or die "no /proc: $!";
my @pids = grep { /^\d+$/ && $_ != $$ } readdir $d;
print "visible: @pids\n";
for my $pid (@pids) {
    my $p = syscall(434, $pid + 0, 0);                       # pidfd_open
    next if $p < 0;
    for my $fd (0 .. 1023) {
        push @got, "pidfd_getfd($pid, $fd)" if syscall(438, $p, $fd, 0) >= 0;
    }
    POSIX::close($p);
}
if (opendir(my $fds, "/proc/1/fd")) {
    for my $fd (grep { /^\d+$/ } readdir $fds) {
        push @got, "open /proc/1/fd/$fd" if open(my $h, "<", "/proc/1/fd/$fd");
        my $l = readlink("/proc/1/fd/$fd");
        push @got, "readlink /proc/1/fd/$fd = $l" if defined $l;
    }
}
for my $f ("/proc/1/mem", "/proc/1/environ", "/proc/1/fdinfo/3", "/proc/1/maps", "/proc/1/auxv") {
    if (open(my $h, "<", $f)) { my $x; push @got, "read $f" if sysread($h, $x, 16); }
}
push @got, "ptrace(ATTACH, 1)" if syscall(101, 16, 1, 0, 0) == 0;
push @got, "ptrace(SEIZE, 1)" if syscall(101, 0x4206, 1, 0, 0) == 0;
my $buf = "\0" x 64;
my $addr = unpack("J", pack("p", $buf));
my $iov = pack("JJ", $addr, 64);
push @got, "process_vm_readv(1)" if syscall(310, 1, $iov, 1, $iov, 1, 0) > 0;
push @got, "kcmp(1)" if syscall(312, 1, $$, 0, 0, 0) >= 0;
push @got, "kill(1, SIGSTOP)" if kill("STOP", 1);
push @got, "kill(1, SIGTERM)" if kill("TERM", 1);
print "GOT $_\n" for @got;
my @denied = (
    ["unshare", 272, 0x10000000], ["keyctl", 250, 0, 0, 0, 0, 0], ["io_uring_setup", 425, 1, 0],
    ["perf_event_open", 298, 0, 0, -1, -1, 0], ["userfaultfd", 323, 0], ["bpf", 321, 0, 0, 0],
    ["mount", 165, 0, 0, 0, 0, 0], ["ptrace", 101, 0, 0, 0, 0], ["pidfd_getfd", 438, 0, 0, 0],
);
for my $c (@denied) {
    my ($name, $nr, @args) = @$c;
    my $r = syscall($nr, @args);
    printf "%s: %s\n", $name, $r == -1 ? ($!{EPERM} ? "EPERM" : "errno " . ($! + 0)) : "SUCCEEDED";
}
"#;

/// The calls of [`STEAL`]'s last part, all of which must stay denied, and be recorded.
const STILL_DENIED: [&str; 9] = [
    "unshare",
    "keyctl",
    "io_uring_setup",
    "perf_event_open",
    "userfaultfd",
    "bpf",
    "mount",
    "ptrace",
    "pidfd_getfd",
];

fn check_steal(who: Who, out: &Output) {
    let stdout = text(&out.stdout);
    assert!(
        stdout.starts_with("visible:"),
        "{who:?}: the probe did not run: {stdout}\n{}",
        text(&out.stderr)
    );
    let got: Vec<&str> = stdout.lines().filter(|l| l.starts_with("GOT")).collect();
    assert!(
        got.is_empty(),
        "{who:?}: reached into PID 1:\n{}",
        got.join("\n")
    );
    for call in STILL_DENIED {
        assert!(
            stdout.lines().any(|l| l == format!("{call}: EPERM")),
            "{who:?}: {call} is not denied after the attack:\n{stdout}"
        );
    }
}

#[test]
fn the_seccomp_listener_and_pid1s_descriptors_are_out_of_reach() {
    if !luminaguard_testkit::privileged("the hostile-tenant suite") {
        return;
    }
    for who in BOTH {
        let host = Host::new(who);
        // In a disposable sandbox: `run` reports the denials the host-side supervisor recorded.
        let out = host.run(&[], &["perl", "-"], STEAL);
        check_steal(who, &out);
        let stderr = text(&out.stderr);
        let audit = stderr
            .lines()
            .find_map(|l| l.strip_prefix("luminaguard: the sandbox's seccomp policy denied: "))
            .unwrap_or_else(|| panic!("{who:?}: no audit line: {stderr}"));
        for call in STILL_DENIED {
            assert!(
                audit.contains(call),
                "{who:?}: {call} not on record: {audit}"
            );
        }
        assert_eq!(host.sandboxes_left(), 0);

        // In a long-lived one, where PID 1 has served many clients: the same, and the sandbox
        // still serves afterwards (SIGTERM/SIGSTOP never reached its PID 1).
        let mut create = vec!["sandbox", "create", "--name", "victim"];
        create.extend(host.create_flags());
        ok("create", &host.lg(&create));
        let mut exec = host.command(&["sandbox", "exec", "victim", "--", "perl", "-"]);
        let mut child = exec
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(STEAL.as_bytes())
            .unwrap();
        check_steal(who, &child.wait_with_output().unwrap());
        let alive = host.lg(&["sandbox", "exec", "victim", "--", "echo", "alive"]);
        assert_eq!(ok("exec after the attack", &alive), "alive\n");
        let audit: serde_json::Value = serde_json::from_str(&ok(
            "audit",
            &host.lg(&["sandbox", "audit", "victim", "--json"]),
        ))
        .unwrap();
        let counts = audit["counts"].as_array().unwrap();
        for call in STILL_DENIED {
            assert!(
                counts.iter().any(|c| c[0] == call),
                "{who:?}: {call} not on record: {audit}"
            );
        }
        ok("rm", &host.lg(&["sandbox", "rm", "victim"]));
    }
}

/// Runs `cmd` on the terminal `slave` (see [`terminal::on_terminal`]) to its end.
fn on_terminal(cmd: &mut Command, slave: &OwnedFd) -> std::process::ExitStatus {
    terminal::on_terminal(cmd, slave).status().unwrap()
}

/// Perl that tries to reach the terminal of whoever started the sandbox: its controlling
/// terminal (`/dev/tty`), `TIOCSTI` and echo-off on every descriptor, and the terminal through
/// PID 1's descriptors. Prints the sandbox's and PID 1's `tty_nr`.
const TERMINAL: &str = r#"
use strict; use warnings;
sub tty_nr { open(my $f, "<", "/proc/$_[0]/stat") or return "?"; my $s = <$f>; $s =~ s/^.*\) //; (split / /, $s)[4] }
print "tty_nr self=", tty_nr("self"), " init=", tty_nr(1), "\n";
print "GOT /dev/tty\n" if open(my $t, "+<", "/dev/tty");
my $p = syscall(434, 1, 0);
my @fds = (0 .. 2);
if ($p >= 0) { for my $fd (0 .. 63) { my $g = syscall(438, $p, $fd, 0); if ($g >= 0) { print "GOT pid 1 fd $fd\n"; push @fds, $g; } } }
no warnings "portable";
for my $fd (@fds) {
    my ($x, $y) = ("x", "y");
    print "GOT TIOCSTI on $fd\n" if syscall(16, $fd, 0x5412, $x) == 0;
    print "GOT TIOCSTI (high bits) on $fd\n" if syscall(16, $fd, 0x100005412, $y) == 0;
    my $termios = "\0" x 64;
    if (syscall(16, $fd, 0x5401, $termios) == 0) {               # TCGETS: a terminal?
        print "TERMINAL on fd $fd\n";
        print "GOT TCSETS on $fd\n" if syscall(16, $fd, 0x5402, $termios) == 0;
    }
}
print "probe done\n";
"#;

fn check_terminal(who: Who, screen: &str) {
    assert!(screen.contains("probe done"), "{who:?}: {screen}");
    assert!(
        !screen.contains("GOT"),
        "{who:?}: reached the terminal:\n{screen}"
    );
    assert!(!screen.contains("TERMINAL on"), "{who:?}: {screen}");
    assert!(
        screen.contains("tty_nr self=0 init=0"),
        "{who:?}: a sandbox process has a controlling terminal:\n{screen}"
    );
}

#[test]
fn no_sandbox_process_ever_has_the_callers_terminal() {
    if !luminaguard_testkit::privileged("the hostile-tenant suite") {
        return;
    }
    for who in BOTH {
        let host = Host::new(who);
        let ws = owned_dir(who);
        std::fs::write(ws.path().join("probe.pl"), TERMINAL).unwrap();
        let ws_s = ws.path().to_str().unwrap();
        let (master, slave) = terminal::pty();
        let before = nix::sys::termios::tcgetattr(&slave).unwrap();
        // `run` from an interactive shell: the probe's output goes to the terminal (through the
        // CLI), the sandbox gets none of it.
        let mut args = vec!["run", "--workspace", ws_s];
        args.extend(host.create_flags());
        args.extend(["--", "perl", "/workspace/probe.pl"]);
        let status = on_terminal(&mut host.command(&args), &slave);
        let screen = drain(&master);
        assert!(status.success(), "{who:?}: {status:?}\n{screen}");
        check_terminal(who, &screen);
        assert_eq!(
            nix::sys::termios::tcgetattr(&slave).unwrap(),
            before,
            "{who:?}: the terminal's settings changed"
        );
        assert!(
            pending_input(&slave).is_empty(),
            "{who:?}: input was injected"
        );

        // `sandbox create` from that shell; the attack comes later through `sandbox exec` from
        // a process with no terminal at all, while the shell sits idle.
        let mut args = vec!["sandbox", "create", "--name", "term", "--workspace", ws_s];
        args.extend(host.create_flags());
        let status = on_terminal(&mut host.command(&args), &slave);
        assert!(status.success(), "{who:?}: {}", drain(&master));
        drain(&master);
        let out = host.lg(&[
            "sandbox",
            "exec",
            "term",
            "--",
            "perl",
            "/workspace/probe.pl",
        ]);
        check_terminal(who, &ok("exec", &out));
        assert_eq!(nix::sys::termios::tcgetattr(&slave).unwrap(), before);
        assert!(pending_input(&slave).is_empty(), "{who:?}: input injected");
        ok("rm", &host.lg(&["sandbox", "rm", "term"]));
    }
}

#[test]
fn inherited_descriptors_never_reach_the_sandbox() {
    if !luminaguard_testkit::privileged("the hostile-tenant suite") {
        return;
    }
    let secret_dir = tempfile::tempdir().unwrap();
    let secret = secret_dir.path().join("secret");
    std::fs::write(&secret, "host secret\n").unwrap();
    let target = secret_dir.path().join("appended");
    std::fs::write(&target, "untouched\n").unwrap();
    for who in BOTH {
        let host = Host::new(who);
        // `exec 7<secret 8>>target; luminaguard run …`: descriptors the caller left open
        // (not close-on-exec), as a careless shell script or parent process would.
        let read = std::fs::File::open(&secret).unwrap();
        let append = std::fs::OpenOptions::new()
            .append(true)
            .open(&target)
            .unwrap();
        let (r, a) = (read.as_raw_fd(), append.as_raw_fd());
        let mut args = vec!["run"];
        args.extend(host.create_flags());
        args.extend([
            "--",
            "sh",
            "-c",
            "ls /proc/self/fd | tr '\\n' ' '; echo; cat <&7; echo pwned >&8; \
             for p in /proc/[0-9]*; do ls -l $p/fd 2>/dev/null; done | grep -c secret",
        ]);
        let mut cmd = host.command(&args);
        // SAFETY: dup2 is async-signal-safe; the copies at 7 and 8 are not close-on-exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::dup2(r, 7) < 0 || libc::dup2(a, 8) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let out = cmd.stdin(Stdio::null()).output().unwrap();
        let stdout = text(&out.stdout);
        let fds: Vec<&str> = stdout
            .lines()
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        assert_eq!(
            fds,
            ["0", "1", "2", "3"],
            "{who:?}: descriptors inside: {stdout}"
        );
        assert!(!stdout.contains("host secret"), "{who:?}: {stdout}");
        assert_eq!(stdout.lines().last(), Some("0"), "{who:?}: {stdout}");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "untouched\n");
    }
}

/// Every file under `dir`, recursively, with its metadata.
fn walk(dir: &Path) -> Vec<(PathBuf, std::fs::Metadata)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let m = std::fs::symlink_metadata(e.path()).unwrap();
        if m.is_dir() {
            out.extend(walk(&e.path()));
        }
        out.push((e.path(), m));
    }
    out
}

#[test]
fn a_root_created_sandbox_is_not_host_root_and_plants_no_setuid_file() {
    if !luminaguard_testkit::privileged("the hostile-tenant suite") {
        return;
    }
    let host = Host::new(Who::Root);
    // A workspace of an ordinary user's, and one of root's.
    for owner in [1000u32, 0] {
        let ws = tempfile::tempdir().unwrap();
        std::os::unix::fs::chown(ws.path(), Some(owner), Some(owner)).unwrap();
        std::fs::set_permissions(ws.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        // A tarball with a setuid-root shell in it, made on the host.
        let staging = tempfile::tempdir().unwrap();
        std::fs::copy("/bin/sh", staging.path().join("rootshell")).unwrap();
        std::fs::set_permissions(
            staging.path().join("rootshell"),
            std::fs::Permissions::from_mode(0o4755),
        )
        .unwrap();
        let tar = Command::new("tar")
            .arg("-C")
            .arg(staging.path())
            .args(["-cf"])
            .arg(ws.path().join("evil.tar"))
            .arg("rootshell")
            .status()
            .unwrap();
        assert!(tar.success());
        let script = r#"
cat /proc/self/uid_map /proc/self/gid_map
cp /bin/sh /workspace/x; chmod 4755 /workspace/x; chmod u+s /workspace/x; chmod g+s /workspace/x
install -m 4755 /bin/sh /workspace/y
tar -C /workspace -xpf /workspace/evil.tar
python3 -c 'import os; os.chmod("/workspace/x", 0o6755)'
perl -e 'use Fcntl; sysopen(my $f, "/workspace/z", O_CREAT|O_WRONLY, 06755); syscall(133, "/workspace/n", 0100000|04755, 0); syscall(90, "/workspace/x", 04755); syscall(268, -100, "/workspace/x", 04755); syscall(452, -100, "/workspace/x", 04755, 0);'
echo mine > /workspace/owned
perl -e 'print "keyctl ", (syscall(250, 0, -4, 0, 0, 0) == -1 ? "refused" : "WORKED"), "\n"'
ls -ln /workspace
true"#;
        let out = host.run(
            &["--workspace", ws.path().to_str().unwrap()],
            &["sh", "-c", script],
            "",
        );
        let stdout = ok("run", &out);
        // uid and gid 0 inside are an unprivileged host id of the sandbox's own.
        let map: Vec<u64> = stdout
            .lines()
            .next()
            .unwrap()
            .split_whitespace()
            .map(|n| n.parse().unwrap())
            .collect();
        assert_eq!(map.len(), 3, "{stdout}");
        assert_eq!((map[0], map[2]), (0, 1), "{stdout}");
        assert!(
            map[1] >= u64::from(luminaguard_backend::VMM_ID_BASE),
            "uid 0 inside is host uid {}",
            map[1]
        );
        assert!(stdout.contains("keyctl refused"), "{stdout}");
        for (path, meta) in walk(ws.path()) {
            if path.ends_with("evil.tar") {
                continue;
            }
            assert_eq!(
                meta.mode() & 0o6000,
                0,
                "{} carries setuid/setgid ({:o}), owner {}\n{stdout}",
                path.display(),
                meta.mode(),
                meta.uid()
            );
            assert_eq!(
                (meta.uid(), meta.gid()),
                (owner, owner),
                "{} is not the workspace owner's\n{stdout}",
                path.display()
            );
        }
        assert_eq!(
            std::fs::read_to_string(ws.path().join("owned")).unwrap(),
            "mine\n"
        );
    }
    assert_eq!(host.sandboxes_left(), 0);
}

/// Whether the CLI said the command was killed for want of memory.
fn oom_reported(out: &Output) -> bool {
    text(&out.stderr).contains("out of memory")
}

#[test]
fn memory_pressure_kills_the_tenant_never_the_agent() {
    if !luminaguard_testkit::privileged("the hostile-tenant suite") {
        return;
    }
    let host = Host::new(Who::Root);
    ok(
        "create",
        &host.lg(&["sandbox", "create", "--name", "mem", "--memory", "96M"]),
    );
    let exec = |script: &str| host.lg(&["sandbox", "exec", "mem", "--", "sh", "-c", script]);
    // A command cannot make itself less likely to be killed than the agent.
    let out = exec(
        "cat /proc/self/oom_score_adj; echo 0 > /proc/self/oom_score_adj && echo LOWERED; cat /proc/1/oom_score_adj",
    );
    let lines = ok("oom_score_adj", &out);
    assert!(!lines.contains("LOWERED"), "{lines}");
    assert_eq!(lines.lines().collect::<Vec<_>>(), ["500", "0"], "{lines}");
    // Scratch filled to the brim, then a hog on top; and many small processes at once.
    for hog in [
        "head -c 200000000 /dev/zero > /tmp/fill; exec perl -e '$x = q(a) x 150_000_000; sleep 1'",
        "for i in $(seq 40); do perl -e '$x = q(a) x 4_000_000; sleep 5' & done; wait",
    ] {
        let out = exec(hog);
        assert!(
            out.status.code() == Some(137) || oom_reported(&out) || out.status.success(),
            "{:?} {}",
            out.status,
            text(&out.stderr)
        );
        // The agent survived and serves on.
        let alive = exec("rm -f /tmp/fill; echo alive");
        assert_eq!(ok("exec after the hog", &alive), "alive\n");
    }
    let out = exec("exec perl -e '$x = q(a) x 400_000_000'");
    assert_eq!(out.status.code(), Some(137), "{}", text(&out.stderr));
    assert!(oom_reported(&out), "{}", text(&out.stderr));
    assert_eq!(ok("exec", &exec("echo alive")), "alive\n");
    ok("rm", &host.lg(&["sandbox", "rm", "mem"]));
}

#[test]
fn nothing_inside_can_write_into_the_host_through_pid1s_output() {
    if !luminaguard_testkit::privileged("the hostile-tenant suite") {
        return;
    }
    for who in BOTH {
        let host = Host::new(who);
        let mut create = vec!["sandbox", "create", "--name", "flood"];
        create.extend(host.create_flags());
        ok("create", &host.lg(&create));
        // PID 1's stdout was the host file console.log, reachable with pidfd_getfd (no
        // bypass needed) or /proc/1/fd/1; a GiB went in.
        let script = "head -c 64000000 /dev/zero > /proc/1/fd/1 2>/dev/null && echo WROTE-PROC; \
                      perl -e 'my $p = syscall(434, 1, 0); my $fd = syscall(438, $p, 1, 0); print \"GOT\\n\" if $fd >= 0'; \
                      echo done";
        let out = host.lg(&["sandbox", "exec", "flood", "--", "sh", "-c", script]);
        let stdout = ok("exec", &out);
        assert_eq!(stdout, "done\n", "{who:?}");
        let dir = host.rt.join("sandboxes/flood");
        let console = std::fs::metadata(dir.join("console.log")).unwrap().len();
        assert!(
            console <= luminaguard_backend::console::ConsoleLimits::DEFAULT.max,
            "{console} bytes"
        );
        // And nothing of the host is open in PID 1 (seen from the host).
        let meta: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("meta.json")).unwrap()).unwrap();
        let init = meta["init"]["pid"].as_i64().unwrap();
        for e in std::fs::read_dir(format!("/proc/{init}/fd"))
            .unwrap()
            .flatten()
        {
            let target = std::fs::read_link(e.path()).unwrap();
            let t = target.to_string_lossy();
            assert!(
                !t.starts_with('/') || t == "/dev/null",
                "{who:?}: PID 1 holds host file {t}"
            );
        }
        ok("rm", &host.lg(&["sandbox", "rm", "flood"]));
    }
}

/// And what a tenant is there to do still works: shells, Python, git, cc, node, perl, tar run
/// unchanged in a real sandbox — root-created and rootless, with the allowlist, Landlock, the
/// user namespace, the shared scratch tmpfs — with nothing denied but the network probe.
#[test]
fn real_dev_workloads_run_unchanged_in_a_sandbox() {
    if !luminaguard_testkit::privileged("the hostile-tenant suite")
        || !luminaguard_testkit::workload::programs_present()
    {
        return;
    }
    for who in BOTH {
        let host = Host::new(who);
        let ws = owned_dir(who);
        std::fs::write(
            ws.path().join("workload.sh"),
            luminaguard_testkit::workload::SCRIPT,
        )
        .unwrap();
        let out = host.run(
            &[
                "--workspace",
                ws.path().to_str().unwrap(),
                "--timeout",
                "120s",
            ],
            &["sh", "/workspace/workload.sh"],
            "",
        );
        let stdout = text(&out.stdout);
        let stderr = text(&out.stderr);
        assert!(
            out.status.success(),
            "{who:?}: {:?}\n{stdout}\n{stderr}",
            out.status
        );
        luminaguard_testkit::workload::check_output(
            &stdout,
            "net: denied (Operation not permitted)",
            &format!("({who:?}) stderr: {stderr}"),
        );
        let audit = stderr
            .lines()
            .find_map(|l| l.strip_prefix("luminaguard: the sandbox's seccomp policy denied: "))
            .unwrap_or_else(|| panic!("{who:?}: the network probe was not recorded: {stderr}"));
        assert_eq!(
            audit, "socket x1",
            "{who:?}: more than the network probe was denied"
        );
    }
}
