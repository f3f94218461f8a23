//! VM init: the agent as the kernel's `/init` in a LuminaGuard guest image (`docs/images.md`).
//!
//! The kernel unpacks the image's initramfs and starts `/init` (this binary) as PID 1 with no
//! arguments of ours. VM init then:
//!
//! 1. mounts `/proc`, `/sys` and `/dev` (devtmpfs) in the initramfs;
//! 2. reads `luminaguard.*` keys from `/proc/cmdline` ([`parse_cmdline`]) and the image's
//!    [`GUEST_CONFIG`] ([`GuestConfig`]);
//! 3. loads the kernel modules it lists, in order (`finit_module`), and — when the command line
//!    has `luminaguard.net=ADDR/PREFIX,GATEWAY` (a sandbox with an egress policy) — configures
//!    the NIC `virtio_net` bound ([`crate::guest_net`]); with `luminaguard.dns=IP` (a policy
//!    naming domains), `/etc/resolv.conf` names the sandbox's resolver once the root is up;
//! 4. waits for the root device and mounts it read-only;
//! 5. mounts a tmpfs of `luminaguard.scratch_mb` MiB holding the upper and work directories of
//!    an overlayfs over the read-only root: the guest's writable view, discarded with the VM;
//! 6. moves `/proc`, `/sys`, `/dev` into the overlay and makes it `/` (the `switch_root`
//!    technique: `MS_MOVE` onto `/`, then `chroot`; an initramfs cannot be `pivot_root`ed);
//! 7. serves the host protocol on `vsock:`[`AGENT_VSOCK_PORT`] as PID 1.
//!
//! Any failure prints one line naming the step on the console (stderr is `/dev/console`) and
//! powers the VM off: it never hangs and never returns (PID 1 returning panics the kernel).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use luminaguard_protocol::AGENT_VSOCK_PORT;
use nix::mount::{MsFlags, mount};
use serde::Deserialize;

use crate::guest_net::{self, GuestNet, GuestNetError};
use crate::{AgentArgs, ListenAddr, OnExit};

/// The image's description of the guest, written into the initramfs by the image builder.
pub const GUEST_CONFIG: &str = "/etc/luminaguard/guest.json";
/// Scratch (writable layer) size when the command line does not say.
pub const DEFAULT_SCRATCH_MB: u64 = 256;
/// The largest scratch size accepted (1 TiB): a bound, not a recommendation.
pub const MAX_SCRATCH_MB: u64 = 1 << 20;
/// The largest `luminaguard.pids` (the kernel's own ceiling, `PID_MAX_LIMIT`).
pub const MAX_PIDS: u32 = 4 << 20;
/// The cgroup every command starts in when `luminaguard.pids` is given.
pub const COMMANDS_CGROUP: &str = "/sys/fs/cgroup/commands";
/// How long to wait for the root device to appear after its driver is loaded.
pub const ROOT_DEVICE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where VM init mounts things inside the initramfs; the image builder creates these
/// directories (VM init also creates them when missing).
pub const LOWER_DIR: &str = "/run/luminaguard/lower";
/// The scratch tmpfs (holds `upper/` and `work/`).
pub const SCRATCH_DIR: &str = "/run/luminaguard/scratch";
/// The overlay that becomes `/`.
pub const NEW_ROOT_DIR: &str = "/run/luminaguard/root";

/// `PATH` for the agent and what it runs (the kernel starts init with none).
const GUEST_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Upper bound on the size of [`GUEST_CONFIG`] and `/proc/cmdline` read.
const MAX_CONFIG_LEN: u64 = 1 << 20;

