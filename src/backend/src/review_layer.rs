//! A microVM review, host side. A VM cannot share a host directory here (no virtio-fs), so a
//! speculative run's overlay lives in the guest and the host moves trees through the agent:
//!
//! - [`copy_workspace_in`], at create: the workspace, read without following a link
//!   ([`luminaguard_protocol::tree_fs::walk`]; fifos, sockets and devices are skipped and
//!   said so), streams into the guest, where the agent makes it the read-only lower dir of an
//!   overlay at `/workspace` whose writes go to a tmpfs of the layer's size
//!   ([`luminaguard_protocol::Request::ReviewSetup`]);
//! - [`fetch_layer`], before a Diff Card is made: the guest's upper dir streams back
//!   ([`luminaguard_protocol::Request::ReviewExport`]) into `<sandbox dir>/review/upper`, the
//!   directory the process backend's layer occupies, so the card is made, approved and
//!   applied by the same code for both.
//!
//! The guest is untrusted: what comes back is written by
//! [`luminaguard_protocol::tree_fs::TreeWriter`] (checked paths, no link followed, caps on
//! entries, bytes, path bytes and depth, only files, directories, symlinks, whiteouts, opaque
//! markers and hard links between its own files) into a fresh 0700 directory, which replaces
//! the previous `upper` only once complete; on any failure it is removed.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use luminaguard_core::runtime::SandboxFile;
use luminaguard_protocol::handshake::capability;
use luminaguard_protocol::tree::{TreeError, show};
use luminaguard_protocol::tree_fs::{self, TreeFsError, TreeKind, TreeLimits, TreeWriter};
use luminaguard_protocol::{
    Client, ClientError, MAX_CHUNK, Reply, Request, ReviewExportRequest, ReviewSetupRequest,
};
use nix::fcntl::{AtFlags, OFlag, RenameFlags};
use nix::sys::stat::Mode;

use crate::BackendError;
use crate::hostfs;

/// The upper dir's name in the review directory (what `Service::layers` reads).
pub const UPPER: &str = "upper";

