//! The lease: proof of holding a lock, its fencing token, and the signal that it is lost.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use tokio_util::sync::CancellationToken;

use crate::core::Core;
use crate::error::Result;
use crate::extend::extend_lease;
use crate::fence::FencingToken;
use crate::jitter;
use crate::lease_state::{LeaseState, next_renewal};
use crate::release::{ReleaseOutcome, release_lease};
use crate::store::LockSpec;

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
    /// The locker's shared state (nodes, options, background task), not the locker.
    core: Arc<Core>,
}

impl Lease {
    /// Hands a lock granted on a majority to the background task (renewal, `lost()` on
    /// time) as a lease. `ended` is the attempt's flag that late grants read.
    /// `confirm_at`: for a lease taken on a hand-off notice (`wait.rs`, `handed_over`),
    /// valid for the release's claim, when the background task sends the extend that
    /// makes it the TTL's (`extend::confirm_handoff`).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn granted(
        core: &Arc<Core>,
        spec: &LockSpec,
        user_keys: &[String],
        ttl: Duration,
        token: u64,
        valid_until: Instant,
        ended: Arc<AtomicBool>,
        confirm_at: Option<Instant>,
    ) -> Lease {
        let state = Arc::new(LeaseState::new(
            core.next_lease_id(),
            user_keys.to_vec(),
            spec,
            token,
            valid_until,
            next_renewal(Instant::now(), ttl, jitter::renewal_spread()),
            ended,
        ));
        // Before the task sees the lease: it may be due before the task's next wake-up.
        state.confirm_handoff_at(confirm_at);
        state
            .auto_renew
            .store(core.options.auto_renew, Ordering::Release);
        core.background.track(state.clone());
        Lease {
            state,
            core: core.clone(),
        }
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
    ///
    /// Usually the acquire's start plus the TTL, less the drift allowance. A lease
    /// handed over on one node by the holder's release starts shorter: valid for the
    /// release's claim (a couple of seconds), until its own extend to the TTL lands,
    /// sent within about half a second unless the lease is released or extended first
    /// (`docs/waiting.md`; `docs/fencing.md`, "Validity", rule 8).
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
            self.core.wake_background();
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
        extend_lease(&self.core, &self.state, ttl).await
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
        let core = self.core.clone();
        // Ended first: this lease's Drop (at the end of this fn) then enqueues nothing.
        state.end();
        let guard = ReleaseGuard {
            state: Some(state.clone()),
            core: &core,
        };
        state.reclaims_done(core.options.request_timeout).await;
        let outcome = release_lease(&core, &state).await;
        guard.disarm();
        outcome
    }
}

/// Hands the release to the background task if `release()` is cancelled midway.
struct ReleaseGuard<'a> {
    state: Option<Arc<LeaseState>>,
    core: &'a Core,
}

impl ReleaseGuard<'_> {
    fn disarm(mut self) {
        self.state = None;
    }
}

impl Drop for ReleaseGuard<'_> {
    fn drop(&mut self) {
        if let Some(state) = self.state.take() {
            self.core.release_lease_in_background(&state);
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.state.end() {
            self.core.release_lease_in_background(&self.state);
        }
    }
}
