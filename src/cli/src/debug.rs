//! `luminaguard debug`: talk to a guest agent directly over its Unix socket.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use luminaguard_core::Config;
use luminaguard_protocol::message::{ExecRequest, ReadFileRequest, WriteFileRequest};
use luminaguard_protocol::{Client, ClientOptions};
use tokio::net::UnixStream;

#[derive(Debug, Args)]
pub struct DebugArgs {
    /// The agent's socket.
    #[arg(long, short = 's', value_name = "PATH")]
    socket: PathBuf,
    /// Deadline for connecting (an agent that is starting is waited for) and for each reply.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Machine-readable output (JSON on stdout).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    op: Op,
}

#[derive(Debug, Subcommand)]
enum Op {
    /// Run a command; its output streams to ours and its exit status becomes ours.
    Exec {
        /// Forward our stdin to the command.
        #[arg(long, short = 'i')]
        stdin: bool,
        /// KEY=VALUE, repeatable.
        #[arg(long = "env", short = 'e', value_name = "KEY=VALUE")]
        env: Vec<String>,
        #[arg(long, value_name = "DIR")]
        cwd: Option<String>,
        /// Kill the command's whole process tree after this long (default: the configured exec timeout).
        #[arg(long = "exec-timeout", value_parser = humantime::parse_duration)]
        exec_timeout: Option<Duration>,
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        argv: Vec<String>,
    },
    /// Copy a guest file to stdout (or to --output).
    Read {
        path: String,
        #[arg(long, short = 'o')]
        output: Option<PathBuf>,
    },
    /// Write stdin (or --input) to a guest file, atomically.
    Write {
        path: String,
        #[arg(long, short = 'i')]
        input: Option<PathBuf>,
        /// Octal permission bits.
        #[arg(long, default_value = "644")]
        mode: String,
        /// Create missing parent directories.
        #[arg(long, short = 'p')]
        parents: bool,
    },
    /// List a guest directory.
    Ls { path: String },
    /// Describe a guest path.
    Stat {
        path: String,
        /// Describe the link itself, not its target.
        #[arg(long)]
        no_follow: bool,
    },
    Mkdir {
        path: String,
        #[arg(long, short = 'p')]
        parents: bool,
    },
    Rm {
        path: String,
        #[arg(long, short = 'r')]
        recursive: bool,
    },
    /// Guest kernel, uptime and memory.
    Info,
    /// Round-trip time to the agent.
    Ping,
    /// Stop the agent (a VM powers off).
    Shutdown,
}

fn print_json<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    outln!("{}", serde_json::to_string(v)?);
    Ok(())
}

#[derive(serde::Serialize)]
struct Listed<'a> {
    name: &'a str,
    kind: String,
    size: u64,
    mode: String,
}

