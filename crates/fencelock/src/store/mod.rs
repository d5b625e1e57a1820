//! What one node must do, and the nodes that do it.
//!
//! A [`Store`] turns one node-level operation into one round trip: one Lua script on
//! Redis, one transaction on SQLite, one critical section in memory. The Redlock
//! arithmetic, retries, timeouts and renewal live above this trait, in
//! [`crate::Locker`]; nothing above this module knows which kind of store it talks to.
//!
//! Every method returns a `'static` boxed future so the locker can run it on its own
//! background task (cleanup after a cancelled acquire, batched renewal) and put a
//! per-node timeout around it. Stores are cheap handles over shared state.
//!
//! - The core every store has is [`Store`]; what only some stores can do is a
//!   capability they declare ([`Notices`], [`WaiterLine`], [`HealthProbe`], and
//!   [`Store::joins_quorum`]), asked for through `impl dyn Store`.
//! - The per-key counter and expiry rules are written once, in `rules.rs`; memory and
//!   SQLite call them, Redis's Lua scripts take the same steps.
//! - `kit.rs` is the conformance kit every store runs; `stores!` below is the table
//!   of URL schemes. Adding a store is one file and one line there: `docs/stores.md`.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, NodeError};

#[cfg(test)]
pub(crate) mod kit;
mod probe;
pub(crate) mod rules;
pub(crate) mod url;

