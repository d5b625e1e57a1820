//! The semaphore's bound on **several nodes**: N slots × C clients × M nodes with the
//! lock's faults, small enough to explore completely (`docs/semaphore.md`, "Why at most
//! N"; `docs/fencing.md`, "Semaphores").
//!
//! [`crate::sem`] composes N copies of the full lock model — keys, counters, the commit
//! round, tokens — and is exhaustive on one node; with two slots, three clients and
//! three nodes it did not finish within 3 million states. The bound on *valid* permits
//! (P-slot, P-sem) does not depend on counters or tokens at all: it rests on the key
//! values alone (a valid lease's value stands on a majority; two majorities share a
//! node; a key holds one value). This module keeps exactly that part of the lock model
//! and drops the rest, which makes the multi-node semaphore small enough for a test.
//!
//! # What is modelled
//!
//! Per slot and node, the slot key's value: free, a client's current attempt on that
//! slot, or *over* (some attempt that is over, told apart from no other — as
//! [`crate::model::State::forget_finished`] does). Per slot and node, how many acquires
//! of attempts that are over are still in flight (they may land at any later moment on
//! a free key, or never). Per client: idle, trying one slot (per node: acquire in
//! flight, granted, or answered/lost), or holding a permit on one slot; and how many
//! acquires it has left. Steps, on the lock model's reduced network:
//!
//! - **begin**: an idle client starts an acquire at any slot (`acquire_with` starts at a
//!   random one), sending an acquire to every node;
//! - **deliver**: a node runs `acquire.lua` for a client: free → set to the client's
//!   value, the grant counted or its reply lost; held → refused. The tally decides as
//!   `quorum.rs` does: a majority of grants → the permit is handed out, or the attempt
//!   fails (its commit round failed, or its validity ran out: both free choices here);
//!   nobody left to answer → it fails;
//! - **give up**: a trying client stops waiting at any moment (timeouts, refusals); the
//!   attempt fails;
//! - a failed attempt is undone (its keys become *over*: a release is subsumed by
//!   expiry, as on the lock model's reduced network), and the client tries the next slot
//!   (`(slot + 1) mod N`) until it has tried all N, then the acquire fails;
//! - **release**: a holder releases at any moment (its validity running out is the same
//!   step: the permit stops counting);
//! - **expire**: any key, on any node, at any moment;
//! - **crash**: a node crashes and restarts empty (every slot's key on it lost), within
//!   a budget.
//!
//! **Validity** is the ghost of [`crate::sem`]: every copy of an attempt's key is set
//! after the attempt began, so it outlives the attempt's validity; when one of them
//! expires, or is lost in a crash (the delayed-restart rule: a restarted node rejoins
//! only after the longest TTL, so crash and restart are one step, at the restart), the
//! attempt's validity is over. A trying attempt then fails at once, and a holder's
//! permit stops counting at once (the client returns to idle; its keys become *over*).
//!
//! # Why this is enough (an over-approximation of the full model)
//!
//! Every behaviour of [`crate::sem`] (reduced network) maps to a behaviour here with the
//! same key values, the same holders, and at every moment *at least* the same valid
//! permits, so P-slot and P-sem holding here implies they hold there:
//!
//! - counters, tokens, `issued`, floors: no step of the full model reads them to decide
//!   a key's value; they decide only whether a commit round is needed and what it
//!   answers, i.e. whether an attempt that has its majority of grants ends in a
//!   hand-out or a failure — both are free choices here;
//! - the full model hands out after the commit round, here at the moment the majority
//!   is reached: the permit is valid here from an earlier moment, until the same event
//!   ends it;
//! - a failure (or the end of validity) that comes later there comes at once here; the
//!   client then starts its next slot earlier, but its acquires can be delivered as
//!   late as any there;
//! - a holder's acquires still in flight become acquires of an attempt that is over:
//!   they land with the same effect on other clients; only the invalidation by their
//!   key's expiry is dropped, which again only leaves more valid permits;
//! - a delivery of an over attempt's acquire onto a held key changes nothing, so it is
//!   not a step (the message stays in flight, which is at least as much behaviour).
//!
//! Tokens per slot are the lock model's: each slot is an ordinary lock key with its own
//! counter, and a slot's projection of a semaphore run is a run of the lock model (the
//! clients that try it start one attempt at a time; a crash empties the slot's node),
//! so the lock configurations check them, and [`crate::sem`] checks them composed on
//! one node.
//!
//! # Merging equivalent states
//!
//! States are packed into 128 bits and canonicalised under the renamings the system
//! allows: clients with equal budgets, nodes, and slot rotations (the next-slot order
//! `(slot + 1) mod N` is kept by a rotation; for N = 2 every renaming of slots is one).
//! Nodes are canonicalised by sorting their columns, so only the client and slot
//! renamings are enumerated. A counter-example is replayed from the initial state
//! without renaming before it is printed.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use crate::explore::FxBuild;
use crate::sem::{Holdings, SemProperty, render_steps, verdict};
use crate::symmetry::permutations;

/// The most nodes a configuration may have.
pub const MAX_NODES: usize = 5;
/// The most slots (permits).
pub const MAX_SLOTS: usize = 4;
/// The most clients.
pub const MAX_CLIENTS: usize = 5;

