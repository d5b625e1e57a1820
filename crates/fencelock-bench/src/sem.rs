//! Semaphores (`--only sem`): `2N` contenders (N = [`PERMITS`]) take permits of one
//! semaphore, fencelock's `Locker::semaphore` against the `redis-semaphore` npm
//! package at its default settings (its `Semaphore` on one node, its
//! `RedlockSemaphore` on several), on the same nodes, runs alternating.
//!
//! Each contender has its own client (a `Locker`; in Node.js its own ioredis
//! connections). After its release a contender does not compete again until the
//! permit it freed has been granted to another contender, so that every grant goes to
//! a contender that asked for it (and 2N − N = N contenders are always waiting).
//! Measured:
//!
//! - **permits/s**: grants within the run's time;
//! - **hand-off**: from a permit's release starting to the grant it is matched with
//!   (releases and grants matched first in, first out): how long a freed permit stays
//!   free;
//! - **grants to waiters**: the fraction of grants to a contender that was asking
//!   before the matched release started (the others went to a newcomer that asked
//!   after it and found the permit free);
//! - **wait**: from calling acquire to the grant (waits ending after the stop count);
//! - **holders at once**: counted at the resource (a counter every holder increments
//!   on entry and decrements on exit); fencelock's run fails if it ever exceeds N, the
//!   peer's maximum is reported;
//! - **commands per grant**: every Redis command on every node (`INFO commandstats`,
//!   with the commands the scripts run) over the critical sections run.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use fencelock::{AcquireOptions, Locker};
use hdrhistogram::Histogram;
use redis::aio::MultiplexedConnection;

use crate::Plan;
use crate::node_peer::{self, num};
use crate::servers::{self, Nodes};
use crate::stats::{self, Summary};
use crate::w1_latency::TTL;

/// N, the semaphore's permits.
pub const PERMITS: u32 = 4;
/// The contenders: 2N.
pub const CONTENDERS: usize = 2 * PERMITS as usize;
const KEY: &str = "bench:sem";

/// The clients compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Client {
    /// `Locker::semaphore`, default options.
    Fencelock,
    /// The `redis-semaphore` npm package, default options.
    RedisSemaphore,
}

impl Client {
    /// Both, in report order.
    pub const ALL: [Client; 2] = [Client::Fencelock, Client::RedisSemaphore];

    /// The name in the report.
    pub fn label(self, nodes: usize) -> &'static str {
        match (self, nodes) {
            (Client::Fencelock, _) => "fencelock `Locker::semaphore`",
            (Client::RedisSemaphore, 1) => "redis-semaphore `Semaphore` (defaults)",
            (Client::RedisSemaphore, _) => "redis-semaphore `RedlockSemaphore` (defaults)",
        }
    }
}

/// One client's figures.
#[derive(Clone, Debug)]
pub struct Side {
    /// Which client.
    pub client: Client,
    /// Grants per second.
    pub permits_per_s: Summary,
    /// Hand-off p50, µs.
    pub handoff_p50: Summary,
    /// Hand-off p99, µs.
    pub handoff_p99: Summary,
    /// Wait p50, µs.
    pub wait_p50: Summary,
    /// Wait p99, µs.
    pub wait_p99: Summary,
    /// The longest wait of a run, µs.
    pub wait_max: Summary,
    /// The most holders inside at once in a run.
    pub max_inside: Summary,
    /// The fraction of grants that went to a contender already waiting, in percent.
    pub to_waiters_pct: Summary,
    /// Redis commands executed (all nodes) per critical section.
    pub commands_per_grant: Summary,
}

/// The semaphore row on one node set.
#[derive(Clone, Debug)]
pub struct Sem {
    /// How many nodes.
    pub nodes: usize,
    /// Both clients, in [`Client::ALL`] order.
    pub sides: Vec<Side>,
}

impl Sem {
    /// The figures of `client`.
    pub fn side(&self, client: Client) -> Option<&Side> {
        self.sides.iter().find(|s| s.client == client)
    }
}

#[derive(Clone, Copy)]
struct RunResult {
    permits_per_s: f64,
    handoff_p50: f64,
    handoff_p99: f64,
    wait_p50: f64,
    wait_p99: f64,
    wait_max: f64,
    max_inside: f64,
    to_waiters_pct: f64,
    commands_per_grant: f64,
}

