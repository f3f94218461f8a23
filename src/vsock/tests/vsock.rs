//! Hybrid-vsock tests against fake VMMs: Unix listeners that answer `CONNECT <port>\n` the way
//! Firecracker and vhost-device-vsock do, and the ways a VMM can misbehave.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use luminaguard_vsock::{
    Backoff, DialError, ListenError, MAX_REPLY_LINE, connect, connect_with_retry, listen,
    listener_path,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinHandle;

const DEADLINE: Duration = Duration::from_secs(5);

/// Reads the request line the way a VMM does; returns it without `\n`.
async fn read_request(s: &mut UnixStream) -> String {
    let mut line = Vec::new();
    loop {
        let mut b = [0u8; 1];
        if s.read(&mut b).await.unwrap() == 0 || b[0] == b'\n' {
            return String::from_utf8(line).unwrap();
        }
        line.push(b[0]);
    }
}

/// What a fake VMM does with each connection after reading the request line.
#[derive(Clone)]
enum Behaviour {
    /// `OK 1073741824\n`, then echo; records the requested port.
    OkEcho,
    /// This exact reply (may hold guest data after the OK line), in one write, then echo.
    Reply(Vec<u8>),
    /// Reply and close.
    ReplyClose(Vec<u8>),
    /// Close without a word.
    Close,
    /// Never answer.
    Silent,
}

/// A fake VMM on `path` serving connections until dropped; sends each request line it reads.
struct FakeVmm {
    task: JoinHandle<()>,
    requests: tokio::sync::mpsc::UnboundedReceiver<String>,
}

impl Drop for FakeVmm {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn fake_vmm(path: &Path, behaviour: Behaviour) -> FakeVmm {
    let listener = UnixListener::bind(path).unwrap();
    let (tx, requests) = tokio::sync::mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            let tx = tx.clone();
            let behaviour = behaviour.clone();
            tokio::spawn(async move {
                let request = read_request(&mut s).await;
                let _ = tx.send(request);
                match behaviour {
                    Behaviour::OkEcho => {
                        s.write_all(b"OK 1073741824\n").await.unwrap();
                        echo(s).await;
                    }
                    Behaviour::Reply(bytes) => {
                        s.write_all(&bytes).await.unwrap();
                        echo(s).await;
                    }
                    Behaviour::ReplyClose(bytes) => {
                        let _ = s.write_all(&bytes).await;
                    }
                    Behaviour::Close => drop(s),
                    Behaviour::Silent => {
                        let mut sink = Vec::new();
                        let _ = s.read_to_end(&mut sink).await;
                    }
                }
            });
        }
    });
    FakeVmm { task, requests }
}

async fn echo(mut s: UnixStream) {
    let (mut r, mut w) = s.split();
    let _ = tokio::io::copy(&mut r, &mut w).await;
}

fn sock(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("vm.vsock")
}

#[tokio::test]
async fn connects_and_streams_to_the_guest() {
    let dir = tempfile::tempdir().unwrap();
    let path = sock(&dir);
    let mut vmm = fake_vmm(&path, Behaviour::OkEcho);

    let mut host = connect(&path, 1234, DEADLINE).await.unwrap();
    assert_eq!(host.local_port, 1_073_741_824);
    assert_eq!(vmm.requests.recv().await.unwrap(), "CONNECT 1234");

    host.stream.write_all(b"hello guest").await.unwrap();
    let mut back = [0u8; 11];
    host.stream.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"hello guest");
}

#[tokio::test]
async fn guest_bytes_in_the_same_write_as_ok_are_not_lost() {
    let dir = tempfile::tempdir().unwrap();
    let path = sock(&dir);
    // The OK line and the guest's first bytes arrive in one segment.
    let mut reply = b"OK 7\n".to_vec();
    reply.extend_from_slice(b"GREETING\nfrom the guest\0\xff");
    let _vmm = fake_vmm(&path, Behaviour::ReplyClose(reply));

    let host = connect(&path, 5, DEADLINE).await.unwrap();
    assert_eq!(host.local_port, 7);
    let mut rest = Vec::new();
    host.into_stream().read_to_end(&mut rest).await.unwrap();
    assert_eq!(rest, b"GREETING\nfrom the guest\0\xff");
}

