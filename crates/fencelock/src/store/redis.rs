//! One Redis node.
//!
//! Every operation is one Lua script (sent with EVALSHA, loaded on NOSCRIPT by
//! [`redis::Script`]) over one multiplexed connection, so each is atomic on the node and
//! costs one round trip. The lock key holds only our random value with a `PX` expiry —
//! the layout of the `redlock` npm package and redsync, so mixed fleets exclude each
//! other — and everything else lives in sibling keys (see [`fence_key`], [`holder_key`]).
//!
//! Connections are made lazily and replaced after an I/O error or an abandoned
//! (timed-out) request. redis-rs' own response timeout is off: the locker puts one
//! per-node timeout around every call, and decides what a timeout means.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, RedisError, Script, Value};

use super::url::{RedisUrl, StoreOptions};
use super::{Acquired, Holding, KeyInfo, LockSpec, Store, StoreFuture, Watch};
use crate::error::{Error, NodeError, NodeErrorKind};

mod notify;

/// How long a fencing counter outlives its last use. Past that, a counter restarts from
/// the node's clock (microseconds), which is above every token it issued unless the
/// node's clock went back by about this much. See `docs/fencing.md`.
pub(crate) const COUNTER_RETENTION: Duration = Duration::from_secs(24 * 60 * 60);

const ACQUIRE_LUA: &str = include_str!("redis/acquire.lua");
const COMMIT_LUA: &str = include_str!("redis/commit.lua");
const EXTEND_LUA: &str = include_str!("redis/extend.lua");
const RELEASE_LUA: &str = include_str!("redis/release.lua");
const LEAVE_QUEUE_LUA: &str = include_str!("redis/leave_queue.lua");

static ACQUIRE: LazyLock<Script> = LazyLock::new(|| Script::new(ACQUIRE_LUA));
static COMMIT: LazyLock<Script> = LazyLock::new(|| Script::new(COMMIT_LUA));
static EXTEND: LazyLock<Script> = LazyLock::new(|| Script::new(EXTEND_LUA));
static LEAVE_QUEUE: LazyLock<Script> = LazyLock::new(|| Script::new(LEAVE_QUEUE_LUA));
static RELEASE: LazyLock<Script> = LazyLock::new(|| Script::new(RELEASE_LUA));

/// The sibling key holding a lock key's fencing counter.
pub(crate) fn fence_key(key: &str) -> String {
    format!("{key}:fencelock:fence")
}

/// The sibling key holding a description of the current holder (for `status`).
pub(crate) fn holder_key(key: &str) -> String {
    format!("{key}:fencelock:holder")
}

/// The sorted set of fair-mode waiters of `key`, by ticket.
pub(crate) fn queue_key(key: &str) -> String {
    format!("{key}:fencelock:queue")
}

/// The sorted set of fair-mode waiters of `key`, by the deadline of their entry.
pub(crate) fn queue_deadline_key(key: &str) -> String {
    format!("{key}:fencelock:queue-deadline")
}

/// The channel on which a release of `key` is announced.
pub(crate) fn release_channel(key: &str) -> String {
    format!("{key}:fencelock:released")
}

