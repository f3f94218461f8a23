//! The guest agent as a real process, driven through the real host client over a Unix socket.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)] // test code

use std::os::fd::AsRawFd;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures_util::StreamExt;
use luminaguard_protocol::frame::encode_frame;
use luminaguard_protocol::handshake::{Hello, HelloReply};
use luminaguard_protocol::message::*;
use luminaguard_protocol::{
    Client, ClientError, ClientOptions, ExecEvent, FrameCodec, Incoming, MAX_FRAME_LEN,
};
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;
use tokio_util::codec::FramedRead;

const AGENT: &str = env!("CARGO_BIN_EXE_luminaguard-agent");

struct Agent {
    child: Child,
    sock: PathBuf,
    _dir: tempfile::TempDir,
}

impl Agent {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("agent.sock");
        let child = Command::new(AGENT)
            .arg("--listen")
            .arg(format!("unix:{}", sock.display()))
            .arg("--on-exit=exit")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        Agent {
            child,
            sock,
            _dir: dir,
        }
    }

    /// Waits (bounded) for the socket to accept, then connects.
    async fn raw(&self) -> UnixStream {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match UnixStream::connect(&self.sock).await {
                Ok(s) => return s,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err(e) => panic!("agent socket never came up: {e}"),
            }
        }
    }

    async fn client(&self) -> Client {
        Client::connect(
            self.raw().await,
            ClientOptions {
                request_timeout: Duration::from_secs(20),
                ..Default::default()
            },
        )
        .await
        .unwrap()
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn exec(argv: &[&str]) -> ExecRequest {
    ExecRequest {
        argv: argv.iter().map(|s| s.to_string()).collect(),
        timeout_ms: Some(30_000),
        ..Default::default()
    }
}

fn sh(script: &str) -> ExecRequest {
    exec(&["/bin/sh", "-c", script])
}

/// Live (non-zombie) processes whose command line contains `marker`.
fn processes_with(marker: &str) -> Vec<i32> {
    luminaguard_testkit::live_processes_matching(&[marker])
        .into_iter()
        .map(|(pid, _)| pid)
        .collect()
}

/// Polls a condition that another process makes true asynchronously (signal delivery), bounded.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A `sleep <marker>` exec that has reported `Started`.
async fn started_sleep(c: &Client, marker: &str) -> luminaguard_protocol::ExecStream {
    let mut e = c.exec(exec(&["sleep", marker])).await.unwrap();
    assert!(matches!(
        e.next().await.unwrap(),
        Some(ExecEvent::Started { .. })
    ));
    e
}

/// The agent still answers and still runs commands.
async fn assert_serving(c: &Client) {
    c.ping().await.unwrap();
    let out = c.exec_output(exec(&["true"]), None).await.unwrap();
    assert_eq!(out.status.code, Some(0));
}

fn marker() -> String {
    // A sleep duration nobody else uses identifies our processes in /proc.
    format!(
        "{}",
        100_000 + (std::process::id() as u64 * 7919 + rand::random::<u16>() as u64) % 800_000
    )
}

#[tokio::test]
async fn exit_codes_and_signals_are_reported() {
    let agent = Agent::start();
    let c = agent.client().await;
    let out = c
        .exec_output(exec(&["echo", "hello", "world"]), None)
        .await
        .unwrap();
    assert_eq!(out.stdout, b"hello world\n");
    assert_eq!(out.status.code, Some(0));
    let out = c
        .exec_output(sh("echo oops >&2; exit 7"), None)
        .await
        .unwrap();
    assert_eq!(
        (out.status.code, out.status.signal, out.stderr.as_slice()),
        (Some(7), None, &b"oops\n"[..])
    );
    let out = c.exec_output(sh("kill -TERM $$"), None).await.unwrap();
    assert_eq!((out.status.code, out.status.signal), (None, Some(15)));
    assert_eq!(out.status.shell_code(), 143);
    let err = c
        .exec_output(exec(&["/nonexistent/program"]), None)
        .await
        .unwrap_err();
    assert_eq!(err.remote_code(), Some(ErrorCode::CommandNotFound), "{err}");
    assert!(
        err.to_string()
            .contains("/nonexistent/program: command not found"),
        "{err}"
    );
    // Not a program (a shell's 126), and a missing working directory told apart from both.
    let err = c
        .exec_output(exec(&["/etc/passwd"]), None)
        .await
        .unwrap_err();
    assert_eq!(err.remote_code(), Some(ErrorCode::NotExecutable), "{err}");
    let mut req = exec(&["/bin/true"]);
    req.cwd = Some("/nonexistent/dir".into());
    let err = c.exec_output(req, None).await.unwrap_err();
    assert_eq!(err.remote_code(), Some(ErrorCode::InvalidRequest), "{err}");
    assert!(err.to_string().contains("does not exist"), "{err}");
    let err = c.exec_output(exec(&[]), None).await.unwrap_err();
    assert_eq!(err.remote_code(), Some(ErrorCode::InvalidRequest));
    // env, clear_env and cwd
    let mut req = exec(&["/usr/bin/env"]);
    req.clear_env = true;
    req.env = vec![("ONLY".into(), "this".into())];
    req.cwd = Some("/".into());
    assert_eq!(
        c.exec_output(req, None).await.unwrap().stdout,
        b"ONLY=this\n"
    );
}

#[tokio::test]
async fn stdin_streams_in() {
    let agent = Agent::start();
    let c = agent.client().await;
    let out = c
        .exec_output(exec(&["cat"]), Some(b"piped through\n"))
        .await
        .unwrap();
    assert_eq!(out.stdout, b"piped through\n");
    let big = vec![b'x'; 3 << 20];
    let out = c
        .exec_output(exec(&["wc", "-c"]), Some(&big))
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        (3 << 20).to_string()
    );
    // Interactive: write, read the echo, write again.
    let mut req = exec(&["cat"]);
    req.stdin = true;
    let mut e = c.exec(req).await.unwrap();
    assert!(matches!(
        e.next().await.unwrap(),
        Some(ExecEvent::Started { .. })
    ));
    e.write_stdin(b"one\n").await.unwrap();
    assert_eq!(
        e.next().await.unwrap(),
        Some(ExecEvent::Stdout(bytes::Bytes::from_static(b"one\n")))
    );
    e.write_stdin(b"two\n").await.unwrap();
    assert_eq!(
        e.next().await.unwrap(),
        Some(ExecEvent::Stdout(bytes::Bytes::from_static(b"two\n")))
    );
    e.close_stdin().await.unwrap();
    assert!(matches!(e.next().await.unwrap(), Some(ExecEvent::Exited(s)) if s.code == Some(0)));
}

