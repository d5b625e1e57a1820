//! The per-node rules of a lock key, written once: the executable spec every store
//! follows.
//!
//! A node keeps, per lock key, at most one *lock record* (value, expiry, holder) and
//! one *fencing counter* (value, when it was last set), and per store one *counter
//! floor*. Every store operation is one of the functions below applied to those
//! records inside the store's critical section (a mutex for `memory://`, a
//! `BEGIN IMMEDIATE` transaction for `sqlite://`): the store only says how to read and
//! write a record ([`Records`]) and what "now" is. Redis cannot run Rust on the
//! server, so its Lua scripts (`store/redis/*.lua`) take the same steps, named beside
//! each rule here; the store kit (`store/kit.rs`) runs one set of cases against every
//! store, Redis included, so a store that drifts from these rules fails there.
//!
//! The rules:
//!
//! - **Free, ours, other's** ([`slot`]): a key without a record, or whose record has
//!   expired, is free; one that holds the lock's value is ours; anything else is
//!   another owner's, for the time it has left.
//! - **Acquire** ([`acquire`]; `acquire.lua`): all keys free or ours → every key gets
//!   the lock's value and TTL, and every key's counter becomes one past the largest
//!   counter among them, a key without a counter counting as the *seed*: the wall
//!   clock in µs, or the floor if that is higher (Redis: the node's `TIME`, no floor).
//!   Otherwise nothing changes and the answer is the longest time left among the other
//!   owners' keys. A counter at `u64::MAX` is an error, never a repeated token.
//! - **Commit** ([`commit_fence`]; `commit.lua`): every key still ours → each counter
//!   rises to at least the token (never lowered). Otherwise nothing changes.
//! - **Extend** ([`extend`]; `extend.lua`): all keys ours → each expiry becomes
//!   `now + ttl` ([`Expiry::Exactly`]) or the later of that and the current one
//!   ([`Expiry::AtLeast`]); with `reclaim`, keys that are free (none another's) are
//!   taken again ([`Holding::Reclaimed`]), with the lease's holder (Redis keeps no
//!   holder record for them: `extend.lua` is given none to write, see
//!   `docs/stores.md`). Otherwise nothing changes.
//! - **Release** ([`release`]; `release.lua`): every key holding our value is deleted,
//!   expired or not; the answer says whether all were ours, some another's, or some gone.
//! - **Forget** ([`forget`]; `forget.lua`): a key held here is kept; otherwise its
//!   records go, the floor first raised to its counter, so the key's next token is
//!   still above every one it had (Redis, with no floor, answers "too soon" until its
//!   clock has passed the counter).
//! - **Retention** ([`counter_expendable`]): a counter on a key nobody holds, unused for
//!   [`COUNTER_RETENTION`], may be dropped by a sweep, the floor raised to it first
//!   (Redis instead lets the counter key expire once its clock has passed it).
//! - **TTLs** are clamped to [`MAX_TTL`] so `now + ttl` cannot overflow.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::{Acquired, Expiry, Forgot, Holding, KeyInfo, LockSpec};

/// A fencing counter unused for this long, on a key nobody holds, may be dropped.
/// Dropping is safe at any age thanks to the floor; the retention only keeps `status`
/// informative and the records small.
pub(crate) const COUNTER_RETENTION: Duration = Duration::from_secs(24 * 60 * 60);

/// TTLs are clamped to this (about 100 years) so `now + ttl` cannot overflow; a longer
/// lease is indistinguishable from one that never expires anyway.
pub(crate) const MAX_TTL: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);

/// A point on the clock a store judges expiry by: the monotonic clock in memory, the
/// wall clock in a file shared by processes.
pub(crate) trait Moment: Copy + Ord {
    /// This moment plus `d` (callers clamp `d` to [`MAX_TTL`]).
    fn after(self, d: Duration) -> Self;
    /// How long from `earlier` to this moment; zero if `earlier` is later.
    fn since(self, earlier: Self) -> Duration;
}

impl Moment for tokio::time::Instant {
    fn after(self, d: Duration) -> Self {
        self + d
    }
    fn since(self, earlier: Self) -> Duration {
        self.saturating_duration_since(earlier)
    }
}

/// One key's lock record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LockRecord<M> {
    /// The holder's random value.
    pub(crate) value: Arc<str>,
    /// When the key stops being held.
    pub(crate) expires: M,
    /// The holder description kept for `status`.
    pub(crate) holder: Option<Arc<str>>,
}