/// Declares the store modules and the table of their URL schemes ([`open`] looks a
/// URL's scheme up in it). Each module has `SCHEMES` (its URL schemes, lower case) and
/// `open(url, options)`.
macro_rules! stores {
    ($($(#[$attr:meta])* $module:ident,)*) => {
        $($(#[$attr])* pub(crate) mod $module;)*

        /// Every kind of store this build knows.
        const KINDS: &[Kind] = &[$($(#[$attr])* Kind {
            schemes: $module::SCHEMES,
            open: $module::open,
        },)*];
    };
}

// Every kind of store. Adding one is its file and one line here (docs/stores.md).
stores! {
    redis,
    sqlite,
    memory,
    #[cfg(test)] test_store,
}

/// One kind of store: the URL schemes it answers to and how to open one.
struct Kind {
    schemes: &'static [&'static str],
    open: fn(&str, &url::StoreOptions) -> Result<Node, Error>,
}

pub(crate) use probe::Probe;

/// The future every store operation returns.
pub(crate) type StoreFuture<T> = Pin<Box<dyn Future<Output = Result<T, NodeError>> + Send>>;

/// One lock as a store sees it: the full keys (prefix applied), our value, a TTL.
///
/// `Debug` leaves the value out: it is the proof of ownership, and anyone who has it
/// can release the lock.
#[derive(Clone)]
pub(crate) struct LockSpec {
    /// The lock keys, prefix included, in the caller's order (deduplicated).
    pub(crate) keys: Arc<[String]>,
    /// Our random value; a key holding it is ours.
    pub(crate) value: Arc<str>,
    /// Time to live in milliseconds, > 0.
    pub(crate) ttl_ms: u64,
    /// Opaque holder description kept in a sibling key for `status` (host, pid …).
    pub(crate) holder: Option<Arc<str>>,
    /// A waiting acquire's place in the line of each key (`None`: one attempt only, or
    /// a store without queues).
    pub(crate) queue: Option<QueueTicket>,
}

#[cfg(test)]
impl LockSpec {
    /// A plain lock of `keys` for tests: no holder record, no waiter line. Here, not
    /// in the store kit, so the rules' own tests need not import the kit that checks
    /// the stores against them.
    pub(crate) fn plain(keys: &[&str], value: &str, ttl_ms: u64) -> LockSpec {
        LockSpec {
            keys: keys.iter().map(|k| k.to_string()).collect(),
            value: value.into(),
            ttl_ms,
            holder: None,
            queue: None,
        }
    }
}

impl fmt::Debug for LockSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockSpec")
            .field("keys", &self.keys)
            .field("value", &"<redacted>")
            .field("ttl_ms", &self.ttl_ms)
            .field("holder", &self.holder)
            .field("queue", &self.queue)
            .finish()
    }
}

/// A waiter's place in the line of a lock's keys.
///
/// A refused attempt puts its waiter in line; a release then wakes only the first
/// waiter in line (one retry per hand-off instead of a herd), and in fair mode a free
/// lock goes only to the first in line. Lines order waiters by `ticket`, which the
/// client takes once per acquire call from its wall clock (µs), ties broken by the
/// random waiter id: the same order on every node, so several nodes cannot each put a
/// different waiter first. An entry lives until `grace_ms` after the wait the node
/// told the waiter to expect, so a waiter that crashed leaves the line on its own.
#[derive(Clone, Debug)]
pub(crate) struct QueueTicket {
    /// Identifies the waiter across its attempts (each attempt has a fresh value).
    pub(crate) waiter: Arc<str>,
    /// Position in line: smaller is earlier.
    pub(crate) ticket: u64,
    /// How long past its expected wait an entry may stay without being refreshed.
    pub(crate) grace_ms: u64,
    /// Fair mode: a free lock goes to the first in line only.
    pub(crate) fair: bool,
}

impl QueueTicket {
    /// The waiter id of a waiter that takes the lock straight from a release: the
    /// release sets the key to this id for `claim_ms` (hence the claim inside it) and
    /// announces the grant; the waiter holds the lock on the notice and then extends
    /// the key to its own TTL (`wait.rs`, `handed_over`), so it holds the lock one
    /// notice after the release instead of after a notice and a full retry, and a
    /// waiter that died in line costs the lock the short claim only. Only for one key
    /// on one node, where one node's grant is the whole lock (see
    /// `Locker::acquire_with`).
    ///
    /// `inbox` names the channel the store sends this waiter's notices to
    /// ([`Store::inbox`]).
    pub(crate) fn handoff_waiter(claim_ms: u64, inbox: &str, random: &str) -> String {
        format!("{HANDOFF_PREFIX}{claim_ms}:{inbox}:{random}")
    }

    /// The inbox a hand-off waiter id names (see [`QueueTicket::handoff_waiter`]).
    pub(crate) fn handoff_inbox(waiter: &str) -> Option<&str> {
        let rest = waiter.strip_prefix(HANDOFF_PREFIX)?;
        let mut parts = rest.split(':');
        let (_ttl, inbox) = (parts.next()?, parts.next()?);
        Some(inbox)
    }

    /// Whether this waiter takes hand-offs (its id is the value it is handed).
    pub(crate) fn handoff(&self) -> bool {
        self.waiter.starts_with(HANDOFF_PREFIX)
    }
}

/// The longest claim a release holds a handed-over key for: `shared.lua`
/// (`fencelock_handoff`) caps the claim a waiter id names at this, so a waiter counts on
/// no more.
pub(crate) const MAX_HANDOFF_CLAIM: Duration = Duration::from_secs(60);

/// Marks a hand-off waiter id (`shared.lua` recognises it by the same prefix).
const HANDOFF_PREFIX: &str = "handoff:";

/// A node's answer to an acquire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Acquired {
    /// Every key is now ours; the node's fencing counter after its increment.
    Granted {
        /// The node's counter for these keys after the increment.
        counter: u64,
    },
    /// Some key is held by another value — or, in fair mode, the keys are free but
    /// another waiter is first in line. `pttl` is how long to expect to wait: the
    /// longest remaining TTL among the held keys, or the time the first waiter has
    /// left to show up (`None`: no expiry, or unknown). Nothing was changed, except
    /// that a waiter with a ticket is now in line.
    Held {
        /// How long to expect to wait (see above).
        pttl: Option<Duration>,
        /// This request put the waiter in line: it was not in line before (first
        /// refusal, or its entry had gone — handed the lock, or expired).
        joined: bool,
        /// Some key is held by a client that will not announce its release (another
        /// Redlock client, or an older fencelock): a waiter must try again by itself
        /// to notice the key is free before its TTL runs out.
        silent: bool,
    },
    /// A release already handed every key to this waiter (its [`QueueTicket::waiter`]
    /// is the value the keys hold, see [`QueueTicket::handoff`]); the node renewed
    /// their expiry to the TTL and left the value as it is. The lease is the waiter
    /// id's, not the attempt's value. `counter` is the token the hand-off issued.
    HandedOver {
        /// The node's counter for these keys (the token of the hand-off).
        counter: u64,
    },
}

