//! The embedded default store, `sqlite:///path/to/file.db`: many processes on one host
//! share locks through one file, with no server.
//!
//! # How it maps the protocol
//!
//! Every operation is one SQLite transaction. Those that write (acquire, commit fence,
//! extend, release) start with `BEGIN IMMEDIATE`, which takes the file's write lock up
//! front: the compare and the set happen under one lock, across processes, exactly as a
//! Lua script runs atomically on Redis. The schema is in `sqlite/schema.sql`.
//!
//! # Clocks
//!
//! Expiry is wall-clock milliseconds since the Unix epoch ([`SystemTime`]), because the
//! processes sharing the file have no monotonic clock in common. The clock is read once
//! the transaction holds its lock, not when the call was made: a call that waited for a
//! busy file must not judge expiry by the time it started waiting. A wall-clock jump
//! therefore moves every lease on the file: forward expires them early, backward keeps
//! them longer. Fencing tokens stay safe either way (they never depend on expiry).
//!
//! # Concurrency
//!
//! rusqlite is blocking, so each operation runs on `tokio::task::spawn_blocking` with a
//! connection from a small pool. The file is in WAL mode (readers do not wait for the
//! writer) with a `busy_timeout`; a transaction that still meets `SQLITE_BUSY` or
//! `SQLITE_LOCKED` is retried a bounded number of times after short jittered sleeps,
//! so contention is a delay, not an error. Only when that bound is exhausted does the
//! caller see [`NodeErrorKind::Busy`].
//!
//! # Safety of the file
//!
//! The file carries an application marker (`PRAGMA application_id`) and a schema
//! version (`PRAGMA user_version`). A file without the marker is refused with
//! [`crate::ErrorKind::Config`], and is not modified: an application's database that
//! was named by mistake is never taken over.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::Rng;
use rusqlite::config::DbConfig;
use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, TransactionBehavior, params};

use super::url::StoreOptions;
use super::{
    Acquired, Expiry, Forgot, Holding, KeyInfo, LockSpec, QueueTicket, Store, StoreFuture, Watch,
};
use crate::error::{Error, NodeError, NodeErrorKind};

/// The tables; see the file for what each column means.
const SCHEMA: &str = include_str!("sqlite/schema.sql");

/// `PRAGMA application_id` of a fencelock file: the ASCII bytes `FnLk`.
const APPLICATION_ID: i32 = 0x466E_4C6B;

/// `PRAGMA user_version`: the schema this code reads and writes.
const SCHEMA_VERSION: i32 = 1;

/// How long SQLite itself waits for another connection's lock in one attempt.
const BUSY_TIMEOUT: Duration = Duration::from_millis(250);

/// Attempts of one transaction before `SQLITE_BUSY` is reported. With the busy timeout
/// and the sleeps in between, an operation gives up after about 2.5 s.
const BUSY_ATTEMPTS: u32 = 8;

/// The longest jittered sleep between two attempts.
const MAX_RETRY_SLEEP_MS: u64 = 50;

/// How long [`Store::abandon`] waits for operations of the same lock still running on
/// another thread: above the worst case of one operation, which may open a connection
/// (one busy-retried set-up) and then run its transaction (another), about 5 s.
const IN_FLIGHT_WAIT: Duration = Duration::from_secs(10);

/// Idle connections kept per store; more are opened under load and closed after.
const MAX_IDLE: usize = 4;

/// How often (per store handle) an acquire also sweeps expired rows.
const SWEEP_INTERVAL_MS: i64 = 10_000;

/// Rows one sweep deletes at most, so a sweep never makes one acquire slow.
const SWEEP_BATCH: i64 = 256;

/// A counter unused for this long, on a key nobody holds, may be dropped. The floor
/// makes dropping safe at any age; the retention keeps `status` informative.
const COUNTER_RETENTION_MS: i64 = 24 * 60 * 60 * 1000;

/// TTLs are clamped to this (about 100 years) so `now + ttl` cannot overflow.
const MAX_TTL_MS: u64 = 100 * 365 * 24 * 60 * 60 * 1000;

/// A handle on one lock file. Cheap to clone; clones share the connection pool.
///
/// Fencing counters follow the protocol: a key's first counter starts at the wall
/// clock in microseconds since the Unix epoch (or above the file's counter floor, if
/// that is higher) and is kept in the file, so it survives restarts of every process.
#[derive(Clone)]
pub(crate) struct SqliteStore {
    inner: Arc<Inner>,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("name", &self.inner.name)
            .finish_non_exhaustive()
    }
}

struct Inner {
    /// `sqlite://` and the path, for messages.
    name: String,
    path: PathBuf,
    /// Idle connections. A connection is taken out for one operation and put back.
    pool: Mutex<Vec<Connection>>,
    /// Operations running on a blocking thread, by lock value (see [`Ticket`]).
    in_flight: Mutex<HashMap<Arc<str>, usize>>,
    /// Signalled whenever an operation leaves `in_flight`.
    in_flight_done: Condvar,
    /// Wall-clock ms of this handle's last sweep.
    last_sweep_ms: AtomicI64,
}

/// Why an operation or an open failed.
#[derive(Debug)]
enum Failure {
    Sqlite(rusqlite::Error),
    /// The file is not a usable fencelock file (foreign, newer schema, read-only).
    File(String),
    /// A number does not fit the file's 64-bit signed integers.
    Range(String),
}

impl From<rusqlite::Error> for Failure {
    fn from(e: rusqlite::Error) -> Self {
        Failure::Sqlite(e)
    }
}

impl Failure {
    fn is_busy(&self) -> bool {
        matches!(
            self,
            Failure::Sqlite(e) if matches!(
                e.sqlite_error_code(),
                Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
            )
        )
    }

    /// The failure in words, without the path (callers put it in front).
    fn describe(&self) -> String {
        let e = match self {
            Failure::File(why) | Failure::Range(why) => return why.clone(),
            Failure::Sqlite(e) => e,
        };
        let what = match e.sqlite_error_code() {
            Some(ErrorCode::NotADatabase) => "it is not an SQLite database, or it is corrupt",
            Some(ErrorCode::DatabaseCorrupt) => "the database is corrupt",
            Some(ErrorCode::ReadOnly) => "it is read-only",
            Some(ErrorCode::CannotOpen) => "it cannot be opened",
            Some(ErrorCode::PermissionDenied) => "permission denied",
            Some(ErrorCode::DiskFull) => "the disk is full",
            Some(ErrorCode::SystemIoFailure) => "an I/O error occurred",
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
                return format!(
                    "it stayed locked by other connections through {BUSY_ATTEMPTS} attempts ({e})"
                );
            }
            _ => return e.to_string(),
        };
        format!("{what} ({e})")
    }

    fn node_kind(&self) -> NodeErrorKind {
        let e = match self {
            Failure::File(_) => return NodeErrorKind::Storage,
            Failure::Range(_) => return NodeErrorKind::Other,
            Failure::Sqlite(e) => e,
        };
        match e.sqlite_error_code() {
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => NodeErrorKind::Busy,
            Some(ErrorCode::OutOfMemory) => NodeErrorKind::OutOfMemory,
            Some(
                ErrorCode::NotADatabase
                | ErrorCode::DatabaseCorrupt
                | ErrorCode::ReadOnly
                | ErrorCode::CannotOpen
                | ErrorCode::PermissionDenied
                | ErrorCode::DiskFull
                | ErrorCode::SystemIoFailure
                | ErrorCode::FileLockingProtocolFailed
                | ErrorCode::NoLargeFileSupport,
            ) => NodeErrorKind::Storage,
            _ => NodeErrorKind::Other,
        }
    }
}