/// How a store reads and writes the records the rules work on, inside one critical
/// section. Every method may fail (an SQLite statement); the rules stop at the first
/// failure, and the store rolls the section back.
pub(crate) trait Records {
    /// The clock expiry is judged by.
    type At: Moment;
    /// Why a read or write failed.
    type Error;

    /// The lock record of `key`, expired or not.
    fn lock(&mut self, key: &str) -> Result<Option<LockRecord<Self::At>>, Self::Error>;
    /// Sets the lock record of `key`.
    fn put_lock(&mut self, key: &str, record: LockRecord<Self::At>) -> Result<(), Self::Error>;
    /// Removes the lock record of `key`, if any.
    fn delete_lock(&mut self, key: &str) -> Result<(), Self::Error>;
    /// The fencing counter of `key`, if it has one.
    fn counter(&mut self, key: &str) -> Result<Option<u64>, Self::Error>;
    /// Sets the fencing counter of `key`, last used `touched`.
    fn put_counter(&mut self, key: &str, value: u64, touched: Self::At) -> Result<(), Self::Error>;
    /// Removes the fencing counter of `key`, if any.
    fn delete_counter(&mut self, key: &str) -> Result<(), Self::Error>;
    /// Every counter this store ever dropped was at most this.
    fn floor(&mut self) -> Result<u64, Self::Error>;
    /// Raises the floor to at least `to`.
    fn raise_floor(&mut self, to: u64) -> Result<(), Self::Error>;
    /// The error for a counter that cannot grow any more.
    fn exhausted(&self) -> Self::Error;
}

/// What the rules need to know about "now": the store's clock for expiry, and the wall
/// clock in µs since the Unix epoch that seeds new counters.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Now<M> {
    /// The clock expiry is judged by.
    pub(crate) at: M,
    /// Wall-clock µs since the Unix epoch (0 before 1970).
    pub(crate) wall_us: u64,
}

/// How a key looks to one lock at one instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Slot {
    /// No record, or an expired one: anyone may take it.
    Free,
    /// Holds the lock's value and has not expired.
    Ours,
    /// Holds another value for this long yet.
    Other(Duration),
}

/// Wall-clock µs since the Unix epoch (0 for a clock set before 1970).
pub(crate) fn wall_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// When a lock taken or extended `now` with `ttl_ms` expires (TTL clamped to [`MAX_TTL`]).
pub(crate) fn expiry<M: Moment>(now: M, ttl_ms: u64) -> M {
    now.after(Duration::from_millis(ttl_ms).min(MAX_TTL))
}

/// How `key` looks to a lock with `value` at `now`.
///
/// # Errors
///
/// When the store cannot read the record.
pub(crate) fn slot<R: Records>(
    r: &mut R,
    key: &str,
    value: &str,
    now: R::At,
) -> Result<Slot, R::Error> {
    Ok(match r.lock(key)? {
        Some(h) if h.expires > now => {
            if *h.value == *value {
                Slot::Ours
            } else {
                Slot::Other(h.expires.since(now))
            }
        }
        _ => Slot::Free,
    })
}

/// All keys ours → [`Holding::Ours`]; some key another's → [`Holding::Other`]; else
/// (some key free) [`Holding::Expired`].
///
/// # Errors
///
/// When the store cannot read a record.
pub(crate) fn holding<R: Records>(
    r: &mut R,
    lock: &LockSpec,
    now: R::At,
) -> Result<Holding, R::Error> {
    let mut other = false;
    let mut all_ours = true;
    for key in lock.keys.iter() {
        match slot(r, key, &lock.value, now)? {
            Slot::Ours => {}
            Slot::Other(_) => {
                other = true;
                all_ours = false;
            }
            Slot::Free => all_ours = false,
        }
    }
    Ok(if all_ours {
        Holding::Ours
    } else if other {
        Holding::Other
    } else {
        Holding::Expired
    })
}

/// The seed of a new counter: the wall clock, or the floor if that is higher.
fn seed<R: Records>(r: &mut R, now: Now<R::At>) -> Result<u64, R::Error> {
    Ok(now.wall_us.max(r.floor()?))
}

