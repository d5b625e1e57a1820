//! W1 — uncontended latency: one task acquires and releases distinct keys in sequence.
//!
//! fencelock: `Locker::try_acquire` + `Lease::release`. Floor: `SET NX PX` +
//! compare-and-delete on the same nodes (majority over 3), same key and value sizes.
//! Runs of the two alternate so that load from other processes hits both alike.

use std::time::{Duration, Instant};

use anyhow::Context;
use fencelock::Locker;

use crate::Plan;
use crate::raw::{self, Raw};
use crate::servers::{self, Nodes};
use crate::stats::{self, Summary};

/// The TTL of every lease (long: nothing here should expire).
pub const TTL: Duration = Duration::from_secs(10);
pub(crate) const WARM_UP: usize = 200;

/// One side of W1.
#[derive(Clone, Debug, Default)]
pub struct Side {
    /// p50 of acquire+release, µs.
    pub p50: Summary,
    /// p99 of acquire+release, µs.
    pub p99: Summary,
    /// Acquire+release pairs per second.
    pub ops: Summary,
    /// Server CPU per pair, µs, summed over nodes (`INFO cpu` deltas).
    pub server_us: Summary,
    /// Client CPU per pair, µs: this process's user+system time (`getrusage`) over the
    /// side's run (the other side is idle meanwhile).
    pub client_us: Summary,
}

/// W1 on one node set.
#[derive(Clone, Debug)]
pub struct W1 {
    /// How many nodes.
    pub nodes: usize,
    /// fencelock.
    pub fencelock: Side,
    /// Raw redis-rs.
    pub raw: Side,
}

#[derive(Default)]
struct Runs {
    p50: Vec<f64>,
    p99: Vec<f64>,
    ops: Vec<f64>,
    server: Vec<f64>,
    client: Vec<f64>,
}

impl Runs {
    fn push(&mut self, h: &hdrhistogram::Histogram<u64>, elapsed: Duration, n: usize) {
        self.p50.push(stats::percentile_us(h, 50.0));
        self.p99.push(stats::percentile_us(h, 99.0));
        self.ops.push(n as f64 / elapsed.as_secs_f64());
    }

    fn side(&self) -> Side {
        Side {
            p50: Summary::of(&self.p50),
            p99: Summary::of(&self.p99),
            ops: Summary::of(&self.ops),
            server_us: Summary::of(&self.server),
            client_us: Summary::of(&self.client),
        }
    }
}

/// Runs W1 on `nodes`.
///
/// # Errors
///
/// When a request fails or a free key is refused.
pub async fn run(plan: &Plan, nodes: &Nodes) -> anyhow::Result<W1> {
    nodes.reset().await?;
    let locker = Locker::builder().stores(nodes.urls()).build()?;
    let raw = Raw::connect(&nodes.urls()).await?;
    let (mut fl, mut rw) = (Runs::default(), Runs::default());
    fencelock_pass(&locker, "warm", WARM_UP).await?;
    raw_pass(&raw, "warm", WARM_UP).await?;
    let mut admin = nodes.admin().await?;
    for run in 0..plan.runs {
        // Alternate which side goes first.
        let tag_fl = format!("f{run}");
        let tag_rw = format!("r{run}");
        for side in 0..2 {
            let cpu0 = servers::cpu_all(&mut admin).await?;
            let client0 = stats::cpu_time();
            let fencelock_side = (side == 0) == (run % 2 == 0);
            let (runs, (h, t)) = if fencelock_side {
                (
                    &mut fl,
                    fencelock_pass(&locker, &tag_fl, plan.w1_ops).await?,
                )
            } else {
                (&mut rw, raw_pass(&raw, &tag_rw, plan.w1_ops).await?)
            };
            runs.push(&h, t, plan.w1_ops);
            let client = stats::cpu_time().saturating_sub(client0);
            runs.client
                .push(client.as_secs_f64() * 1e6 / plan.w1_ops as f64);
            let cpu = servers::cpu_all(&mut admin).await? - cpu0;
            runs.server.push(cpu * 1e6 / plan.w1_ops as f64);
        }
    }
    locker.shutdown().await;
    Ok(W1 {
        nodes: nodes.len(),
        fencelock: fl.side(),
        raw: rw.side(),
    })
}

/// The key of pair `i` (same length on both sides).
pub fn key(tag: &str, i: usize) -> String {
    format!("bench:w1:{tag}:{i:08}")
}

pub(crate) async fn fencelock_pass(
    locker: &Locker,
    tag: &str,
    n: usize,
) -> anyhow::Result<(hdrhistogram::Histogram<u64>, Duration)> {
    let mut h = stats::histogram();
    let start = Instant::now();
    for i in 0..n {
        let t = Instant::now();
        let lease = locker
            .try_acquire(key(tag, i), TTL)
            .await
            .with_context(|| format!("fencelock try_acquire of free key {}", key(tag, i)))?;
        lease.release().await.context("fencelock release")?;
        stats::record(&mut h, t.elapsed());
    }
    Ok((h, start.elapsed()))
}

pub(crate) async fn raw_pass(
    raw: &Raw,
    tag: &str,
    n: usize,
) -> anyhow::Result<(hdrhistogram::Histogram<u64>, Duration)> {
    let mut h = stats::histogram();
    let ttl = TTL.as_millis() as u64;
    let start = Instant::now();
    for i in 0..n {
        let t = Instant::now();
        let k = key(tag, i);
        let v = raw::value(1, i as u64);
        if !raw.acquire(&k, &v, ttl).await? {
            anyhow::bail!("raw SET NX refused the free key {k}");
        }
        raw.release(&k, &v).await?;
        stats::record(&mut h, t.elapsed());
    }
    Ok((h, start.elapsed()))
}
