//! The session's own tools: its sandboxes (made, listed, destroyed), commands run in them,
//! files read and written — each through the session's [`Front`], so the service judges,
//! asks and records every one.

use super::*;

impl Session {
    /// Destroys the session's sandboxes.
    /// Ends the calls this session keeps detached (their commands killed, their cards
    /// withdrawn).
    pub(super) fn abandon_detached(&self) {
        drop(std::mem::take(
            &mut *self
                .detached
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        ));
    }

    pub(super) async fn end(&self) {
        // Calls still held end with the session (their cards are withdrawn).
        self.abandon_detached();
        let mut all = std::mem::take(&mut *self.sandboxes.lock().await);
        if let Some(servers) = &self.servers {
            all.extend(servers.take_helds().into_iter().map(|held| Sandbox {
                held,
                default: false,
            }));
        }
        for s in all {
            let id = s.held.id().clone();
            if let Err(e) = self.front.release(s.held).await {
                tracing::warn!(%id, error = %e, "destroying a sandbox of the MCP session");
            }
        }
    }

    /// The sandbox a call names, or the session's own (made now if it has none yet).
    pub(super) async fn sandbox(&self, named: Option<&str>) -> Outcome<SandboxId> {
        let mut list = self.sandboxes.lock().await;
        if let Some(name) = named {
            return list
                .iter()
                .find(|s| s.held.id().as_str() == name)
                .map(|s| s.held.id().clone())
                .ok_or_else(|| {
                    Fail(format!(
                        "not-found: no sandbox {name:?} in this MCP session (sandbox_list lists \
                         them)"
                    ))
                });
        }
        if let Some(pos) = list.iter().position(|s| s.default) {
            if self.front.held_alive(&list[pos].held).await {
                return Ok(list[pos].held.id().clone());
            }
            // Its lifetime ended it: what was in it is gone, and a new one is made.
            let gone = list.remove(pos);
            tracing::info!(id = %gone.held.id(), "the session's sandbox has ended; making another");
            self.shared.untrack(gone.held.id());
            let _ = self.front.release(gone.held).await;
        }
        let held = self.make().await?;
        let id = held.id().clone();
        tracing::info!(%id, "made the MCP session's sandbox");
        list.push(Sandbox {
            held,
            default: true,
        });
        Ok(id)
    }

    /// Makes a sandbox with the server's settings, under an id chosen here, so that what a
    /// person is asked while it is made (its network) is found as this session's.
    pub(super) async fn make(&self) -> Outcome<Held> {
        let mut create = self.settings.create.clone();
        let id = SandboxId::generate();
        if create.pool.is_none() {
            // (A pool's sandbox has its id already, and a pool is never asked about.)
            create.id = Some(id.clone());
        }
        self.shared.track(&id);
        match self.front.hold(create).await {
            Ok(held) => {
                if held.id() != &id {
                    // A pool's sandbox has an id of its own.
                    self.shared.untrack(&id);
                    self.shared.track(held.id());
                }
                Ok(held)
            }
            Err(e) => {
                self.shared.untrack(&id);
                Err(e.into())
            }
        }
    }

    /// Runs `argv` in sandbox `id` (feeding it `stdin`), keeping its output bounded; what
    /// people were asked on the way is returned with how it ended.
    pub(super) async fn exec(
        &self,
        id: &SandboxId,
        opts: ExecOptions,
        stdin: Option<Vec<u8>>,
        track: &Track,
    ) -> Outcome<(ExitReport, Bounded, Bounded, Vec<String>)> {
        let seen = |n: usize| {
            track.output.fetch_add(n as u64, Ordering::Relaxed);
        };
        let done = run_bounded(
            &self.front,
            id,
            opts,
            stdin,
            self.settings.output_limit,
            &seen,
        )
        .await;
        let approvals = self.met(track).await;
        match done {
            Ok((report, out, err)) => Ok((report, out, err, approvals)),
            Err(e) => Err(with_approvals(e.into(), &approvals)),
        }
    }

    /// How each approval the call met ended.
    pub(super) async fn met(&self, track: &Track) -> Vec<String> {
        let mut approvals = Vec::new();
        for a in track.met() {
            approvals.push(approve::ended(&self.front, &a).await);
        }
        approvals
    }

    pub(super) async fn run_command(
        &self,
        a: RunCommand,
        track: &Track,
    ) -> Outcome<(CommandResult, String)> {
        let argv = match (a.command, a.argv) {
            (Some(c), None) => vec!["sh".to_owned(), "-c".to_owned(), c],
            (None, Some(argv)) if !argv.is_empty() => argv,
            (None, Some(_)) => return Err(Fail("invalid-arguments: argv is empty".into())),
            _ => {
                return Err(Fail(
                    "invalid-arguments: give exactly one of `command` (a shell command line) \
                     and `argv` (a program and its arguments)"
                        .into(),
                ));
            }
        };
        let id = self.sandbox(a.sandbox_id.as_deref()).await?;
        let opts = ExecOptions {
            argv,
            env: a.env.unwrap_or_default().into_iter().collect(),
            cwd: a.cwd,
            timeout: a.timeout.map(Duration::from_secs),
            stdin: false,
        };
        let (report, out, err, approvals) = self.exec(&id, opts, None, track).await?;
        let result = command_result(&report, &out, &err, &id, approvals);
        let text = render_command(&result, &report);
        Ok((result, text))
    }

