//! The semaphore (`docs/semaphore.md`): N slots, each an ordinary lock key, a permit
//! being a lease on one slot won by one ordinary attempt of the lock protocol.
//!
//! Each slot is a [`State`] of the lock model — the same nodes, scripts, majority,
//! commit round, undo, message loss and delay, key expiry and counter loss — and the
//! clients move between them as `Semaphore::acquire_with` does: check the permits
//! record (when the configuration has it), then try the slots one at a time from any
//! start, one attempt per slot, stopping at the first lease; give up when every slot
//! was tried; release the permit, and maybe acquire again within the budget.
//!
//! # Validity
//!
//! The lock model checks tokens, which need no timing assumption, so a key's expiry
//! is a free event there. A bound on concurrent holders is about *valid* leases, and
//! validity is a timing matter (`docs/fencing.md`, "Validity"): a lease is valid for
//! `ttl − elapsed − drift`, counted from before its first acquire was sent, so every
//! copy of its key — each set after that moment — outlives its validity. The model
//! keeps that as a ghost: when a key holding an attempt's value **expires**, or its
//! node **crashes** (a crashed node rejoins only after the longest TTL: the
//! delayed-restart rule, so the crash and the restart are one step, taken at the
//! restart), that attempt's validity is over — it can no longer be handed out (the
//! validity check fails) and, if it holds a permit, the permit is no longer valid.
//! Validity may also run out at any other moment (the lock model's free choice).
//! [`SemConfig::immediate_restart`] drops the crash rule (a negative control).
//!
//! # Properties
//!
//! In every reachable state:
//!
//! - **P-slot**: no slot has two valid permits (the lock's mutual exclusion, per slot);
//! - **P-sem**: at most `N` valid permits, where `N` is the smallest number of permits
//!   named by a holder of a valid permit (the number every caller names, when they
//!   agree);
//!
//! and on every hand-out, the lock model's P1 and P2 per slot (each slot is its own
//! lock key with its own counter).
//!
//! # Abstractions
//!
//! - A node crash empties every slot's key and counter on the node and the permits
//!   record at once. Clocks and counter retirement are left out (the lock's configurations
//!   cover them; a slot's counter is an ordinary lock counter).
//! - The record is never lost but by a crash (its 24 h TTL is not modelled), and a
//!   client's record requests are one message per node (duplicates merged).
//! - Waiting (lines, notices) is not modelled: a waiter is a client that acquires
//!   again, which the budget of acquires covers.
//!
//! Exhaustive here on one node, and per slot on 2 and 3 nodes; two slots and three
//! clients on 3 nodes did not finish (3 million states). [`crate::semkeys`] checks the
//! multi-node bound without counters and tokens.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use crate::config::{Config, Network};
use crate::model::{AttemptId, Decision, Event, MAX_NODES, Property, Stage, State, Step};

/// Which semaphore design a run checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Design {
    /// fencelock's: N slots, each an ordinary lock key.
    Slots,
    /// Negative control: the design issue #19 warns about. Each node admits a client
    /// while it holds fewer than `N` admissions; a client holds a permit when a
    /// majority admitted it (and undoes its admissions otherwise).
    CountingNodes,
}

/// The bounds and rules of one semaphore run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SemConfig {
    /// A name for reports.
    pub name: String,
    /// The lock protocol each slot runs, with its faults: nodes, network, expiries,
    /// counter losses, the start rule of a missing counter. Its `clients` are the
    /// semaphore's clients; its `crashes` are node crashes (each empties every slot on
    /// the node, and the record); its `attempts` are ignored (see `acquires`).
    pub lock: Config,
    /// Per client, the number of permits it names (its `N`).
    pub permits: Vec<u8>,
    /// Per client, how many acquires it makes over the run (each tries every slot at
    /// most once).
    pub acquires: Vec<u8>,
    /// The design.
    pub design: Design,
    /// Whether an acquire first checks the permits record (a majority must agree on
    /// the number; a node holding another number refuses).
    pub record_check: bool,
    /// Negative control: a crashed node rejoins at once, not after the longest TTL
    /// (a crash does not end the validity of the leases whose keys it lost).
    pub immediate_restart: bool,
}

