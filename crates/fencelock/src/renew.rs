//! The locker's background task: renews every live lease, fires `lost()` on time,
//! makes a lease taken on a hand-off notice the TTL's once it is held that long, and
//! carries out the releases nobody can wait for (dropped leases, cancelled acquires,
//! requests that timed out).
//!
//! One task per locker, started on the first acquire. Renewal is batched: each tick
//! collects every lease that is due soon and sends one extend request per node for all
//! of them, so 10 000 leases cost a few requests a second, not 10 000. `Drop` impls
//! only push a message into an unbounded channel (`background.rs`). The task only
//! schedules: the renewal round is `extend.rs`'s, the releases are `release.rs`'s.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, OwnedMutexGuard, mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::background::{Message, Tracked};
use crate::core::Core;
use crate::extend::{confirm_handoff, renew_round};
use crate::lease_state::LeaseState;
use crate::options::Options;
use crate::release::{abandon_on, leave_queue_on, release_everywhere, undo_on};
use crate::store::Node;

/// Starts the task of `core`'s locker on the current runtime if it is not running yet.
/// The task holds the nodes and options, not the locker: it ends once every locker
/// clone and lease is gone (its channel closes).
pub(crate) fn ensure_started(core: &Core) {
    if let Some((rx, tracked)) = core.background.take() {
        tokio::spawn(run(rx, tracked, core.nodes.clone(), core.options.clone()));
    }
}

async fn run(
    mut rx: mpsc::UnboundedReceiver<Message>,
    tracked: Arc<Mutex<Tracked>>,
    nodes: Vec<Node>,
    options: Options,
) {
    let mut task = Task {
        nodes: nodes.into(),
        options,
        leases: HashMap::new(),
        work: JoinSet::new(),
        stalled: Arc::default(),
        stalls: Arc::default(),
        drains: Vec::new(),
    };
    let stalls = task.stalls.clone();
    loop {
        let next = {
            // Take the new leases and publish when we wake next, in one step (see
            // `Tracked`). New leases get a tick of their own first (one may be due).
            let mut t = tracked.lock().unwrap_or_else(|p| p.into_inner());
            if !t.leases.is_empty() {
                for lease in t.leases.drain(..) {
                    task.leases.insert(lease.id, lease);
                }
                drop(t);
                task.tick();
                t = tracked.lock().unwrap_or_else(|p| p.into_inner());
                for lease in t.leases.drain(..) {
                    task.leases.insert(lease.id, lease);
                }
            }
            let next = next_wakeup(&task.leases);
            t.wakes_at = next;
            t.woken = false;
            next
        };
        tokio::select! {
            message = rx.recv() => match message {
                None => break,
                Some(m) => task.handle(m),
            },
            _ = sleep_until(next) => {}
            Some(_) = task.work.join_next(), if !task.work.is_empty() => {}
            () = stalls.notified() => {}
        }
        // Take everything queued before scanning: 10 000 acquires in a burst must
        // cost a few scans of the lease table, not 10 000.
        while let Ok(m) = rx.try_recv() {
            task.handle(m);
        }
        task.tick();
    }
    // Every sender is gone (locker and leases dropped): finish what is queued.
    while task.work.join_next().await.is_some() {}
    for done in task.drains {
        let _ = done.send(());
    }
}

/// The background task's state.
struct Task {
    nodes: Arc<[Node]>,
    options: Options,
    leases: HashMap<u64, Arc<LeaseState>>,
    work: JoinSet<()>,
    /// Clean-ups in `work` that went unanswered for a request time-out (see
    /// [`Task::clean_up`]); `stalls` wakes the task when one more does.
    stalled: Arc<AtomicUsize>,
    stalls: Arc<Notify>,
    drains: Vec<oneshot::Sender<()>>,
}

