//! W3 — a hot key: 8 contenders take turns on one key, each incrementing a counter
//! under the lock.
//!
//! Each contender has its own `Locker` (its own connections, as separate processes
//! would). Variants: fencelock default (waiters woken by release notices), fencelock
//! with notifications off (polling every 200 ms, the default retry delay), fencelock in
//! fair mode (`LockerBuilder::fair(true)`: waiters served in arrival order), and the
//! floor: raw clients retrying `SET NX PX` back to back without sleeping. The counter is
//! incremented with a read, a yield and a write, so two holders at once would lose an
//! update: the run fails if any update is lost.
//!
//! Hand-off latency is the time from a holder deciding to release (just before it sends
//! the release) to a *different* contender's acquire returning.
//!
//! W3H ([`run_handoff`]) is W3 with every critical section a hand-off: after its release
//! a contender does not compete again until another contender has acquired, so no
//! holder re-takes the lock it just released. Only fencelock's default mode and the
//! spinning floor run it; the peers' comparison ([`crate::peers`]) runs it also with
//! `rslock` and the `redlock` npm package at their default settings.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use fencelock::{AcquireOptions, Locker};
use hdrhistogram::Histogram;

use crate::Plan;
use crate::raw::{self, Raw};
use crate::servers::{self, Nodes};
use crate::stats::{self, Summary};
use crate::w1_latency::TTL;

/// Contenders on the hot key.
pub const CONTENDERS: usize = 8;
const KEY: &str = "bench:w3:hot";
/// PINGs per run for the round-trip time.
const PINGS: usize = 1000;

/// The contending clients compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// fencelock, default options.
    Default,
    /// fencelock, `notifications(false)`.
    Polling,
    /// fencelock, `fair(true)` (waiters served in arrival order).
    Fair,
    /// Raw `SET NX PX` retried without sleeping.
    Spinning,
    /// The `rslock` crate at its defaults: `LockManager::acquire_no_guard` (3 tries
    /// per `lock` call, 0–200 ms apart, and `lock` called again until it succeeds).
    Rslock,
    /// The `redlock` npm package at its defaults (10 retries 200 ± 100 ms apart per
    /// `acquire`, called again when they run out), in a Node.js process of its own
    /// (`tests/interop/bench-peer.js`, which measures itself).
    RedlockNpm,
}

impl Kind {
    /// Every kind, in report order.
    pub const ALL: [Kind; 4] = [Kind::Default, Kind::Polling, Kind::Fair, Kind::Spinning];

    /// The label in tables and charts.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Default => "fencelock (notifications)",
            Kind::Polling => "fencelock, notifications off (200 ms polling)",
            Kind::Fair => "fencelock, fair mode",
            Kind::Spinning => "raw SET NX spinning (floor)",
            Kind::Rslock => "rslock (defaults)",
            Kind::RedlockNpm => "redlock npm (defaults)",
        }
    }
}

/// One variant's figures.
#[derive(Clone, Debug)]
pub struct Variant {
    /// Which client.
    pub kind: Kind,
    /// Critical sections per second.
    pub cs_per_s: Summary,
    /// Hand-off latency p50, µs.
    pub handoff_p50: Summary,
    /// Hand-off latency p99, µs.
    pub handoff_p99: Summary,
    /// Fraction of critical sections whose holder differs from the previous one.
    pub handoff_share: Summary,
    /// The busiest contender's fraction of the critical sections.
    pub busiest_share: Summary,
    /// Redis commands (all nodes) per critical section, as `INFO commandstats` counts
    /// them: with the commands Lua scripts run.
    pub commands_per_cs: Summary,
    /// Redis commands the clients sent (all nodes) per critical section: the above
    /// without the commands run inside scripts (see [`script_commands`]).
    pub sent_per_cs: Summary,
    /// Time from calling acquire to the grant, p50, µs.
    pub wait_p50: Summary,
    /// Time from calling acquire to the grant, p99, µs.
    pub wait_p99: Summary,
    /// The longest wait of the run, µs (a starved contender shows here, not in p99).
    pub wait_max: Summary,
    /// Commands by name over all runs (for the profile discussion).
    pub commands: Vec<(String, u64)>,
    /// Hand-off latencies of every run (ns), for the chart.
    pub handoffs: Histogram<u64>,
}

