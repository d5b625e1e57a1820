//! The in-process store, `memory://name`: for tests and single-process applications.
//!
//! Every store named `memory://x` in one process shares one state, kept in a
//! process-wide registry, so two lockers built from the same URL exclude each other just
//! as two clients of one Redis server would. A state lives as long as the process: it is
//! never dropped when the last handle goes, because it holds the fencing counters, and a
//! counter that vanished and came back lower would hand out a token twice.
//!
//! Each operation is one critical section under a `std::sync::Mutex`, taken on the
//! first poll of the operation's future and never held across an `.await`; so an
//! operation either happens completely or (if its future is never polled) not at all.
//!
//! Expiry uses the monotonic clock ([`Instant`]): wall-clock jumps neither expire nor
//! prolong a lease. Only the seed of a new fencing counter reads the wall clock, as the
//! protocol asks (see [`MemoryStore`]).
//!
//! Waiters are woken by notification: [`Store::watch`] hands out a receiver of a
//! per-key `tokio::sync::watch` channel that every release of the key bumps.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::rules::{self, MapRecords, Now};
use super::url::StoreOptions;
use super::{
    Acquired, Expiry, Forgot, Holding, KeyInfo, LockSpec, Node, Notice, Notices, QueueTicket,
    Store, StoreFuture, WaiterLine, Watch,
};
use crate::error::{Error, NodeError, NodeErrorKind};

/// The URL scheme: `memory://` or `memory://name`.
pub(crate) const SCHEMES: &[&str] = &["memory"];

/// The store `url` names (`memory://name`, a trailing `/` ignored), created empty on
/// first use.
///
/// # Errors
///
/// None: every name is valid. (The signature is the one every store's `open` has.)
pub(crate) fn open(url: &str, _options: &StoreOptions) -> Result<Node, Error> {
    let name = url.split_once("://").map_or("", |(_, name)| name);
    Ok(Arc::new(MemoryStore::named(name.trim_end_matches('/'))))
}

/// How often an acquire also sweeps expired locks and old counters. Sweeping is
/// O(keys), so it is rationed rather than done on every call.
const SWEEP_INTERVAL: Duration = Duration::from_secs(10);

/// Every `memory://` state of this process, by name. Strong references on purpose: see
/// the module docs.
static REGISTRY: LazyLock<Mutex<HashMap<String, Arc<Shared>>>> = LazyLock::new(Default::default);

/// A handle on one named in-process store. Cheap to clone; all clones and all stores
/// opened with the same name share one state.
///
/// Fencing counters follow the protocol (`rules.rs`): a key's first counter starts at
/// the wall clock in microseconds since the Unix epoch (or at the store's floor, if
/// that is higher), so it starts above any token a forgotten counter could have issued.
#[derive(Clone)]
pub(crate) struct MemoryStore {
    /// `memory://name`, for messages.
    name: Arc<str>,
    shared: Arc<Shared>,
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// The state behind one name.
#[derive(Default)]
struct Shared {
    state: Mutex<State>,
}

impl Shared {
    /// Locks the state. A panic while the lock was held cannot leave it half-updated in
    /// a way that matters (every operation validates before it writes), so a poisoned
    /// mutex is simply taken over.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Default)]
struct State {
    /// Locks and counters. Every counter this store ever forgot was at most the
    /// records' floor; a new counter starts above it, so forgetting counters can never
    /// make tokens go backwards, whatever the wall clock does.
    records: MapRecords<Instant>,
    /// Release notices, per key with at least one live [`Watch`]. The channel's value
    /// is meaningless; only its version moves.
    watchers: HashMap<String, watch::Sender<()>>,
    last_sweep: Option<Instant>,
    /// Fair-mode waiter lines, per key (only fair semaphores send fair tickets here:
    /// `semaphore.rs`): entries by (ticket, waiter id), each with the moment it
    /// expires unless its waiter comes back. The rule is Redis's (`acquire.lua`): a
    /// free key goes to the first live entry only.
    lines: HashMap<String, BTreeMap<(u64, Arc<str>), Instant>>,
}

impl State {
    fn acquire(&mut self, lock: &LockSpec, now: Now<Instant>) -> Result<Acquired, &'static str> {
        if self
            .last_sweep
            .is_none_or(|t| now.at.duration_since(t) >= SWEEP_INTERVAL)
        {
            self.sweep(now.at);
        }
        if let Some(q) = lock.queue.as_ref().filter(|q| q.fair) {
            // Held keys refuse as usual; free keys still go to the first live waiter
            // in line.
            let mut held_for: Option<Duration> = None;
            for key in lock.keys.iter() {
                if let rules::Slot::Other(pttl) =
                    rules::slot(&mut self.records, key, &lock.value, now.at)?
                {
                    held_for = held_for.max(Some(pttl));
                }
            }
            if held_for.is_none() {
                held_for = self.blocked_for(lock, q, now.at);
            }
            if let Some(pttl) = held_for {
                let joined = self.join_lines(lock, q, now.at, pttl);
                return Ok(Acquired::Held {
                    pttl: Some(pttl),
                    joined,
                    silent: false,
                });
            }
            self.leave_lines(lock, q);
        }
        rules::acquire(&mut self.records, lock, now)
    }