impl SemConfig {
    /// fencelock's semaphore of `permits` on `nodes` nodes, `clients` clients with one
    /// acquire each, the record check on, on the given lock configuration's faults.
    pub fn slots(lock: Config, permits: u8, acquires: Vec<u8>) -> Self {
        let clients = acquires.len();
        SemConfig {
            name: lock.name.clone(),
            lock: Config {
                clients: clients as u8,
                attempts: acquires.clone(),
                ..lock
            },
            permits: vec![permits; clients],
            acquires,
            design: Design::Slots,
            record_check: true,
            immediate_restart: false,
        }
    }

    /// Renames the configuration.
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Sets each client's number of permits.
    pub fn permits_each(mut self, permits: Vec<u8>) -> Self {
        self.permits = permits;
        self
    }

    /// Sets whether the record is checked.
    pub fn record_check(mut self, on: bool) -> Self {
        self.record_check = on;
        self
    }

    /// Sets the design.
    pub fn design(mut self, design: Design) -> Self {
        self.design = design;
        self
    }

    /// Negative control: crashed nodes rejoin at once.
    pub fn immediate_restart(mut self) -> Self {
        self.immediate_restart = true;
        self
    }

    /// Whether this is the design as written under the documented assumptions: one
    /// `N` per key (or the record check on a record that is never lost), delayed
    /// restarts, the lock protocol unchanged.
    pub fn is_faithful(&self) -> bool {
        let one_n = self.permits.iter().all(|&p| p == self.permits[0]);
        self.design == Design::Slots
            && !self.immediate_restart
            && self.lock.is_faithful()
            && (one_n || (self.record_check && self.lock.crashes == 0))
    }

    /// The number of slots: the largest number any client names.
    pub fn slot_count(&self) -> u8 {
        self.permits.iter().copied().max().unwrap_or(1)
    }

    /// The lock configuration each slot runs: crashes are the semaphore's, values are
    /// not normalised (validity needs to know which attempt a key holds).
    fn slot_config(&self) -> Config {
        Config {
            clients: self.acquires.len() as u8,
            attempts: self.acquires.clone(),
            crashes: 0,
            normalize: false,
            symmetry: false,
            ..self.lock.clone()
        }
    }

    fn validate(&self) {
        let c = self.acquires.len();
        assert!((1..=8).contains(&c), "clients must be 1 to 8");
        assert_eq!(self.permits.len(), c, "one number of permits per client");
        assert!(
            self.permits.iter().all(|&p| (1..=4).contains(&p)),
            "permits must be 1 to 4"
        );
        let stride = usize::from(self.acquires.iter().copied().max().unwrap_or(1));
        assert!(
            usize::from(self.slot_count()) * c * stride <= 64,
            "bounds too large for the validity bit set"
        );
        self.slot_config().validate();
    }
}

impl fmt::Display for SemConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let expiries = match self.lock.network {
            Network::Literal => format!("expiries={} network=literal", self.lock.expiries),
            Network::Reduced => "expiries=unbounded network=reduced".to_string(),
        };
        write!(
            f,
            "{}: {:?} nodes={} permits={:?} acquires={:?} crashes={} {expiries} \
             counter-losses={} start={}",
            self.name,
            self.design,
            self.lock.nodes,
            self.permits,
            self.acquires,
            self.lock.crashes,
            self.lock.counter_losses,
            self.lock.counter_start
        )?;
        if self.design == Design::Slots {
            f.write_str(if self.record_check {
                " record-check"
            } else {
                " NO-RECORD-CHECK"
            })?;
        }
        if self.immediate_restart {
            f.write_str(" IMMEDIATE-RESTART")?;
        }
        Ok(())
    }
}

