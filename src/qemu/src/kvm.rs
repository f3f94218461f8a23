//! Can KVM really run a guest here? `/dev/kvm` existing says little: under some hypervisors
//! (PVM, nested set-ups without the right features) it opens, creates VMs, and then fails the
//! moment a vCPU runs. So the probe runs one: a VM with a little memory holding what every x86
//! kernel's boot path does — real-mode code that loads a GDT, enters 32-bit protected mode, builds
//! identity page tables, enables PAE, `EFER.LME` and paging, far-jumps into 64-bit long mode, sets
//! `eax = 0x1235` and halts — one vCPU pointed at it, and `KVM_RUN`. KVM is usable only if the vCPU stops on `hlt` (`KVM_EXIT_HLT`) with
//! `eax == 0x1235`; anything else — an open, ioctl or run error, another exit, a wrong result, no
//! answer within [`PROBE_TIMEOUT`] — makes it unusable, with the reason.
//!
//! Real-mode code alone is not enough: on a PVM host (`kvm_pvm`), a vCPU runs real-mode code,
//! and even the switch to protected mode, to `hlt`, while an ordinary kernel hangs right after
//! its real-mode setup code.

use std::ffi::CString;
use std::path::Path;
use std::time::Duration;

use kvm_bindings::{kvm_regs, kvm_userspace_memory_region};
use kvm_ioctls::{Kvm, VcpuExit};

/// What the probe found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kvm", content = "reason", rename_all = "lowercase")]
pub enum KvmProbe {
    /// A vCPU ran real code to `hlt` with the right result.
    Usable,
    /// Why not.
    Unusable(String),
}

impl KvmProbe {
    pub fn is_usable(&self) -> bool {
        matches!(self, Self::Usable)
    }
}

impl std::fmt::Display for KvmProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Usable => f.write_str("usable (a test vCPU ran to hlt)"),
            Self::Unusable(why) => write!(f, "unusable: {why}"),
        }
    }
}

/// The device the probe opens by default.
pub const KVM_DEVICE: &str = "/dev/kvm";
/// How long the probe's vCPU may take to reach `hlt` (a working KVM takes microseconds).
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the code goes in guest-physical memory (and where the vCPU starts).
const CODE_ADDR: u64 = 0x1000;
/// Guest memory, from guest-physical 0: the code page and the three page-table pages.
const MEM: usize = 0x10000;
/// Loaded at [`CODE_ADDR`] and entered in real mode; what a kernel's boot path does, in
/// miniature (GNU as, `.code16`, `.code32`, `.code64`):
///
/// ```text
/// 0x00 cli ; lgdtl 0x1098                          ; the GDT descriptor below
/// 0x07 mov %cr0,%eax ; or $1,%al ; mov %eax,%cr0   ; protected mode
/// 0x0f ljmpl $0x08,$0x1017                         ; 32-bit code
/// 0x17 mov $0x10,%ax ; mov %ax,%ds ; %es ; %ss
/// 0x21 identity-map the first 2 MiB: PML4 0x2000 -> PDPT 0x3000 -> PD 0x4000 (one 2 MiB page)
/// 0x3f CR4.PAE ; CR3 = 0x2000 ; EFER.LME (rdmsr/wrmsr 0xc0000080) ; CR0.PG   ; long mode
/// 0x69 ljmp $0x18,$0x1070                          ; 64-bit code
/// 0x70 mov $0x1235,%eax ; hlt
/// 0x78 GDT: null, flat 32-bit code (0x08), flat data (0x10), 64-bit code (0x18)
/// 0x98 GDT descriptor: limit 31, base 0x1078
/// ```
const CODE: [u8; 158] = [
    0xfa, 0x66, 0x0f, 0x01, 0x16, 0x98, 0x10, 0x0f, 0x20, 0xc0, 0x0c, 0x01, 0x0f, 0x22, 0xc0, 0x66,
    0xea, 0x17, 0x10, 0x00, 0x00, 0x08, 0x00, 0x66, 0xb8, 0x10, 0x00, 0x8e, 0xd8, 0x8e, 0xc0, 0x8e,
    0xd0, 0xc7, 0x05, 0x00, 0x20, 0x00, 0x00, 0x03, 0x30, 0x00, 0x00, 0xc7, 0x05, 0x00, 0x30, 0x00,
    0x00, 0x03, 0x40, 0x00, 0x00, 0xc7, 0x05, 0x00, 0x40, 0x00, 0x00, 0x83, 0x00, 0x00, 0x00, 0x0f,
    0x20, 0xe0, 0x83, 0xc8, 0x20, 0x0f, 0x22, 0xe0, 0xb8, 0x00, 0x20, 0x00, 0x00, 0x0f, 0x22, 0xd8,
    0xb9, 0x80, 0x00, 0x00, 0xc0, 0x0f, 0x32, 0x0d, 0x00, 0x01, 0x00, 0x00, 0x0f, 0x30, 0x0f, 0x20,
    0xc0, 0x0d, 0x00, 0x00, 0x00, 0x80, 0x0f, 0x22, 0xc0, 0xea, 0x70, 0x10, 0x00, 0x00, 0x18, 0x00,
    0xb8, 0x35, 0x12, 0x00, 0x00, 0xf4, 0x66, 0x90, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0xff, 0xff, 0x00, 0x00, 0x00, 0x9a, 0xcf, 0x00, 0xff, 0xff, 0x00, 0x00, 0x00, 0x92, 0xcf, 0x00,
    0xff, 0xff, 0x00, 0x00, 0x00, 0x9a, 0xaf, 0x00, 0x1f, 0x00, 0x78, 0x10, 0x00, 0x00,
];
const EXPECTED_AX: u64 = 0x1235;