impl Task {
    fn handle(&mut self, message: Message) {
        match message {
            Message::Release(spec, lease) => {
                let nodes = self.nodes.clone();
                let patience = self.options.request_timeout;
                let timeout = self
                    .options
                    .request_timeout_for(Duration::from_millis(spec.ttl_ms));
                self.clean_up(async move {
                    if let Some(lease) = lease {
                        lease.reclaims_done(patience).await;
                    }
                    release_everywhere(&nodes, &spec, timeout).await;
                });
            }
            Message::Abandon(i, spec) => {
                if let Some(node) = self.nodes.get(i).cloned() {
                    self.clean_up(async move { abandon_on(&node, &spec).await });
                }
            }
            Message::Undo(i, spec) => {
                if let Some(node) = self.nodes.get(i).cloned() {
                    self.clean_up(async move { undo_on(&node, &spec).await });
                }
            }
            Message::LeaveQueue(i, spec) => {
                if let Some(node) = self.nodes.get(i).cloned() {
                    let timeout = self
                        .options
                        .request_timeout_for(Duration::from_millis(spec.ttl_ms));
                    self.clean_up(async move { leave_queue_on(&node, &spec, timeout).await });
                }
            }
            Message::Wake => {}
            Message::Drain(done) => self.drains.push(done),
        }
    }

    /// Runs `work`, a release or other clean-up, in the task's work set. One that has
    /// no answer after a request time-out counts as stalled from then on: its node is
    /// not answering (paused, partitioned), and a drain ([`Message::Drain`],
    /// `Locker::shutdown`) stops waiting for it — the request is queued on the node's
    /// connection, which runs it if the node wakes while it lasts, and otherwise the
    /// keys run out with their TTL, as a minority's do after a crash. Before, one
    /// paused node of three held every `fencelock run` up at its exit, for the
    /// shutdown's whole grace (2 s), waiting for clean-ups that node would never
    /// answer in time.
    fn clean_up(&mut self, work: impl Future<Output = ()> + Send + 'static) {
        let stalled = self.stalled.clone();
        let stalls = self.stalls.clone();
        let patience = self.options.request_timeout;
        self.work.spawn(async move {
            tokio::pin!(work);
            if tokio::time::timeout(patience, &mut work).await.is_ok() {
                return;
            }
            stalled.fetch_add(1, Ordering::AcqRel);
            stalls.notify_one();
            work.await;
            stalled.fetch_sub(1, Ordering::AcqRel);
        });
    }

    /// Fires due `lost()` signals, starts a renewal round for the leases due and the
    /// hand-offs' extends that are due.
    fn tick(&mut self) {
        self.leases.retain(|_, l| !l.is_ended() && !l.is_lost());
        let now = Instant::now();
        for lease in self.leases.values() {
            if held_too_long(lease, &self.options, now) {
                // Renewal stops; the lease runs out at the end of its current TTL.
                lease.auto_renew.store(false, Ordering::Release);
            }
        }
        let round = self.leases.values().any(|l| is_overdue(l, now));
        let mut due = Vec::new();
        let mut confirms = Vec::new();
        for lease in self.leases.values() {
            // Checked even while a renewal round is in flight: a slow round must not
            // let the lease claim validity it can no longer prove.
            if now >= lease.lost_deadline() {
                let why: String = if held_too_long(lease, &self.options, now) {
                    "it was held longer than the locker's max_hold, so renewal stopped".into()
                } else if lease.auto_renew.load(Ordering::Acquire) {
                    let last = lease
                        .last_round
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .clone()
                        .unwrap_or_else(|| "no renewal round completed".to_string());
                    format!(
                        "renewal did not reach a majority of nodes before the lease ran \
                         out (last round: {last})"
                    )
                } else {
                    "its validity ran out (it was not extended)".into()
                };
                lease.lose(&why);
            } else if round && is_due(lease, now) {
                match lease.op.clone().try_lock_owned() {
                    // Released since the scan above (from another thread): a reclaiming
                    // renewal must not go out after that release. Its `reclaims_done`
                    // found `op` free before we took it, so `ended` shows here.
                    Ok(_) if lease.is_ended() => {}
                    Ok(op) => {
                        lease.renewing.store(true, Ordering::Release);
                        due.push((lease.clone(), op));
                    }
                    // A user's extend is in flight: it renews the lease itself, and sets
                    // the next renewal when it succeeds. Until then look again a little
                    // later: a renewal left due would wake this task at once, every
                    // time, for as long as the extend takes (a busy loop).
                    Err(_) if lease.renew_at() <= now => {
                        lease.retry_renewal_at(now + busy_retry(lease.ttl()));
                    }
                    Err(_) => {}
                }
            }
            if let Some(op) = due_for_confirmation(lease, now) {
                confirms.push((lease.clone(), op));
            }
        }
        for (lease, op) in confirms {
            let (nodes, options) = (self.nodes.clone(), self.options.clone());
            self.work
                .spawn(async move { confirm_handoff(&nodes, &options, &lease, op).await });
        }
        if !due.is_empty() {
            let nodes = self.nodes.clone();
            let options = self.options.clone();
            self.work
                .spawn(async move { renew_round(&nodes, &options, due).await });
        }
        if !self.drains.is_empty() && only_renewals_left(&self.work, &self.stalled, &self.leases) {
            for done in self.drains.drain(..) {
                let _ = done.send(());
            }
        }
    }
}