/// The state of one lease on one node, as reported by extend and release.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Holding {
    /// Every key held our value (and was extended or deleted, as asked).
    Ours,
    /// No key holds another value, but some key of ours is gone (expired).
    Expired,
    /// Some key holds another owner's value.
    Other,
    /// Extend only, when asked to reclaim: no key holds another value, some key of ours
    /// was gone (it expired, or the node restarted empty, or an acquire race left it to
    /// a rival that then undid its attempt), and every such key now holds our value
    /// again with the TTL; the others were extended. Counts toward a majority only
    /// beside a node that answered [`Holding::Ours`] (see `quorum::HoldTally`).
    Reclaimed,
}

/// How an extend sets a key's expiry.
///
/// Renewals and lengthening extends only ever push an expiry later ([`Expiry::AtLeast`]):
/// a request that lands late — after a later one, on a node that was slow — then cannot
/// shorten the key under a lease that already counted on the later expiry. Only an
/// extend to a shorter TTL than the lease had sets the expiry as asked
/// ([`Expiry::Exactly`]); the locker allows for its late landings (`Lease` floors).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Expiry {
    /// `max(current expiry, now + ttl)`.
    AtLeast,
    /// `now + ttl`, also when that is sooner than the current expiry.
    Exactly,
}

/// What one node knows about one key, for `status`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct KeyInfo {
    /// The current value, if the key is held.
    pub(crate) value: Option<String>,
    /// Remaining time to live, if the key is held and expires.
    pub(crate) pttl: Option<Duration>,
    /// The holder description stored beside the key, if any.
    pub(crate) holder: Option<String>,
    /// The last fencing token this node issued for the key, if it has a counter.
    pub(crate) last_token: Option<u64>,
}

/// What [`Store::forget`] did on one node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Forgot {
    /// No record of the key is left here (or there was none).
    Done,
    /// The key is held here, or someone is in its line: nothing was removed.
    InUse,
    /// The key's counter is still ahead of the seed a new counter would start from
    /// here (the node's clock has not passed it yet): nothing was removed. Ask again
    /// after this long.
    TooSoon(Duration),
}

/// What a release notice tells the waiter it was meant for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Notice {
    /// Retry now: the lock may be free (also sent when notices may have been missed).
    Retry,
    /// The release handed the key to this waiter: it now holds the waiter id's value,
    /// for a short claim (the waiter extends it to its TTL), and `token` is its fencing token.
    Granted {
        /// The fencing token the node issued with the hand-off.
        token: u64,
    },
}

/// A subscription to release notices of one key on one node.
///
/// Dropping it gives up the watch (the store reference-counts subscriptions per key,
/// and unsubscribes a key some time after its last watch is gone).
pub(crate) struct Watch {
    pub(crate) notified: Pin<Box<dyn Future<Output = Notice> + Send>>,
}

impl fmt::Debug for Watch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Watch")
    }
}