/// W3 on one node set.
#[derive(Clone, Debug)]
pub struct W3 {
    /// How many nodes.
    pub nodes: usize,
    /// Every variant, in [`Kind::ALL`] order.
    pub variants: Vec<Variant>,
    /// One round trip (PING) p50, µs.
    pub rtt_p50: Summary,
}

impl W3 {
    /// The figures of `kind`.
    pub fn variant(&self, kind: Kind) -> Option<&Variant> {
        self.variants.iter().find(|v| v.kind == kind)
    }
}

/// The commands a client's Lua scripts run (lower case, as commandstats names them):
/// every `redis.call('NAME'` in the sources.
pub fn script_commands(sources: &[&str]) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    for src in sources {
        for part in src.split("redis.call(").skip(1) {
            let name: String = part
                .trim_start_matches(['\'', '"'])
                .chars()
                .take_while(|c| c.is_ascii_alphabetic())
                .collect();
            if !name.is_empty() {
                names.insert(name.to_ascii_lowercase());
            }
        }
    }
    names
}

/// fencelock's scripts, as the library loads them.
const FENCELOCK_SCRIPTS: &[&str] = &[
    include_str!("../../fencelock/src/store/redis/shared.lua"),
    include_str!("../../fencelock/src/store/redis/acquire.lua"),
    include_str!("../../fencelock/src/store/redis/commit.lua"),
    include_str!("../../fencelock/src/store/redis/extend.lua"),
    include_str!("../../fencelock/src/store/redis/release.lua"),
    include_str!("../../fencelock/src/store/redis/leave_queue.lua"),
    include_str!("../../fencelock/src/store/redis/forget.lua"),
];

/// The commands the scripts of the `redlock` npm package (5.0.0-beta.2,
/// `dist/cjs/index.js`: acquire, extend, release) run. Not read from the sources: the
/// package is installed at run time, after this is built.
const REDLOCK_NPM_SCRIPT_COMMANDS: &[&str] = &["exists", "set", "get", "del"];

/// The commands `kind`'s clients sent themselves: commandstats counts a command run
/// by a script like one a client sent, so the commands the client's scripts run are
/// taken out. Sound because no client sends any of those itself during a run
/// (fencelock sends EVALSHA and (UN)SUBSCRIBE; the floor and `rslock` `SET` and
/// EVAL(SHA), and their release scripts run only GET and DEL; the `redlock` npm
/// package only EVALSHA, or EVAL after a NOSCRIPT).
fn sent_calls(kind: Kind, calls: &std::collections::HashMap<String, u64>) -> u64 {
    let inner = match kind {
        // rslock's unlock script is the floor's compare-and-delete (GET, DEL).
        Kind::Spinning | Kind::Rslock => script_commands(&[crate::raw::RELEASE]),
        Kind::RedlockNpm => REDLOCK_NPM_SCRIPT_COMMANDS
            .iter()
            .map(|c| (*c).to_string())
            .collect(),
        Kind::Default | Kind::Polling | Kind::Fair => script_commands(FENCELOCK_SCRIPTS),
    };
    calls
        .iter()
        .filter(|(name, _)| !inner.contains(name.as_str()))
        .map(|(_, n)| n)
        .sum()
}

/// What one run shares between its contenders.
struct Arena {
    stop: AtomicBool,
    /// W3H: the last holder, for a contender that waits for another to acquire.
    forced: Option<tokio::sync::watch::Sender<Option<usize>>>,
    counter: AtomicU64,
    executed: AtomicU64,
    state: Mutex<State>,
}

struct State {
    last_release: Option<(usize, Instant)>,
    last_holder: Option<usize>,
    per: Vec<u64>,
    total: u64,
    handoffs: u64,
    hist: Histogram<u64>,
    waits: Histogram<u64>,
}

