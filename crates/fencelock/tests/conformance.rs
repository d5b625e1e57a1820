//! One conformance suite, written once, run against every store: memory, SQLite,
//! Redis with one node, and Redis with three nodes (Redlock). Every behaviour the
//! stores promise in common is checked through the public `Locker` API.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use fencelock::{AcquireOptions, Locker, ReleaseOutcome};
use support::Cluster;

/// A store under test, kept alive (servers, temp dir) for the test's duration.
enum Backend {
    Memory(String),
    Sqlite(tempfile::TempDir),
    Redis(Cluster),
}

impl Backend {
    fn memory() -> Backend {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        Backend::Memory(format!(
            "memory://conformance-{}",
            NEXT.fetch_add(1, Ordering::Relaxed)
        ))
    }

    fn sqlite() -> Backend {
        Backend::Sqlite(tempfile::tempdir().expect("tempdir"))
    }

    fn redis(nodes: usize) -> Backend {
        Backend::Redis(Cluster::start(nodes))
    }

    fn urls(&self) -> Vec<String> {
        match self {
            Backend::Memory(url) => vec![url.clone()],
            Backend::Sqlite(dir) => vec![format!(
                "sqlite://{}",
                dir.path().join("locks.db").display()
            )],
            Backend::Redis(cluster) => cluster.urls(),
        }
    }

    fn builder(&self) -> fencelock::LockerBuilder {
        Locker::builder()
            .stores(self.urls())
            .request_timeout(Duration::from_secs(1))
    }

    fn locker(&self) -> Locker {
        self.builder().build().expect("locker")
    }

    /// A locker whose leases run out at the end of their TTL unless extended.
    fn locker_without_renewal(&self) -> Locker {
        self.builder().auto_renew(false).build().expect("locker")
    }
}

const TTL: Duration = Duration::from_secs(5);

async fn exclusion(b: &Backend) {
    let (x, y) = (b.locker(), b.locker());
    let held = x.acquire("ex", TTL).await.expect("acquire");
    let err = y.try_acquire("ex", TTL).await.expect_err("held");
    assert!(err.is_contended(), "{err}");
    let left = err.retry_after().expect("holder's remaining TTL");
    assert!(left <= TTL && !left.is_zero(), "{left:?}");
    assert_eq!(
        held.release().await.expect("release"),
        ReleaseOutcome::Released
    );
    y.try_acquire("ex", TTL)
        .await
        .expect("free again")
        .release()
        .await
        .expect("release");
}

async fn all_or_nothing(b: &Backend) {
    let (x, y) = (b.locker(), b.locker());
    let held = x.acquire("aon-2", TTL).await.expect("acquire");
    let err = y
        .try_acquire(["aon-1", "aon-2", "aon-3"], TTL)
        .await
        .expect_err("one key held");
    assert!(err.is_contended(), "{err}");
    // Nothing was taken: the free keys can be locked by a third party at once.
    x.try_acquire(["aon-1", "aon-3"], TTL)
        .await
        .expect("aon-1 and aon-3 were left free")
        .release()
        .await
        .expect("release");
    held.release().await.expect("release");
    let all = y
        .try_acquire(["aon-1", "aon-2", "aon-3"], TTL)
        .await
        .expect("all free");
    assert_eq!(all.keys(), ["aon-1", "aon-2", "aon-3"]);
    all.release().await.expect("release");
}

async fn token_order(b: &Backend) {
    let (x, y) = (b.locker(), b.locker());
    let mut last = None;
    for i in 0..6 {
        let who = if i % 2 == 0 { &x } else { &y };
        let lease = who.acquire("tok", TTL).await.expect("acquire");
        assert!(Some(lease.token()) > last, "token went backwards");
        last = Some(lease.token());
        lease.release().await.expect("release");
    }
    // Multi-key: the token is above the last token of each key.
    let multi = x.acquire(["tok", "tok-other"], TTL).await.expect("acquire");
    assert!(Some(multi.token()) > last);
    multi.release().await.expect("release");
}