/// Why VM init failed. Each message names the step.
#[derive(Debug, thiserror::Error)]
pub enum VmInitError {
    /// Mounting a filesystem failed.
    #[error("step {step}: mounting {fstype} {source_name} on {target}: {errno}")]
    Mount {
        step: &'static str,
        fstype: String,
        source_name: String,
        target: String,
        errno: nix::Error,
    },
    /// A file-system operation failed.
    #[error("step {step}: {op} {path}: {source}")]
    Io {
        step: &'static str,
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// The kernel command line holds an invalid `luminaguard.*` value.
    #[error("step read kernel command line: {0}")]
    Cmdline(#[from] CmdlineError),
    /// The guest configuration is invalid.
    #[error("step read {GUEST_CONFIG}: {0}")]
    Config(String),
    /// A kernel module could not be loaded.
    #[error("step load modules: loading {path}: {errno}")]
    Module { path: PathBuf, errno: nix::Error },
    /// The root device did not appear.
    #[error("step mount root: device {device} did not appear within {waited:.1?}")]
    NoRootDevice { device: String, waited: Duration },
    /// Switching to the new root failed.
    #[error("step switch root: {op} {path}: {errno}")]
    SwitchRoot {
        op: &'static str,
        path: String,
        errno: nix::Error,
    },
    /// The network interface could not be configured.
    #[error("step configure network: {0}")]
    Network(#[from] GuestNetError),
    /// The agent could not start or failed.
    #[error("step serve: {0}")]
    Agent(#[from] crate::AgentError),
}

/// Why a `luminaguard.*` kernel parameter was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CmdlineError {
    /// A value is not a number in range.
    #[error("luminaguard.{key}={value:?} is invalid: {reason}")]
    BadValue {
        key: &'static str,
        value: String,
        reason: String,
    },
}

/// What the kernel command line tells VM init.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootParams {
    /// Size of the writable scratch layer, MiB (`luminaguard.scratch_mb`).
    pub scratch_mb: u64,
    /// The NIC's configuration (`luminaguard.net`); `None`: no network.
    pub net: Option<GuestNet>,
    /// The sandbox's resolver (`luminaguard.dns`), written into `/etc/resolv.conf`; `None`: the
    /// image's own file is left alone.
    pub dns: Option<std::net::Ipv4Addr>,
    /// The most processes (and threads) the guest's commands may have at once
    /// (`luminaguard.pids`): a pids cgroup every command starts in. `None`: no limit.
    pub pids: Option<u32>,
    /// `luminaguard.*` keys this version does not know (ignored, reported).
    pub unknown: Vec<String>,
}

impl Default for BootParams {
    fn default() -> Self {
        Self {
            scratch_mb: DEFAULT_SCRATCH_MB,
            net: None,
            dns: None,
            pids: None,
            unknown: Vec::new(),
        }
    }
}

/// Splits a kernel command line into parameters the way the kernel does (`lib/cmdline.c`
/// `next_arg`): whitespace separates them except inside double quotes, and the quotes are
/// removed. Everything after a lone `--` belongs to init's argv and is not returned.
pub fn split_cmdline(cmdline: &str) -> Vec<(String, Option<String>)> {
    let mut params = Vec::new();
    let mut chars = cmdline.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_ascii_whitespace()).is_some() {}
        if chars.peek().is_none() {
            break;
        }
        let mut word = String::new();
        let mut in_quote = false;
        while let Some(c) = chars.next_if(|c| in_quote || !c.is_ascii_whitespace()) {
            if c == '"' {
                in_quote = !in_quote;
            } else {
                word.push(c);
            }
        }
        if word == "--" {
            break;
        }
        match word.split_once('=') {
            Some((key, value)) => params.push((key.to_owned(), Some(value.to_owned()))),
            None => params.push((word, None)),
        }
    }
    params
}

/// Reads the `luminaguard.*` parameters of a kernel command line. A key given twice takes the
/// last value (as the kernel does for its own parameters); unknown `luminaguard.*` keys are
/// collected in [`BootParams::unknown`]; other parameters are not ours and are ignored.
pub fn parse_cmdline(cmdline: &str) -> Result<BootParams, CmdlineError> {
    let mut params = BootParams::default();
    for (key, value) in split_cmdline(cmdline) {
        let Some(name) = key.strip_prefix("luminaguard.") else {
            continue;
        };
        // Module-parameter style names compare with '-' equal to '_', as the kernel does.
        match name.replace('-', "_").as_str() {
            "scratch_mb" => {
                let value = value.unwrap_or_default();
                let bad = |reason: String| CmdlineError::BadValue {
                    key: "scratch_mb",
                    value: value.chars().take(64).collect(),
                    reason,
                };
                let mb = if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
                    Err(bad("not a decimal number".to_owned()))
                } else {
                    value
                        .parse::<u64>()
                        .map_err(|_| bad(format!("more than {MAX_SCRATCH_MB}")))
                }?;
                if !(1..=MAX_SCRATCH_MB).contains(&mb) {
                    return Err(bad(format!("must be 1 to {MAX_SCRATCH_MB} (MiB)")));
                }
                params.scratch_mb = mb;
            }
            "net" => {
                let value = value.unwrap_or_default();
                let net = value
                    .parse::<GuestNet>()
                    .map_err(|e| CmdlineError::BadValue {
                        key: "net",
                        value: value.chars().take(64).collect(),
                        reason: e.to_string(),
                    })?;
                params.net = Some(net);
            }
            "dns" => {
                let value = value.unwrap_or_default();
                let addr = value.parse().map_err(|_| CmdlineError::BadValue {
                    key: "dns",
                    value: value.chars().take(64).collect(),
                    reason: "not an IPv4 address".to_owned(),
                })?;
                params.dns = Some(addr);
            }
            "pids" => {
                let value = value.unwrap_or_default();
                let pids = value
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (1..=MAX_PIDS).contains(n))
                    .ok_or_else(|| CmdlineError::BadValue {
                        key: "pids",
                        value: value.chars().take(64).collect(),
                        reason: format!("must be a number from 1 to {MAX_PIDS}"),
                    })?;
                params.pids = Some(pids);
            }
            _ => params.unknown.push(key.chars().take(64).collect()),
        }
    }
    Ok(params)
}