/// A negative control: one assumption or one piece of the design removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeysMutation {
    /// A crashed node rejoins at once, not after the longest TTL: a crash does not end
    /// the validity of the leases whose keys it lost.
    ImmediateRestart,
    /// A permit stays valid after one of its keys expired (validity not bounded by the
    /// keys' TTL, e.g. judged by a client's clock without the drift margin).
    IgnoreExpiry,
    /// A lease on half of the nodes (rounded down, at least one), not a majority.
    HalfQuorum,
}

/// How much of the lock model's key behaviour a run keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detail {
    /// All of it, as the lock model's reduced network has it: a finished attempt's
    /// keys stay (as *over*) until they expire; its acquires still in flight may land
    /// later; a node refuses an acquire on a held key; a grant's reply may be lost
    /// (the key set, the grant not counted); a majority may still end in a failure.
    Full,
    /// Only what can make a second permit valid: every key not held by a live
    /// attempt is free. Exact for P-slot and P-sem, by four dominations (each a
    /// simulation: every behaviour of [`Detail::Full`] is matched here step by step
    /// with the same live attempts, holders and keys of live attempts):
    ///
    /// - a key held by an attempt that is over only ever makes an acquire be refused;
    ///   a refusal only ever makes an attempt fail, which giving up does at any moment
    ///   anyway, and the refused acquire is matched by one that is never delivered. So
    ///   such a key is free here at once (it may expire at any moment there), and the
    ///   acquires of finished attempts, which could only set such keys, are dropped;
    /// - so a node never refuses here: an acquire waits while the key is held;
    /// - a grant whose reply is lost sets a key that counts for nobody: it only
    ///   refuses others (above) and, by expiring, ends its own attempt's validity,
    ///   which giving up matches; so it is matched by the acquire never delivered;
    /// - a majority that ends in a failure (commit round, validity) undoes its keys at
    ///   once: the same as giving up just before the last grant.
    ///
    /// Every behaviour here is also one of [`Detail::Full`] (with the expiries and
    /// losses made explicit), so a counter-example here is one there too.
    /// [`cross_check`] compares the two on small bounds.
    Reduced,
}

/// The bounds of one run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeysConfig {
    /// A name for reports.
    pub name: String,
    /// Nodes.
    pub nodes: u8,
    /// Slots: the number of permits `N` every client names.
    pub slots: u8,
    /// Per client, how many acquires it makes over the run.
    pub acquires: Vec<u8>,
    /// Node crashes (each a restart empty).
    pub crashes: u8,
    /// A negative control, or `None` for the design as written.
    pub mutation: Option<KeysMutation>,
    /// How much of the lock model's key behaviour is kept ([`Detail`]).
    pub detail: Detail,
    /// Whether renamed states are merged.
    pub symmetry: bool,
    /// Stop (incomplete) after this many states.
    pub max_states: usize,
}

impl KeysConfig {
    /// `slots` permits on `nodes` nodes, one client per entry of `acquires`, one crash.
    pub fn new(nodes: u8, slots: u8, acquires: Vec<u8>) -> Self {
        KeysConfig {
            name: format!("{slots} slots on {nodes} nodes"),
            nodes,
            slots,
            acquires,
            crashes: 1,
            mutation: None,
            detail: Detail::Reduced,
            symmetry: true,
            max_states: 30_000_000,
        }
    }

    /// Renames the configuration.
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Sets the crash budget.
    pub fn crashes(mut self, crashes: u8) -> Self {
        self.crashes = crashes;
        self
    }

    /// Sets a negative control.
    pub fn mutation(mut self, mutation: KeysMutation) -> Self {
        self.mutation = Some(mutation);
        self
    }

    /// Sets the detail ([`Detail`]).
    pub fn detail(mut self, detail: Detail) -> Self {
        self.detail = detail;
        self
    }

    /// Turns the merging of renamed states on or off.
    pub fn symmetry(mut self, on: bool) -> Self {
        self.symmetry = on;
        self
    }

    /// Sets the state limit.
    pub fn max_states(mut self, max: usize) -> Self {
        self.max_states = max;
        self
    }

    /// Whether this is the design as written (no negative control).
    pub fn is_faithful(&self) -> bool {
        self.mutation.is_none()
    }

    /// Grants a lease needs.
    pub fn quorum(&self) -> usize {
        let m = usize::from(self.nodes);
        match self.mutation {
            Some(KeysMutation::HalfQuorum) => (m / 2).max(1),
            _ => m / 2 + 1,
        }
    }

    fn clients(&self) -> usize {
        self.acquires.len()
    }

    fn layout(&self) -> Layout {
        let bits = |max: u32| 32 - max.leading_zeros();
        let c = self.clients() as u32;
        let s = u32::from(self.slots);
        let total_acquires: u32 = self.acquires.iter().map(|&a| u32::from(a)).sum();
        let most_acquires = self.acquires.iter().copied().max().unwrap_or(0);
        let l = Layout {
            slot: bits(s - 1),
            tried: bits(s),
            left: bits(u32::from(most_acquires)),
            crashes: bits(u32::from(self.crashes)),
            key: bits(c + 1),
            stale: bits(total_acquires),
            total: 0,
        };
        let client = 2 + l.slot + l.tried + l.left;
        let column = s * (l.key + l.stale) + c * 2;
        Layout {
            total: c * client + l.crashes + u32::from(self.nodes) * column,
            ..l
        }
    }

