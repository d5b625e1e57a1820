//! The locker: the Redlock algorithm over N stores, waiting, and the lease life cycle.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use futures_util::future::{join_all, select_all};
use tokio::sync::OwnedMutexGuard;

use crate::builder::{LockerBuilder, Options};
use crate::error::{Error, ErrorKind, KeyList, NodeError, NodeErrorKind, Result};
use crate::fanout::FanOut;
use crate::jitter;
use crate::keys::{IntoKeys, validate};
use crate::lease::{Lease, LeaseState, ReleaseOutcome, lost_error};
use crate::quorum::{self, Hold, HoldTally, Tally, Verdict};
use crate::renew::{Background, Message, next_renewal};
use crate::store::{Acquired, Expiry, Holding, LockSpec, Node, Notice, QueueTicket, Watch};

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
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    nodes: Vec<Node>,
    options: Options,
    background: Background,
    next_id: AtomicU64,
    /// The start-up checks (`checks.rs`), started on the first acquire.
    checked: crate::checks::CheckCell,
}

/// Options of one acquire. Start from [`AcquireOptions::default`].
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct AcquireOptions {
    wait: Option<Wait>,
    fair: Option<bool>,
}

#[derive(Clone, Copy, Debug)]
enum Wait {
    No,
    Up(Duration),
    Forever,
}

impl AcquireOptions {
    /// Make one attempt only (fail with [`ErrorKind::Contended`] if held).
    pub fn no_wait(mut self) -> Self {
        self.wait = Some(Wait::No);
        self
    }

    /// Wait up to `wait` for the lock (fail with [`ErrorKind::Timeout`] after).
    pub fn max_wait(mut self, wait: Duration) -> Self {
        self.wait = Some(Wait::Up(wait));
        self
    }

    /// Wait until the lock is free, however long (or until the future is dropped).
    pub fn wait_forever(mut self) -> Self {
        self.wait = Some(Wait::Forever);
        self
    }

    /// Fair mode: waiters are served in arrival order. Each waiter takes a place in a
    /// queue kept in sibling keys of the lock (`<key>:fencelock:queue`); a free lock
    /// goes to the first in line. An entry expires on its own shortly after its waiter
    /// stops coming back, so a crashed waiter cannot block the line, and a waiter that
    /// gives up or is cancelled leaves it. Clients that know nothing of the queue (the
    /// `redlock` npm package, redsync, fencelock without fair mode) still exclude
    /// fair waiters and are excluded by them; they just do not wait their turn.
    /// Locks: Redis stores only, other stores refuse fair mode with
    /// [`ErrorKind::Config`]. Semaphores: every store (see `docs/semaphore.md`).
    pub fn fair(mut self) -> Self {
        self.fair = Some(true);
        self
    }
}

/// The result of [`Locker::with_lock`]: the work's own result and the release's,
/// both kept so that neither hides the other.
#[derive(Debug)]
#[must_use]
#[non_exhaustive]
pub struct Scoped<T> {
    /// What the work returned, or why it did not complete (lease lost, not acquired).
    pub work: Result<T>,
    /// What the release at the end found (`None` when nothing was acquired).
    pub release: Option<Result<ReleaseOutcome>>,
}

impl<T> Scoped<T> {
    /// The work's result. A release that failed after the work completed does not turn
    /// a completed work into an error (the lease expires by its TTL); it is logged.
    ///
    /// # Errors
    ///
    /// The error that kept the work from completing: not acquired, or lease lost.
    pub fn into_result(self) -> Result<T> {
        if let Some(Err(e)) = &self.release {
            tracing::warn!("release after the work failed: {e}");
        }
        self.work
    }
}

/// Why one attempt did not grant.
pub(crate) enum Failure {
    /// Held by another owner. `pttl`: the longest remaining TTL the nodes reported;
    /// `joined`: some refusing node put us in line anew (see [`Acquired::Held`]);
    /// `silent`: some key's holder will not announce its release (see
    /// [`Acquired::Held`]), so waiting for a notice could sleep through it.
    Contended {
        pttl: Option<Duration>,
        joined: bool,
        silent: bool,
    },
    Unavailable(Vec<NodeError>),
    /// A node error retrying cannot fix (auth, replica, foreign key type …).
    Permanent(Vec<NodeError>),
}

impl Locker {
    /// Starts building a locker.
    pub fn builder() -> LockerBuilder {
        LockerBuilder::default()
    }

