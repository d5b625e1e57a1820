//! One Redlock attempt: the request to every node, the verdict at the first deciding
//! majority, the fencing commit round, and the undo of a failed attempt (at once where
//! the nodes answer, through the background task where they do not).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::background::Message;
use crate::core::Core;
use crate::error::{NodeError, NodeErrorKind};
use crate::fanout::FanOut;
use crate::lease::Lease;
use crate::quorum::{self, Tally, Verdict};
use crate::store::{Acquired, LockSpec};

/// Why one attempt did not grant.
pub(crate) enum Failure {
    /// Held by another owner. `pttl`: the longest remaining TTL the nodes reported;
    /// `joined`: some refusing node put us in line anew (see [`Acquired::Held`]);
    /// `silent`: some key's holder will not announce its release (see
    /// [`Acquired::Held`]), so waiting for a notice could sleep through it; `split`:
    /// some node granted this attempt (undone since) — a split vote, maybe, where
    /// no contender holds a majority and nobody will announce a release, so the
    /// waiter tries again soon instead of waiting for a notice (see [`WaitLink`]).
    Contended {
        pttl: Option<Duration>,
        joined: bool,
        silent: bool,
        split: bool,
    },
    Unavailable(Vec<NodeError>),
    /// A node error retrying cannot fix (auth, replica, foreign key type …).
    Permanent(Vec<NodeError>),
}

/// What the attempts of one wait share with it, so that a failed attempt's grants are
/// undone without waking anybody while the wait goes on.
///
/// Why quietly: a failed attempt's grant was never the lock, so announcing its undo
/// as a release would wake the next waiter of that node for a lock held on a majority
/// — a wasted wake-up per failed attempt. Why that is safe for liveness: a grant of a
/// failed attempt can block others only until it is undone, and its own waiter tries
/// again soon — at once after an attempt some node granted (`Failure::Contended`'s
/// `split`), and when a grant comes back late (after the verdict) through
/// [`WaitLink::late_grant`]. So when every contender of a split vote was refused
/// somewhere and the key is then free everywhere, each of them is about to try again
/// (with jitter, so one wins), where a quiet undo alone would leave them all waiting
/// for a notice that never comes (`scripts/bench` W3 on 3 nodes once waited out 10 s
/// TTLs so). Only the last attempt of a wait, after which nobody tries again, undoes
/// its grants loudly, so that a waiter it refused is told — and an attempt that ends
/// past the wait's deadline is its last, even when it did not start as such.
#[derive(Debug, Default)]
pub(crate) struct WaitLink {
    /// No attempt follows: set before a wait's last attempt and when the wait ends
    /// (granted, gave up, cancelled).
    last: AtomicBool,
    /// The wait's deadline: an attempt that fails past it is the last, since the wait
    /// gives up then. Before, one that started in time and ended after it (a split
    /// vote) undid its grants quietly, and a waiter it refused slept until its own
    /// pause ran out, with nobody left to retry.
    deadline: Option<Instant>,
    /// Raised when a late grant of this wait was undone (quietly, the wait going on).
    late_grant: Notify,
}

impl WaitLink {
    /// The link of a wait that gives up at `deadline` (`None`: never by itself).
    pub(crate) fn until(deadline: Option<Instant>) -> WaitLink {
        WaitLink {
            deadline,
            ..WaitLink::default()
        }
    }

    /// No attempt of this wait follows the one about to start (or none at all).
    pub(crate) fn set_last(&self) {
        self.last.store(true, Ordering::Release);
    }

