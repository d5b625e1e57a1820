//! The checker on hand-made histories: it must flag what is wrong, say nothing about
//! what is right, and show the events involved.

use fencelock_chaos::checker::{Bounds, Kind, check};
use fencelock_chaos::history::{
    FaultEvent, History, NodeProbe, Res, ResourceOp, WorkerEvent, lease_id,
};

const MS: u64 = 1_000_000;

fn bounds() -> Bounds {
    Bounds {
        ttl_ns: 1000 * MS,
        retry_ns: 100 * MS,
        slack_ns: 500 * MS,
        max_gap_ns: None,
    }
}

fn grant(
    w: u32,
    s: u32,
    token: u64,
    t: u64,
    valid_ms: u64,
    release_ms: Option<u64>,
) -> Vec<WorkerEvent> {
    let lease = lease_id(w, s);
    let mut v = vec![WorkerEvent::Grant {
        lease,
        key: "k".into(),
        token,
        value: format!("v{w}-{s}"),
        t_req: t - MS,
        t_grant: t,
        valid_until: t + valid_ms * MS,
        max_wait_ms: 1000,
        renewing: false,
    }];
    if let Some(r) = release_ms {
        v.push(WorkerEvent::Releasing {
            lease,
            t: t + r * MS,
        });
    }
    v
}

/// One resource operation; `state` is (counter, a, b) after it.
fn op(
    seq: u64,
    res: Res,
    op: &str,
    lease: u64,
    token: u64,
    ok: bool,
    state: (i64, i64, i64),
) -> ResourceOp {
    let (c, a, b) = state;
    ResourceOp {
        seq,
        res,
        op: op.into(),
        lease,
        token,
        ok,
        counter: c,
        a,
        b,
        permit: None,
    }
}

/// Two holders in turn, each a clean read-modify-write on both copies.
fn clean() -> History {
    let (l1, l2) = (lease_id(0, 1), lease_id(1, 1));
    let mut workers = grant(0, 1, 10, 100 * MS, 1000, Some(50));
    workers.extend(grant(1, 1, 11, 200 * MS, 1000, Some(50)));
    let mut resource = Vec::new();
    let mut seq = 0;
    for res in [Res::F, Res::U] {
        seq += 1;
        resource.push(op(seq, res, "read", l1, 10, true, (0, 100, 100)));
        seq += 1;
        resource.push(op(seq, res, "write", l1, 10, true, (1, 95, 105)));
        seq += 1;
        resource.push(op(seq, res, "read", l2, 11, true, (1, 95, 105)));
        seq += 1;
        resource.push(op(seq, res, "write", l2, 11, true, (2, 90, 110)));
    }
    History {
        workers,
        resource,
        start: 0,
        end: 2000 * MS,
        healed_at: Some(150 * MS),
        ledger_total: 200,
        ..History::default()
    }
}

#[test]
fn a_clean_history_has_no_violations() {
    let f = check(&clean(), bounds());
    assert!(f.violations.is_empty(), "{:#?}", f.violations);
    assert_eq!(f.stats.grants, 2);
    assert_eq!(f.stats.lost_updates[&Res::U], 0);
}

#[test]
fn overlapping_claims_are_flagged_with_both_grants() {
    let mut h = clean();
    // The second lease is granted while the first still claims (no release, valid 1 s).
    h.workers = grant(0, 1, 10, 100 * MS, 1000, None);
    h.workers.extend(grant(1, 1, 11, 200 * MS, 1000, Some(50)));
    let f = check(&h, bounds());
    let v = f.get(Kind::LockOverlap).expect("overlap not flagged");
    assert_eq!(v.events.len(), 2);
    assert!(v.events[0].contains("token=10") && v.events[1].contains("token=11"));
}

#[test]
fn a_claim_that_ended_at_valid_until_does_not_overlap() {
    let mut h = clean();
    // Paused past its TTL: released late, but its claim ended at valid_until.
    h.workers = grant(0, 1, 10, 100 * MS, 50, Some(5000));
    h.workers.extend(grant(1, 1, 11, 200 * MS, 1000, Some(50)));
    assert!(check(&h, bounds()).get(Kind::LockOverlap).is_none());
}

