//! Fencing counters on real redis-server processes: what a node keeps per key, and
//! that keeping less never makes a token repeat or go back (`docs/fencing.md`,
//! "Counter retention").

mod support;

use std::sync::Arc;
use std::time::Duration;

use fencelock::{AcquireOptions, Locker, LockerBuilder, ReleaseOutcome};
use support::{Cluster, eventually};

/// The builder of every locker below: the cluster's nodes, a generous request
/// timeout (a loaded test machine is not a failure), no notices (nobody waits).
fn builder(cluster: &Cluster) -> LockerBuilder {
    Locker::builder()
        .stores(cluster.urls())
        .request_timeout(Duration::from_secs(2))
        .notifications(false)
}

fn locker(cluster: &Cluster) -> Locker {
    builder(cluster).build().expect("locker")
}

/// A locker whose leases stay as they are until released (no renewal).
fn still_locker(cluster: &Cluster) -> Locker {
    builder(cluster).auto_renew(false).build().expect("locker")
}

fn fence(key: &str) -> String {
    format!("{key}:fencelock:fence")
}

/// `INFO memory` field `used_memory` of node `i`.
fn used_memory(cluster: &Cluster, i: usize) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query(&mut cluster.connection(i))
        .expect("INFO memory");
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("used_memory in INFO")
}

/// `PEXPIRETIME` of `key` on node `i`: its expiry as a Unix time in ms (an absolute
/// time, so two keys compare without a race between two `PTTL` readings).
fn expires_at(cluster: &Cluster, i: usize, key: &str) -> i64 {
    redis::cmd("PEXPIRETIME")
        .arg(key)
        .query(&mut cluster.connection(i))
        .expect("PEXPIRETIME")
}

fn dbsize(cluster: &Cluster, i: usize) -> u64 {
    redis::cmd("DBSIZE")
        .query(&mut cluster.connection(i))
        .expect("DBSIZE")
}

/// The node's clock in microseconds (`TIME`), what a missing counter starts from.
fn node_clock_us(cluster: &Cluster, i: usize) -> u64 {
    let (s, us): (u64, u64) = redis::cmd("TIME")
        .query(&mut cluster.connection(i))
        .expect("TIME");
    s * 1_000_000 + us
}

/// Distinct keys acquired and released: what a high-cardinality workload (one lock per
/// order, per user, per file …) does. Enough that 24 h counters fill 20 MB.
const DISTINCT_KEYS: usize = 200_000;
/// Locks in flight at once.
const CONCURRENCY: usize = 64;

/// Issue 17, item 4: every distinct key left a fencing counter for 24 h, so a node
/// with `maxmemory` and `noeviction` (what the start-up check recommends) filled up
/// and refused every new lock. Counters are now retired on release, and the node
/// ends with no key at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_distinct_keys_do_not_fill_a_small_node() {
    let cluster = Cluster::start(1);
    let mut admin = cluster.connection(0);
    for (name, value) in [("maxmemory", "20mb"), ("maxmemory-policy", "noeviction")] {
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg(name)
            .arg(value)
            .query(&mut admin)
            .expect("CONFIG SET");
    }
    let locker = Arc::new(locker(&cluster));
    let mut tasks = Vec::new();
    for t in 0..CONCURRENCY {
        let locker = locker.clone();
        tasks.push(tokio::spawn(async move {
            let mut k = t;
            while k < DISTINCT_KEYS {
                // A 44-byte key, like a resource name with a UUID in it.
                let key = format!("orders:{k:08}:3f2b9c1e-5d47-4a8e-9b61-0c7d");
                let lease = locker
                    .try_acquire(key.as_str(), Duration::from_secs(30))
                    .await
                    .unwrap_or_else(|e| panic!("acquire of distinct key #{k}: {e}"));
                assert_eq!(
                    lease.release().await.expect("release"),
                    ReleaseOutcome::Released
                );
                k += CONCURRENCY;
            }
        }));
    }
    for t in tasks {
        t.await.expect("client task");
    }
    // A counter released within the millisecond it was seeded in stays until the
    // node's clock reaches it: one millisecond.
    eventually("every counter retired", || dbsize(&cluster, 0) == 0).await;
    let after = used_memory(&cluster, 0);
    assert!(
        after < 20 * 1024 * 1024,
        "used_memory {after} B after the run"
    );
}

