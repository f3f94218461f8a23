//! `luminaguard sandbox create|exec|cp|ls|rm`: sandboxes that live across several commands.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use luminaguard_backend::copy::{CopyError, CopyOptions, TerminationSignals};
use luminaguard_core::{ByteSize, Config, SandboxId};
use luminaguard_service::ExecOptions;

use crate::front::Front;
use crate::run::SandboxArgs;

#[derive(Debug, Subcommand)]
pub enum SandboxCommand {
    /// Create a sandbox that lives until `rm` or the end of its lifetime; prints its id.
    Create(CreateArgs),
    /// Run a command in a sandbox, streaming stdio; exits with the command's status.
    Exec(ExecArgs),
    /// Copy a regular file in or out: `cp FILE ID:/path` or `cp ID:/path FILE` (into a
    /// directory: under its own name). Never through a symbolic link on the host; bounded in
    /// size; all or nothing.
    Cp(CpArgs),
    /// Show the system calls the sandbox's seccomp policy denied (bounded record).
    Audit {
        id: SandboxId,
        #[arg(long)]
        json: bool,
    },
    /// List sandboxes: id, backend, age, state.
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Destroy sandboxes: every process, cgroup and file they have.
    Rm {
        #[arg(required = true)]
        ids: Vec<SandboxId>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    #[command(flatten)]
    sandbox: SandboxArgs,
    /// The sandbox's id (letters, digits, '-', '_'; default: generated).
    #[arg(long)]
    name: Option<SandboxId>,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    id: SandboxId,
    /// Kill the command's whole process tree after this long (default: the sandbox's own, as
    /// created).
    #[arg(long, value_parser = humantime::parse_duration)]
    timeout: Option<Duration>,
    /// Working directory inside the sandbox.
    #[arg(long, default_value = "/workspace")]
    cwd: String,
    /// Environment variable for the command (repeatable).
    #[arg(long = "env", short = 'e', value_name = "NAME=VALUE", value_parser = parse_env)]
    env: Vec<(String, String)>,
    /// Print the exit status as one JSON line on stderr.
    #[arg(long)]
    json: bool,
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    argv: Vec<String>,
}

#[derive(Debug, Args)]
pub struct CpArgs {
    /// Refuse a file larger than this, e.g. 64M (default: copy.max_size in the configuration,
    /// 1G).
    #[arg(long, value_name = "SIZE")]
    max_size: Option<ByteSize>,
    src: String,
    dst: String,
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not NAME=VALUE"))?;
    if k.is_empty() || k.contains('\0') || v.contains('\0') {
        return Err(format!("{s:?} is not a valid environment variable"));
    }
    Ok((k.to_owned(), v.to_owned()))
}

pub async fn run(cmd: SandboxCommand, front: &Front, config: &Config) -> anyhow::Result<ExitCode> {
    match cmd {
        SandboxCommand::Create(args) => create(args, front).await,
        SandboxCommand::Exec(args) => exec(args, front).await,
        SandboxCommand::Cp(args) => copy(args, front, config).await,
        SandboxCommand::Audit { id, json } => {
            let audit = front.audit(&id).await?;
            if json {
                outln!("{}", serde_json::to_string(&audit)?);
            } else {
                if !audit.enabled {
                    outln!("no seccomp audit in this sandbox");
                }
                for d in &audit.recent {
                    outln!(
                        "{} pid {} ({}) {} arg0={:#x}",
                        d.unix_ms,
                        d.pid,
                        d.comm,
                        d.syscall,
                        d.arg0
                    );
                }
                if audit.dropped > 0 {
                    outln!("({} older denials not kept in detail)", audit.dropped);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        SandboxCommand::Ls { json } => {
            let list = front.list().await?;
            if json {
                outln!("{}", serde_json::to_string(&list)?);
            } else {
                outln!(
                    "{:<24} {:<8} {:>10} {:<9} EXPIRES IN",
                    "ID",
                    "BACKEND",
                    "AGE",
                    "STATE"
                );
                for s in list {
                    let expires = s.expires_in_ms.map_or_else(|| "-".into(), short_duration);
                    let backend = match &s.accel {
                        Some(accel) => format!("{}/{accel}", s.backend),
                        None => s.backend.clone(),
                    };
                    // A pool's ready sandbox says which pool it waits in.
                    let state = match &s.pool {
                        Some(_) => "pooled".to_owned(),
                        None => s.state.clone(),
                    };
                    outln!(
                        "{:<24} {:<8} {:>10} {:<9} {expires}",
                        s.id,
                        backend,
                        short_duration(s.age_ms),
                        state
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        SandboxCommand::Rm { ids, json } => {
            let mut failed = false;
            let mut removed = Vec::new();
            for id in ids {
                match front.destroy(&id).await {
                    Ok(()) => removed.push(id.to_string()),
                    Err(e) => {
                        failed = true;
                        eprintln!("luminaguard: {e}");
                    }
                }
            }
            if json {
                outln!("{}", serde_json::json!({ "removed": removed }));
            }
            Ok(if failed {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}

async fn create(args: CreateArgs, front: &Front) -> anyhow::Result<ExitCode> {
    let sandbox = front
        .create(args.sandbox.options(args.name, true))
        .await
        .context("creating the sandbox")?;
    let line = if args.json {
        serde_json::json!({
            "id": sandbox.id(),
            "backend": sandbox.backend(),
            "expires_unix_ms": sandbox.expires_unix_ms(),
        })
        .to_string()
    } else {
        sandbox.id()
    };
    // The caller learns the id first; only then does the sandbox outlive this command. Killed
    // (or unable to say the id) before that, it leaves nothing running.
    let printed = {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        writeln!(out, "{line}").and_then(|()| out.flush())
    };
    if let Err(e) = printed {
        let _ = sandbox.discard().await;
        return Err(anyhow::Error::from(e)
            .context("printing the new sandbox's id (the sandbox was removed)"));
    }
    sandbox.commit().await.context("handing the sandbox over")?;
    Ok(ExitCode::SUCCESS)
}

async fn exec(args: ExecArgs, front: &Front) -> anyhow::Result<ExitCode> {
    let opts = ExecOptions {
        argv: args.argv,
        env: args.env,
        cwd: Some(args.cwd),
        timeout: args.timeout,
        stdin: true,
    };
    let exec = front.exec(&args.id, opts).await?;
    crate::stream::exec_streamed(exec, true, args.json).await
}

/// One side of `cp`: a host path, or `ID:/absolute/path` inside a sandbox.
#[derive(Debug, PartialEq, Eq)]
enum Location {
    Host(PathBuf),
    Sandbox(SandboxId, String),
}

fn location(arg: &str) -> Location {
    if let Some((id, path)) = arg.split_once(':')
        && let (Ok(id), true) = (id.parse::<SandboxId>(), path.starts_with('/'))
    {
        return Location::Sandbox(id, path.to_owned());
    }
    Location::Host(PathBuf::from(arg))
}

/// `cp`: parses the two sides and hands the copy to [`luminaguard_backend::copy`], which does
/// every check. SIGINT, SIGTERM and SIGHUP are caught from the start, so an interrupted copy
/// removes what it began; the exit status is then 128 + the signal's number.
async fn copy(args: CpArgs, front: &Front, config: &Config) -> anyhow::Result<ExitCode> {
    let mut signals =
        TerminationSignals::install().context("catching SIGINT, SIGTERM and SIGHUP")?;
    let opts = CopyOptions {
        max_size: args.max_size.unwrap_or(config.copy.max_size),
    };
    let copied = match (location(&args.src), location(&args.dst)) {
        (Location::Host(src), Location::Sandbox(id, dst)) => {
            front.copy_in(&id, &src, &dst, opts, signals.recv()).await
        }
        (Location::Sandbox(id, src), Location::Host(dst)) => {
            front.copy_out(&id, &src, &dst, opts, signals.recv()).await
        }
        _ => bail!("one side of cp must be a host path and the other ID:/path in a sandbox"),
    };
    match copied {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) if e.signal().is_some() => interrupted(e),
        Err(e) => Err(e.into()),
    }
}

/// Reports a copy cut short by a signal; exits with 128 + its number, as the shell would.
fn interrupted(e: CopyError) -> anyhow::Result<ExitCode> {
    eprintln!("luminaguard: {e}");
    let code = e.signal().map_or(1, |s| 128 + s as i32);
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}

fn short_duration(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{}s", s / 60, s % 60),
        _ => format!("{}h{}m", s / 3600, s % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn cp_locations() {
        assert_eq!(
            location("sb-1:/workspace/x"),
            Location::Sandbox("sb-1".parse().unwrap(), "/workspace/x".into())
        );
        // Not an id, or not an absolute path inside: a host path with a colon.
        assert_eq!(location("a/b:/c"), Location::Host("a/b:/c".into()));
        assert_eq!(location("sb-1:rel"), Location::Host("sb-1:rel".into()));
        assert_eq!(location("./x"), Location::Host("./x".into()));
    }

    #[test]
    fn env_pairs() {
        assert_eq!(parse_env("A=b=c").unwrap(), ("A".into(), "b=c".into()));
        assert!(parse_env("novalue").is_err());
        assert!(parse_env("=x").is_err());
    }
}
