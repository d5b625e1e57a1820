//! W2 — uncontended throughput: many tasks at once, each on its own keys.
//!
//! fencelock: one `Locker` shared by every task (as an application would), so one
//! multiplexed connection per node. Floor: one raw client shared the same way. The
//! table shows 64 tasks; the chart sweeps [`crate::Plan::w2_levels`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use fencelock::Locker;

use crate::Plan;
use crate::raw::{self, Raw};
use crate::servers::{self, Nodes};
use crate::stats::{self, Summary};
use crate::w1_latency::TTL;

/// Each task does at most this many pairs per run (the time bound usually ends it).
const MAX_OPS_PER_TASK: u64 = 1_000_000;

/// One concurrency level.
#[derive(Clone, Debug)]
pub struct Level {
    /// Concurrent tasks.
    pub tasks: usize,
    /// fencelock pairs/s.
    pub fencelock: Summary,
    /// Raw pairs/s.
    pub raw: Summary,
    /// Connections the nodes accepted during a fencelock run (a healthy run makes none:
    /// the locker reuses one connection per node; it reconnects after a timed-out
    /// request).
    pub fencelock_reconnects: Summary,
    /// fencelock requests (all runs of the level) that got no answer within the 250 ms
    /// request timeout; they are not counted as operations.
    pub fencelock_timeouts: u64,
    /// fencelock: this process's CPU (user+system, `getrusage`) per pair, µs.
    pub fencelock_client_us: Summary,
    /// The floor: this process's CPU per pair, µs.
    pub raw_client_us: Summary,
    /// fencelock: Redis CPU per pair, µs, summed over nodes (`INFO cpu` deltas).
    pub fencelock_server_us: Summary,
    /// The floor: Redis CPU per pair, µs, summed over nodes.
    pub raw_server_us: Summary,
}

/// W2 on one node set.
#[derive(Clone, Debug)]
pub struct W2 {
    /// How many nodes.
    pub nodes: usize,
    /// Every level measured, in increasing order.
    pub levels: Vec<Level>,
}

impl W2 {
    /// The level with `tasks` tasks.
    pub fn at(&self, tasks: usize) -> Option<&Level> {
        self.levels.iter().find(|l| l.tasks == tasks)
    }
}

/// Runs W2 on `nodes`.
///
/// # Errors
///
/// When a request fails or a free key is refused.
pub async fn run(plan: &Plan, nodes: &Nodes) -> anyhow::Result<W2> {
    nodes.reset().await?;
    let locker = Locker::builder().stores(nodes.urls()).build()?;
    let raw = Raw::connect(&nodes.urls()).await?;
    let mut admin = nodes.admin().await?;
    let mut levels = Vec::new();
    let mut pass = 0u64;
    for &tasks in &plan.w2_levels {
        let (mut fl, mut rw, mut conns) = (Vec::new(), Vec::new(), Vec::new());
        // CPU per pair, µs: [fencelock client, raw client, fencelock server, raw server].
        let mut cpu: [Vec<f64>; 4] = Default::default();
        let timeouts = Arc::new(AtomicU64::new(0));
        for run in 0..plan.runs {
            pass += 1;
            let first_fl = run % 2 == 0;
            for side in 0..2 {
                let server0 = servers::cpu_all(&mut admin).await?;
                let client0 = stats::cpu_time();
                let (_, pairs) = if (side == 0) == first_fl {
                    let c0 = servers::connections_all(&mut admin).await?;
                    let r = fencelock_pass(&locker, tasks, plan.w2_time, pass, &timeouts).await?;
                    fl.push(r.0);
                    conns.push((servers::connections_all(&mut admin).await? - c0) as f64);
                    r
                } else {
                    let r = raw_pass(&raw, tasks, plan.w2_time, pass).await?;
                    rw.push(r.0);
                    r
                };
                let client = stats::cpu_time().saturating_sub(client0).as_secs_f64();
                let server = servers::cpu_all(&mut admin).await? - server0;
                let per = |secs: f64| secs * 1e6 / pairs.max(1) as f64;
                let which = usize::from((side == 0) != first_fl);
                cpu[which].push(per(client));
                cpu[2 + which].push(per(server));
            }
        }
        levels.push(Level {
            tasks,
            fencelock: Summary::of(&fl),
            raw: Summary::of(&rw),
            fencelock_reconnects: Summary::of(&conns),
            fencelock_timeouts: timeouts.load(Ordering::Relaxed),
            fencelock_client_us: Summary::of(&cpu[0]),
            raw_client_us: Summary::of(&cpu[1]),
            fencelock_server_us: Summary::of(&cpu[2]),
            raw_server_us: Summary::of(&cpu[3]),
        });
        // Keys of earlier passes would only make the node's dictionary bigger.
        nodes.reset().await?;
    }
    locker.shutdown().await;
    Ok(W2 {
        nodes: nodes.len(),
        levels,
    })
}