    fn validate(&self) {
        assert!(
            (1..=MAX_NODES as u8).contains(&self.nodes),
            "nodes must be 1 to {MAX_NODES}"
        );
        assert!(
            (1..=MAX_SLOTS as u8).contains(&self.slots),
            "slots must be 1 to {MAX_SLOTS}"
        );
        assert!(
            (1..=MAX_CLIENTS).contains(&self.clients()),
            "clients must be 1 to {MAX_CLIENTS}"
        );
        assert!(
            self.layout().total <= 128,
            "bounds too large for a 128-bit state"
        );
    }
}

impl fmt::Display for KeysConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: slots={} nodes={} clients={} acquires={:?} crashes={} expiries=unbounded \
             network=reduced detail={:?}",
            self.name,
            self.slots,
            self.nodes,
            self.clients(),
            self.acquires,
            self.crashes,
            self.detail
        )?;
        if let Some(m) = self.mutation {
            write!(f, " MUTATION={m:?}")?;
        }
        Ok(())
    }
}

/// Field widths of the packed state, in bits.
#[derive(Clone, Copy, Debug)]
struct Layout {
    slot: u32,
    tried: u32,
    left: u32,
    crashes: u32,
    key: u32,
    stale: u32,
    total: u32,
}

/// Where a client is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Phase {
    /// No acquire in progress, no permit.
    #[default]
    Idle,
    /// Trying one slot with one attempt.
    Trying,
    /// Holding a valid permit.
    Holding,
}

/// What a trying attempt knows about its acquire on one node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Ack {
    /// Answered (refused, or a reply lost), or not sent.
    #[default]
    Done,
    /// In flight.
    Pending,
    /// Granted, and counted in the tally.
    Granted,
}

/// One client.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Client {
    /// Where it is.
    pub phase: Phase,
    /// The slot it tries or holds (0 when idle).
    pub slot: u8,
    /// Slots tried in this acquire, the current one included (0 unless trying).
    pub tried: u8,
    /// Acquires left.
    pub left: u8,
    /// Per node, its acquire (all [`Ack::Done`] unless trying).
    pub acks: [Ack; MAX_NODES],
}

/// A key's value: free.
pub const FREE: u8 = 0;
/// A key's value: some attempt that is over.
pub const OVER: u8 = 1;

/// The whole system.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KState {
    /// Per slot and node, the key: [`FREE`], [`OVER`], or `2 + client` (that client's
    /// current attempt on the slot).
    pub keys: [[u8; MAX_NODES]; MAX_SLOTS],
    /// Per slot and node, acquires of attempts that are over still in flight.
    pub stale: [[u8; MAX_NODES]; MAX_SLOTS],
    /// Per client.
    pub clients: [Client; MAX_CLIENTS],
    /// Crashes so far.
    pub crashes: u8,
}

/// One transition's label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KEvent {
    /// A client begins an acquire at `slot`.
    Begin {
        /// The client.
        client: u8,
        /// The first slot it tries.
        slot: u8,
    },
    /// A node runs a client's acquire on the slot it tries.
    Deliver {
        /// The client.
        client: u8,
        /// The node.
        node: u8,
        /// What happened.
        result: Delivery,
    },
    /// An acquire of an attempt that is over lands on a free key.
    Stale {
        /// The slot.
        slot: u8,
        /// The node.
        node: u8,
    },
    /// A trying client stops waiting; the attempt fails.
    GiveUp {
        /// The client.
        client: u8,
    },
    /// A holder releases (or its validity runs out).
    Release {
        /// The client.
        client: u8,
    },
    /// A key expires.
    Expire {
        /// The slot.
        slot: u8,
        /// The node.
        node: u8,
    },
    /// A node crashes and restarts empty.
    Crash {
        /// The node.
        node: u8,
    },
}

/// What a delivered acquire did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Refused: the key was held.
    Refused,
    /// Granted, the reply lost (the key is set; the tally does not count it).
    ReplyLost,
    /// Granted and counted; the tally has no majority yet.
    Granted,
    /// Granted, the majority reached: the permit is handed out.
    HandOut,
    /// Granted, the majority reached, but the attempt fails (commit round or validity).
    MajorityFailed,
    /// The last answer, and no majority: the attempt fails.
    Failed,
}

impl fmt::Display for KEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            KEvent::Begin { client, slot } => {
                write!(f, "c{client} begins an acquire at slot {slot}")
            }
            KEvent::Deliver {
                client,
                node,
                result,
            } => write!(f, "n{node} runs c{client}'s acquire: {result:?}"),
            KEvent::Stale { slot, node } => {
                write!(
                    f,
                    "n{node} runs a stale acquire on slot {slot} (key set, over)"
                )
            }
            KEvent::GiveUp { client } => write!(f, "c{client} gives up its attempt"),
            KEvent::Release { client } => write!(f, "c{client} releases its permit"),
            KEvent::Expire { slot, node } => write!(f, "slot {slot}'s key expires on n{node}"),
            KEvent::Crash { node } => write!(f, "n{node} crashes and restarts empty"),
        }
    }
}

/// A renaming of clients and a rotation of slots (nodes are sorted, not enumerated).
#[derive(Clone, Debug)]
struct Renaming {
    /// `to[old] = new`.
    to: Vec<u8>,
    /// `from[new] = old`.
    from: Vec<u8>,
    /// New slot = (old + rotate) mod N.
    rotate: u8,
}

