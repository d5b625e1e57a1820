//! The ledger: accounts with balances, in an SQLite file or in Redis keys, that a
//! lock holder reads and writes with its lease's fencing token.
//!
//! It offers what a read-modify-write needs: read some balances, and write them back —
//! plainly (no token: the ledger trusts the lock), or *fenced*. A fenced ledger keeps,
//! per account, the highest fencing token that touched it, and refuses a **read or a
//! write** that carries a lower one; an admitted read raises the accounts' fences to
//! its token as a write does. Why the read too: with only writes fenced, a stale
//! holder's write can still land between a newer holder's read and its write — every
//! token in order, and the newer holder's write, computed from a read that did not see
//! it, wipes it out (a lost update). Raising the fence at the read closes that gap: the
//! stale write is refused as soon as the newer holder has read. (`docs/reliability.md`
//! and `docs/fencing.md` have the argument.)
//!
//! All the accounts of one access are admitted together or not at all (one SQL
//! transaction, one Lua script): a stale holder never gets half a transfer in, nor half
//! a read.
//!
//! The rule is the library's: a token lower than the highest seen is refused, an equal
//! one passes (one holder may read and write several times), as in
//! [`fencelock::fence::SQL_FENCED_UPDATE_CONDITION`] (used as is for SQLite) and
//! [`fencelock::fence::REDIS_FENCED_SET`]. On Redis the ledger is the Lua functions of
//! [`REDIS_LEDGER_LUA`], which the chaos suite's resource (`fencelock-chaos`'s
//! `resource.rs`) also calls: the demo and the chaos suite share this one ledger.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::Duration;

use fencelock::FencingToken;
use fencelock::fence::SQL_FENCED_UPDATE_CONDITION;
use rusqlite::{Connection, OpenFlags, TransactionBehavior, params};

/// The fenced ledger on Redis, as Lua functions to put in front of a script's body
/// (see [`redis_script`]):
///
/// - `ledger_admit(fences, token)`: `fences` the fence keys that guard the accounts of
///   one access, `token` the holder's fencing token as a decimal string, or `''` for a
///   plain access. Returns 0 (refused) when the token is lower than any fence, else
///   sets every fence to the token and returns 1. No fences or no token: 1.
/// - `ledger_balances(balances)`: the balances at the keys `balances`, as numbers (a
///   missing account is a script error, raised before anything is written: Redis
///   keeps a failed script's earlier writes). The resource's own look, not fenced.
/// - `ledger_read(balances, fences, token)`: `{1, b1, b2, …}` when admitted, `{0}` when
///   refused.
/// - `ledger_write(balances, fences, token, changes)`: applies `changes[i]` to
///   `balances[i]` — `{'set', n}` or `{'add', n}` — when admitted; returns 1, or 0
///   when refused (nothing written).
///
/// Tokens are compared as Lua numbers: exact below 2^53, and fencelock's tokens are
/// about 2^51. Fences are stored as the strings the client sent, so never rounded.
pub const REDIS_LEDGER_LUA: &str = r"
local function ledger_admit(fences, token)
  if token == '' or #fences == 0 then return 1 end
  local t = tonumber(token)
  for _, f in ipairs(fences) do
    if t < tonumber(redis.call('GET', f) or '0') then return 0 end
  end
  for _, f in ipairs(fences) do redis.call('SET', f, token) end
  return 1
end

local function ledger_balances(balances)
  local out = {}
  for _, k in ipairs(balances) do
    local v = tonumber(redis.call('GET', k))
    if not v then error('ledger: no account at ' .. k) end
    table.insert(out, v)
  end
  return out
end

local function ledger_read(balances, fences, token)
  local values = ledger_balances(balances)
  if ledger_admit(fences, token) == 0 then return {0} end
  local out = {1}
  for _, v in ipairs(values) do table.insert(out, v) end
  return out
end

local function ledger_write(balances, fences, token, changes)
  if ledger_admit(fences, token) == 0 then return 0 end
  for i, k in ipairs(balances) do
    if changes[i][1] == 'add' then
      redis.call('INCRBY', k, changes[i][2])
    else
      redis.call('SET', k, changes[i][2])
    end
  end
  return 1
end
";

