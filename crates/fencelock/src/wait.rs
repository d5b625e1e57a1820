//! The wait of an acquire — a lock's or a semaphore's permit, one loop for both
//! ([`wait_for`] over a [`Goal`]): rounds of attempts (`attempt.rs`) until one grants,
//! and between them a wait for the holder's release notice, a poll where no notice
//! comes (a silent holder, a store without notices), a back-off while nodes are down,
//! or a quick retry after a split vote — all bounded by the acquire's deadline. A
//! waiter stands in the key's line (Redis), and takes a lock handed over by a release.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::{join_all, select_all};
use tokio::time::Instant;

use crate::attempt::{CleanupGuard, Failure, WaitLink, attempt};
use crate::core::Core;
use crate::error::{Error, ErrorKind, KeyList, NodeError, Result};
use crate::extend::extend;
use crate::fanout::FanOut;
use crate::jitter;
use crate::lease::Lease;
use crate::lease_state::{lost_deadline, safety_margin};
use crate::options::AcquireOptions;
use crate::quorum;
use crate::store::{Expiry, LockSpec, MAX_HANDOFF_CLAIM, Notice, QueueTicket, Watch};
use crate::value::{lock_value, random_value, unix_micros};

/// What a wait takes: a lock ([`LockGoal`]) or a permit of a semaphore
/// (`semaphore.rs`'s slots). [`wait_for`] is the one wait loop for both: it decides
/// when to try again, what to wait for meanwhile, and when to give up; a goal decides
/// what one round of attempts is.
pub(crate) trait Goal {
    /// One round of attempts: the lease, or why none was granted (for several
    /// attempts, one failure that sums them up). A granted round leaves the goal's
    /// lines (the caller only returns the lease).
    async fn round(
        &mut self,
        core: &Arc<Core>,
        link: &Arc<WaitLink>,
    ) -> std::result::Result<Lease, Failure>;

    /// The keys whose release notices wake the waiter, with its line ticket.
    fn watched(&self) -> &LockSpec;

    /// A release handed the goal over with `token` (a hand-off notice): the lease,
    /// if this goal takes hand-offs and the notice is one to build on. `None`: the
    /// next round finds out where things stand.
    async fn handed_over(&mut self, _core: &Arc<Core>, _token: u64) -> Option<Lease> {
        None
    }

    /// The error for a wait that ends with `failure`.
    fn gave_up(&self, core: &Core, single: bool, failure: &Failure, started: Instant) -> Error;
}

/// Why a waiter woke up before its pause ran out.
enum Woken {
    /// A release notice.
    Notice(Notice),
    /// A failed attempt's late grant was undone quietly: try again soon.
    LateGrant,
    /// The pause ran out.
    Paused,
}