/// Acquire (see the module docs). Stores without waiter lines never answer
/// [`Acquired::HandedOver`], and their refusals are neither `joined` nor `silent`.
///
/// # Errors
///
/// When the store cannot read or write a record, or the counter is exhausted
/// ([`Records::exhausted`]); nothing has been written then.
pub(crate) fn acquire<R: Records>(
    r: &mut R,
    lock: &LockSpec,
    now: Now<R::At>,
) -> Result<Acquired, R::Error> {
    let mut held_for: Option<Duration> = None;
    for key in lock.keys.iter() {
        if let Slot::Other(pttl) = slot(r, key, &lock.value, now.at)? {
            held_for = held_for.max(Some(pttl));
        }
    }
    if let Some(pttl) = held_for {
        return Ok(Acquired::Held {
            pttl: Some(pttl),
            joined: false,
            silent: false,
        });
    }
    // The largest counter among the keys, a key without one counting as the seed.
    let seed = seed(r, now)?;
    let mut top = None;
    for key in lock.keys.iter() {
        top = top.max(Some(r.counter(key)?.unwrap_or(seed)));
    }
    let top = top
        .unwrap_or(seed)
        .checked_add(1)
        .ok_or_else(|| r.exhausted())?;
    let expires = expiry(now.at, lock.ttl_ms);
    for key in lock.keys.iter() {
        r.put_lock(
            key,
            LockRecord {
                value: Arc::clone(&lock.value),
                expires,
                holder: lock.holder.clone(),
            },
        )?;
        r.put_counter(key, top, now.at)?;
    }
    Ok(Acquired::Granted { counter: top })
}

/// Commit (see the module docs). Returns whether every key was ours.
///
/// # Errors
///
/// When the store cannot read or write a record (SQLite: a token beyond its integers).
pub(crate) fn commit_fence<R: Records>(
    r: &mut R,
    lock: &LockSpec,
    token: u64,
    now: Now<R::At>,
) -> Result<bool, R::Error> {
    if holding(r, lock, now.at)? != Holding::Ours {
        return Ok(false);
    }
    // A held key always has a counter (counters of held keys are never dropped); the
    // seed only keeps the rule "a missing counter stands for the seed".
    let seed = seed(r, now)?;
    for key in lock.keys.iter() {
        let current = r.counter(key)?.unwrap_or(seed);
        r.put_counter(key, current.max(token), now.at)?;
    }
    Ok(true)
}

/// Extend one lock (see the module docs).
///
/// # Errors
///
/// When the store cannot read or write a record.
pub(crate) fn extend<R: Records>(
    r: &mut R,
    lock: &LockSpec,
    how: Expiry,
    reclaim: bool,
    now: R::At,
) -> Result<Holding, R::Error> {
    let found = holding(r, lock, now)?;
    let reclaiming = reclaim && found == Holding::Expired;
    if found == Holding::Ours || reclaiming {
        let expires = expiry(now, lock.ttl_ms);
        for key in lock.keys.iter() {
            let record = match r.lock(key)? {
                Some(mut h) if h.value == lock.value && h.expires > now => {
                    h.expires = match how {
                        Expiry::AtLeast => h.expires.max(expires),
                        Expiry::Exactly => expires,
                    };
                    h
                }
                // Reclaiming a free key.
                _ => LockRecord {
                    value: Arc::clone(&lock.value),
                    expires,
                    holder: lock.holder.clone(),
                },
            };
            r.put_lock(key, record)?;
        }
    }
    Ok(if reclaiming {
        Holding::Reclaimed
    } else {
        found
    })
}

/// Release (see the module docs). Returns the holding before the release and the
/// positions in `lock.keys` of the keys it deleted (whose waiters a store with
/// notices wakes).
///
/// # Errors
///
/// When the store cannot read or write a record.
pub(crate) fn release<R: Records>(
    r: &mut R,
    lock: &LockSpec,
    now: R::At,
) -> Result<(Holding, Vec<usize>), R::Error> {
    let found = holding(r, lock, now)?;
    let mut deleted = Vec::new();
    for (i, key) in lock.keys.iter().enumerate() {
        // Our expired records go too: they are free already, deleting them is tidying.
        if r.lock(key)?.is_some_and(|h| h.value == lock.value) {
            r.delete_lock(key)?;
            deleted.push(i);
        }
    }
    Ok((found, deleted))
}

/// What the node knows about `key` at `now`: the holder only while held, the counter
/// always.
///
/// # Errors
///
/// When the store cannot read a record.
pub(crate) fn inspect<R: Records>(r: &mut R, key: &str, now: R::At) -> Result<KeyInfo, R::Error> {
    let mut info = KeyInfo {
        last_token: r.counter(key)?,
        ..KeyInfo::default()
    };
    if let Some(h) = r.lock(key)?.filter(|h| h.expires > now) {
        info.value = Some(h.value.to_string());
        info.pttl = Some(h.expires.since(now));
        info.holder = h.holder.as_deref().map(str::to_string);
    }
    Ok(info)
}

