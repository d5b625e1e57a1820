//! Semaphores: at most `N` holders of a key at once, each holding a *permit* that is a
//! lease like a lock's.
//!
//! A semaphore of `N` permits on key `K` is `N` *slots*, and each slot is an ordinary
//! lock key (a sibling of `K`, see [`slot_names`]). Holding a permit is holding one
//! slot's lock, taken by the very same Redlock attempt as any lock
//! (`attempt.rs`): so each permit has the lock's exclusion argument, its own
//! fencing counter and token, renewal, extend, `lost()`, release and drop-release, and
//! at most `N` processes hold a permit because each slot has at most one holder
//! (`docs/semaphore.md`). The number `N` is recorded beside the slots, so a caller
//! that names another `N` for the same key is refused instead of quietly using more
//! (or fewer) slots.
//!
//! Acquiring a permit tries the slots one at a time, from a random one, each as one
//! lock attempt; the first granted is the permit. A refused attempt leaves nothing
//! behind (the lock's own undo), so neither does an acquire that found every slot
//! held. A waiter waits in the line of every slot (Redis): a release wakes the first
//! waiter of the freed slot alone, and since every waiter joins every line with the
//! same ticket, that is the same, longest-waiting waiter on every slot. In fair mode
//! the lines also decide: a free slot goes to the first in its line only (on every
//! store: SQLite and memory keep fair lines for this), so a freed permit goes to the
//! longest-waiting fair waiter and not to a newcomer.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::attempt::{Failure, WaitLink, attempt};
use crate::checks::run_checked;
use crate::core::Core;
use crate::error::{Error, ErrorKind, NodeError, Result};
use crate::fanout::FanOut;
use crate::keys::hash_tag;
use crate::lease::Lease;
use crate::options::AcquireOptions;
use crate::quorum;
use crate::scoped::{Scoped, scoped};
use crate::status::status_of;
use crate::store::{Acquired, LockSpec, QueueTicket};
use crate::value::{lock_value, random_value, unix_micros};
use crate::wait::{Goal, wait_for};

/// The largest number of permits a semaphore may have. An acquire that finds every
/// slot held has tried each of them once, so the cost of a busy semaphore grows with
/// `N`; 64 covers the concurrency limits semaphores are for (a partner API's 4 calls,
/// a database's 20 heavy reports).
pub const MAX_PERMITS: u32 = 64;

/// How long the record of a semaphore's number of permits lives after the last acquire
/// that refreshed it. While it lives, a caller naming another number is refused; to
/// change the number of a semaphore in use, use a new key (or wait this long without
/// acquires).
pub const PERMITS_RECORD_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// What the permits record holds, before the number.
const RECORD_VALUE_PREFIX: &str = "fencelock-permits:";

/// A semaphore: `N` permits on one key. Made by
/// [`Locker::semaphore`](crate::Locker::semaphore); cheap to clone.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), fencelock::Error> {
/// use std::time::Duration;
/// let locker = fencelock::Locker::builder().store("memory://semaphore-doc").build()?;
/// // At most 4 calls to the partner API at once, across every process.
/// let partner_api = locker.semaphore("partner-api", 4)?;
/// let permit = partner_api.acquire(Duration::from_secs(30)).await?;
/// // … call the API; a resource that checks tokens keeps the highest per permit
/// // (permit.keys()[0] names it) …
/// println!("permit {} with token {}", permit.keys()[0], permit.token());
/// permit.release().await?;
/// # locker.shutdown().await;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Semaphore {
    /// The locker's shared state.
    locker: Arc<Core>,
    /// The key as the caller gave it.
    key: String,
    permits: u32,
    /// The full key of the permits record.
    record: Arc<str>,
    /// The full slot keys, slot `i` at index `i`.
    slots: Arc<[String]>,
}

