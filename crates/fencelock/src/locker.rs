//! The locker: the public face of the protocol. Each method checks its input and hands
//! over to the one home of what it does — `wait.rs` (acquire), `extend.rs`,
//! `release.rs`, `checks.rs`, `status.rs`, `semaphore.rs` — over the locker's shared
//! state (`core.rs`).

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::attempt::CleanupGuard;
use crate::background::Message;
use crate::checks::{self, Report, run_checked};
use crate::core::Core;
use crate::error::{Error, Result};
use crate::extend::extend;
use crate::keys::{IntoKeys, validate};
use crate::lease::Lease;
use crate::options::{AcquireOptions, Options};
use crate::release::{ReleaseOutcome, release};
use crate::renew::ensure_started;
use crate::scoped::{Scoped, scoped};
use crate::semaphore::{self, Semaphore, validate_with_permits};
use crate::status::{self, KeyStatus};
use crate::store::{Expiry, LockSpec, Node};
use crate::wait;

/// Acquires, extends and releases leases over one store, or a Redlock quorum of Redis
/// nodes. Cheap to clone: clones share the connections and the background task.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), fencelock::Error> {
/// use std::time::Duration;
/// let locker = fencelock::Locker::builder().store("memory://locker-doc").build()?;
/// let lease = locker.acquire("nightly-report", Duration::from_secs(30)).await?;
/// println!("holding with token {}", lease.token());
/// lease.release().await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Locker {
    core: Arc<Core>,
}

