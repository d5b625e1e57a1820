//! The lease: proof of holding a lock, its fencing token, and the signal that it is lost.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::fence::FencingToken;
use crate::locker::Locker;
use crate::store::LockSpec;

/// What [`Lease::release`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ReleaseOutcome {
    /// The lock was ours on a majority of nodes and is now free.
    Released,
    /// The lease had already expired; nobody else holds the lock. Not an error: the
    /// lock is free, but the work done under it was not protected to the end.
    Expired,
    /// Another owner holds (one of) the keys now: our lease expired and someone else
    /// acquired it. Their key was left alone.
    OwnedByOther,
}

/// State shared by a lease, its locker's background task and the acquire that made it.
pub(crate) struct LeaseState {
    pub(crate) id: u64,
    /// The user's keys (prefix not applied).
    pub(crate) keys: Vec<String>,
    pub(crate) full_keys: Arc<[String]>,
    pub(crate) value: Arc<str>,
    pub(crate) holder: Option<Arc<str>>,
    pub(crate) token: u64,
    /// When the lease was granted: automatic renewal stops after the locker's
    /// `max_hold` counted from here.
    pub(crate) acquired_at: Instant,
    ttl_ms: AtomicU64,
    timing: Mutex<Timing>,
    /// Fired when the lease is lost, and when it ends (released or dropped).
    pub(crate) signal: CancellationToken,
    lost: AtomicBool,
    /// Released or dropped: renewal stops, and late grants of the acquire are undone.
    pub(crate) ended: Arc<AtomicBool>,
    pub(crate) auto_renew: AtomicBool,
    /// A renewal round for this lease is in flight.
    pub(crate) renewing: AtomicBool,
    /// Held by whatever extends the lease (a renewal round, a user's extend): at most
    /// one is in flight, so their answers cannot overtake each other's decisions.
    pub(crate) op: Arc<tokio::sync::Mutex<()>>,
    /// Nodes that may still apply an extend to a *shorter* TTL ([`crate::store::Expiry::Exactly`])
    /// that did not answer: such a late landing can cut the key short, so the node
    /// proves the lease valid no later than the floor (`docs/fencing.md`, "Validity").
    floors: Mutex<Vec<(usize, Instant)>>,
    /// What the nodes said in the latest renewal round, for the message of a loss.
    pub(crate) last_round: Mutex<Option<String>>,
    /// Why the lease was lost, for the errors that report it later.
    lost_because: Mutex<Option<String>>,
}

impl std::fmt::Debug for LeaseState {
    /// Without the value: it is the proof of ownership.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("keys", &self.keys)
            .field("token", &self.token)
            .field("ttl", &self.ttl())
            .field("valid_until", &self.valid_until())
            .field("lost", &self.is_lost())
            .field("ended", &self.is_ended())
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy)]
struct Timing {
    valid_until: Instant,
    renew_at: Instant,
}

