//! "A lease never claims validity it does not have", checked on every step of seeded
//! runs that interleave extends (longer and shorter), extends cancelled midway,
//! automatic renewal, expiry and release — on the memory store and on real
//! redis-server nodes (1 and 3).
//!
//! The invariant (docs/fencing.md, "Validity"): at every moment, the time a lease
//! claims to have left is at most how long its keys still live on a majority of nodes.
//! Each check takes the lease's claim both before and after reading the nodes'
//! remaining TTLs, and holds the smaller of the two to them (see [`check`]).

mod support;

use std::time::Duration;

use fencelock::{Lease, Locker};
use support::Cluster;

/// A tiny deterministic generator (xorshift64*): the run is the same for a seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

/// Checks the invariant for `lease` right now.
///
/// The claim counted is the smaller of the lease's claim just before the nodes are read
/// and just after. The claim before must hold against the TTLs read: the keys lived at
/// least that long when it was made, and since then their expiries can only have moved
/// later, or been cut by an extend to a shorter TTL that lowered the claim first
/// (docs/fencing.md, "Validity", rules 3 and 4). The claim after alone raises false
/// alarms: an automatic renewal can land on the nodes just after they answered and be
/// decided before the claim is read, which then holds the renewed claim against the
/// TTLs from before the renewal ("claims 620 ms, its keys live 408 ms": 408 ms was the
/// key's life before a renewal to 629 ms; on a loaded machine, about one run in three).
/// Every claim that stands until the next check is held to the TTLs as strictly as
/// before: at that check it is the claim taken before the read.
async fn check(locker: &Locker, lease: &Lease, step: usize, what: &str) {
    let before = lease.valid_until();
    let status = locker
        .status(lease.keys()[0].as_str())
        .await
        .expect("status");
    let status = &status[0];
    let mut lives: Vec<Duration> = status
        .nodes
        .iter()
        .map(|n| {
            if n.held {
                n.ttl.unwrap_or(Duration::MAX)
            } else {
                Duration::ZERO
            }
        })
        .collect();
    lives.sort_unstable_by(|a, b| b.cmp(a));
    let majority = lives[lives.len() / 2];
    let claimed = lease
        .remaining()
        .min(before.saturating_duration_since(std::time::Instant::now()));
    // PTTL is whole milliseconds, rounded down.
    assert!(
        claimed <= majority + Duration::from_millis(1),
        "step {step} ({what}): the lease claims {claimed:?}, its keys live {majority:?} \
         on a majority ({lives:?})"
    );
}

async fn interleave(urls: Vec<String>, seed: u64, steps: usize) {
    let locker = Locker::builder()
        .stores(urls)
        .request_timeout(Duration::from_millis(300))
        .build()
        .expect("locker");
    let mut rng = Rng(seed);
    let key = format!("validity-{seed}");
    let base = Duration::from_millis(300);
    let mut lease = locker.acquire(key.as_str(), base).await.expect("acquire");
    for step in 0..steps {
        let what = match rng.below(6) {
            0 | 1 => {
                // Extend, longer or shorter than now, to completion.
                let ttl = Duration::from_millis(100 + rng.below(3000));
                let _ = lease.extend(ttl).await;
                "extend"
            }
            2 => {
                // Extend, cancelled after a random moment (maybe before any answer).
                let ttl = Duration::from_millis(100 + rng.below(3000));
                let cancel = Duration::from_micros(rng.below(3000));
                tokio::select! {
                    _ = lease.extend(ttl) => {}
                    _ = tokio::time::sleep(cancel) => {}
                }
                "cancelled extend"
            }
            3 => {
                lease.set_auto_renew(rng.below(4) != 0);
                "auto-renew switched"
            }
            4 => {
                // Let time pass: renewal rounds, maybe expiry.
                tokio::time::sleep(Duration::from_millis(rng.below(150))).await;
                "time passed"
            }
            _ => {
                if rng.below(5) == 0 {
                    let _ = lease.release().await;
                    lease = match locker.acquire(key.as_str(), base).await {
                        Ok(l) => l,
                        Err(e) => panic!("step {step}: re-acquire: {e}"),
                    };
                    "released and acquired again"
                } else {
                    "nothing"
                }
            }
        };
        check(&locker, &lease, step, what).await;
        if lease.is_lost() || !lease.is_valid() {
            drop(lease);
            lease = locker
                .acquire_with(
                    key.as_str(),
                    base,
                    &fencelock::AcquireOptions::default().max_wait(Duration::from_secs(10)),
                )
                .await
                .expect("acquire after a loss");
        }
    }
    lease.release().await.expect("release");
    locker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validity_is_never_overstated_in_memory() {
    for seed in [1, 2, 3] {
        interleave(vec![format!("memory://validity-{seed}")], seed, 300).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validity_is_never_overstated_on_one_redis_node() {
    let cluster = Cluster::start(1);
    for seed in [4, 5] {
        interleave(cluster.urls(), seed, 300).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validity_is_never_overstated_on_three_redis_nodes() {
    let cluster = Cluster::start(3);
    for seed in [6, 7] {
        interleave(cluster.urls(), seed, 300).await;
    }
}