    /// With a fair ticket, some free key of `lock` has a live first waiter other than
    /// `q`'s: how long that waiter's entry has left (the longest among the keys).
    fn blocked_for(&mut self, lock: &LockSpec, q: &QueueTicket, now: Instant) -> Option<Duration> {
        let mut blocked = None;
        for key in lock.keys.iter() {
            let Some(line) = self.lines.get_mut(key) else {
                continue;
            };
            line.retain(|_, expires| *expires > now);
            if let Some(((_, waiter), expires)) = line.first_key_value()
                && **waiter != *q.waiter
            {
                blocked = blocked.max(Some(*expires - now));
            }
        }
        blocked
    }

    /// Takes (or keeps) `q`'s place in the line of every key of `lock`, valid for the
    /// wait it is told to expect plus the grace. Whether it was not in some line yet.
    fn join_lines(&mut self, lock: &LockSpec, q: &QueueTicket, now: Instant, wait: Duration) -> bool {
        let expires = now + (wait + Duration::from_millis(q.grace_ms)).min(rules::MAX_TTL);
        let mut joined = false;
        for key in lock.keys.iter() {
            let line = self.lines.entry(key.clone()).or_default();
            joined |= line
                .insert((q.ticket, Arc::clone(&q.waiter)), expires)
                .is_none();
        }
        joined
    }

    /// Takes `q`'s waiter out of the line of every key of `lock`; a waiter that was
    /// first in the line of a free key wakes the key's watchers, so the next one in line
    /// tries it.
    fn leave_lines(&mut self, lock: &LockSpec, q: &QueueTicket) {
        for key in lock.keys.iter() {
            let Some(line) = self.lines.get_mut(key) else {
                continue;
            };
            let first = line
                .first_key_value()
                .is_some_and(|((_, w), _)| *w == q.waiter);
            line.remove(&(q.ticket, Arc::clone(&q.waiter)));
            if line.is_empty() {
                self.lines.remove(key);
            }
            if first && let Some(tx) = self.watchers.get(key) {
                tx.send_replace(());
            }
        }
    }

    fn release(&mut self, lock: &LockSpec, now: Instant) -> Result<Holding, &'static str> {
        let (holding, deleted) = rules::release(&mut self.records, lock, now)?;
        if let Some(q) = lock.queue.as_ref().filter(|q| q.fair) {
            self.leave_lines(lock, q);
        }
        for i in deleted {
            if let Some(tx) = self.watchers.get(&lock.keys[i]) {
                // Bumps the version even with no receiver; never fails.
                tx.send_replace(());
            }
        }
        Ok(holding)
    }