/// The names of a semaphore's record and slots, from its full key (prefix applied).
///
/// Siblings of the key, in its Redis Cluster slot: with a hash tag, `K:fencelock:`
/// then `permits` / `permit:<i>`; without one, `{K}:fencelock:c:` then the same (the
/// `c:` as in `store/redis/layout.rs`, so that the semaphores of `K` and of a key
/// literally named `{K}` stay apart). The names are the same on every node (a lock
/// attempt sends one key list to all of them), so they do not depend on whether a
/// node is a cluster; a key without a hash tag that contains `}` keeps the plain form,
/// which a Redis Cluster node then refuses with the layout's own message. A lock key
/// cannot contain `:fencelock:`, so no lock is ever named like a slot or record.
fn slot_names(full: &str, permits: u32) -> (String, Vec<String>) {
    let base = if hash_tag(full.as_bytes()).is_some() || full.contains('}') {
        format!("{full}:fencelock:")
    } else {
        format!("{{{full}}}:fencelock:c:")
    };
    let slots = (0..permits).map(|i| format!("{base}permit:{i}")).collect();
    (format!("{base}permits"), slots)
}

/// Whether `full` (prefix applied) is the record or a slot of some semaphore: such keys
/// carry the reserved `:fencelock:` marker, and only `status` (read-only) takes them.
pub(crate) fn is_permit_key(full: &str) -> bool {
    permit_owner(full).is_some()
}

/// The full key of the semaphore whose record or slot `full` is (see
/// [`is_permit_key`]).
fn permit_owner(full: &str) -> Option<&str> {
    let stem = match full.strip_suffix("permits") {
        Some(stem) => stem,
        None => match full.rsplit_once("permit:") {
            Some((stem, i)) if !i.is_empty() && i.bytes().all(|b| b.is_ascii_digit()) => stem,
            _ => return None,
        },
    };
    let key = match stem
        .strip_suffix(":fencelock:c:")
        .and_then(|s| s.strip_prefix('{'))
        .and_then(|s| s.strip_suffix('}'))
    {
        Some(key) => key,
        None => stem.strip_suffix(":fencelock:")?,
    };
    if key.is_empty() || key.contains(":fencelock:") {
        return None;
    }
    let (record, slots) = slot_names(key, MAX_PERMITS);
    (record == full || slots.iter().any(|s| s == full)).then_some(key)
}

/// [`crate::keys::validate`] for the calls that may name a permit directly — status,
/// and extend and release by value (a script's permit from `fencelock acquire
/// --permits`): a permit key passes as it is, in full, as [`Lease::keys`] and
/// [`Semaphore::slot_keys`] name it (the prefix is in it already); other keys are
/// checked and prefixed as for a lock. Nothing can *acquire* a permit key as a lock.
pub(crate) fn validate_with_permits(
    keys: Vec<String>,
    prefix: &str,
    limits: &crate::keys::KeyLimits,
) -> Result<Vec<String>> {
    if !keys.iter().any(|k| is_permit_key(k)) {
        return crate::keys::validate(keys, prefix, limits);
    }
    let locks: Vec<String> = keys.iter().filter(|k| !is_permit_key(k)).cloned().collect();
    if !locks.is_empty() {
        crate::keys::validate(locks, prefix, limits)?;
    }
    Ok(keys
        .into_iter()
        .map(|k| {
            if is_permit_key(&k) {
                k
            } else {
                format!("{prefix}{k}")
            }
        })
        .collect())
}

/// [`Locker::known_permits`](crate::Locker::known_permits): the permit keys under the
/// locker's prefix that any node knows, sorted, at most `limit`.
pub(crate) async fn known_permits(core: &Core, limit: usize) -> Result<Vec<String>> {
    let prefix = core.options().prefix.clone();
    let starts = if prefix.is_empty() {
        vec![prefix.clone()]
    } else {
        vec![prefix.clone(), format!("{{{prefix}")]
    };
    let (keys, missing) = crate::status::listed_keys(core, &starts, usize::MAX).await?;
    for e in &missing {
        // At debug level: `fencelock status` lists the locks first, whose listing
        // warns about the same node already.
        tracing::debug!(
            target: "fencelock::status",
            "{e}: permits only this store knows are not listed"
        );
    }
    Ok(keys
        .into_iter()
        .filter(|k| {
            !k.ends_with("permits") && permit_owner(k).is_some_and(|key| key.starts_with(&prefix))
        })
        .take(limit)
        .collect())
}