struct Writer {
    acc: u128,
    bits: u32,
}

impl Writer {
    fn put(&mut self, width: u32, v: u64) {
        debug_assert!(
            width == 64 || v < (1u64 << width),
            "{v} does not fit {width} bits"
        );
        if width > 0 {
            self.acc = (self.acc << width) | u128::from(v);
            self.bits += width;
        }
    }
}

struct Reader {
    word: u128,
    left: u32,
}

impl Reader {
    fn get(&mut self, width: u32) -> u8 {
        if width == 0 {
            return 0;
        }
        self.left -= width;
        ((self.word >> self.left) & ((1u128 << width) - 1)) as u8
    }
}

/// Packs and canonicalises states.
struct Codec {
    cfg: KeysConfig,
    layout: Layout,
    renamings: Vec<Renaming>,
}

impl Codec {
    fn new(cfg: &KeysConfig) -> Codec {
        let c = cfg.clients();
        let renamings = if cfg.symmetry {
            let mut out = Vec::new();
            for to in permutations(c as u8) {
                // Only clients with equal budgets are interchangeable.
                if (0..c).any(|old| cfg.acquires[old] != cfg.acquires[usize::from(to[old])]) {
                    continue;
                }
                let mut from = vec![0; c];
                for (old, &new) in to.iter().enumerate() {
                    from[usize::from(new)] = old as u8;
                }
                for rotate in 0..cfg.slots {
                    out.push(Renaming {
                        to: to.clone(),
                        from: from.clone(),
                        rotate,
                    });
                }
            }
            out
        } else {
            let id: Vec<u8> = (0..c as u8).collect();
            vec![Renaming {
                to: id.clone(),
                from: id,
                rotate: 0,
            }]
        };
        Codec {
            cfg: cfg.clone(),
            layout: cfg.layout(),
            renamings,
        }
    }

    /// The state renamed by `r`, packed, nodes sorted (when merging renamings) or kept.
    fn encode_with(&self, s: &KState, r: &Renaming) -> u128 {
        let l = self.layout;
        let n_slots = usize::from(self.cfg.slots);
        let c = self.cfg.clients();
        let mut w = Writer { acc: 0, bits: 0 };
        for new in 0..c {
            let cl = &s.clients[usize::from(r.from[new])];
            let phase = match cl.phase {
                Phase::Idle => 0,
                Phase::Trying => 1,
                Phase::Holding => 2,
            };
            w.put(2, phase);
            let slot = if cl.phase == Phase::Idle {
                0
            } else {
                (cl.slot + r.rotate) % self.cfg.slots
            };
            w.put(l.slot, u64::from(slot));
            w.put(l.tried, u64::from(cl.tried));
            w.put(l.left, u64::from(cl.left));
        }
        w.put(l.crashes, u64::from(s.crashes));
        let col_bits = n_slots as u32 * (l.key + l.stale) + c as u32 * 2;
        let mut cols = [0u64; MAX_NODES];
        let nodes = usize::from(self.cfg.nodes);
        for (n, col) in cols.iter_mut().enumerate().take(nodes) {
            let mut cw = Writer { acc: 0, bits: 0 };
            for new_slot in 0..n_slots {
                let old_slot = (new_slot + n_slots - usize::from(r.rotate)) % n_slots;
                let k = s.keys[old_slot][n];
                let k = if k >= 2 {
                    2 + r.to[usize::from(k - 2)]
                } else {
                    k
                };
                cw.put(l.key, u64::from(k));
                cw.put(l.stale, u64::from(s.stale[old_slot][n]));
            }
            for new in 0..c {
                let ack = match s.clients[usize::from(r.from[new])].acks[n] {
                    Ack::Done => 0,
                    Ack::Pending => 1,
                    Ack::Granted => 2,
                };
                cw.put(2, ack);
            }
            *col = cw.acc as u64;
        }
        if self.cfg.symmetry {
            cols[..nodes].sort_unstable();
        }
        for &col in &cols[..nodes] {
            w.put(col_bits, col);
        }
        debug_assert_eq!(w.bits, l.total);
        w.acc
    }

    /// The canonical packed form: the smallest over every renaming.
    fn key(&self, s: &KState) -> u128 {
        self.renamings
            .iter()
            .map(|r| self.encode_with(s, r))
            .min()
            .unwrap_or(0)
    }

    /// Unpacks a packed state (the state as named in its packed form).
    fn decode(&self, word: u128) -> KState {
        let l = self.layout;
        let c = self.cfg.clients();
        let mut r = Reader {
            word,
            left: l.total,
        };
        let mut s = KState::empty();
        for cl in s.clients.iter_mut().take(c) {
            cl.phase = match r.get(2) {
                0 => Phase::Idle,
                1 => Phase::Trying,
                _ => Phase::Holding,
            };
            cl.slot = r.get(l.slot);
            cl.tried = r.get(l.tried);
            cl.left = r.get(l.left);
        }
        s.crashes = r.get(l.crashes);
        for n in 0..usize::from(self.cfg.nodes) {
            for slot in 0..usize::from(self.cfg.slots) {
                s.keys[slot][n] = r.get(l.key);
                s.stale[slot][n] = r.get(l.stale);
            }
            for cl in s.clients.iter_mut().take(c) {
                cl.acks[n] = match r.get(2) {
                    0 => Ack::Done,
                    1 => Ack::Pending,
                    _ => Ack::Granted,
                };
            }
        }
        s
    }
}

