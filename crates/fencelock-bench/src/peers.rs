//! Peers (`--only peers`): fencelock and the floor side by side with other Redlock
//! clients, at their documented default settings, on the same nodes in the same run.
//!
//! - `rslock` (the crate, in this process; one `LockManager` shared by every task,
//!   as an application would);
//! - the `redlock` npm package on ioredis, in a Node.js process of its own
//!   (`tests/interop/bench-peer.js`, see [`crate::node_peer`]), which measures itself
//!   with the same definitions and reports JSON.
//!
//! Workloads: W1 (one task, fresh keys: p50, p99, pairs/s), W2 at 64 tasks (fresh
//! keys: pairs/s) and W3H (8 contenders on one key, every critical section a hand-off:
//! [`crate::w3_hot_key::run_forced`]). The sides of each alternate run by run, the
//! order rotating.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use fencelock::Locker;

use crate::Plan;
use crate::node_peer::{self, num};
use crate::raw::Raw;
use crate::servers::Nodes;
use crate::stats::{self, Summary};
use crate::w1_latency::{self, TTL};
use crate::w2_throughput;
use crate::w3_hot_key::{self, Kind, W3};

/// The `rslock` version the bench is built with (as in its `Cargo.toml`).
pub const RSLOCK_VERSION: &str = "0.10.0";

/// The W2 level the peers are compared at.
pub const TASKS: usize = 64;

/// The clients compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peer {
    /// fencelock, default options.
    Fencelock,
    /// The floor: raw `SET NX PX` + compare-and-delete ([`crate::raw`]).
    Floor,
    /// `rslock` at its defaults.
    Rslock,
    /// The `redlock` npm package at its defaults.
    RedlockNpm,
}

impl Peer {
    /// Every peer, in report order.
    pub const ALL: [Peer; 4] = [Peer::Fencelock, Peer::Floor, Peer::Rslock, Peer::RedlockNpm];

    /// The name in the report.
    pub fn label(self) -> &'static str {
        match self {
            Peer::Fencelock => "fencelock",
            Peer::Floor => "floor (raw redis-rs)",
            Peer::Rslock => "rslock (defaults)",
            Peer::RedlockNpm => "redlock npm (defaults)",
        }
    }
}

/// The W3H kinds of the peers' comparison, in report order.
pub const HANDOFF_KINDS: [Kind; 4] = [
    Kind::Default,
    Kind::Spinning,
    Kind::Rslock,
    Kind::RedlockNpm,
];

/// One client's W1 figures.
#[derive(Clone, Debug)]
pub struct Latency {
    /// Which client.
    pub peer: Peer,
    /// p50 of acquire+release, µs.
    pub p50: Summary,
    /// p99 of acquire+release, µs.
    pub p99: Summary,
    /// Pairs per second.
    pub ops: Summary,
}

/// W1 with the peers on one node set.
#[derive(Clone, Debug)]
pub struct PeersW1 {
    /// How many nodes.
    pub nodes: usize,
    /// Every client, in [`Peer::ALL`] order.
    pub sides: Vec<Latency>,
}

/// W2 at [`TASKS`] with the peers on one node set: pairs/s per client.
#[derive(Clone, Debug)]
pub struct PeersW2 {
    /// How many nodes.
    pub nodes: usize,
    /// Every client's pairs/s, in [`Peer::ALL`] order.
    pub sides: Vec<(Peer, Summary)>,
}

impl PeersW1 {
    /// The figures of `peer`.
    pub fn side(&self, peer: Peer) -> Option<&Latency> {
        self.sides.iter().find(|s| s.peer == peer)
    }
}

impl PeersW2 {
    /// The pairs/s of `peer`.
    pub fn side(&self, peer: Peer) -> Option<&Summary> {
        self.sides.iter().find(|s| s.0 == peer).map(|s| &s.1)
    }
}