    /// A locker over the stores named by `urls`, with default options.
    ///
    /// # Errors
    ///
    /// As [`LockerBuilder::build`].
    pub fn open<I, S>(urls: I) -> Result<Locker>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Locker::builder().stores(urls).build()
    }

    pub(crate) fn from_parts(nodes: Vec<Node>, options: Options) -> Locker {
        Locker {
            inner: Arc::new(Inner {
                nodes,
                options,
                background: Background::new(),
                next_id: AtomicU64::new(1),
                checked: crate::checks::CheckCell::default(),
            }),
        }
    }

    /// The stores, by redacted address.
    pub fn stores(&self) -> Vec<String> {
        self.inner
            .nodes
            .iter()
            .map(|n| n.name().to_string())
            .collect()
    }

    /// The TTL the locker was built with (used by callers that take a default).
    pub fn default_ttl(&self) -> Duration {
        self.inner.options.ttl
    }

    /// Acquires the lock on `keys` (all or nothing) for `ttl`, waiting up to the
    /// locker's `max_wait` (default 10 s) while it is held. Waiters wake on the holder's
    /// release notice, or when the holder's TTL runs out. The lease renews itself until
    /// it is released or dropped (unless the locker was built with
    /// [`LockerBuilder::auto_renew`]`(false)`); the locker's start-up checks run beside
    /// its first acquire and never hold it back.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Timeout`] when the wait ran out while the lock was held;
    /// [`ErrorKind::Unavailable`] when no quorum of nodes answered (each node's error
    /// kept); [`ErrorKind::InvalidInput`] for bad keys or TTL; [`ErrorKind::Config`]
    /// when a node refuses in a way retrying cannot fix (wrong password, a replica, a
    /// key of another type).
    ///
    /// Cancelling the future at any point leaves no key of ours behind: the locker's
    /// background task releases whatever the attempt in flight may have set.
    pub async fn acquire(&self, keys: impl IntoKeys, ttl: Duration) -> Result<Lease> {
        self.acquire_with(keys, ttl, &AcquireOptions::default())
            .await
    }

    /// One attempt: acquires the lock if it is free right now.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Contended`] (with the holder's remaining TTL) when held; otherwise
    /// as [`Locker::acquire`].
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
        let opts = &self.inner.options;
        let user_keys = keys.into_keys();
        let full = validate(user_keys.clone(), &opts.prefix, &opts.keys)?;
        opts.check_ttl(ttl)?;
        self.run_checked(self.acquire_checked(user_keys, full, ttl, options))
            .await
    }

    /// [`Locker::acquire_with`] once the keys and TTL are valid.
    async fn acquire_checked(
        &self,
        user_keys: Vec<String>,
        full: Vec<String>,
        ttl: Duration,
        options: &AcquireOptions,
    ) -> Result<Lease> {
        let opts = &self.inner.options;
        let mut spec = LockSpec {
            keys: full.into(),
            value: lock_value().into(),
            ttl_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
            holder: opts.holder.as_deref().map(Into::into),
            queue: None,
        };
        let wait = options.wait.unwrap_or(match opts.max_wait {
            Some(d) => Wait::Up(d),
            None => Wait::Forever,
        });
        let fair = options.fair.unwrap_or(opts.fair);
        let queues = self.inner.nodes.iter().all(|n| n.supports_queue());
        if fair && !queues {
            return Err(Error::config(
                "fair mode needs Redis stores: memory:// and sqlite:// keep no waiter line",
            ));
        }
        let mut queue_guard = None;
        // A waiter takes a place in line, so that a release wakes it alone; a single
        // attempt has no use for one — unless fair mode must check the line.
        if queues && (fair || (opts.notifications && !matches!(wait, Wait::No))) {
            // One key on one node (no holder record to write): one node's grant is the
            // whole lock, so the release can hand it over itself — the waiter holds
            // the lock one notice after the release, without a retry of its own.
            let inbox = match self.inner.nodes.as_slice() {
                [node] if opts.notifications && spec.keys.len() == 1 && spec.holder.is_none() => {
                    node.inbox()
                }
                _ => None,
            };
            let grace_ms = u64::try_from(
                (opts.retry_jitter + opts.request_timeout * 2 + Duration::from_millis(500))
                    .as_millis(),
            )
            .unwrap_or(u64::MAX);
            // A release holds a handed-over key for the waiter only for a short claim
            // (the line entry's grace), and the waiter makes it its full TTL itself: a
            // waiter that died in line costs the lock that claim, not its TTL.
            let waiter = match inbox {
                Some(inbox) => {
                    QueueTicket::handoff_waiter(grace_ms.min(spec.ttl_ms), inbox, &random_value())
                }
                None => random_value(),
            };
            spec.queue = Some(QueueTicket {
                waiter: waiter.into(),
                ticket: unix_micros(),
                grace_ms,
                fair,
            });
            // Until disarmed, dropping this (cancelled, gave up) leaves the line — and
            // frees the key if a release handed it to us meanwhile.
            let mut leave = spec.clone();
            if let Some(q) = spec.queue.as_ref().filter(|q| q.handoff()) {
                leave.value = q.waiter.clone();
            }
            queue_guard = Some(CleanupGuard {
                locker: Some(self.clone()),
                spec: leave,
            });
        }
        let started = Instant::now();
        let deadline = match wait {
            Wait::No => Some(started),
            Wait::Up(d) => started.checked_add(d),
            Wait::Forever => None,
        };
        let mut watches: Option<Vec<Watch>> = None;
        let mut watched_once = false;
        let mut outages: u32 = 0;
        let mut polls: u32 = 0;
        let mut attempts: u32 = 0;
        // Hand-off notices: a release can only hand us the key after a node refused us
        // and put us in line. A notice's token is trusted only while every notice for
        // us must postdate our latest refusal: not once our line entry vanished and
        // came back (a hand-off we never read may have come and gone, and its notice
        // would name an older token), nor after an attempt whose answer we never saw.
        let mut refused_at: Option<Instant> = None;
        let mut trust_notices = true;
        if opts.notifications && spec.queue.is_some() {
            // A hot key (already watched by this locker): watch before the first
            // attempt, for free, so a refusal goes straight to waiting.
            watches = self.watch_now_all(&spec);
            watched_once = watches.is_some();
        }
        loop {
            // A fresh value per attempt: the clean-up of a failed attempt (a late reply,
            // a timed-out request) then never touches the keys of a later attempt that
            // succeeded. Within one attempt, a key already holding the value is ours.
            if attempts > 0 {
                spec.value = lock_value().into();
            }
            attempts += 1;
            let attempt_started = Instant::now();
            let failure = match self.attempt(&spec, &user_keys, ttl).await {
                Ok(lease) => {
                    // Granted: the acquire script took us out of the line.
                    if let Some(mut g) = queue_guard {
                        g.disarm();
                    }
                    return Ok(lease);
                }
                Err(f) => f,
            };
            let now = Instant::now();
            let pause = match &failure {
                Failure::Permanent(errors) => {
                    return Err(Error::config(format!(
                        "cannot lock {}: a node refused in a way retrying cannot fix",
                        KeyList(&spec.keys)
                    ))
                    .with_nodes(errors.clone()));
                }
                Failure::Contended {
                    pttl,
                    joined,
                    silent,
                } => {
                    outages = 0;
                    // Joined anew after an earlier refusal had put us in line.
                    if *joined && refused_at.is_some() {
                        trust_notices = false;
                    }
                    refused_at = Some(attempt_started);
                    if deadline.is_some_and(|d| now >= d) {
                        return Err(self.gave_up(&wait, &spec, &failure, started));
                    }
                    if opts.notifications && !watched_once {
                        // Subscribe, then retry at once: a release between our attempt
                        // and the subscription would otherwise be missed.
                        watched_once = true;
                        watches = self.watch_all(&spec).await;
                        if watches.is_some() {
                            continue;
                        }
                    }
                    jitter::held_pause(opts, watches.is_some(), *pttl, *silent, &mut polls)
                }
                Failure::Unavailable(_) => {
                    trust_notices = false;
                    if deadline.is_some_and(|d| now >= d) {
                        return Err(self.gave_up(&wait, &spec, &failure, started));
                    }
                    outages += 1;
                    jitter::backoff(outages, opts.retry_delay, Duration::from_secs(5))
                }
            };
            let sleep = tokio::time::sleep_until(jitter::wake_at(opts, now, pause, deadline));
            match watches.take() {
                Some(mut ws) if !ws.is_empty() => {
                    let notice = {
                        // Polled through references: the watches outlive this wait.
                        let notified = select_all(ws.iter_mut().map(|w| &mut w.notified));
                        tokio::select! {
                            (notice, _, _) = notified => Some(notice),
                            _ = sleep => None,
                        }
                    };
                    if let (Some(Notice::Granted { token }), Some(_), true) =
                        (notice, refused_at, trust_notices)
                        && let Some(lease) = self.handed_over(&spec, &user_keys, ttl, token).await
                    {
                        if let Some(mut g) = queue_guard {
                            g.disarm();
                        }
                        return Ok(lease);
                    }
                    // Otherwise (a notice we cannot build on, or one too late to leave
                    // a valid lease) the next attempt finds the key handed to us and
                    // renews it: the acquire script's hand-over answer.
                    // Re-arm before the next attempt so no release goes unheard, and
                    // before dropping the old watches, so the subscriptions stay up
                    // (no UNSUBSCRIBE/SUBSCRIBE round trip per wake-up).
                    watches = self.watch_all(&spec).await;
                    drop(ws);
                }
                _ => sleep.await,
            }
        }
    }

    /// The error for a wait that ended without the lock.
    fn gave_up(&self, wait: &Wait, spec: &LockSpec, failure: &Failure, started: Instant) -> Error {
        match (wait, failure) {
            (_, Failure::Unavailable(errors)) => self.unavailable(spec, errors.clone()),
            (Wait::No, Failure::Contended { pttl, .. }) => Error::contended(&spec.keys, *pttl),
            (_, Failure::Contended { pttl, .. }) => Error::new(
                ErrorKind::Timeout,
                format!(
                    "gave up on lock {} after {} ms: it is held by another owner{}",
                    KeyList(&spec.keys),
                    started.elapsed().as_millis(),
                    pttl.map(|p| format!(" (expires in {} ms unless extended)", p.as_millis()))
                        .unwrap_or_default()
                ),
            )
            .with_retry_after(*pttl),
            (_, Failure::Permanent(errors)) => {
                Error::config("node refused").with_nodes(errors.clone())
            }
        }
    }

    fn unavailable(&self, spec: &LockSpec, errors: Vec<NodeError>) -> Error {
        Error::unavailable(
            &format!(
                "cannot lock {}: fewer than {} of {} nodes answered",
                KeyList(&spec.keys),
                quorum::quorum(self.inner.nodes.len()),
                self.inner.nodes.len()
            ),
            errors,
        )
    }

    /// Watches of every key on every node, if every one is free to arm now (see
    /// [`crate::store::Store::watch_now`]); `None` otherwise.
    fn watch_now_all(&self, spec: &LockSpec) -> Option<Vec<Watch>> {
        let waiter = spec.queue.as_ref().map(|q| q.waiter.clone());
        self.inner
            .nodes
            .iter()
            .flat_map(|n| spec.keys.iter().map(move |k| (n, k)))
            .map(|(n, k)| n.watch_now(k, waiter.clone()))
            .collect()
    }

    /// Subscribes to release notices of every key on every node that offers them.
    pub(crate) async fn watch_all(&self, spec: &LockSpec) -> Option<Vec<Watch>> {
        let waiter = spec.queue.as_ref().map(|q| q.waiter.clone());
        let timeout = self
            .inner
            .options
            .request_timeout_for(Duration::from_millis(spec.ttl_ms));
        let requests = self.inner.nodes.iter().flat_map(|n| {
            let waiter = waiter.clone();
            spec.keys
                .iter()
                .map(move |k| tokio::time::timeout(timeout, n.watch(k, waiter.clone())))
        });
        let watches: Vec<Watch> = join_all(requests)
            .await
            .into_iter()
            .filter_map(|r| r.ok()?.ok()?)
            .collect();
        (!watches.is_empty()).then_some(watches)
    }

    /// One Redlock attempt: ask every node at once, decide as soon as a majority of
    /// grants or refusals is in, commit the fencing token, check the validity.
    pub(crate) async fn attempt(
        &self,
        spec: &LockSpec,
        user_keys: &[String],
        ttl: Duration,
    ) -> Result<Lease, Failure> {
        let inner = &self.inner;
        let n = inner.nodes.len();
        let q = quorum::quorum(n);
        let timeout = inner.options.request_timeout_for(ttl);
        let start = Instant::now();
        let ended = Arc::new(AtomicBool::new(false));
        // The clean-ups of this attempt undo its grants but keep our place in line
        // (fair mode): the queue entry belongs to the whole acquire, not this attempt.
        let attempt_spec = spec;
        let spec = &LockSpec {
            queue: None,
            ..attempt_spec.clone()
        };
        // Until disarmed, dropping this (a cancelled acquire) releases on every node.
        let mut guard = CleanupGuard {
            locker: Some(self.clone()),
            spec: spec.clone(),
        };
        let mut fan = FanOut::start(&inner.nodes, timeout, |node| node.acquire(attempt_spec));
        let mut tally = Tally::new(n);
        let mut grants: Vec<(usize, u64)> = Vec::with_capacity(n);
        let mut errors: Vec<NodeError> = Vec::new();
        let mut longest: Option<Duration> = None;
        let mut unknown_ttl = false;
        let mut touched: Vec<usize> = Vec::new();
        // Nodes that refused: with a queue ticket, they put us in line.
        let mut refused: Vec<usize> = Vec::new();
        let mut timed_out: Vec<usize> = Vec::new();
        let mut joined = false;
        let mut silent = false;
        let mut handed = false;
        while let Some((i, reply)) = fan.next().await {
            match reply {
                Ok(Ok(Acquired::Granted { counter })) => {
                    tally.granted += 1;
                    grants.push((i, counter));
                }
                Ok(Ok(Acquired::HandedOver { counter })) => {
                    // Ours already, by a release's hand-off: the lease is the waiter
                    // id's (one key on one node, so this is the only grant).
                    tally.granted += 1;
                    grants.push((i, counter));
                    handed = true;
                }
                Ok(Ok(Acquired::Held {
                    pttl,
                    joined: j,
                    silent: q,
                })) => {
                    tally.held += 1;
                    joined |= j;
                    silent |= q;
                    refused.push(i);
                    match pttl {
                        Some(p) => longest = Some(longest.map_or(p, |l| l.max(p))),
                        None => unknown_ttl = true,
                    }
                }
                Ok(Err(e)) => {
                    tally.failed += 1;
                    if matches!(e.kind(), NodeErrorKind::Io | NodeErrorKind::Protocol) {
                        // The request may have reached the node before the link broke,
                        // or ran and answered something we could not read.
                        touched.push(i);
                    }
                    errors.push(e);
                }
                Err(_) => {
                    tally.failed += 1;
                    errors.push(fan.timeout_error(inner.nodes[i].name()));
                    // What to do about it depends on the verdict (below).
                    timed_out.push(i);
                }
            }
            if tally.early().is_some() {
                break;
            }
        }
        let verdict = tally.early().unwrap_or_else(|| tally.last());
        // Nodes still to answer: their replies are handled in the background.
        {
            let locker = self.clone();
            let spec = spec.clone();
            let ended = ended.clone();
            let granted = verdict == Verdict::Granted;
            let queued = attempt_spec.queue.is_some().then(|| attempt_spec.clone());
            fan.finish_in_background(move |i, reply| {
                // (A hand-over answer never comes late: hand-off waiters lock one key
                // on one node, whose answer is the verdict.)
                let late_grant = matches!(reply, Ok(Ok(Acquired::Granted { .. })));
                let failed_attempt_or_ended = !granted || ended.load(Ordering::Acquire);
                let background = &locker.inner.background;
                if granted
                    && !late_grant
                    && let Some(queued) = &queued
                {
                    // We hold the lock: a late refusal put us in line for nothing.
                    background.send(Message::LeaveQueue(i, queued.clone()));
                }
                if (reply.is_err() || late_grant) && failed_attempt_or_ended {
                    // A time-out may still land; a late grant is ours to undo.
                    background.send(Message::Abandon(i, spec.clone()));
                }
            });
        }
        if verdict != Verdict::Granted {
            // A timed-out request may still land: release after it, on its connection,
            // then drop that connection. (For a granted lease, a late landing is just
            // one more node holding our key, released with the lease.)
            for &i in &timed_out {
                inner.background.send(Message::Abandon(i, spec.clone()));
            }
            self.undo(spec, grants.iter().map(|(i, _)| *i).chain(touched), timeout)
                .await;
            guard.disarm();
            let permanent: Vec<NodeError> = errors
                .iter()
                .filter(|e| e.is_permanent())
                .cloned()
                .collect();
            return Err(match verdict {
                Verdict::Contended => Failure::Contended {
                    pttl: if unknown_ttl { None } else { longest },
                    joined,
                    silent,
                },
                _ if !permanent.is_empty() => Failure::Permanent(errors),
                _ => Failure::Unavailable(errors),
            });
        }

        // Fencing: the token is the largest counter any granting node returned; nodes
        // that were behind are raised to it before the lease is handed out, so that a
        // majority holds counter >= token while we hold the key (docs/fencing.md).
        let token = grants.iter().map(|(_, c)| *c).max().unwrap_or(0);
        let behind: Vec<usize> = grants
            .iter()
            .filter(|(_, c)| *c < token)
            .map(|(i, _)| *i)
            .collect();
        let mut committed = grants.len() - behind.len();
        if !behind.is_empty() {
            let commits = FanOut::start_on(&inner.nodes, behind, timeout, |n| {
                n.commit_fence(spec, token)
            })
            .all()
            .await;
            committed += commits
                .iter()
                .filter(|(_, r)| matches!(r, Ok(Ok(true))))
                .count();
        }
        let valid_until = quorum::valid_until(start, ttl, inner.options.drift_factor);
        let (true, Some(valid_until)) = (committed >= q, valid_until) else {
            // Failed after all: late grants are undone by the task above, timed-out
            // requests are abandoned.
            ended.store(true, Ordering::Release);
            for &i in &timed_out {
                inner.background.send(Message::Abandon(i, spec.clone()));
            }
            // Every node: one that answers late may have granted meanwhile.
            self.undo(spec, (0..n).filter(|i| !timed_out.contains(i)), timeout)
                .await;
            guard.disarm();
            errors.push(NodeError::new(
                NodeErrorKind::Timeout,
                "quorum",
                "the majority was reached too late: the lease would not have been valid",
            ));
            return Err(Failure::Unavailable(errors));
        };
        if attempt_spec.queue.is_some() {
            // Nodes that refused (or may have: errors) put us in line: leave it, in the
            // background. Late replies are handled by the task above.
            for &i in refused.iter().chain(&touched) {
                inner
                    .background
                    .send(Message::LeaveQueue(i, attempt_spec.clone()));
            }
        }
        guard.disarm();
        let handed_spec;
        let spec = match attempt_spec.queue.as_ref().filter(|_| handed) {
            Some(q) => {
                handed_spec = LockSpec {
                    value: q.waiter.clone(),
                    ..spec.clone()
                };
                &handed_spec
            }
            None => spec,
        };
        Ok(self.track(spec, user_keys, ttl, token, valid_until, ended))
    }

    /// The lease a hand-off notice gave us: `release.lua` set the key to our waiter id
    /// for a short claim and announced `token`; we make it ours for the full TTL with
    /// one extend, whose start bounds the validity like a fresh grant's. `None` when the
    /// extend does not confirm it (the claim ran out first, a node did not answer): the
    /// caller's next attempt then finds out where the key stands.
    ///
    /// The notice's token is trusted only as the caller allows (`trust_notices`): the
    /// key holding our id proves that the hand-off happened, not which one.
    async fn handed_over(
        &self,
        spec: &LockSpec,
        user_keys: &[String],
        ttl: Duration,
        token: u64,
    ) -> Option<Lease> {
        let waiter = spec.queue.as_ref()?.waiter.clone();
        let spec = LockSpec {
            value: waiter,
            queue: None,
            ..spec.clone()
        };
        let until = self
            .extend_spec(&spec, user_keys, ttl, Expiry::AtLeast, None)
            .await
            .ok()?;
        let ended = Arc::new(AtomicBool::new(false));
        Some(self.track(&spec, user_keys, ttl, token, until, ended))
    }

    /// Hands a granted lock to the background task (renewal, `lost()`) as a lease.
    fn track(
        &self,
        spec: &LockSpec,
        user_keys: &[String],
        ttl: Duration,
        token: u64,
        valid_until: Instant,
        ended: Arc<AtomicBool>,
    ) -> Lease {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(LeaseState::new(
            id,
            user_keys.to_vec(),
            spec,
            token,
            valid_until,
            next_renewal(Instant::now(), ttl, jitter::renewal_spread()),
            ended,
        ));
        state
            .auto_renew
            .store(self.inner.options.auto_renew, Ordering::Release);
        self.inner.background.track(state.clone());
        Lease::new(state, self.clone())
    }

    /// Releases a failed attempt's grants right away (bounded by the request timeout);
    /// whatever does not answer in time is left to the background task.
    async fn undo(&self, spec: &LockSpec, nodes: impl Iterator<Item = usize>, timeout: Duration) {
        let answers = FanOut::start_on(&self.inner.nodes, nodes, timeout, |n| n.undo(spec))
            .all()
            .await;
        for (i, answer) in answers {
            if !matches!(answer, Ok(Ok(_))) {
                self.inner
                    .background
                    .send(Message::Abandon(i, spec.clone()));
            }
        }
    }

    /// Runs `work` while holding the lock on `keys`, with automatic renewal, and always
    /// releases at the end. If the lease is lost, the work future is dropped at once and
    /// the result is [`ErrorKind::Lost`].
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
    /// Cancelling this future stops waiting; the releases still go on in the background.
    pub async fn shutdown(&self) {
        self.inner
            .background
            .ensure_started(&self.inner.nodes, &self.inner.options);
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.inner.background.send(Message::Drain(tx));
        let _ = rx.await;
    }

    pub(crate) fn options(&self) -> &Options {
        &self.inner.options
    }

    pub(crate) fn nodes(&self) -> &[Node] {
        &self.inner.nodes
    }

    pub(crate) fn wake_background(&self) {
        self.inner.background.send(Message::Wake);
    }

    pub(crate) fn release_in_background(&self, spec: LockSpec) {
        self.inner.background.send(Message::Release(spec));
    }

    pub(crate) async fn extend_lease(&self, state: &Arc<LeaseState>, ttl: Duration) -> Result<()> {
        self.inner.options.check_ttl(ttl)?;
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
                quorum::proven_bound(start, ttl, self.inner.options.drift_factor),
            );
            // The `lost()` deadline moved earlier: the background task must not sleep
            // past it (it would fire `lost()` after the keys could be gone).
            self.wake_background();
            Expiry::Exactly
        } else {
            Expiry::AtLeast
        };
        // Shared with `extend_spec` (and its background finish): the lock is released
        // only once this call has recorded the outcome below, so no renewal round
        // starts in between with the TTL from before this extend.
        let op = Arc::new(op);
        let spec = state.spec_with_ttl(ttl);
        let lease = Some((state.clone(), Arc::clone(&op)));
        match self
            .extend_spec(&spec, &state.keys, ttl, expiry, lease)
            .await
        {
            Ok(until) => {
                state.extended(
                    ttl,
                    until,
                    next_renewal(Instant::now(), ttl, jitter::renewal_spread()),
                );
                drop(op);
                self.wake_background();
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

    /// Extends the lock on `keys` held with `value` (as printed by `fencelock acquire`)
    /// to `ttl` from now, without the [`Lease`] object: for scripts that split acquire,
    /// extend and release across processes. Returns how long the lock is now valid.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Lost`] when the keys expired on a majority of nodes or another owner
    /// holds them; [`ErrorKind::Unavailable`] when too few nodes answered;
    /// [`ErrorKind::InvalidInput`] for bad keys, value or TTL.
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
        let until = self
            .extend_spec(&spec, &user_keys, ttl, Expiry::Exactly, None)
            .await?;
        Ok(until.saturating_duration_since(Instant::now()))
    }

    /// Releases the lock on `keys` held with `value`, without the [`Lease`] object.
    ///
    /// # Errors
    ///
    /// As [`Lease::release`]; [`ErrorKind::InvalidInput`] for bad keys or value.
    ///
    /// Cancelling the future leaves the release to the locker's background task.
    pub async fn release_value(&self, keys: impl IntoKeys, value: &str) -> Result<ReleaseOutcome> {
        let (spec, user_keys) = self.adopt(keys, value, self.inner.options.ttl)?;
        self.inner
            .background
            .ensure_started(&self.inner.nodes, &self.inner.options);
        let mut guard = CleanupGuard {
            locker: Some(self.clone()),
            spec: spec.clone(),
        };
        let outcome = self.release_spec(&spec, &user_keys).await;
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
        let opts = &self.inner.options;
        let user_keys = keys.into_keys();
        // A permit taken by a script (`fencelock acquire --permits`) is named by its key.
        let full =
            crate::semaphore::validate_with_permits(user_keys.clone(), &opts.prefix, &opts.keys)?;
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

    /// Extends `spec` on every node and decides at the first majority (the shared
    /// [`HoldTally`]); returns the end of the validity that majority proves.
    ///
    /// With `lease` (the lease and a share of its `op` lock), the lease's floors bound
    /// what each node proves, and an [`Expiry::Exactly`] extend keeps the lock until
    /// every node has answered or timed out: a node that has not answered may still cut
    /// the keys short, so it gets a floor, lifted when its answer comes.
    async fn extend_spec(
        &self,
        spec: &LockSpec,
        keys: &[String],
        ttl: Duration,
        expiry: Expiry,
        lease: Option<(Arc<LeaseState>, Arc<OwnedMutexGuard<()>>)>,
    ) -> Result<Instant> {
        // Only a lease that is still valid may take gone keys back (see `Store::extend`).
        let reclaim = lease.is_some();
        let inner = &self.inner;
        let n = inner.nodes.len();
        let q = quorum::quorum(n);
        let drift_factor = inner.options.drift_factor;
        let lost = |why: &str| Error::lost(format!("lock {} lost: {why}", KeyList(keys)));
        let batch = [spec.clone()];
        let timeout = inner.options.request_timeout_for(ttl);
        let start = Instant::now();
        let mut fan = FanOut::start(&inner.nodes, timeout, |node| {
            node.extend(&batch, expiry, reclaim)
        });
        let mut tally = HoldTally::new(n);
        let mut confirmed = Vec::with_capacity(n);
        let mut answered = vec![false; n];
        let mut errors = Vec::new();
        let decision = loop {
            let Some((i, answer)) = fan.next().await else {
                break None;
            };
            answered[i] = true;
            let name = inner.nodes[i].name();
            match answer {
                Ok(Ok(states)) => match states.first() {
                    Some(&holding) => {
                        tally.add(name, holding);
                        if matches!(holding, Holding::Ours | Holding::Reclaimed) {
                            confirmed.push(i);
                        }
                    }
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
            Some((state, _)) => state.proven_until(&confirmed, start, ttl, drift_factor, q),
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

    pub(crate) async fn release_lease(&self, state: &Arc<LeaseState>) -> Result<ReleaseOutcome> {
        self.release_spec(&state.spec(), &state.keys).await
    }

    /// Releases `spec` on every node; decides at the first majority (the shared
    /// [`HoldTally`]) and lets the other nodes finish in the background.
    async fn release_spec(&self, spec: &LockSpec, keys: &[String]) -> Result<ReleaseOutcome> {
        let inner = &self.inner;
        let n = inner.nodes.len();
        // Not capped by the TTL: a release races no validity, and a short lease must
        // not turn a slow answer into "not confirmed".
        let timeout = inner.options.request_timeout;
        let mut fan = FanOut::start(&inner.nodes, timeout, |node| node.release(spec));
        let mut tally = HoldTally::new(n);
        let mut errors = Vec::new();
        while let Some((i, answer)) = fan.next().await {
            let name = inner.nodes[i].name();
            match answer {
                Ok(Ok(holding)) => tally.add(name, holding),
                Ok(Err(e)) => {
                    tally.fail_with(&e);
                    errors.push(e);
                }
                Err(_) => {
                    inner.background.send(Message::Abandon(i, spec.clone()));
                    let e = fan.timeout_error(name);
                    tally.fail_with(&e);
                    errors.push(e);
                }
            }
            if tally.decided().is_some() {
                break;
            }
        }
        // Decided: the other nodes finish in the background (a node that does not
        // answer in time gets its clean-up like any other).
        let locker = self.clone();
        let late = spec.clone();
        fan.finish_in_background(move |i, answer| {
            if answer.is_err() {
                locker
                    .inner
                    .background
                    .send(Message::Abandon(i, late.clone()));
            }
        });
        let unanswered = n - tally.answered() + tally.failed;
        let q = quorum::quorum(n);
        match tally.decided() {
            Some(Hold::Held) => Ok(ReleaseOutcome::Released),
            // A successor holds (held) a majority.
            Some(Hold::Gone {
                other_majority: true,
            }) => Ok(ReleaseOutcome::OwnedByOther),
            _ if tally.ours + unanswered >= q => {
                // The silent nodes may be the ones that made our majority: we cannot
                // tell whether the lease was still held, so the release is not confirmed.
                Err(Error::unavailable(
                    &format!(
                        "release of lock {} not confirmed: {} of {n} nodes released it, \
                         {unanswered} did not answer (the keys still expire with their \
                         TTL): {}",
                        KeyList(keys),
                        tally.ours,
                        tally.said()
                    ),
                    errors,
                ))
            }
            _ if tally.other > 0 && tally.ours == 0 => Ok(ReleaseOutcome::OwnedByOther),
            // Held on no majority any more: it had expired (a key of another owner on a
            // minority of nodes is a waiter's attempt or a stray, not a successor).
            _ => Ok(ReleaseOutcome::Expired),
        }
    }
}

/// Releases everything an attempt may have set if the attempt is dropped midway.
struct CleanupGuard {
    locker: Option<Locker>,
    spec: LockSpec,
}

impl CleanupGuard {
    fn disarm(&mut self) {
        self.locker = None;
    }
}

impl Drop for CleanupGuard {
    fn drop(&mut self) {
        if let Some(locker) = self.locker.take() {
            locker.release_in_background(self.spec.clone());
        }
    }
}

/// Microseconds since the Unix epoch by the wall clock: the fair-mode ticket, so that
/// waiters line up in the same order on every node.
pub(crate) fn unix_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// A lease's lock value: `fl:` and [`random_value`]. Other clients compare values as
/// opaque strings; the prefix tells a fencelock waiter that this holder announces its
/// release (`fencelock_announces` in shared.lua), so the waiter need not poll for it.
pub(crate) fn lock_value() -> String {
    let mut value = String::with_capacity(35);
    value.push_str("fl:");
    push_random_hex(&mut value);
    value
}

/// 16 random bytes as 32 hex characters: the entropy of the `redlock` npm package's
/// values (redsync writes base64 of 16 bytes; values are compared as opaque strings, so
/// any client's value means the same to every client).
///
/// Drawn from the thread's CSPRNG (`rand::rng()`: ChaCha seeded from the OS and reseeded
/// by it), not from the OS per value: a value must be unguessable, which a CSPRNG gives,
/// and a system call per acquire is measurable on the uncontended path
/// (crates/fencelock-bench/PERF-NOTES.md).
pub(crate) fn random_value() -> String {
    let mut value = String::with_capacity(32);
    push_random_hex(&mut value);
    value
}

/// Appends [`random_value`]'s 32 hex characters to `out`.
fn push_random_hex(out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes: [u8; 16] = rand::Rng::random(&mut rand::rng());
    for b in bytes {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
}

// ---- Semaphores (`semaphore.rs`): what a permit acquire shares with a lock's. ----

impl AcquireOptions {
    /// When a wait that starts at `started` ends (`None`: never), and whether it is a
    /// single attempt; the locker's `max_wait` when the options do not say.
    pub(crate) fn deadline(&self, locker: &Locker, started: Instant) -> (Option<Instant>, bool) {
        let wait = self.wait.unwrap_or(match locker.inner.options.max_wait {
            Some(d) => Wait::Up(d),
            None => Wait::Forever,
        });
        match wait {
            Wait::No => (Some(started), true),
            Wait::Up(d) => (started.checked_add(d), false),
            Wait::Forever => (None, false),
        }
    }

    /// Whether fair mode was asked for (here or on the locker).
    pub(crate) fn is_fair(&self, locker: &Locker) -> bool {
        self.fair.unwrap_or(locker.inner.options.fair)
    }
}

impl Locker {
    /// Runs `work` (attempts on keys already validated: a lock's, or a semaphore's)
    /// with the background task started and the start-up checks beside it.
    ///
    /// A replica, the same server twice …: the start-up checks refuse those. They run
    /// beside the acquire, never before it: a node the quorum does not need (a silent
    /// one) must not hold the acquire back. Checks that fail first fail the acquire
    /// (dropping it leaves nothing behind); an acquire that completes first goes
    /// ahead, and the checks judge the next one.
    pub(crate) async fn run_checked<T>(
        &self,
        work: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        self.inner
            .background
            .ensure_started(&self.inner.nodes, &self.inner.options);
        let checks = self.startup_checks(&self.inner.checked);
        if let Some(checked) = checks.peek() {
            checked.clone()?;
            return work.await;
        }
        tokio::pin!(work);
        tokio::select! {
            biased;
            checked = checks => {
                checked?;
                work.await
            }
            done = &mut work => done,
        }
    }
}

/// The body of [`Locker::with_lock`] once the acquire is done (also
/// `Semaphore::with_permit`): renewed while `work` runs, the work dropped if the lease
/// is lost, always released.
pub(crate) async fn scoped<T>(
    lease: Result<Lease>,
    work: impl AsyncFnOnce(&Lease) -> T,
) -> Scoped<T> {
    let lease = match lease {
        Ok(l) => l,
        Err(e) => {
            return Scoped {
                work: Err(e),
                release: None,
            };
        }
    };
    lease.set_auto_renew(true);
    let lost = lease.lost();
    let result = tokio::select! {
        biased;
        output = work(&lease) => Ok(output),
        _ = lost => Err(()),
    };
    let work = match result {
        Ok(output) if !lease.is_lost() => Ok(output),
        _ => Err(lost_error(
            lease.state(),
            "the work was stopped because the lease could no longer be proven valid",
        )),
    };
    let release = Some(lease.release().await);
    Scoped { work, release }
}
