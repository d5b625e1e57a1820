//! The explorer: breadth-first search over every reachable state, with a visited set,
//! checking P1 and P2 on every transition that hands out a lease. Breadth-first, so a
//! counter-example it reports is a shortest one.

use std::collections::{HashMap, VecDeque};
use std::fmt::{self, Write as _};
use std::hash::{BuildHasherDefault, Hasher};
use std::time::{Duration, Instant};

use crate::config::{Config, Mutation};
use crate::model::{AttemptId, Decision, Event, Msg, Property, Stage, State, Step};
use crate::symmetry::{Scratch, Symmetry};

/// What a run found.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The configuration explored.
    pub config: Config,
    /// Distinct states reached.
    pub states: usize,
    /// Transitions followed (edges, including those into known states).
    pub transitions: u64,
    /// The length of the longest shortest path (BFS depth).
    pub depth: usize,
    /// Wall time.
    pub elapsed: Duration,
    /// Whether every reachable state was explored (false: stopped at a
    /// counter-example or at `max_states`).
    pub complete: bool,
    /// The first (shortest) counter-example, if any.
    pub counterexample: Option<Counterexample>,
    /// What the explored behaviours covered.
    pub coverage: Coverage,
}

/// How much of the interesting behaviour the run reached: evidence that a pass is not
/// vacuous (a model in which no lease is ever handed out would pass trivially).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Coverage {
    /// Hand-out transitions.
    pub hand_outs: u64,
    /// Hand-outs that needed a commit round.
    pub after_commit_round: u64,
    /// Hand-outs where P2's premise held (another lease was handed out before the
    /// attempt began), so P2 was actually tested.
    pub ordered: u64,
    /// Hand-outs after some node lost its counter.
    pub after_counter_loss: u64,
    /// Hand-outs after another lease was handed out (so P1 compared two tokens).
    pub after_other_lease: u64,
    /// Hand-outs whose commit quorum counted a grant taken after the majority.
    pub with_extra: u64,
    /// Hand-outs that skipped the commit round although a deciding grant was below
    /// the token (grants at the token taken after the majority made the majority).
    pub round_skipped: u64,
}

/// A behaviour that breaks a property.
#[derive(Clone, Debug)]
pub struct Counterexample {
    /// The broken property.
    pub property: Property,
    /// The steps from the initial state; the last one hands out the offending lease.
    pub steps: Vec<Step>,
    /// The states: `states[0]` is the initial state, `states[k + 1]` follows
    /// `steps[k]`.
    pub states: Vec<State>,
}