/// A script made of the ledger's functions ([`REDIS_LEDGER_LUA`]) and `body`, which
/// calls them.
pub fn redis_script(body: &str) -> redis::Script {
    redis::Script::new(&format!("{REDIS_LEDGER_LUA}\n{body}"))
}

/// The demo's read on Redis. KEYS: the `n` balance keys, then their fence keys (none
/// for a plain read). ARGV: the token (`''`: plain), `n`.
static REDIS_READ: LazyLock<redis::Script> = LazyLock::new(|| {
    redis_script(
        "local n = tonumber(ARGV[2])\n\
         local balances, fences = {}, {}\n\
         for i = 1, #KEYS do\n\
           if i <= n then table.insert(balances, KEYS[i]) else table.insert(fences, KEYS[i]) end\n\
         end\n\
         return ledger_read(balances, fences, ARGV[1])\n",
    )
});

/// The demo's write on Redis: KEYS as for [`REDIS_READ`]; ARGV: the token, `n`, the
/// `n` new balances.
static REDIS_WRITE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis_script(
        "local n = tonumber(ARGV[2])\n\
         local balances, fences, changes = {}, {}, {}\n\
         for i = 1, #KEYS do\n\
           if i <= n then\n\
             table.insert(balances, KEYS[i])\n\
             table.insert(changes, {'set', ARGV[2 + i]})\n\
           else\n\
             table.insert(fences, KEYS[i])\n\
           end\n\
         end\n\
         return ledger_write(balances, fences, ARGV[1], changes)\n",
    )
});

/// What went wrong with the ledger, classified for exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A ledger URL that is neither `sqlite://` nor `redis://`.
    Usage,
    /// The server does not answer, or the SQLite file stayed busy.
    Unavailable,
    /// The file cannot be opened as configured.
    Config,
    /// Anything else: a missing account, an odd answer, a bug.
    Other,
}

/// A ledger error: what kind, and a sentence that says what the ledger was doing.
#[derive(Debug, Clone)]
pub struct Error {
    kind: ErrorKind,
    message: String,
}

impl Error {
    fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
        }
    }

    /// What kind of failure.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// Where one ledger is.
#[derive(Debug, Clone)]
pub enum LedgerSpec {
    /// An SQLite file: table `account(id, balance, fence)`.
    Sqlite {
        /// The file.
        path: PathBuf,
    },
    /// Keys `{prefix}balance:{i}` and `{prefix}fence:{i}` on one Redis server.
    Redis {
        /// The server (may hold a password: never print it).
        url: String,
        /// The key prefix.
        prefix: String,
    },
}

impl LedgerSpec {
    /// The URL and key prefix, as a worker process takes them.
    pub fn to_args(&self) -> (String, String) {
        match self {
            LedgerSpec::Sqlite { path } => (format!("sqlite://{}", path.display()), String::new()),
            LedgerSpec::Redis { url, prefix } => (url.clone(), prefix.clone()),
        }
    }

    /// The inverse of [`LedgerSpec::to_args`].
    ///
    /// # Errors
    ///
    /// The URL is neither `sqlite:///path` nor `redis://…`/`rediss://…`.
    pub fn from_args(url: &str, prefix: &str) -> Result<LedgerSpec, Error> {
        if let Some(path) = url.strip_prefix("sqlite://") {
            return Ok(LedgerSpec::Sqlite {
                path: PathBuf::from(path),
            });
        }
        if url.starts_with("redis://") || url.starts_with("rediss://") {
            return Ok(LedgerSpec::Redis {
                url: url.to_string(),
                prefix: prefix.to_string(),
            });
        }
        Err(Error::new(
            ErrorKind::Usage,
            "the ledger must be sqlite:///path or redis://…",
        ))
    }

    /// Where it is, for people and for JSON reports (no password).
    pub fn location(&self) -> Location {
        match self {
            LedgerSpec::Sqlite { path } => Location::Sqlite { path: path.clone() },
            LedgerSpec::Redis { prefix, .. } => Location::Redis {
                prefix: prefix.clone(),
            },
        }
    }
}

/// Where a ledger is, as a report shows it.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Location {
    /// `{"sqlite": {"path": …}}`: table `account(id, balance, fence)`.
    Sqlite {
        /// The file.
        path: PathBuf,
    },
    /// `{"redis": {"prefix": …}}`: keys `{prefix}balance:{i}` and `{prefix}fence:{i}`.
    Redis {
        /// The key prefix.
        prefix: String,
    },
}