/// Runs `f` until it does not fail with busy/locked, at most [`BUSY_ATTEMPTS`] times,
/// sleeping a short random time in between so contending processes spread out.
fn retry_busy<T>(mut f: impl FnMut() -> Result<T, Failure>) -> Result<T, Failure> {
    let mut attempt = 1;
    loop {
        match f() {
            Err(e) if e.is_busy() && attempt < BUSY_ATTEMPTS => {
                let cap = (1u64 << attempt.min(6)).min(MAX_RETRY_SLEEP_MS);
                let ms = rand::rng().random_range(1..=cap);
                std::thread::sleep(Duration::from_millis(ms));
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// What a file turned out to be.
enum FileKind {
    /// An empty database: ours to initialise.
    Fresh,
    /// A fencelock file of the current schema.
    Ours,
    /// Anything else, with the reason it is refused.
    Foreign(String),
}

/// Reads the marker without writing anything.
fn classify(conn: &Connection) -> Result<FileKind, Failure> {
    // One statement, so one snapshot: read separately, the three could straddle another
    // process's schema creation and show tables without a marker.
    let (app_id, version, objects): (i32, i32, i64) = conn.query_row(
        "SELECT (SELECT application_id FROM pragma_application_id), \
                (SELECT user_version FROM pragma_user_version), \
                (SELECT count(*) FROM sqlite_master)",
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    Ok(match (app_id, version) {
        (APPLICATION_ID, SCHEMA_VERSION) => FileKind::Ours,
        (APPLICATION_ID, v) if v > SCHEMA_VERSION => FileKind::Foreign(format!(
            "it was written by a newer fencelock (schema version {v}; this one knows \
             version {SCHEMA_VERSION})"
        )),
        (APPLICATION_ID, v) => {
            FileKind::Foreign(format!("it has an unknown fencelock schema version {v}"))
        }
        (0, 0) if objects == 0 => FileKind::Fresh,
        (0, _) => FileKind::Foreign(
            "it is an SQLite database with other data in it and no fencelock marker; \
             refusing to use it"
                .to_string(),
        ),
        (id, _) => FileKind::Foreign(format!(
            "it is an SQLite database of another application (application_id {id:#010x}); \
             refusing to use it"
        )),
    })
}

/// Opens one connection to `path`, sets it up, and makes sure the file is ours
/// (creating the schema in an empty file).
fn open_connection(path: &Path, busy_timeout: Duration) -> Result<Connection, Failure> {
    // No SQLITE_OPEN_URI: the path is a path, never a `file:` URI with options.
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let mut conn = Connection::open_with_flags(path, flags)?;
    // Keep `-wal` and `-shm` when the last connection closes (SQLite would checkpoint
    // and delete them). A file shared by several users lives in a directory they can all
    // write, usually sticky (as /run/lock); with `fs.protected_regular=1` the kernel
    // refuses O_CREAT — which SQLite uses on both — on a file there owned by neither the
    // opener nor the directory's owner. Deleted, the companions would be re-created by
    // whoever comes next, as theirs, and lock every other user out. Kept, they stay
    // owned by whoever created them with the lock file. (Checkpoints still run as the
    // WAL grows, on commit.)
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)?;
    conn.busy_timeout(busy_timeout)?;
    // SQLite silently falls back to read-only when it cannot write the file.
    if conn.is_readonly(rusqlite::MAIN_DB)? {
        return Err(Failure::File(
            "it can only be opened read-only (read-only file or file system)".into(),
        ));
    }
    retry_busy(|| prepare_file(&mut conn))?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    Ok(conn)
}

/// Per-connection settings, and the schema check / creation.
fn prepare_file(conn: &mut Connection) -> Result<(), Failure> {
    // Look before touching anything: a foreign file must not even be switched to WAL.
    let kind = classify(conn)?;
    if let FileKind::Foreign(why) = kind {
        return Err(Failure::File(why));
    }
    // WAL: readers (inspect) do not wait for the writer, and commits are cheap. It is a
    // persistent property of the file, so this is a no-op after the first connection.
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "wal", |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(journal_mode = %mode, "SQLite lock file is not in WAL mode");
    }
    // FULL: a commit is on disk before the caller hears of it. With less, a power cut
    // could roll back a counter increment and the same token would be issued twice.
    conn.pragma_update(None, "synchronous", "FULL")?;
    if matches!(kind, FileKind::Fresh) {
        // Another process may be initialising the same file right now: decide again
        // under the write lock.
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        match classify(&tx)? {
            FileKind::Ours => {}
            FileKind::Fresh => {
                tx.execute_batch(SCHEMA)?;
                tx.pragma_update(None, "application_id", APPLICATION_ID)?;
                tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
            }
            FileKind::Foreign(why) => return Err(Failure::File(why)),
        }
        tx.commit()?;
    }
    Ok(())
}

/// One reading of the wall clock, in the two units the store uses.
#[derive(Clone, Copy, Debug)]
struct Now {
    /// Milliseconds since the Unix epoch, for expiry.
    ms: i64,
    /// Microseconds since the Unix epoch, to seed new fencing counters.
    us: u64,
}

impl Now {
    fn read() -> Now {
        let us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        Now {
            ms: i64::try_from(us / 1000).unwrap_or(i64::MAX),
            us,
        }
    }

    fn expiry(self, ttl_ms: u64) -> i64 {
        // MAX_TTL_MS fits an i64, so the conversion cannot fail.
        let ttl = i64::try_from(ttl_ms.min(MAX_TTL_MS)).unwrap_or(i64::MAX);
        self.ms.saturating_add(ttl)
    }
}

/// How a key looks to one lock at one instant.
enum Slot {
    /// No row, or an expired one: anyone may take it.
    Free,
    /// Holds the lock's value and has not expired.
    Ours,
    /// Holds another value; this many milliseconds left.
    Other(i64),
}

fn slot(conn: &Connection, key: &str, value: &str, now: Now) -> rusqlite::Result<Slot> {
    let row: Option<(String, i64)> = conn
        .prepare_cached("SELECT value, expires_ms FROM fencelock_lock WHERE key = ?1")?
        .query_row([key], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    Ok(match row {
        Some((v, expires)) if expires > now.ms => {
            if v == value {
                Slot::Ours
            } else {
                Slot::Other(expires - now.ms)
            }
        }
        _ => Slot::Free,
    })
}

/// All keys ours → `Ours`; some key held by another → `Other`; else `Expired`.
fn holding(conn: &Connection, lock: &LockSpec, now: Now) -> rusqlite::Result<Holding> {
    let mut other = false;
    let mut all_ours = true;
    for key in lock.keys.iter() {
        match slot(conn, key, &lock.value, now)? {
            Slot::Ours => {}
            Slot::Other(_) => {
                other = true;
                all_ours = false;
            }
            Slot::Free => all_ours = false,
        }
    }
    Ok(if all_ours {
        Holding::Ours
    } else if other {
        Holding::Other
    } else {
        Holding::Expired
    })
}

fn counter_floor(conn: &Connection) -> rusqlite::Result<u64> {
    let floor: Option<i64> = conn
        .prepare_cached("SELECT value FROM fencelock_meta WHERE name = 'counter_floor'")?
        .query_row([], |r| r.get(0))
        .optional()?;
    Ok(floor.map_or(0, |f| u64::try_from(f).unwrap_or(0)))
}

fn counter(conn: &Connection, key: &str) -> rusqlite::Result<Option<u64>> {
    let c: Option<i64> = conn
        .prepare_cached("SELECT counter FROM fencelock_counter WHERE key = ?1")?
        .query_row([key], |r| r.get(0))
        .optional()?;
    // Negative values are never written; read one (a hand-edited file) as zero.
    Ok(c.map(|c| u64::try_from(c).unwrap_or(0)))
}

fn to_i64(n: u64, what: &str) -> Result<i64, Failure> {
    i64::try_from(n).map_err(|_| {
        Failure::Range(format!(
            "{what} {n} does not fit the lock file's 64-bit signed integers"
        ))
    })
}

fn acquire(conn: &mut Connection, lock: &LockSpec, sweep_now: bool) -> Result<Acquired, Failure> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let now = Now::read();
    if sweep_now {
        sweep(&tx, now.ms)?;
    }
    let mut held_for: Option<i64> = None;
    for key in lock.keys.iter() {
        if let Slot::Other(pttl) = slot(&tx, key, &lock.value, now)? {
            held_for = held_for.max(Some(pttl));
        }
    }
    let fair = lock.queue.as_ref().filter(|q| q.fair);
    let mut joined = false;
    if let Some(q) = fair {
        // Free keys still go to the first live waiter in line.
        if held_for.is_none() {
            held_for = blocked_for(&tx, lock, q, now)?;
        }
        match held_for {
            Some(pttl) => joined = join_lines(&tx, lock, q, now, pttl)?,
            None => leave_lines(&tx, lock, q)?,
        }
    }
    if let Some(pttl) = held_for {
        // Commits the sweep, if any, and the line entries; the keys are untouched.
        tx.commit()?;
        let pttl = Duration::from_millis(u64::try_from(pttl).unwrap_or(0));
        return Ok(Acquired::Held {
            pttl: Some(pttl),
            joined,
            silent: false,
        });
    }
    let seed = now.us.max(counter_floor(&tx)?);
    // The largest counter among the keys; a key without one counts as the seed.
    let mut top: Option<u64> = None;
    for key in lock.keys.iter() {
        top = top.max(Some(counter(&tx, key)?.unwrap_or(seed)));
    }
    let top = top
        .unwrap_or(seed)
        .checked_add(1)
        .ok_or_else(|| Failure::Range("the fencing counter is exhausted".into()))?;
    let stored = to_i64(top, "fencing counter")?;
    let expires = now.expiry(lock.ttl_ms);
    {
        let mut put_lock = tx.prepare_cached(
            "INSERT INTO fencelock_lock (key, value, expires_ms, holder) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value, \
             expires_ms = excluded.expires_ms, holder = excluded.holder",
        )?;
        let mut put_counter = tx.prepare_cached(
            "INSERT INTO fencelock_counter (key, counter, touched_ms) VALUES (?1, ?2, ?3) \
             ON CONFLICT (key) DO UPDATE SET counter = excluded.counter, \
             touched_ms = excluded.touched_ms",
        )?;
        for key in lock.keys.iter() {
            put_lock.execute(params![key, &*lock.value, expires, lock.holder.as_deref()])?;
            put_counter.execute(params![key, stored, now.ms])?;
        }
    }
    tx.commit()?;
    Ok(Acquired::Granted { counter: top })
}

fn commit_fence(conn: &mut Connection, lock: &LockSpec, token: u64) -> Result<bool, Failure> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let now = Now::read();
    if holding(&tx, lock, now)? != Holding::Ours {
        return Ok(false);
    }
    let token = to_i64(token, "fencing token")?;
    // A held key always has a counter (counters of held keys are never swept); the
    // seed only keeps the rule "a missing counter starts at the clock" if one is gone.
    let seed = to_i64(now.us.max(counter_floor(&tx)?), "counter floor")?;
    {
        let mut raise = tx.prepare_cached(
            "INSERT INTO fencelock_counter (key, counter, touched_ms) VALUES (?1, max(?2, ?3), ?4) \
             ON CONFLICT (key) DO UPDATE SET counter = max(counter, ?2), touched_ms = ?4",
        )?;
        for key in lock.keys.iter() {
            raise.execute(params![key, token, seed, now.ms])?;
        }
    }
    tx.commit()?;
    Ok(true)
}

fn extend(
    conn: &mut Connection,
    locks: &[LockSpec],
    expiry: Expiry,
    reclaim: bool,
) -> Result<Vec<Holding>, Failure> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let now = Now::read();
    let mut out = Vec::with_capacity(locks.len());
    let exactly = expiry == Expiry::Exactly;
    {
        let mut push = tx.prepare_cached(
            "UPDATE fencelock_lock SET expires_ms = \
             CASE WHEN ?4 THEN ?3 ELSE MAX(expires_ms, ?3) END \
             WHERE key = ?1 AND value = ?2",
        )?;
        // Reclaiming: a free key (missing, or expired whoever held it) is ours again.
        let mut put = tx.prepare_cached(
            "INSERT INTO fencelock_lock (key, value, expires_ms, holder) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value, \
             expires_ms = excluded.expires_ms, holder = excluded.holder \
             WHERE fencelock_lock.expires_ms <= ?5",
        )?;
        for lock in locks {
            let h = holding(&tx, lock, now)?;
            let reclaiming = reclaim && h == Holding::Expired;
            if h == Holding::Ours || reclaiming {
                let expires = now.expiry(lock.ttl_ms);
                for key in lock.keys.iter() {
                    push.execute(params![key, &*lock.value, expires, exactly])?;
                    if reclaiming {
                        put.execute(params![
                            key,
                            &*lock.value,
                            expires,
                            lock.holder.as_deref(),
                            now.ms
                        ])?;
                    }
                }
            }
            out.push(if reclaiming { Holding::Reclaimed } else { h });
        }
    }
    tx.commit()?;
    Ok(out)
}

/// The rows of the fair-mode line of `key` (only fair semaphores send fair tickets
/// here: `semaphore.rs`) start with this. Line entries are rows of `fencelock_lock`,
/// so the file needs no new table and an entry expires (and is swept) like a lock:
/// `<key>:fencelock:line:<ticket, 20 digits>:<waiter>`, value the waiter id,
/// `expires_ms` the moment it expires unless its waiter comes back. The digits make
/// the rows' order the line's (ticket, then waiter id), as in Redis's sorted sets; no
/// lock key contains `:fencelock:line:`, and no counter row names an entry, so
/// `status` never lists one.
fn line_prefix(key: &str) -> String {
    format!("{key}:fencelock:line:")
}

/// The row of `q`'s entry in the line of `key`.
fn line_entry(key: &str, q: &QueueTicket) -> String {
    format!("{}{:020}:{}", line_prefix(key), q.ticket, q.waiter)
}

/// With a fair ticket, some free key of `lock` has a live first waiter other than
/// `q`'s: how long that waiter's entry has left (the longest among the keys).
fn blocked_for(
    conn: &Connection,
    lock: &LockSpec,
    q: &QueueTicket,
    now: Now,
) -> rusqlite::Result<Option<i64>> {
    let mut first = conn.prepare_cached(
        "SELECT key, expires_ms FROM fencelock_lock \
         WHERE key > ?1 AND key < ?2 AND expires_ms > ?3 ORDER BY key LIMIT 1",
    )?;
    let mut blocked = None;
    for key in lock.keys.iter() {
        let prefix = line_prefix(key);
        // ';' follows ':': every row that starts with the prefix sorts below this.
        let end = format!("{};", &prefix[..prefix.len() - 1]);
        let head: Option<(String, i64)> = first
            .query_row(params![prefix, end, now.ms], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        if let Some((entry, expires)) = head
            && entry != line_entry(key, q)
        {
            blocked = blocked.max(Some(expires - now.ms));
        }
    }
    Ok(blocked)
}

/// Takes (or keeps) `q`'s place in the line of every key of `lock`, valid for the
/// wait it is told to expect (`wait_ms`) plus the grace. Whether it was not in some
/// line yet.
fn join_lines(
    conn: &Connection,
    lock: &LockSpec,
    q: &QueueTicket,
    now: Now,
    wait_ms: i64,
) -> Result<bool, Failure> {
    let expires = now.expiry(
        u64::try_from(wait_ms)
            .unwrap_or(0)
            .saturating_add(q.grace_ms),
    );
    let mut joined = false;
    let mut refresh = conn.prepare_cached(
        "UPDATE fencelock_lock SET expires_ms = ?2 WHERE key = ?1 AND expires_ms > ?3",
    )?;
    let mut put = conn.prepare_cached(
        "INSERT INTO fencelock_lock (key, value, expires_ms) VALUES (?1, ?2, ?3) \
         ON CONFLICT (key) DO UPDATE SET value = excluded.value, \
         expires_ms = excluded.expires_ms",
    )?;
    for key in lock.keys.iter() {
        let entry = line_entry(key, q);
        if refresh.execute(params![entry, expires, now.ms])? == 0 {
            put.execute(params![entry, &*q.waiter, expires])?;
            joined = true;
        }
    }
    Ok(joined)
}

/// Takes `q`'s waiter out of the line of every key of `lock`.
fn leave_lines(conn: &Connection, lock: &LockSpec, q: &QueueTicket) -> rusqlite::Result<()> {
    let mut delete = conn.prepare_cached("DELETE FROM fencelock_lock WHERE key = ?1")?;
    for key in lock.keys.iter() {
        delete.execute([line_entry(key, q)])?;
    }
    Ok(())
}

/// [`leave_lines`] in a transaction of its own, for a fair ticket.
fn leave_queue(conn: &mut Connection, lock: &LockSpec) -> Result<(), Failure> {
    if let Some(q) = lock.queue.as_ref().filter(|q| q.fair) {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        leave_lines(&tx, lock, q)?;
        tx.commit()?;
    }
    Ok(())
}

fn release(conn: &mut Connection, lock: &LockSpec) -> Result<Holding, Failure> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let now = Now::read();
    let h = holding(&tx, lock, now)?;
    if let Some(q) = lock.queue.as_ref().filter(|q| q.fair) {
        leave_lines(&tx, lock, q)?;
    }
    {
        // Our expired rows go too: they are free already, deleting them is tidying.
        let mut delete =
            tx.prepare_cached("DELETE FROM fencelock_lock WHERE key = ?1 AND value = ?2")?;
        for key in lock.keys.iter() {
            delete.execute(params![key, &*lock.value])?;
        }
    }
    tx.commit()?;
    Ok(h)
}

fn inspect(conn: &mut Connection, key: &str) -> Result<KeyInfo, Failure> {
    // A read transaction: the lock row and the counter come from one snapshot.
    let tx = conn.transaction()?;
    let now = Now::read();
    let row: Option<(String, i64, Option<String>)> = tx
        .prepare_cached("SELECT value, expires_ms, holder FROM fencelock_lock WHERE key = ?1")?
        .query_row([key], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    let mut info = KeyInfo {
        last_token: counter(&tx, key)?,
        ..KeyInfo::default()
    };
    if let Some((value, expires, holder)) = row.filter(|r| r.1 > now.ms) {
        info.value = Some(value);
        info.pttl = Some(Duration::from_millis(
            u64::try_from(expires - now.ms).unwrap_or(0),
        ));
        info.holder = holder;
    }
    tx.commit()?;
    Ok(info)
}

/// Forgets `key` unless it is held: its lock row (expired) and its counter row, with
/// the counter floor raised above the counter first (as [`sweep`] does), so the key's
/// next token is above every one it had whatever the clock does.
fn forget(conn: &mut Connection, key: &str) -> Result<Forgot, Failure> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let now = Now::read();
    let expires: Option<i64> = tx
        .prepare_cached("SELECT expires_ms FROM fencelock_lock WHERE key = ?1")?
        .query_row([key], |r| r.get(0))
        .optional()?;
    if expires.is_some_and(|e| e > now.ms) {
        return Ok(Forgot::InUse);
    }
    if let Some(c) = counter(&tx, key)? {
        raise_floor(&tx, to_i64(c, "fencing counter")?)?;
    }
    tx.prepare_cached("DELETE FROM fencelock_lock WHERE key = ?1")?
        .execute([key])?;
    tx.prepare_cached("DELETE FROM fencelock_counter WHERE key = ?1")?
        .execute([key])?;
    tx.commit()?;
    Ok(Forgot::Done)
}

/// Raises the counter floor to at least `to`: every new counter starts above it.
fn raise_floor(conn: &Connection, to: i64) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO fencelock_meta (name, value) VALUES ('counter_floor', ?1) \
         ON CONFLICT (name) DO UPDATE SET value = max(value, excluded.value)",
    )?
    .execute([to])?;
    Ok(())
}

