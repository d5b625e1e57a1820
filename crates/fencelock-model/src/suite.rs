//! The configurations the tests run, and larger ones for the command line.
//!
//! Bounds are chosen so that [`faithful`] and [`negative`] together explore in well
//! under a minute in a debug build on two cores; [`big`] takes minutes in a release
//! build (`fencelock-model-check --big`).

use crate::config::{Config, CounterStart, Mutation, Network};
use crate::sem::{Design, SemConfig};
use crate::semkeys::{Detail, KeysConfig, KeysMutation};

/// Faithful configurations: the protocol as written, under the documented
/// assumptions. Each must explore completely with no counter-example.
pub fn faithful() -> Vec<Config> {
    vec![
        // The literal network: every reply and release is a message.
        Config::faithful(1, 2)
            .attempts_each(vec![2, 1])
            .counter_losses(1)
            .named("literal N=1: two clients, one retry, a crash, a counter loss"),
        Config::faithful(2, 2)
            .attempts(1)
            .named("literal N=2: two clients, a crash"),
        // The reduced network: unbounded expiry, replies read on arrival.
        Config::faithful(1, 3)
            .network(Network::Reduced)
            .counter_losses(1)
            .named("reduced N=1: three clients with a retry each"),
        Config::faithful(2, 2)
            .attempts_each(vec![2, 1])
            .network(Network::Reduced)
            .named("reduced N=2: two clients, one retry, a crash"),
        Config::faithful(2, 2)
            .attempts_each(vec![2, 1])
            .network(Network::Reduced)
            .counter_start(CounterStart::at_least_issued(2))
            .named("reduced N=2: restarts at +0, +1 or +2 above the largest counter"),
        Config::faithful(3, 2)
            .attempts(1)
            .network(Network::Reduced)
            .named("reduced N=3: two clients, a crash"),
        Config::faithful(3, 2)
            .attempts(1)
            .network(Network::Reduced)
            .counter_start(CounterStart::at_least_issued(0))
            .named("reduced N=3: restarts exactly at the largest counter"),
        Config::faithful(3, 2)
            .attempts(1)
            .network(Network::Reduced)
            .crashes(0)
            .counter_losses(1)
            .named("reduced N=3: a counter lost under a held key"),
        Config::faithful(3, 2)
            .attempts(1)
            .network(Network::Reduced)
            .crashes(0)
            .initial_counters(vec![Some(0), Some(1), Some(3)])
            .named("reduced N=3: counters already in use, unequal"),
        // Counter retention (docs/fencing.md, "Counter retention"): node clocks that
        // disagree, and counters retired whenever their node's clock has reached them.
        Config::faithful(1, 2)
            .attempts_each(vec![2, 1])
            .crashes(0)
            .clocks(vec![0], 2)
            .named("literal N=1: counters retired once the clock reaches them"),
        Config::faithful(3, 2)
            .attempts(1)
            .network(Network::Reduced)
            .crashes(0)
            .clocks(vec![0, 0, 0], 1)
            .named(
                "reduced N=3: a clock moves ahead, counters retired once the clock reaches them",
            ),
    ]
}

/// Negative controls: each breaks an assumption or the protocol, and must produce a
/// counter-example (proof that the checker can see).
pub fn negative() -> Vec<Config> {
    let base = || Config::faithful(3, 2).attempts(1).network(Network::Reduced);
    vec![
        base()
            .counter_start(CounterStart::Fixed(0))
            .named("negative: a restarted node counts from 0"),
        base()
            .counter_start(CounterStart::behind(1))
            .named("negative: a restarted node's clock is 1 behind the largest counter"),
        base()
            .counter_start(CounterStart::AboveLeases)
            .initial_counters(vec![Some(0); 3])
            .named("negative: restarts above every lease token only (not every counter)"),
        base()
            .mutation(Mutation::NoCommitRound)
            .named("negative: no commit round"),
        base()
            .mutation(Mutation::IgnoreCommitReplies)
            .named("negative: commit replies ignored"),
        base()
            .mutation(Mutation::CommitIgnoresHolder)
            .initial_counters(vec![Some(0), Some(5), Some(5)])
            .named("negative: commit raises the counter without checking the holder"),
        Config::faithful(2, 2)
            .attempts(1)
            .crashes(2)
            .expiries(1)
            .counter_start(CounterStart::Fixed(0))
            .named("negative, literal network: restarted nodes count from 0"),
        base()
            .crashes(0)
            .clocks(vec![0, 0, 5], 0)
            .mutation(Mutation::RetireAheadOfClock)
            .named("negative: counters retired ahead of the node's clock (skewed clocks)"),
        base()
            .mutation(Mutation::ExtraBelowTokenCounts)
            .named("negative: a grant taken after the majority below the token counts"),
    ]
}

