//! The one clock every process of a run agrees on.
//!
//! Workers are separate processes, so `std::time::Instant` values cannot be compared
//! across them. `CLOCK_MONOTONIC` can: on one host every process reads the same
//! counter (network namespaces do not change it, and the clock-jump shim only moves
//! `CLOCK_REALTIME`). Every timestamp in a history is nanoseconds of this clock.

use std::time::{Duration, Instant};

use nix::time::{ClockId, clock_gettime};

/// Nanoseconds of `CLOCK_MONOTONIC`, comparable across the processes of one host.
pub fn mono_ns() -> u64 {
    // CLOCK_MONOTONIC cannot fail on Linux for a valid clock id; 0 would be obviously
    // wrong in a history rather than a silent lie.
    clock_gettime(ClockId::CLOCK_MONOTONIC)
        .map(|t| {
            u64::try_from(t.tv_sec()).unwrap_or(0) * 1_000_000_000
                + u64::try_from(t.tv_nsec()).unwrap_or(0)
        })
        .unwrap_or(0)
}

/// Converts an `Instant` of this process to [`mono_ns`]. On Linux `Instant` *is*
/// `CLOCK_MONOTONIC`, but its raw value is private, so we pair one reading of each.
pub fn instant_to_mono_ns(at: Instant) -> u64 {
    let (now_i, now_ns) = (Instant::now(), mono_ns());
    if at >= now_i {
        now_ns + nanos(at - now_i)
    } else {
        now_ns.saturating_sub(nanos(now_i - at))
    }
}

/// A duration in nanoseconds, saturating.
pub fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Nanoseconds as milliseconds, for reports.
pub fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instant_and_mono_agree() {
        let before = mono_ns();
        let converted = instant_to_mono_ns(Instant::now() + Duration::from_millis(50));
        let after = mono_ns();
        assert!(converted >= before + 49_000_000, "{converted} vs {before}");
        assert!(converted <= after + 51_000_000, "{converted} vs {after}");
    }
}
