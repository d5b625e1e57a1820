//! Node.js bindings of fencelock (napi-rs): the native half of the `fencelock` npm
//! package.
//!
//! The JS half (`npm/index.js`) only converts types: waiting, renewal, hand-off and loss
//! detection all run here, in the Rust core, on napi-rs's tokio runtime. Operational
//! failures (held, stores down, timed out, bad input …) are *returned* as a
//! [`NativeFailure`] instead of thrown, so that the JS half can build one error class
//! with `code` and `retryAfter` from them; only a misuse of this private interface
//! (wrong argument types) throws.
//!
//! Cancellation: a waiting acquire registers a token under an id handed out by
//! [`NativeLocker::new_cancel`]; the JS half cancels it from an `AbortSignal`. The
//! acquire future is then dropped, which (as in the Rust API) leaves no key behind.
//!
//! Nothing here keeps the Node.js process alive once no promise is pending: the loss
//! callback is a *weak* threadsafe function, and the tokio runtime's threads are not
//! Node handles.
#![warn(missing_docs, unreachable_pub)]
// napi-rs's generated glue (the `#[napi]` macro) trips these in code we do not write.
#![allow(clippy::needless_pass_by_value)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fencelock::{AcquireOptions, Error, ErrorKind, Lease, Locker, ReleaseOutcome};
use napi::Status;
use napi::bindgen_prelude::{BigInt, Either};
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi_derive::napi;
use tokio_util::sync::CancellationToken;

/// A failure the JS half turns into a `FencelockError`.
#[napi(object)]
#[derive(Debug, Clone)]
pub struct NativeFailure {
    /// `CONTENDED`, `TIMEOUT`, `UNAVAILABLE`, `LOST`, `INVALID`, `CONFIG` or `ABORTED`.
    pub code: String,
    /// The core's message (node addresses redacted).
    pub message: String,
    /// For `CONTENDED`/`TIMEOUT`: how long the holder's lease still runs, in ms.
    pub retry_after_ms: Option<f64>,
}

impl NativeFailure {
    fn new(code: &str, message: impl Into<String>) -> Self {
        NativeFailure {
            code: code.to_string(),
            message: message.into(),
            retry_after_ms: None,
        }
    }

    fn invalid(message: impl Into<String>) -> Self {
        NativeFailure::new("INVALID", message)
    }
}

impl From<Error> for NativeFailure {
    fn from(e: Error) -> Self {
        let code = match e.kind() {
            ErrorKind::Contended => "CONTENDED",
            ErrorKind::Timeout => "TIMEOUT",
            ErrorKind::Unavailable => "UNAVAILABLE",
            ErrorKind::Lost => "LOST",
            ErrorKind::InvalidInput => "INVALID",
            // `Config`, and any kind a later core adds (ErrorKind is non-exhaustive):
            // retrying cannot fix what we do not know.
            _ => "CONFIG",
        };
        NativeFailure {
            code: code.to_string(),
            message: e.to_string(),
            retry_after_ms: e.retry_after().map(|d| d.as_millis() as f64),
        }
    }
}

/// Options of a locker, as the JS half passes them (milliseconds as numbers).
#[napi(object)]
#[derive(Debug, Default)]
pub struct NativeLockerOptions {
    /// Store URLs: one or more `redis://`/`rediss://`, or one `sqlite://` or `memory://`.
    pub stores: Vec<String>,
    /// The TTL of `acquire` calls that give none.
    pub ttl_ms: Option<f64>,
    /// How long an acquire waits by default; `Infinity` waits for ever.
    pub wait_ms: Option<f64>,
    /// The clock-drift allowance as a fraction of the TTL.
    pub drift_factor: Option<f64>,
    /// Per-node request timeout.
    pub request_timeout_ms: Option<f64>,
    /// Per-node connect timeout.
    pub connect_timeout_ms: Option<f64>,
    /// Polling interval without release notices; base of the back-off.
    pub retry_delay_ms: Option<f64>,
    /// Random extra delay of every wait.
    pub retry_jitter_ms: Option<f64>,
    /// A prefix put before every key.
    pub prefix: Option<String>,
    /// Whether waiters subscribe to release notices.
    pub notifications: Option<bool>,
    /// Fair mode (waiters served in arrival order; Redis only).
    pub fair: Option<bool>,
    /// A description of this holder, stored beside each key.
    pub holder: Option<String>,
    /// Whether leases renew themselves.
    pub auto_renew: Option<bool>,
    /// How long automatic renewal may keep one lease.
    pub max_hold_ms: Option<f64>,
    /// The longest TTL accepted.
    pub max_ttl_ms: Option<f64>,
    /// The password of every Redis node whose URL has none.
    pub password: Option<String>,
    /// A PEM file of CA certificates for `rediss://` nodes.
    pub ca_cert: Option<String>,
}