    /// Drops expired locks, counters past retention on keys nobody holds (raising the
    /// floor above them), and notice channels nobody listens to.
    fn sweep(&mut self, now: Instant) {
        self.last_sweep = Some(now);
        self.records.sweep(now);
        self.watchers.retain(|_, tx| tx.receiver_count() > 0);
        self.lines.retain(|_, line| {
            line.retain(|_, expires| *expires > now);
            !line.is_empty()
        });
    }
}

/// "Now" for the rules: the monotonic clock for expiry, the wall clock for seeds.
fn now() -> Now<Instant> {
    Now {
        at: Instant::now(),
        wall_us: rules::wall_micros(),
    }
}

impl MemoryStore {
    /// The store called `name` in this process, created empty on first use.
    pub(crate) fn named(name: &str) -> MemoryStore {
        let mut registry = REGISTRY.lock().unwrap_or_else(PoisonError::into_inner);
        let shared = Arc::clone(registry.entry(name.to_string()).or_default());
        MemoryStore {
            name: format!("memory://{name}").into(),
            shared,
        }
    }

    /// Runs `op` on the state when the returned future is first polled.
    fn run<T: Send + 'static>(
        &self,
        op: impl FnOnce(&mut State) -> Result<T, &'static str> + Send + 'static,
    ) -> StoreFuture<T> {
        let shared = Arc::clone(&self.shared);
        let name = Arc::clone(&self.name);
        Box::pin(async move {
            let mut state = shared.lock();
            op(&mut state).map_err(|why| NodeError::new(NodeErrorKind::Other, &name, why))
        })
    }
}

impl Store for MemoryStore {
    fn name(&self) -> &str {
        &self.name
    }

    fn acquire(&self, lock: &LockSpec) -> StoreFuture<Acquired> {
        let lock = lock.clone();
        self.run(move |s| s.acquire(&lock, now()))
    }

    fn commit_fence(&self, lock: &LockSpec, token: u64) -> StoreFuture<bool> {
        let lock = lock.clone();
        self.run(move |s| rules::commit_fence(&mut s.records, &lock, token, now()))
    }

    fn extend(
        &self,
        locks: &[LockSpec],
        expiry: Expiry,
        reclaim: bool,
    ) -> StoreFuture<Vec<Holding>> {
        let locks = locks.to_vec();
        self.run(move |s| {
            let now = Instant::now();
            locks
                .iter()
                .map(|l| rules::extend(&mut s.records, l, expiry, reclaim, now))
                .collect()
        })
    }

    fn release(&self, lock: &LockSpec) -> StoreFuture<Holding> {
        let lock = lock.clone();
        self.run(move |s| s.release(&lock, Instant::now()))
    }

    /// Nothing can be in flight here (an operation is done in the poll that starts it),
    /// so a release is all it takes.
    fn abandon(&self, lock: &LockSpec) -> StoreFuture<()> {
        let lock = lock.clone();
        self.run(move |s| s.release(&lock, Instant::now()).map(|_| ()))
    }

    fn known_keys(&self, prefix: &str, limit: usize) -> StoreFuture<Vec<String>> {
        let prefix = prefix.to_string();
        self.run(move |s| Ok(s.records.known_keys(&prefix, limit)))
    }

    fn inspect(&self, key: &str) -> StoreFuture<KeyInfo> {
        let key = key.to_string();
        self.run(move |s| rules::inspect(&mut s.records, &key, Instant::now()))
    }

    fn forget(&self, key: &str) -> StoreFuture<Forgot> {
        let key = key.to_string();
        self.run(move |s| rules::forget(&mut s.records, &key, Instant::now()))
    }

    fn notices(&self) -> Option<&dyn Notices> {
        Some(self)
    }

    fn waiter_line(&self) -> Option<&dyn WaiterLine> {
        Some(self)
    }
}