/// Where a client is in an acquire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Phase {
    /// No acquire in progress, no permit.
    Idle,
    /// Checking the record: the nodes that agreed so far.
    Record {
        /// A bit per node.
        agreed: u8,
    },
    /// Trying one slot with one attempt.
    Trying {
        /// The slot.
        slot: u8,
        /// Slots tried in this acquire, this one included.
        tried: u8,
        /// Whether the attempt has started.
        started: bool,
    },
    /// Holding a permit: the lease of its attempt `seq` on `slot`.
    Holding {
        /// The slot.
        slot: u8,
        /// The attempt's number within the client, on that slot.
        seq: u8,
    },
    /// Counting-nodes design: asking every node.
    Asking {
        /// Nodes that admitted it.
        admitted: u8,
        /// Nodes yet to answer.
        pending: u8,
    },
    /// Counting-nodes design: a majority admitted it.
    Admitted,
}

/// The whole semaphore system.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SemState {
    /// Per slot, the lock model's state of that slot's key (slots design).
    pub slots: Vec<State>,
    /// Per client, where it is.
    pub phases: Vec<Phase>,
    /// Per client, acquires left.
    pub left: Vec<u8>,
    /// Per node, the permits record (slots design) or the admitted clients as a bit
    /// set (counting-nodes design).
    pub record: [u8; MAX_NODES],
    /// Per client, the nodes its record requests are still in flight to.
    pub record_net: Vec<u8>,
    /// Node crashes so far.
    pub crashes: u8,
    /// Ghost: a bit per (slot, client, attempt) whose validity is over (one of its
    /// keys expired or was lost in a crash).
    pub expired: u64,
    /// Set on the state a hand-out that broke P1 or P2 on its slot leads to.
    pub token_violation: Option<Property>,
}

/// One semaphore-level transition's label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SemEvent {
    /// A client begins an acquire (at the record check, or at `slot`).
    Begin {
        /// The client.
        client: u8,
        /// The first slot tried, when there is no record check.
        slot: Option<u8>,
    },
    /// A node runs a client's record request; with the record agreed, `slot` is the
    /// first slot tried.
    Record {
        /// The client.
        client: u8,
        /// The node.
        node: u8,
        /// The first slot, when this reply made the majority.
        slot: Option<u8>,
    },
    /// A client stops waiting for record replies (the acquire fails).
    RecordGiveUp {
        /// The client.
        client: u8,
    },
    /// A step of the lock model on one slot.
    Slot {
        /// The slot.
        slot: u8,
        /// The lock model's step.
        step: Step,
    },
    /// A holder releases its permit (reduced network: the release itself is subsumed
    /// by expiry, as in the lock model).
    Release {
        /// The client.
        client: u8,
    },
    /// A node crashes and (after the longest TTL) restarts empty.
    Crash {
        /// The node.
        node: u8,
    },
    /// Counting-nodes design: a node answers a client's request.
    Admit {
        /// The client.
        client: u8,
        /// The node.
        node: u8,
    },
}

/// What a semaphore run checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SemProperty {
    /// More valid permits than `N`.
    TooManyPermits {
        /// Valid permits.
        valid: u8,
        /// The bound.
        bound: u8,
    },
    /// Two valid permits on one slot.
    SlotShared,
    /// A token property of the lock model, on one slot.
    Token(Property),
}

impl fmt::Display for SemProperty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SemProperty::TooManyPermits { valid, bound } => {
                write!(f, "P-sem ({valid} valid permits, more than N = {bound})")
            }
            SemProperty::SlotShared => f.write_str("P-slot (two valid permits on one slot)"),
            SemProperty::Token(p) => write!(f, "{p} on a slot"),
        }
    }
}