#[tokio::test]
async fn concurrent_execs_keep_their_own_output_and_status() {
    let agent = Agent::start();
    let c = agent.client().await;
    let runs = (0..8).map(|i| {
        let c = c.clone();
        async move {
            let script =
                format!("for n in $(seq 1 200); do echo {i}-$n; echo e{i}-$n >&2; done; exit {i}");
            (i, c.exec_output(sh(&script), None).await.unwrap())
        }
    });
    for (i, out) in futures_util::future::join_all(runs).await {
        assert_eq!(out.status.code, Some(i));
        let expected: String = (1..=200).map(|n| format!("{i}-{n}\n")).collect();
        assert_eq!(String::from_utf8(out.stdout).unwrap(), expected);
        let expected: String = (1..=200).map(|n| format!("e{i}-{n}\n")).collect();
        assert_eq!(String::from_utf8(out.stderr).unwrap(), expected);
    }
}

#[tokio::test]
async fn timeout_kills_the_whole_tree_leaving_no_orphan() {
    let agent = Agent::start();
    let c = agent.client().await;
    let m = marker();
    // A child, a grandchild that left the session, and a main process that waits forever.
    let mut req = sh(&format!("sleep {m} & setsid sleep {m} & sleep {m}; wait"));
    req.timeout_ms = Some(2_000);
    let mut e = c.exec(req).await.unwrap();
    let mut status = None;
    while let Some(ev) = e.next().await.unwrap() {
        if let ExecEvent::Started { .. } = ev {
            // The shell (its command line holds the marker too) and its three sleeps.
            eventually("the shell and its three sleeps running", || {
                processes_with(&m).len() == 4
            })
            .await;
        }
        if let ExecEvent::Exited(s) = ev {
            status = Some(s);
        }
    }
    let s = status.unwrap();
    assert!(s.timed_out && s.signal == Some(9), "{s:?}");
    assert_eq!(
        processes_with(&m),
        Vec::<i32>::new(),
        "orphans survived the timeout"
    );
    // The agent is fine afterwards.
    assert_serving(&c).await;
}

