//! Start-up checks: is this set of nodes fit for Redlock?
//!
//! Locking can be wrong without a single error being returned: a replica listed as a
//! node, the same server listed twice (it would count twice toward the quorum), an
//! eviction policy that may delete a lock key before its TTL, clocks far apart. Each
//! such condition is caught here, once, when a [`Locker`](crate::Locker) first connects, and by
//! `fencelock doctor` on demand.
//!
//! Findings have a [`Severity`]: an [`Severity::Error`] means locking would be wrong and
//! [`Locker::check`](crate::Locker::check) refuses; a [`Severity::Warning`] is logged
//! through `tracing` (and refused too with [`crate::LockerBuilder::strict_checks`]); a
//! [`Severity::Note`] is something the operator should know (no persistence: the
//! delayed-restart rule).
//!
//! Memory and SQLite stores have nothing to check; their nodes are reported without
//! findings.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use std::future::Future;
use std::sync::Arc;

use futures_util::FutureExt;
use futures_util::future::join_all;

use crate::core::{Core, StartupChecks};
use crate::error::{Error, NodeError, NodeErrorKind, Result};
use crate::fanout::FanOut;
use crate::keys::validate;
use crate::renew::ensure_started;
use crate::store::{Forgot, Node, Probe};

/// [`Locker::forget_probe`](crate::Locker::forget_probe) on one node: asks again while the
/// node says it is too soon, within [`FORGET_PATIENCE`].
async fn forget_on(node: &Node, key: &str, timeout: Duration) -> Result<Forgot, NodeError> {
    let deadline = tokio::time::Instant::now() + FORGET_PATIENCE;
    loop {
        let forgot = tokio::time::timeout(timeout, node.forget(key))
            .await
            .map_err(|_| {
                NodeError::new(
                    NodeErrorKind::Timeout,
                    node.name(),
                    format!("no answer within {} ms", timeout.as_millis()),
                )
            })??;
        match forgot {
            Forgot::TooSoon(wait) if tokio::time::Instant::now() + wait < deadline => {
                tokio::time::sleep(wait).await;
            }
            other => return Ok(other),
        }
    }
}

/// How the finding about a node that could not be asked begins.
const NOT_CHECKED: &str = "could not be checked: ";

/// How long one node may take to answer all the check's questions.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// The key of the probe lock `fencelock doctor` takes (under the locker's prefix) to
/// exercise acquire, extend and release for real. Reserved for that: it is the one key
/// whose records [`Locker::forget_probe`](crate::Locker::forget_probe) removes, so do not
/// lock it for anything else.
pub const PROBE_KEY: &str = "fencelock-doctor-probe";

/// How long [`Locker::forget_probe`](crate::Locker::forget_probe) waits in all for a
/// Redis node's clock to pass the probe's counter (a few milliseconds unless the node's
/// clock is behind the other nodes' by more; past this, the records stay and the next
/// probe tries again).
const FORGET_PATIENCE: Duration = Duration::from_secs(2);

/// How much a finding matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Severity {
    /// Worth knowing; nothing is wrong yet.
    Note,
    /// Locking works but may be unsafe in some failure (eviction, clock drift …).
    Warning,
    /// Locking would be wrong: the locker refuses to run.
    Error,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Note => "note",
            Severity::Warning => "warning",
            Severity::Error => "error",
        })
    }
}

/// One thing the checks found.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Finding {
    /// How much it matters.
    pub severity: Severity,
    /// The node it is about (redacted address), or `None` for the set of nodes.
    pub node: Option<String>,
    /// What was found and what to do, in one or two sentences.
    pub message: String,
    /// The node could not be asked (its error is in [`NodeReport::error`]): acquiring
    /// reports that by itself, so the start-up check neither logs nor refuses on it.
    pub(crate) about_node_error: bool,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.node {
            Some(n) => write!(f, "{}: {n}: {}", self.severity, self.message),
            None => write!(f, "{}: {}", self.severity, self.message),
        }
    }
}

