//! Randomised timing: retry jitter, back-off, and the spread of renewal rounds.
//!
//! One generator per thread, seeded from the OS, so a hot path draws a number without a
//! system call. Lock values and waiter ids do not come from here: they must be
//! unguessable, and are drawn from `rand`'s thread CSPRNG (`value.rs`), which a test's
//! seed does not reach. Tests seed this generator so a run under paused time replays
//! exactly (`seed_this_thread`).

use std::cell::RefCell;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

thread_local! {
    static RNG: RefCell<StdRng> = RefCell::new(StdRng::from_os_rng());
}

fn with_rng<T>(f: impl FnOnce(&mut StdRng) -> T) -> T {
    RNG.with(|r| f(&mut r.borrow_mut()))
}

/// Makes this thread's timing choices a function of `seed` (tests under paused time).
#[cfg(test)]
pub(crate) fn seed_this_thread(seed: u64) {
    RNG.with(|r| *r.borrow_mut() = StdRng::seed_from_u64(seed));
}

/// `base` plus a uniformly random extra in `[0, jitter]`.
pub(crate) fn jittered(base: Duration, jitter: Duration) -> Duration {
    if jitter.is_zero() {
        return base;
    }
    let max = u64::try_from(jitter.as_micros()).unwrap_or(u64::MAX);
    let extra = with_rng(|r| r.random_range(0..=max));
    base.saturating_add(Duration::from_micros(extra))
}

/// Exponential back-off with full jitter: uniform in `[0, min(cap, base · 2^attempt)]`.
/// Used when nodes are unavailable, so an outage does not turn into a retry storm.
pub(crate) fn backoff(attempt: u32, base: Duration, cap: Duration) -> Duration {
    jittered(Duration::ZERO, doubled(attempt, base, cap))
}

/// As [`backoff`], but uniform in the upper half, `[c/2, c]` of the same ceiling `c`:
/// the pause still doubles with each attempt (a full-jitter draw can come out near
/// zero several times in a row), and still differs between contenders.
pub(crate) fn backoff_upper_half(attempt: u32, base: Duration, cap: Duration) -> Duration {
    let ceiling = doubled(attempt, base, cap);
    jittered(ceiling / 2, ceiling / 2)
}

/// `min(cap, base · 2^attempt)`, without overflow.
fn doubled(attempt: u32, base: Duration, cap: Duration) -> Duration {
    base.checked_mul(1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX))
        .unwrap_or(cap)
        .min(cap)
}

/// A random spread in `[0.9, 1.1]` for `renew::next_renewal`: lockers started at the
/// same moment drift apart instead of renewing in lock-step.
pub(crate) fn renewal_spread() -> f64 {
    0.9 + with_rng(|r| r.random::<f64>()) * 0.2
}

/// How long a waiter that was refused because the lock — or every permit of a
/// semaphore — is held pauses before it tries again (before [`wake_at`]'s jitter).
/// One home for the lock's wait and the semaphore's.
///
/// `watching`: it has release notices armed, so it is woken by a notice, or else at the
/// end of the holder's TTL (`pttl`, plus a millisecond) — but a holder that sends no
/// notice (`poll_soon`: a silent holder, another Redlock client, or a TTL unknown) is
/// noticed only by trying again, every `silent_holder_poll`. Without notices from the
/// store (SQLite) it polls, starting fast and slowing down to at most 16 ms (a local
/// transaction costs tens of microseconds; `polls` counts the polls), never past the
/// holder's TTL; with notifications off, every `retry_delay`.
pub(crate) fn held_pause(
    opts: &crate::options::Options,
    watching: bool,
    pttl: Option<Duration>,
    poll_soon: bool,
    polls: &mut u32,
) -> Duration {
    if watching {
        let expiry = pttl.map_or(opts.retry_delay, |p| p + Duration::from_millis(1));
        if poll_soon {
            expiry.min(opts.silent_holder_poll)
        } else {
            expiry
        }
    } else if opts.notifications {
        *polls += 1;
        let step = Duration::from_millis(1) * (1u32 << (*polls).min(4));
        let poll = step.min(opts.retry_delay);
        pttl.map_or(poll, |p| p.min(poll))
    } else {
        opts.retry_delay
    }
}

/// When a waiter that pauses `pause` from `now` wakes: the pause with up to
/// `retry_jitter` of jitter (at most half the pause, so a short pause stays short),
/// never past the wait's `deadline`.
pub(crate) fn wake_at(
    opts: &crate::options::Options,
    now: tokio::time::Instant,
    pause: Duration,
    deadline: Option<tokio::time::Instant>,
) -> tokio::time::Instant {
    let pause = jittered(
        pause,
        opts.retry_jitter.min(pause / 2 + Duration::from_millis(1)),
    );
    match deadline {
        Some(d) => (now + pause).min(d),
        None => now + pause,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn backoff_stays_under_cap(attempt in 0u32..100, base_ms in 1u64..1000, cap_ms in 1u64..10_000) {
            let d = backoff(attempt, Duration::from_millis(base_ms), Duration::from_millis(cap_ms));
            prop_assert!(d <= Duration::from_millis(cap_ms));
            let c = doubled(attempt, Duration::from_millis(base_ms), Duration::from_millis(cap_ms));
            let h = backoff_upper_half(attempt, Duration::from_millis(base_ms), Duration::from_millis(cap_ms));
            prop_assert!(h >= c / 2 && h <= c, "{h:?} of {c:?}");
        }

        #[test]
        fn spread_stays_in_range(seed in any::<u64>()) {
            seed_this_thread(seed);
            let s = renewal_spread();
            prop_assert!((0.9..=1.1).contains(&s));
        }
    }

    #[test]
    fn a_seed_replays_the_same_choices() {
        let draw = || {
            (0..8)
                .map(|_| jittered(Duration::ZERO, Duration::from_secs(1)))
                .collect::<Vec<_>>()
        };
        seed_this_thread(7);
        let first = draw();
        seed_this_thread(7);
        assert_eq!(first, draw());
    }
}
