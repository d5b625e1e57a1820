//! Scenarios: a cluster, a workload, a fault schedule, and what the checker must (and
//! must not) find. [`run`] carries one out end to end.
//!
//! The negative controls are made deterministic by construction rather than by luck:
//! [`Step::PinQuorum`] isolates one node for longer than the TTL (so it holds no live
//! key), then waits for a *fresh* grant, which can only have come from the two other
//! nodes. The next fault then hits a node the current holder's quorum depends on —
//! restarting it empty, or jumping its clock past the TTL — and the next acquirer
//! gets a majority from that node plus the one that was isolated, while the first
//! holder still believes it holds the lock.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::checker::{Bounds, Findings, Kind, Violation, check};
use crate::clock::{mono_ns, nanos};
use crate::faults::clock::ClockShim;
use crate::faults::partition::{Cut, Netns};
use crate::faults::proxy::{Proxy, ProxyMode};
use crate::history::{FaultEvent, History, NodeProbe, Res, read_worker_events};
use crate::node::{NodeOptions, Persistence, RedisNode};
use crate::resource::{self, HOLDER_KEY, INITIAL_BALANCE};
use crate::workload::WorkerConfig;

/// Set by the binary's Ctrl-C / SIGTERM handler: the running scenario stops at its
/// next step and its rig is dropped (workers, nodes, proxies, namespaces cleaned up).
pub static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn interrupted() -> Result<(), String> {
    if INTERRUPTED.load(std::sync::atomic::Ordering::Relaxed) {
        Err("interrupted".into())
    } else {
        Ok(())
    }
}

/// Sleeps, waking early (with an error) when interrupted.
fn nap(d: Duration) -> Result<(), String> {
    let until = Instant::now() + d;
    while Instant::now() < until {
        interrupted()?;
        std::thread::sleep((until - Instant::now()).min(ms(50)));
    }
    Ok(())
}

/// The lock key every worker contends for.
pub const KEY: &str = "chaos:ledger";

/// How one lock node is set up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeSetup {
    /// AOF with `appendfsync always` instead of no persistence.
    pub aof: bool,
    /// In its own network namespace (for [`Step::Cut`]).
    pub netns: bool,
    /// Under the clock shim (for [`Step::ClockJump`]).
    pub clock: bool,
    /// Behind the TCP proxy (for [`Step::Proxy`]).
    pub proxy: bool,
}

/// One step of a fault schedule. Node indices are into the lock nodes.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Wait.
    Sleep(Duration),
    /// SIGSTOP a node.
    PauseNode(usize),
    /// SIGCONT a node.
    ResumeNode(usize),
    /// `kill -9` a node.
    CrashNode(usize),
    /// Start a crashed node again (empty without persistence).
    StartNode(usize),
    /// Isolate node `paused` for longer than the TTL, then wait for a fresh grant held
    /// on exactly `a` and `b` (see the module docs). The node stays isolated. If it is
    /// behind a proxy, the proxy resets its connections (nothing is queued, nothing
    /// delivered late); otherwise the node is stopped with SIGSTOP.
    PinQuorum {
        /// The node to isolate.
        paused: usize,
        /// The other two.
        a: usize,
        /// The node the next fault will hit.
        b: usize,
    },
    /// SIGSTOP the worker that holds the lock (right after its read) for this long.
    PauseHolder(Duration),
    /// Cut a node (in its namespace) off.
    Cut(usize, Cut),
    /// Heal a cut.
    Heal(usize, Cut),
    /// Set a node's proxy mode.
    Proxy(usize, ProxyMode),
    /// Move a node's wall clock by this many ms (from now on).
    ClockJump(usize, i64),
    /// Another client takes the key on one node (`SET key other PX ms`, overwriting
    /// whatever is there): one node reports another owner.
    SetKey(usize, Duration),
    /// SIGKILL a victim worker (see [`Scenario::victims`]) that does not hold the lock
    /// right now: most of the time it is waiting in line.
    KillWaiter,
    /// SIGKILL the next victim worker that announces it holds the lock: it leaves its
    /// lease to run out (the negative control of the hand-off scenarios).
    KillHolder,
    /// Wait until a worker announces (in its read) that it has just taken the lock:
    /// the next fault then lands early in a critical section.
    AwaitNewHolder,
    /// Record what every lock node holds for the key (value and PTTL) in the history.
    Probe,
    /// Every fault is healed: liveness is measured from here.
    Healed,
}

/// A scenario.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Short name.
    pub name: String,
    /// The fault, in words (for the report).
    pub fault: String,
    /// The lock nodes.
    pub nodes: Vec<NodeSetup>,
    /// Worker processes.
    pub workers: u32,
    /// How long workers keep taking leases.
    pub duration: Duration,
    /// Lease TTL.
    pub ttl: Duration,
    /// Think time between read and write.
    pub hold_ms: (u64, u64),
    /// Per-node request timeout.
    pub request_timeout: Duration,
    /// Retry delay (polling, notifications off).
    pub retry_delay: Duration,
    /// The acquire's wait.
    pub max_wait: Duration,
    /// Release notices on (waiters sleep until notice or PTTL) or off (poll).
    pub notifications: bool,
    /// The faults.
    pub schedule: Vec<Step>,
    /// Violations that MUST be flagged (negative controls).
    pub expect: Vec<Kind>,
    /// Violations that may be flagged.
    pub allow: Vec<Kind>,
    /// Workers hold under automatic renewal and stop at `lost()` (a lost lease is a
    /// violation unless expected).
    pub renew: bool,
    /// Renewing workers also extend their lease to a TTL in this range (ms) every
    /// quarter TTL and check its claim against the nodes.
    pub extend_ms: Option<(u64, u64)>,
    /// Negative control of the claim check: workers report claims this much larger.
    pub overstate_ms: u64,
    /// The last this many workers are victims of [`Step::KillWaiter`] /
    /// [`Step::KillHolder`], and take leases of `victim_ttl`.
    pub victims: u32,
    /// The TTL the victims ask for (longer than the others': a hand-off that gave a
    /// dead victim its own TTL would block the lock for it).
    pub victim_ttl: Duration,
    /// With a value: the lock must never stay unused longer than this while someone
    /// waits (the checker's `Blocked`).
    pub max_gap: Option<Duration>,
    /// With a value: workers take one permit of a semaphore of this many permits on
    /// [`KEY`] instead of the lock, and enter and leave the resource, which counts
    /// them (the checker's `OverAdmitted`).
    pub permits: Option<u32>,
}

