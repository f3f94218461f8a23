//! The host's TSC frequency, for the guest's `tsc_early_khz=`: under TCG the guest's TSC is the
//! host's, and a guest kernel that calibrates it against the emulated PIT hangs about one boot
//! in four here. The kernel's own figure (`/sys/devices/system/cpu/cpu0/tsc_freq_khz`, present on
//! some kernels) is used when there is one; otherwise the TSC is measured against
//! `CLOCK_MONOTONIC` over [`MEASURE_FOR`]. [`host_tsc_khz_cached`] keeps a measured figure in a
//! file for the rest of the host's boot, so that not every command that starts a VM measures.

use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const SYSFS: &str = "/sys/devices/system/cpu/cpu0/tsc_freq_khz";
/// How long the measurement runs: long enough for a 0.1 % error from timer slack.
pub const MEASURE_FOR: Duration = Duration::from_millis(20);

/// Where a TSC frequency came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TscSource {
    /// The kernel's `tsc_freq_khz`.
    Sysfs,
    /// Counted against the monotonic clock.
    Measured,
}

/// The host TSC frequency in kHz and where it came from; `None` where there is no TSC to speak
/// of (not x86_64) or it did not advance. Computed once per process; the first call blocks for
/// up to [`MEASURE_FOR`].
pub fn host_tsc_khz() -> Option<(u64, TscSource)> {
    static CACHE: OnceLock<Option<(u64, TscSource)>> = OnceLock::new();
    *CACHE.get_or_init(|| {
        #[allow(clippy::disallowed_methods)] // a few bytes of sysfs, once per process
        let sysfs = std::fs::read_to_string(SYSFS).ok();
        match sysfs.as_deref().and_then(parse_khz) {
            Some(khz) => Some((khz, TscSource::Sysfs)),
            None => measure().map(|khz| (khz, TscSource::Measured)),
        }
    })
}

/// The host's boot id: a cached figure is only used within the boot that measured it.
const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";
/// Any x86_64 TSC made this century runs between 100 MHz and 10 GHz; a cached figure outside
/// that is ignored.
const PLAUSIBLE_KHZ: std::ops::Range<u64> = 100_000..10_000_000;

/// Like [`host_tsc_khz`], but a measured figure is also kept in `cache` (a file, written
/// atomically, holding the host's boot id and the figure) and taken from there by later
/// processes of the same boot. Blocking: up to [`MEASURE_FOR`] when nothing is cached, one
/// small read otherwise. A cache that cannot be read or written only costs a measurement.
pub fn host_tsc_khz_cached(cache: &Path) -> Option<(u64, TscSource)> {
    static CACHE: OnceLock<Option<(u64, TscSource)>> = OnceLock::new();
    *CACHE.get_or_init(|| {
        #[allow(clippy::disallowed_methods)] // a few bytes of sysfs and procfs, once per process
        let (sysfs, boot) = (
            std::fs::read_to_string(SYSFS).ok(),
            std::fs::read_to_string(BOOT_ID).ok(),
        );
        if let Some(khz) = sysfs.as_deref().and_then(parse_khz) {
            return Some((khz, TscSource::Sysfs));
        }
        let boot = boot.as_deref().map(str::trim).filter(|b| !b.is_empty());
        #[allow(clippy::disallowed_methods)] // one small file, once per process
        let cached = std::fs::read_to_string(cache).ok();
        if let (Some(boot), Some(text)) = (boot, cached.as_deref())
            && let Some(khz) = parse_cache(text, boot)
        {
            return Some((khz, TscSource::Measured));
        }
        let (khz, source) = host_tsc_khz()?;
        if let (Some(boot), TscSource::Measured) = (boot, source)
            && let Err(e) = write_cache(cache, boot, khz)
        {
            tracing::debug!(path = %cache.display(), error = %e, "cannot cache the TSC frequency");
        }
        Some((khz, source))
    })
}

/// The figure in a cache file's `text`, if it was written in boot `boot` and is plausible.
fn parse_cache(text: &str, boot: &str) -> Option<u64> {
    let (b, khz) = text.trim().split_once(' ')?;
    let khz = parse_khz(khz)?;
    (b == boot && PLAUSIBLE_KHZ.contains(&khz)).then_some(khz)
}

fn write_cache(cache: &Path, boot: &str, khz: u64) -> std::io::Result<()> {
    let tmp = cache.with_extension(format!("tmp{}", std::process::id()));
    #[allow(clippy::disallowed_methods)] // blocking by contract
    std::fs::write(&tmp, format!("{boot} {khz}\n"))?;
    std::fs::rename(&tmp, cache).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

fn parse_khz(text: &str) -> Option<u64> {
    text.trim().parse().ok().filter(|k| *k > 0)
}

#[cfg(target_arch = "x86_64")]
fn measure() -> Option<u64> {
    let t0 = Instant::now();
    // SAFETY: RDTSC has no preconditions on x86_64.
    let c0 = unsafe { core::arch::x86_64::_rdtsc() };
    #[allow(clippy::disallowed_methods)] // a deliberate, bounded wait: this *is* the measurement
    std::thread::sleep(MEASURE_FOR);
    // SAFETY: as above.
    let c1 = unsafe { core::arch::x86_64::_rdtsc() };
    let elapsed = t0.elapsed();
    khz_from(c1.checked_sub(c0)?, elapsed)
}

#[cfg(not(target_arch = "x86_64"))]
fn measure() -> Option<u64> {
    None
}

/// kHz from `cycles` counted over `elapsed`, rounded to the nearest kHz.
fn khz_from(cycles: u64, elapsed: Duration) -> Option<u64> {
    let micros = elapsed.as_micros();
    if cycles == 0 || micros == 0 {
        return None;
    }
    // cycles per µs = MHz; × 1000 = kHz.
    let khz = (u128::from(cycles) * 1000 + micros / 2) / micros;
    u64::try_from(khz).ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::disallowed_methods)]
    use super::*;

    #[test]
    fn frequency_arithmetic() {
        assert_eq!(
            khz_from(2_596_000 * 20, Duration::from_millis(20)),
            Some(2_596_000)
        );
        assert_eq!(khz_from(0, Duration::from_millis(20)), None);
        assert_eq!(khz_from(5, Duration::ZERO), None);
        assert_eq!(parse_khz("2596000\n"), Some(2_596_000));
        assert_eq!(parse_khz("0"), None);
        assert_eq!(parse_khz("x"), None);
    }

    #[test]
    fn a_cached_figure_counts_only_in_its_own_boot_and_when_plausible() {
        assert_eq!(parse_cache("abc 2595800\n", "abc"), Some(2_595_800));
        assert_eq!(parse_cache("abc 2595800\n", "other-boot"), None);
        assert_eq!(parse_cache("abc 5", "abc"), None);
        assert_eq!(parse_cache("abc", "abc"), None);
        assert_eq!(parse_cache("", "abc"), None);
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("tsc");
        write_cache(&cache, "b1", 2_595_800).unwrap();
        let text = std::fs::read_to_string(&cache).unwrap();
        assert_eq!(parse_cache(&text, "b1"), Some(2_595_800));
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary left"
        );
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_host_tsc_is_found_and_plausible() {
        let (khz, source) = host_tsc_khz().unwrap_or((0, TscSource::Measured));
        eprintln!("host TSC: {khz} kHz ({source:?})");
        // Any x86_64 TSC made this century runs between 100 MHz and 10 GHz.
        assert!((100_000..10_000_000).contains(&khz), "{khz} kHz");
    }
}
