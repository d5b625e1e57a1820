//! The locker's background task: renews every live lease, fires `lost()` on time, and
//! carries out the releases nobody can wait for (dropped leases, cancelled acquires,
//! requests that timed out).
//!
//! One task per locker, started on the first acquire. Renewal is batched: each tick
//! collects every lease that is due soon and sends one extend request per node for all
//! of them, so 10 000 leases cost a few requests a second, not 10 000. `Drop` impls
//! only push a message into an unbounded channel: they never block, spawn or panic,
//! even outside a runtime.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use tokio::sync::OwnedMutexGuard;

use crate::builder::Options;
use crate::fanout::FanOut;
use crate::jitter;
use crate::lease::LeaseState;
use crate::quorum::{self, Hold, HoldTally};
use crate::store::{Expiry, Holding, LockSpec, Node};

/// Work for the background task.
#[derive(Debug)]
pub(crate) enum Message {
    /// Release this lock on every node (a dropped lease or acquire).
    Release(LockSpec),
    /// A request for this lock on node `i` timed out: clean up after it.
    Abandon(usize, LockSpec),
    /// Fair mode: leave the queue of this lock on node `i`.
    LeaveQueue(usize, LockSpec),
    /// Something changed (auto-renew turned on): recompute the schedule.
    Wake,
    /// Finish every pending release, then answer.
    Drain(oneshot::Sender<()>),
}

/// The sending half, and the receiving half until the task is started.
#[derive(Debug)]
pub(crate) struct Background {
    tx: mpsc::UnboundedSender<Message>,
    rx: Mutex<Option<mpsc::UnboundedReceiver<Message>>>,
    tracked: Arc<Mutex<Tracked>>,
}

/// New leases waiting for the task, and when the task will next wake by itself.
///
/// A new lease's first deadline (its `lost()` time) is almost always later than the
/// task's next wake-up, so [`Background::track`] just leaves it here and the task picks
/// it up then: no task wake-up per acquire (on a hot key that is one context switch per
/// critical section). Only a lease due before that wake-up wakes the task. Both sides
/// hold the mutex while comparing, so no lease can slip past a sleep.
#[derive(Debug, Default)]
struct Tracked {
    leases: Vec<Arc<LeaseState>>,
    /// `None`: the task sleeps without a deadline (or has not started).
    wakes_at: Option<Instant>,
    /// A wake-up is on its way: no need to send another until the task drains.
    woken: bool,
}

/// How many times a waiter's request to leave a node's line is tried.
const LEAVE_QUEUE_TRIES: u32 = 4;

/// This many waiting leases wake the task too, so that it takes them in (and drops
/// the ended ones: a hot key's released leases would otherwise pile up here until
/// its next wake-up).
const TRACKED_BATCH: usize = 1024;

impl Background {
    pub(crate) fn new() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Background {
            tx,
            rx: Mutex::new(Some(rx)),
            tracked: Arc::default(),
        }
    }

    /// Hands a new lease to the task (renewal, `lost()` on time); wakes the task only
    /// if the lease is due before the task would wake anyway (see [`Tracked`]).
    pub(crate) fn track(&self, lease: Arc<LeaseState>) {
        let due = first_deadline(&lease);
        let mut tracked = self.tracked.lock().unwrap_or_else(|p| p.into_inner());
        tracked.leases.push(lease);
        let wake =
            tracked.leases.len() >= TRACKED_BATCH || tracked.wakes_at.is_none_or(|at| due < at);
        if wake && !tracked.woken {
            tracked.woken = true;
            drop(tracked);
            self.send(Message::Wake);
        }
    }

    /// Queues a message. Never blocks; if the task is gone (runtime shut down) the
    /// message is dropped and the keys expire with their TTL.
    pub(crate) fn send(&self, message: Message) {
        let _ = self.tx.send(message);
    }

    /// Starts the task on the current runtime if it is not running yet.
    pub(crate) fn ensure_started(&self, nodes: &[Node], options: &Options) {
        let mut slot = self.rx.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(rx) = slot.take() {
            tokio::spawn(run(
                rx,
                self.tracked.clone(),
                nodes.to_vec(),
                options.clone(),
            ));
        }
    }
}

