#![allow(clippy::disallowed_methods, clippy::panic)] // test helpers: procfs read synchronously; failing the calling test is the point
//! Helpers shared by LuminaGuard's integration tests.

pub mod browser;
pub mod daemon;
pub mod http;
pub mod netlab;
pub mod review;
pub mod terminal;
pub mod workload;

/// Whether a test that needs root may run. Outside CI a non-root run skips it with a message;
/// in CI (`CI` set; CI runs as root) a missing privilege is a failure, never a silent skip.
#[allow(clippy::panic)] // failing the calling test is the point
pub fn privileged(what: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("{what} needs root, and CI must run it: run the suite as root");
    }
    eprintln!("skipped: {what} needs root");
    false
}

/// Live (not zombie) processes whose command line, arguments joined by spaces, contains every one
/// of `needles`: `(pid, command line)`.
pub fn live_processes_matching(needles: &[&str]) -> Vec<(i32, String)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()))
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let (_, rest) = stat.rsplit_once(')')?;
            if rest.trim_start().starts_with(['Z', 'X']) {
                return None;
            }
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            needles
                .iter()
                .all(|n| cmdline.contains(n))
                .then_some((pid, cmdline))
        })
        .collect()
}

/// Command output as text (lossy UTF-8), for assertions and their messages.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The median of some timings (the upper one of an even count). Panics on none.
#[allow(clippy::indexing_slicing)] // benchmark helper: an empty run is a bug in the bench
pub fn median(mut v: Vec<std::time::Duration>) -> std::time::Duration {
    v.sort();
    v[v.len() / 2]
}

/// A duration in milliseconds, for reports.
pub fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A policy under which everything runs and every destination is allowed: for the tests of
/// the network path, whose sandboxes ask for a network (the presets ask a person first).
pub const NETWORK_ALLOWED: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/policies/network-allowed.toml");