#[tokio::test]
async fn hostile_ports() {
    let dir = tempfile::tempdir().unwrap();
    let path = sock(&dir);
    let mut vmm = fake_vmm(&path, Behaviour::Reply(b"OK 4294967295\n".to_vec()));
    let host = connect(&path, u32::MAX, DEADLINE).await.unwrap();
    assert_eq!(host.local_port, u32::MAX);
    assert_eq!(vmm.requests.recv().await.unwrap(), "CONNECT 4294967295");
    drop(vmm);

    for (i, bad) in [
        &b"OK abc\n"[..],
        b"OK 4294967296\n",
        b"OK -1\n",
        b"OK \n",
        b"OK 12\r\n",
    ]
    .iter()
    .enumerate()
    {
        let path = dir.path().join(format!("bad{i}.vsock"));
        let _vmm = fake_vmm(&path, Behaviour::Reply(bad.to_vec()));
        let err = connect(&path, 0, DEADLINE).await.unwrap_err();
        assert!(
            matches!(err, DialError::Malformed { port: 0, .. }),
            "{bad:?}: {err}"
        );
        assert!(!err.is_transient());
        let msg = err.to_string();
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(msg.contains("CONNECT 0"), "{msg}");
    }
}

#[tokio::test]
async fn garbage_reply_is_an_error_carrying_the_sanitized_text() {
    let dir = tempfile::tempdir().unwrap();
    let path = sock(&dir);
    let _vmm = fake_vmm(
        &path,
        Behaviour::ReplyClose(b"ERR no\x1b[31m listener\xff\n".to_vec()),
    );
    let err = connect(&path, 80, DEADLINE).await.unwrap_err();
    let DialError::Refused { reply, port, .. } = &err else {
        panic!("expected Refused, got {err}");
    };
    assert_eq!(*port, 80);
    assert_eq!(reply, "ERR no\\x1b[31m listener\\xff");
    let msg = err.to_string();
    assert!(!msg.contains('\x1b'), "{msg:?}");
    assert!(msg.contains(&path.display().to_string()) && msg.contains("80"));
}

#[tokio::test]
async fn vmm_closing_at_once_is_a_transient_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = sock(&dir);
    let _vmm = fake_vmm(&path, Behaviour::Close);
    let err = connect(&path, 1024, DEADLINE).await.unwrap_err();
    assert!(
        matches!(&err, DialError::Closed { partial, .. } if partial.is_empty()),
        "{err}"
    );
    assert!(err.is_transient());
    assert!(err.to_string().contains("1024"));
}

#[tokio::test]
async fn overlong_reply_line_is_rejected_without_reading_on() {
    let dir = tempfile::tempdir().unwrap();
    let path = sock(&dir);
    let mut long = vec![b'O'; 10_000];
    long.push(b'\n');
    let _vmm = fake_vmm(&path, Behaviour::Reply(long));
    let err = connect(&path, 9, DEADLINE).await.unwrap_err();
    let DialError::TooLong { reply, .. } = &err else {
        panic!("expected TooLong, got {err}");
    };
    assert_eq!(reply.len(), MAX_REPLY_LINE);
    assert!(!err.is_transient());

    // An OK line that fills the limit exactly (63 bytes + `\n`) is still accepted.
    let path = dir.path().join("exact.vsock");
    let mut exact = b"OK ".to_vec();
    exact.extend(std::iter::repeat_n(b'0', MAX_REPLY_LINE - 5));
    exact.extend_from_slice(b"9\n");
    assert_eq!(exact.len(), MAX_REPLY_LINE);
    let _vmm = fake_vmm(&path, Behaviour::Reply(exact));
    assert_eq!(connect(&path, 9, DEADLINE).await.unwrap().local_port, 9);
}

