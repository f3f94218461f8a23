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

use luminaguard_testkit::netlab::{FakeInternet, METADATA, NEIGHBOUR, OTHER, SERVER};
use luminaguard_testkit::text;

const BIN: &str = env!("CARGO_BIN_EXE_luminaguard");

fn run(rt: &Path, uplink: &str, flags: &[&str], script: &str) -> Output {
    run_env(rt, uplink, flags, script, &[])
}

fn run_env(rt: &Path, uplink: &str, flags: &[&str], script: &str, env: &[(&str, &str)]) -> Output {
    Command::new(BIN)
        .env("LUMINAGUARD_POLICY", luminaguard_testkit::NETWORK_ALLOWED)
        .arg("--runtime-dir")
        .arg(rt)
        .arg("run")
        .args(flags)
        .args(["--", "bash", "-c", script])
        .env("RUST_LOG", "warn")
        .env("LUMINAGUARD_UPLINK_NETNS", uplink)
        .envs(env.iter().copied())
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

/// Held by each test that runs sandboxes: [`leftovers`] sees every sandbox's namespaces, so two
/// such tests at once would see each other's.
static SANDBOXES: std::sync::Mutex<()> = std::sync::Mutex::new(());

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
    let _one_at_a_time = SANDBOXES.lock().unwrap_or_else(|e| e.into_inner());
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
    let out = run_env(
        rt.path(),
        "",
        &["--net", "example.com:443"],
        "true",
        &[("LUMINAGUARD_DNS_UPSTREAM", "resolver.example")],
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr)
            .contains("host.dns_upstream = resolver.example: not an IP address or IP:PORT"),
        "{}",
        text(&out.stderr)
    );
}

/// The domain allowlist, end to end: the sandbox's names go to its own resolver, which answers
/// only allowed names and opens the firewall for exactly what it answered.
#[test]
fn run_with_a_domain_allowlist_resolves_and_reaches_only_allowed_names() {
    if !luminaguard_testkit::privileged("network egress with a resolver") {
        return;
    }
    let _one_at_a_time = SANDBOXES.lock().unwrap_or_else(|e| e.into_inner());
    let mut net = FakeInternet::new();
    let upstream = net.serve_dns(&[
        ("api.allowed.test", SERVER),
        ("other.test", OTHER),
        ("neighbour.allowed.test", NEIGHBOUR),
    ]);
    let upstream = upstream.to_string();
    let env = [("LUMINAGUARD_DNS_UPSTREAM", upstream.as_str())];
    let rt = tempfile::tempdir().unwrap();
    let flags = [
        "--net",
        "api.allowed.test:80",
        "--net",
        "*.allowed.test:81",
        "--net-deny",
        "neighbour.allowed.test",
    ];
    let sandbox = |script: &str| run_env(rt.path(), &net.host, &flags, script, &env);

    // The allowed name resolves (through 10.255.255.1, the sandbox's resolver) and connects.
    let out = sandbox(&format!(
        "grep -x 'nameserver 10.255.255.1' /etc/resolv.conf && getent hosts api.allowed.test \
         && {}",
        fetch("api.allowed.test", 80)
    ));
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let stdout = text(&out.stdout);
    assert!(stdout.contains(&format!("{SERVER}")), "{stdout}");
    assert!(stdout.contains(&format!("hello {SERVER}:80")), "{stdout}");

    // Resolving opens only the port the rule names: :80 for api.allowed.test; the wildcard
    // rule adds :81 for any name under allowed.test.
    let out = sandbox(&format!(
        "getent hosts api.allowed.test >/dev/null && {} && ! timeout 5 bash -c \
         'exec 3<>/dev/tcp/{OTHER}/80'",
        fetch("api.allowed.test", 81)
    ));
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );

    // A name no rule allows, and a denied name under an allowed wildcard, do not resolve.
    for name in ["other.test", "neighbour.allowed.test"] {
        let out = sandbox(&format!("getent hosts {name}"));
        assert!(
            !out.status.success(),
            "{name} resolved: {}",
            text(&out.stdout)
        );
    }

    // The allowed host's address, hard-coded and never resolved in this sandbox: refused.
    let out = sandbox(&fetch(SERVER, 80));
    assert!(!out.status.success(), "{}", text(&out.stdout));

    // Without a policy: no DNS at all.
    let out = run_env(
        rt.path(),
        &net.host,
        &[],
        "timeout 5 getent hosts api.allowed.test",
        &env,
    );
    assert!(!out.status.success(), "{}", text(&out.stdout));

    // Every sandbox took its resolver, namespaces and links with it.
    assert_eq!(
        std::fs::read_dir(rt.path().join("sandboxes"))
            .unwrap()
            .count(),
        0
    );
    assert_eq!(leftovers(&net), Vec::<String>::new());
    let resolvers = luminaguard_testkit::live_processes_matching(&[BIN, "dns-resolver"]);
    assert_eq!(resolvers, Vec::new());
}

