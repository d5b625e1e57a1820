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
//! Expiry is wall-clock milliseconds since the Unix epoch ([`std::time::SystemTime`]), because the
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
//! # Capabilities
//!
//! None beyond the core: SQLite has no way to tell another process that a row was
//! deleted, so there are no release notices (waiters poll, sleeping until the holder's
//! TTL runs out, with jitter) and no waiter lines.
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
use std::time::{Duration, Instant};

use rand::Rng;
use rusqlite::config::DbConfig;
use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, TransactionBehavior, params};

use super::rules::{self, LockRecord, Moment, Records};
use super::url::StoreOptions;
use super::{
    Acquired, Expiry, Forgot, Holding, KeyInfo, LockSpec, Node, QueueTicket, Store, StoreFuture,
    WaiterLine,
};
use crate::error::{Error, NodeError, NodeErrorKind};

/// The URL scheme: `sqlite:///path/to/file.db`.
pub(crate) const SCHEMES: &[&str] = &["sqlite"];

/// Opens (creating when missing) the lock file `url` names.
///
/// # Errors
///
/// [`crate::ErrorKind::InvalidInput`] for `sqlite://` without a path; otherwise as
/// [`SqliteStore::open`].
pub(crate) fn open(url: &str, options: &StoreOptions) -> Result<Node, Error> {
    let path = url.split_once("://").map_or("", |(_, path)| path);
    if path.is_empty() {
        return Err(Error::invalid(
            "store URL",
            "sqlite:// needs a file path, as in sqlite:///var/lib/app/locks.db",
        ));
    }
    Ok(Arc::new(SqliteStore::open(Path::new(path), options)?))
}

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

/// [`rules::COUNTER_RETENTION`] in the file's unit.
const COUNTER_RETENTION_MS: i64 = rules::COUNTER_RETENTION.as_millis() as i64;

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

/// The wall clock in milliseconds since the Unix epoch: how the file keeps expiry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct WallMs(i64);

impl Moment for WallMs {
    fn after(self, d: Duration) -> Self {
        WallMs(
            self.0
                .saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
        )
    }
    fn since(self, earlier: Self) -> Duration {
        Duration::from_millis(u64::try_from(self.0.saturating_sub(earlier.0)).unwrap_or(0))
    }
}

type Now = rules::Now<WallMs>;

/// One reading of the wall clock, in the two units the store uses: ms for expiry, µs
/// to seed new fencing counters.
fn now() -> Now {
    let us = rules::wall_micros();
    rules::Now {
        at: WallMs(i64::try_from(us / 1000).unwrap_or(i64::MAX)),
        wall_us: us,
    }
}

/// The tables as [`rules`] reads and writes them, inside one transaction.
struct Rows<'c>(&'c Connection);