impl Arena {
    fn new(forced: bool) -> Arena {
        Arena {
            stop: AtomicBool::new(false),
            forced: forced.then(|| tokio::sync::watch::Sender::new(None)),
            counter: AtomicU64::new(0),
            executed: AtomicU64::new(0),
            state: Mutex::new(State {
                last_release: None,
                last_holder: None,
                per: vec![0; CONTENDERS],
                total: 0,
                handoffs: 0,
                hist: stats::histogram(),
                waits: stats::histogram(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Stops the run: contenders finish their critical section and return.
    fn finish(&self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(tx) = &self.forced {
            // Wake the contenders waiting for their turn, so they see the stop.
            tx.send_modify(|_| ());
        }
    }

    /// W3H: after `me` released, waits until another contender has acquired (or the
    /// run stopped). W3: returns at once.
    async fn next_turn(&self, me: usize) {
        if let Some(tx) = &self.forced {
            let mut rx = tx.subscribe();
            let _ = rx
                .wait_for(|last| self.stopped() || last.is_none_or(|h| h != me))
                .await;
        }
    }

    /// `me` was granted the lock after asking for it at `asked`.
    fn granted(&self, me: usize, asked: Instant) {
        let now = Instant::now();
        let mut s = self.lock();
        // Every wait counts, also one that ends after the clock stopped: leaving those
        // out would hide exactly the waiters that starved during the run.
        stats::record(&mut s.waits, now.duration_since(asked));
        if self.stopped() {
            return;
        }
        s.total += 1;
        s.per[me] += 1;
        if s.last_holder.is_some_and(|h| h != me) {
            s.handoffs += 1;
        }
        if let Some((who, t)) = s.last_release
            && who != me
        {
            stats::record(&mut s.hist, now.duration_since(t));
        }
        s.last_holder = Some(me);
        if let Some(tx) = &self.forced {
            tx.send_replace(Some(me));
        }
    }

    /// The work under the lock: a read-yield-write increment that loses updates if
    /// two contenders ever run it at once.
    async fn critical_section(&self) {
        let v = self.counter.load(Ordering::SeqCst);
        tokio::task::yield_now().await;
        self.counter.store(v + 1, Ordering::SeqCst);
        self.executed.fetch_add(1, Ordering::SeqCst);
    }

    /// `me` is about to release.
    fn releasing(&self, me: usize) {
        self.lock().last_release = Some((me, Instant::now()));
    }
}

/// Runs W3 on `nodes`.
///
/// # Errors
///
/// When a request fails, a wait times out, or an update was lost.
pub async fn run(plan: &Plan, nodes: &Nodes) -> anyhow::Result<W3> {
    let mut admin = nodes.admin().await?;
    let mut figures: Vec<Runs> = Kind::ALL.iter().map(|&k| Runs::new(k)).collect();
    for run in 0..plan.runs {
        for j in 0..Kind::ALL.len() {
            // Rotate the order so no variant always runs first.
            let idx = (j + run) % Kind::ALL.len();
            let kind = Kind::ALL[idx];
            nodes.reset().await?;
            let r = one_run(kind, nodes, &mut admin, plan.w3_time, false).await?;
            figures[idx].push(r);
        }
    }
    finish(nodes, figures, plan.runs).await
}

/// The clients W3H compares: fencelock's default mode and the spinning floor.
pub const HANDOFF_KINDS: [Kind; 2] = [Kind::Default, Kind::Spinning];

/// Runs W3H on `nodes`: W3 with every critical section a hand-off (see the module
/// docs), for [`HANDOFF_KINDS`].
///
/// # Errors
///
/// When a request fails, a wait times out, or an update was lost.
pub async fn run_handoff(plan: &Plan, nodes: &Nodes) -> anyhow::Result<W3> {
    run_forced(plan, nodes, &HANDOFF_KINDS).await
}

/// W3H for `kinds` (their runs alternate, the order rotating run by run).
///
/// # Errors
///
/// When a request fails, a wait times out, or an update was lost.
pub async fn run_forced(plan: &Plan, nodes: &Nodes, kinds: &[Kind]) -> anyhow::Result<W3> {
    let mut admin = nodes.admin().await?;
    let mut figures: Vec<Runs> = kinds.iter().map(|&k| Runs::new(k)).collect();
    for run in 0..plan.runs {
        for j in 0..kinds.len() {
            let idx = (j + run) % kinds.len();
            let kind = kinds[idx];
            nodes.reset().await?;
            let r = one_run(kind, nodes, &mut admin, plan.w3_time, true).await?;
            figures[idx].push(r);
        }
    }
    finish(nodes, figures, plan.runs).await
}

/// The round-trip time and every variant's figures.
async fn finish(nodes: &Nodes, figures: Vec<Runs>, runs: usize) -> anyhow::Result<W3> {
    let raw = Raw::connect(&nodes.urls()).await?;
    let mut rtt = Vec::new();
    for _ in 0..runs {
        let mut h = stats::histogram();
        for _ in 0..PINGS {
            let t = Instant::now();
            raw.ping().await?;
            stats::record(&mut h, t.elapsed());
        }
        rtt.push(stats::percentile_us(&h, 50.0));
    }
    Ok(W3 {
        nodes: nodes.len(),
        variants: figures.into_iter().map(Runs::finish).collect(),
        rtt_p50: Summary::of(&rtt),
    })
}

struct RunResult {
    cs_per_s: f64,
    p50: f64,
    p99: f64,
    wait50: f64,
    wait99: f64,
    wait_max: f64,
    handoff_share: f64,
    busiest: f64,
    commands_per_cs: f64,
    sent_per_cs: f64,
    commands: std::collections::HashMap<String, u64>,
    hist: Histogram<u64>,
}

struct Runs {
    kind: Kind,
    runs: Vec<RunResult>,
}

impl Runs {
    fn new(kind: Kind) -> Runs {
        Runs {
            kind,
            runs: Vec::new(),
        }
    }

    fn push(&mut self, r: RunResult) {
        self.runs.push(r);
    }

    fn finish(self) -> Variant {
        let pick = |f: fn(&RunResult) -> f64| -> Summary {
            Summary::of(&self.runs.iter().map(f).collect::<Vec<_>>())
        };
        let mut hist = stats::histogram();
        let mut commands = std::collections::HashMap::<String, u64>::new();
        for r in &self.runs {
            let _ = hist.add(&r.hist);
            for (k, v) in &r.commands {
                *commands.entry(k.clone()).or_insert(0) += v;
            }
        }
        let mut commands: Vec<(String, u64)> = commands.into_iter().collect();
        commands.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        Variant {
            kind: self.kind,
            cs_per_s: pick(|r| r.cs_per_s),
            handoff_p50: pick(|r| r.p50),
            handoff_p99: pick(|r| r.p99),
            wait_p50: pick(|r| r.wait50),
            wait_p99: pick(|r| r.wait99),
            wait_max: pick(|r| r.wait_max),
            handoff_share: pick(|r| r.handoff_share),
            busiest_share: pick(|r| r.busiest),
            commands_per_cs: pick(|r| r.commands_per_cs),
            sent_per_cs: pick(|r| r.sent_per_cs),
            commands,
            handoffs: hist,
        }
    }
}

async fn one_run(
    kind: Kind,
    nodes: &Nodes,
    admin: &mut [redis::aio::MultiplexedConnection],
    time: Duration,
    forced: bool,
) -> anyhow::Result<RunResult> {
    if kind == Kind::RedlockNpm {
        return npm_run(nodes, admin, time, forced).await;
    }
    let arena = Arc::new(Arena::new(forced));
    // Clients are made and warmed up (connections, scripts) before the stats reset.
    let mut tasks = Vec::new();
    let mut contenders = Vec::new();
    for me in 0..CONTENDERS {
        contenders.push(Contender::new(kind, nodes, me).await?);
    }
    servers::reset_all(admin).await?;
    let start = Instant::now();
    for (me, c) in contenders.into_iter().enumerate() {
        let arena = arena.clone();
        tasks.push(tokio::spawn(async move { c.contend(me, &arena).await }));
    }
    tokio::time::sleep(time).await;
    let elapsed = {
        // Under the state lock so no grant is counted after the clock stopped.
        let _s = arena.lock();
        arena.finish();
        start.elapsed()
    };
    for t in tasks {
        t.await.context("W3 contender panicked")??;
    }
    let calls = servers::calls_all(admin).await?;
    let executed = arena.executed.load(Ordering::SeqCst);
    let counter = arena.counter.load(Ordering::SeqCst);
    if counter != executed {
        bail!(
            "{}: {} critical sections ran but the counter says {counter}: two holders at once",
            kind.label(),
            executed
        );
    }
    let s = arena.lock();
    let total = s.total.max(1) as f64;
    Ok(RunResult {
        cs_per_s: s.total as f64 / elapsed.as_secs_f64(),
        p50: stats::percentile_us(&s.hist, 50.0),
        p99: stats::percentile_us(&s.hist, 99.0),
        wait50: stats::percentile_us(&s.waits, 50.0),
        wait99: stats::percentile_us(&s.waits, 99.0),
        wait_max: s.waits.max() as f64 / 1000.0,
        handoff_share: s.handoffs as f64 / total,
        busiest: s.per.iter().copied().max().unwrap_or(0) as f64 / total,
        // Commands of every critical section executed, counted ones or not.
        commands_per_cs: calls.values().sum::<u64>() as f64 / executed.max(1) as f64,
        sent_per_cs: sent_calls(kind, &calls) as f64 / executed.max(1) as f64,
        commands: calls,
        hist: s.hist.clone(),
    })
}

/// A run of the `redlock` npm package's contenders: a Node.js process that measures
/// itself with the definitions above (W3H only: it always forces hand-offs).
async fn npm_run(
    nodes: &Nodes,
    admin: &mut [redis::aio::MultiplexedConnection],
    time: Duration,
    forced: bool,
) -> anyhow::Result<RunResult> {
    if !forced {
        bail!("the redlock npm contenders run W3H only");
    }
    let args: Vec<String> = [
        "--duration-ms".to_string(),
        time.as_millis().to_string(),
        "--contenders".into(),
        CONTENDERS.to_string(),
        "--ttl-ms".into(),
        TTL.as_millis().to_string(),
    ]
    .into();
    let (r, calls) = crate::node_peer::run("redlock", "w3h", nodes, admin, &args, time).await?;
    use crate::node_peer::num;
    let executed = num(r.executed).max(1.0);
    Ok(RunResult {
        cs_per_s: num(r.grants) / r.elapsed_s,
        p50: num(r.handoff_p50_us),
        p99: num(r.handoff_p99_us),
        wait50: num(r.wait_p50_us),
        wait99: num(r.wait_p99_us),
        wait_max: num(r.wait_max_us),
        handoff_share: num(r.handoff_share),
        busiest: num(r.busiest_share),
        commands_per_cs: calls.values().sum::<u64>() as f64 / executed,
        sent_per_cs: sent_calls(Kind::RedlockNpm, &calls) as f64 / executed,
        commands: calls,
        // Its hand-offs are not in the chart (the process reports percentiles only).
        hist: stats::histogram(),
    })
}

enum Contender {
    Fencelock(Locker),
    Raw(Raw),
    Rslock(rslock::LockManager),
}

impl Contender {
    async fn new(kind: Kind, nodes: &Nodes, me: usize) -> anyhow::Result<Contender> {
        Ok(match kind {
            Kind::Default | Kind::Polling | Kind::Fair => {
                let locker = Locker::builder()
                    .stores(nodes.urls())
                    .notifications(kind != Kind::Polling)
                    .fair(kind == Kind::Fair)
                    .build()?;
                let warm = format!("bench:w3:warm:{me}");
                locker
                    .try_acquire(warm.as_str(), TTL)
                    .await
                    .context("warm-up acquire")?
                    .release()
                    .await
                    .context("warm-up release")?;
                Contender::Fencelock(locker)
            }
            Kind::Spinning => Contender::Raw(Raw::connect(&nodes.urls()).await?),
            Kind::Rslock => {
                let manager = rslock::LockManager::new(nodes.urls());
                let warm = format!("bench:w3:warm:{me}");
                let lock = manager
                    .lock(warm.as_str(), TTL)
                    .await
                    .map_err(|e| anyhow::anyhow!("rslock warm-up lock: {e}"))?;
                manager.unlock(&lock).await;
                Contender::Rslock(manager)
            }
            Kind::RedlockNpm => bail!("the redlock npm contenders run in Node.js"),
        })
    }

    async fn contend(self, me: usize, arena: &Arena) -> anyhow::Result<()> {
        match self {
            Contender::Fencelock(locker) => {
                let opts = AcquireOptions::default().max_wait(Duration::from_secs(30));
                while !arena.stopped() {
                    arena.next_turn(me).await;
                    if arena.stopped() {
                        break;
                    }
                    let asked = Instant::now();
                    let lease = locker
                        .acquire_with(KEY, TTL, &opts)
                        .await
                        .with_context(|| format!("contender {me}: acquire of the hot key"))?;
                    arena.granted(me, asked);
                    arena.critical_section().await;
                    arena.releasing(me);
                    lease
                        .release()
                        .await
                        .with_context(|| format!("contender {me}: release"))?;
                }
                locker.shutdown().await;
            }
            Contender::Rslock(manager) => {
                while !arena.stopped() {
                    arena.next_turn(me).await;
                    if arena.stopped() {
                        break;
                    }
                    let asked = Instant::now();
                    // Loops over `lock` (its default retries) until the key is taken.
                    let lock = manager.acquire_no_guard(KEY, TTL).await.map_err(|e| {
                        anyhow::anyhow!("contender {me}: rslock acquire of the hot key: {e}")
                    })?;
                    arena.granted(me, asked);
                    arena.critical_section().await;
                    arena.releasing(me);
                    manager.unlock(&lock).await;
                }
            }
            Contender::Raw(raw) => {
                let ttl = TTL.as_millis() as u64;
                let mut i = 0u64;
                let mut asked = Instant::now();
                let deadline = Instant::now() + Duration::from_secs(600);
                while !arena.stopped() && Instant::now() < deadline {
                    i += 1;
                    let v = raw::value(me as u64, i);
                    if raw.acquire(KEY, &v, ttl).await? {
                        arena.granted(me, asked);
                        arena.critical_section().await;
                        arena.releasing(me);
                        raw.release(KEY, &v).await?;
                        arena.next_turn(me).await;
                        asked = Instant::now();
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_commands_are_read_from_the_sources() {
        let raw = script_commands(&[crate::raw::RELEASE]);
        assert_eq!(raw.into_iter().collect::<Vec<_>>(), ["del", "get"]);
        let ours = script_commands(FENCELOCK_SCRIPTS);
        for name in ["get", "set", "publish", "zadd", "pexpire", "time"] {
            assert!(ours.contains(name), "{name} missing from {ours:?}");
        }
        // What the clients send themselves is never taken for a script's command.
        assert!(!ours.contains("evalsha") && !ours.contains("subscribe"));
        let calls = [("evalsha", 2), ("get", 5), ("set", 3), ("subscribe", 1)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        assert_eq!(sent_calls(Kind::Default, &calls), 3);
        assert_eq!(sent_calls(Kind::Spinning, &calls), 6);
        // rslock sends SET itself; its unlock script runs GET and DEL.
        assert_eq!(sent_calls(Kind::Rslock, &calls), 6);
        // redlock npm sends only EVALSHA (its scripts run EXISTS, SET, GET, DEL).
        assert_eq!(sent_calls(Kind::RedlockNpm, &calls), 3);
    }
}