/// A duration from a JS number of milliseconds: finite, not negative. Fractions are
/// kept to the microsecond.
fn millis(what: &str, ms: f64) -> Result<Duration, NativeFailure> {
    if !ms.is_finite() || ms < 0.0 {
        return Err(NativeFailure::invalid(format!(
            "invalid {what}: {ms} is not a finite number of milliseconds >= 0"
        )));
    }
    Duration::try_from_secs_f64(ms / 1000.0)
        .map_err(|e| NativeFailure::invalid(format!("invalid {what}: {ms} ms: {e}")))
}

/// How long an acquire waits: `None` the locker's default, `Infinity` for ever, `0`
/// no waiting.
fn wait_options(wait_ms: Option<f64>) -> Result<AcquireOptions, NativeFailure> {
    let options = AcquireOptions::default();
    Ok(match wait_ms {
        None => options,
        Some(w) if w == f64::INFINITY => options.wait_forever(),
        Some(w) => {
            let wait = millis("wait", w)?;
            if wait.is_zero() {
                options.no_wait()
            } else {
                options.max_wait(wait)
            }
        }
    })
}

fn build_locker(o: &NativeLockerOptions) -> Result<Locker, NativeFailure> {
    let mut b = Locker::builder().stores(o.stores.iter().cloned());
    if let Some(ms) = o.ttl_ms {
        b = b.ttl(millis("ttlMs", ms)?);
    }
    if let Some(ms) = o.wait_ms {
        b = b.max_wait(if ms == f64::INFINITY {
            None
        } else {
            Some(millis("wait", ms)?)
        });
    }
    if let Some(f) = o.drift_factor {
        b = b.drift_factor(f);
    }
    if let Some(ms) = o.request_timeout_ms {
        b = b.request_timeout(millis("requestTimeoutMs", ms)?);
    }
    if let Some(ms) = o.connect_timeout_ms {
        b = b.connect_timeout(millis("connectTimeoutMs", ms)?);
    }
    if let Some(ms) = o.retry_delay_ms {
        b = b.retry_delay(millis("retryDelayMs", ms)?);
    }
    if let Some(ms) = o.retry_jitter_ms {
        b = b.retry_jitter(millis("retryJitterMs", ms)?);
    }
    if let Some(p) = &o.prefix {
        b = b.prefix(p.clone());
    }
    if let Some(on) = o.notifications {
        b = b.notifications(on);
    }
    if let Some(on) = o.fair {
        b = b.fair(on);
    }
    if let Some(h) = &o.holder {
        b = b.holder(h.clone());
    }
    if let Some(on) = o.auto_renew {
        b = b.auto_renew(on);
    }
    if let Some(ms) = o.max_hold_ms {
        b = b.max_hold(Some(millis("maxHoldMs", ms)?));
    }
    if let Some(ms) = o.max_ttl_ms {
        b = b.max_ttl(millis("maxTtlMs", ms)?);
    }
    if let Some(p) = &o.password {
        b = b.password(p.clone());
    }
    if let Some(ca) = &o.ca_cert {
        b = b.ca_cert(ca.clone());
    }
    // Opening a store may touch the runtime (an SQLite file is opened now).
    napi::bindgen_prelude::within_runtime_if_available(|| b.build()).map_err(Into::into)
}