/// Why a review layer could not be moved.
#[derive(Debug, thiserror::Error)]
pub enum ReviewLayerError {
    /// The image's agent predates microVM reviews.
    #[error(
        "the guest agent ({software}) cannot hold a review layer: rebuild the image with this \
         version (luminaguard image build)"
    )]
    AgentTooOld { software: String },
    /// The workspace is larger than the guest may hold.
    #[error(
        "the workspace holds more than {limit} {what}: a microVM review copies the workspace \
         into the guest's memory, up to the sandbox's scratch size (defaults.scratch); review \
         it on the process backend, or raise defaults.scratch"
    )]
    WorkspaceTooLarge { what: &'static str, limit: u64 },
    /// The guest's layer is over the review's bounds.
    #[error(
        "the guest's review layer holds more than {limit} {what} (review.max_layer): nothing \
         of it is kept"
    )]
    LayerTooLarge { what: &'static str, limit: u64 },
    /// Reading the workspace failed.
    #[error("reading the workspace {}: {source}", path.display())]
    Workspace { path: PathBuf, source: TreeFsError },
    /// The guest's layer held something the host refuses.
    #[error("the guest's review layer was refused: {0}")]
    Layer(TreeFsError),
    /// A host path the import would use is not safe.
    #[error(transparent)]
    HostFs(#[from] hostfs::HostFsError),
    /// A system call on the host failed.
    #[error("cannot {what} {}: {errno}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        errno: nix::errno::Errno,
    },
    /// The agent refused, or the connection failed.
    #[error("the guest agent: {0}")]
    Agent(#[from] ClientError),
    #[error("a blocking task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl ReviewLayerError {
    fn into_backend(self, backend: &'static str, step: &'static str) -> BackendError {
        BackendError::Setup {
            backend,
            step,
            reason: self.to_string(),
        }
    }
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(nix::errno::Errno) -> ReviewLayerError {
    let path = path.to_owned();
    move |errno| ReviewLayerError::Io { what, path, errno }
}

/// What [`copy_workspace_in`] copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyInReport {
    pub entries: u64,
    pub file_bytes: u64,
    /// Fifos, sockets and devices of the workspace left out (the first 100, and the count).
    pub skipped: Vec<String>,
    pub skipped_count: u64,
    pub elapsed: Duration,
}

fn require_review_agent(client: &Client) -> Result<(), ReviewLayerError> {
    let peer = client.peer();
    if peer.capabilities.iter().any(|c| c == capability::REVIEW) {
        Ok(())
    } else {
        Err(ReviewLayerError::AgentTooOld {
            software: peer.software.clone(),
        })
    }
}

/// Copies `workspace` into the guest behind `client` and has the agent mount the review
/// overlay at `/workspace`: the copy (at most `lower_bytes` of content, 100,000 entries) is
/// its lower dir, a tmpfs of `layer_bytes` takes the writes. `backend` and the step name the
/// error.
pub async fn copy_workspace_in(
    client: &Client,
    backend: &'static str,
    workspace: &Path,
    lower_bytes: u64,
    layer_bytes: u64,
) -> Result<CopyInReport, BackendError> {
    copy_in(client, workspace, lower_bytes, layer_bytes)
        .await
        .map_err(|e| e.into_backend(backend, "copy the workspace into the guest"))
}

async fn copy_in(
    client: &Client,
    workspace: &Path,
    lower_bytes: u64,
    layer_bytes: u64,
) -> Result<CopyInReport, ReviewLayerError> {
    require_review_agent(client)?;
    let started = Instant::now();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
    let path = workspace.to_owned();
    let walker = tokio::task::spawn_blocking(move || {
        let handle = hostfs::open_dir_no_links(&path)?;
        let root = reopen_dir(&handle, &path)?;
        tree_fs::walk(
            &root,
            TreeKind::Plain,
            &TreeLimits::new(lower_bytes),
            MAX_CHUNK,
            &mut |chunk| {
                tx.blocking_send(chunk)
                    .map_err(|_| TreeFsError::Send("the copy into the guest stopped".into()))
            },
        )
        .map_err(|e| match e {
            TreeFsError::TooLarge { what, limit } => {
                ReviewLayerError::WorkspaceTooLarge { what, limit }
            }
            source => ReviewLayerError::Workspace { path, source },
        })
    });
    let stream = client
        .start(Request::ReviewSetup(ReviewSetupRequest {
            lower_bytes,
            layer_bytes,
        }))
        .await;
    let mut stream = match stream {
        Ok(s) => s,
        Err(e) => {
            drop(rx);
            let _ = walker.await;
            return Err(e.into());
        }
    };
    let mut sent = Ok(());
    while let Some(chunk) = rx.recv().await {
        if let Err(e) = stream.send_input_chunk(chunk).await {
            sent = Err(e);
            break;
        }
    }
    drop(rx);
    // The walker's own failure first: it says what was wrong with the workspace. Dropping the
    // stream unanswered cancels the agent's side.
    let report = walker.await??;
    sent?;
    stream.end_input().await?;
    match stream.next().await? {
        Some(Reply::Written { .. }) => {}
        Some(other) => {
            return Err(ClientError::Protocol(format!(
                "review-setup: unexpected {} reply",
                other.kind()
            ))
            .into());
        }
        None => {
            return Err(ClientError::Protocol("review-setup: no reply".into()).into());
        }
    }
    let out = CopyInReport {
        entries: report.entries,
        file_bytes: report.file_bytes,
        skipped: report.skipped.iter().map(|(p, _)| show(p)).collect(),
        skipped_count: report.skipped_count,
        elapsed: started.elapsed(),
    };
    if out.skipped_count > 0 {
        tracing::warn!(
            count = out.skipped_count,
            first = ?out.skipped.iter().take(10).collect::<Vec<_>>(),
            "review: fifos, sockets and devices of the workspace are not copied into the guest"
        );
    }
    tracing::info!(
        entries = out.entries,
        bytes = out.file_bytes,
        elapsed = ?out.elapsed,
        "review: workspace copied into the guest"
    );
    Ok(out)
}

/// A directory descriptor open for reading, from an `O_PATH` handle.
fn reopen_dir(handle: &OwnedFd, path: &Path) -> Result<OwnedFd, ReviewLayerError> {
    nix::fcntl::openat(
        handle,
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(io_err("open", path))
}

/// What [`fetch_layer`] brought back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchReport {
    /// The upper dir the card is made from.
    pub upper: PathBuf,
    pub entries: u64,
    pub file_bytes: u64,
    pub elapsed: Duration,
}

/// Brings the guest's overlay upper dir (behind `client`) into `<dir>/review/upper`, replacing
/// what an earlier fetch left there only once the new one is complete. At most `max_entries`
/// entries and `max_file_bytes` of content; the guest is not trusted (see the module
/// documentation).
pub async fn fetch_layer(
    client: &Client,
    backend: &'static str,
    dir: &Path,
    max_entries: u64,
    max_file_bytes: u64,
) -> Result<FetchReport, BackendError> {
    fetch(client, dir, max_entries, max_file_bytes)
        .await
        .map_err(|e| e.into_backend(backend, "fetch the guest's review layer"))
}

/// The review directory and the fresh staging directory the import writes into.
struct Staging {
    review: OwnedFd,
    review_path: PathBuf,
    name: String,
}

impl Staging {
    /// Removes the staging directory and what is in it.
    fn remove(&self) {
        if let Err(e) = tree_fs::remove_tree(&self.review, self.name.as_bytes()) {
            tracing::warn!(dir = %self.review_path.join(&self.name).display(), error = %e, "cannot remove a review import");
        }
    }
}

fn random_name() -> Result<String, ReviewLayerError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|_| ReviewLayerError::Io {
        what: "draw random bytes for",
        path: PathBuf::from("a staging directory's name"),
        errno: nix::errno::Errno::EIO,
    })?;
    Ok(bytes
        .iter()
        .fold(String::from(".import-"), |s, b| s + &format!("{b:02x}")))
}