/// What the ledger answered to a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    /// The balances of the accounts read, in the order asked.
    Balances(i64, i64),
    /// Refused as stale: an account had been read or written with a higher token.
    Refused,
}

/// What the ledger did with a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// Both balances were written.
    Applied,
    /// Refused as stale: an account had been read or written with a higher token.
    Refused,
}

/// An open ledger.
#[derive(Debug)]
pub struct Ledger {
    backend: Backend,
}

#[derive(Debug)]
enum Backend {
    /// rusqlite is blocking: every call runs on tokio's blocking pool, so the lock's
    /// background task keeps running meanwhile.
    Sqlite(Arc<Mutex<Connection>>),
    Redis {
        conn: redis::aio::MultiplexedConnection,
        prefix: String,
    },
}

/// How long an SQLite statement waits for another process's write lock. Generous: the
/// workers of an unlocked round all write at once.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The schema of an SQLite ledger: `fence` is the highest token that read or wrote the
/// row (only fenced accesses use it).
const SQLITE_SCHEMA: &str = "
    CREATE TABLE account (
        id      INTEGER PRIMARY KEY,
        balance INTEGER NOT NULL,
        fence   INTEGER NOT NULL DEFAULT 0
    );";

/// A fenced update of one account: `?1` the balance, `?2` the holder's token, `?3` the
/// account. The library's condition makes a stale holder update zero rows.
static SQL_FENCED_UPDATE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE account SET balance = ?1, fence = ?2 WHERE id = ?3 AND {SQL_FENCED_UPDATE_CONDITION}"
    )
});

/// A fenced read's admission of one account: `?1` the account, `?2` the holder's
/// token; raises the fence to the token, or changes zero rows for a stale holder.
static SQL_FENCED_READ: LazyLock<String> = LazyLock::new(|| {
    format!("UPDATE account SET fence = ?2 WHERE id = ?1 AND {SQL_FENCED_UPDATE_CONDITION}")
});

impl Ledger {
    /// Creates a ledger of `accounts` accounts holding `balance` each, and returns it
    /// open.
    ///
    /// # Errors
    ///
    /// The file cannot be created, or the server does not answer.
    pub async fn create(spec: &LedgerSpec, accounts: u32, balance: i64) -> Result<Ledger, Error> {
        let ledger = Ledger::open_inner(spec, true).await?;
        match &ledger.backend {
            Backend::Sqlite(conn) => {
                blocking(conn, "create the ledger", move |c| {
                    c.execute_batch(SQLITE_SCHEMA)?;
                    let tx = c.transaction()?;
                    {
                        let mut insert =
                            tx.prepare("INSERT INTO account (id, balance) VALUES (?1, ?2)")?;
                        for id in 0..accounts {
                            insert.execute(params![id, balance])?;
                        }
                    }
                    tx.commit()
                })
                .await?;
            }
            Backend::Redis { conn, prefix } => {
                let mut pairs = Vec::with_capacity(2 * accounts as usize);
                for id in 0..accounts {
                    pairs.push((balance_key(prefix, id), balance.to_string()));
                    pairs.push((fence_key(prefix, id), "0".to_string()));
                }
                redis::cmd("MSET")
                    .arg(&pairs)
                    .query_async::<()>(&mut conn.clone())
                    .await
                    .map_err(|e| redis_error("create the ledger", &e))?;
            }
        }
        Ok(ledger)
    }

    /// Opens an existing ledger.
    ///
    /// # Errors
    ///
    /// The file does not exist or cannot be opened, or the server does not answer.
    pub async fn open(spec: &LedgerSpec) -> Result<Ledger, Error> {
        Ledger::open_inner(spec, false).await
    }

    async fn open_inner(spec: &LedgerSpec, create: bool) -> Result<Ledger, Error> {
        let backend = match spec {
            LedgerSpec::Sqlite { path } => {
                let path = path.clone();
                let conn = tokio::task::spawn_blocking(move || open_sqlite(&path, create))
                    .await
                    .map_err(|e| Error::new(ErrorKind::Other, format!("ledger: {e}")))??;
                Backend::Sqlite(Arc::new(Mutex::new(conn)))
            }
            LedgerSpec::Redis { url, prefix } => Backend::Redis {
                conn: redis_connect(url).await?,
                prefix: prefix.clone(),
            },
        };
        Ok(Ledger { backend })
    }

