//! Release: one request per node, decided at the first majority by the shared
//! [`HoldTally`] (`quorum.rs`) — for a lease, a lock named by value, and (without a
//! tally: nobody waits for it) the background task's releases.

use std::sync::Arc;
use std::time::Duration;

use crate::background::Message;
use crate::core::Core;
use crate::error::{Error, KeyList, Result};
use crate::fanout::FanOut;
use crate::jitter;
use crate::lease_state::LeaseState;
use crate::quorum::{self, Hold, HoldTally};
use crate::store::{LockSpec, Node};

/// What [`Lease::release`](crate::Lease::release) found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ReleaseOutcome {
    /// The lock was ours on a majority of nodes and is now free.
    Released,
    /// The lease had already expired; nobody else holds the lock. Not an error: the
    /// lock is free, but the work done under it was not protected to the end.
    Expired,
    /// Another owner holds (one of) the keys now: our lease expired and someone else
    /// acquired it. Their key was left alone.
    OwnedByOther,
}

/// Releases a lease (its spec with the current TTL).
pub(crate) async fn release_lease(core: &Arc<Core>, state: &LeaseState) -> Result<ReleaseOutcome> {
    release(core, &state.spec(), &state.keys).await
}

/// Releases `spec` on every node; decides at the first majority (the shared
/// [`HoldTally`]) and lets the other nodes finish in the background.
pub(crate) async fn release(
    core: &Arc<Core>,
    spec: &LockSpec,
    keys: &[String],
) -> Result<ReleaseOutcome> {
    let n = core.nodes.len();
    // Not capped by the TTL: a release races no validity, and a short lease must
    // not turn a slow answer into "not confirmed".
    let timeout = core.options.request_timeout;
    let mut fan = FanOut::start(&core.nodes, timeout, |node| node.release(spec));
    let mut tally = HoldTally::new(n);
    let mut errors = Vec::new();
    while let Some((i, answer)) = fan.next().await {
        let name = core.nodes[i].name();
        match answer {
            Ok(Ok(holding)) => tally.add(name, holding),
            Ok(Err(e)) => {
                tally.fail_with(&e);
                errors.push(e);
            }
            Err(_) => {
                core.background.send(Message::Abandon(i, spec.clone()));
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
    if !fan.is_done() {
        let core = core.clone();
        let late = spec.clone();
        fan.finish_in_background(move |i, answer| {
            if answer.is_err() {
                core.background.send(Message::Abandon(i, late.clone()));
            }
        });
    }
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

/// Releases a lock on every node, for a lease or acquire nobody waits on.
pub(crate) async fn release_everywhere(nodes: &[Node], spec: &LockSpec, timeout: Duration) {
    let answers = FanOut::start(nodes, timeout, |n| n.release(spec))
        .all()
        .await;
    for (i, answer) in answers {
        if answer.is_err()
            && let Some(node) = nodes.get(i)
        {
            // Timed out: the node may run it later; make sure nothing is left behind.
            abandon_on(node, spec).await;
        }
    }
}

/// Cleans up after a request for `spec` that timed out on `node` (it may still land).
/// Waiting for the answer is bounded by the TTL; the clean-up itself is not: it is
/// queued behind the request it undoes, on the same connection, and the node runs both
/// in order whenever it wakes.
pub(crate) async fn abandon_on(node: &Node, spec: &LockSpec) {
    let _ = tokio::time::timeout(Duration::from_millis(spec.ttl_ms), node.abandon(spec)).await;
}

/// Undoes a failed attempt's late grant on `node`: deletes the key if it still holds
/// the attempt's value, announcing nothing (the lock was never held on a majority;
/// the attempt's wait tries again soon, see `attempt::WaitLink`).
pub(crate) async fn undo_on(node: &Node, spec: &LockSpec) {
    let _ = tokio::time::timeout(Duration::from_millis(spec.ttl_ms), node.undo(spec)).await;
}

/// How many times a waiter's request to leave a node's line is tried.
const LEAVE_QUEUE_TRIES: u32 = 4;

/// Fair mode: takes the waiter of `spec` out of `node`'s line. Retried a few times: an
/// entry left behind would make a release hand the lock to a waiter that is gone (for
/// a short claim) or wake it for nothing, until the entry's own deadline.
pub(crate) async fn leave_queue_on(node: &Node, spec: &LockSpec, timeout: Duration) {
    for attempt in 0..LEAVE_QUEUE_TRIES {
        if let Ok(Ok(())) = tokio::time::timeout(timeout, node.leave_queue(spec)).await {
            return;
        }
        tokio::time::sleep(jitter::backoff(
            attempt,
            Duration::from_millis(50),
            Duration::from_secs(1),
        ))
        .await;
    }
}