/// FxHash (as in rustc): much faster than SipHash on these small keys, and hash
/// flooding is no concern here.
#[derive(Default)]
pub(crate) struct FxHasher(u64);

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.write_u64(u64::from(i));
    }
    fn write_u32(&mut self, i: u32) {
        self.write_u64(u64::from(i));
    }
    fn write_usize(&mut self, i: usize) {
        self.write_u64(i as u64);
    }
    fn write_u64(&mut self, i: u64) {
        self.0 = (self.0.rotate_left(5) ^ i).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

pub(crate) type FxBuild = BuildHasherDefault<FxHasher>;

/// Explores every state reachable under `cfg`, stopping at the first counter-example.
pub fn check(cfg: &Config) -> Outcome {
    let started = Instant::now();
    let symmetry = Symmetry::new(cfg);
    let progress = std::env::var_os("FENCELOCK_MODEL_PROGRESS").is_some();
    let mut init = State::initial(cfg);
    if cfg.normalize {
        init.normalize(cfg);
    }
    let (root, _) = symmetry.canonical(&init);
    let (root_key, _) = symmetry.canonical_key(&root, &mut Scratch::default());
    // Per state id: its parent's id and the step from it (the root is its own parent).
    let mut parents: Vec<(u32, Step)> = Vec::new();
    let mut seen: HashMap<Box<[u8]>, u32, FxBuild> = HashMap::default();
    let mut scratch = Scratch::default();
    let mut queue: VecDeque<(u32, usize, State)> = VecDeque::new();
    let root_step = Step::new(Event::Start { client: 0 });
    parents.push((0, root_step));
    seen.insert(root_key.into_boxed_slice(), 0);
    queue.push_back((0, 0, root));

    let mut coverage = Coverage::default();
    let mut transitions = 0u64;
    let mut depth = 0;
    let mut found: Option<(Property, u32, Step)> = None;
    let mut complete = true;

    'search: while let Some((id, d, state)) = queue.pop_front() {
        depth = depth.max(d);
        for t in state.successors(cfg) {
            transitions += 1;
            if let Some(h) = t.hand_out {
                coverage.hand_outs += 1;
                coverage.after_commit_round += u64::from(h.after_commit_round);
                coverage.ordered += u64::from(h.ordered);
                coverage.after_counter_loss += u64::from(h.after_counter_loss);
                coverage.after_other_lease += u64::from(h.after_other_lease);
                coverage.with_extra += u64::from(h.with_extra);
                coverage.round_skipped += u64::from(h.round_skipped);
            }
            if let Some(p) = t.violation {
                found = Some((p, id, t.step));
                complete = false;
                break 'search;
            }
            let (key, perm) = symmetry.canonical_key(&t.state, &mut scratch);
            if seen.contains_key(key.as_slice()) {
                continue;
            }
            if seen.len() >= cfg.max_states {
                complete = false;
                break 'search;
            }
            let next = u32::try_from(parents.len()).expect("fewer than 2^32 states");
            if progress && next % 1_000_000 == 0 {
                eprintln!(
                    "  ... {next} states, depth {d}, queue {}, {:.1?}",
                    queue.len(),
                    started.elapsed()
                );
            }
            parents.push((id, t.step));
            seen.insert(key.into_boxed_slice(), next);
            queue.push_back((next, d + 1, perm.apply(&t.state, cfg.stride())));
        }
    }

    let counterexample = found.map(|(property, id, last)| {
        let mut steps = vec![last];
        let mut at = id;
        while at != 0 {
            let (parent, step) = parents[at as usize];
            steps.push(step);
            at = parent;
        }
        steps.reverse();
        let (steps, states) = realize(cfg, &symmetry, &init, &steps);
        let (steps, states) = plain(cfg, &symmetry, &steps, &states);
        Counterexample {
            property,
            steps,
            states,
        }
    });

    Outcome {
        config: cfg.clone(),
        states: seen.len(),
        transitions,
        depth,
        elapsed: started.elapsed(),
        complete,
        counterexample,
        coverage,
    }
}

/// What a reachable state shows of the token machinery: the lease tokens handed out
/// so far (sorted, with repeats) and the nodes' counters (sorted, since nodes may be
/// renamed).
pub type Outcomes = std::collections::HashSet<(Vec<u64>, Vec<Option<u64>>)>;

/// Every [`Outcomes`] entry some reachable state has, for cross-checking two models:
/// with `cfg.normalize` off, the numbers are the real ones. Stops at
/// `cfg.max_states` (the second value is then false).
pub fn outcomes(cfg: &Config) -> (Outcomes, bool) {
    let symmetry = Symmetry::new(cfg);
    let mut scratch = Scratch::default();
    let mut init = State::initial(cfg);
    if cfg.normalize {
        init.normalize(cfg);
    }
    let mut seen: std::collections::HashSet<Box<[u8]>, FxBuild> = Default::default();
    let mut sets = std::collections::HashSet::new();
    let mut queue = VecDeque::new();
    seen.insert(
        symmetry
            .canonical_key(&init, &mut scratch)
            .0
            .into_boxed_slice(),
    );
    queue.push_back(init);
    while let Some(state) = queue.pop_front() {
        let mut counters: Vec<Option<u64>> = state.nodes[..usize::from(cfg.nodes)]
            .iter()
            .map(|n| n.counter)
            .collect();
        counters.sort_unstable();
        sets.insert((state.leases.clone(), counters));
        for t in state.successors(cfg) {
            let (key, _) = symmetry.canonical_key(&t.state, &mut scratch);
            if seen.len() >= cfg.max_states {
                return (sets, false);
            }
            if seen.insert(key.into_boxed_slice()) {
                queue.push_back(t.state);
            }
        }
    }
    (sets, true)
}

