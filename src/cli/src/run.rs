//! `luminaguard run`: a disposable sandbox for one command.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use luminaguard_core::network::EgressRule;
use luminaguard_core::{BackendChoice, ByteSize, ReadOnlyMount, SandboxId};
use luminaguard_service::{CreateOptions, ExecOptions};

use crate::front::Front;

/// Settings shared by every command that creates a sandbox.
#[derive(Debug, Args)]
pub struct SandboxArgs {
    /// Host directory mounted read-write at /workspace (default: an empty tmpfs). Never `/`, a
    /// system directory (or inside or above one), a shared one like /tmp or /home, or
    /// LuminaGuard's own state (docs/configuration.md#workspaces).
    #[arg(long, value_name = "DIR")]
    pub workspace: Option<PathBuf>,
    /// Show host directory or file HOST read-only at AT in the sandbox (repeatable; process
    /// backend only). Never a file the sandbox masks (/etc/shadow, …) or LuminaGuard's state;
    /// AT is not /, not at or inside /proc, /sys, /dev, /workspace or the system directories
    /// (/usr, /bin, /sbin, /lib*, /etc), nor inside another mount (docs/process-sandbox.md).
    #[arg(long = "mount", value_name = "HOST:AT")]
    pub mounts: Vec<ReadOnlyMount>,
    /// Memory limit (no swap), e.g. 512M.
    #[arg(long)]
    pub memory: Option<ByteSize>,
    /// Most processes/threads at once.
    #[arg(long)]
    pub pids: Option<u32>,
    /// CPU quota in whole CPUs.
    #[arg(long)]
    pub cpus: Option<u32>,
    /// Default per-command timeout: the command's whole process tree is killed after this long.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub timeout: Option<Duration>,
    /// The sandbox is destroyed this long after it starts, whatever it is doing.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub lifetime: Option<Duration>,
    /// Run WITHOUT memory, PID and CPU limits (e.g. rootless where no cgroup is delegated).
    #[arg(long)]
    pub no_cgroup: bool,
    /// Which backend runs the sandbox: auto, process, qemu, firecracker (overrides the
    /// configuration).
    #[arg(long, value_name = "BACKEND")]
    pub backend: Option<BackendChoice>,
    /// Guest image for a microVM backend: a digest or a unique prefix of at least 8 hex digits
    /// (default: the newest image in the store).
    #[arg(long, value_name = "DIGEST")]
    pub image: Option<String>,
    /// Restore the sandbox from template NAME (`luminaguard template create`) instead of
    /// booting it: Firecracker only; the settings must be the template's.
    #[arg(long, value_name = "NAME")]
    pub template: Option<String>,
    /// Allow outbound connections to DEST (repeatable): an address or CIDR (any port, any
    /// protocol), ADDR:PORT (that TCP/UDP port), or a domain — NAME, NAME:PORT, or *.NAME for
    /// its subdomains — resolved by the sandbox's own DNS-pinning resolver, which lets through
    /// only the addresses it answered. Without --net the sandbox has no network at all.
    /// Private, loopback, link-local and cloud-metadata addresses and the host's own stay
    /// unreachable unless a --net entry lies inside them. Needs root.
    #[arg(long = "net", value_name = "DEST")]
    pub net_allow: Vec<EgressRule>,
    /// Never allow DEST (an address, CIDR, ADDR:PORT or domain, as for --net), whatever --net
    /// allows (repeatable).
    #[arg(long = "net-deny", value_name = "DEST", requires = "net_allow")]
    pub net_deny: Vec<EgressRule>,
    /// Take a ready sandbox from the daemon's warm pool NAME (`[pools.NAME]` in its
    /// configuration): at once, with the pool's settings. Other settings given must be the
    /// pool's. Needs a running daemon.
    #[arg(long, value_name = "NAME")]
    pub pool: Option<String>,
}

impl SandboxArgs {
    /// What these flags ask the service for.
    pub fn options(&self, id: Option<SandboxId>, persistent: bool) -> CreateOptions {
        if self.no_cgroup {
            eprintln!(
                "luminaguard: WARNING: --no-cgroup: this sandbox has no memory, PID or CPU limits"
            );
        }
        CreateOptions {
            id,
            persistent,
            workspace: self.workspace.clone(),
            // Relative host paths are the caller's: made absolute here, where the caller's
            // directory is known (a daemon's would not be).
            mounts: self
                .mounts
                .iter()
                .map(|m| ReadOnlyMount {
                    host: std::path::absolute(&m.host).unwrap_or_else(|_| m.host.clone()),
                    at: m.at.clone(),
                })
                .collect(),
            memory: self.memory,
            pids: self.pids,
            cpus: self.cpus,
            timeout: self.timeout,
            lifetime: self.lifetime,
            no_cgroup: self.no_cgroup,
            backend: self.backend,
            image: self.image.clone(),
            template: self.template.clone(),
            net_allow: self.net_allow.clone(),
            net_deny: self.net_deny.clone(),
            pool: self.pool.clone(),
            review: false,
        }
    }
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    sandbox: SandboxArgs,
    /// Print the exit status as one JSON line on stderr.
    #[arg(long)]
    json: bool,
    /// Run speculatively: the command sees the workspace as an overlay and changes nothing
    /// real; then its Diff Card (what it added, changed and deleted, with diffs) is shown, and
    /// the changes are applied only once approved: at the terminal, or — when the daemon runs
    /// it — with `luminaguard approvals approve ID` (or the console), whichever comes first.
    /// Unanswered before `review.card_expiry`, or with nobody to ask: nothing is applied.
    /// Needs --workspace; no network and no stdin during the run; the process or qemu backend
    /// (a microVM gets a copy of the workspace, and its changes are brought back for the card).
    #[arg(long, requires = "workspace")]
    pub review: bool,
    /// The command and its arguments.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    argv: Vec<String>,
}

impl RunArgs {
    /// A command the policy asks about, run on a workspace, becomes a review: it runs against
    /// an overlay and its changes wait for a person's approval (the service refuses what the
    /// policy denies, whichever way it comes).
    pub fn route_by_policy(&mut self, config: &luminaguard_core::Config) -> anyhow::Result<()> {
        if self.review || self.sandbox.workspace.is_none() {
            return Ok(());
        }
        let policy = luminaguard_policy::Policy::load(&config.policy)?;
        let decision = policy.decide(&luminaguard_policy::Action::exec(&self.argv));
        if decision.verdict == luminaguard_policy::Verdict::Ask {
            eprintln!(
                "luminaguard: the policy asks about this command ({decision}): it runs as a review"
            );
            self.review = true;
        }
        Ok(())
    }
}

pub async fn run(args: RunArgs, front: &Front) -> anyhow::Result<ExitCode> {
    if args.review {
        let mut create = args.sandbox.options(None, false);
        create.review = true;
        return crate::review::run(create, args.argv, args.json, front).await;
    }
    let opts = ExecOptions {
        argv: args.argv,
        stdin: true,
        ..ExecOptions::default()
    };
    let (id, exec) = front.run(args.sandbox.options(None, false), opts).await?;
    let result = match exec {
        Ok(mut exec) => {
            let status = crate::stream::exec_streamed(&mut exec, true, args.json).await;
            // Through the daemon: the response ends once the run's sandbox is gone.
            exec.finish().await;
            status
        }
        Err(e) => Err(e.into()),
    };
    if let Err(e) = front.finish_run(id).await {
        eprintln!("luminaguard: cleanup: {e}");
    }
    result
}
