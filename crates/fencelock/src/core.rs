//! What every part of one locker shares: its nodes, its options, the handle of its
//! background task, and its start-up checks. A [`crate::Locker`] is an `Arc` of this;
//! a [`crate::Lease`] and a [`crate::Semaphore`] hold the same `Arc`, and the protocol
//! paths (`attempt.rs`, `wait.rs`, `extend.rs`, `release.rs`) borrow it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::future::{BoxFuture, Shared};

use crate::background::{Background, Message};
use crate::error::Result;
use crate::lease_state::LeaseState;
use crate::options::Options;
use crate::store::{LockSpec, Node};

/// The start-up checks (`checks.rs`) of one locker, shared by every acquire that looks
/// at them.
pub(crate) type StartupChecks = Shared<BoxFuture<'static, Result<()>>>;

/// Where a locker keeps its start-up checks: `None` until the first acquire, and again
/// after checks that failed (a failure is not remembered: fixing the set-up needs no
/// new locker).
pub(crate) type CheckCell = std::sync::Mutex<Option<StartupChecks>>;

/// One locker's shared state.
#[derive(Debug)]
pub(crate) struct Core {
    pub(crate) nodes: Vec<Node>,
    pub(crate) options: Options,
    pub(crate) background: Background,
    next_id: AtomicU64,
    /// The start-up checks (`checks.rs`), started on the first acquire.
    pub(crate) checked: CheckCell,
}

impl Core {
    pub(crate) fn new(nodes: Vec<Node>, options: Options) -> Core {
        Core {
            nodes,
            options,
            background: Background::new(),
            next_id: AtomicU64::new(1),
            checked: CheckCell::default(),
        }
    }

    pub(crate) fn options(&self) -> &Options {
        &self.options
    }

    pub(crate) fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// A new lease's id (the background task's key for it).
    pub(crate) fn next_lease_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Has the background task recompute its schedule (a lease's deadline moved).
    pub(crate) fn wake_background(&self) {
        self.background.send(Message::Wake);
    }

    /// Has the background task release `spec` on every node (nobody waits for it).
    pub(crate) fn release_in_background(&self, spec: LockSpec) {
        self.background.send(Message::Release(spec, None));
    }

    /// Has the background task release an ended lease on every node, once the
    /// extensions of it in flight are answered ([`LeaseState::reclaims_done`]).
    pub(crate) fn release_lease_in_background(&self, lease: &Arc<LeaseState>) {
        self.background
            .send(Message::Release(lease.spec(), Some(lease.clone())));
    }
}
