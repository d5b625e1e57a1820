//! A deterministic check of "a lease never claims validity it does not have"
//! (`docs/fencing.md`, "Validity"), under paused tokio time.
//!
//! Three memory stores stand in for three Redis nodes, each behind a [`Slow`] wrapper
//! that delivers every request after a seeded delay, in order, and even after the
//! locker has stopped waiting for it (as a request already sent to a Redis node still
//! lands), and that can be paused (requests queue up until it resumes, as with
//! `SIGSTOP`). A seeded driver interleaves extends (longer, shorter, concurrent,
//! cancelled midway), automatic renewal switched on and off, pauses of a minority of
//! nodes, time passing (expiry), releases and drops, while a rival locker keeps trying
//! to take the same key.
//!
//! A checker task wakes every millisecond of virtual time and reads the nodes directly:
//!
//! 1. a lease that claims validity has keys that live at least as long on a majority
//!    of nodes (`valid_until` ≤ the majority's expiry);
//! 2. a lease that is not released and whose keys have run out on a majority has
//!    reported itself lost (`lost()` fired before that moment);
//! 3. never do two leases claim validity at once.
//!
//! Everything runs on one thread with virtual time and seeded randomness (the
//! locker's jitter too, `jitter::seed_this_thread`), so a seed replays exactly when run
//! alone: `INTERLEAVINGS_SEED=5 INTERLEAVINGS_TRACE=1 cargo test -p fencelock --lib
//! interleavings -- --nocapture` prints its steps, the same each time. (In the full run
//! the seeds share one runtime, where background work of earlier seeds' lockers may
//! still finish, so its totals vary a little between runs.)

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::error::{NodeError, NodeErrorKind};
use crate::lease::Lease;
use crate::lease_state::LeaseState;
use crate::locker::Locker;
use crate::options::Options;
use crate::store::memory::MemoryStore;
use crate::store::{
    Acquired, Expiry, Forgot, Holding, KeyInfo, LockSpec, Node, Store, StoreFuture,
};

/// A tiny deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1)
    }

    fn millis(&mut self, max: u64) -> Duration {
        Duration::from_millis(self.below(max + 1))
    }
}

/// What the driver controls about the nodes: delays and pauses.
struct Faults {
    rng: Mutex<Rng>,
    /// Per node: requests are not applied before this instant.
    paused_until: Mutex<Vec<Instant>>,
}

impl Faults {
    fn draw(&self, max_ms: u64) -> Duration {
        let mut rng = self.rng.lock().unwrap();
        // Most requests are quick; some are slow enough to time out.
        if rng.below(10) == 0 {
            rng.millis(max_ms * 4)
        } else {
            rng.millis(max_ms)
        }
    }

    fn paused_until(&self, node: usize) -> Instant {
        self.paused_until.lock().unwrap()[node]
    }
}

/// A memory store that answers like a node across a slow network (see the module docs).
#[derive(Clone)]
struct Slow {
    inner: Arc<MemoryStore>,
    node: usize,
    /// Requests apply in the order they were sent, as on one connection.
    line: Arc<tokio::sync::Mutex<()>>,
    faults: Arc<Faults>,
}

impl std::fmt::Debug for Slow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Slow({})", self.node)
    }
}

impl Slow {
    /// Sends `op` now: it is applied after the way there (and any pause), whether or not
    /// anyone still waits for the answer, which comes back after the way back.
    fn deliver<T: Send + 'static>(&self, op: StoreFuture<T>) -> StoreFuture<T> {
        let there = self.faults.draw(40);
        let back = self.faults.draw(40);
        let (tx, rx) = oneshot::channel();
        let line = Arc::clone(&self.line);
        let faults = Arc::clone(&self.faults);
        let node = self.node;
        let sent = Instant::now();
        tokio::spawn(async move {
            let turn = line.lock_owned().await;
            tokio::time::sleep_until(sent + there).await;
            loop {
                let until = faults.paused_until(node);
                if until <= Instant::now() {
                    break;
                }
                tokio::time::sleep_until(until).await;
            }
            let reply = op.await;
            drop(turn);
            tokio::time::sleep(back).await;
            let _ = tx.send(reply);
        });
        let name = self.inner.name().to_string();
        Box::pin(async move {
            rx.await.unwrap_or_else(|_| {
                Err(NodeError::new(
                    NodeErrorKind::Other,
                    &name,
                    "the test runtime went away",
                ))
            })
        })
    }
}