/// The image's description of the guest ([`GUEST_CONFIG`]).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct GuestConfig {
    /// Kernel modules to load, absolute paths inside the initramfs, in load order.
    pub modules: Vec<PathBuf>,
    /// The read-only root filesystem.
    pub root: RootConfig,
}

/// The read-only root filesystem of [`GuestConfig`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RootConfig {
    /// Its block device, e.g. `/dev/vda`.
    pub device: String,
    /// Its filesystem type, e.g. `ext4`.
    pub fstype: String,
}

impl GuestConfig {
    /// Parses and checks a guest configuration.
    pub fn from_json(bytes: &[u8]) -> Result<Self, String> {
        let cfg: GuestConfig = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if let Some(m) = cfg
            .modules
            .iter()
            .find(|m| !m.is_absolute() || m.as_os_str().len() > 4096)
        {
            return Err(format!("module path {} is not absolute", m.display()));
        }
        let dev = &cfg.root.device;
        if !dev.starts_with("/dev/") || dev.len() > 256 || dev.contains("..") {
            return Err(format!("root device {dev:?} is not a path under /dev"));
        }
        let fstype = &cfg.root.fstype;
        if fstype.is_empty()
            || fstype.len() > 32
            || !fstype
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(format!("root fstype {fstype:?} is invalid"));
        }
        Ok(cfg)
    }
}

/// Whether this process is a VM's init: PID 1 started with no agent flag and no subcommand (the
/// kernel passes init only the command-line words it does not understand, never a flag of
/// ours).
pub fn is_vm_init(pid: u32, args: &[std::ffi::OsString]) -> bool {
    pid == 1
        && args.iter().all(|a| {
            let a = a.to_string_lossy();
            !a.starts_with('-') && a != "sandbox-init" && a != "help"
        })
}

/// Entry point of VM init. Never returns: powers the VM off when the agent stops or a step
/// fails.
pub fn main() -> std::process::ExitCode {
    // The console is a serial port whose output the host keeps in a file: plain text, no
    // colours. `RUST_LOG` is not set by the kernel; the level is fixed.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false)
        .try_init();
    let started = Instant::now();
    match run_vm_init() {
        Ok(()) => tracing::info!("agent stopped after {:?}: powering off", started.elapsed()),
        Err(e) => {
            tracing::error!(error = %e, "vm-init failed");
            // One plain line, whatever the log filter: what the host's console tail shows.
            eprintln!("luminaguard-agent: vm-init failed: {e}; powering off");
        }
    }
    crate::init::power_off()
}

