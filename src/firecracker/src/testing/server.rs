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
    /// `InstanceStart` succeeded, or a VM loaded from a snapshot ran for the first time
    /// (`restored`: the agent is already up and sends no ready signal); `vsock` is the device's
    /// `uds_path` and the socket bound on it, if one was configured.
    Started {
        vsock: Option<(PathBuf, UnixListener)>,
        restored: bool,
    },
    /// `PUT /snapshot/create` succeeded: Firecracker resets the guest's vsock transport, which
    /// closes every connection.
    VsockReset,
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
    /// What a snapshot records: the vsock path and the drives' files.
    vsock_path: Option<PathBuf>,
    drives: Vec<PathBuf>,
    /// Loaded from a snapshot and not yet resumed.
    restored: bool,
}

/// What the fake writes as a "microVM state" file: enough for its own load to check what a
/// real one would (the drives' files exist; the vsock socket can be bound).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FakeState {
    pub app: String,
    pub vsock_uds_path: Option<PathBuf>,
    pub drives: Vec<PathBuf>,
}

/// The first line of the fake's memory file.
pub const FAKE_MEMORY: &[u8] = b"fake guest memory\n";

#[derive(Debug)]
struct Shared {
    id: String,
    plan: Plan,
    record_file: Option<Mutex<std::fs::File>>,
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
    /// faults. With `record_file` (opened for appending), every request is also written to it
    /// as a JSON line. Must be called within a tokio runtime.
    pub fn start(
        socket: &Path,
        id: &str,
        plan: Plan,
        record_file: Option<std::fs::File>,
    ) -> std::io::Result<Self> {
        let listener = UnixListener::bind(socket)?;
        let (tx, rx) = mpsc::channel(EVENT_QUEUE);
        let shared = Arc::new(Shared {
            id: id.to_owned(),
            plan,
            record_file: record_file.map(Mutex::new),
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
    let key = format!("{method} {path}");
    let injected = shared.plan.faults.get(&key).cloned();
    // A refused request has no effect, as in Firecracker: an injected fault skips the request.
    let outcome = match injected {
        None => respond(&shared, &method, &path, &body).await,
        Some(_) => Err(refuse(StatusCode::BAD_REQUEST, "fault injected")),
    };
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
        use std::io::Write as _;
        let line = serde_json::to_string(&recorded).unwrap_or_default() + "\n";
        // One short append to a local file, in a test fake.
        let written = file
            .lock()
            .map_err(|_| std::io::Error::other("poisoned"))
            .and_then(|mut f| f.write_all(line.as_bytes()));
        if let Err(e) = written {
            tracing::warn!(error = %e, "fake firecracker: cannot record");
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
            vm.drives.push(d.path_on_host);
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
            vm.vsock_path = Some(v.uds_path.clone());
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
                    let _ = shared
                        .events
                        .send(FakeEvent::Started {
                            vsock,
                            restored: false,
                        })
                        .await;
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
            let first_run = {
                let mut vm = lock(shared)?;
                if !vm.started {
                    return Err(refuse(StatusCode::BAD_REQUEST, PRE_BOOT_MESSAGE));
                }
                vm.paused = v.state == VmState::Paused;
                if !vm.paused && vm.restored {
                    vm.restored = false;
                    Some(vm.vsock.take())
                } else {
                    None
                }
            };
            if let Some(vsock) = first_run {
                let _ = shared
                    .events
                    .send(FakeEvent::Started {
                        vsock,
                        restored: true,
                    })
                    .await;
            }
            no_content
        }
        ("PUT", ["snapshot", "create"]) => {
            let p: SnapshotCreateParams = parse(body)?;
            let state = {
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
                FakeState {
                    app: "luminaguard-fake-firecracker".into(),
                    vsock_uds_path: vm.vsock_path.clone(),
                    drives: vm.drives.clone(),
                }
            };
            let written = async {
                tokio::fs::write(
                    &p.snapshot_path,
                    serde_json::to_vec(&state).unwrap_or_default(),
                )
                .await?;
                tokio::fs::write(&p.mem_file_path, FAKE_MEMORY).await
            };
            written.await.map_err(|e| {
                refuse(
                    StatusCode::BAD_REQUEST,
                    format!("Create snapshot error: Cannot write the snapshot files: {e}"),
                )
            })?;
            let _ = shared.events.send(FakeEvent::VsockReset).await;
            no_content
        }
        ("PUT", ["snapshot", "load"]) => {
            let p: SnapshotLoadParams = parse(body)?;
            {
                let vm = lock(shared)?;
                pre_boot(&vm)?;
                if vm.configured {
                    return Err(refuse(
                        StatusCode::BAD_REQUEST,
                        "Loading a microVM snapshot not allowed after configuring boot-specific resources.",
                    ));
                }
            }
            let load_err =
                |e: String| refuse(StatusCode::BAD_REQUEST, format!("Load snapshot error: {e}"));
            let state: FakeState = match tokio::fs::read(&p.snapshot_path).await {
                Ok(b) => serde_json::from_slice(&b)
                    .map_err(|e| load_err(format!("bad microVM state: {e}")))?,
                Err(e) => {
                    return Err(load_err(format!(
                        "Cannot open the snapshot file {}: {e}",
                        p.snapshot_path.display()
                    )));
                }
            };
            match tokio::fs::read(&p.mem_backend.backend_path).await {
                Ok(m) if m == FAKE_MEMORY => {}
                Ok(_) => return Err(load_err("the memory file is not this snapshot's".into())),
                Err(e) => {
                    return Err(load_err(format!(
                        "Cannot open the memory file {}: {e}",
                        p.mem_backend.backend_path.display()
                    )));
                }
            }
            for d in &state.drives {
                must_exist(
                    "Load snapshot error: Unable to open the block device backing file:",
                    d,
                )
                .await?;
            }
            let uds = p
                .vsock_override
                .map(|o| o.uds_path)
                .or(state.vsock_uds_path);
            let listener = match &uds {
                Some(path) => Some(UnixListener::bind(path).map_err(|e| {
                    load_err(format!("Cannot create backend for vsock device: Error binding to the host-side Unix socket {}: {e}", path.display()))
                })?),
                None => None,
            };
            let resume = p.resume_vm == Some(true);
            let runs_now = {
                let mut vm = lock(shared)?;
                vm.started = true;
                vm.paused = !resume;
                vm.drives = state.drives;
                vm.vsock_path = uds.clone();
                let pair = uds.zip(listener);
                if resume {
                    Some(pair)
                } else {
                    vm.restored = true;
                    vm.vsock = pair;
                    None
                }
            };
            if let Some(vsock) = runs_now {
                let _ = shared
                    .events
                    .send(FakeEvent::Started {
                        vsock,
                        restored: true,
                    })
                    .await;
            }
            no_content
        }
        _ => Err(refuse(
            StatusCode::BAD_REQUEST,
            format!("Invalid request method and/or path: {method} {path}."),
        )),
    }
}
