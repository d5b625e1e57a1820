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
//!
//! Every new connection is vetted with one `INFO replication` before it is used: a
//! replica would refuse our writes at best and, with `replica-read-only no`, accept and
//! then lose them — and a release that finds nothing to delete would "succeed" there
//! without ever writing. So a replica is refused outright ([`NodeErrorKind::ReadOnly`],
//! which surfaces as a configuration error). A user not allowed to run `INFO` skips the
//! vetting (`fencelock doctor` reports that).
//!
//! TLS (`rediss://`) verifies the node's certificate against the platform trust store,
//! or the CA given by `?ca=` / [`crate::LockerBuilder::ca_cert`]; see `tls.rs`.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{AsyncConnectionConfig, Client, ConnectionAddr, RedisError, Script, Value};

use super::url::{RedisUrl, StoreOptions};
use super::{
    Acquired, Expiry, Forgot, HealthProbe, Holding, KeyInfo, LockSpec, Node, Notices,
    QueueTicket, Store, StoreFuture, WaiterLine, Watch,
};
use crate::error::{Error, NodeError, NodeErrorKind};
use crate::store::Probe;

pub(crate) mod layout;
mod notify;

pub(crate) use layout::Layout;

/// The URL schemes of a Redis node (`redis://`, `rediss://` with TLS) and of a Redis
/// Cluster counted as one node (`redis+cluster://`, `rediss+cluster://`).
pub(crate) const SCHEMES: &[&str] = &["redis", "rediss", "redis+cluster", "rediss+cluster"];

/// Opens the node (or cluster) `url` names; connects on first use.
///
/// # Errors
///
/// [`crate::ErrorKind::InvalidInput`] for a malformed URL (see `url.rs`).
pub(crate) fn open(url: &str, options: &StoreOptions) -> Result<Node, Error> {
    Ok(Arc::new(RedisStore::new(RedisUrl::parse(url)?, options)?))
}

/// Prepended to the scripts that number grants (acquire, release with hand-off), keep or
/// retire counters (commit, extend, release), read the counter seed (forget) or address
/// hand-off waiters (leave-queue).
macro_rules! with_shared {
    ($file:literal) => {
        concat!(include_str!("redis/shared.lua"), include_str!($file))
    };
}

const ACQUIRE_LUA: &str = with_shared!("redis/acquire.lua");
const COMMIT_LUA: &str = with_shared!("redis/commit.lua");
const EXTEND_LUA: &str = with_shared!("redis/extend.lua");
const RELEASE_LUA: &str = with_shared!("redis/release.lua");
const LEAVE_QUEUE_LUA: &str = with_shared!("redis/leave_queue.lua");
const FORGET_LUA: &str = with_shared!("redis/forget.lua");

static ACQUIRE: LazyLock<Script> = LazyLock::new(|| Script::new(ACQUIRE_LUA));
static COMMIT: LazyLock<Script> = LazyLock::new(|| Script::new(COMMIT_LUA));
static EXTEND: LazyLock<Script> = LazyLock::new(|| Script::new(EXTEND_LUA));
static LEAVE_QUEUE: LazyLock<Script> = LazyLock::new(|| Script::new(LEAVE_QUEUE_LUA));
static RELEASE: LazyLock<Script> = LazyLock::new(|| Script::new(RELEASE_LUA));
static FORGET: LazyLock<Script> = LazyLock::new(|| Script::new(FORGET_LUA));

/// The tail of the sibling key holding a lock key's fencing counter.
const FENCE_SUFFIX: &str = ":fencelock:fence";

// The sibling names below take a lock key's sibling prefix (`<key>:fencelock:` on a
// standalone node; `Layout::sibling_prefix` and docs/protocol.md for a cluster). The
// names given are those of a standalone node.

// The kinds of sibling key: a lock key's sibling prefix followed by one of these.
/// The fencing counter (`<key>:fencelock:fence`, [`fence_key`]).
const FENCE: &str = "fence";
/// The holder record (`<key>:fencelock:holder`, [`holder_key`]).
const HOLDER: &str = "holder";
/// The waiter line by ticket (`<key>:fencelock:queue`, [`queue_key`]).
const QUEUE: &str = "queue";
/// The waiter line by the deadline of each entry (`<key>:fencelock:queue-deadline`).
const QUEUE_DEADLINE: &str = "queue-deadline";

/// The sibling key holding a lock key's fencing counter (`<key>:fencelock:fence`).
pub(crate) fn fence_key(prefix: &str) -> String {
    format!("{prefix}{FENCE}")
}

/// `s` with Redis glob characters escaped, for SCAN MATCH.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The sibling key holding a description of the current holder, for `status`
/// (`<key>:fencelock:holder`).
pub(crate) fn holder_key(prefix: &str) -> String {
    format!("{prefix}{HOLDER}")
}

/// The sorted set of fair-mode waiters of a key, by ticket (`<key>:fencelock:queue`).
pub(crate) fn queue_key(prefix: &str) -> String {
    format!("{prefix}{QUEUE}")
}

/// The channel on which a release of a key is announced (`<key>:fencelock:released`).
pub(crate) fn release_channel(prefix: &str) -> String {
    format!("{prefix}released")
}

/// The channel `waiter` hears its notices on: a hand-off waiter its client's own
/// `<prefix>to:<inbox>` (`<key>:fencelock:to:<inbox>`; `release.lua` sends hand-offs
/// there, so the other waiting clients are not woken for them), anyone else the key's
/// release channel.
fn waiter_channel(prefix: &str, waiter: Option<&str>) -> String {
    match waiter.and_then(QueueTicket::handoff_inbox) {
        Some(inbox) => format!("{prefix}to:{inbox}"),
        None => release_channel(prefix),
    }
}

/// A connection to a standalone node, or to a Redis Cluster (which routes each
/// command by its first key and follows `MOVED`/`ASK`). Clones share it.
#[derive(Clone)]
enum Conn {
    Node(MultiplexedConnection),
    Cluster(ClusterConnection),
    /// A cluster connection that sends everything to one node (`host`, `port`): for
    /// what is asked of each primary in turn (SCAN) or of one of them (the probe).
    Routed(ClusterConnection, String, u16),
}

impl Conn {
    fn route(host: &str, port: u16) -> redis::cluster_routing::RoutingInfo {
        redis::cluster_routing::RoutingInfo::SingleNode(
            redis::cluster_routing::SingleNodeRoutingInfo::ByAddress {
                host: host.to_string(),
                port,
            },
        )
    }

    /// One connection per primary of a cluster (from `CLUSTER NODES`, primaries that
    /// are not marked failed, in address order); for a standalone node, itself.
    async fn primaries(&self) -> Result<Vec<Conn>, RedisError> {
        let Conn::Cluster(c) = self else {
            return Ok(vec![self.clone()]);
        };
        let text: String = redis::cmd("CLUSTER")
            .arg("NODES")
            .query_async(&mut c.clone())
            .await?;
        let mut primaries: Vec<(String, u16)> = text
            .lines()
            .filter_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let flags = fields.get(2)?;
                if !flags.split(',').any(|f| f == "master")
                    || flags.split(',').any(|f| f == "fail" || f == "noaddr")
                {
                    return None;
                }
                // ip:port@cport[,hostname]
                let addr = fields.get(1)?.split(['@', ',']).next()?;
                let (host, port) = addr.rsplit_once(':')?;
                Some((host.to_string(), port.parse().ok()?))
            })
            .collect();
        primaries.sort();
        Ok(primaries
            .into_iter()
            .map(|(host, port)| Conn::Routed(c.clone(), host, port))
            .collect())
    }
}

