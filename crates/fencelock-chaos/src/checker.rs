//! The checker: what must hold over a history, and the smallest counter-example when
//! it does not.
//!
//! Each property is checked from the source that can actually see it:
//! - **lock overlap** — claimed validity (`[grant, min(valid_until, release)]`) of two
//!   leases on one key overlaps: the lock itself failed. Judged from the workers'
//!   monotonic timestamps, which are comparable across processes.
//! - **token reuse / token order** — two leases with one token; a lease whose acquire
//!   began after another was handed out got a token that is not larger.
//! - **stale accepted** — the resource accepted a token lower than one it had already
//!   accepted (in the resource's own order).
//! - **interleaved** — a read-modify-write whose read and write were separated by an
//!   accepted operation of another lease: effective exclusion failed at the resource.
//! - **lost update** — accepted increments minus the final counter.
//! - **ledger delta** — final `a + b` minus the initial total.
//! - **over-admitted** — a semaphore's run: more holders inside the resource at once
//!   than the semaphore has permits, as the resource counted them (its own order).
//!   Per-permit exclusion and token order are the lock's checks above: a permit's
//!   grant is recorded under its own key.
//! - **acquire overran** — an acquire returned later than its deadline allows.
//! - **no recovery** — after the last fault healed, no lease within TTL + retry delay
//!   (+ slack for restarts and reconnects).
//! - **stray key** — a lock node holds, at two probes far apart, a value no lease was
//!   ever granted with: an attempt's clean-up did not happen (a liveness problem).
//!
//! Which of these a scenario *expects* is the scenario's business
//! ([`crate::scenario`]); the checker only reports.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::clock::ms;
use crate::history::{History, LeaseId, Res, ResourceOp, WorkerEvent, lease_worker};

/// A kind of violation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Kind {
    /// Claimed validity of two leases overlapped.
    LockOverlap,
    /// Two leases carried the same token.
    TokenReuse,
    /// A later lease got a token not larger than an earlier one.
    TokenOrder,
    /// The resource accepted a token lower than one it had seen.
    StaleAccepted(Res),
    /// Another lease's operation landed inside a read-modify-write.
    Interleaved(Res),
    /// Increments were lost.
    LostUpdate(Res),
    /// The ledger's total changed.
    LedgerDelta(Res),
    /// More semaphore holders were inside the resource at once than there are permits.
    OverAdmitted(Res),
    /// An acquire returned after its deadline.
    AcquireOverran,
    /// No lease after the faults healed.
    NoRecovery,
    /// A lock node kept a key whose value no lease was ever granted with, across two
    /// probes far enough apart that no acquire attempt can still be in flight: a
    /// failed or abandoned attempt left its key behind (it blocks others until it
    /// expires).
    StrayKey,
    /// A renewing lease was lost while its holder worked under it (its job stopped).
    LeaseLost,
    /// A lease claimed more time left than its keys lived on a majority of nodes.
    ValidityOverstated,
    /// The lock stayed unused for longer than the bound while someone waited for it.
    Blocked,
    /// The harness itself failed (resource errors): the run proves nothing.
    Harness,
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Kind::LockOverlap => write!(f, "lock overlap"),
            Kind::TokenReuse => write!(f, "token reuse"),
            Kind::TokenOrder => write!(f, "token order"),
            Kind::StaleAccepted(r) => write!(f, "stale accepted ({r})"),
            Kind::Interleaved(r) => write!(f, "interleaved RMW ({r})"),
            Kind::LostUpdate(r) => write!(f, "lost update ({r})"),
            Kind::LedgerDelta(r) => write!(f, "ledger delta ({r})"),
            Kind::OverAdmitted(r) => write!(f, "over-admitted ({r})"),
            Kind::AcquireOverran => write!(f, "acquire overran"),
            Kind::NoRecovery => write!(f, "no recovery"),
            Kind::StrayKey => write!(f, "stray key"),
            Kind::LeaseLost => write!(f, "lease lost"),
            Kind::ValidityOverstated => write!(f, "validity overstated"),
            Kind::Blocked => write!(f, "lock blocked"),
            Kind::Harness => write!(f, "harness error"),
        }
    }
}