/// What a worker stalled past its lease may cause (the lock's damage, and one holder
/// too many inside the unfenced copy in a semaphore's run).
fn is_unfenced(k: Kind) -> bool {
    unfenced_damage().contains(&k) || k == Kind::OverAdmitted(Res::U)
}

/// The violations a stale holder produces on the unfenced copy.
pub fn unfenced_damage() -> Vec<Kind> {
    vec![
        Kind::StaleAccepted(Res::U),
        Kind::Interleaved(Res::U),
        Kind::LostUpdate(Res::U),
        Kind::LedgerDelta(Res::U),
    ]
}

impl Scenario {
    fn base(name: &str, fault: &str, n: usize) -> Scenario {
        Scenario {
            name: name.into(),
            fault: fault.into(),
            nodes: vec![NodeSetup::default(); n],
            workers: 4,
            duration: Duration::from_secs(8),
            ttl: Duration::from_millis(1500),
            hold_ms: (20, 80),
            request_timeout: Duration::from_millis(100),
            retry_delay: Duration::from_millis(50),
            max_wait: Duration::from_secs(4),
            notifications: false,
            schedule: Vec::new(),
            expect: Vec::new(),
            allow: Vec::new(),
            renew: false,
            extend_ms: None,
            overstate_ms: 0,
            victims: 0,
            victim_ttl: Duration::ZERO,
            max_gap: None,
            permits: None,
        }
    }

    /// The workload, in words (for the report).
    pub fn workload(&self) -> String {
        let mut w = match self.permits {
            Some(n) => format!("semaphore of {n} permits, "),
            None => String::new(),
        };
        w.push_str(&format!(
            "{} nodes, {} workers, TTL {} ms, hold {}–{} ms, {}",
            self.nodes.len(),
            self.workers,
            self.ttl.as_millis(),
            self.hold_ms.0,
            self.hold_ms.1,
            if self.notifications {
                "notices"
            } else {
                "polling"
            }
        ));
        if self.renew {
            w.push_str(", auto-renewal");
        }
        if let Some((lo, hi)) = self.extend_ms {
            w.push_str(&format!(", extends to {lo}–{hi} ms"));
        }
        if self.victims > 0 {
            w.push_str(&format!(
                ", {} victims (TTL {} ms)",
                self.victims,
                self.victim_ttl.as_millis()
            ));
        }
        w
    }

    /// Scales durations for a soak round (`factor` ≥ 1 makes runs longer).
    pub fn scaled(mut self, factor: u32) -> Scenario {
        self.duration *= factor.max(1);
        self
    }
}

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

/// The scenarios, in the order the short suite runs them.
pub fn all() -> Vec<Scenario> {
    let mut v = Vec::new();

    let mut s = Scenario::base("baseline", "none", 3);
    s.notifications = true;
    // Probes during the start-up rush (every worker's first attempt at once) and later:
    // no key may outlive the attempt that set it.
    s.schedule = vec![
        Step::Sleep(ms(60)),
        Step::Probe,
        Step::Sleep(ms(400)),
        Step::Probe,
        Step::Sleep(ms(400)),
        Step::Probe,
        Step::Healed,
    ];
    v.push(s);

    let mut s = Scenario::base(
        "client-pause",
        "SIGSTOP the holder (after its read) for TTL + 1 s, then SIGCONT",
        3,
    );
    s.hold_ms = (150, 300);
    s.schedule = vec![
        Step::Sleep(ms(1000)),
        Step::PauseHolder(ms(2500)),
        Step::Healed,
    ];
    s.expect = unfenced_damage();
    v.push(s);

    let mut s = Scenario::base("node-pause", "SIGSTOP node 0 for 2×TTL, then SIGCONT", 3);
    s.schedule = vec![
        Step::Sleep(ms(1000)),
        Step::PauseNode(0),
        Step::Sleep(ms(3000)),
        Step::ResumeNode(0),
        Step::Healed,
    ];
    v.push(s);

    let mut s = Scenario::base(
        "majority-down",
        "SIGSTOP nodes 0 and 1 for 2 s (no quorum), then SIGCONT",
        3,
    );
    s.max_wait = ms(1500);
    s.schedule = vec![
        Step::Sleep(ms(1000)),
        Step::PauseNode(0),
        Step::PauseNode(1),
        Step::Sleep(ms(2000)),
        Step::ResumeNode(0),
        Step::ResumeNode(1),
        Step::Healed,
    ];
    v.push(s);

    let mut s = Scenario::base(
        "stray-key",
        "SIGSTOP node 2 for TTL + 0.2 s while a holder keeps nodes 0,1 and waiters retry; SIGCONT; probe twice, 400 ms apart",
        3,
    );
    s.duration = Duration::from_secs(9);
    s.hold_ms = (600, 900);
    s.ttl = ms(2000);
    s.schedule = vec![
        Step::Sleep(ms(500)),
        Step::PinQuorum {
            paused: 2,
            a: 0,
            b: 1,
        },
        Step::ResumeNode(2),
        Step::Sleep(ms(100)),
        Step::Probe,
        Step::Sleep(ms(400)),
        Step::Probe,
        Step::Healed,
    ];
    v.push(s);

    let pinned = |name: &str, fault: &str, then: Vec<Step>| {
        let mut s = Scenario::base(name, fault, 3);
        s.duration = Duration::from_secs(9);
        s.hold_ms = (600, 900);
        s.ttl = ms(2000);
        // Node 2 is isolated through its proxy (connections reset), not SIGSTOP: a
        // stopped node applies the acquires that queued up at it when it wakes, and
        // one of them can leave a stray key there for a whole TTL (see
        // docs/reliability.md), which would hide the violation we want to show.
        s.nodes[2].proxy = true;
        s.schedule = vec![
            Step::Sleep(ms(500)),
            Step::PinQuorum {
                paused: 2,
                a: 0,
                b: 1,
            },
            Step::Proxy(2, ProxyMode::Pass),
            Step::Probe,
            Step::Sleep(ms(250)),
            Step::Probe,
        ];
        s.schedule.extend(then);
        s.schedule.push(Step::Probe);
        s.schedule.push(Step::Healed);
        s
    };

    let mut s = pinned(
        "restart-now",
        "holder's quorum = {0,1}; kill -9 node 1, restart empty at once",
        vec![Step::CrashNode(1), Step::StartNode(1)],
    );
    s.expect = [vec![Kind::LockOverlap], unfenced_damage()].concat();
    v.push(s);

    v.push(pinned(
        "restart-delayed",
        "holder's quorum = {0,1}; kill -9 node 1, restart empty after TTL + 0.5 s",
        vec![
            Step::CrashNode(1),
            Step::Sleep(ms(2500)),
            Step::StartNode(1),
        ],
    ));

    let mut s = pinned(
        "restart-aof",
        "holder's quorum = {0,1}; kill -9 node 1 (AOF, fsync always), restart at once",
        vec![Step::CrashNode(1), Step::StartNode(1)],
    );
    for n in &mut s.nodes {
        n.aof = true;
    }
    v.push(s);

    let mut s = pinned(
        "clock-jump",
        "holder's quorum = {0,1}; node 1's wall clock jumps +30 s",
        vec![Step::ClockJump(1, 30_000)],
    );
    s.nodes[1].clock = true;
    s.expect = [vec![Kind::LockOverlap], unfenced_damage()].concat();
    v.push(s);

    let mut s = Scenario::base(
        "partition",
        "node 0 in a netns: iptables DROP 2 s, heal; REJECT (tcp-reset) 1 s, heal",
        3,
    );
    s.nodes[0].netns = true;
    s.schedule = vec![
        Step::Sleep(ms(1000)),
        Step::Cut(0, Cut::Drop),
        Step::Sleep(ms(2000)),
        Step::Heal(0, Cut::Drop),
        Step::Sleep(ms(500)),
        Step::Cut(0, Cut::Reject),
        Step::Sleep(ms(1000)),
        Step::Heal(0, Cut::Reject),
        Step::Healed,
    ];
    v.push(s);

    let mut s = Scenario::base(
        "latency",
        "proxy on node 1: +300 ms; blackhole 1 s then deliver late; reset",
        3,
    );
    s.nodes[1].proxy = true;
    s.schedule = vec![
        Step::Sleep(ms(800)),
        Step::Proxy(1, ProxyMode::Delay(ms(300))),
        Step::Sleep(ms(1500)),
        Step::Proxy(1, ProxyMode::Blackhole),
        Step::Sleep(ms(1000)),
        Step::Proxy(1, ProxyMode::Pass),
        Step::Sleep(ms(500)),
        Step::Proxy(1, ProxyMode::Reset),
        Step::Sleep(ms(800)),
        Step::Proxy(1, ProxyMode::Pass),
        Step::Healed,
    ];
    v.push(s);

    v.extend(renewal_scenarios());
    v.extend(handoff_scenarios());
    v.extend(semaphore_scenarios());
    v
}

