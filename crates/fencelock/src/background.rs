//! The handle of a locker's background task (`renew.rs`): the messages it takes, and
//! the new leases waiting for it. `Drop` impls only push a message into an unbounded
//! channel: they never block, spawn or panic, even outside a runtime.

use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::lease_state::LeaseState;
use crate::store::LockSpec;

/// Work for the background task.
#[derive(Debug)]
pub(crate) enum Message {
    /// Release this lock on every node (a dropped lease or acquire); for a lease, once
    /// the extensions of it in flight are answered ([`LeaseState::reclaims_done`]).
    Release(LockSpec, Option<Arc<LeaseState>>),
    /// A request for this lock on node `i` timed out: clean up after it.
    Abandon(usize, LockSpec),
    /// A failed attempt's late grant on node `i`, its wait going on: undo it quietly
    /// (no release notice; see `attempt::WaitLink`).
    Undo(usize, LockSpec),
    /// Fair mode: leave the queue of this lock on node `i`.
    LeaveQueue(usize, LockSpec),
    /// Something changed (auto-renew turned on): recompute the schedule.
    Wake,
    /// Finish every pending release, then answer.
    Drain(oneshot::Sender<()>),
}

/// The sending half, and the receiving half until the task is started.
#[derive(Debug)]
pub(crate) struct Background {
    tx: mpsc::UnboundedSender<Message>,
    rx: Mutex<Option<mpsc::UnboundedReceiver<Message>>>,
    tracked: Arc<Mutex<Tracked>>,
}

/// New leases waiting for the task, and when the task will next wake by itself.
///
/// A new lease's first deadline (its `lost()` time) is almost always later than the
/// task's next wake-up, so [`Background::track`] just leaves it here and the task picks
/// it up then: no task wake-up per acquire (on a hot key that is one context switch per
/// critical section). Only a lease due before that wake-up wakes the task. Both sides
/// hold the mutex while comparing, so no lease can slip past a sleep.
#[derive(Debug, Default)]
pub(crate) struct Tracked {
    pub(crate) leases: Vec<Arc<LeaseState>>,
    /// `None`: the task sleeps without a deadline (or has not started).
    pub(crate) wakes_at: Option<Instant>,
    /// A wake-up is on its way: no need to send another until the task drains.
    pub(crate) woken: bool,
}

/// This many waiting leases wake the task too, so that it takes them in (and drops
/// the ended ones: a hot key's released leases would otherwise pile up here until
/// its next wake-up).
const TRACKED_BATCH: usize = 1024;

impl Background {
    pub(crate) fn new() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Background {
            tx,
            rx: Mutex::new(Some(rx)),
            tracked: Arc::default(),
        }
    }

    /// Hands a new lease to the task (renewal, `lost()` on time); wakes the task only
    /// if the lease is due before the task would wake anyway (see [`Tracked`]).
    pub(crate) fn track(&self, lease: Arc<LeaseState>) {
        let due = lease.first_deadline();
        let mut tracked = self.tracked.lock().unwrap_or_else(|p| p.into_inner());
        tracked.leases.push(lease);
        let wake =
            tracked.leases.len() >= TRACKED_BATCH || tracked.wakes_at.is_none_or(|at| due < at);
        if wake && !tracked.woken {
            tracked.woken = true;
            drop(tracked);
            self.send(Message::Wake);
        }
    }

    /// Queues a message. Never blocks; if the task is gone (runtime shut down) the
    /// message is dropped and the keys expire with their TTL.
    pub(crate) fn send(&self, message: Message) {
        let _ = self.tx.send(message);
    }

    /// The receiving half and the new-lease list, for starting the task; `None` once
    /// taken (the task is running, or was started and has ended with its runtime).
    pub(crate) fn take(&self) -> Option<(mpsc::UnboundedReceiver<Message>, Arc<Mutex<Tracked>>)> {
        let mut slot = self.rx.lock().unwrap_or_else(|p| p.into_inner());
        slot.take().map(|rx| (rx, self.tracked.clone()))
    }
}