/// How the probe's vCPU run ended, before judging it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunOutcome {
    /// `KVM_EXIT_HLT`, with the vCPU's `rax` afterwards.
    Halted { rax: u64 },
    /// Another exit (its debug form).
    OtherExit(String),
    /// A step failed: which, and the error.
    Failed { step: &'static str, error: String },
}

/// The verdict on an outcome.
pub fn judge(outcome: RunOutcome) -> KvmProbe {
    match outcome {
        RunOutcome::Halted { rax } if rax & 0xffff_ffff == EXPECTED_AX => KvmProbe::Usable,
        RunOutcome::Halted { rax } => KvmProbe::Unusable(format!(
            "the test vCPU halted with eax={:#x}, expected {EXPECTED_AX:#x}: guest code does \
             not execute correctly",
            rax & 0xffff_ffff
        )),
        RunOutcome::OtherExit(exit) => KvmProbe::Unusable(format!(
            "the test vCPU did not reach hlt: it exited with {exit} (KVM cannot run guests on \
             this host)"
        )),
        RunOutcome::Failed { step, error } => KvmProbe::Unusable(format!("{step}: {error}")),
    }
}

/// Probes [`KVM_DEVICE`]. Blocking (up to [`PROBE_TIMEOUT`]); run it off the async executor.
pub fn probe() -> KvmProbe {
    probe_device(Path::new(KVM_DEVICE))
}

/// Probes the KVM device at `path`.
pub fn probe_device(path: &Path) -> KvmProbe {
    if !path.exists() {
        return KvmProbe::Unusable(format!("{} does not exist", path.display()));
    }
    let path = path.to_owned();
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    // On a thread: a vCPU that never exits must not hang the caller. (Such a thread stays
    // blocked in KVM_RUN; it is one thread, once per process.)
    let spawned = std::thread::Builder::new()
        .name("lg-kvm-probe".into())
        .spawn(move || {
            let _ = tx.send(run_probe(&path));
        });
    if let Err(e) = spawned {
        return KvmProbe::Unusable(format!("cannot start the probe thread: {e}"));
    }
    match rx.recv_timeout(PROBE_TIMEOUT) {
        Ok(outcome) => judge(outcome),
        Err(_) => KvmProbe::Unusable(format!(
            "the test vCPU did not halt within {PROBE_TIMEOUT:?}"
        )),
    }
}

/// Anonymous memory for the guest ([`MEM`] bytes, zeroed), unmapped on drop.
struct GuestPage {
    addr: *mut libc::c_void,
}

impl GuestPage {
    fn new() -> std::io::Result<Self> {
        // SAFETY: an anonymous private mapping of fresh memory; no existing memory is touched.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                MEM,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Self { addr })
    }

    /// Copies `bytes` to guest-physical `at` (as much as fits).
    fn write(&mut self, at: usize, bytes: &[u8]) {
        let n = bytes.len().min(MEM.saturating_sub(at));
        // SAFETY: the mapping is MEM bytes, writable, and owned by self; at + n <= MEM.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.addr.cast::<u8>().add(at), n) };
    }
}