/// What one locker shares with its leases and its pending acquires.
#[derive(Default)]
struct Shared {
    /// Leases not yet released: `close()` releases them.
    leases: Mutex<Vec<Weak<LeaseCell>>>,
    /// Tokens of waiting acquires, by the id the JS half cancels them with.
    cancels: Mutex<HashMap<u32, CancellationToken>>,
    next_cancel: AtomicU32,
    /// Cancelled by `close()`: every waiting acquire stops.
    closing: CancellationToken,
    /// Acquires in flight, and a notice when one ends: `close()` waits for them.
    active: AtomicUsize,
    acquire_ended: tokio::sync::Notify,
}

/// Counts one acquire in flight for as long as it lives (also when it is dropped).
struct Active(Arc<Shared>);

impl Active {
    fn new(shared: &Arc<Shared>) -> Self {
        shared.active.fetch_add(1, Ordering::AcqRel);
        Active(shared.clone())
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::AcqRel);
        self.0.acquire_ended.notify_waiters();
    }
}

impl Shared {
    fn leases(&self) -> std::sync::MutexGuard<'_, Vec<Weak<LeaseCell>>> {
        self.leases.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn cancels(&self) -> std::sync::MutexGuard<'_, HashMap<u32, CancellationToken>> {
        self.cancels.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// `"debug"` or `"release"`: how this addon was compiled (the benchmark refuses debug).
#[napi]
pub fn build_profile() -> &'static str {
    if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    }
}

/// Opens a locker, or says why not.
#[napi]
pub fn open_locker(options: NativeLockerOptions) -> Either<NativeLocker, NativeFailure> {
    match build_locker(&options) {
        Ok(locker) => Either::A(NativeLocker {
            locker,
            shared: Arc::default(),
        }),
        Err(f) => Either::B(f),
    }
}

/// A fencelock `Locker` and the bookkeeping of its JS leases.
#[napi]
pub struct NativeLocker {
    locker: Locker,
    shared: Arc<Shared>,
}

#[napi]
impl NativeLocker {
    /// The stores, with passwords redacted.
    #[napi]
    pub fn stores(&self) -> Vec<String> {
        self.locker.stores()
    }

    /// The default TTL in milliseconds.
    #[napi]
    pub fn default_ttl_ms(&self) -> f64 {
        self.locker.default_ttl().as_millis() as f64
    }

    /// A new cancellation id for one `acquire`; cancel it with [`NativeLocker::cancel`].
    #[napi]
    pub fn new_cancel(&self) -> u32 {
        let id = self.shared.next_cancel.fetch_add(1, Ordering::Relaxed);
        self.shared.cancels().insert(id, CancellationToken::new());
        id
    }

    /// Cancels the acquire registered under `id` (nothing if it has completed).
    #[napi]
    pub fn cancel(&self, id: u32) {
        if let Some(token) = self.shared.cancels().get(&id) {
            token.cancel();
        }
    }

    /// Acquires `keys` for `ttl_ms`, waiting `wait_ms` (`None`: the locker's default;
    /// `Infinity`: for ever; `0`: no waiting). Cancelling `cancel_id` (or closing the
    /// locker) drops the acquire, which leaves no key behind.
    #[napi]
    pub async fn acquire(
        &self,
        keys: Vec<String>,
        ttl_ms: f64,
        wait_ms: Option<f64>,
        cancel_id: Option<u32>,
    ) -> Either<NativeLease, NativeFailure> {
        let shared = self.shared.clone();
        let active = Active::new(&shared);
        let cancel = cancel_id.and_then(|id| shared.cancels().get(&id).cloned());
        let result = self.acquire_inner(keys, ttl_ms, wait_ms, cancel).await;
        if let Some(id) = cancel_id {
            shared.cancels().remove(&id);
        }
        match result {
            Ok(lease) => {
                let cell = Arc::new(LeaseCell::new(lease));
                {
                    let mut leases = shared.leases();
                    leases.retain(|w| w.strong_count() > 0);
                    leases.push(Arc::downgrade(&cell));
                }
                if shared.closing.is_cancelled() {
                    // Closed while the grant was on its way: give it back at once.
                    cell.release().await;
                    return Either::B(NativeFailure::new("CONFIG", "the locker is closed"));
                }
                drop(active);
                Either::A(NativeLease { cell })
            }
            Err(f) => {
                drop(active);
                Either::B(f)
            }
        }
    }