impl Semaphore {
    /// [`Locker::semaphore`](crate::Locker::semaphore).
    pub(crate) fn new(locker: &Arc<Core>, key: &str, permits: u32) -> Result<Semaphore> {
        if permits == 0 {
            return Err(Error::invalid(
                "permits",
                "a semaphore needs at least 1 permit (0 would never admit anyone)",
            ));
        }
        if permits > MAX_PERMITS {
            return Err(Error::invalid(
                "permits",
                format!("{permits} permits; the maximum is {MAX_PERMITS}"),
            ));
        }
        let opts = locker.options();
        let full = crate::keys::validate(vec![key.to_string()], &opts.prefix, &opts.keys)?;
        let (record, slots) = slot_names(&full[0], permits);
        Ok(Semaphore {
            locker: locker.clone(),
            key: key.to_string(),
            permits,
            record: record.into(),
            slots: slots.into(),
        })
    }
}

impl Semaphore {
    /// The key, as given.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The number of permits.
    pub fn permits(&self) -> u32 {
        self.permits
    }

    /// The lock keys of the permits (prefix applied), permit `i` at index `i`: what a
    /// permit's [`Lease::keys`] names, and what `fencelock status` shows.
    pub fn slot_keys(&self) -> &[String] {
        &self.slots
    }

    /// What every node knows about each permit (its slot key), permit `i` at index `i`:
    /// held or free, the holder record, the TTL left, the last token.
    ///
    /// # Errors
    ///
    /// None today (node failures are reported per node in [`crate::NodeStatus`]); the
    /// `Result` leaves room for checks to come.
    ///
    /// Cancelling the future abandons the queries; nothing is changed by them.
    pub async fn status(&self) -> Result<Vec<crate::KeyStatus>> {
        Ok(status_of(&self.locker, self.slots.to_vec(), self.slots.to_vec()).await)
    }

    /// Acquires a permit for `ttl`, waiting up to the locker's `max_wait` while every
    /// permit is held. The permit is a [`Lease`] on one slot key: it renews itself, has
    /// its own fencing token (tokens of different permits are not comparable: a
    /// resource that checks tokens keeps the highest per permit, by
    /// `lease.keys()[0]`), and is released by [`Lease::release`] or when dropped.
    /// On Redis a release wakes the longest waiter alone; other stores wake every
    /// waiter (memory) or are polled (SQLite), as for a lock.
    ///
    /// In fair mode ([`AcquireOptions::fair`], on every store) a freed permit goes to
    /// the fair waiter that has waited longest: see `docs/semaphore.md`, "Fair mode",
    /// for the guarantee and its limits.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`] for a bad TTL, or when the semaphore is recorded
    /// with another number of permits (the message names both; the record lives
    /// [`PERMITS_RECORD_TTL`] after the last acquire); [`ErrorKind::Timeout`] when the
    /// wait ran out with every permit held; [`ErrorKind::Unavailable`] when no quorum of
    /// nodes answered; [`ErrorKind::Config`] when a node refuses in a way retrying
    /// cannot fix.
    ///
    /// Cancelling the future at any point leaves no permit of ours behind (the
    /// locker's background task releases whatever the attempt in flight may have set)
    /// and takes the waiter out of every line.
    pub async fn acquire(&self, ttl: Duration) -> Result<Lease> {
        self.acquire_with(ttl, &AcquireOptions::default()).await
    }

