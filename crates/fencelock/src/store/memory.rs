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
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use tokio::sync::watch;

use super::{
    Acquired, Expiry, Forgot, Holding, KeyInfo, LockSpec, Notice, QueueTicket, Store, StoreFuture,
    Watch,
};
use crate::error::{NodeError, NodeErrorKind};

/// A fencing counter unused for this long, on a key nobody holds, may be forgotten.
/// Forgetting is safe at any age thanks to the store's floor (see [`State::floor`]);
/// the retention only keeps `inspect` informative and the map small.
const COUNTER_RETENTION: Duration = Duration::from_secs(24 * 60 * 60);

/// How often an acquire also sweeps expired locks and old counters. Sweeping is
/// O(keys), so it is rationed rather than done on every call.
const SWEEP_INTERVAL: Duration = Duration::from_secs(10);

/// TTLs are clamped to this (about 100 years) so `Instant + ttl` cannot overflow; a
/// longer lease is indistinguishable from one that never expires anyway.
const MAX_TTL: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);

/// Every `memory://` state of this process, by name. Strong references on purpose: see
/// the module docs.
static REGISTRY: LazyLock<Mutex<HashMap<String, Arc<Shared>>>> = LazyLock::new(Default::default);

/// A handle on one named in-process store. Cheap to clone; all clones and all stores
/// opened with the same name share one state.
///
/// Fencing counters follow the protocol: a key's first counter starts at the wall
/// clock in microseconds since the Unix epoch (or at the store's floor, if that is
/// higher), so it starts above any token a forgotten counter could have issued.
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

/// One held key.
struct Held {
    value: Arc<str>,
    expires: Instant,
    holder: Option<Arc<str>>,
}

/// One key's fencing counter.
struct Counter {
    value: u64,
    /// Last time an acquire or a fence commit set it (for retention).
    touched: Instant,
}

/// How a key looks to one lock at one instant.
enum Slot {
    /// Missing or expired: anyone may take it.
    Free,
    /// Holds the lock's value and has not expired.
    Ours,
    /// Holds another value; expires after the given time.
    Other(Duration),
}

#[derive(Default)]
struct State {
    locks: HashMap<String, Held>,
    counters: HashMap<String, Counter>,
    /// Release notices, per key with at least one live [`Watch`]. The channel's value
    /// is meaningless; only its version moves.
    watchers: HashMap<String, watch::Sender<()>>,
    /// Every counter this store ever forgot was at most this. A new counter starts
    /// above it, so forgetting counters can never make tokens go backwards, whatever
    /// the wall clock does.
    floor: u64,
    last_sweep: Option<Instant>,
    /// Fair-mode waiter lines, per key (only fair semaphores send fair tickets here:
    /// `semaphore.rs`): entries by (ticket, waiter id), each with the moment it
    /// expires unless its waiter comes back. The rule is Redis's (`acquire.lua`): a
    /// free key goes to the first live entry only.
    lines: HashMap<String, BTreeMap<(u64, Arc<str>), Instant>>,
}

impl State {
    fn slot(&self, key: &str, value: &str, now: Instant) -> Slot {
        match self.locks.get(key) {
            Some(h) if h.expires > now => {
                if *h.value == *value {
                    Slot::Ours
                } else {
                    Slot::Other(h.expires - now)
                }
            }
            _ => Slot::Free,
        }
    }