/// What a semaphore run found.
#[derive(Clone, Debug)]
pub struct SemOutcome {
    /// The configuration.
    pub config: SemConfig,
    /// Distinct states reached.
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
    /// The most valid permits seen at once (evidence the bound was reached, so a pass
    /// is not vacuous).
    pub most_valid: u8,
    /// The first (shortest) counter-example: the property and the steps to it.
    pub counterexample: Option<(SemProperty, Vec<SemEvent>)>,
    /// Every combination of valid permits seen, as sorted `(client, slot)` pairs, with
    /// the crashes so far (compared with [`crate::semkeys`] by the tests).
    pub holdings: Holdings,
}

/// Combinations of valid permits: each a sorted list of `(client, slot)` with the
/// crashes so far.
pub type Holdings = HashSet<(Vec<(u8, u8)>, u8)>;

impl SemOutcome {
    /// Whether the run explored everything and found nothing.
    pub fn passed(&self) -> bool {
        self.complete && self.counterexample.is_none()
    }

    /// One line (or a trace) for reports.
    pub fn summary(&self) -> String {
        let verdict = verdict(&self.counterexample, self.complete);
        format!(
            "{}\n  {verdict}: {} states, {} transitions, depth {}, {:.2?}; {} permit \
             hand-outs, at most {} valid permits at once",
            self.config,
            self.states,
            self.transitions,
            self.depth,
            self.elapsed,
            self.hand_outs,
            self.most_valid
        )
    }

    /// The counter-example's steps, one a line.
    pub fn render(&self) -> String {
        render_steps(&self.counterexample, render_event)
    }
}

/// The verdict of a semaphore run, for its summary (here and in [`crate::semkeys`]).
pub(crate) fn verdict<E>(counterexample: &Option<(SemProperty, Vec<E>)>, complete: bool) -> String {
    match counterexample {
        Some((p, steps)) => format!("COUNTER-EXAMPLE ({p}) in {} steps", steps.len()),
        None if complete => "ok".to_string(),
        None => "INCOMPLETE (state limit)".to_string(),
    }
}

/// A semaphore run's counter-example, one step a line (empty without one).
pub(crate) fn render_steps<E>(
    counterexample: &Option<(SemProperty, Vec<E>)>,
    show: impl Fn(&E) -> String,
) -> String {
    let Some((p, steps)) = counterexample else {
        return String::new();
    };
    let mut out = format!("  counter-example for {p}:\n");
    for (k, s) in steps.iter().enumerate() {
        out.push_str(&format!("    {:>3}. {}\n", k + 1, show(s)));
    }
    out
}

fn render_event(e: &SemEvent) -> String {
    match *e {
        SemEvent::Slot { slot, step } => {
            let mut s = format!("slot {slot}: {:?}", step.event);
            if let Some(v) = step.counter_start {
                s.push_str(&format!(" (counter started at {v})"));
            }
            if step.reply_lost {
                s.push_str(" (reply lost)");
            }
            match step.decision {
                Decision::HandOut => s.push_str(" → lease handed out"),
                Decision::ValidityRanOut => s.push_str(" → validity ran out"),
                Decision::ReadOn => s.push_str(" (a majority granted; reads on)"),
                Decision::None => {}
            }
            if step.taken != 0 {
                s.push_str(&format!(
                    " (grants taken after the majority: {:#b})",
                    step.taken
                ));
            }
            s
        }
        other => format!("{other:?}"),
    }
}

impl SemState {
    /// The initial state.
    pub fn initial(cfg: &SemConfig) -> SemState {
        cfg.validate();
        let clients = cfg.acquires.len();
        let slots = match cfg.design {
            Design::Slots => {
                let slot = State::initial(&cfg.slot_config());
                vec![slot; usize::from(cfg.slot_count())]
            }
            Design::CountingNodes => Vec::new(),
        };
        SemState {
            slots,
            phases: vec![Phase::Idle; clients],
            left: cfg.acquires.clone(),
            record: [0; MAX_NODES],
            record_net: vec![0; clients],
            crashes: 0,
            expired: 0,
            token_violation: None,
        }
    }