/// Deletes up to [`SWEEP_BATCH`] expired lock rows, then up to as many counters past
/// retention on keys nobody holds, raising the counter floor above the dropped ones
/// first so a key that comes back starts above every token it had.
fn sweep(conn: &Connection, now_ms: i64) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "DELETE FROM fencelock_lock WHERE key IN \
         (SELECT key FROM fencelock_lock WHERE expires_ms <= ?1 LIMIT ?2)",
    )?
    .execute(params![now_ms, SWEEP_BATCH])?;
    let old: Vec<(String, i64)> = conn
        .prepare_cached(
            "SELECT key, counter FROM fencelock_counter AS c \
             WHERE touched_ms < ?1 \
             AND NOT EXISTS (SELECT 1 FROM fencelock_lock AS l WHERE l.key = c.key) \
             LIMIT ?2",
        )?
        .query_map(
            params![now_ms.saturating_sub(COUNTER_RETENTION_MS), SWEEP_BATCH],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?
        .collect::<rusqlite::Result<_>>()?;
    let Some(highest) = old.iter().map(|(_, c)| *c).max() else {
        return Ok(());
    };
    raise_floor(conn, highest)?;
    let mut delete = conn.prepare_cached("DELETE FROM fencelock_counter WHERE key = ?1")?;
    for (key, _) in &old {
        delete.execute([key])?;
    }
    Ok(())
}