    fn is_last(&self) -> bool {
        self.last.load(Ordering::Acquire) || self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// Resolves when a failed attempt's grant came late and was undone, so that the
    /// wait tries again soon (a permit stored if nobody waits yet).
    pub(crate) async fn late_grant(&self) {
        self.late_grant.notified().await;
    }
}

/// One Redlock attempt: ask every node at once, decide as soon as a majority of
/// grants or refusals is in, commit the fencing token, check the validity.
///
/// `link`: the wait this attempt belongs to, which decides how a failed attempt's
/// grants are undone (see [`WaitLink`]).
pub(crate) async fn attempt(
    core: &Arc<Core>,
    spec: &LockSpec,
    user_keys: &[String],
    ttl: Duration,
    link: &Arc<WaitLink>,
) -> Result<Lease, Failure> {
    let n = core.nodes.len();
    let q = quorum::quorum(n);
    let timeout = core.options.request_timeout_for(ttl);
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
    let mut guard = CleanupGuard::new(core, spec.clone());
    let mut fan = FanOut::start(&core.nodes, timeout, |node| node.acquire(attempt_spec));
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
    // Grants taken after a granted verdict (below): they do not set the token.
    let mut extra: Vec<u64> = Vec::new();
    loop {
        let decided = tally.early();
        let next = match decided {
            None => fan.next().await,
            // Granted: answers already in are taken too, without waiting. An answer
            // taken here needs no background task, a grant no undo after the lease's
            // release (the lease's release covers it), and a grant already at the token
            // counts for the majority the commit round below would otherwise make (on
            // 3 nodes under load, the first two grants of a fresh key often straddle a
            // millisecond).
            Some(Verdict::Granted) => fan.next_ready(),
            Some(_) => None,
        };
        let Some((i, reply)) = next else { break };
        match reply {
            Ok(Ok(Acquired::Granted { counter })) if decided.is_some() => {
                tally.granted += 1;
                extra.push(counter);
            }
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
                errors.push(fan.timeout_error(core.nodes[i].name()));
                // What to do about it depends on the verdict (below).
                timed_out.push(i);
            }
        }
    }
    let verdict = tally.early().unwrap_or_else(|| tally.last());
    // Nodes still to answer: their replies are handled in the background (nothing to
    // clone when every node has answered).
    if !fan.is_done() {
        let core = core.clone();
        let spec = spec.clone();
        let ended = ended.clone();
        let granted = verdict == Verdict::Granted;
        let queued = attempt_spec.queue.is_some().then(|| attempt_spec.clone());
        let link = link.clone();
        fan.finish_in_background(move |i, reply| {
            // (A hand-over answer never comes late: hand-off waiters lock one key
            // on one node, whose answer is the verdict.)
            let late_grant = matches!(reply, Ok(Ok(Acquired::Granted { .. })));
            let failed_attempt_or_ended = !granted || ended.load(Ordering::Acquire);
            let background = &core.background;
            if granted
                && !late_grant
                && let Some(queued) = &queued
            {
                // We hold the lock: a late refusal put us in line for nothing.
                background.send(Message::LeaveQueue(i, queued.clone()));
            }
            if late_grant && !granted && !link.is_last() {
                // A failed attempt's late grant while the wait goes on: undone
                // quietly, and the wait tries again soon (see `WaitLink`).
                background.send(Message::Undo(i, spec.clone()));
                link.late_grant.notify_one();
            } else if (reply.is_err() || late_grant) && failed_attempt_or_ended {
                // A time-out may still land (the release goes after it, on its
                // connection); a late grant of an ended wait or lease is a release,
                // which tells the next waiter.
                background.send(Message::Abandon(i, spec.clone()));
            }
        });
    }
    if verdict != Verdict::Granted {
        // A timed-out request may still land: release after it, on its connection,
        // then drop that connection. (For a granted lease, a late landing is just
        // one more node holding our key, released with the lease.)
        for &i in &timed_out {
            core.background.send(Message::Abandon(i, spec.clone()));
        }
        let split = !grants.is_empty();
        undo(
            core,
            spec,
            grants.iter().map(|(i, _)| *i).chain(touched),
            timeout,
            split && link.is_last(),
        )
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
                split,
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
    // A majority at counter >= token is what the argument needs (docs/fencing.md): a
    // grant taken after the verdict that is at the token already counts, and a node
    // ahead of it is harmless (the token is still above every earlier token, being the
    // largest grant of a majority).
    let mut committed = grants.len() - behind.len() + extra.iter().filter(|&&c| c == token).count();
    if !behind.is_empty() && committed < q {
        let commits = FanOut::start_on(&core.nodes, behind, timeout, |n| {
            n.commit_fence(spec, token)
        })
        .all()
        .await;
        committed += commits
            .iter()
            .filter(|(_, r)| matches!(r, Ok(Ok(true))))
            .count();
    }
    let valid_until = quorum::valid_until(start, ttl, core.options.drift_factor);
    let (true, Some(valid_until)) = (committed >= q, valid_until) else {
        // Failed after all: late grants are undone by the task above, timed-out
        // requests are abandoned.
        ended.store(true, Ordering::Release);
        for &i in &timed_out {
            core.background.send(Message::Abandon(i, spec.clone()));
        }
        // Every node: one that answers late may have granted meanwhile.
        undo(
            core,
            spec,
            (0..n).filter(|i| !timed_out.contains(i)),
            timeout,
            false,
        )
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
            core.background
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
    Ok(Lease::granted(
        core,
        spec,
        user_keys,
        ttl,
        token,
        valid_until,
        ended,
        None,
    ))
}

/// Releases a failed attempt's grants right away (bounded by the request timeout);
/// whatever does not answer in time is left to the background task. Quietly, unless
/// `loud`: then as a release, which tells the next waiter of each node (see
/// [`WaitLink`]).
async fn undo(
    core: &Core,
    spec: &LockSpec,
    nodes: impl Iterator<Item = usize>,
    timeout: Duration,
    loud: bool,
) {
    let answers = FanOut::start_on(&core.nodes, nodes, timeout, |n| {
        if loud { n.release(spec) } else { n.undo(spec) }
    })
    .all()
    .await;
    for (i, answer) in answers {
        if !matches!(answer, Ok(Ok(_))) {
            core.background.send(Message::Abandon(i, spec.clone()));
        }
    }
}

/// Releases everything an attempt may have set if the attempt is dropped midway.
pub(crate) struct CleanupGuard<'a> {
    core: Option<&'a Core>,
    spec: LockSpec,
}

impl<'a> CleanupGuard<'a> {
    /// Armed: dropped before [`CleanupGuard::disarm`], it releases `spec` on every node.
    pub(crate) fn new(core: &'a Core, spec: LockSpec) -> Self {
        CleanupGuard {
            core: Some(core),
            spec,
        }
    }

    pub(crate) fn disarm(&mut self) {
        self.core = None;
    }
}

impl Drop for CleanupGuard<'_> {
    fn drop(&mut self) {
        if let Some(core) = self.core.take() {
            core.release_in_background(self.spec.clone());
        }
    }
}