    fn expired_bit(cfg: &SemConfig, slot: u8, att: AttemptId) -> u64 {
        let stride = u32::from(cfg.acquires.iter().copied().max().unwrap_or(1));
        let clients = cfg.acquires.len() as u32;
        let k = (u32::from(slot) * clients + u32::from(att.client)) * stride + u32::from(att.seq);
        1 << k
    }

    /// The valid permits: `(client, slot)` (the slot is 0 in the counting design).
    pub fn valid_permits(&self, cfg: &SemConfig) -> Vec<(u8, u8)> {
        let mut out = Vec::new();
        for (c, p) in self.phases.iter().enumerate() {
            let client = c as u8;
            match *p {
                Phase::Holding { slot, seq } => {
                    let bit = Self::expired_bit(cfg, slot, AttemptId { client, seq });
                    if self.expired & bit == 0 {
                        out.push((client, slot));
                    }
                }
                Phase::Admitted => out.push((client, 0)),
                _ => {}
            }
        }
        out
    }

    /// Checks P-slot and P-sem.
    fn violation(&self, cfg: &SemConfig) -> Option<SemProperty> {
        if let Some(p) = self.token_violation {
            return Some(SemProperty::Token(p));
        }
        let valid = self.valid_permits(cfg);
        if cfg.design == Design::Slots {
            for (k, &(_, s)) in valid.iter().enumerate() {
                if valid[..k].iter().any(|&(_, t)| t == s) {
                    return Some(SemProperty::SlotShared);
                }
            }
        }
        let bound = valid
            .iter()
            .map(|&(c, _)| cfg.permits[usize::from(c)])
            .min()?;
        let n = valid.len() as u8;
        (n > bound).then_some(SemProperty::TooManyPermits { valid: n, bound })
    }

    /// Every successor: its label, the state, whether it handed out a permit.
    pub fn successors(&self, cfg: &SemConfig) -> Vec<(SemEvent, SemState, bool)> {
        let mut out = Vec::new();
        match cfg.design {
            Design::Slots => {
                self.slot_successors(cfg, &mut out);
                if cfg.lock.normalize {
                    for (_, s, _) in &mut out {
                        s.normalize(cfg);
                    }
                }
            }
            Design::CountingNodes => self.counting_successors(cfg, &mut out),
        }
        out
    }

    /// The lock model's exact reductions, per slot, with what validity needs kept:
    /// on the reduced network, attempts that are over are forgotten
    /// ([`State::forget_finished_except`]) except a permit that may still be valid;
    /// numbers are normalised ([`State::normalize_values`]); and the validity ghost
    /// is kept only for attempts in progress and permits held.
    pub fn normalize(&mut self, cfg: &SemConfig) {
        let slot_cfg = cfg.slot_config();
        // For the numbers: the crashes still to come may empty a counter.
        let numbers_cfg = Config {
            crashes: cfg.lock.crashes,
            ..slot_cfg.clone()
        };
        let mut relevant = 0u64;
        for k in 0..self.slots.len() {
            let slot = k as u8;
            let mut keep = Vec::new();
            for (c, p) in self.phases.iter().enumerate() {
                let client = c as u8;
                match *p {
                    Phase::Holding { slot: at, seq } if at == slot => {
                        let att = AttemptId { client, seq };
                        let bit = Self::expired_bit(cfg, slot, att);
                        relevant |= bit;
                        if self.expired & bit == 0 {
                            keep.push(att);
                        }
                    }
                    Phase::Trying {
                        slot: at,
                        started: true,
                        ..
                    } if at == slot => {
                        let attempts = self.slots[k].client_attempts(&slot_cfg, client);
                        let seq = attempts.iter().filter(|a| a.stage != Stage::Idle).count() - 1;
                        let att = AttemptId {
                            client,
                            seq: seq as u8,
                        };
                        relevant |= Self::expired_bit(cfg, slot, att);
                    }
                    _ => {}
                }
            }
            if cfg.lock.network == Network::Reduced {
                self.slots[k].forget_finished_except(&slot_cfg, &keep);
            }
            self.slots[k].normalize_values(&numbers_cfg);
        }
        self.expired &= relevant;
    }

