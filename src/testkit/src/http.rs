//! HTTP through curl on a Unix socket (the daemon's API), for tests.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

use crate::text;

/// An HTTP exchange through curl: status and body.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("{e}: not JSON (status {}): {}", self.status, self.body))
    }

    /// The NDJSON lines of an exec.
    pub fn events(&self) -> Vec<Value> {
        self.body
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }

    /// The stdout of an exec's events, and its exit event.
    pub fn exec(&self) -> (String, Value) {
        assert_eq!(self.status, 200, "{}", self.body);
        let events = self.events();
        let stdout: String = events
            .iter()
            .filter(|e| e["event"] == "stdout")
            .map(|e| e["data"].as_str().unwrap_or_default().to_owned())
            .collect();
        let exit = events
            .iter()
            .find(|e| e["event"] == "exit")
            .unwrap_or_else(|| panic!("no exit event: {}", self.body))
            .clone();
        (stdout, exit)
    }
}

/// `curl --unix-socket SOCKET -X METHOD http://lg/PATH` with `body` (if any), as `as_user`
/// (uid, gid) when given.
pub fn curl_as(
    sock: &Path,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
    as_user: Option<(u32, u32)>,
) -> Output {
    let mut cmd = Command::new("curl");
    cmd.args([
        "-sS",
        "--max-time",
        "60",
        "-w",
        "\n%{http_code}",
        "-X",
        method,
    ])
    .arg("--unix-socket")
    .arg(sock)
    .arg(format!("http://lg{path}"))
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    if body.is_some() {
        cmd.args([
            "-H",
            "content-type: application/json",
            "--data-binary",
            "@-",
        ]);
    }
    if let Some((uid, gid)) = as_user {
        cmd.uid(uid).gid(gid);
    }
    let mut child = cmd.spawn().expect("curl (scripts/setup installs it)");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(body.unwrap_or_default()).unwrap();
    drop(stdin);
    child.wait_with_output().unwrap()
}

pub fn curl(sock: &Path, method: &str, path: &str, body: Option<&str>) -> Reply {
    reply(curl_as(sock, method, path, body.map(str::as_bytes), None))
}

pub fn reply(out: Output) -> Reply {
    let all = text(&out.stdout);
    let (body, code) = all.rsplit_once('\n').unwrap_or(("", &all));
    Reply {
        status: code.trim().parse().unwrap_or_else(|_| {
            panic!(
                "curl gave no status (exit {:?}): {all} {}",
                out.status,
                text(&out.stderr)
            )
        }),
        body: body.to_owned(),
    }
}
