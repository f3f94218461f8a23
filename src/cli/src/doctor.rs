//! `luminaguard doctor`: which backends this host can run, and why not.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use luminaguard_core::{BackendChoice, Config};
use luminaguard_qemu::kvm::KvmProbe;
use luminaguard_qemu::tsc::TscSource;
use luminaguard_service::HostSettings;
use serde::Serialize;

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct Report {
    /// The configured default backend.
    default_backend: BackendChoice,
    /// Whether the default backend can run here (the exit status says the same).
    default_usable: bool,
    /// What `auto` picks on this host, and why.
    auto: Pick,
    process: ProcessReport,
    qemu: QemuReport,
    firecracker: FirecrackerReport,
    network: NetworkReport,
}

/// Whether `--net` can work here (for every backend that takes it).
#[derive(Debug, Serialize)]
struct NetworkReport {
    #[serde(flatten)]
    verdict: Verdict,
    nft: Program,
    /// `ip` (iproute2), found or not.
    ip: Option<PathBuf>,
    /// `LUMINAGUARD_UPLINK_NETNS`, or `None`: the host's own namespace.
    uplink_netns: Option<String>,
    /// `net.ipv4.ip_forward` in the uplink's namespace (never turned on by LuminaGuard).
    forwarding: Option<bool>,
    /// What sandboxes' resolvers ask (policies naming domains), or why none is known.
    dns_upstream: Result<std::net::SocketAddr, String>,
}

#[derive(Debug, Serialize)]
struct FirecrackerReport {
    #[serde(flatten)]
    verdict: Verdict,
    /// `LUMINAGUARD_FIRECRACKER`, else `firecracker` on PATH.
    firecracker: Program,
    /// `LUMINAGUARD_JAILER`, else `jailer` next to firecracker, else on PATH.
    jailer: Program,
    /// `LUMINAGUARD_SECCOMPILER`, else `seccompiler-bin` next to firecracker, else on PATH.
    seccompiler: Program,
    /// The same probe as QEMU's: can KVM run a real guest here.
    kvm_usable: bool,
    /// Which seccomp filter a Firecracker started by LuminaGuard runs with.
    seccomp_filter: String,
}

#[derive(Debug, Serialize)]
struct Pick {
    backend: BackendChoice,
    why: String,
}

#[derive(Debug, Serialize)]
struct Verdict {
    usable: bool,
    /// Why not, or how it will run.
    notes: Vec<String>,
}

#[derive(Debug, Serialize)]
struct ProcessReport {
    #[serde(flatten)]
    verdict: Verdict,
    root: bool,
    /// Why unprivileged user namespaces (what a rootless sandbox needs) are off, if they are.
    user_namespaces_off: Option<String>,
    /// `cgroup v1` / `cgroup v2`, or why neither can be used.
    cgroup: String,
}

#[derive(Debug, Serialize)]
struct QemuReport {
    #[serde(flatten)]
    verdict: Verdict,
    qemu: Program,
    vhost_device_vsock: Program,
    kvm: KvmProbe,
    /// What guests would run with: kvm, or tcg when the KVM probe failed.
    accel: luminaguard_qemu::Accel,
    tsc_khz: Option<u64>,
    tsc_source: Option<TscSource>,
    image_store: Option<PathBuf>,
    /// The image `run --backend qemu` boots by default (the newest).
    image: Option<ImageSummary>,
}

#[derive(Debug, Serialize)]
struct Program {
    path: Option<PathBuf>,
    version: Option<String>,
    error: Option<String>,
}

#[derive(Debug, Serialize)]
struct ImageSummary {
    digest: String,
    kernel_release: String,
    rootfs: bool,
    /// An uncompressed ELF kernel, which Firecracker needs.
    vmlinux: bool,
}

