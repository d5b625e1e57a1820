//! Waiting for holders that announce nothing: the `redlock` npm package and redis-py's
//! `Lock` on the same keys as fencelock (a fleet moving to fencelock one service at a
//! time). Their releases publish no notice, so a fencelock waiter must notice them by
//! trying again — within its `silent_holder_poll`, not when their TTL runs out — and a
//! fencelock holder, which does announce, must not be polled.
//!
//! Every test asserts an outcome, not a speed: after the foreign release the key stays
//! free for a few seconds, then an intruder takes it with `SET NX` for a minute. A
//! waiter that polls gets the key in that gap (and the intruder is refused); one that
//! sleeps until the foreign TTL or its own deadline finds the intruder there and times
//! out. And a fencelock holder's waiter sends a handful of requests where polling would
//! send dozens.

mod support;

use std::sync::Arc;
use std::time::Duration;

use fencelock::{AcquireOptions, Locker};
use support::Cluster;
use support::interop::{first_line, spawn_redis_py_client, spawn_redlock_client, wait_success};

/// The foreign holder's TTL: far longer than the waiter may wait, so a waiter that
/// only wakes at the TTL's end fails the test.
const FOREIGN_TTL_MS: &str = "60000";
/// How long the foreign holder keeps the key before releasing it.
const FOREIGN_HOLD_MS: &str = "1000";
/// The waiter's patience: a fraction of the foreign TTL, plenty for any poll.
const WAIT: Duration = Duration::from_secs(20);
/// When the intruder takes the key, counted from the foreign holder's "acquired": the
/// key is free from `FOREIGN_HOLD_MS` until then (seven seconds for a 150–225 ms poll),
/// and taken long before the waiter's deadline.
const INTRUDE_AFTER: Duration = Duration::from_secs(8);

/// Takes `key` with `SET NX PX 60000` on every node `INTRUDE_AFTER` from now, as
/// another client would; returns on how many nodes it got the key.
fn intruder(cluster: &Arc<Cluster>, key: &'static str) -> tokio::task::JoinHandle<usize> {
    intruder_on(cluster, key, (0..cluster.len()).collect())
}

/// As [`intruder`], on the given nodes only (a paused node would hold it up).
fn intruder_on(
    cluster: &Arc<Cluster>,
    key: &'static str,
    nodes: Vec<usize>,
) -> tokio::task::JoinHandle<usize> {
    let cluster = Arc::clone(cluster);
    tokio::task::spawn_blocking(move || {
        std::thread::sleep(INTRUDE_AFTER);
        nodes
            .into_iter()
            .filter(|&i| {
                let taken: Option<String> = redis::cmd("SET")
                    .arg(key)
                    .arg("intruder")
                    .arg("NX")
                    .arg("PX")
                    .arg(60_000)
                    .query(&mut cluster.connection(i))
                    .expect("SET NX");
                taken.is_some()
            })
            .count()
    })
}

fn locker(cluster: &Cluster) -> Locker {
    Locker::builder()
        .stores(cluster.urls())
        .build()
        .expect("locker")
}

