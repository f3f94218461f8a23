//! Files in sandboxes, streamed both ways: nothing is held whole in memory, and a write is all
//! or nothing (the agent renames a complete file into place).

use luminaguard_backend::copy::{self, CopyError, CopyOptions, CopyReport, Stop};
use luminaguard_core::SandboxId;
use luminaguard_protocol::message::{FileStat, ReadFileRequest, WriteFileRequest};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};

use crate::{Action, Caller, Service, ServiceError};

impl Service {
    /// Streams file `path` of sandbox `id` into `out`; returns its size. Refuses a file over
    /// `max_bytes` (what was streamed by then is the caller's to discard).
    pub async fn read_file<W: AsyncWrite + Unpin>(
        &self,
        caller: &Caller,
        id: &SandboxId,
        path: &str,
        max_bytes: u64,
        out: &mut W,
    ) -> Result<u64, ServiceError> {
        let action = Action::ReadFile {
            id: id.clone(),
            path: path.to_owned(),
        };
        self.admit(caller, &action).await?;
        let entry = self.connection(id).await?;
        let req = ReadFileRequest {
            path: path.to_owned(),
            offset: 0,
            limit: Some(max_bytes.saturating_add(1)),
        };
        let n = entry
            .sandbox
            .client()
            .read_file_to(req, out)
            .await
            .map_err(|e| ServiceError::agent(id, e))?;
        if n > max_bytes {
            return Err(ServiceError::TooLarge(format!(
                "{path} in sandbox {id} is larger than the {max_bytes}-byte limit"
            )));
        }
        self.note_file(caller, "read", id, path, n).await;
        Ok(n)
    }

    /// What is at `path` in sandbox `id` (symbolic links followed with `follow`).
    pub async fn stat(
        &self,
        caller: &Caller,
        id: &SandboxId,
        path: &str,
        follow: bool,
    ) -> Result<FileStat, ServiceError> {
        let action = Action::ReadFile {
            id: id.clone(),
            path: path.to_owned(),
        };
        self.admit(caller, &action).await?;
        let entry = self.connection(id).await?;
        entry
            .sandbox
            .client()
            .stat(path, follow)
            .await
            .map_err(|e| ServiceError::agent(id, e))
    }

    /// Writes file `path` of sandbox `id` from `src` (created with `mode`, or replaced), all or
    /// nothing; refuses more than `max_bytes`. Returns the size written.
    pub async fn write_file<R: AsyncRead + Unpin>(
        &self,
        caller: &Caller,
        id: &SandboxId,
        path: &str,
        mode: u32,
        max_bytes: u64,
        src: R,
    ) -> Result<u64, ServiceError> {
        let n = self
            .write_through_agent(caller, id, path, mode, max_bytes, src)
            .await?;
        // The owner's own copy (not judged: see `put_file` for an agent's write).
        self.note_file(caller, "copy-in", id, path, n).await;
        Ok(n)
    }

    /// Records a file moved in or out of sandbox `id` (`kind`: `read`, `copy-in`).
    async fn note_file(&self, caller: &Caller, kind: &str, id: &SandboxId, path: &str, n: u64) {
        self.audit
            .note(
                caller,
                serde_json::json!({"type": kind, "sandbox": id, "path": path, "bytes": n}),
            )
            .await;
    }

    /// Writes `src` to `path` through sandbox `id`'s agent, all or nothing.
    pub(crate) async fn write_through_agent<R: AsyncRead + Unpin>(
        &self,
        caller: &Caller,
        id: &SandboxId,
        path: &str,
        mode: u32,
        max_bytes: u64,
        src: R,
    ) -> Result<u64, ServiceError> {
        let action = Action::WriteFile {
            id: id.clone(),
            path: path.to_owned(),
        };
        self.admit(caller, &action).await?;
        let entry = self.connection(id).await?;
        let req = WriteFileRequest {
            path: path.to_owned(),
            mode,
            parents: false,
        };
        // One byte past the limit is enough to know: the write is then abandoned before its
        // end, and the agent discards what it received.
        let mut src = src.take(max_bytes.saturating_add(1));
        let mut counted = Counted {
            inner: &mut src,
            n: 0,
            max: max_bytes,
        };
        match entry
            .sandbox
            .client()
            .write_file_from(req, &mut counted)
            .await
        {
            Ok(n) => Ok(n),
            Err(_) if counted.n > max_bytes => Err(ServiceError::TooLarge(format!(
                "more than {max_bytes} bytes for {path} in sandbox {id}"
            ))),
            Err(e) => Err(ServiceError::agent(id, e)),
        }
    }
}

/// A reader that fails once more than `max` bytes came through it.
struct Counted<'a, R> {
    inner: &'a mut R,
    n: u64,
    max: u64,
}

impl<R: AsyncRead + Unpin> AsyncRead for Counted<'_, R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let polled = std::pin::Pin::new(&mut *this.inner).poll_read(cx, buf);
        if let std::task::Poll::Ready(Ok(())) = polled {
            this.n += (buf.filled().len() - before) as u64;
            if this.n > this.max {
                return std::task::Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::FileTooLarge,
                    format!("more than {} bytes", this.max),
                )));
            }
        }
        polled
    }
}

/// Copies between a host path and a sandbox, for a front-end that runs as the user it serves
/// (the CLI): the host path is opened with this process's privileges, so a service that serves
/// other users never offers these — its callers stream bytes ([`Service::read_file`],
/// [`Service::write_file`]). Every host-side check is [`luminaguard_backend::copy`]'s.
impl Service {
    /// Copies host file `src` into sandbox `id` at `dst`; `stop` abandons it (nothing is left).
    pub async fn copy_in(
        &self,
        caller: &Caller,
        id: &SandboxId,
        src: &std::path::Path,
        dst: &str,
        opts: CopyOptions,
        stop: impl Future<Output = Stop>,
    ) -> Result<CopyReport, ServiceError> {
        let action = Action::WriteFile {
            id: id.clone(),
            path: dst.to_owned(),
        };
        let mut stop = std::pin::pin!(stop);
        let entry = tokio::select! {
            why = &mut stop => return Err(CopyError::Interrupted(why).into()),
            entry = self.admitted_connection(caller, id, &action) => entry?,
        };
        Ok(copy::copy_in(&entry.sandbox, src, dst, opts, stop).await?)
    }

    /// Copies file `src` of sandbox `id` to host path `dst`; `stop` abandons it until the file
    /// is complete.
    pub async fn copy_out(
        &self,
        caller: &Caller,
        id: &SandboxId,
        src: &str,
        dst: &std::path::Path,
        opts: CopyOptions,
        stop: impl Future<Output = Stop>,
    ) -> Result<CopyReport, ServiceError> {
        let action = Action::ReadFile {
            id: id.clone(),
            path: src.to_owned(),
        };
        let mut stop = std::pin::pin!(stop);
        let entry = tokio::select! {
            why = &mut stop => return Err(CopyError::Interrupted(why).into()),
            entry = self.admitted_connection(caller, id, &action) => entry?,
        };
        Ok(copy::copy_out(&entry.sandbox, src, dst, opts, stop).await?)
    }

    async fn admitted_connection(
        &self,
        caller: &Caller,
        id: &SandboxId,
        action: &Action,
    ) -> Result<std::sync::Arc<crate::live::Entry>, ServiceError> {
        self.admit(caller, action).await?;
        self.connection(id).await
    }
}
