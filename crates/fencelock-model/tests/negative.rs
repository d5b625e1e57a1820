//! Negative controls: each configuration breaks an assumption of docs/fencing.md or
//! changes the protocol, and the checker must find a counter-example — proof that
//! it can see the failures it is there to rule out. The shortest counter-example is
//! printed (run with `--nocapture`).

use fencelock_model::{Property, check, suite};

fn fails(name: &str, property: Property) {
    let cfg = suite::named(name);
    assert!(!cfg.is_faithful(), "{name} is a faithful configuration");
    let outcome = check(&cfg);
    println!("{}", outcome.summary());
    let Some(c) = &outcome.counterexample else {
        panic!("no counter-example: {}", outcome.summary());
    };
    println!("{}", c.render(&cfg));
    assert_eq!(c.property, property, "{}", c.render(&cfg));
}

#[test]
fn every_negative_control_has_a_test() {
    let tested = [
        "negative: a restarted node counts from 0",
        "negative: a restarted node's clock is 1 behind the largest counter",
        "negative: restarts above every lease token only (not every counter)",
        "negative: no commit round",
        "negative: commit replies ignored",
        "negative: commit raises the counter without checking the holder",
        "negative, literal network: restarted nodes count from 0",
        "negative: counters retired ahead of the node's clock (skewed clocks)",
        "negative: a grant taken after the majority below the token counts",
    ];
    let names: Vec<String> = suite::negative().into_iter().map(|c| c.name).collect();
    assert_eq!(names, tested);
}

#[test]
fn restart_from_zero() {
    fails("negative: a restarted node counts from 0", Property::Unique);
}

#[test]
fn restart_one_behind() {
    fails(
        "negative: a restarted node's clock is 1 behind the largest counter",
        Property::Unique,
    );
}

#[test]
fn restart_above_leases_only() {
    fails(
        "negative: restarts above every lease token only (not every counter)",
        Property::Unique,
    );
}

#[test]
fn no_commit_round() {
    fails("negative: no commit round", Property::Order);
}

#[test]
fn commit_replies_ignored() {
    fails("negative: commit replies ignored", Property::Order);
}

#[test]
fn commit_without_holder_check() {
    fails(
        "negative: commit raises the counter without checking the holder",
        Property::Unique,
    );
}

#[test]
fn literal_restart_from_zero() {
    fails(
        "negative, literal network: restarted nodes count from 0",
        Property::Unique,
    );
}

#[test]
fn two_nodes_survive_one_restart_from_zero() {
    // Not a failure, but worth pinning down: with N = 2 every majority is both
    // nodes, so the node that kept its counter still lifts every later token above
    // the earlier ones. One lost counter needs assumption 2 only from N = 3 on.
    let cfg = fencelock_model::Config::faithful(2, 2)
        .attempts(1)
        .crashes(1)
        .expiries(2)
        .counter_start(fencelock_model::CounterStart::Fixed(0));
    let outcome = check(&cfg);
    assert!(outcome.passed(), "{}", outcome.summary());
}

#[test]
fn counters_retired_ahead_of_the_clock() {
    fails(
        "negative: counters retired ahead of the node's clock (skewed clocks)",
        Property::Order,
    );
}

#[test]
fn extra_grant_below_the_token_counts() {
    // `attempt.rs` counts a grant taken after the majority only when it is at the
    // token: one below it holds our key with a counter that nobody raises to `T`.
    fails(
        "negative: a grant taken after the majority below the token counts",
        Property::Order,
    );
}