#[tokio::test]
async fn stragglers_die_with_their_exec() {
    let agent = Agent::start();
    let c = agent.client().await;
    let m = marker();
    let out = c
        .exec_output(sh(&format!("sleep {m} & echo started")), None)
        .await
        .unwrap();
    assert_eq!(
        (out.status.code, out.stdout.as_slice()),
        (Some(0), &b"started\n"[..])
    );
    assert_eq!(processes_with(&m), Vec::<i32>::new());
}

#[tokio::test]
async fn cancel_kills_and_reports() {
    let agent = Agent::start();
    let c = agent.client().await;
    let m = marker();
    let mut e = started_sleep(&c, &m).await;
    e.cancel().await.unwrap();
    let Some(ExecEvent::Exited(s)) = e.next().await.unwrap() else {
        panic!("no exit")
    };
    assert!(s.cancelled && s.signal == Some(9) && !s.timed_out, "{s:?}");
    assert!(processes_with(&m).is_empty());
}

#[tokio::test]
async fn output_cap_truncates_and_counts() {
    let agent = Agent::start();
    let c = agent.client().await;
    let mut req = sh("head -c 1000000 /dev/zero");
    req.output_limit = Some(1000);
    let out = c.exec_output(req, None).await.unwrap();
    assert_eq!(out.stdout.len(), 1000);
    assert!(out.status.output_truncated);
    assert_eq!(out.status.output_bytes, 1_000_000);
    assert_eq!(out.status.code, Some(0));
}

#[tokio::test]
async fn files_round_trip_atomically() {
    let agent = Agent::start();
    let c = agent.client().await;
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().to_str().unwrap();
    let data: Vec<u8> = (0..5 * 1024 * 1024 + 17)
        .map(|i| (i * 31 % 251) as u8)
        .collect();
    let path = format!("{base}/sub/dir/blob.bin");
    let req = WriteFileRequest {
        path: path.clone(),
        mode: 0o640,
        parents: true,
    };
    assert_eq!(
        c.write_file_from(req, &mut &data[..]).await.unwrap(),
        data.len() as u64
    );
    assert_eq!(c.read_file(&path, 10 << 20).await.unwrap(), data);
    let st = c.stat(&path, true).await.unwrap();
    assert_eq!(
        (st.kind, st.size, st.mode),
        (FileKind::File, data.len() as u64, 0o640)
    );
    assert!(matches!(
        c.read_file(&path, 100).await,
        Err(ClientError::Limit(_))
    ));
    // Partial reads.
    let mut part = Vec::new();
    c.read_file_to(
        ReadFileRequest {
            path: path.clone(),
            offset: 10,
            limit: Some(5),
        },
        &mut part,
    )
    .await
    .unwrap();
    assert_eq!(part, &data[10..15]);

    c.mkdir(&format!("{base}/a/b/c"), 0o755, true)
        .await
        .unwrap();
    assert_eq!(
        c.mkdir(&format!("{base}/a"), 0o755, false)
            .await
            .unwrap_err()
            .remote_code(),
        Some(ErrorCode::AlreadyExists)
    );
    let (entries, truncated) = c.list_dir(base).await.unwrap();
    assert!(!truncated);
    let names: Vec<_> = entries.iter().map(|e| (e.name.as_str(), e.kind)).collect();
    assert_eq!(names, vec![("a", FileKind::Dir), ("sub", FileKind::Dir)]);
    assert_eq!(
        c.remove(&format!("{base}/a"), false)
            .await
            .unwrap_err()
            .remote_code(),
        Some(ErrorCode::Io)
    );
    c.remove(&format!("{base}/a"), true).await.unwrap();
    assert!(!Path::new(&format!("{base}/a")).exists());

    assert_eq!(
        c.read_file(&format!("{base}/missing"), 10)
            .await
            .unwrap_err()
            .remote_code(),
        Some(ErrorCode::NotFound)
    );
    assert_eq!(
        c.stat("relative/path", true)
            .await
            .unwrap_err()
            .remote_code(),
        Some(ErrorCode::InvalidRequest)
    );
    assert_eq!(
        c.remove("/", true).await.unwrap_err().remote_code(),
        Some(ErrorCode::InvalidRequest)
    );

    // Overwrite is atomic; an abandoned write leaves neither the file nor a temporary behind.
    c.write_file(&path, 0o600, b"small").await.unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"small");
    let half = format!("{base}/sub/dir/half.bin");
    let s = c
        .start(Request::WriteFile(WriteFileRequest {
            path: half.clone(),
            mode: 0o644,
            parents: false,
        }))
        .await
        .unwrap();
    s.send_input(b"partial").await.unwrap();
    s.cancel().await.unwrap();
    drop(s);
    eventually("cancelled write cleaned up", || {
        std::fs::read_dir(format!("{base}/sub/dir"))
            .unwrap()
            .count()
            == 1
    })
    .await;
    assert!(!Path::new(&half).exists());
}