/// One violation: what, how often, and the few events that show it.
#[derive(Debug, Clone, Serialize)]
pub struct Violation {
    /// The kind.
    pub kind: Kind,
    /// How many instances were found.
    pub count: usize,
    /// One sentence.
    pub summary: String,
    /// The smallest counter-example found: the events involved, one per line.
    pub events: Vec<String>,
}

/// Numbers for the report.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Stats {
    /// Leases handed out.
    pub grants: usize,
    /// Acquires that failed (timeout, unavailable …).
    pub acquire_failures: usize,
    /// Writes the fenced copy refused as stale.
    pub stale_writes_rejected: usize,
    /// Reads the fenced copy refused as stale.
    pub stale_reads_rejected: usize,
    /// Accepted writes per copy.
    pub accepted_writes: BTreeMap<Res, usize>,
    /// Lost increments per copy.
    pub lost_updates: BTreeMap<Res, i64>,
    /// Ledger delta per copy.
    pub ledger_delta: BTreeMap<Res, i64>,
    /// A semaphore's run: the most holders inside each copy at once.
    pub most_inside: BTreeMap<Res, i64>,
    /// First grant after the last heal, ms after it.
    pub recovery_ms: Option<f64>,
    /// Longest acquire, ms.
    pub max_acquire_ms: f64,
    /// Longest stall of a worker process that the harness did not cause, ms.
    pub longest_stall_ms: f64,
    /// Renewing leases lost while held (jobs stopped).
    pub leases_lost: usize,
    /// Claims compared with the nodes after an extend.
    pub claims_checked: usize,
    /// Longest time the lock stayed unused while a worker waited, ms (scenarios with
    /// a bound on it).
    pub longest_gap_ms: f64,
}

/// What the checker found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Findings {
    /// Violations, by kind.
    pub violations: Vec<Violation>,
    /// Numbers.
    pub stats: Stats,
}

impl Findings {
    /// The violation of this kind, if found.
    pub fn get(&self, kind: Kind) -> Option<&Violation> {
        self.violations.iter().find(|v| v.kind == kind)
    }
}

/// Bounds the liveness checks use.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// The lease TTL.
    pub ttl_ns: u64,
    /// The retry delay plus its jitter.
    pub retry_ns: u64,
    /// Extra time allowed for restarts, reconnects and a loaded machine.
    pub slack_ns: u64,
    /// With a value: the longest the lock may stay unused while a live worker waits
    /// for it (`Blocked` beyond that).
    pub max_gap_ns: Option<u64>,
}

#[derive(Debug, Clone)]
struct Grant {
    lease: LeaseId,
    key: String,
    token: u64,
    t_req: u64,
    t_grant: u64,
    valid_until: u64,
    releasing: Option<u64>,
    /// Renewed while held: claimed until released or lost, not until `valid_until`.
    renewing: bool,
    lost_at: Option<u64>,
}

impl Grant {
    fn claim_end(&self) -> u64 {
        if self.renewing {
            return match (self.releasing, self.lost_at) {
                (Some(r), Some(l)) => r.min(l),
                (Some(e), None) | (None, Some(e)) => e,
                (None, None) => self.valid_until,
            };
        }
        self.releasing
            .map_or(self.valid_until, |r| r.min(self.valid_until))
    }
}

/// Formats events relative to the run's start.
struct Fmt {
    t0: u64,
}

impl Fmt {
    fn t(&self, ns: u64) -> String {
        if ns >= self.t0 {
            format!("+{:.1}ms", ms(ns - self.t0))
        } else {
            format!("-{:.1}ms", ms(self.t0 - ns))
        }
    }

    fn lease(id: LeaseId) -> String {
        format!("w{}#{}", lease_worker(id), id & 0xffff_ffff)
    }

    fn grant(&self, g: &Grant) -> String {
        format!(
            "grant   {} key={} token={} acquire={} granted={} valid_until={} released={}",
            Self::lease(g.lease),
            g.key,
            g.token,
            self.t(g.t_req),
            self.t(g.t_grant),
            self.t(g.valid_until),
            g.releasing
                .map_or_else(|| "never".to_string(), |r| self.t(r)),
        )
    }