#[tokio::test]
async fn missing_socket_is_a_transient_connect_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = sock(&dir);
    let err = connect(&path, 3, DEADLINE).await.unwrap_err();
    assert!(matches!(err, DialError::Connect { .. }), "{err}");
    assert!(err.is_transient());
    assert!(err.to_string().contains(&path.display().to_string()));
}

#[tokio::test]
async fn silent_vmm_hits_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let path = sock(&dir);
    let _vmm = fake_vmm(&path, Behaviour::Silent);
    let started = tokio::time::Instant::now();
    let err = connect(&path, 3, Duration::from_millis(200))
        .await
        .unwrap_err();
    assert!(matches!(err, DialError::Timeout { port: 3, .. }), "{err}");
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert!(started.elapsed() < DEADLINE);
}

#[tokio::test]
async fn retry_succeeds_once_the_vmm_appears_late() {
    let dir = tempfile::tempdir().unwrap();
    let path = sock(&dir);
    let late = path.clone();
    let starter = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(150)).await;
        fake_vmm(&late, Behaviour::OkEcho)
    });
    let host = connect_with_retry(&path, 42, DEADLINE, Backoff::default())
        .await
        .unwrap();
    assert_eq!(host.local_port, 1_073_741_824);
    let mut vmm = starter.await.unwrap();
    assert_eq!(vmm.requests.recv().await.unwrap(), "CONNECT 42");
}

#[tokio::test]
async fn retry_succeeds_once_the_guest_listens() {
    // The VMM is up but turns CONNECTs down (closes) until the "guest" starts listening.
    let dir = tempfile::tempdir().unwrap();
    let path = sock(&dir);
    let listener = UnixListener::bind(&path).unwrap();
    let vmm = tokio::spawn(async move {
        let mut refused = 0u32;
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            assert_eq!(read_request(&mut s).await, "CONNECT 7");
            if refused < 5 {
                refused += 1;
                drop(s);
            } else {
                s.write_all(b"OK 1\n").await.unwrap();
                return (refused, s);
            }
        }
    });
    let host = connect_with_retry(&path, 7, DEADLINE, Backoff::default())
        .await
        .unwrap();
    assert_eq!(host.local_port, 1);
    let (refused, _s) = vmm.await.unwrap();
    assert_eq!(refused, 5);
}

#[tokio::test]
async fn retry_gives_up_at_the_deadline_with_the_attempt_count() {
    let dir = tempfile::tempdir().unwrap();
    let path = sock(&dir);
    let _vmm = fake_vmm(&path, Behaviour::Close);
    let deadline = Duration::from_millis(300);
    let started = tokio::time::Instant::now();
    let err = connect_with_retry(&path, 11, deadline, Backoff::default())
        .await
        .unwrap_err();
    let elapsed = started.elapsed();
    let DialError::GaveUp {
        attempts,
        last,
        port,
        ..
    } = &err
    else {
        panic!("expected GaveUp, got {err}");
    };
    assert_eq!(*port, 11);
    // Waits of 1, 2, 4, ..., 50 ms: about ten attempts in 300 ms (fewer on a loaded machine),
    // far fewer than a busy loop would make.
    assert!(*attempts >= 3 && *attempts < 100, "{attempts} attempts");
    assert!(matches!(**last, DialError::Closed { .. }), "{last}");
    assert!(elapsed >= deadline, "{elapsed:?}");
    assert!(elapsed < deadline + Duration::from_secs(2), "{elapsed:?}");
    let msg = err.to_string();
    assert!(msg.contains(&format!("after {attempts} attempts")), "{msg}");
}