    /// Reads the balances of `from` and `to`: plainly (`token` none), or fenced by
    /// `token`, in which case the ledger refuses the read if either account was read
    /// or written with a higher token, and otherwise raises both accounts' fences to
    /// it.
    ///
    /// # Errors
    ///
    /// An account is missing, or the ledger does not answer.
    pub async fn read(
        &self,
        from: u32,
        to: u32,
        token: Option<FencingToken>,
    ) -> Result<Read, Error> {
        match &self.backend {
            Backend::Sqlite(conn) => {
                blocking(conn, "read balances", move |c| {
                    sqlite_read(c, [from, to], token)
                })
                .await?
            }
            Backend::Redis { conn, prefix } => {
                let answer: Vec<i64> = redis_invoke(&REDIS_READ, prefix, [from, to], token)
                    .invoke_async(&mut conn.clone())
                    .await
                    .map_err(|e| redis_error("read balances", &e))?;
                match answer[..] {
                    [0] => Ok(Read::Refused),
                    [1, a, b] => Ok(Read::Balances(a, b)),
                    _ => Err(Error::new(
                        ErrorKind::Other,
                        format!("ledger: the read answered {answer:?}"),
                    )),
                }
            }
        }
    }

    /// Writes the new balances of both accounts of a transfer: plainly (`token` none),
    /// or fenced by `token`, in which case the ledger refuses both writes if either
    /// account was read or written with a higher token.
    ///
    /// # Errors
    ///
    /// An account is missing, or the ledger does not answer.
    pub async fn write(
        &self,
        (from, from_balance): (u32, i64),
        (to, to_balance): (u32, i64),
        token: Option<FencingToken>,
    ) -> Result<Written, Error> {
        match &self.backend {
            Backend::Sqlite(conn) => {
                blocking(conn, "write balances", move |c| {
                    sqlite_write(c, [(from, from_balance), (to, to_balance)], token)
                })
                .await?
            }
            Backend::Redis { conn, prefix } => {
                let written: i64 = redis_invoke(&REDIS_WRITE, prefix, [from, to], token)
                    .arg(from_balance)
                    .arg(to_balance)
                    .invoke_async(&mut conn.clone())
                    .await
                    .map_err(|e| redis_error("write balances", &e))?;
                Ok(if written == 1 {
                    Written::Applied
                } else {
                    Written::Refused
                })
            }
        }
    }

    /// Every balance, by account number: an independent look at the whole ledger
    /// (not fenced, it raises no fence).
    ///
    /// # Errors
    ///
    /// An account is missing, or the ledger does not answer.
    pub async fn balances(&self, accounts: u32) -> Result<Vec<i64>, Error> {
        let balances = match &self.backend {
            Backend::Sqlite(conn) => {
                blocking(conn, "read the ledger", |c| {
                    let mut stmt = c.prepare("SELECT balance FROM account ORDER BY id")?;
                    stmt.query_map([], |r| r.get::<_, i64>(0))?
                        .collect::<rusqlite::Result<Vec<i64>>>()
                })
                .await?
            }
            Backend::Redis { conn, prefix } => {
                let ids: Vec<u32> = (0..accounts).collect();
                redis_balances(conn, prefix, &ids).await?
            }
        };
        if balances.len() != accounts as usize {
            return Err(Error::new(
                ErrorKind::Other,
                format!("ledger: {} accounts instead of {accounts}", balances.len()),
            ));
        }
        Ok(balances)
    }
}

/// Opens an SQLite ledger file: WAL (readers do not wait for the writer), a busy
/// timeout (writers of other processes queue instead of failing), and
/// `synchronous = NORMAL`: in WAL mode a commit then waits for no disk flush. The
/// demo's ledger is thrown away; flushing every transfer would measure the disk, not
/// the lock. (The lock store makes its own choices.)
fn open_sqlite(path: &Path, create: bool) -> Result<Connection, Error> {
    let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    if create {
        flags |= OpenFlags::SQLITE_OPEN_CREATE;
    }
    let fail = |e: rusqlite::Error| {
        Error::new(
            ErrorKind::Config,
            format!("cannot open the ledger {}: {e}", path.display()),
        )
    };
    let conn = Connection::open_with_flags(path, flags).map_err(fail)?;
    conn.busy_timeout(SQLITE_BUSY_TIMEOUT).map_err(fail)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(fail)?;
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(fail)?;
    Ok(conn)
}

