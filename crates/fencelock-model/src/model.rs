//! The state of the system and its transitions.
//!
//! One lock key. Each step is one atomic event: a node runs one script (the Lua
//! scripts are atomic on the node), a client handles one reply or one timeout, a key
//! expires, a node crashes and restarts. What a client decides from a reply (the
//! tally, the token, the commit round, the lease) happens in the step that delivers
//! the reply: it is local computation with no I/O in between. So does taking the
//! replies that are already in at a granting majority (`FanOut::next_ready` in
//! `attempt.rs`): on the literal network, any of the attempt's grant replies still in
//! flight (`State::take_ready_replies`); on the reduced one, where a reply is read
//! as its node runs, the client may read on past the majority and decide later
//! (`State::choose_majority`). How such a grant counts is `State::decide`.

use std::cmp::Ordering;
use std::fmt;

use crate::config::{Config, CounterStart, Mutation, Network};

/// The most nodes a configuration may have.
pub const MAX_NODES: usize = 5;

/// A node's index.
pub type NodeId = u8;

/// One attempt of one client. The attempt's random value in the real protocol is
/// unique per attempt, so the attempt id stands for it (see [`Mutation::ReuseValue`]
/// for the former one-value-per-client behaviour).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AttemptId {
    /// The client.
    pub client: u8,
    /// The attempt's number within the client, from 0.
    pub seq: u8,
}

impl AttemptId {
    /// On the reduced network: some attempt that is over, no longer told apart from
    /// the others that are over (see [`State::forget_finished`]).
    pub const OVER: AttemptId = AttemptId {
        client: u8::MAX,
        seq: u8::MAX,
    };
}

impl fmt::Display for AttemptId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == AttemptId::OVER {
            f.write_str("over")
        } else {
            write!(f, "c{}#{}", self.client, self.seq)
        }
    }
}

/// A node's answer to an acquire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reply {
    /// `{1, token}`: the key is ours and the counter is now this.
    Granted(u64),
    /// `{0, pttl}`: another value holds the key; nothing changed.
    Held,
}

/// A message in flight. The network is a multiset: any message may be delivered
/// next (reordering), at any later time (delay), or never (loss). A request whose
/// client timed out stays in flight and may still be run by the node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Msg {
    /// `acquire.lua` with the attempt's value.
    Acquire {
        /// Destination.
        node: NodeId,
        /// Sender.
        att: AttemptId,
    },
    /// `commit.lua` with the attempt's value and token.
    Commit {
        /// Destination.
        node: NodeId,
        /// Sender.
        att: AttemptId,
        /// The token to raise the counter to.
        token: u64,
    },
    /// `release.lua` (compare-and-delete) with the attempt's value. Its reply changes
    /// nothing on the client side, so it is not modelled. Literal network only.
    Release {
        /// Destination.
        node: NodeId,
        /// Sender.
        att: AttemptId,
    },
    /// The node's answer to an acquire. Literal network only.
    AcquireReply {
        /// The answering node.
        node: NodeId,
        /// The attempt it answers.
        att: AttemptId,
        /// What it answered.
        reply: Reply,
    },
    /// The node's answer to a commit: `true` when the key still held our value.
    /// Literal network only.
    CommitReply {
        /// The answering node.
        node: NodeId,
        /// The attempt it answers.
        att: AttemptId,
        /// Whether it committed.
        ok: bool,
    },
}

/// One node's data for the lock key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Node {
    /// The lock key's value (the holder's attempt id), `None` when free.
    pub value: Option<AttemptId>,
    /// The fencing counter `K:fencelock:fence`, `None` when missing.
    pub counter: Option<u64>,
    /// The node's clock (what a missing counter starts from), when the configuration
    /// has clocks ([`Config::clocks`]); 0 otherwise.
    pub clock: u64,
}

/// What an attempt knows about its acquire on one node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Slot {
    /// Sent, not answered, not timed out.
    Pending,
    /// Answered "granted" before the attempt decided.
    Granted(u64),
    /// Answered "held" before the attempt decided.
    Held,
    /// Timed out before the attempt decided (a failure in the tally).
    Failed,
    /// Granted, and taken at the verdict after the granting majority was in: a reply
    /// that was already in when the majority was (`FanOut::next_ready` in
    /// `attempt.rs`). Its counter does not set the token; it says how that counter
    /// compares with the token. Kept as part of the lease (released with it, or by
    /// the undo of a failed attempt); at the token, it counts for the commit quorum
    /// like a deciding grant at the token (see `State::decide`).
    Extra(Ordering),
    /// Not sent yet, settled after the attempt decided (a late reply, read by the
    /// background task, or a timeout), or the attempt is over and the details no
    /// longer matter.
    #[default]
    Done,
}

/// What an attempt knows about its commit on one node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CommitSlot {
    /// No commit sent (the node did not grant, or granted `c = T`).
    #[default]
    None,
    /// Sent, not answered, not timed out.
    Pending,
    /// Answered "committed".
    Ok,
    /// Answered "not ours any more", or timed out.
    Failed,
}

/// Where an attempt is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stage {
    /// Not started.
    #[default]
    Idle,
    /// Collecting acquire replies until the tally decides.
    Acquiring,
    /// A majority granted; waiting for the commits of the nodes behind `token`.
    Committing {
        /// `T = max(c_i)` over the deciding grants (not those taken after them).
        token: u64,
    },
    /// The lease was handed out and not released yet.
    Leased {
        /// Its token.
        token: u64,
    },
    /// The lease was released (its `ended` flag is set).
    Ended,
    /// The attempt failed and was undone.
    Failed {
        /// Whether the tally had said "granted" (the commit round or the validity
        /// check failed). `attempt()` then does not release late grants: its
        /// background task releases them only for a failed tally or an ended lease.
        after_grant: bool,
    },
}

/// One attempt of a client.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Attempt {
    /// Where the attempt is.
    pub stage: Stage,
    /// Ghost: the largest token handed out before this attempt sent its first acquire
    /// (for property P2). Cleared once the attempt is over.
    pub floor: Option<u64>,
    /// Per node, the acquire's state.
    pub acquire: [Slot; MAX_NODES],
    /// Per node, the commit's state (all `None` outside [`Stage::Committing`]).
    pub commit: [CommitSlot; MAX_NODES],
}

