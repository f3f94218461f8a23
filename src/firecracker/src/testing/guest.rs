//! The guest the fake Firecracker pretends to boot: the host side of its vsock device (the
//! socket bound at `PUT /vsock`) and an agent behind it that speaks just enough of the protocol.

use std::path::{Path, PathBuf};

use futures_util::{SinkExt, StreamExt};
use luminaguard_protocol::handshake::{self, HelloReply};
use luminaguard_protocol::{
    AGENT_READY_VSOCK_PORT, AGENT_VSOCK_PORT, ErrorCode, ErrorReply, Frame, FrameCodec, Incoming,
    Reply, Request,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;
use tokio_util::codec::Framed;

use super::GuestBehaviour;

/// What the fake guest reports to the VMM.
#[derive(Debug)]
pub enum GuestEvent {
    /// The agent was asked to shut down: the VM powers off.
    PowerOff,
    /// The agent did what a test checks (`reseed` with `{"entropy": [...]}`, `set-clock` with
    /// `{"unix_nanos": n}`). It answers the host only once `recorded` fires, so the record is
    /// written before the host learns the request succeeded.
    Agent {
        what: &'static str,
        body: serde_json::Value,
        recorded: tokio::sync::oneshot::Sender<()>,
    },
}

/// Reports an agent request to the VMM and waits until it is recorded (or the VMM is gone).
async fn report(events: &mpsc::Sender<GuestEvent>, what: &'static str, body: serde_json::Value) {
    let (recorded, done) = tokio::sync::oneshot::channel();
    if events
        .send(GuestEvent::Agent {
            what,
            body,
            recorded,
        })
        .await
        .is_ok()
    {
        let _ = done.await;
    }
}

/// The host-side port Firecracker reports in `OK <port>` (it assigns them from 1 << 30 up).
const HOST_PORT: u32 = 1 << 30;

/// Runs the guest until the task is dropped: accepts `CONNECT`s on `listener` (bound at
/// `uds_path`) and, depending on `behaviour`, signals readiness on `<uds_path>_1025` (unless
/// `restored`: an agent restored from a snapshot signalled on its first boot) and serves the
/// agent. `events` receives [`GuestEvent::PowerOff`]. Every change of `reset` (a vsock
/// transport reset, at snapshot creation) closes the connections open at that moment.
pub async fn run(
    behaviour: GuestBehaviour,
    uds_path: PathBuf,
    listener: UnixListener,
    events: mpsc::Sender<GuestEvent>,
    restored: bool,
    reset: tokio::sync::watch::Receiver<u64>,
) {
    let serves_agent = matches!(
        behaviour,
        GuestBehaviour::Agent
            | GuestBehaviour::RefuseHandshake { .. }
            | GuestBehaviour::AgentWithoutReseed
    );
    let reseeds = !matches!(behaviour, GuestBehaviour::AgentWithoutReseed);
    let refusal = match &behaviour {
        GuestBehaviour::RefuseHandshake { reason } => Some(reason.clone()),
        _ => None,
    };
    if serves_agent && !restored {
        // The agent listens before it signals, as the real one does.
        signal_ready(&uds_path).await;
    }
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(error = %e, "fake guest: accept failed");
                return;
            }
        };
        let refusal = refusal.clone();
        let events = events.clone();
        let mut reset = reset.clone();
        reset.mark_unchanged();
        tokio::spawn(async move {
            tokio::select! {
                r = host_connection(stream, serves_agent, reseeds, refusal, events) => {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "fake guest: connection ended");
                    }
                }
                _ = reset.changed() => tracing::debug!("fake guest: vsock transport reset"),
            }
        });
    }
}

/// Connects to the host's `<uds_path>_1025` and closes: the agent's ready signal.
async fn signal_ready(uds_path: &Path) {
    let path = luminaguard_vsock::listener_path(uds_path, AGENT_READY_VSOCK_PORT);
    match UnixStream::connect(&path).await {
        Ok(s) => drop(s),
        Err(e) => {
            tracing::debug!(path = %path.display(), error = %e, "fake guest: no one to signal")
        }
    }
}

/// Reads `CONNECT <port>\n` one byte at a time (nothing after it belongs to us).
async fn read_connect(stream: &mut UnixStream) -> std::io::Result<Option<u32>> {
    let mut line = Vec::new();
    loop {
        let mut byte = [0u8; 1];
        if stream.read(&mut byte).await? == 0 {
            return Ok(None);
        }
        if byte[0] == b'\n' {
            break;
        }
        line.push(byte[0]);
        if line.len() > 64 {
            return Ok(None);
        }
    }
    let text = String::from_utf8_lossy(&line);
    Ok(text
        .strip_prefix("CONNECT ")
        .and_then(|p| p.trim().parse().ok()))
}