impl KState {
    fn empty() -> KState {
        KState {
            keys: [[FREE; MAX_NODES]; MAX_SLOTS],
            stale: [[0; MAX_NODES]; MAX_SLOTS],
            clients: [Client::default(); MAX_CLIENTS],
            crashes: 0,
        }
    }

    /// The initial state: every key free, nothing in flight, every client idle.
    ///
    /// # Panics
    ///
    /// If the bounds are out of range (see [`check_keys`]).
    pub fn initial(cfg: &KeysConfig) -> KState {
        cfg.validate();
        let mut s = KState::empty();
        for (cl, &a) in s.clients.iter_mut().zip(&cfg.acquires) {
            cl.left = a;
        }
        s
    }

    /// The holders of valid permits: `(client, slot)`.
    pub fn holders(&self, cfg: &KeysConfig) -> Vec<(u8, u8)> {
        self.clients[..cfg.clients()]
            .iter()
            .enumerate()
            .filter(|(_, cl)| cl.phase == Phase::Holding)
            .map(|(c, cl)| (c as u8, cl.slot))
            .collect()
    }

    /// P-slot and P-sem.
    pub fn violation(&self, cfg: &KeysConfig) -> Option<SemProperty> {
        let holders = self.holders(cfg);
        for (k, &(_, s)) in holders.iter().enumerate() {
            if holders[..k].iter().any(|&(_, t)| t == s) {
                return Some(SemProperty::SlotShared);
            }
        }
        let n = holders.len() as u8;
        (n > cfg.slots).then_some(SemProperty::TooManyPermits {
            valid: n,
            bound: cfg.slots,
        })
    }

    fn start(&mut self, cfg: &KeysConfig, c: usize, slot: u8, tried: u8) {
        let cl = &mut self.clients[c];
        cl.phase = Phase::Trying;
        cl.slot = slot;
        cl.tried = tried;
        for a in cl.acks.iter_mut().take(usize::from(cfg.nodes)) {
            *a = Ack::Pending;
        }
    }

    /// The client's current attempt is over: its keys become [`OVER`], its acquires in
    /// flight become stale ones.
    fn end_attempt(&mut self, cfg: &KeysConfig, c: usize) {
        let slot = usize::from(self.clients[c].slot);
        let value = 2 + c as u8;
        let full = cfg.detail == Detail::Full;
        for n in 0..usize::from(cfg.nodes) {
            if self.keys[slot][n] == value {
                self.keys[slot][n] = if full { OVER } else { FREE };
            }
            if self.clients[c].acks[n] == Ack::Pending && full {
                self.stale[slot][n] += 1;
            }
            self.clients[c].acks[n] = Ack::Done;
        }
    }

    /// The attempt failed: undo, then the next slot, or the acquire fails.
    fn fail(&mut self, cfg: &KeysConfig, c: usize) {
        self.end_attempt(cfg, c);
        let cl = self.clients[c];
        if cl.tried < cfg.slots {
            self.start(cfg, c, (cl.slot + 1) % cfg.slots, cl.tried + 1);
        } else {
            self.clients[c] = Client {
                left: cl.left,
                ..Client::default()
            };
        }
    }

    /// The permit is no longer held (released, or its validity is over).
    fn end_permit(&mut self, cfg: &KeysConfig, c: usize) {
        self.end_attempt(cfg, c);
        let left = self.clients[c].left;
        self.clients[c] = Client {
            left,
            ..Client::default()
        };
    }

    /// The permit is handed out.
    fn hand_out(&mut self, cfg: &KeysConfig, c: usize) {
        let slot = usize::from(self.clients[c].slot);
        for n in 0..usize::from(cfg.nodes) {
            if self.clients[c].acks[n] == Ack::Pending && cfg.detail == Detail::Full {
                self.stale[slot][n] += 1;
            }
            self.clients[c].acks[n] = Ack::Done;
        }
        self.clients[c].phase = Phase::Holding;
        self.clients[c].tried = 0;
    }

    /// A key is gone (expired, or lost in a crash); with `ends_validity`, so is the
    /// validity of the attempt whose value it held.
    fn lose_key(&mut self, cfg: &KeysConfig, slot: usize, n: usize, ends_validity: bool) {
        let v = self.keys[slot][n];
        self.keys[slot][n] = FREE;
        if v < 2 || !ends_validity {
            return;
        }
        let c = usize::from(v - 2);
        debug_assert_eq!(usize::from(self.clients[c].slot), slot);
        match self.clients[c].phase {
            Phase::Trying => self.fail(cfg, c),
            Phase::Holding => self.end_permit(cfg, c),
            Phase::Idle => unreachable!("an idle client's keys are over"),
        }
    }