fn run_vm_init() -> Result<(), VmInitError> {
    let t0 = Instant::now();
    mount_early()?;
    let cmdline = read_bounded(Path::new("/proc/cmdline"), "read kernel command line")?;
    let params = parse_cmdline(&String::from_utf8_lossy(&cmdline))?;
    if !params.unknown.is_empty() {
        tracing::warn!(keys = ?params.unknown, "ignoring unknown luminaguard.* kernel parameters");
    }
    let config =
        GuestConfig::from_json(&read_bounded(Path::new(GUEST_CONFIG), "read guest config")?)
            .map_err(VmInitError::Config)?;
    load_modules(&config.modules)?;
    let t_modules = t0.elapsed();
    if let Some(net) = &params.net {
        guest_net::wait_for_interface(guest_net::GUEST_IFACE, guest_net::IFACE_TIMEOUT)?;
        guest_net::configure(guest_net::GUEST_IFACE, net)?;
    }
    wait_for_device(&config.root.device)?;
    mount_root(&config.root, params.scratch_mb)?;
    switch_root()?;
    if let Some(dns) = params.dns {
        write_resolv_conf(dns)?;
    }
    tracing::info!(
        modules = config.modules.len(),
        scratch_mb = params.scratch_mb,
        "vm-init: root ready after {:?} (modules loaded after {t_modules:?})",
        t0.elapsed()
    );
    // The limit on the commands' processes: set up here or not at all (the VM powers off
    // rather than serve without it).
    let commands_cgroup = params.pids.map(pids_cgroup).transpose()?;
    // SAFETY: still single-threaded (no runtime or reaper thread exists yet), so nothing reads
    // the environment concurrently.
    unsafe { std::env::set_var("PATH", GUEST_PATH) };
    let confine = commands_cgroup.map(|procs| crate::exec::Confinement {
        landlock: None,
        commands_cgroup: Some(procs),
    });
    crate::run_with(
        AgentArgs {
            listen: vec![ListenAddr::Vsock(AGENT_VSOCK_PORT)],
            on_exit: OnExit::Poweroff,
            threads: 2,
            no_init_mounts: false,
            lifetime: None,
            notify_ready_vsock: Some(luminaguard_protocol::AGENT_READY_VSOCK_PORT),
        },
        confine,
    )?;
    Ok(())
}

/// A cgroup v2 `pids` cgroup of at most `max` processes ([`COMMANDS_CGROUP`]) under a fresh
/// cgroup2 mount; returns its `cgroup.procs`, open for writing: each command moves itself in
/// between fork and exec (its children are then counted too). The agent stays outside, so a
/// fork bomb in a command cannot stop it from answering (or from killing the bomb).
#[allow(clippy::disallowed_methods)] // VM init is synchronous: no runtime exists yet
fn pids_cgroup(max: u32) -> Result<std::os::fd::OwnedFd, VmInitError> {
    let step = "limit the commands' processes";
    let root = "/sys/fs/cgroup";
    do_mount(
        step,
        "cgroup2",
        root,
        "cgroup2",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None,
    )?;
    let write = |path: String, value: String| {
        std::fs::write(&path, value).map_err(|source| VmInitError::Io {
            step,
            op: "writing",
            path: PathBuf::from(path),
            source,
        })
    };
    write(format!("{root}/cgroup.subtree_control"), "+pids".into())?;
    mkdir_p(COMMANDS_CGROUP, step)?;
    write(format!("{COMMANDS_CGROUP}/pids.max"), max.to_string())?;
    let procs = format!("{COMMANDS_CGROUP}/cgroup.procs");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&procs)
        .map(std::os::fd::OwnedFd::from)
        .map_err(|source| VmInitError::Io {
            step,
            op: "opening",
            path: PathBuf::from(procs),
            source,
        })
}

fn read_bounded(path: &Path, step: &'static str) -> Result<Vec<u8>, VmInitError> {
    use std::io::Read;
    let err = |op| {
        move |source| VmInitError::Io {
            step,
            op,
            path: path.to_owned(),
            source,
        }
    };
    let mut buf = Vec::new();
    File::open(path)
        .map_err(err("opening"))?
        .take(MAX_CONFIG_LEN)
        .read_to_end(&mut buf)
        .map_err(err("reading"))?;
    Ok(buf)
}

fn mkdir_p(path: &str, step: &'static str) -> Result<(), VmInitError> {
    std::fs::create_dir_all(path).map_err(|source| VmInitError::Io {
        step,
        op: "creating directory",
        path: PathBuf::from(path),
        source,
    })
}

fn do_mount(
    step: &'static str,
    source: &str,
    target: &str,
    fstype: &str,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), VmInitError> {
    mkdir_p(target, step)?;
    mount(Some(source), target, Some(fstype), flags, data).map_err(|errno| VmInitError::Mount {
        step,
        fstype: fstype.to_owned(),
        source_name: source.to_owned(),
        target: target.to_owned(),
        errno,
    })
}