/// A semaphore of 2 permits and 5 workers (N + 3 contend), counted at the resource
/// under the lock's faults on 3 nodes: a paused minority and a node restarted empty
/// after the TTL (holds of up to a TTL, renewed) must never let 3 in. The client pause
/// is the negative control: a holder paused past its TTL is still inside the unfenced
/// copy when its permit's next holder enters, so 3 are inside there; the fenced copy,
/// which keeps the highest token per permit, evicts it and never counts 3.
fn semaphore_scenarios() -> Vec<Scenario> {
    let sem = |name: &str, fault: &str| {
        let mut s = Scenario::base(name, fault, 3);
        s.permits = Some(2);
        s.workers = 5;
        s
    };
    let renewing = |name: &str, fault: &str| {
        let mut s = sem(name, fault);
        s.renew = true;
        s.notifications = true;
        s.hold_ms = (200, 1500);
        s
    };
    let mut v = Vec::new();

    let mut s = renewing(
        "sem-node-pause",
        "semaphore: SIGSTOP node 0 for 2×TTL while permits renew, then SIGCONT",
    );
    s.schedule = vec![
        Step::Sleep(ms(1000)),
        Step::PauseNode(0),
        Step::Sleep(ms(3000)),
        Step::ResumeNode(0),
        Step::Healed,
    ];
    v.push(s);

    let mut s = renewing(
        "sem-restart-delayed",
        "semaphore: kill -9 node 1 while permits renew, restart empty after TTL + 0.5 s",
    );
    s.schedule = vec![
        Step::Sleep(ms(1000)),
        Step::CrashNode(1),
        Step::Sleep(ms(2000)),
        Step::StartNode(1),
        Step::Healed,
    ];
    v.push(s);

    let mut s = sem(
        "sem-client-pause",
        "semaphore: SIGSTOP a holder (after it entered) for TTL + 1 s, then SIGCONT",
    );
    s.hold_ms = (150, 300);
    s.schedule = vec![
        Step::Sleep(ms(1000)),
        Step::PauseHolder(ms(2500)),
        Step::Healed,
    ];
    s.expect = vec![Kind::OverAdmitted(Res::U)];
    v.push(s);
    v
}