/// The versions and settings of the Node.js packages, read from their installed
/// `package.json` (for the report).
pub fn npm_version(package: &str) -> String {
    let file = fencelock_testkit::foreign::interop_dir()
        .join("node_modules")
        .join(package)
        .join("package.json");
    std::fs::read_to_string(file)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v.get("version")?.as_str().map(str::to_string))
        .unwrap_or_else(|| "(not installed)".into())
}

/// Runs W1 with the peers on `nodes`.
///
/// # Errors
///
/// A request that fails, a free key refused, a Node.js peer that fails.
pub async fn run_w1(plan: &Plan, nodes: &Nodes) -> anyhow::Result<PeersW1> {
    nodes.reset().await?;
    let mut admin = nodes.admin().await?;
    let locker = Locker::builder().stores(nodes.urls()).build()?;
    let raw = Raw::connect(&nodes.urls()).await?;
    let manager = rslock::LockManager::new(nodes.urls());
    w1_latency::fencelock_pass(&locker, "warm", w1_latency::WARM_UP).await?;
    w1_latency::raw_pass(&raw, "warm", w1_latency::WARM_UP).await?;
    rslock_w1(&manager, "warm-s", w1_latency::WARM_UP).await?;
    // [p50, p99, pairs/s] per peer.
    let mut figures: Vec<[Vec<f64>; 3]> = vec![Default::default(); Peer::ALL.len()];
    for run in 0..plan.runs {
        for j in 0..Peer::ALL.len() {
            let idx = (j + run) % Peer::ALL.len();
            let n = plan.w1_ops;
            let (p50, p99, ops) = match Peer::ALL[idx] {
                Peer::Fencelock => hist_figures(
                    w1_latency::fencelock_pass(&locker, &format!("f{run}"), n).await?,
                    n,
                ),
                Peer::Floor => {
                    hist_figures(w1_latency::raw_pass(&raw, &format!("r{run}"), n).await?, n)
                }
                Peer::Rslock => hist_figures(rslock_w1(&manager, &format!("s{run}"), n).await?, n),
                Peer::RedlockNpm => {
                    let args = [
                        "--ops".to_string(),
                        n.to_string(),
                        "--ttl-ms".into(),
                        TTL.as_millis().to_string(),
                        "--tag".into(),
                        format!("n{run}"),
                    ];
                    let time = Duration::from_millis(n as u64 * 5);
                    let (r, _) =
                        node_peer::run("redlock", "w1", nodes, &mut admin, &args, time).await?;
                    (num(r.p50_us), num(r.p99_us), num(r.pairs) / r.elapsed_s)
                }
            };
            let f = &mut figures[idx];
            f[0].push(p50);
            f[1].push(p99);
            f[2].push(ops);
        }
    }
    locker.shutdown().await;
    Ok(PeersW1 {
        nodes: nodes.len(),
        sides: Peer::ALL
            .iter()
            .zip(&figures)
            .map(|(&peer, f)| Latency {
                peer,
                p50: Summary::of(&f[0]),
                p99: Summary::of(&f[1]),
                ops: Summary::of(&f[2]),
            })
            .collect(),
    })
}

/// (p50 µs, p99 µs, pairs/s) of a W1 pass.
fn hist_figures((h, t): (hdrhistogram::Histogram<u64>, Duration), n: usize) -> (f64, f64, f64) {
    (
        stats::percentile_us(&h, 50.0),
        stats::percentile_us(&h, 99.0),
        n as f64 / t.as_secs_f64(),
    )
}

/// W1's pass for `rslock`: `lock` + `unlock` of `n` fresh keys in sequence.
async fn rslock_w1(
    manager: &rslock::LockManager,
    tag: &str,
    n: usize,
) -> anyhow::Result<(hdrhistogram::Histogram<u64>, Duration)> {
    let mut h = stats::histogram();
    let start = Instant::now();
    for i in 0..n {
        let t = Instant::now();
        let k = w1_latency::key(tag, i);
        let lock = manager
            .lock(k.as_str(), TTL)
            .await
            .map_err(|e| anyhow::anyhow!("rslock lock of the free key {k}: {e}"))?;
        manager.unlock(&lock).await;
        stats::record(&mut h, t.elapsed());
    }
    Ok((h, start.elapsed()))
}