/// What one node looks like to the checks.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct NodeReport {
    /// The node's address, without password.
    pub node: String,
    /// Why the node could not be checked (unreachable, refused …).
    pub error: Option<NodeError>,
    /// Server version (`redis_version`).
    pub version: Option<String>,
    /// `master` or `slave` (replica).
    pub role: Option<String>,
    /// The server's `run_id`: the same on two URLs means the same server.
    pub run_id: Option<String>,
    /// `maxmemory-policy`.
    pub maxmemory_policy: Option<String>,
    /// Whether the node persists its data (AOF on, or RDB snapshots configured);
    /// `None` when it cannot be asked.
    pub persistence: Option<bool>,
    /// Whether the node runs in Redis Cluster mode.
    pub cluster: Option<bool>,
    /// The node's clock minus this host's, in milliseconds.
    pub clock_offset_ms: Option<i64>,
    /// One round trip (median of three PINGs); zero for stores without a network.
    pub round_trip: Duration,
    /// The ACL user the connection runs as.
    pub user: Option<String>,
    /// Commands the user needs but may not run; `None` when that cannot be asked
    /// (the user may not run `ACL DRYRUN`).
    pub missing_permissions: Option<Vec<String>>,
    /// Questions the node would not answer, and similar remarks.
    pub notes: Vec<String>,
    /// The store may be one node of several in a Redlock quorum (it says so:
    /// `Store::joins_quorum`): the checks of the quorum as a whole — the same server
    /// twice, an even count, clock spread — look at these nodes only.
    quorum: bool,
}

impl NodeReport {
    fn new(node: &str) -> Self {
        NodeReport {
            node: node.to_string(),
            error: None,
            version: None,
            role: None,
            run_id: None,
            maxmemory_policy: None,
            persistence: None,
            cluster: None,
            clock_offset_ms: None,
            round_trip: Duration::ZERO,
            user: None,
            missing_permissions: None,
            notes: Vec::new(),
            quorum: false,
        }
    }

    fn from_probe(node: &str, p: Probe) -> Self {
        let persistence = match (p.aof, p.rdb_save.as_deref()) {
            (Some(true), _) => Some(true),
            (_, Some(save)) => Some(!save.trim().is_empty()),
            (Some(false), None) => None,
            (None, None) => None,
        };
        NodeReport {
            version: p.version,
            role: p.role,
            run_id: p.run_id,
            maxmemory_policy: p.maxmemory_policy,
            persistence,
            cluster: p.cluster,
            clock_offset_ms: p.clock_offset,
            round_trip: p.round_trip,
            user: p.user,
            missing_permissions: p.missing,
            notes: p.notes,
            ..NodeReport::new(node)
        }
    }
}

/// Everything the checks found, per node and for the set.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Report {
    /// One entry per store, in the order they were given.
    pub nodes: Vec<NodeReport>,
    /// Findings, most severe first.
    pub findings: Vec<Finding>,
}

impl Report {
    /// Whether nothing worse than a note was found and every node answered.
    pub fn is_healthy(&self) -> bool {
        self.worst().is_none_or(|s| s < Severity::Warning)
            && self.nodes.iter().all(|n| n.error.is_none())
    }

    /// The most severe finding's severity, if any.
    pub fn worst(&self) -> Option<Severity> {
        self.findings.iter().map(|f| f.severity).max()
    }

    /// Findings of exactly this severity.
    pub fn of(&self, severity: Severity) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(move |f| f.severity == severity)
    }
}

/// The ACL a fencelock user needs at the least, for a key prefix `app:`. Listed in
/// `docs/security.md`; kept here so the doctor can print it.
pub const MINIMUM_ACL: &str = "on >PASSWORD resetkeys ~app:* resetchannels &app:* \
    +ping +evalsha +script|load +get +set +del +pexpire +pttl +time +publish \
    +subscribe +unsubscribe +zadd +zrange +zrangebyscore +zrem +zscore +info +acl|whoami";

/// [`Locker::check`](crate::Locker::check): the checks, judged, a bad finding refused.
pub(crate) async fn check(core: &Core) -> Result<Report> {
    // Three round trips per node, each bounded like any request, so a node that
    // is down or paused delays the first acquire by at most this.
    let timeout = core.options.request_timeout * 3;
    let report = examine(core, core.options.ttl, false, timeout).await;
    judged(core, report, true)
}