pub(crate) fn key(pass: u64, task: usize, i: u64) -> String {
    format!("bench:w2:{pass:04}:{task:03}:{i:08}")
}

/// Runs `tasks` copies of `one(task, i)` until `time` is up; pairs per second.
pub(crate) async fn drive<F, Fut>(
    tasks: usize,
    time: Duration,
    one: F,
) -> anyhow::Result<(f64, u64)>
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<bool>> + Send + 'static,
{
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let one = Arc::new(one);
    let start = Instant::now();
    let mut handles = Vec::new();
    for t in 0..tasks {
        let (stop, done, one) = (stop.clone(), done.clone(), one.clone());
        handles.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) && i < MAX_OPS_PER_TASK {
                let counted = one(t, i).await?;
                i += 1;
                if counted {
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
            anyhow::Ok(())
        }));
    }
    tokio::time::sleep(time).await;
    stop.store(true, Ordering::Relaxed);
    let counted = done.load(Ordering::Relaxed);
    let elapsed = start.elapsed();
    for h in handles {
        h.await.context("W2 task panicked")??;
    }
    // The rate counts the pairs done within the time; the CPU figures divide by every
    // pair done, those finished after the stop too.
    Ok((
        counted as f64 / elapsed.as_secs_f64(),
        done.load(Ordering::Relaxed),
    ))
}

pub(crate) async fn fencelock_pass(
    locker: &Locker,
    tasks: usize,
    time: Duration,
    pass: u64,
    timeouts: &Arc<AtomicU64>,
) -> anyhow::Result<(f64, u64)> {
    let locker = locker.clone();
    let timeouts = timeouts.clone();
    drive(tasks, time, move |t, i| {
        let locker = locker.clone();
        let timeouts = timeouts.clone();
        async move {
            let k = key(pass, t, i);
            let lease = match locker.try_acquire(k.as_str(), TTL).await {
                Ok(l) => l,
                // No answer within the 250 ms request timeout (a stalled, shared box):
                // counted, not an operation.
                Err(e) if e.is_unavailable() => {
                    timeouts.fetch_add(1, Ordering::Relaxed);
                    return Ok(false);
                }
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("fencelock try_acquire of free key {k}"));
                }
            };
            match lease.release().await {
                Ok(_) => Ok(true),
                Err(e) if e.is_unavailable() => {
                    timeouts.fetch_add(1, Ordering::Relaxed);
                    Ok(false)
                }
                Err(e) => Err(e).context("fencelock release"),
            }
        }
    })
    .await
}

pub(crate) async fn raw_pass(
    raw: &Raw,
    tasks: usize,
    time: Duration,
    pass: u64,
) -> anyhow::Result<(f64, u64)> {
    let raw = raw.clone();
    let ttl = TTL.as_millis() as u64;
    drive(tasks, time, move |t, i| {
        let raw = raw.clone();
        async move {
            let k = key(pass, t, i);
            let v = raw::value(t as u64, i);
            if !raw.acquire(&k, &v, ttl).await? {
                anyhow::bail!("raw SET NX refused the free key {k}");
            }
            raw.release(&k, &v).await?;
            Ok(true)
        }
    })
    .await
}
