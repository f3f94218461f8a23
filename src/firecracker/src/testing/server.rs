//! The fake API server. See the module docs of [`crate::testing`].

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::CONTENT_TYPE;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use tokio::io::AsyncWriteExt;
use tokio::net::UnixListener;
use tokio::sync::{Notify, mpsc};
use tokio::task::{JoinHandle, JoinSet};

use super::{FAKE_VERSION, Fault, Plan, Recorded};
use crate::models::{
    ActionType, BootSource, Drive, EntropyDevice, FaultBody, FirecrackerVersion,
    InstanceActionInfo, InstanceInfo, InstanceState, Logger, MachineConfiguration, Metrics,
    NetworkInterface, SnapshotCreateParams, SnapshotLoadParams, Vm, VmState, Vsock,
};

/// Largest request body accepted (Firecracker's default `--http-api-max-payload-size` is 51200).
const MAX_BODY: usize = 51_200;
/// Events queued for the owner of the server.
const EVENT_QUEUE: usize = 16;

/// Firecracker's own words for a pre-boot-only request after boot.
pub const POST_BOOT_MESSAGE: &str =
    "The requested operation is not supported after starting the microVM.";
/// Firecracker's own words for a post-boot-only request before boot.
pub const PRE_BOOT_MESSAGE: &str =
    "The requested operation is not supported before starting the microVM.";

/// What happened that the owner of the server acts on.
#[derive(Debug)]
pub enum FakeEvent {
    /// `InstanceStart` succeeded; `vsock` is the device's `uds_path` and the socket bound on it
    /// at `PUT /vsock`, if one was configured.
    Started {
        vsock: Option<(PathBuf, UnixListener)>,
    },
    /// A [`Fault::Exit`] fired.
    Exit { code: i32, stderr: String },
    /// `SendCtrlAltDel` was accepted.
    CtrlAltDel,
}

#[derive(Debug, Default)]
struct VmModel {
    started: bool,
    paused: bool,
    boot_source: bool,
    /// Anything but the logger and metrics configured (snapshot load must come first).
    configured: bool,
    vsock: Option<(PathBuf, UnixListener)>,
}

#[derive(Debug)]
struct Shared {
    id: String,
    plan: Plan,
    record_file: Option<PathBuf>,
    recorded: Mutex<Vec<Recorded>>,
    connections: AtomicUsize,
    vm: Mutex<VmModel>,
    events: mpsc::Sender<FakeEvent>,
    stop: Notify,
}

/// A running fake API server. Dropping it stops the server and closes every connection.
#[derive(Debug)]
pub struct FakeApi {
    socket: PathBuf,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
    events: mpsc::Receiver<FakeEvent>,
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl FakeApi {
    /// Binds `socket` and serves Firecracker's API on it for the VM `id`, following `plan`'s
    /// faults. With `record_file`, every request is also appended to it as a JSON line.
    /// Must be called within a tokio runtime.
    pub fn start(
        socket: &Path,
        id: &str,
        plan: Plan,
        record_file: Option<PathBuf>,
    ) -> std::io::Result<Self> {
        let listener = UnixListener::bind(socket)?;
        let (tx, rx) = mpsc::channel(EVENT_QUEUE);
        let shared = Arc::new(Shared {
            id: id.to_owned(),
            plan,
            record_file,
            recorded: Mutex::new(Vec::new()),
            connections: AtomicUsize::new(0),
            vm: Mutex::new(VmModel::default()),
            events: tx,
            stop: Notify::new(),
        });
        let accept = tokio::spawn(accept_loop(listener, shared.clone()));
        Ok(Self {
            socket: socket.to_owned(),
            shared,
            accept,
            events: rx,
        })
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared
            .recorded
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
    }

    /// How many connections were accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// The next event; `None` once the server has stopped.
    pub async fn next_event(&mut self) -> Option<FakeEvent> {
        self.events.recv().await
    }
}

async fn accept_loop(listener: UnixListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        tracing::warn!(error = %e, "fake firecracker: accept failed");
                        return;
                    }
                };
                shared.connections.fetch_add(1, Ordering::SeqCst);
                let shared = shared.clone();
                connections.spawn(async move {
                    let service = service_fn(move |req| handle(shared.clone(), req));
                    if let Err(e) = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await
                    {
                        tracing::debug!(error = %e, "fake firecracker: connection ended");
                    }
                });
            }
            () = shared.stop.notified() => return,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Why the service closes a connection without answering.
#[derive(Debug, thiserror::Error)]
#[error("fault injected: connection closed")]
struct Close;

type Answer = Response<Full<Bytes>>;

fn empty(status: StatusCode) -> Answer {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = status;
    r
}

