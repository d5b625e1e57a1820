//! Extend: one request per node, each lease decided at the first majority by the
//! shared [`HoldTally`] (`quorum.rs`) — a user's extend of a lease or of a lock named
//! by value, a hand-off made ours, and the background task's batched renewal round.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::OwnedMutexGuard;
use tokio::time::Instant;

use crate::core::Core;
use crate::error::{Error, KeyList, NodeError, NodeErrorKind, Result};
use crate::fanout::FanOut;
use crate::jitter;
use crate::lease_state::{LeaseState, lost_error, next_renewal};
use crate::options::Options;
use crate::quorum::{self, Hold, HoldTally};
use crate::store::{Expiry, LockSpec, Node};

/// Extends `spec` on every node and decides at the first majority (the shared
/// [`HoldTally`]); returns the end of the validity that majority proves.
///
/// With `lease` (the lease and a share of its `op` lock), the lease's floors bound
/// what each node proves, and an [`Expiry::Exactly`] extend keeps the lock until
/// every node has answered or timed out: a node that has not answered may still cut
/// the keys short, so it gets a floor, lifted when its answer comes.
pub(crate) async fn extend(
    nodes: &[Node],
    options: &Options,
    spec: &LockSpec,
    keys: &[String],
    ttl: Duration,
    expiry: Expiry,
    lease: Option<(Arc<LeaseState>, Arc<OwnedMutexGuard<()>>)>,
) -> Result<Instant> {
    // Only a lease that is still valid may take gone keys back (see `Store::extend`).
    let reclaim = lease.is_some();
    let n = nodes.len();
    let q = quorum::quorum(n);
    let drift_factor = options.drift_factor;
    let lost = |why: &str| Error::lost(format!("lock {} lost: {why}", KeyList(keys)));
    let batch = [spec.clone()];
    let timeout = options.request_timeout_for(ttl);
    let start = Instant::now();
    let mut fan = FanOut::start(nodes, timeout, |node| node.extend(&batch, expiry, reclaim));
    let mut tally = HoldTally::new(n);
    let mut answered = vec![false; n];
    let mut errors = Vec::new();
    let decision = loop {
        let Some((i, answer)) = fan.next().await else {
            break None;
        };
        answered[i] = true;
        let name = nodes[i].name();
        match answer {
            Ok(Ok(states)) => match states.first() {
                Some(&holding) => tally.add_extended(i, name, holding),
                None => {
                    let e = NodeError::new(NodeErrorKind::Protocol, name, "empty extend reply");
                    tally.fail_with(&e);
                    errors.push(e);
                }
            },
            Ok(Err(e)) => {
                tally.fail_with(&e);
                errors.push(e);
            }
            Err(_) => {
                let e = fan.timeout_error(name);
                tally.fail_with(&e);
                errors.push(e);
            }
        }
        if let Some(decision) = tally.decided() {
            break Some(decision);
        }
    };
    let proven = match &lease {
        Some((state, _)) => state.proven_until(tally.confirmed(), start, ttl, drift_factor, q),
        None => quorum::valid_until(start, ttl, drift_factor),
    };
    if let Some((state, op)) = lease
        && expiry == Expiry::Exactly
        && !fan.is_done()
    {
        let floor = quorum::proven_bound(start, ttl, drift_factor);
        for i in (0..n).filter(|&i| !answered[i]) {
            state.add_floor(i, floor);
        }
        fan.finish_in_background(move |i, answer| {
            let _held_until_every_node_answered = &op;
            if answer.is_ok() {
                state.remove_floor(i, floor);
            }
        });
    }
    match decision {
        Some(Hold::Held) => proven.ok_or_else(|| {
            Error::unavailable("extend reached a majority too late to count", errors)
        }),
        Some(Hold::Gone { .. }) => Err(lost(&format!(
            "the keys are gone on a majority of nodes ({})",
            tally.said()
        ))),
        None => Err(Error::unavailable(
            &format!(
                "cannot extend lock {}: fewer than {q} of {n} nodes confirmed ({})",
                KeyList(keys),
                tally.said()
            ),
            errors,
        )),
    }
}

