//! Options: the locker's (set once by [`LockerBuilder`](crate::LockerBuilder)) with the rules they
//! carry — TTL limits, the per-node request time-out — and one acquire's
//! ([`AcquireOptions`]: how long to wait, fair mode).

use std::time::Duration;

use tokio::time::Instant;

use crate::error::Error;
use crate::keys::KeyLimits;

/// The shortest TTL accepted: below this, clock drift and one round trip eat the lease.
pub const MIN_TTL: Duration = Duration::from_millis(10);
/// The longest TTL accepted by default (a lease is meant to be renewed, not parked).
pub const DEFAULT_MAX_TTL: Duration = Duration::from_secs(7 * 24 * 60 * 60);
/// The default of [`LockerBuilder::silent_holder_poll`](crate::LockerBuilder::silent_holder_poll).
pub(crate) const SILENT_HOLDER_POLL: Duration = Duration::from_millis(150);

/// The default of
/// [`LockerBuilder::counter_retention`](crate::LockerBuilder::counter_retention): none past
/// the rule itself.
pub const DEFAULT_COUNTER_RETENTION: Duration = Duration::ZERO;
/// The longest
/// [`LockerBuilder::counter_retention`](crate::LockerBuilder::counter_retention) accepted.
pub const MAX_COUNTER_RETENTION: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// Everything a locker needs to know besides its stores.
#[derive(Clone, Debug)]
pub(crate) struct Options {
    pub(crate) ttl: Duration,
    pub(crate) drift_factor: f64,
    pub(crate) request_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) retry_delay: Duration,
    pub(crate) retry_jitter: Duration,
    pub(crate) silent_holder_poll: Duration,
    pub(crate) max_wait: Option<Duration>,
    pub(crate) prefix: String,
    pub(crate) notifications: bool,
    pub(crate) fair: bool,
    pub(crate) holder: Option<String>,
    pub(crate) keys: KeyLimits,
    pub(crate) max_ttl: Duration,
    pub(crate) max_hold: Option<Duration>,
    /// New leases renew themselves (see
    /// [`LockerBuilder::auto_renew`](crate::LockerBuilder::auto_renew)).
    pub(crate) auto_renew: bool,
    /// Refuse on start-up-check warnings too, not only errors (`checks.rs`).
    pub(crate) strict_checks: bool,
    /// See [`LockerBuilder::counter_retention`](crate::LockerBuilder::counter_retention).
    pub(crate) counter_retention: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            ttl: Duration::from_secs(30),
            drift_factor: 0.01,
            request_timeout: Duration::from_millis(250),
            connect_timeout: Duration::from_secs(1),
            retry_delay: Duration::from_millis(200),
            retry_jitter: Duration::from_millis(100),
            silent_holder_poll: SILENT_HOLDER_POLL,
            max_wait: Some(Duration::from_secs(10)),
            prefix: String::new(),
            notifications: true,
            fair: false,
            holder: None,
            keys: KeyLimits::default(),
            max_ttl: DEFAULT_MAX_TTL,
            max_hold: None,
            auto_renew: true,
            strict_checks: false,
            counter_retention: DEFAULT_COUNTER_RETENTION,
        }
    }
}

impl Options {
    /// Checks a TTL against the limits.
    pub(crate) fn check_ttl(&self, ttl: Duration) -> Result<(), Error> {
        if ttl < MIN_TTL {
            return Err(Error::invalid(
                "TTL",
                format!(
                    "{} ms is too short; the minimum is {} ms",
                    ttl.as_millis(),
                    MIN_TTL.as_millis()
                ),
            ));
        }
        // Validity and renewal deadlines are instants on the monotonic clock: a TTL
        // that cannot be added to it (near `Duration::MAX`) is refused, not a panic.
        if ttl
            .checked_mul(2)
            .and_then(|twice| Instant::now().checked_add(twice))
            .is_none()
            || u64::try_from(ttl.as_millis()).is_err()
        {
            return Err(Error::invalid(
                "TTL",
                format!("{ttl:?} is beyond what the clock can represent"),
            ));
        }
        if ttl > self.max_ttl {
            return Err(Error::invalid(
                "TTL",
                format!(
                    "{:?} is longer than the limit of {:?}; hold a shorter lease and renew it",
                    ttl, self.max_ttl
                ),
            ));
        }
        Ok(())
    }

