//! # fencelock-bench
//!
//! Benchmarks of fencelock against the physical floor: every fencelock figure is
//! measured next to the cheapest way to do the same thing by hand (raw redis-rs, raw
//! rusqlite), in the same run, on the same servers, and reported as a ratio. The
//! machine this runs on is shared and noisy, so absolute numbers mean little; ratios
//! measured minutes apart on the same box mean more. Runs of the two sides alternate
//! for the same reason.
//!
//! Run it with `scripts/bench` (or `scripts/bench --quick`); it writes
//! `docs/benchmarks.md` and `docs/charts/*.svg`.
//!
//! ## Layout
//!
//! - `main.rs`: flags, then [`run`] (or the hidden worker mode of W5).
//! - [`servers`]: local `redis-server` processes (the `fencelock-testkit` fixture) on
//!   free loopback ports, killed by PID on drop and on Ctrl-C; `INFO commandstats`
//!   deltas.
//! - [`raw`]: the floor client — `SET NX PX` plus a compare-and-delete script over
//!   multiplexed connections, majority over several nodes.
//! - [`stats`]: medians, min–max, hdrhistogram percentiles, CPU time.
//! - One workload per file: [`w1_latency`], [`w2_throughput`], [`w3_hot_key`],
//!   [`w4_renewal`], [`w5_sqlite`], [`w6_mixed`]; [`peers`] (W1, W2 and W3H beside
//!   `rslock` and the `redlock` npm package) and [`sem`] (the semaphore beside the
//!   `redis-semaphore` npm package).
//! - [`node_peer`]: the Node.js peers (`tests/interop/bench-peer.js`), which measure
//!   themselves and report JSON.
//! - [`report`]: the Markdown page; [`charts`]: the SVG charts; [`machine`]: facts
//!   about the box.
#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations)]

pub mod charts;
pub mod machine;
pub mod node_peer;
pub mod peers;
pub mod raw;
pub mod report;
pub mod sem;
pub mod servers;
pub mod stats;
pub mod w1_latency;
pub mod w2_throughput;
pub mod w3_hot_key;
pub mod w4_renewal;
pub mod w5_sqlite;
pub mod w6_mixed;

use std::path::PathBuf;
use std::time::Duration;

/// How much to measure.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Repetitions of every figure (the report shows their median and min–max).
    pub runs: usize,
    /// W1: acquire+release pairs per run.
    pub w1_ops: usize,
    /// W2: how long one throughput run lasts.
    pub w2_time: Duration,
    /// W2 chart: the concurrency levels.
    pub w2_levels: Vec<usize>,
    /// W3: how long one hot-key run lasts.
    pub w3_time: Duration,
    /// W4: lease counts.
    pub w4_leases: Vec<usize>,
    /// W4: runs (W4 is the slowest workload).
    pub w4_runs: usize,
    /// W4: the TTL of the renewed leases (renewed at about a third of it).
    pub w4_ttl: Duration,
    /// W4: how long the renewal is watched.
    pub w4_window: Duration,
    /// W5: acquire+release pairs per latency run.
    pub w5_ops: usize,
    /// W5: how long one 8-process hot-key run lasts.
    pub w5_time: Duration,
    /// W6: how long one mixed-fleet contest lasts.
    pub w6_time: Duration,
    /// W6: foreign hand-offs measured per holder.
    pub w6_handoffs: usize,
    /// W6: only the contests at npm's default retry (npm against npm, fencelock
    /// against npm), no hand-off timing: the fair-share target on its own.
    pub w6_fair_share_only: bool,
    /// Which workloads to run (`w1` … `w6`, `w3h`, `peers`, `sem`).
    pub only: Vec<String>,
    /// On which node counts (1, 3); empty: both.
    pub nodes: Vec<usize>,
}

impl Plan {
    /// The full plan (about 10 minutes) or the quick one (1–2 minutes).
    pub fn new(quick: bool) -> Plan {
        if quick {
            Plan {
                runs: 3,
                w1_ops: 1000,
                w2_time: Duration::from_millis(400),
                w2_levels: vec![1, 8, 64, 256],
                w3_time: Duration::from_millis(1000),
                w4_leases: vec![1_000, 10_000, 100_000],
                w4_runs: 1,
                w4_ttl: Duration::from_secs(10),
                w4_window: Duration::from_secs(7),
                w5_ops: 300,
                w5_time: Duration::from_millis(1500),
                w6_time: Duration::from_secs(4),
                w6_handoffs: 5,
                w6_fair_share_only: false,
                only: Vec::new(),
                nodes: Vec::new(),
            }
        } else {
            Plan {
                runs: 5,
                w1_ops: 4000,
                w2_time: Duration::from_millis(1500),
                w2_levels: vec![1, 8, 64, 256],
                w3_time: Duration::from_secs(3),
                w4_leases: vec![1_000, 10_000, 100_000],
                w4_runs: 3,
                w4_ttl: Duration::from_secs(10),
                w4_window: Duration::from_secs(10),
                w5_ops: 1000,
                w5_time: Duration::from_secs(3),
                w6_time: Duration::from_secs(8),
                w6_handoffs: 10,
                w6_fair_share_only: false,
                only: Vec::new(),
                nodes: Vec::new(),
            }
        }
    }

    /// Whether workload `w` (e.g. `"w3"`) is on.
    pub fn wants(&self, w: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|o| o == w)
    }
}

/// Where the results go and how they were asked for.
#[derive(Clone, Debug)]
pub struct Output {
    /// The Markdown page.
    pub markdown: PathBuf,
    /// The directory of the SVG charts.
    pub charts: PathBuf,
    /// The command line to quote next to the numbers.
    pub command: String,
}