    /// One try: a permit if one is free right now.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Contended`] when every permit is held (with the soonest remaining
    /// TTL among them); otherwise as [`Semaphore::acquire`].
    ///
    /// Cancelling the future leaves no permit of ours behind.
    pub async fn try_acquire(&self, ttl: Duration) -> Result<Lease> {
        self.acquire_with(ttl, &AcquireOptions::default().no_wait())
            .await
    }

    /// [`Semaphore::acquire`] with per-call options (how long to wait).
    ///
    /// # Errors
    ///
    /// As [`Semaphore::acquire`] and [`Semaphore::try_acquire`].
    ///
    /// Cancelling the future leaves no permit of ours behind.
    pub async fn acquire_with(&self, ttl: Duration, options: &AcquireOptions) -> Result<Lease> {
        self.locker.options().check_ttl(ttl)?;
        let started = Instant::now();
        run_checked(&self.locker, async {
            self.check_record().await?;
            self.acquire_slot(ttl, options, started).await
        })
        .await
    }

    /// Runs `work` while holding a permit, with automatic renewal, and always releases
    /// at the end. If the permit is lost, the work future is dropped at once and the
    /// result is [`ErrorKind::Lost`] (as [`Locker::with_lock`](crate::Locker::with_lock)).
    ///
    /// Cancelling the returned future drops the work and releases the permit (through
    /// the background task).
    pub async fn with_permit<T>(
        &self,
        ttl: Duration,
        work: impl AsyncFnOnce(&Lease) -> T,
    ) -> Scoped<T> {
        scoped(self.acquire(ttl).await, work).await
    }

    /// Records the number of permits on every node, or finds another number recorded.
    ///
    /// The record is a key set to `fencelock-permits:<N>` by the nodes' ordinary
    /// acquire (free, or already holding that value → set, with
    /// [`PERMITS_RECORD_TTL`]): callers naming the same `N` all "hold" it, a caller
    /// naming another is refused by any node that has it. Decided at a majority of
    /// agreeing nodes, or at the first node with another number.
    async fn check_record(&self) -> Result<()> {
        let nodes = self.locker.nodes();
        let q = quorum::quorum(nodes.len());
        let spec = LockSpec {
            keys: vec![self.record.to_string()].into(),
            value: format!("{RECORD_VALUE_PREFIX}{}", self.permits).into(),
            ttl_ms: u64::try_from(PERMITS_RECORD_TTL.as_millis()).unwrap_or(u64::MAX),
            holder: None,
            queue: None,
        };
        let timeout = self.locker.options().request_timeout;
        let mut fan = FanOut::start(nodes, timeout, |node| node.acquire(&spec));
        let mut agreed = 0;
        let mut errors: Vec<NodeError> = Vec::new();
        let mut other = None;
        while let Some((i, answer)) = fan.next().await {
            match answer {
                Ok(Ok(Acquired::Granted { .. } | Acquired::HandedOver { .. })) => agreed += 1,
                Ok(Ok(Acquired::Held { .. })) => {
                    other = Some(i);
                    break;
                }
                Ok(Err(e)) => errors.push(e),
                Err(_) => errors.push(fan.timeout_error(nodes[i].name())),
            }
            if agreed >= q {
                break;
            }
        }
        fan.finish_in_background(|_, _| {});
        if let Some(i) = other {
            let recorded = tokio::time::timeout(timeout, nodes[i].inspect(&self.record))
                .await
                .ok()
                .and_then(|r| r.ok())
                .and_then(|info| info.value);
            let number = recorded
                .as_deref()
                .and_then(|v| v.strip_prefix(RECORD_VALUE_PREFIX))
                .and_then(|n| n.parse::<u32>().ok());
            return Err(match number {
                Some(n) => Error::invalid(
                    "permits",
                    format!(
                        "semaphore {:?} has {n} permits, not {}: every caller of a key must \
                         name the same number (the record of {n} lives {} h after its last \
                         acquire; use another key for another number)",
                        self.key,
                        self.permits,
                        PERMITS_RECORD_TTL.as_secs() / 3600
                    ),
                ),
                None => Error::config(format!(
                    "semaphore {:?}: its record key {} on {} holds something fencelock \
                     did not write",
                    self.key,
                    self.record,
                    nodes[i].name()
                )),
            });
        }
        if agreed >= q {
            return Ok(());
        }
        if errors.iter().any(|e| e.is_permanent()) {
            return Err(Error::config(format!(
                "cannot use semaphore {:?}: a node refused in a way retrying cannot fix",
                self.key
            ))
            .with_nodes(errors));
        }
        Err(Error::unavailable(
            &format!(
                "cannot use semaphore {:?}: fewer than {q} of {} nodes answered",
                self.key,
                nodes.len()
            ),
            errors,
        ))
    }