impl SqliteStore {
    /// Opens (creating when missing) the lock file at `path`, and its parent
    /// directories. Validates eagerly, so a bad path fails here and not at the first
    /// lock.
    ///
    /// # Errors
    ///
    /// [`crate::ErrorKind::Config`], naming the path, when the path is a directory,
    /// cannot be created or written, is not an SQLite database (or is corrupt), or is
    /// an SQLite database of another application or of a newer fencelock.
    pub(crate) fn open(path: &Path, options: &StoreOptions) -> Result<SqliteStore, Error> {
        let refuse = |why: &str| {
            Error::config(format!(
                "cannot use {path:?} as a fencelock SQLite lock file: {why}"
            ))
        };
        if path.as_os_str().is_empty() || path == Path::new(":memory:") {
            return Err(refuse(
                "it needs a file path that all processes share (for a private in-process \
                 store use memory://)",
            ));
        }
        if path.is_dir() {
            return Err(refuse("it is a directory"));
        }
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            if parent.exists() && !parent.is_dir() {
                return Err(refuse(&format!("{parent:?} is not a directory")));
            }
            std::fs::create_dir_all(parent)
                .map_err(|e| refuse(&format!("cannot create directory {parent:?}: {e}")))?;
        }
        // Opening may race other processes initialising the same file: each attempt
        // waits for them as long as the caller would wait to connect to a server.
        let conn = open_connection(path, options.connect_timeout.max(BUSY_TIMEOUT))
            .map_err(|f| refuse(&f.describe()))?;
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                name: format!("sqlite://{}", path.display()),
                path: path.to_path_buf(),
                pool: Mutex::new(vec![conn]),
                in_flight: Mutex::new(HashMap::new()),
                in_flight_done: Condvar::new(),
                last_sweep_ms: AtomicI64::new(0),
            }),
        })
    }

    /// Runs `op` on a blocking thread with a pooled connection, when the returned
    /// future is first polled. The operation counts as in flight for every value in
    /// `values` until it has finished, even if the future is dropped before that.
    fn spawn<T: Send + 'static>(
        &self,
        values: Vec<Arc<str>>,
        op: impl FnOnce(&Inner) -> Result<T, NodeError> + Send + 'static,
    ) -> StoreFuture<T> {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move {
            // Registered before the thread starts, so an abandon issued after this
            // future was polled always sees it.
            let ticket = Ticket::enter(&inner, values);
            let name = inner.name.clone();
            tokio::task::spawn_blocking(move || {
                let _ticket = ticket;
                op(&inner)
            })
            .await
            .unwrap_or_else(|e| {
                Err(NodeError::new(
                    NodeErrorKind::Other,
                    &name,
                    format!("the SQLite task failed: {e}"),
                ))
            })
        })
    }
}

impl Inner {
    fn pool(&self) -> MutexGuard<'_, Vec<Connection>> {
        // The pool is a plain list; a panic elsewhere cannot leave it inconsistent.
        self.pool.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn counts(&self) -> MutexGuard<'_, HashMap<Arc<str>, usize>> {
        self.in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs one transaction (retried while busy) on a pooled connection.
    fn with_connection<T>(
        &self,
        mut op: impl FnMut(&mut Connection) -> Result<T, Failure>,
    ) -> Result<T, NodeError> {
        let idle = self.pool().pop();
        let mut conn = match idle {
            Some(c) => c,
            None => open_connection(&self.path, BUSY_TIMEOUT).map_err(|f| self.error(&f))?,
        };
        let result = retry_busy(|| op(&mut conn));
        // A connection that met a file problem is closed; the next one re-checks.
        let healthy = match &result {
            Ok(_) => true,
            Err(f) => f.node_kind() != NodeErrorKind::Storage,
        };
        if healthy {
            let mut pool = self.pool();
            if pool.len() < MAX_IDLE {
                pool.push(conn);
            }
        }
        result.map_err(|f| self.error(&f))
    }