async fn expiry(b: &Backend) {
    let (x, y) = (b.locker_without_renewal(), b.locker());
    let lease = x
        .acquire("exp", Duration::from_millis(200))
        .await
        .expect("acquire");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!lease.is_valid());
    let next = y
        .try_acquire("exp", TTL)
        .await
        .expect("expired lock is free");
    assert!(next.token() > lease.token());
    assert_eq!(
        lease.release().await.expect("release"),
        ReleaseOutcome::OwnedByOther
    );
    assert_eq!(
        next.release().await.expect("release"),
        ReleaseOutcome::Released
    );

    let lone = x
        .acquire("exp-alone", Duration::from_millis(200))
        .await
        .expect("acquire");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        lone.release().await.expect("release"),
        ReleaseOutcome::Expired
    );
}

async fn lost_fires_at_expiry_without_renewal(b: &Backend) {
    let x = b.locker_without_renewal();
    let lease = x
        .acquire("lost", Duration::from_millis(300))
        .await
        .expect("acquire");
    tokio::time::timeout(Duration::from_secs(5), lease.lost())
        .await
        .expect("lost() fires when the validity runs out");
    assert!(lease.is_lost() && !lease.is_valid());
}

async fn extend_outcomes(b: &Backend) {
    let (x, y) = (b.locker_without_renewal(), b.locker());
    let lease = x
        .acquire("extend", Duration::from_secs(1))
        .await
        .expect("acquire");
    lease.extend(Duration::from_secs(10)).await.expect("extend");
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert!(lease.is_valid(), "extension did not hold");
    let err = y.try_acquire("extend", TTL).await.expect_err("still held");
    assert!(err.is_contended());
    assert!(
        lease
            .extend(Duration::ZERO)
            .await
            .unwrap_err()
            .is_invalid_input()
    );

    let short = x
        .acquire("extend-late", Duration::from_millis(150))
        .await
        .expect("acquire");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(short.extend(TTL).await.unwrap_err().is_lost());
    lease.release().await.expect("release");
}

async fn split_acquire_release_by_value(b: &Backend) {
    let (x, y) = (b.locker(), b.locker());
    let lease = x.acquire("byvalue", TTL).await.expect("acquire");
    let value = lease.value().to_string();
    // Another process (here: another locker) extends and releases by value.
    let left = y
        .extend_value("byvalue", &value, Duration::from_secs(20))
        .await
        .expect("extend by value");
    assert!(left > TTL);
    assert!(
        y.extend_value("byvalue", "not-the-value", TTL)
            .await
            .unwrap_err()
            .is_lost()
    );
    assert_eq!(
        y.release_value("byvalue", "not-the-value")
            .await
            .expect("release"),
        ReleaseOutcome::OwnedByOther
    );
    assert_eq!(
        y.release_value("byvalue", &value).await.expect("release"),
        ReleaseOutcome::Released
    );
    assert_eq!(
        y.release_value("byvalue", &value).await.expect("release"),
        ReleaseOutcome::Expired
    );
    drop(lease);
}