/// Extends a lease to `ttl` from now ([`crate::Lease::extend`]): at most one extension
/// of a lease in flight, a shorter TTL capping the validity before anything is sent.
pub(crate) async fn extend_lease(
    core: &Core,
    state: &Arc<LeaseState>,
    ttl: Duration,
) -> Result<()> {
    core.options.check_ttl(ttl)?;
    // At most one extension of a lease in flight: a renewal round under way finishes
    // first, so the two cannot overtake each other's answers.
    let op = state.op.clone().lock_owned().await;
    if !state.is_lost() && state.valid_until() <= Instant::now() {
        // Ran out before the background task said so: lost, never revived (an
        // extend would otherwise take the gone keys back).
        state.lose("its validity ran out before it was extended");
    }
    if state.is_lost() || state.is_ended() {
        return Err(lost_error(state, "it was already lost or released"));
    }
    let start = Instant::now();
    let expiry = if ttl < state.ttl() {
        // Shorter: the keys may be cut short on any node from now on, whatever
        // becomes of this call — the lease stops claiming more than that first.
        state.cap_validity(
            ttl,
            quorum::proven_bound(start, ttl, core.options.drift_factor),
        );
        // The `lost()` deadline moved earlier: the background task must not sleep
        // past it (it would fire `lost()` after the keys could be gone).
        core.wake_background();
        Expiry::Exactly
    } else {
        Expiry::AtLeast
    };
    // Shared with `extend` (and its background finish): the lock is released
    // only once this call has recorded the outcome below, so no renewal round
    // starts in between with the TTL from before this extend.
    let op = Arc::new(op);
    let spec = state.spec_with_ttl(ttl);
    let lease = Some((state.clone(), Arc::clone(&op)));
    match extend(
        &core.nodes,
        &core.options,
        &spec,
        &state.keys,
        ttl,
        expiry,
        lease,
    )
    .await
    {
        Ok(until) => {
            state.extended(
                ttl,
                until,
                next_renewal(Instant::now(), ttl, jitter::renewal_spread()),
            );
            drop(op);
            core.wake_background();
            if state.is_lost() {
                return Err(lost_error(state, "it was lost while being extended"));
            }
            Ok(())
        }
        Err(e) => {
            if e.is_lost() {
                state.lose(&e.to_string());
            }
            Err(e)
        }
    }
}

/// Makes a lease taken on a hand-off notice ours for its full TTL (`wait.rs`,
/// `handed_over`): until this lands, the lease is valid for the release's short claim.
/// Started by the background task once due (`renew.rs`), with the lease's `op` lock
/// (`_op`: as every extension of a lease, one at a time, rule 5 of docs/fencing.md),
/// and only for a lease that is still live and was not extended since (an extension
/// that went first set the TTL the user asked for: this one would undo an extend to
/// a shorter TTL).
///
/// Unlike a user's extend, it takes no gone key back: a key found gone or another's
/// makes the lease lost (quietly, when it was released meanwhile); no answer leaves it
/// valid for the claim, so `lost()` fires on time unless a renewal proves more first.
pub(crate) async fn confirm_handoff(
    nodes: &[Node],
    options: &Options,
    state: &LeaseState,
    _op: OwnedMutexGuard<()>,
) {
    let ttl = state.ttl();
    let spec = state.spec_with_ttl(ttl);
    match extend(
        nodes,
        options,
        &spec,
        &state.keys,
        ttl,
        Expiry::AtLeast,
        None,
    )
    .await
    {
        Ok(until) => state.extended(
            ttl,
            until,
            next_renewal(Instant::now(), ttl, jitter::renewal_spread()),
        ),
        Err(e) if e.is_lost() => state.lose(&e.to_string()),
        Err(e) => {
            tracing::debug!(keys = ?state.keys, "a hand-off's extend was not confirmed: {e}");
        }
    }
}