/// Opens (making it, 0700, when missing) `<dir>/review` — no link anywhere on the way, a
/// directory of ours that nobody else may write — and makes a fresh 0700 staging directory in
/// it. Returns both and the staging directory's descriptor.
fn prepare(dir: &Path) -> Result<(Staging, OwnedFd), ReviewLayerError> {
    let sandbox = reopen_dir(&hostfs::open_dir_no_links(dir)?, dir)?;
    let name = SandboxFile::Review.file_name();
    let review_path = dir.join(name);
    match nix::sys::stat::mkdirat(&sandbox, name, Mode::from_bits_truncate(0o700)) {
        Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
        Err(e) => return Err(io_err("create", &review_path)(e)),
    }
    let review = nix::fcntl::openat(
        &sandbox,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(io_err("open", &review_path))?;
    let st = nix::sys::stat::fstat(&review).map_err(io_err("stat", &review_path))?;
    if st.st_uid != nix::unistd::geteuid().as_raw() || st.st_mode & 0o077 != 0 {
        return Err(ReviewLayerError::HostFs(hostfs::HostFsError::UnsafeDir {
            path: review_path,
            problem: format!(
                "owned by uid {} with mode {:o}, not ours and private",
                st.st_uid,
                st.st_mode & 0o7777
            ),
        }));
    }
    let name = random_name()?;
    nix::sys::stat::mkdirat(&review, name.as_str(), Mode::from_bits_truncate(0o700))
        .map_err(io_err("create", &review_path.join(&name)))?;
    let staging = Staging {
        review,
        review_path,
        name,
    };
    match nix::fcntl::openat(
        &staging.review,
        staging.name.as_str(),
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => Ok((staging, fd)),
        Err(e) => {
            staging.remove();
            Err(io_err("open", &staging.review_path.join(&staging.name))(e))
        }
    }
}

/// Puts the complete staging directory in place of `upper` (exchanging the two when an older
/// one exists, then removing the older), or removes it.
fn commit(staging: Staging) -> Result<PathBuf, ReviewLayerError> {
    let upper = staging.review_path.join(UPPER);
    let exists =
        nix::sys::stat::fstatat(staging.review.as_fd(), UPPER, AtFlags::AT_SYMLINK_NOFOLLOW)
            .is_ok();
    let flags = if exists {
        RenameFlags::RENAME_EXCHANGE
    } else {
        RenameFlags::RENAME_NOREPLACE
    };
    let renamed = nix::fcntl::renameat2(
        &staging.review,
        staging.name.as_str(),
        &staging.review,
        UPPER,
        flags,
    );
    if let Err(e) = renamed {
        staging.remove();
        return Err(io_err("put in place", &upper)(e));
    }
    if exists {
        // The staging name now holds the older upper dir.
        staging.remove();
    }
    Ok(upper)
}

async fn fetch(
    client: &Client,
    dir: &Path,
    max_entries: u64,
    max_file_bytes: u64,
) -> Result<FetchReport, ReviewLayerError> {
    require_review_agent(client)?;
    let started = Instant::now();
    let d = dir.to_owned();
    let (staging, root) = tokio::task::spawn_blocking(move || prepare(&d)).await??;
    let limits = TreeLimits {
        max_entries,
        ..TreeLimits::new(max_file_bytes)
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(4);
    let writer = tokio::task::spawn_blocking(move || {
        let mut w = TreeWriter::new(root, TreeKind::Layer, limits);
        while let Some(chunk) = rx.blocking_recv() {
            w.feed(&chunk)?;
        }
        w.finish()
    });
    let received = receive(client, max_entries, max_file_bytes, &tx).await;
    drop(tx);
    let written = writer.await;
    let result = match (received, written) {
        (_, Err(e)) => Err(e.into()),
        // The writer's refusal first (it names the hostile entry) — unless it only saw the
        // stream cut short by the agent's own error.
        (_, Ok(Err(TreeFsError::TooLarge { what, limit }))) => {
            Err(ReviewLayerError::LayerTooLarge { what, limit })
        }
        (Err(e), Ok(Err(TreeFsError::Stream(TreeError::Truncated)))) => Err(e),
        (_, Ok(Err(e))) => Err(ReviewLayerError::Layer(e)),
        (Err(e), Ok(Ok(_))) => Err(e),
        (Ok(()), Ok(Ok(report))) => Ok(report),
    };
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            tokio::task::spawn_blocking(move || staging.remove()).await?;
            return Err(e);
        }
    };
    let upper = tokio::task::spawn_blocking(move || commit(staging)).await??;
    let out = FetchReport {
        upper,
        entries: report.entries,
        file_bytes: report.file_bytes,
        elapsed: started.elapsed(),
    };
    tracing::info!(
        entries = out.entries,
        bytes = out.file_bytes,
        elapsed = ?out.elapsed,
        "review: the guest's layer fetched"
    );
    Ok(out)
}