#[tokio::test]
async fn info_describes_the_guest() {
    let agent = Agent::start();
    let c = agent.client().await;
    let info = c.info().await.unwrap();
    assert_eq!(info.pid as i32, agent.pid());
    assert!(!info.is_pid1);
    let uname = nix::sys::utsname::uname().unwrap();
    assert_eq!(info.kernel_release, uname.release().to_string_lossy());
    assert!(info.mem_total_bytes > 0 && info.mem_available_bytes <= info.mem_total_bytes);
    assert!(info.uptime_ms > 0);
    assert!(c.peer().capabilities.contains(&"exec".to_string()));
    c.ping().await.unwrap();
}

async fn raw_frames(
    s: UnixStream,
) -> (
    FramedRead<tokio::net::unix::OwnedReadHalf, FrameCodec<Reply, ()>>,
    tokio::net::unix::OwnedWriteHalf,
) {
    let (r, w) = s.into_split();
    (FramedRead::new(r, FrameCodec::default()), w)
}

async fn write_req(w: &mut tokio::net::unix::OwnedWriteHalf, id: u64, req: &Request) {
    let mut buf = BytesMut::new();
    encode_frame(id, req, &mut buf, MAX_FRAME_LEN).unwrap();
    w.write_all(&buf).await.unwrap();
}

