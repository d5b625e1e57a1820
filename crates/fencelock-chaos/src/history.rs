//! What happened: the events a run records, and where they are kept.
//!
//! Three sources, each in its own order:
//! - every worker appends [`WorkerEvent`]s to its own JSON-lines file, one line per
//!   event, flushed at once, so a worker paused or killed mid-run loses nothing it had
//!   finished;
//! - the protected resource logs every read and write *in its own order* (a sequence
//!   number taken inside the same Lua script that applies the operation) as
//!   [`ResourceOp`]s — the only order that matters for "did a stale write land";
//! - the controller records every fault it injected as [`FaultEvent`]s.
//!
//! All times are [`crate::clock::mono_ns`], comparable across processes.

use std::fs;
use std::io::{BufRead, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

/// A lease's identity in the history: unique across workers of a run.
pub type LeaseId = u64;

/// Builds a [`LeaseId`] from a worker index and that worker's lease counter.
pub fn lease_id(worker: u32, seq: u32) -> LeaseId {
    (u64::from(worker) << 32) | u64::from(seq)
}

/// The worker a [`LeaseId`] belongs to.
pub fn lease_worker(id: LeaseId) -> u32 {
    u32::try_from(id >> 32).unwrap_or(u32::MAX)
}

/// One event of one worker.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "ev", rename_all = "snake_case")]
pub enum WorkerEvent {
    /// The worker started (its pid, for the client-pause fault).
    Started {
        /// Worker index.
        worker: u32,
        /// Process id.
        pid: u32,
    },
    /// An acquire returned a lease.
    Grant {
        /// Which lease.
        lease: LeaseId,
        /// The lock key.
        key: String,
        /// Its fencing token.
        token: u64,
        /// The random value stored in the lock key (to tell its keys from strays).
        #[serde(default)]
        value: String,
        /// When `acquire` was called.
        t_req: u64,
        /// When it returned.
        t_grant: u64,
        /// `Lease::valid_until()` at grant: the end of the claimed validity.
        valid_until: u64,
        /// The wait the acquire was given, ms.
        max_wait_ms: u64,
        /// The lease renews itself and the worker stops at `lost()`: it claims the lock
        /// from its grant until it is released or lost, not until `valid_until`.
        #[serde(default)]
        renewing: bool,
    },
    /// A renewing lease's `lost()` fired while the worker held it: the job under it
    /// was stopped.
    Lost {
        /// Which lease.
        lease: LeaseId,
        /// When.
        t: u64,
        /// The error the lease reported.
        message: String,
    },
    /// After an extend, the worker compared the time its lease claims to have left with
    /// how long the keys still live on a majority of nodes (read first, from every node).
    ClaimChecked {
        /// Which lease.
        lease: LeaseId,
        /// When the claim was read.
        t: u64,
        /// What the lease claimed to have left, µs.
        claimed_us: u64,
        /// How long its keys lived on a majority when read, µs (PTTL: whole ms).
        majority_us: u64,
        /// The extend's TTL, ms.
        extend_ms: u64,
    },
    /// An acquire returned an error.
    AcquireFailed {
        /// Worker index.
        worker: u32,
        /// When `acquire` was called.
        t_req: u64,
        /// When it returned.
        t_end: u64,
        /// The wait the acquire was given, ms.
        max_wait_ms: u64,
        /// `ErrorKind` as text.
        kind: String,
        /// The error message.
        message: String,
    },
    /// The worker stopped claiming the lease (just before calling `release`).
    Releasing {
        /// Which lease.
        lease: LeaseId,
        /// When.
        t: u64,
    },
    /// What `release` said.
    Released {
        /// Which lease.
        lease: LeaseId,
        /// When it returned.
        t: u64,
        /// `ReleaseOutcome` or the error, as text.
        outcome: String,
    },
    /// The worker's own process did not run for a while (measured by a 20 ms ticker
    /// that woke late): a real pause caused by the machine, not by a fault we injected.
    /// A holder stalled past its TTL does what a SIGSTOPped one does.
    Stall {
        /// Worker index.
        worker: u32,
        /// When the ticker should have run.
        from: u64,
        /// When it did.
        to: u64,
    },
    /// A call to the resource failed (the resource node is fault-free, so this is a
    /// harness problem and the checker reports it).
    ResourceError {
        /// Which lease.
        lease: LeaseId,
        /// The error.
        message: String,
    },
}

/// Which copy of the protected state an operation touched.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Res {
    /// Fenced: refuses (reads and writes) with a token lower than the highest seen.
    F,
    /// Unfenced: trusts the lock alone. The same operations, the same tokens, no check.
    U,
}

impl std::fmt::Display for Res {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Res::F => "fenced",
            Res::U => "unfenced",
        })
    }
}