fn json<T: serde::Serialize>(status: StatusCode, body: &T) -> Answer {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut r = Response::new(Full::new(Bytes::from(bytes)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

fn fault(status: StatusCode, message: impl Into<String>) -> Answer {
    json(
        status,
        &FaultBody {
            fault_message: message.into(),
        },
    )
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Answer, Close> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            return Ok(fault(
                StatusCode::BAD_REQUEST,
                format!("Cannot read the request body: {e}"),
            ));
        }
    };
    let outcome = respond(&shared, &method, &path, &body).await;
    let key = format!("{method} {path}");
    let injected = shared.plan.faults.get(&key).cloned();
    let recorded = Recorded {
        method: method.to_string(),
        path: path.clone(),
        body: if body.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&body).unwrap_or_else(|_| {
                serde_json::Value::String(String::from_utf8_lossy(&body).into_owned())
            })
        },
        accepted: outcome.as_ref().is_ok_and(|r| r.status().is_success()),
        fault: injected.clone(),
    };
    record(&shared, recorded).await;
    match injected {
        None => Ok(outcome.unwrap_or_else(|r| fault(r.status, r.message))),
        Some(Fault::Status {
            status,
            fault_message,
        }) => Ok(fault(
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            fault_message,
        )),
        Some(Fault::Raw { status, body }) => {
            let mut r = Response::new(Full::new(Bytes::from(body)));
            *r.status_mut() =
                StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            Ok(r)
        }
        Some(Fault::CloseConnection) => Err(Close),
        Some(Fault::Stall) => std::future::pending().await,
        Some(Fault::Exit { code, stderr }) => {
            let _ = shared.events.send(FakeEvent::Exit { code, stderr }).await;
            shared.stop.notify_one();
            std::future::pending().await
        }
    }
}

async fn record(shared: &Shared, recorded: Recorded) {
    if let Some(file) = &shared.record_file {
        let line = serde_json::to_string(&recorded).unwrap_or_default() + "\n";
        let written = async {
            let mut f = tokio::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(file)
                .await?;
            f.write_all(line.as_bytes()).await?;
            f.flush().await
        };
        if let Err(e) = written.await {
            tracing::warn!(file = %file.display(), error = %e, "fake firecracker: cannot record");
        }
    }
    if let Ok(mut all) = shared.recorded.lock() {
        all.push(recorded);
    }
}

/// What Firecracker answers a request it refuses: a status and its `fault_message`.
#[derive(Debug)]
struct Refusal {
    status: StatusCode,
    message: String,
}

fn refuse(status: StatusCode, message: impl Into<String>) -> Refusal {
    Refusal {
        status,
        message: message.into(),
    }
}

/// Decodes `body` as `T`, refusing unknown fields (Firecracker's words for the failure).
fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, Refusal> {
    serde_json::from_slice(body).map_err(|e| {
        refuse(
            StatusCode::BAD_REQUEST,
            format!("An error occurred when deserializing the json body of a request: {e}."),
        )
    })
}

async fn must_exist(what: &str, path: &Path) -> Result<(), Refusal> {
    match tokio::fs::metadata(path).await {
        Ok(_) => Ok(()),
        Err(e) => Err(refuse(
            StatusCode::BAD_REQUEST,
            format!("{what} {}: {e}", path.display()),
        )),
    }
}

fn pre_boot(vm: &VmModel) -> Result<(), Refusal> {
    if vm.started {
        Err(refuse(StatusCode::BAD_REQUEST, POST_BOOT_MESSAGE))
    } else {
        Ok(())
    }
}

fn lock(shared: &Shared) -> Result<std::sync::MutexGuard<'_, VmModel>, Refusal> {
    shared
        .vm
        .lock()
        .map_err(|_| refuse(StatusCode::INTERNAL_SERVER_ERROR, "fake state poisoned"))
}