    async fn acquire_inner(
        &self,
        keys: Vec<String>,
        ttl_ms: f64,
        wait_ms: Option<f64>,
        cancel: Option<CancellationToken>,
    ) -> Result<Lease, NativeFailure> {
        if self.shared.closing.is_cancelled() {
            return Err(NativeFailure::new("CONFIG", "the locker is closed"));
        }
        let ttl = millis("ttlMs", ttl_ms)?;
        let options = wait_options(wait_ms)?;
        let cancel = cancel.unwrap_or_default();
        let closing = self.shared.closing.clone();
        tokio::select! {
            biased;
            _ = cancel.cancelled() => Err(NativeFailure::new("ABORTED", "the acquire was aborted")),
            _ = closing.cancelled() => Err(NativeFailure::new("CONFIG", "the locker is closed")),
            lease = self.locker.acquire_with(keys, ttl, &options) => lease.map_err(Into::into),
        }
    }

    /// Releases every lease still held, stops every waiting acquire, and waits for the
    /// releases the background task still has queued. The locker refuses new acquires.
    ///
    /// In that order: the stopped acquires leave their waiter lines first, so that the
    /// releases after cannot hand a lock to a waiter that is gone (it would stay held
    /// for the hand-off's claim).
    #[napi]
    pub async fn close(&self) {
        self.shared.closing.cancel();
        loop {
            let ended = self.shared.acquire_ended.notified();
            if self.shared.active.load(Ordering::Acquire) == 0 {
                break;
            }
            ended.await;
        }
        self.locker.shutdown().await;
        let cells: Vec<Arc<LeaseCell>> = self
            .shared
            .leases()
            .drain(..)
            .filter_map(|w| w.upgrade())
            .collect();
        for cell in cells {
            cell.closed.store(true, Ordering::Release);
            cell.release().await;
        }
        self.locker.shutdown().await;
    }
}

/// A lease and what can be read from it without waiting.
struct LeaseCell {
    /// `None` once released. Read-locked by `extend`, write-locked by `release`.
    lease: tokio::sync::RwLock<Option<Lease>>,
    token: u64,
    keys: Vec<String>,
    /// Cancelled when the lease is lost, released or dropped.
    signal: CancellationToken,
    released: AtomicBool,
    /// Whether the lease was lost, as of its release (read from the lease before).
    lost_at_release: AtomicBool,
    /// Released by `close()`, not by its holder.
    closed: AtomicBool,
}

impl LeaseCell {
    fn new(lease: Lease) -> Self {
        LeaseCell {
            token: lease.token().get(),
            keys: lease.keys().to_vec(),
            signal: lease.lost_token(),
            lease: tokio::sync::RwLock::new(Some(lease)),
            released: AtomicBool::new(false),
            lost_at_release: AtomicBool::new(false),
            closed: AtomicBool::new(false),
        }
    }

    /// Lost (not merely released), also after the release.
    fn is_lost(&self) -> bool {
        if self.released.load(Ordering::Acquire) {
            return self.lost_at_release.load(Ordering::Acquire);
        }
        match self.lease.try_read() {
            Ok(guard) => guard.as_ref().is_none_or(Lease::is_lost),
            // Being released: the flags are written before the lease is handed back.
            Err(_) => self.signal.is_cancelled() && !self.released.load(Ordering::Acquire),
        }
    }

    /// Releases the lease if it still is held. `None` when it was already released.
    async fn release(&self) -> Option<fencelock::Result<ReleaseOutcome>> {
        let lease = self.lease.write().await.take()?;
        self.lost_at_release
            .store(lease.is_lost(), Ordering::Release);
        self.released.store(true, Ordering::Release);
        Some(lease.release().await)
    }
}

