//! The node fan-out: one operation sent to every node at once, all under one time-out,
//! answers taken in the order they come.
//!
//! Every path that touches a live lease — an acquire attempt, a renewal round, an
//! extend, a release — goes through here, so they all follow the same rule: the caller
//! decides as soon as the answers it has make the decision certain (a majority), and the
//! nodes that have not answered yet finish in the background
//! ([`FanOut::finish_in_background`]) instead of holding the caller — and the lease —
//! back. A silent minority (paused, partitioned, swapping) then costs nothing but its
//! own answers.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};

use crate::error::{NodeError, NodeErrorKind};
use crate::store::{Node, StoreFuture};

/// One node's answer: the store's reply, or `Err(TimedOut)` when it did not come within
/// the time-out (the request may still be applied later: see [`crate::store::Store::abandon`]).
pub(crate) type Answer<T> = Result<Result<T, NodeError>, TimedOut>;

/// A request that got no answer within its time-out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimedOut;

type Pending<T> = Pin<Box<dyn Future<Output = (usize, Result<T, NodeError>)> + Send>>;

/// Requests in flight to every node (see the module docs).
///
/// One timer for the whole fan-out, not one per request: every request starts at the
/// same moment with the same time-out, so one deadline says the same, and each timer
/// costs a registration and a cancellation in the runtime's timer wheel on the
/// uncontended path (crates/fencelock-bench/PERF-NOTES.md).
pub(crate) struct FanOut<T> {
    pending: FuturesUnordered<Pending<T>>,
    /// The nodes that have not answered yet.
    waiting: Vec<usize>,
    /// When every request still in flight times out.
    deadline: Pin<Box<tokio::time::Sleep>>,
    /// The deadline passed: the requests were dropped, `waiting` is reported timed out.
    expired: bool,
    timeout: Duration,
}

impl<T: Send + 'static> FanOut<T> {
    /// Sends `request(node)` to every node at once, each under `timeout`.
    pub(crate) fn start(
        nodes: &[Node],
        timeout: Duration,
        request: impl FnMut(&Node) -> StoreFuture<T>,
    ) -> Self {
        Self::start_on(nodes, 0..nodes.len(), timeout, request)
    }

    /// [`FanOut::start`] on the nodes `which` only (indices into `nodes`; answers
    /// keep them): the undo of an attempt's grants, the fencing commit round.
    pub(crate) fn start_on(
        nodes: &[Node],
        which: impl IntoIterator<Item = usize>,
        timeout: Duration,
        mut request: impl FnMut(&Node) -> StoreFuture<T>,
    ) -> Self {
        let mut waiting = Vec::with_capacity(nodes.len());
        let pending = which
            .into_iter()
            .filter_map(|i| Some((i, nodes.get(i)?)))
            .map(|(i, node)| {
                waiting.push(i);
                let call = request(node);
                Box::pin(async move { (i, call.await) }) as Pending<T>
            })
            .collect();
        FanOut {
            pending,
            waiting,
            deadline: Box::pin(tokio::time::sleep(timeout)),
            expired: false,
            timeout,
        }
    }

    /// The next answer, from whichever node gives it first; `None` when every node has
    /// answered or timed out.
    ///
    /// Cancelling it loses no answer: the request stays in the fan-out.
    pub(crate) async fn next(&mut self) -> Option<(usize, Answer<T>)> {
        if !self.expired && !self.waiting.is_empty() {
            tokio::select! {
                biased;
                Some((i, answer)) = self.pending.next() => {
                    self.waiting.retain(|&w| w != i);
                    return Some((i, Ok(answer)));
                }
                () = &mut self.deadline => {
                    // As a time-out per request would: the requests still in flight are
                    // dropped (their nodes may still apply them).
                    self.expired = true;
                    self.pending = FuturesUnordered::new();
                }
            }
        }
        if self.waiting.is_empty() {
            return None;
        }
        Some((self.waiting.remove(0), Err(TimedOut)))
    }

    /// An answer that is already in, without waiting for one: `None` when none is (or
    /// every node has answered or timed out). For a caller that has decided but can
    /// still use an answer that costs no wait.
    pub(crate) fn next_ready(&mut self) -> Option<(usize, Answer<T>)> {
        if self.expired || self.waiting.is_empty() {
            return None;
        }
        let (i, answer) = self.pending.next().now_or_never()??;
        self.waiting.retain(|&w| w != i);
        Some((i, Ok(answer)))
    }

    /// Every answer still to come, in the order they come (for callers that need all).
    ///
    /// Cancelling it drops the requests still in flight (their nodes may apply them).
    pub(crate) async fn all(mut self) -> Vec<(usize, Answer<T>)> {
        let mut out = Vec::with_capacity(self.waiting.len());
        while let Some(answer) = self.next().await {
            out.push(answer);
        }
        out
    }

    /// Every node's answer in node order, a time-out as that node's error: for the
    /// callers that report on each node (status, key listing, checks) instead of
    /// deciding at a majority. For a fan-out [`FanOut::start`]ed on all of `nodes`.
    ///
    /// Cancelling it drops the requests still in flight (they change nothing).
    pub(crate) async fn by_node(self, nodes: &[Node]) -> Vec<Result<T, NodeError>> {
        let timeout = self.timeout;
        let mut answers = self.all().await;
        answers.sort_unstable_by_key(|(i, _)| *i);
        answers
            .into_iter()
            .map(|(i, answer)| {
                answer.unwrap_or_else(|TimedOut| Err(timeout_error(nodes[i].name(), timeout)))
            })
            .collect()
    }

    /// Whether every node has answered or timed out.
    pub(crate) fn is_done(&self) -> bool {
        self.waiting.is_empty()
    }

    /// The error that stands for a node's time-out in messages.
    pub(crate) fn timeout_error(&self, node: &str) -> NodeError {
        timeout_error(node, self.timeout)
    }

    /// Lets the nodes that have not answered yet finish on a task of their own, handing
    /// each answer to `on_answer` (for clean-up: undo a late grant, abandon a request
    /// that timed out). Spawns nothing when every node has answered.
    pub(crate) fn finish_in_background(
        mut self,
        mut on_answer: impl FnMut(usize, Answer<T>) + Send + 'static,
    ) {
        if self.waiting.is_empty() {
            return;
        }
        tokio::spawn(async move {
            while let Some((i, answer)) = self.next().await {
                on_answer(i, answer);
            }
        });
    }
}

/// The error that stands for `node`'s time-out after `timeout`.
fn timeout_error(node: &str, timeout: Duration) -> NodeError {
    NodeError::new(
        NodeErrorKind::Timeout,
        node,
        format!("no answer within {} ms", timeout.as_millis()),
    )
}