    fn op(o: &ResourceOp) -> String {
        format!(
            "res#{:<6} {:<8} {:<5} {} token={} {} → counter={} a={} b={}",
            o.seq,
            o.res.to_string(),
            o.op,
            Self::lease(o.lease),
            o.token,
            if o.ok { "ACCEPTED" } else { "refused" },
            o.counter,
            o.a,
            o.b
        )
    }
}

/// Checks every property over `h`.
pub fn check(h: &History, bounds: Bounds) -> Findings {
    let fmt = Fmt { t0: h.start };
    let mut f = Findings::default();
    let mut grants: Vec<Grant> = Vec::new();
    let mut releasing: HashMap<LeaseId, u64> = HashMap::new();
    let mut lost: HashMap<LeaseId, u64> = HashMap::new();
    let mut lost_leases: Vec<String> = Vec::new();
    let mut overstated: Vec<String> = Vec::new();
    let mut harness: Vec<String> = Vec::new();
    let mut overran: Vec<String> = Vec::new();
    let mut values: std::collections::HashSet<String> = std::collections::HashSet::new();
    // Stalls the machine made; a client pause we injected is not one of them.
    let injected = |worker: u32, from: u64, to: u64| {
        h.faults.iter().any(|fe| {
            fe.paused_worker == Some(worker) && fe.t <= to && fe.until.unwrap_or(u64::MAX) >= from
        })
    };
    let stalls: Vec<(u32, u64, u64)> = h
        .workers
        .iter()
        .filter_map(|e| match e {
            WorkerEvent::Stall { worker, from, to } if !injected(*worker, *from, *to) => {
                Some((*worker, *from, *to))
            }
            _ => None,
        })
        .collect();
    f.stats.longest_stall_ms = stalls.iter().map(|(_, a, b)| ms(b - a)).fold(0.0, f64::max);
    let paused = |worker: u32, from: u64, to: u64| {
        injected(worker, from, to)
            || stalls
                .iter()
                .any(|(w, a, b)| *w == worker && *a <= to && *b >= from)
    };
    let over = |t_req: u64, t_end: u64, max_wait_ms: u64| {
        t_end.saturating_sub(t_req) > max_wait_ms * 1_000_000 + bounds.slack_ns
    };
    for ev in &h.workers {
        match ev {
            WorkerEvent::Grant {
                lease,
                key,
                token,
                value,
                t_req,
                t_grant,
                valid_until,
                max_wait_ms,
                renewing,
            } => {
                f.stats.max_acquire_ms = f.stats.max_acquire_ms.max(ms(t_grant - t_req));
                if over(*t_req, *t_grant, *max_wait_ms)
                    && !paused(lease_worker(*lease), *t_req, *t_grant)
                {
                    overran.push(format!(
                        "acquire {} took {:.1} ms, wait was {} ms",
                        Fmt::lease(*lease),
                        ms(t_grant - t_req),
                        max_wait_ms
                    ));
                }
                values.insert(value.clone());
                grants.push(Grant {
                    lease: *lease,
                    key: key.clone(),
                    token: *token,
                    t_req: *t_req,
                    t_grant: *t_grant,
                    valid_until: *valid_until,
                    releasing: None,
                    renewing: *renewing,
                    lost_at: None,
                });
            }
            WorkerEvent::AcquireFailed {
                worker,
                t_req,
                t_end,
                max_wait_ms,
                kind,
                message,
            } => {
                f.stats.acquire_failures += 1;
                f.stats.max_acquire_ms = f.stats.max_acquire_ms.max(ms(t_end - t_req));
                if over(*t_req, *t_end, *max_wait_ms) && !paused(*worker, *t_req, *t_end) {
                    overran.push(format!(
                        "acquire by w{worker} at {} failed ({kind}: {message}) after {:.1} ms, wait was {max_wait_ms} ms",
                        fmt.t(*t_req),
                        ms(t_end - t_req)
                    ));
                }
            }
            WorkerEvent::Releasing { lease, t } => {
                releasing.insert(*lease, *t);
            }
            WorkerEvent::Lost { lease, t, message } => {
                lost.insert(*lease, *t);
                lost_leases.push(format!(
                    "{} lost at {}: {message}",
                    Fmt::lease(*lease),
                    fmt.t(*t)
                ));
            }
            WorkerEvent::ClaimChecked {
                lease,
                t,
                claimed_us,
                majority_us,
                extend_ms,
            } => {
                f.stats.claims_checked += 1;
                // PTTL is whole milliseconds, rounded down.
                if *claimed_us > majority_us + 1000 {
                    overstated.push(format!(
                        "{} at {} (after extend to {extend_ms} ms) claimed {:.1} ms left; its keys lived {:.1} ms on a majority",
                        Fmt::lease(*lease),
                        fmt.t(*t),
                        *claimed_us as f64 / 1000.0,
                        *majority_us as f64 / 1000.0
                    ));
                }
            }
            WorkerEvent::ResourceError { lease, message } => {
                harness.push(format!("{}: resource error: {message}", Fmt::lease(*lease)));
            }
            WorkerEvent::Started { .. }
            | WorkerEvent::Released { .. }
            | WorkerEvent::Stall { .. } => {}
        }
    }
    for g in &mut grants {
        g.releasing = releasing.get(&g.lease).copied();
        g.lost_at = lost.get(&g.lease).copied();
    }
    f.stats.leases_lost = lost_leases.len();
    push(
        &mut f,
        Kind::LeaseLost,
        lost_leases,
        "renewing leases were lost while their holders worked (jobs stopped)",
    );
    push(
        &mut f,
        Kind::ValidityOverstated,
        overstated,
        "a lease claimed more time than its keys had left on a majority",
    );
    grants.sort_by_key(|g| g.t_grant);
    f.stats.grants = grants.len();

    push(
        &mut f,
        Kind::AcquireOverran,
        overran,
        "acquires returned after their deadline",
    );
    push(
        &mut f,
        Kind::Harness,
        harness,
        "the resource failed; the run proves nothing",
    );
    check_overlap(&mut f, &grants, &fmt);
    check_tokens(&mut f, &grants, &fmt);
    let by_lease: HashMap<LeaseId, &Grant> = grants.iter().map(|g| (g.lease, g)).collect();
    for res in [Res::F, Res::U] {
        let (ops, inside): (Vec<&ResourceOp>, Vec<&ResourceOp>) = h
            .resource
            .iter()
            .filter(|o| o.res == res)
            .partition(|o| o.permit.is_none());
        check_resource(&mut f, res, &ops, &by_lease, h.ledger_total, &fmt);
        if let Some(permits) = h.permits {
            check_inside(&mut f, res, &inside, permits, &by_lease, &fmt);
        }
    }
    check_recovery(&mut f, h, &grants, bounds, &fmt);
    if let Some(max_gap) = bounds.max_gap_ns {
        check_blocked(&mut f, h, &grants, max_gap, &fmt);
    }
    check_strays(&mut f, h, &values, &fmt);
    f
}