/// The npm client holds `ledger` on `nodes` nodes and releases it; a fencelock waiter
/// must get in before the intruder. With `paused`, that node is SIGSTOPped (connections
/// open, nothing answered) from the npm client's acquire until the waiter is done: the
/// waiter's polls are then decided by the live nodes (and the npm client's own release
/// waits for the paused node until it resumes).
async fn waiter_gets_in_after_npm_release(nodes: usize, paused: Option<usize>) {
    let cluster = Arc::new(Cluster::start(nodes));
    let urls = cluster.urls().join(",");
    let mut npm = spawn_redlock_client([
        "--mode",
        "hold",
        "--urls",
        &urls,
        "--key",
        "ledger",
        "--ttl-ms",
        FOREIGN_TTL_MS,
        "--hold-ms",
        FOREIGN_HOLD_MS,
    ]);
    let line = first_line(&mut npm);
    assert!(line.starts_with("acquired"), "npm client said {line:?}");
    if let Some(i) = paused {
        cluster.pause(i);
    }
    let live = (0..nodes).filter(|&i| Some(i) != paused).collect();
    let intruder = intruder_on(&cluster, "ledger", live);
    let locker = locker(&cluster);
    let got = locker
        .acquire_with(
            "ledger",
            Duration::from_secs(5),
            &AcquireOptions::default().max_wait(WAIT),
        )
        .await;
    let intruded = intruder.await.expect("intruder");
    if let Some(i) = paused {
        cluster.resume(i);
    }
    let lease = got.unwrap_or_else(|e| {
        panic!(
            "the waiter slept through the npm client's release (node {paused:?} paused; its \
             TTL is {FOREIGN_TTL_MS} ms, the wait {WAIT:?}): {e}"
        )
    });
    assert_eq!(intruded, 0, "the intruder got in beside the lease");
    wait_success(npm, Duration::from_secs(30));
    lease.release().await.expect("release");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiter_notices_an_npm_release_on_one_node() {
    waiter_gets_in_after_npm_release(1, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiter_notices_an_npm_release_on_three_nodes() {
    waiter_gets_in_after_npm_release(3, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiter_notices_an_npm_release_with_one_node_of_three_paused() {
    waiter_gets_in_after_npm_release(3, Some(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiter_notices_a_redis_py_release() {
    let cluster = Arc::new(Cluster::start(1));
    let mut py = spawn_redis_py_client([
        "--mode",
        "hold",
        "--url",
        &cluster.url(0),
        "--key",
        "report",
        "--ttl-ms",
        FOREIGN_TTL_MS,
        "--hold-ms",
        FOREIGN_HOLD_MS,
    ]);
    let line = first_line(&mut py);
    assert!(
        line.starts_with("acquired"),
        "redis-py client said {line:?}"
    );
    let intruder = intruder(&cluster, "report");
    let locker = locker(&cluster);
    let lease = locker
        .acquire_with(
            "report",
            Duration::from_secs(5),
            &AcquireOptions::default().max_wait(WAIT),
        )
        .await
        .unwrap_or_else(|e| panic!("the waiter slept through redis-py's release: {e}"));
    assert_eq!(
        intruder.await.expect("intruder"),
        0,
        "the intruder got in beside the lease"
    );
    wait_success(py, Duration::from_secs(30));
    lease.release().await.expect("release");
}

/// A fencelock holder announces its release, so its waiter sleeps until the notice:
/// a few attempts in all, where polling every 150–225 ms for 3 s would be ~16.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fencelock_holder_is_not_polled() {
    let cluster = Cluster::start(1);
    let holder = locker(&cluster);
    let waiter = locker(&cluster);
    let lease = holder
        .try_acquire("job", Duration::from_secs(30))
        .await
        .expect("acquire");
    cluster.reset_stats(0);
    let wait = tokio::spawn(async move {
        waiter
            .acquire_with(
                "job",
                Duration::from_secs(5),
                &AcquireOptions::default().max_wait(Duration::from_secs(30)),
            )
            .await
            .map(|l| (l, waiter))
    });
    // Until the waiter has been refused at least once, holding proves nothing.
    support::eventually("the waiter was refused", || {
        cluster.command_calls(0, "evalsha") >= 1
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let attempts = cluster.command_calls(0, "evalsha");
    lease.release().await.expect("release");
    let (got, _waiter) = wait.await.expect("join").expect("the waiter got the lock");
    got.release().await.expect("release");
    assert!(
        attempts <= 4,
        "the waiter sent {attempts} attempts while a fencelock holder (which announces \
         its release) held the key for 3 s: it polled"
    );
}

/// Issue #17's starvation: fencelock and a `redlock` npm client retrying every 20 ms
/// loop on one key over three nodes (hold 5 ms, rest 5 ms). A fencelock that slept
/// until each npm lease's TTL (2 s) got 18 critical sections in 8 s (the npm client
/// 718); polling, it gets a hundred or more. The bar, 50, sits between the two. Exclusion is checked on the shared log. (The shares themselves are
/// measured by W6 of the benchmark, not asserted here.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fencelock_is_not_starved_by_a_fast_npm_client() {
    use support::interop::{append_line, assert_exclusive};
    let cluster = Cluster::start(3);
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("cs.log");
    let time = Duration::from_secs(8);
    let npm = spawn_redlock_client([
        "--urls",
        &cluster.urls().join(","),
        "--key",
        "hot",
        "--log",
        log.to_str().expect("utf-8 path"),
        "--duration-ms",
        &time.as_millis().to_string(),
        "--hold-ms",
        "5",
        "--rest-ms",
        "5",
        "--ttl-ms",
        "2000",
        "--retry-delay-ms",
        "20",
        "--retry-jitter-ms",
        "10",
    ]);
    let locker = locker(&cluster);
    let end = tokio::time::Instant::now() + time;
    let mut seq = 0;
    while let Some(left) = end
        .checked_duration_since(tokio::time::Instant::now())
        .filter(|d| !d.is_zero())
    {
        let Ok(lease) = locker
            .acquire_with(
                "hot",
                Duration::from_secs(2),
                &AcquireOptions::default().max_wait(left),
            )
            .await
        else {
            break;
        };
        seq += 1;
        append_line(&log, &format!("fencelock enter {seq}"));
        tokio::time::sleep(Duration::from_millis(5)).await;
        append_line(&log, &format!("fencelock exit {seq}"));
        lease.release().await.expect("release");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    wait_success(npm, Duration::from_secs(30));
    let counts = assert_exclusive(&log);
    let ours = counts.get("fencelock").copied().unwrap_or(0);
    let theirs = counts.get("npm").copied().unwrap_or(0);
    eprintln!("critical sections in {time:?}: fencelock {ours}, npm {theirs}");
    assert!(
        ours >= 50,
        "fencelock had {ours} critical sections in {time:?}, the npm client {theirs}: starved"
    );
    assert!(theirs > 0, "the npm client never got in: {counts:?}");
}