async fn next_reply(
    r: &mut FramedRead<tokio::net::unix::OwnedReadHalf, FrameCodec<Reply, ()>>,
) -> Option<luminaguard_protocol::Frame<Reply>> {
    match tokio::time::timeout(Duration::from_secs(10), r.next())
        .await
        .expect("agent did not answer")
    {
        Some(Ok(Incoming::Frame(f))) => Some(f),
        None => None,
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn hostile_input_gets_errors_and_the_agent_keeps_serving() {
    let agent = Agent::start();
    let good = agent.client().await;

    // A request before the hello.
    let (mut r, mut w) = raw_frames(agent.raw().await).await;
    write_req(&mut w, 5, &Request::Ping).await;
    let f = next_reply(&mut r).await.unwrap();
    assert!(
        matches!(
            f.body,
            Reply::Error(ErrorReply {
                code: ErrorCode::HandshakeRequired,
                ..
            })
        ) && f.id == 5
    );
    // Then a proper hello, an unknown message type, a frame with trailing bytes, a reused id.
    write_req(&mut w, 0, &Request::Hello(Hello::ours("test"))).await;
    assert!(matches!(
        next_reply(&mut r).await.unwrap().body,
        Reply::Hello(HelloReply::Accepted { .. })
    ));
    let mut raw = BytesMut::new();
    raw.extend_from_slice(&9u32.to_le_bytes());
    raw.extend_from_slice(&6u64.to_le_bytes());
    raw.extend_from_slice(&[222]);
    w.write_all(&raw).await.unwrap();
    let f = next_reply(&mut r).await.unwrap();
    assert!(
        matches!(
            f.body,
            Reply::Error(ErrorReply {
                code: ErrorCode::Malformed,
                ..
            })
        ) && f.id == 6
    );
    write_req(&mut w, 0, &Request::Info).await;
    let f = next_reply(&mut r).await.unwrap();
    assert!(matches!(
        f.body,
        Reply::Error(ErrorReply {
            code: ErrorCode::BadStreamId,
            ..
        })
    ));
    write_req(&mut w, 7, &Request::Ping).await;
    assert_eq!(
        next_reply(&mut r).await.unwrap(),
        luminaguard_protocol::Frame::new(7, Reply::Pong)
    );

    // An oversized frame: an error on id 0, then the agent closes this connection.
    w.write_all(&((MAX_FRAME_LEN as u32) + 1).to_le_bytes())
        .await
        .unwrap();
    let f = next_reply(&mut r).await.unwrap();
    assert!(
        matches!(
            &f.body,
            Reply::Error(ErrorReply {
                code: ErrorCode::FrameTooLarge,
                ..
            })
        ) && f.id == 0,
        "{f:?}"
    );
    assert!(
        next_reply(&mut r).await.is_none(),
        "connection should close after a framing error"
    );

    // Garbage, a truncated frame, an abrupt close, a wrong version.
    let (_r2, mut w2) = raw_frames(agent.raw().await).await;
    w2.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    drop(w2);
    let (_r3, mut w3) = raw_frames(agent.raw().await).await;
    w3.write_all(&100u32.to_le_bytes()).await.unwrap();
    w3.write_all(&[1, 2, 3]).await.unwrap();
    drop(w3);
    let (mut r4, mut w4) = raw_frames(agent.raw().await).await;
    let hello = Hello {
        min_version: 90,
        max_version: 99,
        ..Hello::ours("future")
    };
    write_req(&mut w4, 0, &Request::Hello(hello)).await;
    let f = next_reply(&mut r4).await.unwrap();
    assert!(
        matches!(&f.body, Reply::Hello(HelloReply::Refused { reason, .. }) if reason.contains("no common protocol version")),
        "{f:?}"
    );
    assert!(next_reply(&mut r4).await.is_none());
    // A version-1 host (bulk data inside the message, not as a trailer) is refused just as
    // clearly: the hello is encoded alike in every version.
    let (mut r5, mut w5) = raw_frames(agent.raw().await).await;
    let old = Hello {
        min_version: 1,
        max_version: 1,
        ..Hello::ours("v1 host")
    };
    write_req(&mut w5, 0, &Request::Hello(old)).await;
    let f = next_reply(&mut r5).await.unwrap();
    match &f.body {
        Reply::Hello(HelloReply::Refused {
            reason,
            min_version,
            max_version,
        }) => {
            assert!(reason.contains("host speaks 1..=1"), "{reason}");
            assert_eq!((*min_version, *max_version), (2, 2));
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(next_reply(&mut r5).await.is_none());

    // The first client never noticed.
    assert_serving(&good).await;
}

#[tokio::test]
async fn agent_killed_mid_request_fails_pending_calls_promptly() {
    let agent = Agent::start();
    let c = agent.client().await;
    let m = marker();
    let mut e = started_sleep(&c, &m).await;
    let pending_ping = tokio::spawn({
        let c = c.clone();
        async move { c.read_file("/dev/zero", 1 << 40).await }
    });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent.pid()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    match e.next().await {
        Err(ClientError::Closed(reason)) => assert!(
            reason.contains("closed") || reason.contains("I/O"),
            "{reason}"
        ),
        other => panic!("expected Closed, got {other:?}"),
    }
    assert!(matches!(
        pending_ping.await.unwrap(),
        Err(ClientError::Closed(_))
    ));
    // The exec's process dies with the agent.
    eventually("exec child killed with its agent", || {
        processes_with(&m).is_empty()
    })
    .await;
}

#[tokio::test]
async fn shutdown_stops_the_agent_and_removes_its_socket() {
    let mut agent = Agent::start();
    let c = agent.client().await;
    c.shutdown().await.unwrap();
    let status = tokio::task::spawn_blocking(move || {
        let s = agent.child.wait().unwrap();
        (s, agent)
    })
    .await
    .unwrap();
    assert!(status.0.success(), "{:?}", status.0);
    assert!(!status.1.sock.exists());
}

#[tokio::test]
async fn inherited_listening_and_connected_fds_are_served() {
    // A listening socket handed down as fd 3.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let (host_end, agent_end) = std::os::unix::net::UnixStream::pair().unwrap();
    let (lfd, cfd) = (listener.as_raw_fd(), agent_end.as_raw_fd());
    let mut cmd = Command::new(AGENT);
    cmd.args(["--listen", "fd:3", "--listen", "fd:4", "--on-exit=exit"])
        .env("RUST_LOG", "warn");
    // SAFETY: dup2 is async-signal-safe; the fds are valid in the child.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(move || {
            if libc::dup2(lfd, 3) < 0 || libc::dup2(cfd, 4) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    drop(agent_end);
    let c = Client::connect(
        UnixStream::connect(&path).await.unwrap(),
        ClientOptions::default(),
    )
    .await
    .unwrap();
    c.ping().await.unwrap();
    host_end.set_nonblocking(true).unwrap();
    let c2 = Client::connect(
        UnixStream::from_std(host_end).unwrap(),
        ClientOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(
        c2.exec_output(exec(&["echo", "via fd"]), None)
            .await
            .unwrap()
            .stdout,
        b"via fd\n"
    );
    c2.shutdown().await.unwrap();
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success());
}

#[test]
fn bad_listen_address_fails_startup_clearly() {
    let out = Command::new(AGENT)
        .args(["--listen", "fd:999", "--on-exit=exit"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("fd 999") && err.contains("not an open descriptor"),
        "{err}"
    );
    let out = Command::new(AGENT)
        .args(["--listen", "tcp:1.2.3.4:5"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected unix:PATH"));
}

/// The guest image needs a static agent: with `LUMINAGUARD_STATIC_AGENT` naming the binary built
/// by `scripts/build-static-agent`, prove it has no ELF interpreter and runs in an empty root.
/// Required in CI.
#[test]
fn static_agent_runs_without_a_userland() {
    let Some(bin) = std::env::var_os("LUMINAGUARD_STATIC_AGENT") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must set LUMINAGUARD_STATIC_AGENT (scripts/test does)"
        );
        eprintln!("skipped: LUMINAGUARD_STATIC_AGENT is not set");
        return;
    };
    let elf = std::fs::read(&bin).unwrap();
    assert_eq!(&elf[..4], b"\x7fELF");
    assert!(
        !has_interpreter(&elf),
        "{bin:?} is dynamically linked (has PT_INTERP)"
    );
    if nix::unistd::geteuid().is_root() {
        let root = tempfile::tempdir().unwrap();
        std::fs::copy(&bin, root.path().join("agent")).unwrap();
        let out = Command::new("chroot")
            .arg(root.path())
            .args(["/agent", "--version"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "static agent failed in an empty root: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).starts_with("luminaguard-agent "));
    }
}

/// Whether an ELF64 little-endian file has a PT_INTERP program header.
fn has_interpreter(elf: &[u8]) -> bool {
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    (0..phnum)
        .any(|i| u32::from_le_bytes(elf[phoff + i * phentsize..][..4].try_into().unwrap()) == 3)
}

#[tokio::test]
async fn sigterm_stops_the_agent_cleanly() {
    let mut agent = Agent::start();
    let c = agent.client().await;
    c.ping().await.unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent.pid()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let (status, agent) = tokio::task::spawn_blocking(move || (agent.child.wait().unwrap(), agent))
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");
    assert!(!agent.sock.exists(), "socket left behind");
    assert!(matches!(c.ping().await, Err(ClientError::Closed(_))));
}

/// As PID 1 of a fresh PID namespace (`unshare --pid --fork --mount-proc`, root only): the agent
/// knows it is init, reaps orphans, and `Shutdown` powers the namespace off.
#[tokio::test]
async fn as_pid1_it_reaps_orphans_and_powers_off() {
    if !luminaguard_testkit::privileged("a PID namespace") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pid1.sock");
    // Handed down as fd 3: the agent mounts a fresh /tmp as init, which would hide a path there.
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let lfd = listener.as_raw_fd();
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--pid",
        "--fork",
        "--mount",
        "--mount-proc",
        "--kill-child",
        AGENT,
        "--listen",
        "fd:3",
    ])
    .env("RUST_LOG", "warn");
    // SAFETY: dup2 is async-signal-safe and lfd is valid in the child.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(move || {
            if libc::dup2(lfd, 3) < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(())
            }
        });
    }
    let mut child = cmd.spawn().unwrap();
    let c = Client::connect(
        UnixStream::connect(&path).await.unwrap(),
        ClientOptions::default(),
    )
    .await
    .unwrap();
    let info = c.info().await.unwrap();
    assert!(info.is_pid1 && info.pid == 1, "{info:?}");

    // An orphan: the shell exits at once, its background child is reparented to the agent and
    // must be reaped when it exits — no zombie may remain in the namespace.
    let out = c
        .exec_output(sh("(sleep 0.2; true) & exit 0"), None)
        .await
        .unwrap();
    assert_eq!(out.status.code, Some(0));
    let zombies = || async {
        let out = c
            .exec_output(sh("cat /proc/[0-9]*/stat 2>/dev/null"), None)
            .await
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| {
                l.rsplit_once(')')
                    .is_some_and(|(_, t)| t.trim_start().starts_with('Z'))
            })
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // Zombies of the exec's own shell pipeline come and go; wait for a quiet namespace.
        if zombies().await == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "zombies left in the namespace");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // /tmp is a fresh tmpfs the agent mounted as init.
    let out = c
        .exec_output(sh("grep ' /tmp ' /proc/self/mounts"), None)
        .await
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("tmpfs"),
        "{out:?}"
    );

    c.shutdown().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "namespace init did not stop after Shutdown"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    // reboot(RB_POWER_OFF) in a child PID namespace kills its init with SIGINT, which unshare
    // passes on: proof the agent powered off rather than just exiting.
    assert_eq!(status.signal(), Some(libc::SIGINT), "{status:?}");
}