/// A value seen on the same node at two consecutive probes, with a live TTL, that no
/// grant carried. An acquire attempt in flight lives for one request timeout; the
/// probes are set far enough apart by the scenario.
fn check_strays(
    f: &mut Findings,
    h: &History,
    granted: &std::collections::HashSet<String>,
    fmt: &Fmt,
) {
    let probes: Vec<_> = h.faults.iter().filter(|fe| !fe.probe.is_empty()).collect();
    let mut found = Vec::new();
    for pair in probes.windows(2) {
        for (a, b) in pair[0].probe.iter().zip(&pair[1].probe) {
            if let (Some(va), Some(vb)) = (&a.value, &b.value)
                && va == vb
                && b.pttl_ms > 0
                && !granted.contains(va)
            {
                found.push(vec![
                    format!(
                        "probe at {}: node {} holds {va} (PTTL {} ms)",
                        fmt.t(pair[0].t),
                        a.node,
                        a.pttl_ms
                    ),
                    format!(
                        "probe at {}: node {} still holds it (PTTL {} ms); no lease was granted with this value",
                        fmt.t(pair[1].t),
                        b.node,
                        b.pttl_ms
                    ),
                ]);
            }
        }
    }
    if let Some(first) = found.first() {
        f.violations.push(Violation {
            kind: Kind::StrayKey,
            count: found.len(),
            summary: "a lock node kept a key of an attempt that was never granted".into(),
            events: first.clone(),
        });
    }
}