/// A read in one immediate transaction: fenced, both fences are raised first, and a
/// row that refuses the token rolls the whole read back (and returns no balance).
fn sqlite_read(
    c: &mut Connection,
    ids: [u32; 2],
    token: Option<FencingToken>,
) -> rusqlite::Result<Result<Read, Error>> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if let Some(t) = token {
        for id in ids {
            let changed = tx
                .prepare_cached(&SQL_FENCED_READ)?
                .execute(params![id, t.as_i64()])?;
            if changed == 0 {
                // Dropping `tx` rolls back the other row's fence.
                return Ok(refused_or_missing(&tx, id, Read::Refused));
            }
        }
    }
    let rows = {
        let mut stmt = tx.prepare_cached("SELECT id, balance FROM account WHERE id IN (?1, ?2)")?;
        stmt.query_map(params![ids[0], ids[1]], |r| {
            Ok((r.get::<_, u32>(0)?, r.get::<_, i64>(1)?))
        })?
        .collect::<rusqlite::Result<HashMap<u32, i64>>>()?
    };
    tx.commit()?;
    let get = |id| {
        rows.get(&id)
            .copied()
            .ok_or_else(|| Error::new(ErrorKind::Other, format!("ledger: no account {id}")))
    };
    Ok(get(ids[0]).and_then(|a| Ok(Read::Balances(a, get(ids[1])?))))
}

/// Both updates in one immediate transaction; fenced, a row that refuses the token
/// rolls the whole transfer back.
fn sqlite_write(
    c: &mut Connection,
    rows: [(u32, i64); 2],
    token: Option<FencingToken>,
) -> rusqlite::Result<Result<Written, Error>> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    for (id, balance) in rows {
        let changed = match token {
            None => tx
                .prepare_cached("UPDATE account SET balance = ?1 WHERE id = ?2")?
                .execute(params![balance, id])?,
            Some(t) => {
                tx.prepare_cached(&SQL_FENCED_UPDATE)?
                    .execute(params![balance, t.as_i64(), id])?
            }
        };
        if changed == 0 {
            if token.is_none() {
                return Ok(Err(no_account(id)));
            }
            // Dropping `tx` rolls back the other row's update.
            return Ok(refused_or_missing(&tx, id, Written::Refused));
        }
    }
    tx.commit()?;
    Ok(Ok(Written::Applied))
}

/// Zero rows changed by a fenced statement: refused by the fence, or no such account.
/// Tells them apart so that a missing account is never reported as a fencing success.
fn refused_or_missing<T>(tx: &rusqlite::Transaction<'_>, id: u32, refused: T) -> Result<T, Error> {
    let exists = tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM account WHERE id = ?1)",
        [id],
        |r| r.get::<_, bool>(0),
    );
    match exists {
        Ok(true) => Ok(refused),
        Ok(false) => Err(no_account(id)),
        Err(e) => Err(Error::new(
            ErrorKind::Other,
            format!("ledger: cannot look up account {id}: {e}"),
        )),
    }
}

fn no_account(id: u32) -> Error {
    Error::new(ErrorKind::Other, format!("ledger: no account {id}"))
}

/// Runs `f` on the connection on tokio's blocking pool.
async fn blocking<T: Send + 'static>(
    conn: &Arc<Mutex<Connection>>,
    what: &'static str,
    f: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
) -> Result<T, Error> {
    let conn = conn.clone();
    tokio::task::spawn_blocking(move || {
        let mut c = conn.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut c)
    })
    .await
    .map_err(|e| Error::new(ErrorKind::Other, format!("ledger: cannot {what}: {e}")))?
    .map_err(|e| {
        let busy = matches!(
            e.sqlite_error_code(),
            Some(rusqlite::ErrorCode::DatabaseBusy)
        );
        Error::new(
            if busy {
                ErrorKind::Unavailable
            } else {
                ErrorKind::Other
            },
            format!("ledger: cannot {what}: {e}"),
        )
    })
}

