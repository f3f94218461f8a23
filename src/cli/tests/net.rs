//! `luminaguard run --net`: a process sandbox's traffic through its egress path, against a fake
//! internet in namespaces the test creates (its uplink, via `LUMINAGUARD_UPLINK_NETNS`; the
//! host's network is never used). Root; required in CI.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)] // test code

use std::path::Path;
use std::process::{Command, Output, Stdio};

use luminaguard_testkit::netlab::{FakeInternet, METADATA, OTHER, SERVER};
use luminaguard_testkit::text;

const BIN: &str = env!("CARGO_BIN_EXE_luminaguard");

fn run(rt: &Path, uplink: &str, flags: &[&str], script: &str) -> Output {
    Command::new(BIN)
        .arg("--runtime-dir")
        .arg(rt)
        .arg("run")
        .args(flags)
        .args(["--", "bash", "-c", script])
        .env("RUST_LOG", "warn")
        .env("LUMINAGUARD_UPLINK_NETNS", uplink)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// A bash script that connects to `ip:port`, prints the server's greeting, and exits 0 only if
/// there was one. (The firewall refuses rather than drops, so a blocked connection fails at
/// once; the timeout only bounds a broken one.)
fn fetch(ip: impl std::fmt::Display, port: u16) -> String {
    format!("timeout 5 bash -c 'exec 3<>/dev/tcp/{ip}/{port} && head -n1 <&3' | grep hello")
}

/// This test's sandboxes' network objects that are still there.
fn leftovers(net: &FakeInternet) -> Vec<String> {
    let mut left: Vec<String> = std::fs::read_dir("/run/netns")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("lgr-") || n.starts_with("lgn-"))
                .collect()
        })
        .unwrap_or_default();
    let links = Command::new("ip")
        .args(["-n", &net.host, "-o", "link", "show"])
        .output()
        .unwrap();
    left.extend(
        text(&links.stdout)
            .lines()
            .filter(|l| l.contains(": lgu"))
            .map(str::to_owned),
    );
    left
}

#[test]
fn run_with_net_reaches_what_it_allows_and_nothing_else() {
    if !luminaguard_testkit::privileged("network egress") {
        return;
    }
    let net = FakeInternet::new();
    let rt = tempfile::tempdir().unwrap();
    let allow = format!("{SERVER}:80");

    // Allowed: the greeting comes back through the sandbox's path.
    let out = run(rt.path(), &net.host, &["--net", &allow], &fetch(SERVER, 80));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), format!("hello {SERVER}:80"));

    // Everything else fails: another port, another host, the metadata endpoint.
    for (ip, port) in [(SERVER, 81), (OTHER, 80), (METADATA, 80)] {
        let out = run(rt.path(), &net.host, &["--net", &allow], &fetch(ip, port));
        assert!(
            !out.status.success(),
            "{ip}:{port} was reachable: {}",
            text(&out.stdout)
        );
    }

    // Without --net: no network at all, even to what the policy above allowed.
    let out = run(rt.path(), &net.host, &[], &fetch(SERVER, 80));
    assert!(!out.status.success(), "{}", text(&out.stdout));

    // Every sandbox took its namespaces, links and registrations with it.
    assert_eq!(
        std::fs::read_dir(rt.path().join("sandboxes"))
            .unwrap()
            .count(),
        0
    );
    assert_eq!(leftovers(&net), Vec::<String>::new());
}

#[test]
fn bad_network_flags_get_clear_errors() {
    let rt = tempfile::tempdir().unwrap();
    let bad = |flags: &[&str], expect: &str| {
        let out = run(rt.path(), "", flags, "true");
        assert!(!out.status.success(), "{flags:?} was accepted");
        let err = text(&out.stderr);
        assert!(err.contains(expect), "{flags:?}: {err}");
    };
    bad(&["--net", "198.51.100.10:0"], "invalid port");
    bad(&["--net", "bad_name!"], "bad_name!");
    bad(&["--net-deny", "198.51.100.10"], "--net");
    if nix::unistd::geteuid().is_root() {
        bad(&["--net", "example.com:443"], "DNS-pinning resolver");
    }
}
