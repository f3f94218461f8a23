//! The command lines the QEMU backend runs, built from typed parts: QEMU's argv
//! ([`QemuCommand::argv`]), the guest kernel's command line ([`KernelCmdline`]) and
//! vhost-device-vsock's argv ([`VhostVsock::argv`]).
//!
//! Values are checked when they are added, not when QEMU trips over them: a kernel parameter
//! cannot carry a space or a quote, a path QEMU parses inside an option has its commas doubled
//! (QEMU's escape), and a path vhost-device-vsock cannot escape is refused.

use std::fmt;
use std::path::{Path, PathBuf};

/// Why a command line cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum CmdlineError {
    /// A kernel parameter's name or value cannot be put on the kernel command line.
    #[error("kernel parameter {key:?}: {reason}")]
    KernelParam { key: String, reason: &'static str },
    /// The kernel command line is longer than the kernel accepts.
    #[error("kernel command line is {len} bytes; the x86 kernel accepts at most {max}")]
    KernelCmdlineTooLong { len: usize, max: usize },
    /// A path cannot be passed to QEMU or vhost-device-vsock.
    #[error("path {} cannot be passed to {program}: {reason}", path.display())]
    Path {
        program: &'static str,
        path: PathBuf,
        reason: &'static str,
    },
    /// A device or drive id is not a plain identifier.
    #[error("id {0:?} must be 1-32 characters of [a-z0-9_-]")]
    Id(String),
    /// A size or count QEMU would refuse.
    #[error("{what} must be between {min} and {max}, not {value}")]
    Range {
        what: &'static str,
        value: u64,
        min: u64,
        max: u64,
    },
}

/// The x86 kernel's `COMMAND_LINE_SIZE`, its terminating NUL included.
pub const KERNEL_CMDLINE_MAX: usize = 2048;

/// One `key` or `key=value` of the kernel command line.
#[derive(Debug, Clone, PartialEq, Eq)]
struct KernelParam {
    key: String,
    value: Option<String>,
}

/// The guest kernel's command line, parameter by parameter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelCmdline {
    params: Vec<KernelParam>,
}

fn check_key(key: &str) -> Result<(), CmdlineError> {
    let bad = |reason| CmdlineError::KernelParam {
        key: key.chars().take(64).collect(),
        reason,
    };
    if key.is_empty() || key.len() > 64 {
        return Err(bad("a name must be 1-64 bytes"));
    }
    if !key
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        return Err(bad("a name may hold only [A-Za-z0-9_.-]"));
    }
    Ok(())
}

impl KernelCmdline {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a bare `key` (e.g. `quiet`).
    pub fn flag(mut self, key: &str) -> Result<Self, CmdlineError> {
        check_key(key)?;
        self.params.push(KernelParam {
            key: key.to_owned(),
            value: None,
        });
        Ok(self)
    }

    /// Adds `key=value`. The value must be printable ASCII without spaces or quotes (nothing the
    /// kernel's parser would split or unquote).
    pub fn set(mut self, key: &str, value: impl fmt::Display) -> Result<Self, CmdlineError> {
        check_key(key)?;
        let value = value.to_string();
        if value.is_empty() || value.len() > 256 {
            return Err(CmdlineError::KernelParam {
                key: key.to_owned(),
                reason: "a value must be 1-256 bytes",
            });
        }
        if !value.bytes().all(|b| b.is_ascii_graphic() && b != b'"') {
            return Err(CmdlineError::KernelParam {
                key: key.to_owned(),
                reason: "a value must be printable ASCII without spaces or quotes",
            });
        }
        self.params.push(KernelParam {
            key: key.to_owned(),
            value: Some(value),
        });
        Ok(self)
    }

