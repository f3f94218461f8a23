//! Steps 3 to 7 (API socket, configuration, `InstanceStart`, the agent), and what every step
//! shares: racing Firecracker's exit, explaining a failure, tearing down.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use luminaguard_protocol::{AGENT_READY_VSOCK_PORT, AGENT_VSOCK_PORT, Client};
use luminaguard_vsock::Backoff;

use super::process::api_path;
use super::types::*;
use crate::client::{ApiClient, ApiError};
use crate::jailer::{Jail, names};
use crate::models::{
    ActionType, BootSource, Drive, EntropyDevice, Logger, Metrics, NetworkInterface, Vsock,
};
use crate::vmm::Vmm;

/// How much of Firecracker's stderr (or the console) an error quotes.
const STDERR_TAIL: u64 = 2048;
/// After an API request fails on a closed connection, how long to wait for the VMM's exit to
/// be seen before reporting the request's own error.
const EXIT_GRACE: Duration = Duration::from_millis(200);
/// How long teardown waits for a killed VMM to exit.
const REAP_TIMEOUT: Duration = Duration::from_secs(5);

/// What steps 3 to 7 produce.
pub(crate) type Ready = (ApiClient, Client, LaunchTimings);

/// The last `max` bytes of a file, lossily decoded (empty when it cannot be read).
pub async fn tail(path: &Path, max: u64) -> String {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let read = async {
        let mut f = tokio::fs::File::open(path).await?;
        let len = f.metadata().await?.len();
        f.seek(std::io::SeekFrom::Start(len.saturating_sub(max)))
            .await?;
        let mut buf = Vec::new();
        f.take(max).read_to_end(&mut buf).await?;
        Ok::<_, std::io::Error>(buf)
    };
    read.await
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// Runs `fut` unless Firecracker exits first.
pub(crate) async fn racing<T>(
    vmm: &mut Vmm,
    step: Step,
    fut: impl Future<Output = Result<T, Cause>>,
) -> Result<T, (Step, Cause)> {
    let pid = vmm.pid();
    tokio::select! {
        r = fut => r.map_err(|cause| (step, cause)),
        status = vmm.wait() => Err((step, Cause::Exited {
            pid,
            status,
            stderr: String::new(),
            while_doing: None,
        })),
    }
}

/// Connects to the API socket once it accepts connections, polling (1 ms doubling to 20 ms)
/// until `limit`. Firecracker gives no other sign that its API is up.
pub(crate) async fn connect_api(
    socket: &Path,
    limit: Duration,
    request: Duration,
) -> Result<ApiClient, Cause> {
    let start = Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        let last = match ApiClient::connect(socket, request).await {
            Ok(api) => return Ok(api),
            Err(ApiError::Connect { source, .. })
                if matches!(
                    source.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                ) =>
            {
                source.to_string()
            }
            Err(e) => return Err(Cause::Api(e)),
        };
        if start.elapsed() >= limit {
            return Err(Cause::NoApiSocket {
                socket: socket.to_owned(),
                after: limit,
                last,
            });
        }
        tokio::time::sleep(pause.min(limit.saturating_sub(start.elapsed()))).await;
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// The path Firecracker is given for a shared file: in jailer mode its name in the chroot
/// (where it was linked), else the host path.
fn shared(cfg: &LaunchConfig, host: &Path, name: &str) -> PathBuf {
    if cfg.jailer.is_some() {
        api_path(name)
    } else {
        host.to_owned()
    }
}

/// Steps 3 to 7 of a fresh boot.
pub(super) async fn run(
    cfg: &LaunchConfig,
    files: &VmFiles,
    vmm: &mut Vmm,
    t0: Instant,
) -> Result<Ready, (Step, Cause)> {
    let t = cfg.timeouts;
    let api = racing(
        vmm,
        Step::ApiSocket,
        connect_api(&files.api_socket, t.api_socket, t.request),
    )
    .await?;
    let api_ready = t0.elapsed();
    let t_cfg = Instant::now();

    let logger = Logger {
        log_path: Some(api_path(LOG_FILE)),
        level: Some(cfg.log_level),
        show_level: Some(true),
        show_log_origin: Some(false),
        module: None,
    };
    let metrics = Metrics {
        metrics_path: api_path(METRICS_FILE),
    };
    let boot = BootSource {
        kernel_image_path: shared(cfg, &cfg.kernel, names::KERNEL),
        boot_args: Some(cfg.boot_args.clone()),
        initrd_path: cfg.initrd.as_ref().map(|p| shared(cfg, p, names::INITRD)),
    };
    let root = Drive::new(ROOT_DRIVE_ID, shared(cfg, &cfg.rootfs, names::ROOTFS), true);
    let vsock = Vsock {
        guest_cid: GUEST_CID,
        uds_path: api_path(VSOCK_SOCKET),
    };
    let api_step = |r: Result<(), ApiError>| r.map_err(Cause::Api);
    racing(vmm, Step::Logger, async {
        api_step(api.put_logger(&logger).await)
    })
    .await?;
    racing(vmm, Step::Metrics, async {
        api_step(api.put_metrics(&metrics).await)
    })
    .await?;
    racing(vmm, Step::MachineConfig, async {
        api_step(api.put_machine_config(&cfg.machine).await)
    })
    .await?;
    racing(vmm, Step::BootSource, async {
        api_step(api.put_boot_source(&boot).await)
    })
    .await?;
    racing(vmm, Step::RootDrive, async {
        api_step(api.put_drive(&root).await)
    })
    .await?;
    if cfg.scratch.is_some() {
        let drive = Drive::new(SCRATCH_DRIVE_ID, api_path(SCRATCH_FILE), false);
        racing(vmm, Step::ScratchDrive, async {
            api_step(api.put_drive(&drive).await)
        })
        .await?;
    }
    if let Some(net) = &cfg.network {
        let iface = NetworkInterface {
            iface_id: GUEST_IFACE_ID.to_owned(),
            host_dev_name: net.tap.clone(),
            guest_mac: None,
            mtu: None,
            rx_rate_limiter: None,
            tx_rate_limiter: None,
        };
        racing(vmm, Step::NetworkInterface, async {
            api_step(api.put_network_interface(&iface).await)
        })
        .await?;
    }
    racing(vmm, Step::Vsock, async {
        api_step(api.put_vsock(&vsock).await)
    })
    .await?;
    if cfg.entropy {
        racing(vmm, Step::Entropy, async {
            api_step(api.put_entropy(&EntropyDevice::default()).await)
        })
        .await?;
    }
    // Listen for the agent's ready signal before the guest can send it.
    let ready = luminaguard_vsock::listen(&files.vsock, AGENT_READY_VSOCK_PORT)
        .map_err(|e| (Step::ReadyListener, Cause::Listen(e)))?;
    if let Some(who) = &cfg.run_as {
        // Firecracker connects to it as its own user.
        std::os::unix::fs::chown(ready.path(), Some(who.uid), Some(who.gid)).map_err(|source| {
            (
                Step::ReadyListener,
                Cause::Io {
                    what: "chown",
                    path: ready.path().to_owned(),
                    source,
                },
            )
        })?;
    }
    racing(vmm, Step::InstanceStart, async {
        api_step(api.action(ActionType::InstanceStart).await)
    })
    .await?;
    let configure = t_cfg.elapsed();
    let t_boot = Instant::now();
    let agent = wait_for_agent(cfg, files, vmm, Some(ready)).await?;
    let boot = t_boot.elapsed();
    Ok((
        api,
        agent,
        LaunchTimings {
            api_ready,
            configure,
            boot,
            total: t0.elapsed(),
        },
    ))
}

/// Step 7: the agent's ready signal (when `ready` listens for one), `CONNECT 1024` and the
/// handshake, within the boot deadline.
pub(crate) async fn wait_for_agent(
    cfg: &LaunchConfig,
    files: &VmFiles,
    vmm: &mut Vmm,
    ready: Option<luminaguard_vsock::HostListener>,
) -> Result<Client, (Step, Cause)> {
    let t = cfg.timeouts;
    let t_boot = Instant::now();
    racing(vmm, Step::Agent, async {
        let mut waiting_for = if ready.is_some() {
            "the ready signal on vsock port 1025"
        } else {
            "CONNECT 1024 to be answered"
        };
        let attempt = async {
            if let Some(ready) = &ready
                && let Err(e) = ready.accept().await
            {
                return Err(Cause::Listen(e));
            }
            waiting_for = "CONNECT 1024 to be answered";
            let left = t.boot.saturating_sub(t_boot.elapsed());
            let stream = luminaguard_vsock::connect_with_retry(
                &files.vsock,
                AGENT_VSOCK_PORT,
                left,
                Backoff::default(),
            )
            .await
            .map_err(Cause::Dial)?;
            waiting_for = "the protocol handshake";
            Client::connect(stream.into_stream(), cfg.client.clone())
                .await
                .map_err(Cause::Handshake)
        };
        match tokio::time::timeout(t.boot, attempt).await {
            Ok(r) => r,
            Err(_) => Err(Cause::BootTimeout {
                after: t.boot,
                waiting_for,
                console: tail(&files.console, STDERR_TAIL).await,
            }),
        }
    })
    .await
}

/// Turns a failure into its best explanation: if Firecracker has exited (or exits within
/// [`EXIT_GRACE`] of a broken connection), its exit status and stderr, with what was under way.
pub(crate) async fn explain(cause: Cause, vmm: &mut Vmm, files: &VmFiles) -> Cause {
    let (status, while_doing) = match cause {
        Cause::Exited {
            status,
            while_doing,
            ..
        } => (status, while_doing),
        other => {
            let connection_lost = matches!(
                other,
                Cause::Api(ApiError::Transport { .. } | ApiError::Broken { .. })
                    | Cause::Dial(_)
                    | Cause::Handshake(_)
            );
            let exited = if connection_lost {
                tokio::time::timeout(EXIT_GRACE, vmm.wait()).await.ok()
            } else {
                vmm.try_wait()
            };
            match exited {
                Some(status) => (status, Some(other.to_string())),
                None => return other,
            }
        }
    };
    Cause::Exited {
        pid: vmm.pid(),
        status,
        stderr: tail(&files.stderr, STDERR_TAIL).await,
        while_doing,
    }
}

/// Kills Firecracker and waits for it, lets the console keeper finish (or kills it: it must be
/// gone before the jailer's cgroups, which it is in, can be removed), removes the sockets it and
/// we made and, in jailer mode, the chroot and the jailer's cgroups.
pub(crate) async fn teardown(
    vmm: &mut Vmm,
    files: &VmFiles,
    jail: Option<&Jail>,
    console: &mut Option<super::console::ConsoleKeeper>,
) {
    if let Err(e) = vmm.start_kill() {
        tracing::warn!(pid = vmm.pid(), error = %e, "cannot kill firecracker");
    }
    if tokio::time::timeout(REAP_TIMEOUT, vmm.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            pid = vmm.pid(),
            "firecracker did not exit within {REAP_TIMEOUT:?} of SIGKILL"
        );
    }
    if let Some(keeper) = console.take() {
        keeper.stop(super::console::CONSOLE_DRAIN).await;
    }
    for socket in files.sockets() {
        match tokio::fs::remove_file(socket).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(path = %socket.display(), error = %e, "cannot remove socket"),
        }
    }
    if let Some(jail) = jail
        && let Err(e) = jail.remove().await
    {
        tracing::warn!(error = %e, "cannot remove the jail");
    }
}
