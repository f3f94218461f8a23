//! What a profile costs each system call, side by side with no filter in the same run.
//!
//! `cargo bench -p luminaguard-seccomp --bench overhead [-- --quick] [-- --json NAME=FILE]
//! [-- --exec 'SHELL COMMAND']` (no root needed: a filter only needs `no_new_privs`).
//!
//! For each configuration — no filter, each built-in profile, and any seccompiler JSON given with
//! `--json` (e.g. an older profile, for a before/after) — a forked child installs the filter and
//! times tight loops of:
//!
//! - `getppid`, and `read` of one byte from `/dev/zero`: calls the profiles allow whatever their
//!   arguments, which the kernel's seccomp action cache answers without running the filter;
//! - `ioctl(FIONREAD)` on a pipe and `openat` + `close` of `/dev/null`: calls with argument
//!   filters, for which every filter runs (its linear syscall-number chain, then the conditions).
//!
//! With `--exec`, also the wall time of a whole command (`sh -c`, output discarded) under each
//! configuration: what a real workload pays. Last, what compiling each built-in profile costs
//! (`Profile::load`, once per sandbox start).
//!
//! The best of several rounds and of several passes over all configurations (interleaved, so load
//! from elsewhere hits them alike; the best, because other load only ever adds time), in
//! nanoseconds per loop iteration, and the difference to no filter.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)] // bench code

use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Instant;

use luminaguard_seccomp::Profile;