async fn host_connection(
    mut stream: UnixStream,
    serves_agent: bool,
    reseeds: bool,
    refusal: Option<String>,
    events: mpsc::Sender<GuestEvent>,
) -> std::io::Result<()> {
    let Some(port) = read_connect(&mut stream).await? else {
        return Ok(());
    };
    if !serves_agent || port != AGENT_VSOCK_PORT {
        // Nothing listens on that guest port: Firecracker closes the connection.
        return Ok(());
    }
    stream
        .write_all(format!("OK {HOST_PORT}\n").as_bytes())
        .await?;
    let mut framed = Framed::new(stream, FrameCodec::<Request, Reply>::default());
    let hello = match framed.next().await {
        Some(Ok(Incoming::Frame(Frame {
            body: Request::Hello(h),
            ..
        }))) => h,
        _ => return Ok(()),
    };
    let reply = match (
        refusal,
        handshake::negotiate(&hello, handshake::MIN_VERSION, handshake::MAX_VERSION),
    ) {
        (Some(reason), _) | (None, Err(reason)) => HelloReply::Refused {
            reason,
            min_version: handshake::MIN_VERSION,
            max_version: handshake::MAX_VERSION,
        },
        (None, Ok(version)) => HelloReply::Accepted {
            version,
            capabilities: [handshake::capability::SHUTDOWN]
                .into_iter()
                .chain(reseeds.then_some(handshake::capability::RESEED))
                .chain(reseeds.then_some(handshake::capability::SET_CLOCK))
                .map(str::to_owned)
                .collect(),
            software: "luminaguard-fake-guest".to_owned(),
        },
    };
    let accepted = matches!(reply, HelloReply::Accepted { .. });
    send(&mut framed, Frame::new(0, Reply::Hello(reply))).await?;
    if !accepted {
        return Ok(());
    }
    while let Some(incoming) = framed.next().await {
        let Ok(Incoming::Frame(Frame { id, body })) = incoming else {
            return Ok(());
        };
        let reply = match body {
            Request::Ping => Reply::Pong,
            Request::Exec(exec) => {
                for reply in fake_exec(&exec.argv) {
                    send(&mut framed, Frame::new(id, reply)).await?;
                }
                continue;
            }
            Request::Shutdown => {
                send(&mut framed, Frame::new(id, Reply::Done)).await?;
                let _ = events.send(GuestEvent::PowerOff).await;
                return Ok(());
            }
            Request::Reseed { entropy } if reseeds => {
                let len = entropy.len();
                if !(luminaguard_protocol::message::RESEED_MIN_BYTES
                    ..=luminaguard_protocol::message::RESEED_MAX_BYTES)
                    .contains(&len)
                {
                    Reply::Error(ErrorReply::new(
                        ErrorCode::InvalidRequest,
                        format!("reseed with {len} bytes"),
                    ))
                } else {
                    report(&events, "reseed", serde_json::json!({ "entropy": entropy })).await;
                    Reply::Done
                }
            }
            Request::SetClock { unix_nanos } if reseeds => {
                report(
                    &events,
                    "set-clock",
                    serde_json::json!({ "unix_nanos": unix_nanos }),
                )
                .await;
                Reply::Done
            }
            other => Reply::Error(ErrorReply::new(
                ErrorCode::InvalidRequest,
                format!("the fake guest does not do {}", other.kind()),
            )),
        };
        send(&mut framed, Frame::new(id, reply)).await?;
    }
    Ok(())
}

/// What the fake guest's "exec" answers: it has no programs, only `echo` (its arguments,
/// space-separated, and a newline on stdout; status 0); anything else is not found (127), as a
/// shell would say.
fn fake_exec(argv: &[String]) -> Vec<Reply> {
    let (out, code) = match argv.split_first() {
        Some((program, args)) if program == "echo" => {
            (Reply::Stdout(format!("{}\n", args.join(" ")).into()), 0)
        }
        Some((program, _)) => (
            Reply::Stderr(format!("fake guest: {program}: not found\n").into()),
            127,
        ),
        None => (Reply::Stderr("fake guest: empty argv\n".into()), 127),
    };
    let output_bytes = match &out {
        Reply::Stdout(b) | Reply::Stderr(b) => u64::try_from(b.len()).unwrap_or(u64::MAX),
        _ => 0,
    };
    vec![
        Reply::Started { pid: 2 },
        out,
        Reply::Exited(luminaguard_protocol::ExitStatus {
            code: Some(code),
            output_bytes,
            ..Default::default()
        }),
    ]
}

async fn send(
    framed: &mut Framed<UnixStream, FrameCodec<Request, Reply>>,
    frame: Frame<Reply>,
) -> std::io::Result<()> {
    framed
        .send(frame)
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))
}