/// The fair semaphores' lines only (`lines_for_locks` is false): a lock takes no
/// place in line here, and fair locks are refused.
impl WaiterLine for MemoryStore {
    fn leave_queue(&self, lock: &LockSpec) -> StoreFuture<()> {
        let lock = lock.clone();
        self.run(move |s| {
            if let Some(q) = lock.queue.as_ref().filter(|q| q.fair) {
                s.leave_lines(&lock, q);
            }
            Ok(())
        })
    }

    /// A release: no key here is ever handed to a waiter, so there is nothing to
    /// hold back (it also leaves the fair lines, as a release does).
    fn undo(&self, lock: &LockSpec) -> StoreFuture<Holding> {
        self.release(lock)
    }

    fn lines_for_locks(&self) -> bool {
        false
    }
}

/// Every waiter of a key is woken by every release of it (no waiter lines, so no
/// addressed notices: `waiter` is not looked at).
impl Notices for MemoryStore {
    /// The receiver is subscribed inside the critical section, so any release after
    /// this future resolves bumps a version it has not seen yet.
    fn watch(&self, key: &str, _waiter: Option<Arc<str>>) -> StoreFuture<Watch> {
        let key = key.to_string();
        let shared = Arc::clone(&self.shared);
        Box::pin(async move {
            let rx = shared
                .lock()
                .watchers
                .entry(key.clone())
                .or_insert_with(|| watch::channel(()).0)
                .subscribe();
            // Built after the state lock is released: the guard takes it on drop.
            let mut guard = WatchGuard {
                rx: Some(rx),
                key,
                shared,
            };
            Ok(Watch {
                notified: Box::pin(async move {
                    if let Some(rx) = guard.rx.as_mut() {
                        // Err means the channel is gone; waking the waiter is the safe
                        // answer to that (it retries and finds out).
                        let _ = rx.changed().await;
                    }
                    Notice::Retry
                }),
            })
        })
    }
}