/// One operation as the resource saw it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ResourceOp {
    /// The resource's own order (one counter for both copies).
    pub seq: u64,
    /// Which copy.
    pub res: Res,
    /// `"read"` or `"write"`; a semaphore's `"enter"`, `"leave"`, or `"evict"` (the
    /// fenced copy let a newer token of the permit in, and fenced this holder off).
    pub op: String,
    /// The lease that sent it.
    pub lease: LeaseId,
    /// Its token.
    pub token: u64,
    /// Whether the resource accepted it (always true on the unfenced copy).
    pub ok: bool,
    /// The counter after the operation.
    pub counter: i64,
    /// Ledger account A after the operation.
    pub a: i64,
    /// Ledger account B after the operation.
    pub b: i64,
    /// A semaphore's `enter` / `leave` / `evict`: the permit key (`counter` is then the
    /// number of holders inside the copy after the operation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permit: Option<String>,
}

/// One step of the fault schedule, as injected.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FaultEvent {
    /// When the step completed.
    pub t: u64,
    /// What was done, e.g. `"sigstop node 1"`.
    pub what: String,
    /// For a client pause: the worker paused, and until when (filled by the controller).
    pub paused_worker: Option<u32>,
    /// End of the client pause.
    pub until: Option<u64>,
    /// For a probe: what each lock node held for the key (value, PTTL ms).
    #[serde(default)]
    pub probe: Vec<NodeProbe>,
}

/// What one lock node held for the key at a probe.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NodeProbe {
    /// The node.
    pub node: usize,
    /// The key's value (None: absent, or the node did not answer).
    pub value: Option<String>,
    /// Its PTTL in ms (negative: absent).
    pub pttl_ms: i64,
}

/// Appends events to a JSON-lines file, one `write` per line.
#[derive(Debug)]
pub struct HistoryWriter {
    file: fs::File,
}

impl HistoryWriter {
    /// Creates (truncates) the file.
    ///
    /// # Errors
    ///
    /// When the file cannot be created.
    pub fn create(path: &Path) -> std::io::Result<Self> {
        Ok(HistoryWriter {
            file: fs::File::create(path)?,
        })
    }

    /// Appends one event. A line is written with one `write` call, so a worker stopped
    /// by SIGSTOP or SIGKILL leaves whole lines only.
    pub fn record(&mut self, ev: &WorkerEvent) {
        let mut line = serde_json::to_string(ev).unwrap_or_default();
        line.push('\n');
        // A history that cannot be written makes the run meaningless: say so loudly.
        if let Err(e) = self.file.write_all(line.as_bytes()) {
            eprintln!("fencelock-chaos worker: cannot write history: {e}");
            std::process::exit(3);
        }
    }
}

/// Reads a worker's JSON-lines file. A torn last line (a worker killed mid-write) is
/// skipped.
///
/// # Errors
///
/// When the file cannot be read.
pub fn read_worker_events(path: &Path) -> std::io::Result<Vec<WorkerEvent>> {
    let f = fs::File::open(path)?;
    let mut out = Vec::new();
    for line in std::io::BufReader::new(f).lines() {
        let line = line?;
        if let Ok(ev) = serde_json::from_str(&line) {
            out.push(ev);
        }
    }
    Ok(out)
}

/// Everything a run recorded, as the checker takes it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct History {
    /// All workers' events.
    pub workers: Vec<WorkerEvent>,
    /// The resource's log, by `seq`.
    pub resource: Vec<ResourceOp>,
    /// The injected faults.
    pub faults: Vec<FaultEvent>,
    /// When the last fault was healed (None: no faults).
    pub healed_at: Option<u64>,
    /// When the run started (times in reports are relative to this).
    pub start: u64,
    /// When the workers were told to stop.
    pub end: u64,
    /// The initial ledger total per copy.
    pub ledger_total: i64,
    /// A semaphore run: its number of permits (at most this many may be inside the
    /// resource at once).
    #[serde(default)]
    pub permits: Option<u32>,
}

impl History {
    /// Saves the history as one JSON file (for a counter-example to be re-checked).
    ///
    /// # Errors
    ///
    /// When the file cannot be written.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let json = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        fs::write(path, json)
    }

    /// Loads a saved history.
    ///
    /// # Errors
    ///
    /// When the file cannot be read or parsed.
    pub fn load(path: &Path) -> std::io::Result<Self> {
        let bytes = fs::read(path)?;
        serde_json::from_slice(&bytes).map_err(std::io::Error::other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_ids_carry_the_worker() {
        let id = lease_id(7, 42);
        assert_eq!(lease_worker(id), 7);
        assert_ne!(lease_id(7, 42), lease_id(8, 42));
    }

    #[test]
    fn torn_lines_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("w.jsonl");
        let mut w = HistoryWriter::create(&p).unwrap();
        w.record(&WorkerEvent::Started { worker: 1, pid: 9 });
        std::fs::OpenOptions::new()
            .append(true)
            .open(&p)
            .unwrap()
            .write_all(b"{\"ev\":\"gra")
            .unwrap();
        let evs = read_worker_events(&p).unwrap();
        assert_eq!(evs, vec![WorkerEvent::Started { worker: 1, pid: 9 }]);
    }
}
