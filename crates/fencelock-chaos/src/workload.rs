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
    /// Hold under automatic renewal and stop the job at `lost()` (long critical
    /// sections of several TTLs): a lost lease is recorded, and the write skipped.
    #[serde(default)]
    pub renew: bool,
    /// While holding, extend the lease every quarter TTL to a TTL drawn from this range
    /// (ms), racing its renewal, and check its claim against the nodes after each.
    #[serde(default)]
    pub extend_ms: Option<(u64, u64)>,
    /// Negative control: report claims this much larger than the lease's (ms), so
    /// the checker must flag them.
    #[serde(default)]
    pub overstate_ms: u64,
    /// Take one permit of a semaphore of this many permits on `key` instead of the
    /// lock; the critical section is then an entry and an exit the resource counts
    /// (up to N holders are inside at once by design) instead of a read-modify-write.
    #[serde(default)]
    pub permits: Option<u32>,
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
        .auto_renew(cfg.renew)
        .build()
        .map_err(|e| format!("locker: {e}"))?;
    let semaphore = cfg
        .permits
        .map(|n| locker.semaphore(&cfg.key, n))
        .transpose()
        .map_err(|e| format!("semaphore: {e}"))?;
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
    let mut nodes = NodeReader::new(&cfg.stores, cfg.overstate_ms);
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
        let acquired = match &semaphore {
            Some(sem) => sem.acquire_with(ttl, &opts).await,
            None => locker.acquire_with(cfg.key.as_str(), ttl, &opts).await,
        };
        let lease = match acquired {
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
        // A permit's own key: its token is ordered per permit, and its claim excludes
        // other holders of that permit only.
        let key = match &semaphore {
            Some(_) => lease.keys().first().cloned().unwrap_or_default(),
            None => cfg.key.clone(),
        };
        hist.record(&WorkerEvent::Grant {
            lease: id,
            key: key.clone(),
            token,
            value: lease.value().to_string(),
            t_req,
            t_grant,
            valid_until: instant_to_mono_ns(lease.valid_until()),
            max_wait_ms: cfg.max_wait_ms,
            renewing: cfg.renew,
        });
        // The lock value last: the harness checks a victim still holds the key before it
        // kills it as a holder (`Step::KillHolder`).
        let holder = format!("{} {pid} {id} {token} {}", cfg.worker, lease.value());
        let (lo, hi) = cfg.hold_ms;
        let think = Duration::from_millis(rand::rng().random_range(lo..=hi.max(lo)));
        // Without renewal the job asks whether its lease is lost once, *before* the
        // read (or entry) that announces it as the holder: the client-pause fault
        // stops a holder only after that announcement, so its pause always lands after
        // the job's last check and ends in the write, as in a real client. (Asked
        // after the read, a pause landing between the read and the question made the
        // resumed job find its lease lost and skip the write: a fresh-clone CI run
        // once saw no unfenced damage for that reason.)
        if !cfg.renew && lease.is_lost() {
            release(lease, id, &mut hist).await;
            continue;
        }
        if semaphore.is_some() {
            // Up to N holders are inside at once by design: no read-modify-write, an
            // entry and an exit the resource counts. A stopped job leaves at once.
            match res.enter(id, token, &key, &holder).await {
                Ok(_) => {
                    hold(&cfg, &lease, &key, think, &mut nodes, &mut hist, id).await;
                    if let Err(e) = res.leave(id, token, &key).await {
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
        } else {
            match res.read(id, token, &holder).await {
                Ok(read) => {
                    let stopped = hold(&cfg, &lease, &key, think, &mut nodes, &mut hist, id).await;
                    let amount = rand::rng().random_range(1..=10);
                    // A stopped job writes nothing; it still releases below.
                    if !stopped && let Err(e) = res.write(id, token, &read, amount).await {
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
        }
        release(lease, id, &mut hist).await;
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

/// Releases `lease`, recording when the release began and how it ended.
async fn release(lease: fencelock::Lease, id: crate::history::LeaseId, hist: &mut HistoryWriter) {
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
}

/// The critical section's think time: under renewal, held until `think` is over or
/// `lost()` fires (recorded, with the claim checks); without, the lease's loss was
/// asked before the read, and the think time stands for the window between a
/// holder's last check and its write (module docs): a pause that lands there
/// (client-pause) must end in the write, as it would in a real client, and not in a
/// race between the resumed worker and the lease's own expiry timer, both due at
/// SIGCONT. Under renewal a lost lease stops the job during the hold, as
/// `fencelock run` does.
/// Returns whether the job was stopped (its lease lost) before its write.
async fn hold(
    cfg: &WorkerConfig,
    lease: &fencelock::Lease,
    key: &str,
    think: Duration,
    nodes: &mut NodeReader,
    hist: &mut HistoryWriter,
    id: crate::history::LeaseId,
) -> bool {
    if !cfg.renew {
        // Asked before the read (see the caller): nothing stops the job from here on.
        tokio::time::sleep(think).await;
        return false;
    }
    if let Err(message) = hold_renewing(cfg, lease, key, think, nodes).await {
        hist.record(&WorkerEvent::Lost {
            lease: id,
            t: mono_ns(),
            message,
        });
    }
    for (t, claimed_us, majority_us, extend_ms) in nodes.take_checks() {
        hist.record(&WorkerEvent::ClaimChecked {
            lease: id,
            t,
            claimed_us,
            majority_us,
            extend_ms,
        });
    }
    lease.is_lost()
}

/// Holds `lease` for `think` under automatic renewal, like `with_lock`: the hold stops
/// the moment `lost()` fires. With `extend_ms`, extends the lease every quarter TTL to
/// a random TTL from that range, checking its claim against the nodes after each.
///
/// # Errors
///
/// The lease was lost (its error, as text).
async fn hold_renewing(
    cfg: &WorkerConfig,
    lease: &fencelock::Lease,
    key: &str,
    think: Duration,
    nodes: &mut NodeReader,
) -> Result<(), String> {
    let lost = lease.lost();
    let work = async {
        let Some((lo, hi)) = cfg.extend_ms else {
            tokio::time::sleep(think).await;
            return;
        };
        let end = tokio::time::Instant::now() + think;
        let every = Duration::from_millis(cfg.ttl_ms / 4);
        while tokio::time::Instant::now() < end {
            tokio::time::sleep(every.min(end - tokio::time::Instant::now())).await;
            let ttl = rand::rng().random_range(lo..=hi.max(lo));
            if lease.extend(Duration::from_millis(ttl)).await.is_ok() {
                nodes.check(lease, key, ttl).await;
            }
        }
    };
    tokio::select! {
        biased;
        () = work => {}
        () = lost => {}
    }
    if lease.is_lost() {
        return Err(format!(
            "lease lost while held: {}",
            lease
                .extend(Duration::from_millis(cfg.ttl_ms))
                .await
                .err()
                .map_or_else(|| "lost".to_string(), |e| e.to_string())
        ));
    }
    Ok(())
}

/// Reads the lock key's remaining TTL on every node, behind the library's back, to
/// check what a lease claims (the checker's `ValidityOverstated`).
struct NodeReader {
    conns: Vec<Option<redis::aio::MultiplexedConnection>>,
    urls: Vec<String>,
    overstate_us: u64,
    /// (when, claimed µs, majority µs, extend ms) per check since the last take.
    checks: Vec<(u64, u64, u64, u64)>,
}

impl NodeReader {
    fn new(urls: &[String], overstate_ms: u64) -> Self {
        NodeReader {
            conns: vec![None; urls.len()],
            urls: urls.to_vec(),
            overstate_us: overstate_ms * 1000,
            checks: Vec::new(),
        }
    }

    /// Remaining TTL of `key` on node `i` in µs (0 when gone or unreachable).
    async fn pttl_us(&mut self, i: usize, key: &str) -> u64 {
        if self.conns[i].is_none()
            && let Ok(client) = redis::Client::open(self.urls[i].as_str())
            && let Ok(Ok(c)) = tokio::time::timeout(
                Duration::from_millis(500),
                client.get_multiplexed_async_connection(),
            )
            .await
        {
            self.conns[i] = Some(c);
        }
        let Some(c) = self.conns[i].as_mut() else {
            return 0;
        };
        let pttl = tokio::time::timeout(
            Duration::from_millis(500),
            redis::cmd("PTTL").arg(key).query_async::<i64>(c),
        )
        .await;
        match pttl {
            Ok(Ok(ms)) if ms > 0 => u64::try_from(ms).unwrap_or(0) * 1000,
            Ok(Ok(_)) => 0,
            _ => {
                self.conns[i] = None;
                0
            }
        }
    }

    /// Reads every node, and compares what they say with the smaller of the lease's
    /// claims before and after the reads: a claim made before the reads must be covered
    /// by them, but one made after may rest on a renewal the reads did not see (a
    /// renewal decided between a node's answer and `remaining()` raises the claim with
    /// keys the reads saw before it). Keeps the result for the history.
    async fn check(&mut self, lease: &fencelock::Lease, key: &str, extend_ms: u64) {
        let claimed_before = lease.valid_until();
        let mut lives = Vec::with_capacity(self.urls.len());
        for i in 0..self.urls.len() {
            lives.push(self.pttl_us(i, key).await);
        }
        lives.sort_unstable_by(|a, b| b.cmp(a));
        let majority_us = lives[lives.len() / 2];
        let claim = claimed_before
            .min(lease.valid_until())
            .saturating_duration_since(std::time::Instant::now());
        let claimed_us = u64::try_from(claim.as_micros()).unwrap_or(u64::MAX)
            + if lease.is_valid() {
                self.overstate_us
            } else {
                0
            };
        self.checks
            .push((mono_ns(), claimed_us, majority_us, extend_ms));
    }

    fn take_checks(&mut self) -> Vec<(u64, u64, u64, u64)> {
        std::mem::take(&mut self.checks)
    }
}
