//! What the MCP test binaries (mcp.rs, mcp_http.rs, mcp_gateway.rs) share: the real clients
//! scripts/setup installs, a test's directories, and the command line to look at what a test
//! left (sandboxes, audit records). Included with `#[path = "mcp/common.rs"] mod common;`.
#![allow(dead_code)] // each binary uses its part

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use luminaguard_testkit::daemon::Daemon;
use luminaguard_testkit::text;
use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_luminaguard");
/// Where scripts/setup installs the Python SDK 1.x (`LUMINAGUARD_TEST_PYTHON` overrides it).
pub const PYTHON: &str = "/var/cache/luminaguard/python-mcp/bin/python";
/// Where scripts/setup installs the Python SDK 2.x (the stateless 2026-07-28 revision).
pub const PYTHON_MODERN: &str = "/var/cache/luminaguard/python-mcp2/bin/python";

/// The client scripts and test servers (tests/mcp).
pub fn scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mcp")
}

/// A prerequisite scripts/setup installs: in CI its absence is a failure, elsewhere a skip.
pub fn prerequisite(what: &str, ok: bool) -> bool {
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "{what} is missing: run scripts/setup"
        );
        eprintln!("skipped: {what} is missing (run scripts/setup)");
    }
    ok
}

/// The Python with the `mcp` SDK 1.x, if installed.
pub fn python() -> Option<PathBuf> {
    python_at(
        std::env::var_os("LUMINAGUARD_TEST_PYTHON")
            .map_or_else(|| PathBuf::from(PYTHON), PathBuf::from),
        "import mcp, jsonschema, httpx",
    )
}

/// The Python with the `mcp` SDK 2.x.
pub fn python_modern() -> Option<PathBuf> {
    python_at(PathBuf::from(PYTHON_MODERN), "import mcp, jsonschema")
}

/// `p`, if it runs `imports`.
fn python_at(p: PathBuf, imports: &str) -> Option<PathBuf> {
    let ok = Command::new(&p)
        .args(["-c", imports])
        .output()
        .is_ok_and(|o| o.status.success());
    prerequisite(&format!("the Python MCP SDK ({})", p.display()), ok).then_some(p)
}

/// A test's directories: runtime, audit log, a workspace (with a `.git`), and the MCP tests'
/// policy.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub rt: PathBuf,
    pub audit: PathBuf,
    pub ws: PathBuf,
    pub policy: PathBuf,
}

pub fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    std::fs::create_dir_all(ws.join(".git")).unwrap();
    Env {
        rt: dir.path().join("rt"),
        audit: dir.path().join("audit"),
        ws,
        policy: scripts().join("policy.toml"),
        dir,
    }
}

pub fn path(p: &Path) -> String {
    p.to_str().unwrap().to_owned()
}

/// `luminaguard --runtime-dir RT ARGS` with the test's audit log.
pub fn lg(e: &Env, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("--runtime-dir")
        .arg(&e.rt)
        .args(args)
        .env("LUMINAGUARD_AUDIT_DIR", &e.audit)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// The sandboxes in the runtime directory (whoever made them).
pub fn sandboxes(e: &Env) -> Vec<String> {
    let out = lg(e, &["sandbox", "ls", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let list: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    list.iter()
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect()
}

/// The audit log's records.
pub fn records(e: &Env) -> Vec<Value> {
    let ls = lg(e, &["audit", "ls", "--json"]);
    assert!(ls.status.success(), "{}", text(&ls.stderr));
    text(&ls.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .collect()
}

pub fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A daemon on the test's runtime directory, with its audit log and `policy`, making process
/// sandboxes.
pub fn daemon_with(e: &Env, policy: &Path) -> Daemon {
    Daemon::start(
        Path::new(BIN),
        &e.rt,
        &format!(
            "audit_dir = \"{}\"\npolicy = \"{}\"\n[defaults]\nbackend = \"process\"\n",
            e.audit.display(),
            policy.display()
        ),
    )
}

/// [`daemon_with`] the MCP tests' policy.
pub fn daemon(e: &Env) -> Daemon {
    daemon_with(e, &e.policy)
}

/// The summary a client script prints last.
pub fn summary(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "client failed:\n{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    serde_json::from_str(text(&out.stdout).lines().last().unwrap()).unwrap()
}
