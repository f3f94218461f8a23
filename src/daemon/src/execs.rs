//! Commands over HTTP: an exec's response is a stream of NDJSON events, written as the command
//! prints; its stdin is the request's text, or a second request's body streamed in
//! (`PUT .../execs/{exec}/stdin`). The command lives as long as its response: a client that
//! goes away gets its command killed (and, for `POST /v1/run`, its sandbox destroyed).

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use axum::body::Body;
use axum::http::header;
use axum::response::Response;
use bytes::Bytes;
use luminaguard_api::chunk::Encoder;
use luminaguard_api::types::{ExecEvent, ExitView};
use luminaguard_core::SandboxId;
use luminaguard_service::{Caller, Exec, ExecOutput, ExitReport, Stdin};
use tokio::sync::mpsc;

use crate::AppState;
use crate::error::ApiError;

/// How the command's stdin is fed.
#[derive(Debug)]
pub enum StdinPlan {
    /// Empty.
    None,
    /// This text, then end-of-file.
    Text(String),
    /// Streamed by a `PUT .../stdin` request.
    Stream,
}

/// A running command's stdin stream, waiting for its `PUT`.
#[derive(Debug)]
struct Slot {
    uid: u32,
    sandbox: SandboxId,
    /// Taken by the one `PUT` that feeds it.
    tx: Option<mpsc::Sender<Bytes>>,
}