/// The verdict on a report: log the findings, refuse on the bad ones, and with
/// `node_errors` also on a node that refused in a way retrying cannot fix.
fn judged(core: &Core, report: Report, node_errors: bool) -> Result<Report> {
    for f in &report.findings {
        if f.about_node_error {
            tracing::debug!("fencelock check: {f}");
            continue;
        }
        match f.severity {
            Severity::Error => tracing::error!("fencelock check: {f}"),
            Severity::Warning => tracing::warn!("fencelock check: {f}"),
            Severity::Note => tracing::info!("fencelock check: {f}"),
        }
    }
    let refuse = if core.options.strict_checks {
        Severity::Warning
    } else {
        Severity::Error
    };
    // A node that refused the questions the way it would refuse a lock (wrong
    // password, a certificate not trusted …): the same error acquiring would give.
    let permanent: Vec<NodeError> = report
        .nodes
        .iter()
        .filter_map(|n| n.error.clone())
        .filter(NodeError::is_permanent)
        .collect();
    if node_errors && !permanent.is_empty() {
        return Err(Error::config(
            "cannot use the stores: a node refused in a way retrying cannot fix",
        )
        .with_nodes(permanent));
    }
    let bad: Vec<String> = report
        .findings
        .iter()
        .filter(|f| f.severity >= refuse && !f.about_node_error)
        .map(ToString::to_string)
        .collect();
    if bad.is_empty() {
        Ok(report)
    } else {
        Err(Error::config(format!(
            "the stores are not fit for locking: {}",
            bad.join("; ")
        )))
    }
}

/// [`Locker::diagnose`](crate::Locker::diagnose): the checks, thorough, judged, never refused.
pub(crate) async fn diagnose(core: &Core, ttl: Duration) -> Report {
    examine(core, ttl, true, PROBE_TIMEOUT).await
}