/// Runs the semaphore comparison on `nodes`.
///
/// # Errors
///
/// A request that fails, a wait that times out, more than N fencelock holders at once,
/// a Node.js peer that fails.
pub async fn run(plan: &Plan, nodes: &Nodes) -> anyhow::Result<Sem> {
    let mut admin = nodes.admin().await?;
    let mut runs: Vec<Vec<RunResult>> = vec![Vec::new(); Client::ALL.len()];
    for run in 0..plan.runs {
        for j in 0..Client::ALL.len() {
            let idx = (j + run) % Client::ALL.len();
            nodes.reset().await?;
            let r = match Client::ALL[idx] {
                Client::Fencelock => fencelock_run(nodes, &mut admin, plan.w3_time).await?,
                Client::RedisSemaphore => npm_run(nodes, &mut admin, plan.w3_time, run).await?,
            };
            runs[idx].push(r);
        }
    }
    let sides = Client::ALL
        .iter()
        .zip(&runs)
        .map(|(&client, rs)| {
            let pick =
                |f: fn(&RunResult) -> f64| Summary::of(&rs.iter().map(f).collect::<Vec<_>>());
            Side {
                client,
                permits_per_s: pick(|r| r.permits_per_s),
                handoff_p50: pick(|r| r.handoff_p50),
                handoff_p99: pick(|r| r.handoff_p99),
                wait_p50: pick(|r| r.wait_p50),
                wait_p99: pick(|r| r.wait_p99),
                wait_max: pick(|r| r.wait_max),
                max_inside: pick(|r| r.max_inside),
                to_waiters_pct: pick(|r| r.to_waiters_pct),
                commands_per_grant: pick(|r| r.commands_per_grant),
            }
        })
        .collect();
    Ok(Sem {
        nodes: nodes.len(),
        sides,
    })
}

async fn npm_run(
    nodes: &Nodes,
    admin: &mut [MultiplexedConnection],
    time: Duration,
    run: usize,
) -> anyhow::Result<RunResult> {
    let args = [
        "--duration-ms".to_string(),
        time.as_millis().to_string(),
        "--contenders".into(),
        CONTENDERS.to_string(),
        "--permits".into(),
        PERMITS.to_string(),
        "--tag".into(),
        run.to_string(),
    ];
    let (r, calls) = node_peer::run("redis-semaphore", "sem", nodes, admin, &args, time).await?;
    Ok(RunResult {
        permits_per_s: num(r.grants) / r.elapsed_s,
        handoff_p50: num(r.handoff_p50_us),
        handoff_p99: num(r.handoff_p99_us),
        wait_p50: num(r.wait_p50_us),
        wait_p99: num(r.wait_p99_us),
        wait_max: num(r.wait_max_us),
        max_inside: num(r.max_inside),
        to_waiters_pct: 100.0 * num(r.waiter_share),
        commands_per_grant: calls.values().sum::<u64>() as f64 / num(r.executed).max(1.0),
    })
}

/// What one fencelock run shares between its contenders.
struct Arena {
    stop: AtomicBool,
    inside: AtomicUsize,
    max_inside: AtomicUsize,
    executed: AtomicU64,
    state: Mutex<State>,
}

struct State {
    /// Releases not yet matched with a grant: when, and whom to tell.
    pending: VecDeque<(Instant, tokio::sync::oneshot::Sender<()>)>,
    grants: u64,
    /// Grants to a contender asking since before the matched release started.
    to_waiters: u64,
    hist: Histogram<u64>,
    waits: Histogram<u64>,
}

impl Arena {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Stops the run (with the state lock held): the contenders waiting for their
    /// turn are let go.
    fn finish(&self, s: &mut State) {
        self.stop.store(true, Ordering::Relaxed);
        s.pending.clear();
    }

    fn granted(&self, asked: Instant) {
        let now = Instant::now();
        let mut s = self.lock();
        stats::record(&mut s.waits, now.duration_since(asked));
        if self.stopped() {
            return;
        }
        s.grants += 1;
        if let Some((released, turn)) = s.pending.pop_front() {
            stats::record(&mut s.hist, now.duration_since(released));
            // Not a newcomer that asked after the release started.
            if asked < released {
                s.to_waiters += 1;
            }
            let _ = turn.send(());
        }
    }