impl redis::aio::ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> redis::RedisFuture<'a, Value> {
        match self {
            Conn::Node(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
            Conn::Routed(c, host, port) => {
                let route = Conn::route(host, *port);
                Box::pin(c.route_command(cmd.clone(), route))
            }
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Node(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Routed(c, host, port) => {
                let route = redis::cluster_routing::SingleNodeRoutingInfo::ByAddress {
                    host: host.clone(),
                    port: *port,
                };
                Box::pin(c.route_pipeline(pipeline.clone(), offset, count, route))
            }
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Node(c) => c.get_db(),
            Conn::Cluster(c) | Conn::Routed(c, ..) => c.get_db(),
        }
    }
}

/// What connections are made with.
// One per store, made once: the size of the cluster variant costs nothing.
#[allow(clippy::large_enum_variant)]
enum Connector {
    Node(Client),
    Cluster(ClusterClient),
}

/// A handle on one Redis node; clones share the connection.
#[derive(Clone)]
pub(crate) struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    client: Connector,
    /// How sibling keys are named: one Redis Cluster (`redis+cluster://`) keeps them
    /// in their lock key's slot.
    layout: Layout,
    config: AsyncConnectionConfig,
    /// The live connection, with a generation number so that a caller invalidates only
    /// the connection it saw fail, never a fresh one.
    conn: Mutex<Option<(u64, Conn)>>,
    /// Serialises connecting, so a burst of callers makes one connection, not many.
    connecting: tokio::sync::Mutex<()>,
    generation: std::sync::atomic::AtomicU64,
    /// For each lock value whose acquire (or commit) has not been answered yet: the
    /// connection it went down. Its clean-up must use the same connection: a node that
    /// was stopped runs the bytes already in its socket when it wakes, so a release on
    /// any other connection could run before the late acquire and leave its key behind.
    pinned: Mutex<HashMap<Arc<str>, (u64, Conn)>>,
    notifier: notify::Notifier,
    /// The scripts' `counter_tail_ms` ([`StoreOptions::counter_retention`]).
    counter_tail_ms: u64,
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
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(options.connect_timeout))
            .set_response_timeout(None);
        let (client, layout, notices) = if url.cluster_seeds.is_empty() {
            let client = client_for(url, options)?;
            (
                Connector::Node(client.clone()),
                Layout::Standalone,
                vec![client],
            )
        } else {
            let (cluster, seeds) = cluster_client_for(url, options)?;
            (Connector::Cluster(cluster), Layout::Cluster, seeds)
        };
        Ok(RedisStore {
            inner: Arc::new(Inner {
                notifier: notify::Notifier::new(notices, name.clone(), options.clone()),
                name,
                client,
                layout,
                config,
                conn: Mutex::new(None),
                connecting: tokio::sync::Mutex::new(()),
                generation: std::sync::atomic::AtomicU64::new(0),
                pinned: Mutex::new(HashMap::new()),
                counter_tail_ms: ms(options.counter_retention),
            }),
        })
    }
}

/// The redis-rs client for one Redis Cluster (`redis+cluster://`), and a plain client
/// per seed node for release notices: a PUBLISH on a cluster reaches the subscribers
/// of every node, so one pub/sub connection to any seed hears them all (the notifier
/// moves on to the next seed when one is down).
///
/// # Errors
///
/// As [`client_for`], for any seed; [`crate::ErrorKind::InvalidInput`] when redis-rs
/// refuses the seeds together (different passwords, TLS modes or databases).
fn cluster_client_for(
    url: RedisUrl,
    options: &StoreOptions,
) -> Result<(ClusterClient, Vec<Client>), Error> {
    let name = url.redacted.clone();
    let mut seeds = Vec::with_capacity(url.cluster_seeds.len());
    for info in &url.cluster_seeds {
        let mut seed = url.clone();
        seed.info = info.clone();
        seed.cluster_seeds.clear();
        seeds.push(client_for(seed, options)?);
    }
    let infos: Vec<redis::ConnectionInfo> = seeds
        .iter()
        .map(|c| c.get_connection_info().clone())
        .collect();
    let mut builder = ClusterClient::builder(infos).connection_timeout(options.connect_timeout);
    let ca = url.ca_cert.or_else(|| options.tls.ca_cert.clone());
    if url.tls
        && !options.tls.danger_accept_invalid_certs
        && let Some(path) = ca
    {
        let pem = crate::tls::read_ca_pem(&path)
            .map_err(|why| Error::config(format!("{name}: {why}")))?;
        builder = builder.certs(redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(pem),
        });
    }
    let cluster = builder
        .build()
        .map_err(|e| Error::invalid("store URL", format!("{name}: {e}")))?;
    Ok((cluster, seeds))
}

/// The redis-rs client for one node: password from the options when the URL has
/// none, TLS trust anchors, and the refusal of unverified TLS unless asked for.
///
/// # Errors
///
/// [`crate::ErrorKind::Config`] for `#insecure` without
/// [`crate::LockerBuilder::danger_accept_invalid_certs`], or an unreadable CA file;
/// [`crate::ErrorKind::InvalidInput`] when redis-rs refuses the address.
fn client_for(url: RedisUrl, options: &StoreOptions) -> Result<Client, Error> {
    let name = url.redacted;
    let refused = |e: RedisError| Error::invalid("store URL", format!("{name}: {}", e.kind_str()));
    let mut info = url.info;
    if info.redis_settings().password().is_none()
        && let Some(password) = &options.password
    {
        let settings = info
            .redis_settings()
            .clone()
            .set_password(password.expose());
        info = info.set_redis_settings(settings);
    }
    if !url.tls {
        return Client::open(info).map_err(refused);
    }
    crate::tls::ensure_crypto_provider();
    let danger = options.tls.danger_accept_invalid_certs;
    if url.insecure && !danger {
        return Err(Error::config(format!(
            "{name}: #insecure turns TLS certificate verification off, which lets anyone \
             on the network path impersonate the node; fencelock refuses it unless \
             LockerBuilder::danger_accept_invalid_certs(true) asks for it. Prefer \
             ?ca=/path/ca.pem to trust your own CA"
        )));
    }
    if danger {
        tracing::warn!(
            node = %name,
            "TLS certificate verification is OFF for this node (danger_accept_invalid_certs): \
             anyone on the network path can impersonate it"
        );
        if let ConnectionAddr::TcpTls { host, port, .. } = info.addr().clone() {
            info = info.set_addr(ConnectionAddr::TcpTls {
                host,
                port,
                insecure: true,
                tls_params: None,
            });
        }
        return Client::open(info).map_err(refused);
    }
    match url.ca_cert.or_else(|| options.tls.ca_cert.clone()) {
        None => Client::open(info).map_err(refused),
        Some(path) => {
            let pem = crate::tls::read_ca_pem(&path)
                .map_err(|why| Error::config(format!("{name}: {why}")))?;
            let certificates = redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(pem),
            };
            Client::build_with_tls(info, certificates).map_err(|e| {
                Error::config(format!(
                    "{name}: the CA file {} was refused: {}",
                    path.display(),
                    e.kind_str()
                ))
            })
        }
    }
}