/// Adds a violation from a list of one-line instances (the first is the example).
fn push(f: &mut Findings, kind: Kind, instances: Vec<String>, summary: &str) {
    if let Some(first) = instances.first() {
        f.violations.push(Violation {
            kind,
            count: instances.len(),
            summary: summary.to_string(),
            events: vec![first.clone()],
        });
    }
}

fn check_overlap(f: &mut Findings, grants: &[Grant], fmt: &Fmt) {
    // Sorted by grant time: a lease overlaps an earlier one iff it was granted before
    // the earlier one's claim ended. Keep the earlier claim that ends last.
    let mut count = 0;
    let mut best: Option<(u64, &Grant, &Grant)> = None;
    let mut open: HashMap<&str, &Grant> = HashMap::new();
    for g in grants {
        if let Some(prev) = open.get(g.key.as_str())
            && prev.claim_end() > g.t_grant
        {
            count += 1;
            let overlap = prev.claim_end().min(g.claim_end()) - g.t_grant;
            if best.is_none_or(|(o, _, _)| overlap > o) {
                best = Some((overlap, *prev, g));
            }
        }
        let keep = open
            .get(g.key.as_str())
            .is_some_and(|p| p.claim_end() >= g.claim_end());
        if !keep {
            open.insert(&g.key, g);
        }
    }
    if let Some((overlap, a, b)) = best {
        f.violations.push(Violation {
            kind: Kind::LockOverlap,
            count,
            summary: format!(
                "two leases claimed key {} at once (longest overlap {:.1} ms)",
                a.key,
                ms(overlap)
            ),
            events: vec![fmt.grant(a), fmt.grant(b)],
        });
    }
}

fn check_tokens(f: &mut Findings, grants: &[Grant], fmt: &Fmt) {
    let mut seen: HashMap<(&str, u64), &Grant> = HashMap::new();
    let mut reuse = Vec::new();
    for g in grants {
        if let Some(prev) = seen.insert((&g.key, g.token), g) {
            reuse.push(vec![fmt.grant(prev), fmt.grant(g)]);
        }
    }
    if let Some(first) = reuse.first() {
        f.violations.push(Violation {
            kind: Kind::TokenReuse,
            count: reuse.len(),
            summary: "two leases carried the same token".into(),
            events: first.clone(),
        });
    }
    // Order: B's acquire began after A was handed out ⇒ token(B) > token(A).
    let mut bad = Vec::new();
    for b in grants {
        let worst = grants
            .iter()
            .filter(|a| a.key == b.key && a.lease != b.lease && a.t_grant < b.t_req)
            .max_by_key(|a| a.token);
        if let Some(a) = worst
            && a.token >= b.token
        {
            bad.push(vec![fmt.grant(a), fmt.grant(b)]);
        }
    }
    if let Some(first) = bad.first() {
        f.violations.push(Violation {
            kind: Kind::TokenOrder,
            count: bad.len(),
            summary: "a lease acquired after another was handed out got a token that is not larger"
                .into(),
            events: first.clone(),
        });
    }
}

