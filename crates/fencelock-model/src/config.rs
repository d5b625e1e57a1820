//! What one run of the checker explores: sizes, fault budgets, the rule for a missing
//! counter, and (for negative controls) a deliberate change to the protocol.

use std::fmt;

/// How far above the largest counter ever issued a node's clock is taken to be under
/// [`CounterStart::clock`]. It only has to exceed the number of increments a bounded run
/// can perform, so that no existing counter can catch up with a restarted one: the
/// same order relations as "clock = 1000 · step" with a global step counter, without
/// putting the step count into the state (which would stop equal states from merging).
pub const CLOCK_GAP: u64 = 1000;

/// The value a node's counter starts from when it is missing (first use, restart
/// without persistence, retention over). In the real scripts this is `TIME` in
/// microseconds; the model replaces the clock with the *relation* that
/// `docs/fencing.md` assumes between that reading and the counters issued before it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CounterStart {
    /// Faithful: the start value is `issued + offset` for each of the offsets, chosen
    /// nondeterministically, where `issued` is the largest counter value any node has
    /// ever held (a ghost variable of the model: no node can see it). Assumption 2 of
    /// `docs/fencing.md` ("lost counters restart above every token issued before")
    /// says every offset is ≥ 1; offset 0 is weaker still (the clock merely *equals*
    /// the largest counter issued) and is included to find the exact boundary. A
    /// negative offset is a clock that is behind: that breaks the assumption.
    Relative(Vec<i64>),
    /// Negative control: a missing counter always starts at this value (a node clock
    /// reset to the epoch, or a store that starts counters at 0).
    Fixed(u64),
    /// Negative control: a weaker reading of assumption 2, "above every token *handed
    /// out* in a lease so far" (the start value is the largest lease token, or 0).
    /// Counters that nodes returned to attempts still in progress are not covered.
    AboveLeases,
}

impl CounterStart {
    /// Synchronized node clocks: a missing counter starts far above every counter
    /// issued so far ([`CLOCK_GAP`] above it).
    pub fn clock() -> Self {
        CounterStart::Relative(vec![CLOCK_GAP as i64])
    }

    /// The documented assumption at its tightest, plus the boundary: the start value
    /// is any of `issued + 0 ..= issued + max_offset`.
    pub fn at_least_issued(max_offset: i64) -> Self {
        CounterStart::Relative((0..=max_offset).collect())
    }

    /// Negative control: the restarted node's clock is `behind` units behind the
    /// largest counter issued.
    pub fn behind(behind: i64) -> Self {
        CounterStart::Relative(vec![-behind])
    }

    /// Whether this rule satisfies assumption 2 of `docs/fencing.md` (or the weaker
    /// "at least" form), i.e. whether a run with it is a faithful configuration.
    pub fn is_faithful(&self) -> bool {
        match self {
            CounterStart::Relative(offsets) => offsets.iter().all(|&o| o >= 0),
            CounterStart::Fixed(_) | CounterStart::AboveLeases => false,
        }
    }
}

impl fmt::Display for CounterStart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CounterStart::Relative(offsets) if offsets == &[CLOCK_GAP as i64] => {
                write!(f, "clock (issued + {CLOCK_GAP})")
            }
            CounterStart::Relative(offsets) => {
                let list: Vec<String> = offsets.iter().map(|o| format!("{o:+}")).collect();
                write!(f, "issued {{{}}}", list.join(", "))
            }
            CounterStart::Fixed(v) => write!(f, "fixed {v}"),
            CounterStart::AboveLeases => write!(f, "largest lease token"),
        }
    }
}