/// The wait loop of every acquire, once its input is valid: rounds of attempts until
/// one grants; between them a release notice, a poll, or a back-off; after a split
/// vote or a late grant, another round soon — until the deadline of `options` (the
/// wait counted from `started`).
///
/// Cancelling it leaves nothing of ours behind: each attempt's guard releases what it
/// may have set, and the goal's lines are left by its own guards.
pub(crate) async fn wait_for<G: Goal>(
    core: &Arc<Core>,
    goal: &mut G,
    options: &AcquireOptions,
    started: Instant,
) -> Result<Lease> {
    let opts = &core.options;
    let (deadline, single) = options.deadline(opts, started);
    // A single try ends at its first refusal — except a split vote: nobody may hold
    // a majority then (contenders that came at the same moment each took some
    // nodes), and a refusal would tell every one of them "held", so that nobody
    // gets the lock (four `fencelock run -n` of one job, started at once on three
    // nodes, all exited 1). So a try that split tries again, soon, a few times.
    let mut split_retries = if single { SPLIT_RETRIES_OF_A_TRY } else { 0 };
    let deadline = if single { None } else { deadline };
    let link = Arc::new(WaitLink::until(deadline));
    // However the wait ends, a late grant of its attempts is then undone loudly.
    let _ended = LinkEnds(&link);
    let mut watches: Option<Vec<Watch>> = None;
    let mut watched_once = false;
    let mut outages: u32 = 0;
    let mut polls: u32 = 0;
    // Rounds since the last release notice that a node granted and the round failed
    // (a split vote, or a minority of nodes that lost the holder's key), and late
    // grants: the quick retries back off over them, whatever came in between, so they
    // stay a handful per notice.
    let mut splits: u32 = 0;
    if opts.notifications && goal.watched().queue.is_some() {
        // A hot key (already watched by this locker): watch before the first
        // attempt, for free, so a refusal goes straight to waiting.
        watches = watch_now_all(core, goal.watched());
        watched_once = watches.is_some();
    }
    loop {
        if (single && split_retries == 0) || deadline.is_some_and(|d| Instant::now() >= d) {
            link.set_last();
        }
        let round_started = Instant::now();
        let failure = match goal.round(core, &link).await {
            Ok(lease) => return Ok(lease),
            Err(f) => f,
        };
        let now = Instant::now();
        let over = deadline.is_some_and(|d| now >= d);
        let round = now - round_started;
        let pause = match &failure {
            Failure::Permanent(_) => return Err(goal.gave_up(core, single, &failure, started)),
            Failure::Contended {
                pttl,
                silent,
                split,
                ..
            } => {
                outages = 0;
                if over || (single && !(*split && split_retries > 0)) {
                    return Err(goal.gave_up(core, single, &failure, started));
                }
                if single {
                    split_retries -= 1;
                }
                if opts.notifications && !watched_once && !single {
                    // Subscribe, then retry at once: a release between our attempt
                    // and the subscription would otherwise be missed.
                    watched_once = true;
                    watches = watch_all(core, goal.watched()).await;
                    if watches.is_some() {
                        continue;
                    }
                }
                let held = jitter::held_pause(opts, watches.is_some(), *pttl, *silent, &mut polls);
                if *split {
                    // Some node granted us: maybe nobody holds a majority, and then
                    // nobody will announce a release (see `WaitLink`). Soon — but
                    // backing off while it repeats: a holder of a majority refuses
                    // us every time a node that lost its key (restarted empty)
                    // grants us, and that must not become a retry loop.
                    splits += 1;
                    soon(splits, round, held)
                } else {
                    held
                }
            }
            Failure::Unavailable(_) => {
                if over || single {
                    return Err(goal.gave_up(core, single, &failure, started));
                }
                outages += 1;
                jitter::backoff(outages, opts.retry_delay, Duration::from_secs(5))
            }
        };
        let wake_at = jitter::wake_at(opts, now, pause, deadline);
        tracing::debug!(
            target: "fencelock::wait",
            keys = %KeyList(&goal.watched().keys),
            holder = opts.holder.as_deref().unwrap_or(""),
            for_ms = wake_at.saturating_duration_since(now).as_millis(),
            notices = watches.as_ref().is_some_and(|w| !w.is_empty()),
            "pausing"
        );
        let sleep = tokio::time::sleep_until(wake_at);
        let woken = match watches.take() {
            Some(mut ws) if !ws.is_empty() => {
                let woken = {
                    // Polled through references: the watches outlive this wait.
                    let notified = select_all(ws.iter_mut().map(|w| &mut w.notified));
                    tokio::select! {
                        (notice, _, _) = notified => Woken::Notice(notice),
                        () = link.late_grant() => Woken::LateGrant,
                        () = sleep => Woken::Paused,
                    }
                };
                if let Woken::Notice(notice) = &woken {
                    splits = 0;
                    tracing::debug!(
                        target: "fencelock::wait",
                        keys = %KeyList(&goal.watched().keys),
                        holder = opts.holder.as_deref().unwrap_or(""),
                        "woken by a release notice"
                    );
                    if let Notice::Granted { token } = notice
                        && let Some(lease) = goal.handed_over(core, *token).await
                    {
                        return Ok(lease);
                    }
                }
                // Otherwise (a notice we cannot build on, or one too late to leave a
                // valid lease) the next attempt finds the key handed to us and renews
                // it: the acquire script's hand-over answer.
                // Re-arm before the next attempt so no release goes unheard, and
                // before dropping the old watches, so the subscriptions stay up (no
                // UNSUBSCRIBE/SUBSCRIBE round trip per wake-up).
                watches = watch_all(core, goal.watched()).await;
                drop(ws);
                woken
            }
            _ => tokio::select! {
                () = link.late_grant() => Woken::LateGrant,
                () = sleep => Woken::Paused,
            },
        };
        if let Woken::LateGrant = woken {
            // Give the undo, sent just before the wake-up, a moment to land, and the
            // other contenders of the split a chance to differ from us; backing off
            // as after a split.
            splits += 1;
            let pause = soon(splits, round, pause);
            tokio::time::sleep_until(jitter::wake_at(opts, Instant::now(), pause, deadline)).await;
        }
    }
}