/// What one node must do: the core every store implements. See the module docs.
///
/// Beyond the core, a store declares the capabilities it has — [`Notices`],
/// [`WaiterLine`], [`HealthProbe`] — by returning itself from the matching method;
/// the layers above ask through the methods on `dyn Store` (`watch`, `undo`,
/// `supports_queue`, `probe` …), which supply what a store without the capability
/// means (poll; a release; no line; nothing to check), so no layer above this module
/// knows which kind of store it talks to. The per-key counter and expiry rules are in
/// `rules.rs`; `kit.rs` is the conformance kit every store runs (`docs/stores.md`).
pub(crate) trait Store: Send + Sync + fmt::Debug + 'static {
    /// The node's address for messages, without any password.
    fn name(&self) -> &str;

    /// All keys free or already ours → set them all to our value with the TTL, bump the
    /// fencing counter of every key to one past the largest, and return it. Otherwise
    /// change nothing and report the holder's remaining TTL.
    fn acquire(&self, lock: &LockSpec) -> StoreFuture<Acquired>;

    /// If every key still holds our value, raise each key's counter to at least
    /// `token`. Returns whether it did.
    fn commit_fence(&self, lock: &LockSpec, token: u64) -> StoreFuture<bool>;

    /// For each lock (compare value, then set the expiry to its TTL as `expiry` says):
    /// one round trip for the whole batch. Extends only locks whose keys are all still
    /// ours — or, with `reclaim`, ours or free: free keys are set to our value again
    /// ([`Holding::Reclaimed`]), so a lease that rests on a bare majority spreads back
    /// to every healthy node and a later minority fault cannot take it down. Only a
    /// lease that is still valid may reclaim (the locker's renewal and `Lease::extend`;
    /// never an extend by value or a hand-off, which have no validity to go on). A key
    /// that holds something other than a string counts as another owner's and fails
    /// only its own lock, never the batch.
    fn extend(
        &self,
        locks: &[LockSpec],
        expiry: Expiry,
        reclaim: bool,
    ) -> StoreFuture<Vec<Holding>>;

    /// Compare value and delete every key that is ours, then publish a release notice
    /// (a store with [`Notices`]). With `lock.queue`, the waiter also leaves the line
    /// of every key (it gives up).
    fn release(&self, lock: &LockSpec) -> StoreFuture<Holding>;

    /// A request for `lock` timed out and may still be applied later: make sure it
    /// leaves nothing behind (release ordered after it where the transport allows),
    /// then drop the connection so no request stays in flight.
    fn abandon(&self, lock: &LockSpec) -> StoreFuture<()>;

    /// Up to `limit` lock keys starting with `prefix` that this node has a fencing
    /// counter for (for `fencelock status` without keys): every key held through
    /// fencelock, and keys released within the counter retention (SQLite and memory:
    /// 24 h; Redis: until the counter is retired, see `docs/fencing.md`). Sorted.
    fn known_keys(&self, prefix: &str, limit: usize) -> StoreFuture<Vec<String>>;

    /// What this node knows about `key` (full key, prefix applied).
    fn inspect(&self, key: &str) -> StoreFuture<KeyInfo>;

    /// Removes every record of `key` (full key) — its fencing counter, holder record,
    /// waiter line — when nobody holds it or waits for it here. A key locked again
    /// afterwards numbers its tokens afresh from the store's seed, so a store must
    /// never forget a counter that seed has not passed: SQLite and memory raise their
    /// floor above it first; Redis, whose seed is only its clock, answers
    /// [`Forgot::TooSoon`] until the clock has passed it.
    ///
    /// Crate-internal on purpose: forgetting a counter is how tokens could go back, so
    /// the only caller is [`crate::Locker::forget_probe`], for `fencelock doctor`'s
    /// probe key.
    fn forget(&self, key: &str) -> StoreFuture<Forgot>;

    /// Whether this node may be one of several in a Redlock quorum: an independent
    /// server. Stores that live in this process or on this host (memory, SQLite) are
    /// used alone.
    fn joins_quorum(&self) -> bool {
        false
    }

    /// Release notices, if this store can send them; without, waiters poll.
    fn notices(&self) -> Option<&dyn Notices> {
        None
    }

    /// Waiter lines, if this store keeps them; without, fair mode is refused and a
    /// release wakes every waiter.
    fn waiter_line(&self) -> Option<&dyn WaiterLine> {
        None
    }

    /// A health probe for the start-up checks, if this store has a server to check.
    fn health(&self) -> Option<&dyn HealthProbe> {
        None
    }
}