/// A handle on one Redis node; clones share the connection.
#[derive(Clone)]
pub(crate) struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    client: Client,
    config: AsyncConnectionConfig,
    /// The live connection, with a generation number so that a caller invalidates only
    /// the connection it saw fail, never a fresh one.
    conn: Mutex<Option<(u64, MultiplexedConnection)>>,
    /// Serialises connecting, so a burst of callers makes one connection, not many.
    connecting: tokio::sync::Mutex<()>,
    generation: std::sync::atomic::AtomicU64,
    /// For each lock value whose acquire (or commit) has not been answered yet: the
    /// connection it went down. Its clean-up must use the same connection: a node that
    /// was stopped runs the bytes already in its socket when it wakes, so a release on
    /// any other connection could run before the late acquire and leave its key behind.
    pinned: Mutex<HashMap<Arc<str>, (u64, MultiplexedConnection)>>,
    notifier: notify::Notifier,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("node", &self.inner.name)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// A store for the node at `url`. Does not connect yet.
    ///
    /// # Errors
    ///
    /// [`crate::ErrorKind::InvalidInput`] when redis-rs refuses the address.
    pub(crate) fn new(url: RedisUrl, options: &StoreOptions) -> Result<Self, Error> {
        let name = url.redacted.clone();
        let client = Client::open(url.info)
            .map_err(|e| Error::invalid("store URL", format!("{name}: {}", e.kind_str())))?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(options.connect_timeout))
            .set_response_timeout(None);
        Ok(RedisStore {
            inner: Arc::new(Inner {
                notifier: notify::Notifier::new(client.clone(), name.clone(), options.clone()),
                name,
                client,
                config,
                conn: Mutex::new(None),
                connecting: tokio::sync::Mutex::new(()),
                generation: std::sync::atomic::AtomicU64::new(0),
                pinned: Mutex::new(HashMap::new()),
            }),
        })
    }
}

