//! The Redlock arithmetic: quorum size, clock-drift allowance, validity, retry delays.
//!
//! Pure functions, kept apart from the I/O so they can be tested exhaustively.

use std::time::Duration;

use rand::Rng;

/// How many of `n` nodes make a majority.
pub(crate) fn quorum(n: usize) -> usize {
    n / 2 + 1
}

/// The clock-drift allowance for a TTL: `ttl · drift_factor + 2 ms` (the `+ 2 ms` covers
/// the millisecond granularity of Redis expiry).
pub(crate) fn drift(ttl: Duration, drift_factor: f64) -> Duration {
    Duration::from_secs_f64(ttl.as_secs_f64() * drift_factor) + Duration::from_millis(2)
}

/// How long a lease granted by a majority stays valid, counted from the start of the
/// attempt: `ttl − elapsed − drift`, or `None` when that is not positive.
pub(crate) fn validity(ttl: Duration, elapsed: Duration, drift_factor: f64) -> Option<Duration> {
    ttl.checked_sub(elapsed)?
        .checked_sub(drift(ttl, drift_factor))
        .filter(|v| !v.is_zero())
}

/// `base` plus a uniformly random extra in `[0, jitter]`.
pub(crate) fn jittered(base: Duration, jitter: Duration) -> Duration {
    if jitter.is_zero() {
        return base;
    }
    let extra = rand::rng().random_range(0..=jitter.as_micros().min(u64::MAX as u128) as u64);
    base.saturating_add(Duration::from_micros(extra))
}

/// Exponential back-off with full jitter: uniform in `[0, min(cap, base · 2^attempt)]`.
/// Used when nodes are unavailable, so an outage does not turn into a retry storm.
pub(crate) fn backoff(attempt: u32, base: Duration, cap: Duration) -> Duration {
    let ceiling = base
        .checked_mul(1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX))
        .unwrap_or(cap)
        .min(cap);
    jittered(Duration::ZERO, ceiling)
}

/// The replies of one attempt so far, and whether they already decide it.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    nodes: usize,
    pub(crate) granted: usize,
    pub(crate) held: usize,
    pub(crate) failed: usize,
}

/// What a tally decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// A majority granted.
    Granted,
    /// A majority answered, and enough of them refused that no majority can grant:
    /// someone else holds the lock.
    Contended,
    /// Too few nodes answered to decide anything.
    Unavailable,
}

impl Tally {
    pub(crate) fn new(nodes: usize) -> Self {
        Tally {
            nodes,
            ..Tally::default()
        }
    }

    fn pending(&self) -> usize {
        self.nodes - self.granted - self.held - self.failed
    }

    /// The verdict once it is certain, before every reply is in where possible
    /// ("decide as soon as a majority of grants or of refusals is in").
    pub(crate) fn early(&self) -> Option<Verdict> {
        let q = quorum(self.nodes);
        if self.granted >= q {
            return Some(Verdict::Granted);
        }
        if self.held >= q {
            return Some(Verdict::Contended);
        }
        if self.pending() == 0 {
            return Some(self.last());
        }
        None
    }

    /// The verdict when no more replies will come.
    pub(crate) fn last(&self) -> Verdict {
        let q = quorum(self.nodes);
        if self.granted >= q {
            Verdict::Granted
        } else if self.granted + self.held >= q && self.held > 0 {
            Verdict::Contended
        } else {
            Verdict::Unavailable
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn quorum_is_a_strict_majority() {
        assert_eq!((1..=6).map(quorum).collect::<Vec<_>>(), [1, 2, 2, 3, 3, 4]);
    }

    #[test]
    fn validity_subtracts_elapsed_and_drift() {
        let ttl = Duration::from_millis(10_000);
        // drift = 10 s * 0.01 + 2 ms = 102 ms
        assert_eq!(
            validity(ttl, Duration::from_millis(100), 0.01),
            Some(Duration::from_millis(9_798))
        );
        assert_eq!(validity(ttl, Duration::from_millis(9_898), 0.01), None);
        assert_eq!(validity(ttl, Duration::from_secs(60), 0.01), None);
    }

    #[test]
    fn early_verdicts() {
        let mut t = Tally::new(5);
        t.granted = 2;
        t.held = 1;
        assert_eq!(t.early(), None);
        t.granted = 3;
        assert_eq!(t.early(), Some(Verdict::Granted));
        let mut t = Tally::new(5);
        t.held = 3;
        assert_eq!(t.early(), Some(Verdict::Contended));
        let mut t = Tally::new(3);
        t.failed = 2;
        t.held = 1;
        assert_eq!(t.early(), Some(Verdict::Unavailable));
        let mut t = Tally::new(3);
        t.failed = 1;
        t.held = 1;
        t.granted = 1;
        assert_eq!(t.early(), Some(Verdict::Contended));
    }

    proptest! {
        #[test]
        fn verdict_never_grants_without_majority(n in 1usize..9, g in 0usize..9, h in 0usize..9) {
            prop_assume!(g + h <= n);
            let mut t = Tally::new(n);
            t.granted = g;
            t.held = h;
            t.failed = n - g - h;
            let v = t.last();
            prop_assert_eq!(v == Verdict::Granted, g >= quorum(n));
            if let Some(e) = t.early() { prop_assert_eq!(e, v); }
        }

        #[test]
        fn backoff_stays_under_cap(attempt in 0u32..100, base_ms in 1u64..1000, cap_ms in 1u64..10_000) {
            let d = backoff(attempt, Duration::from_millis(base_ms), Duration::from_millis(cap_ms));
            prop_assert!(d <= Duration::from_millis(cap_ms));
        }

        #[test]
        fn validity_never_exceeds_ttl(ttl in 1u64..1_000_000, el in 0u64..1_000_000, f in 0.0f64..0.5) {
            if let Some(v) = validity(Duration::from_millis(ttl), Duration::from_millis(el), f) {
                prop_assert!(v < Duration::from_millis(ttl));
                prop_assert!(!v.is_zero());
            }
        }
    }
}