/// [`Locker::forget_probe`](crate::Locker::forget_probe): every node forgets the probe key.
pub(crate) async fn forget_probe(core: &Core) -> Result<bool> {
    let options = &core.options;
    let key = validate(vec![PROBE_KEY.to_string()], &options.prefix, &options.keys)?.swap_remove(0);
    let timeout = options.request_timeout.max(Duration::from_millis(500));
    let replies = join_all(core.nodes.iter().map(|node| forget_on(node, &key, timeout))).await;
    let mut all = true;
    let mut errors = Vec::new();
    for reply in replies {
        match reply {
            Ok(forgot) => all &= forgot == Forgot::Done,
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(all)
    } else {
        Err(Error::unavailable(
            "the probe lock could not be forgotten on every store",
            errors,
        ))
    }
}

/// The start-up checks ([`Locker::check`](crate::Locker::check)) until they pass once,
/// started on a task of their own on the first call. Every acquire looks at them, but none
/// waits for them: an acquire that completes first goes ahead (a silent node, which the
/// quorum does not need, must not hold it back), and checks that fail while an acquire is
/// under way fail that acquire and every later one until they pass. A failure is not
/// remembered, so fixing the set-up (a password, a node) needs no new locker. Unreachable
/// nodes do not fail the checks; a node that comes back is still vetted (not a replica)
/// when it reconnects.
pub(crate) fn startup_checks(core: &Arc<Core>) -> StartupChecks {
    let mut slot = core.checked.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(checks) = slot.as_ref()
        && !matches!(checks.peek(), Some(Err(_)))
    {
        return checks.clone();
    }
    let core = core.clone();
    let task = tokio::spawn(async move {
        // Node errors are left to the acquires: they report them the usual way (and
        // retry the ones retrying can fix).
        let timeout = core.options.request_timeout * 3;
        let report = examine(&core, core.options.ttl, false, timeout).await;
        judged(&core, report, false).map(|_| ())
    });
    let checks = async move { task.await.unwrap_or(Ok(())) }.boxed().shared();
    *slot = Some(checks.clone());
    checks
}

async fn examine(core: &Core, ttl: Duration, thorough: bool, timeout: Duration) -> Report {
    let prefix = core.options.prefix.clone();
    let probes = FanOut::start(&core.nodes, timeout, |n| n.probe(&prefix, thorough))
        .by_node(&core.nodes)
        .await;
    let mut nodes: Vec<NodeReport> = core
        .nodes
        .iter()
        .zip(probes)
        .map(|(node, probe)| match probe {
            Ok(Some(p)) => NodeReport::from_probe(node.name(), p),
            Ok(None) => NodeReport::new(node.name()),
            Err(e) => NodeReport {
                error: Some(e),
                ..NodeReport::new(node.name())
            },
        })
        .collect();
    for (report, node) in nodes.iter_mut().zip(core.nodes.iter()) {
        report.quorum = node.joins_quorum();
    }
    let budget = drift_budget(ttl, core.options.drift_factor);
    let timeout = core.options.request_timeout_for(ttl);
    let mut findings = judge(&nodes, budget, ttl, timeout);
    findings.sort_by_key(|f| std::cmp::Reverse(f.severity));
    Report { nodes, findings }
}

/// Runs `work` (an acquire on keys already validated) as every acquire runs: the
/// background task started, the start-up checks beside it. The checks never hold the
/// work back — a node the quorum does not need (a silent one) must not — but checks
/// that fail first fail the work (dropping it leaves nothing behind); work that
/// completes first goes ahead, and the checks judge the next one.
pub(crate) async fn run_checked<T>(
    core: &Arc<Core>,
    work: impl Future<Output = Result<T>>,
) -> Result<T> {
    ensure_started(core);
    let checks = startup_checks(core);
    if let Some(checked) = checks.peek() {
        checked.clone()?;
        return work.await;
    }
    tokio::pin!(work);
    tokio::select! {
        biased;
        checked = checks => {
            checked?;
            work.await
        }
        done = &mut work => done,
    }
}

/// The clock difference Redlock's validity already allows for: `ttl × drift + 2 ms`.
fn drift_budget(ttl: Duration, drift_factor: f64) -> Duration {
    ttl.mul_f64(drift_factor) + Duration::from_millis(2)
}

/// Whether a `redis_version` string (`7.0.15`) is below `major.minor`. A version that
/// does not parse is not judged (a fork may print anything).
fn redis_version_below(version: &str, (major, minor): (u32, u32)) -> bool {
    let mut parts = version.split('.').map(str::parse::<u32>);
    match (parts.next(), parts.next()) {
        (Some(Ok(a)), Some(Ok(b))) => (a, b) < (major, minor),
        _ => false,
    }
}

/// Judges the node reports. Pure, so every rule is unit-tested without a server.
fn judge(nodes: &[NodeReport], drift: Duration, ttl: Duration, timeout: Duration) -> Vec<Finding> {
    let too_slow = |n: &NodeReport| !n.round_trip.is_zero() && n.round_trip * 2 > timeout;
    // A slow round trip refuses locking only on a majority of the nodes: then no quorum
    // answers in time. One slow node is what Redlock rides out (a node just resumed
    // from a pause answers the start-up probe late, once), so it is a warning.
    let slow_severity = if nodes.iter().filter(|n| too_slow(n)).count() * 2 > nodes.len() {
        Severity::Error
    } else {
        Severity::Warning
    };
    let mut out = Vec::new();
    let mut push = |severity, node: Option<&str>, message: String| {
        out.push(Finding {
            severity,
            node: node.map(str::to_string),
            message,
            about_node_error: false,
        });
    };
    let redis: Vec<&NodeReport> = nodes.iter().filter(|n| n.quorum).collect();

    for n in nodes {
        let node = Some(n.node.as_str());
        if let Some(e) = &n.error {
            let severity = if e.is_permanent() {
                Severity::Error
            } else {
                Severity::Warning
            };
            push(severity, node, format!("{NOT_CHECKED}{}", e.message()));
            continue;
        }
        if n.role.as_deref() == Some("slave") {
            push(
                Severity::Error,
                node,
                "is a replica: its writes are refused or lost, and a release there can \
                 silently do nothing; list independent primaries only"
                    .into(),
            );
        }
        if n.cluster == Some(true) {
            // Only a redis+cluster:// store gets this far: a cluster node named by a
            // standalone URL is refused when connecting.
            push(
                Severity::Note,
                node,
                "is a Redis Cluster, which counts as one Redlock node: a failover to a \
                 replica can lose a lock (replication is asynchronous), so for Redlock's \
                 guarantee through failures list several independent stores"
                    .into(),
            );
        }
        if let Some(policy) = &n.maxmemory_policy
            && (policy.starts_with("volatile-") || policy.starts_with("allkeys-"))
        {
            push(
                Severity::Warning,
                node,
                format!(
                    "maxmemory-policy is {policy}: under memory pressure the node may evict \
                     a lock key (they all have a TTL) before it expires, letting a second \
                     holder in; use noeviction on lock nodes"
                ),
            );
        }
        if let Some(v) = &n.version
            && redis_version_below(v, (6, 2))
        {
            push(
                Severity::Error,
                node,
                format!(
                    "runs Redis {v}: fencelock writes fencing counters with SET … PXAT,                      which needs Redis 6.2 or later (every acquire would fail)"
                ),
            );
        }
        if n.persistence == Some(false) {
            push(
                Severity::Note,
                node,
                format!(
                    "has no persistence (no AOF, no RDB): after a crash it comes back empty; \
                     keep it down for at least the longest TTL in use (delayed restart, \
                     here {ttl:?} or more) before it rejoins, or enable appendonly with \
                     appendfsync always"
                ),
            );
        }
        if let Some(missing) = &n.missing_permissions
            && !missing.is_empty()
        {
            push(
                Severity::Error,
                node,
                format!(
                    "user {} may not run {}; see the minimum ACL in docs/security.md",
                    n.user.as_deref().unwrap_or("?"),
                    missing.join(", ")
                ),
            );
        }
        if too_slow(n) {
            push(
                slow_severity,
                node,
                format!(
                    "one round trip takes {:?}, too slow for the per-node timeout of {:?} \
                     that a TTL of {ttl:?} allows; use a longer TTL or a closer node",
                    n.round_trip, timeout
                ),
            );
        }
    }

    // The same server twice counts twice toward the quorum.
    let mut seen: HashMap<&str, &str> = HashMap::new();
    for n in &redis {
        if let Some(id) = n.run_id.as_deref() {
            if let Some(first) = seen.get(id) {
                push(
                    Severity::Error,
                    Some(&n.node),
                    format!(
                        "is the same server as {first} (same run_id): it would count twice \
                         toward the quorum; list each server once"
                    ),
                );
            } else {
                seen.insert(id, &n.node);
            }
        }
    }

    if redis.len() > 1 && redis.len().is_multiple_of(2) {
        push(
            Severity::Warning,
            None,
            format!(
                "{} nodes: an even number tolerates no more failures than {} (a \
                 majority is {}); use an odd number",
                redis.len(),
                redis.len() - 1,
                redis.len() / 2 + 1
            ),
        );
    }

    let offsets: Vec<(&str, i64)> = redis
        .iter()
        .filter_map(|n| Some((n.node.as_str(), n.clock_offset_ms?)))
        .collect();
    if let (Some(lo), Some(hi)) = (
        offsets.iter().min_by_key(|(_, o)| *o),
        offsets.iter().max_by_key(|(_, o)| *o),
    ) {
        let spread = hi.1.saturating_sub(lo.1).unsigned_abs();
        if offsets.len() > 1 && Duration::from_millis(spread) > drift {
            push(
                Severity::Warning,
                None,
                format!(
                    "node clocks are {spread} ms apart ({} vs {}), more than the drift \
                     budget of {} ms for a {ttl:?} TTL; keep the nodes' clocks in sync \
                     (NTP) or raise the drift factor",
                    lo.0,
                    hi.0,
                    drift.as_millis()
                ),
            );
        }
    }
    for f in &mut out {
        f.about_node_error = f.message.starts_with(NOT_CHECKED);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::NodeErrorKind;

    fn node(name: &str) -> NodeReport {
        NodeReport {
            role: Some("master".into()),
            run_id: Some(format!("id-{name}")),
            maxmemory_policy: Some("noeviction".into()),
            persistence: Some(true),
            clock_offset_ms: Some(0),
            round_trip: Duration::from_millis(1),
            quorum: true,
            ..NodeReport::new(&format!("redis://{name}:6379"))
        }
    }

    fn judged(nodes: &[NodeReport]) -> Vec<Finding> {
        judge(
            nodes,
            drift_budget(Duration::from_secs(30), 0.01),
            Duration::from_secs(30),
            Duration::from_millis(250),
        )
    }

    #[test]
    fn healthy_set_has_no_findings() {
        assert!(judged(&[node("a"), node("b"), node("c")]).is_empty());
    }

    #[test]
    fn each_rule_fires() {
        let mut replica = node("r");
        replica.role = Some("slave".into());
        let mut evicting = node("e");
        evicting.maxmemory_policy = Some("volatile-lru".into());
        let mut twin = node("t");
        twin.run_id = Some("id-a".into());
        let mut volatile = node("v");
        volatile.persistence = Some(false);
        let mut skewed = node("s");
        skewed.clock_offset_ms = Some(5_000);
        let mut slow = node("slow");
        slow.round_trip = Duration::from_millis(200);
        let mut denied = node("d");
        denied.missing_permissions = Some(vec!["PUBLISH".into()]);
        // One node that is also too old (the count stays odd).
        denied.version = Some("6.0.16".into());
        let mut down = node("x");
        down.error = Some(NodeError::new(
            NodeErrorKind::Io,
            "redis://x:6379",
            "refused",
        ));
        let f = judged(&[
            node("a"),
            replica,
            evicting,
            twin,
            volatile,
            skewed,
            slow,
            denied,
            down,
        ]);
        let has = |sev: Severity, needle: &str| {
            f.iter()
                .any(|x| x.severity == sev && x.to_string().contains(needle))
        };
        assert!(has(Severity::Error, "is a replica"), "{f:#?}");
        assert!(has(Severity::Warning, "volatile-lru"), "{f:#?}");
        assert!(
            has(Severity::Error, "same server as redis://a:6379"),
            "{f:#?}"
        );
        assert!(has(Severity::Note, "delayed restart"), "{f:#?}");
        assert!(has(Severity::Warning, "clocks are 5000 ms apart"), "{f:#?}");
        // One slow node of nine: the quorum does without it.
        assert!(has(Severity::Warning, "round trip"), "{f:#?}");
        assert!(has(Severity::Error, "may not run PUBLISH"), "{f:#?}");
        assert!(has(Severity::Error, "runs Redis 6.0.16"), "{f:#?}");
        assert!(has(Severity::Warning, "could not be checked"), "{f:#?}");
        assert!(!has(Severity::Warning, "even number"), "9 nodes: {f:#?}");
    }

    /// A round trip too slow for the per-node timeout refuses locking on a majority of
    /// the nodes only. It used to be an error on any one node: a `fencelock run` whose
    /// start-up probe met a node just resumed from a pause (answering once, late) was
    /// refused although the two other nodes were fine (the rolling-upgrade test, 3
    /// nodes, failed so in CI).
    #[test]
    fn a_slow_round_trip_refuses_only_on_a_majority() {
        let timeout = Duration::from_millis(250);
        let slow = |name: &str| NodeReport {
            round_trip: Duration::from_millis(290),
            ..node(name)
        };
        let severity_of = |nodes: &[NodeReport]| {
            judge(
                nodes,
                Duration::from_millis(1),
                Duration::from_secs(30),
                timeout,
            )
            .into_iter()
            .find(|f| f.to_string().contains("round trip"))
            .map(|f| f.severity)
        };
        assert_eq!(
            severity_of(&[node("a"), slow("b"), node("c")]),
            Some(Severity::Warning)
        );
        assert_eq!(
            severity_of(&[slow("a"), slow("b"), node("c")]),
            Some(Severity::Error)
        );
        assert_eq!(severity_of(&[slow("a")]), Some(Severity::Error));
    }

    #[test]
    fn redis_versions_compare_by_major_and_minor() {
        assert!(redis_version_below("6.0.16", (6, 2)));
        assert!(redis_version_below("5.0.0", (6, 2)));
        assert!(!redis_version_below("6.2.0", (6, 2)));
        assert!(!redis_version_below("7.0.15", (6, 2)));
        assert!(!redis_version_below("255.255.255", (6, 2)));
        assert!(!redis_version_below("unknown", (6, 2)));
    }

    #[test]
    fn even_count_warns() {
        let f = judged(&[node("a"), node("b")]);
        assert!(
            f.iter()
                .any(|x| x.severity == Severity::Warning && x.message.contains("even")),
            "{f:#?}"
        );
    }
}