/// The whole system.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct State {
    /// Per node (entries past the configured count stay empty).
    pub nodes: [Node; MAX_NODES],
    /// Every attempt of every client: client `c`'s attempt `k` is at
    /// `c · attempts + k`. A client's current attempt is its last one not
    /// [`Stage::Idle`].
    pub attempts: Vec<Attempt>,
    /// Messages in flight, sorted (a canonical multiset).
    pub net: Vec<Msg>,
    /// Crashes so far.
    pub crashes: u8,
    /// Expiries so far (literal network only).
    pub expiries: u8,
    /// Counter losses (under a held key) so far.
    pub counter_losses: u8,
    /// Clock moves so far.
    pub ticks: u8,
    /// Whether a node has retired a counter so far (for the coverage report).
    pub retired: bool,
    /// Ghost: the largest counter value any node ever held.
    pub issued: u64,
    /// Ghost: the tokens of every lease handed out so far, sorted.
    pub leases: Vec<u64>,
}

/// An event. Together with the choices in [`Step`] it names one transition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Event {
    /// A client with no attempt in progress and no live lease starts an attempt: it
    /// sends an acquire to every node at once.
    Start {
        /// The client.
        client: u8,
    },
    /// A message is delivered: a node runs a script (and, on the reduced network,
    /// the client handles its reply), or a client handles a reply.
    Deliver(Msg),
    /// A client stops waiting for an acquire reply (timeout, or an I/O error after
    /// which the request may still have landed); on the literal network it sends an
    /// abandon release.
    AcquireTimeout {
        /// The attempt.
        att: AttemptId,
        /// The node.
        node: NodeId,
    },
    /// Reduced network: a client stops waiting for acquire replies altogether and
    /// fails the attempt (every timeout, or a majority of refusals, comes to this).
    GiveUp {
        /// The attempt.
        att: AttemptId,
    },
    /// Reduced network: a client stops waiting for the remaining commit replies and
    /// counts its commit quorum with what it has.
    StopCommitting {
        /// The attempt.
        att: AttemptId,
    },
    /// A client stops waiting for a commit reply.
    CommitTimeout {
        /// The attempt.
        att: AttemptId,
        /// The node.
        node: NodeId,
    },
    /// A lease holder releases: a release to every node (literal network only).
    ReleaseLease {
        /// The client.
        client: u8,
    },
    /// The lock key expires on a node, whoever holds it.
    Expire {
        /// The node.
        node: NodeId,
    },
    /// A node crashes and restarts without persistence: lock key and counter lost.
    Crash {
        /// The node.
        node: NodeId,
    },
    /// A node's counter disappears while its lock key stays.
    CounterLoss {
        /// The node.
        node: NodeId,
    },
    /// With clocks: a node's clock moves forward to `to`.
    Tick {
        /// The node.
        node: NodeId,
        /// The new reading.
        to: u64,
    },
    /// With clocks: a node deletes its counter, which its clock has reached (unless
    /// [`Mutation::RetireAheadOfClock`]): a release with nobody in line, or the
    /// counter's expiry (`fencelock_keep`).
    Retire {
        /// The node.
        node: NodeId,
    },
}

/// How an attempt's decision went, when a step made one with a choice in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Decision {
    /// No such decision in this step.
    None,
    /// The attempt had its commit quorum and handed out the lease.
    HandOut,
    /// The attempt had its commit quorum but the validity check failed.
    ValidityRanOut,
    /// Reduced network: a majority of grants is in, but the client has not acted on it
    /// yet; it reads on, and decides at a later reply (see `State::choose_majority`).
    ReadOn,
}

/// One transition's label: the event and the nondeterministic choices within it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Step {
    /// What happened.
    pub event: Event,
    /// The acquire found the counter missing and started it at this value.
    pub counter_start: Option<u64>,
    /// Reduced network: the node granted but the client never counts the grant (it
    /// had stopped waiting for this node just before the reply came).
    pub reply_lost: bool,
    /// How a decision within the step went.
    pub decision: Decision,
    /// At a verdict: the nodes (bit `i` for node `i`) whose grants the client took
    /// after the granting majority (see [`Slot::Extra`]); 0 otherwise.
    pub taken: u8,
}

impl Step {
    /// The step of `event` with no choice made in it.
    pub fn new(event: Event) -> Self {
        Step {
            event,
            counter_start: None,
            reply_lost: false,
            decision: Decision::None,
            taken: 0,
        }
    }
}

/// A property the checker verifies at every hand-out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Property {
    /// P1: no two leases handed out carry the same token.
    Unique,
    /// P2: a lease whose attempt sent its first acquire after another lease was handed
    /// out carries a larger token.
    Order,
}

impl fmt::Display for Property {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Property::Unique => "P1 (unique tokens)",
            Property::Order => "P2 (real-time order)",
        })
    }
}

/// What a hand-out looked like, for the coverage report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HandOut {
    /// The token.
    pub token: u64,
    /// Whether a commit round was needed (some grant was below the token).
    pub after_commit_round: bool,
    /// Whether P2's premise held (a lease was handed out before this attempt began).
    pub ordered: bool,
    /// Whether a node had lost its counter earlier in the run (crash, counter loss, or
    /// retirement).
    pub after_counter_loss: bool,
    /// Whether another lease had been handed out before (so P1 compared tokens).
    pub after_other_lease: bool,
    /// Whether a grant taken after the majority ([`Slot::Extra`]) counted for the
    /// commit quorum.
    pub with_extra: bool,
    /// Whether the commit round was skipped although a deciding grant was below the
    /// token: the grants at the token, some taken after the majority, made the
    /// majority.
    pub round_skipped: bool,
}

/// One successor of a state.
#[derive(Clone, Debug)]
pub struct Transition {
    /// Its label.
    pub step: Step,
    /// The state it leads to.
    pub state: State,
    /// When a lease was handed out: its details.
    pub hand_out: Option<HandOut>,
    /// When the hand-out broke a property.
    pub violation: Option<Property>,
}

impl State {
    /// The initial state: every key free, counters as configured, nothing in flight.
    pub fn initial(cfg: &Config) -> State {
        cfg.validate();
        // Numbers start at the base (see `Config::value_base`); for the usual rules
        // it is 0 and the configured counters are taken as they are.
        let base = cfg.value_base();
        let mut nodes = [Node::default(); MAX_NODES];
        for (i, n) in nodes.iter_mut().enumerate().take(usize::from(cfg.nodes)) {
            n.counter = cfg
                .initial_counters
                .get(i)
                .copied()
                .flatten()
                .map(|c| c + base);
            n.clock = cfg.clocks.get(i).map_or(0, |c| c + base);
        }
        let issued = nodes.iter().filter_map(|n| n.counter).max().unwrap_or(base);
        State {
            nodes,
            attempts: vec![Attempt::default(); usize::from(cfg.clients) * cfg.stride()],
            net: Vec::new(),
            crashes: 0,
            expiries: 0,
            counter_losses: 0,
            ticks: 0,
            retired: false,
            issued,
            leases: Vec::new(),
        }
    }

    /// The attempt's record.
    pub fn attempt(&self, cfg: &Config, att: AttemptId) -> &Attempt {
        &self.attempts[index(cfg, att)]
    }