fn check_resource(
    f: &mut Findings,
    res: Res,
    ops: &[&ResourceOp],
    grants: &HashMap<LeaseId, &Grant>,
    ledger_total: i64,
    fmt: &Fmt,
) {
    let with_grant = |o: &ResourceOp| {
        let mut v = vec![Fmt::op(o)];
        if let Some(g) = grants.get(&o.lease) {
            v.push(format!("  └ {}", fmt.grant(g)));
        }
        v
    };
    // Stale accepted: an accepted token lower than the highest accepted before it.
    let mut highest: Option<&ResourceOp> = None;
    let mut stale: Vec<Vec<String>> = Vec::new();
    for o in ops.iter().copied().filter(|o| o.ok) {
        match highest {
            Some(h) if o.token < h.token => {
                let mut ev = with_grant(h);
                ev.extend(with_grant(o));
                stale.push(ev);
            }
            Some(h) if o.token <= h.token => {}
            _ => highest = Some(o),
        }
    }
    if let Some(first) = stale.first() {
        f.violations.push(Violation {
            kind: Kind::StaleAccepted(res),
            count: stale.len(),
            summary: format!("the {res} resource accepted a token lower than one it had accepted"),
            events: first.clone(),
        });
    }
    // Interleaving: between a lease's accepted read and its accepted write, an
    // accepted operation of another lease. The smallest example: the closest pair.
    let mut last_read: HashMap<LeaseId, usize> = HashMap::new();
    let mut inter: Vec<(u64, Vec<String>)> = Vec::new();
    for (i, o) in ops.iter().enumerate().filter(|(_, o)| o.ok) {
        if o.op == "read" {
            last_read.insert(o.lease, i);
            continue;
        }
        let Some(&r) = last_read.get(&o.lease) else {
            continue;
        };
        if let Some(x) = ops[r + 1..i].iter().find(|x| x.ok && x.lease != o.lease) {
            let mut ev = with_grant(ops[r]);
            ev.extend(with_grant(x));
            ev.push(Fmt::op(o));
            inter.push((o.seq - ops[r].seq, ev));
        }
    }
    if let Some((_, ev)) = inter.iter().min_by_key(|(span, _)| *span) {
        f.violations.push(Violation {
            kind: Kind::Interleaved(res),
            count: inter.len(),
            summary: format!(
                "another lease's operation landed inside a read-modify-write on the {res} resource"
            ),
            events: ev.clone(),
        });
    }
    // Lost updates and the ledger, from the final state.
    let writes = ops.iter().filter(|o| o.ok && o.op == "write").count();
    f.stats.accepted_writes.insert(res, writes);
    let (counter, a, b) = ops
        .last()
        .map_or((0, ledger_total / 2, ledger_total / 2), |o| {
            (o.counter, o.a, o.b)
        });
    let lost = i64::try_from(writes).unwrap_or(i64::MAX) - counter;
    f.stats.lost_updates.insert(res, lost);
    let delta = a + b - ledger_total;
    f.stats.ledger_delta.insert(res, delta);
    if res == Res::F {
        f.stats.stale_writes_rejected = ops.iter().filter(|o| !o.ok && o.op == "write").count();
        f.stats.stale_reads_rejected = ops.iter().filter(|o| !o.ok && o.op == "read").count();
    }
    let example = inter.first().map(|(_, e)| e.clone()).unwrap_or_default();
    if lost != 0 {
        f.violations.push(Violation {
            kind: Kind::LostUpdate(res),
            count: usize::try_from(lost.unsigned_abs()).unwrap_or(usize::MAX),
            summary: format!(
                "{writes} increments accepted on the {res} resource, counter ends at {counter}"
            ),
            events: example.clone(),
        });
    }
    if delta != 0 {
        f.violations.push(Violation {
            kind: Kind::LedgerDelta(res),
            count: 1,
            summary: format!(
                "the {res} ledger ends at {} instead of {ledger_total} (delta {delta:+})",
                a + b
            ),
            events: example,
        });
    }
}

