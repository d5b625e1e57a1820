//! The worker: one process that takes the lock over and over and does a
//! read-modify-write on the resource under each lease.
//!
//! Workers are processes, not tasks, because the faults act on processes: SIGSTOP
//! freezes a whole process (a GC pause, a swapped-out VM), and a lease that lives in
//! the same process as the fault injector would share its fate. The binary re-invokes
//! itself with `worker <config.json>`.
//!
//! The worker never checks `lease.is_valid()` before writing. A careful holder would,
//! but a pause can land between that check and the write, so the check only narrows
//! the window; leaving it out makes a pause in the think time stand for a pause in
//! that window, which is what the client-pause fault wants to show.

use std::path::PathBuf;
use std::time::Duration;

use fencelock::{AcquireOptions, Locker};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::clock::{instant_to_mono_ns, mono_ns};
use crate::history::{HistoryWriter, WorkerEvent, lease_id};
use crate::resource::ResourceClient;

/// A ticker that wakes this much late saw a stall.
const STALL_NS: u64 = 200_000_000;

/// What a worker does, passed as a JSON file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerConfig {
    /// Worker index.
    pub worker: u32,
    /// The lock's store URLs (Redlock quorum).
    pub stores: Vec<String>,
    /// The lock key.
    pub key: String,
    /// Lease TTL, ms.
    pub ttl_ms: u64,
    /// Think time between read and write, ms (uniform in this range).
    pub hold_ms: (u64, u64),
    /// Pause between a release and the next acquire, ms.
    pub idle_ms: u64,
    /// The acquire's wait, ms.
    pub max_wait_ms: u64,
    /// Per-node request timeout, ms.
    pub request_timeout_ms: u64,
    /// Retry delay (polling interval without notices), ms.
    pub retry_delay_ms: u64,
    /// Whether waiters use release notices.
    pub notifications: bool,
    /// The resource node's URL.
    pub resource: String,
    /// Stop taking new leases at this [`mono_ns`].
    pub deadline_ns: u64,
    /// The history file.
    pub history: PathBuf,
}

/// Runs one worker until its deadline. Errors of the lock are recorded, not returned:
/// they are data for the checker.
///
/// # Errors
///
/// Only set-up failures (bad config, history file, resource node unreachable).
pub async fn run_worker(cfg: WorkerConfig) -> Result<(), String> {
    let mut hist = HistoryWriter::create(&cfg.history)
        .map_err(|e| format!("history {}: {e}", cfg.history.display()))?;
    let pid = std::process::id();
    hist.record(&WorkerEvent::Started {
        worker: cfg.worker,
        pid,
    });
    let locker = Locker::builder()
        .stores(cfg.stores.iter().cloned())
        .request_timeout(Duration::from_millis(cfg.request_timeout_ms))
        .connect_timeout(Duration::from_millis(cfg.request_timeout_ms.max(200)))
        .retry_delay(Duration::from_millis(cfg.retry_delay_ms))
        .retry_jitter(Duration::from_millis(cfg.retry_delay_ms / 2))
        .notifications(cfg.notifications)
        .build()
        .map_err(|e| format!("locker: {e}"))?;
    let mut res = ResourceClient::connect(&cfg.resource)
        .await
        .map_err(|e| format!("resource {}: {e}", cfg.resource))?;
    // A stalled process is a paused holder; record every stall so the checker can
    // tell a machine-made pause from a lock failure.
    let (stall_tx, mut stall_rx) = tokio::sync::mpsc::unbounded_channel();
    let ticker = tokio::spawn(async move {
        let tick = Duration::from_millis(20);
        loop {
            let due = mono_ns() + crate::clock::nanos(tick);
            tokio::time::sleep(tick).await;
            let now = mono_ns();
            if now > due + STALL_NS {
                let _ = stall_tx.send((due, now));
            }
        }
    });
    let ttl = Duration::from_millis(cfg.ttl_ms);
    let opts = AcquireOptions::default().max_wait(Duration::from_millis(cfg.max_wait_ms));
    let mut seq: u32 = 0;
    while mono_ns() < cfg.deadline_ns {
        while let Ok((from, to)) = stall_rx.try_recv() {
            hist.record(&WorkerEvent::Stall {
                worker: cfg.worker,
                from,
                to,
            });
        }
        let t_req = mono_ns();
        let lease = match locker.acquire_with(cfg.key.as_str(), ttl, &opts).await {
            Ok(l) => l,
            Err(e) => {
                hist.record(&WorkerEvent::AcquireFailed {
                    worker: cfg.worker,
                    t_req,
                    t_end: mono_ns(),
                    max_wait_ms: cfg.max_wait_ms,
                    kind: format!("{:?}", e.kind()),
                    message: e.to_string(),
                });
                continue;
            }
        };
        let t_grant = mono_ns();
        seq += 1;
        let id = lease_id(cfg.worker, seq);
        let token = lease.token().get();
        hist.record(&WorkerEvent::Grant {
            lease: id,
            key: cfg.key.clone(),
            token,
            value: lease.value().to_string(),
            t_req,
            t_grant,
            valid_until: instant_to_mono_ns(lease.valid_until()),
            max_wait_ms: cfg.max_wait_ms,
        });
        let holder = format!("{} {pid} {id} {token}", cfg.worker);
        match res.read(id, token, &holder).await {
            Ok(read) => {
                let (lo, hi) = cfg.hold_ms;
                let think = rand::rng().random_range(lo..=hi.max(lo));
                tokio::time::sleep(Duration::from_millis(think)).await;
                let amount = rand::rng().random_range(1..=10);
                if let Err(e) = res.write(id, token, &read, amount).await {
                    hist.record(&WorkerEvent::ResourceError {
                        lease: id,
                        message: e.to_string(),
                    });
                }
            }
            Err(e) => hist.record(&WorkerEvent::ResourceError {
                lease: id,
                message: e.to_string(),
            }),
        }
        hist.record(&WorkerEvent::Releasing {
            lease: id,
            t: mono_ns(),
        });
        let outcome = match lease.release().await {
            Ok(o) => format!("{o:?}"),
            Err(e) => format!("error {:?}: {e}", e.kind()),
        };
        hist.record(&WorkerEvent::Released {
            lease: id,
            t: mono_ns(),
            outcome,
        });
        if cfg.idle_ms > 0 {
            tokio::time::sleep(Duration::from_millis(cfg.idle_ms)).await;
        }
    }
    ticker.abort();
    while let Ok((from, to)) = stall_rx.try_recv() {
        hist.record(&WorkerEvent::Stall {
            worker: cfg.worker,
            from,
            to,
        });
    }
    locker.shutdown().await;
    Ok(())
}