/// The commands a fencelock user runs, directly or inside its scripts, with sample
/// arguments for `ACL DRYRUN` (`{k}` is a lock key, `{q}` a queue key, `{c}` the
/// release channel). The scripts' inner commands need grants too: Redis checks every
/// `redis.call` against the calling user's ACL, keys included.
pub(crate) const NEEDED_COMMANDS: &[&[&str]] = &[
    &["PING"],
    &[
        "EVALSHA",
        "0000000000000000000000000000000000000000",
        "1",
        "{k}",
    ],
    &["SCRIPT", "LOAD", "return 1"],
    &["GET", "{k}"],
    &["SET", "{k}", "v", "PX", "1000"],
    &["DEL", "{k}"],
    &["PEXPIRE", "{k}", "1000"],
    &["PTTL", "{k}"],
    &["TIME"],
    &["PUBLISH", "{c}", "1"],
    &["SUBSCRIBE", "{c}"],
    &["UNSUBSCRIBE", "{c}"],
    &["ZADD", "{q}", "1", "w"],
    &["ZRANGE", "{q}", "0", "0"],
    &["ZRANGEBYSCORE", "{q}", "-inf", "0"],
    &["ZREM", "{q}", "w"],
    &["ZSCORE", "{q}", "w"],
    &["INFO", "replication"],
];

impl RedisStore {
    /// What the start-up checks and `fencelock doctor` want to know about this node:
    /// three round trips (TIME, INFO, CONFIG GET save), and with `thorough` also three
    /// PINGs for the round trip and the ACL questions (one `ACL DRYRUN` per needed
    /// command). Questions the user may not ask (NOPERM) are left unanswered, with a
    /// note.
    pub(crate) async fn probe(&self, prefix: &str, thorough: bool) -> Result<Probe, NodeError> {
        let inner = &self.inner;
        let (generation, conn) = inner.connection().await?;
        let fail = |e: RedisError| {
            if e.is_io_error() || e.is_connection_dropped() {
                inner.invalidate(generation);
            }
            classify(&inner.name, &e)
        };
        // A cluster answers through one of its primaries (the first by address): its
        // clock, version and settings stand for the cluster's.
        let mut conn = conn
            .primaries()
            .await
            .map_err(fail)?
            .into_iter()
            .next()
            .unwrap_or(conn);
        let mut probe = Probe::default();

        // Round trip: the median of three PINGs (thorough), else TIME's round trip.
        let mut trips = Vec::with_capacity(3);
        for _ in 0..if thorough { 3 } else { 0 } {
            let start = std::time::Instant::now();
            redis::cmd("PING")
                .query_async::<Value>(&mut conn)
                .await
                .map_err(fail)?;
            trips.push(start.elapsed());
        }
        trips.sort();
        probe.round_trip = trips.get(1).copied().unwrap_or_default();

        // Clock offset: the node's TIME against ours at the middle of the round trip.
        let before = std::time::SystemTime::now();
        match redis::cmd("TIME")
            .query_async::<(i64, i64)>(&mut conn)
            .await
        {
            Ok((secs, micros)) => {
                let after = std::time::SystemTime::now();
                if !thorough {
                    probe.round_trip = after.duration_since(before).unwrap_or_default();
                }
                let mid = before + after.duration_since(before).unwrap_or_default() / 2;
                let ours = mid
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
                let theirs = secs.saturating_mul(1_000_000).saturating_add(micros);
                probe.clock_offset = Some(theirs.saturating_sub(ours) / 1000);
            }
            Err(e) if e.code() == Some("NOPERM") => {
                probe
                    .notes
                    .push("TIME is not permitted (the acquire script needs it)".into());
            }
            Err(e) => return Err(fail(e)),
        }

        match redis::cmd("INFO")
            .arg("server")
            .arg("replication")
            .arg("memory")
            .arg("persistence")
            .arg("cluster")
            .query_async::<String>(&mut conn)
            .await
        {
            Ok(info) => {
                let f = parse_info(&info);
                let get = |k: &str| f.get(k).map(|v| (*v).to_string());
                probe.version = get("redis_version");
                probe.role = get("role");
                probe.run_id = get("run_id");
                probe.maxmemory_policy = get("maxmemory_policy");
                probe.aof = get("aof_enabled").map(|v| v == "1");
                probe.cluster = get("cluster_enabled").map(|v| v == "1");
            }
            Err(e) if e.code() == Some("NOPERM") => probe.notes.push(
                "INFO is not permitted: role, eviction policy and persistence unknown".into(),
            ),
            Err(e) => return Err(fail(e)),
        }

        match redis::cmd("CONFIG")
            .arg("GET")
            .arg("save")
            .query_async::<Vec<String>>(&mut conn)
            .await
        {
            Ok(pairs) => probe.rdb_save = pairs.get(1).cloned(),
            Err(e) if e.code() == Some("NOPERM") => {}
            Err(e) => return Err(fail(e)),
        }

        if !thorough {
            return Ok(probe);
        }
        match redis::cmd("ACL")
            .arg("WHOAMI")
            .query_async::<String>(&mut conn)
            .await
        {
            Ok(user) => probe.user = Some(user),
            Err(e) if e.code() == Some("NOPERM") => {}
            Err(e) => return Err(fail(e)),
        }

        if let Some(user) = probe.user.clone() {
            let key = format!("{prefix}fencelock-doctor");
            let siblings = inner.prefix(&key)?;
            let (q, c) = (queue_key(&siblings), release_channel(&siblings));
            let mut missing = Vec::new();
            let mut checked = true;
            for command in NEEDED_COMMANDS {
                let mut cmd = redis::cmd("ACL");
                cmd.arg("DRYRUN").arg(&user);
                for a in *command {
                    cmd.arg(match *a {
                        "{k}" => key.as_str(),
                        "{q}" => q.as_str(),
                        "{c}" => c.as_str(),
                        other => other,
                    });
                }
                match cmd.query_async::<Value>(&mut conn).await {
                    Ok(Value::Okay) => {}
                    Ok(Value::SimpleString(s)) if s == "OK" => {}
                    Ok(_) => missing.push(
                        command
                            .iter()
                            .take(2)
                            .copied()
                            .collect::<Vec<_>>()
                            .join(" "),
                    ),
                    Err(e) if e.code() == Some("NOPERM") => {
                        checked = false;
                        break;
                    }
                    // ACL DRYRUN answers an error for a denied command on some versions.
                    Err(e) if e.code().is_some() => {
                        missing.push(
                            command
                                .iter()
                                .take(2)
                                .copied()
                                .collect::<Vec<_>>()
                                .join(" "),
                        );
                    }
                    Err(e) => return Err(fail(e)),
                }
            }
            if checked {
                // Show only the command name (and subcommand for SCRIPT LOAD).
                for m in &mut missing {
                    if !m.starts_with("SCRIPT") {
                        *m = m.split(' ').next().unwrap_or_default().to_string();
                    }
                }
                probe.missing = Some(missing);
            } else {
                probe.notes.push(
                    "ACL DRYRUN is not permitted: granted permissions are tested by the probe lock only"
                        .into(),
                );
            }
        }
        Ok(probe)
    }
}

