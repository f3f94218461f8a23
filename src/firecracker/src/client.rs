//! The Firecracker API client: HTTP/1.1 over the API Unix socket.
//!
//! One connection carries every request (Firecracker serves its API one request at a time;
//! requests here are sent one after another under a lock). A task spawned at [`ApiClient::connect`]
//! drives the connection and is aborted when the client is dropped. Every request has a deadline;
//! after a deadline passes or the connection fails, the connection's state is unknown, so the
//! client refuses every later request with the reason instead of reusing it.
//!
//! A 4xx/5xx answer carries Firecracker's `{"fault_message": ...}`, which is kept verbatim in
//! [`ApiError::Fault`] together with the status and the request it answered.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1;
use hyper::header::{ACCEPT, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

use crate::models::{
    ActionType, BootSource, Drive, EntropyDevice, FaultBody, FirecrackerVersion,
    InstanceActionInfo, InstanceInfo, Logger, MachineConfiguration, Metrics, NetworkInterface,
    SnapshotCreateParams, SnapshotLoadParams, Vm, VmState, Vsock, is_valid_resource_id,
};

/// The deadline of each request unless set otherwise.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest response body read; Firecracker's are a few hundred bytes.
pub const MAX_RESPONSE_BODY: usize = 64 * 1024;
/// How much of an unexpected body an error quotes.
const QUOTED_BODY: usize = 1024;

/// A request: method and path, e.g. `PUT /drives/rootfs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub method: Method,
    pub path: String,
}

impl Endpoint {
    fn new(method: Method, path: impl Into<String>) -> Self {
        Self {
            method,
            path: path.into(),
        }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.method, self.path)
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why an API request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The API socket could not be connected to.
    #[error("cannot connect to the Firecracker API socket {}: {source}", socket.display())]
    Connect {
        socket: PathBuf,
        source: std::io::Error,
    },
    /// The HTTP connection could not be set up on the socket.
    #[error("cannot start HTTP/1.1 on the Firecracker API socket {}: {source}", socket.display())]
    Handshake {
        socket: PathBuf,
        source: hyper::Error,
    },
    /// Connecting took longer than the deadline.
    #[error("connecting to the Firecracker API socket {} took longer than {after:?}", socket.display())]
    ConnectTimeout { socket: PathBuf, after: Duration },
    /// A resource id cannot be part of a URL path.
    #[error("{request}: {what} {id:?} is not [A-Za-z0-9_-]{{1,64}}")]
    InvalidId {
        request: Endpoint,
        what: &'static str,
        id: String,
    },
    /// The body could not be encoded as JSON (a path that is not UTF-8).
    #[error("{request}: cannot encode the body as JSON: {source}")]
    Encode {
        request: Endpoint,
        source: serde_json::Error,
    },
    /// The request could not be built.
    #[error("{request}: cannot build the HTTP request: {source}")]
    Build {
        request: Endpoint,
        source: hyper::http::Error,
    },
    /// Sending the request or reading the response failed (the VMM closed the connection, or
    /// exited).
    #[error("{request} on {}: the connection failed: {source}", socket.display())]
    Transport {
        request: Endpoint,
        socket: PathBuf,
        source: BoxError,
    },
    /// No complete response within the deadline.
    #[error("{request} on {}: no response within {after:?}", socket.display())]
    Timeout {
        request: Endpoint,
        socket: PathBuf,
        after: Duration,
    },
    /// Firecracker refused the request; `fault_message` is its own words.
    #[error("Firecracker refused {request} ({status}): {fault_message}")]
    Fault {
        request: Endpoint,
        status: StatusCode,
        fault_message: String,
    },
    /// An error status without Firecracker's error body.
    #[error("{request}: unexpected {status} with body {body:?}")]
    UnexpectedStatus {
        request: Endpoint,
        status: StatusCode,
        body: String,
    },
    /// A success whose body is not what the swagger says.
    #[error("{request}: cannot decode the {status} response {body:?}: {source}")]
    Decode {
        request: Endpoint,
        status: StatusCode,
        body: String,
        source: serde_json::Error,
    },
    /// An earlier request left the connection unusable.
    #[error("{request}: the API connection is unusable since an earlier failure: {reason}")]
    Broken { request: Endpoint, reason: String },
}

impl ApiError {
    /// Firecracker's `fault_message`, when it refused the request.
    pub fn fault_message(&self) -> Option<&str> {
        match self {
            Self::Fault { fault_message, .. } => Some(fault_message),
            _ => None,
        }
    }

    /// The HTTP status, when a response arrived.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Self::Fault { status, .. }
            | Self::UnexpectedStatus { status, .. }
            | Self::Decode { status, .. } => Some(*status),
            _ => None,
        }
    }
}