#[test]
fn a_stale_write_inside_another_rmw_is_flagged_as_everything_it_breaks() {
    let mut h = clean();
    let (l1, l2) = (lease_id(0, 1), lease_id(1, 1));
    // Unfenced copy: l1 reads, l2 reads and writes, l1 (stale) writes from its old read.
    h.resource.retain(|o| o.res == Res::F);
    h.resource.extend([
        op(11, Res::U, "read", l1, 10, true, (0, 100, 100)),
        op(12, Res::U, "read", l2, 11, true, (0, 100, 100)),
        op(13, Res::U, "write", l2, 11, true, (1, 97, 103)),
        op(14, Res::U, "write", l1, 10, true, (1, 95, 108)),
    ]);
    let f = check(&h, bounds());
    for k in [
        Kind::StaleAccepted(Res::U),
        Kind::Interleaved(Res::U),
        Kind::LostUpdate(Res::U),
        Kind::LedgerDelta(Res::U),
    ] {
        assert!(f.get(k).is_some(), "{k} not flagged: {:#?}", f.violations);
    }
    assert!(f.get(Kind::StaleAccepted(Res::F)).is_none());
    let inter = f.get(Kind::Interleaved(Res::U)).unwrap();
    assert!(
        inter.events.iter().any(|e| e.contains("res#12")),
        "{:#?}",
        inter.events
    );
    assert_eq!(f.stats.ledger_delta[&Res::U], 3);
}

#[test]
fn a_refused_stale_write_is_counted_not_flagged() {
    let mut h = clean();
    let (l1, l2) = (lease_id(0, 1), lease_id(1, 1));
    h.resource = vec![
        op(1, Res::F, "read", l1, 10, true, (0, 100, 100)),
        op(2, Res::F, "read", l2, 11, true, (0, 100, 100)),
        op(3, Res::F, "write", l2, 11, true, (1, 97, 103)),
        op(4, Res::F, "write", l1, 10, false, (1, 97, 103)),
    ];
    let f = check(&h, bounds());
    assert!(f.violations.is_empty(), "{:#?}", f.violations);
    assert_eq!(f.stats.stale_writes_rejected, 1);
}

#[test]
fn token_reuse_and_order_are_flagged() {
    let mut h = clean();
    h.workers = grant(0, 1, 10, 100 * MS, 50, Some(40));
    h.workers.extend(grant(1, 1, 10, 300 * MS, 50, Some(40)));
    let f = check(&h, bounds());
    assert!(f.get(Kind::TokenReuse).is_some());
    assert!(f.get(Kind::TokenOrder).is_some());
}

#[test]
fn no_grant_after_the_heal_is_flagged() {
    let mut h = clean();
    h.healed_at = Some(300 * MS);
    let f = check(&h, bounds());
    assert!(f.get(Kind::NoRecovery).is_some());
}

#[test]
fn an_acquire_past_its_deadline_is_flagged() {
    let mut h = clean();
    h.workers.push(WorkerEvent::AcquireFailed {
        worker: 3,
        t_req: 0,
        t_end: 3000 * MS,
        max_wait_ms: 1000,
        kind: "Timeout".into(),
        message: "gave up".into(),
    });
    assert!(check(&h, bounds()).get(Kind::AcquireOverran).is_some());
}

fn probe(t_ms: u64, value: &str, pttl_ms: i64) -> FaultEvent {
    FaultEvent {
        t: t_ms * MS,
        what: "probe".into(),
        paused_worker: None,
        until: None,
        probe: vec![NodeProbe {
            node: 2,
            value: Some(value.into()),
            pttl_ms,
        }],
    }
}

#[test]
fn a_key_no_lease_was_granted_with_is_a_stray() {
    let mut h = clean();
    h.faults = vec![probe(300, "ghost", 1900), probe(700, "ghost", 1500)];
    let f = check(&h, bounds());
    let v = f.get(Kind::StrayKey).expect("stray key not flagged");
    assert!(v.events[0].contains("ghost"));
    // A granted lease's value is not a stray.
    h.faults = vec![probe(300, "v0-1", 900), probe(700, "v0-1", 500)];
    assert!(check(&h, bounds()).get(Kind::StrayKey).is_none());
}

#[test]
fn a_renewing_lease_claims_until_released_and_a_loss_is_flagged() {
    let mut h = clean();
    // Renewing: its claim runs past `valid_until` at grant, until it is released …
    h.workers = grant(0, 1, 10, 100 * MS, 50, Some(300));
    if let WorkerEvent::Grant { renewing, .. } = &mut h.workers[0] {
        *renewing = true;
    }
    h.workers.extend(grant(1, 1, 11, 200 * MS, 1000, Some(50)));
    assert!(check(&h, bounds()).get(Kind::LockOverlap).is_some());
    // … or lost, which is a violation of its own.
    h.workers.push(WorkerEvent::Lost {
        lease: lease_id(0, 1),
        t: 150 * MS,
        message: "renewal did not reach a majority".into(),
    });
    let f = check(&h, bounds());
    assert!(f.get(Kind::LockOverlap).is_none(), "{:#?}", f.violations);
    assert!(f.get(Kind::LeaseLost).is_some());
    assert_eq!(f.stats.leases_lost, 1);
}