/// A counter retired on release: the key's next grant starts from the node's clock,
/// which is above every token the key had. Back-to-back grants on one key, most of
/// them within the same millisecond, where the retired counter is still ahead of the
/// clock (it then expires when the clock reaches it, and is read until then).
#[tokio::test]
async fn tokens_keep_rising_when_counters_are_retired() {
    let cluster = Cluster::start(1);
    let locker = locker(&cluster);
    let mut last = 0;
    let mut retired = 0;
    for _ in 0..2_000 {
        let lease = locker
            .try_acquire("rising", Duration::from_secs(10))
            .await
            .expect("acquire");
        let token = lease.token().get();
        assert!(token > last, "token {token} after {last}");
        last = token;
        lease.release().await.expect("release");
        if cluster.get(0, &fence("rising")).is_none() {
            retired += 1;
        }
    }
    assert!(retired > 0, "no release retired the counter at once");
}

/// The counter can sit above the node's clock: a commit round raised it to the token
/// of a node whose clock is ahead. Released then, it stays until this node's clock
/// reaches it — deleting it at once would let the next grant start from this node's
/// clock, below the tokens already handed out.
#[tokio::test]
async fn a_counter_ahead_of_the_clock_outlives_its_release_until_the_clock_reaches_it() {
    let cluster = Cluster::start(1);
    let locker = locker(&cluster);
    let ahead = node_clock_us(&cluster, 0) + 3_000_000;
    let _: () = redis::cmd("SET")
        .arg(fence("ahead"))
        .arg(ahead)
        .query(&mut cluster.connection(0))
        .expect("SET");
    let lease = locker
        .try_acquire("ahead", Duration::from_secs(10))
        .await
        .expect("acquire");
    assert_eq!(lease.token().get(), ahead + 1);
    lease.release().await.expect("release");
    let kept = cluster.pttl(0, &fence("ahead"));
    assert!(
        kept > 0,
        "the counter must stay until the clock passes it (PTTL {kept})"
    );
    let next = locker
        .try_acquire("ahead", Duration::from_secs(10))
        .await
        .expect("acquire again");
    assert!(
        next.token().get() > ahead + 1,
        "token {} after {}",
        next.token().get(),
        ahead + 1
    );
}

/// While a lock is held its counter lives at least as long as its key: acquire sets
/// it so, and an extend keeps it so (before, extends did not touch the counter, so a
/// lock renewed past the counter's 24 h outlived it). Emulated by shortening the
/// counter's expiry under the lease, as 24 h running out would.
#[tokio::test]
async fn a_held_lock_keeps_its_counter_through_extends() {
    let cluster = Cluster::start(1);
    let locker = still_locker(&cluster);
    let lease = locker
        .try_acquire("held", Duration::from_secs(5))
        .await
        .expect("acquire");
    assert!(expires_at(&cluster, 0, &fence("held")) >= expires_at(&cluster, 0, "held"));
    let _: () = redis::cmd("PEXPIRE")
        .arg(fence("held"))
        .arg(300)
        .query(&mut cluster.connection(0))
        .expect("PEXPIRE");
    lease.extend(Duration::from_secs(20)).await.expect("extend");
    let (lock, counter) = (
        expires_at(&cluster, 0, "held"),
        expires_at(&cluster, 0, &fence("held")),
    );
    assert!(
        counter >= lock && cluster.pttl(0, "held") > 10_000,
        "counter expires at {counter} under a lock expiring at {lock} (ms)"
    );
    lease.release().await.expect("release");
}

/// A key someone waits for keeps its counter on release (the waiter's grant follows
/// at once); a key nobody waits for loses it.
#[tokio::test]
async fn a_counter_stays_while_someone_waits_in_line() {
    let cluster = Cluster::start(1);
    // Notices on: the waiter is woken by the release.
    let waiting_locker = || {
        builder(&cluster)
            .notifications(true)
            .build()
            .expect("locker")
    };
    let locker = waiting_locker();
    let first = locker
        .try_acquire("queued", Duration::from_secs(10))
        .await
        .expect("acquire");
    let waiter = {
        let locker = waiting_locker();
        tokio::spawn(async move {
            locker
                .acquire_with(
                    "queued",
                    Duration::from_secs(10),
                    &AcquireOptions::default().max_wait(Duration::from_secs(30)),
                )
                .await
                .expect("waiter acquires")
        })
    };
    eventually("the waiter is in line", || {
        !cluster
            .keys_matching(0, "queued:fencelock:queue")
            .is_empty()
    })
    .await;
    let token = first.token().get();
    first.release().await.expect("release");
    let second = waiter.await.expect("waiter task");
    assert!(second.token().get() > token);
    assert!(cluster.get(0, &fence("queued")).is_some());
    let last = second.token().get();
    second.release().await.expect("release");
    eventually("the counter is retired", || {
        cluster.get(0, &fence("queued")).is_none()
    })
    .await;
    let third = locker
        .try_acquire("queued", Duration::from_secs(10))
        .await
        .expect("acquire");
    assert!(third.token().get() > last);
}