/// What Firecracker would answer, ignoring injected faults.
async fn respond(
    shared: &Shared,
    method: &Method,
    path: &str,
    body: &[u8],
) -> Result<Answer, Refusal> {
    let no_content = Ok(empty(StatusCode::NO_CONTENT));
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (method.as_str(), segments.as_slice()) {
        ("GET", [""]) => {
            let vm = lock(shared)?;
            let state = match (vm.started, vm.paused) {
                (false, _) => InstanceState::NotStarted,
                (true, false) => InstanceState::Running,
                (true, true) => InstanceState::Paused,
            };
            Ok(json(
                StatusCode::OK,
                &InstanceInfo {
                    app_name: "Firecracker".into(),
                    id: shared.id.clone(),
                    state,
                    vmm_version: FAKE_VERSION.into(),
                },
            ))
        }
        ("GET", ["version"]) => Ok(json(
            StatusCode::OK,
            &FirecrackerVersion {
                firecracker_version: FAKE_VERSION.into(),
            },
        )),
        ("PUT", ["logger"]) => {
            parse::<Logger>(body)?;
            pre_boot(&*lock(shared)?)?;
            no_content
        }
        ("PUT", ["metrics"]) => {
            parse::<Metrics>(body)?;
            pre_boot(&*lock(shared)?)?;
            no_content
        }
        ("PUT", ["machine-config"]) => {
            let m: MachineConfiguration = parse(body)?;
            m.check().map_err(|e| {
                refuse(
                    StatusCode::BAD_REQUEST,
                    format!("Invalid machine config: {e}"),
                )
            })?;
            let mut vm = lock(shared)?;
            pre_boot(&vm)?;
            vm.configured = true;
            no_content
        }
        ("PUT", ["boot-source"]) => {
            let b: BootSource = parse(body)?;
            must_exist("Kernel file cannot be opened:", &b.kernel_image_path).await?;
            if let Some(initrd) = &b.initrd_path {
                must_exist("Initrd file cannot be opened:", initrd).await?;
            }
            let mut vm = lock(shared)?;
            pre_boot(&vm)?;
            vm.boot_source = true;
            vm.configured = true;
            no_content
        }
        ("PUT", ["drives", id]) => {
            let d: Drive = parse(body)?;
            if d.drive_id != *id {
                return Err(refuse(
                    StatusCode::BAD_REQUEST,
                    "The id from the path does not match the id from the body!",
                ));
            }
            must_exist(
                "Unable to open the block device backing file:",
                &d.path_on_host,
            )
            .await?;
            let mut vm = lock(shared)?;
            pre_boot(&vm)?;
            vm.configured = true;
            no_content
        }
        ("PUT", ["network-interfaces", id]) => {
            let n: NetworkInterface = parse(body)?;
            if n.iface_id != *id {
                return Err(refuse(
                    StatusCode::BAD_REQUEST,
                    "The id from the path does not match the id from the body!",
                ));
            }
            let mut vm = lock(shared)?;
            pre_boot(&vm)?;
            vm.configured = true;
            no_content
        }
        ("PUT", ["vsock"]) => {
            let v: Vsock = parse(body)?;
            if v.guest_cid < crate::models::vsock::MIN_GUEST_CID {
                return Err(refuse(
                    StatusCode::BAD_REQUEST,
                    format!("Invalid guest CID {}", v.guest_cid),
                ));
            }
            let mut vm = lock(shared)?;
            pre_boot(&vm)?;
            // Firecracker binds the host socket when the device is configured.
            let listener = UnixListener::bind(&v.uds_path).map_err(|e| {
                refuse(
                    StatusCode::BAD_REQUEST,
                    format!("Cannot create backend for vsock device: Error binding to the host-side Unix socket: {e}"),
                )
            })?;
            vm.vsock = Some((v.uds_path, listener));
            vm.configured = true;
            no_content
        }
        ("PUT", ["entropy"]) => {
            parse::<EntropyDevice>(body)?;
            let mut vm = lock(shared)?;
            pre_boot(&vm)?;
            vm.configured = true;
            no_content
        }
        ("PUT", ["actions"]) => {
            let a: InstanceActionInfo = parse(body)?;
            match a.action_type {
                ActionType::InstanceStart => {
                    let vsock = {
                        let mut vm = lock(shared)?;
                        pre_boot(&vm)?;
                        if !vm.boot_source {
                            return Err(refuse(
                                StatusCode::BAD_REQUEST,
                                "Start microvm error: Cannot start microvm without kernel configuration.",
                            ));
                        }
                        vm.started = true;
                        vm.vsock.take()
                    };
                    let _ = shared.events.send(FakeEvent::Started { vsock }).await;
                    no_content
                }
                ActionType::SendCtrlAltDel => {
                    if !lock(shared)?.started {
                        return Err(refuse(StatusCode::BAD_REQUEST, PRE_BOOT_MESSAGE));
                    }
                    let _ = shared.events.send(FakeEvent::CtrlAltDel).await;
                    no_content
                }
                ActionType::FlushMetrics => no_content,
            }
        }
        ("PATCH", ["vm"]) => {
            let v: Vm = parse(body)?;
            let mut vm = lock(shared)?;
            if !vm.started {
                return Err(refuse(StatusCode::BAD_REQUEST, PRE_BOOT_MESSAGE));
            }
            vm.paused = v.state == VmState::Paused;
            no_content
        }
        ("PUT", ["snapshot", "create"]) => {
            parse::<SnapshotCreateParams>(body)?;
            let vm = lock(shared)?;
            if !vm.started {
                return Err(refuse(StatusCode::BAD_REQUEST, PRE_BOOT_MESSAGE));
            }
            if !vm.paused {
                return Err(refuse(
                    StatusCode::BAD_REQUEST,
                    "Create snapshot error: Cannot save the microVM state: the microVM is not paused.",
                ));
            }
            no_content
        }
        ("PUT", ["snapshot", "load"]) => {
            let p: SnapshotLoadParams = parse(body)?;
            must_exist("Cannot open the snapshot file:", &p.snapshot_path).await?;
            let mut vm = lock(shared)?;
            pre_boot(&vm)?;
            if vm.configured {
                return Err(refuse(
                    StatusCode::BAD_REQUEST,
                    "Loading a microVM snapshot not allowed after configuring boot-specific resources.",
                ));
            }
            vm.started = true;
            vm.paused = p.resume_vm != Some(true);
            no_content
        }
        _ => Err(refuse(
            StatusCode::BAD_REQUEST,
            format!("Invalid request method and/or path: {method} {path}."),
        )),
    }
}