impl Drop for GuestPage {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`, which nothing else refers to (the VM
        // that used it is dropped before this page; see `run_probe`).
        unsafe { libc::munmap(self.addr, MEM) };
    }
}

fn run_probe(path: &Path) -> RunOutcome {
    let failed = |step: &'static str| {
        move |e: kvm_ioctls::Error| RunOutcome::Failed {
            step,
            error: e.to_string(),
        }
    };
    let Ok(cpath) = CString::new(path.as_os_str().as_encoded_bytes()) else {
        return RunOutcome::Failed {
            step: "open the KVM device",
            error: "path holds a NUL byte".into(),
        };
    };
    // Declared first, so it is dropped last: after the VM that maps it.
    let mut page = match GuestPage::new() {
        Ok(p) => p,
        Err(e) => {
            return RunOutcome::Failed {
                step: "map the test guest's memory",
                error: e.to_string(),
            };
        }
    };
    page.write(CODE_ADDR as usize, &CODE);
    let result = (|| {
        let kvm = Kvm::new_with_path(&cpath).map_err(failed("open the KVM device"))?;
        let vm = kvm.create_vm().map_err(failed("KVM_CREATE_VM"))?;
        let region = kvm_userspace_memory_region {
            slot: 0,
            guest_phys_addr: 0,
            memory_size: MEM as u64,
            userspace_addr: page.addr as u64,
            flags: 0,
        };
        // SAFETY: the region is the live mapping `page`, which outlives `vm` (dropped at the end
        // of this closure, before `page`).
        unsafe { vm.set_user_memory_region(region) }
            .map_err(failed("KVM_SET_USER_MEMORY_REGION"))?;
        let mut vcpu = vm.create_vcpu(0).map_err(failed("KVM_CREATE_VCPU"))?;
        let mut sregs = vcpu.get_sregs().map_err(failed("KVM_GET_SREGS"))?;
        sregs.cs.base = 0;
        sregs.cs.selector = 0;
        vcpu.set_sregs(&sregs).map_err(failed("KVM_SET_SREGS"))?;
        let regs = kvm_regs {
            rip: CODE_ADDR,
            rflags: 2,
            ..Default::default()
        };
        vcpu.set_regs(&regs).map_err(failed("KVM_SET_REGS"))?;
        let exit = match vcpu.run() {
            Ok(VcpuExit::Hlt) => None,
            Ok(other) => Some(format!("{other:?}")),
            Err(e) => return Err(failed("KVM_RUN")(e)),
        };
        if let Some(exit) = exit {
            return Ok(RunOutcome::OtherExit(exit));
        }
        let regs = vcpu.get_regs().map_err(failed("KVM_GET_REGS"))?;
        Ok(RunOutcome::Halted { rax: regs.rax })
    })();
    result.unwrap_or_else(|e| e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_halt_with_the_right_result_is_usable() {
        assert_eq!(judge(RunOutcome::Halted { rax: 0x1235 }), KvmProbe::Usable);
        assert_eq!(
            judge(RunOutcome::Halted {
                rax: 0xffff_0000_0000_1235
            }),
            KvmProbe::Usable,
            "only eax counts"
        );
        assert!(!judge(RunOutcome::Halted { rax: 0x1234 }).is_usable());
        let other = judge(RunOutcome::OtherExit("InternalError".into()));
        assert!(matches!(&other, KvmProbe::Unusable(r) if r.contains("InternalError")));
        let failed = judge(RunOutcome::Failed {
            step: "KVM_RUN",
            error: "Invalid argument".into(),
        });
        assert_eq!(
            failed,
            KvmProbe::Unusable("KVM_RUN: Invalid argument".into())
        );
    }

    #[test]
    fn a_missing_device_is_unusable_and_says_so() {
        let p = probe_device(Path::new("/nonexistent/kvm"));
        assert_eq!(
            p,
            KvmProbe::Unusable("/nonexistent/kvm does not exist".into())
        );
    }

    #[test]
    fn the_real_probe_gives_a_definite_answer() {
        let p = probe();
        eprintln!("KVM on this host: {p}");
        if let KvmProbe::Unusable(reason) = &p {
            assert!(!reason.is_empty());
        }
        // Asked twice, the host answers the same way.
        assert_eq!(p.is_usable(), probe().is_usable());
    }
}
