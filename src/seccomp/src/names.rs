//! System call names for the audit, for the calls profiles name (x86_64 numbers from libc).

macro_rules! table {
    ($($name:ident),* $(,)?) => {
        /// `(number, SYS_name)` of every system call a built-in profile names.
        const NAMES: &[(i64, &str)] = &[$((libc::$name, stringify!($name))),*];
    };
}

table!(
    SYS_ptrace,
    SYS_process_vm_readv,
    SYS_process_vm_writev,
    SYS_mount,
    SYS_umount2,
    SYS_pivot_root,
    SYS_unshare,
    SYS_setns,
    SYS_kexec_load,
    SYS_kexec_file_load,
    SYS_init_module,
    SYS_finit_module,
    SYS_delete_module,
    SYS_bpf,
    SYS_perf_event_open,
    SYS_keyctl,
    SYS_add_key,
    SYS_request_key,
    SYS_io_uring_setup,
    SYS_io_uring_enter,
    SYS_io_uring_register,
    SYS_userfaultfd,
    SYS_reboot,
    SYS_swapon,
    SYS_swapoff,
    SYS_acct,
    SYS_quotactl,
    SYS_fsopen,
    SYS_fsconfig,
    SYS_fsmount,
    SYS_fspick,
    SYS_move_mount,
    SYS_open_tree,
    SYS_mount_setattr,
    SYS_open_by_handle_at,
    SYS_name_to_handle_at,
    SYS_iopl,
    SYS_ioperm,
    SYS_settimeofday,
    SYS_clock_settime,
    SYS_clock_adjtime,
    SYS_adjtimex,
    SYS_syslog,
    SYS_vhangup,
    SYS_uselib,
    SYS_lookup_dcookie,
    SYS_socket,
    SYS_socketpair,
    SYS_clone,
    SYS_clone3,
);

/// The name of system call `nr`, or `syscall <nr>` for one no profile names.
pub fn name(nr: i64) -> String {
    NAMES.iter().find(|(n, _)| *n == nr).map_or_else(
        || format!("syscall {nr}"),
        |(_, name)| strip(name).to_owned(),
    )
}

fn strip(name: &str) -> &str {
    name.strip_prefix("SYS_").unwrap_or(name)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    #[test]
    fn every_syscall_a_profile_names_has_a_name() {
        for (profile, json) in crate::FRAGMENTS {
            let v: serde_json::Value = serde_json::from_str(json).unwrap();
            for filter in v.as_object().unwrap().values() {
                for rule in filter["filter"].as_array().unwrap() {
                    let s = rule["syscall"].as_str().unwrap();
                    assert!(
                        super::NAMES.iter().any(|(_, n)| super::strip(n) == s),
                        "profile {profile}: add {s} to the audit's name table"
                    );
                }
            }
        }
        assert_eq!(super::name(libc::SYS_mount), "mount");
        assert_eq!(super::name(-5), "syscall -5");
    }
}