/// Everything measured, for the report.
#[derive(Debug, Default)]
pub struct Results {
    /// W1 on 1 and 3 nodes.
    pub w1: Vec<w1_latency::W1>,
    /// W2 at 64 tasks on 1 and 3 nodes, and the concurrency sweep.
    pub w2: Vec<w2_throughput::W2>,
    /// W3 on 1 and 3 nodes.
    pub w3: Vec<w3_hot_key::W3>,
    /// W3H (every critical section a hand-off) on 1 and 3 nodes.
    pub w3h: Vec<w3_hot_key::W3>,
    /// W4 per lease count.
    pub w4: Vec<w4_renewal::W4>,
    /// W5.
    pub w5: Option<w5_sqlite::W5>,
    /// W6 on 1 and 3 nodes.
    pub w6: Vec<w6_mixed::W6>,
    /// W1 beside the peers, on 1 and 3 nodes.
    pub peers_w1: Vec<peers::PeersW1>,
    /// W2 at 64 tasks beside the peers, on 1 and 3 nodes.
    pub peers_w2: Vec<peers::PeersW2>,
    /// W3H beside the peers, on 1 and 3 nodes.
    pub peers_w3h: Vec<w3_hot_key::W3>,
    /// The semaphore beside `redis-semaphore`, on 1 and 3 nodes.
    pub sem: Vec<sem::Sem>,
    /// Workloads that failed, with the error (the others still run and are reported).
    pub failures: Vec<(String, String)>,
}

/// Runs one workload; a failure is recorded (with its full cause chain) instead of
/// ending the whole run.
async fn attempt<T>(
    failures: &mut Vec<(String, String)>,
    name: String,
    work: impl Future<Output = anyhow::Result<T>>,
) -> Option<T> {
    eprintln!("{name}");
    match work.await {
        Ok(v) => Some(v),
        Err(e) => {
            eprintln!("{name} FAILED: {e:#}");
            failures.push((name, format!("{e:#}")));
            None
        }
    }
}

/// Starts the servers, runs every workload of `plan`, writes the report and charts.
///
/// # Errors
///
/// A server that does not start, a workload that fails (with what failed), a file
/// that cannot be written.
pub async fn run(plan: &Plan, out: &Output, pid_dir: Option<PathBuf>) -> anyhow::Result<()> {
    let machine = machine::Machine::read();
    eprintln!("machine: {machine:?}");
    let one = servers::Nodes::start(1, pid_dir.as_deref())?;
    let three = servers::Nodes::start(3, pid_dir.as_deref())?;
    let mut results = Results::default();
    let f = &mut results.failures;
    for nodes in [&one, &three] {
        let n = nodes.len();
        if !plan.nodes.is_empty() && !plan.nodes.contains(&n) {
            continue;
        }
        if plan.wants("w1")
            && let Some(r) = attempt(
                f,
                format!("W1 on {n} node(s)"),
                w1_latency::run(plan, nodes),
            )
            .await
        {
            results.w1.push(r);
        }
        if plan.wants("w2")
            && let Some(r) = attempt(
                f,
                format!("W2 on {n} node(s)"),
                w2_throughput::run(plan, nodes),
            )
            .await
        {
            results.w2.push(r);
        }
        if plan.wants("w3")
            && let Some(r) = attempt(
                f,
                format!("W3 on {n} node(s)"),
                w3_hot_key::run(plan, nodes),
            )
            .await
        {
            results.w3.push(r);
        }
        if plan.wants("w3h")
            && let Some(r) = attempt(
                f,
                format!("W3H on {n} node(s)"),
                w3_hot_key::run_handoff(plan, nodes),
            )
            .await
        {
            results.w3h.push(r);
        }
        if plan.wants("w6")
            && let Some(r) =
                attempt(f, format!("W6 on {n} node(s)"), w6_mixed::run(plan, nodes)).await
        {
            results.w6.push(r);
        }
        if plan.wants("peers") {
            if let Some(r) = attempt(
                f,
                format!("Peers W1 on {n} node(s)"),
                peers::run_w1(plan, nodes),
            )
            .await
            {
                results.peers_w1.push(r);
            }
            if let Some(r) = attempt(
                f,
                format!("Peers W2 on {n} node(s)"),
                peers::run_w2(plan, nodes),
            )
            .await
            {
                results.peers_w2.push(r);
            }
            if let Some(r) = attempt(
                f,
                format!("Peers W3H on {n} node(s)"),
                peers::run_w3h(plan, nodes),
            )
            .await
            {
                results.peers_w3h.push(r);
            }
        }
        if plan.wants("sem")
            && let Some(r) = attempt(
                f,
                format!("Semaphore on {n} node(s)"),
                sem::run(plan, nodes),
            )
            .await
        {
            results.sem.push(r);
        }
    }
    if plan.wants("w4") {
        for &n in &plan.w4_leases {
            if let Some(r) = attempt(
                f,
                format!("W4 with {n} leases"),
                w4_renewal::run(plan, &one, n),
            )
            .await
            {
                results.w4.push(r);
            }
        }
    }
    drop(one);
    drop(three);
    if plan.wants("w5") {
        results.w5 = attempt(f, "W5 (SQLite)".into(), w5_sqlite::run(plan)).await;
    }
    let machine = machine.finish();
    std::fs::create_dir_all(&out.charts)?;
    let charts = charts::draw(&results, &out.charts)?;
    let page = report::render(plan, out, &machine, &results, &charts);
    if let Some(dir) = out.markdown.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&out.markdown, page)?;
    eprintln!("wrote {}", out.markdown.display());
    Ok(())
}
