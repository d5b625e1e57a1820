//! The semaphore on several nodes (`docs/semaphore.md`, "Why at most N";
//! `fencelock_model::semkeys`): N slots, N + 1 clients or more, 3 and 5 nodes, the
//! lock's faults. Every faithful configuration must hold P-slot and P-sem, reaching N
//! valid permits at once and handing permits out after crashes; every negative control
//! must find its counter-example (run with `--nocapture` to see it); and the reduced
//! detail must keep every outcome of the full one.

use fencelock_model::semkeys;
use fencelock_model::{KeysConfig, SemProperty, check_keys, suite};

#[test]
fn faithful_multi_node_configurations_hold() {
    for cfg in suite::semaphore_nodes() {
        assert!(cfg.is_faithful(), "{cfg}");
        let outcome = check_keys(&cfg);
        println!("{}", outcome.summary());
        assert!(
            outcome.passed(),
            "{}\n{}",
            outcome.summary(),
            outcome.render()
        );
        // Not vacuous: N permits valid at once, and permits handed out after a crash.
        assert_eq!(outcome.most_valid, cfg.slots, "{}", outcome.summary());
        assert!(outcome.hand_outs_after_crash > 0, "{}", outcome.summary());
    }
}

#[test]
fn every_multi_node_negative_control_breaks_p_slot() {
    let names: Vec<String> = suite::semaphore_nodes_negative()
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(
        names,
        [
            "semaphore on 3 nodes negative: a crashed node rejoins at once",
            "semaphore on 3 nodes negative: a permit outlives an expired key",
            "semaphore on 3 nodes negative: a permit on one node of three",
            "semaphore on 4 nodes negative: a permit on two nodes of four",
            "semaphore on 3 nodes negative, full detail: a crashed node rejoins at once",
        ]
    );
    for cfg in suite::semaphore_nodes_negative() {
        assert!(!cfg.is_faithful(), "{cfg}");
        let outcome = check_keys(&cfg);
        println!("{}", outcome.summary());
        println!("{}", outcome.render());
        let Some((property, _)) = &outcome.counterexample else {
            panic!("no counter-example: {}", outcome.summary());
        };
        assert_eq!(*property, SemProperty::SlotShared, "{}", outcome.render());
    }
}

#[test]
fn reduced_detail_keeps_every_outcome_of_the_full_one() {
    for cfg in [
        KeysConfig::new(3, 2, vec![1, 1]),
        KeysConfig::new(3, 1, vec![1, 1, 1]).crashes(2),
        KeysConfig::new(2, 2, vec![1, 1, 1]),
    ] {
        let (full, reduced, missing) =
            semkeys::cross_check(&cfg).unwrap_or_else(|| panic!("incomplete: {cfg}"));
        println!("{cfg}\n  full {full} projections, reduced {reduced}");
        assert!(
            missing.is_empty(),
            "{cfg}: missing from the reduced run: {missing:?}"
        );
    }
}