impl Locker {
    /// A locker over the stores named by `urls`, with default options.
    ///
    /// # Errors
    ///
    /// As [`LockerBuilder::build`](crate::LockerBuilder::build).
    pub fn open<I, S>(urls: I) -> Result<Locker>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Locker::builder().stores(urls).build()
    }

    pub(crate) fn from_parts(nodes: Vec<Node>, options: Options) -> Locker {
        Locker {
            core: Arc::new(Core::new(nodes, options)),
        }
    }

    /// The stores, by redacted address.
    pub fn stores(&self) -> Vec<String> {
        self.core
            .nodes
            .iter()
            .map(|n| n.name().to_string())
            .collect()
    }

    /// The TTL the locker was built with (used by callers that take a default).
    pub fn default_ttl(&self) -> Duration {
        self.core.options.ttl
    }

    /// Acquires the lock on `keys` (all or nothing) for `ttl`, waiting up to the locker's
    /// `max_wait` (default 10 s) while it is held. Waiters wake on the holder's release
    /// notice, or when the holder's TTL runs out. The lease renews itself until it is
    /// released or dropped (unless the locker was built with
    /// [`LockerBuilder::auto_renew`](crate::LockerBuilder::auto_renew)`(false)`); the
    /// locker's start-up checks run beside its first acquire and never hold it back.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Timeout`](crate::ErrorKind::Timeout) when the wait ran out while the
    /// lock was held; [`ErrorKind::Unavailable`](crate::ErrorKind::Unavailable) when no
    /// quorum of nodes answered (each node's error kept);
    /// [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput) for bad keys or TTL;
    /// [`ErrorKind::Config`](crate::ErrorKind::Config) when a node refuses in a way
    /// retrying cannot fix (wrong password, a replica, a key of another type).
    ///
    /// Cancelling the future at any point leaves no key of ours behind: the locker's
    /// background task releases whatever the attempt in flight may have set.
    pub async fn acquire(&self, keys: impl IntoKeys, ttl: Duration) -> Result<Lease> {
        self.acquire_with(keys, ttl, &AcquireOptions::default())
            .await
    }

    /// Acquires the lock if it is free right now, without waiting (a split vote is
    /// tried again soon, a few times: see [`AcquireOptions::no_wait`]).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Contended`](crate::ErrorKind::Contended) (with the holder's remaining
    /// TTL) when held; otherwise as [`Locker::acquire`].
    ///
    /// Cancelling the future leaves no key of ours behind (see [`Locker::acquire`]).
    pub async fn try_acquire(&self, keys: impl IntoKeys, ttl: Duration) -> Result<Lease> {
        self.acquire_with(keys, ttl, &AcquireOptions::default().no_wait())
            .await
    }

    /// [`Locker::acquire`] with per-call options (how long to wait).
    ///
    /// # Errors
    ///
    /// As [`Locker::acquire`] and [`Locker::try_acquire`].
    ///
    /// Cancelling the future leaves no key of ours behind.
    pub async fn acquire_with(
        &self,
        keys: impl IntoKeys,
        ttl: Duration,
        options: &AcquireOptions,
    ) -> Result<Lease> {
        let opts = &self.core.options;
        let user_keys = keys.into_keys();
        let full = validate(user_keys.clone(), &opts.prefix, &opts.keys)?;
        opts.check_ttl(ttl)?;
        // A replica, the same server twice …: the start-up checks refuse those. They run
        // beside the acquire, never before it (`checks::run_checked`).
        run_checked(
            &self.core,
            wait::acquire(&self.core, user_keys, full, ttl, options),
        )
        .await
    }

    /// Runs `work` while holding the lock on `keys`, with automatic renewal, and always
    /// releases at the end. If the lease is lost, the work future is dropped at once and
    /// the result is [`ErrorKind::Lost`](crate::ErrorKind::Lost).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), fencelock::Error> {
    /// use std::time::Duration;
    /// let locker = fencelock::Locker::builder().store("memory://with-lock-doc").build()?;
    /// let token = locker
    ///     .with_lock("ledger:42", Duration::from_secs(5), async |lease| {
    ///         // … read, compute, write with lease.token() …
    ///         lease.token()
    ///     })
    ///     .await
    ///     .into_result()?;
    /// assert!(token.get() > 0);
    /// # Ok(()) }
    /// ```
    ///
    /// Cancelling the returned future drops the work and releases the lease (through
    /// the background task).
    pub async fn with_lock<T>(
        &self,
        keys: impl IntoKeys,
        ttl: Duration,
        work: impl AsyncFnOnce(&Lease) -> T,
    ) -> Scoped<T> {
        scoped(self.acquire(keys, ttl).await, work).await
    }

    /// Finishes every release queued by dropped leases and cancelled acquires. Call it
    /// before the program (or the runtime) ends: the background task that sends those
    /// releases runs only while the runtime does, and a lease whose release was never
    /// sent stays held until its TTL runs out.
    ///
    /// It does not wait for a node that does not answer (paused, partitioned): a
    /// release still unanswered after the request time-out is left queued on that
    /// node's connection, and where it never runs, the keys on that node run out with
    /// their TTL — a minority's keys, which hold up no acquire's majority.
    ///
    /// Cancelling this future stops waiting; the releases still go on in the background.
    pub async fn shutdown(&self) {
        ensure_started(&self.core);
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.core.background.send(Message::Drain(tx));
        let _ = rx.await;
    }

    /// Extends the lock on `keys` held with `value` (as printed by `fencelock acquire`)
    /// to `ttl` from now, without the [`Lease`] object: for scripts that split acquire,
    /// extend and release across processes. Returns how long the lock is now valid.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Lost`](crate::ErrorKind::Lost) when the keys expired on a majority of
    /// nodes or another owner holds them;
    /// [`ErrorKind::Unavailable`](crate::ErrorKind::Unavailable) when too few nodes
    /// answered; [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput) for bad keys,
    /// value or TTL.
    ///
    /// Cancelling the future may leave the lock extended on some nodes (harmless: only
    /// a lock still holding `value` is extended).
    pub async fn extend_value(
        &self,
        keys: impl IntoKeys,
        value: &str,
        ttl: Duration,
    ) -> Result<Duration> {
        let (spec, user_keys) = self.adopt(keys, value, ttl)?;
        let until = extend(
            &self.core.nodes,
            &self.core.options,
            &spec,
            &user_keys,
            ttl,
            Expiry::Exactly,
            None,
        )
        .await?;
        Ok(until.saturating_duration_since(Instant::now()))
    }

    /// Releases the lock on `keys` held with `value`, without the [`Lease`] object.
    ///
    /// # Errors
    ///
    /// As [`Lease::release`]; [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput)
    /// for bad keys or value.
    ///
    /// Cancelling the future leaves the release to the locker's background task.
    pub async fn release_value(&self, keys: impl IntoKeys, value: &str) -> Result<ReleaseOutcome> {
        let (spec, user_keys) = self.adopt(keys, value, self.core.options.ttl)?;
        ensure_started(&self.core);
        let mut guard = CleanupGuard::new(&self.core, spec.clone());
        let outcome = release(&self.core, &spec, &user_keys).await;
        guard.disarm();
        outcome
    }

    /// A lock spec for a lock some other process acquired.
    fn adopt(
        &self,
        keys: impl IntoKeys,
        value: &str,
        ttl: Duration,
    ) -> Result<(LockSpec, Vec<String>)> {
        let opts = &self.core.options;
        let user_keys = keys.into_keys();
        // A permit taken by a script (`fencelock acquire --permits`) is named by its key.
        let full = validate_with_permits(user_keys.clone(), &opts.prefix, &opts.keys)?;
        opts.check_ttl(ttl)?;
        if value.is_empty() || value.len() > 1024 {
            return Err(Error::invalid(
                "lock value",
                "it must be 1 to 1024 bytes long",
            ));
        }
        let spec = LockSpec {
            keys: full.into(),
            value: value.into(),
            ttl_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
            holder: opts.holder.as_deref().map(Into::into),
            queue: None,
        };
        Ok((spec, user_keys))
    }

    /// Runs the start-up checks against every node and returns what they found,
    /// logging warnings and notes through `tracing`.
    ///
    /// Nodes that cannot be reached are reported (with their error) but are not a
    /// failure here: Redlock tolerates a minority of nodes down, and acquiring will
    /// say so if too many are.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Config`](crate::ErrorKind::Config) when a finding means locking would
    /// be wrong — a replica node, the same server listed twice, a TTL shorter than the
    /// round trip to a majority of the nodes allows (one slow node is a warning) — or, with
    /// [`LockerBuilder::strict_checks`](crate::LockerBuilder::strict_checks), any warning.
    /// The message lists the findings (no secrets: nodes are named by redacted address).
    pub async fn check(&self) -> Result<Report> {
        checks::check(&self.core).await
    }

    /// Asks every node what the checks need to know and judges the answers, for
    /// leases of `ttl`. Never fails: unreachable nodes are reported as such. This is
    /// what `fencelock doctor` prints.
    pub async fn diagnose(&self, ttl: Duration) -> Report {
        checks::diagnose(&self.core, ttl).await
    }

    /// Removes what a probe lock on [`PROBE_KEY`](crate::PROBE_KEY) (under this locker's
    /// prefix) left on every node — its fencing counter, holder record and waiter line — so
    /// that a health check such as `fencelock doctor` leaves no trace: nothing of it in
    /// [`Locker::known_keys`], nothing piling up.
    ///
    /// Only the probe key, on purpose: a key's counter is what makes every holder's
    /// token larger than the last, and forgetting it is how tokens could go back. After
    /// this call the probe key's tokens restart from the store's seed, the clock in
    /// microseconds: SQLite and memory stores first raise their floor above the
    /// forgotten counter, and a Redis node forgets it only once its clock has passed it
    /// (this waits for that, up to about two seconds), so even the probe's tokens keep
    /// growing as long as no node's clock goes back. A node where the probe key is held
    /// or waited for (another doctor probing right now) keeps it, for that doctor to
    /// forget.
    ///
    /// Returns whether every node forgot the probe key (`false`: some node kept it, as
    /// above).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Unavailable`](crate::ErrorKind::Unavailable) when a node failed or did
    /// not answer, with each node's error ([`Error::node_errors`]); the nodes that answered
    /// did forget. [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput) when the
    /// locker's prefix makes the probe key invalid (too long).
    pub async fn forget_probe(&self) -> Result<bool> {
        checks::forget_probe(&self.core).await
    }

    /// The keys (without the locker's prefix) that start with `prefix` and are held through
    /// fencelock, or were released recently — while their fencing counter is kept: 24 h on
    /// SQLite and memory stores; on Redis until the node retires it, at once or within a
    /// millisecond of the release unless
    /// [`LockerBuilder::counter_retention`](crate::LockerBuilder::counter_retention) keeps
    /// it longer — as any node that answered knows them; sorted, at most `limit`. Pair it
    /// with [`Locker::status`] to see which are held. A node that did not answer is
    /// named in a warning (`tracing`, target `fencelock::status`): a lock held on a
    /// majority is still listed, but keys only that node knows are not.
    ///
    /// Keys held only by other clients (the `redlock` npm package, redsync) are not
    /// listed: they keep no counter. Lock keys only: a semaphore's permits are listed
    /// by [`Locker::known_permits`].
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Unavailable`](crate::ErrorKind::Unavailable) when no node answered.
    ///
    /// Cancelling the future abandons the queries; nothing is changed by them.
    pub async fn known_keys(&self, prefix: &str, limit: usize) -> Result<Vec<String>> {
        status::known_keys(&self.core, prefix, limit).await
    }

    /// The permit keys (slots, in full, as [`Lease::keys`] names them) of the semaphores
    /// under this locker's prefix that any node that answered has a fencing counter for
    /// — held, or released recently (as [`Locker::known_keys`] says for locks) — sorted,
    /// at most `limit`: for `fencelock status` without keys. A semaphore key without a
    /// hash tag has its permits at `{<prefix><key>}:…`, which [`Locker::known_keys`]
    /// does not list under a prefix.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Unavailable`](crate::ErrorKind::Unavailable) when no node answered.
    ///
    /// Cancelling the future abandons the queries; nothing is changed by them.
    pub async fn known_permits(&self, limit: usize) -> Result<Vec<String>> {
        semaphore::known_permits(&self.core, limit).await
    }

    /// Asks every node what it knows about each key.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput) for a bad key. Node
    /// failures do not fail the call: they are reported per node in
    /// [`NodeStatus::error`](crate::NodeStatus::error).
    ///
    /// Cancelling the future abandons the queries; nothing is changed by them.
    pub async fn status(&self, keys: impl IntoKeys) -> Result<Vec<KeyStatus>> {
        let user_keys = keys.into_keys();
        let options = &self.core.options;
        // A semaphore's permit keys carry the reserved marker: taken here, so that
        // `status` can list and show them (`semaphore.rs`).
        let full = validate_with_permits(user_keys.clone(), &options.prefix, &options.keys)?;
        Ok(status::status_of(&self.core, user_keys, full).await)
    }

    /// A semaphore of `permits` permits on `key`: at most `permits` holders at once.
    /// Every caller must name the same number for a key (see [`Semaphore::acquire`]).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput) for a bad key (as for a
    /// lock), `permits` = 0, or `permits` above [`MAX_PERMITS`](crate::MAX_PERMITS).
    pub fn semaphore(&self, key: &str, permits: u32) -> Result<Semaphore> {
        Semaphore::new(&self.core, key, permits)
    }
}