    /// The value of the last `key=value` for `key` (the kernel uses the last one).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .rev()
            .find(|p| p.key == key)
            .and_then(|p| p.value.as_deref())
    }

    /// The command line as the kernel receives it.
    pub fn render(&self) -> Result<String, CmdlineError> {
        let text = self
            .params
            .iter()
            .map(|p| match &p.value {
                Some(v) => format!("{}={v}", p.key),
                None => p.key.clone(),
            })
            .collect::<Vec<_>>()
            .join(" ");
        // The kernel keeps COMMAND_LINE_SIZE bytes including the NUL.
        if text.len() >= KERNEL_CMDLINE_MAX {
            return Err(CmdlineError::KernelCmdlineTooLong {
                len: text.len(),
                max: KERNEL_CMDLINE_MAX - 1,
            });
        }
        Ok(text)
    }

    /// What every LuminaGuard guest boots with: the console on the first serial port (captured
    /// to the sandbox's console log), reboot by triple fault and an immediate reboot on panic
    /// (with QEMU's `-no-reboot`: the VMM exits when the guest dies), a trusted TSC whose
    /// frequency is given rather than calibrated (`tsc_khz`: under TCG, calibration hangs about
    /// one boot in four), the size of the guest's writable scratch layer, and the most
    /// processes the guest's commands may have at once (VM init puts them in a pids cgroup).
    pub fn guest(tsc_khz: Option<u64>, scratch_mib: u64, pids: u32) -> Result<Self, CmdlineError> {
        let mut c = Self::new()
            .set("console", "ttyS0")?
            .set("reboot", "t")?
            .set("panic", -1)?
            .set("tsc", "reliable")?
            .flag("quiet")?;
        if let Some(khz) = tsc_khz {
            c = c.set("tsc_early_khz", khz)?;
        }
        c.set("luminaguard.scratch_mb", scratch_mib)?
            .set("luminaguard.pids", pids)
    }
}

/// How QEMU runs guest code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    /// Hardware virtualization (`/dev/kvm`), where the KVM probe says a guest can run.
    Kvm,
    /// QEMU's own binary translator: real isolation, but slow (seconds to boot).
    Tcg,
}

impl Accel {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Kvm => "kvm",
            Self::Tcg => "tcg",
        }
    }
}

impl fmt::Display for Accel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A disk: a raw image file behind a virtio-blk (MMIO) device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drive {
    /// QEMU's id for the drive (and its device).
    pub id: String,
    pub path: PathBuf,
    /// Read-only at the VMM: the guest cannot write it whatever it does.
    pub read_only: bool,
}

/// Where QEMU sends the guest's serial console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Serial {
    /// A file QEMU creates and appends to, without bound.
    File(PathBuf),
    /// A connected socket QEMU inherits as this descriptor (`-chardev socket,fd=N`): whoever
    /// holds the other end reads the console. If that end goes away, QEMU drops the output.
    SocketFd(i32),
}

/// The guest's network card: a virtio-net (MMIO) device on a tap device QEMU inherits as an open
/// descriptor (`-netdev tap,fd=N`): QEMU needs no capability, no `/dev/net/tun` and no access to
/// the namespace the tap lives in (see `luminaguard_net::tap`). The descriptor should be attached
/// with `IFF_VNET_HDR`: QEMU reads the flag from it and then exchanges offload headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Nic {
    pub tap_fd: i32,
}

/// QEMU's own seccomp sandbox (`-sandbox`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeccompSandbox {
    /// Deny obsolete system calls.
    pub obsolete: bool,
    /// Deny set*uid/set*gid and the like.
    pub elevate_privileges: bool,
    /// Deny fork and exec.
    pub spawn: bool,
    /// Deny changing scheduling and CPU affinity.
    pub resource_control: bool,
}

impl SeccompSandbox {
    /// Everything denied: what the backend always uses.
    pub const STRICT: Self = Self {
        obsolete: true,
        elevate_privileges: true,
        spawn: true,
        resource_control: true,
    };