    fn slot_successors(&self, cfg: &SemConfig, out: &mut Vec<(SemEvent, SemState, bool)>) {
        let q = cfg.lock.quorum();
        let nodes = usize::from(cfg.lock.nodes);
        let all = ((1u16 << nodes) - 1) as u8;
        for c in 0..self.phases.len() {
            let client = c as u8;
            let n_c = cfg.permits[c];
            match self.phases[c] {
                Phase::Idle if self.left[c] > 0 => {
                    let mut s = self.clone();
                    s.left[c] -= 1;
                    if cfg.record_check {
                        s.phases[c] = Phase::Record { agreed: 0 };
                        s.record_net[c] = all;
                        out.push((SemEvent::Begin { client, slot: None }, s, false));
                    } else {
                        for slot in 0..n_c {
                            let mut t = s.clone();
                            t.phases[c] = Phase::Trying {
                                slot,
                                tried: 1,
                                started: false,
                            };
                            let e = SemEvent::Begin {
                                client,
                                slot: Some(slot),
                            };
                            out.push((e, t, false));
                        }
                    }
                }
                Phase::Record { .. } => {
                    let mut s = self.clone();
                    s.phases[c] = Phase::Idle;
                    out.push((SemEvent::RecordGiveUp { client }, s, false));
                }
                Phase::Holding { slot, .. } if cfg.lock.network == Network::Reduced => {
                    let _ = slot;
                    let mut s = self.clone();
                    s.phases[c] = Phase::Idle;
                    out.push((SemEvent::Release { client }, s, false));
                }
                _ => {}
            }
            // Record requests in flight.
            for node in 0..nodes {
                if self.record_net[c] & (1 << node) == 0 {
                    continue;
                }
                let mut s = self.clone();
                s.record_net[c] &= !(1 << node);
                let held = s.record[node];
                let agrees = held == 0 || held == n_c;
                if agrees {
                    s.record[node] = n_c;
                }
                let node = node as u8;
                match s.phases[c] {
                    Phase::Record { agreed } if agrees => {
                        let agreed = agreed | (1 << node);
                        if agreed.count_ones() as usize >= q {
                            for slot in 0..n_c {
                                let mut t = s.clone();
                                t.phases[c] = Phase::Trying {
                                    slot,
                                    tried: 1,
                                    started: false,
                                };
                                let e = SemEvent::Record {
                                    client,
                                    node,
                                    slot: Some(slot),
                                };
                                out.push((e, t, false));
                            }
                        } else {
                            s.phases[c] = Phase::Record { agreed };
                            out.push((
                                SemEvent::Record {
                                    client,
                                    node,
                                    slot: None,
                                },
                                s,
                                false,
                            ));
                        }
                    }
                    Phase::Record { .. } => {
                        // Another number recorded: the acquire fails with an error.
                        s.phases[c] = Phase::Idle;
                        out.push((
                            SemEvent::Record {
                                client,
                                node,
                                slot: None,
                            },
                            s,
                            false,
                        ));
                    }
                    _ => out.push((
                        SemEvent::Record {
                            client,
                            node,
                            slot: None,
                        },
                        s,
                        false,
                    )),
                }
            }
        }
        // Steps of the lock model on each slot.
        let slot_cfg = cfg.slot_config();
        for (k, slot_state) in self.slots.iter().enumerate() {
            let slot = k as u8;
            for t in slot_state.successors(&slot_cfg) {
                let mut s = self.clone();
                let mut hand_out = false;
                match t.step.event {
                    Event::Start { client } => {
                        let c = usize::from(client);
                        match s.phases[c] {
                            Phase::Trying {
                                slot: at,
                                tried,
                                started: false,
                            } if at == slot => {
                                s.phases[c] = Phase::Trying {
                                    slot,
                                    tried,
                                    started: true,
                                };
                            }
                            _ => continue,
                        }
                    }
                    Event::Expire { node } => {
                        if let Some(att) = slot_state.nodes[usize::from(node)].value
                            && att != AttemptId::OVER
                        {
                            s.expired |= Self::expired_bit(cfg, slot, att);
                        }
                    }
                    Event::ReleaseLease { client } => match s.phases[usize::from(client)] {
                        Phase::Holding { slot: at, .. } if at == slot => {
                            s.phases[usize::from(client)] = Phase::Idle;
                        }
                        _ => unreachable!("only a permit holder has a lease to release"),
                    },
                    _ => {}
                }
                if let Some(p) = t.violation {
                    // A token property broken on the slot: reported as it is.
                    let mut bad = s.clone();
                    bad.slots[k] = t.state;
                    bad.token_violation = Some(p);
                    let e = SemEvent::Slot { slot, step: t.step };
                    out.push((e, bad, true));
                    continue;
                }
                s.slots[k] = t.state;
                // Where the attempts of clients trying this slot went.
                let mut feasible = true;
                for c in 0..s.phases.len() {
                    let Phase::Trying {
                        slot: at,
                        tried,
                        started: true,
                    } = s.phases[c]
                    else {
                        continue;
                    };
                    if at != slot {
                        continue;
                    }
                    let attempts = s.slots[k].client_attempts(&slot_cfg, c as u8);
                    let seq = attempts.iter().filter(|a| a.stage != Stage::Idle).count() - 1;
                    let att = AttemptId {
                        client: c as u8,
                        seq: seq as u8,
                    };
                    match attempts[seq].stage {
                        Stage::Leased { .. } => {
                            if s.expired & Self::expired_bit(cfg, slot, att) != 0 {
                                // One of its keys expired or was lost: its validity
                                // is over, so the validity check fails (the other
                                // branch of this step).
                                feasible = false;
                            }
                            s.phases[c] = Phase::Holding {
                                slot,
                                seq: seq as u8,
                            };
                            hand_out = true;
                        }
                        Stage::Failed { .. } => {
                            let n_c = cfg.permits[c];
                            s.phases[c] = if tried < n_c {
                                Phase::Trying {
                                    slot: (slot + 1) % n_c,
                                    tried: tried + 1,
                                    started: false,
                                }
                            } else {
                                Phase::Idle
                            };
                        }
                        _ => {}
                    }
                }
                if feasible {
                    out.push((SemEvent::Slot { slot, step: t.step }, s, hand_out));
                }
            }
        }
        // Node crashes: every slot's key and counter on the node, and the record.
        if self.crashes < cfg.lock.crashes {
            for node in 0..nodes {
                let mut s = self.clone();
                s.crashes += 1;
                s.record[node] = 0;
                for k in 0..s.slots.len() {
                    if let Some(att) = s.slots[k].nodes[node].value
                        && att != AttemptId::OVER
                        && !cfg.immediate_restart
                    {
                        s.expired |= Self::expired_bit(cfg, k as u8, att);
                    }
                    s.slots[k].nodes[node] = Default::default();
                    s.slots[k].crashes += 1;
                }
                out.push((SemEvent::Crash { node: node as u8 }, s, false));
            }
        }
    }