    fn attempt_mut(&mut self, cfg: &Config, att: AttemptId) -> &mut Attempt {
        &mut self.attempts[index(cfg, att)]
    }

    /// A client's attempts, in order.
    pub fn client_attempts(&self, cfg: &Config, client: u8) -> &[Attempt] {
        let start = usize::from(client) * cfg.stride();
        &self.attempts[start..start + usize::from(cfg.budget(client))]
    }

    fn send(&mut self, msg: Msg) {
        let at = self.net.partition_point(|m| *m <= msg);
        self.net.insert(at, msg);
    }

    /// Queues a release, on the literal network (on the reduced one releases are
    /// subsumed by unbounded expiry).
    fn send_release(&mut self, cfg: &Config, node: NodeId, att: AttemptId) {
        if cfg.network == Network::Literal {
            self.send(Msg::Release { node, att });
        }
    }

    /// The value this attempt writes into the lock key.
    fn value_of(cfg: &Config, att: AttemptId) -> AttemptId {
        if cfg.mutation == Some(Mutation::ReuseValue) {
            AttemptId { seq: 0, ..att }
        } else {
            att
        }
    }

    /// The values a missing counter may start from now.
    fn start_values(&self, cfg: &Config) -> Vec<u64> {
        let mut values: Vec<u64> = match &cfg.counter_start {
            CounterStart::Relative(offsets) => offsets
                .iter()
                .map(|&o| self.issued.saturating_add_signed(o))
                .collect(),
            CounterStart::Fixed(v) => vec![*v],
            CounterStart::AboveLeases => vec![self.leases.last().copied().unwrap_or(0)],
        };
        values.sort_unstable();
        values.dedup();
        values
    }

    /// Lists every successor of this state.
    pub fn successors(&self, cfg: &Config) -> Vec<Transition> {
        let mut out = Vec::new();
        self.client_steps(cfg, &mut out);
        self.timeouts(cfg, &mut out);
        self.deliveries(cfg, &mut out);
        self.faults(cfg, &mut out);
        for t in &mut out {
            if cfg.network == Network::Literal {
                t.state.drop_dead_releases(cfg);
            }
            if cfg.normalize {
                t.state.normalize(cfg);
            }
        }
        out
    }

    /// Forgets what no longer matters about finished attempts (reduced network) and
    /// normalises the numbers (faithful start rules): see
    /// [`State::forget_finished`] and [`State::normalize_values`].
    pub fn normalize(&mut self, cfg: &Config) {
        if cfg.network == Network::Reduced {
            self.forget_finished(cfg);
        }
        self.normalize_values(cfg);
    }

    /// Applies `f` to every number in the state: counters, grants, tokens, leases,
    /// floors, `issued`, and with `clocks` the node clocks.
    fn map_values(&mut self, clocks: bool, f: impl Fn(u64) -> u64) {
        for n in &mut self.nodes {
            n.counter = n.counter.map(&f);
            if clocks {
                n.clock = f(n.clock);
            }
        }
        for a in &mut self.attempts {
            for s in &mut a.acquire {
                if let Slot::Granted(c) = s {
                    *c = f(*c);
                }
            }
            match &mut a.stage {
                Stage::Committing { token } | Stage::Leased { token } => *token = f(*token),
                _ => {}
            }
            a.floor = a.floor.map(&f);
        }
        for m in &mut self.net {
            match m {
                Msg::Commit { token, .. } => *token = f(*token),
                Msg::AcquireReply {
                    reply: Reply::Granted(c),
                    ..
                } => *c = f(*c),
                _ => {}
            }
        }
        for l in &mut self.leases {
            *l = f(*l);
        }
        self.issued = f(self.issued);
    }

    /// Under a start rule relative to `issued` (the faithful ones), the dynamics only
    /// compare numbers, copy them, take maxima, add 1 and add offsets to `issued`:
    /// they do not change if every number is shifted by the same amount, nor if a gap
    /// between two numbers that no counter can ever climb across (wider than every
    /// increment left in the run) is replaced by another such gap. So states are
    /// normalised: old lease tokens that no future token can reach are forgotten (the
    /// largest is kept for P2), the smallest number becomes [`Config::value_base`],
    /// and every wide gap gets the same width (see [`Config::gaps`]). This merges states that
    /// differ only in absolute values, without losing behaviours.
    pub fn normalize_values(&mut self, cfg: &Config) {
        let CounterStart::Relative(offsets) = &cfg.counter_start else {
            return;
        };
        // The smallest token any future hand-out can carry.
        let mut lowest = u64::MAX;
        let counter_may_go = self.crashes < cfg.crashes || self.counter_losses < cfg.counter_losses;
        for n in &self.nodes[..usize::from(cfg.nodes)] {
            match n.counter {
                Some(c) => lowest = lowest.min(c + 1),
                None if !cfg.has_clocks() => counter_may_go_or(&mut lowest, self.issued, offsets),
                None => {}
            }
            if cfg.has_clocks() {
                // A missing or retired counter starts at the clock, which only rises.
                lowest = lowest.min(n.clock + 1);
            }
        }
        if counter_may_go {
            counter_may_go_or(&mut lowest, self.issued, offsets);
        }
        for a in &self.attempts {
            for s in &a.acquire {
                if let Slot::Granted(c) = s {
                    lowest = lowest.min(*c);
                }
            }
            if let Stage::Committing { token } = a.stage {
                lowest = lowest.min(token);
            }
        }
        for m in &self.net {
            if let Msg::AcquireReply {
                reply: Reply::Granted(c),
                ..
            } = m
            {
                lowest = lowest.min(*c);
            }
        }
        if let Some(&top) = self.leases.last() {
            self.leases.retain(|&l| l >= lowest || l == top);
        }

        let mut values = self.values(cfg.has_clocks());
        values.sort_unstable();
        values.dedup();
        // new[k] for values[k]: shift to the base, one width for every wide gap.
        let (narrow, wide) = cfg.gaps();
        let mut new = Vec::with_capacity(values.len());
        let mut at = cfg.value_base();
        for (k, &v) in values.iter().enumerate() {
            if k > 0 {
                let gap = v - values[k - 1];
                at += if gap > narrow { wide } else { gap };
            }
            new.push(at);
        }
        if new == values {
            return;
        }
        self.map_values(cfg.has_clocks(), |v| match values.binary_search(&v) {
            Ok(k) => new[k],
            Err(_) => unreachable!("every value was collected"),
        });
    }

