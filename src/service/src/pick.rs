//! What `auto` picks: the strongest isolation that is fast on this host (design brief §3) —
//! Firecracker with KVM, else QEMU with KVM, else the process sandbox. QEMU under TCG is real
//! isolation but seconds per boot, so `auto` never picks it; `--backend qemu` does. One rule,
//! used by every create and by `doctor`, which shows the pick and why.

use luminaguard_core::BackendChoice;

/// What `auto` looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostFacts {
    /// KVM can run a real guest (`luminaguard_qemu::kvm::probe`).
    pub kvm: bool,
    /// The image a microVM would boot exists.
    pub image: bool,
    /// That image has an uncompressed ELF `vmlinux` (Firecracker boots nothing else on x86_64).
    pub vmlinux: bool,
    /// Firecracker is found (`LUMINAGUARD_FIRECRACKER` or `PATH`).
    pub firecracker: bool,
    /// QEMU and vhost-device-vsock are found.
    pub qemu: bool,
}

/// The backend `auto` runs, and why.
pub fn auto_backend(f: HostFacts) -> (BackendChoice, &'static str) {
    if !f.kvm {
        return (
            BackendChoice::Process,
            "KVM cannot run guests here (QEMU under TCG runs with --backend qemu)",
        );
    }
    if !f.image {
        return (BackendChoice::Process, "no image for a microVM");
    }
    if f.firecracker && f.vmlinux {
        return (
            BackendChoice::Firecracker,
            "KVM runs guests, Firecracker is found and the image has a vmlinux",
        );
    }
    if f.qemu {
        return (
            BackendChoice::Qemu,
            if f.firecracker {
                "KVM runs guests; the image has no vmlinux for Firecracker, QEMU boots it"
            } else {
                "KVM runs guests and Firecracker is not found, QEMU is"
            },
        );
    }
    (
        BackendChoice::Process,
        "KVM runs guests but neither Firecracker (with a vmlinux image) nor QEMU can boot one",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: HostFacts = HostFacts {
        kvm: true,
        image: true,
        vmlinux: true,
        firecracker: true,
        qemu: true,
    };

    #[test]
    fn firecracker_then_qemu_with_kvm_then_the_process_sandbox() {
        let pick = |f| auto_backend(f).0;
        assert_eq!(pick(ALL), BackendChoice::Firecracker);
        let no_fc = HostFacts {
            firecracker: false,
            ..ALL
        };
        assert_eq!(pick(no_fc), BackendChoice::Qemu);
        let no_vmlinux = HostFacts {
            vmlinux: false,
            ..ALL
        };
        assert_eq!(pick(no_vmlinux), BackendChoice::Qemu);
        assert_eq!(
            pick(HostFacts { kvm: false, ..ALL }),
            BackendChoice::Process
        );
        assert_eq!(
            pick(HostFacts {
                image: false,
                ..ALL
            }),
            BackendChoice::Process
        );
        let nothing_boots = HostFacts {
            firecracker: false,
            qemu: false,
            ..ALL
        };
        assert_eq!(pick(nothing_boots), BackendChoice::Process);
        // TCG is never picked, whatever is installed.
        for f in [ALL, no_fc, no_vmlinux] {
            let (b, why) = auto_backend(HostFacts { kvm: false, ..f });
            assert_eq!(b, BackendChoice::Process, "{why}");
        }
    }
}