/// How many times a single try ([`AcquireOptions::no_wait`]) tries again after a split
/// vote: the contenders' pauses before each are random and doubling ([`soon`]), so
/// that a split repeats across all of them is unlikely, and a try that meets a holder
/// of a majority (with a node that lost its key granting the try each time) still
/// ends within a few rounds.
const SPLIT_RETRIES_OF_A_TRY: u32 = 3;

/// How long a waiter pauses before trying again after its `splits`-th split vote or
/// late grant since the last notice: about one round (`round`, the last one's
/// duration) the first time — so that the undos land first — doubling with each
/// repeat, never longer than the pause it would take otherwise (`usual`); random in
/// the upper half of that, so that contenders that met once do not meet again in
/// step, while the doubling still bounds the retries to a handful per notice.
fn soon(splits: u32, round: Duration, usual: Duration) -> Duration {
    jitter::backoff_upper_half(splits.saturating_sub(1), round, usual)
}

/// Marks the wait's link as ended when the wait returns or is cancelled.
struct LinkEnds<'a>(&'a WaitLink);

impl Drop for LinkEnds<'_> {
    fn drop(&mut self) {
        self.0.set_last();
    }
}

/// [`crate::Locker::acquire_with`]'s wait, once the keys and TTL are valid.
///
/// Cancelling it leaves no key of ours behind (each attempt's guard, and the line's).
pub(crate) async fn acquire(
    core: &Arc<Core>,
    user_keys: Vec<String>,
    full: Vec<String>,
    ttl: Duration,
    options: &AcquireOptions,
) -> Result<Lease> {
    let started = Instant::now();
    let mut goal = LockGoal::new(core, user_keys, full, ttl, options)?;
    wait_for(core, &mut goal, options, started).await
}

/// A lock as the goal of a wait: one attempt per round, a place in the key's line
/// (Redis), and hand-off notices.
struct LockGoal<'a> {
    spec: LockSpec,
    user_keys: Vec<String>,
    ttl: Duration,
    /// Until disarmed, dropping this (cancelled, gave up) leaves the line — and frees
    /// the key if a release handed it to us meanwhile.
    queue_guard: Option<CleanupGuard<'a>>,
    attempts: u32,
    /// Hand-off notices: a release can only hand us the key after a node refused us
    /// and put us in line. A notice's token is trusted only while every notice for us
    /// must postdate our latest refusal: not once our line entry vanished and came
    /// back (a hand-off we never read may have come and gone, and its notice would
    /// name an older token), nor after an attempt whose answer we never saw.
    refused: bool,
    /// When the latest refused attempt was sent: a release that hands us the key while
    /// we trust notices ran after that attempt, so its claim lasts at least this long
    /// past it.
    refused_at: Option<Instant>,
    /// How long a release holds a key it hands us (`None`: no hand-offs, see
    /// [`QueueTicket::handoff_waiter`]).
    handoff_claim: Option<Duration>,
    trust_notices: bool,
}