    /// Every number in the state (with repeats), the same places [`State::map_values`]
    /// visits (the clocks with `clocks`).
    fn values(&self, clocks: bool) -> Vec<u64> {
        let mut out: Vec<u64> = self.nodes.iter().filter_map(|n| n.counter).collect();
        if clocks {
            out.extend(self.nodes.iter().map(|n| n.clock));
        }
        for a in &self.attempts {
            out.extend(a.acquire.iter().filter_map(|s| match s {
                Slot::Granted(c) => Some(*c),
                _ => None,
            }));
            if let Stage::Committing { token } | Stage::Leased { token } = a.stage {
                out.push(token);
            }
            out.extend(a.floor);
        }
        out.extend(self.net.iter().filter_map(|m| match *m {
            Msg::Commit { token, .. } => Some(token),
            Msg::AcquireReply {
                reply: Reply::Granted(c),
                ..
            } => Some(c),
            _ => None,
        }));
        out.extend(&self.leases);
        out.push(self.issued);
        out
    }

    /// On the reduced network, forgets what no longer matters about attempts that are
    /// over (failed, or leased — a lease's release is subsumed by expiry):
    ///
    /// - a commit of theirs still in flight to a node that does not hold their value
    ///   can never apply (the value could only come back through their acquire on
    ///   that node, which already ran: commits go to granting nodes only), so it is
    ///   dropped;
    /// - their value on a node with no such commit in flight, and their acquires still
    ///   in flight, only ever act as "some value that is not the requester's" (an
    ///   attempt runs one acquire per node, so it never meets its own value again),
    ///   so they become [`AttemptId::OVER`];
    /// - their records become [`Stage::Ended`], since only "over" matters.
    ///
    /// This merges states that differ only in which finished attempt did what, without
    /// losing behaviours. Not applied under [`Mutation::ReuseValue`] (values repeat)
    /// or [`Mutation::CommitIgnoresHolder`] (commits apply whoever holds the key).
    pub fn forget_finished(&mut self, cfg: &Config) {
        self.forget_finished_except(cfg, &[]);
    }

    /// [`State::forget_finished`], except for the leases in `keep`, which stay told
    /// apart: the semaphore model ([`crate::sem`]) needs to know which attempt a key
    /// holds while that attempt's permit may still be valid.
    pub fn forget_finished_except(&mut self, cfg: &Config, keep: &[AttemptId]) {
        if matches!(
            cfg.mutation,
            Some(Mutation::ReuseValue | Mutation::CommitIgnoresHolder)
        ) {
            return;
        }
        let over = |s: &State, att: AttemptId| {
            att == AttemptId::OVER
                || (!keep.contains(&att)
                    && matches!(
                        s.attempt(cfg, att).stage,
                        Stage::Leased { .. } | Stage::Ended | Stage::Failed { .. }
                    ))
        };
        let nodes = self.nodes;
        let kept: Vec<bool> = self
            .net
            .iter()
            .map(|m| match *m {
                Msg::Commit { node, att, .. } => {
                    !over(self, att) || nodes[usize::from(node)].value == Some(att)
                }
                _ => true,
            })
            .collect();
        let mut kept = kept.into_iter();
        self.net.retain(|_| kept.next().unwrap_or(true));
        let mut renamed = false;
        for i in 0..usize::from(cfg.nodes) {
            if let Some(v) = self.nodes[i].value
                && v != AttemptId::OVER
                && over(self, v)
                && !self.net.iter().any(
                    |m| matches!(m, Msg::Commit { node, att, .. } if usize::from(*node) == i && *att == v),
                )
            {
                self.nodes[i].value = Some(AttemptId::OVER);
            }
        }
        let renames: Vec<bool> = self
            .net
            .iter()
            .map(|m| matches!(*m, Msg::Acquire { att, .. } if att != AttemptId::OVER && over(self, att)))
            .collect();
        for (m, rename) in self.net.iter_mut().zip(renames) {
            if let (Msg::Acquire { att, .. }, true) = (m, rename) {
                *att = AttemptId::OVER;
                renamed = true;
            }
        }
        if renamed {
            self.net.sort_unstable();
        }
        for (k, a) in self.attempts.iter_mut().enumerate() {
            if matches!(a.stage, Stage::Leased { .. } | Stage::Failed { .. })
                && !keep.contains(&attempt_id(cfg, k))
            {
                a.stage = Stage::Ended;
            }
        }
    }

    /// Drops every release that can no longer do anything: its node does not hold its
    /// value and no acquire that could set that value there is still in flight.
    /// Delivering it would be a no-op, so removing it merges states without losing
    /// behaviours.
    fn drop_dead_releases(&mut self, cfg: &Config) {
        let nodes = &self.nodes;
        let live: Vec<(NodeId, AttemptId)> = self
            .net
            .iter()
            .filter_map(|m| match *m {
                Msg::Acquire { node, att } => Some((node, Self::value_of(cfg, att))),
                _ => None,
            })
            .collect();
        self.net.retain(|m| match *m {
            Msg::Release { node, att } => {
                let value = Self::value_of(cfg, att);
                nodes[usize::from(node)].value == Some(value) || live.contains(&(node, value))
            }
            _ => true,
        });
    }

    /// Starting an attempt, releasing a lease.
    fn client_steps(&self, cfg: &Config, out: &mut Vec<Transition>) {
        let reduced = cfg.network == Network::Reduced;
        for client in 0..cfg.clients {
            let attempts = self.client_attempts(cfg, client);
            let started = attempts.iter().filter(|a| a.stage != Stage::Idle).count();
            let current = started.checked_sub(1).map(|k| {
                let att = AttemptId {
                    client,
                    seq: k as u8,
                };
                (att, attempts[k].stage)
            });
            let idle = match current {
                None => true,
                Some((_, Stage::Ended | Stage::Failed { .. })) => true,
                // On the reduced network a release does nothing that expiry does not.
                Some((_, Stage::Leased { .. })) => reduced,
                Some(_) => false,
            };
            if idle && started < usize::from(cfg.budget(client)) {
                let mut s = self.clone();
                let att = AttemptId {
                    client,
                    seq: started as u8,
                };
                let a = s.attempt_mut(cfg, att);
                a.stage = Stage::Acquiring;
                a.floor = self.leases.last().copied();
                for slot in a.acquire.iter_mut().take(usize::from(cfg.nodes)) {
                    *slot = Slot::Pending;
                }
                for node in 0..cfg.nodes {
                    s.send(Msg::Acquire { node, att });
                }
                if let Some((prev, Stage::Leased { .. })) = current {
                    s.attempt_mut(cfg, prev).stage = Stage::Ended;
                }
                push(out, Step::new(Event::Start { client }), s);
            }
            if let Some((att, Stage::Leased { .. })) = current
                && !reduced
            {
                let mut s = self.clone();
                s.attempt_mut(cfg, att).stage = Stage::Ended;
                for node in 0..cfg.nodes {
                    s.send_release(cfg, node, att);
                }
                push(out, Step::new(Event::ReleaseLease { client }), s);
            }
        }
    }