impl Inner {
    fn current(&self) -> Option<(u64, MultiplexedConnection)> {
        self.conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// The shared connection, connecting first if there is none.
    async fn connection(&self) -> Result<(u64, MultiplexedConnection), NodeError> {
        if let Some(c) = self.current() {
            return Ok(c);
        }
        let _one_at_a_time = self.connecting.lock().await;
        if let Some(c) = self.current() {
            return Ok(c);
        }
        let mut conn = self
            .client
            .get_multiplexed_async_connection_with_config(&self.config)
            .await
            .map_err(|e| classify(&self.name, &e))?;
        // Load every script now, in one round trip: a clean-up queued behind a request
        // on a stopped node must not meet NOSCRIPT when the node wakes (its retry would
        // need an answer nobody waits for any more), and first use costs no extra trip.
        // A user without SCRIPT LOAD rights still works: EVALSHA falls back to EVAL.
        let mut load = redis::pipe();
        for source in [
            ACQUIRE_LUA,
            COMMIT_LUA,
            EXTEND_LUA,
            RELEASE_LUA,
            LEAVE_QUEUE_LUA,
        ] {
            load.cmd("SCRIPT").arg("LOAD").arg(source);
        }
        let _ = load.query_async::<Vec<Value>>(&mut conn).await;
        let generation = self
            .generation
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        *self.conn.lock().unwrap_or_else(|p| p.into_inner()) = Some((generation, conn.clone()));
        Ok((generation, conn))
    }

    /// Forgets connection `generation` so the next call reconnects instead of queueing
    /// behind requests stuck in it. (Bytes already written to it are still delivered
    /// and run by the node; see `pinned`.)
    fn invalidate(&self, generation: u64) {
        let mut slot = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        if slot.as_ref().is_some_and(|(g, _)| *g == generation) {
            *slot = None;
        }
    }

    /// Runs one script invocation, invalidating the connection on I/O errors.
    async fn run(&self, invocation: redis::ScriptInvocation<'_>) -> Result<Value, NodeError> {
        let (generation, conn) = self.connection().await?;
        self.run_on(generation, conn, invocation).await
    }

    /// Runs a request that may set keys with `value`, remembering its connection until
    /// the node answers: if the caller gives up first (timeout, cancellation), the
    /// clean-up goes down the same connection (see `pinned`).
    async fn run_pinned(
        &self,
        value: &Arc<str>,
        invocation: redis::ScriptInvocation<'_>,
    ) -> Result<Value, NodeError> {
        let (generation, conn) = self.connection().await?;
        self.pins()
            .insert(value.clone(), (generation, conn.clone()));
        let result = self.run_on(generation, conn, invocation).await;
        // Answered: the request has run, so later requests on any connection follow it.
        self.pins().remove(value);
        result
    }

    fn pins(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, (u64, MultiplexedConnection)>> {
        self.pinned.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn run_on(
        &self,
        generation: u64,
        mut conn: MultiplexedConnection,
        invocation: redis::ScriptInvocation<'_>,
    ) -> Result<Value, NodeError> {
        match invocation.invoke_async::<Value>(&mut conn).await {
            Ok(v) => Ok(v),
            Err(e) => {
                if e.is_io_error() || e.is_connection_dropped() || e.is_unrecoverable_error() {
                    self.invalidate(generation);
                }
                Err(classify(&self.name, &e))
            }
        }
    }

    fn protocol(&self, what: &str, value: &Value) -> NodeError {
        NodeError::new(
            NodeErrorKind::Protocol,
            &self.name,
            format!("unexpected reply to {what}: {value:?}"),
        )
    }
}

/// Turns a redis-rs error into a node error of the right kind, without secrets.
fn classify(node: &str, e: &RedisError) -> NodeError {
    let code = e.code().unwrap_or("");
    let kind = match code {
        "NOAUTH" | "WRONGPASS" | "NOPERM" => NodeErrorKind::Auth,
        "READONLY" => NodeErrorKind::ReadOnly,
        "WRONGTYPE" => NodeErrorKind::WrongType,
        "OOM" => NodeErrorKind::OutOfMemory,
        "LOADING" | "BUSY" | "MASTERDOWN" | "TRYAGAIN" => NodeErrorKind::Busy,
        "MOVED" | "ASK" | "CLUSTERDOWN" | "CROSSSLOT" => NodeErrorKind::Cluster,
        _ if e.is_timeout() => NodeErrorKind::Timeout,
        _ if matches!(e.kind(), redis::ErrorKind::AuthenticationFailed) => NodeErrorKind::Auth,
        _ if e.is_io_error() || e.is_connection_refusal() || e.is_connection_dropped() => {
            NodeErrorKind::Io
        }
        _ => NodeErrorKind::Other,
    };
    let mut message = e.to_string();
    if kind == NodeErrorKind::Cluster {
        message.push_str(
            " (this node is part of a Redis Cluster; Redlock wants independent nodes: \
             list each primary as its own store URL)",
        );
    }
    NodeError::new(kind, node, message)
}

trait KindStr {
    fn kind_str(&self) -> String;
}

impl KindStr for RedisError {
    /// A redis-rs error's text can quote the URL it was given; keep only its kind.
    fn kind_str(&self) -> String {
        format!("{:?}", self.kind())
    }
}

fn as_i64(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        Value::SimpleString(s) => s.parse().ok(),
        _ => None,
    }
}

fn holding(status: i64) -> Option<Holding> {
    match status {
        1 => Some(Holding::Ours),
        0 => Some(Holding::Expired),
        -1 => Some(Holding::Other),
        _ => None,
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Store for RedisStore {
    fn name(&self) -> &str {
        &self.inner.name
    }

    fn supports_queue(&self) -> bool {
        true
    }

    fn leave_queue(&self, lock: &LockSpec) -> StoreFuture<()> {
        let inner = self.inner.clone();
        let lock = lock.clone();
        Box::pin(async move {
            let Some(queue) = &lock.queue else {
                return Ok(());
            };
            let mut inv = LEAVE_QUEUE.prepare_invoke();
            for k in lock.keys.iter() {
                inv.key(queue_key(k));
            }
            for k in lock.keys.iter() {
                inv.key(queue_deadline_key(k));
            }
            inv.arg(&*queue.waiter).arg(lock.keys.len());
            inner.run(inv).await.map(|_| ())
        })
    }

    fn acquire(&self, lock: &LockSpec) -> StoreFuture<Acquired> {
        let inner = self.inner.clone();
        let lock = lock.clone();
        Box::pin(async move {
            let mut inv = ACQUIRE.prepare_invoke();
            for k in lock.keys.iter() {
                inv.key(k);
            }
            for k in lock.keys.iter() {
                inv.key(fence_key(k));
            }
            for k in lock.keys.iter() {
                inv.key(holder_key(k));
            }
            for k in lock.keys.iter() {
                inv.key(queue_key(k));
            }
            for k in lock.keys.iter() {
                inv.key(queue_deadline_key(k));
            }
            inv.arg(&*lock.value)
                .arg(lock.ttl_ms)
                .arg(lock.keys.len())
                .arg(ms(COUNTER_RETENTION))
                .arg(lock.holder.as_deref().unwrap_or(""));
            if let Some(q) = &lock.queue {
                inv.arg(&*q.waiter)
                    .arg(q.ticket)
                    .arg(q.grace_ms)
                    .arg(if q.fair { "1" } else { "0" });
            }
            let reply = inner.run_pinned(&lock.value, inv).await?;
            let parsed = match &reply {
                Value::Array(items) if items.len() == 2 => {
                    match (as_i64(&items[0]), as_i64(&items[1])) {
                        (Some(1), Some(token)) if token > 0 => Some(Acquired::Granted {
                            counter: token as u64,
                        }),
                        (Some(0), Some(pttl)) => Some(Acquired::Held {
                            pttl: u64::try_from(pttl).ok().map(Duration::from_millis),
                        }),
                        _ => None,
                    }
                }
                _ => None,
            };
            parsed.ok_or_else(|| inner.protocol("acquire", &reply))
        })
    }

    fn commit_fence(&self, lock: &LockSpec, token: u64) -> StoreFuture<bool> {
        let inner = self.inner.clone();
        let lock = lock.clone();
        Box::pin(async move {
            let mut inv = COMMIT.prepare_invoke();
            for k in lock.keys.iter() {
                inv.key(k);
            }
            for k in lock.keys.iter() {
                inv.key(fence_key(k));
            }
            inv.arg(&*lock.value)
                .arg(token.to_string())
                .arg(lock.keys.len())
                .arg(ms(COUNTER_RETENTION));
            let reply = inner.run_pinned(&lock.value, inv).await?;
            match as_i64(&reply) {
                Some(1) => Ok(true),
                Some(0) => Ok(false),
                _ => Err(inner.protocol("commit", &reply)),
            }
        })
    }

    fn extend(&self, locks: &[LockSpec]) -> StoreFuture<Vec<Holding>> {
        let inner = self.inner.clone();
        let locks = locks.to_vec();
        Box::pin(async move {
            // One script call per chunk, all pipelined on the same connection: one round
            // trip for the whole batch, without blocking the node for long on 100k leases.
            const CHUNK: usize = 512;
            let (generation, mut conn) = inner.connection().await?;
            let mut pipe = redis::pipe();
            for chunk in locks.chunks(CHUNK) {
                let mut keys: Vec<String> = Vec::new();
                let mut cmd = redis::cmd("EVALSHA");
                for lock in chunk {
                    keys.extend(lock.keys.iter().cloned());
                    if lock.holder.is_some() {
                        keys.extend(lock.keys.iter().map(|k| holder_key(k)));
                    }
                }
                cmd.arg(EXTEND.get_hash())
                    .arg(keys.len())
                    .arg(&keys)
                    .arg(chunk.len());
                for lock in chunk {
                    cmd.arg(lock.keys.len())
                        .arg(&*lock.value)
                        .arg(lock.ttl_ms)
                        .arg(if lock.holder.is_some() { "1" } else { "0" });
                }
                pipe.add_command(cmd);
            }
            let mut replies: Result<Vec<Value>, RedisError> = pipe.query_async(&mut conn).await;
            if replies
                .as_ref()
                .is_err_and(|e| e.code() == Some("NOSCRIPT"))
            {
                // The node lost its script cache (restart, SCRIPT FLUSH): load, retry once.
                replies = match EXTEND.load_async(&mut conn).await {
                    Ok(_) => pipe.query_async(&mut conn).await,
                    Err(e) => Err(e),
                };
            }
            let replies = match replies {
                Ok(r) => r,
                Err(e) => {
                    if e.is_io_error() || e.is_connection_dropped() {
                        inner.invalidate(generation);
                    }
                    return Err(classify(&inner.name, &e));
                }
            };
            let mut out = Vec::with_capacity(locks.len());
            for reply in &replies {
                let Value::Array(items) = reply else {
                    return Err(inner.protocol("extend", reply));
                };
                for item in items {
                    out.push(
                        as_i64(item)
                            .and_then(holding)
                            .ok_or_else(|| inner.protocol("extend", reply))?,
                    );
                }
            }
            if out.len() != locks.len() {
                return Err(NodeError::new(
                    NodeErrorKind::Protocol,
                    &inner.name,
                    format!("extend answered {} of {} locks", out.len(), locks.len()),
                ));
            }
            Ok(out)
        })
    }

    fn release(&self, lock: &LockSpec) -> StoreFuture<Holding> {
        let inner = self.inner.clone();
        let lock = lock.clone();
        Box::pin(async move { release_on(&inner, &lock).await })
    }

    fn abandon(&self, lock: &LockSpec) -> StoreFuture<()> {
        let inner = self.inner.clone();
        let lock = lock.clone();
        Box::pin(async move {
            // The release goes down the same connection as the request that timed out
            // (`release_on` takes its pin), so the node runs it after that request,
            // whenever the node wakes up — even if we stop waiting for the answer. The
            // connection is then dropped for new requests, which would only queue
            // behind the stuck ones.
            let generation = inner.pins().get(&lock.value).map(|(g, _)| *g);
            let _ = release_on(&inner, &lock).await;
            if let Some(g) = generation {
                inner.invalidate(g);
            }
            Ok(())
        })
    }

    fn inspect(&self, key: &str) -> StoreFuture<KeyInfo> {
        let inner = self.inner.clone();
        let key = key.to_string();
        Box::pin(async move {
            let (generation, mut conn) = inner.connection().await?;
            let mut pipe = redis::pipe();
            pipe.get(&key)
                .pttl(&key)
                .get(holder_key(&key))
                .get(fence_key(&key));
            let (value, pttl, holder, fence): (
                Option<String>,
                i64,
                Option<String>,
                Option<String>,
            ) = match pipe.query_async(&mut conn).await {
                Ok(r) => r,
                Err(e) => {
                    if e.is_io_error() || e.is_connection_dropped() {
                        inner.invalidate(generation);
                    }
                    return Err(classify(&inner.name, &e));
                }
            };
            Ok(KeyInfo {
                pttl: value
                    .as_ref()
                    .and_then(|_| u64::try_from(pttl).ok())
                    .map(Duration::from_millis),
                holder: value.as_ref().and(holder),
                value,
                last_token: fence.and_then(|f| f.parse().ok()),
            })
        })
    }

    fn watch(&self, key: &str, waiter: Option<Arc<str>>) -> StoreFuture<Option<Watch>> {
        let inner = self.inner.clone();
        let channel = release_channel(key);
        Box::pin(async move { inner.notifier.watch(channel, waiter).await.map(Some) })
    }
}

async fn release_on(inner: &Inner, lock: &LockSpec) -> Result<Holding, NodeError> {
    let mut inv = RELEASE.prepare_invoke();
    for k in lock.keys.iter() {
        inv.key(k);
    }
    for k in lock.keys.iter() {
        inv.key(holder_key(k));
    }
    for k in lock.keys.iter() {
        inv.key(queue_key(k));
    }
    for k in lock.keys.iter() {
        inv.key(queue_deadline_key(k));
    }
    inv.arg(&*lock.value).arg(lock.keys.len());
    if let Some(q) = &lock.queue {
        inv.arg(&*q.waiter);
    }
    // After an unanswered acquire of this value: on its connection (see `pinned`).
    let pinned = inner.pins().remove(&lock.value);
    let reply = match pinned {
        Some((generation, conn)) => inner.run_on(generation, conn, inv).await?,
        None => inner.run(inv).await?,
    };
    as_i64(&reply)
        .and_then(holding)
        .ok_or_else(|| inner.protocol("release", &reply))
}