impl<'a> LockGoal<'a> {
    fn new(
        core: &'a Arc<Core>,
        user_keys: Vec<String>,
        full: Vec<String>,
        ttl: Duration,
        options: &AcquireOptions,
    ) -> Result<Self> {
        let opts = &core.options;
        let mut spec = LockSpec {
            keys: full.into(),
            value: lock_value().into(),
            ttl_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
            holder: opts.holder.as_deref().map(Into::into),
            queue: None,
        };
        let fair = options.is_fair(opts);
        let queues = core.nodes.iter().all(|n| n.supports_queue());
        if fair && !queues {
            return Err(Error::config(
                "fair mode needs Redis stores: memory:// and sqlite:// keep no waiter line",
            ));
        }
        let single = options.deadline(opts, Instant::now()).1;
        let mut queue_guard = None;
        let mut handoff_claim = None;
        // A waiter takes a place in line, so that a release wakes it alone; a single
        // attempt has no use for one — unless fair mode must check the line.
        if queues && (fair || (opts.notifications && !single)) {
            // One key on one node (no holder record to write): one node's grant is the
            // whole lock, so the release can hand it over itself — the waiter holds
            // the lock one notice after the release, without a retry of its own.
            let inbox = match core.nodes.as_slice() {
                [node] if opts.notifications && spec.keys.len() == 1 && spec.holder.is_none() => {
                    node.inbox()
                }
                _ => None,
            };
            let grace_ms = opts.line_grace_ms();
            // A release holds a handed-over key for the waiter only for a short claim,
            // and the waiter makes it its full TTL itself: a waiter that died in line
            // costs the lock that claim, not its TTL. The claim is the line entry's
            // grace, plus what lets a waiter woken within that grace of its latest
            // refusal take the lease on the notice alone ([`handed_over`]): `lost()`'s
            // safety margin and one request for the extend that follows.
            // Whole milliseconds, as the waiter id names it (and the release sets it).
            let claim_ms = u64::try_from(
                (Duration::from_millis(grace_ms)
                    + safety_margin(ttl)
                    + opts.request_timeout_for(ttl))
                .min(ttl)
                .min(MAX_HANDOFF_CLAIM)
                .as_millis(),
            )
            .unwrap_or(u64::MAX);
            let waiter = match inbox {
                Some(inbox) => {
                    handoff_claim = Some(Duration::from_millis(claim_ms));
                    QueueTicket::handoff_waiter(claim_ms, inbox, &random_value())
                }
                None => random_value(),
            };
            spec.queue = Some(QueueTicket {
                waiter: waiter.into(),
                ticket: unix_micros(),
                grace_ms,
                fair,
            });
            let mut leave = spec.clone();
            if let Some(q) = spec.queue.as_ref().filter(|q| q.handoff()) {
                leave.value = q.waiter.clone();
            }
            queue_guard = Some(CleanupGuard::new(core, leave));
        }
        Ok(LockGoal {
            spec,
            user_keys,
            ttl,
            queue_guard,
            attempts: 0,
            refused: false,
            refused_at: None,
            handoff_claim,
            trust_notices: true,
        })
    }

    /// Granted: the acquire script (or the hand-off) took us out of the line.
    fn granted(&mut self, lease: Lease) -> Lease {
        if let Some(g) = self.queue_guard.as_mut() {
            g.disarm();
        }
        lease
    }
}

impl Goal for LockGoal<'_> {
    async fn round(
        &mut self,
        core: &Arc<Core>,
        link: &Arc<WaitLink>,
    ) -> std::result::Result<Lease, Failure> {
        // A fresh value per attempt: the clean-up of a failed attempt (a late reply,
        // a timed-out request) then never touches the keys of a later attempt that
        // succeeded. Within one attempt, a key already holding the value is ours.
        if self.attempts > 0 {
            self.spec.value = lock_value().into();
        }
        self.attempts += 1;
        let sent = Instant::now();
        match attempt(core, &self.spec, &self.user_keys, self.ttl, link).await {
            Ok(lease) => Ok(self.granted(lease)),
            Err(failure) => {
                match &failure {
                    Failure::Contended { joined, .. } => {
                        // Joined anew after an earlier refusal had put us in line.
                        if *joined && self.refused {
                            self.trust_notices = false;
                        }
                        self.refused = true;
                        self.refused_at = Some(sent);
                    }
                    Failure::Unavailable(_) => self.trust_notices = false,
                    Failure::Permanent(_) => {}
                }
                Err(failure)
            }
        }
    }

    fn watched(&self) -> &LockSpec {
        &self.spec
    }

    async fn handed_over(&mut self, core: &Arc<Core>, token: u64) -> Option<Lease> {
        if !(self.refused && self.trust_notices) {
            return None;
        }
        // The claim is proven from our latest refusal (see `refused_at`).
        let claimed = self
            .refused_at
            .zip(self.handoff_claim)
            .map(|(at, claim)| quorum::proven_bound(at, claim, core.options.drift_factor));
        let lease =
            handed_over(core, &self.spec, &self.user_keys, self.ttl, token, claimed).await?;
        Some(self.granted(lease))
    }

    fn gave_up(&self, core: &Core, single: bool, failure: &Failure, started: Instant) -> Error {
        gave_up(core, single, &self.spec, failure, started)
    }
}