#[test]
fn an_overstated_claim_is_flagged() {
    let mut h = clean();
    let ok = WorkerEvent::ClaimChecked {
        lease: lease_id(0, 1),
        t: 120 * MS,
        claimed_us: 1_000_000,
        majority_us: 1_000_500,
        extend_ms: 1000,
    };
    h.workers.push(ok);
    assert!(check(&h, bounds()).get(Kind::ValidityOverstated).is_none());
    h.workers.push(WorkerEvent::ClaimChecked {
        lease: lease_id(0, 1),
        t: 130 * MS,
        claimed_us: 1_000_000,
        majority_us: 500_000,
        extend_ms: 1000,
    });
    let f = check(&h, bounds());
    assert_eq!(f.get(Kind::ValidityOverstated).map(|v| v.count), Some(1));
}

#[test]
fn a_lock_left_unused_while_someone_waits_is_flagged() {
    let mut h = clean();
    // w0 releases at 150 ms; w1 waited since 120 ms and gets it at 2 s.
    h.workers = grant(0, 1, 10, 100 * MS, 1000, Some(50));
    h.workers.extend(grant(1, 1, 11, 2000 * MS, 1000, Some(50)));
    if let WorkerEvent::Grant { t_req, .. } = &mut h.workers[2] {
        *t_req = 120 * MS;
    }
    h.end = 3000 * MS;
    h.healed_at = None;
    let b = Bounds {
        max_gap_ns: Some(1000 * MS),
        ..bounds()
    };
    assert!(check(&h, b).get(Kind::Blocked).is_some());
    // Nobody waiting: an idle lock is no violation.
    if let WorkerEvent::Grant { t_req, .. } = &mut h.workers[2] {
        *t_req = 1990 * MS;
    }
    assert!(check(&h, b).get(Kind::Blocked).is_none());
}

/// A semaphore's entry or exit as the resource logs it; `inside` is its count after.
fn sem_op(seq: u64, res: Res, op: &str, lease: u64, permit: &str, inside: i64) -> ResourceOp {
    ResourceOp {
        seq,
        res,
        op: op.into(),
        lease,
        token: 1,
        ok: true,
        counter: inside,
        a: 0,
        b: 0,
        permit: Some(permit.into()),
    }
}

/// Two permits: w0 and w1 inside at once is fine; w2 entering on w0's permit while w0
/// is still inside the unfenced copy makes 3 — flagged there, with who was inside.
/// On the fenced copy w2's entry evicts w0: never 3.
#[test]
fn a_semaphore_holder_too_many_at_the_resource_is_flagged() {
    let (l0, l1, l2) = (lease_id(0, 1), lease_id(1, 1), lease_id(2, 1));
    let mut h = History {
        permits: Some(2),
        ledger_total: 2000,
        start: 0,
        end: 1000 * MS,
        ..History::default()
    };
    let mut seq = 0;
    let mut next = || {
        seq += 1;
        seq
    };
    for (res, third) in [(Res::F, 2), (Res::U, 3)] {
        h.resource.push(sem_op(next(), res, "enter", l0, "p0", 1));
        h.resource.push(sem_op(next(), res, "enter", l1, "p1", 2));
        if res == Res::F {
            h.resource.push(sem_op(next(), res, "evict", l0, "p0", 1));
        }
        h.resource
            .push(sem_op(next(), res, "enter", l2, "p0", third));
        h.resource
            .push(sem_op(next(), res, "leave", l2, "p0", third - 1));
        h.resource
            .push(sem_op(next(), res, "leave", l1, "p1", third - 2));
    }
    let f = check(&h, bounds());
    assert!(
        f.get(Kind::OverAdmitted(Res::F)).is_none(),
        "{:#?}",
        f.violations
    );
    let v = f
        .get(Kind::OverAdmitted(Res::U))
        .expect("3 inside with 2 permits");
    assert_eq!(v.count, 1);
    assert_eq!(v.events.len(), 4, "{:#?}", v.events);
    assert_eq!(f.stats.most_inside.get(&Res::U), Some(&3));
    // No read-modify-write in a semaphore's run: the ledger checks stay quiet.
    assert!(f.get(Kind::LedgerDelta(Res::U)).is_none());
    assert!(f.get(Kind::LostUpdate(Res::U)).is_none());
    // The same log judged with 3 permits is clean.
    h.permits = Some(3);
    assert!(check(&h, bounds()).violations.is_empty());
}
