//! `run --once-per SLOT`: run a scheduled job at most once per slot, across hosts.
//!
//! The record of a completed slot is kept in the stores as an ordinary lock key
//! beside the job's own, `KEY:once:SLOT`, taken when the command succeeds and never
//! released: it lives until a little after the slot ends, then expires. Every run
//! looks for it before taking the job's lock and again after (a host that waited
//! while another ran the job must not run it a second time), and skips — exit
//! [`exit::DONE`], nothing on stderr unless `-v` — when it is there. A failed run
//! records nothing, so the next host (or the next cron tick) tries again.
//!
//! A slot is either periodic — a duration such as `1d` or `1h`: the slots are that
//! long, aligned on the Unix epoch, so in UTC (`1d` slots are UTC days) — or an
//! explicit name given by the caller (`--once-per 2026-W49`), recorded for the
//! longest TTL a lock may have (7 days).
//!
//! Periodic slots are computed from the *stores'* clock, not this host's: two hosts
//! whose clocks disagree around midnight must still agree which day it is. The
//! library does not offer the stores' time as such; `Locker::diagnose` measures each
//! node's clock offset (Redis `TIME`), and the median of a majority of nodes is taken.
//! An SQLite store is on this host, so its clock is this host's.
//!
//! What the record is worth is what a lock is worth: on Redis it is held by a
//! majority of nodes; a node restarted empty (no persistence) forgets it, and if that
//! leaves fewer than a majority, another host can run the job again in the same slot.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fencelock::Locker;
use tracing::instrument::WithSubscriber;

use crate::duration::{self, short};
use crate::exit::{self, Failure};

/// The longest a record may live (the longest TTL of a lock).
const MAX_RECORD: Duration = fencelock::DEFAULT_MAX_TTL;

/// How the slot was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Slot {
    /// Periodic slots of this length, aligned on the Unix epoch (UTC).
    Every(Duration),
    /// A slot named by the caller.
    Named(String),
}

/// Parses `--once-per` for clap: a duration (at least a second, at most 7 days) is a
/// periodic slot; any other printable text names the slot.
///
/// # Errors
///
/// A periodic slot outside 1s..=7d, an empty name, a name with control characters.
pub fn parse(text: &str) -> Result<Slot, String> {
    if let Ok(d) = duration::parse_ttl(text) {
        if d < Duration::from_secs(1) || d > MAX_RECORD {
            return Err("a periodic slot is between 1s and 7 days long".into());
        }
        return Ok(Slot::Every(d));
    }
    if text.trim().is_empty() {
        return Err("the slot is empty; give a duration (1d, 1h) or a name".into());
    }
    crate::cli::parse_key(text).map(Slot::Named)
}

/// The record's key for `key` in the current slot, and how long the record lives.
#[derive(Debug, Clone)]
pub struct Record {
    /// `KEY:once:SLOT`.
    pub key: String,
    /// Until a little after the end of the slot.
    pub ttl: Duration,
}

/// Which slot it is now, by the stores' clock, and its record.
///
/// # Errors
///
/// [`exit::UNAVAILABLE`] when fewer than a majority of Redis nodes told their time.
pub async fn record(locker: &Locker, key: &str, slot: &Slot) -> Result<Record, Failure> {
    match slot {
        Slot::Named(name) => Ok(Record {
            key: format!("{key}:once:{name}"),
            ttl: MAX_RECORD,
        }),
        Slot::Every(length) => {
            let now = store_now(locker).await?;
            let length_ms = duration::millis(*length).max(1);
            let start_ms = now - now % length_ms;
            let end_ms = start_ms + length_ms;
            // A little longer than the slot: up to a tenth of it, at most an hour, so
            // that a node whose clock is a bit behind still sees it to the end.
            let margin = (*length / 10).min(Duration::from_secs(3600));
            let ttl = (Duration::from_millis(end_ms - now) + margin).min(MAX_RECORD);
            let start = UNIX_EPOCH + Duration::from_millis(start_ms);
            let name = if length_ms.is_multiple_of(86_400_000) {
                humantime::format_rfc3339_seconds(start).to_string()[..10].to_string()
            } else {
                humantime::format_rfc3339_seconds(start).to_string()
            };
            Ok(Record {
                key: format!("{key}:once:{}:{name}", short(*length)),
                ttl,
            })
        }
    }
}

/// Whether the record is there (held by a majority of stores).
///
/// # Errors
///
/// When the stores cannot tell (69, 78).
pub async fn done(locker: &Locker, record: &Record) -> Result<bool, Failure> {
    let statuses = locker.status(record.key.as_str()).await?;
    if let Some(failure) = crate::stores::unanswered(&statuses) {
        return Err(failure);
    }
    Ok(statuses.first().is_some_and(fencelock::KeyStatus::is_held))
}

/// Writes the record: a lock on its key that is never released and expires after
/// the slot.
pub async fn write(locker: &Locker, record: &Record) {
    match locker.try_acquire(record.key.as_str(), record.ttl).await {
        Ok(lease) => {
            tracing::info!(
                "recorded {:?} for {} (--once-per)",
                record.key,
                short(record.ttl)
            );
            // Dropping a lease releases it: the record must outlive the process.
            std::mem::forget(lease);
        }
        Err(e) if e.is_contended() => {}
        Err(e) => tracing::warn!(
            "the job succeeded but its --once-per record {:?} could not be written ({e}); \
             another host may run it again in this slot",
            record.key
        ),
    }
}

/// The skip: exit [`exit::DONE`], said only at `-v`.
pub fn skipped(record: &Record) -> Failure {
    tracing::info!(
        "{:?} is recorded: already done in this slot, skipping",
        record.key
    );
    Failure::quiet(exit::DONE)
}

/// The stores' time now, in milliseconds since the Unix epoch: this host's clock
/// corrected by the median offset of the nodes that told theirs (a majority is
/// needed); an SQLite store's clock is this host's.
async fn store_now(locker: &Locker) -> Result<u64, Failure> {
    let local = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(duration::millis)
        .unwrap_or(0);
    if !locker.stores().iter().any(|s| s.starts_with("redis")) {
        return Ok(local);
    }
    // diagnose() reports its findings (persistence, eviction …) as log lines: they
    // are doctor's business, not this run's.
    let report = locker
        .diagnose(Duration::from_secs(30))
        .with_subscriber(tracing::subscriber::NoSubscriber::default())
        .await;
    let mut offsets: Vec<i64> = report
        .nodes
        .iter()
        .filter_map(|n| n.clock_offset_ms)
        .collect();
    if offsets.len() <= report.nodes.len() / 2 {
        return Err(Failure::new(
            exit::UNAVAILABLE,
            format!(
                "--once-per needs the stores' clock, and only {} of {} stores told their time",
                offsets.len(),
                report.nodes.len()
            ),
        ));
    }
    offsets.sort_unstable();
    let median = offsets[offsets.len() / 2];
    Ok(local.saturating_add_signed(median))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots() {
        assert_eq!(parse("1d"), Ok(Slot::Every(Duration::from_secs(86_400))));
        assert_eq!(parse("2026-W49"), Ok(Slot::Named("2026-W49".into())));
        assert!(parse("500ms").is_err());
        assert!(parse("8d").is_err());
        assert!(parse("").is_err());
        assert!(parse("a\nb").is_err());
    }
}
