//! Running the network tools (`ip`, `nft`, `sysctl`) asynchronously, in a chosen network
//! namespace, with their error output carried into our errors.

use std::process::Stdio;

use tokio::io::AsyncWriteExt;

/// A network namespace a command runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Netns<'a> {
    /// The caller's own (for LuminaGuard: the host's).
    Current,
    /// A named namespace, `/run/netns/<name>` (as `ip netns add` creates them).
    Named(&'a str),
}

impl<'a> Netns<'a> {
    pub fn from_option(name: Option<&'a str>) -> Self {
        name.map_or(Self::Current, Self::Named)
    }

    /// How the namespace reads in messages.
    pub fn describe(self) -> String {
        match self {
            Self::Current => "the host's network namespace".to_owned(),
            Self::Named(n) => format!("network namespace {n}"),
        }
    }
}

/// Why a command did not do its job.
#[derive(Debug, thiserror::Error)]
pub enum CmdError {
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: &'static str,
        source: std::io::Error,
    },
    #[error("{command} failed: {message}")]
    Failed { command: String, message: String },
}

/// Runs `program args…` in `netns` (through `ip netns exec` for a named one; `ip` itself takes
/// `-n`), feeding it `stdin`; returns its standard output.
pub async fn run(
    netns: Netns<'_>,
    program: &'static str,
    args: &[&str],
    stdin: Option<&str>,
) -> Result<Vec<u8>, CmdError> {
    let mut cmd = match (netns, program) {
        (Netns::Current, _) => tokio::process::Command::new(program),
        (Netns::Named(ns), "ip") => {
            let mut c = tokio::process::Command::new("ip");
            c.args(["-n", ns]);
            c
        }
        (Netns::Named(ns), _) => {
            let mut c = tokio::process::Command::new("ip");
            c.args(["netns", "exec", ns, program]);
            c
        }
    };
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let spawn = |source| CmdError::Spawn { program, source };
    let mut child = cmd.spawn().map_err(spawn)?;
    if let (Some(mut pipe), Some(input)) = (child.stdin.take(), stdin) {
        pipe.write_all(input.as_bytes()).await.map_err(spawn)?;
    }
    let out = child.wait_with_output().await.map_err(spawn)?;
    if out.status.success() {
        return Ok(out.stdout);
    }
    let mut command = format!("{program} {}", args.join(" "));
    if let Netns::Named(ns) = netns {
        command.push_str(&format!(" (in network namespace {ns})"));
    }
    Err(CmdError::Failed {
        command,
        message: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
    })
}