async fn waiter_wakes_on_release(b: &Backend) {
    let x = b.locker();
    // Polling interval one hour: only a release notice (or, for SQLite, the adaptive
    // poll bounded by the holder's TTL) can let the waiter in within the test timeout.
    let y = b
        .builder()
        .retry_delay(Duration::from_secs(3600))
        .build()
        .expect("locker");
    let lease = x
        .acquire("wake", Duration::from_secs(60))
        .await
        .expect("acquire");
    let waiter = tokio::spawn(async move {
        y.acquire_with("wake", TTL, &AcquireOptions::default().wait_forever())
            .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiter.is_finished(),
        "the waiter got in while the lock was held"
    );
    lease.release().await.expect("release");
    let got = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("waiter not woken by the release")
        .expect("task")
        .expect("acquire");
    got.release().await.expect("release");
}

async fn wait_times_out(b: &Backend) {
    let (x, y) = (b.locker(), b.locker());
    let _held = x.acquire("timeout", TTL).await.expect("acquire");
    let err = y
        .acquire_with(
            "timeout",
            TTL,
            &AcquireOptions::default().max_wait(Duration::from_millis(300)),
        )
        .await
        .expect_err("held for longer than the wait");
    assert!(err.is_timeout(), "{err}");
    assert!(err.retry_after().is_some());
}

async fn status_shows_holder(b: &Backend) {
    let x = b
        .builder()
        .holder("host=test pid=1")
        .build()
        .expect("locker");
    let lease = x.acquire("status", TTL).await.expect("acquire");
    let status = x.status("status").await.expect("status");
    assert_eq!(status.len(), 1);
    assert!(status[0].is_held());
    assert_eq!(status[0].holder(), Some("host=test pid=1"));
    // At least the lease's token (with several nodes, a node outside the quorum may
    // have counted higher: its counter is only a lower bound for the next token).
    assert!(status[0].last_token() >= Some(lease.token().get()));
    lease.release().await.expect("release");
    let status = x.status("status").await.expect("status");
    assert!(!status[0].is_held());
    assert_eq!(status[0].holder(), None);
}

async fn lists_known_keys_by_prefix(b: &Backend) {
    let x = b.builder().prefix("ns:").build().expect("locker");
    let held = x.acquire("list:a", TTL).await.expect("acquire");
    let glob = x.acquire("list:b*", TTL).await.expect("acquire");
    x.acquire("list:c", TTL)
        .await
        .expect("acquire")
        .release()
        .await
        .expect("release");
    let other = x.acquire("other", TTL).await.expect("acquire");
    // Held keys are listed, without the prefix, and no sibling record ever shows up
    // as a key. A released key is listed while its counter is kept: SQLite and memory
    // keep it a day; Redis retires it once the node's clock has reached it (at once,
    // or within a millisecond), so it drops out of the list.
    if matches!(b, Backend::Redis(_)) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while x.known_keys("list:", 100).await.expect("list") != ["list:a", "list:b*"] {
            assert!(
                tokio::time::Instant::now() < deadline,
                "list:c never retired"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    } else {
        assert_eq!(
            x.known_keys("list:", 100).await.expect("list"),
            ["list:a", "list:b*", "list:c"]
        );
    }
    // Glob characters in the prefix are literal.
    assert_eq!(
        x.known_keys("list:b*", 100).await.expect("list"),
        ["list:b*"]
    );
    assert_eq!(x.known_keys("", 1).await.expect("list").len(), 1);
    // Lock keys only: a permit whose key has a hash tag sits under the prefix too
    // (`ns:{list}:sem:fencelock:permit:0`), but is listed by `known_permits`.
    let permit = x
        .semaphore("{list}:sem", 1)
        .expect("semaphore")
        .acquire(TTL)
        .await
        .expect("permit");
    let listed = x.known_keys("", 100).await.expect("list");
    assert!(
        listed.iter().all(|k| !k.contains(":fencelock:")),
        "{listed:?}"
    );
    assert_eq!(
        x.known_permits(100).await.expect("permits"),
        permit.keys().to_vec()
    );
    permit.release().await.expect("release");
    let status = x.status(["list:a", "list:c"]).await.expect("status");
    assert!(status[0].is_held() && !status[1].is_held());
    held.release().await.expect("release");
    glob.release().await.expect("release");
    other.release().await.expect("release");
}

async fn bad_input(b: &Backend) {
    let x = b.locker();
    for err in [
        x.try_acquire("", TTL).await.unwrap_err(),
        x.try_acquire("k", Duration::ZERO).await.unwrap_err(),
        x.try_acquire("k".repeat(10_000), TTL).await.unwrap_err(),
        x.release_value("k", "").await.unwrap_err(),
    ] {
        assert!(err.is_invalid_input(), "{err}");
    }
}

// ---- Semaphores (issue #19, `docs/semaphore.md`) ----

/// N permits: N holders on N different permits, the next one refused until one is
/// released; a caller with another N is refused; the permits show in `status`.
async fn semaphore_admits_n(b: &Backend) {
    let x = b.locker();
    let s = x.semaphore("sem", 3).expect("semaphore");
    let mut permits = Vec::new();
    for _ in 0..3 {
        permits.push(s.try_acquire(TTL).await.expect("a permit"));
    }
    let mut slots: Vec<&str> = permits.iter().map(|p| p.keys()[0].as_str()).collect();
    slots.sort_unstable();
    slots.dedup();
    assert_eq!(slots.len(), 3, "two permits on one slot");
    let full = s.try_acquire(TTL).await.expect_err("a fourth of 3");
    assert!(full.is_contended(), "{full}");
    let mixed = b
        .locker()
        .semaphore("sem", 5)
        .expect("semaphore")
        .try_acquire(TTL)
        .await
        .expect_err("5 on a semaphore of 3");
    assert!(mixed.is_invalid_input(), "{mixed}");
    let shown = s.status().await.expect("status");
    assert_eq!(shown.len(), 3);
    assert!(shown.iter().all(|k| k.is_held()));
    // Listed as permits (`known_keys` lists lock keys only).
    let listed = x.known_permits(100).await.expect("list");
    assert!(x.known_keys("", 100).await.expect("list").is_empty());
    let statuses = x
        .status(listed.as_slice())
        .await
        .expect("status of listed keys");
    assert_eq!(
        statuses
            .iter()
            .filter(|k| k.is_held() && s.slot_keys().contains(&k.key))
            .count(),
        3
    );
    let freed = permits.pop().expect("permit");
    let slot = freed.keys()[0].clone();
    let token = freed.token();
    assert_eq!(
        freed.release().await.expect("release"),
        ReleaseOutcome::Released
    );
    let again = s.try_acquire(TTL).await.expect("the freed permit");
    assert_eq!(again.keys()[0], slot);
    assert!(again.token() > token, "tokens grow per permit");
    permits.push(again);
    for p in permits {
        p.release().await.expect("release");
    }
}

/// A permit that is not renewed expires by the store and goes to a waiter; a waiter
/// also gets a released permit.
async fn semaphore_permits_expire_and_pass_on(b: &Backend) {
    let x = b.locker_without_renewal();
    let s = x.semaphore("sem-exp", 1).expect("semaphore");
    let stale = s
        .acquire(Duration::from_millis(200))
        .await
        .expect("acquire");
    let y = b.locker();
    let waiting = y.semaphore("sem-exp", 1).expect("semaphore");
    let next = waiting
        .acquire_with(
            TTL,
            &AcquireOptions::default().max_wait(Duration::from_secs(10)),
        )
        .await
        .expect("the expired permit");
    assert!(next.token() > stale.token());
    assert_eq!(
        stale.release().await.expect("release"),
        ReleaseOutcome::OwnedByOther
    );
    let handed = tokio::spawn(async move {
        waiting
            .acquire_with(
                TTL,
                &AcquireOptions::default().max_wait(Duration::from_secs(10)),
            )
            .await
    });
    next.release().await.expect("release");
    let got = handed.await.expect("task").expect("the released permit");
    got.release().await.expect("release");
}

macro_rules! conformance {
    ($backend:ident = $make:expr; $($case:ident),* $(,)?) => {
        mod $backend {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let backend = $make;
                    super::$case(&backend).await;
                }
            )*
        }
    };
}