/// Locks per measurement below.
const MEASURED: usize = 10_000;

/// `used_memory` once every write of the locker has landed (the counters retired ones
/// gone too): sampled until two readings agree.
async fn settled_memory(cluster: &Cluster) -> u64 {
    let mut last = used_memory(cluster, 0);
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = used_memory(cluster, 0);
        if now == last {
            return now;
        }
        last = now;
    }
}

/// Acquires `MEASURED` distinct keys named by `key`, concurrently; releases them
/// unless `hold`. Returns the leases held.
async fn lock_many(
    locker: &Arc<Locker>,
    key: fn(usize) -> String,
    hold: bool,
) -> Vec<fencelock::Lease> {
    let mut tasks = Vec::new();
    for t in 0..CONCURRENCY {
        let locker = locker.clone();
        tasks.push(tokio::spawn(async move {
            let mut held = Vec::new();
            let mut k = t;
            while k < MEASURED {
                let lease = locker
                    .try_acquire(key(k).as_str(), Duration::from_secs(600))
                    .await
                    .expect("acquire");
                if hold {
                    held.push(lease);
                } else {
                    lease.release().await.expect("release");
                }
                k += CONCURRENCY;
            }
            held
        }));
    }
    let mut held = Vec::new();
    for t in tasks {
        held.extend(t.await.expect("task"));
    }
    held
}

/// What a node keeps per distinct key released and per lock held, for
/// `docs/protocol.md` ("Memory per key"): `used_memory` deltas over 10 000 keys, and
/// `MEMORY USAGE` of one key of each kind. The outcomes asserted: a released key
/// leaves nothing; a held lock costs its lock key and its counter (and holder record
/// when it has one), nothing else. Run with `--nocapture` to see the numbers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_per_key() {
    fn short(k: usize) -> String {
        format!("job:{k:08}")
    }
    fn long(k: usize) -> String {
        format!("orders:{k:08}:3f2b9c1e-5d47-4a8e-9b61-0c7d")
    }
    let cluster = Cluster::start(1);
    let plain = Arc::new(locker(&cluster));
    let with_holder = Arc::new(
        builder(&cluster)
            .auto_renew(false)
            .holder("host=web-7 pid=4242")
            .build()
            .expect("locker"),
    );
    let bare = Arc::new(still_locker(&cluster));
    // Warm up: connections made, scripts loaded.
    lock_many(&plain, |k| format!("warm:{k}"), false).await;
    let per = |before: u64, after: u64| (after as f64 - before as f64) / MEASURED as f64;
    for (name, key) in [
        ("12-byte keys", short as fn(usize) -> String),
        ("44-byte keys", long),
    ] {
        assert_eq!(key(0).len(), if name.starts_with("12") { 12 } else { 44 });
        let base = settled_memory(&cluster).await;
        lock_many(&plain, key, false).await;
        eventually("released counters retired", || dbsize(&cluster, 0) == 0).await;
        let released = per(base, settled_memory(&cluster).await);

        let base = settled_memory(&cluster).await;
        let leases = lock_many(&bare, key, true).await;
        let held = per(base, settled_memory(&cluster).await);
        assert_eq!(
            dbsize(&cluster, 0),
            2 * MEASURED as u64,
            "lock key + counter"
        );
        let mut conn = cluster.connection(0);
        let usage = |conn: &mut redis::Connection, k: &str| -> u64 {
            redis::cmd("MEMORY")
                .arg("USAGE")
                .arg(k)
                .query(conn)
                .expect("MEMORY USAGE")
        };
        let (lock_usage, counter_usage) =
            (usage(&mut conn, &key(0)), usage(&mut conn, &fence(&key(0))));
        for lease in leases {
            lease.release().await.expect("release");
        }
        eventually("all released", || dbsize(&cluster, 0) == 0).await;

        let base = settled_memory(&cluster).await;
        let leases = lock_many(&with_holder, key, true).await;
        let held_holder = per(base, settled_memory(&cluster).await);
        assert_eq!(dbsize(&cluster, 0), 3 * MEASURED as u64, "+ holder record");
        for lease in leases {
            lease.release().await.expect("release");
        }
        eventually("all released", || dbsize(&cluster, 0) == 0).await;

        println!(
            "{name}: released {released:.1} B/key; held {held:.1} B/lock \
             (MEMORY USAGE lock key {lock_usage} B, counter {counter_usage} B); \
             held with a holder record {held_holder:.1} B/lock"
        );
        // No key is left (DBSIZE 0 above); what remains is slack in the key space's
        // hash tables, which grew for the run and which Redis shrinks on its own cron.
        assert!(released < 16.0, "a released key left {released} B");
    }
}