enum Conn {
    Open(http1::SendRequest<Full<Bytes>>),
    Broken(String),
}

/// A client of one Firecracker's API socket, on one connection.
pub struct ApiClient {
    socket: PathBuf,
    conn: Mutex<Conn>,
    driver: JoinHandle<()>,
    timeout: Duration,
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiClient")
            .field("socket", &self.socket)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Drop for ApiClient {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

fn quote(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(QUOTED_BODY)]);
    if body.len() > QUOTED_BODY {
        format!("{text}…")
    } else {
        text.into_owned()
    }
}

impl ApiClient {
    /// Connects to the API socket and starts HTTP/1.1 on it, within `timeout`, which then
    /// bounds every request.
    pub async fn connect(socket: &Path, timeout: Duration) -> Result<Self, ApiError> {
        let setup = async {
            let stream = tokio::net::UnixStream::connect(socket)
                .await
                .map_err(|source| ApiError::Connect {
                    socket: socket.to_owned(),
                    source,
                })?;
            http1::handshake::<_, Full<Bytes>>(TokioIo::new(stream))
                .await
                .map_err(|source| ApiError::Handshake {
                    socket: socket.to_owned(),
                    source,
                })
        };
        let (sender, connection) = tokio::time::timeout(timeout, setup).await.map_err(|_| {
            ApiError::ConnectTimeout {
                socket: socket.to_owned(),
                after: timeout,
            }
        })??;
        let name = socket.display().to_string();
        let driver = tokio::spawn(async move {
            match connection.await {
                Ok(()) => tracing::debug!(socket = %name, "firecracker API connection closed"),
                Err(e) => {
                    tracing::debug!(socket = %name, error = %e, "firecracker API connection failed")
                }
            }
        });
        tracing::debug!(socket = %socket.display(), "connected to the firecracker API");
        Ok(Self {
            socket: socket.to_owned(),
            conn: Mutex::new(Conn::Open(sender)),
            driver,
            timeout,
        })
    }

    /// The API socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The deadline of each request.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Changes the deadline of each later request (a snapshot of a large guest takes longer).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Sends one request and reads the whole response, on the one connection.
    async fn exchange(
        &self,
        request: &Endpoint,
        body: Option<Bytes>,
    ) -> Result<(StatusCode, Bytes), ApiError> {
        let mut conn = self.conn.lock().await;
        let sender = match &mut *conn {
            Conn::Open(sender) => sender,
            Conn::Broken(reason) => {
                return Err(ApiError::Broken {
                    request: request.clone(),
                    reason: reason.clone(),
                });
            }
        };
        let mut builder = Request::builder()
            .method(request.method.clone())
            .uri(request.path.as_str())
            .header(HOST, "localhost")
            .header(ACCEPT, "application/json");
        if body.is_some() {
            builder = builder.header(CONTENT_TYPE, "application/json");
        }
        let http_request = builder
            .body(Full::new(body.unwrap_or_default()))
            .map_err(|source| ApiError::Build {
                request: request.clone(),
                source,
            })?;
        let round_trip = async {
            sender.ready().await?;
            let response = sender.send_request(http_request).await?;
            let status = response.status();
            let bytes = Limited::new(response.into_body(), MAX_RESPONSE_BODY)
                .collect()
                .await?
                .to_bytes();
            Ok::<_, BoxError>((status, bytes))
        };
        let outcome = tokio::time::timeout(self.timeout, round_trip).await;
        match outcome {
            Ok(Ok((status, bytes))) => {
                tracing::debug!(%request, %status, "firecracker API");
                Ok((status, bytes))
            }
            Ok(Err(source)) => {
                *conn = Conn::Broken(format!("{request} failed: {source}"));
                Err(ApiError::Transport {
                    request: request.clone(),
                    socket: self.socket.clone(),
                    source,
                })
            }
            Err(_) => {
                *conn = Conn::Broken(format!(
                    "{request} got no response within {:?}",
                    self.timeout
                ));
                Err(ApiError::Timeout {
                    request: request.clone(),
                    socket: self.socket.clone(),
                    after: self.timeout,
                })
            }
        }
    }

    /// A request whose success has no body of interest (Firecracker answers 204).
    async fn send<T: Serialize>(&self, request: Endpoint, body: &T) -> Result<(), ApiError> {
        let json = serde_json::to_vec(body).map_err(|source| ApiError::Encode {
            request: request.clone(),
            source,
        })?;
        let (status, bytes) = self.exchange(&request, Some(Bytes::from(json))).await?;
        check_status(&request, status, &bytes)
    }