/// Forget (see the module docs).
///
/// # Errors
///
/// When the store cannot read or write a record.
pub(crate) fn forget<R: Records>(r: &mut R, key: &str, now: R::At) -> Result<Forgot, R::Error> {
    if r.lock(key)?.is_some_and(|h| h.expires > now) {
        return Ok(Forgot::InUse);
    }
    if let Some(c) = r.counter(key)? {
        r.raise_floor(c)?;
    }
    r.delete_lock(key)?;
    r.delete_counter(key)?;
    Ok(Forgot::Done)
}

/// Whether a sweep may drop a counter last used at `touched` (raising the floor to it
/// first): only on a key nobody holds, and only past [`COUNTER_RETENTION`].
pub(crate) fn counter_expendable<M: Moment>(held: bool, touched: M, now: M) -> bool {
    !held && now.since(touched) >= COUNTER_RETENTION
}

/// The records in plain maps: the state of the in-process stores (`memory.rs`,
/// `test_store.rs`), and the reference the store kit compares every store with.
#[derive(Debug)]
pub(crate) struct MapRecords<M> {
    /// Lock records by key.
    pub(crate) locks: HashMap<String, LockRecord<M>>,
    /// Fencing counters by key, with when each was last set.
    pub(crate) counters: HashMap<String, (u64, M)>,
    /// Every counter these records ever dropped was at most this.
    pub(crate) floor: u64,
}

impl<M> Default for MapRecords<M> {
    fn default() -> Self {
        MapRecords {
            locks: HashMap::new(),
            counters: HashMap::new(),
            floor: 0,
        }
    }
}

impl<M: Moment> MapRecords<M> {
    /// Drops expired lock records, and counters the retention rule lets go
    /// ([`counter_expendable`]), raising the floor to them first. O(keys): stores ration it.
    pub(crate) fn sweep(&mut self, now: M) {
        self.locks.retain(|_, h| h.expires > now);
        let locks = &self.locks;
        let mut floor = self.floor;
        self.counters.retain(|key, (value, touched)| {
            let drop = counter_expendable(locks.contains_key(key), *touched, now);
            if drop {
                floor = floor.max(*value);
            }
            !drop
        });
        self.floor = floor;
    }

    /// Up to `limit` keys with a counter that start with `prefix`, sorted.
    pub(crate) fn known_keys(&self, prefix: &str, limit: usize) -> Vec<String> {
        let mut keys: Vec<String> = self
            .counters
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect();
        keys.sort();
        keys.truncate(limit);
        keys
    }
}

/// Nothing here can fail but the counter's exhaustion.
impl<M: Moment> Records for MapRecords<M> {
    type At = M;
    type Error = &'static str;

    fn lock(&mut self, key: &str) -> Result<Option<LockRecord<M>>, &'static str> {
        Ok(self.locks.get(key).cloned())
    }
    fn put_lock(&mut self, key: &str, record: LockRecord<M>) -> Result<(), &'static str> {
        self.locks.insert(key.to_string(), record);
        Ok(())
    }
    fn delete_lock(&mut self, key: &str) -> Result<(), &'static str> {
        self.locks.remove(key);
        Ok(())
    }
    fn counter(&mut self, key: &str) -> Result<Option<u64>, &'static str> {
        Ok(self.counters.get(key).map(|c| c.0))
    }
    fn put_counter(&mut self, key: &str, value: u64, touched: M) -> Result<(), &'static str> {
        self.counters.insert(key.to_string(), (value, touched));
        Ok(())
    }
    fn delete_counter(&mut self, key: &str) -> Result<(), &'static str> {
        self.counters.remove(key);
        Ok(())
    }
    fn floor(&mut self) -> Result<u64, &'static str> {
        Ok(self.floor)
    }
    fn raise_floor(&mut self, to: u64) -> Result<(), &'static str> {
        self.floor = self.floor.max(to);
        Ok(())
    }
    fn exhausted(&self) -> &'static str {
        "the fencing counter is exhausted"
    }
}

#[cfg(test)]
mod tests {
    use tokio::time::Instant;

    use super::*;

    fn now(at: Instant, wall_us: u64) -> Now<Instant> {
        Now { at, wall_us }
    }