/// One timed loop body: a name and what it does once.
type Probe = (&'static str, fn(&Fds));

/// Descriptors the probes use, opened before the filter is installed.
struct Fds {
    zero: OwnedFd,
    pipe_r: OwnedFd,
}

const PROBES: &[Probe] = &[
    ("getppid", |_| {
        // SAFETY: no arguments.
        unsafe { libc::getppid() };
    }),
    ("read /dev/zero 1B", |f| {
        let mut b = 0u8;
        // SAFETY: reads one byte into `b`.
        let n = unsafe { libc::read(f.zero.as_raw_fd(), (&raw mut b).cast(), 1) };
        assert_eq!(n, 1);
    }),
    ("ioctl FIONREAD", |f| {
        let mut n: libc::c_int = 0;
        // SAFETY: FIONREAD writes one int into `n`.
        let rc = unsafe { libc::ioctl(f.pipe_r.as_raw_fd(), libc::FIONREAD, &raw mut n) };
        assert_eq!(rc, 0);
    }),
    ("openat+close", |_| {
        // SAFETY: a constant C string; the fd is closed at once.
        unsafe {
            let fd = libc::openat(
                libc::AT_FDCWD,
                c"/dev/null".as_ptr(),
                libc::O_RDONLY | libc::O_CLOEXEC,
            );
            assert!(fd >= 0);
            libc::close(fd);
        }
    }),
];

/// Nanoseconds per iteration of each probe (the best of `rounds` rounds of `n`).
fn measure(fds: &Fds, n: u32, rounds: usize) -> Vec<f64> {
    PROBES
        .iter()
        .map(|(_, probe)| {
            for _ in 0..n / 10 {
                probe(fds);
            }
            (0..rounds)
                .map(|_| {
                    let start = Instant::now();
                    for _ in 0..n {
                        probe(fds);
                    }
                    start.elapsed().as_secs_f64() * 1e9 / f64::from(n)
                })
                .fold(f64::INFINITY, f64::min)
        })
        .collect()
}

/// Runs the probes in a forked child under `profile` (none: unfiltered).
fn in_child(profile: Option<&Profile>, n: u32, rounds: usize) -> Vec<f64> {
    let mut fds = [0; 2];
    // SAFETY: pipe writes two fds into `fds`.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: both fds are fresh and owned by nobody else.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: the child only runs the probes, writes its result and leaves with _exit; the
    // bench is single-threaded, so allocation after fork is safe.
    match unsafe { libc::fork() } {
        0 => {
            drop(r);
            let zero = std::fs::File::open("/dev/zero").unwrap().into();
            let mut p = [0; 2];
            // SAFETY: as above.
            assert_eq!(unsafe { libc::pipe(p.as_mut_ptr()) }, 0);
            // SAFETY: fresh fds; the write end is closed at once.
            let pipe_r = unsafe {
                libc::close(p[1]);
                OwnedFd::from_raw_fd(p[0])
            };
            let fds = Fds { zero, pipe_r };
            if let Some(p) = profile {
                p.apply().unwrap();
            }
            let bytes: Vec<u8> = measure(&fds, n, rounds)
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect();
            // SAFETY: writes `bytes` to the pipe, then leaves without unwinding.
            unsafe {
                libc::write(w.as_raw_fd(), bytes.as_ptr().cast(), bytes.len());
                libc::_exit(0);
            }
        }
        pid if pid > 0 => {
            drop(w);
            let mut buf = Vec::new();
            std::fs::File::from(r).read_to_end(&mut buf).unwrap();
            let mut status = 0;
            // SAFETY: waits for our own child.
            unsafe { libc::waitpid(pid, &raw mut status, 0) };
            assert_eq!(buf.len(), PROBES.len() * 8, "child failed: {status:#x}");
            buf.chunks(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
                .collect()
        }
        _ => panic!("fork failed"),
    }
}

/// Best wall time, in milliseconds, of `sh -c cmd` under each configuration, `passes` times each
/// (interleaved).
fn time_command(configs: &[(String, Option<Profile>)], cmd: &str, passes: usize) -> Vec<f64> {
    use std::os::unix::process::CommandExt;
    let mut best = vec![f64::INFINITY; configs.len()];
    for _ in 0..passes {
        for ((_, profile), best) in configs.iter().zip(&mut best) {
            let mut c = std::process::Command::new("/bin/sh");
            c.args(["-c", cmd])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null());
            if let Some(p) = profile.clone() {
                // SAFETY: Profile::apply only makes prctl/seccomp calls.
                unsafe { c.pre_exec(move || p.apply().map_err(std::io::Error::other)) };
            }
            let start = Instant::now();
            let status = c.status().unwrap();
            let ms = start.elapsed().as_secs_f64() * 1e3;
            assert!(status.success(), "{cmd:?} failed: {status:?}");
            *best = best.min(ms);
        }
    }
    best
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    // Passes over every configuration in turn, so a noisy neighbour hits them all alike.
    let (n, rounds, passes) = if quick {
        (20_000, 3, 1)
    } else {
        (100_000, 5, 7)
    };
    let mut configs: Vec<(String, Option<Profile>)> = vec![("none".into(), None)];
    for name in Profile::builtin_names() {
        configs.push((name.into(), Some(Profile::load(name).unwrap())));
    }
    for spec in args.windows(2).filter(|w| w[0] == "--json").map(|w| &w[1]) {
        let (name, path) = spec.split_once('=').expect("--json NAME=FILE");
        let json = std::fs::read(path).unwrap();
        configs.push((name.into(), Some(Profile::from_json(name, &json).unwrap())));
    }
    let mut runs: Vec<Vec<Vec<f64>>> = vec![Vec::new(); configs.len()];
    for _ in 0..passes {
        for ((_, p), run) in configs.iter().zip(&mut runs) {
            run.push(in_child(p.as_ref(), n, rounds));
        }
    }
    // Per probe, the best over the passes.
    let results: Vec<(String, Vec<f64>)> = configs
        .iter()
        .zip(runs)
        .map(|((name, _), run)| {
            let per_probe = (0..PROBES.len())
                .map(|i| run.iter().map(|r| r[i]).fold(f64::INFINITY, f64::min))
                .collect();
            (name.clone(), per_probe)
        })
        .collect();
    let base = results[0].1.clone();
    let exec = args
        .windows(2)
        .find(|w| w[0] == "--exec")
        .map(|w| w[1].clone());
    let walls = exec
        .as_deref()
        .map(|cmd| time_command(&configs, cmd, passes.max(3)));
    print!("{:<12}", "ns/call");
    for (probe, _) in PROBES {
        print!(" {probe:>24}");
    }
    if walls.is_some() {
        print!(" {:>24}", "--exec ms");
    }
    println!();
    for (i, (name, ns)) in results.iter().enumerate() {
        print!("{name:<12}");
        for (v, b) in ns.iter().zip(&base) {
            print!(" {:>24}", format!("{v:.1} ({:+.1})", v - b));
        }
        if let Some(w) = &walls {
            print!(" {:>24}", format!("{:.1} (x{:.3})", w[i], w[i] / w[0]));
        }
        println!();
    }
    // What a sandbox's init pays once per start: compiling the profile (JSON to BPF).
    let loads = if quick { 20 } else { 200 };
    for name in Profile::builtin_names() {
        let start = Instant::now();
        for _ in 0..loads {
            std::hint::black_box(Profile::load(name).unwrap());
        }
        println!(
            "Profile::load({name}): {:.0} µs (once per sandbox start)",
            start.elapsed().as_secs_f64() * 1e6 / f64::from(loads)
        );
    }
}