/// Runs W2 at [`TASKS`] tasks with the peers on `nodes`.
///
/// # Errors
///
/// A request that fails, a free key refused, a Node.js peer that fails.
pub async fn run_w2(plan: &Plan, nodes: &Nodes) -> anyhow::Result<PeersW2> {
    nodes.reset().await?;
    let mut admin = nodes.admin().await?;
    let locker = Locker::builder().stores(nodes.urls()).build()?;
    let raw = Raw::connect(&nodes.urls()).await?;
    let manager = rslock::LockManager::new(nodes.urls());
    let timeouts = Arc::new(AtomicU64::new(0));
    let mut figures: Vec<Vec<f64>> = vec![Vec::new(); Peer::ALL.len()];
    // Pass numbers apart from W2's own, so that every key is fresh.
    let mut pass = 5000u64;
    for run in 0..plan.runs {
        for j in 0..Peer::ALL.len() {
            pass += 1;
            let idx = (j + run) % Peer::ALL.len();
            let t = plan.w2_time;
            let rate = match Peer::ALL[idx] {
                Peer::Fencelock => {
                    w2_throughput::fencelock_pass(&locker, TASKS, t, pass, &timeouts)
                        .await?
                        .0
                }
                Peer::Floor => w2_throughput::raw_pass(&raw, TASKS, t, pass).await?.0,
                Peer::Rslock => rslock_w2(&manager, t, pass).await?,
                Peer::RedlockNpm => {
                    let args = [
                        "--tasks".to_string(),
                        TASKS.to_string(),
                        "--duration-ms".into(),
                        t.as_millis().to_string(),
                        "--ttl-ms".into(),
                        TTL.as_millis().to_string(),
                        "--tag".into(),
                        format!("{pass:04}"),
                    ];
                    let (r, _) =
                        node_peer::run("redlock", "w2", nodes, &mut admin, &args, t).await?;
                    num(r.pairs) / r.elapsed_s
                }
            };
            figures[idx].push(rate);
        }
        // Keys of earlier runs would only make the nodes' dictionaries bigger.
        nodes.reset().await?;
    }
    locker.shutdown().await;
    Ok(PeersW2 {
        nodes: nodes.len(),
        sides: Peer::ALL
            .iter()
            .zip(&figures)
            .map(|(&p, f)| (p, Summary::of(f)))
            .collect(),
    })
}

/// W2's pass for `rslock`: pairs/s of [`TASKS`] tasks sharing one `LockManager`.
async fn rslock_w2(
    manager: &rslock::LockManager,
    time: Duration,
    pass: u64,
) -> anyhow::Result<f64> {
    let manager = manager.clone();
    let (rate, _) = w2_throughput::drive(TASKS, time, move |t, i| {
        let manager = manager.clone();
        async move {
            let k = w2_throughput::key(pass, t, i);
            let lock = match manager.lock(k.as_str(), TTL).await {
                Ok(l) => l,
                Err(e) => bail!("rslock lock of the free key {k}: {e}"),
            };
            manager.unlock(&lock).await;
            Ok(true)
        }
    })
    .await
    .context("rslock W2")?;
    Ok(rate)
}

/// Runs W3H with the peers on `nodes` ([`HANDOFF_KINDS`]).
///
/// # Errors
///
/// As [`w3_hot_key::run_forced`].
pub async fn run_w3h(plan: &Plan, nodes: &Nodes) -> anyhow::Result<W3> {
    w3_hot_key::run_forced(plan, nodes, &HANDOFF_KINDS).await
}