async fn run(
    mut rx: mpsc::UnboundedReceiver<Message>,
    tracked: Arc<Mutex<Tracked>>,
    nodes: Vec<Node>,
    options: Options,
) {
    let mut task = Task {
        nodes: nodes.into(),
        options,
        leases: HashMap::new(),
        work: JoinSet::new(),
        drains: Vec::new(),
    };
    loop {
        let next = {
            // Take the new leases and publish when we wake next, in one step (see
            // `Tracked`). New leases get a tick of their own first (one may be due).
            let mut t = tracked.lock().unwrap_or_else(|p| p.into_inner());
            if !t.leases.is_empty() {
                for lease in t.leases.drain(..) {
                    task.leases.insert(lease.id, lease);
                }
                drop(t);
                task.tick();
                t = tracked.lock().unwrap_or_else(|p| p.into_inner());
                for lease in t.leases.drain(..) {
                    task.leases.insert(lease.id, lease);
                }
            }
            let next = next_wakeup(&task.leases);
            t.wakes_at = next;
            t.woken = false;
            next
        };
        tokio::select! {
            message = rx.recv() => match message {
                None => break,
                Some(m) => task.handle(m),
            },
            _ = sleep_until(next) => {}
            Some(_) = task.work.join_next(), if !task.work.is_empty() => {}
        }
        // Take everything queued before scanning: 10 000 acquires in a burst must
        // cost a few scans of the lease table, not 10 000.
        while let Ok(m) = rx.try_recv() {
            task.handle(m);
        }
        task.tick();
    }
    // Every sender is gone (locker and leases dropped): finish what is queued.
    while task.work.join_next().await.is_some() {}
    for done in task.drains {
        let _ = done.send(());
    }
}

/// The background task's state.
struct Task {
    nodes: Arc<[Node]>,
    options: Options,
    leases: HashMap<u64, Arc<LeaseState>>,
    work: JoinSet<()>,
    drains: Vec<oneshot::Sender<()>>,
}

impl Task {
    fn handle(&mut self, message: Message) {
        match message {
            Message::Release(spec) => {
                let nodes = self.nodes.clone();
                let timeout = self
                    .options
                    .request_timeout_for(Duration::from_millis(spec.ttl_ms));
                self.work
                    .spawn(async move { release_everywhere(&nodes, &spec, timeout).await });
            }
            Message::Abandon(i, spec) => {
                if let Some(node) = self.nodes.get(i).cloned() {
                    let ttl = Duration::from_millis(spec.ttl_ms);
                    // Waiting for the answer is bounded; the clean-up itself is not: it
                    // is queued behind the request it undoes, on the same connection,
                    // and the node runs both in order whenever it wakes.
                    self.work.spawn(async move {
                        let _ = tokio::time::timeout(ttl, node.abandon(&spec)).await;
                    });
                }
            }
            Message::LeaveQueue(i, spec) => {
                if let Some(node) = self.nodes.get(i).cloned() {
                    let timeout = self
                        .options
                        .request_timeout_for(Duration::from_millis(spec.ttl_ms));
                    // Retried a few times: an entry left behind would make a release
                    // hand the lock to a waiter that is gone (for a short claim) or
                    // wake it for nothing, until the entry's own deadline.
                    self.work.spawn(async move {
                        for attempt in 0..LEAVE_QUEUE_TRIES {
                            if let Ok(Ok(())) =
                                tokio::time::timeout(timeout, node.leave_queue(&spec)).await
                            {
                                return;
                            }
                            tokio::time::sleep(jitter::backoff(
                                attempt,
                                Duration::from_millis(50),
                                Duration::from_secs(1),
                            ))
                            .await;
                        }
                    });
                }
            }
            Message::Wake => {}
            Message::Drain(done) => self.drains.push(done),
        }
    }

    /// Fires due `lost()` signals and starts a renewal round for the leases due.
    fn tick(&mut self) {
        self.leases.retain(|_, l| !l.is_ended() && !l.is_lost());
        let now = Instant::now();
        for lease in self.leases.values() {
            if held_too_long(lease, &self.options, now) {
                // Renewal stops; the lease runs out at the end of its current TTL.
                lease.auto_renew.store(false, Ordering::Release);
            }
        }
        let round = self.leases.values().any(|l| is_overdue(l, now));
        let mut due = Vec::new();
        for lease in self.leases.values() {
            // Checked even while a renewal round is in flight: a slow round must not
            // let the lease claim validity it can no longer prove.
            if now >= lease.lost_deadline() {
                let why: String = if held_too_long(lease, &self.options, now) {
                    "it was held longer than the locker's max_hold, so renewal stopped".into()
                } else if lease.auto_renew.load(Ordering::Acquire) {
                    let last = lease
                        .last_round
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .clone()
                        .unwrap_or_else(|| "no renewal round completed".to_string());
                    format!(
                        "renewal did not reach a majority of nodes before the lease ran \
                         out (last round: {last})"
                    )
                } else {
                    "its validity ran out (it was not extended)".into()
                };
                lease.lose(&why);
            } else if round && is_due(lease, now) {
                match lease.op.clone().try_lock_owned() {
                    Ok(op) => {
                        lease.renewing.store(true, Ordering::Release);
                        due.push((lease.clone(), op));
                    }
                    // A user's extend is in flight: it renews the lease itself, and sets
                    // the next renewal when it succeeds. Until then look again a little
                    // later: a renewal left due would wake this task at once, every
                    // time, for as long as the extend takes (a busy loop).
                    Err(_) if lease.renew_at() <= now => {
                        lease.retry_renewal_at(now + busy_retry(lease.ttl()));
                    }
                    Err(_) => {}
                }
            }
        }
        if !due.is_empty() {
            let nodes = self.nodes.clone();
            let options = self.options.clone();
            self.work
                .spawn(async move { renew(&nodes, &options, due).await });
        }
        if !self.drains.is_empty() && only_renewals_left(&self.work, &self.leases) {
            for done in self.drains.drain(..) {
                let _ = done.send(());
            }
        }
    }
}

