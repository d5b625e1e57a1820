//! The semaphore (`docs/semaphore.md`, "Why at most N"): N slots, each an ordinary lock
//! key, checked on the lock model's faults. Every faithful configuration must hold
//! P-slot and P-sem (and the tokens per slot), reaching N valid permits at once; every
//! negative control must find its counter-example (run with `--nocapture` to see it).

use fencelock_model::semkeys::{self, Detail};
use fencelock_model::{KeysConfig, SemProperty, check_sem, suite};

#[test]
fn faithful_semaphore_configurations_hold() {
    // The small ones; the others run from the command line (`--suite`).
    let small = [
        "semaphore: N=2, three clients, keys expire at any moment",
        "semaphore: one slot on 2 nodes, two clients, a crash",
    ];
    for cfg in suite::semaphore()
        .into_iter()
        .filter(|c| small.contains(&c.name.as_str()))
    {
        assert!(cfg.is_faithful(), "{cfg}");
        let outcome = check_sem(&cfg);
        println!("{}", outcome.summary());
        println!("{}", outcome.render());
        assert!(
            outcome.passed(),
            "{}\n{}",
            outcome.summary(),
            outcome.render()
        );
        // Not vacuous: N permits were valid at once somewhere.
        let n = cfg.permits.iter().copied().min().unwrap_or(0);
        assert_eq!(outcome.most_valid, n, "{}", outcome.summary());
        // The multi-node check (`semkeys`, tests/semaphore_nodes.rs) drops counters,
        // tokens and the commit round: every combination of valid permits reached here
        // must be reached there too, at both details.
        for detail in [Detail::Full, Detail::Reduced] {
            let keys = KeysConfig::new(cfg.lock.nodes, cfg.slot_count(), cfg.acquires.clone())
                .crashes(cfg.lock.crashes)
                .detail(detail);
            let (reached, complete) = semkeys::holdings(&keys);
            assert!(complete, "{keys}");
            let missing: Vec<_> = outcome
                .holdings
                .iter()
                .filter(|h| !semkeys::covers(&reached, h))
                .collect();
            assert!(missing.is_empty(), "{keys}: missing {missing:?}");
            println!(
                "  {} combinations of valid permits, all reached by {keys}",
                outcome.holdings.len()
            );
        }
    }
}

fn fails(name: &str, expected: fn(SemProperty) -> bool) {
    let cfg = suite::semaphore_negative()
        .into_iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no configuration named {name:?}"));
    assert!(!cfg.is_faithful(), "{name} is a faithful configuration");
    let outcome = check_sem(&cfg);
    println!("{}", outcome.summary());
    println!("{}", outcome.render());
    let Some((property, _)) = outcome.counterexample else {
        panic!("no counter-example: {}", outcome.summary());
    };
    assert!(expected(property), "{}", outcome.render());
}

#[test]
fn every_semaphore_negative_control_has_a_test() {
    // The last two (about 145 000 states each) run from the command line only.
    let tested = [
        "semaphore negative: each node admits while it holds fewer than N",
        "semaphore negative: mixed N (2, 3, 3) without the record check",
        "semaphore negative: a crashed node rejoins at once",
        "semaphore negative: mixed N (2, 3, 3), the record lost in a crash",
        "semaphore negative: one slot on 3 nodes, a crashed node rejoins at once",
    ];
    let names: Vec<String> = suite::semaphore_negative()
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(names, tested);
}

#[test]
fn counting_nodes_admits_more_than_n() {
    fails(
        "semaphore negative: each node admits while it holds fewer than N",
        |p| matches!(p, SemProperty::TooManyPermits { valid: 3, bound: 2 }),
    );
}

#[test]
fn mixed_n_without_the_record_exceeds_the_smaller_n() {
    fails(
        "semaphore negative: mixed N (2, 3, 3) without the record check",
        |p| matches!(p, SemProperty::TooManyPermits { valid: 3, bound: 2 }),
    );
}

#[test]
fn immediate_restart_shares_a_slot() {
    fails("semaphore negative: a crashed node rejoins at once", |p| {
        p == SemProperty::SlotShared
    });
}
