//! The short chaos run: every scenario once, against real `redis-server` processes
//! and worker processes, judged by the checker. Part of `cargo test`.
//!
//! Needs root (network namespaces, iptables inside them), `redis-server`, `ip`,
//! `iptables` and `cc`. A missing one FAILS the test with a message naming it; nothing
//! is skipped. Scenarios run one at a time (they share two CPU cores and measure time).

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use fencelock_chaos::scenario;

static SERIAL: Mutex<()> = Mutex::new(());

fn save_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("chaos-histories")
}

fn run(name: &str) {
    let _one_at_a_time = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let sc = scenario::by_name(name).unwrap_or_else(|| panic!("no scenario {name}"));
    let exe = Path::new(env!("CARGO_BIN_EXE_fencelock-chaos"));
    let outcome = scenario::run(&sc, exe, &save_dir(), false)
        .unwrap_or_else(|e| panic!("scenario {name} could not run here: {e}"));
    println!("{}", outcome.report());
    assert!(
        outcome.passed(),
        "scenario {name} was not as expected:\n{}",
        outcome.report()
    );
}

#[test]
fn baseline() {
    run("baseline");
}

#[test]
fn client_pause_breaks_only_the_unfenced_copy() {
    run("client-pause");
}

#[test]
fn node_pause() {
    run("node-pause");
}

#[test]
fn majority_down_then_back() {
    run("majority-down");
}

#[test]
fn restart_now_without_persistence_is_flagged() {
    run("restart-now");
}

#[test]
fn restart_after_the_ttl() {
    run("restart-delayed");
}

#[test]
fn restart_with_aof_fsync_always() {
    run("restart-aof");
}

#[test]
fn clock_jump_is_flagged() {
    run("clock-jump");
}

#[test]
fn partition_in_a_network_namespace() {
    run("partition");
}

#[test]
fn latency_blackhole_and_reset() {
    run("latency");
}

/// A node stopped for longer than the TTL while waiters kept trying, then resumed:
/// the acquires that queued up at it are applied when it wakes. fencelock claims its
/// clean-up leaves no key of a failed attempt behind; this checks that claim.
///
/// This found a real library bug (see "Library issues found" in docs/reliability.md):
/// the clean-up of a timed-out acquire could go down another connection, or meet
/// NOSCRIPT on the woken node, and the node kept the stray key for a whole TTL.
#[test]
fn no_stray_key_after_a_node_resumes() {
    run("stray-key");
}

#[test]
fn renewal_rides_out_a_paused_minority() {
    run("renew-minority-paused");
}

#[test]
fn renewal_rides_out_a_partitioned_minority() {
    run("renew-minority-partitioned");
}

#[test]
fn renewal_rides_out_a_minority_restarted_empty() {
    run("renew-minority-restarted");
}

#[test]
fn renewal_rides_out_another_owner_on_one_node() {
    run("renew-other-owner");
}

#[test]
fn renewal_with_a_paused_majority_loses_leases() {
    run("renew-majority-paused");
}

#[test]
fn extend_racing_renewal_never_overstates_validity() {
    run("extend-racing-renewal");
}

#[test]
fn overstated_claims_are_flagged() {
    run("extend-overstated");
}

#[test]
fn handoff_to_dead_waiters_costs_at_most_a_claim() {
    run("handoff-dead-waiters");
}

#[test]
fn a_dead_holder_blocking_the_lock_is_flagged() {
    run("handoff-dead-holder");
}

/// A semaphore of 2 permits, 5 workers: a paused minority never lets 3 in at the
/// resource.
#[test]
fn semaphore_rides_out_a_paused_node() {
    run("sem-node-pause");
}

/// A semaphore of 2 permits, 5 workers: a node restarted empty after the TTL never
/// lets 3 in at the resource.
#[test]
fn semaphore_rides_out_a_node_restarted_after_the_ttl() {
    run("sem-restart-delayed");
}

/// The negative control: a holder paused past its TTL is still inside the unfenced
/// copy when its permit's next holder enters (3 inside, flagged); the fenced copy,
/// which keeps the highest token per permit, never counts 3.
#[test]
fn semaphore_client_pause_over_admits_only_the_unfenced_copy() {
    run("sem-client-pause");
}