/// The execs whose stdin is streamed, by exec id.
#[derive(Debug, Default)]
pub struct Registry {
    slots: Mutex<HashMap<String, Slot>>,
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Slot>> {
        self.slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The sender for exec `exec`'s stdin, for `caller` — once.
    pub fn take(
        &self,
        caller: &Caller,
        sandbox: &SandboxId,
        exec: &str,
    ) -> Result<mpsc::Sender<Bytes>, ApiError> {
        let mut slots = self.lock();
        let slot = match slots.get_mut(exec) {
            Some(s) if s.sandbox == *sandbox && caller.may_use(Some(s.uid)) => s,
            _ => {
                return Err(ApiError::not_found(format!(
                    "no running command {exec} with a stdin stream in sandbox {sandbox}"
                )));
            }
        };
        slot.tx.take().ok_or_else(|| {
            ApiError::new(
                axum::http::StatusCode::CONFLICT,
                "conflict",
                format!("the stdin of command {exec} is being streamed already"),
            )
        })
    }
}

/// A random id for an exec.
fn exec_id() -> String {
    let mut b = [0u8; 12];
    if getrandom::fill(&mut b).is_err() {
        // No randomness: a clock value is unique enough for a handle the caller must also
        // own (the registry checks the uid and the sandbox).
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        return format!("x{t:x}");
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// What to do once the command has ended and its exit is sent.
#[derive(Debug)]
pub enum After {
    Nothing,
    /// Destroy the sandbox (made for this command).
    Destroy,
    /// The sandbox is speculative: show the Diff Card of what the command changed, wait for
    /// its answer, then destroy the sandbox.
    Review,
}

/// Streams `exec`'s events as the response, feeding its stdin as `stdin` says.
pub fn respond(
    st: AppState,
    caller: Caller,
    sandbox: SandboxId,
    exec: Exec,
    stdin: StdinPlan,
    after: After,
) -> Response {
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(32);
    let id = exec_id();
    let stdin_rx = match stdin {
        StdinPlan::Stream => {
            let (stx, srx) = mpsc::channel::<Bytes>(8);
            st.execs.lock().insert(
                id.clone(),
                Slot {
                    uid: caller.uid,
                    sandbox: sandbox.clone(),
                    tx: Some(stx),
                },
            );
            Some(srx)
        }
        _ => None,
    };
    let feeder = feed(exec.stdin(), stdin, stdin_rx);
    tokio::spawn(async move {
        let started = Instant::now();
        let report = drive(exec, &tx, &id, &sandbox, feeder).await;
        st.execs.lock().remove(&id);
        if report.is_some() {
            st.metrics
                .exec_seconds
                .observe(started.elapsed().as_secs_f64());
            if let After::Review = after {
                review(&st, &caller, &sandbox, &tx).await;
            }
        }
        if matches!(after, After::Destroy | After::Review)
            && let Err(e) = st.service.destroy(&caller, &sandbox).await
        {
            tracing::warn!(%sandbox, error = %e, "destroying a one-shot sandbox");
        }
    });
    let body = Body::from_stream(tokio_stream(rx));
    let mut resp = Response::new(body);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/x-ndjson"),
    );
    resp
}

/// After a speculative run: its Diff Card, then — once a person answered it, or its time ran
/// out — the decision. A client that goes away first withdraws the card.
async fn review(
    st: &AppState,
    caller: &Caller,
    sandbox: &SandboxId,
    tx: &mpsc::Sender<Result<Bytes, std::io::Error>>,
) {
    let send = |event: ExecEvent| async move { tx.send(Ok(line(&event))).await.is_ok() };
    let card = match st.service.review(caller, sandbox).await {
        Ok(card) => card,
        Err(e) => {
            send(ExecEvent::Error(ApiError::from(e).body())).await;
            return;
        }
    };
    let delivered = send(ExecEvent::Card(crate::approvals::card_view(&card))).await;
    let Some(approval) = card.approval else {
        return;
    };
    const GONE: &str = "the client that asked went away";
    if !delivered {
        st.service.withdraw_approval(caller, &approval, GONE).await;
        return;
    }
    let decided = tokio::select! {
        () = tx.closed() => {
            st.service.withdraw_approval(caller, &approval, GONE).await;
            return;
        }
        decided = st.service.wait_approval(caller, &approval) => decided,
    };
    let event = match decided {
        Ok(a) => ExecEvent::Decision(crate::approvals::approval_view(&a)),
        Err(e) => ExecEvent::Error(ApiError::from(e).body()),
    };
    send(event).await;
}

/// The receiver as a stream of body frames.
fn tokio_stream(
    mut rx: mpsc::Receiver<Result<Bytes, std::io::Error>>,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// Feeds the command's stdin: text then end-of-file, a stream's bytes until it ends, or
/// nothing (the command was started without stdin).
fn feed(
    stdin: Stdin,
    plan: StdinPlan,
    rx: Option<mpsc::Receiver<Bytes>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let fed = match (plan, rx) {
            (StdinPlan::Text(text), _) => match stdin.write(text.as_bytes()).await {
                Ok(()) => stdin.close().await,
                Err(e) => Err(e),
            },
            (StdinPlan::Stream, Some(mut rx)) => {
                let mut result = Ok(());
                while let Some(b) = rx.recv().await {
                    if let Err(e) = stdin.write(&b).await {
                        result = Err(e);
                        break;
                    }
                }
                match result {
                    Ok(()) => stdin.close().await,
                    Err(e) => Err(e),
                }
            }
            _ => Ok(()),
        };
        if let Err(e) = fed {
            tracing::debug!(error = %e, "feeding a command's stdin");
        }
    })
}

/// One event as an NDJSON line.
fn line(event: &ExecEvent) -> Bytes {
    let mut v = serde_json::to_vec(event).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

/// Runs the command to its end, sending its events; returns its report (`None`: it did not
/// end normally — the client went away, or the sandbox failed).
async fn drive(
    mut exec: Exec,
    tx: &mpsc::Sender<Result<Bytes, std::io::Error>>,
    id: &str,
    sandbox: &SandboxId,
    feeder: tokio::task::JoinHandle<()>,
) -> Option<ExitReport> {
    let (mut out, mut err) = (Encoder::default(), Encoder::default());
    let send = |event: ExecEvent| async move { tx.send(Ok(line(&event))).await.is_ok() };
    let report = loop {
        let next = tokio::select! {
            // The client went away: dropping the exec kills the command.
            () = tx.closed() => break None,
            next = exec.next() => next,
        };
        let delivered = match next {
            Ok(Some(ExecOutput::Started { pid })) => {
                send(ExecEvent::Started {
                    pid,
                    exec: id.to_owned(),
                    sandbox: sandbox.to_string(),
                })
                .await
            }
            Ok(Some(ExecOutput::Stdout(b))) => {
                let mut ok = true;
                for c in out.push(&b) {
                    ok &= send(ExecEvent::Stdout(c)).await;
                }
                ok
            }
            Ok(Some(ExecOutput::Stderr(b))) => {
                let mut ok = true;
                for c in err.push(&b) {
                    ok &= send(ExecEvent::Stderr(c)).await;
                }
                ok
            }
            Ok(Some(ExecOutput::Exit(report))) => {
                if let Some(c) = out.finish() {
                    send(ExecEvent::Stdout(c)).await;
                }
                if let Some(c) = err.finish() {
                    send(ExecEvent::Stderr(c)).await;
                }
                send(ExecEvent::Exit(view(&report))).await;
                break Some(report);
            }
            Ok(None) => break None,
            Err(e) => {
                send(ExecEvent::Error(ApiError::from(e).body())).await;
                break None;
            }
        };
        if !delivered {
            break None;
        }
    };
    feeder.abort();
    drop(exec);
    report
}

/// The wire form of a report.
pub fn view(r: &ExitReport) -> ExitView {
    ExitView {
        code: r.code,
        signal: r.signal,
        timed_out: r.timed_out,
        cancelled: r.cancelled,
        output_truncated: r.output_truncated,
        duration_ms: r.duration_ms,
        oom_killed: r.oom_killed,
        memory_limit: r.memory_limit,
        seccomp_denied: r.seccomp_denied.clone(),
        error: r.error.clone(),
    }
}