async fn program(name: &str, explicit: Option<&Path>) -> Program {
    let path = {
        let (name, explicit) = (name.to_owned(), explicit.map(Path::to_owned));
        tokio::task::spawn_blocking(move || {
            luminaguard_qemu::find_program(&name, explicit.as_deref())
        })
        .await
        .ok()
        .flatten()
    };
    let Some(path) = path else {
        return Program {
            path: None,
            version: None,
            error: Some(format!(
                "{name} not found on PATH or in ~/.cargo/bin (scripts/setup-vm installs it)"
            )),
        };
    };
    match luminaguard_qemu::host::version(&path).await {
        Ok(v) => Program {
            path: Some(path),
            version: Some(v),
            error: None,
        },
        Err(e) => Program {
            path: Some(path),
            version: None,
            error: Some(format!("does not run: {e}")),
        },
    }
}

async fn network_report(host: &HostSettings) -> NetworkReport {
    use luminaguard_net::cmd::{self, Netns};
    let uplink = host.uplink.clone();
    let mut nft = program("nft", None).await;
    if nft.error.is_some() {
        nft.error = Some("nft not found on PATH (scripts/setup installs nftables)".into());
    }
    let ip = tokio::task::spawn_blocking(|| luminaguard_qemu::find_program("ip", None))
        .await
        .ok()
        .flatten();
    let ns = Netns::from_option(uplink.netns.as_deref());
    let forwarding = cmd::run(ns, "sysctl", &["-n", "net.ipv4.ip_forward"], None)
        .await
        .ok()
        .map(|out| String::from_utf8_lossy(&out).trim() == "1");
    let dns_upstream = match host.dns_upstream {
        Some(u) => Ok(u),
        None => luminaguard_net::resolver_service::upstream_for(&uplink)
            .await
            .map_err(|e| e.to_string()),
    };
    let root = nix::unistd::geteuid().is_root();
    // The kernel's nf_tables, asked read-only (as root: listing needs CAP_NET_ADMIN).
    let nf_tables = match (&nft.path, root) {
        (Some(_), true) => cmd::run(Netns::Current, "nft", &["list", "tables"], None)
            .await
            .map(drop)
            .map_err(|e| e.to_string()),
        _ => Ok(()),
    };
    let mut notes = Vec::new();
    if !root {
        notes.push("needs root (network namespaces, links, nftables tables)".to_owned());
    }
    match (&nft.version, &nft.error) {
        (Some(v), _) => notes.push(v.clone()),
        (None, Some(e)) => notes.push(e.clone()),
        (None, None) => {}
    }
    if let Err(e) = &nf_tables {
        notes.push(format!("the kernel's nf_tables does not answer: {e}"));
    }
    if ip.is_none() {
        notes.push("ip (iproute2) not found on PATH".into());
    }
    match forwarding {
        Some(true) => notes.push("forwarding on".into()),
        Some(false) => notes.push(
            "net.ipv4.ip_forward is 0 in the uplink's namespace: turn it on to use --net".into(),
        ),
        None => notes.push("cannot read net.ipv4.ip_forward".into()),
    }
    match &dns_upstream {
        Ok(u) => notes.push(format!("DNS upstream {u}")),
        Err(e) => notes.push(format!("domains cannot be resolved: {e}")),
    }
    let usable = root
        && nft.version.is_some()
        && nf_tables.is_ok()
        && ip.is_some()
        && forwarding == Some(true);
    NetworkReport {
        verdict: Verdict { usable, notes },
        nft,
        ip,
        uplink_netns: uplink.netns,
        forwarding,
        dns_upstream,
    }
}

/// Unprivileged user namespaces, from the sysctls that can forbid them.
fn user_namespaces() -> Result<(), String> {
    #[allow(clippy::disallowed_methods)] // a few bytes of procfs, on a blocking thread
    let read = |p: &str| std::fs::read_to_string(p).ok().map(|s| s.trim().to_owned());
    if read("/proc/sys/user/max_user_namespaces").as_deref() == Some("0") {
        return Err("user.max_user_namespaces is 0".into());
    }
    if read("/proc/sys/kernel/unprivileged_userns_clone").as_deref() == Some("0") {
        return Err("kernel.unprivileged_userns_clone is 0".into());
    }
    if read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns").as_deref() == Some("1") {
        return Err("kernel.apparmor_restrict_unprivileged_userns is 1".into());
    }
    Ok(())
}