    #[test]
    fn a_forgotten_counter_never_comes_back_lower() {
        let mut r = MapRecords::default();
        let t0 = Instant::now();
        let high = 1_000_000_000_000;
        acquire(&mut r, &LockSpec::plain(&["k"], "A", 1_000), now(t0, 5)).unwrap();
        assert!(
            commit_fence(
                &mut r,
                &LockSpec::plain(&["k"], "A", 1_000),
                high,
                now(t0, 5)
            )
            .unwrap()
        );
        assert_eq!(forget(&mut r, "k", t0), Ok(Forgot::InUse));
        release(&mut r, &LockSpec::plain(&["k"], "A", 1_000), t0).unwrap();
        assert_eq!(forget(&mut r, "k", t0), Ok(Forgot::Done));
        assert!(r.counters.is_empty() && r.locks.is_empty());
        let got = acquire(&mut r, &LockSpec::plain(&["k"], "B", 1_000), now(t0, 5)).unwrap();
        assert_eq!(got, Acquired::Granted { counter: high + 1 });
    }

    #[test]
    fn an_exhausted_counter_is_an_error_not_a_repeat() {
        let mut r = MapRecords::default();
        let t0 = Instant::now();
        acquire(&mut r, &LockSpec::plain(&["k"], "A", 1_000), now(t0, 5)).unwrap();
        assert!(
            commit_fence(
                &mut r,
                &LockSpec::plain(&["k"], "A", 1_000),
                u64::MAX,
                now(t0, 5)
            )
            .unwrap()
        );
        assert_eq!(
            acquire(&mut r, &LockSpec::plain(&["k"], "A", 1_000), now(t0, 5)),
            Err("the fencing counter is exhausted")
        );
        assert_eq!(r.counters.get("k").map(|c| c.0), Some(u64::MAX));
        assert_eq!(r.locks.get("k").map(|l| &*l.value), Some("A"));
    }

    #[test]
    fn a_counter_behind_the_clock_counts_on_from_itself() {
        let mut r = MapRecords::default();
        let t0 = Instant::now();
        acquire(&mut r, &LockSpec::plain(&["k"], "A", 1_000), now(t0, 100)).unwrap();
        release(&mut r, &LockSpec::plain(&["k"], "A", 1_000), t0).unwrap();
        let got = acquire(&mut r, &LockSpec::plain(&["k"], "B", 1_000), now(t0, 900)).unwrap();
        assert_eq!(got, Acquired::Granted { counter: 102 });
    }

    #[test]
    fn huge_ttls_do_not_overflow() {
        let mut r = MapRecords::default();
        let t0 = Instant::now();
        let lock = LockSpec::plain(&["k"], "A", u64::MAX);
        acquire(&mut r, &lock, now(t0, 1)).unwrap();
        assert_eq!(
            extend(&mut r, &lock, Expiry::Exactly, false, t0),
            Ok(Holding::Ours)
        );
        let pttl = inspect(&mut r, "k", t0).unwrap().pttl.unwrap();
        assert_eq!(pttl, MAX_TTL);
    }

    #[test]
    fn retention_spares_held_keys_and_young_counters() {
        let t0 = Instant::now();
        let day = COUNTER_RETENTION;
        assert!(!counter_expendable(
            false,
            t0,
            t0 + day - Duration::from_secs(1)
        ));
        assert!(counter_expendable(false, t0, t0 + day));
        assert!(!counter_expendable(true, t0, t0 + day * 3));
        // A clock that went back never makes a counter old.
        assert!(!counter_expendable(false, t0 + day, t0));
    }

    #[test]
    fn the_clock_later_than_a_counter_seeds_above_it_and_reclaim_takes_free_keys() {
        let mut r = MapRecords::default();
        let t0 = Instant::now();
        let first = acquire(&mut r, &LockSpec::plain(&["a"], "A", 10), now(t0, 100)).unwrap();
        assert_eq!(first, Acquired::Granted { counter: 101 });
        // A key with no counter counts as the seed, which the clock has moved past.
        let later = t0 + Duration::from_millis(20);
        let both = acquire(
            &mut r,
            &LockSpec::plain(&["a", "b"], "B", 10),
            now(later, 500),
        )
        .unwrap();
        assert_eq!(both, Acquired::Granted { counter: 501 });
        // Expired: extend fails, reclaim takes both keys back.
        let gone = t0 + Duration::from_millis(40);
        let lock = LockSpec::plain(&["a", "b"], "B", 10);
        assert_eq!(
            extend(&mut r, &lock, Expiry::Exactly, false, gone),
            Ok(Holding::Expired)
        );
        assert_eq!(
            extend(&mut r, &lock, Expiry::AtLeast, true, gone),
            Ok(Holding::Reclaimed)
        );
        assert_eq!(holding(&mut r, &lock, gone), Ok(Holding::Ours));
    }
}