    fn acquire(
        &mut self,
        lock: &LockSpec,
        now: Instant,
        wall_us: u64,
    ) -> Result<Acquired, &'static str> {
        if self
            .last_sweep
            .is_none_or(|t| now.duration_since(t) >= SWEEP_INTERVAL)
        {
            self.sweep(now);
        }
        let mut held_for: Option<Duration> = None;
        for key in lock.keys.iter() {
            if let Slot::Other(pttl) = self.slot(key, &lock.value, now) {
                held_for = held_for.max(Some(pttl));
            }
        }
        let fair = lock.queue.as_ref().filter(|q| q.fair);
        if let Some(q) = fair {
            // Free keys still go to the first live waiter in line.
            if held_for.is_none() {
                held_for = self.blocked_for(lock, q, now);
            }
            if let Some(pttl) = held_for {
                let joined = self.join_lines(lock, q, now, pttl);
                return Ok(Acquired::Held {
                    pttl: Some(pttl),
                    joined,
                    silent: false,
                });
            }
            self.leave_lines(lock, q);
        }
        if let Some(pttl) = held_for {
            return Ok(Acquired::Held {
                pttl: Some(pttl),
                joined: false,
                silent: false,
            });
        }
        let seed = wall_us.max(self.floor);
        let top = lock
            .keys
            .iter()
            .map(|k| self.counters.get(k).map_or(seed, |c| c.value))
            .max()
            .unwrap_or(seed)
            .checked_add(1)
            .ok_or("the fencing counter is exhausted")?;
        let expires = now + ttl(lock);
        for key in lock.keys.iter() {
            self.locks.insert(
                key.clone(),
                Held {
                    value: Arc::clone(&lock.value),
                    expires,
                    holder: lock.holder.clone(),
                },
            );
            self.counters.insert(
                key.clone(),
                Counter {
                    value: top,
                    touched: now,
                },
            );
        }
        Ok(Acquired::Granted { counter: top })
    }

    fn commit_fence(&mut self, lock: &LockSpec, token: u64, now: Instant, wall_us: u64) -> bool {
        let all_ours = lock
            .keys
            .iter()
            .all(|k| matches!(self.slot(k, &lock.value, now), Slot::Ours));
        if !all_ours {
            return false;
        }
        // A held key always has a counter (it is never swept while held); the seed is
        // only a fallback that keeps the rule "a missing counter starts at the clock".
        let seed = wall_us.max(self.floor);
        for key in lock.keys.iter() {
            let c = self.counters.entry(key.clone()).or_insert(Counter {
                value: seed,
                touched: now,
            });
            c.value = c.value.max(token);
            c.touched = now;
        }
        true
    }

    /// Classifies a lock's keys: all ours, or some held by another, or else expired.
    fn holding(&self, lock: &LockSpec, now: Instant) -> Holding {
        let mut other = false;
        let mut all_ours = true;
        for key in lock.keys.iter() {
            match self.slot(key, &lock.value, now) {
                Slot::Ours => {}
                Slot::Other(_) => {
                    other = true;
                    all_ours = false;
                }
                Slot::Free => all_ours = false,
            }
        }
        if all_ours {
            Holding::Ours
        } else if other {
            Holding::Other
        } else {
            Holding::Expired
        }
    }

    fn extend(&mut self, lock: &LockSpec, expiry: Expiry, reclaim: bool, now: Instant) -> Holding {
        let holding = self.holding(lock, now);
        let reclaiming = reclaim && holding == Holding::Expired;
        if holding == Holding::Ours || reclaiming {
            let expires = now + ttl(lock);
            for key in lock.keys.iter() {
                match self.locks.get_mut(key) {
                    Some(h) if h.value == lock.value && h.expires > now => {
                        h.expires = match expiry {
                            Expiry::AtLeast => h.expires.max(expires),
                            Expiry::Exactly => expires,
                        };
                    }
                    _ => {
                        self.locks.insert(
                            key.clone(),
                            Held {
                                value: Arc::clone(&lock.value),
                                expires,
                                holder: lock.holder.clone(),
                            },
                        );
                    }
                }
            }
        }
        if reclaiming {
            Holding::Reclaimed
        } else {
            holding
        }
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
    fn join_lines(
        &mut self,
        lock: &LockSpec,
        q: &QueueTicket,
        now: Instant,
        wait: Duration,
    ) -> bool {
        let expires = now + (wait + Duration::from_millis(q.grace_ms)).min(MAX_TTL);
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

    fn release(&mut self, lock: &LockSpec, now: Instant) -> Holding {
        let holding = self.holding(lock, now);
        if let Some(q) = lock.queue.as_ref().filter(|q| q.fair) {
            self.leave_lines(lock, q);
        }
        for key in lock.keys.iter() {
            // Our expired rows go too: they are free already, deleting them is tidying.
            if self.locks.get(key).is_some_and(|h| h.value == lock.value) {
                self.locks.remove(key);
                if let Some(tx) = self.watchers.get(key) {
                    // Bumps the version even with no receiver; never fails.
                    tx.send_replace(());
                }
            }
        }
        holding
    }

    fn inspect(&self, key: &str, now: Instant) -> KeyInfo {
        let mut info = KeyInfo {
            last_token: self.counters.get(key).map(|c| c.value),
            ..KeyInfo::default()
        };
        if let Some(h) = self.locks.get(key).filter(|h| h.expires > now) {
            info.value = Some(h.value.to_string());
            info.pttl = Some(h.expires - now);
            info.holder = h.holder.as_deref().map(str::to_string);
        }
        info
    }

    /// Forgets `key` unless it is held: its lock entry (expired) and its counter, with
    /// the floor raised above the counter first, as a sweep would.
    fn forget(&mut self, key: &str, now: Instant) -> Forgot {
        if self.locks.get(key).is_some_and(|h| h.expires > now) {
            return Forgot::InUse;
        }
        self.locks.remove(key);
        if let Some(c) = self.counters.remove(key) {
            self.floor = self.floor.max(c.value);
        }
        Forgot::Done
    }

    /// Drops expired locks, counters past retention on keys nobody holds (raising the
    /// floor above them), and notice channels nobody listens to.
    fn sweep(&mut self, now: Instant) {
        self.last_sweep = Some(now);
        self.locks.retain(|_, h| h.expires > now);
        let locks = &self.locks;
        let mut floor = self.floor;
        self.counters.retain(|key, c| {
            let keep = locks.contains_key(key) || now.duration_since(c.touched) < COUNTER_RETENTION;
            if !keep {
                floor = floor.max(c.value);
            }
            keep
        });
        self.floor = floor;
        self.watchers.retain(|_, tx| tx.receiver_count() > 0);
        self.lines.retain(|_, line| {
            line.retain(|_, expires| *expires > now);
            !line.is_empty()
        });
    }
}

/// The TTL of a lock as a duration, clamped (see [`MAX_TTL`]).
fn ttl(lock: &LockSpec) -> Duration {
    Duration::from_millis(lock.ttl_ms).min(MAX_TTL)
}

/// Wall-clock microseconds since the Unix epoch (0 for a clock set before 1970).
fn wall_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
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
        self.run(move |s| s.acquire(&lock, Instant::now(), wall_micros()))
    }

    fn commit_fence(&self, lock: &LockSpec, token: u64) -> StoreFuture<bool> {
        let lock = lock.clone();
        self.run(move |s| Ok(s.commit_fence(&lock, token, Instant::now(), wall_micros())))
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
            Ok(locks
                .iter()
                .map(|l| s.extend(l, expiry, reclaim, now))
                .collect())
        })
    }

    fn release(&self, lock: &LockSpec) -> StoreFuture<Holding> {
        let lock = lock.clone();
        self.run(move |s| Ok(s.release(&lock, Instant::now())))
    }

    /// Nothing can be in flight here (an operation is done in the poll that starts it),
    /// so a release is all it takes.
    fn abandon(&self, lock: &LockSpec) -> StoreFuture<()> {
        let lock = lock.clone();
        self.run(move |s| {
            s.release(&lock, Instant::now());
            Ok(())
        })
    }

    fn leave_queue(&self, lock: &LockSpec) -> StoreFuture<()> {
        let lock = lock.clone();
        self.run(move |s| {
            if let Some(q) = lock.queue.as_ref().filter(|q| q.fair) {
                s.leave_lines(&lock, q);
            }
            Ok(())
        })
    }

    fn known_keys(&self, prefix: &str, limit: usize) -> StoreFuture<Vec<String>> {
        let prefix = prefix.to_string();
        self.run(move |s| {
            let mut keys: Vec<String> = s
                .counters
                .keys()
                .filter(|k| k.starts_with(&prefix))
                .cloned()
                .collect();
            keys.sort();
            keys.truncate(limit);
            Ok(keys)
        })
    }

    fn inspect(&self, key: &str) -> StoreFuture<KeyInfo> {
        let key = key.to_string();
        self.run(move |s| Ok(s.inspect(&key, Instant::now())))
    }

    fn forget(&self, key: &str) -> StoreFuture<Forgot> {
        let key = key.to_string();
        self.run(move |s| Ok(s.forget(&key, Instant::now())))
    }

    /// The receiver is subscribed inside the critical section, so any release after
    /// this future resolves bumps a version it has not seen yet.
    fn watch(&self, key: &str, _waiter: Option<Arc<str>>) -> StoreFuture<Option<Watch>> {
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
            Ok(Some(Watch {
                notified: Box::pin(async move {
                    if let Some(rx) = guard.rx.as_mut() {
                        // Err means the channel is gone; waking the waiter is the safe
                        // answer to that (it retries and finds out).
                        let _ = rx.changed().await;
                    }
                    Notice::Retry
                }),
            }))
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

    use tokio::time::{sleep, timeout};

    use super::*;

    /// Generous bound for "this does happen"; never reached when things work.
    const SOON: Duration = Duration::from_secs(5);
    /// Bound for "this does not happen": long enough for a wrong wake-up to show.
    const NOT_YET: Duration = Duration::from_millis(100);

    /// A store no other test uses (the registry is process-wide).
    fn store() -> MemoryStore {
        static N: AtomicUsize = AtomicUsize::new(0);
        MemoryStore::named(&format!("test-{}", N.fetch_add(1, Ordering::Relaxed)))
    }

    fn spec(keys: &[&str], value: &str, ttl_ms: u64) -> LockSpec {
        LockSpec {
            keys: keys.iter().map(|k| k.to_string()).collect(),
            value: value.into(),
            ttl_ms,
            holder: None,
            queue: None,
        }
    }

    async fn granted(s: &MemoryStore, lock: &LockSpec) -> u64 {
        match s.acquire(lock).await.unwrap() {
            Acquired::Granted { counter } => counter,
            other => panic!("expected a grant for {lock:?}, got {other:?}"),
        }
    }

    async fn held_for(s: &MemoryStore, lock: &LockSpec) -> Duration {
        match s.acquire(lock).await.unwrap() {
            Acquired::Held { pttl: Some(p), .. } => p,
            other => panic!("expected held for {lock:?}, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn name_and_shared_state_by_name() {
        let a = MemoryStore::named("shared-by-name");
        let b = MemoryStore::named("shared-by-name");
        let c = MemoryStore::named("shared-by-name-other");
        assert_eq!(a.name(), "memory://shared-by-name");
        assert_eq!(MemoryStore::named("").name(), "memory://");
        granted(&a, &spec(&["k"], "A", 10_000)).await;
        held_for(&b, &spec(&["k"], "B", 10_000)).await;
        granted(&c, &spec(&["k"], "C", 10_000)).await;
    }

    #[tokio::test]
    async fn grant_then_held_with_longest_remaining_ttl() {
        let s = store();
        granted(&s, &spec(&["a"], "A", 5_000)).await;
        granted(&s, &spec(&["b"], "B", 60_000)).await;
        let p = held_for(&s, &spec(&["a"], "C", 1_000)).await;
        assert!(
            p > Duration::from_secs(4) && p <= Duration::from_secs(5),
            "{p:?}"
        );
        let p = held_for(&s, &spec(&["a", "b"], "C", 1_000)).await;
        assert!(
            p > Duration::from_secs(55) && p <= Duration::from_secs(60),
            "{p:?}"
        );
    }

    #[tokio::test]
    async fn multi_key_acquire_is_all_or_nothing() {
        let s = store();
        let first = granted(&s, &spec(&["b"], "A", 10_000)).await;
        held_for(&s, &spec(&["a", "b", "c"], "B", 10_000)).await;
        for key in ["a", "c"] {
            let info = s.inspect(key).await.unwrap();
            assert_eq!(
                info,
                KeyInfo::default(),
                "{key} was touched by a refused acquire"
            );
        }
        let b = s.inspect("b").await.unwrap();
        assert_eq!((b.value.as_deref(), b.last_token), (Some("A"), Some(first)));
    }

    #[tokio::test]
    async fn reacquire_with_own_value_refreshes_and_bumps() {
        let s = store();
        let lock = spec(&["k"], "A", 200);
        let t1 = granted(&s, &lock).await;
        let longer = spec(&["k"], "A", 60_000);
        let t2 = granted(&s, &longer).await;
        assert!(t2 > t1);
        let pttl = s.inspect("k").await.unwrap().pttl.unwrap();
        assert!(pttl > Duration::from_secs(50), "{pttl:?}");
    }

    #[tokio::test]
    async fn tokens_start_at_wall_clock_micros_and_only_grow() {
        let s = store();
        let before = wall_micros();
        let t1 = granted(&s, &spec(&["k"], "A", 10_000)).await;
        let after = wall_micros();
        assert!(
            t1 > before && t1 <= after + 1,
            "{before} < {t1} <= {after} + 1"
        );
        s.release(&spec(&["k"], "A", 10_000)).await.unwrap();
        let t2 = granted(&s, &spec(&["k"], "B", 10_000)).await;
        assert_eq!(t2, t1 + 1);
        // Several keys: one past the largest counter (here k's, raised far above the
        // clock that seeds j's), and every key gets it.
        s.commit_fence(&spec(&["k"], "B", 10_000), t2 + 1_000_000_000_000)
            .await
            .unwrap();
        s.release(&spec(&["k"], "B", 10_000)).await.unwrap();
        let t3 = granted(&s, &spec(&["j", "k"], "C", 10_000)).await;
        assert_eq!(t3, t2 + 1_000_000_000_001);
        for key in ["j", "k"] {
            assert_eq!(s.inspect(key).await.unwrap().last_token, Some(t3));
        }
    }

    #[tokio::test]
    async fn commit_fence_raises_only_while_ours() {
        let s = store();
        let lock = spec(&["a", "b"], "A", 10_000);
        let t = granted(&s, &lock).await;
        assert!(s.commit_fence(&lock, t + 50).await.unwrap());
        assert_eq!(s.inspect("a").await.unwrap().last_token, Some(t + 50));
        // Never lowered.
        assert!(s.commit_fence(&lock, t).await.unwrap());
        assert_eq!(s.inspect("b").await.unwrap().last_token, Some(t + 50));
        // Not ours (one key taken by someone else): false, nothing changed.
        s.release(&spec(&["b"], "A", 0)).await.unwrap();
        let tb = granted(&s, &spec(&["b"], "B", 10_000)).await;
        assert!(!s.commit_fence(&lock, tb + 99).await.unwrap());
        assert_eq!(s.inspect("a").await.unwrap().last_token, Some(t + 50));
        assert_eq!(s.inspect("b").await.unwrap().last_token, Some(tb));
        // Expired: false.
        let short = spec(&["c"], "C", 20);
        let tc = granted(&s, &short).await;
        sleep(Duration::from_millis(70)).await;
        assert!(!s.commit_fence(&short, tc + 5).await.unwrap());
        assert_eq!(s.inspect("c").await.unwrap().last_token, Some(tc));
    }

    #[tokio::test]
    async fn extend_reports_each_lock_in_order() {
        let s = store();
        let ours = spec(&["o1", "o2"], "A", 5_000);
        let other = spec(&["x"], "A", 10_000);
        let gone = spec(&["g"], "A", 20);
        granted(&s, &ours).await;
        granted(&s, &spec(&["x"], "B", 10_000)).await;
        granted(&s, &gone).await;
        sleep(Duration::from_millis(70)).await;
        let longer = spec(&["o1", "o2"], "A", 60_000);
        let out = s
            .extend(&[longer, other, gone], Expiry::Exactly, false)
            .await
            .unwrap();
        assert_eq!(out, [Holding::Ours, Holding::Other, Holding::Expired]);
        for key in ["o1", "o2"] {
            let pttl = s.inspect(key).await.unwrap().pttl.unwrap();
            assert!(pttl > Duration::from_secs(50), "{key}: {pttl:?}");
        }
        // The other owner's key is untouched.
        assert_eq!(s.inspect("x").await.unwrap().value.as_deref(), Some("B"));
        assert_eq!(s.extend(&[], Expiry::Exactly, false).await.unwrap(), []);
    }

    #[tokio::test]
    async fn extend_with_one_key_lost_extends_nothing() {
        let s = store();
        let lock = spec(&["a", "b"], "A", 10_000);
        granted(&s, &lock).await;
        s.release(&spec(&["b"], "A", 0)).await.unwrap();
        let before = s.inspect("a").await.unwrap().pttl.unwrap();
        let out = s
            .extend(&[spec(&["a", "b"], "A", 60_000)], Expiry::Exactly, false)
            .await
            .unwrap();
        assert_eq!(out, [Holding::Expired]);
        let after = s.inspect("a").await.unwrap().pttl.unwrap();
        assert!(
            after <= before,
            "{after:?} > {before:?}: extended a partial lock"
        );
        assert_eq!(s.inspect("b").await.unwrap().value, None);
    }

    #[tokio::test]
    async fn release_reports_ours_other_expired() {
        let s = store();
        let lock = spec(&["a", "b"], "A", 10_000);
        granted(&s, &lock).await;
        assert_eq!(s.release(&lock).await.unwrap(), Holding::Ours);
        for key in ["a", "b"] {
            assert_eq!(s.inspect(key).await.unwrap().value, None);
        }
        assert_eq!(s.release(&lock).await.unwrap(), Holding::Expired);

        granted(&s, &lock).await;
        s.release(&spec(&["b"], "A", 0)).await.unwrap();
        granted(&s, &spec(&["b"], "B", 10_000)).await;
        // Ours where still ours is deleted; the other owner's key stays.
        assert_eq!(s.release(&lock).await.unwrap(), Holding::Other);
        assert_eq!(s.inspect("a").await.unwrap().value, None);
        assert_eq!(s.inspect("b").await.unwrap().value.as_deref(), Some("B"));

        let short = spec(&["c"], "C", 20);
        granted(&s, &short).await;
        sleep(Duration::from_millis(70)).await;
        assert_eq!(s.release(&short).await.unwrap(), Holding::Expired);
    }

    #[tokio::test]
    async fn abandon_releases() {
        let s = store();
        let lock = spec(&["a"], "A", 10_000);
        granted(&s, &lock).await;
        s.abandon(&lock).await.unwrap();
        assert_eq!(s.inspect("a").await.unwrap().value, None);
        // Abandoning what is not ours touches nothing.
        granted(&s, &spec(&["a"], "B", 10_000)).await;
        s.abandon(&lock).await.unwrap();
        assert_eq!(s.inspect("a").await.unwrap().value.as_deref(), Some("B"));
    }

    #[tokio::test]
    async fn expired_keys_are_free() {
        let s = store();
        // Long enough to be seen held even on a loaded machine, then waited out.
        let t1 = granted(&s, &spec(&["k"], "A", 300)).await;
        held_for(&s, &spec(&["k"], "B", 10_000)).await;
        sleep(Duration::from_millis(350)).await;
        let t2 = granted(&s, &spec(&["k"], "B", 10_000)).await;
        assert!(t2 > t1);
    }

    #[tokio::test]
    async fn inspect_shows_holder_only_while_held() {
        let s = store();
        assert_eq!(s.inspect("k").await.unwrap(), KeyInfo::default());
        let mut lock = spec(&["k"], "A", 10_000);
        lock.holder = Some("host-1 pid 42".into());
        let t = granted(&s, &lock).await;
        let info = s.inspect("k").await.unwrap();
        assert_eq!(info.value.as_deref(), Some("A"));
        assert_eq!(info.holder.as_deref(), Some("host-1 pid 42"));
        assert_eq!(info.last_token, Some(t));
        let pttl = info.pttl.unwrap();
        assert!(pttl > Duration::from_secs(9) && pttl <= Duration::from_secs(10));
        // Extending keeps the holder.
        s.extend(std::slice::from_ref(&lock), Expiry::Exactly, false)
            .await
            .unwrap();
        let info = s.inspect("k").await.unwrap();
        assert_eq!(info.holder.as_deref(), Some("host-1 pid 42"));
        s.release(&lock).await.unwrap();
        let info = s.inspect("k").await.unwrap();
        assert_eq!(
            info,
            KeyInfo {
                last_token: Some(t),
                ..KeyInfo::default()
            }
        );
    }

    #[tokio::test]
    async fn watch_wakes_on_release_and_not_before() {
        let s = store();
        let lock = spec(&["k"], "A", 10_000);
        granted(&s, &lock).await;
        let mut w = s
            .watch("k", None)
            .await
            .unwrap()
            .expect("memory store notifies");
        // None of these is a release of "k".
        s.extend(std::slice::from_ref(&lock), Expiry::Exactly, false)
            .await
            .unwrap();
        granted(&s, &lock).await;
        held_for(&s, &spec(&["k"], "B", 10_000)).await;
        s.release(&spec(&["k"], "B", 10_000)).await.unwrap();
        granted(&s, &spec(&["other"], "A", 10_000)).await;
        s.release(&spec(&["other"], "A", 10_000)).await.unwrap();
        assert!(
            timeout(NOT_YET, &mut w.notified).await.is_err(),
            "woken without a release of the key"
        );
        s.release(&lock).await.unwrap();
        timeout(SOON, w.notified)
            .await
            .expect("not woken by the release");
    }

    #[tokio::test]
    async fn watch_is_armed_when_returned() {
        let s = store();
        let lock = spec(&["k"], "A", 10_000);
        granted(&s, &lock).await;
        let w = s.watch("k", None).await.unwrap().unwrap();
        // Released before the watch is ever polled: must not be missed.
        s.release(&lock).await.unwrap();
        timeout(SOON, w.notified).await.expect("release was missed");
        // A watch taken after the release waits for the next one.
        let mut late = s.watch("k", None).await.unwrap().unwrap();
        assert!(timeout(NOT_YET, &mut late.notified).await.is_err());
    }

    #[tokio::test]
    async fn every_watcher_is_woken() {
        let s = store();
        let lock = spec(&["k"], "A", 10_000);
        granted(&s, &lock).await;
        let waiters: Vec<_> = futures_util::future::join_all((0..3).map(|_| s.watch("k", None)))
            .await
            .into_iter()
            .map(|w| tokio::spawn(w.unwrap().unwrap().notified))
            .collect();
        sleep(Duration::from_millis(10)).await;
        s.release(&lock).await.unwrap();
        for w in waiters {
            timeout(SOON, w)
                .await
                .expect("a waiter was not woken")
                .unwrap();
        }
    }

    #[tokio::test]
    async fn dropped_watches_leave_no_state() {
        let s = store();
        let watchers = || s.shared.lock().watchers.len();
        // Never polled.
        let w = s.watch("a", None).await.unwrap().unwrap();
        assert_eq!(watchers(), 1);
        drop(w);
        assert_eq!(watchers(), 0);
        // Polled, then dropped while pending; a second watcher keeps the entry alive.
        let mut w1 = s.watch("b", None).await.unwrap().unwrap();
        let w2 = s.watch("b", None).await.unwrap().unwrap();
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
        let w = s.watch("c", None).await.unwrap().unwrap();
        s.release(&lock).await.unwrap();
        timeout(SOON, w.notified).await.unwrap();
        assert_eq!(watchers(), 0);
        assert!(s.shared.lock().locks.is_empty());
    }

    #[test]
    fn sweep_drops_expired_locks_and_old_unheld_counters_only() {
        let mut st = State::default();
        let t0 = Instant::now();
        let wall = wall_micros();
        let day = COUNTER_RETENTION;
        let Acquired::Granted { counter: held } = st
            .acquire(&spec(&["held"], "A", 3 * 86_400_000), t0, wall)
            .unwrap()
        else {
            panic!("not granted")
        };
        st.acquire(&spec(&["idle"], "A", 1_000), t0, wall).unwrap();
        // One second short of retention: everything's counter stays, the lock goes.
        st.sweep(t0 + day - Duration::from_secs(1));
        assert!(!st.locks.contains_key("idle"));
        assert!(st.counters.contains_key("idle") && st.counters.contains_key("held"));
        // Past retention: the idle counter goes, the held key's stays.
        st.sweep(t0 + day + Duration::from_secs(1));
        assert!(!st.counters.contains_key("idle"));
        assert_eq!(st.counters.get("held").map(|c| c.value), Some(held));
    }

    #[test]
    fn a_dropped_counter_never_comes_back_lower() {
        // A counter far above the clock (as after a wall-clock step back), then dropped.
        let mut st = State::default();
        let t0 = Instant::now();
        let wall = wall_micros();
        let high = wall + 1_000_000_000_000;
        st.acquire(&spec(&["k"], "A", 1_000), t0, wall).unwrap();
        assert!(st.commit_fence(&spec(&["k"], "A", 1_000), high, t0, wall));
        st.sweep(t0 + COUNTER_RETENTION + Duration::from_secs(10));
        assert!(st.counters.is_empty(), "counter was not dropped");
        let later = t0 + COUNTER_RETENTION + Duration::from_secs(11);
        let got = st.acquire(&spec(&["k"], "B", 1_000), later, wall).unwrap();
        assert_eq!(got, Acquired::Granted { counter: high + 1 });
    }

    #[test]
    fn a_forgotten_counter_never_comes_back_lower() {
        let mut st = State::default();
        let t0 = Instant::now();
        let wall = wall_micros();
        let high = wall + 1_000_000_000_000;
        st.acquire(&spec(&["k"], "A", 1_000), t0, wall).unwrap();
        assert!(st.commit_fence(&spec(&["k"], "A", 1_000), high, t0, wall));
        assert_eq!(st.forget("k", t0), Forgot::InUse);
        st.release(&spec(&["k"], "A", 1_000), t0);
        assert_eq!(st.forget("k", t0), Forgot::Done);
        assert!(st.counters.is_empty() && st.locks.is_empty());
        let got = st.acquire(&spec(&["k"], "B", 1_000), t0, wall).unwrap();
        assert_eq!(got, Acquired::Granted { counter: high + 1 });
    }

    #[test]
    fn an_exhausted_counter_is_an_error_not_a_repeat() {
        let mut st = State::default();
        let t0 = Instant::now();
        st.acquire(&spec(&["k"], "A", 1_000), t0, 5).unwrap();
        assert!(st.commit_fence(&spec(&["k"], "A", 1_000), u64::MAX, t0, 5));
        assert!(st.acquire(&spec(&["k"], "A", 1_000), t0, 5).is_err());
        assert_eq!(st.counters.get("k").map(|c| c.value), Some(u64::MAX));
    }

    #[tokio::test]
    async fn huge_ttls_do_not_overflow() {
        let s = store();
        let lock = spec(&["k"], "A", u64::MAX);
        granted(&s, &lock).await;
        assert_eq!(
            s.extend(&[lock], Expiry::Exactly, false).await.unwrap(),
            [Holding::Ours]
        );
        assert!(s.inspect("k").await.unwrap().pttl.unwrap() > Duration::from_secs(86_400));
    }
}