impl LeaseState {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        id: u64,
        keys: Vec<String>,
        spec: &LockSpec,
        token: u64,
        valid_until: Instant,
        renew_at: Instant,
        ended: Arc<AtomicBool>,
    ) -> Self {
        LeaseState {
            id,
            keys,
            full_keys: spec.keys.clone(),
            value: spec.value.clone(),
            holder: spec.holder.clone(),
            token,
            acquired_at: Instant::now(),
            ttl_ms: AtomicU64::new(spec.ttl_ms),
            timing: Mutex::new(Timing {
                valid_until,
                renew_at,
            }),
            signal: CancellationToken::new(),
            lost: AtomicBool::new(false),
            ended,
            auto_renew: AtomicBool::new(false),
            renewing: AtomicBool::new(false),
            op: Arc::default(),
            floors: Mutex::default(),
            last_round: Mutex::default(),
            lost_because: Mutex::default(),
        }
    }

    fn floors(&self) -> std::sync::MutexGuard<'_, Vec<(usize, Instant)>> {
        self.floors.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Node `node` may still apply an exact extend that proves no more than `until`.
    pub(crate) fn add_floor(&self, node: usize, until: Instant) {
        self.floors().push((node, until));
    }

    /// The exact extend behind the floor `(node, until)` has answered: it landed before
    /// anything later is sent (the lease's `op` lock is held until then).
    pub(crate) fn remove_floor(&self, node: usize, until: Instant) {
        let mut floors = self.floors();
        if let Some(at) = floors.iter().position(|f| *f == (node, until)) {
            floors.swap_remove(at);
        }
    }

    /// The end of validity that an extend started at `start` with `ttl` proves when the
    /// nodes `confirmed` answered "ours": every one of them keeps the keys until at least
    /// `start + ttl` (less a node's floor), so the `quorum`-th latest of those, less the
    /// drift allowance. `None` when fewer than `quorum` confirmed, or that is not in the
    /// future.
    pub(crate) fn proven_until(
        &self,
        confirmed: &[usize],
        start: Instant,
        ttl: Duration,
        drift_factor: f64,
        quorum: usize,
    ) -> Option<Instant> {
        let base = crate::quorum::valid_until(start, ttl, drift_factor)?;
        let floors = self.floors();
        let mut bounds: Vec<Instant> = confirmed
            .iter()
            .map(|&node| {
                floors
                    .iter()
                    .filter(|(n, _)| *n == node)
                    .map(|(_, until)| *until)
                    .fold(base, Instant::min)
            })
            .collect();
        bounds.sort_unstable_by(|a, b| b.cmp(a));
        let until = *bounds.get(quorum.checked_sub(1)?)?;
        (until > Instant::now()).then_some(until)
    }

    fn timing(&self) -> std::sync::MutexGuard<'_, Timing> {
        self.timing.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn ttl(&self) -> Duration {
        Duration::from_millis(self.ttl_ms.load(Ordering::Relaxed))
    }

    /// The lock as the stores see it, with the current TTL.
    pub(crate) fn spec(&self) -> LockSpec {
        LockSpec {
            keys: self.full_keys.clone(),
            value: self.value.clone(),
            ttl_ms: self.ttl_ms.load(Ordering::Relaxed),
            holder: self.holder.clone(),
            queue: None,
        }
    }

    pub(crate) fn spec_with_ttl(&self, ttl: Duration) -> LockSpec {
        LockSpec {
            ttl_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
            ..self.spec()
        }
    }

    pub(crate) fn valid_until(&self) -> Instant {
        self.timing().valid_until
    }

    pub(crate) fn renew_at(&self) -> Instant {
        self.timing().renew_at
    }

    /// Records a successful extension: the lease is now valid until `valid_until` —
    /// what this extension proved, also when that is sooner than before (an extend to a
    /// shorter TTL). Extensions of one lease never overlap (`op`), so the latest one to
    /// complete is the latest one sent. Ignored once the lease is lost: a lost lease
    /// never becomes valid again.
    pub(crate) fn extended(&self, ttl: Duration, valid_until: Instant, renew_at: Instant) {
        let mut t = self.timing();
        if self.is_lost() {
            return;
        }
        self.ttl_ms.store(
            u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        t.valid_until = valid_until;
        t.renew_at = renew_at;
    }

    /// Lowers the validity to at most `until` (never raises it): before an extend to a
    /// shorter TTL is sent, so that whatever becomes of it — confirmed, refused,
    /// cancelled, answered by some nodes only — the lease never claims more than the
    /// shortened keys prove.
    ///
    /// The lease takes `ttl` (the shorter one) at once too: later renewals use it, and
    /// the safety margin before `lost()` is a tenth of it, not of the longer one.
    pub(crate) fn cap_validity(&self, ttl: Duration, until: Instant) {
        let mut t = self.timing();
        self.ttl_ms.store(
            u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        t.valid_until = t.valid_until.min(until);
    }

    pub(crate) fn retry_renewal_at(&self, at: Instant) {
        self.timing().renew_at = at;
    }

    /// The instant at which `lost()` fires unless the lease is extended first: the end
    /// of its validity minus a safety margin that leaves the work time to stop.
    pub(crate) fn lost_deadline(&self) -> Instant {
        let margin = safety_margin(self.ttl());
        let valid_until = self.valid_until();
        valid_until.checked_sub(margin).unwrap_or(valid_until)
    }

    pub(crate) fn is_lost(&self) -> bool {
        self.lost.load(Ordering::Acquire)
    }

    pub(crate) fn is_ended(&self) -> bool {
        self.ended.load(Ordering::Acquire)
    }

    /// Declares the lease lost: it never reports itself valid again.
    pub(crate) fn lose(&self, why: &str) {
        let mut t = self.timing();
        if self.lost.swap(true, Ordering::AcqRel) {
            return;
        }
        let now = Instant::now();
        t.valid_until = t.valid_until.min(now);
        drop(t);
        *self.lost_because.lock().unwrap_or_else(|p| p.into_inner()) = Some(why.to_string());
        if !self.is_ended() {
            tracing::warn!(keys = ?self.keys, token = self.token, "lease lost: {why}");
        }
        self.signal.cancel();
    }

    /// Marks the lease ended (released or dropped). Returns false if it already was.
    pub(crate) fn end(&self) -> bool {
        let first = !self.ended.swap(true, Ordering::AcqRel);
        self.signal.cancel();
        first
    }
}

/// The margin before the end of validity at which a lease that could not be renewed is
/// declared lost: a tenth of the TTL, at most one second.
pub(crate) fn safety_margin(ttl: Duration) -> Duration {
    (ttl / 10).min(Duration::from_secs(1))
}

/// Proof of holding a lock: its keys, its fencing token, how long it is valid, and a
/// signal for the moment it is lost.
///
/// A lease renews itself (see [`Lease::set_auto_renew`]) until it is released, dropped
/// or lost, or the locker's `max_hold` runs out.
///
/// Dropping a lease without [`Lease::release`] stops its renewal and has the locker's
/// background task release it at once — on the runtime the locker started on. That
/// task runs only while the runtime does: a lease dropped as `main` returns (or as the
/// runtime shuts down) stays held until its TTL runs out, because nothing is left to
/// send the release. Call [`crate::Locker::shutdown`] before returning: it waits for
/// every queued release.
#[must_use = "dropping a Lease releases the lock (through the locker's background task)"]
#[derive(Debug)]
pub struct Lease {
    state: Arc<LeaseState>,
    locker: Locker,
}

impl Lease {
    pub(crate) fn new(state: Arc<LeaseState>, locker: Locker) -> Self {
        Lease { state, locker }
    }

    pub(crate) fn state(&self) -> &Arc<LeaseState> {
        &self.state
    }

    /// The keys of the lock, as given (without the locker's prefix).
    pub fn keys(&self) -> &[String] {
        &self.state.keys
    }

    /// The value stored in the keys: the proof of ownership. Keep it secret; anyone who
    /// has it can release the lock. For a lease granted by an acquire attempt it is that
    /// attempt's random value (`fl:` and 32 hex characters); for a lease handed over by a release
    /// on one node it is the waiter's id (`handoff:<claim_ms>:<inbox>:<random>`, see
    /// `docs/waiting.md`), which the release wrote into the key.
    pub fn value(&self) -> &str {
        &self.state.value
    }

    /// The fencing token: larger than the token of every earlier holder of these keys.
    /// Pass it to the protected resource with every write, and have the resource refuse
    /// a token lower than one it has seen (see [`crate::fence`]).
    pub fn token(&self) -> FencingToken {
        FencingToken::new(self.state.token)
    }

    /// The instant (monotonic clock) until which the lease is proven valid. After the
    /// lease is lost or released this is in the past.
    pub fn valid_until(&self) -> std::time::Instant {
        self.state.valid_until().into_std()
    }

    /// How long the lease is still proven valid; zero once lost or expired.
    pub fn remaining(&self) -> Duration {
        if self.state.is_lost() || self.state.is_ended() {
            return Duration::ZERO;
        }
        self.state
            .valid_until()
            .saturating_duration_since(Instant::now())
    }

    /// Whether the lease is still proven valid (not lost, not expired).
    pub fn is_valid(&self) -> bool {
        !self.remaining().is_zero()
    }

    /// Whether the lease was lost (as opposed to released or still held).
    pub fn is_lost(&self) -> bool {
        self.state.is_lost()
    }

    /// The current TTL (what each renewal extends the keys to).
    pub fn ttl(&self) -> Duration {
        self.state.ttl()
    }

    /// Completes when the lease can no longer be proven valid: renewal failed to reach
    /// a majority before the validity (minus a safety margin) ran out, a node reported
    /// another owner, or the validity ran out without renewal. Also completes when the
    /// lease is released or dropped. `'static`: it can be moved into other tasks.
    ///
    /// Cancelling (dropping) this future has no effect on the lease.
    pub fn lost(&self) -> impl Future<Output = ()> + Send + 'static {
        self.state.signal.clone().cancelled_owned()
    }

    /// A token cancelled when [`Lease::lost`] completes, for APIs that take one.
    pub fn lost_token(&self) -> CancellationToken {
        self.state.signal.child_token()
    }

    /// Turns automatic renewal on or off (a new lease renews itself unless the locker
    /// was built with [`crate::LockerBuilder::auto_renew`]`(false)`). On, the locker's
    /// background task extends the lease at about a third of its TTL for as long as it
    /// is held, batched with every other live lease of the locker (one round trip per
    /// node per tick), and decides at the first majority of answers: a silent minority
    /// holds nothing back. Off, the lease runs out at the end of its TTL unless
    /// extended, and `lost()` fires just before.
    pub fn set_auto_renew(&self, on: bool) {
        self.state.auto_renew.store(on, Ordering::Release);
        if on {
            self.locker.wake_background();
        }
    }

    /// Extends the lease to `ttl` from now on a majority of nodes; later renewals use
    /// `ttl` too. A renewal round in flight finishes first (at most one extension of a
    /// lease is in flight). An extend to a shorter TTL shortens the keys and the
    /// lease's validity at once, whatever its outcome.
    ///
    /// # Errors
    ///
    /// [`crate::ErrorKind::InvalidInput`] for a TTL out of range (a zero TTL is refused
    /// here: `PEXPIRE key 0` would silently release); [`crate::ErrorKind::Lost`] when the
    /// lease is lost, expired on a majority, or another owner holds a key;
    /// [`crate::ErrorKind::Unavailable`] when too few nodes answered (the lease keeps its
    /// current validity).
    ///
    /// Cancelling this future leaves the lease as it was or extended on some nodes;
    /// its validity is only raised by a completed majority (and already lowered, for a
    /// shorter TTL).
    pub async fn extend(&self, ttl: Duration) -> Result<()> {
        self.locker.extend_lease(&self.state, ttl).await
    }

    /// Releases the lock on every node and says what it found.
    ///
    /// # Errors
    ///
    /// [`crate::ErrorKind::Unavailable`] when too few nodes answered to know; the keys
    /// still expire at the end of their TTL. A lease that had expired is not an error:
    /// that is [`ReleaseOutcome::Expired`].
    ///
    /// Cancelling this future leaves the release to the locker's background task.
    pub async fn release(self) -> Result<ReleaseOutcome> {
        let state = self.state.clone();
        let locker = self.locker.clone();
        // Ended first: this lease's Drop (at the end of this fn) then enqueues nothing.
        state.end();
        let guard = ReleaseGuard {
            state: Some(state.clone()),
            locker: locker.clone(),
        };
        let outcome = locker.release_lease(&state).await;
        guard.disarm();
        outcome
    }
}

/// Hands the release to the background task if `release()` is cancelled midway.
struct ReleaseGuard {
    state: Option<Arc<LeaseState>>,
    locker: Locker,
}

impl ReleaseGuard {
    fn disarm(mut self) {
        self.state = None;
    }
}

impl Drop for ReleaseGuard {
    fn drop(&mut self) {
        if let Some(state) = self.state.take() {
            self.locker.release_in_background(state.spec());
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.state.end() {
            self.locker.release_in_background(self.state.spec());
        }
    }
}

/// Used by the locker to report errors about a lease; names why it was lost, when it
/// was.
pub(crate) fn lost_error(state: &LeaseState, why: &str) -> Error {
    let because = state
        .lost_because
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    Error::lost(format!(
        "lease on {} (token {}) lost: {why}{}",
        crate::error::KeyList(&state.keys),
        state.token,
        because.map(|b| format!(" ({b})")).unwrap_or_default()
    ))
}