    /// A `GET` that answers 200 with a `T`.
    async fn get<T: DeserializeOwned>(&self, request: Endpoint) -> Result<T, ApiError> {
        let (status, bytes) = self.exchange(&request, None).await?;
        check_status(&request, status, &bytes)?;
        serde_json::from_slice(&bytes).map_err(|source| ApiError::Decode {
            request,
            status,
            body: quote(&bytes),
            source,
        })
    }

    /// `PUT /logger`.
    pub async fn put_logger(&self, logger: &Logger) -> Result<(), ApiError> {
        self.send(Endpoint::new(Method::PUT, "/logger"), logger)
            .await
    }

    /// `PUT /metrics`.
    pub async fn put_metrics(&self, metrics: &Metrics) -> Result<(), ApiError> {
        self.send(Endpoint::new(Method::PUT, "/metrics"), metrics)
            .await
    }

    /// `PUT /machine-config`.
    pub async fn put_machine_config(&self, config: &MachineConfiguration) -> Result<(), ApiError> {
        self.send(Endpoint::new(Method::PUT, "/machine-config"), config)
            .await
    }

    /// `PUT /boot-source`.
    pub async fn put_boot_source(&self, boot: &BootSource) -> Result<(), ApiError> {
        self.send(Endpoint::new(Method::PUT, "/boot-source"), boot)
            .await
    }

    /// `PUT /drives/{drive_id}`.
    pub async fn put_drive(&self, drive: &Drive) -> Result<(), ApiError> {
        let request = Endpoint::new(Method::PUT, format!("/drives/{}", drive.drive_id));
        if !is_valid_resource_id(&drive.drive_id) {
            return Err(ApiError::InvalidId {
                request,
                what: "drive_id",
                id: drive.drive_id.clone(),
            });
        }
        self.send(request, drive).await
    }

    /// `PUT /network-interfaces/{iface_id}`.
    pub async fn put_network_interface(&self, iface: &NetworkInterface) -> Result<(), ApiError> {
        let request = Endpoint::new(
            Method::PUT,
            format!("/network-interfaces/{}", iface.iface_id),
        );
        if !is_valid_resource_id(&iface.iface_id) {
            return Err(ApiError::InvalidId {
                request,
                what: "iface_id",
                id: iface.iface_id.clone(),
            });
        }
        self.send(request, iface).await
    }

    /// `PUT /vsock`.
    pub async fn put_vsock(&self, vsock: &Vsock) -> Result<(), ApiError> {
        self.send(Endpoint::new(Method::PUT, "/vsock"), vsock).await
    }

    /// `PUT /entropy`.
    pub async fn put_entropy(&self, entropy: &EntropyDevice) -> Result<(), ApiError> {
        self.send(Endpoint::new(Method::PUT, "/entropy"), entropy)
            .await
    }

    /// `PUT /actions`.
    pub async fn action(&self, action_type: ActionType) -> Result<(), ApiError> {
        self.send(
            Endpoint::new(Method::PUT, "/actions"),
            &InstanceActionInfo { action_type },
        )
        .await
    }

    /// `PATCH /vm`: pause or resume.
    pub async fn patch_vm(&self, state: VmState) -> Result<(), ApiError> {
        self.send(Endpoint::new(Method::PATCH, "/vm"), &Vm { state })
            .await
    }

    /// `PUT /snapshot/create` (pause first).
    pub async fn create_snapshot(&self, params: &SnapshotCreateParams) -> Result<(), ApiError> {
        self.send(Endpoint::new(Method::PUT, "/snapshot/create"), params)
            .await
    }

    /// `PUT /snapshot/load` (on a fresh VMM).
    pub async fn load_snapshot(&self, params: &SnapshotLoadParams) -> Result<(), ApiError> {
        self.send(Endpoint::new(Method::PUT, "/snapshot/load"), params)
            .await
    }

    /// `GET /`.
    pub async fn instance_info(&self) -> Result<InstanceInfo, ApiError> {
        self.get(Endpoint::new(Method::GET, "/")).await
    }

    /// `GET /version`.
    pub async fn version(&self) -> Result<FirecrackerVersion, ApiError> {
        self.get(Endpoint::new(Method::GET, "/version")).await
    }
}

/// Success is any 2xx; otherwise Firecracker's fault body, verbatim, or the body as it came.
fn check_status(request: &Endpoint, status: StatusCode, body: &[u8]) -> Result<(), ApiError> {
    if status.is_success() {
        return Ok(());
    }
    match serde_json::from_slice::<FaultBody>(body) {
        Ok(fault) => Err(ApiError::Fault {
            request: request.clone(),
            status,
            fault_message: fault.fault_message,
        }),
        Err(_) => Err(ApiError::UnexpectedStatus {
            request: request.clone(),
            status,
            body: quote(body),
        }),
    }
}