/// Long critical sections (two to three TTLs) under automatic renewal while a
/// minority of the nodes is faulty: zero leases may be lost (no job stopped). The
/// control pauses a majority, which must cost leases.
fn renewal_scenarios() -> Vec<Scenario> {
    let renewing = |name: &str, fault: &str| {
        let mut s = Scenario::base(name, fault, 3);
        s.renew = true;
        s.notifications = true;
        s.workers = 3;
        s.ttl = ms(2000);
        s.hold_ms = (4000, 6000);
        s.duration = Duration::from_secs(16);
        s.request_timeout = ms(200);
        s.max_wait = Duration::from_secs(20);
        s
    };
    let mut v = Vec::new();

    let mut s = renewing(
        "renew-minority-paused",
        "SIGSTOP node 2 for 10 s while leases of 2–3 TTLs renew, then SIGCONT",
    );
    s.schedule = vec![
        Step::Sleep(ms(2000)),
        Step::PauseNode(2),
        Step::Sleep(ms(10_000)),
        Step::ResumeNode(2),
        Step::Healed,
    ];
    v.push(s);

    let mut s = renewing(
        "renew-minority-partitioned",
        "node 0 in a netns: iptables DROP for 10 s while leases renew, heal",
    );
    s.nodes[0].netns = true;
    s.schedule = vec![
        Step::Sleep(ms(2000)),
        Step::Cut(0, Cut::Drop),
        Step::Sleep(ms(10_000)),
        Step::Heal(0, Cut::Drop),
        Step::Healed,
    ];
    v.push(s);

    let mut s = renewing(
        "renew-minority-restarted",
        "kill -9 node 1 and restart it empty, twice, while leases renew",
    );
    s.schedule = vec![
        Step::Sleep(ms(3000)),
        Step::CrashNode(1),
        Step::StartNode(1),
        Step::Sleep(ms(5000)),
        Step::CrashNode(1),
        Step::StartNode(1),
        Step::Healed,
    ];
    v.push(s);

    let mut s = renewing(
        "renew-other-owner",
        "another client SETs the key on node 1 (5 s), three times, while leases renew",
    );
    s.schedule = vec![
        Step::Sleep(ms(2000)),
        Step::SetKey(1, ms(5000)),
        Step::Sleep(ms(4000)),
        Step::SetKey(1, ms(5000)),
        Step::Sleep(ms(4000)),
        Step::SetKey(1, ms(5000)),
        Step::Healed,
    ];
    v.push(s);

    let mut s = renewing(
        "renew-majority-paused",
        "control: SIGSTOP nodes 0 and 1 for 2×TTL right after a holder took the lock, then SIGCONT",
    );
    // Right after a holder took the lock: it is mid-way through 4–6 s of work when the
    // majority stops answering for 4 s, two TTLs.
    s.schedule = vec![
        Step::Sleep(ms(1000)),
        Step::AwaitNewHolder,
        Step::PauseNode(0),
        Step::PauseNode(1),
        Step::Sleep(ms(4000)),
        Step::ResumeNode(0),
        Step::ResumeNode(1),
        Step::Healed,
    ];
    s.expect = vec![Kind::LeaseLost];
    v.push(s);

    let mut s = renewing(
        "extend-racing-renewal",
        "proxy on node 1 delays 150 ms; holders extend to 0.3–4 s every TTL/4, racing renewal",
    );
    s.nodes[1].proxy = true;
    s.extend_ms = Some((300, 4000));
    s.schedule = vec![
        Step::Sleep(ms(1000)),
        Step::Proxy(1, ProxyMode::Delay(ms(150))),
        Step::Sleep(ms(12_000)),
        Step::Proxy(1, ProxyMode::Pass),
        Step::Healed,
    ];
    // An extend to 300 ms with a node 150 ms away can be confirmed too late to count,
    // and such a lease may then run out (it was shortened on purpose): not the fault
    // this scenario is about.
    s.allow = vec![Kind::LeaseLost];
    v.push(s);

    let mut s = v.last().cloned().unwrap_or_else(|| renewing("", ""));
    s.name = "extend-overstated".into();
    s.fault =
        "control: as extend-racing-renewal, with workers reporting claims 500 ms too long".into();
    s.overstate_ms = 500;
    s.expect = vec![Kind::ValidityOverstated];
    v.push(s);
    v
}

/// One node, a hot key handed from holder to waiter on release, and waiters that are
/// SIGKILLed while they stand in line. The victims ask for long leases: a hand-off
/// that gave a dead victim its own TTL would block the lock for it. The lock may stay
/// unused while someone waits for at most the holder's TTL plus the hand-off claim
/// (plus slack). The control kills a victim while it holds the lock.
fn handoff_scenarios() -> Vec<Scenario> {
    let hot = |name: &str, fault: &str| {
        let mut s = Scenario::base(name, fault, 1);
        s.notifications = true;
        s.workers = 6;
        s.victims = 3;
        s.ttl = ms(1500);
        s.victim_ttl = ms(10_000);
        s.hold_ms = (10, 40);
        s.duration = Duration::from_secs(10);
        s.request_timeout = ms(100);
        s.max_wait = Duration::from_secs(20);
        // The claim of a victim (the longest): the line entry's grace (jitter + 2
        // request time-outs + 500 ms), plus the safety margin before `lost()` (a tenth
        // of its TTL, at most 1 s) and one request time-out (docs/protocol.md, "Waiter
        // id").
        let grace = s.retry_delay / 2 + s.request_timeout * 2 + ms(500);
        let claim = grace
            + (s.victim_ttl / 10).min(Duration::from_secs(1))
            + s.request_timeout.min(s.victim_ttl / 3);
        s.max_gap = Some(s.ttl + claim + ms(1000));
        s
    };
    let mut v = Vec::new();
    let mut s = hot(
        "handoff-dead-waiters",
        "one node, hot key: SIGKILL a waiting victim (10 s TTL) every 2 s, three times",
    );
    s.schedule = vec![
        Step::Sleep(ms(1500)),
        Step::KillWaiter,
        Step::Sleep(ms(2000)),
        Step::KillWaiter,
        Step::Sleep(ms(2000)),
        Step::KillWaiter,
        Step::Healed,
    ];
    v.push(s);

    let mut s = hot(
        "handoff-dead-holder",
        "control: one node, hot key: SIGKILL a victim (10 s TTL) while it holds the lock",
    );
    s.duration = Duration::from_secs(14);
    // Holds long enough that the kill lands inside one, after the holder's key has
    // outgrown the gap allowed: a victim handed the lock holds the release's claim
    // at first, and extends it to its own TTL within about 0.4 s (docs/waiting.md);
    // killed before that, it would block the lock for the claim only.
    s.hold_ms = (700, 900);
    s.schedule = vec![Step::Sleep(ms(1500)), Step::KillHolder, Step::Healed];
    s.expect = vec![Kind::Blocked];
    // Healed right after the kill: the next grant comes only when the dead holder's
    // 10 s lease runs out.
    s.allow = vec![Kind::NoRecovery];
    v.push(s);
    v
}

/// The lock key's `PTTL` on the first node; -2 (as for a missing key) when it cannot be
/// read.
fn key_pttl(rig: &Rig) -> i64 {
    rig.nodes
        .first()
        .and_then(|n| n.connection().ok())
        .and_then(|mut c| redis::cmd("PTTL").arg(KEY).query(&mut c).ok())
        .unwrap_or(-2)
}