/// A deliberate change to the protocol, for negative controls and experiments. The
/// faithful model has none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mutation {
    /// Skip the commit round: hand out `T = max(c_i)` as soon as a majority granted,
    /// without raising the nodes that returned less.
    NoCommitRound,
    /// Send the commits but hand out the lease whatever they reply (count every
    /// granting node as committed).
    IgnoreCommitReplies,
    /// The commit script raises the counter (and answers "committed") even when the
    /// key no longer holds our value.
    CommitIgnoresHolder,
    /// One value per client for all its attempts, as before the "fresh value per
    /// attempt" change: a late request of an earlier attempt then acts on the keys of
    /// a later one. An experiment, not a negative control: it is expected to keep the
    /// tokens unique (the change was made for mutual exclusion).
    ReuseValue,
    /// A counter is retired (deleted) whatever the node's clock says: "delete on
    /// release" without the seed check, or an expiry-based deletion whose tail is
    /// shorter than the node's clock skew.
    RetireAheadOfClock,
    /// A grant taken after the majority (`FanOut::next_ready` in `attempt.rs`) counts
    /// for the commit quorum when its counter is *below* the token too, not only at
    /// it: the node holds our key, but its counter is not raised to `T` (the commit
    /// round goes to the deciding majority only, and may be skipped on its count).
    ExtraBelowTokenCounts,
    /// A grant taken after the majority counts for the commit quorum when its counter
    /// is *above* the token too. An experiment, not a negative control: such a node
    /// holds `counter ≥ T` under our value, which is all the argument of
    /// `docs/fencing.md` asks of a node of the commit quorum, so it is expected to
    /// keep the tokens unique and ordered (`attempt.rs` counts only grants at `T`).
    ExtraAboveTokenCounts,
}

impl fmt::Display for Mutation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mutation::NoCommitRound => "no commit round",
            Mutation::IgnoreCommitReplies => "commit replies ignored",
            Mutation::CommitIgnoresHolder => "commit does not check the holder",
            Mutation::ReuseValue => "one value per client (reused across attempts)",
            Mutation::RetireAheadOfClock => "counters retired ahead of the node's clock",
            Mutation::ExtraBelowTokenCounts => {
                "a grant taken after the majority below the token counts as committed"
            }
            Mutation::ExtraAboveTokenCounts => {
                "a grant taken after the majority above the token counts as committed"
            }
        })
    }
}

/// How literally the network is modelled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Network {
    /// Every request *and reply* is a message that may be delayed, reordered or lost;
    /// every release `attempt()` and the lease send — the undo of a failed attempt,
    /// the abandon after a timeout, the background clean-up of a late grant, the
    /// lease's own release — is a `release.lua` message; key expiries are bounded by
    /// [`Config::expiries`]. The most literal model; its state space grows fast, so
    /// it is run on the smaller bounds.
    Literal,
    /// Reductions that keep every token outcome of [`Network::Literal`]:
    ///
    /// 1. **Releases are subsumed by expiry.** No release messages; the key may
    ///    instead expire on any node at any moment, without bound. A release's only
    ///    effect is to delete a key holding the releasing attempt's value, which such
    ///    an expiry can do at the same moment; so every behaviour of the literal
    ///    model, whatever its expiry budget, is matched here. A lease release is then
    ///    a no-op, so a client whose lease is live may start its next acquire.
    /// 2. **Replies are read on arrival.** A node's reply is handled by the client in
    ///    the same step as the script. A delayed reply is reordered into this form:
    ///    a client's reply handling commutes with every other process's steps (they
    ///    never read the client's local state), and the tally decides on the same
    ///    grants whatever order they arrive in (`T` is the max of exactly the grants
    ///    that made the majority). The lease is then handed out no later than
    ///    before, which can only enlarge the set of earlier leases that P2 compares
    ///    a later attempt against. The replies a real client takes after the
    ///    majority (those already in at the verdict) ran before the verdict: here the
    ///    client reads on past a majority of grants and decides at a later reply,
    ///    with any majority of its grants as the deciding one and the others taken
    ///    after it (see `State::choose_majority`
    ///    for the argument).
    /// 3. **The tally counts grants only; the client may give up at any moment.** A
    ///    real attempt fails on a majority of refusals, on timeouts, or when every
    ///    node answered without a majority of grants; each of these can happen at
    ///    any moment, since replies can be delayed. So here a grant is counted, or
    ///    lost (the client had timed out on that node just before), a refusal is
    ///    noted, and the attempt fails whenever the client gives up ([`Event::GiveUp`](crate::model::Event::GiveUp))
    ///    or nobody is left to answer — but not with a majority of grants in (it reads
    ///    on past them, above): a real client reads the replies that are in before
    ///    it looks at its deadline. The commit round likewise waits for every
    ///    commit reply or stops waiting at once ([`Event::StopCommitting`](crate::model::Event::StopCommitting)); a
    ///    commit answered in time where the real client timed out only adds to the
    ///    commit quorum, and the free validity failure covers the attempt failing
    ///    anyway.
    ///
    /// `tests/cross_check.rs` checks on small bounds that every combination of lease
    /// tokens and node counters reachable on the literal network is reachable here.
    Reduced,
}