pub async fn run(args: DebugArgs, config: &Config) -> anyhow::Result<ExitCode> {
    let stream = connect(&args.socket, args.timeout).await?;
    let opts = ClientOptions {
        request_timeout: args.timeout,
        handshake_timeout: args.timeout,
        default_exec_timeout: config.defaults.limits.exec_timeout,
        ..Default::default()
    };
    let client = Client::connect(stream, opts)
        .await
        .context("handshake with the agent")?;
    match args.op {
        Op::Exec {
            stdin,
            env,
            cwd,
            exec_timeout,
            argv,
        } => {
            let env = env
                .iter()
                .map(|kv| {
                    kv.split_once('=')
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                        .with_context(|| format!("--env {kv:?} is not KEY=VALUE"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let timeout_ms = exec_timeout.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
            let req = ExecRequest {
                argv,
                env,
                cwd,
                stdin,
                timeout_ms,
                ..Default::default()
            };
            let exec = Raw(client.exec(req).await?);
            crate::stream::exec_streamed(exec, stdin, args.json).await
        }
        Op::Read { path, output } => {
            let req = ReadFileRequest {
                path,
                offset: 0,
                limit: None,
            };
            let n = match output {
                Some(p) => {
                    let mut f = tokio::fs::File::create(&p)
                        .await
                        .with_context(|| format!("creating {}", p.display()))?;
                    client.read_file_to(req, &mut f).await?
                }
                None => client.read_file_to(req, &mut tokio::io::stdout()).await?,
            };
            tracing::debug!(bytes = n, "read");
            Ok(ExitCode::SUCCESS)
        }
        Op::Write {
            path,
            input,
            mode,
            parents,
        } => {
            let mode = u32::from_str_radix(&mode, 8)
                .with_context(|| format!("--mode {mode:?} is not octal"))?;
            let req = WriteFileRequest {
                path,
                mode,
                parents,
            };
            let n = match input {
                Some(p) => {
                    let mut f = tokio::fs::File::open(&p)
                        .await
                        .with_context(|| format!("opening {}", p.display()))?;
                    client.write_file_from(req, &mut f).await?
                }
                None => client.write_file_from(req, &mut tokio::io::stdin()).await?,
            };
            if args.json {
                print_json(&serde_json::json!({ "bytes": n }))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Op::Ls { path } => {
            let (entries, truncated) = client.list_dir(&path).await?;
            if args.json {
                let listed: Vec<_> = entries
                    .iter()
                    .map(|e| Listed {
                        name: &e.name,
                        kind: format!("{:?}", e.kind).to_lowercase(),
                        size: e.size,
                        mode: format!("{:o}", e.mode),
                    })
                    .collect();
                print_json(&serde_json::json!({ "entries": listed, "truncated": truncated }))?;
            } else {
                for e in &entries {
                    outln!(
                        "{:>4o} {:>10} {:<7} {}",
                        e.mode,
                        e.size,
                        format!("{:?}", e.kind).to_lowercase(),
                        e.name
                    );
                }
                if truncated {
                    eprintln!("(listing truncated)");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Op::Stat { path, no_follow } => {
            let st = client.stat(&path, !no_follow).await?;
            if args.json {
                print_json(&serde_json::json!({
                    "kind": format!("{:?}", st.kind).to_lowercase(), "size": st.size, "mode": format!("{:o}", st.mode),
                    "uid": st.uid, "gid": st.gid, "mtime_unix_ms": st.mtime_unix_ms, "symlink_target": st.symlink_target,
                }))?;
            } else {
                outln!(
                    "{path}: {:?}, {} bytes, mode {:o}, uid {}, gid {}",
                    st.kind,
                    st.size,
                    st.mode,
                    st.uid,
                    st.gid
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Op::Mkdir { path, parents } => {
            client.mkdir(&path, 0o755, parents).await?;
            Ok(ExitCode::SUCCESS)
        }
        Op::Rm { path, recursive } => {
            client.remove(&path, recursive).await?;
            Ok(ExitCode::SUCCESS)
        }
        Op::Info => {
            let i = client.info().await?;
            if args.json {
                print_json(&serde_json::json!({
                    "agent_version": i.agent_version, "kernel_release": i.kernel_release, "hostname": i.hostname,
                    "pid": i.pid, "is_pid1": i.is_pid1, "uptime_ms": i.uptime_ms, "mem_total_bytes": i.mem_total_bytes,
                    "mem_available_bytes": i.mem_available_bytes, "cpus": i.cpus, "protocol_version": client.peer().version,
                }))?;
            } else {
                outln!(
                    "agent {} (protocol {}), pid {}{}",
                    i.agent_version,
                    client.peer().version,
                    i.pid,
                    if i.is_pid1 { " (init)" } else { "" }
                );
                outln!(
                    "kernel {} on {}, {} cpus, up {:.1}s",
                    i.kernel_release,
                    i.hostname,
                    i.cpus,
                    i.uptime_ms as f64 / 1000.0
                );
                outln!(
                    "memory {} MiB available of {} MiB",
                    i.mem_available_bytes >> 20,
                    i.mem_total_bytes >> 20
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Op::Ping => {
            let rtt = client.ping().await?;
            if args.json {
                print_json(&serde_json::json!({ "rtt_us": rtt.as_micros() }))?;
            } else {
                outln!("pong in {rtt:?}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Op::Shutdown => {
            client.shutdown().await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Connects, waiting up to `timeout` for an agent that is still starting (socket not created or
/// not accepting yet). Any other error is immediate.
async fn connect(path: &std::path::Path, timeout: Duration) -> anyhow::Result<UnixStream> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match UnixStream::connect(path).await {
            Ok(s) => return Ok(s),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                ) && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!(
                        "connecting to {} (waited up to {timeout:?})",
                        path.display()
                    )
                });
            }
        }
    }
}

/// An exec straight from an agent, rendered like one through the service.
struct Raw(luminaguard_protocol::ExecStream);

impl crate::stream::Running for Raw {
    async fn next(&mut self) -> anyhow::Result<Option<luminaguard_service::ExecOutput>> {
        use luminaguard_protocol::ExecEvent;
        use luminaguard_service::{ExecOutput, ExitReport};
        Ok(self.0.next().await?.map(|e| match e {
            ExecEvent::Started { pid } => ExecOutput::Started { pid },
            ExecEvent::Stdout(b) => ExecOutput::Stdout(b),
            ExecEvent::Stderr(b) => ExecOutput::Stderr(b),
            ExecEvent::Exited(s) => ExecOutput::Exit(ExitReport::from(&s)),
        }))
    }
    async fn write_stdin(&mut self, data: &[u8]) -> anyhow::Result<()> {
        Ok(self.0.write_stdin(data).await?)
    }
    async fn close_stdin(&mut self) -> anyhow::Result<()> {
        Ok(self.0.close_stdin().await?)
    }
}