    async fn critical_section(&self) {
        let n = self.inside.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_inside.fetch_max(n, Ordering::SeqCst);
        tokio::task::yield_now().await;
        self.executed.fetch_add(1, Ordering::SeqCst);
        self.inside.fetch_sub(1, Ordering::SeqCst);
    }

    /// About to release: the turn to wait for (the freed permit granted to another
    /// contender, or the stop).
    fn releasing(&self) -> tokio::sync::oneshot::Receiver<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let mut s = self.lock();
        if !self.stopped() {
            s.pending.push_back((Instant::now(), tx));
        }
        rx
    }
}

async fn fencelock_run(
    nodes: &Nodes,
    admin: &mut [MultiplexedConnection],
    time: Duration,
) -> anyhow::Result<RunResult> {
    let arena = Arc::new(Arena {
        stop: AtomicBool::new(false),
        inside: AtomicUsize::new(0),
        max_inside: AtomicUsize::new(0),
        executed: AtomicU64::new(0),
        state: Mutex::new(State {
            pending: VecDeque::new(),
            grants: 0,
            to_waiters: 0,
            hist: stats::histogram(),
            waits: stats::histogram(),
        }),
    });
    // Clients are made and warmed up (connections, scripts, the permits record)
    // before the stats reset.
    let mut contenders = Vec::new();
    for me in 0..CONTENDERS {
        let locker = Locker::builder().stores(nodes.urls()).build()?;
        let sem = locker.semaphore(KEY, PERMITS)?;
        sem.try_acquire(TTL)
            .await
            .with_context(|| format!("contender {me}: warm-up permit"))?
            .release()
            .await
            .with_context(|| format!("contender {me}: warm-up release"))?;
        contenders.push((locker, sem));
    }
    servers::reset_all(admin).await?;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (me, (locker, sem)) in contenders.into_iter().enumerate() {
        let arena = arena.clone();
        tasks.push(tokio::spawn(async move {
            let opts = AcquireOptions::default().max_wait(Duration::from_secs(30));
            while !arena.stopped() {
                let asked = Instant::now();
                let permit = sem
                    .acquire_with(TTL, &opts)
                    .await
                    .with_context(|| format!("contender {me}: acquire of a permit"))?;
                arena.granted(asked);
                arena.critical_section().await;
                let turn = arena.releasing();
                permit
                    .release()
                    .await
                    .with_context(|| format!("contender {me}: release"))?;
                // Ok: granted to another; Err: the stop dropped the sender.
                let _ = turn.await;
            }
            locker.shutdown().await;
            anyhow::Ok(())
        }));
    }
    tokio::time::sleep(time).await;
    let elapsed = {
        // Under the state lock so no grant is counted after the clock stopped.
        let mut s = arena.lock();
        arena.finish(&mut s);
        start.elapsed()
    };
    for t in tasks {
        t.await.context("semaphore contender panicked")??;
    }
    let calls = servers::calls_all(admin).await?;
    let max_inside = arena.max_inside.load(Ordering::SeqCst);
    if max_inside > PERMITS as usize {
        bail!("{max_inside} fencelock holders at once on a semaphore of {PERMITS}");
    }
    let executed = arena.executed.load(Ordering::SeqCst).max(1) as f64;
    let s = arena.lock();
    Ok(RunResult {
        permits_per_s: s.grants as f64 / elapsed.as_secs_f64(),
        handoff_p50: stats::percentile_us(&s.hist, 50.0),
        handoff_p99: stats::percentile_us(&s.hist, 99.0),
        wait_p50: stats::percentile_us(&s.waits, 50.0),
        wait_p99: stats::percentile_us(&s.waits, 99.0),
        wait_max: s.waits.max() as f64 / 1000.0,
        max_inside: max_inside as f64,
        to_waiters_pct: 100.0 * s.to_waiters as f64 / s.grants.max(1) as f64,
        commands_per_grant: calls.values().sum::<u64>() as f64 / executed,
    })
}
