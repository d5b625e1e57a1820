//! W4 — renewal: many leases held with auto-renewal for several renewal periods.
//!
//! The locker renews every live lease at about a third of its TTL, batched per node.
//! Measured over a window after all leases are acquired: `EVALSHA` calls per second per
//! node (from `INFO commandstats`; nothing else runs in the window), all commands per
//! second per node, and this process's CPU time (user+system, `getrusage`) per second
//! of wall time. Every lease must still be held at the end.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use std::sync::atomic::{AtomicU64, Ordering};

use fencelock::{AcquireOptions, Lease, Locker};
use futures_util::StreamExt;

use crate::Plan;
use crate::servers::{self, Nodes};
use crate::stats::{self, Summary};

/// Acquires and releases in flight at once while setting up and tearing down.
const SETUP_CONCURRENCY: usize = 256;

/// W4 for one lease count.
#[derive(Clone, Debug)]
pub struct W4 {
    /// How many nodes.
    pub nodes: usize,
    /// Leases held.
    pub leases: usize,
    /// Renewal periods (TTL/3) in the window.
    pub ticks: f64,
    /// `EVALSHA` calls per second per node.
    pub evalsha_per_s: Summary,
    /// All commands per second per node.
    pub commands_per_s: Summary,
    /// Client CPU seconds per second (1.0 = one core busy).
    pub cpu: Summary,
    /// Seconds to acquire all leases (for context; includes 256-way concurrency).
    pub setup_s: Summary,
    /// First acquire attempts during set-up that failed as `Unavailable` (a node did
    /// not answer within the request timeout) and were retried.
    pub setup_unavailable: Summary,
    /// Releases after the window that failed as `Unavailable` (left to expire).
    pub release_unavailable: Summary,
}

/// Runs W4 with `leases` leases on `nodes`.
///
/// # Errors
///
/// When a request fails or a lease is lost during the window.
pub async fn run(plan: &Plan, nodes: &Nodes, leases: usize) -> anyhow::Result<W4> {
    let mut admin = nodes.admin().await?;
    let (mut evalsha, mut all, mut cpu, mut setup) = (vec![], vec![], vec![], vec![]);
    let mut refused = vec![];
    let mut released_unavailable = vec![];
    let window = plan.w4_window;
    for run in 0..plan.w4_runs {
        nodes.reset().await?;
        let locker = Locker::builder().stores(nodes.urls()).build()?;
        let unavailable = AtomicU64::new(0);
        let unavailable = &unavailable;
        let retry = AcquireOptions::default().max_wait(Duration::from_secs(60));
        let retry = &retry;
        let t = Instant::now();
        let held: Vec<Lease> = futures_util::stream::iter(0..leases)
            .map(|i| {
                let locker = locker.clone();
                async move {
                    let k = format!("bench:w4:{run}:{i:06}");
                    let lease = match locker.try_acquire(k.as_str(), plan.w4_ttl).await {
                        Ok(l) => l,
                        // The node was too slow to answer (renewal batches of the
                        // leases already held share the connection): count it, and
                        // let the locker retry with its back-off.
                        Err(e) if e.is_unavailable() => {
                            unavailable.fetch_add(1, Ordering::Relaxed);
                            locker
                                .acquire_with(k.as_str(), plan.w4_ttl, retry)
                                .await
                                .with_context(|| format!("acquire of free key {k} (retried)"))?
                        }
                        Err(e) => {
                            return Err(e).with_context(|| format!("acquire of free key {k}"));
                        }
                    };
                    lease.set_auto_renew(true);
                    anyhow::Ok(lease)
                }
            })
            .buffer_unordered(SETUP_CONCURRENCY)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<anyhow::Result<_>>()?;
        setup.push(t.elapsed().as_secs_f64());
        let lost_in_setup = held.iter().filter(|l| l.is_lost()).count();
        eprintln!(
            "  {leases} leases acquired in {:.1} s; {lost_in_setup} already lost",
            t.elapsed().as_secs_f64()
        );
        refused.push(unavailable.load(Ordering::Relaxed) as f64);
        servers::reset_all(&mut admin).await?;
        let cpu0 = stats::cpu_time();
        let t0 = Instant::now();
        tokio::time::sleep(window).await;
        let cpu1 = stats::cpu_time();
        let elapsed = t0.elapsed().as_secs_f64();
        let calls = servers::calls_all(&mut admin).await?;
        let n = nodes.len() as f64;
        evalsha.push(calls.get("evalsha").copied().unwrap_or(0) as f64 / n / elapsed);
        all.push(calls.values().sum::<u64>() as f64 / n / elapsed);
        cpu.push((cpu1.saturating_sub(cpu0)).as_secs_f64() / elapsed);
        let lost = held.iter().filter(|l| l.is_lost() || !l.is_valid()).count();
        if lost > 0 {
            bail!("{lost} of {leases} auto-renewed leases were lost during the window");
        }
        let mut teardown_unavailable = 0u64;
        let results: Vec<_> = futures_util::stream::iter(held)
            .map(|l| l.release())
            .buffer_unordered(SETUP_CONCURRENCY)
            .collect()
            .await;
        for r in results {
            match r {
                Ok(_) => {}
                // As in set-up: a node slow to answer. The keys expire with their TTL.
                Err(e) if e.is_unavailable() => teardown_unavailable += 1,
                Err(e) => return Err(e).context("release after the window"),
            }
        }
        released_unavailable.push(teardown_unavailable as f64);
        locker.shutdown().await;
    }
    Ok(W4 {
        nodes: nodes.len(),
        leases,
        ticks: window.as_secs_f64() / (plan.w4_ttl.as_secs_f64() / 3.0),
        evalsha_per_s: Summary::of(&evalsha),
        commands_per_s: Summary::of(&all),
        cpu: Summary::of(&cpu),
        setup_s: Summary::of(&setup),
        setup_unavailable: Summary::of(&refused),
        release_unavailable: Summary::of(&released_unavailable),
    })
}

/// The window's length, for the report.
pub fn window(plan: &Plan) -> Duration {
    plan.w4_window
}