    /// Every successor: its label, the state, whether it handed out a permit.
    pub fn successors(&self, cfg: &KeysConfig, out: &mut Vec<(KEvent, KState, bool)>) {
        let nodes = usize::from(cfg.nodes);
        let q = cfg.quorum();
        for c in 0..cfg.clients() {
            let client = c as u8;
            let cl = self.clients[c];
            match cl.phase {
                Phase::Idle if cl.left > 0 => {
                    for slot in 0..cfg.slots {
                        let mut s = *self;
                        s.clients[c].left -= 1;
                        s.start(cfg, c, slot, 1);
                        out.push((KEvent::Begin { client, slot }, s, false));
                    }
                }
                Phase::Idle => {}
                Phase::Trying => {
                    let mut s = *self;
                    s.fail(cfg, c);
                    out.push((KEvent::GiveUp { client }, s, false));
                    let slot = usize::from(cl.slot);
                    for n in 0..nodes {
                        if cl.acks[n] != Ack::Pending {
                            continue;
                        }
                        let node = n as u8;
                        let mut s = *self;
                        s.clients[c].acks[n] = Ack::Done;
                        let ev = |result| KEvent::Deliver {
                            client,
                            node,
                            result,
                        };
                        let full = cfg.detail == Detail::Full;
                        if s.keys[slot][n] != FREE {
                            if full {
                                s.tally(cfg, c, q, ev, Delivery::Refused, out);
                            }
                            continue;
                        }
                        s.keys[slot][n] = 2 + client;
                        if full {
                            s.tally(cfg, c, q, ev, Delivery::ReplyLost, out);
                        }
                        s.clients[c].acks[n] = Ack::Granted;
                        s.tally(cfg, c, q, ev, Delivery::Granted, out);
                    }
                }
                Phase::Holding => {
                    let mut s = *self;
                    s.end_permit(cfg, c);
                    out.push((KEvent::Release { client }, s, false));
                }
            }
        }
        for slot in 0..usize::from(cfg.slots) {
            for n in 0..nodes {
                let (slot8, node) = (slot as u8, n as u8);
                if self.keys[slot][n] == FREE {
                    if self.stale[slot][n] > 0 {
                        let mut s = *self;
                        s.stale[slot][n] -= 1;
                        s.keys[slot][n] = OVER;
                        out.push((KEvent::Stale { slot: slot8, node }, s, false));
                    }
                } else {
                    let mut s = *self;
                    let ends = cfg.mutation != Some(KeysMutation::IgnoreExpiry);
                    s.lose_key(cfg, slot, n, ends);
                    out.push((KEvent::Expire { slot: slot8, node }, s, false));
                }
            }
        }
        if self.crashes < cfg.crashes {
            for n in 0..nodes {
                // A crash of a node holding no key changes nothing but the budget.
                if (0..usize::from(cfg.slots)).all(|slot| self.keys[slot][n] == FREE) {
                    continue;
                }
                let mut s = *self;
                s.crashes += 1;
                let ends = cfg.mutation != Some(KeysMutation::ImmediateRestart);
                for slot in 0..usize::from(cfg.slots) {
                    s.lose_key(cfg, slot, n, ends);
                }
                out.push((KEvent::Crash { node: n as u8 }, s, false));
            }
        }
    }

    /// After an answer: the tally of `quorum.rs`.
    fn tally(
        self,
        cfg: &KeysConfig,
        c: usize,
        q: usize,
        ev: impl Fn(Delivery) -> KEvent,
        result: Delivery,
        out: &mut Vec<(KEvent, KState, bool)>,
    ) {
        let acks = &self.clients[c].acks[..usize::from(cfg.nodes)];
        let granted = acks.iter().filter(|&&a| a == Ack::Granted).count();
        let pending = acks.iter().filter(|&&a| a == Ack::Pending).count();
        if granted >= q {
            let mut won = self;
            won.hand_out(cfg, c);
            out.push((ev(Delivery::HandOut), won, true));
            if cfg.detail == Detail::Full {
                let mut lost = self;
                lost.fail(cfg, c);
                out.push((ev(Delivery::MajorityFailed), lost, false));
            }
        } else if pending == 0 {
            let mut s = self;
            s.fail(cfg, c);
            out.push((ev(Delivery::Failed), s, false));
        } else {
            out.push((ev(result), self, false));
        }
    }
}

/// What a run found.
#[derive(Clone, Debug)]
pub struct KeysOutcome {
    /// The configuration.
    pub config: KeysConfig,
    /// Distinct states reached (after merging renamings).
    pub states: usize,
    /// Transitions followed.
    pub transitions: u64,
    /// BFS depth.
    pub depth: usize,
    /// Wall time.
    pub elapsed: Duration,
    /// Whether every reachable state was explored.
    pub complete: bool,
    /// Permit hand-outs seen.
    pub hand_outs: u64,
    /// Hand-outs after a crash.
    pub hand_outs_after_crash: u64,
    /// The most valid permits seen at once (evidence that a pass is not vacuous).
    pub most_valid: u8,
    /// The first (shortest) counter-example, replayed without renaming: the property
    /// and the steps to it.
    pub counterexample: Option<(SemProperty, Vec<KEvent>)>,
}

impl KeysOutcome {
    /// Whether the run explored everything and found nothing.
    pub fn passed(&self) -> bool {
        self.complete && self.counterexample.is_none()
    }