/// `/proc`, `/sys` and `/dev` in the initramfs: needed to read the command line and to see
/// the root device.
fn mount_early() -> Result<(), VmInitError> {
    let nosuid_nodev_noexec = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let step = "mount /proc /sys /dev";
    do_mount(step, "proc", "/proc", "proc", nosuid_nodev_noexec, None)?;
    do_mount(step, "sysfs", "/sys", "sysfs", nosuid_nodev_noexec, None)?;
    do_mount(
        step,
        "devtmpfs",
        "/dev",
        "devtmpfs",
        MsFlags::MS_NOSUID,
        Some("mode=0755"),
    )
}

/// Loads each module in order; one already loaded (or built in) is fine. The module file is
/// removed afterwards: the initramfs is RAM the guest would otherwise never get back.
fn load_modules(modules: &[PathBuf]) -> Result<(), VmInitError> {
    for path in modules {
        let started = Instant::now();
        let file = File::open(path).map_err(|source| VmInitError::Io {
            step: "load modules",
            op: "opening",
            path: path.clone(),
            source,
        })?;
        match nix::kmod::finit_module(&file, c"", nix::kmod::ModuleInitFlags::empty()) {
            Ok(()) => {
                tracing::debug!(module = %path.display(), "loaded in {:?}", started.elapsed())
            }
            Err(nix::Error::EEXIST) => {
                tracing::debug!(module = %path.display(), "already loaded")
            }
            Err(errno) => {
                return Err(VmInitError::Module {
                    path: path.clone(),
                    errno,
                });
            }
        }
        drop(file);
        if let Err(e) = std::fs::remove_file(path) {
            tracing::debug!(module = %path.display(), error = %e, "cannot remove loaded module file");
        }
    }
    Ok(())
}

/// Waits (polling, bounded by [`ROOT_DEVICE_TIMEOUT`]) for devtmpfs to show the root device:
/// a driver may probe its device asynchronously after its module is loaded.
#[allow(clippy::disallowed_methods)] // single-threaded init, no executor exists yet
fn wait_for_device(device: &str) -> Result<(), VmInitError> {
    let started = Instant::now();
    while !Path::new(device).exists() {
        if started.elapsed() >= ROOT_DEVICE_TIMEOUT {
            return Err(VmInitError::NoRootDevice {
                device: device.to_owned(),
                waited: started.elapsed(),
            });
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    if started.elapsed() > Duration::from_millis(2) {
        tracing::debug!(device, "root device appeared after {:?}", started.elapsed());
    }
    Ok(())
}

/// The read-only lower, the scratch tmpfs, and the overlay of both at [`NEW_ROOT_DIR`].
fn mount_root(root: &RootConfig, scratch_mb: u64) -> Result<(), VmInitError> {
    do_mount(
        "mount root",
        &root.device,
        LOWER_DIR,
        &root.fstype,
        MsFlags::MS_RDONLY,
        None,
    )?;
    do_mount(
        "mount scratch",
        "scratch",
        SCRATCH_DIR,
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(&format!("size={scratch_mb}m,mode=0755")),
    )?;
    let upper = format!("{SCRATCH_DIR}/upper");
    let work = format!("{SCRATCH_DIR}/work");
    mkdir_p(&upper, "mount scratch")?;
    mkdir_p(&work, "mount scratch")?;
    do_mount(
        "mount overlay",
        "overlay",
        NEW_ROOT_DIR,
        "overlay",
        MsFlags::empty(),
        Some(&format!(
            "lowerdir={LOWER_DIR},upperdir={upper},workdir={work}"
        )),
    )?;
    // Every sandbox runs its commands in /workspace; a root made by debootstrap has none. It
    // lives in the writable layer, like every write of the guest.
    mkdir_p(&format!("{NEW_ROOT_DIR}{WORKSPACE}"), "create /workspace")
}

/// The directory commands run in, in every sandbox.
const WORKSPACE: &str = "/workspace";

/// Points the guest's `/etc/resolv.conf` at the sandbox's resolver, in the writable overlay
/// (replacing the image's file, or symlink, for this VM only).
#[allow(clippy::disallowed_methods)] // single-threaded init, no executor exists yet
fn write_resolv_conf(dns: std::net::Ipv4Addr) -> Result<(), VmInitError> {
    let path = Path::new("/etc/resolv.conf");
    let io = |op| {
        move |source| VmInitError::Io {
            step: "write resolv.conf",
            op,
            path: path.to_owned(),
            source,
        }
    };
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io("remove")(e)),
        _ => {}
    }
    std::fs::write(path, format!("nameserver {dns}\noptions edns0\n")).map_err(io("write"))
}