/// Capability: the store tells waiters when a key is released.
pub(crate) trait Notices: Send + Sync {
    /// Subscribe to release notices for `key`. The returned watch is armed once the
    /// future resolves, so a release that happens after it resolves is never missed.
    /// With `waiter`, the watch completes only for notices addressed to that waiter or
    /// to everyone (a store may also wake it for any notice).
    fn watch(&self, key: &str, waiter: Option<Arc<str>>) -> StoreFuture<Watch>;

    /// [`Notices::watch`], armed already, when that needs no round trip (the store is
    /// subscribed to the key's notices anyway: a hot key); `None` otherwise. Lets a
    /// waiter on a hot key watch before its first attempt, so a refusal can go
    /// straight to waiting instead of watching and then attempting again.
    fn watch_now(&self, _key: &str, _waiter: Option<Arc<str>>) -> Option<Watch> {
        None
    }

    /// Where this store delivers notices meant for one client only (a hand-off), if it
    /// can: waiters that name it in their id are handed locks directly
    /// ([`QueueTicket::handoff_waiter`]).
    fn inbox(&self) -> Option<&str> {
        None
    }
}

/// Capability: the store keeps a line of waiters per key ([`LockSpec::queue`]).
pub(crate) trait WaiterLine: Send + Sync {
    /// Takes the waiter of `lock.queue` out of the line of every key, without
    /// touching the lock keys.
    fn leave_queue(&self, lock: &LockSpec) -> StoreFuture<()>;

    /// Undoes a failed acquire attempt's grant here: deletes every key that holds its
    /// value, like [`Store::release`], but wakes no waiter and hands the key to nobody —
    /// the lock as a whole was never released (it is held elsewhere, or was never
    /// ours).
    fn undo(&self, lock: &LockSpec) -> StoreFuture<Holding>;

    /// Whether the lines serve locks too (fair locks, and one-waiter wake-ups of
    /// locks). `false`: the lines are only the fair semaphores' (their fair tickets
    /// name every slot, `semaphore.rs`), and a lock on this store takes no place in line.
    fn lines_for_locks(&self) -> bool {
        true
    }
}

/// Capability: the store has a server the start-up checks can question.
pub(crate) trait HealthProbe: Send + Sync {
    /// What the start-up checks need to know about this node (`checks.rs`): a few
    /// round trips, or with `thorough` (`fencelock doctor`) also the ACL questions,
    /// asked with sample keys under `prefix`.
    fn probe(&self, prefix: &str, thorough: bool) -> StoreFuture<Probe>;
}

/// The capabilities as the layers above use them, with what a store that lacks one
/// means. The one place that knows a store may lack a capability.
impl dyn Store {
    /// Whether this store keeps waiter lines for locks. Stores that do not are refused
    /// in fair mode (for locks) rather than silently granting out of order.
    pub(crate) fn supports_queue(&self) -> bool {
        self.waiter_line().is_some_and(|l| l.lines_for_locks())
    }

    /// [`WaiterLine::leave_queue`]; nothing to do without waiter lines.
    pub(crate) fn leave_queue(&self, lock: &LockSpec) -> StoreFuture<()> {
        match self.waiter_line() {
            Some(line) => line.leave_queue(lock),
            None => Box::pin(async { Ok(()) }),
        }
    }

    /// [`WaiterLine::undo`]; without waiter lines nobody is handed anything, so a
    /// release is the undo.
    pub(crate) fn undo(&self, lock: &LockSpec) -> StoreFuture<Holding> {
        match self.waiter_line() {
            Some(line) => line.undo(lock),
            None => self.release(lock),
        }
    }

