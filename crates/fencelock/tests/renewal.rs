//! Leases that renew themselves and say the moment they are lost, on real redis-server.

mod support;

use std::time::{Duration, Instant};

use fencelock::{Locker, ReleaseOutcome};
use futures_util::StreamExt;
use support::Cluster;

fn locker(cluster: &Cluster) -> Locker {
    Locker::builder()
        .stores(cluster.urls())
        .request_timeout(Duration::from_millis(300))
        .build()
        .expect("locker")
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..400 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(done(), "{what}: not reached within 10 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_second_lease_held_through_ten_seconds_of_work() {
    let cluster = Cluster::start(3);
    let holder = locker(&cluster);
    let contender = locker(&cluster);
    let outcome = holder
        .with_lock("long-work", Duration::from_secs(1), async |lease| {
            let end = Instant::now() + Duration::from_secs(10);
            let mut checks = 0;
            while Instant::now() < end {
                assert!(lease.is_valid(), "lease invalid during the work");
                let err = contender
                    .try_acquire("long-work", Duration::from_secs(1))
                    .await
                    .expect_err("a contender got in while the lease was held");
                assert!(err.is_contended(), "{err}");
                checks += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            checks
        })
        .await;
    let checks = outcome.work.expect("work completed under the lease");
    assert!(checks >= 10, "only {checks} checks ran");
    assert!(matches!(
        outcome.release,
        Some(Ok(ReleaseOutcome::Released))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn majority_paused_fires_lost_before_validity_ends() {
    let cluster = Cluster::start(3);
    let l = locker(&cluster);
    let lease = l
        .acquire("pause", Duration::from_secs(1))
        .await
        .expect("acquire");
    lease.set_auto_renew(true);
    // Let a renewal or two go through first.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(lease.is_valid());
    cluster.pause(0);
    cluster.pause(1);
    let proven_until = lease.valid_until();
    tokio::time::timeout(Duration::from_secs(10), lease.lost())
        .await
        .expect("lost() did not fire");
    let fired = Instant::now();
    assert!(
        fired < proven_until,
        "lost() fired {:?} after the validity it had claimed ended",
        fired - proven_until
    );
    assert!(lease.is_lost());
    assert!(!lease.is_valid());
    cluster.resume(0);
    cluster.resume(1);
    // Renewal never brings a lost lease back: the stored validity stays in the past
    // (remaining() would say zero for a lost lease anyway), and nobody renews its keys
    // any more, so they expire on every node.
    let lost_at = Instant::now();
    wait_until("the lost lease's keys expire", || {
        (0..3).all(|i| cluster.get(i, "pause").is_none())
    })
    .await;
    assert!(lease.valid_until() <= lost_at, "a lost lease was renewed");
    assert!(!lease.is_valid());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_lock_drops_work_and_returns_lost() {
    let cluster = Cluster::start(3);
    let l = locker(&cluster);
    let pauser = async {
        tokio::time::sleep(Duration::from_millis(600)).await;
        cluster.pause(1);
        cluster.pause(2);
    };
    let dropped = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    struct SetOnDrop(std::sync::Arc<std::sync::atomic::AtomicBool>);
    impl Drop for SetOnDrop {
        fn drop(&mut self) {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }
    let flag = SetOnDrop(dropped.clone());
    let work = l.with_lock("scoped", Duration::from_secs(1), async move |_lease| {
        let _flag = flag;
        std::future::pending::<()>().await
    });
    let (outcome, ()) = tokio::time::timeout(Duration::from_secs(20), async {
        tokio::join!(work, pauser)
    })
    .await
    .expect("with_lock did not return after the lease was lost");
    let err = outcome.work.expect_err("the work cannot complete");
    assert!(err.is_lost(), "{err}");
    assert!(
        dropped.load(std::sync::atomic::Ordering::SeqCst),
        "work future not dropped"
    );
    cluster.resume(1);
    cluster.resume(2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overwritten_key_is_noticed_by_next_renewal() {
    let cluster = Cluster::start(3);
    let l = locker(&cluster);
    let lease = l
        .acquire("stolen", Duration::from_secs(1))
        .await
        .expect("acquire");
    lease.set_auto_renew(true);
    // Expiry plus takeover, as another client would see it: the key now has another
    // owner's value on a majority of nodes. (On one node of three it would not be a
    // takeover: `minority.rs` checks that such a lease lives on.)
    cluster.set(0, "stolen", "intruder", 60_000);
    cluster.set(1, "stolen", "intruder", 60_000);
    tokio::time::timeout(Duration::from_secs(5), lease.lost())
        .await
        .expect("renewal did not notice the other owner");
    assert!(lease.is_lost());
    assert_eq!(cluster.get(0, "stolen").as_deref(), Some("intruder"));
    assert_eq!(cluster.get(1, "stolen").as_deref(), Some("intruder"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_releases_and_releasing_stops_renewal() {
    let cluster = Cluster::start(3);
    let l = locker(&cluster);
    let lease = l
        .acquire("dropped", Duration::from_secs(30))
        .await
        .expect("acquire");
    drop(lease);
    wait_until("dropped lease released", || {
        (0..3).all(|i| cluster.get(i, "dropped").is_none())
    })
    .await;

    let lease = l
        .acquire("released", Duration::from_millis(600))
        .await
        .expect("acquire");
    lease.set_auto_renew(true);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        (0..3).any(|i| cluster.command_calls(i, "pexpire") > 0),
        "renewal never ran, so the check below would prove nothing"
    );
    lease.release().await.expect("release");
    for i in 0..3 {
        cluster.reset_stats(i);
    }
    // Several renewal periods (a third of 600 ms each).
    tokio::time::sleep(Duration::from_millis(1200)).await;
    for i in 0..3 {
        assert_eq!(
            cluster.command_calls(i, "pexpire"),
            0,
            "node {i} still extended a released lease"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_leases_cost_requests_per_tick_not_per_lease() {
    const LEASES: usize = 10_000;
    let cluster = Cluster::start(3);
    let l = Locker::builder()
        .stores(cluster.urls())
        .request_timeout(Duration::from_secs(1))
        .build()
        .expect("locker");
    // Long enough that a renewal round of 10 000 leases on a loaded 2-core machine
    // (debug build) fits easily within a renewal period.
    let ttl = Duration::from_secs(6);
    let leases: Vec<_> = futures_util::stream::iter(0..LEASES)
        .map(|i| {
            let l = l.clone();
            async move {
                let lease = l.acquire(format!("many:{i}"), ttl).await?;
                lease.set_auto_renew(true);
                Ok::<_, fencelock::Error>(lease)
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let leases: Vec<_> = leases
        .into_iter()
        .collect::<Result<_, _>>()
        .expect("all acquired");
    for i in 0..3 {
        cluster.reset_stats(i);
    }
    // Wait for a full renewal round — every lease extended on every node — however
    // long a loaded machine takes (a hang guard, not a threshold), then look: every
    // lease was renewed, and with a few requests per node, not one per lease.
    let renewed = |i: usize| cluster.command_calls(i, "pexpire") >= LEASES as u64;
    for _ in 0..1200 {
        if (0..3).all(renewed) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (n, lease) in leases.iter().enumerate() {
        assert!(
            lease.is_valid(),
            "lease {n} not valid after a renewal round"
        );
    }
    for i in 0..3 {
        let scripts = cluster.command_calls(i, "evalsha") + cluster.command_calls(i, "eval");
        let extended = cluster.command_calls(i, "pexpire");
        assert!(
            extended >= LEASES as u64,
            "node {i}: only {extended} PEXPIREs: not every lease was renewed"
        );
        assert!(
            scripts * 10 < LEASES as u64,
            "node {i}: {scripts} renewal requests for {LEASES} leases: not batched"
        );
    }
    for lease in leases {
        drop(lease);
    }
    l.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_hold_stops_renewal_and_fires_lost() {
    let cluster = Cluster::start(1);
    let l = Locker::builder()
        .stores(cluster.urls())
        .max_hold(Some(Duration::from_millis(1500)))
        .build()
        .expect("locker");
    let lease = l
        .acquire("bounded", Duration::from_millis(600))
        .await
        .expect("acquire");
    lease.set_auto_renew(true);
    // Renewed past its first TTL …
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(lease.is_valid(), "renewal did not run before max_hold");
    // … but not past max_hold plus one TTL.
    tokio::time::timeout(Duration::from_secs(10), lease.lost())
        .await
        .expect("lost() did not fire after max_hold");
    assert!(lease.is_lost());
    let other = l
        .acquire("bounded", Duration::from_secs(1))
        .await
        .expect("the lock is free once the bounded lease ran out");
    other.release().await.expect("release");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_lease_after_a_long_one_is_still_watched_on_time() {
    let cluster = Cluster::start(1);
    // Leases that are not renewed: the short one's lost() is what is watched.
    let l = Locker::builder()
        .stores(cluster.urls())
        .request_timeout(Duration::from_millis(300))
        .auto_renew(false)
        .build()
        .expect("locker");
    // The background task now sleeps until the long lease's deadline, about a minute
    // away; a lease due much sooner must wake it, or its lost() would come a minute
    // late.
    let long = l
        .acquire("long-lived", Duration::from_secs(60))
        .await
        .expect("acquire");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let short = l
        .acquire("short-lived", Duration::from_secs(1))
        .await
        .expect("acquire");
    tokio::time::timeout(Duration::from_secs(10), short.lost())
        .await
        .expect("lost() of the short lease did not fire while the long one was held");
    assert!(short.is_lost() && !short.is_valid());
    assert!(long.is_valid());
    long.release().await.expect("release");
}