/// The `op` lock of a lease taken on a hand-off notice whose extend to the TTL is due
/// by `now` (`extend::confirm_handoff`), to send it with; it is sent once. `None` when
/// not due, or when a renewal round or user's extend holds `op`: that one makes the
/// lease the TTL's itself if it lands, and until then the lease is looked at again a
/// little later.
fn due_for_confirmation(lease: &LeaseState, now: Instant) -> Option<OwnedMutexGuard<()>> {
    if lease.confirm_at().is_none_or(|at| at > now) {
        return None;
    }
    match lease.op.clone().try_lock_owned() {
        Ok(op) => {
            lease.confirm_handoff_at(None);
            // Lost just now, or released since the scan (from another thread; see the
            // renewal above): nothing to confirm.
            (!lease.is_ended() && !lease.is_lost()).then_some(op)
        }
        Err(_) => {
            lease.confirm_handoff_at(Some(now + busy_retry(lease.ttl())));
            None
        }
    }
}

/// Whether pending work is only renewal of live leases (which never "drains") and
/// stalled clean-ups ([`Task::clean_up`]).
fn only_renewals_left(
    work: &JoinSet<()>,
    stalled: &AtomicUsize,
    leases: &HashMap<u64, Arc<LeaseState>>,
) -> bool {
    let renewing = leases
        .values()
        .filter(|l| l.renewing.load(Ordering::Acquire))
        .count();
    work.len().saturating_sub(stalled.load(Ordering::Acquire)) <= usize::from(renewing > 0)
}

/// Whether a lease may join the renewal round starting `now`. A round starts only when
/// some lease is actually due; it then takes every lease due within the next sixth of
/// its TTL (renewing that early is harmless), so leases settle into cohorts that share
/// one request per node instead of trickling out in many small rounds.
fn is_due(lease: &LeaseState, now: Instant) -> bool {
    lease.auto_renew.load(Ordering::Acquire)
        && !lease.renewing.load(Ordering::Acquire)
        && lease.renew_at() <= now + lease.ttl() / 6
}

/// How long to put off the renewal of a lease while a user's extend of it is in flight.
fn busy_retry(ttl: Duration) -> Duration {
    (ttl / 20).max(Duration::from_millis(1))
}

/// Whether a lease has used up the locker's `max_hold`: it is not renewed any more.
fn held_too_long(lease: &LeaseState, options: &Options, now: Instant) -> bool {
    options
        .max_hold
        .is_some_and(|max| now.saturating_duration_since(lease.acquired_at) >= max)
}

fn is_overdue(lease: &LeaseState, now: Instant) -> bool {
    lease.auto_renew.load(Ordering::Acquire)
        && !lease.renewing.load(Ordering::Acquire)
        && lease.renew_at() <= now
}

fn next_wakeup(leases: &HashMap<u64, Arc<LeaseState>>) -> Option<Instant> {
    leases.values().map(|l| l.first_deadline()).min()
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
