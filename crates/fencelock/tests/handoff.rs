//! Hand-off: waiters wake on the holder's release notice (or at the end of its TTL),
//! not after a polling interval. Real redis-server processes throughout.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use fencelock::{AcquireOptions, Locker};
use support::{Cluster, eventually};

/// A locker whose polling interval is one hour: it can only get in quickly through a
/// release notice or the holder's TTL.
fn patient(cluster: &Cluster) -> Locker {
    Locker::builder()
        .stores(cluster.urls())
        .retry_delay(Duration::from_secs(3600))
        .retry_jitter(Duration::from_millis(5))
        .request_timeout(Duration::from_secs(1))
        .build()
        .expect("locker")
}

fn forever() -> AcquireOptions {
    AcquireOptions::default().wait_forever()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiter_wakes_on_release_not_on_retry_interval() {
    let cluster = Cluster::start(3);
    let holder = patient(&cluster);
    let waiter = patient(&cluster);
    let lease = holder
        .acquire("h", Duration::from_secs(60))
        .await
        .expect("acquire");
    let task = tokio::spawn(async move {
        waiter
            .acquire_with("h", Duration::from_secs(5), &forever())
            .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!task.is_finished());
    lease.release().await.expect("release");
    let got = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the waiter was not woken by the release")
        .expect("task")
        .expect("acquire");
    got.release().await.expect("release");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_holder_hands_over_at_its_ttl() {
    let cluster = Cluster::start(3);
    let waiter = patient(&cluster);
    // A holder that dies without releasing: its key just sits there with a TTL.
    for i in 0..3 {
        cluster.set(i, "crashed", "dead-holder-value", 1500);
    }
    let got = tokio::time::timeout(
        Duration::from_secs(10),
        waiter.acquire_with("crashed", Duration::from_secs(5), &forever()),
    )
    .await
    .expect("waiter did not get the lock after the dead holder's TTL")
    .expect("acquire");
    got.release().await.expect("release");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn npm_holder_releases_and_fencelock_waiter_gets_in() {
    support::interop::ensure_node_modules();
    let cluster = Cluster::start(3);
    let urls = cluster.urls().join(",");
    let mut npm = support::interop::spawn_redlock_client([
        "--mode",
        "hold",
        "--urls",
        &urls,
        "--key",
        "npm-held",
        "--ttl-ms",
        "3000",
        "--hold-ms",
        "800",
    ]);
    {
        use std::io::BufRead;
        let mut line = String::new();
        std::io::BufReader::new(npm.stdout.as_mut().expect("stdout"))
            .read_line(&mut line)
            .expect("read");
        assert!(line.starts_with("acquired"), "npm client said {line:?}");
    }
    let waiter = patient(&cluster);
    let err = waiter
        .try_acquire("npm-held", Duration::from_secs(5))
        .await
        .expect_err("held by the npm client");
    assert!(err.is_contended(), "{err}");
    // The npm client never publishes a release notice: the waiter, whose polling
    // interval is an hour, must still get in — at the latest when the TTL it was told
    // by the refused attempt (3 s) runs out.
    let got = tokio::time::timeout(
        Duration::from_secs(40),
        waiter.acquire_with("npm-held", Duration::from_secs(5), &forever()),
    )
    .await
    .expect("fencelock waiter never got the lock the npm client released")
    .expect("acquire");
    support::interop::wait_success(npm, Duration::from_secs(30));
    got.release().await.expect("release");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_contenders_exclusive_every_one_gets_in_no_leaks() {
    // Default mode on three nodes promises exclusion and that nobody waits forever
    // (a woken waiter is the first in line), not turns: fair mode does (below).
    let cluster = Cluster::start(3);
    // (The lockers stay alive until the end: the leak check is about what they hold.)
    let Contention {
        counts,
        lockers: _lockers,
        ..
    } = contend(&cluster, false, 2000).await;
    for (id, &n) in counts.iter().enumerate() {
        assert!(n > 0, "contender {id} never got in: {counts:?}");
    }
    assert_no_subscriptions_left(&cluster, "fair:fencelock:*").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_contenders_on_one_node_take_turns_by_hand_off() {
    let cluster = Cluster::start(1);
    // Default mode: on one node a release hands the lock to the first in line, so
    // the lock goes round even without fair mode.
    // (The lockers stay alive until the end: the leak check is about what they hold.)
    let Contention {
        counts,
        lockers: _lockers,
        ..
    } = contend(&cluster, false, 2000).await;
    let total: usize = counts.iter().sum();
    for (id, &n) in counts.iter().enumerate() {
        assert!(
            n * 16 >= total,
            "contender {id} got {n} of {total} sections: {counts:?}"
        );
    }
    assert_eq!(cluster.get(0, "fair"), None, "the lock is still held");
    assert_eq!(in_line(&cluster, "fair"), 0, "waiters left in line");
    assert_no_subscriptions_left(&cluster, "fair:fencelock:*").await;
}

/// Every waiter is gone: once the subscriptions' linger time (2 s) is over, no channel
/// matching `pattern` has a subscriber on any node.
async fn assert_no_subscriptions_left(cluster: &Cluster, pattern: &str) {
    for _ in 0..100 {
        if channels(cluster, pattern).is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        channels(cluster, pattern),
        Vec::<String>::new(),
        "subscriptions left behind"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiter_survives_pubsub_node_restart() {
    let cluster = Cluster::start(1);
    let holder = patient(&cluster);
    let waiter = patient(&cluster);
    let lease = holder
        .acquire("restart", Duration::from_secs(60))
        .await
        .expect("acquire");
    let task = tokio::spawn(async move {
        waiter
            .acquire_with("restart", Duration::from_secs(5), &forever())
            .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Subscribed (on one node, to its client's own channel of the key).
    assert_eq!(channels(&cluster, "restart:fencelock:*").len(), 1);
    // The node restarts empty: the lock is gone with it, and the waiter's pub/sub
    // connection broke. It must reconnect (or retry) and get the lock.
    cluster.restart(0);
    let got = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("waiter stuck after the node restart")
        .expect("task")
        .expect("acquire");
    assert!(got.token() > lease.token());
    got.release().await.expect("release");
    drop(lease);
}

/// What [`contend`] saw.
struct Contention {
    /// Critical sections per contender.
    counts: Vec<usize>,
    /// The most sections other contenders got while one acquire call waited (how often
    /// a waiter was overtaken, plus the ones legitimately ahead of it in line).
    most_overtaken: usize,
    /// The lockers, still alive, so that what they leave subscribed can be checked.
    lockers: Vec<Locker>,
}

/// Runs `CONTENDERS` fair (or default) contenders on one key until `sections` critical
/// sections are done. Asserts mutual exclusion.
async fn contend(cluster: &Cluster, fair: bool, sections: usize) -> Contention {
    const CONTENDERS: usize = 8;
    let inside = Arc::new(AtomicBool::new(false));
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for id in 0..CONTENDERS {
        // Polling interval one hour: only release notices (or TTLs) move the line.
        let l = Locker::builder()
            .stores(cluster.urls())
            .fair(fair)
            .retry_delay(Duration::from_secs(3600))
            .request_timeout(Duration::from_secs(1))
            .build()
            .expect("locker");
        let inside = inside.clone();
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = 0usize;
            let mut most_overtaken = 0usize;
            while done.load(Ordering::SeqCst) < sections {
                let before = done.load(Ordering::SeqCst);
                let lease = l
                    .acquire_with("fair", Duration::from_secs(5), &forever())
                    .await
                    .expect("acquire");
                most_overtaken = most_overtaken.max(done.load(Ordering::SeqCst) - before);
                assert!(
                    !inside.swap(true, Ordering::SeqCst),
                    "contender {id} entered while another was inside"
                );
                done.fetch_add(1, Ordering::SeqCst);
                mine += 1;
                tokio::task::yield_now().await;
                inside.store(false, Ordering::SeqCst);
                lease.release().await.expect("release");
            }
            (mine, most_overtaken, l)
        }));
    }
    // Mid-run the waiters listen for notices (so the leak checks after the run are
    // about subscriptions that existed).
    tokio::time::timeout(Duration::from_secs(120), async {
        while done.load(Ordering::SeqCst) < sections / 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the contenders got stuck before half-way");
    assert!(
        !channels(cluster, "fair:fencelock:*").is_empty(),
        "nobody subscribed to the key's notices mid-run"
    );
    let mut seen = Contention {
        counts: Vec::new(),
        most_overtaken: 0,
        lockers: Vec::new(),
    };
    for t in tasks {
        let (mine, overtaken, l) = tokio::time::timeout(Duration::from_secs(120), t)
            .await
            .expect("contenders finished")
            .expect("task");
        seen.counts.push(mine);
        seen.most_overtaken = seen.most_overtaken.max(overtaken);
        seen.lockers.push(l);
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fair_mode_serves_contenders_in_turn() {
    let cluster = Cluster::start(3);
    let Contention {
        counts,
        most_overtaken,
        lockers,
    } = contend(&cluster, true, 800).await;
    let total: usize = counts.iter().sum();
    for (id, &n) in counts.iter().enumerate() {
        assert!(
            n * 16 >= total,
            "fair mode: contender {id} got {n} of {total} sections: {counts:?}"
        );
    }
    // In turn: while one acquire waits, each of the 7 others gets in at most once
    // before it (they were ahead in line, or queue up behind it). Twice the line's
    // length allows for a waiter that was descheduled between reading the count and
    // taking its ticket; a waiter overtaken more often was not served in turn.
    assert!(
        most_overtaken <= 2 * counts.len(),
        "fair mode: a waiter saw {most_overtaken} sections go to others first"
    );
    // Nobody waits any more: the queues empty (or go). A waiter that got the lock on a
    // majority leaves the line of a node that refused it in the background (its
    // `LeaveQueue`, sent when that node's late reply comes), so the lines are checked
    // after the lockers finished their background work, and given a while for a late
    // reply's leave: what must not happen is an entry that stays.
    for l in &lockers {
        l.shutdown().await;
    }
    for i in 0..3 {
        let mut c = cluster.connection(i);
        let mut queued: u64 = u64::MAX;
        for _ in 0..100 {
            queued = redis::cmd("ZCARD")
                .arg("fair:fencelock:queue")
                .query(&mut c)
                .expect("zcard");
            if queued == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(queued, 0, "node {i} still has waiters in line");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashed_waiter_does_not_block_the_line() {
    let cluster = Cluster::start(1);
    // A waiter that took a place in line long ago and died: its entry expires soon.
    let mut c = cluster.connection(0);
    let now_ms: u64 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    let _: () = redis::pipe()
        .cmd("ZADD")
        .arg("line:fencelock:queue")
        .arg(1)
        .arg("dead-waiter")
        .cmd("ZADD")
        .arg("line:fencelock:queue-deadline")
        .arg(now_ms + 800)
        .arg("dead-waiter")
        .query(&mut c)
        .expect("seed queue");
    let l = Locker::builder()
        .stores(cluster.urls())
        .fair(true)
        .build()
        .expect("locker");
    let err = l
        .try_acquire("line", Duration::from_secs(5))
        .await
        .expect_err("the dead waiter is first in line for now");
    assert!(err.is_contended(), "{err}");
    let lease = tokio::time::timeout(
        Duration::from_secs(10),
        l.acquire_with("line", Duration::from_secs(5), &forever()),
    )
    .await
    .expect("the line stayed blocked by a dead waiter")
    .expect("acquire");
    lease.release().await.expect("release");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_fair_waiter_leaves_the_line() {
    let cluster = Cluster::start(3);
    let holder = patient(&cluster);
    let lease = holder
        .acquire("leave", Duration::from_secs(30))
        .await
        .expect("acquire");
    let waiter = Locker::builder()
        .stores(cluster.urls())
        .fair(true)
        .build()
        .expect("locker");
    let cancelled = tokio::time::timeout(
        Duration::from_millis(400),
        waiter.acquire_with("leave", Duration::from_secs(5), &forever()),
    )
    .await;
    assert!(cancelled.is_err(), "the waiter cannot have got a held lock");
    waiter.shutdown().await;
    for i in 0..3 {
        let mut c = cluster.connection(i);
        let queued: u64 = redis::cmd("ZCARD")
            .arg("leave:fencelock:queue")
            .query(&mut c)
            .expect("zcard");
        assert_eq!(queued, 0, "node {i}: the cancelled waiter is still in line");
    }
    lease.release().await.expect("release");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fair_mode_and_npm_redlock_never_overlap() {
    support::interop::ensure_node_modules();
    let cluster = Cluster::start(3);
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("cs.log");
    let urls = cluster.urls().join(",");
    let npm = support::interop::spawn_redlock_client([
        "--urls",
        &urls,
        "--key",
        "mixed",
        "--ttl-ms",
        "5000",
        "--iterations",
        "30",
        "--hold-ms",
        "2",
        "--log",
        log.to_str().expect("utf-8"),
    ]);
    let mut fair = Vec::new();
    for id in 0..3 {
        let l = Locker::builder()
            .stores(cluster.urls())
            .fair(true)
            .build()
            .expect("locker");
        let log = log.clone();
        fair.push(tokio::spawn(async move {
            for seq in 0..20 {
                let lease = l
                    .acquire_with("mixed", Duration::from_secs(5), &forever())
                    .await
                    .expect("acquire");
                support::interop::append_line(&log, &format!("fl{id} enter {seq}"));
                tokio::time::sleep(Duration::from_millis(2)).await;
                support::interop::append_line(&log, &format!("fl{id} exit {seq}"));
                lease.release().await.expect("release");
            }
        }));
    }
    for t in fair {
        tokio::time::timeout(Duration::from_secs(120), t)
            .await
            .expect("fair clients finished")
            .expect("task");
    }
    support::interop::wait_success(npm, Duration::from_secs(120));
    let counts = support::interop::assert_exclusive(&log);
    assert_eq!(counts.get("npm"), Some(&30));
    for id in 0..3 {
        assert_eq!(counts.get(&format!("fl{id}")), Some(&20));
    }
}

/// The channels matching `pattern` that someone subscribes to, on every node.
fn channels(cluster: &Cluster, pattern: &str) -> Vec<String> {
    (0..cluster.len())
        .flat_map(|i| {
            redis::cmd("PUBSUB")
                .arg("CHANNELS")
                .arg(pattern)
                .query::<Vec<String>>(&mut cluster.connection(i))
                .expect("pubsub channels")
        })
        .collect()
}

/// A holder of `key` for a minute (with a locker that polls once an hour), and a
/// waiter for it with `ttl`, already in line; the waiter's task returns its result and
/// its locker.
async fn held_with_a_waiter(
    cluster: &Cluster,
    key: &'static str,
    ttl: Duration,
) -> (
    fencelock::Lease,
    tokio::task::JoinHandle<(fencelock::Result<fencelock::Lease>, Locker)>,
) {
    let holder = patient(cluster);
    let waiter = patient(cluster);
    let lease = holder
        .acquire(key, Duration::from_secs(60))
        .await
        .expect("acquire");
    let task = tokio::spawn(async move {
        let got = waiter.acquire_with(key, ttl, &forever()).await;
        (got, waiter)
    });
    eventually("the waiter is in line", || in_line(cluster, key) == 1).await;
    (lease, task)
}

fn in_line(cluster: &Cluster, key: &str) -> u64 {
    redis::cmd("ZCARD")
        .arg(format!("{key}:fencelock:queue"))
        .query(&mut cluster.connection(0))
        .expect("zcard")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_release_hands_the_key_to_the_first_waiter() {
    let cluster = Cluster::start(1);
    let (lease, task) = held_with_a_waiter(&cluster, "direct", Duration::from_secs(30)).await;
    // It listens on its own client's channel, which no other client hears.
    let inboxes = channels(&cluster, "direct:fencelock:to:*");
    assert_eq!(inboxes.len(), 1, "{inboxes:?}");
    assert_eq!(cluster.numsub(0, "direct:fencelock:released"), 0);
    let held_token = lease.token();
    lease.release().await.expect("release");
    // The release itself gave the key to the waiter: before the waiter has sent
    // anything more, the node already holds the waiter's id under the key.
    let handed = cluster.get(0, "direct").expect("the key was handed over");
    // For a short claim only (the id names it), not the waiter's 30 s TTL: a waiter
    // that died in line would cost the lock no more than that.
    let claim: i64 = handed
        .strip_prefix("handoff:")
        .and_then(|rest| rest.split(':').next())
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not a hand-off id: {handed}"));
    // (How long the key is kept for a waiter that never extends it is checked in
    // `minority.rs`: here the waiter may well have extended it already.)
    assert!(claim < 30_000, "{handed}");
    assert!(cluster.pttl(0, "direct") > 0);
    let (got, _waiter) = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the waiter never learnt of the hand-off")
        .expect("task");
    let got = got.expect("acquire");
    assert_eq!(got.value(), handed);
    assert!(got.token() > held_token);
    assert!(got.is_valid());
    // The waiter makes the key its own for its full TTL (within about half a second
    // of the notice: see `a_waiter_holds_the_lock_on_the_notice_and_extends_it_after`).
    eventually("the waiter extended the key past its claim", || {
        cluster.pttl(0, "direct") > claim
    })
    .await;
    assert_eq!(in_line(&cluster, "direct"), 0);
    // The lease is a lease like any other: renewable, and released by its value.
    got.extend(Duration::from_secs(30)).await.expect("extend");
    assert_eq!(
        got.release().await.expect("release"),
        fencelock::ReleaseOutcome::Released
    );
    assert_eq!(cluster.get(0, "direct"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_off_to_a_waiter_that_gave_up_is_passed_on() {
    let cluster = Cluster::start(1);
    let holder = patient(&cluster);
    let quitter = patient(&cluster);
    let lease = holder
        .acquire("quit", Duration::from_secs(60))
        .await
        .expect("acquire");
    // Driven by hand: the waiter is not polled while the hand-off happens, then it is
    // dropped (cancelled) with the key already handed to it.
    let wait = forever();
    let mut waiting = Box::pin(quitter.acquire_with("quit", Duration::from_secs(60), &wait));
    let early = tokio::time::timeout(Duration::from_millis(300), &mut waiting).await;
    assert!(early.is_err(), "the lock is held: {early:?}");
    assert_eq!(in_line(&cluster, "quit"), 1);
    lease.release().await.expect("release");
    let handed = cluster.get(0, "quit").expect("handed over");
    assert!(handed.starts_with("handoff:"), "{handed}");
    drop(waiting);
    // Giving up released what was handed to it (well before its 60 s TTL) …
    eventually("the abandoned hand-off is released", || {
        cluster.get(0, "quit").is_none()
    })
    .await;
    assert_eq!(in_line(&cluster, "quit"), 0);
    // … and the lock works for the next one.
    let next = holder
        .try_acquire("quit", Duration::from_secs(5))
        .await
        .expect("free again");
    next.release().await.expect("release");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_that_misses_the_hand_off_notice_finds_the_key_handed_to_it() {
    let cluster = Cluster::start(1);
    // This user may not subscribe: its waiter never hears a notice and polls.
    let _: () = redis::cmd("ACL")
        .arg(&[
            "SETUSER",
            "deaf",
            "on",
            ">deaf-pw",
            "~*",
            "resetchannels",
            "+@all",
        ])
        .query(&mut cluster.connection(0))
        .expect("acl setuser");
    let deaf = Locker::builder()
        .store(format!(
            "redis://deaf:deaf-pw@127.0.0.1:{}",
            cluster.port(0)
        ))
        .retry_delay(Duration::from_millis(100))
        .request_timeout(Duration::from_secs(1))
        .build()
        .expect("locker");
    let holder = patient(&cluster);
    let lease = holder
        .acquire("deaf", Duration::from_secs(60))
        .await
        .expect("acquire");
    let task = tokio::spawn(async move {
        deaf.acquire_with("deaf", Duration::from_secs(30), &forever())
            .await
    });
    eventually("the waiter is in line", || in_line(&cluster, "deaf") == 1).await;
    lease.release().await.expect("release");
    let handed = cluster.get(0, "deaf").expect("handed over");
    let got = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the polling waiter never took its hand-off")
        .expect("task")
        .expect("acquire");
    // Its next poll found the key holding its id: the lease is on that value, and
    // the node renewed the key's TTL for it.
    assert_eq!(got.value(), handed);
    assert!(cluster.pttl(0, "deaf") > 25_000);
    let fence: String = cluster.get(0, "deaf:fencelock:fence").expect("counter");
    assert_eq!(got.token().to_string(), fence);
    // (This user may not publish either, so another locker releases it by value.)
    assert_eq!(
        holder
            .release_value("deaf", got.value())
            .await
            .expect("release"),
        fencelock::ReleaseOutcome::Released
    );
    assert_eq!(cluster.get(0, "deaf"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_off_after_a_long_wait_still_gives_a_lease_of_the_full_ttl() {
    let cluster = Cluster::start(1);
    let (lease, task) = held_with_a_waiter(&cluster, "long", Duration::from_secs(2)).await;
    // Longer than half the waiter's TTL since its refused attempt: a lease built from
    // the notice alone would be valid for under a second of its 2 s.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let released = std::time::Instant::now();
    lease.release().await.expect("release");
    let (got, _waiter) = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the waiter never got its hand-off")
        .expect("task");
    let got = got.expect("acquire");
    assert_eq!(Some(got.value().to_string()), cluster.get(0, "long"));
    // It renewed the key instead (one request, sent after the release) and got the
    // whole TTL from there, less the drift (2 s × 0.01 + 2 ms): a lease built on the
    // notice would end before `released` + 0.5 s.
    assert!(
        got.valid_until() >= released + Duration::from_millis(1970),
        "valid for {:?} after the release",
        got.valid_until().saturating_duration_since(released)
    );
    got.release().await.expect("release");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_granted_by_a_majority_leaves_the_line_of_the_node_that_refused() {
    let cluster = Cluster::start(3);
    // A stray key of someone else on node 0 only: the majority (nodes 1 and 2) grants,
    // node 0 refuses — and, the acquire being willing to wait, puts us in its line.
    cluster.set(0, "stray", "someone-else", 60_000);
    let l = patient(&cluster);
    let lease = l
        .acquire_with("stray", Duration::from_secs(30), &forever())
        .await
        .expect("granted by the majority");
    // The entry would otherwise stay for the stray key's minute: the locker takes it
    // out in the background.
    let queued = || -> u64 {
        redis::cmd("ZCARD")
            .arg("stray:fencelock:queue")
            .query(&mut cluster.connection(0))
            .expect("zcard")
    };
    eventually("node 0's line is empty again", || queued() == 0).await;
    lease.release().await.expect("release");
}

/// Holds `key` (one node) from a thread of its own, on a runtime of its own, and
/// releases it once someone waits in its line for the notice; the thread returns the
/// token it held.
/// The test's own runtime (one thread) then runs nothing but the waiter: between the
/// waiter's acquire returning and the test's next `.await`, no task of that runtime —
/// the hand-off's extend included — can have run.
fn hold_until_someone_waits(cluster: &Cluster, key: &'static str) -> std::thread::JoinHandle<u64> {
    let url = cluster.urls()[0].clone();
    let (held, is_held) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let holder = Locker::builder().store(&url).build().expect("locker");
            let lease = holder
                .acquire(key, Duration::from_secs(60))
                .await
                .expect("acquire");
            held.send(()).expect("send");
            let mut c = redis::Client::open(url.as_str())
                .expect("client")
                .get_connection()
                .expect("connection");
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            loop {
                // A waiter's first refusal puts it in line; it then subscribes and tries
                // once more (refused again), and only then waits for the notice. Each
                // refusal runs two ZADDs (the line and its deadlines): released
                // earlier, the key would be handed over before that second attempt,
                // which would take it up — not the notice.
                if calls_on(&mut c, "zadd") >= 4 {
                    break;
                }
                assert!(std::time::Instant::now() < deadline, "nobody came to wait");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let token = lease.token().get();
            lease.release().await.expect("release");
            holder.shutdown().await;
            token
        })
    });
    is_held.recv().expect("the holder never got the lock");
    thread
}

/// How many times the node behind `c` ran `command` (a script's own calls included),
/// from `INFO commandstats`.
fn calls_on(c: &mut redis::Connection, command: &str) -> u64 {
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(c)
        .expect("info");
    let prefix = format!("cmdstat_{command}:calls=");
    stats
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// A lease of 30 s on `key` (one node), taken over on the release notice of a holder
/// that runs on a thread of its own ([`hold_until_someone_waits`]), with its locker
/// and that thread. Returns as soon as the acquire does: on a one-thread runtime,
/// nothing else of it has run since (the hand-off's extend has not been sent).
async fn taken_on_notice(
    cluster: &Cluster,
    key: &'static str,
) -> (fencelock::Lease, Locker, std::thread::JoinHandle<u64>) {
    let holder = hold_until_someone_waits(cluster, key);
    let waiter = patient(cluster);
    let got = waiter
        .acquire_with(key, Duration::from_secs(30), &forever())
        .await
        .expect("acquire");
    (got, waiter, holder)
}

/// The claim a hand-off waiter id names (`handoff:<claim_ms>:…`), in ms.
fn claim_of(waiter_id: &str) -> i64 {
    waiter_id
        .strip_prefix("handoff:")
        .and_then(|rest| rest.split(':').next())
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not a hand-off id: {waiter_id}"))
}

#[tokio::test(flavor = "current_thread")]
async fn a_waiter_holds_the_lock_on_the_notice_and_extends_it_after() {
    let cluster = Cluster::start(1);
    let (got, _waiter, holder) = taken_on_notice(&cluster, "notice").await;
    // The acquire returned on the notice: the key is still the release's short claim
    // for us — no extend has been sent (nothing else of this runtime ran since).
    let claim = claim_of(got.value());
    assert!(claim < 30_000, "{}", got.value());
    let pttl = cluster.pttl(0, "notice");
    assert!(
        pttl > 0 && pttl <= claim,
        "the key lives {pttl} ms: the acquire waited for its extend (claim {claim} ms)"
    );
    assert_eq!(cluster.get(0, "notice").as_deref(), Some(got.value()));
    // Valid for what the claim proves, not more: never past the key's expiry (read
    // before `remaining`, so the key's end is at least `pttl` after that read).
    assert!(got.is_valid());
    let remaining = got.remaining();
    assert!(
        remaining <= Duration::from_millis(pttl.unsigned_abs() + 1),
        "the lease claims {remaining:?} while its key expires in {pttl} ms"
    );
    let held = holder.join().expect("holder thread");
    assert!(got.token().get() > held);
    // The extend follows, and the lease is the full TTL's.
    eventually("the key lives past the claim", || {
        cluster.pttl(0, "notice") > claim
    })
    .await;
    eventually("the lease claims past the claim", || {
        got.remaining() > Duration::from_millis(claim.unsigned_abs())
    })
    .await;
    assert!(!got.is_lost());
    assert_eq!(
        got.release().await.expect("release"),
        fencelock::ReleaseOutcome::Released
    );
    assert_eq!(cluster.get(0, "notice"), None);
}

#[tokio::test(flavor = "current_thread")]
async fn a_hand_off_whose_extend_is_never_answered_is_lost_on_time() {
    let cluster = Cluster::start(1);
    let (got, waiter, holder) = taken_on_notice(&cluster, "unanswered").await;
    // Before the extend goes out, the node stops answering.
    cluster.pause(0);
    holder.join().expect("holder thread");
    let claim = Duration::from_millis(claim_of(got.value()).unsigned_abs());
    // Never believed valid for the 30 s it asked for, only for the claim; and lost
    // then (20 s: well before the 30 s, whatever the load).
    assert!(got.remaining() <= claim);
    tokio::time::timeout(Duration::from_secs(20), got.lost())
        .await
        .expect("lost() did not fire");
    assert!(!got.is_valid());
    cluster.resume(0);
    // Dropped, it is released (after the extend that waited on the paused node):
    // nothing is left holding the lock.
    drop(got);
    eventually("the lost lease's key is released", || {
        cluster.get(0, "unanswered").is_none()
    })
    .await;
    waiter.shutdown().await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_hand_off_released_within_its_claim_costs_no_extend() {
    let cluster = Cluster::start(1);
    let (got, _waiter, holder) = taken_on_notice(&cluster, "short").await;
    // Read without an `.await`: nothing of this runtime has run since the acquire.
    let mut c = cluster.connection(0);
    // `PTTL` runs in an extend (it never shortens a key) and in a refused acquire,
    // never in a release: counted on the node, it shows whether an extend ran.
    let before = calls_on(&mut c, "pttl");
    let claimed_until = tokio::time::Instant::from_std(got.valid_until());
    // A short critical section (other tasks of this runtime run meanwhile), then the
    // release.
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(
        got.release().await.expect("release"),
        fencelock::ReleaseOutcome::Released
    );
    holder.join().expect("holder thread");
    // Past the end of the claim: any extend the hand-off was going to send is sent.
    tokio::time::sleep_until(claimed_until).await;
    assert_eq!(
        calls_on(&mut c, "pttl"),
        before,
        "an extend was sent for a lease released within its claim"
    );
    assert_eq!(cluster.get(0, "short"), None);
}

#[tokio::test(flavor = "current_thread")]
async fn an_extend_right_after_a_hand_off_is_not_undone_by_the_hand_offs_own() {
    let cluster = Cluster::start(1);
    let (got, _waiter, holder) = taken_on_notice(&cluster, "shorter").await;
    holder.join().expect("holder thread");
    let claimed_until = tokio::time::Instant::from_std(got.valid_until());
    // Shortened at once, before the hand-off's own extend (to the 30 s asked for) is
    // due: that one must not lengthen the key again afterwards.
    got.extend(Duration::from_secs(5)).await.expect("extend");
    assert_eq!(got.ttl(), Duration::from_secs(5));
    // Past the end of the claim (any extend the hand-off was going to send is sent),
    // then look at the key.
    tokio::time::sleep_until(claimed_until).await;
    let pttl = cluster.pttl(0, "shorter");
    assert!(
        pttl > 0 && pttl <= 5_000,
        "the key lives {pttl} ms after an extend to 5 s"
    );
    assert_eq!(got.ttl(), Duration::from_secs(5));
    assert!(got.remaining() <= Duration::from_secs(5));
    got.release().await.expect("release");
}

#[tokio::test(flavor = "current_thread")]
async fn an_extend_before_the_hand_offs_own_makes_it_unneeded() {
    let cluster = Cluster::start(1);
    let (got, _waiter, holder) = taken_on_notice(&cluster, "longer").await;
    holder.join().expect("holder thread");
    let claimed_until = tokio::time::Instant::from_std(got.valid_until());
    // The user's extend lands first: the lease is the TTL's (60 s) already.
    got.extend(Duration::from_secs(60)).await.expect("extend");
    let mut c = cluster.connection(0);
    let before = calls_on(&mut c, "pttl");
    // Past the end of the claim: the hand-off's own extend would have been sent.
    tokio::time::sleep_until(claimed_until).await;
    assert_eq!(
        calls_on(&mut c, "pttl"),
        before,
        "the hand-off's own extend was sent after the user's"
    );
    assert!(cluster.pttl(0, "longer") > 30_000);
    got.release().await.expect("release");
}