/// No notices (waiters poll, so a waiting rival keeps trying at its retry delay) and
/// no waiter lines (an undo is a release, delivered late like the rest).
impl Store for Slow {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn acquire(&self, lock: &LockSpec) -> StoreFuture<Acquired> {
        self.deliver(self.inner.acquire(lock))
    }
    fn commit_fence(&self, lock: &LockSpec, token: u64) -> StoreFuture<bool> {
        self.deliver(self.inner.commit_fence(lock, token))
    }
    fn extend(
        &self,
        locks: &[LockSpec],
        expiry: Expiry,
        reclaim: bool,
    ) -> StoreFuture<Vec<Holding>> {
        self.deliver(self.inner.extend(locks, expiry, reclaim))
    }
    fn release(&self, lock: &LockSpec) -> StoreFuture<Holding> {
        self.deliver(self.inner.release(lock))
    }
    fn abandon(&self, lock: &LockSpec) -> StoreFuture<()> {
        self.deliver(self.inner.abandon(lock))
    }
    fn known_keys(&self, prefix: &str, limit: usize) -> StoreFuture<Vec<String>> {
        self.deliver(self.inner.known_keys(prefix, limit))
    }
    fn inspect(&self, key: &str) -> StoreFuture<KeyInfo> {
        self.deliver(self.inner.inspect(key))
    }
    fn forget(&self, key: &str) -> StoreFuture<Forgot> {
        self.deliver(self.inner.forget(key))
    }
}

/// The leases the checker watches: the driver's and the rival's current ones.
#[derive(Default)]
struct Watched {
    leases: Mutex<[Option<Arc<LeaseState>>; 2]>,
}

impl Watched {
    fn set(&self, who: usize, lease: Option<&Lease>) {
        self.leases.lock().unwrap()[who] = lease.map(|l| Arc::clone(l.state()));
    }
}

/// How long `state`'s keys live on a majority of `nodes`, as an instant.
async fn majority_expiry(nodes: &[Arc<MemoryStore>], state: &LeaseState, now: Instant) -> Instant {
    let mut until = Vec::with_capacity(nodes.len());
    for node in nodes {
        // Every key of the lease must be ours on the node for it to count.
        let mut node_until: Option<Instant> = None;
        for key in state.full_keys.iter() {
            let info = node.inspect(key).await.expect("inspect memory");
            let here = match (info.value.as_deref(), info.pttl) {
                (Some(v), Some(pttl)) if v == &*state.value => now + pttl,
                _ => now,
            };
            node_until = Some(node_until.map_or(here, |u| u.min(here)));
        }
        until.push(node_until.unwrap_or(now));
    }
    until.sort_unstable_by(|a, b| b.cmp(a));
    until[nodes.len() / 2]
}

/// Checks the three rules (module docs) at this instant. Returns how many watched
/// leases claimed validity, so a run can show it was not vacuous.
async fn check(nodes: &[Arc<MemoryStore>], watched: &Watched, seed: u64) -> usize {
    let now = Instant::now();
    let leases: Vec<Arc<LeaseState>> = watched
        .leases
        .lock()
        .unwrap()
        .iter()
        .flatten()
        .cloned()
        .collect();
    let mut valid = 0;
    for state in &leases {
        if state.is_ended() {
            continue;
        }
        let claims = state.valid_until();
        let lives = majority_expiry(nodes, state, now).await;
        if claims > now {
            valid += 1;
            assert!(
                claims <= lives,
                "seed {seed}: a lease claims validity {:?} past its keys' expiry on a majority \
                 ({state:?})",
                claims - lives
            );
        }
        if lives <= now {
            assert!(
                state.is_lost(),
                "seed {seed}: the keys are gone from a majority but lost() has not fired ({state:?})"
            );
        }
    }
    assert!(valid <= 1, "seed {seed}: two leases claim validity at once");
    valid
}

