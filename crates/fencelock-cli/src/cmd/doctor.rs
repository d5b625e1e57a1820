//! `fencelock doctor`: is this set of stores fit for locking?
//!
//! Runs the library's start-up checks ([`fencelock::Locker::diagnose`]) and prints, per
//! node, what they saw — version, role, persistence, eviction policy, clock offset,
//! round trip, ACL user and missing permissions — then the findings, then takes a
//! *probe lock* (acquire, extend, release of [`fencelock::PROBE_KEY`] under `--prefix`)
//! so that every permission the scripts need is exercised for real, even for a user that
//! may not run `ACL DRYRUN`; then the library forgets the probe key, so that a health
//! check leaves nothing behind (no key, counter or row for `status` to list).
//!
//! Exit status: 0 when all is well (notes allowed), 1 when anything is wrong (an error
//! or a warning, or a node that could not be checked), and the usual codes when the
//! stores cannot even be opened (2 for a bad URL, 78 for an unreadable password file).

use std::fmt::Write as _;
use std::time::Duration;

use fencelock::{Locker, NodeReport, Report, Severity};

use crate::cli::Global;
use crate::exit::Outcome;

/// Arguments of `fencelock doctor`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The TTL the application uses (30s, 500ms, or seconds): checked against each
    /// node's round trip and used for the clock-drift budget.
    #[arg(long, default_value = "30s", value_parser = crate::duration::parse_ttl)]
    pub ttl: Duration,

    /// Fail on notes too (no persistence …), not only on warnings and errors.
    #[arg(long)]
    pub strict: bool,

    /// Do not take the probe lock (a read-only check).
    #[arg(long)]
    pub no_probe: bool,
}

/// Runs the doctor over the global stores and prints the report on stdout.
///
/// # Errors
///
/// A [`crate::exit::Failure`] when the stores cannot be opened (bad URL, password
/// file).
pub async fn run(args: Args, global: &Global) -> Outcome {
    let locker = crate::stores::builder(global)?.build()?;
    tracing::info!("stores: {}", locker.stores().join(", "));
    let report = locker.diagnose(args.ttl).await;
    let mut out = String::new();
    for node in &report.nodes {
        describe(&mut out, node);
    }
    let probe = if args.no_probe {
        None
    } else {
        Some(probe_lock(&locker, args.ttl).await)
    };
    let ok = summarize(&mut out, &report, probe.as_ref(), args.strict);
    crate::output::emit(&out)?;
    Ok(if ok { 0 } else { 1 })
}

/// One node's block of the report.
fn describe(out: &mut String, n: &NodeReport) {
    let _ = writeln!(out, "node {}", n.node);
    let line = |out: &mut String, label: &str, value: String| {
        let _ = writeln!(out, "  {label:<14}{value}");
    };
    if let Some(e) = &n.error {
        line(out, "status", format!("NOT CHECKED: {e}"));
        out.push('\n');
        return;
    }
    let unknown = || "unknown".to_string();
    if n.version.is_none() && n.round_trip.is_zero() {
        line(
            out,
            "kind",
            "no server to check (memory or SQLite store)".into(),
        );
        out.push('\n');
        return;
    }
    line(out, "version", n.version.clone().unwrap_or_else(unknown));
    line(
        out,
        "role",
        n.role.as_deref().map_or_else(unknown, |r| {
            if r == "slave" {
                "replica".into()
            } else {
                "primary".into()
            }
        }),
    );
    line(
        out,
        "persistence",
        match n.persistence {
            Some(true) => "on".into(),
            Some(false) => "off".into(),
            None => unknown(),
        },
    );
    line(
        out,
        "eviction",
        n.maxmemory_policy.clone().unwrap_or_else(unknown),
    );
    if n.cluster == Some(true) {
        line(out, "mode", "cluster".into());
    }
    line(
        out,
        "clock offset",
        n.clock_offset_ms
            .map_or_else(unknown, |o| format!("{o:+} ms")),
    );
    line(
        out,
        "round trip",
        format!("{:.2} ms", n.round_trip.as_secs_f64() * 1000.0),
    );
    line(out, "user", n.user.clone().unwrap_or_else(unknown));
    line(
        out,
        "permissions",
        match &n.missing_permissions {
            Some(m) if m.is_empty() => "all needed commands granted (ACL DRYRUN)".into(),
            Some(m) => format!("MISSING {}", m.join(", ")),
            None => "not listed (see the probe lock below)".into(),
        },
    );
    for note in &n.notes {
        line(out, "remark", note.clone());
    }
    out.push('\n');
}

/// What the probe lock found: its token and whether every store forgot it
/// afterwards, or the error's text.
type ProbeResult = Result<(String, bool), String>;

/// Acquires, extends and releases the probe key ([`fencelock::PROBE_KEY`], under the
/// prefix) — every script, every permission, the whole Redlock path — and then has the
/// library forget it, so the check leaves no key, counter or row behind
/// ([`Locker::forget_probe`]).
async fn probe_lock(locker: &Locker, ttl: Duration) -> ProbeResult {
    let key = fencelock::PROBE_KEY;
    let ttl = ttl.clamp(
        fencelock::MIN_TTL.max(Duration::from_secs(1)),
        Duration::from_secs(30),
    );
    // The default store is shared by every user of the host: another doctor may be
    // probing right now, so wait for it (a few seconds at most) rather than fail.
    let options = fencelock::AcquireOptions::default().max_wait(Duration::from_secs(5));
    let lease = locker
        .acquire_with(key, ttl, &options)
        .await
        .map_err(|e| format!("acquire: {e}"))?;
    let token = lease.token().to_string();
    if let Err(e) = lease.extend(ttl).await {
        let _ = lease.release().await;
        return Err(format!("extend: {e}"));
    }
    lease.release().await.map_err(|e| format!("release: {e}"))?;
    // `false`: another doctor holds the probe right now somewhere, and forgets it
    // after its own probe.
    let forgotten = locker
        .forget_probe()
        .await
        .map_err(|e| format!("forget: {e}"))?;
    Ok((token, forgotten))
}

/// The findings and the verdict; returns whether all is well.
fn summarize(out: &mut String, report: &Report, probe: Option<&ProbeResult>, strict: bool) -> bool {
    if report.findings.is_empty() {
        out.push_str("findings: none\n");
    } else {
        out.push_str("findings:\n");
        for f in &report.findings {
            let _ = writeln!(out, "  {f}");
        }
    }
    let probe_ok = match probe {
        None => {
            out.push_str("probe lock: skipped (--no-probe)\n");
            true
        }
        Some(Ok((token, forgotten))) => {
            let _ = writeln!(
                out,
                "probe lock: ok (acquired with token {token}, extended, released, {})",
                if *forgotten {
                    "forgotten"
                } else {
                    "kept where another probe holds it"
                }
            );
            true
        }
        Some(Err(e)) => {
            let _ = writeln!(out, "probe lock: FAILED: {e}");
            false
        }
    };
    let count = |s| report.of(s).count();
    let (errors, warnings, notes) = (
        count(Severity::Error),
        count(Severity::Warning),
        count(Severity::Note),
    );
    let unreachable = report.nodes.iter().filter(|n| n.error.is_some()).count();
    let ok =
        probe_ok && errors == 0 && warnings == 0 && unreachable == 0 && (!strict || notes == 0);
    let _ = writeln!(
        out,
        "verdict: {} ({errors} errors, {warnings} warnings, {notes} notes, {unreachable} nodes not checked)",
        if ok { "healthy" } else { "NOT HEALTHY" }
    );
    ok
}