    /// Tries the slots from a random one until one is granted, waiting between rounds
    /// as a lock's waiter does (the one wait loop, `wait.rs`).
    async fn acquire_slot(
        &self,
        ttl: Duration,
        options: &AcquireOptions,
        started: Instant,
    ) -> Result<Lease> {
        let locker = &self.locker;
        let opts = locker.options();
        let nodes = locker.nodes();
        let single = options.deadline(opts, started).1;
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        // A waiter takes a place in the line of every slot it finds held, with one
        // ticket: a release then wakes the first waiter of that slot only — the same
        // waiter on every slot, the one waiting longest. Plain waiter ids only: a
        // hand-off (the release setting the key to the waiter's id) is for a waiter of
        // that one key, and a permit waiter may be served by another slot first.
        // In fair mode every store keeps the lines (SQLite and memory too), and even a
        // single try takes a ticket: a free slot goes to the first in its line only,
        // and every line orders the same waiters by the same ticket, so the first in
        // line is the same waiter on every slot (see `docs/semaphore.md`, "Fair mode").
        let fair = options.is_fair(locker.options());
        let queues =
            fair || (!single && opts.notifications && nodes.iter().all(|n| n.supports_queue()));
        let ticket = queues.then(|| {
            let grace_ms = opts.line_grace_ms();
            QueueTicket {
                waiter: random_value().into(),
                ticket: unix_micros(),
                grace_ms,
                fair,
            }
        });
        let mut goal = SlotGoal {
            semaphore: self,
            ttl,
            lines: Lines {
                locker: locker.clone(),
                ticket: ticket.clone(),
                slots: &self.slots,
                joined: vec![false; self.slots.len()],
                ttl_ms,
                armed: true,
            },
            watched: LockSpec {
                keys: self.slots.clone(),
                value: lock_value().into(),
                ttl_ms,
                holder: None,
                queue: ticket,
            },
            first: rand::random_range(0..self.slots.len()),
        };
        wait_for(locker, &mut goal, options, started).await
    }

    /// The error for a try or a wait that ended with every permit held.
    fn every_permit_held(
        &self,
        single: bool,
        soonest: Option<Duration>,
        started: Instant,
    ) -> Error {
        let expiry = soonest
            .map(|p| {
                format!(
                    " (the soonest expires in {} ms unless extended)",
                    p.as_millis()
                )
            })
            .unwrap_or_default();
        let (kind, message) = if single {
            (
                ErrorKind::Contended,
                format!(
                    "every permit of semaphore {:?} ({}) is held{expiry}",
                    self.key, self.permits
                ),
            )
        } else {
            (
                ErrorKind::Timeout,
                format!(
                    "gave up on semaphore {:?} after {} ms: every one of its {} permits is \
                     held{expiry}",
                    self.key,
                    started.elapsed().as_millis(),
                    self.permits
                ),
            )
        };
        Error::new(kind, message).with_retry_after(soonest)
    }
}

/// A permit as the goal of a wait (`wait.rs`): a round tries every slot once, from
/// a random first one, and stops at the first granted.
struct SlotGoal<'a> {
    semaphore: &'a Semaphore,
    ttl: Duration,
    lines: Lines<'a>,
    /// Every slot, with the waiter's ticket: what release notices are watched for.
    watched: LockSpec,
    first: usize,
}