#[tokio::test]
async fn retry_gives_up_on_a_silent_vmm_at_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let path = sock(&dir);
    let _vmm = fake_vmm(&path, Behaviour::Silent);
    let err = connect_with_retry(&path, 1, Duration::from_millis(200), Backoff::default())
        .await
        .unwrap_err();
    let DialError::GaveUp { attempts, last, .. } = &err else {
        panic!("expected GaveUp, got {err}");
    };
    assert_eq!(*attempts, 1);
    assert!(matches!(**last, DialError::Timeout { .. }), "{last}");
}

#[tokio::test]
async fn retry_does_not_retry_a_malformed_reply() {
    let dir = tempfile::tempdir().unwrap();
    let path = sock(&dir);
    let mut vmm = fake_vmm(&path, Behaviour::ReplyClose(b"OK x\n".to_vec()));
    let err = connect_with_retry(&path, 2, DEADLINE, Backoff::default())
        .await
        .unwrap_err();
    assert!(matches!(err, DialError::Malformed { .. }), "{err}");
    vmm.requests.recv().await.unwrap();
    assert!(
        vmm.requests.try_recv().is_err(),
        "retried a malformed reply"
    );
}

#[tokio::test]
async fn listener_receives_guest_connections_and_cleans_up() {
    let dir = tempfile::tempdir().unwrap();
    let uds = sock(&dir);
    let listener = listen(&uds, 5000).unwrap();
    let expected = dir.path().join("vm.vsock_5000");
    assert_eq!(listener.path(), expected);
    assert_eq!(listener_path(&uds, 5000), expected);
    assert_eq!(listener.port(), 5000);

    // The VMM connects on the guest's behalf and forwards the guest's bytes as they are.
    let mut guest = UnixStream::connect(&expected).await.unwrap();
    guest.write_all(b"from guest").await.unwrap();
    let mut host = listener.accept().await.unwrap();
    let mut got = [0u8; 10];
    host.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"from guest");

    drop(listener);
    assert!(!expected.exists(), "socket file left behind");
}

#[tokio::test]
async fn listener_replaces_a_stale_socket() {
    let dir = tempfile::tempdir().unwrap();
    let uds = sock(&dir);
    let path = listener_path(&uds, 6);
    // A socket left by a dead process: bound, then its listener closed.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let listener = listen(&uds, 6).unwrap();
    let _c = UnixStream::connect(&path).await.unwrap();
    listener.accept().await.unwrap();
}

#[tokio::test]
async fn listener_never_deletes_a_regular_file() {
    let dir = tempfile::tempdir().unwrap();
    let uds = sock(&dir);
    let path = listener_path(&uds, 7);
    std::fs::write(&path, b"precious").unwrap();
    let err = listen(&uds, 7).unwrap_err();
    assert!(
        matches!(
            err,
            ListenError::NotASocket {
                kind: "regular file",
                port: 7,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains(&path.display().to_string()));
    assert_eq!(std::fs::read(&path).unwrap(), b"precious");

    std::fs::create_dir(listener_path(&uds, 8)).unwrap();
    assert!(matches!(
        listen(&uds, 8),
        Err(ListenError::NotASocket {
            kind: "directory",
            ..
        })
    ));
}

#[tokio::test]
async fn dropped_listener_leaves_a_newer_socket_alone() {
    let dir = tempfile::tempdir().unwrap();
    let uds = sock(&dir);
    let first = listen(&uds, 9).unwrap();
    // Someone replaces the socket (e.g. a restarted owner); the old listener must not remove it.
    let second = listen(&uds, 9).unwrap();
    drop(first);
    assert!(second.path().exists());
    drop(second);
    assert!(!listener_path(&uds, 9).exists());
}

#[test]
fn listen_outside_a_runtime_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let err = listen(&sock(&dir), 1).unwrap_err();
    assert!(
        matches!(err, ListenError::NoRuntime { port: 1, .. }),
        "{err}"
    );
}