    /// The counting-nodes design: a node admits while it holds fewer than the client's
    /// `N`; a client holds a permit when a majority admitted it.
    fn counting_successors(&self, cfg: &SemConfig, out: &mut Vec<(SemEvent, SemState, bool)>) {
        let q = cfg.lock.quorum();
        let nodes = usize::from(cfg.lock.nodes);
        let all = ((1u16 << nodes) - 1) as u8;
        for c in 0..self.phases.len() {
            let client = c as u8;
            match self.phases[c] {
                Phase::Idle if self.left[c] > 0 => {
                    let mut s = self.clone();
                    s.left[c] -= 1;
                    s.phases[c] = Phase::Asking {
                        admitted: 0,
                        pending: all,
                    };
                    out.push((SemEvent::Begin { client, slot: None }, s, false));
                }
                Phase::Asking { admitted, pending } => {
                    for node in 0..nodes {
                        if pending & (1 << node) == 0 {
                            continue;
                        }
                        let mut s = self.clone();
                        let held = s.record[node];
                        let mut admitted = admitted;
                        if held.count_ones() < u32::from(cfg.permits[c]) {
                            s.record[node] |= 1 << c;
                            admitted |= 1 << node;
                        }
                        let pending = pending & !(1 << node);
                        let mut hand_out = false;
                        s.phases[c] = if admitted.count_ones() as usize >= q {
                            hand_out = true;
                            Phase::Admitted
                        } else if pending == 0 {
                            for r in &mut s.record {
                                *r &= !(1 << c);
                            }
                            Phase::Idle
                        } else {
                            Phase::Asking { admitted, pending }
                        };
                        let e = SemEvent::Admit {
                            client,
                            node: node as u8,
                        };
                        out.push((e, s, hand_out));
                    }
                }
                _ => {}
            }
        }
    }
}