    /// A client stops waiting for one reply (literal network), or for all of them
    /// (reduced network).
    fn timeouts(&self, cfg: &Config, out: &mut Vec<Transition>) {
        if cfg.network == Network::Reduced {
            for (k, a) in self.attempts.iter().enumerate() {
                let att = attempt_id(cfg, k);
                let granted = a
                    .acquire
                    .iter()
                    .filter(|s| matches!(s, Slot::Granted(_)))
                    .count();
                match a.stage {
                    // With a majority of grants in (the client reads on), it does not
                    // give up: `FanOut::next` reads the replies that are in before it
                    // looks at the deadline.
                    Stage::Acquiring if granted >= cfg.quorum() => {}
                    Stage::Acquiring => {
                        let mut s = self.clone();
                        s.undo(cfg, att);
                        s.finish(cfg, att, Stage::Failed { after_grant: false });
                        push(out, Step::new(Event::GiveUp { att }), s);
                    }
                    Stage::Committing { .. } => {
                        let mut s = self.clone();
                        for c in &mut s.attempt_mut(cfg, att).commit {
                            if *c == CommitSlot::Pending {
                                *c = CommitSlot::Failed;
                            }
                        }
                        s.after_commit_reply(
                            cfg,
                            att,
                            Step::new(Event::StopCommitting { att }),
                            out,
                        );
                    }
                    _ => {}
                }
            }
            return;
        }
        for (k, a) in self.attempts.iter().enumerate() {
            let att = attempt_id(cfg, k);
            for (i, slot) in a.acquire.iter().enumerate() {
                if *slot != Slot::Pending {
                    continue;
                }
                let node = i as NodeId;
                let event = Event::AcquireTimeout { att, node };
                let mut s = self.clone();
                s.net.retain(
                    |m| !matches!(m, Msg::AcquireReply { node: n, att: x, .. } if *n == node && *x == att),
                );
                // Abandon: a release to that node, which it may run before or after
                // the late acquire, or never.
                s.send_release(cfg, node, att);
                if a.stage == Stage::Acquiring {
                    s.attempt_mut(cfg, att).acquire[i] = Slot::Failed;
                    s.after_acquire_reply(cfg, att, Step::new(event), out);
                } else {
                    s.attempt_mut(cfg, att).acquire[i] = Slot::Done;
                    push(out, Step::new(event), s);
                }
            }
            for (i, slot) in a.commit.iter().enumerate() {
                if *slot != CommitSlot::Pending {
                    continue;
                }
                let node = i as NodeId;
                let mut s = self.clone();
                s.net.retain(
                    |m| !matches!(m, Msg::CommitReply { node: n, att: x, .. } if *n == node && *x == att),
                );
                s.attempt_mut(cfg, att).commit[i] = CommitSlot::Failed;
                s.after_commit_reply(cfg, att, Step::new(Event::CommitTimeout { att, node }), out);
            }
        }
    }

    /// Every distinct message in flight may be delivered next.
    fn deliveries(&self, cfg: &Config, out: &mut Vec<Transition>) {
        for (k, msg) in self.net.iter().enumerate() {
            if k > 0 && self.net[k - 1] == *msg {
                continue; // a duplicate: same successor
            }
            let mut s = self.clone();
            s.net.remove(k);
            let step = Step::new(Event::Deliver(*msg));
            match *msg {
                Msg::Acquire { node, att } => s.run_acquire(cfg, node, att, step, out),
                Msg::Commit { node, att, token } => s.run_commit(cfg, node, att, token, step, out),
                Msg::Release { node, att } => {
                    let n = &mut s.nodes[usize::from(node)];
                    if n.value == Some(Self::value_of(cfg, att)) {
                        n.value = None;
                    }
                    push(out, step, s);
                }
                Msg::AcquireReply { node, att, reply } => {
                    s.receive_acquire_reply(cfg, node, att, reply, step, out)
                }
                Msg::CommitReply { node, att, ok } => {
                    s.receive_commit_reply(cfg, node, att, ok, step, out)
                }
            }
        }
    }

    /// Key expiry, crash with restart, counter loss; with clocks, clock moves and
    /// counter retirement.
    fn faults(&self, cfg: &Config, out: &mut Vec<Transition>) {
        if cfg.has_clocks() {
            self.clock_steps(cfg, out);
        }
        let unbounded_expiry = cfg.network == Network::Reduced;
        for (i, n) in self.nodes.iter().enumerate().take(usize::from(cfg.nodes)) {
            let node = i as NodeId;
            if n.value.is_some() && (unbounded_expiry || self.expiries < cfg.expiries) {
                let mut s = self.clone();
                if !unbounded_expiry {
                    s.expiries += 1;
                }
                s.nodes[i].value = None;
                push(out, Step::new(Event::Expire { node }), s);
            }
            if (n.value.is_some() || n.counter.is_some()) && self.crashes < cfg.crashes {
                let mut s = self.clone();
                s.crashes += 1;
                // With clocks, the restarted node's clock is where the start rule
                // says a restarted counter starts (the delayed-restart rule), or later.
                let clocks: Vec<u64> = if cfg.has_clocks() {
                    self.start_values(cfg)
                        .into_iter()
                        .map(|v| v.max(n.clock))
                        .collect()
                } else {
                    vec![0]
                };
                for clock in clocks {
                    let mut s = s.clone();
                    s.nodes[i] = Node {
                        clock,
                        ..Node::default()
                    };
                    push(out, Step::new(Event::Crash { node }), s);
                }
            }
            if n.value.is_some() && n.counter.is_some() && self.counter_losses < cfg.counter_losses
            {
                let mut s = self.clone();
                s.counter_losses += 1;
                s.nodes[i].counter = None;
                push(out, Step::new(Event::CounterLoss { node }), s);
            }
        }
    }

    /// With clocks: a clock moves forward (to a number of the state above it, or just
    /// above the largest counter ever held), or a node retires a counter its clock has
    /// reached.
    fn clock_steps(&self, cfg: &Config, out: &mut Vec<Transition>) {
        let mut targets = self.values(true);
        targets.push(self.issued + 1);
        targets.sort_unstable();
        targets.dedup();
        for (i, n) in self.nodes.iter().enumerate().take(usize::from(cfg.nodes)) {
            let node = i as NodeId;
            if self.ticks < cfg.ticks {
                for &to in targets.iter().filter(|&&v| v > n.clock) {
                    let mut s = self.clone();
                    s.ticks += 1;
                    s.nodes[i].clock = to;
                    push(out, Step::new(Event::Tick { node, to }), s);
                }
            }
            if let Some(c) = n.counter
                && (c <= n.clock || cfg.mutation == Some(Mutation::RetireAheadOfClock))
            {
                let mut s = self.clone();
                s.nodes[i].counter = None;
                s.retired = true;
                push(out, Step::new(Event::Retire { node }), s);
            }
        }
    }