/// The error for a wait that ended without the lock.
fn gave_up(
    core: &Core,
    single: bool,
    spec: &LockSpec,
    failure: &Failure,
    started: Instant,
) -> Error {
    match (single, failure) {
        (_, Failure::Unavailable(errors)) => unavailable(core, spec, errors.clone()),
        (true, Failure::Contended { pttl, .. }) => Error::contended(&spec.keys, *pttl),
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
        (_, Failure::Permanent(errors)) => Error::config(format!(
            "cannot lock {}: a node refused in a way retrying cannot fix",
            KeyList(&spec.keys)
        ))
        .with_nodes(errors.clone()),
    }
}

fn unavailable(core: &Core, spec: &LockSpec, errors: Vec<NodeError>) -> Error {
    Error::unavailable(
        &format!(
            "cannot lock {}: fewer than {} of {} nodes answered",
            KeyList(&spec.keys),
            quorum::quorum(core.nodes.len()),
            core.nodes.len()
        ),
        errors,
    )
}

/// Watches of every key on every node, if every one is free to arm now (see
/// [`crate::store::Store::watch_now`]); `None` otherwise.
fn watch_now_all(core: &Core, spec: &LockSpec) -> Option<Vec<Watch>> {
    let waiter = spec.queue.as_ref().map(|q| q.waiter.clone());
    core.nodes
        .iter()
        .flat_map(|n| spec.keys.iter().map(move |k| (n, k)))
        .map(|(n, k)| n.watch_now(k, waiter.clone()))
        .collect()
}

/// Subscribes to release notices of every key, returning once a majority of the
/// nodes has armed its watches (or every node has answered or timed out): one fan-out,
/// each node's watches under its one timer. A majority is enough — a release lands on
/// a majority, and two majorities share a node, which announces it — and waiting for
/// the rest would hold every wake-up back by a paused node's time-out. Nodes that
/// arm late are dropped (their subscriptions go with them).
async fn watch_all(core: &Core, spec: &LockSpec) -> Option<Vec<Watch>> {
    let waiter = spec.queue.as_ref().map(|q| q.waiter.clone());
    let timeout = core
        .options
        .request_timeout_for(Duration::from_millis(spec.ttl_ms));
    let mut fan = FanOut::start(&core.nodes, timeout, |n| {
        let calls: Vec<_> = spec
            .keys
            .iter()
            .map(|k| n.watch(k, waiter.clone()))
            .collect();
        Box::pin(async move { Ok(join_all(calls).await) })
    });
    let enough = quorum::quorum(core.nodes.len());
    let mut armed_nodes = 0;
    let mut watches: Vec<Watch> = Vec::new();
    while let Some((_, answer)) = fan.next().await {
        let armed: Vec<Watch> = answer
            .ok()
            .and_then(Result::ok)
            .into_iter()
            .flatten()
            .filter_map(|w| w.ok().flatten())
            .collect();
        if !armed.is_empty() {
            armed_nodes += 1;
            watches.extend(armed);
        }
        if armed_nodes >= enough {
            break;
        }
    }
    fan.finish_in_background(|_, _| {});
    (!watches.is_empty()).then_some(watches)
}

