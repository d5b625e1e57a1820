//! The peers' code paths of the bench (`--only peers,sem`) on real redis-server nodes,
//! with the real Node.js packages (`tests/interop/node_modules`, installed by
//! `scripts/test`): every client runs, reports figures, and the semaphore never admits
//! more than N fencelock holders. Outcomes only: no figure is compared with a speed.

use std::time::Duration;

use fencelock_bench::w3_hot_key::Kind;
use fencelock_bench::{Plan, peers, sem, servers::Nodes};

/// The shortest plan that still runs every code path once.
fn tiny() -> Plan {
    let mut plan = Plan::new(true);
    plan.runs = 1;
    plan.w1_ops = 50;
    plan.w2_time = Duration::from_millis(150);
    plan.w3_time = Duration::from_millis(300);
    plan
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_peer_runs_w1_w2_and_w3h_on_one_node() {
    let plan = tiny();
    let nodes = Nodes::start(1, None).expect("one redis-server");

    let w1 = peers::run_w1(&plan, &nodes)
        .await
        .expect("W1 with the peers");
    assert_eq!(w1.sides.len(), peers::Peer::ALL.len());
    for s in &w1.sides {
        assert!(
            s.p50.median.is_finite() && s.ops.median > 0.0,
            "{}: {s:?}",
            s.peer.label()
        );
    }

    let w2 = peers::run_w2(&plan, &nodes)
        .await
        .expect("W2 with the peers");
    for (p, x) in &w2.sides {
        assert!(x.median > 0.0, "{}: {x:?}", p.label());
    }

    let w3h = peers::run_w3h(&plan, &nodes)
        .await
        .expect("W3H with the peers");
    let kinds: Vec<Kind> = w3h.variants.iter().map(|v| v.kind).collect();
    assert_eq!(kinds, peers::HANDOFF_KINDS);
    for v in &w3h.variants {
        // The first contender takes the free key at once, so every client has at
        // least one critical section within the run (a lost update fails the run).
        assert!(v.cs_per_s.median > 0.0, "{}: {v:?}", v.kind.label());
        assert!(v.commands_per_cs.median > 0.0, "{}", v.kind.label());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_semaphore_and_redis_semaphore_run_on_one_and_three_nodes() {
    let plan = tiny();
    for n in [1, 3] {
        let nodes = Nodes::start(n, None).expect("redis-server nodes");
        let r = sem::run(&plan, &nodes).await.expect("the semaphore row");
        assert_eq!(r.nodes, n);
        for s in &r.sides {
            assert!(
                s.permits_per_s.median > 0.0,
                "{n} node(s), {}: {s:?}",
                s.client.label(n)
            );
        }
        let fl = r.side(sem::Client::Fencelock).expect("fencelock's side");
        assert!(
            (1.0..=f64::from(sem::PERMITS)).contains(&fl.max_inside.max),
            "{n} node(s): {} fencelock holders at once",
            fl.max_inside.max
        );
    }
}
