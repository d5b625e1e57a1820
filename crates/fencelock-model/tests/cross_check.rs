//! The reduced network must keep every token outcome of the literal one (the
//! argument is in the docs of `Network::Reduced`). Checked here with real numbers
//! (no normalisation) on bounds small enough for a debug build: every combination
//! of lease tokens and node counters that the literal model reaches, the reduced
//! model reaches too. `fencelock-model-check --cross-check` runs larger bounds.

use fencelock_model::{Config, CounterStart, Network, check, outcomes};

fn included(cfg: Config) {
    let literal = cfg.clone().network(Network::Literal).normalize(false);
    let reduced = cfg.network(Network::Reduced).normalize(false);
    let (lit, lit_done) = outcomes(&literal);
    let (red, red_done) = outcomes(&reduced);
    assert!(lit_done && red_done, "cross-check bounds too large");
    let missing: Vec<_> = lit.iter().filter(|o| !red.contains(*o)).collect();
    assert!(
        missing.is_empty(),
        "{literal}: reachable on the literal network but not on the reduced one: {missing:?}"
    );
    assert!(
        lit.iter().any(|(leases, _)| leases.len() >= 2),
        "{literal}: vacuous, never two leases"
    );
}

#[test]
fn reduced_network_keeps_every_token_outcome() {
    included(
        Config::faithful(2, 2)
            .attempts(1)
            .crashes(1)
            .expiries(2)
            .counter_start(CounterStart::at_least_issued(1)),
    );
}

#[test]
fn reduced_network_keeps_every_token_outcome_with_grants_taken_after_the_majority() {
    // Three nodes, so that a reply can already be in when the majority is, and
    // counters in use at equal values, so that grants taken after the majority are at
    // the token and skip commit rounds: the literal network takes them as messages
    // in flight at the verdict, the reduced one by reading on (`State::choose_majority`).
    let cfg = Config::faithful(3, 2)
        .attempts(1)
        .crashes(0)
        .expiries(0)
        .initial_counters(vec![Some(1); 3]);
    let literal = check(&cfg.clone().network(Network::Literal));
    assert!(literal.passed(), "{}", literal.summary());
    assert!(
        literal.coverage.round_skipped > 0,
        "no grant taken after the majority saved a commit round: {}",
        literal.summary()
    );
    included(cfg);
}