impl Inner {
    fn current(&self) -> Option<(u64, Conn)> {
        self.conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// The shared connection, connecting first if there is none.
    async fn connection(&self) -> Result<(u64, Conn), NodeError> {
        if let Some(c) = self.current() {
            return Ok(c);
        }
        let _one_at_a_time = self.connecting.lock().await;
        if let Some(c) = self.current() {
            return Ok(c);
        }
        let mut conn = match &self.client {
            Connector::Node(client) => {
                let mut conn = client
                    .get_multiplexed_async_connection_with_config(&self.config)
                    .await
                    .map_err(|e| classify(&self.name, &e))?;
                self.vet(&mut conn).await?;
                Conn::Node(conn)
            }
            // The cluster client sends writes to the primary of each slot only, so
            // there is no replica to refuse.
            Connector::Cluster(client) => Conn::Cluster(
                client
                    .get_async_connection()
                    .await
                    .map_err(|e| classify(&self.name, &e))?,
            ),
        };
        // Load every script now, in one round trip: a clean-up queued behind a request
        // on a stopped node must not meet NOSCRIPT when the node wakes (its retry would
        // need an answer nobody waits for any more), and first use costs no extra trip.
        // Its answer is ignored: a failure here shows again, named, on first use (a user
        // needs SCRIPT LOAD anyway: redis-rs reloads on NOSCRIPT, it never falls back to
        // EVAL; docs/security.md).
        let sources = [
            ACQUIRE_LUA,
            COMMIT_LUA,
            EXTEND_LUA,
            RELEASE_LUA,
            LEAVE_QUEUE_LUA,
            FORGET_LUA,
        ];
        if let Conn::Cluster(_) = conn {
            // One command each: redis-rs sends a lone SCRIPT LOAD to every node of the
            // cluster, a pipeline to one node only.
            for source in sources {
                let _ = redis::cmd("SCRIPT")
                    .arg("LOAD")
                    .arg(source)
                    .query_async::<Value>(&mut conn)
                    .await;
            }
        } else {
            let mut load = redis::pipe();
            for source in sources {
                load.cmd("SCRIPT").arg("LOAD").arg(source);
            }
            let _ = load.query_async::<Vec<Value>>(&mut conn).await;
        }
        let generation = self
            .generation
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        *self.conn.lock().unwrap_or_else(|p| p.into_inner()) = Some((generation, conn.clone()));
        Ok((generation, conn))
    }

    /// Refuses a node that is a replica, or a Redis Cluster node named by a standalone
    /// URL, before anything is sent to it. Skipped (with a debug line) when the user
    /// may not run `INFO`.
    async fn vet(&self, conn: &mut MultiplexedConnection) -> Result<(), NodeError> {
        let info: String = match redis::cmd("INFO")
            .arg("replication")
            .arg("cluster")
            .query_async(conn)
            .await
        {
            Ok(info) => info,
            Err(e) if e.code() == Some("NOPERM") => {
                tracing::debug!(node = %self.name, "cannot check the node's role: INFO not permitted");
                return Ok(());
            }
            Err(e) => return Err(classify(&self.name, &e)),
        };
        let fields = parse_info(&info);
        if fields.get("cluster_enabled").is_some_and(|c| *c == "1") {
            return Err(cluster_node_error(&self.name));
        }
        if fields.get("role").is_some_and(|r| *r == "slave") {
            return Err(replica_error(&self.name));
        }
        Ok(())
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
    async fn run(&self, call: ScriptCall) -> Result<Value, NodeError> {
        let (generation, conn) = self.connection().await?;
        self.run_on(generation, conn, call).await
    }

    /// Runs a request that may set keys with `value`, remembering its connection until
    /// the node answers: if the caller gives up first (timeout, cancellation), the
    /// clean-up goes down the same connection (see `pinned`).
    async fn run_pinned(
        &self,
        value: &Arc<str>,
        call: ScriptCall,
    ) -> Result<Value, NodeError> {
        let (generation, conn) = self.connection().await?;
        self.pins()
            .insert(value.clone(), (generation, conn.clone()));
        let result = self.run_on(generation, conn, call).await;
        // Answered: the request has run, so later requests on any connection follow it.
        self.pins().remove(value);
        result
    }

    fn pins(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, (u64, Conn)>> {
        self.pinned.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn run_on(
        &self,
        generation: u64,
        mut conn: Conn,
        call: ScriptCall,
    ) -> Result<Value, NodeError> {
        match call.invoke(&mut conn).await {
            Ok(v) => Ok(v),
            Err(e) => {
                if e.is_io_error() || e.is_connection_dropped() || e.is_unrecoverable_error() {
                    self.invalidate(generation);
                }
                Err(classify(&self.name, &e))
            }
        }
    }

    /// The sibling prefix of `key` ([`Layout::sibling_prefix`]).
    ///
    /// # Errors
    ///
    /// [`NodeErrorKind::Cluster`] (a configuration error) for a cluster key that
    /// cannot have siblings in its slot.
    fn prefix(&self, key: &str) -> Result<String, NodeError> {
        self.layout
            .sibling_prefix(key)
            .map_err(|why| NodeError::new(NodeErrorKind::Cluster, &self.name, why))
    }

    /// The sibling prefixes of the keys of one lock. On a cluster, the keys must share
    /// one slot: each operation is one script, and a script touches one slot.
    ///
    /// # Errors
    ///
    /// [`NodeErrorKind::Cluster`] (a configuration error) for a cluster key that
    /// cannot have siblings in its slot, or keys in different slots.
    fn prefixes(&self, keys: &[String]) -> Result<Vec<String>, NodeError> {
        if self.layout == Layout::Cluster
            && let Some(first) = keys.first()
        {
            let slot = layout::key_slot(first.as_bytes());
            if let Some(other) = keys.iter().find(|k| layout::key_slot(k.as_bytes()) != slot) {
                return Err(NodeError::new(
                    NodeErrorKind::Cluster,
                    &self.name,
                    format!(
                        "the keys {first:?} and {other:?} of one lock hash to different \
                         Redis Cluster slots ({slot} and {}), and one script cannot touch \
                         both: give the keys of a lock a common hash tag, as in \
                         {{account}}:a and {{account}}:b",
                        layout::key_slot(other.as_bytes())
                    ),
                ));
            }
        }
        keys.iter().map(|k| self.prefix(k)).collect()
    }

    fn protocol(&self, what: &str, value: &Value) -> NodeError {
        NodeError::new(
            NodeErrorKind::Protocol,
            &self.name,
            format!("unexpected reply to {what}: {value:?}"),
        )
    }
}

/// Turns a redis-rs error into a node error of the right kind, without secrets, with a
/// hint at what to do. The node's own words are kept: they never contain the password
/// (Redis answers `WRONGPASS invalid username-password pair`) nor a lock value.
pub(crate) fn classify(node: &str, e: &RedisError) -> NodeError {
    let mut code = e.code().unwrap_or("");
    // A script's `redis.call` refused by the ACL comes back as a plain ERR.
    if code == "ERR" {
        let text = e.to_string();
        if text.contains("user executing the script can't") || text.contains("no permissions to") {
            code = "NOPERM";
        }
    }
    let (kind, hint) = match code {
        "NOAUTH" => (
            NodeErrorKind::Auth,
            "the node wants a password: put it in the URL, or better in FENCELOCK_PASSWORD \
             / LockerBuilder::password_from_env so it does not show in `ps`",
        ),
        "WRONGPASS" => (
            NodeErrorKind::Auth,
            "the user name or password was refused (the password is never shown)",
        ),
        "NOPERM" => (
            NodeErrorKind::Auth,
            "the ACL user lacks a permission fencelock needs: see the minimum ACL in \
             docs/security.md, or run `fencelock doctor`",
        ),
        "READONLY" => (
            NodeErrorKind::ReadOnly,
            "the node is a read-only replica; Redlock needs every node to be a primary",
        ),
        "WRONGTYPE" => (
            NodeErrorKind::WrongType,
            "a key fencelock uses (the lock key or one of its `:fencelock:` siblings) holds \
             data of another type; it is someone else's and is left alone: choose another \
             key or prefix",
        ),
        "OOM" => (
            NodeErrorKind::OutOfMemory,
            "the node reached maxmemory and refuses writes; free memory or raise maxmemory",
        ),
        "LOADING" => (
            NodeErrorKind::Busy,
            "the node is loading its dataset after a restart; retrying",
        ),
        "BUSY" => (
            NodeErrorKind::Busy,
            "the node is running a long script or function and answers nothing else until \
             it ends (SCRIPT KILL / FUNCTION KILL)",
        ),
        "MASTERDOWN" => (
            NodeErrorKind::Busy,
            "the replica lost its primary (replica-serve-stale-data no); list primaries only",
        ),
        "TRYAGAIN" => (NodeErrorKind::Busy, "the node asked to retry"),
        "MOVED" | "ASK" | "CROSSSLOT" => (NodeErrorKind::Cluster, CLUSTER_HINT),
        "CLUSTERDOWN" => (
            NodeErrorKind::Busy,
            "the Redis Cluster does not serve this key's slot right now (a failover or a \
             resharding in progress?); retrying",
        ),
        "NOSCRIPT" => (
            NodeErrorKind::Other,
            "the node lost its script cache and reloading failed (is SCRIPT LOAD allowed?)",
        ),
        _ if e.is_timeout() => (NodeErrorKind::Timeout, ""),
        _ if matches!(e.kind(), redis::ErrorKind::AuthenticationFailed) => (
            NodeErrorKind::Auth,
            "authentication failed (the password is never shown)",
        ),
        _ if crate::tls::is_certificate_error(e) => (
            NodeErrorKind::Tls,
            "the node's TLS certificate is not trusted: give its CA with ?ca=/path/ca.pem \
             or LockerBuilder::ca_cert, and check the host name matches the certificate",
        ),
        _ if e.is_io_error() || e.is_connection_refusal() || e.is_connection_dropped() => {
            (NodeErrorKind::Io, "")
        }
        _ => (NodeErrorKind::Other, ""),
    };
    let mut message = e.to_string();
    if kind == NodeErrorKind::Timeout && message == "timed out" {
        // redis-rs' own response time-out; the kind already says "timed out".
        message = "no answer in time".into();
    }
    if !hint.is_empty() {
        message.push_str(" (");
        message.push_str(hint);
        message.push(')');
    }
    NodeError::new(kind, node, message)
}

/// How to name a Redis Cluster as a store; said wherever a cluster node shows up
/// where a standalone node was expected.
const CLUSTER_HINT: &str = "this node is part of a Redis Cluster: name the whole cluster as \
     one store, redis+cluster://host:port[,host:port…] (one cluster counts as one Redlock \
     node: its failover is not the independence Redlock's majority needs)";

/// The error for a Redis Cluster node listed with a standalone URL.
fn cluster_node_error(node: &str) -> NodeError {
    NodeError::new(
        NodeErrorKind::Cluster,
        node,
        format!("INFO cluster says cluster_enabled:1; {CLUSTER_HINT}"),
    )
}

/// The error for a node that turned out to be a replica.
fn replica_error(node: &str) -> NodeError {
    NodeError::new(
        NodeErrorKind::ReadOnly,
        node,
        "the node is a replica (INFO replication says role:slave); Redlock needs every \
         node to be an independent primary, or a release could silently do nothing: list \
         primaries only",
    )
}

/// `INFO` text as `field → value` (section headers and blank lines skipped).
pub(crate) fn parse_info(info: &str) -> std::collections::HashMap<&str, &str> {
    info.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.trim_end_matches('\r').split_once(':'))
        .collect()
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

/// The acquire script's reply: `{1, token}` granted (token > 0), `{2, token}` handed
/// over, `{0, wait_ms, joined, silent}` held (`wait_ms` −1: no expiry; `joined` and
/// `silent` 0 or 1). Anything else is `None`, a protocol error.
fn decode_acquire(reply: &Value) -> Option<Acquired> {
    let Value::Array(items) = reply else {
        return None;
    };
    let ints: Option<Vec<i64>> = items.iter().map(as_i64).collect();
    match *ints?.as_slice() {
        [1, token] if token > 0 => Some(Acquired::Granted {
            counter: token.unsigned_abs(),
        }),
        [2, token] if token > 0 => Some(Acquired::HandedOver {
            counter: token.unsigned_abs(),
        }),
        [0, pttl, joined @ (0 | 1), silent @ (0 | 1)] => Some(Acquired::Held {
            pttl: u64::try_from(pttl).ok().map(Duration::from_millis),
            joined: joined == 1,
            silent: silent == 1,
        }),
        _ => None,
    }
}

/// The extend pipeline's replies: one array of statuses per chunk, flattened. On
/// error, the reply that made no sense.
fn decode_extend(replies: &[Value]) -> Result<Vec<Holding>, &Value> {
    let mut out = Vec::new();
    for reply in replies {
        let Value::Array(items) = reply else {
            return Err(reply);
        };
        for item in items {
            out.push(as_i64(item).and_then(extend_holding).ok_or(reply)?);
        }
    }
    Ok(out)
}

/// Entry point for the `script_reply` fuzz target (`fuzz/`): decodes arbitrary bytes
/// as a RESP reply (redis-rs' parser) and runs every reply decoder of this store on
/// it. The property is that nothing panics and a grant always carries a positive
/// token. Not part of the API.
///
/// # Panics
///
/// When a property is broken: that is what the fuzzer looks for.
#[doc(hidden)]
pub fn fuzz_decode_reply(bytes: &[u8]) {
    let Ok(value) = redis::parse_redis_value(bytes) else {
        return;
    };
    if let Some(Acquired::Granted { counter } | Acquired::HandedOver { counter }) =
        decode_acquire(&value)
    {
        assert!(counter > 0, "a grant with token 0");
    }
    let _ = decode_extend(std::slice::from_ref(&value));
    let _ = as_i64(&value).and_then(holding);
    if let Value::BulkString(b) = &value
        && let Ok(text) = std::str::from_utf8(b)
    {
        let _ = parse_info(text);
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

/// An extend's status per lock: a release's, or 2 for keys taken back (`extend.lua`).
fn extend_holding(status: i64) -> Option<Holding> {
    match status {
        2 => Some(Holding::Reclaimed),
        other => holding(other),
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Store for RedisStore {
    fn name(&self) -> &str {
        &self.inner.name
    }

    fn acquire(&self, lock: &LockSpec) -> StoreFuture<Acquired> {
        let inner = self.inner.clone();
        let lock = lock.clone();
        Box::pin(async move {
            let mut inv = ScriptCall::with_keys(
                &ACQUIRE,
                &lock,
                &inner.prefixes(&lock.keys)?,
                &[None, Some(FENCE), Some(HOLDER), Some(QUEUE), Some(QUEUE_DEADLINE)],
            );
            inv.arg(&*lock.value)
                .arg(lock.ttl_ms)
                .arg(lock.keys.len())
                .arg(inner.counter_tail_ms)
                .arg(lock.holder.as_deref().unwrap_or(""));
            if let Some(q) = &lock.queue {
                inv.arg(&*q.waiter)
                    .arg(q.ticket)
                    .arg(q.grace_ms)
                    .arg(if q.fair { "1" } else { "0" });
            }
            let reply = inner.run_pinned(&lock.value, inv).await?;
            let parsed = decode_acquire(&reply);
            parsed.ok_or_else(|| inner.protocol("acquire", &reply))
        })
    }

    fn commit_fence(&self, lock: &LockSpec, token: u64) -> StoreFuture<bool> {
        let inner = self.inner.clone();
        let lock = lock.clone();
        Box::pin(async move {
            let prefixes = inner.prefixes(&lock.keys)?;
            let mut inv = ScriptCall::with_keys(&COMMIT, &lock, &prefixes, &[None, Some(FENCE)]);
            inv.arg(&*lock.value)
                .arg(token.to_string())
                .arg(lock.keys.len())
                .arg(inner.counter_tail_ms);
            let reply = inner.run_pinned(&lock.value, inv).await?;
            match as_i64(&reply) {
                Some(1) => Ok(true),
                Some(0) => Ok(false),
                _ => Err(inner.protocol("commit", &reply)),
            }
        })
    }

    fn extend(
        &self,
        locks: &[LockSpec],
        expiry: Expiry,
        reclaim: bool,
    ) -> StoreFuture<Vec<Holding>> {
        let inner = self.inner.clone();
        let locks = locks.to_vec();
        Box::pin(async move {
            // Nothing to send (Redis refuses an empty pipeline).
            if locks.is_empty() {
                return Ok(Vec::new());
            }
            if inner.layout == Layout::Standalone {
                return extend_on(&inner, &locks, expiry, reclaim).await;
            }
            // A cluster: one batch per slot (a script touches one slot), all batches
            // at once; each goes to the slot's primary.
            let mut slots: std::collections::BTreeMap<u16, Vec<usize>> = Default::default();
            for (i, lock) in locks.iter().enumerate() {
                let first = lock.keys.first().map_or(&b""[..], |k| k.as_bytes());
                slots.entry(layout::key_slot(first)).or_default().push(i);
            }
            let batches: Vec<(Vec<usize>, Vec<LockSpec>)> = slots
                .into_values()
                .map(|idx| {
                    let group = idx.iter().map(|&i| locks[i].clone()).collect();
                    (idx, group)
                })
                .collect();
            let answers = futures_util::future::join_all(
                batches
                    .iter()
                    .map(|(_, group)| extend_on(&inner, group, expiry, reclaim)),
            )
            .await;
            let mut out = vec![Holding::Expired; locks.len()];
            for ((idx, _), answer) in batches.iter().zip(answers) {
                for (&i, holding) in idx.iter().zip(answer?) {
                    out[i] = holding;
                }
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

    fn known_keys(&self, prefix: &str, limit: usize) -> StoreFuture<Vec<String>> {
        let inner = self.inner.clone();
        // Every key locked through fencelock has a counter beside it: scan for those,
        // so data keys that merely share the prefix are not taken for locks. On a
        // cluster: on every primary, for both sibling layouts (layout.rs).
        let mut patterns = vec![(
            format!("{}*{}", glob_escape(prefix), FENCE_SUFFIX),
            FENCE_SUFFIX,
            false,
        )];
        if inner.layout == Layout::Cluster {
            patterns.push((
                format!(
                    "\\{{{}*}}{}",
                    glob_escape(prefix),
                    layout::WRAPPED_FENCE_SUFFIX
                ),
                layout::WRAPPED_FENCE_SUFFIX,
                true,
            ));
        }
        Box::pin(async move {
            let (generation, conn) = inner.connection().await?;
            let fail = |e: RedisError| {
                if e.is_io_error() || e.is_connection_dropped() {
                    inner.invalidate(generation);
                }
                classify(&inner.name, &e)
            };
            let mut keys = Vec::new();
            'nodes: for mut node in conn.primaries().await.map_err(fail)? {
                for (pattern, suffix, wrapped) in &patterns {
                    let mut cursor: u64 = 0;
                    loop {
                        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                            .arg(cursor)
                            .arg("MATCH")
                            .arg(pattern)
                            .arg("COUNT")
                            .arg(1000)
                            .query_async(&mut node)
                            .await
                            .map_err(fail)?;
                        keys.extend(batch.into_iter().filter_map(|k| {
                            let key = k.strip_suffix(suffix)?;
                            if *wrapped {
                                key.strip_prefix('{')?.strip_suffix('}').map(str::to_string)
                            } else {
                                Some(key.to_string())
                            }
                        }));
                        cursor = next;
                        if keys.len() >= limit {
                            break 'nodes;
                        }
                        if cursor == 0 {
                            break;
                        }
                    }
                }
            }
            keys.sort();
            keys.dedup();
            keys.truncate(limit);
            Ok(keys)
        })
    }

    fn inspect(&self, key: &str) -> StoreFuture<KeyInfo> {
        let inner = self.inner.clone();
        let key = key.to_string();
        Box::pin(async move {
            let prefix = inner.prefix(&key)?;
            let (generation, mut conn) = inner.connection().await?;
            let mut pipe = redis::pipe();
            pipe.get(&key)
                .pttl(&key)
                .get(holder_key(&prefix))
                .get(fence_key(&prefix));
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

    fn forget(&self, key: &str) -> StoreFuture<Forgot> {
        let inner = self.inner.clone();
        let key = key.to_string();
        Box::pin(async move {
            let prefix = inner.prefix(&key)?;
            let mut inv = ScriptCall::new(&FORGET, 5);
            inv.key(&key)
                .sibling(&prefix, FENCE)
                .sibling(&prefix, HOLDER)
                .sibling(&prefix, QUEUE)
                .sibling(&prefix, QUEUE_DEADLINE);
            let reply = inner.run(inv).await?;
            match as_i64(&reply) {
                Some(1) => Ok(Forgot::Done),
                Some(0) => Ok(Forgot::InUse),
                Some(n) if n < 0 => Ok(Forgot::TooSoon(Duration::from_millis(n.unsigned_abs()))),
                _ => Err(inner.protocol("forget", &reply)),
            }
        })
    }

    fn joins_quorum(&self) -> bool {
        true
    }

    fn notices(&self) -> Option<&dyn Notices> {
        Some(self)
    }

    fn waiter_line(&self) -> Option<&dyn WaiterLine> {
        Some(self)
    }

    fn health(&self) -> Option<&dyn HealthProbe> {
        Some(self)
    }
}

/// Release notices over pub/sub (`notify.rs`): a key's release channel, and this
/// client's own inbox for hand-offs.
impl Notices for RedisStore {
    fn watch(&self, key: &str, waiter: Option<Arc<str>>) -> StoreFuture<Watch> {
        let inner = self.inner.clone();
        let prefix = inner.prefix(key);
        Box::pin(async move {
            let channel = waiter_channel(&prefix?, waiter.as_deref());
            inner.notifier.watch(channel, waiter).await
        })
    }

    fn watch_now(&self, key: &str, waiter: Option<Arc<str>>) -> Option<Watch> {
        let prefix = self.inner.prefix(key).ok()?;
        let channel = waiter_channel(&prefix, waiter.as_deref());
        self.inner.notifier.watch_now(&channel, waiter)
    }

    fn inbox(&self) -> Option<&str> {
        Some(self.inner.notifier.inbox())
    }
}

/// Waiter lines in sorted sets beside each key (`queue_key`, and `<prefix>queue-deadline`).
impl WaiterLine for RedisStore {
    fn leave_queue(&self, lock: &LockSpec) -> StoreFuture<()> {
        let inner = self.inner.clone();
        let lock = lock.clone();
        Box::pin(async move {
            let Some(queue) = &lock.queue else {
                return Ok(());
            };
            let prefixes = inner.prefixes(&lock.keys)?;
            let mut inv = ScriptCall::with_keys(
                &LEAVE_QUEUE,
                &lock,
                &prefixes,
                &[Some(QUEUE), Some(QUEUE_DEADLINE)],
            );
            inv.arg(&*queue.waiter).arg(lock.keys.len());
            inner.run(inv).await.map(|_| ())
        })
    }

    fn undo(&self, lock: &LockSpec) -> StoreFuture<Holding> {
        let inner = self.inner.clone();
        let lock = lock.clone();
        Box::pin(async move { release_with(&inner, &lock, true).await })
    }
}

impl HealthProbe for RedisStore {
    fn probe(&self, prefix: &str, thorough: bool) -> StoreFuture<Probe> {
        let store = self.clone();
        let prefix = prefix.to_string();
        Box::pin(async move { store.probe(&prefix, thorough).await })
    }
}

/// `extend.lua` for `locks` on one connection: one script call per chunk, all
/// pipelined, so one round trip for the whole batch without blocking the node for long
/// on 100k leases. On a cluster, every lock of `locks` is in one slot.
async fn extend_on(
    inner: &Inner,
    locks: &[LockSpec],
    expiry: Expiry,
    reclaim: bool,
) -> Result<Vec<Holding>, NodeError> {
    const CHUNK: usize = 512;
    // On a cluster the counters are left out: see extend.lua (a slot in the middle of
    // a move answers TRYAGAIN to a script naming a key that is not there yet).
    let counters = inner.layout == Layout::Standalone;
    let (generation, mut conn) = inner.connection().await?;
    let mut pipe = redis::pipe();
    for chunk in locks.chunks(CHUNK) {
        let mut keys: Vec<String> = Vec::new();
        let mut cmd = redis::cmd("EVALSHA");
        for lock in chunk {
            let prefixes = inner.prefixes(&lock.keys)?;
            keys.extend(lock.keys.iter().cloned());
            if counters {
                keys.extend(prefixes.iter().map(|p| fence_key(p)));
            }
            if lock.holder.is_some() {
                keys.extend(prefixes.iter().map(|p| holder_key(p)));
            }
        }
        cmd.arg(EXTEND.get_hash())
            .arg(keys.len())
            .arg(&keys)
            .arg(chunk.len())
            .arg(match expiry {
                Expiry::AtLeast => "at-least",
                Expiry::Exactly => "exactly",
            })
            .arg(if reclaim { "1" } else { "0" })
            .arg(inner.counter_tail_ms)
            .arg(if counters { "1" } else { "0" });
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
    let out = decode_extend(&replies).map_err(|bad| inner.protocol("extend", bad))?;
    if out.len() != locks.len() {
        return Err(NodeError::new(
            NodeErrorKind::Protocol,
            &inner.name,
            format!("extend answered {} of {} locks", out.len(), locks.len()),
        ));
    }
    Ok(out)
}

/// One `EVALSHA` of one of the scripts, written straight into the command's buffer:
/// each key and argument once, a sibling key as its prefix and suffix with no string
/// of its own. (redis-rs' `ScriptInvocation` keeps every key and argument in a
/// `Vec` of its own and copies them into a command when sent; that and a `format!`
/// per sibling key were about a fifth of the client's instructions per acquire +
/// release pair: crates/fencelock-bench/PERF-NOTES.md.) Like
/// `ScriptInvocation::invoke_async`, it loads the script and sends it again on
/// `NOSCRIPT`.
struct ScriptCall {
    script: &'static Script,
    cmd: redis::Cmd,
    /// Keys declared to the script and not written yet (`KEYS` comes first, its
    /// length before it).
    keys_left: usize,
}

impl ScriptCall {
    /// A call of `script` with `keys` keys, to be added with [`ScriptCall::key`] and
    /// [`ScriptCall::sibling`] before any argument.
    fn new(script: &'static Script, keys: usize) -> Self {
        let mut cmd = redis::Cmd::with_capacity(keys + 12, 256);
        cmd.arg("EVALSHA").arg(script.get_hash()).arg(keys);
        ScriptCall {
            script,
            cmd,
            keys_left: keys,
        }
    }

    /// A call of `script` with the keys of `lock`, once per sibling kind, in the order
    /// the script's `KEYS` layout expects (`None` = the lock keys themselves).
    /// `prefixes`: the keys' sibling prefixes ([`Inner::prefixes`]).
    fn with_keys(
        script: &'static Script,
        lock: &LockSpec,
        prefixes: &[String],
        kinds: &[Option<&str>],
    ) -> Self {
        let mut call = ScriptCall::new(script, kinds.len() * lock.keys.len());
        for kind in kinds {
            for (k, prefix) in lock.keys.iter().zip(prefixes) {
                match kind {
                    Some(sibling) => call.sibling(prefix, sibling),
                    None => call.key(k),
                };
            }
        }
        call
    }

    fn key(&mut self, key: &str) -> &mut Self {
        debug_assert!(self.keys_left > 0, "more keys than declared");
        self.keys_left -= 1;
        self.cmd.arg(key);
        self
    }

    /// The sibling key `<prefix><kind>` (`kind`: [`FENCE`], [`HOLDER`] …).
    fn sibling(&mut self, prefix: &str, kind: &str) -> &mut Self {
        use redis::RedisWrite;
        use std::io::Write;
        debug_assert!(self.keys_left > 0, "more keys than declared");
        self.keys_left -= 1;
        {
            // The argument ends when `arg` is dropped. Into a Vec: cannot fail.
            let mut arg = self.cmd.writer_for_next_arg();
            let _ = arg.write_all(prefix.as_bytes());
            let _ = arg.write_all(kind.as_bytes());
        }
        self
    }

    fn arg(&mut self, arg: impl redis::ToRedisArgs) -> &mut Self {
        debug_assert_eq!(self.keys_left, 0, "an argument before the last key");
        self.cmd.arg(arg);
        self
    }

    async fn invoke(&self, conn: &mut Conn) -> redis::RedisResult<Value> {
        debug_assert_eq!(self.keys_left, 0, "fewer keys than declared");
        match self.cmd.query_async(conn).await {
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                self.script.load_async(conn).await?;
                self.cmd.query_async(conn).await
            }
            answer => answer,
        }
    }
}

async fn release_on(inner: &Inner, lock: &LockSpec) -> Result<Holding, NodeError> {
    release_with(inner, lock, false).await
}

/// `release.lua`; `quiet`: the undo of a failed attempt (no waiter is woken or handed
/// the key, see the script).
async fn release_with(inner: &Inner, lock: &LockSpec, quiet: bool) -> Result<Holding, NodeError> {
    let mut inv = ScriptCall::with_keys(
        &RELEASE,
        lock,
        &inner.prefixes(&lock.keys)?,
        &[None, Some(HOLDER), Some(QUEUE), Some(QUEUE_DEADLINE), Some(FENCE)],
    );
    inv.arg(&*lock.value)
        .arg(lock.keys.len())
        .arg(lock.queue.as_ref().map_or("", |q| &*q.waiter))
        .arg(inner.counter_tail_ms)
        .arg(if lock.holder.is_some() { "1" } else { "0" })
        .arg(if quiet { "1" } else { "0" });
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::kit::{Subject, store_kit};

    /// An empty `redis-server` of its own (kept alive, and stopped, with the subject).
    fn fresh_store() -> Subject {
        let server = fencelock_testkit::Cluster::start(1);
        let mut options = StoreOptions::new(Duration::from_secs(5));
        // Counters kept a day past their retirement, as SQLite and memory keep them.
        options.counter_retention = crate::store::rules::COUNTER_RETENTION;
        Subject {
            node: open(&server.url(0), &options).unwrap(),
            _keep: Box::new(server),
        }
    }

    store_kit!(fresh_store);

    /// A redis-rs error as the node would send it (`-CODE message`).
    fn server_error(reply: &str) -> RedisError {
        match redis::parse_redis_value(format!("-{reply}\r\n").as_bytes()) {
            Ok(Value::ServerError(e)) => e.into(),
            other => panic!("{reply}: {other:?}"),
        }
    }

    #[test]
    fn every_node_reply_gets_its_kind_and_a_hint() {
        for (reply, kind, hint) in [
            (
                "NOAUTH Authentication required.",
                NodeErrorKind::Auth,
                "FENCELOCK_PASSWORD",
            ),
            (
                "WRONGPASS invalid username-password pair",
                NodeErrorKind::Auth,
                "never shown",
            ),
            (
                "NOPERM this user has no permissions",
                NodeErrorKind::Auth,
                "docs/security.md",
            ),
            (
                "ERR The user executing the script can't run this command or subcommand script",
                NodeErrorKind::Auth,
                "docs/security.md",
            ),
            (
                "READONLY You can't write against a read only replica.",
                NodeErrorKind::ReadOnly,
                "primary",
            ),
            (
                "WRONGTYPE Operation against a key holding the wrong kind",
                NodeErrorKind::WrongType,
                "prefix",
            ),
            (
                "OOM command not allowed when used memory > 'maxmemory'.",
                NodeErrorKind::OutOfMemory,
                "maxmemory",
            ),
            (
                "LOADING Redis is loading the dataset in memory",
                NodeErrorKind::Busy,
                "loading",
            ),
            (
                "BUSY Redis is busy running a script.",
                NodeErrorKind::Busy,
                "SCRIPT KILL",
            ),
            (
                "MASTERDOWN Link with MASTER is down",
                NodeErrorKind::Busy,
                "primaries",
            ),
            (
                "MOVED 3999 127.0.0.1:6381",
                NodeErrorKind::Cluster,
                "redis+cluster://",
            ),
            (
                "ASK 3999 127.0.0.1:6381",
                NodeErrorKind::Cluster,
                "redis+cluster://",
            ),
            (
                "CROSSSLOT Keys in request don't hash to the same slot",
                NodeErrorKind::Cluster,
                "one Redlock node",
            ),
            (
                "CLUSTERDOWN Hash slot not served",
                NodeErrorKind::Busy,
                "resharding",
            ),
            (
                "NOSCRIPT No matching script.",
                NodeErrorKind::Other,
                "SCRIPT LOAD",
            ),
        ] {
            let e = classify("redis://u:***@h:1", &server_error(reply));
            assert_eq!(e.kind(), kind, "{reply}: {e}");
            assert!(e.message().contains(hint), "{reply}: {e}");
            assert_eq!(e.node(), "redis://u:***@h:1");
        }
    }

    #[test]
    fn reply_decoders_refuse_nonsense() {
        use redis::Value as V;
        assert_eq!(
            decode_acquire(&V::Array(vec![V::Int(1), V::Int(7)])),
            Some(Acquired::Granted { counter: 7 })
        );
        assert_eq!(
            decode_acquire(&V::Array(vec![V::Int(0), V::Int(-1), V::Int(0), V::Int(0)])),
            Some(Acquired::Held {
                pttl: None,
                joined: false,
                silent: false,
            })
        );
        assert_eq!(
            decode_acquire(&V::Array(vec![V::Int(2), V::Int(5)])),
            Some(Acquired::HandedOver { counter: 5 })
        );
        assert_eq!(
            decode_acquire(&V::Array(vec![V::Int(0), V::Int(30), V::Int(1), V::Int(1)])),
            Some(Acquired::Held {
                pttl: Some(Duration::from_millis(30)),
                joined: true,
                silent: true,
            })
        );
        for bad in [
            V::Array(vec![V::Int(1), V::Int(0)]),
            V::Array(vec![V::Int(1), V::Int(-5)]),
            V::Array(vec![V::Int(2), V::Int(0)]),
            V::Array(vec![V::Int(3), V::Int(5)]),
            V::Array(vec![V::Int(0), V::Int(5), V::Int(2), V::Int(0)]),
            V::Array(vec![V::Int(0), V::Int(5), V::Int(0), V::Int(2)]),
            V::Array(vec![V::Int(0), V::Int(5), V::Int(1)]),
            V::Array(vec![V::Int(0), V::Int(5)]),
            V::Array(vec![V::Int(1), V::Int(5), V::Int(1)]),
            V::Array(vec![V::Int(1)]),
            V::Nil,
        ] {
            assert_eq!(decode_acquire(&bad), None, "{bad:?}");
        }
        assert!(decode_extend(&[V::Array(vec![V::Int(1), V::Int(0), V::Int(-1)])]).is_ok());
        assert!(decode_extend(&[V::Array(vec![V::Int(2)])]).is_ok());
        assert!(decode_extend(&[V::Array(vec![V::Int(3)])]).is_err());
        assert_eq!(holding(2), None, "a release never reclaims");
        assert!(decode_extend(&[V::Int(1)]).is_err());
        fuzz_decode_reply(b"*2\r\n:1\r\n:0\r\n");
        fuzz_decode_reply(b"garbage");
    }
}