    /// One line for reports.
    pub fn summary(&self) -> String {
        let verdict = verdict(&self.counterexample, self.complete);
        format!(
            "{}\n  {verdict}: {} states, {} transitions, depth {}, {:.2?}; {} permit \
             hand-outs ({} after a crash), at most {} valid permits at once",
            self.config,
            self.states,
            self.transitions,
            self.depth,
            self.elapsed,
            self.hand_outs,
            self.hand_outs_after_crash,
            self.most_valid
        )
    }

    /// The counter-example's steps, one a line.
    pub fn render(&self) -> String {
        render_steps(&self.counterexample, KEvent::to_string)
    }
}

/// Explores every state reachable under `cfg` (breadth-first, so a counter-example is
/// a shortest one), stopping at the first violation of P-slot or P-sem.
///
/// # Panics
///
/// If the bounds are out of range (more than [`MAX_NODES`] nodes, [`MAX_SLOTS`] slots or
/// [`MAX_CLIENTS`] clients, or too large to pack a state into 128 bits).
pub fn check_keys(cfg: &KeysConfig) -> KeysOutcome {
    let started = Instant::now();
    let codec = Codec::new(cfg);
    let progress = std::env::var_os("FENCELOCK_MODEL_PROGRESS").is_some();
    let init = KState::initial(cfg);
    let root = codec.key(&init);
    // Per state id: its parent's id and its packed canonical form.
    let mut parents: Vec<u32> = vec![0];
    let mut packed: Vec<u128> = vec![root];
    let mut seen: HashMap<u128, u32, FxBuild> = HashMap::default();
    seen.insert(root, 0);
    let mut queue: VecDeque<(u32, u32)> = VecDeque::new();
    queue.push_back((0, 0));
    let mut out = Vec::new();
    let mut transitions = 0u64;
    let mut hand_outs = 0u64;
    let mut hand_outs_after_crash = 0u64;
    let mut most_valid = 0u8;
    let mut depth = 0u32;
    let mut complete = true;
    let mut found: Option<(SemProperty, u32)> = None;
    'search: while let Some((id, d)) = queue.pop_front() {
        depth = depth.max(d);
        let state = codec.decode(packed[id as usize]);
        out.clear();
        state.successors(cfg, &mut out);
        for (_, next, hand_out) in &out {
            transitions += 1;
            if *hand_out {
                hand_outs += 1;
                hand_outs_after_crash += u64::from(next.crashes > 0);
            }
            if let Some(p) = next.violation(cfg) {
                found = Some((p, id));
                complete = false;
                break 'search;
            }
            most_valid = most_valid.max(next.holders(cfg).len() as u8);
            let key = codec.key(next);
            if seen.contains_key(&key) {
                continue;
            }
            if seen.len() >= cfg.max_states {
                complete = false;
                break 'search;
            }
            let n = u32::try_from(packed.len()).expect("fewer than 2^32 states");
            if progress && n % 1_000_000 == 0 {
                eprintln!(
                    "  ... {n} states, depth {d}, queue {}, {:.1?}",
                    queue.len(),
                    started.elapsed()
                );
            }
            seen.insert(key, n);
            parents.push(id);
            packed.push(key);
            queue.push_back((n, d + 1));
        }
    }
    let counterexample = found.map(|(p, id)| {
        let mut path = vec![id];
        let mut at = id;
        while at != 0 {
            at = parents[at as usize];
            path.push(at);
        }
        path.reverse();
        (p, replay(cfg, &codec, &init, &path, &packed))
    });
    KeysOutcome {
        config: cfg.clone(),
        states: seen.len(),
        transitions,
        depth: depth as usize,
        elapsed: started.elapsed(),
        complete,
        hand_outs,
        hand_outs_after_crash,
        most_valid,
        counterexample,
    }
}

/// Replays a path of canonical states from the real initial state, without renaming,
/// and ends with a step that breaks a property. Finding each step is itself a check
/// that the merging only merged renamings of one another.
fn replay(
    cfg: &KeysConfig,
    codec: &Codec,
    init: &KState,
    path: &[u32],
    packed: &[u128],
) -> Vec<KEvent> {
    let mut steps = Vec::new();
    let mut at = *init;
    let mut out = Vec::new();
    for &id in &path[1..] {
        out.clear();
        at.successors(cfg, &mut out);
        let want = packed[id as usize];
        let (e, s, _) = out
            .iter()
            .find(|(_, s, _)| codec.key(s) == want)
            .expect("the path replays without renaming");
        steps.push(*e);
        at = *s;
    }
    out.clear();
    at.successors(cfg, &mut out);
    let (e, _, _) = out
        .iter()
        .find(|(_, s, _)| s.violation(cfg).is_some())
        .expect("the last state has a violating step");
    steps.push(*e);
    steps
}

/// What a state shows of the permits: per client (after the canonical renaming) idle,
/// trying slot `s`, or holding slot `s`; and the crashes so far.
fn projection(codec: &Codec, s: &KState) -> Vec<u8> {
    codec
        .renamings
        .iter()
        .map(|r| {
            let mut v: Vec<u8> = r
                .from
                .iter()
                .map(|&old| {
                    let cl = s.clients[usize::from(old)];
                    let slot = (cl.slot + r.rotate) % codec.cfg.slots;
                    match cl.phase {
                        Phase::Idle => 0,
                        Phase::Trying => 1 + slot,
                        Phase::Holding => 1 + MAX_SLOTS as u8 + slot,
                    }
                })
                .collect();
            v.push(s.crashes);
            v
        })
        .min()
        .unwrap_or_default()
}