/// The bounds and rules of one exhaustive run.
///
/// Every bound is a budget over a whole run (not per node or per client, except
/// `attempts`). A run that ends with budget left is as valid as one that spends it:
/// every prefix of a behaviour is explored too.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// A name for reports.
    pub name: String,
    /// Redis nodes (1 to [`MAX_NODES`](crate::model::MAX_NODES); the quorum is
    /// `nodes / 2 + 1`).
    pub nodes: u8,
    /// Clients competing for the one lock key.
    pub clients: u8,
    /// Per client, its attempts over the whole run: the first attempt, its retries,
    /// and the attempts of a later acquire after a lease was released. One entry per
    /// client. Unequal budgets model a retry budget shared between clients: with
    /// otherwise identical clients, `[2, 1]` covers "one of the two retries once"
    /// (whichever it is, renaming the clients makes it client 0).
    pub attempts: Vec<u8>,
    /// Node crashes with restart, each losing the node's lock key and counter.
    pub crashes: u8,
    /// Expiries of the lock key on some node (TTL ran out), at any moment. Unbounded
    /// (and ignored) under [`Network::Reduced`].
    pub expiries: u8,
    /// How literally the network is modelled.
    pub network: Network,
    /// Losses of a counter alone while the lock key stays (the counter's 24 h
    /// retention running out under a lease renewed for longer).
    pub counter_losses: u8,
    /// Where a missing counter starts.
    pub counter_start: CounterStart,
    /// Each node's counter at the start, `None` for missing. Empty means all missing.
    /// Counters that exist from the start model node clocks that disagreed when the
    /// counters were first created (which the protocol does not rely on).
    pub initial_counters: Vec<Option<u64>>,
    /// Whether a client that has its commit quorum may still fail the validity check
    /// (`ttl − elapsed − drift ≤ 0`) and undo the attempt. Time is not modelled, so
    /// this is a free choice.
    pub validity_may_run_out: bool,
    /// A deliberate protocol change, or `None` for the protocol as written.
    pub mutation: Option<Mutation>,
    /// Give up (and report the run incomplete) past this many states.
    pub max_states: usize,
    /// Merge states that differ only by a renaming of the clients (and of the nodes,
    /// when they all start with the same counter). Clients and nodes are
    /// interchangeable in the protocol and P1/P2 do not name any of them, so a state
    /// violates a property exactly when its renamings do.
    pub symmetry: bool,
    /// Per node, its clock at the start (in counter units, like the counters), or empty
    /// for the clockless model. With clocks, a missing counter starts at its node's
    /// clock, a node's counter may be **retired** (deleted) whenever that node's clock
    /// has reached it (`fencelock_keep` in shared.lua: on release, or by its expiry) —
    /// held or not, any number of times — and a clock may move forward
    /// ([`Config::ticks`]). Unequal clocks are clock skew, unbounded: any clock may run
    /// ahead of the others by any amount. A crash restarts a node with its clock at
    /// least at the start rule of [`Config::counter_start`] (the delayed-restart rule).
    pub clocks: Vec<u64>,
    /// With clocks: how many times a node's clock may move forward in a run. A move
    /// goes to any number in the state above the clock, or just above the largest
    /// counter ever held (ties are where tokens could collide; in-between values order
    /// like one of those).
    pub ticks: u8,
    /// Merge states that differ only in what no longer matters: which finished
    /// attempt did what (reduced network) and the absolute values of the numbers
    /// (faithful start rules). On by default; turned off to print traces with real
    /// numbers, and for cross-checks.
    pub normalize: bool,
}