/// The scenario named `name`.
pub fn by_name(name: &str) -> Option<Scenario> {
    all().into_iter().find(|s| s.name == name)
}

/// A finished scenario: the findings, judged against the expectations.
#[derive(Debug)]
pub struct Outcome {
    /// The scenario.
    pub scenario: Scenario,
    /// What the checker found.
    pub findings: Findings,
    /// Expected violations that were NOT flagged (the checker failed to see).
    pub missing: Vec<Kind>,
    /// Violations that were not expected.
    pub unexpected: Vec<Violation>,
    /// Where the history was saved (always, for a failed judgement).
    pub history: Option<PathBuf>,
}

impl Outcome {
    /// Whether everything was as expected.
    pub fn passed(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty()
    }

    /// A human-readable report with every counter-example.
    pub fn report(&self) -> String {
        let mut s = format!(
            "== {} [{}]: {}\n   longest worker stall {:.0} ms, grants {}, acquire failures {}, stale writes rejected {}, stale reads rejected {}, lost updates F/U {}/{}, ledger delta F/U {}/{}, recovery {}\n",
            self.scenario.name,
            if self.passed() {
                "as expected"
            } else {
                "FAILED"
            },
            self.scenario.fault,
            self.findings.stats.longest_stall_ms,
            self.findings.stats.grants,
            self.findings.stats.acquire_failures,
            self.findings.stats.stale_writes_rejected,
            self.findings.stats.stale_reads_rejected,
            self.findings.stats.lost_updates.get(&Res::F).unwrap_or(&0),
            self.findings.stats.lost_updates.get(&Res::U).unwrap_or(&0),
            self.findings.stats.ledger_delta.get(&Res::F).unwrap_or(&0),
            self.findings.stats.ledger_delta.get(&Res::U).unwrap_or(&0),
            self.findings
                .stats
                .recovery_ms
                .map_or_else(|| "n/a".to_string(), |r| format!("{r:.0} ms")),
        );
        let st = &self.findings.stats;
        if self.scenario.renew {
            s.push_str(&format!(
                "   leases lost {}, claims checked against the nodes {}\n",
                st.leases_lost, st.claims_checked
            ));
        }
        if let Some(n) = self.scenario.permits {
            s.push_str(&format!(
                "   most holders inside at once fenced / unfenced {} / {} ({n} permits)\n",
                st.most_inside.get(&Res::F).unwrap_or(&0),
                st.most_inside.get(&Res::U).unwrap_or(&0),
            ));
        }
        if let Some(bound) = self.scenario.max_gap {
            s.push_str(&format!(
                "   longest the lock stayed unused while someone waited {:.0} ms (bound {} ms)\n",
                st.longest_gap_ms,
                bound.as_millis()
            ));
        }
        for v in &self.findings.violations {
            let tag = if self.scenario.expect.contains(&v.kind) {
                "expected"
            } else if self.scenario.allow.contains(&v.kind)
                || (is_unfenced(v.kind)
                    && self.findings.stats.longest_stall_ms
                        > self
                            .scenario
                            .ttl
                            .saturating_sub(ms(self.scenario.hold_ms.1))
                            .as_secs_f64()
                            * 1000.0)
            {
                "allowed: a worker stalled past its lease"
            } else {
                "UNEXPECTED"
            };
            s.push_str(&format!(
                "   [{tag}] {} ×{}: {}\n",
                v.kind, v.count, v.summary
            ));
            for e in &v.events {
                s.push_str(&format!("       {e}\n"));
            }
        }
        for k in &self.missing {
            s.push_str(&format!(
                "   [MISSING] expected {k} to be flagged; the checker did not see it\n"
            ));
        }
        if let Some(p) = &self.history {
            s.push_str(&format!("   history saved: {}\n", p.display()));
        }
        s
    }
}

/// Everything a run owns; dropped in reverse order on any exit, panic included:
/// workers, proxies, nodes, then namespaces and the temp dir.
struct Rig {
    dir: tempfile::TempDir,
    shim: Option<Arc<ClockShim>>,
    nodes: Vec<RedisNode>,
    resource: Option<RedisNode>,
    proxies: Vec<Option<Proxy>>,
    rt: tokio::runtime::Runtime,
    workers: Vec<Child>,
}

impl Drop for Rig {
    fn drop(&mut self) {
        for w in &mut self.workers {
            let pid = Pid::from_raw(i32::try_from(w.id()).unwrap_or(i32::MAX));
            let _ = kill(pid, Signal::SIGCONT);
            let _ = w.kill();
            let _ = w.wait();
        }
        self.proxies.clear();
        self.nodes.clear();
        self.resource = None;
    }
}