    fn error(&self, f: &Failure) -> NodeError {
        NodeError::new(f.node_kind(), &self.name, f.describe())
    }

    /// Whether this acquire should also sweep (at most once per interval per handle).
    fn sweep_due(&self, now: Now) -> bool {
        let last = self.last_sweep_ms.load(Ordering::Relaxed);
        now.ms.saturating_sub(last) >= SWEEP_INTERVAL_MS
            && self
                .last_sweep_ms
                .compare_exchange(last, now.ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    /// Waits (bounded) until no operation of a lock with `value` is running.
    fn wait_idle(&self, value: &str) {
        let deadline = Instant::now() + IN_FLIGHT_WAIT;
        let mut counts = self.counts();
        while counts.contains_key(value) {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                tracing::warn!(store = %self.name, "an abandoned SQLite operation is still running; releasing anyway");
                return;
            };
            counts = self
                .in_flight_done
                .wait_timeout(counts, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

/// Marks operations of some locks as in flight for as long as it lives.
///
/// A request the locker gave up on (its future dropped on a per-node timeout) keeps
/// running on its blocking thread and may still commit. [`Store::abandon`] waits for
/// it through these tickets, so its release is ordered after the late write and the
/// abandoned lock leaves nothing behind.
struct Ticket {
    inner: Arc<Inner>,
    values: Vec<Arc<str>>,
}

impl Ticket {
    fn enter(inner: &Arc<Inner>, values: Vec<Arc<str>>) -> Ticket {
        let mut counts = inner.counts();
        for v in &values {
            *counts.entry(Arc::clone(v)).or_insert(0) += 1;
        }
        Ticket {
            inner: Arc::clone(inner),
            values,
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut counts = self.inner.counts();
        for v in &self.values {
            if let Some(n) = counts.get_mut(v) {
                *n -= 1;
                if *n == 0 {
                    counts.remove(v);
                }
            }
        }
        drop(counts);
        self.inner.in_flight_done.notify_all();
    }
}

impl Store for SqliteStore {
    fn name(&self) -> &str {
        &self.inner.name
    }

    fn acquire(&self, lock: &LockSpec) -> StoreFuture<Acquired> {
        let lock = lock.clone();
        self.spawn(vec![Arc::clone(&lock.value)], move |inner| {
            let sweep_now = inner.sweep_due(Now::read());
            inner.with_connection(|c| acquire(c, &lock, sweep_now))
        })
    }

    fn commit_fence(&self, lock: &LockSpec, token: u64) -> StoreFuture<bool> {
        let lock = lock.clone();
        self.spawn(vec![Arc::clone(&lock.value)], move |inner| {
            inner.with_connection(|c| commit_fence(c, &lock, token))
        })
    }

    fn extend(
        &self,
        locks: &[LockSpec],
        expiry: Expiry,
        reclaim: bool,
    ) -> StoreFuture<Vec<Holding>> {
        if locks.is_empty() {
            return Box::pin(async { Ok(Vec::new()) });
        }
        let locks = locks.to_vec();
        let values = locks.iter().map(|l| Arc::clone(&l.value)).collect();
        self.spawn(values, move |inner| {
            inner.with_connection(|c| extend(c, &locks, expiry, reclaim))
        })
    }

    /// Not tracked as in flight: a late release can only delete our own keys, which
    /// is what the abandon that follows it wants anyway.
    fn release(&self, lock: &LockSpec) -> StoreFuture<Holding> {
        let lock = lock.clone();
        self.spawn(Vec::new(), move |inner| {
            inner.with_connection(|c| release(c, &lock))
        })
    }

    /// Waits for operations of this lock still running on other threads (see
    /// [`Ticket`]), then releases. The release outcome does not matter here.
    fn abandon(&self, lock: &LockSpec) -> StoreFuture<()> {
        let lock = lock.clone();
        self.spawn(Vec::new(), move |inner| {
            inner.wait_idle(&lock.value);
            inner.with_connection(|c| release(c, &lock)).map(|_| ())
        })
    }

    fn inspect(&self, key: &str) -> StoreFuture<KeyInfo> {
        let key = key.to_string();
        self.spawn(Vec::new(), move |inner| {
            inner.with_connection(|c| inspect(c, &key))
        })
    }

    fn leave_queue(&self, lock: &LockSpec) -> StoreFuture<()> {
        let lock = lock.clone();
        self.spawn(Vec::new(), move |inner| {
            inner.with_connection(|c| leave_queue(c, &lock))
        })
    }

    fn forget(&self, key: &str) -> StoreFuture<Forgot> {
        let key = key.to_string();
        self.spawn(Vec::new(), move |inner| {
            inner.with_connection(|c| forget(c, &key))
        })
    }

    fn known_keys(&self, prefix: &str, limit: usize) -> StoreFuture<Vec<String>> {
        let prefix = prefix.to_string();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.spawn(Vec::new(), move |inner| {
            inner.with_connection(|c| {
                let keys = c
                    .prepare_cached(
                        "SELECT key FROM fencelock_counter \
                         WHERE substr(key, 1, length(?1)) = ?1 ORDER BY key LIMIT ?2",
                    )?
                    .query_map(params![prefix, limit], |r| r.get::<_, String>(0))?
                    .collect::<rusqlite::Result<Vec<String>>>()?;
                Ok(keys)
            })
        })
    }

    /// SQLite has no way to tell another process that a row was deleted; waiters poll
    /// (sleeping until the holder's TTL runs out, with jitter).
    fn watch(&self, _key: &str, _waiter: Option<Arc<str>>) -> StoreFuture<Option<Watch>> {
        Box::pin(async { Ok(None) })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use tempfile::TempDir;
    use tokio::time::{sleep, timeout};

    use super::*;

    fn options() -> StoreOptions {
        StoreOptions::new(Duration::from_secs(1))
    }

    /// A store on a fresh file in a fresh directory (kept alive by the `TempDir`).
    fn store() -> (TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("locks.db"), &options()).unwrap();
        (dir, s)
    }

    fn spec(keys: &[&str], value: &str, ttl_ms: u64) -> LockSpec {
        LockSpec {
            keys: keys.iter().map(|k| k.to_string()).collect(),
            value: value.into(),
            ttl_ms,
            holder: None,
            queue: None,
        }
    }

    async fn granted(s: &SqliteStore, lock: &LockSpec) -> u64 {
        match s.acquire(lock).await.unwrap() {
            Acquired::Granted { counter } => counter,
            other => panic!("expected a grant for {lock:?}, got {other:?}"),
        }
    }

    async fn held_for(s: &SqliteStore, lock: &LockSpec) -> Duration {
        match s.acquire(lock).await.unwrap() {
            Acquired::Held { pttl: Some(p), .. } => p,
            other => panic!("expected held for {lock:?}, got {other:?}"),
        }
    }

    /// Asserts a config error that names `path`.
    fn assert_refused(result: Result<SqliteStore, Error>, path: &Path, what: &str) {
        let e = result.expect_err(what);
        assert!(e.is_config(), "{what}: {e}");
        let shown = path.display().to_string();
        assert!(
            e.to_string().contains(&shown),
            "{what}: {e} does not name {shown}"
        );
    }

    fn raw(path: &Path) -> Connection {
        let c = Connection::open(path).unwrap();
        c.busy_timeout(Duration::from_secs(5)).unwrap();
        c
    }

    #[tokio::test]
    async fn open_creates_directories_file_and_marked_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/locks.db");
        let s = SqliteStore::open(&path, &options()).unwrap();
        assert_eq!(s.name(), format!("sqlite://{}", path.display()));
        assert!(s.name().starts_with("sqlite:///"));
        let c = raw(&path);
        let app: i32 = c
            .pragma_query_value(None, "application_id", |r| r.get(0))
            .unwrap();
        let version: i32 = c
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        let mode: String = c
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!((app, version, mode.as_str()), (APPLICATION_ID, 1, "wal"));
        // Opening again (another process, a restart) accepts the file as is.
        SqliteStore::open(&path, &options()).unwrap();
    }

    /// `-wal` and `-shm` outlive the last connection: deleted, they would be re-created
    /// by the next user as theirs, which a sticky shared directory under
    /// `fs.protected_regular` turns into a lock-out of every other user.
    #[tokio::test]
    async fn the_companion_files_outlive_the_last_connection() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("locks.db");
        let s = SqliteStore::open(&path, &options()).unwrap();
        granted(&s, &spec(&["k"], "A", 10_000)).await;
        drop(s);
        for suffix in ["-wal", "-shm"] {
            let companion = dir.path().join(format!("locks.db{suffix}"));
            assert!(companion.exists(), "{} is gone", companion.display());
        }
        // And the file reads back as it was.
        let s = SqliteStore::open(&path, &options()).unwrap();
        assert!(s.inspect("k").await.unwrap().value.is_some());
    }

    #[test]
    fn concurrent_first_opens_agree_on_one_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("raced.db");
        let opened: Vec<_> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|_| scope.spawn(|| SqliteStore::open(&path, &options())))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for result in opened {
            result.unwrap();
        }
        let c = raw(&path);
        let floors: i64 = c
            .query_row("SELECT count(*) FROM fencelock_meta", [], |r| r.get(0))
            .unwrap();
        assert_eq!(floors, 1, "the schema was created more than once");
    }

    #[tokio::test]
    async fn an_empty_existing_file_is_initialised() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty.db");
        std::fs::write(&path, b"").unwrap();
        let s = SqliteStore::open(&path, &options()).unwrap();
        granted(&s, &spec(&["k"], "A", 10_000)).await;
    }

    #[test]
    fn a_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert_refused(
            SqliteStore::open(dir.path(), &options()),
            dir.path(),
            "directory",
        );
    }