impl Goal for SlotGoal<'_> {
    async fn round(
        &mut self,
        core: &Arc<Core>,
        link: &Arc<WaitLink>,
    ) -> std::result::Result<Lease, Failure> {
        let slots = &self.semaphore.slots;
        let opts = core.options();
        tracing::debug!(
            target: "fencelock::semaphore",
            key = %self.semaphore.key,
            holder = opts.holder.as_deref().unwrap_or(""),
            "trying the permits"
        );
        let mut soonest: Option<Duration> = None;
        let mut unknown = false;
        let mut silent = false;
        let mut joined = false;
        let mut split = false;
        let n = slots.len();
        for k in 0..n {
            let i = (self.first + k) % n;
            let spec = LockSpec {
                keys: vec![slots[i].clone()].into(),
                value: lock_value().into(),
                ttl_ms: self.watched.ttl_ms,
                holder: opts.holder.as_deref().map(Into::into),
                queue: self.watched.queue.clone(),
            };
            match attempt(core, &spec, std::slice::from_ref(&slots[i]), self.ttl, link).await {
                Ok(lease) => {
                    self.lines.leave_except(i).await;
                    return Ok(lease);
                }
                Err(Failure::Contended {
                    pttl,
                    joined: j,
                    silent: s,
                    split: v,
                }) => {
                    self.lines.joined[i] |= self.watched.queue.is_some();
                    joined |= j;
                    silent |= s;
                    split |= v;
                    match pttl {
                        Some(p) => soonest = Some(soonest.map_or(p, |c| c.min(p))),
                        None => unknown = true,
                    }
                }
                Err(failure) => return Err(failure),
            }
        }
        // Woken by a notice, or when the soonest permit expires; a silent holder
        // (another client), or a TTL unknown, is noticed by trying again.
        Err(Failure::Contended {
            pttl: soonest,
            joined,
            silent: silent || unknown,
            split,
        })
    }

    fn watched(&self) -> &LockSpec {
        &self.watched
    }

    fn gave_up(&self, core: &Core, single: bool, failure: &Failure, started: Instant) -> Error {
        let s = self.semaphore;
        match failure {
            Failure::Contended { pttl, .. } => s.every_permit_held(single, *pttl, started),
            Failure::Unavailable(errors) => Error::unavailable(
                &format!(
                    "cannot acquire a permit of semaphore {:?}: fewer than {} of {} nodes \
                     answered",
                    s.key,
                    quorum::quorum(core.nodes.len()),
                    core.nodes.len()
                ),
                errors.clone(),
            ),
            Failure::Permanent(errors) => Error::config(format!(
                "cannot acquire a permit of semaphore {:?}: a node refused in a way retrying \
                 cannot fix",
                s.key
            ))
            .with_nodes(errors.clone()),
        }
    }
}

/// The lines a permit waiter stands in. A waiter that got a permit leaves the others
/// before it returns, so that the next release of those slots wakes a waiter that
/// still waits; dropped while armed (a wait that gave up or was cancelled), it leaves
/// them all through the background task.
struct Lines<'a> {
    locker: Arc<Core>,
    ticket: Option<QueueTicket>,
    slots: &'a [String],
    joined: Vec<bool>,
    ttl_ms: u64,
    armed: bool,
}