fn locker(nodes: &[Slow]) -> Locker {
    let options = Options {
        request_timeout: Duration::from_millis(100),
        retry_delay: Duration::from_millis(30),
        retry_jitter: Duration::from_millis(30),
        max_wait: Some(Duration::from_millis(400)),
        ..Options::default()
    };
    let nodes: Vec<Node> = nodes.iter().map(|n| Arc::new(n.clone()) as Node).collect();
    Locker::from_parts(nodes, options)
}

/// The rival: keeps taking the key for short moments, so expired keys get taken.
async fn rival(locker: Locker, key: String, watched: Arc<Watched>, seed: u64) {
    let mut rng = Rng(seed ^ 0x5eed);
    loop {
        tokio::time::sleep(rng.millis(200)).await;
        if let Ok(lease) = locker
            .try_acquire(key.as_str(), Duration::from_millis(150))
            .await
        {
            watched.set(1, Some(&lease));
            tokio::time::sleep(rng.millis(100)).await;
            let _ = lease.release().await;
            watched.set(1, None);
        }
    }
}

/// One seeded run of `steps` steps. Returns (checks, checks with a valid lease, losses).
async fn run(seed: u64, steps: usize) -> (usize, usize, usize) {
    crate::jitter::seed_this_thread(seed);
    let faults = Arc::new(Faults {
        rng: Mutex::new(Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)),
        paused_until: Mutex::new(vec![Instant::now(); 3]),
    });
    let memory: Vec<Arc<MemoryStore>> = (0..3)
        .map(|i| Arc::new(MemoryStore::named(&format!("interleavings-{seed}-{i}"))))
        .collect();
    let slow: Vec<Slow> = memory
        .iter()
        .enumerate()
        .map(|(node, inner)| Slow {
            inner: Arc::clone(inner),
            node,
            line: Arc::default(),
            faults: Arc::clone(&faults),
        })
        .collect();
    let ours = locker(&slow);
    let theirs = locker(&slow);
    let key = format!("interleavings-{seed}");
    let watched = Arc::new(Watched::default());

    let stop = tokio_util::sync::CancellationToken::new();
    let checker = {
        let (memory, watched, stop) = (memory.clone(), Arc::clone(&watched), stop.clone());
        tokio::spawn(async move {
            let (mut checks, mut valid) = (0, 0);
            let mut tick = tokio::time::interval(Duration::from_millis(1));
            while !stop.is_cancelled() {
                tick.tick().await;
                checks += 1;
                valid += usize::from(check(&memory, &watched, seed).await > 0);
            }
            (checks, valid)
        })
    };
    let rival = tokio::spawn(rival(
        theirs.clone(),
        key.clone(),
        Arc::clone(&watched),
        seed,
    ));

    let mut rng = Rng(seed | 1);
    let mut losses = 0;
    let ttl = |rng: &mut Rng| Duration::from_millis(60 + rng.below(1500));
    let mut lease: Option<Lease> = None;
    for step in 0..steps {
        if std::env::var_os("INTERLEAVINGS_TRACE").is_some() {
            eprintln!("seed {seed} step {step} at {:?}", Instant::now());
        }
        let Some(held) = lease.as_ref() else {
            let wait = crate::AcquireOptions::default().max_wait(Duration::from_millis(400));
            if let Ok(l) = ours.acquire_with(key.as_str(), ttl(&mut rng), &wait).await {
                watched.set(0, Some(&l));
                lease = Some(l);
            }
            continue;
        };
        let action = rng.below(10);
        if std::env::var_os("INTERLEAVINGS_TRACE").is_some() {
            eprintln!("  action {action}");
        }
        match action {
            0 | 1 => {
                let _ = held.extend(ttl(&mut rng)).await;
            }
            2 => {
                let (a, b) = (ttl(&mut rng), ttl(&mut rng));
                let _ = tokio::join!(held.extend(a), held.extend(b));
            }
            3 => {
                let cancel = rng.millis(120);
                tokio::select! {
                    _ = held.extend(ttl(&mut rng)) => {}
                    _ = tokio::time::sleep(cancel) => {}
                }
            }
            4 => held.set_auto_renew(rng.below(4) != 0),
            5 => {
                // Pause one node (never a majority: the others are running by now).
                let node = rng.below(3) as usize;
                let mut paused = faults.paused_until.lock().unwrap();
                let now = Instant::now();
                if paused.iter().all(|&p| p <= now) {
                    paused[node] = now + rng.millis(1500);
                }
            }
            6 | 7 => tokio::time::sleep(rng.millis(400)).await,
            8 => {
                let l = lease.take().expect("held");
                let _ = l.release().await;
                watched.set(0, None);
            }
            _ => {
                // Dropped: the background task releases it.
                lease = None;
                watched.set(0, None);
            }
        }
        if lease.as_ref().is_some_and(Lease::is_lost) {
            losses += 1;
            lease = None;
            watched.set(0, None);
        }
    }
    drop(lease);
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.cancel();
    rival.abort();
    let (checks, valid) = checker.await.expect("checker");
    (checks, valid, losses)
}

