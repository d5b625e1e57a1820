//! What a lease is while it lives: its keys, value and token, its validity and renewal
//! schedule, the floors late extends put on it, and the signal that it is lost — shared
//! by the [`crate::Lease`], the locker's background task and the protocol paths.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use tokio_util::sync::CancellationToken;

use crate::error::Error;
use crate::store::LockSpec;

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
    /// A lease taken on a hand-off notice, valid for the release's short claim only:
    /// when the background task sends the extend that makes it the TTL's
    /// (`extend::confirm_handoff`). `None` once that is sent, or once any extension
    /// has landed (it set the TTL the user asked for).
    confirm_at: Option<Instant>,
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
                confirm_at: None,
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
        t.confirm_at = None;
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

    /// See [`Timing::confirm_at`].
    pub(crate) fn confirm_at(&self) -> Option<Instant> {
        self.timing().confirm_at
    }

    /// Sets (or, with `None`, clears) when the hand-off's extend is due; see
    /// [`Timing::confirm_at`].
    pub(crate) fn confirm_handoff_at(&self, at: Option<Instant>) {
        self.timing().confirm_at = at;
    }

    /// When the background task must next look at this lease: its `lost()` time, or
    /// its renewal (when it renews itself) or the extend of a hand-off, if due earlier.
    /// One reading of the schedule: it is taken on every acquire
    /// ([`crate::background::Background::track`]).
    pub(crate) fn first_deadline(&self) -> Instant {
        let t = *self.timing();
        let renews =
            self.auto_renew.load(Ordering::Acquire) && !self.renewing.load(Ordering::Acquire);
        [renews.then_some(t.renew_at), t.confirm_at]
            .into_iter()
            .flatten()
            .fold(lost_deadline(t.valid_until, self.ttl()), Instant::min)
    }

    /// The instant at which `lost()` fires unless the lease is extended first: the end
    /// of its validity minus a safety margin that leaves the work time to stop.
    pub(crate) fn lost_deadline(&self) -> Instant {
        lost_deadline(self.valid_until(), self.ttl())
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

    /// Waits until no extension of this lease is in flight (a renewal round, a user's
    /// extend, a hand-off's confirmation: they hold `op` until their answers are in),
    /// for a release of the ended lease to go after. Renewals and a user's extend
    /// reclaim a key they find gone, so one sent after the release would take the
    /// freed keys again for a whole TTL (seen as keys left behind after `using()` in
    /// the npm tests). Once the lease has ended, no new one starts: renewal rounds and
    /// a hand-off's confirmation skip ended leases and a user's extend checks first.
    /// Cancelling it only stops waiting.
    ///
    /// At most `patience` (a request time-out): the race is only between deciding to
    /// send and sending. A request in flight that long is on its node's connection
    /// already, ahead of the release, which that node then runs after it; and a
    /// release must not wait out a paused node's whole renewal time-out (a third of
    /// the TTL) before it can say the node did not answer.
    pub(crate) async fn reclaims_done(&self, patience: Duration) {
        // Usually nothing is in flight: no timer then.
        if self.op.try_lock().is_err() {
            let _ = tokio::time::timeout(patience, self.op.lock()).await;
        }
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

/// When `lost()` fires for a lease of `ttl` valid until `valid_until`, unless it is
/// extended first: the safety margin before the end of its validity.
pub(crate) fn lost_deadline(valid_until: Instant, ttl: Duration) -> Instant {
    valid_until
        .checked_sub(safety_margin(ttl))
        .unwrap_or(valid_until)
}

/// When to renew a lease next: a third of its TTL from now, scaled by `spread` in
/// [0.9, 1.1]. One spread per round keeps a cohort together while lockers started at
/// the same moment drift apart.
pub(crate) fn next_renewal(now: Instant, ttl: Duration, spread: f64) -> Instant {
    now + (ttl / 3).mul_f64(spread.clamp(0.9, 1.1))
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