impl Lines<'_> {
    /// A spec that names the lines of `slots` and a value no key holds: released, it
    /// takes the waiter out of those lines (telling the next waiter of a free slot)
    /// and deletes nothing.
    fn leave_spec(&self, except: Option<usize>) -> Option<LockSpec> {
        let keys: Vec<String> = self
            .joined
            .iter()
            .enumerate()
            .filter(|(i, joined)| **joined && Some(*i) != except)
            .map(|(i, _)| self.slots[i].clone())
            .collect();
        let queue = self.ticket.clone()?;
        (!keys.is_empty()).then(|| LockSpec {
            keys: keys.into(),
            value: lock_value().into(),
            ttl_ms: self.ttl_ms,
            holder: None,
            queue: Some(queue),
        })
    }

    /// Leaves every line but `slot`'s (the granted attempt left that one), waiting for
    /// a majority of the nodes, up to the request time-out; the others finish in the
    /// background, and an entry on a node that never answers expires by itself (its
    /// deadline), and the line then moves on.
    ///
    /// With a release (of a value nobody holds: it deletes nothing), which passes the
    /// turn on: where another slot is free on a node and this waiter is first in its
    /// line there, that slot's release told this waiter — every waiter is first on
    /// every line at once (one ticket) — and nobody else. Left quietly, two permits
    /// freed at once both told the first waiter, which took one, and the other stayed
    /// free with the next waiter never told, until a holder's TTL
    /// (`permits_freed_at_once_all_reach_waiters_*`). The price: a slot free on a
    /// minority of nodes for a moment (its new holder's grant has not landed there)
    /// can wake the next waiter for a permit held on a majority; it tries and waits
    /// again.
    async fn leave_except(&mut self, slot: usize) {
        self.armed = false;
        let Some(spec) = self.leave_spec(Some(slot)) else {
            return;
        };
        let timeout = self.locker.options().request_timeout;
        let nodes = self.locker.nodes();
        let mut fan = FanOut::start(nodes, timeout, |n| n.release(&spec));
        // A majority is enough to return on: a paused node must not hold the permit
        // back by its time-out; the rest finish in the background (and pass a turn on
        // as they land).
        let mut answered = 0;
        while answered < quorum::quorum(nodes.len())
            && let Some((_, answer)) = fan.next().await
        {
            answered += usize::from(matches!(answer, Ok(Ok(_))));
        }
        fan.finish_in_background(|_, _| {});
    }
}

impl Drop for Lines<'_> {
    fn drop(&mut self) {
        if self.armed
            && let Some(spec) = self.leave_spec(None)
        {
            self.locker.release_in_background(spec);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_siblings_in_the_keys_cluster_slot() {
        use crate::store::redis::layout::key_slot;
        let (record, slots) = slot_names("api", 2);
        assert_eq!(record, "{api}:fencelock:c:permits");
        assert_eq!(
            slots,
            ["{api}:fencelock:c:permit:0", "{api}:fencelock:c:permit:1"]
        );
        for k in slots.iter().chain([&record]) {
            assert_eq!(key_slot(k.as_bytes()), key_slot(b"api"));
        }
        let (record, slots) = slot_names("{user1}.api", 1);
        assert_eq!(record, "{user1}.api:fencelock:permits");
        assert_eq!(slots, ["{user1}.api:fencelock:permit:0"]);
        assert_eq!(key_slot(slots[0].as_bytes()), key_slot(b"{user1}.api"));
        // A literal `{api}` and `api` name different semaphores.
        assert_ne!(slot_names("{api}", 1).1, slot_names("api", 1).1);
    }

    #[test]
    fn permit_keys_are_recognised_and_nothing_else() {
        for key in ["api", "{user1}.api", "a}b", "{api}"] {
            let (record, slots) = slot_names(key, 3);
            assert!(is_permit_key(&record), "{record}");
            for s in &slots {
                assert!(is_permit_key(s), "{s}");
            }
        }
        // `{api}:fencelock:permits` is the record of the key literally named `{api}`.
        assert!(is_permit_key("{api}:fencelock:permits"));
        for other in [
            "api",
            "api:fencelock:fence",
            "{api}:fencelock:c:fence",
            "api:fencelock:permit:",
            "api:fencelock:permit:x",
            "api:fencelock:permit:64",
            ":fencelock:permits",
            "a:fencelock:X:fencelock:permit:0",
            "permits",
        ] {
            assert!(!is_permit_key(other), "{other}");
        }
    }
}
