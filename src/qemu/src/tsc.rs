//! The host's TSC frequency, for the guest's `tsc_early_khz=`: under TCG the guest's TSC is the
//! host's, and a guest kernel that calibrates it against the emulated PIT hangs about one boot
//! in four here. The kernel's own figure (`/sys/devices/system/cpu/cpu0/tsc_freq_khz`, present on
//! some kernels) is used when there is one; otherwise the TSC is measured against
//! `CLOCK_MONOTONIC` over [`MEASURE_FOR`].

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

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_host_tsc_is_found_and_plausible() {
        let (khz, source) = host_tsc_khz().unwrap_or((0, TscSource::Measured));
        eprintln!("host TSC: {khz} kHz ({source:?})");
        // Any x86_64 TSC made this century runs between 100 MHz and 10 GHz.
        assert!((100_000..10_000_000).contains(&khz), "{khz} kHz");
    }
}