/// Finds a configuration of [`faithful`], [`negative`], [`experiments`] or [`big`] by
/// name.
///
/// # Panics
///
/// If there is none.
pub fn named(name: &str) -> Config {
    faithful()
        .into_iter()
        .chain(negative())
        .chain(experiments())
        .chain(big())
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no configuration named {name:?}"))
}

/// Experiments whose outcome is informative either way; faithful ones must pass.
pub fn experiments() -> Vec<Config> {
    vec![
        Config::faithful(2, 2)
            .attempts_each(vec![2, 1])
            .network(Network::Reduced)
            .mutation(Mutation::ReuseValue)
            .named("experiment: one value per client for all its attempts"),
        Config::faithful(3, 2)
            .attempts(1)
            .network(Network::Reduced)
            .mutation(Mutation::ExtraAboveTokenCounts)
            .named("experiment: a grant taken after the majority above the token counts"),
    ]
}

/// Larger bounds, for the command line (release build, minutes).
pub fn big() -> Vec<Config> {
    vec![
        Config::faithful(3, 2)
            .attempts_each(vec![2, 1])
            .network(Network::Reduced)
            .named("big: reduced N=3, two clients, one retry, a crash"),
        Config::faithful(3, 2)
            .attempts(1)
            .network(Network::Reduced)
            .counter_start(CounterStart::at_least_issued(2))
            .named("big: reduced N=3, restarts at +0, +1 or +2"),
        Config::faithful(3, 2)
            .attempts(1)
            .network(Network::Reduced)
            .initial_counters(vec![Some(0), Some(1), Some(3)])
            .named("big: reduced N=3, unequal counters in use, a crash"),
        Config::faithful(3, 3)
            .attempts(1)
            .network(Network::Reduced)
            .named("big: reduced N=3, three clients, a crash"),
        Config::faithful(2, 2)
            .network(Network::Reduced)
            .named("big: reduced N=2, two clients with a retry each, a crash"),
        Config::faithful(3, 2)
            .attempts(1)
            .crashes(0)
            .expiries(1)
            .named("big: literal N=3, two clients"),
        Config::faithful(1, 2)
            .counter_losses(1)
            .named("big: literal N=1, two clients with a retry each, a crash, a counter loss"),
        Config::faithful(2, 2)
            .network(Network::Reduced)
            .mutation(Mutation::ReuseValue)
            .named("big: reduced N=2, one value per client, a retry each (experiment)"),
        Config::faithful(3, 2)
            .attempts(1)
            .network(Network::Reduced)
            .crashes(0)
            .clocks(vec![0, 0, 5], 1)
            .named("big: reduced N=3, skewed clocks, a clock move, retired counters"),
        Config::faithful(3, 2)
            .attempts(1)
            .network(Network::Reduced)
            .crashes(0)
            .clocks(vec![0, 0, 0], 2)
            .named("big: reduced N=3, two clock moves, retired counters"),
        Config::faithful(3, 2)
            .attempts(1)
            .network(Network::Reduced)
            .clocks(vec![0, 3, 6], 1)
            .named("big: reduced N=3, skewed clocks, retired counters and a crash"),
    ]
}

/// Semaphore configurations (`docs/semaphore.md`, `crate::sem`): N = 2 slots, three
/// clients (N + 1 contend), the lock's faults. Each must explore completely with no
/// counter-example. The first is small enough for the tests; the others run from the
/// command line (`fencelock-model-check --suite`, release build, seconds).
pub fn semaphore() -> Vec<SemConfig> {
    let reduced = |nodes| Config::faithful(nodes, 3).network(Network::Reduced);
    vec![
        SemConfig::slots(reduced(1).crashes(0), 2, vec![1, 1, 1])
            .record_check(false)
            .named("semaphore: N=2, three clients, keys expire at any moment"),
        SemConfig::slots(reduced(1).crashes(1), 2, vec![1, 1, 1])
            .record_check(false)
            .named("semaphore: N=2, three clients, keys expire at any moment, a crash"),
        SemConfig::slots(reduced(1).crashes(0), 2, vec![1, 1, 1])
            .permits_each(vec![2, 3, 3])
            .named("semaphore: mixed N (2, 3, 3) refused by the record"),
        // One slot on several nodes: P-slot, the lock's mutual exclusion, with a
        // minority restarted empty.
        SemConfig::slots(
            Config::faithful(2, 2).network(Network::Reduced),
            1,
            vec![1, 1],
        )
        .record_check(false)
        .named("semaphore: one slot on 2 nodes, two clients, a crash"),
        SemConfig::slots(
            Config::faithful(3, 2).network(Network::Reduced),
            1,
            vec![1, 1],
        )
        .record_check(false)
        .named("semaphore: one slot on 3 nodes, two clients, a crash"),
    ]
}