/// Turns a path through canonical states (each step named as seen from the canonical
/// representative of its source state) into a real behaviour from `init`: at each
/// state, rename the step back through the renaming that canonicalises that state.
fn realize(
    cfg: &Config,
    symmetry: &Symmetry,
    init: &State,
    canonical_steps: &[Step],
) -> (Vec<Step>, Vec<State>) {
    let mut steps = Vec::with_capacity(canonical_steps.len());
    let mut here = init.clone();
    for step in canonical_steps {
        let (_, perm) = symmetry.canonical(&here);
        let step = perm.inverse().apply_step(*step);
        here = here
            .successors(cfg)
            .into_iter()
            .find(|t| t.step == step)
            .unwrap_or_else(|| panic!("realize: {step:?} not enabled"))
            .state;
        steps.push(step);
    }
    let states = replay(cfg, init, &steps);
    (steps, states)
}

/// Re-runs a counter-example without normalisation, so that its trace shows real
/// numbers and attempt names: at each step, takes the successor whose normal form
/// is the next state of the normalised trace. Finding one at every step is a check
/// that normalisation merges only equivalent states.
///
/// # Panics
///
/// If no successor matches (normalisation merged states that are not equivalent).
fn plain(
    cfg: &Config,
    symmetry: &Symmetry,
    steps: &[Step],
    states: &[State],
) -> (Vec<Step>, Vec<State>) {
    if !cfg.normalize {
        return (steps.to_vec(), states.to_vec());
    }
    let raw = cfg.clone().normalize(false);
    let mut scratch = Scratch::default();
    let mut here = State::initial(&raw);
    let mut out_steps = Vec::with_capacity(steps.len());
    let mut out_states = vec![here.clone()];
    for (k, step) in steps.iter().enumerate() {
        let (want, _) = symmetry.canonical_key(&states[k + 1], &mut scratch);
        let found = here.successors(&raw).into_iter().find(|t| {
            let mut n = t.state.clone();
            n.normalize(cfg);
            t.step.decision == step.decision
                && t.step.reply_lost == step.reply_lost
                && t.step.taken == step.taken
                && symmetry.canonical_key(&n, &mut scratch).0 == want
        });
        let t = found.unwrap_or_else(|| {
            panic!("normalisation check: no raw successor matches step {k} ({step:?})")
        });
        out_steps.push(t.step);
        here = t.state;
        out_states.push(here.clone());
    }
    (out_steps, out_states)
}

/// Re-runs `steps` from `init`, returning every state along the way.
///
/// # Panics
///
/// If a step is not enabled where it is replayed (a bug in the explorer).
pub fn replay(cfg: &Config, init: &State, steps: &[Step]) -> Vec<State> {
    let mut states = vec![init.clone()];
    for step in steps {
        let here = states.last().expect("at least the initial state");
        let next = here
            .successors(cfg)
            .into_iter()
            .find(|t| t.step == *step)
            .unwrap_or_else(|| panic!("replay: {step:?} not enabled"))
            .state;
        states.push(next);
    }
    states
}

impl Outcome {
    /// Whether the run explored everything and found no counter-example.
    pub fn passed(&self) -> bool {
        self.complete && self.counterexample.is_none()
    }

