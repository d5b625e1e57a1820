//! The reduced network must keep every token outcome of the literal one (the
//! argument is in the docs of `Network::Reduced`). Checked here with real numbers
//! (no normalisation) on bounds small enough for a debug build: every combination
//! of lease tokens and node counters that the literal model reaches, the reduced
//! model reaches too. `fencelock-model-check --cross-check` runs larger bounds.

use fencelock_model::{Config, CounterStart, Network, outcomes};

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