    /// `acquire.lua` on one node, for one key: if the key is free or holds our value,
    /// set it and return `counter + 1` (a missing counter starts at the node's clock);
    /// otherwise answer "held".
    fn run_acquire(
        self,
        cfg: &Config,
        node: NodeId,
        att: AttemptId,
        step: Step,
        out: &mut Vec<Transition>,
    ) {
        let i = usize::from(node);
        let value = Self::value_of(cfg, att);
        let n = self.nodes[i];
        // Two finished attempts are both OVER but never the same attempt.
        if n.value.is_some() && (n.value != Some(value) || value == AttemptId::OVER) {
            let s = self;
            s.reply_acquire(cfg, node, att, Reply::Held, step, out);
            return;
        }
        let starts: Vec<(u64, Option<u64>)> = match n.counter {
            Some(c) => vec![(c, None)],
            None if cfg.has_clocks() => vec![(n.clock, Some(n.clock))],
            None => self
                .start_values(cfg)
                .into_iter()
                .map(|v| (v, Some(v)))
                .collect(),
        };
        for (base, counter_start) in starts {
            let mut s = self.clone();
            let c = base + 1;
            s.nodes[i] = Node {
                value: Some(value),
                counter: Some(c),
                clock: n.clock,
            };
            s.issued = s.issued.max(c);
            let step = Step {
                counter_start,
                ..step
            };
            s.reply_acquire(cfg, node, att, Reply::Granted(c), step, out);
        }
    }

    /// `commit.lua`: while the key holds our value, `counter = max(counter, token)`.
    fn run_commit(
        mut self,
        cfg: &Config,
        node: NodeId,
        att: AttemptId,
        token: u64,
        step: Step,
        out: &mut Vec<Transition>,
    ) {
        let i = usize::from(node);
        let value = Self::value_of(cfg, att);
        let n = &mut self.nodes[i];
        let ours = n.value == Some(value) || cfg.mutation == Some(Mutation::CommitIgnoresHolder);
        if ours {
            // A missing counter reads as the seed in commit.lua: the node's clock, or
            // (without clocks, where a missing counter's start is a free choice at
            // acquire) 0, the weakest reading.
            let missing = if cfg.has_clocks() { n.clock } else { 0 };
            let c = n.counter.unwrap_or(missing).max(token);
            n.counter = Some(c);
            self.issued = self.issued.max(c);
        }
        let a = self.attempt(cfg, att);
        let waiting =
            matches!(a.stage, Stage::Committing { .. }) && a.commit[i] == CommitSlot::Pending;
        match cfg.network {
            _ if !waiting => push(out, step, self),
            Network::Literal => {
                self.send(Msg::CommitReply {
                    node,
                    att,
                    ok: ours,
                });
                push(out, step, self);
            }
            Network::Reduced => self.receive_commit_reply(cfg, node, att, ours, step, out),
        }
    }

    /// Sends an acquire reply (literal network) or hands it to the client at once
    /// (reduced network), unless the attempt already stopped waiting for it.
    fn reply_acquire(
        mut self,
        cfg: &Config,
        node: NodeId,
        att: AttemptId,
        reply: Reply,
        step: Step,
        out: &mut Vec<Transition>,
    ) {
        if att == AttemptId::OVER
            || self.attempt(cfg, att).acquire[usize::from(node)] != Slot::Pending
        {
            push(out, step, self);
            return;
        }
        match cfg.network {
            Network::Literal => {
                self.send(Msg::AcquireReply { node, att, reply });
                push(out, step, self);
            }
            Network::Reduced => self.receive_acquire_reply(cfg, node, att, reply, step, out),
        }
    }

    /// The client handles an acquire reply: in the tally while the attempt is
    /// deciding, otherwise in `attempt()`'s background task, which releases a late
    /// grant only if the tally failed or the lease has ended.
    fn receive_acquire_reply(
        mut self,
        cfg: &Config,
        node: NodeId,
        att: AttemptId,
        reply: Reply,
        step: Step,
        out: &mut Vec<Transition>,
    ) {
        let i = usize::from(node);
        let a = self.attempt_mut(cfg, att);
        debug_assert_eq!(a.acquire[i], Slot::Pending, "stale replies are dropped");
        if a.stage == Stage::Acquiring && cfg.network == Network::Reduced {
            // Only grants matter to the reduced tally; a grant may also go uncounted.
            match reply {
                Reply::Held => {
                    a.acquire[i] = Slot::Done;
                    self.after_acquire_reply(cfg, att, step, out);
                }
                Reply::Granted(c) => {
                    let mut lost = self.clone();
                    lost.attempt_mut(cfg, att).acquire[i] = Slot::Done;
                    lost.after_acquire_reply(
                        cfg,
                        att,
                        Step {
                            reply_lost: true,
                            ..step
                        },
                        out,
                    );
                    self.attempt_mut(cfg, att).acquire[i] = Slot::Granted(c);
                    self.after_acquire_reply(cfg, att, step, out);
                }
            }
            return;
        }
        if a.stage == Stage::Acquiring {
            a.acquire[i] = match reply {
                Reply::Granted(c) => Slot::Granted(c),
                Reply::Held => Slot::Held,
            };
            self.after_acquire_reply(cfg, att, step, out);
            return;
        }
        a.acquire[i] = Slot::Done;
        let release = matches!(a.stage, Stage::Ended | Stage::Failed { after_grant: false });
        if matches!(reply, Reply::Granted(_)) && release {
            self.send_release(cfg, node, att);
        }
        push(out, step, self);
    }

    /// The client handles a commit reply.
    fn receive_commit_reply(
        mut self,
        cfg: &Config,
        node: NodeId,
        att: AttemptId,
        ok: bool,
        step: Step,
        out: &mut Vec<Transition>,
    ) {
        let slot = &mut self.attempt_mut(cfg, att).commit[usize::from(node)];
        debug_assert_eq!(*slot, CommitSlot::Pending, "stale replies are dropped");
        *slot = if ok {
            CommitSlot::Ok
        } else {
            CommitSlot::Failed
        };
        self.after_commit_reply(cfg, att, step, out);
    }