/// The scripts of a fencelock client from before counter retention changed (24 h
/// counters, never deleted): see `support/before_retention/README.md`.
struct OldClient {
    acquire: redis::Script,
    release: redis::Script,
}

impl OldClient {
    fn new() -> Self {
        const SHARED: &str = include_str!("support/before_retention/shared.lua");
        OldClient {
            acquire: redis::Script::new(&format!(
                "{SHARED}{}",
                include_str!("support/before_retention/acquire.lua")
            )),
            release: redis::Script::new(&format!(
                "{SHARED}{}",
                include_str!("support/before_retention/release.lua")
            )),
        }
    }

    /// The old acquire of one key on one node: its token, or `None` when held.
    fn acquire(&self, conn: &mut redis::Connection, key: &str, value: &str) -> Option<u64> {
        let reply: Vec<redis::Value> = self
            .acquire
            .key(key)
            .key(fence(key))
            .key(format!("{key}:fencelock:holder"))
            .key(format!("{key}:fencelock:queue"))
            .key(format!("{key}:fencelock:queue:deadline"))
            .arg(value)
            .arg(10_000)
            .arg(1)
            .arg(86_400_000)
            .arg("")
            .invoke(conn)
            .expect("old acquire");
        match reply.as_slice() {
            [redis::Value::Int(1), token, ..] => {
                Some(redis::from_redis_value::<u64>(token.clone()).expect("token"))
            }
            _ => None,
        }
    }

    fn release(&self, conn: &mut redis::Connection, key: &str, value: &str) {
        let _: i64 = self
            .release
            .key(key)
            .key(format!("{key}:fencelock:holder"))
            .key(format!("{key}:fencelock:queue"))
            .key(format!("{key}:fencelock:queue:deadline"))
            .key(fence(key))
            .arg(value)
            .arg(1)
            .arg("")
            .arg(86_400_000)
            .arg("0")
            .arg("0")
            .invoke(conn)
            .expect("old release");
    }
}

/// A rolling upgrade: clients of the old scripts (24 h counters, never deleted) and of
/// the current ones (counters retired on release) take turns on the same keys, in
/// every order of old/new acquire and release. Tokens on a key never repeat or go
/// back: the old scripts read a retired counter as the clock seed, which is above it;
/// the new ones shorten an old 24 h counter only to the retention rule.
#[tokio::test]
async fn old_and_new_clients_share_counters() {
    let cluster = Cluster::start(1);
    let locker = locker(&cluster);
    let old = OldClient::new();
    let mut conn = cluster.connection(0);
    // Which client takes each turn: every pattern of four turns, repeated, so each
    // hand-over (old→old, old→new, new→old, new→new) happens in and across a ms.
    for key in ["mixed:a", "mixed:b"] {
        let mut last = 0;
        for round in 0..400u32 {
            let token = if (round ^ (round >> 2)) & 1 == 0 {
                let lease = locker
                    .try_acquire(key, Duration::from_secs(10))
                    .await
                    .expect("new acquire");
                let t = lease.token().get();
                lease.release().await.expect("new release");
                t
            } else {
                let value = format!("old-{round}");
                let t = old.acquire(&mut conn, key, &value).expect("old acquire");
                old.release(&mut conn, key, &value);
                t
            };
            assert!(
                token > last,
                "{key} round {round}: token {token} after {last}"
            );
            last = token;
            if round % 97 == 0 {
                // Let the node's clock pass the counter now and then, so the new
                // client's release retires it at once.
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    }
}