    fn arg(self) -> String {
        let deny = |on: bool| if on { "deny" } else { "allow" };
        format!(
            "on,obsolete={},elevateprivileges={},spawn={},resourcecontrol={}",
            deny(self.obsolete),
            deny(self.elevate_privileges),
            deny(self.spawn),
            deny(self.resource_control)
        )
    }
}

/// Everything QEMU is started with. [`QemuCommand::argv`] turns it into arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QemuCommand {
    pub accel: Accel,
    /// Size of TCG's translation-block cache in MiB (`None`: QEMU's default, up to 1 GiB).
    pub tcg_tb_mib: Option<u64>,
    pub vcpus: u32,
    /// Guest RAM in MiB, in a shared memfd (vhost-user devices map it).
    pub memory_mib: u64,
    /// The guest kernel (ELF vmlinux, or a bzImage).
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub cmdline: KernelCmdline,
    /// Disks, in order: the first is the guest's `/dev/vda`.
    pub drives: Vec<Drive>,
    /// vhost-device-vsock's vhost-user socket, for the guest's virtio-vsock device.
    pub vhost_vsock: Option<PathBuf>,
    /// Where the guest's serial console goes.
    pub serial: Serial,
    /// The guest's NIC; `None`: the guest has no network device at all.
    pub nic: Option<Nic>,
    pub seccomp: SeccompSandbox,
}

const QEMU: &str = "qemu";
const VHOST: &str = "vhost-device-vsock";
/// Most vCPUs a microvm takes here (one per host CPU is plenty for a sandbox).
pub const MAX_VCPUS: u32 = 64;

fn utf8<'a>(program: &'static str, path: &'a Path) -> Result<&'a str, CmdlineError> {
    path.to_str().ok_or_else(|| CmdlineError::Path {
        program,
        path: path.to_owned(),
        reason: "it is not valid UTF-8",
    })
}

/// A path as the value of a QEMU option (`path=…`): commas doubled, QEMU's escape.
fn qemu_value(path: &Path) -> Result<String, CmdlineError> {
    Ok(utf8(QEMU, path)?.replace(',', ",,"))
}

fn check_id(id: &str) -> Result<(), CmdlineError> {
    if id.is_empty()
        || id.len() > 32
        || !id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-'))
    {
        return Err(CmdlineError::Id(id.to_owned()));
    }
    Ok(())
}

fn range(what: &'static str, value: u64, min: u64, max: u64) -> Result<(), CmdlineError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(CmdlineError::Range {
            what,
            value,
            min,
            max,
        })
    }
}