fn process_report() -> ProcessReport {
    let root = nix::unistd::geteuid().is_root();
    let userns = user_namespaces();
    let cgroup = luminaguard_cgroup::Hierarchy::detect()
        .map(|h| format!("cgroup v{}", h.version()))
        .map_err(|e| e.to_string());
    let mut notes = Vec::new();
    let usable = match (root, &userns) {
        (true, _) => {
            notes.push("runs as root".to_owned());
            true
        }
        (false, Ok(())) => {
            notes.push("rootless, in a user namespace".to_owned());
            true
        }
        (false, Err(e)) => {
            notes.push(format!(
                "not root and unprivileged user namespaces are off ({e})"
            ));
            false
        }
    };
    if let Err(e) = &cgroup {
        notes.push(format!(
            "no cgroup limits available ({e}): only --no-cgroup runs"
        ));
    }
    ProcessReport {
        verdict: Verdict { usable, notes },
        root,
        user_namespaces_off: userns.err(),
        cgroup: cgroup.unwrap_or_else(|e| format!("unusable: {e}")),
    }
}

async fn qemu_report(host: &HostSettings) -> QemuReport {
    let p = &host.programs;
    let qemu = program(luminaguard_qemu::host::QEMU_PROGRAM, p.qemu.as_deref()).await;
    let vhost = program(
        luminaguard_qemu::host::VHOST_PROGRAM,
        p.vhost_device_vsock.as_deref(),
    )
    .await;
    let store = host.image_store.clone();
    let (kvm, tsc, store, image) = tokio::task::spawn_blocking(move || {
        let kvm = luminaguard_qemu::kvm::probe();
        let tsc = luminaguard_qemu::tsc::host_tsc_khz();
        let image = match &store {
            Some(root) => {
                luminaguard_service::host::find_image(root, None).map_err(|e| e.to_string())
            }
            None => {
                Err("no image store: set host.image_store (LUMINAGUARD_IMAGE_STORE) or HOME".into())
            }
        };
        (kvm, tsc, store, image)
    })
    .await
    .unwrap_or_else(|e| {
        (
            KvmProbe::Unusable(format!("probe failed: {e}")),
            None,
            None,
            Err(e.to_string()),
        )
    });
    let accel = if kvm.is_usable() {
        luminaguard_qemu::Accel::Kvm
    } else {
        luminaguard_qemu::Accel::Tcg
    };
    let mut notes = Vec::new();
    for p in [&qemu, &vhost] {
        if let Some(e) = &p.error {
            notes.push(e.clone());
        }
    }
    let image = match image {
        Ok(Some(i)) => Some(ImageSummary {
            digest: i.digest.to_string(),
            kernel_release: i.manifest.kernel_release.clone(),
            rootfs: i.manifest.rootfs.is_some(),
            vmlinux: i
                .artifact_path(luminaguard_image::store::ArtifactKind::Vmlinux)
                .is_some(),
        }),
        Ok(None) => {
            notes.push("no image: run `luminaguard image build`".into());
            None
        }
        Err(e) => {
            notes.push(format!("image store: {e}"));
            None
        }
    };
    let usable = qemu.error.is_none() && vhost.error.is_none() && image.is_some();
    match &kvm {
        KvmProbe::Usable => notes.push("guests run with KVM".into()),
        KvmProbe::Unusable(why) => notes.push(format!(
            "KVM cannot run guests here ({why}): guests run under TCG, seconds per boot; \
             `auto` does not pick it, `--backend qemu` does"
        )),
    }
    if !nix::unistd::geteuid().is_root() {
        notes.push("not root: needs a delegated cgroup, or --no-cgroup".into());
    }
    QemuReport {
        verdict: Verdict { usable, notes },
        qemu,
        vhost_device_vsock: vhost,
        kvm,
        accel,
        tsc_khz: tsc.map(|(k, _)| k),
        tsc_source: tsc.map(|(_, s)| s),
        image_store: store,
        image,
    }
}