/// Streams the guest's layer into `tx` (the writer's side), checking the stream's length
/// against what the agent says it sent. Stops early when the writer has gone (it refused).
async fn receive(
    client: &Client,
    max_entries: u64,
    max_file_bytes: u64,
    tx: &tokio::sync::mpsc::Sender<bytes::Bytes>,
) -> Result<(), ReviewLayerError> {
    let mut stream = client
        .start(Request::ReviewExport(ReviewExportRequest {
            max_entries,
            max_file_bytes,
        }))
        .await?;
    let mut got = 0u64;
    loop {
        match stream.next().await? {
            Some(Reply::Data(chunk)) => {
                got += chunk.len() as u64;
                if tx.send(chunk).await.is_err() {
                    // The writer refused the stream: its error is the one to report; dropping
                    // the stream cancels the agent's side.
                    return Ok(());
                }
            }
            Some(Reply::ReadDone { bytes }) if bytes == got => return Ok(()),
            Some(Reply::ReadDone { bytes }) => {
                return Err(ClientError::Protocol(format!(
                    "review-export: the agent sent {got} bytes but reported {bytes}"
                ))
                .into());
            }
            Some(other) => {
                return Err(ClientError::Protocol(format!(
                    "review-export: unexpected {} reply",
                    other.kind()
                ))
                .into());
            }
            None => {
                return Err(
                    ClientError::Protocol("review-export: stream ended early".into()).into(),
                );
            }
        }
    }
}

/// Where [`fetch_layer`] puts the upper dir of the sandbox whose directory is `dir`.
pub fn upper_of(dir: &Path) -> PathBuf {
    dir.join(SandboxFile::Review.file_name()).join(UPPER)
}