impl QemuCommand {
    /// The arguments after the program name.
    pub fn argv(&self) -> Result<Vec<String>, CmdlineError> {
        range("vCPUs", u64::from(self.vcpus), 1, u64::from(MAX_VCPUS))?;
        range("guest memory (MiB)", self.memory_mib, 16, 1 << 20)?;
        let mib = self.memory_mib;
        let mut a: Vec<String> = Vec::new();
        let mut push = |items: &[&str]| a.extend(items.iter().map(|s| (*s).to_owned()));
        // The microvm machine: no PCI, no firmware option ROMs; RAM from the memfd below.
        push(&["-M", "microvm,x-option-roms=off,rtc=on,memory-backend=mem"]);
        let accel = match (self.accel, self.tcg_tb_mib) {
            (Accel::Kvm, _) => "kvm".to_owned(),
            (Accel::Tcg, None) => "tcg,thread=multi".to_owned(),
            (Accel::Tcg, Some(tb)) => {
                range("TCG translation cache (MiB)", tb, 1, 2048)?;
                format!("tcg,thread=multi,tb-size={tb}")
            }
        };
        push(&["-accel", &accel]);
        push(&[
            "-cpu",
            match self.accel {
                Accel::Kvm => "host",
                Accel::Tcg => "max",
            },
        ]);
        push(&["-smp", &self.vcpus.to_string(), "-m", &format!("{mib}M")]);
        // share=on: vhost-device-vsock maps guest memory; without it CONNECTs go unanswered.
        push(&[
            "-object",
            &format!("memory-backend-memfd,id=mem,size={mib}M,share=on"),
        ]);
        // No default devices (a monitor would land on stdio), no config files, no display; the
        // guest's reboot ends QEMU.
        push(&[
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-no-reboot",
        ]);
        let serial = match &self.serial {
            Serial::File(path) => format!("file,id=serial0,path={}", qemu_value(path)?),
            Serial::SocketFd(fd) => {
                range(
                    "serial console descriptor",
                    u64::try_from(*fd).unwrap_or(0),
                    3,
                    i32::MAX as u64,
                )?;
                format!("socket,id=serial0,fd={fd}")
            }
        };
        push(&["-chardev", &serial, "-serial", "chardev:serial0"]);
        for d in &self.drives {
            check_id(&d.id)?;
            let ro = if d.read_only { ",readonly=on" } else { "" };
            push(&[
                "-drive",
                &format!(
                    "file={},format=raw,if=none,id={}{ro}",
                    qemu_value(&d.path)?,
                    d.id
                ),
                "-device",
                &format!("virtio-blk-device,drive={}", d.id),
            ]);
        }
        if let Some(sock) = &self.vhost_vsock {
            push(&[
                "-chardev",
                &format!("socket,id=vsock0,path={}", qemu_value(sock)?),
                "-device",
                "vhost-user-vsock-device,chardev=vsock0",
            ]);
        }
        if let Some(nic) = &self.nic {
            range(
                "tap descriptor",
                u64::try_from(nic.tap_fd).unwrap_or(0),
                3,
                i32::MAX as u64,
            )?;
            push(&[
                "-netdev",
                // Nothing else: QEMU refuses ifname=, script=, vnet_hdr= and the like with fd=
                // (it runs no script, and reads the descriptor's vnet_hdr flag itself).
                &format!("tap,id=net0,fd={}", nic.tap_fd),
                "-device",
                "virtio-net-device,netdev=net0",
            ]);
        }
        push(&[
            "-kernel",
            utf8(QEMU, &self.kernel)?,
            "-initrd",
            utf8(QEMU, &self.initrd)?,
            "-append",
            &self.cmdline.render()?,
        ]);
        push(&["-sandbox", &self.seccomp.arg()]);
        Ok(a)
    }
}

/// vhost-device-vsock for one VM: the vhost-user socket QEMU connects to, and the hybrid-vsock
/// socket the host dials (`CONNECT <port>`). It deletes whatever is at `uds` when it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VhostVsock {
    /// The guest's CID (each VM has its own vhost-device-vsock, so every guest can be 3).
    pub guest_cid: u32,
    pub socket: PathBuf,
    pub uds: PathBuf,
}