/// `auto`'s pick from what the reports found (the rule `run` applies, [`luminaguard_service::pick`]).
fn auto_pick(process: &ProcessReport, qemu: &QemuReport, fc: &FirecrackerReport) -> Pick {
    let facts = luminaguard_service::pick::HostFacts {
        kvm: qemu.kvm.is_usable(),
        image: qemu.image.is_some(),
        vmlinux: qemu.image.as_ref().is_some_and(|i| i.vmlinux),
        firecracker: fc.firecracker.error.is_none(),
        qemu: qemu.qemu.error.is_none() && qemu.vhost_device_vsock.error.is_none(),
    };
    let (backend, why) = luminaguard_service::pick::auto_backend(facts);
    Pick {
        backend,
        why: if backend == BackendChoice::Process && !process.verdict.usable {
            format!("{why}; and the process sandbox cannot run either")
        } else {
            why.to_owned()
        },
    }
}

async fn tool(key: &str, explicit: Option<&Path>, name: &str, near: Option<&Path>) -> Program {
    let Some(path) = luminaguard_firecracker::tools::find_tool(explicit, name, near).await else {
        let hint = match explicit {
            Some(p) => format!("not at {} (host.{key})", p.display()),
            None => format!("set host.{key} or put it on PATH"),
        };
        return Program {
            path: None,
            version: None,
            error: Some(format!("{name} not found ({hint})")),
        };
    };
    match luminaguard_qemu::host::version(&path).await {
        Ok(v) => Program {
            path: Some(path),
            version: Some(v),
            error: None,
        },
        Err(e) => Program {
            path: Some(path),
            version: None,
            error: Some(format!("does not run: {e}")),
        },
    }
}

/// Firecracker, its jailer and seccompiler-bin (the lookup of `luminaguard_firecracker`:
/// `[host]` paths, next to the firecracker binary, PATH), and KVM.
async fn firecracker_report(kvm: &KvmProbe, host: &HostSettings) -> FirecrackerReport {
    let p = &host.programs;
    let firecracker = tool("firecracker", p.firecracker.as_deref(), "firecracker", None).await;
    let near = firecracker.path.as_deref();
    let jailer = tool("jailer", p.jailer.as_deref(), "jailer", near).await;
    let seccompiler = tool(
        "seccompiler",
        p.seccompiler.as_deref(),
        "seccompiler-bin",
        near,
    )
    .await;
    let mut notes = Vec::new();
    if let Some(e) = &firecracker.error {
        notes.push(e.clone());
    }
    if let KvmProbe::Unusable(why) = kvm {
        notes.push(format!("KVM cannot run guests here ({why})"));
    }
    let usable = firecracker.error.is_none() && kvm.is_usable();
    if firecracker.error.is_none() {
        notes.push(match &jailer.error {
            None => "jailer found: VMMs can run chrooted, in their own PID namespace".into(),
            Some(e) => format!("no jailer ({e}): VMMs would run unjailed"),
        });
    }
    // What `run` does (run::firecracker_backend): the custom policy, compiled by the release's
    // seccompiler-bin, when there is one; Firecracker's built-in filters otherwise. Never off.
    let seccomp_filter = match (&seccompiler.path, &seccompiler.error) {
        (Some(p), None) => format!(
            "LuminaGuard's custom policy (vmm, api and vcpu threads), compiled with {}",
            p.display()
        ),
        (Some(p), Some(e)) => format!(
            "none: {} {e}, and a run stops when the custom policy cannot be compiled",
            p.display()
        ),
        (None, _) => {
            "Firecracker's built-in default filters (no seccompiler-bin for LuminaGuard's \
                 custom policy; seccomp is never turned off)"
                .to_owned()
        }
    };
    if firecracker.error.is_none() && jailer.error.is_none() && !nix::unistd::geteuid().is_root() {
        notes.push("not root: VMMs would run unjailed (the jailer needs root)".into());
    }
    FirecrackerReport {
        verdict: Verdict { usable, notes },
        firecracker,
        jailer,
        seccompiler,
        kvm_usable: kvm.is_usable(),
        seccomp_filter,
    }
}