    /// A one-line summary.
    pub fn summary(&self) -> String {
        let verdict = match (&self.counterexample, self.complete) {
            (Some(c), _) => format!(
                "COUNTER-EXAMPLE to {} in {} steps",
                c.property,
                c.steps.len()
            ),
            (None, true) => "no counter-example".to_string(),
            (None, false) => format!("INCOMPLETE (stopped at {} states)", self.states),
        };
        let c = &self.coverage;
        format!(
            "{}\n    {verdict}; {} states, {} transitions, depth {}, {:.2?}; \
             hand-outs {} (after another lease {}, P2 premise {}, after a commit round {}, \
             after a counter loss {}, counting a grant taken after the majority {}, \
             skipping a commit round so {})",
            self.config,
            self.states,
            self.transitions,
            self.depth,
            self.elapsed,
            c.hand_outs,
            c.after_other_lease,
            c.ordered,
            c.after_commit_round,
            c.after_counter_loss,
            c.with_extra,
            c.round_skipped,
        )
    }
}

impl Counterexample {
    /// The trace, one numbered line per step, each followed by the nodes' key and
    /// counter and the leases handed out so far.
    pub fn render(&self, cfg: &Config) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "counter-example to {} ({} steps); node state shown as value/counter",
            self.property,
            self.steps.len()
        );
        let _ = writeln!(
            s,
            "   0. initial                     {}",
            Snapshot(&self.states[0], usize::from(cfg.nodes))
        );
        for (k, step) in self.steps.iter().enumerate() {
            let before = &self.states[k];
            let after = &self.states[k + 1];
            let _ = writeln!(s, "{:4}. {}", k + 1, describe(cfg, before, *step, after));
            let _ = writeln!(s, "      {}", Snapshot(after, usize::from(cfg.nodes)));
        }
        s
    }
}

/// The nodes and leases of a state, compactly.
struct Snapshot<'a>(&'a State, usize);

impl fmt::Display for Snapshot<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, n) in self.0.nodes.iter().take(self.1).enumerate() {
            let v = n.value.map_or("-".to_string(), |v| v.to_string());
            let c = n.counter.map_or("-".to_string(), |c| c.to_string());
            write!(f, "n{i}={v}/{c}  ")?;
        }
        write!(f, "leases {:?}", self.0.leases)
    }
}

fn attempt_stage(cfg: &Config, s: &State, att: AttemptId) -> Stage {
    s.attempt(cfg, att).stage
}

