//! What a worker tells the driver: one JSON object per line on its stdout.
//!
//! Timestamps are nanoseconds of `CLOCK_MONOTONIC`, which every process on one host
//! shares, so the driver can compare one worker's release with another's grant
//! (`std::time::Instant` cannot be sent to another process). It never jumps with the
//! wall clock.

use std::io::Write;

use nix::time::{ClockId, clock_gettime};
use serde::{Deserialize, Serialize};

/// One line of a worker's stdout.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub(crate) enum Event {
    /// The worker is set up (ledger open, stores open) and waits for a line on stdin
    /// to start, so that all workers of a round start together.
    Ready,
    /// The stalling worker holds the lease and has read the balances; it now waits for
    /// a line on stdin before it writes. The driver stops it meanwhile.
    Stalled {
        /// The lease's fencing token.
        token: u64,
        /// When the lease was granted.
        granted_ns: u64,
        /// The accounts it read.
        from: u32,
        /// The accounts it read.
        to: u32,
    },
    /// One transfer, done or not, after its lease (if any) was released.
    Transfer(Transfer),
}

/// One transfer as a worker made it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Transfer {
    /// The worker that made it.
    pub(crate) worker: u32,
    /// The account debited.
    pub(crate) from: u32,
    /// The account credited.
    pub(crate) to: u32,
    /// How much moved (when applied).
    pub(crate) amount: i64,
    /// The lease's fencing token (none without a lock).
    pub(crate) token: Option<u64>,
    /// When the worker asked for the lock (or started, without one).
    pub(crate) requested_ns: u64,
    /// When the lock was granted (the start, without one).
    pub(crate) granted_ns: u64,
    /// When the work was done and the worker let go: the start of the release.
    pub(crate) releasing_ns: u64,
    /// Until when the lock was ours: the start of the release, or for a lease that
    /// expired before it was released, its grant plus its TTL.
    pub(crate) held_until_ns: u64,
    /// What the ledger did with the transfer.
    pub(crate) outcome: Outcome,
    /// The stalled worker only: what the ledger did with its next read, after the late
    /// write (with the same, by then stale, token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) next_read: Option<Access>,
    /// Whether the release found the lock still ours (`false` for a lease that had
    /// expired, and without a lock). Only real releases count as hand-offs.
    pub(crate) released: bool,
}

/// What became of a transfer's write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Outcome {
    /// Both balances were written.
    Applied,
    /// The fenced ledger refused the write: a higher token had read or written an
    /// account.
    Refused,
    /// The fenced ledger refused the read: nothing was computed, nothing written.
    ReadRefused,
    /// Not attempted: the account to debit was empty.
    Declined,
}

/// Whether the ledger let a read in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Access {
    /// It answered.
    Accepted,
    /// The fenced ledger refused it: a higher token had read or written an account.
    Refused,
}

/// Now, on the host's monotonic clock, in nanoseconds.
pub(crate) fn now_ns() -> u64 {
    // CLOCK_MONOTONIC cannot fail on Linux with a valid clock id; 0 would only make
    // one latency sample wrong, never crash the demo.
    clock_gettime(ClockId::CLOCK_MONOTONIC).map_or(0, |t| {
        u64::try_from(t.tv_sec()).unwrap_or(0) * 1_000_000_000
            + u64::try_from(t.tv_nsec()).unwrap_or(0)
    })
}

/// Writes `event` as one line on stdout and flushes, so the driver sees it at once
/// (the stall is staged on these lines).
pub(crate) fn emit(event: &Event) -> std::io::Result<()> {
    let line = serde_json::to_string(event).map_err(std::io::Error::other)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()
}

/// Reads one line of a worker's stdout.
pub(crate) fn parse(line: &str) -> Result<Event, String> {
    serde_json::from_str(line).map_err(|e| format!("{e} in {line:?}"))
}