impl Records for Rows<'_> {
    type At = WallMs;
    type Error = Failure;

    fn lock(&mut self, key: &str) -> Result<Option<LockRecord<WallMs>>, Failure> {
        let row: Option<(String, i64, Option<String>)> = self
            .0
            .prepare_cached("SELECT value, expires_ms, holder FROM fencelock_lock WHERE key = ?1")?
            .query_row([key], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()?;
        Ok(row.map(|(value, expires, holder)| LockRecord {
            value: value.into(),
            expires: WallMs(expires),
            holder: holder.map(Into::into),
        }))
    }

    fn put_lock(&mut self, key: &str, record: LockRecord<WallMs>) -> Result<(), Failure> {
        self.0
            .prepare_cached(
                "INSERT INTO fencelock_lock (key, value, expires_ms, holder) \
                 VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value, \
                 expires_ms = excluded.expires_ms, holder = excluded.holder",
            )?
            .execute(params![
                key,
                &*record.value,
                record.expires.0,
                record.holder.as_deref()
            ])?;
        Ok(())
    }

    fn delete_lock(&mut self, key: &str) -> Result<(), Failure> {
        self.0
            .prepare_cached("DELETE FROM fencelock_lock WHERE key = ?1")?
            .execute([key])?;
        Ok(())
    }

    fn counter(&mut self, key: &str) -> Result<Option<u64>, Failure> {
        Ok(counter(self.0, key)?)
    }

    fn put_counter(&mut self, key: &str, value: u64, touched: WallMs) -> Result<(), Failure> {
        let value = to_i64(value, "fencing counter")?;
        self.0
            .prepare_cached(
                "INSERT INTO fencelock_counter (key, counter, touched_ms) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (key) DO UPDATE SET counter = excluded.counter, \
                 touched_ms = excluded.touched_ms",
            )?
            .execute(params![key, value, touched.0])?;
        Ok(())
    }

    fn delete_counter(&mut self, key: &str) -> Result<(), Failure> {
        self.0
            .prepare_cached("DELETE FROM fencelock_counter WHERE key = ?1")?
            .execute([key])?;
        Ok(())
    }

    fn floor(&mut self) -> Result<u64, Failure> {
        Ok(counter_floor(self.0)?)
    }

    fn raise_floor(&mut self, to: u64) -> Result<(), Failure> {
        Ok(raise_floor(self.0, to_i64(to, "counter floor")?)?)
    }

    fn exhausted(&self) -> Failure {
        Failure::Range("the fencing counter is exhausted".into())
    }
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

// Each operation below is one `BEGIN IMMEDIATE` transaction (a read one for `inspect`)
// around the rule of the same name: the compare and the set under one lock, across
// processes. The clock is read once the transaction holds its lock.

fn acquire(conn: &mut Connection, lock: &LockSpec, sweep_now: bool) -> Result<Acquired, Failure> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let now = now();
    if sweep_now {
        sweep(&tx, now.at.0)?;
    }
    if let Some(q) = lock.queue.as_ref().filter(|q| q.fair) {
        // Held keys refuse as usual; free keys still go to the first live waiter in
        // line.
        let mut held_for: Option<Duration> = None;
        for key in lock.keys.iter() {
            if let rules::Slot::Other(pttl) = rules::slot(&mut Rows(&tx), key, &lock.value, now.at)? {
                held_for = held_for.max(Some(pttl));
            }
        }
        if held_for.is_none() {
            held_for = blocked_for(&tx, lock, q, now.at.0)?
                .map(|ms| Duration::from_millis(u64::try_from(ms).unwrap_or(0)));
        }
        match held_for {
            Some(pttl) => {
                let joined = join_lines(&tx, lock, q, now.at, pttl)?;
                // Commits the sweep, if any, and the line entries; the keys are untouched.
                tx.commit()?;
                return Ok(Acquired::Held {
                    pttl: Some(pttl),
                    joined,
                    silent: false,
                });
            }
            None => leave_lines(&tx, lock, q)?,
        }
    }
    let out = rules::acquire(&mut Rows(&tx), lock, now)?;
    // Commits the sweep too, also when the keys were held and are untouched.
    tx.commit()?;
    Ok(out)
}

fn commit_fence(conn: &mut Connection, lock: &LockSpec, token: u64) -> Result<bool, Failure> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let out = rules::commit_fence(&mut Rows(&tx), lock, token, now())?;
    tx.commit()?;
    Ok(out)
}

fn extend(
    conn: &mut Connection,
    locks: &[LockSpec],
    expiry: Expiry,
    reclaim: bool,
) -> Result<Vec<Holding>, Failure> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let now = now().at;
    let mut rows = Rows(&tx);
    let out = locks
        .iter()
        .map(|lock| rules::extend(&mut rows, lock, expiry, reclaim, now))
        .collect::<Result<Vec<_>, _>>()?;
    tx.commit()?;
    Ok(out)
}

fn release(conn: &mut Connection, lock: &LockSpec) -> Result<Holding, Failure> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let (holding, _) = rules::release(&mut Rows(&tx), lock, now().at)?;
    if let Some(q) = lock.queue.as_ref().filter(|q| q.fair) {
        leave_lines(&tx, lock, q)?;
    }
    tx.commit()?;
    Ok(holding)
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
/// `q`'s: how long (ms) that waiter's entry has left (the longest among the keys).
fn blocked_for(
    conn: &Connection,
    lock: &LockSpec,
    q: &QueueTicket,
    now_ms: i64,
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
            .query_row(params![prefix, end, now_ms], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        if let Some((entry, expires)) = head
            && entry != line_entry(key, q)
        {
            blocked = blocked.max(Some(expires - now_ms));
        }
    }
    Ok(blocked)
}