/// The lease a hand-off notice gave us: `release.lua` set the key to our waiter id
/// for a short claim and announced `token`; we make it ours for the full TTL with
/// one extend, whose start bounds the validity like a fresh grant's.
///
/// `claimed`: how long the claim is proven to last (counted from our latest refusal,
/// which the release came after). When it leaves `lost()` a request time-out or more
/// ahead, the lease is ours at once, valid for the claim: the hand-off costs the
/// notice alone, not the notice and a round trip. The locker's background task
/// sends the extend to the TTL (`extend::confirm_handoff`) halfway through the slack
/// the claim leaves before `lost()` and a request time-out (at most about half a
/// second by default), and not at all when the lease is released, lost or extended
/// before then: a critical section shorter than that costs no extend, no task and
/// no timer of its own (on a hot key, the extend was one of the three requests of
/// each hand-off). A lease the extend then fails to confirm is lost on time, as any
/// lease whose renewal fails. Otherwise (a notice that came long after our refusal)
/// the extend comes first, and `None` when it does not confirm (the claim ran out
/// first, the node did not answer): the caller's next attempt then finds out where
/// the key stands.
///
/// The notice's token is trusted only as the caller allows (`trust_notices`): the
/// key holding our id proves that the hand-off happened, not which one.
async fn handed_over(
    core: &Arc<Core>,
    spec: &LockSpec,
    user_keys: &[String],
    ttl: Duration,
    token: u64,
    claimed: Option<Instant>,
) -> Option<Lease> {
    let waiter = spec.queue.as_ref()?.waiter.clone();
    let spec = LockSpec {
        value: waiter,
        queue: None,
        ..spec.clone()
    };
    let timeout = core.options.request_timeout_for(ttl);
    let now = Instant::now();
    let taken_on_notice = claimed.and_then(|until| {
        let slack = lost_deadline(until, ttl).checked_duration_since(now + timeout)?;
        // Sent then, the extend is answered (or timed out) half the slack before
        // `lost()` would fire.
        (!slack.is_zero()).then(|| (until, now + slack / 2))
    });
    let (until, confirm_at) = match taken_on_notice {
        Some((until, confirm_at)) => (until, Some(confirm_at)),
        None => {
            let expiry = Expiry::AtLeast;
            let until = extend(
                &core.nodes,
                &core.options,
                &spec,
                user_keys,
                ttl,
                expiry,
                None,
            )
            .await
            .ok()?;
            (until, None)
        }
    };
    let ended = Arc::default();
    Some(Lease::granted(
        core, &spec, user_keys, ttl, token, until, ended, confirm_at,
    ))
}

#[cfg(test)]
mod tests {
    //! The wait loop under paused time: the clock moves only when every task sleeps, so
    //! what the loop decides (when to try again, when to give up) is exact.

    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::error::{NodeErrorKind, Result as FlResult};
    use crate::options::Options;
    use crate::store::memory::MemoryStore;
    use crate::store::{Acquired, Forgot, Holding, KeyInfo, Node, Notices, Store, StoreFuture};

    /// A lock on `key` held by another owner for `ttl`, set straight on the node.
    async fn held_by_another(node: &Node, key: &str, ttl: Duration) -> LockSpec {
        let spec = LockSpec {
            keys: vec![key.to_string()].into(),
            value: "fl:another-owner".into(),
            ttl_ms: u64::try_from(ttl.as_millis()).expect("ttl"),
            holder: None,
            queue: None,
        };
        let granted = node.acquire(&spec).await.expect("acquire");
        assert!(matches!(granted, Acquired::Granted { .. }), "{granted:?}");
        spec
    }

    fn core(nodes: Vec<Node>, options: Options) -> Arc<Core> {
        let core = Arc::new(Core::new(nodes, options));
        crate::renew::ensure_started(&core);
        core
    }