/// One lease in a renewal round: the lease, its `op` lock (no user extend overlaps the
/// round), the TTL the round asked the nodes for, and what they said about it so far.
struct InRound {
    lease: Arc<LeaseState>,
    _op: OwnedMutexGuard<()>,
    /// What the round proves is this TTL, the one it sent: the lease's own may differ
    /// by the time the answers come.
    ttl: Duration,
    tally: HoldTally,
}

/// One renewal round: one batched extend per node, in parallel. Each lease is decided
/// at the first majority of answers about it (the shared [`HoldTally`]); a node that
/// does not answer holds nobody back, and its late extend can only push an expiry later
/// ([`Expiry::AtLeast`]), so it is simply not waited for.
pub(crate) async fn renew_round(
    nodes: &[Node],
    options: &Options,
    due: Vec<(Arc<LeaseState>, OwnedMutexGuard<()>)>,
) {
    let start = Instant::now();
    let specs: Vec<LockSpec> = due.iter().map(|(l, _)| l.spec()).collect();
    let shortest = due
        .iter()
        .map(|(l, _)| l.ttl())
        .min()
        .unwrap_or(options.ttl);
    // A batch can be large (100k leases): allow it a third of the shortest TTL.
    let timeout = options.request_timeout_for(shortest).max(shortest / 3);
    let q = quorum::quorum(nodes.len());
    let spread = jitter::renewal_spread();
    // Reclaiming: these leases are valid (a lost one is never renewed), so a node that
    // lost a key — restarted empty, or never granted it — takes it back, and the lease
    // spreads to every healthy node again.
    let mut fan = FanOut::start(nodes, timeout, |n| n.extend(&specs, Expiry::AtLeast, true));
    let mut open: Vec<Option<InRound>> = due
        .into_iter()
        .zip(&specs)
        .map(|((lease, op), spec)| {
            Some(InRound {
                lease,
                _op: op,
                ttl: Duration::from_millis(spec.ttl_ms),
                tally: HoldTally::new(nodes.len()),
            })
        })
        .collect();
    let mut undecided = open.len();
    while undecided > 0
        && let Some((i, answer)) = fan.next().await
    {
        let name = nodes[i].name();
        for (j, slot) in open.iter_mut().enumerate() {
            let Some(entry) = slot else { continue };
            match &answer {
                Ok(Ok(states)) => match states.get(j) {
                    Some(&holding) => entry.tally.add_extended(i, name, holding),
                    None => entry
                        .tally
                        .fail(name, "no answer for this lease in the batch"),
                },
                Ok(Err(e)) => entry.tally.fail_with(e),
                Err(_) => entry.tally.fail_with(&fan.timeout_error(name)),
            }
            if let Some(decision) = entry.tally.decided() {
                decide(entry, decision, start, q, options, spread);
                *slot = None;
                undecided -= 1;
            }
        }
    }
    // Every node answered (or timed out) and these leases are still undecided: try
    // again soon; lost() fires if their validity runs out first.
    for entry in open.into_iter().flatten() {
        let ttl = entry.lease.ttl();
        *entry
            .lease
            .last_round
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(entry.tally.said());
        let soon = (ttl / 10).min(Duration::from_millis(500));
        entry.lease.retry_renewal_at(Instant::now() + soon);
        entry.lease.renewing.store(false, Ordering::Release);
    }
}