macro_rules! every_store {
    ($($case:ident),* $(,)?) => {
        conformance!(memory = Backend::memory(); $($case),*);
        conformance!(sqlite = Backend::sqlite(); $($case),*);
        conformance!(redis_one_node = Backend::redis(1); $($case),*);
        conformance!(redis_three_nodes = Backend::redis(3); $($case),*);
    };
}

every_store!(
    exclusion,
    all_or_nothing,
    token_order,
    expiry,
    lost_fires_at_expiry_without_renewal,
    extend_outcomes,
    split_acquire_release_by_value,
    waiter_wakes_on_release,
    wait_times_out,
    status_shows_holder,
    lists_known_keys_by_prefix,
    bad_input,
    semaphore_admits_n,
    semaphore_permits_expire_and_pass_on,
);

#[tokio::test]
async fn debug_output_never_shows_the_lock_value() {
    let locker = Locker::builder()
        .store("memory://debug-redaction")
        .build()
        .expect("locker");
    let lease = locker.acquire("secret", TTL).await.expect("acquire");
    let shown = format!("{lease:?} {locker:?}");
    assert!(!shown.contains(lease.value()), "value printed: {shown}");
    assert!(shown.contains("secret"), "keys should be shown: {shown}");
}

#[test]
fn dropping_a_lease_outside_any_runtime_does_not_panic() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let locker = Locker::builder()
        .store("memory://drop-outside")
        .build()
        .expect("locker");
    let lease = runtime
        .block_on(locker.acquire("outside", TTL))
        .expect("acquire");
    drop(runtime);
    // No runtime any more: Drop must only enqueue, never spawn or block.
    drop(lease);
    drop(locker);
}