/// Explores every state reachable under `cfg` (breadth-first, so a counter-example is
/// a shortest one), stopping at the first violation.
pub fn check_sem(cfg: &SemConfig) -> SemOutcome {
    let started = Instant::now();
    let init = SemState::initial(cfg);
    let mut parents: Vec<(u32, Option<SemEvent>)> = vec![(0, None)];
    let mut seen: HashMap<SemState, u32> = HashMap::new();
    seen.insert(init.clone(), 0);
    let mut queue: VecDeque<(u32, usize, SemState)> = VecDeque::new();
    queue.push_back((0, 0, init));
    let mut transitions = 0u64;
    let mut hand_outs = 0u64;
    let mut most_valid = 0u8;
    let mut depth = 0;
    let mut complete = true;
    let mut found: Option<(SemProperty, u32, SemEvent)> = None;
    let mut holdings = HashSet::new();
    holdings.insert((Vec::new(), 0));
    'search: while let Some((id, d, state)) = queue.pop_front() {
        depth = depth.max(d);
        for (event, next, hand_out) in state.successors(cfg) {
            transitions += 1;
            hand_outs += u64::from(hand_out);
            if let Some(p) = next.violation(cfg) {
                found = Some((p, id, event));
                complete = false;
                break 'search;
            }
            if seen.contains_key(&next) {
                continue;
            }
            let mut valid = next.valid_permits(cfg);
            most_valid = most_valid.max(valid.len() as u8);
            valid.sort_unstable();
            holdings.insert((valid, next.crashes));
            if seen.len() >= cfg.lock.max_states {
                complete = false;
                break 'search;
            }
            let n = parents.len() as u32;
            parents.push((id, Some(event)));
            seen.insert(next.clone(), n);
            queue.push_back((n, d + 1, next));
        }
    }
    let counterexample = found.map(|(p, id, last)| {
        let mut steps = vec![last];
        let mut at = id;
        while at != 0 {
            let (parent, e) = parents[at as usize];
            steps.extend(e);
            at = parent;
        }
        steps.reverse();
        (p, steps)
    });
    SemOutcome {
        config: cfg.clone(),
        states: seen.len(),
        transitions,
        depth,
        elapsed: started.elapsed(),
        complete,
        hand_outs,
        most_valid,
        counterexample,
        holdings,
    }
}