/// What a step did, in words.
fn describe(cfg: &Config, before: &State, step: Step, after: &State) -> String {
    let mut s = match step.event {
        Event::Start { client } => {
            let seq = after
                .client_attempts(cfg, client)
                .iter()
                .filter(|a| a.stage != Stage::Idle)
                .count()
                - 1;
            format!("c{client} starts attempt c{client}#{seq}: acquire sent to every node")
        }
        Event::Deliver(Msg::Acquire { node, att }) => {
            let (b, a) = (
                before.nodes[usize::from(node)],
                after.nodes[usize::from(node)],
            );
            if a.counter != b.counter || a.value != b.value {
                let from = match step.counter_start {
                    Some(v) => format!("missing, starts at {v}"),
                    None => b.counter.map_or("-".into(), |c| c.to_string()),
                };
                format!(
                    "n{node} runs acquire({att}): granted, counter {from} -> {}",
                    a.counter.unwrap_or(0)
                )
            } else {
                let holder = b.value.map_or("-".into(), |v| v.to_string());
                format!("n{node} runs acquire({att}): held by {holder}")
            }
        }
        Event::Deliver(Msg::Commit { node, att, token }) => {
            let (b, a) = (
                before.nodes[usize::from(node)],
                after.nodes[usize::from(node)],
            );
            let ours = b.value.is_some_and(|v| {
                v == att || v.client == att.client && cfg.mutation == Some(Mutation::ReuseValue)
            }) || cfg.mutation == Some(Mutation::CommitIgnoresHolder);
            if ours {
                format!(
                    "n{node} runs commit({att}, T={token}): committed, counter {} -> {}",
                    b.counter.map_or("-".into(), |c| c.to_string()),
                    a.counter.unwrap_or(0)
                )
            } else {
                format!("n{node} runs commit({att}, T={token}): key not ours, refused")
            }
        }
        Event::Deliver(Msg::Release { node, att }) => {
            let deleted =
                before.nodes[usize::from(node)].value != after.nodes[usize::from(node)].value;
            format!(
                "n{node} runs release({att}): {}",
                if deleted {
                    "key deleted"
                } else {
                    "not ours, nothing deleted"
                }
            )
        }
        Event::Deliver(Msg::AcquireReply { node, att, reply }) => {
            format!("{att} receives n{node}'s acquire reply {reply:?}")
        }
        Event::Deliver(Msg::CommitReply { node, att, ok }) => format!(
            "{att} receives n{node}'s commit reply: {}",
            if ok { "committed" } else { "refused" }
        ),
        Event::AcquireTimeout { att, node } => {
            format!("{att} stops waiting for n{node}'s acquire reply; abandon release queued")
        }
        Event::CommitTimeout { att, node } => {
            format!("{att} stops waiting for n{node}'s commit reply")
        }
        Event::GiveUp { att } => format!("{att} gives up waiting for acquire replies"),
        Event::StopCommitting { att } => {
            format!("{att} stops waiting for the remaining commit replies")
        }
        Event::ReleaseLease { client } => {
            format!("c{client} releases its lease: release sent to every node")
        }
        Event::Expire { node } => format!("the key expires on n{node}"),
        Event::Crash { node } => {
            format!("n{node} crashes and restarts empty: key and counter lost")
        }
        Event::CounterLoss { node } => format!("n{node} loses its counter (the key stays)"),
        Event::Tick { node, to } => format!("n{node}'s clock moves to {to}"),
        Event::Retire { node } => format!(
            "n{node} retires its counter {} (its clock reads {})",
            before.nodes[usize::from(node)]
                .counter
                .map_or("-".into(), |c| c.to_string()),
            before.nodes[usize::from(node)].clock
        ),
    };
    let att = match step.event {
        Event::Deliver(
            Msg::AcquireReply { att, .. }
            | Msg::CommitReply { att, .. }
            | Msg::Acquire { att, .. }
            | Msg::Commit { att, .. },
        )
        | Event::AcquireTimeout { att, .. }
        | Event::CommitTimeout { att, .. }
        | Event::GiveUp { att }
        | Event::StopCommitting { att } => Some(att),
        _ => None,
    };
    if step.reply_lost {
        s.push_str(" (reply lost: the client had stopped waiting for this node)");
    }
    if step.decision == Decision::ReadOn {
        s.push_str(" (a majority granted; the client reads on before it decides)");
    }
    if step.taken != 0 {
        let nodes: Vec<String> = (0..cfg.nodes)
            .filter(|i| step.taken & (1 << i) != 0)
            .map(|i| format!("n{i}"))
            .collect();
        let _ = write!(
            s,
            " (the grants of {} taken after the majority)",
            nodes.join(", ")
        );
    }
    if let Some(att) = att
        && att != AttemptId::OVER
        && attempt_stage(cfg, before, att) != attempt_stage(cfg, after, att)
    {
        let consequence = match (attempt_stage(cfg, after, att), step.decision) {
            (Stage::Committing { token }, _) => {
                let behind: Vec<String> = after
                    .net
                    .iter()
                    .filter_map(|m| match m {
                        Msg::Commit { node, att: a, .. } if *a == att => Some(format!("n{node}")),
                        _ => None,
                    })
                    .collect();
                format!(
                    "majority granted, T = {token}; commit sent to {}",
                    behind.join(", ")
                )
            }
            (Stage::Leased { token }, _) => {
                format!("LEASE HANDED OUT with token {token}")
            }
            (Stage::Failed { .. }, Decision::ValidityRanOut) => {
                "commit quorum reached but validity ran out: attempt undone".to_string()
            }
            (Stage::Failed { .. }, _) => "attempt failed and undone".to_string(),
            (other, _) => format!("now {other:?}"),
        };
        let _ = write!(s, " => {consequence}");
    }
    s
}