/// Semaphore negative controls: each must produce a counter-example. The first three
/// are small enough for the tests.
pub fn semaphore_negative() -> Vec<SemConfig> {
    let reduced = |nodes| Config::faithful(nodes, 3).network(Network::Reduced);
    vec![
        SemConfig::slots(Config::faithful(3, 3), 2, vec![1, 1, 1])
            .design(Design::CountingNodes)
            .named("semaphore negative: each node admits while it holds fewer than N"),
        SemConfig::slots(reduced(1).crashes(0), 2, vec![1, 1, 1])
            .permits_each(vec![2, 3, 3])
            .record_check(false)
            .named("semaphore negative: mixed N (2, 3, 3) without the record check"),
        SemConfig::slots(reduced(1).crashes(1), 2, vec![1, 1, 1])
            .record_check(false)
            .immediate_restart()
            .named("semaphore negative: a crashed node rejoins at once"),
        SemConfig::slots(reduced(1).crashes(1), 2, vec![1, 1, 1])
            .permits_each(vec![2, 3, 3])
            .named("semaphore negative: mixed N (2, 3, 3), the record lost in a crash"),
        SemConfig::slots(
            Config::faithful(3, 2).network(Network::Reduced),
            1,
            vec![1, 1],
        )
        .record_check(false)
        .immediate_restart()
        .named("semaphore negative: one slot on 3 nodes, a crashed node rejoins at once"),
    ]
}

/// The semaphore on several nodes (`crate::semkeys`): N slots, N + 1 or more clients,
/// 3 or 5 nodes, the lock's faults (message loss and delay, expiry at any moment, node
/// crashes that restart empty). Each must explore completely with no counter-example,
/// reaching N valid permits at once. All of them run in `cargo test` (seconds in a
/// debug build).
pub fn semaphore_nodes() -> Vec<KeysConfig> {
    vec![
        KeysConfig::new(3, 2, vec![1, 1, 1])
            .named("semaphore on 3 nodes: N=2, three clients, a crash"),
        KeysConfig::new(3, 2, vec![2, 2, 2])
            .named("semaphore on 3 nodes: N=2, three clients acquiring twice each, a crash"),
        KeysConfig::new(3, 2, vec![1, 1, 1])
            .crashes(2)
            .named("semaphore on 3 nodes: N=2, three clients, two crashes"),
        KeysConfig::new(3, 3, vec![1, 1, 1, 1])
            .named("semaphore on 3 nodes: N=3, four clients, a crash"),
        KeysConfig::new(5, 2, vec![1, 1, 1])
            .crashes(2)
            .named("semaphore on 5 nodes: N=2, three clients, two crashes"),
        // With every detail of the lock model's keys (`Detail::Full`).
        KeysConfig::new(3, 1, vec![1, 1, 1])
            .detail(Detail::Full)
            .named("semaphore on 3 nodes, full detail: N=1, three clients, a crash"),
        KeysConfig::new(3, 2, vec![1, 1])
            .detail(Detail::Full)
            .named("semaphore on 3 nodes, full detail: N=2, two clients, a crash"),
    ]
}

/// Larger runs with full detail, for the command line (`fencelock-model-check --big`,
/// release build, minutes).
pub fn semaphore_nodes_big() -> Vec<KeysConfig> {
    vec![
        KeysConfig::new(3, 2, vec![1, 1, 1])
            .detail(Detail::Full)
            .named("big: semaphore on 3 nodes, full detail: N=2, three clients, a crash"),
    ]
}

/// Negative controls of the semaphore on several nodes: each must produce a
/// counter-example.
pub fn semaphore_nodes_negative() -> Vec<KeysConfig> {
    let base = || KeysConfig::new(3, 2, vec![1, 1, 1]);
    vec![
        base()
            .mutation(KeysMutation::ImmediateRestart)
            .named("semaphore on 3 nodes negative: a crashed node rejoins at once"),
        base()
            .mutation(KeysMutation::IgnoreExpiry)
            .named("semaphore on 3 nodes negative: a permit outlives an expired key"),
        base()
            .mutation(KeysMutation::HalfQuorum)
            .named("semaphore on 3 nodes negative: a permit on one node of three"),
        KeysConfig::new(4, 2, vec![1, 1, 1])
            .mutation(KeysMutation::HalfQuorum)
            .named("semaphore on 4 nodes negative: a permit on two nodes of four"),
        base()
            .detail(Detail::Full)
            .mutation(KeysMutation::ImmediateRestart)
            .named("semaphore on 3 nodes negative, full detail: a crashed node rejoins at once"),
    ]
}