    /// The tally of `quorum.rs`: decide as soon as a majority granted or refused, or
    /// when nobody is left to answer. Then either fail (release the grants) or go on to
    /// the verdict (`State::take_ready_replies`, `State::choose_majority`).
    fn after_acquire_reply(
        mut self,
        cfg: &Config,
        att: AttemptId,
        step: Step,
        out: &mut Vec<Transition>,
    ) {
        let q = cfg.quorum();
        let a = *self.attempt(cfg, att);
        let slots = &a.acquire[..usize::from(cfg.nodes)];
        let count = |f: fn(&Slot) -> bool| slots.iter().filter(|s| f(s)).count();
        let granted = count(|s| matches!(s, Slot::Granted(_)));
        let held = count(|s| *s == Slot::Held);
        let pending = count(|s| *s == Slot::Pending);
        if granted >= q {
            match cfg.network {
                Network::Literal => self.take_ready_replies(cfg, att, step, out),
                Network::Reduced => self.choose_majority(cfg, att, pending > 0, step, out),
            }
        } else if pending == 0 || (held >= q && cfg.network == Network::Literal) {
            // Contended or unavailable: undo and let the caller retry. (The reduced
            // tally does not count refusals: there the client may give up at any
            // moment instead, which covers every moment a real failure happens.)
            self.undo(cfg, att);
            self.finish(cfg, att, Stage::Failed { after_grant: false });
            push(out, step, self);
        } else {
            push(out, step, self);
        }
    }

    /// Literal network, at the verdict (the reply just read made the granting
    /// majority): `attempt()` goes on taking the replies that are already in, without
    /// waiting (`FanOut::next_ready`). Which replies are in is the network's choice,
    /// so every subset of this attempt's grant replies still in flight is taken in
    /// one successor each (bit `i` of [`Step::taken`] for node `i`). A refusal taken
    /// there is the same as one read after the verdict, so only grants are chosen.
    fn take_ready_replies(
        self,
        cfg: &Config,
        att: AttemptId,
        step: Step,
        out: &mut Vec<Transition>,
    ) {
        let token = self.largest_grant(cfg, att);
        let ready: Vec<(NodeId, u64)> = self
            .net
            .iter()
            .filter_map(|m| match *m {
                Msg::AcquireReply {
                    node,
                    att: x,
                    reply: Reply::Granted(c),
                } if x == att => Some((node, c)),
                _ => None,
            })
            .collect();
        for mask in 0..1u32 << ready.len() {
            let mut s = self.clone();
            let mut taken = 0u8;
            for (k, &(node, c)) in ready.iter().enumerate() {
                if mask & (1 << k) == 0 {
                    continue;
                }
                s.net.retain(|m| {
                    !matches!(*m, Msg::AcquireReply { node: n, att: x, .. } if n == node && x == att)
                });
                s.attempt_mut(cfg, att).acquire[usize::from(node)] = Slot::Extra(c.cmp(&token));
                taken |= 1 << node;
            }
            s.decide(cfg, att, token, Step { taken, ..step }, out);
        }
    }

    /// Reduced network, with a majority of grants in: the reduced counterpart of
    /// `State::take_ready_replies`. Here a reply is read in the step its node runs
    /// the script, so the replies that are "already in" at the verdict are those of
    /// nodes that ran before it, and the verdict may come later than the majority:
    /// the client may read on (if a reply is still to come), and decide at any later
    /// reply. It decides with any majority of the grants it has as the deciding ones
    /// (the replies that were in at once are read in any order, and the verdict falls
    /// on the `q`-th grant read), and takes the others after it (bit `i` of
    /// [`Step::taken`] for node `i`).
    ///
    /// Every such behaviour is a real one: the client was slow to read, all these
    /// replies came in meanwhile, and it read the chosen majority first. And every
    /// real one is here: take the grants the real client used (the deciding ones and
    /// those taken after them); each ran before the verdict; read on until the last of
    /// them runs and decide there (a grant of another node that ran meanwhile but was
    /// read only after the verdict is a lost reply here, which keeps its key just as a
    /// late reply does). The verdict is then no later than the real one, as for every
    /// reply on this network ([`Network::Reduced`]).
    fn choose_majority(
        self,
        cfg: &Config,
        att: AttemptId,
        may_read_on: bool,
        step: Step,
        out: &mut Vec<Transition>,
    ) {
        let q = cfg.quorum();
        let grants: Vec<(usize, u64)> = self.attempt(cfg, att).acquire[..usize::from(cfg.nodes)]
            .iter()
            .enumerate()
            .filter_map(|(i, s)| match *s {
                Slot::Granted(c) => Some((i, c)),
                _ => None,
            })
            .collect();
        if may_read_on {
            push(
                out,
                Step {
                    decision: Decision::ReadOn,
                    ..step
                },
                self.clone(),
            );
        }
        for mask in 0..1u32 << grants.len() {
            if mask.count_ones() as usize != q {
                continue;
            }
            let deciding = |k: usize| mask & (1 << k) != 0;
            let token = grants
                .iter()
                .enumerate()
                .filter(|&(k, _)| deciding(k))
                .map(|(_, &(_, c))| c)
                .max()
                .unwrap_or(0);
            let mut s = self.clone();
            let mut taken = 0u8;
            for (k, &(i, c)) in grants.iter().enumerate() {
                if !deciding(k) {
                    s.attempt_mut(cfg, att).acquire[i] = Slot::Extra(c.cmp(&token));
                    taken |= 1 << i;
                }
            }
            s.decide(cfg, att, token, Step { taken, ..step }, out);
        }
    }

    /// The largest counter among the deciding grants: the token `T`.
    fn largest_grant(&self, cfg: &Config, att: AttemptId) -> u64 {
        self.attempt(cfg, att)
            .acquire
            .iter()
            .filter_map(|s| match s {
                Slot::Granted(c) => Some(*c),
                _ => None,
            })
            .max()
            .unwrap_or(0)
    }

    /// The verdict "granted", as `attempt()` takes it, with the deciding majority in
    /// [`Slot::Granted`] and the grants taken after it in [`Slot::Extra`]: `T` is the
    /// largest deciding grant; the nodes already at `T` — deciding or taken after —
    /// count for the commit quorum; the commit round goes to the deciding nodes below
    /// `T`, and is skipped when nobody is behind or when the nodes at `T` already make
    /// a majority. A grant taken after the majority off `T` counts for nothing.
    fn decide(
        mut self,
        cfg: &Config,
        att: AttemptId,
        token: u64,
        step: Step,
        out: &mut Vec<Transition>,
    ) {
        let a = self.attempt(cfg, att);
        let behind: Vec<usize> = a
            .acquire
            .iter()
            .enumerate()
            .filter(|(_, s)| matches!(s, Slot::Granted(c) if *c < token))
            .map(|(i, _)| i)
            .collect();
        let at_token = self.at_token(cfg, att, token);
        if behind.is_empty() || at_token >= cfg.quorum() {
            self.conclude(cfg, att, token, at_token, false, step, out);
            return;
        }
        if cfg.mutation == Some(Mutation::NoCommitRound) {
            self.conclude(cfg, att, token, cfg.quorum(), false, step, out);
            return;
        }
        let a = self.attempt_mut(cfg, att);
        a.stage = Stage::Committing { token };
        for &i in &behind {
            a.commit[i] = CommitSlot::Pending;
        }
        for i in behind {
            self.send(Msg::Commit {
                node: i as NodeId,
                att,
                token,
            });
        }
        push(out, step, self);
    }