    #[test]
    fn a_corrupt_file_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("random.db");
        let mut bytes = vec![0u8; 8192];
        rand::rng().fill(&mut bytes[..]);
        std::fs::write(&path, &bytes).unwrap();
        assert_refused(SqliteStore::open(&path, &options()), &path, "random bytes");
        assert_eq!(
            std::fs::read(&path).unwrap(),
            bytes,
            "the file was modified"
        );
    }

    #[test]
    fn a_foreign_database_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.db");
        {
            let c = raw(&path);
            c.execute_batch(
                "CREATE TABLE accounts (id INTEGER PRIMARY KEY, balance INTEGER);
                 INSERT INTO accounts (balance) VALUES (100);",
            )
            .unwrap();
        }
        let e = SqliteStore::open(&path, &options());
        assert_refused(e, &path, "foreign database");
        let c = raw(&path);
        let tables: Vec<String> = c
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(tables, ["accounts"]);
        let mode: String = c
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "delete", "the foreign file was switched to WAL");
    }

    #[test]
    fn another_applications_id_or_a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let other = dir.path().join("other.db");
        raw(&other)
            .pragma_update(None, "application_id", 0x1234)
            .unwrap();
        assert_refused(SqliteStore::open(&other, &options()), &other, "app id");

        let newer = dir.path().join("newer.db");
        SqliteStore::open(&newer, &options()).unwrap();
        raw(&newer).pragma_update(None, "user_version", 2).unwrap();
        let e = SqliteStore::open(&newer, &options()).unwrap_err();
        assert!(
            e.is_config() && e.to_string().contains("newer fencelock"),
            "{e}"
        );
        assert!(e.to_string().contains(&newer.display().to_string()), "{e}");
    }

    #[test]
    fn an_unwritable_location_is_refused() {
        // Tests run as root, so permissions do not stop us; a regular file does.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file.txt");
        std::fs::write(&file, b"not a directory").unwrap();
        for path in [file.join("x.db"), file.join("sub/x.db")] {
            assert_refused(SqliteStore::open(&path, &options()), &path, "under a file");
        }
    }

    #[test]
    fn a_private_in_memory_database_is_refused() {
        for path in [Path::new(":memory:"), Path::new("")] {
            assert_refused(SqliteStore::open(path, &options()), path, "no shared file");
        }
    }

    #[tokio::test]
    async fn grant_then_held_with_longest_remaining_ttl() {
        let (_dir, s) = store();
        granted(&s, &spec(&["a"], "A", 5_000)).await;
        granted(&s, &spec(&["b"], "B", 60_000)).await;
        let p = held_for(&s, &spec(&["a"], "C", 1_000)).await;
        assert!(
            p > Duration::from_secs(4) && p <= Duration::from_secs(5),
            "{p:?}"
        );
        let p = held_for(&s, &spec(&["a", "b"], "C", 1_000)).await;
        assert!(
            p > Duration::from_secs(55) && p <= Duration::from_secs(60),
            "{p:?}"
        );
    }

    #[tokio::test]
    async fn multi_key_acquire_is_all_or_nothing() {
        let (_dir, s) = store();
        let first = granted(&s, &spec(&["b"], "A", 10_000)).await;
        held_for(&s, &spec(&["a", "b", "c"], "B", 10_000)).await;
        for key in ["a", "c"] {
            let info = s.inspect(key).await.unwrap();
            assert_eq!(
                info,
                KeyInfo::default(),
                "{key} was touched by a refused acquire"
            );
        }
        let b = s.inspect("b").await.unwrap();
        assert_eq!((b.value.as_deref(), b.last_token), (Some("A"), Some(first)));
    }

    #[tokio::test]
    async fn reacquire_with_own_value_refreshes_and_bumps() {
        let (_dir, s) = store();
        let t1 = granted(&s, &spec(&["k"], "A", 200)).await;
        let t2 = granted(&s, &spec(&["k"], "A", 60_000)).await;
        assert!(t2 > t1);
        let pttl = s.inspect("k").await.unwrap().pttl.unwrap();
        assert!(pttl > Duration::from_secs(50), "{pttl:?}");
    }

    #[tokio::test]
    async fn tokens_start_at_wall_clock_micros_only_grow_and_persist() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("locks.db");
        let s = SqliteStore::open(&path, &options()).unwrap();
        let before = Now::read().us;
        let t1 = granted(&s, &spec(&["k"], "A", 10_000)).await;
        let after = Now::read().us;
        assert!(
            t1 > before && t1 <= after + 1,
            "{before} < {t1} <= {after} + 1"
        );
        s.release(&spec(&["k"], "A", 10_000)).await.unwrap();
        let t2 = granted(&s, &spec(&["k"], "B", 10_000)).await;
        assert_eq!(t2, t1 + 1);
        // Several keys: one past the largest counter (here k's, raised far above the
        // clock that seeds j's), and every key gets it.
        assert!(
            s.commit_fence(&spec(&["k"], "B", 0), t2 + 1_000_000_000_000)
                .await
                .unwrap()
        );
        s.release(&spec(&["k"], "B", 0)).await.unwrap();
        let t3 = granted(&s, &spec(&["j", "k"], "C", 10_000)).await;
        assert_eq!(t3, t2 + 1_000_000_000_001);
        for key in ["j", "k"] {
            assert_eq!(s.inspect(key).await.unwrap().last_token, Some(t3));
        }
        // The counters live in the file: a restart continues from them.
        s.release(&spec(&["j", "k"], "C", 0)).await.unwrap();
        drop(s);
        let s = SqliteStore::open(&path, &options()).unwrap();
        assert_eq!(granted(&s, &spec(&["k"], "D", 10_000)).await, t3 + 1);
    }

    #[tokio::test]
    async fn commit_fence_raises_only_while_ours() {
        let (_dir, s) = store();
        let lock = spec(&["a", "b"], "A", 10_000);
        let t = granted(&s, &lock).await;
        assert!(s.commit_fence(&lock, t + 50).await.unwrap());
        assert_eq!(s.inspect("a").await.unwrap().last_token, Some(t + 50));
        assert!(s.commit_fence(&lock, t).await.unwrap());
        assert_eq!(s.inspect("b").await.unwrap().last_token, Some(t + 50));
        s.release(&spec(&["b"], "A", 0)).await.unwrap();
        let tb = granted(&s, &spec(&["b"], "B", 10_000)).await;
        assert!(!s.commit_fence(&lock, tb + 99).await.unwrap());
        assert_eq!(s.inspect("a").await.unwrap().last_token, Some(t + 50));
        assert_eq!(s.inspect("b").await.unwrap().last_token, Some(tb));
        let short = spec(&["c"], "C", 20);
        let tc = granted(&s, &short).await;
        sleep(Duration::from_millis(70)).await;
        assert!(!s.commit_fence(&short, tc + 5).await.unwrap());
        assert_eq!(s.inspect("c").await.unwrap().last_token, Some(tc));
    }

    #[tokio::test]
    async fn a_token_beyond_the_file_integers_is_an_error() {
        let (_dir, s) = store();
        let lock = spec(&["k"], "A", 10_000);
        let t = granted(&s, &lock).await;
        let e = s.commit_fence(&lock, u64::MAX).await.unwrap_err();
        assert_eq!(e.kind(), NodeErrorKind::Other, "{e}");
        assert_eq!(s.inspect("k").await.unwrap().last_token, Some(t));
    }

    #[tokio::test]
    async fn extend_reports_each_lock_in_order() {
        let (_dir, s) = store();
        let ours = spec(&["o1", "o2"], "A", 5_000);
        let other = spec(&["x"], "A", 10_000);
        let gone = spec(&["g"], "A", 20);
        granted(&s, &ours).await;
        granted(&s, &spec(&["x"], "B", 10_000)).await;
        granted(&s, &gone).await;
        sleep(Duration::from_millis(70)).await;
        let longer = spec(&["o1", "o2"], "A", 60_000);
        let out = s
            .extend(&[longer, other, gone], Expiry::Exactly, false)
            .await
            .unwrap();
        assert_eq!(out, [Holding::Ours, Holding::Other, Holding::Expired]);
        for key in ["o1", "o2"] {
            let pttl = s.inspect(key).await.unwrap().pttl.unwrap();
            assert!(pttl > Duration::from_secs(50), "{key}: {pttl:?}");
        }
        assert_eq!(s.inspect("x").await.unwrap().value.as_deref(), Some("B"));
        assert_eq!(s.extend(&[], Expiry::Exactly, false).await.unwrap(), []);
    }

    #[tokio::test]
    async fn extend_with_one_key_lost_extends_nothing() {
        let (_dir, s) = store();
        granted(&s, &spec(&["a", "b"], "A", 10_000)).await;
        s.release(&spec(&["b"], "A", 0)).await.unwrap();
        let before = s.inspect("a").await.unwrap().pttl.unwrap();
        let out = s
            .extend(&[spec(&["a", "b"], "A", 60_000)], Expiry::Exactly, false)
            .await
            .unwrap();
        assert_eq!(out, [Holding::Expired]);
        let after = s.inspect("a").await.unwrap().pttl.unwrap();
        assert!(
            after <= before,
            "{after:?} > {before:?}: extended a partial lock"
        );
        assert_eq!(s.inspect("b").await.unwrap().value, None);
    }

    #[tokio::test]
    async fn release_reports_ours_other_expired() {
        let (_dir, s) = store();
        let lock = spec(&["a", "b"], "A", 10_000);
        granted(&s, &lock).await;
        assert_eq!(s.release(&lock).await.unwrap(), Holding::Ours);
        for key in ["a", "b"] {
            assert_eq!(s.inspect(key).await.unwrap().value, None);
        }
        assert_eq!(s.release(&lock).await.unwrap(), Holding::Expired);

        granted(&s, &lock).await;
        s.release(&spec(&["b"], "A", 0)).await.unwrap();
        granted(&s, &spec(&["b"], "B", 10_000)).await;
        assert_eq!(s.release(&lock).await.unwrap(), Holding::Other);
        assert_eq!(s.inspect("a").await.unwrap().value, None);
        assert_eq!(s.inspect("b").await.unwrap().value.as_deref(), Some("B"));

        let short = spec(&["c"], "C", 20);
        granted(&s, &short).await;
        sleep(Duration::from_millis(70)).await;
        assert_eq!(s.release(&short).await.unwrap(), Holding::Expired);
    }

    #[tokio::test]
    async fn abandon_releases() {
        let (_dir, s) = store();
        let lock = spec(&["a"], "A", 10_000);
        granted(&s, &lock).await;
        s.abandon(&lock).await.unwrap();
        assert_eq!(s.inspect("a").await.unwrap().value, None);
        granted(&s, &spec(&["a"], "B", 10_000)).await;
        s.abandon(&lock).await.unwrap();
        assert_eq!(s.inspect("a").await.unwrap().value.as_deref(), Some("B"));
    }

    #[tokio::test]
    async fn abandon_is_ordered_after_a_timed_out_acquire() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("locks.db");
        let s = SqliteStore::open(&path, &options()).unwrap();
        let lock = spec(&["k"], "A", 60_000);
        // Another connection holds the write lock, so the acquire blocks and the
        // caller gives up on it; it is still running on its thread.
        let mut blocker = raw(&path);
        let tx = blocker
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .unwrap();
        let started = tokio::time::Instant::now();
        assert!(
            timeout(Duration::from_millis(40), s.acquire(&lock))
                .await
                .is_err()
        );
        assert!(
            s.inner.counts().contains_key("A"),
            "the running acquire is not tracked"
        );
        // SQLite's busy handler retries about 103, 128 and 178 ms after the acquire
        // began. Start the abandon just after the retry at 128 ms and free the file
        // 10 ms later: an abandon that did not wait for the acquire would write first,
        // and the late acquire would then leave the key set.
        tokio::time::sleep_until(started + Duration::from_millis(132)).await;
        let abandon = tokio::spawn(s.abandon(&lock));
        sleep(Duration::from_millis(10)).await;
        drop(tx);
        timeout(Duration::from_secs(10), abandon)
            .await
            .expect("abandon hung")
            .unwrap()
            .unwrap();
        assert_eq!(
            s.inspect("k").await.unwrap().value,
            None,
            "abandon left the key set"
        );
        assert!(s.inner.counts().is_empty());
    }

    #[tokio::test]
    async fn a_write_lock_held_too_long_is_reported_busy() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("locks.db");
        let s = SqliteStore::open(&path, &options()).unwrap();
        let mut blocker = raw(&path);
        let tx = blocker
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .unwrap();
        let e = s.acquire(&spec(&["k"], "A", 1_000)).await.unwrap_err();
        assert_eq!(e.kind(), NodeErrorKind::Busy, "{e}");
        assert!(e.to_string().contains(s.name()), "{e}");
        // Readers do not wait for the writer (WAL).
        assert_eq!(s.inspect("k").await.unwrap(), KeyInfo::default());
        drop(tx);
        granted(&s, &spec(&["k"], "A", 1_000)).await;
    }

    #[tokio::test]
    async fn expired_keys_are_free() {
        let (_dir, s) = store();
        // Long enough to be seen held even on a loaded machine, then waited out.
        let t1 = granted(&s, &spec(&["k"], "A", 300)).await;
        held_for(&s, &spec(&["k"], "B", 10_000)).await;
        sleep(Duration::from_millis(350)).await;
        let t2 = granted(&s, &spec(&["k"], "B", 10_000)).await;
        assert!(t2 > t1);
    }

    #[tokio::test]
    async fn inspect_shows_holder_only_while_held() {
        let (_dir, s) = store();
        assert_eq!(s.inspect("k").await.unwrap(), KeyInfo::default());
        let mut lock = spec(&["k"], "A", 10_000);
        lock.holder = Some("host-1 pid 42".into());
        let t = granted(&s, &lock).await;
        let info = s.inspect("k").await.unwrap();
        assert_eq!(info.value.as_deref(), Some("A"));
        assert_eq!(info.holder.as_deref(), Some("host-1 pid 42"));
        assert_eq!(info.last_token, Some(t));
        let pttl = info.pttl.unwrap();
        assert!(pttl > Duration::from_secs(9) && pttl <= Duration::from_secs(10));
        s.extend(std::slice::from_ref(&lock), Expiry::Exactly, false)
            .await
            .unwrap();
        let info = s.inspect("k").await.unwrap();
        assert_eq!(info.holder.as_deref(), Some("host-1 pid 42"));
        s.release(&lock).await.unwrap();
        let info = s.inspect("k").await.unwrap();
        assert_eq!(
            info,
            KeyInfo {
                last_token: Some(t),
                ..KeyInfo::default()
            }
        );
    }

    #[tokio::test]
    async fn watch_is_not_supported() {
        let (_dir, s) = store();
        assert!(s.watch("k", None).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn two_handles_on_one_file_exclude_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shared.db");
        let a = SqliteStore::open(&path, &options()).unwrap();
        let b = SqliteStore::open(&path, &options()).unwrap();
        let ta = granted(&a, &spec(&["k"], "A", 10_000)).await;
        held_for(&b, &spec(&["k"], "B", 10_000)).await;
        assert_eq!(b.inspect("k").await.unwrap().value.as_deref(), Some("A"));
        assert_eq!(
            b.release(&spec(&["k"], "B", 0)).await.unwrap(),
            Holding::Other
        );
        assert_eq!(
            a.release(&spec(&["k"], "A", 0)).await.unwrap(),
            Holding::Ours
        );
        assert!(granted(&b, &spec(&["k"], "B", 10_000)).await > ta);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn contending_handles_never_overlap_and_tokens_strictly_grow() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("contended.db");
        let stores: Vec<_> = (0..3)
            .map(|_| SqliteStore::open(&path, &options()).unwrap())
            .collect();
        let inside = Arc::new(AtomicBool::new(false));
        let tokens = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for worker in 0..9 {
            let s = stores[worker % stores.len()].clone();
            let (inside, tokens) = (Arc::clone(&inside), Arc::clone(&tokens));
            tasks.push(tokio::spawn(async move {
                let mut rounds = 0;
                while rounds < 10 {
                    let lock = spec(&["hot"], &format!("w{worker}-{rounds}"), 10_000);
                    match s.acquire(&lock).await.unwrap() {
                        Acquired::Held { .. } => sleep(Duration::from_millis(1)).await,
                        Acquired::Granted { counter } => {
                            assert!(!inside.swap(true, Ordering::SeqCst), "two holders at once");
                            tokens.lock().unwrap().push(counter);
                            sleep(Duration::from_millis(1)).await;
                            inside.store(false, Ordering::SeqCst);
                            assert_eq!(s.release(&lock).await.unwrap(), Holding::Ours);
                            rounds += 1;
                        }
                        other => panic!("SQLite never hands over: {other:?}"),
                    }
                }
            }));
        }
        for t in tasks {
            timeout(Duration::from_secs(60), t).await.unwrap().unwrap();
        }
        let tokens = tokens.lock().unwrap();
        assert_eq!(tokens.len(), 90);
        assert!(tokens.windows(2).all(|w| w[0] < w[1]), "{tokens:?}");
    }

    /// Inserts rows the way another process (or the past) would have left them.
    fn put_row(c: &Connection, key: &str, expires_ms: i64, counter: i64, touched_ms: i64) {
        c.execute(
            "INSERT INTO fencelock_lock (key, value, expires_ms) VALUES (?1, 'old', ?2)",
            params![key, expires_ms],
        )
        .unwrap();
        c.execute(
            "INSERT INTO fencelock_counter (key, counter, touched_ms) VALUES (?1, ?2, ?3)",
            params![key, counter, touched_ms],
        )
        .unwrap();
    }

    fn rows(c: &Connection, table: &str) -> Vec<String> {
        c.prepare(&format!("SELECT key FROM {table} ORDER BY key"))
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    }

    #[tokio::test]
    async fn sweep_drops_expired_rows_and_only_counters_past_retention() {
        let (dir, _s) = store();
        let c = raw(&dir.path().join("locks.db"));
        let now = Now::read().ms;
        let day = COUNTER_RETENTION_MS;
        put_row(&c, "expired-old", now - 1, 500, now - day - 1_000);
        put_row(&c, "expired-recent", now - 1, 600, now - day + 60_000);
        put_row(&c, "held-old", now + 60_000, 700, now - day - 1_000);
        sweep(&c, now).unwrap();
        assert_eq!(rows(&c, "fencelock_lock"), ["held-old"]);
        assert_eq!(
            rows(&c, "fencelock_counter"),
            ["expired-recent", "held-old"]
        );
        assert_eq!(counter_floor(&c).unwrap(), 500);
    }

    /// A held key is kept; a free one loses its rows, and its next token is still above
    /// the forgotten counter (the floor), even one far above the clock.
    #[tokio::test]
    async fn forget_removes_a_free_key_and_never_lowers_its_tokens() {
        let (dir, s) = store();
        let c = raw(&dir.path().join("locks.db"));
        granted(&s, &spec(&["k"], "A", 60_000)).await;
        assert_eq!(s.forget("k").await.unwrap(), Forgot::InUse);
        assert_eq!(rows(&c, "fencelock_lock"), ["k"]);
        let high = i64::try_from(Now::read().us).unwrap() + 1_000_000_000_000;
        assert!(
            s.commit_fence(&spec(&["k"], "A", 60_000), high.unsigned_abs())
                .await
                .unwrap()
        );
        s.release(&spec(&["k"], "A", 60_000)).await.unwrap();
        assert_eq!(s.forget("k").await.unwrap(), Forgot::Done);
        assert!(rows(&c, "fencelock_lock").is_empty());
        assert!(rows(&c, "fencelock_counter").is_empty());
        assert_eq!(
            granted(&s, &spec(&["k"], "B", 60_000)).await,
            high.unsigned_abs() + 1
        );
    }

    #[tokio::test]
    async fn a_swept_counter_never_comes_back_lower() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("locks.db");
        let s = SqliteStore::open(&path, &options()).unwrap();
        let c = raw(&path);
        let now = Now::read();
        // Far above the clock (as after a wall-clock step back), unused for over a day.
        let high = i64::try_from(now.us).unwrap() + 1_000_000_000_000;
        c.execute(
            "INSERT INTO fencelock_counter (key, counter, touched_ms) VALUES ('k', ?1, ?2)",
            params![high, now.ms - COUNTER_RETENTION_MS - 1],
        )
        .unwrap();
        // The first acquire on a handle sweeps.
        granted(&s, &spec(&["other"], "A", 10_000)).await;
        assert_eq!(rows(&c, "fencelock_counter"), ["other"]);
        let t = granted(&s, &spec(&["k"], "A", 10_000)).await;
        assert_eq!(t, u64::try_from(high).unwrap() + 1);
    }

    #[tokio::test]
    async fn acquire_sweeps_expired_rows_now_and_then() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("locks.db");
        let s = SqliteStore::open(&path, &options()).unwrap();
        let c = raw(&path);
        let now = Now::read().ms;
        put_row(&c, "stale", now - 1, 1, now);
        granted(&s, &spec(&["k"], "A", 10_000)).await;
        assert_eq!(rows(&c, "fencelock_lock"), ["k"]);
        // Not again within the interval.
        put_row(&c, "stale2", now - 1, 1, now);
        granted(&s, &spec(&["j"], "A", 10_000)).await;
        assert_eq!(rows(&c, "fencelock_lock"), ["j", "k", "stale2"]);
    }

    #[tokio::test]
    async fn huge_ttls_do_not_overflow() {
        let (_dir, s) = store();
        let lock = spec(&["k"], "A", u64::MAX);
        granted(&s, &lock).await;
        assert_eq!(
            s.extend(&[lock], Expiry::Exactly, false).await.unwrap(),
            [Holding::Ours]
        );
        assert!(s.inspect("k").await.unwrap().pttl.unwrap() > Duration::from_secs(86_400));
    }
}