/// Runs the seeds on a runtime with paused time, on a thread of its own, and watches
/// that virtual time moves: a task that busy-loops keeps a paused runtime from ever
/// advancing its clock, which would hang the test instead of failing it.
#[test]
fn validity_is_never_overstated_in_any_interleaving() {
    use std::sync::atomic::{AtomicU64, Ordering};
    let progress = Arc::new(AtomicU64::new(0));
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let seen = Arc::clone(&progress);
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("runtime");
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            runtime.block_on(async {
                let ticker = {
                    let seen = Arc::clone(&seen);
                    tokio::spawn(async move {
                        loop {
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            seen.fetch_add(1, Ordering::Relaxed);
                        }
                    })
                };
                let (mut checks, mut valid, mut losses) = (0, 0, 0);
                let seeds = match std::env::var("INTERLEAVINGS_SEED") {
                    Ok(one) => vec![one.parse().expect("INTERLEAVINGS_SEED: a number")],
                    Err(_) => (1..=24).collect(),
                };
                for seed in seeds {
                    let (c, v, l) = run(seed, 200).await;
                    checks += c;
                    valid += v;
                    losses += l;
                }
                ticker.abort();
                (checks, valid, losses)
            })
        }));
        let _ = done_tx.send(result);
    });
    let mut last = 0;
    let (checks, valid, losses) = loop {
        match done_rx.recv_timeout(Duration::from_secs(60)) {
            Ok(Ok(totals)) => break totals,
            Ok(Err(panic)) => std::panic::resume_unwind(panic),
            Err(_) => {
                let now = progress.load(Ordering::Relaxed);
                assert_ne!(
                    now, last,
                    "virtual time stood still for a minute: a task busy-loops"
                );
                last = now;
            }
        }
    };
    // Not vacuous: leases were valid during much of the run, and some were lost.
    assert!(
        valid * 4 > checks,
        "valid in only {valid} of {checks} checks"
    );
    assert!(
        losses > 0,
        "no lease was ever lost: the faults did not bite"
    );
    eprintln!("{checks} checks, a lease valid in {valid}, {losses} losses");
}