/// Makes the overlay `/`: moves the API filesystems into it, moves it onto `/`, chroots.
fn switch_root() -> Result<(), VmInitError> {
    let err = |op, path: &str| {
        let path = path.to_owned();
        move |errno| VmInitError::SwitchRoot { op, path, errno }
    };
    for api in ["/proc", "/sys", "/dev"] {
        let target = format!("{NEW_ROOT_DIR}{api}");
        mkdir_p(&target, "switch root")?;
        mount(
            Some(api),
            target.as_str(),
            None::<&str>,
            MsFlags::MS_MOVE,
            None::<&str>,
        )
        .map_err(err("moving mount to", &target))?;
    }
    nix::unistd::chdir(NEW_ROOT_DIR).map_err(err("chdir", NEW_ROOT_DIR))?;
    mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .map_err(err("moving mount onto /", NEW_ROOT_DIR))?;
    nix::unistd::chroot(".").map_err(err("chroot", NEW_ROOT_DIR))?;
    nix::unistd::chdir("/").map_err(err("chdir", "/"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_like_the_kernel() {
        let p = split_cmdline("  console=ttyS0  quiet a=\"b c\" \"d=e f\"\tg= -- init args=1");
        assert_eq!(
            p,
            vec![
                ("console".to_owned(), Some("ttyS0".to_owned())),
                ("quiet".to_owned(), None),
                ("a".to_owned(), Some("b c".to_owned())),
                ("d".to_owned(), Some("e f".to_owned())),
                ("g".to_owned(), Some(String::new())),
            ]
        );
        assert!(split_cmdline("").is_empty());
        assert!(split_cmdline(" \n\t ").is_empty());
        // An unterminated quote runs to the end, as in the kernel.
        assert_eq!(
            split_cmdline("x=\"a b"),
            vec![("x".to_owned(), Some("a b".to_owned()))]
        );
    }

    #[test]
    fn reads_the_network_configuration() {
        let p = parse_cmdline("quiet luminaguard.net=10.255.255.2/30,10.255.255.1").unwrap();
        assert_eq!(
            p.net,
            Some(GuestNet {
                addr: std::net::Ipv4Addr::new(10, 255, 255, 2),
                prefix: 30,
                gateway: std::net::Ipv4Addr::new(10, 255, 255, 1),
            })
        );
        assert!(p.unknown.is_empty());
        assert_eq!(parse_cmdline("quiet").unwrap().net, None);
        for bad in [
            "luminaguard.net",
            "luminaguard.net=",
            "luminaguard.net=10.0.0.2/30",
        ] {
            let e = parse_cmdline(bad).unwrap_err();
            assert!(e.to_string().contains("luminaguard.net="), "{e}");
        }
    }

    #[test]
    fn reads_the_commands_process_limit() {
        assert_eq!(parse_cmdline("luminaguard.pids=64").unwrap().pids, Some(64));
        assert_eq!(parse_cmdline("quiet").unwrap().pids, None);
        for bad in [
            "luminaguard.pids",
            "luminaguard.pids=0",
            "luminaguard.pids=-1",
            "luminaguard.pids=many",
            "luminaguard.pids=99999999999",
        ] {
            let e = parse_cmdline(bad).unwrap_err();
            assert!(e.to_string().contains("luminaguard.pids="), "{e}");
        }
    }

    #[test]
    fn reads_the_resolver() {
        let p = parse_cmdline(
            "luminaguard.net=10.255.255.2/30,10.255.255.1 luminaguard.dns=10.255.255.1",
        )
        .unwrap();
        assert_eq!(p.dns, Some(std::net::Ipv4Addr::new(10, 255, 255, 1)));
        assert_eq!(parse_cmdline("quiet").unwrap().dns, None);
        for bad in [
            "luminaguard.dns",
            "luminaguard.dns=",
            "luminaguard.dns=resolver.test",
        ] {
            let e = parse_cmdline(bad).unwrap_err();
            assert!(e.to_string().contains("luminaguard.dns="), "{e}");
        }
    }

    #[test]
    fn reads_scratch_size_and_defaults() {
        assert_eq!(
            parse_cmdline("console=ttyS0").unwrap(),
            BootParams::default()
        );
        let p = parse_cmdline("quiet luminaguard.scratch_mb=64 panic=-1\n").unwrap();
        assert_eq!(p.scratch_mb, 64);
        // Last one wins; '-' equals '_'; quotes are removed.
        let p = parse_cmdline("luminaguard.scratch_mb=64 luminaguard.scratch-mb=\"128\"").unwrap();
        assert_eq!(p.scratch_mb, 128);
        // After "--" the words are init's, not parameters.
        let p = parse_cmdline("-- luminaguard.scratch_mb=x").unwrap();
        assert_eq!(p.scratch_mb, DEFAULT_SCRATCH_MB);
        let p = parse_cmdline("luminaguard.future=1 luminaguard.flag").unwrap();
        assert_eq!(p.unknown, vec!["luminaguard.future", "luminaguard.flag"]);
        // Another subsystem's parameter with our name as a suffix is not ours.
        assert_eq!(
            parse_cmdline("xluminaguard.scratch_mb=1 notluminaguard.scratch_mb=zz").unwrap(),
            BootParams::default()
        );
    }

    #[test]
    fn refuses_hostile_scratch_values() {
        let long = "9".repeat(10_000);
        for bad in [
            "luminaguard.scratch_mb",
            "luminaguard.scratch_mb=",
            "luminaguard.scratch_mb=0",
            "luminaguard.scratch_mb=-1",
            "luminaguard.scratch_mb=+5",
            "luminaguard.scratch_mb=0x10",
            "luminaguard.scratch_mb=1e3",
            "luminaguard.scratch_mb=64m",
            "luminaguard.scratch_mb=\" 64\"",
            "luminaguard.scratch_mb=١٢",
            "luminaguard.scratch_mb=18446744073709551616",
            "luminaguard.scratch_mb=1048577",
            &format!("luminaguard.scratch_mb={long}"),
        ] {
            let err = parse_cmdline(bad).unwrap_err();
            let CmdlineError::BadValue { value, .. } = &err;
            assert!(value.chars().count() <= 64, "{bad}: {err}");
            assert!(err.to_string().contains("scratch_mb"), "{err}");
        }
        assert_eq!(
            parse_cmdline("luminaguard.scratch_mb=1048576")
                .unwrap()
                .scratch_mb,
            MAX_SCRATCH_MB
        );
    }

    #[test]
    fn survives_arbitrary_bytes() {
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        for _ in 0..2000 {
            let len = (seed % 64) as usize;
            let s: String = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    let alphabet = b"luminaguard.scratch_mb= \"-=9\t\0x";
                    alphabet[(seed % alphabet.len() as u64) as usize] as char
                })
                .collect();
            let _ = parse_cmdline(&s);
        }
    }

    #[test]
    fn guest_config_is_checked() {
        let ok = br#"{"modules":["/lib/modules/6.1/virtio.ko"],"root":{"device":"/dev/vda","fstype":"ext4"}}"#;
        let cfg = GuestConfig::from_json(ok).unwrap();
        assert_eq!(
            cfg.modules,
            vec![PathBuf::from("/lib/modules/6.1/virtio.ko")]
        );
        assert_eq!(cfg.root.device, "/dev/vda");
        for bad in [
            &br#"{"modules":["virtio.ko"],"root":{"device":"/dev/vda","fstype":"ext4"}}"#[..],
            br#"{"modules":[],"root":{"device":"vda","fstype":"ext4"}}"#,
            br#"{"modules":[],"root":{"device":"/dev/../etc/x","fstype":"ext4"}}"#,
            br#"{"modules":[],"root":{"device":"/dev/vda","fstype":"ext4,rw"}}"#,
            br#"{"modules":[]}"#,
            b"not json",
        ] {
            assert!(
                GuestConfig::from_json(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn vm_init_only_as_pid1_without_our_arguments() {
        let args = |a: &[&str]| a.iter().map(std::ffi::OsString::from).collect::<Vec<_>>();
        assert!(is_vm_init(1, &args(&[])));
        assert!(is_vm_init(1, &args(&["single"])));
        assert!(!is_vm_init(2, &args(&[])));
        assert!(!is_vm_init(1, &args(&["--listen", "vsock:1024"])));
        assert!(!is_vm_init(1, &args(&["--listen=fd:3"])));
        assert!(!is_vm_init(1, &args(&["sandbox-init", "{}"])));
    }
}