/// Applies a renewal round's decision about one lease.
fn decide(
    entry: &InRound,
    decision: Hold,
    start: Instant,
    q: usize,
    options: &Options,
    spread: f64,
) {
    let lease = &entry.lease;
    let ttl = entry.ttl;
    *lease.last_round.lock().unwrap_or_else(|p| p.into_inner()) = Some(entry.tally.said());
    match decision {
        Hold::Held => {
            match lease.proven_until(entry.tally.confirmed(), start, ttl, options.drift_factor, q) {
                Some(until) => {
                    lease.extended(ttl, until, next_renewal(Instant::now(), ttl, spread))
                }
                // The majority came too late to prove anything: go again at once.
                None => lease.retry_renewal_at(Instant::now()),
            }
        }
        Hold::Gone { .. } => lease.lose(&format!(
            "renewal found the keys gone on a majority of nodes ({})",
            entry.tally.said()
        )),
    }
    lease.renewing.store(false, Ordering::Release);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;
    use crate::store::{Acquired, Forgot, Holding, KeyInfo, Notices, Store, StoreFuture};
    use tokio::sync::Notify;

    /// A memory store whose extends wait until `open` lets them through, and only then
    /// reach the store: a renewal round that has decided to send and whose request
    /// lands later (after anything sent meanwhile).
    #[derive(Debug)]
    struct Gated {
        inner: MemoryStore,
        open: Arc<Notify>,
    }

    impl Store for Gated {
        fn name(&self) -> &str {
            self.inner.name()
        }
        fn acquire(&self, lock: &LockSpec) -> StoreFuture<Acquired> {
            self.inner.acquire(lock)
        }
        fn commit_fence(&self, lock: &LockSpec, token: u64) -> StoreFuture<bool> {
            self.inner.commit_fence(lock, token)
        }
        fn extend(
            &self,
            locks: &[LockSpec],
            expiry: Expiry,
            reclaim: bool,
        ) -> StoreFuture<Vec<Holding>> {
            // (A memory store's operation runs when its future is first polled.)
            let extend = self.inner.extend(locks, expiry, reclaim);
            let open = Arc::clone(&self.open);
            Box::pin(async move {
                open.notified().await;
                extend.await
            })
        }
        fn release(&self, lock: &LockSpec) -> StoreFuture<Holding> {
            self.inner.release(lock)
        }
        fn abandon(&self, lock: &LockSpec) -> StoreFuture<()> {
            self.inner.abandon(lock)
        }
        fn known_keys(&self, prefix: &str, limit: usize) -> StoreFuture<Vec<String>> {
            self.inner.known_keys(prefix, limit)
        }
        fn inspect(&self, key: &str) -> StoreFuture<KeyInfo> {
            self.inner.inspect(key)
        }
        fn forget(&self, key: &str) -> StoreFuture<Forgot> {
            self.inner.forget(key)
        }
        fn notices(&self) -> Option<&dyn Notices> {
            self.inner.notices()
        }
    }

    /// A round claims what the TTL it sent proves, even when the lease's TTL changed
    /// while the round was in flight. The interleaving: a user's extend to 3 s lands on
    /// the node; before it records its outcome on the lease, a renewal round starts and
    /// asks for the lease's TTL as it still is (300 ms, which leaves the 3 s expiry
    /// alone); the extend then records 3 s; the round's answer comes. Taking the TTL at
    /// decision time, the round claimed 3 s from its own start, 200 ms past the keys'
    /// expiry.
    #[tokio::test(start_paused = true)]
    async fn a_round_proves_the_ttl_it_sent_not_the_one_the_lease_has_when_it_decides() {
        let name = "renew-proves-the-ttl-it-sent";
        let open = Arc::new(Notify::new());
        let node: Node = Arc::new(Gated {
            inner: MemoryStore::named(name),
            open: Arc::clone(&open),
        });
        let options = Options::default();
        // A lease of 300 ms on the one node, granted straight by the store.
        let ttl = Duration::from_millis(300);
        let spec = LockSpec {
            keys: vec!["k".to_string()].into(),
            value: "fl:renew-proves-the-ttl-it-sent".into(),
            ttl_ms: 300,
            holder: None,
            queue: None,
        };
        let start = Instant::now();
        let Acquired::Granted { counter } = node.acquire(&spec).await.expect("acquire") else {
            panic!("the key is free");
        };
        let state = Arc::new(LeaseState::new(
            1,
            vec!["k".to_string()],
            &spec,
            counter,
            quorum::proven_bound(start, ttl, options.drift_factor),
            start + ttl / 3,
            Arc::default(),
        ));
        let long = Duration::from_secs(3);

        // The user's extend lands (straight on the store: not through the gate).
        let extend_start = Instant::now();
        let landed = MemoryStore::named(name)
            .extend(&[state.spec_with_ttl(long)], Expiry::AtLeast, true)
            .await
            .expect("extend");
        assert_eq!(landed, [Holding::Ours]);
        tokio::time::advance(Duration::from_millis(200)).await;

        // A renewal round starts with the lease's TTL as it still is, and sends.
        let op = Arc::clone(&state.op).lock_owned().await;
        let round = {
            let (nodes, options, state) =
                (vec![Arc::clone(&node)], options.clone(), Arc::clone(&state));
            tokio::spawn(async move { renew_round(&nodes, &options, vec![(state, op)]).await })
        };
        tokio::task::yield_now().await;
        // The extend records its outcome; then the round's answer comes.
        state.extended(
            long,
            quorum::proven_bound(extend_start, long, options.drift_factor),
            Instant::now() + long / 3,
        );
        open.notify_one();
        round.await.expect("round");

        let info = MemoryStore::named(name)
            .inspect(&state.full_keys[0])
            .await
            .expect("inspect");
        let now = Instant::now();
        let lives = now + info.pttl.expect("the key lives");
        assert!(state.valid_until() > now, "the round confirmed the lease");
        assert!(
            state.valid_until() <= lives,
            "the lease claims {:?} past its key's expiry",
            state.valid_until() - lives
        );
        let released = node.release(&state.spec()).await.expect("release");
        assert_eq!(released, Holding::Ours);
    }

    /// A locker on one gated memory node named `name`, and a lease of 300 ms on `k`
    /// whose automatic renewal round has sent its extend, held at the gate (`open`).
    async fn a_renewal_in_flight(name: &str) -> (crate::Locker, crate::Lease, Arc<Notify>) {
        let open = Arc::new(Notify::new());
        let node: Node = Arc::new(Gated {
            inner: MemoryStore::named(name),
            open: Arc::clone(&open),
        });
        let locker = crate::Locker::from_parts(vec![node], Options::default());
        let lease = locker
            .acquire("k", Duration::from_millis(300))
            .await
            .expect("acquire");
        while !lease.state().renewing.load(Ordering::Acquire) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        (locker, lease, open)
    }

    /// Lets the gated round's request land (after whatever went out meanwhile) and
    /// waits until the round is over.
    async fn let_the_round_land(open: &Notify, round: &LeaseState) {
        open.notify_one();
        while round.renewing.load(Ordering::Acquire) {
            tokio::task::yield_now().await;
        }
    }

    /// Whether `k` is free on memory node `name`.
    async fn k_is_free(name: &str) -> bool {
        let info = MemoryStore::named(name)
            .inspect("k")
            .await
            .expect("inspect");
        info.value.is_none()
    }

    /// A release goes after a renewal round in flight, never before it: the round's
    /// extend takes gone keys back (reclaim), so landing after the release it would
    /// hold the freed lock for another TTL (the npm suite's `using()` test found the
    /// keys still there after the release, once under load).
    #[tokio::test(start_paused = true)]
    async fn a_release_waits_for_a_renewal_in_flight() {
        let name = "release-waits-for-a-renewal";
        let (_locker, lease, open) = a_renewal_in_flight(name).await;
        let round = Arc::clone(lease.state());
        let release = tokio::spawn(async move { lease.release().await });
        // The release goes as far as it can before the round's request lands.
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        let_the_round_land(&open, &round).await;
        let outcome = release.await.expect("task").expect("release");
        assert_eq!(outcome, crate::ReleaseOutcome::Released);
        assert!(
            k_is_free(name).await,
            "the renewal landed after the release and took the key back"
        );
    }

    /// As above, for a lease dropped instead of released: the background task's
    /// release waits for the round too.
    #[tokio::test(start_paused = true)]
    async fn a_dropped_lease_is_released_after_its_renewal_in_flight() {
        let name = "drop-waits-for-a-renewal";
        let (locker, lease, open) = a_renewal_in_flight(name).await;
        let round = Arc::clone(lease.state());
        drop(lease);
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        let_the_round_land(&open, &round).await;
        locker.shutdown().await;
        assert!(
            k_is_free(name).await,
            "the renewal landed after the release and took the key back"
        );
    }
}