/// `/proc/<pid>/status` field `key` (e.g. `Uid`, `CapEff`), its first value.
fn status_field(pid: i32, key: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .and_then(|v| v.split_whitespace().next())
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
        .to_owned()
}

/// Children of `pid` (from `/proc/*/stat`).
fn children(pid: i32) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| {
                    let (_, rest) = s.rsplit_once(')')?;
                    rest.split_whitespace().nth(1)?.parse::<i32>().ok()
                })
                == Some(pid)
        })
        .collect()
}

/// The resolver parses hostile input: it must hold no privilege, and its pin helper only
/// `CAP_NET_ADMIN`. Checked on a long-lived sandbox's live processes.
#[test]
fn the_resolver_runs_unprivileged_and_its_pin_helper_can_only_pin() {
    if !luminaguard_testkit::privileged("network egress with a resolver") {
        return;
    }
    let _one_at_a_time = SANDBOXES.lock().unwrap_or_else(|e| e.into_inner());
    let mut net = FakeInternet::new();
    let upstream = net.serve_dns(&[("api.allowed.test", SERVER)]).to_string();
    let rt = tempfile::tempdir().unwrap();
    let lg = |args: &[&str]| {
        Command::new(BIN)
            .env("LUMINAGUARD_POLICY", luminaguard_testkit::NETWORK_ALLOWED)
            .arg("--runtime-dir")
            .arg(rt.path())
            .args(args)
            .env("RUST_LOG", "warn")
            .env("LUMINAGUARD_UPLINK_NETNS", &net.host)
            .env("LUMINAGUARD_DNS_UPSTREAM", &upstream)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let out = lg(&[
        "sandbox",
        "create",
        "--name",
        "dns-privs",
        "--net",
        "api.allowed.test:80",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let meta: serde_json::Value = serde_json::from_slice(
        &std::fs::read(rt.path().join("sandboxes/dns-privs/meta.json")).unwrap(),
    )
    .unwrap();
    let helpers = meta["helpers"].as_array().unwrap();
    // The resolver, its pin helper, and the sandbox's keeper (console and seccomp supervisor),
    // which runs as the sandbox's own unprivileged uid.
    assert_eq!(helpers.len(), 3, "{meta}");
    let keeper = i32::try_from(helpers[2]["pid"].as_i64().unwrap()).unwrap();
    assert_eq!(
        status_field(keeper, "Uid"),
        meta["vmm_uid"].as_u64().unwrap().to_string()
    );
    assert_eq!(status_field(keeper, "CapEff"), "0000000000000000");
    let resolver = i32::try_from(helpers[0]["pid"].as_i64().unwrap()).unwrap();
    let nobody = "65534";
    assert_eq!(status_field(resolver, "Uid"), nobody);
    assert_eq!(status_field(resolver, "Gid"), nobody);
    assert_eq!(status_field(resolver, "CapEff"), "0000000000000000");
    assert_eq!(status_field(resolver, "CapPrm"), "0000000000000000");
    assert_eq!(status_field(resolver, "CapBnd"), "0000000000000000");
    assert_eq!(status_field(resolver, "NoNewPrivs"), "1");
    let kids = children(resolver);
    assert_eq!(kids.len(), 1, "the resolver's children: {kids:?}");
    let helper = kids[0];
    assert_eq!(
        helpers[1]["pid"].as_i64(),
        Some(i64::from(helper)),
        "{meta}"
    );
    // Both count against the sandbox: they are in its cgroup.
    let cgroup_of = |pid: i32| std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    for pid in [resolver, helper] {
        assert!(cgroup_of(pid).contains("dns-privs"), "{}", cgroup_of(pid));
    }
    let net_admin = format!("{:016x}", 1u64 << 12);
    assert_eq!(status_field(helper, "Uid"), nobody);
    assert_eq!(status_field(helper, "CapEff"), net_admin);
    assert_eq!(status_field(helper, "CapBnd"), net_admin);
    assert_eq!(status_field(helper, "CapAmb"), net_admin);

    // And with that, names still resolve and connect: the helper's pins work.
    let out = lg(&[
        "sandbox",
        "exec",
        "dns-privs",
        "--",
        "bash",
        "-c",
        &fetch("api.allowed.test", 80),
    ]);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );

    let out = lg(&["sandbox", "rm", "dns-privs"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for pid in [resolver, helper] {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists()
                || status_field(pid, "State") == "Z",
            "{pid} outlived its sandbox"
        );
    }
    assert_eq!(leftovers(&net), Vec::<String>::new());
}

/// `doctor` says whether `--net` can work, reading the uplink's namespace: forwarding on in the
/// fake internet's host, and the DNS upstream named.
#[test]
fn doctor_reports_the_network_prerequisites_of_the_uplink() {
    if !luminaguard_testkit::privileged("network egress") {
        return;
    }
    let net = FakeInternet::new();
    let out = Command::new(BIN)
        .env("LUMINAGUARD_POLICY", luminaguard_testkit::NETWORK_ALLOWED)
        .args(["doctor", "--json"])
        .env("LUMINAGUARD_UPLINK_NETNS", &net.host)
        .env("LUMINAGUARD_DNS_UPSTREAM", "198.51.100.53")
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let n = &v["network"];
    assert_eq!(n["usable"], true, "{n}");
    assert_eq!(n["forwarding"], true, "{n}");
    assert_eq!(n["uplink_netns"], net.host.as_str(), "{n}");
    assert_eq!(n["dns_upstream"]["Ok"], "198.51.100.53:53", "{n}");
    assert!(
        n["nft"]["version"].as_str().unwrap().contains("nftables"),
        "{n}"
    );

    // An uplink that does not forward: not usable, and the note says which sysctl.
    let quiet = FakeInternet::new();
    let st = Command::new("ip")
        .args([
            "netns",
            "exec",
            &quiet.host,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=0",
        ])
        .status()
        .unwrap();
    assert!(st.success());
    let out = Command::new(BIN)
        .env("LUMINAGUARD_POLICY", luminaguard_testkit::NETWORK_ALLOWED)
        .args(["doctor", "--json"])
        .env("LUMINAGUARD_UPLINK_NETNS", &quiet.host)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let n = &v["network"];
    assert_eq!(n["usable"], false, "{n}");
    assert!(
        n["notes"].to_string().contains("net.ipv4.ip_forward is 0"),
        "{n}"
    );
}

/// A command whose rule says its effect leaves the sandbox cannot be previewed: in a sandbox
/// that can reach the network it is asked about before it runs (here nobody can be asked, so it
/// is refused and reaches nothing); without a network it runs, since nothing can leave.
#[test]
fn a_command_that_leaves_the_sandbox_is_asked_about_before_it_runs() {
    if !luminaguard_testkit::privileged("network egress") {
        return;
    }
    let _one_at_a_time = SANDBOXES.lock().unwrap_or_else(|e| e.into_inner());
    let net = FakeInternet::new();
    let rt = tempfile::tempdir().unwrap();
    let policy = rt.path().join("policy.toml");
    std::fs::write(
        &policy,
        "version = 1\ndefault = \"ask\"\n\
         [[rule]]\nid = \"anything\"\ndecision = \"allow\"\nreason = \"a test command\"\n\
         exec = [\"re:.*\", \"**\"]\nexamples = [\"ls\"]\n\
         [[rule]]\nid = \"fetchers\"\ndecision = \"ask\"\nreason = \"fetches from the network\"\n\
         outside = true\nprogram = [\"curl\"]\nexamples = [\"curl x\"]\n\
         [[rule]]\nid = \"any-destination\"\ndecision = \"allow\"\nreason = \"the fake internet\"\n\
         net = [\"*\"]\nexamples = [\"192.0.2.1:80\"]\n",
    )
    .unwrap();
    let env = [("LUMINAGUARD_POLICY", policy.to_str().unwrap())];
    let allow = format!("{SERVER}:80");
    let curl = format!("curl -s --max-time 5 http://{SERVER}/ && echo REACHED");

    let out = run_env(rt.path(), &net.host, &["--net", &allow], &curl, &env);
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        !text(&out.stdout).contains("REACHED"),
        "{}",
        text(&out.stdout)
    );
    assert!(err.contains("held for a person's approval"), "{err}");
    assert!(err.contains("leaves the sandbox"), "{err}");
    // What the rule does not ask about runs in the same kind of sandbox …
    let out = run_env(
        rt.path(),
        &net.host,
        &["--net", &allow],
        &fetch(SERVER, 80),
        &env,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    // … and without a network the asked command runs, reaching nothing.
    let out = run_env(
        rt.path(),
        &net.host,
        &[],
        &format!("{curl}; echo ran"),
        &env,
    );
    assert_eq!(text(&out.stdout), "ran\n", "{}", text(&out.stderr));
}
