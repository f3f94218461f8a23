//! Helpers shared by LuminaGuard's integration tests.

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