/// Runs `sc` with workers started from `exe` (this crate's binary). Saves the history
/// under `save_dir` when the outcome is not as expected (or always, if `keep`).
///
/// # Errors
///
/// When the rig cannot be set up — a missing tool, no permission, no network
/// namespaces — with a message that says what to install or fix. Never a skip.
pub fn run(sc: &Scenario, exe: &Path, save_dir: &Path, keep: bool) -> Result<Outcome, String> {
    let dir = tempfile::Builder::new()
        .prefix("fencelock-chaos-")
        .tempdir()
        .map_err(|e| format!("temp dir: {e}"))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    let mut rig = Rig {
        dir,
        shim: None,
        nodes: Vec::new(),
        resource: None,
        proxies: Vec::new(),
        rt,
        workers: Vec::new(),
    };
    if sc.nodes.iter().any(|n| n.clock) {
        rig.shim = Some(Arc::new(ClockShim::build(rig.dir.path())?));
    }
    let mut urls = Vec::new();
    for (i, setup) in sc.nodes.iter().enumerate() {
        let opts = NodeOptions {
            persistence: Some(if setup.aof {
                Persistence::AofAlways
            } else {
                Persistence::None
            }),
            netns: if setup.netns {
                Some(Arc::new(Netns::create()?))
            } else {
                None
            },
            clock: if setup.clock { rig.shim.clone() } else { None },
        };
        let node = RedisNode::start(i, &rig.dir.path().join(format!("node{i}")), opts)?;
        let proxy = if setup.proxy {
            let p = rig
                .rt
                .block_on(Proxy::start(node.addr()))
                .map_err(|e| format!("proxy: {e}"))?;
            urls.push(p.url());
            Some(p)
        } else {
            urls.push(node.url());
            None
        };
        rig.proxies.push(proxy);
        rig.nodes.push(node);
    }
    let resource_node =
        RedisNode::start(99, &rig.dir.path().join("resource"), NodeOptions::default())?;
    let mut res_con = resource_node.connection()?;
    resource::initialize(&mut res_con).map_err(|e| format!("resource init: {e}"))?;
    let resource_url = resource_node.url();
    rig.resource = Some(resource_node);

    let start = mono_ns();
    let deadline = start + nanos(sc.duration);
    let mut pids = Vec::new();
    for w in 0..sc.workers {
        let victim = w >= sc.workers.saturating_sub(sc.victims);
        let cfg = WorkerConfig {
            worker: w,
            stores: urls.clone(),
            key: KEY.into(),
            ttl_ms: ms_u64(if victim { sc.victim_ttl } else { sc.ttl }),
            hold_ms: sc.hold_ms,
            idle_ms: 5,
            max_wait_ms: ms_u64(sc.max_wait),
            request_timeout_ms: ms_u64(sc.request_timeout),
            retry_delay_ms: ms_u64(sc.retry_delay),
            notifications: sc.notifications,
            resource: resource_url.clone(),
            deadline_ns: deadline,
            history: rig.dir.path().join(format!("worker{w}.jsonl")),
            renew: sc.renew,
            extend_ms: sc.extend_ms,
            overstate_ms: sc.overstate_ms,
            permits: sc.permits,
        };
        let cfg_path = rig.dir.path().join(format!("worker{w}.json"));
        std::fs::write(&cfg_path, serde_json::to_vec(&cfg).unwrap_or_default())
            .map_err(|e| format!("{}: {e}", cfg_path.display()))?;
        let log = std::fs::File::create(rig.dir.path().join(format!("worker{w}.log")))
            .map_err(|e| e.to_string())?;
        let child = Command::new(exe)
            .arg("worker")
            .arg(&cfg_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start worker {}: {e}", exe.display()))?;
        pids.push(child.id());
        rig.workers.push(child);
    }

    let mut faults = Vec::new();
    let mut healed_at = None;
    let mut killed: Vec<usize> = Vec::new();
    for step in &sc.schedule {
        interrupted()?;
        let mut probe = Vec::new();
        let what = do_step(
            &mut rig,
            sc,
            step,
            &pids,
            &mut res_con,
            &mut probe,
            &mut killed,
        )?;
        let t = mono_ns();
        if *step == Step::Healed {
            healed_at = Some(t);
        }
        faults.push(FaultEvent {
            t,
            what: what.0,
            paused_worker: what.1,
            until: what.1.map(|_| t),
            probe,
        });
        if let Some(pw) = what.1 {
            // A client pause: its start was `t - duration`.
            if let (Some(fe), Step::PauseHolder(d)) = (faults.last_mut(), step) {
                fe.t = t.saturating_sub(nanos(*d));
                fe.paused_worker = Some(pw);
            }
        }
    }

    // Workers stop taking leases at the deadline; give the last one time to finish.
    let grace = sc.max_wait + ms(sc.hold_ms.1) + Duration::from_secs(5);
    let until = Instant::now() + Duration::from_nanos(deadline.saturating_sub(mono_ns())) + grace;
    for (i, w) in rig.workers.iter_mut().enumerate() {
        loop {
            match w.try_wait() {
                Ok(Some(status)) => {
                    if !status.success() && !killed.contains(&i) {
                        let log =
                            std::fs::read_to_string(rig.dir.path().join(format!("worker{i}.log")))
                                .unwrap_or_default();
                        return Err(format!("worker {i} exited with {status}:\n{log}"));
                    }
                    break;
                }
                Ok(None) if Instant::now() < until => nap(ms(50))?,
                _ => {
                    let _ = w.kill();
                    let _ = w.wait();
                    break;
                }
            }
        }
    }
    let end = deadline;

    let mut history = History {
        start,
        end,
        healed_at,
        faults,
        ledger_total: 2 * INITIAL_BALANCE,
        permits: sc.permits,
        ..History::default()
    };
    for w in 0..sc.workers {
        let p = rig.dir.path().join(format!("worker{w}.jsonl"));
        history
            .workers
            .extend(read_worker_events(&p).map_err(|e| format!("{}: {e}", p.display()))?);
    }
    history.resource = resource::read_log(&mut res_con)?;

    let findings = check(&history, bounds(sc));
    // A worker that stalled (the machine, not us) for longer than its lease can outlive
    // is a paused holder: damage to the unfenced copy is then expected, not a failure.
    let outlived = sc.ttl.saturating_sub(ms(sc.hold_ms.1));
    let stalled_past_lease = findings.stats.longest_stall_ms > outlived.as_secs_f64() * 1000.0;
    let allow: Vec<Kind> = if stalled_past_lease {
        [
            sc.allow.clone(),
            unfenced_damage(),
            vec![Kind::OverAdmitted(Res::U)],
        ]
        .concat()
    } else {
        sc.allow.clone()
    };
    let missing: Vec<Kind> = sc
        .expect
        .iter()
        .copied()
        .filter(|k| findings.get(*k).is_none())
        .collect();
    let unexpected: Vec<Violation> = findings
        .violations
        .iter()
        .filter(|v| !sc.expect.contains(&v.kind) && !allow.contains(&v.kind))
        .cloned()
        .collect();
    let mut outcome = Outcome {
        scenario: sc.clone(),
        findings,
        missing,
        unexpected,
        history: None,
    };
    if keep || !outcome.passed() {
        std::fs::create_dir_all(save_dir).map_err(|e| format!("{}: {e}", save_dir.display()))?;
        // The workers' own output (warnings of the library) beside the history.
        for w in 0..sc.workers {
            let log = rig.dir.path().join(format!("worker{w}.log"));
            let to = save_dir.join(format!("{}-{}.worker{w}.log", sc.name, std::process::id()));
            let _ = std::fs::copy(&log, &to);
        }
        let p = save_dir.join(format!("{}-{}.history.json", sc.name, std::process::id()));
        history
            .save(&p)
            .map_err(|e| format!("{}: {e}", p.display()))?;
        outcome.history = Some(p);
    }
    Ok(outcome)
}

/// The liveness bounds of a scenario: slack covers a node restart, reconnects, and a
/// debug build on a loaded two-core machine.
pub fn bounds(sc: &Scenario) -> Bounds {
    // With long critical sections, the holder at the heal may keep the lock for up to
    // its hold time before anyone else gets a turn.
    let holding = if sc.renew {
        ms(sc.hold_ms.1)
    } else {
        Duration::ZERO
    };
    Bounds {
        ttl_ns: nanos(sc.ttl),
        retry_ns: nanos(sc.retry_delay + sc.retry_delay / 2),
        slack_ns: nanos(Duration::from_millis(2000) + holding),
        max_gap_ns: sc.max_gap.map(nanos),
    }
}

fn ms_u64(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Carries out one step; returns its description and, for a client pause, the worker.
fn do_step(
    rig: &mut Rig,
    sc: &Scenario,
    step: &Step,
    pids: &[u32],
    res: &mut redis::Connection,
    probe: &mut Vec<NodeProbe>,
    killed: &mut Vec<usize>,
) -> Result<(String, Option<u32>), String> {
    let node = |rig: &Rig, i: usize| -> Result<(), String> {
        if i < rig.nodes.len() {
            Ok(())
        } else {
            Err(format!("scenario {}: no node {i}", sc.name))
        }
    };
    Ok(match step {
        Step::Sleep(d) => {
            nap(*d)?;
            (format!("sleep {} ms", d.as_millis()), None)
        }
        Step::PauseNode(i) => {
            node(rig, *i)?;
            rig.nodes[*i].pause()?;
            (format!("SIGSTOP node {i}"), None)
        }
        Step::ResumeNode(i) => {
            node(rig, *i)?;
            rig.nodes[*i].resume()?;
            (format!("SIGCONT node {i}"), None)
        }
        Step::CrashNode(i) => {
            node(rig, *i)?;
            rig.nodes[*i].crash();
            (format!("kill -9 node {i}"), None)
        }
        Step::StartNode(i) => {
            node(rig, *i)?;
            rig.nodes[*i].restart()?;
            (format!("restart node {i}"), None)
        }
        Step::PinQuorum { paused, a, b } => {
            node(rig, *paused)?;
            match rig.proxies.get(*paused).and_then(Option::as_ref) {
                Some(p) => p.set(ProxyMode::Reset),
                None => rig.nodes[*paused].pause()?,
            }
            // Every key the stopped node holds expires meanwhile.
            if let Err(e) = nap(sc.ttl + ms(200)) {
                let _ = rig.nodes[*paused].resume();
                return Err(e);
            }
            let before = rig.nodes[*a].get(KEY);
            let t = Instant::now();
            let value = loop {
                let va = rig.nodes[*a].get(KEY);
                if va.is_some() && va != before && va == rig.nodes[*b].get(KEY) {
                    break va.unwrap_or_default();
                }
                if t.elapsed() > Duration::from_secs(15) {
                    return Err(format!(
                        "scenario {}: no fresh grant on nodes {a},{b} within 15 s of stopping node {paused}",
                        sc.name
                    ));
                }
                std::thread::sleep(ms(3));
            };
            (
                format!("isolate node {paused}; fresh lease {value} held on nodes {a},{b} only"),
                None,
            )
        }
        Step::PauseHolder(d) => {
            let before: Option<String> =
                redis::cmd("GET").arg(HOLDER_KEY).query(res).ok().flatten();
            let t = Instant::now();
            let (worker, pid) = loop {
                let now: Option<String> =
                    redis::cmd("GET").arg(HOLDER_KEY).query(res).ok().flatten();
                if let Some(h) = now.filter(|h| Some(h) != before.as_ref()) {
                    let mut f = h.split_whitespace();
                    let w: u32 = f.next().and_then(|x| x.parse().ok()).unwrap_or(u32::MAX);
                    let p: u32 = f.next().and_then(|x| x.parse().ok()).unwrap_or(0);
                    // Only a process we started, by the pid we started it as.
                    if pids.get(w as usize) == Some(&p) {
                        break (w, p);
                    }
                    return Err(format!("holder announcement {h:?} names no worker of ours"));
                }
                if t.elapsed() > Duration::from_secs(15) {
                    return Err(format!(
                        "scenario {}: no holder announced within 15 s",
                        sc.name
                    ));
                }
                std::thread::sleep(ms(2));
            };
            let pid = Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX));
            kill(pid, Signal::SIGSTOP).map_err(|e| format!("SIGSTOP worker {worker}: {e}"))?;
            let napped = nap(*d);
            kill(pid, Signal::SIGCONT).map_err(|e| format!("SIGCONT worker {worker}: {e}"))?;
            napped?;
            (
                format!("SIGSTOP holder w{worker} for {} ms, SIGCONT", d.as_millis()),
                Some(worker),
            )
        }
        Step::Cut(i, how) => {
            node(rig, *i)?;
            let ns = rig.nodes[*i]
                .netns()
                .ok_or_else(|| format!("node {i} is not in a namespace"))?;
            ns.cut(*how)?;
            (format!("cut node {i} ({how:?})"), None)
        }
        Step::Heal(i, how) => {
            node(rig, *i)?;
            let ns = rig.nodes[*i]
                .netns()
                .ok_or_else(|| format!("node {i} is not in a namespace"))?;
            ns.heal(*how)?;
            (format!("heal node {i} ({how:?})"), None)
        }
        Step::Proxy(i, mode) => {
            let p = rig
                .proxies
                .get(*i)
                .and_then(Option::as_ref)
                .ok_or_else(|| format!("node {i} has no proxy"))?;
            p.set(*mode);
            (format!("proxy node {i}: {mode:?}"), None)
        }
        Step::ClockJump(i, by) => {
            node(rig, *i)?;
            let shim = rig.nodes[*i]
                .clock()
                .ok_or_else(|| format!("node {i} is not under the clock shim"))?;
            shim.set_offset_ms(*by)?;
            // The shim re-reads the file at most every 5 ms.
            std::thread::sleep(ms(10));
            (format!("node {i} wall clock {by:+} ms"), None)
        }
        Step::Probe => {
            let mut parts = Vec::new();
            for n in &rig.nodes {
                let (value, pttl_ms) = n
                    .connection()
                    .ok()
                    .and_then(|mut c| {
                        let v: Option<String> = redis::cmd("GET").arg(KEY).query(&mut c).ok()?;
                        let p: i64 = redis::cmd("PTTL").arg(KEY).query(&mut c).ok()?;
                        Some((v, p))
                    })
                    .unwrap_or((None, -3));
                probe.push(NodeProbe {
                    node: n.index,
                    value: value.clone(),
                    pttl_ms,
                });
                let v = value.map_or("-".to_string(), |v| v[..8.min(v.len())].to_string());
                parts.push(format!("node {}: {v}@{pttl_ms}ms", n.index));
            }
            (format!("probe {}", parts.join(", ")), None)
        }
        Step::SetKey(i, px) => {
            node(rig, *i)?;
            let mut c = rig.nodes[*i].connection()?;
            redis::cmd("SET")
                .arg(KEY)
                .arg("another-owner")
                .arg("PX")
                .arg(ms_u64(*px))
                .exec(&mut c)
                .map_err(|e| format!("SET on node {i}: {e}"))?;
            (
                format!(
                    "another client SETs the key on node {i} for {} ms",
                    px.as_millis()
                ),
                None,
            )
        }
        Step::AwaitNewHolder => {
            let current = |res: &mut redis::Connection| -> Option<String> {
                redis::cmd("GET").arg(HOLDER_KEY).query(res).ok().flatten()
            };
            let before = current(res);
            let t = Instant::now();
            let now = loop {
                let now = current(res);
                if now.is_some() && now != before {
                    break now.unwrap_or_default();
                }
                if t.elapsed() > Duration::from_secs(20) {
                    return Err(format!(
                        "scenario {}: no new holder announced within 20 s",
                        sc.name
                    ));
                }
                std::thread::sleep(ms(1));
            };
            (format!("new holder announced: {now}"), None)
        }
        Step::KillWaiter | Step::KillHolder => {
            let first_victim = sc.workers.saturating_sub(sc.victims) as usize;
            let holder = |res: &mut redis::Connection| -> Option<usize> {
                let h: Option<String> = redis::cmd("GET").arg(HOLDER_KEY).query(res).ok()?;
                h?.split_whitespace().next()?.parse().ok()
            };
            // A holder announcement stays after its release: only a new one names a
            // worker that holds the lock now.
            let announced = |res: &mut redis::Connection| -> Option<String> {
                redis::cmd("GET").arg(HOLDER_KEY).query(res).ok().flatten()
            };
            // A holder whose key outlives the gap allowed blocks the lock once killed.
            let blocking = |rig: &Rig| -> bool {
                sc.max_gap.is_none_or(|gap| {
                    key_pttl(rig) > i64::try_from(gap.as_millis()).unwrap_or(i64::MAX)
                })
            };
            let before = announced(res);
            let t = Instant::now();
            let victim = loop {
                let now = holder(res);
                let fresh = announced(res) != before;
                let pick = match step {
                    Step::KillHolder => now.filter(|w| {
                        fresh && *w >= first_victim && !killed.contains(w) && blocking(rig)
                    }),
                    _ => {
                        (first_victim..pids.len()).find(|w| Some(*w) != now && !killed.contains(w))
                    }
                };
                if let Some(w) = pick {
                    break w;
                }
                if t.elapsed() > Duration::from_secs(15) {
                    return Err(format!(
                        "scenario {}: no victim to kill within 15 s",
                        sc.name
                    ));
                }
                std::thread::sleep(ms(1));
            };
            let pid = Pid::from_raw(i32::try_from(pids[victim]).unwrap_or(i32::MAX));
            if *step == Step::KillHolder {
                // The announcement is read before the kill; a victim descheduled in
                // between (a loaded machine) may have released meanwhile, and the kill
                // would block nothing. Stop it first, and kill it only if the lock key
                // still holds the value it announced; else let it go on and try again.
                kill(pid, Signal::SIGSTOP).map_err(|e| format!("SIGSTOP worker {victim}: {e}"))?;
                // Still its announcement (nobody read after it), with its value.
                let value = announced(res).and_then(|a| {
                    let f: Vec<&str> = a.split_whitespace().collect();
                    let its = f.first() == Some(&victim.to_string().as_str());
                    f.get(4).filter(|_| its).map(|v| v.to_string())
                });
                let on_node: Option<String> = rig
                    .nodes
                    .first()
                    .and_then(|n| n.connection().ok())
                    .and_then(|mut c| redis::cmd("GET").arg(KEY).query(&mut c).ok())
                    .flatten();
                if value.is_none() || on_node != value {
                    kill(pid, Signal::SIGCONT)
                        .map_err(|e| format!("SIGCONT worker {victim}: {e}"))?;
                    if t.elapsed() > Duration::from_secs(15) {
                        return Err(format!(
                            "scenario {}: no victim holding the lock within 15 s",
                            sc.name
                        ));
                    }
                    return do_step(rig, sc, step, pids, res, probe, killed);
                }
            }
            if *step == Step::KillWaiter {
                // A waiter handed the lock holds it (for the release's claim, then its
                // own long TTL) before it announces itself: stopped in that window it
                // is a holder, not a waiter. Stop it first, and kill it only if no
                // victim's lease holds the key (a key living longer than a holder's
                // TTL); else let it go on and try again.
                kill(pid, Signal::SIGSTOP).map_err(|e| format!("SIGSTOP worker {victim}: {e}"))?;
                if key_pttl(rig) > ms_u64(sc.ttl) as i64 {
                    kill(pid, Signal::SIGCONT)
                        .map_err(|e| format!("SIGCONT worker {victim}: {e}"))?;
                    if t.elapsed() > Duration::from_secs(15) {
                        return Err(format!(
                            "scenario {}: no waiting victim within 15 s",
                            sc.name
                        ));
                    }
                    std::thread::sleep(ms(5));
                    return do_step(rig, sc, step, pids, res, probe, killed);
                }
            }
            kill(pid, Signal::SIGKILL).map_err(|e| format!("SIGKILL worker {victim}: {e}"))?;
            killed.push(victim);
            let what = if *step == Step::KillHolder {
                "holder"
            } else {
                "waiter"
            };
            (format!("SIGKILL {what} w{victim}"), None)
        }
        Step::Healed => ("all faults healed".into(), None),
    })
}