/// Takes (or keeps) `q`'s place in the line of every key of `lock`, valid for the
/// wait it is told to expect plus the grace. Whether it was not in some line yet.
fn join_lines(
    conn: &Connection,
    lock: &LockSpec,
    q: &QueueTicket,
    now: WallMs,
    wait: Duration,
) -> Result<bool, Failure> {
    let expires = now
        .after((wait + Duration::from_millis(q.grace_ms)).min(rules::MAX_TTL))
        .0;
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
        if refresh.execute(params![entry, expires, now.0])? == 0 {
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

fn inspect(conn: &mut Connection, key: &str) -> Result<KeyInfo, Failure> {
    // A read transaction: the lock row and the counter come from one snapshot.
    let tx = conn.transaction()?;
    let info = rules::inspect(&mut Rows(&tx), key, now().at)?;
    tx.commit()?;
    Ok(info)
}

/// Forgets `key` unless it is held (the floor raised above its counter first, as
/// [`sweep`] does).
fn forget(conn: &mut Connection, key: &str) -> Result<Forgot, Failure> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let out = rules::forget(&mut Rows(&tx), key, now().at)?;
    tx.commit()?;
    Ok(out)
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
/// first so a key that comes back starts above every token it had: the retention rule
/// ([`rules::counter_expendable`]) as one query, so a sweep stays one statement per
/// table rather than a read per row.
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
        now.at.0.saturating_sub(last) >= SWEEP_INTERVAL_MS
            && self
                .last_sweep_ms
                .compare_exchange(last, now.at.0, Ordering::Relaxed, Ordering::Relaxed)
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
            let sweep_now = inner.sweep_due(now());
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

    fn waiter_line(&self) -> Option<&dyn WaiterLine> {
        Some(self)
    }
}

/// The fair semaphores' lines only (`lines_for_locks` is false): a lock takes no
/// place in line here, and fair locks are refused.
impl WaiterLine for SqliteStore {
    fn leave_queue(&self, lock: &LockSpec) -> StoreFuture<()> {
        let lock = lock.clone();
        self.spawn(Vec::new(), move |inner| {
            inner.with_connection(|c| leave_queue(c, &lock))
        })
    }

    /// A release: no key here is ever handed to a waiter, so there is nothing to
    /// hold back (it also leaves the fair lines, as a release does).
    fn undo(&self, lock: &LockSpec) -> StoreFuture<Holding> {
        self.release(lock)
    }

    fn lines_for_locks(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use tempfile::TempDir;
    use tokio::time::{sleep, timeout};

    use super::*;
    use crate::store::kit::{Subject, granted, held_for, spec, store_kit};

    fn options() -> StoreOptions {
        StoreOptions::new(Duration::from_secs(1))
    }

    /// A store on a fresh file in a fresh directory (kept alive by the `TempDir`).
    fn store() -> (TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("locks.db"), &options()).unwrap();
        (dir, s)
    }

    fn fresh_store() -> Subject {
        let (dir, s) = store();
        Subject {
            node: Arc::new(s),
            _keep: Box::new(dir),
        }
    }

    store_kit!(fresh_store);

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




    /// The counters live in the file: a restart continues from them (the kit checks
    /// how they grow).
    #[tokio::test]
    async fn counters_persist_across_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("locks.db");
        let s = SqliteStore::open(&path, &options()).unwrap();
        let t = granted(&s, &spec(&["k"], "A", 10_000)).await;
        s.release(&spec(&["k"], "A", 0)).await.unwrap();
        drop(s);
        let s = SqliteStore::open(&path, &options()).unwrap();
        assert_eq!(granted(&s, &spec(&["k"], "D", 10_000)).await, t + 1);
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
        let now = now().at.0;
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
        let high = i64::try_from(now().wall_us).unwrap() + 1_000_000_000_000;
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
        let now = now();
        // Far above the clock (as after a wall-clock step back), unused for over a day.
        let high = i64::try_from(now.wall_us).unwrap() + 1_000_000_000_000;
        c.execute(
            "INSERT INTO fencelock_counter (key, counter, touched_ms) VALUES ('k', ?1, ?2)",
            params![high, now.at.0 - COUNTER_RETENTION_MS - 1],
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
        let now = now().at.0;
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