impl VhostVsock {
    /// The arguments after the program name. Its option parser splits on `,` and `=` with no
    /// escape, so paths holding either are refused.
    pub fn argv(&self) -> Result<Vec<String>, CmdlineError> {
        range(
            "guest CID",
            u64::from(self.guest_cid),
            3,
            u64::from(u32::MAX - 1),
        )?;
        let plain = |p: &Path| -> Result<String, CmdlineError> {
            let s = utf8(VHOST, p)?;
            if s.contains([',', '=']) {
                return Err(CmdlineError::Path {
                    program: VHOST,
                    path: p.to_owned(),
                    reason: "it holds ',' or '=', which vhost-device-vsock cannot escape",
                });
            }
            Ok(s.to_owned())
        };
        Ok(vec![
            "--vm".to_owned(),
            format!(
                "guest-cid={},socket={},uds-path={}",
                self.guest_cid,
                plain(&self.socket)?,
                plain(&self.uds)?
            ),
        ])
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn command() -> QemuCommand {
        QemuCommand {
            accel: Accel::Tcg,
            tcg_tb_mib: Some(64),
            vcpus: 1,
            memory_mib: 256,
            kernel: "/img/vmlinux".into(),
            initrd: "/img/initramfs.cpio".into(),
            cmdline: KernelCmdline::guest(Some(2_596_000), 512, 512).unwrap(),
            drives: vec![Drive {
                id: "root".into(),
                path: "/img/rootfs.img".into(),
                read_only: true,
            }],
            vhost_vsock: Some("/run/lg/sandboxes/a/vhost.sock".into()),
            serial: Serial::SocketFd(7),
            nic: None,
            seccomp: SeccompSandbox::STRICT,
        }
    }

    #[test]
    fn a_nic_is_a_virtio_net_device_on_the_inherited_tap() {
        let mut c = command();
        c.nic = Some(Nic { tap_fd: 9 });
        let argv = c.argv().unwrap();
        let at = argv.iter().position(|a| a == "-netdev").unwrap();
        assert_eq!(
            argv[at..at + 4],
            [
                "-netdev",
                "tap,id=net0,fd=9",
                "-device",
                "virtio-net-device,netdev=net0"
            ]
        );
        // Without one, no network device of any kind (-nodefaults: not even QEMU's default NIC).
        let argv = command().argv().unwrap();
        assert!(!argv.iter().any(|a| a.contains("net")), "{argv:?}");
        for fd in [-1, 0, 2] {
            let mut c = command();
            c.nic = Some(Nic { tap_fd: fd });
            assert!(matches!(c.argv(), Err(CmdlineError::Range { .. })), "{fd}");
        }
    }

    #[test]
    fn the_tcg_argv_is_exactly_the_verified_recipe() {
        let argv = command().argv().unwrap();
        let expected = [
            "-M",
            "microvm,x-option-roms=off,rtc=on,memory-backend=mem",
            "-accel",
            "tcg,thread=multi,tb-size=64",
            "-cpu",
            "max",
            "-smp",
            "1",
            "-m",
            "256M",
            "-object",
            "memory-backend-memfd,id=mem,size=256M,share=on",
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-no-reboot",
            "-chardev",
            "socket,id=serial0,fd=7",
            "-serial",
            "chardev:serial0",
            "-drive",
            "file=/img/rootfs.img,format=raw,if=none,id=root,readonly=on",
            "-device",
            "virtio-blk-device,drive=root",
            "-chardev",
            "socket,id=vsock0,path=/run/lg/sandboxes/a/vhost.sock",
            "-device",
            "vhost-user-vsock-device,chardev=vsock0",
            "-kernel",
            "/img/vmlinux",
            "-initrd",
            "/img/initramfs.cpio",
            "-append",
            "console=ttyS0 reboot=t panic=-1 tsc=reliable quiet tsc_early_khz=2596000 \
             luminaguard.scratch_mb=512 luminaguard.pids=512",
            "-sandbox",
            "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
        ];
        assert_eq!(argv, expected);
    }

    #[test]
    fn kvm_uses_the_host_cpu_and_no_tcg_options() {
        let mut c = command();
        c.accel = Accel::Kvm;
        let argv = c.argv().unwrap();
        let after = |flag: &str| {
            let i = argv.iter().position(|a| a == flag).unwrap();
            argv[i + 1].clone()
        };
        assert_eq!(after("-accel"), "kvm");
        assert_eq!(after("-cpu"), "host");
    }

    #[test]
    fn a_writable_drive_has_no_readonly_flag_and_drives_keep_their_order() {
        let mut c = command();
        c.drives.push(Drive {
            id: "scratch".into(),
            path: "/run/lg/scratch.img".into(),
            read_only: false,
        });
        let drives: Vec<String> = c
            .argv()
            .unwrap()
            .windows(2)
            .filter(|w| w[0] == "-drive")
            .map(|w| w[1].clone())
            .collect();
        assert_eq!(
            drives,
            [
                "file=/img/rootfs.img,format=raw,if=none,id=root,readonly=on",
                "file=/run/lg/scratch.img,format=raw,if=none,id=scratch",
            ]
        );
    }

    #[test]
    fn commas_in_paths_are_escaped_for_qemu() {
        let mut c = command();
        c.serial = Serial::File("/tmp/a,b/console.log".into());
        c.drives[0].path = "/x,y.img".into();
        let argv = c.argv().unwrap();
        assert!(argv.contains(&"file,id=serial0,path=/tmp/a,,b/console.log".to_owned()));
        assert!(argv.contains(&"file=/x,,y.img,format=raw,if=none,id=root,readonly=on".to_owned()));
    }

    #[test]
    fn the_serial_console_descriptor_must_not_be_stdio() {
        for fd in [-1, 0, 2] {
            let mut c = command();
            c.serial = Serial::SocketFd(fd);
            assert!(matches!(c.argv(), Err(CmdlineError::Range { .. })), "{fd}");
        }
    }

    #[test]
    fn bad_ids_and_sizes_are_refused() {
        let mut c = command();
        c.drives[0].id = "root,file=/etc/shadow".into();
        assert!(matches!(c.argv(), Err(CmdlineError::Id(_))));
        let mut c = command();
        c.vcpus = 0;
        assert!(matches!(c.argv(), Err(CmdlineError::Range { .. })));
        let mut c = command();
        c.memory_mib = 1;
        assert!(matches!(c.argv(), Err(CmdlineError::Range { .. })));
    }

    #[test]
    fn the_guest_kernel_cmdline_without_a_tsc_frequency() {
        let c = KernelCmdline::guest(None, 64, 100).unwrap();
        assert_eq!(
            c.render().unwrap(),
            "console=ttyS0 reboot=t panic=-1 tsc=reliable quiet luminaguard.scratch_mb=64 luminaguard.pids=100"
        );
        assert_eq!(c.get("luminaguard.scratch_mb"), Some("64"));
        assert_eq!(c.get("tsc_early_khz"), None);
    }

    #[test]
    fn kernel_params_that_would_inject_are_refused() {
        for (key, value) in [
            ("init", "/bin/sh rdinit=/x"),
            ("a", "\"quoted\""),
            ("a", ""),
            ("a b", "1"),
            ("", "1"),
            ("a", "tab\there"),
        ] {
            assert!(
                KernelCmdline::new().set(key, value).is_err(),
                "{key:?}={value:?} must be refused"
            );
        }
        assert!(KernelCmdline::new().flag("no space").is_err());
    }

    #[test]
    fn an_overlong_kernel_cmdline_is_refused() {
        let mut c = KernelCmdline::new();
        for i in 0..20 {
            c = c.set(&format!("p{i}"), "x".repeat(200)).unwrap();
        }
        assert!(matches!(
            c.render(),
            Err(CmdlineError::KernelCmdlineTooLong { .. })
        ));
    }

    #[test]
    fn the_vhost_argv_and_paths_it_cannot_escape() {
        let v = VhostVsock {
            guest_cid: 3,
            socket: "/run/lg/a/vhost.sock".into(),
            uds: "/run/lg/a/vsock.sock".into(),
        };
        assert_eq!(
            v.argv().unwrap(),
            [
                "--vm",
                "guest-cid=3,socket=/run/lg/a/vhost.sock,uds-path=/run/lg/a/vsock.sock"
            ]
        );
        for bad in ["/run/a,b/v.sock", "/run/a=b/v.sock"] {
            let v = VhostVsock {
                uds: bad.into(),
                ..v.clone()
            };
            assert!(matches!(v.argv(), Err(CmdlineError::Path { .. })), "{bad}");
        }
        let v = VhostVsock { guest_cid: 2, ..v };
        assert!(v.argv().is_err(), "CID 2 is the host");
    }
}
