//! `Info`: facts about the guest the host cannot see from outside.

use luminaguard_protocol::message::{ErrorCode, ErrorReply, GuestInfo, Reply};

/// Parses `MemAvailable:` (kB) out of `/proc/meminfo` text.
pub fn mem_available(meminfo: &str) -> Option<u64> {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| kb * 1024)
}

pub async fn info() -> Result<Reply, ErrorReply> {
    let uts = nix::sys::utsname::uname()
        .map_err(|e| ErrorReply::new(ErrorCode::Io, format!("uname: {e}")))?;
    let si = nix::sys::sysinfo::sysinfo()
        .map_err(|e| ErrorReply::new(ErrorCode::Io, format!("sysinfo: {e}")))?;
    let meminfo = tokio::fs::read_to_string("/proc/meminfo")
        .await
        .unwrap_or_default();
    Ok(Reply::Info(GuestInfo {
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        kernel_release: uts.release().to_string_lossy().into_owned(),
        hostname: uts.nodename().to_string_lossy().into_owned(),
        pid: std::process::id(),
        is_pid1: std::process::id() == 1,
        uptime_ms: u64::try_from(si.uptime().as_millis()).unwrap_or(u64::MAX),
        mem_total_bytes: si.ram_total(),
        mem_available_bytes: mem_available(&meminfo).unwrap_or_else(|| si.ram_unused()),
        cpus: std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1),
    }))
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_meminfo() {
        let text = "MemTotal:       16384 kB\nMemFree:  100 kB\nMemAvailable:    2048 kB\n";
        assert_eq!(super::mem_available(text), Some(2048 * 1024));
        assert_eq!(super::mem_available("MemTotal: 1 kB\n"), None);
    }
}