fn show_path(p: &Option<PathBuf>) -> String {
    p.as_deref()
        .map_or_else(|| "-".to_owned(), |p: &Path| p.display().to_string())
}

pub async fn run(args: DoctorArgs, config: &Config) -> anyhow::Result<ExitCode> {
    let host = HostSettings::from_config(config)?;
    let process = tokio::task::spawn_blocking(process_report).await?;
    let qemu = qemu_report(&host).await;
    let firecracker = firecracker_report(&qemu.kvm, &host).await;
    let network = network_report(&host).await;
    let auto = auto_pick(&process, &qemu, &firecracker);
    let default_backend = config.defaults.backend;
    // `auto` can run when the backend it picks can.
    let effective = match default_backend {
        BackendChoice::Auto => auto.backend,
        other => other,
    };
    let default_usable = match effective {
        BackendChoice::Process | BackendChoice::Auto => process.verdict.usable,
        BackendChoice::Qemu => qemu.verdict.usable,
        BackendChoice::Firecracker => firecracker.verdict.usable && qemu.image.is_some(),
    };
    let report = Report {
        default_backend,
        default_usable,
        auto,
        process,
        qemu,
        firecracker,
        network,
    };
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let mark = |ok: bool| if ok { "yes" } else { "no " };
        outln!(
            "process      {}  {}",
            mark(report.process.verdict.usable),
            report.process.verdict.notes.join("; ")
        );
        outln!(
            "qemu         {}  {}",
            mark(report.qemu.verdict.usable),
            report.qemu.verdict.notes.join("; ")
        );
        let q = &report.qemu;
        outln!(
            "               qemu: {} ({})",
            show_path(&q.qemu.path),
            q.qemu.version.as_deref().unwrap_or("-")
        );
        outln!(
            "               vhost-device-vsock: {} ({})",
            show_path(&q.vhost_device_vsock.path),
            q.vhost_device_vsock.version.as_deref().unwrap_or("-")
        );
        outln!("               KVM: {} -> accel {}", q.kvm, q.accel);
        if let Some(khz) = q.tsc_khz {
            outln!("               host TSC: {khz} kHz");
        }
        match &q.image {
            Some(i) => outln!(
                "               image: {} ({}) in {}",
                i.digest,
                i.kernel_release,
                show_path(&q.image_store)
            ),
            None => outln!(
                "               image: none in {}",
                show_path(&q.image_store)
            ),
        }
        let f = &report.firecracker;
        outln!(
            "firecracker  {}  {}",
            mark(f.verdict.usable),
            f.verdict.notes.join("; ")
        );
        for (name, p) in [
            ("firecracker", &f.firecracker),
            ("jailer", &f.jailer),
            ("seccompiler-bin", &f.seccompiler),
        ] {
            outln!(
                "               {name}: {} ({})",
                show_path(&p.path),
                p.version.as_deref().unwrap_or("-")
            );
        }
        outln!("               seccomp: {}", f.seccomp_filter);
        outln!(
            "network      {}  {}",
            mark(report.network.verdict.usable),
            report.network.verdict.notes.join("; ")
        );
        outln!(
            "auto         -> {} ({})",
            report.auto.backend,
            report.auto.why
        );
        outln!(
            "default      {} ({})",
            report.default_backend,
            if report.default_usable {
                "can run here"
            } else {
                "CANNOT run here"
            }
        );
    }
    Ok(if report.default_usable {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