impl Config {
    /// The faithful protocol on `nodes` nodes with `clients` clients, one attempt each
    /// plus one retry, one crash, two expiries, release messages, synchronized clocks.
    pub fn faithful(nodes: u8, clients: u8) -> Self {
        Config {
            name: format!("faithful N={nodes} C={clients}"),
            nodes,
            clients,
            attempts: vec![2; usize::from(clients)],
            crashes: 1,
            expiries: 2,
            network: Network::Literal,
            counter_losses: 0,
            counter_start: CounterStart::clock(),
            initial_counters: Vec::new(),
            validity_may_run_out: true,
            mutation: None,
            clocks: Vec::new(),
            ticks: 0,
            max_states: 20_000_000,
            symmetry: true,
            normalize: true,
        }
    }

    /// Renames the configuration.
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Gives every client the same number of attempts.
    pub fn attempts(mut self, attempts: u8) -> Self {
        self.attempts = vec![attempts; usize::from(self.clients)];
        self
    }

    /// Sets each client's attempts (and so the number of clients).
    pub fn attempts_each(mut self, attempts: Vec<u8>) -> Self {
        self.clients = attempts.len() as u8;
        self.attempts = attempts;
        self
    }

    /// The most attempts any client has: the stride of [`State::attempts`](crate::State).
    pub fn stride(&self) -> usize {
        usize::from(self.attempts.iter().copied().max().unwrap_or(0))
    }

    /// A client's attempts.
    pub fn budget(&self, client: u8) -> u8 {
        self.attempts[usize::from(client)]
    }

    /// Sets the crash budget.
    pub fn crashes(mut self, crashes: u8) -> Self {
        self.crashes = crashes;
        self
    }

    /// Sets the expiry budget.
    pub fn expiries(mut self, expiries: u8) -> Self {
        self.expiries = expiries;
        self
    }

    /// Sets how literally the network is modelled.
    pub fn network(mut self, network: Network) -> Self {
        self.network = network;
        self
    }

    /// Sets whether symmetric states are merged.
    pub fn symmetry(mut self, symmetry: bool) -> Self {
        self.symmetry = symmetry;
        self
    }

    /// Sets whether equivalent states are normalised (see [`Config::normalize`]).
    pub fn normalize(mut self, normalize: bool) -> Self {
        self.normalize = normalize;
        self
    }

    /// Sets the budget of counter losses under a held key.
    pub fn counter_losses(mut self, losses: u8) -> Self {
        self.counter_losses = losses;
        self
    }

    /// Sets the rule for a missing counter.
    pub fn counter_start(mut self, start: CounterStart) -> Self {
        self.counter_start = start;
        self
    }

    /// Sets the counters each node has at the start.
    pub fn initial_counters(mut self, counters: Vec<Option<u64>>) -> Self {
        self.initial_counters = counters;
        self
    }

    /// Gives every node a clock (see [`Config::clocks`]) and a budget of clock moves.
    pub fn clocks(mut self, clocks: Vec<u64>, ticks: u8) -> Self {
        self.clocks = clocks;
        self.ticks = ticks;
        self
    }

    /// Whether nodes have clocks (see [`Config::clocks`]).
    pub fn has_clocks(&self) -> bool {
        !self.clocks.is_empty()
    }

    /// Sets whether the validity check may fail.
    pub fn validity_may_run_out(mut self, may: bool) -> Self {
        self.validity_may_run_out = may;
        self
    }

    /// Applies a deliberate protocol change.
    pub fn mutation(mut self, mutation: Mutation) -> Self {
        self.mutation = Some(mutation);
        self
    }

    /// Sets the state limit.
    pub fn max_states(mut self, max: usize) -> Self {
        self.max_states = max;
        self
    }

    /// The smallest number the model uses: the largest *negative* start offset, so
    /// that `issued + offset` never has to be cut off at 0 (which would make the
    /// dynamics depend on absolute values). 0 for the other start rules.
    pub fn value_base(&self) -> u64 {
        match &self.counter_start {
            CounterStart::Relative(offsets) => offsets
                .iter()
                .map(|&o| (-o).max(0) as u64)
                .max()
                .unwrap_or(0),
            CounterStart::Fixed(_) | CounterStart::AboveLeases => 0,
        }
    }