/// Every projection of a reachable state (per client, after the canonical renaming:
/// idle, trying slot `s`, or holding slot `s`; and the crashes so far), and whether
/// the search was complete.
///
/// # Panics
///
/// If the bounds are out of range (see [`check_keys`]).
pub fn projections(cfg: &KeysConfig) -> (HashSet<Vec<u8>>, bool) {
    reachable(cfg, projection)
}

/// Every combination of valid permits reachable, as sorted `(client, slot)` pairs,
/// with the crashes so far; and whether the search was complete. Clients and slots are
/// not renamed (the search runs without merging renamings), so the result compares
/// with [`crate::SemOutcome::holdings`].
///
/// # Panics
///
/// If the bounds are out of range (see [`check_keys`]).
pub fn holdings(cfg: &KeysConfig) -> (Holdings, bool) {
    let cfg = cfg.clone().symmetry(false);
    reachable(&cfg, |_, s| {
        let mut h = s.holders(&cfg);
        h.sort_unstable();
        (h, s.crashes)
    })
}

/// Every value of `f` over the reachable states, and whether the search was complete.
fn reachable<T: std::hash::Hash + Eq>(
    cfg: &KeysConfig,
    f: impl Fn(&Codec, &KState) -> T,
) -> (HashSet<T>, bool) {
    let codec = Codec::new(cfg);
    let root = codec.key(&KState::initial(cfg));
    let mut seen: HashSet<u128, FxBuild> = HashSet::default();
    seen.insert(root);
    let mut queue = VecDeque::from([root]);
    let mut found = HashSet::new();
    let mut out = Vec::new();
    while let Some(word) = queue.pop_front() {
        let state = codec.decode(word);
        found.insert(f(&codec, &state));
        out.clear();
        state.successors(cfg, &mut out);
        for (_, next, _) in &out {
            let key = codec.key(next);
            if seen.len() >= cfg.max_states {
                return (found, false);
            }
            if seen.insert(key) {
                queue.push_back(key);
            }
        }
    }
    (found, true)
}

/// Compares [`Detail::Full`] with [`Detail::Reduced`] on `cfg`'s bounds: every
/// projection (who is idle, trying which slot, holding which slot; crashes) reachable
/// with full detail must be reachable reduced (with at most as many crashes). Returns the counts (full, reduced) and
/// the projections missing from the reduced run; `None` if either run hit the state
/// limit.
///
/// # Panics
///
/// If the bounds are out of range (see [`check_keys`]).
pub fn cross_check(cfg: &KeysConfig) -> Option<(usize, usize, Vec<Vec<u8>>)> {
    let (full, full_done) = projections(&cfg.clone().detail(Detail::Full));
    let (reduced, reduced_done) = projections(&cfg.clone().detail(Detail::Reduced));
    (full_done && reduced_done).then(|| {
        // A crash of a node holding only keys of finished attempts is a step there and
        // none here (nothing to lose), so fewer crashes here is as good.
        let split = |p: &Vec<u8>| {
            let (&crashes, rest) = p.split_last().expect("a projection ends with crashes");
            (rest.to_vec(), crashes)
        };
        let missing = full
            .iter()
            .filter(|p| {
                let (phases, crashes) = split(p);
                !reduced.iter().any(|r| {
                    let (r_phases, r_crashes) = split(r);
                    r_phases == phases && r_crashes <= crashes
                })
            })
            .cloned()
            .collect();
        (full.len(), reduced.len(), missing)
    })
}

/// Whether `holding` (valid permits, crashes so far) is in `reached` with at most as
/// many crashes (a crash that loses no live key is no step in [`Detail::Reduced`]).
pub fn covers(reached: &Holdings, holding: &(Vec<(u8, u8)>, u8)) -> bool {
    reached
        .iter()
        .any(|(h, crashes)| *h == holding.0 && *crashes <= holding.1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packing_round_trips() {
        let cfg = KeysConfig::new(3, 2, vec![1, 1, 1]).symmetry(false);
        let codec = Codec::new(&cfg);
        let mut s = KState::initial(&cfg);
        s.start(&cfg, 1, 1, 2);
        s.keys[1][2] = 3;
        s.clients[1].acks[2] = Ack::Granted;
        s.stale[0][1] = 2;
        s.clients[2].phase = Phase::Holding;
        s.clients[2].slot = 0;
        s.keys[0][0] = 4;
        s.crashes = 1;
        assert_eq!(codec.decode(codec.key(&s)), s);
    }

    #[test]
    fn renamed_states_share_a_key() {
        let cfg = KeysConfig::new(3, 2, vec![1, 1, 1]);
        let codec = Codec::new(&cfg);
        let mut a = KState::initial(&cfg);
        a.start(&cfg, 0, 0, 1);
        a.keys[0][1] = 2;
        a.clients[0].acks[1] = Ack::Granted;
        // Client 0 → 2, slot 0 → 1, node 1 → 0.
        let mut b = KState::initial(&cfg);
        b.start(&cfg, 2, 1, 1);
        b.keys[1][0] = 4;
        b.clients[2].acks[0] = Ack::Granted;
        assert_eq!(codec.key(&a), codec.key(&b));
        assert_ne!(codec.key(&a), codec.key(&KState::initial(&cfg)));
    }
}