    pub(super) async fn read_file(&self, a: ReadFile) -> Outcome<(FileContent, String)> {
        let id = self.sandbox(a.sandbox_id.as_deref()).await?;
        let path = in_sandbox(&a.path);
        let bytes = self.front.read(&id, &path, self.settings.max_file).await?;
        let size = bytes.len() as u64;
        let (content, encoding) = match String::from_utf8(bytes) {
            Ok(text) => (text, "utf-8"),
            Err(e) => (base64(e.as_bytes()), "base64"),
        };
        let text = match encoding {
            "utf-8" => content.clone(),
            _ => {
                format!("{path}: {size} bytes that are not UTF-8 (base64 in the structured result)")
            }
        };
        Ok((
            FileContent {
                path,
                content,
                encoding: encoding.to_owned(),
                size,
                sandbox_id: id.to_string(),
            },
            text,
        ))
    }

    pub(super) async fn write_file(
        &self,
        a: WriteFile,
        track: &Track,
    ) -> Outcome<(Written, String)> {
        let len = a.content.len() as u64;
        if len > self.settings.max_file {
            return Err(Fail(format!(
                "too-large: {len} bytes for {}: the limit is {} bytes",
                a.path, self.settings.max_file
            )));
        }
        let id = self.sandbox(a.sandbox_id.as_deref()).await?;
        let path = in_sandbox(&a.path);
        // Judged by the service as the write it is; asked about, shown as a Diff Card.
        let done = self
            .front
            .put_file(&id, &path, a.content.into_bytes())
            .await;
        let approvals = self.met(track).await;
        let written = done.map_err(|e| with_approvals(e.into(), &approvals))?;
        let text = format!(
            "wrote {} bytes to {path}{}",
            written.bytes,
            approvals_line(&approvals)
        );
        Ok((
            Written {
                path,
                bytes: written.bytes,
                sandbox_id: id.to_string(),
                approvals,
            },
            text,
        ))
    }

    pub(super) async fn delete_file(
        &self,
        a: DeleteFile,
        track: &Track,
    ) -> Outcome<(Deleted, String)> {
        let id = self.sandbox(a.sandbox_id.as_deref()).await?;
        let path = in_sandbox(&a.path);
        let opts = ExecOptions {
            argv: delete_argv(&path),
            ..ExecOptions::default()
        };
        let (report, _, err, approvals) = self.exec(&id, opts, None, track).await?;
        if report.shell_code() != 0 {
            return Err(Fail(format!(
                "deleting {path} in sandbox {id} failed (status {}): {}",
                report.shell_code(),
                err.text().trim()
            )));
        }
        let text = format!("deleted {path}{}", approvals_line(&approvals));
        Ok((
            Deleted {
                path,
                sandbox_id: id.to_string(),
                approvals,
            },
            text,
        ))
    }

    pub(super) async fn list_files(
        &self,
        a: ListFiles,
        track: &Track,
    ) -> Outcome<(Listing, String)> {
        let id = self.sandbox(a.sandbox_id.as_deref()).await?;
        let path = in_sandbox(a.path.as_deref().unwrap_or("/workspace"));
        let opts = ExecOptions {
            argv: list_argv(&path),
            ..ExecOptions::default()
        };
        // Each entry is short: the limit bounds the listing's memory as well.
        let (report, out, err, _) = self.exec(&id, opts, None, track).await?;
        if report.shell_code() != 0 {
            return Err(Fail(format!(
                "listing {path} in sandbox {id} failed (status {}): {}",
                report.shell_code(),
                err.text().trim()
            )));
        }
        let (entries, truncated) = parse_listing(&out.text(), out.truncated());
        let text = render_listing(&path, &entries, truncated);
        Ok((
            Listing {
                path,
                entries,
                truncated,
                sandbox_id: id.to_string(),
            },
            text,
        ))
    }

    pub(super) async fn sandbox_create(&self, _: SandboxCreate) -> Outcome<(SandboxDone, String)> {
        let held = self.make().await?;
        let id = held.id().to_string();
        self.sandboxes.lock().await.push(Sandbox {
            held,
            default: false,
        });
        let text = format!("made sandbox {id}");
        Ok((SandboxDone { sandbox_id: id }, text))
    }

    pub(super) async fn sandbox_destroy(
        &self,
        a: SandboxDestroy,
    ) -> Outcome<(SandboxDone, String)> {
        let held = {
            let mut list = self.sandboxes.lock().await;
            let pos = list
                .iter()
                .position(|s| s.held.id().as_str() == a.sandbox_id)
                .ok_or_else(|| {
                    Fail(format!(
                        "not-found: no sandbox {:?} in this MCP session",
                        a.sandbox_id
                    ))
                })?;
            list.remove(pos).held
        };
        self.shared.untrack(held.id());
        self.front.release(held).await?;
        let text = format!("destroyed sandbox {}", a.sandbox_id);
        Ok((
            SandboxDone {
                sandbox_id: a.sandbox_id,
            },
            text,
        ))
    }

    pub(super) async fn sandbox_list(&self, _: SandboxList) -> Outcome<(Sandboxes, String)> {
        let sandboxes: Vec<SandboxInfo> = self
            .sandboxes
            .lock()
            .await
            .iter()
            .map(|s| SandboxInfo {
                sandbox_id: s.held.id().to_string(),
                default: s.default,
            })
            .collect();
        let text = if sandboxes.is_empty() {
            "no sandboxes yet (the first tool call makes the session's own)".to_owned()
        } else {
            sandboxes
                .iter()
                .map(|s| {
                    format!(
                        "{}{}",
                        s.sandbox_id,
                        if s.default { " (default)" } else { "" }
                    )
                })
                .collect::<Vec<_>>()
                .join("\n")
        };
        Ok((Sandboxes { sandboxes }, text))
    }
}