/// A semaphore's holders at the resource: the resource counts who is inside after each
/// entry (`counter`); more than `permits` is a violation. The example is the first
/// such entry with everyone inside then (followed through the log here).
fn check_inside(
    f: &mut Findings,
    res: Res,
    ops: &[&ResourceOp],
    permits: u32,
    grants: &HashMap<LeaseId, &Grant>,
    fmt: &Fmt,
) {
    let mut inside: BTreeMap<LeaseId, &ResourceOp> = BTreeMap::new();
    let mut most = 0;
    let mut over = 0;
    let mut example: Option<Vec<String>> = None;
    for o in ops {
        match o.op.as_str() {
            "enter" if o.ok => {
                inside.insert(o.lease, o);
            }
            "leave" | "evict" => {
                inside.remove(&o.lease);
            }
            _ => {}
        }
        most = most.max(o.counter);
        if o.op == "enter" && o.ok && o.counter > i64::from(permits) {
            over += 1;
            example.get_or_insert_with(|| {
                let mut ev = vec![format!(
                    "{} holders inside after res#{} ({} permits); inside then:",
                    o.counter, o.seq, permits
                )];
                let mut entries: Vec<&&ResourceOp> = inside.values().collect();
                entries.sort_by_key(|e| e.seq);
                for e in entries {
                    ev.push(format!(
                        "{} permit={}",
                        Fmt::op(e),
                        e.permit.as_deref().unwrap_or("?")
                    ));
                    if let Some(g) = grants.get(&e.lease) {
                        ev.push(format!("  └ {}", fmt.grant(g)));
                    }
                }
                ev
            });
        }
    }
    f.stats.most_inside.insert(res, most);
    if let Some(events) = example {
        f.violations.push(Violation {
            kind: Kind::OverAdmitted(res),
            count: over,
            summary: format!(
                "more than {permits} holders were inside the {res} resource at once (most {most})"
            ),
            events,
        });
    }
}

fn check_recovery(f: &mut Findings, h: &History, grants: &[Grant], b: Bounds, fmt: &Fmt) {
    let Some(healed) = h.healed_at else {
        return;
    };
    let bound = b.ttl_ns + b.retry_ns + b.slack_ns;
    let first = grants.iter().find(|g| g.t_grant >= healed);
    f.stats.recovery_ms = first.map(|g| ms(g.t_grant - healed));
    let late = match first {
        Some(g) => g.t_grant - healed > bound,
        None => h.end.saturating_sub(healed) > bound,
    };
    if late {
        f.violations.push(Violation {
            kind: Kind::NoRecovery,
            count: 1,
            summary: format!(
                "no lease within {:.0} ms (TTL + retry + slack) of the last heal",
                ms(bound)
            ),
            events: vec![format!(
                "healed at {}; first grant after: {}",
                fmt.t(healed),
                first.map_or_else(|| "none".to_string(), |g| fmt.grant(g))
            )],
        });
    }
}

/// The lock must not stay unused for longer than `max_gap` while a worker waits for
/// it: from the end of the leases so far (released, lost, or — for a holder that died
/// without either — its grant) to the next grant, if an acquire that later completed
/// was already waiting then. Acquires that never completed (their worker was killed)
/// do not count as waiting.
fn check_blocked(f: &mut Findings, h: &History, grants: &[Grant], max_gap: u64, fmt: &Fmt) {
    let waits: Vec<(u64, u64)> = h
        .workers
        .iter()
        .filter_map(|e| match e {
            WorkerEvent::Grant { t_req, t_grant, .. } => Some((*t_req, *t_grant)),
            WorkerEvent::AcquireFailed { t_req, t_end, .. } => Some((*t_req, *t_end)),
            _ => None,
        })
        .collect();
    let mut found = Vec::new();
    let mut longest = 0u64;
    let mut busy_until: Option<(u64, &Grant)> = None;
    for g in grants {
        if let Some((end, prev)) = busy_until
            && g.t_grant > end
        {
            let waited = waits
                .iter()
                .any(|&(req, done)| req < end && done >= g.t_grant);
            let gap = g.t_grant - end;
            if waited {
                longest = longest.max(gap);
                if gap > max_gap {
                    found.push(format!(
                        "{} ended at {}; next grant {} at {} ({:.0} ms later, bound {:.0} ms) while a worker waited",
                        Fmt::lease(prev.lease),
                        fmt.t(end),
                        Fmt::lease(g.lease),
                        fmt.t(g.t_grant),
                        ms(gap),
                        ms(max_gap)
                    ));
                }
            }
        }
        let end = match (g.releasing, g.lost_at) {
            (Some(r), Some(l)) => r.min(l),
            (Some(e), None) | (None, Some(e)) => e,
            (None, None) => g.t_grant,
        };
        if busy_until.is_none_or(|(e, _)| end > e) {
            busy_until = Some((end, g));
        }
    }
    f.stats.longest_gap_ms = ms(longest);
    push(
        f,
        Kind::Blocked,
        found,
        "the lock stayed unused past the bound while a worker waited",
    );
}