/// Whether pending work is only renewal of live leases (which never "drains").
fn only_renewals_left(work: &JoinSet<()>, leases: &HashMap<u64, Arc<LeaseState>>) -> bool {
    let renewing = leases
        .values()
        .filter(|l| l.renewing.load(Ordering::Acquire))
        .count();
    work.len() <= usize::from(renewing > 0)
}

/// Whether a lease may join the renewal round starting `now`. A round starts only when
/// some lease is actually due; it then takes every lease due within the next sixth of
/// its TTL (renewing that early is harmless), so leases settle into cohorts that share
/// one request per node instead of trickling out in many small rounds.
fn is_due(lease: &LeaseState, now: Instant) -> bool {
    lease.auto_renew.load(Ordering::Acquire)
        && !lease.renewing.load(Ordering::Acquire)
        && lease.renew_at() <= now + lease.ttl() / 6
}

/// How long to put off the renewal of a lease while a user's extend of it is in flight.
fn busy_retry(ttl: Duration) -> Duration {
    (ttl / 20).max(Duration::from_millis(1))
}

/// Whether a lease has used up the locker's `max_hold`: it is not renewed any more.
fn held_too_long(lease: &LeaseState, options: &Options, now: Instant) -> bool {
    options
        .max_hold
        .is_some_and(|max| now.saturating_duration_since(lease.acquired_at) >= max)
}

fn is_overdue(lease: &LeaseState, now: Instant) -> bool {
    lease.auto_renew.load(Ordering::Acquire)
        && !lease.renewing.load(Ordering::Acquire)
        && lease.renew_at() <= now
}

fn next_wakeup(leases: &HashMap<u64, Arc<LeaseState>>) -> Option<Instant> {
    leases.values().map(|l| first_deadline(l)).min()
}

/// When the task must next look at `lease`: its `lost()` time, or its renewal if due
/// earlier.
fn first_deadline(l: &LeaseState) -> Instant {
    let renew = (l.auto_renew.load(Ordering::Acquire) && !l.renewing.load(Ordering::Acquire))
        .then(|| l.renew_at());
    renew.map_or(l.lost_deadline(), |r| r.min(l.lost_deadline()))
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// When to renew a lease next: a third of its TTL from now, scaled by `spread` in
/// [0.9, 1.1]. One spread per round keeps a cohort together while lockers started at
/// the same moment drift apart.
pub(crate) fn next_renewal(now: Instant, ttl: Duration, spread: f64) -> Instant {
    now + (ttl / 3).mul_f64(spread.clamp(0.9, 1.1))
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
    confirmed: Vec<usize>,
}

/// One renewal round: one batched extend per node, in parallel. Each lease is decided
/// at the first majority of answers about it (the shared [`HoldTally`]); a node that
/// does not answer holds nobody back, and its late extend can only push an expiry later
/// ([`Expiry::AtLeast`]), so it is simply not waited for.
async fn renew(
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
                confirmed: Vec::new(),
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
                    Some(&holding) => {
                        entry.tally.add(name, holding);
                        if matches!(holding, Holding::Ours | Holding::Reclaimed) {
                            entry.confirmed.push(i);
                        }
                    }
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
            match lease.proven_until(&entry.confirmed, start, ttl, options.drift_factor, q) {
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

/// Releases a lock on every node, for a lease or acquire nobody waits on.
async fn release_everywhere(nodes: &[Node], spec: &LockSpec, timeout: Duration) {
    let answers = FanOut::start(nodes, timeout, |n| n.release(spec))
        .all()
        .await;
    for (i, answer) in answers {
        if answer.is_err()
            && let Some(node) = nodes.get(i)
        {
            // Timed out: the node may run it later; make sure nothing is left behind.
            let _ =
                tokio::time::timeout(Duration::from_millis(spec.ttl_ms), node.abandon(spec)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::locker::Locker;
    use crate::store::memory::MemoryStore;
    use crate::store::{Acquired, Forgot, KeyInfo, Notices, Store, StoreFuture};
    use tokio::sync::Notify;

    /// A memory store whose extends wait until `open` lets them through: a renewal
    /// round that has sent its request and not yet had the answer.
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
        let options = Options {
            auto_renew: false,
            ..Options::default()
        };
        let locker = Locker::from_parts(vec![Arc::clone(&node)], options.clone());
        let lease = locker
            .acquire("k", Duration::from_millis(300))
            .await
            .expect("acquire");
        let state = Arc::clone(lease.state());
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
            let (nodes, options, state) = (vec![node], options.clone(), Arc::clone(&state));
            tokio::spawn(async move { renew(&nodes, &options, vec![(state, op)]).await })
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
        lease.release().await.expect("release");
    }
}
