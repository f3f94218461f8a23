//! A microVM review inside the guest: the workspace arrives as a tree stream and becomes the
//! read-only lower dir of an overlay mounted at `/workspace`, whose writes land in an upper dir
//! on a tmpfs of the review's layer size — the guest's mirror of the process sandbox's review
//! layer. Afterwards the host asks for the upper dir back as a tree stream (whiteouts, opaque
//! directories and hard links included) and makes the Diff Card from it on its side.
//!
//! Layout (in the guest's root, which is itself an overlay on the scratch tmpfs):
//! - [`LOWER_DIR`]: a tmpfs holding the workspace's copy, remounted read-only once written;
//! - [`LAYER_DIR`]: a tmpfs of `layer_bytes` with `upper/` and `work/`;
//! - `/workspace`: overlay `lowerdir=LOWER_DIR,upperdir=LAYER_DIR/upper,workdir=LAYER_DIR/work`
//!   with `redirect_dir=off,metacopy=off,index=off`, `nosuid,nodev` — the semantics the host's
//!   scan expects (a directory rename copies, a chmod copies the whole file up).
//!
//! The guest's commands run as root and can reach all of this (write the upper dir directly,
//! remount the tmpfs larger): the host treats what comes back as hostile
//! (`luminaguard_protocol::tree_fs::TreeWriter`) and caps it itself.

use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use luminaguard_protocol::message::{
    ErrorCode, ErrorReply, Reply, ReviewExportRequest, ReviewSetupRequest,
};
use luminaguard_protocol::tree_fs::{TreeFsError, TreeKind, TreeLimits, TreeWriter, walk};
use luminaguard_protocol::{FrameSender, MAX_CHUNK};
use nix::mount::{MsFlags, mount};
use rustix::fs::{Mode, OFlags};
use tokio_util::sync::CancellationToken;

use crate::server::{StreamInput, StreamInputRx};

/// The workspace's copy: the overlay's lower dir.
pub const LOWER_DIR: &str = "/run/luminaguard/review/lower";
/// The tmpfs holding the overlay's upper and work dirs.
pub const LAYER_DIR: &str = "/run/luminaguard/review/layer";
/// Where the overlay is mounted: where every command runs.
pub const WORKSPACE: &str = "/workspace";

/// Set once the overlay is being set up: a guest has one review layer.
static SET_UP: AtomicBool = AtomicBool::new(false);
/// Set once the overlay is mounted.
static MOUNTED: AtomicBool = AtomicBool::new(false);

fn fail(code: ErrorCode, msg: impl Into<String>) -> ErrorReply {
    ErrorReply::new(code, msg)
}

fn tree_error(what: &str, e: TreeFsError) -> ErrorReply {
    let code = match e {
        TreeFsError::TooLarge { .. } => ErrorCode::InvalidRequest,
        TreeFsError::Stream(_) | TreeFsError::Refused { .. } | TreeFsError::Special { .. } => {
            ErrorCode::InvalidRequest
        }
        _ => ErrorCode::Io,
    };
    fail(code, format!("{what}: {e}"))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ErrorReply> + Send + 'static,
) -> Result<T, ErrorReply> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(fail(
            ErrorCode::Internal,
            format!("review task failed: {e}"),
        ))
    })
}

fn mount_step(
    what: &str,
    source: &str,
    target: &str,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), ErrorReply> {
    mount(Some(source), target, fstype, flags, data)
        .map_err(|e| fail(ErrorCode::Io, format!("review: {what} ({target}): {e}")))
}

fn mkdir_p(path: &str) -> Result<(), ErrorReply> {
    std::fs::create_dir_all(path)
        .map_err(|e| fail(ErrorCode::Io, format!("review: create {path}: {e}")))
}

fn open_dir(path: &str) -> Result<std::os::fd::OwnedFd, ErrorReply> {
    rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| fail(ErrorCode::Io, format!("review: open {path}: {e}")))
}