    /// [`Notices::watch`]; `Ok(None)`: this store cannot notify, waiters must poll.
    pub(crate) fn watch(&self, key: &str, waiter: Option<Arc<str>>) -> StoreFuture<Option<Watch>> {
        match self.notices() {
            Some(n) => {
                let watch = n.watch(key, waiter);
                Box::pin(async move { watch.await.map(Some) })
            }
            None => Box::pin(async { Ok(None) }),
        }
    }

    /// [`Notices::watch_now`]; `None` without notices.
    pub(crate) fn watch_now(&self, key: &str, waiter: Option<Arc<str>>) -> Option<Watch> {
        self.notices()?.watch_now(key, waiter)
    }

    /// [`Notices::inbox`]; `None` without notices.
    pub(crate) fn inbox(&self) -> Option<&str> {
        self.notices()?.inbox()
    }

    /// [`HealthProbe::probe`]; `Ok(None)`: nothing to check.
    pub(crate) fn probe(&self, prefix: &str, thorough: bool) -> StoreFuture<Option<Probe>> {
        match self.health() {
            Some(h) => {
                let probe = h.probe(prefix, thorough);
                Box::pin(async move { probe.await.map(Some) })
            }
            None => Box::pin(async { Ok(None) }),
        }
    }
}

/// A node handle shared by the locker and its background task.
pub(crate) type Node = Arc<dyn Store>;

/// Opens the store a URL names: finds the kind of store its scheme registers
/// ([`KINDS`]) and lets it parse the rest. Connections are made lazily, on first use.
///
/// # Errors
///
/// [`crate::ErrorKind::InvalidInput`] for a malformed URL or unknown scheme;
/// [`crate::ErrorKind::Config`] when a store cannot be opened (an unusable SQLite path).
pub(crate) fn open(url: &str, options: &url::StoreOptions) -> Result<Node, Error> {
    let url = url.trim();
    (kind(url)?.open)(url, options)
}

/// The kind of store `url`'s scheme names.
///
/// # Errors
///
/// [`crate::ErrorKind::InvalidInput`] for an empty URL, one without a scheme, or an
/// unknown scheme; the message never contains the password.
fn kind(url: &str) -> Result<&'static Kind, Error> {
    let expected = || {
        let all: Vec<String> = KINDS
            .iter()
            .flat_map(|k| k.schemes)
            .map(|s| format!("{s}://"))
            .collect();
        all.join(", ")
    };
    if url.is_empty() {
        return Err(Error::invalid("store URL", "it is empty"));
    }
    let Some((scheme, _)) = url.split_once("://") else {
        return Err(Error::invalid(
            "store URL",
            format!(
                "{:?} has no scheme; expected one of {}",
                url::redact(url),
                expected()
            ),
        ));
    };
    let scheme = scheme.to_ascii_lowercase();
    KINDS
        .iter()
        .find(|k| k.schemes.contains(&scheme.as_str()))
        .ok_or_else(|| {
            Error::invalid(
                "store URL",
                format!(
                    "unknown scheme {scheme:?} in {:?}; expected one of {}",
                    url::redact(url),
                    expected()
                ),
            )
        })
}

/// Whether `url` names a Redis store (for the `store_url` fuzz target, which parses
/// without opening).
pub(crate) fn is_redis_url(url: &str) -> Result<bool, Error> {
    Ok(kind(url.trim())?.schemes == redis::SCHEMES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handoff_waiter_ids_carry_ttl_and_inbox() {
        let id = QueueTicket::handoff_waiter(1500, "00ff", "abcd");
        assert_eq!(id, "handoff:1500:00ff:abcd");
        assert_eq!(QueueTicket::handoff_inbox(&id), Some("00ff"));
        assert_eq!(QueueTicket::handoff_inbox("abcd"), None);
        assert_eq!(QueueTicket::handoff_inbox("handoff:1500"), None);
        let ticket = QueueTicket {
            waiter: id.into(),
            ticket: 1,
            grace_ms: 1,
            fair: false,
        };
        assert!(ticket.handoff());
    }
}