    /// The nodes that count for the commit quorum without a commit: the grants at the
    /// token, deciding or taken after the majority ([`Slot::Extra`]; see
    /// [`counts_as_extra`] for the mutations that count more).
    fn at_token(&self, cfg: &Config, att: AttemptId, token: u64) -> usize {
        self.attempt(cfg, att)
            .acquire
            .iter()
            .filter(|s| **s == Slot::Granted(token) || counts_as_extra(cfg, s))
            .count()
    }

    /// After a commit reply or timeout: once none is pending, count the commit quorum.
    fn after_commit_reply(
        self,
        cfg: &Config,
        att: AttemptId,
        step: Step,
        out: &mut Vec<Transition>,
    ) {
        let a = self.attempt(cfg, att);
        let Stage::Committing { token } = a.stage else {
            unreachable!("commit replies are only read while committing")
        };
        if a.commit.contains(&CommitSlot::Pending) {
            push(out, step, self);
            return;
        }
        let grants = a
            .acquire
            .iter()
            .filter(|s| matches!(s, Slot::Granted(_)))
            .count();
        let committed = if cfg.mutation == Some(Mutation::IgnoreCommitReplies) {
            grants
        } else {
            self.at_token(cfg, att, token)
                + a.commit.iter().filter(|s| **s == CommitSlot::Ok).count()
        };
        self.conclude(cfg, att, token, committed, true, step, out);
    }

    /// Step 4 of the protocol: hand out the lease if a majority holds `counter ≥ T`
    /// with our value (and the validity check passes, a free choice); otherwise undo.
    /// The hand-out is where P1 and P2 are checked.
    #[allow(clippy::too_many_arguments)]
    fn conclude(
        self,
        cfg: &Config,
        att: AttemptId,
        token: u64,
        committed: usize,
        after_commit_round: bool,
        step: Step,
        out: &mut Vec<Transition>,
    ) {
        let fail = |mut s: State, decision: Decision, out: &mut Vec<Transition>| {
            s.undo(cfg, att);
            s.finish(cfg, att, Stage::Failed { after_grant: true });
            push(out, Step { decision, ..step }, s);
        };
        if committed < cfg.quorum() {
            fail(self, Decision::None, out);
            return;
        }
        if cfg.validity_may_run_out {
            fail(self.clone(), Decision::ValidityRanOut, out);
        }
        let mut s = self;
        let floor = s.attempt(cfg, att).floor;
        let violation = if s.leases.contains(&token) {
            Some(Property::Unique)
        } else if floor.is_some_and(|f| token <= f) {
            Some(Property::Order)
        } else {
            None
        };
        let after_other_lease = !s.leases.is_empty();
        let slots = s.attempt(cfg, att).acquire;
        let with_extra = slots.iter().any(|x| counts_as_extra(cfg, x));
        let round_skipped = !after_commit_round
            && slots
                .iter()
                .any(|x| matches!(x, Slot::Granted(c) if *c < token));
        let at = s.leases.partition_point(|&t| t <= token);
        s.leases.insert(at, token);
        s.finish(cfg, att, Stage::Leased { token });
        let hand_out = HandOut {
            token,
            after_commit_round,
            ordered: floor.is_some(),
            after_counter_loss: s.crashes > 0 || s.counter_losses > 0 || s.retired,
            after_other_lease,
            with_extra,
            round_skipped,
        };
        out.push(Transition {
            step: Step {
                decision: Decision::HandOut,
                ..step
            },
            state: s,
            hand_out: Some(hand_out),
            violation,
        });
    }

    /// Releases on every node that granted (`Locker::undo`), grants taken after the
    /// majority included.
    fn undo(&mut self, cfg: &Config, att: AttemptId) {
        let a = *self.attempt(cfg, att);
        for (i, slot) in a.acquire.iter().enumerate() {
            if matches!(slot, Slot::Granted(_) | Slot::Extra(_)) {
                self.send_release(cfg, i as NodeId, att);
            }
        }
    }

    /// Ends the attempt's decision. From now on only "is an acquire reply still
    /// pending" matters (for the background clean-up, which only sends releases), so
    /// everything else is normalised away, which lets equal futures merge. On the
    /// reduced network, where releases are subsumed, not even that matters.
    fn finish(&mut self, cfg: &Config, att: AttemptId, stage: Stage) {
        let reduced = cfg.network == Network::Reduced;
        let a = self.attempt_mut(cfg, att);
        a.stage = stage;
        a.floor = None;
        for s in &mut a.acquire {
            if *s != Slot::Pending || reduced {
                *s = Slot::Done;
            }
        }
        a.commit = [CommitSlot::None; MAX_NODES];
        self.net.retain(|m| match *m {
            Msg::CommitReply { att: x, .. } => x != att,
            Msg::AcquireReply { att: x, .. } => x != att || !reduced,
            _ => true,
        });
    }
}

/// Whether a grant taken after the majority counts for the commit quorum: at the
/// token, as `attempt()` counts it (and below it too under the negative control
/// [`Mutation::ExtraBelowTokenCounts`], above it under the experiment
/// [`Mutation::ExtraAboveTokenCounts`]).
fn counts_as_extra(cfg: &Config, slot: &Slot) -> bool {
    match *slot {
        Slot::Extra(Ordering::Equal) => true,
        Slot::Extra(Ordering::Less) => cfg.mutation == Some(Mutation::ExtraBelowTokenCounts),
        Slot::Extra(Ordering::Greater) => cfg.mutation == Some(Mutation::ExtraAboveTokenCounts),
        _ => false,
    }
}

/// Lowers `lowest` to the smallest token a counter started now could yield.
fn counter_may_go_or(lowest: &mut u64, issued: u64, offsets: &[i64]) {
    let smallest = offsets.iter().copied().min().unwrap_or(0);
    *lowest = (*lowest).min(issued.saturating_add_signed(smallest) + 1);
}

/// Where attempt `att` lives in [`State::attempts`].
fn index(cfg: &Config, att: AttemptId) -> usize {
    usize::from(att.client) * cfg.stride() + usize::from(att.seq)
}

/// The attempt stored at `k` in [`State::attempts`].
pub fn attempt_id(cfg: &Config, k: usize) -> AttemptId {
    let a = cfg.stride();
    AttemptId {
        client: (k / a) as u8,
        seq: (k % a) as u8,
    }
}

fn push(out: &mut Vec<Transition>, step: Step, state: State) {
    out.push(Transition {
        step,
        state,
        hand_out: None,
        violation: None,
    });
}