    async fn acquire_key(core: &Arc<Core>, key: &str, options: &AcquireOptions) -> FlResult<Lease> {
        let full = vec![key.to_string()];
        acquire(core, full.clone(), full, Duration::from_secs(10), options).await
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_gives_up_at_its_deadline_and_leaves_the_holders_key_alone() {
        let node: Node = Arc::new(MemoryStore::named("wait-gives-up-at-its-deadline"));
        let holder = held_by_another(&node, "k", Duration::from_secs(60)).await;
        let core = core(vec![node.clone()], Options::default());
        let started = Instant::now();
        let wait = Duration::from_secs(2);
        let e = acquire_key(&core, "k", &AcquireOptions::default().max_wait(wait))
            .await
            .expect_err("held for a minute");
        let waited = started.elapsed();
        assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
        assert!(e.retry_after().is_some(), "{e}");
        // It waited its whole wait, and not for the holder's TTL.
        assert!(
            waited >= wait && waited < Duration::from_secs(60),
            "{waited:?}"
        );
        let info = node.inspect("k").await.expect("inspect");
        assert_eq!(info.value.as_deref(), Some(&*holder.value));
    }

    #[tokio::test(start_paused = true)]
    async fn a_single_attempt_reports_contended_without_waiting() {
        let node: Node = Arc::new(MemoryStore::named("wait-single-attempt"));
        held_by_another(&node, "k", Duration::from_secs(60)).await;
        let core = core(vec![node], Options::default());
        let started = Instant::now();
        let e = acquire_key(&core, "k", &AcquireOptions::default().no_wait())
            .await
            .expect_err("held");
        assert_eq!(e.kind(), ErrorKind::Contended, "{e}");
        assert_eq!(started.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_gets_the_lock_when_the_holders_ttl_runs_out() {
        let node: Node = Arc::new(MemoryStore::named("wait-for-the-ttl"));
        let ttl = Duration::from_secs(3);
        held_by_another(&node, "k", ttl).await;
        let core = core(vec![node], Options::default());
        let started = Instant::now();
        let lease = acquire_key(&core, "k", &AcquireOptions::default().max_wait(ttl * 10))
            .await
            .expect("free once the TTL ran out");
        let waited = started.elapsed();
        assert!(waited >= ttl && waited < ttl * 10, "{waited:?}");
        lease.release().await.expect("release");
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_wakes_on_the_release_notice_before_the_ttl() {
        let node: Node = Arc::new(MemoryStore::named("wait-for-the-notice"));
        let ttl = Duration::from_secs(60);
        let holder = held_by_another(&node, "k", ttl).await;
        let core = core(vec![node.clone()], Options::default());
        let release_after = Duration::from_secs(1);
        let releaser = tokio::spawn(async move {
            tokio::time::sleep(release_after).await;
            node.release(&holder).await.expect("release")
        });
        let started = Instant::now();
        let lease = acquire_key(&core, "k", &AcquireOptions::default().wait_forever())
            .await
            .expect("released");
        let waited = started.elapsed();
        assert_eq!(releaser.await.expect("releaser"), Holding::Ours);
        // Woken by the notice: long before the holder's TTL would have freed the key.
        assert!(waited >= release_after && waited < ttl, "{waited:?}");
        lease.release().await.expect("release");
    }

    /// A node that is down: every request fails at once, and is counted.
    #[derive(Debug, Default)]
    struct Down {
        acquires: AtomicUsize,
    }

    fn down<T>() -> StoreFuture<T> {
        Box::pin(async { Err(NodeError::new(NodeErrorKind::Io, "down", "refused")) })
    }

    impl Store for Down {
        fn name(&self) -> &str {
            "down"
        }
        fn acquire(&self, _: &LockSpec) -> StoreFuture<Acquired> {
            self.acquires.fetch_add(1, Ordering::Relaxed);
            down()
        }
        fn commit_fence(&self, _: &LockSpec, _: u64) -> StoreFuture<bool> {
            down()
        }
        fn extend(&self, _: &[LockSpec], _: Expiry, _: bool) -> StoreFuture<Vec<Holding>> {
            down()
        }
        fn release(&self, _: &LockSpec) -> StoreFuture<Holding> {
            down()
        }
        fn abandon(&self, _: &LockSpec) -> StoreFuture<()> {
            down()
        }
        fn known_keys(&self, _: &str, _: usize) -> StoreFuture<Vec<String>> {
            down()
        }
        fn inspect(&self, _: &str) -> StoreFuture<KeyInfo> {
            down()
        }
        fn forget(&self, _: &str) -> StoreFuture<Forgot> {
            down()
        }
        fn notices(&self) -> Option<&dyn Notices> {
            Some(self)
        }
    }

    impl Notices for Down {
        fn watch(&self, _: &str, _: Option<Arc<str>>) -> StoreFuture<Watch> {
            down()
        }
    }

    /// Nodes down: the waiter backs off (doubling, up to 5 s) instead of retrying every
    /// `retry_delay`, and reports them unavailable, with their errors, at its deadline.
    #[tokio::test(start_paused = true)]
    async fn a_waiter_backs_off_while_the_nodes_are_down_and_reports_them() {
        crate::jitter::seed_this_thread(15);
        let store = Arc::new(Down::default());
        let node: Node = store.clone();
        let options = Options::default();
        let retry_delay = options.retry_delay;
        let core = core(vec![node], options);
        let wait = Duration::from_secs(20);
        let started = Instant::now();
        let e = acquire_key(&core, "k", &AcquireOptions::default().max_wait(wait))
            .await
            .expect_err("down");
        assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
        assert!(!e.node_errors().is_empty(), "{e}");
        assert!(started.elapsed() >= wait);
        let attempts = store.acquires.load(Ordering::Relaxed);
        // Retried, but far fewer times than a fixed poll every `retry_delay` would.
        let polls = usize::try_from(wait.as_millis() / retry_delay.as_millis()).expect("n");
        assert!(attempts > 2 && attempts < polls / 2, "{attempts} attempts");
    }
}