/// 10,000 requests written to the real agent as one burst; the replies, read back through reads of
/// random size, each arrive once and answer their own request.
#[tokio::test]
async fn real_agent_answers_a_burst_of_ten_thousand_pipelined_requests() {
    use rand::{Rng, SeedableRng};
    const N: u64 = 10_000;
    let agent = Agent::start();
    let (r, mut w) = agent.raw().await.into_split();
    let mut burst = BytesMut::new();
    encode_frame(
        0,
        &Request::Hello(Hello::ours("burst")),
        &mut burst,
        MAX_FRAME_LEN,
    )
    .unwrap();
    for id in 1..=N {
        let req = Request::Stat {
            path: format!("/nonexistent-lg/{id}"),
            follow_symlinks: false,
        };
        encode_frame(id, &req, &mut burst, MAX_FRAME_LEN).unwrap();
    }
    let writer = tokio::spawn(async move {
        w.write_all(&burst).await.unwrap();
        w
    });
    // Read the raw byte stream in random-sized pieces and decode it ourselves.
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let mut codec = FrameCodec::<Reply, ()>::default();
    let mut buf = BytesMut::new();
    let mut seen = std::collections::HashSet::new();
    let mut r = r;
    let mut got_hello = false;
    while seen.len() < N as usize {
        let mut piece = vec![0u8; rng.random_range(1..=3000)];
        let n = tokio::time::timeout(
            Duration::from_secs(20),
            tokio::io::AsyncReadExt::read(&mut r, &mut piece),
        )
        .await
        .unwrap()
        .unwrap();
        assert!(n > 0, "agent closed after {} replies", seen.len());
        buf.extend_from_slice(&piece[..n]);
        while let Some(item) = tokio_util::codec::Decoder::decode(&mut codec, &mut buf).unwrap() {
            let Incoming::Frame(f) = item else {
                panic!("malformed reply {item:?}")
            };
            match f.body {
                Reply::Hello(HelloReply::Accepted { .. }) if f.id == 0 => got_hello = true,
                Reply::Error(ErrorReply {
                    code: ErrorCode::NotFound,
                    message,
                }) => {
                    // The error names the path its own request asked about.
                    assert!(
                        message.contains(&format!("/nonexistent-lg/{}:", f.id)),
                        "reply {} carries {message:?}",
                        f.id
                    );
                    assert!(seen.insert(f.id), "reply {} arrived twice", f.id);
                }
                other => panic!("unexpected reply {other:?}"),
            }
        }
    }
    assert!(got_hello);
    assert_eq!(seen.len(), N as usize);
    writer.await.unwrap();
}

/// Output written just before a process exits must arrive. (Regression: the post-exit drain used
/// tokio's `try_read`, which trusts cached readiness and dropped such output now and then.)
#[tokio::test]
async fn output_of_short_lived_processes_is_never_lost() {
    let agent = Agent::start();
    let c = agent.client().await;
    // Several loops at once, so exits and output race each other across the runtime's threads.
    let loops = (0..6).map(|l| {
        let c = c.clone();
        async move {
            for i in 0..100 {
                let word = format!("{l}-{i}");
                let out = c
                    .exec_output(exec(&["printf", "%s", &word]), None)
                    .await
                    .unwrap();
                assert_eq!(String::from_utf8_lossy(&out.stdout), word);
            }
        }
    });
    futures_util::future::join_all(loops).await;
}