/// A held lock: token, keys, validity; extend, release, and the loss callback.
#[napi]
pub struct NativeLease {
    cell: Arc<LeaseCell>,
}

#[napi]
impl NativeLease {
    /// The fencing token (a JS `bigint`).
    #[napi(getter)]
    pub fn token(&self) -> BigInt {
        BigInt::from(self.cell.token)
    }

    /// The keys, as given.
    #[napi(getter)]
    pub fn keys(&self) -> Vec<String> {
        self.cell.keys.clone()
    }

    /// How long the lease is still proven valid, in ms; 0 once lost, released or expired.
    #[napi]
    pub fn remaining_ms(&self) -> f64 {
        match self.cell.lease.try_read() {
            Ok(guard) => guard
                .as_ref()
                .map_or(0.0, |l| l.remaining().as_secs_f64() * 1000.0),
            // A release holds (or waits for) the write lock: the lease is going.
            Err(_) => 0.0,
        }
    }

    /// The wall-clock time (ms since the epoch) until which the lease is proven valid.
    #[napi]
    pub fn valid_until_ms(&self) -> f64 {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let left = match self.cell.lease.try_read() {
            Ok(guard) => guard.as_ref().map_or(Duration::ZERO, |l| {
                l.valid_until().saturating_duration_since(Instant::now())
            }),
            Err(_) => Duration::ZERO,
        };
        (now + left).as_secs_f64() * 1000.0
    }

    /// Whether the lease was lost (not merely released).
    #[napi]
    pub fn is_lost(&self) -> bool {
        self.cell.is_lost()
    }

    /// Turns automatic renewal on or off for this lease.
    #[napi]
    pub fn set_auto_renew(&self, on: bool) {
        if let Ok(guard) = self.cell.lease.try_read()
            && let Some(lease) = guard.as_ref()
        {
            lease.set_auto_renew(on);
        }
    }

    /// Extends the lease to `ttl_ms` from now. `null` on success.
    #[napi]
    pub async fn extend(&self, ttl_ms: f64) -> Option<NativeFailure> {
        let ttl = match millis("ttlMs", ttl_ms) {
            Ok(t) => t,
            Err(f) => return Some(f),
        };
        let guard = self.cell.lease.read().await;
        let Some(lease) = guard.as_ref() else {
            return Some(NativeFailure::new(
                "LOST",
                "the lease was released; acquire the lock again",
            ));
        };
        lease.extend(ttl).await.err().map(Into::into)
    }

    /// Releases the lease: `"released"`, `"expired"`, `"owned-by-other"`, or
    /// `"already-released"` for a second call.
    #[napi]
    pub async fn release(&self) -> Either<String, NativeFailure> {
        match self.cell.release().await {
            None => Either::A("already-released".to_string()),
            Some(Ok(outcome)) => Either::A(
                match outcome {
                    ReleaseOutcome::Released => "released",
                    ReleaseOutcome::Expired => "expired",
                    ReleaseOutcome::OwnedByOther => "owned-by-other",
                    // A later core's outcome: the lock is not ours any more.
                    _ => "expired",
                }
                .to_string(),
            ),
            Some(Err(e)) => Either::B(e.into()),
        }
    }

    /// Calls `callback("lost")` the moment the lease is lost, `callback("closed")` when
    /// `close()` released it from under its holder, or `callback("released")` once it is
    /// released or dropped. The callback is weak: it never keeps the Node.js process
    /// alive.
    #[napi]
    pub fn on_end(&self, callback: ThreadsafeFunction<String, (), String, Status, false, true>) {
        let cell = Arc::downgrade(&self.cell);
        let signal = self.cell.signal.clone();
        napi::bindgen_prelude::spawn(async move {
            signal.cancelled().await;
            // Gone (garbage-collected, hence dropped and released) or released
            // without having been lost first: "released".
            let why = match cell.upgrade() {
                Some(c) if c.is_lost() => "lost",
                Some(c) if c.closed.load(Ordering::Acquire) => "closed",
                _ => "released",
            };
            callback.call(why.to_string(), ThreadsafeFunctionCallMode::NonBlocking);
        });
    }
}