    /// How long a waiter's line entry outlives the wait a node told it to expect (the
    /// entry's `grace_ms`, see `QueueTicket`): a retry's jitter and two request time-outs
    /// to come back, plus 500 ms of slack, before the entry counts as abandoned.
    pub(crate) fn line_grace_ms(&self) -> u64 {
        u64::try_from(
            (self.retry_jitter + self.request_timeout * 2 + Duration::from_millis(500)).as_millis(),
        )
        .unwrap_or(u64::MAX)
    }

    /// The per-node timeout for a lease of `ttl`: the configured one, but never more than
    /// a third of the TTL, so a slow node cannot eat the lease's validity.
    pub(crate) fn request_timeout_for(&self, ttl: Duration) -> Duration {
        self.request_timeout.min(ttl / 3)
    }
}

/// Options of one acquire. Start from [`AcquireOptions::default`].
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct AcquireOptions {
    wait: Option<Wait>,
    fair: Option<bool>,
}

#[derive(Clone, Copy, Debug)]
enum Wait {
    No,
    Up(Duration),
    Forever,
}

impl AcquireOptions {
    /// Do not wait: fail with [`ErrorKind::Contended`](crate::ErrorKind::Contended) if
    /// held. One attempt — unless it meets a split vote (some nodes granted it, too few
    /// for a majority: contenders that came at the same moment may each have taken
    /// some nodes, and then nobody holds the lock), which is tried again soon, up to
    /// three times, so that of several tries at once one gets the lock.
    pub fn no_wait(mut self) -> Self {
        self.wait = Some(Wait::No);
        self
    }

    /// Wait up to `wait` for the lock (fail with
    /// [`ErrorKind::Timeout`](crate::ErrorKind::Timeout) after).
    pub fn max_wait(mut self, wait: Duration) -> Self {
        self.wait = Some(Wait::Up(wait));
        self
    }

    /// Wait until the lock is free, however long (or until the future is dropped).
    pub fn wait_forever(mut self) -> Self {
        self.wait = Some(Wait::Forever);
        self
    }

    /// Fair mode: waiters are served in arrival order. Each waiter takes a place in a queue
    /// kept in sibling keys of the lock (`<key>:fencelock:queue`); a free lock goes to the
    /// first in line. An entry expires on its own shortly after its waiter stops coming
    /// back, so a crashed waiter cannot block the line, and a waiter that gives up or is
    /// cancelled leaves it. Clients that know nothing of the queue (the `redlock` npm
    /// package, redsync, fencelock without fair mode) still exclude fair waiters and are
    /// excluded by them; they just do not wait their turn. Locks: Redis stores only, other
    /// stores refuse fair mode with [`ErrorKind::Config`](crate::ErrorKind::Config).
    /// Semaphores: every store (see `docs/semaphore.md`).
    pub fn fair(mut self) -> Self {
        self.fair = Some(true);
        self
    }
}

impl AcquireOptions {
    /// When a wait that starts at `started` ends (`None`: never), and whether it is a
    /// single attempt; the locker's `max_wait` when the options do not say.
    pub(crate) fn deadline(&self, locker: &Options, started: Instant) -> (Option<Instant>, bool) {
        let wait = self.wait.unwrap_or(match locker.max_wait {
            Some(d) => Wait::Up(d),
            None => Wait::Forever,
        });
        match wait {
            Wait::No => (Some(started), true),
            Wait::Up(d) => (started.checked_add(d), false),
            Wait::Forever => (None, false),
        }
    }

    /// Whether fair mode was asked for (here or on the locker).
    pub(crate) fn is_fair(&self, locker: &Options) -> bool {
        self.fair.unwrap_or(locker.fair)
    }
}