/// [`luminaguard_protocol::Request::ReviewSetup`]: writes the workspace's tree stream (the
/// stream's input) into a fresh tmpfs, remounts it read-only and mounts the overlay at
/// [`WORKSPACE`]. A stream cut short (cancelled, connection lost) fails the request; the host
/// then tears the VM down.
pub async fn setup(req: ReviewSetupRequest, input: StreamInputRx) -> Result<Reply, ErrorReply> {
    if SET_UP.swap(true, Ordering::SeqCst) {
        return Err(fail(
            ErrorCode::InvalidRequest,
            "review: this guest's workspace overlay is set up already",
        ));
    }
    let StreamInputRx { mut rx, cancel } = input;
    blocking(move || {
        let started = std::time::Instant::now();
        let tmpfs = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
        mkdir_p(LOWER_DIR)?;
        mkdir_p(LAYER_DIR)?;
        let lower_size = format!("size={},mode=0755", req.lower_bytes.max(4096));
        mount_step(
            "mount the workspace copy's tmpfs",
            "review-lower",
            LOWER_DIR,
            Some("tmpfs"),
            tmpfs,
            Some(&lower_size),
        )?;
        let mut writer = TreeWriter::new(
            open_dir(LOWER_DIR)?,
            TreeKind::Plain,
            TreeLimits::new(req.lower_bytes),
        );
        loop {
            match rx.blocking_recv() {
                _ if cancel.is_cancelled() => {
                    return Err(fail(
                        ErrorCode::Io,
                        "review: the workspace copy was cancelled",
                    ));
                }
                Some(StreamInput::Data(d)) => writer
                    .feed(&d)
                    .map_err(|e| tree_error("review: writing the workspace copy", e))?,
                Some(StreamInput::End) => break,
                None => {
                    return Err(fail(
                        ErrorCode::Io,
                        "review: the workspace copy was cut short",
                    ));
                }
            }
        }
        let written = writer
            .finish()
            .map_err(|e| tree_error("review: writing the workspace copy", e))?;
        mount_step(
            "make the workspace copy read-only",
            "review-lower",
            LOWER_DIR,
            None,
            MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | tmpfs,
            None,
        )?;
        let layer_size = format!("size={},mode=0700", req.layer_bytes.max(4096));
        mount_step(
            "mount the review layer's tmpfs",
            "review-layer",
            LAYER_DIR,
            Some("tmpfs"),
            tmpfs,
            Some(&layer_size),
        )?;
        let upper = format!("{LAYER_DIR}/upper");
        let work = format!("{LAYER_DIR}/work");
        mkdir_p(&upper)?;
        mkdir_p(&work)?;
        mkdir_p(WORKSPACE)?;
        let opts = format!(
            "lowerdir={LOWER_DIR},upperdir={upper},workdir={work},redirect_dir=off,\
             metacopy=off,index=off"
        );
        mount_step(
            "mount the workspace overlay",
            "overlay",
            WORKSPACE,
            Some("overlay"),
            tmpfs,
            Some(&opts),
        )?;
        MOUNTED.store(true, Ordering::SeqCst);
        tracing::info!(
            entries = written.entries,
            bytes = written.file_bytes,
            elapsed = ?started.elapsed(),
            "review: workspace copied in and overlaid"
        );
        Ok(Reply::Written {
            bytes: written.file_bytes,
        })
    })
    .await
}

/// [`luminaguard_protocol::Request::ReviewExport`]: the overlay's upper dir as a tree stream
/// ([`Reply::Data`]), then [`Reply::ReadDone`] with the stream's length.
pub async fn export(
    req: ReviewExportRequest,
    id: u64,
    out: FrameSender,
    cancel: CancellationToken,
) -> Result<Reply, ErrorReply> {
    if !MOUNTED.load(Ordering::SeqCst) {
        return Err(fail(
            ErrorCode::InvalidRequest,
            "review: this guest has no review layer (no ReviewSetup)",
        ));
    }
    blocking(move || {
        let started = std::time::Instant::now();
        let root = open_dir(&format!("{LAYER_DIR}/upper"))?;
        let limits = TreeLimits {
            max_entries: req.max_entries,
            ..TreeLimits::new(req.max_file_bytes)
        };
        let mut sent = 0u64;
        let report = walk(&root, TreeKind::Layer, &limits, MAX_CHUNK, &mut |chunk| {
            if cancel.is_cancelled() {
                return Err(TreeFsError::Send("cancelled".into()));
            }
            sent += chunk.len() as u64;
            out.blocking_send(id, &Reply::Data(Bytes::from(chunk)))
                .map_err(|e| TreeFsError::Send(e.to_string()))
        })
        .map_err(|e| tree_error("review: reading the review layer", e))?;
        tracing::info!(
            entries = report.entries,
            bytes = report.file_bytes,
            elapsed = ?started.elapsed(),
            "review: layer exported"
        );
        Ok(Reply::ReadDone { bytes: sent })
    })
    .await
}