fn balance_key(prefix: &str, id: u32) -> String {
    format!("{prefix}balance:{id}")
}

fn fence_key(prefix: &str, id: u32) -> String {
    format!("{prefix}fence:{id}")
}

/// An invocation of one of the demo's scripts on accounts `ids`: their balance keys,
/// and when fenced their fence keys; the token (or `''`) and the number of accounts.
fn redis_invoke<'a>(
    script: &'a redis::Script,
    prefix: &str,
    ids: [u32; 2],
    token: Option<FencingToken>,
) -> redis::ScriptInvocation<'a> {
    let mut inv = script.prepare_invoke();
    for id in ids {
        inv.key(balance_key(prefix, id));
    }
    if token.is_some() {
        for id in ids {
            inv.key(fence_key(prefix, id));
        }
    }
    inv.arg(token.map_or_else(String::new, |t| t.get().to_string()))
        .arg(ids.len());
    inv
}

/// Connects to a Redis server for the ledger or the clean-up.
async fn redis_connect(url: &str) -> Result<redis::aio::MultiplexedConnection, Error> {
    let client = redis::Client::open(url).map_err(|e| redis_error("open the ledger", &e))?;
    client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| redis_error("connect to the ledger's server", &e))
}

/// The balances of `ids`, in order; a missing or non-numeric one is an error.
async fn redis_balances(
    conn: &redis::aio::MultiplexedConnection,
    prefix: &str,
    ids: &[u32],
) -> Result<Vec<i64>, Error> {
    let keys: Vec<String> = ids.iter().map(|&id| balance_key(prefix, id)).collect();
    let values: Vec<Option<String>> = redis::cmd("MGET")
        .arg(&keys)
        .query_async(&mut conn.clone())
        .await
        .map_err(|e| redis_error("read balances", &e))?;
    if values.len() != ids.len() {
        return Err(Error::new(ErrorKind::Other, "ledger: MGET answered oddly"));
    }
    ids.iter()
        .zip(values)
        .map(|(id, v)| {
            v.and_then(|s| s.parse().ok()).ok_or_else(|| {
                Error::new(
                    ErrorKind::Other,
                    format!("ledger: account {id} is missing or not a number"),
                )
            })
        })
        .collect()
}

/// Deletes every key under `prefix` on the server at `url` (a run's clean-up).
/// Returns how many were deleted.
///
/// # Errors
///
/// The server does not answer.
pub async fn delete_prefix(url: &str, prefix: &str) -> Result<u64, Error> {
    let mut conn = redis_connect(url).await?;
    let pattern = format!("{prefix}*");
    let mut cursor: u64 = 0;
    let mut deleted = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await
            .map_err(|e| redis_error("list the demo's keys", &e))?;
        if !keys.is_empty() {
            deleted += redis::cmd("DEL")
                .arg(&keys)
                .query_async::<u64>(&mut conn)
                .await
                .map_err(|e| redis_error("delete the demo's keys", &e))?;
        }
        if next == 0 {
            return Ok(deleted);
        }
        cursor = next;
    }
}

/// A Redis error as a ledger error: "cannot reach" is `Unavailable`, the rest a
/// surprise. redis-rs never puts the password in its messages.
fn redis_error(what: &str, e: &redis::RedisError) -> Error {
    let down = e.is_io_error() || e.is_connection_refusal() || e.is_timeout();
    Error::new(
        if down {
            ErrorKind::Unavailable
        } else {
            ErrorKind::Other
        },
        format!("ledger: cannot {what}: {e}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_round_trip_through_worker_arguments() {
        let spec = LedgerSpec::Sqlite {
            path: PathBuf::from("/tmp/x/l.db"),
        };
        let (url, prefix) = spec.to_args();
        assert!(matches!(
            LedgerSpec::from_args(&url, &prefix),
            Ok(LedgerSpec::Sqlite { path }) if path == Path::new("/tmp/x/l.db")
        ));
        assert_eq!(
            LedgerSpec::from_args("memory://", "").unwrap_err().kind(),
            ErrorKind::Usage
        );
    }
}