    /// How many increments a whole run can make at most: one per acquire script
    /// that grants, and every attempt sends one acquire per node.
    pub fn max_increments(&self) -> u64 {
        self.attempts.iter().map(|&a| u64::from(a)).sum::<u64>() * u64::from(self.nodes)
    }

    /// For value normalisation: gaps between numbers up to the first value are kept
    /// exactly; wider ones are all equivalent (no counter can climb across one, and
    /// no start can fall into one) and are set to the second. The second exceeds the
    /// first by more than every increment, so a normalised wide gap stays wide.
    pub fn gaps(&self) -> (u64, u64) {
        let narrow = self.max_increments() + self.value_base();
        (narrow, narrow + self.max_increments() + 1)
    }

    /// The majority size.
    pub fn quorum(&self) -> usize {
        usize::from(self.nodes) / 2 + 1
    }

    /// Whether this is the protocol as written under the documented assumptions: a
    /// counter-example in such a run is a flaw in the protocol (or in the docs).
    pub fn is_faithful(&self) -> bool {
        self.counter_start.is_faithful()
            && matches!(
                self.mutation,
                None | Some(Mutation::ReuseValue | Mutation::ExtraAboveTokenCounts)
            )
    }

    /// Checks the bounds fit the model's encodings.
    ///
    /// # Panics
    ///
    /// When a bound is out of range.
    pub fn validate(&self) {
        assert!(
            (1..=crate::model::MAX_NODES).contains(&usize::from(self.nodes)),
            "nodes must be 1 to {}",
            crate::model::MAX_NODES
        );
        assert!((1..=8).contains(&self.clients), "clients must be 1 to 8");
        assert_eq!(
            self.attempts.len(),
            usize::from(self.clients),
            "one attempt budget per client"
        );
        assert!(
            self.attempts.iter().all(|a| (1..=16).contains(a)),
            "attempts must be 1 to 16"
        );
        assert!(
            self.initial_counters.is_empty()
                || self.initial_counters.len() == usize::from(self.nodes),
            "initial_counters must be empty or have one entry per node"
        );
        assert!(
            self.clocks.is_empty() || self.clocks.len() == usize::from(self.nodes),
            "clocks must be empty or have one entry per node"
        );
        assert!(
            self.network == Network::Literal || self.validity_may_run_out,
            "the reduced network relies on the free validity failure (see Network::Reduced)"
        );
        if let CounterStart::Relative(offsets) = &self.counter_start {
            assert!(!offsets.is_empty(), "at least one start offset");
            let (_, wide) = self.gaps();
            assert!(
                wide < CLOCK_GAP,
                "bounds too large: the clock rule must stay a wide gap"
            );
        }
    }
}

impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let expiries = match self.network {
            Network::Literal => format!("expiries={} network=literal", self.expiries),
            Network::Reduced => "expiries=unbounded network=reduced".to_string(),
        };
        write!(
            f,
            "{}: N={} C={} attempts={:?} crashes={} {expiries} counter-losses={} start={}",
            self.name,
            self.nodes,
            self.clients,
            self.attempts,
            self.crashes,
            self.counter_losses,
            self.counter_start
        )?;
        if !self.initial_counters.is_empty() {
            let list: Vec<String> = self
                .initial_counters
                .iter()
                .map(|c| c.map_or("-".to_string(), |v| v.to_string()))
                .collect();
            write!(f, " initial=[{}]", list.join(","))?;
        }
        if self.has_clocks() {
            let list: Vec<String> = self.clocks.iter().map(u64::to_string).collect();
            write!(f, " clocks=[{}] ticks={}", list.join(","), self.ticks)?;
        }
        if !self.validity_may_run_out {
            f.write_str(" validity-always-ok")?;
        }
        if !self.symmetry {
            f.write_str(" no-symmetry")?;
        }
        if !self.normalize {
            f.write_str(" no-normalisation")?;
        }
        if let Some(m) = self.mutation {
            write!(f, " MUTATION: {m}")?;
        }
        Ok(())
    }
}