/// Owns a watch's receiver, and on drop removes the key's channel if it was the last
/// receiver, so per-key state does not outlive its watchers.
struct WatchGuard {
    rx: Option<watch::Receiver<()>>,
    key: String,
    shared: Arc<Shared>,
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        // The receiver must be gone before counting the remaining ones.
        drop(self.rx.take());
        let mut state = self.shared.lock();
        if state
            .watchers
            .get(&self.key)
            .is_some_and(|tx| tx.receiver_count() == 0)
        {
            state.watchers.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::time::timeout;

    use super::*;
    use crate::store::kit::{Subject, granted, spec, store_kit};
    use crate::store::rules::COUNTER_RETENTION;

    /// Generous bound for "this does happen"; never reached when things work.
    const SOON: Duration = Duration::from_secs(5);

    /// A store no other test uses (the registry is process-wide).
    fn store() -> MemoryStore {
        static N: AtomicUsize = AtomicUsize::new(0);
        MemoryStore::named(&format!("test-{}", N.fetch_add(1, Ordering::Relaxed)))
    }

    fn fresh_store() -> Subject {
        Subject::new(Arc::new(store()))
    }

    store_kit!(fresh_store);

    fn at(at: Instant, wall_us: u64) -> Now<Instant> {
        Now { at, wall_us }
    }

    #[tokio::test]
    async fn name_and_shared_state_by_name() {
        let a = MemoryStore::named("shared-by-name");
        let b = MemoryStore::named("shared-by-name");
        let c = MemoryStore::named("shared-by-name-other");
        assert_eq!(a.name(), "memory://shared-by-name");
        assert_eq!(MemoryStore::named("").name(), "memory://");
        granted(&a, &spec(&["k"], "A", 10_000)).await;
        assert!(matches!(
            b.acquire(&spec(&["k"], "B", 10_000)).await.unwrap(),
            Acquired::Held { .. }
        ));
        granted(&c, &spec(&["k"], "C", 10_000)).await;
    }

    #[tokio::test]
    async fn dropped_watches_leave_no_state() {
        let s = store();
        let watchers = || s.shared.lock().watchers.len();
        // Never polled.
        let w = s.watch("a", None).await.unwrap();
        assert_eq!(watchers(), 1);
        drop(w);
        assert_eq!(watchers(), 0);
        // Polled, then dropped while pending; a second watcher keeps the entry alive.
        let mut w1 = s.watch("b", None).await.unwrap();
        let w2 = s.watch("b", None).await.unwrap();
        assert!(
            timeout(Duration::from_millis(10), &mut w1.notified)
                .await
                .is_err()
        );
        drop(w1);
        assert_eq!(watchers(), 1);
        drop(w2);
        assert_eq!(watchers(), 0);
        // Completed.
        let lock = spec(&["c"], "A", 10_000);
        granted(&s, &lock).await;
        let w = s.watch("c", None).await.unwrap();
        s.release(&lock).await.unwrap();
        timeout(SOON, w.notified).await.unwrap();
        assert_eq!(watchers(), 0);
        assert!(s.shared.lock().records.locks.is_empty());
    }

    /// No waiter lines here: one release wakes every watcher of the key.
    #[tokio::test]
    async fn a_release_wakes_every_watcher() {
        let s = store();
        let lock = spec(&["k"], "A", 10_000);
        granted(&s, &lock).await;
        let mut waiters = Vec::new();
        for _ in 0..3 {
            waiters.push(tokio::spawn(s.watch("k", None).await.unwrap().notified));
        }
        s.release(&lock).await.unwrap();
        for w in waiters {
            timeout(SOON, w)
                .await
                .expect("a waiter was not woken")
                .unwrap();
        }
    }

    #[test]
    fn sweep_drops_expired_locks_and_old_unheld_counters_only() {
        let mut st = State::default();
        let t0 = Instant::now();
        let wall = rules::wall_micros();
        let day = COUNTER_RETENTION;
        let Acquired::Granted { counter: held } = st
            .acquire(&spec(&["held"], "A", 3 * 86_400_000), at(t0, wall))
            .unwrap()
        else {
            panic!("not granted")
        };
        st.acquire(&spec(&["idle"], "A", 1_000), at(t0, wall))
            .unwrap();
        // One second short of retention: everything's counter stays, the lock goes.
        st.sweep(t0 + day - Duration::from_secs(1));
        assert!(!st.records.locks.contains_key("idle"));
        let counters = &st.records.counters;
        assert!(counters.contains_key("idle") && counters.contains_key("held"));
        // Past retention: the idle counter goes, the held key's stays.
        st.sweep(t0 + day + Duration::from_secs(1));
        assert!(!st.records.counters.contains_key("idle"));
        assert_eq!(st.records.counters.get("held").map(|c| c.0), Some(held));
    }

    #[test]
    fn a_dropped_counter_never_comes_back_lower() {
        // A counter far above the clock (as after a wall-clock step back), then dropped.
        let mut st = State::default();
        let t0 = Instant::now();
        let wall = rules::wall_micros();
        let high = wall + 1_000_000_000_000;
        st.acquire(&spec(&["k"], "A", 1_000), at(t0, wall)).unwrap();
        assert_eq!(
            rules::commit_fence(&mut st.records, &spec(&["k"], "A", 1_000), high, at(t0, wall)),
            Ok(true)
        );
        st.sweep(t0 + COUNTER_RETENTION + Duration::from_secs(10));
        assert!(st.records.counters.is_empty(), "counter was not dropped");
        let later = t0 + COUNTER_RETENTION + Duration::from_secs(11);
        let got = st.acquire(&spec(&["k"], "B", 1_000), at(later, wall)).unwrap();
        assert_eq!(got, Acquired::Granted { counter: high + 1 });
    }
}
