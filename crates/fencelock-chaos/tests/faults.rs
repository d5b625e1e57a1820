//! The faults themselves, checked directly: each one must do what it says here (as
//! root, without Docker), or fail with a message naming what is missing.

use std::time::Duration;

use fencelock_chaos::faults::clock::ClockShim;
use fencelock_chaos::faults::partition::{Cut, Netns};
use fencelock_chaos::node::{NodeOptions, RedisNode};
use std::sync::Arc;

fn query<T: redis::FromRedisValue>(node: &RedisNode, cmd: &redis::Cmd) -> T {
    let mut con = node.connection().unwrap();
    cmd.query(&mut con).unwrap()
}

/// One connection attempt with a 1 s connect timeout, keeping redis-rs's error so a
/// test can ask it what happened (timed out, refused) instead of timing it: a busy
/// machine can delay a refusal past any bound, but cannot turn it into a time-out.
fn connect(node: &RedisNode) -> redis::RedisResult<redis::Connection> {
    redis::Client::open(node.url())?.get_connection_with_timeout(Duration::from_secs(1))
}

/// What a forward wall-clock jump does to a Redis 7 node: `TIME` moves, and keys set
/// with `PX` expire at once — Redis stores absolute Unix-ms deadlines and compares
/// them with the wall clock (its monotonic clock does not save them).
#[test]
fn clock_shim_moves_time_and_expires_keys() {
    let dir = tempfile::tempdir().unwrap();
    let shim = Arc::new(ClockShim::build(dir.path()).unwrap_or_else(|e| panic!("{e}")));
    let node = RedisNode::start(
        0,
        &dir.path().join("n"),
        NodeOptions {
            clock: Some(shim.clone()),
            ..NodeOptions::default()
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let before: Vec<i64> = query(&node, &redis::cmd("TIME"));
    let _: () = query(
        &node,
        redis::cmd("SET").arg("k").arg("v").arg("PX").arg(60_000),
    );
    shim.set_offset_ms(120_000).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let after: Vec<i64> = query(&node, &redis::cmd("TIME"));
    assert!(
        after[0] - before[0] >= 119,
        "TIME did not jump: {before:?} → {after:?}"
    );
    let pttl: i64 = query(&node, redis::cmd("PTTL").arg("k"));
    assert_eq!(pttl, -2, "a 60 s key should be gone after a +120 s jump");
    // The node still works (no deadlock, as with libfaketime + jemalloc).
    let _: () = query(&node, redis::cmd("SET").arg("k2").arg("v"));
}

/// A node in a namespace answers over the veth, stops answering under DROP, answers
/// again after heal; REJECT refuses at once. If namespaces cannot be created here,
/// this fails and says why.
#[test]
fn partition_cuts_and_heals() {
    let ns = Arc::new(Netns::create().unwrap_or_else(|e| {
        panic!("network namespaces are needed for the partition fault and do not work here: {e}")
    }));
    let dir = tempfile::tempdir().unwrap();
    let node = RedisNode::start(
        0,
        &dir.path().join("n"),
        NodeOptions {
            netns: Some(ns.clone()),
            ..NodeOptions::default()
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let pong: String = query(&node, &redis::cmd("PING"));
    assert_eq!(pong, "PONG");
    ns.cut(Cut::Drop).unwrap();
    match connect(&node) {
        Ok(_) => panic!("DROP did not cut the node off"),
        Err(e) => assert!(e.is_timeout(), "DROP should time out, not refuse: {e}"),
    }
    ns.heal(Cut::Drop).unwrap();
    let pong: String = query(&node, &redis::cmd("PING"));
    assert_eq!(pong, "PONG");
    ns.cut(Cut::Reject).unwrap();
    match connect(&node) {
        Ok(_) => panic!("REJECT did not cut the node off"),
        Err(e) => assert!(
            e.is_connection_refusal(),
            "REJECT should refuse (a TCP reset), not time out: {e}"
        ),
    }
    ns.heal(Cut::Reject).unwrap();
    let name = ns.name().to_string();
    drop(node);
    drop(ns);
    let list = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&list.stdout).contains(&name),
        "namespace {name} left behind"
    );
}

/// SIGSTOP makes a node silent, SIGCONT brings it back; a restart without
/// persistence comes back empty, with AOF it keeps the keys.
#[test]
fn pause_crash_restart() {
    use fencelock_chaos::node::Persistence;
    let dir = tempfile::tempdir().unwrap();
    for (persistence, survives) in [(Persistence::None, false), (Persistence::AofAlways, true)] {
        let mut node = RedisNode::start(
            0,
            &dir.path().join(format!("{persistence:?}")),
            NodeOptions {
                persistence: Some(persistence),
                ..NodeOptions::default()
            },
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let _: () = query(&node, redis::cmd("SET").arg("k").arg("v"));
        node.pause().unwrap();
        assert_eq!(node.get("k"), None, "a paused node answered");
        node.resume().unwrap();
        assert_eq!(node.get("k").as_deref(), Some("v"));
        node.crash();
        node.restart().unwrap();
        assert_eq!(node.get("k").is_some(), survives, "{persistence:?}");
    }
}
