//! The shared ledger: accounts with balances, in an SQLite file or in Redis keys.
//!
//! It offers exactly what the story needs: read two balances, and write two balances
//! back — plainly, or *fenced*. A fenced ledger keeps, per account, the highest fencing
//! token that wrote it, and refuses a write that carries a lower one. Both accounts of
//! a transfer are written together or not at all (one SQL transaction, one Lua
//! script): a stale holder must not get half a transfer in.
//!
//! The conditions themselves come from the library (`fencelock::fence`), so that the
//! demo shows the code users would write.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::Duration;

use fencelock::FencingToken;
use fencelock::fence::{REDIS_FENCED_SET, SQL_FENCED_UPDATE_CONDITION};
use rusqlite::{Connection, OpenFlags, TransactionBehavior, params};

use super::{Failure, code};

/// Where a run keeps its ledgers: one per round, so that each round starts from the
/// same balances and a kept run can be checked round by round.
#[derive(Debug, Clone)]
pub(crate) enum LedgerSite {
    /// SQLite files in the run's temporary directory.
    Sqlite {
        /// The directory.
        dir: PathBuf,
    },
    /// Keys on a Redis server (the first lock store) under the run's prefix.
    Redis {
        /// The server.
        url: String,
        /// The run's ledger prefix.
        prefix: String,
    },
}

impl LedgerSite {
    /// The ledger of round `n`.
    pub(crate) fn for_round(&self, n: usize) -> LedgerSpec {
        match self {
            LedgerSite::Sqlite { dir } => LedgerSpec::Sqlite {
                path: dir.join(format!("ledger-{n}.db")),
            },
            LedgerSite::Redis { url, prefix } => LedgerSpec::Redis {
                url: url.clone(),
                prefix: format!("{prefix}{n}:"),
            },
        }
    }
}

/// Where one ledger is: what the driver tells a worker.
#[derive(Debug, Clone)]
pub(crate) enum LedgerSpec {
    /// An SQLite file.
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
    /// The URL and key prefix, as the worker command takes them.
    pub(crate) fn to_args(&self) -> (String, String) {
        match self {
            LedgerSpec::Sqlite { path } => (super::sqlite_url(path), String::new()),
            LedgerSpec::Redis { url, prefix } => (url.clone(), prefix.clone()),
        }
    }

    /// The inverse of [`LedgerSpec::to_args`].
    pub(crate) fn from_args(url: &str, prefix: &str) -> Result<LedgerSpec, Failure> {
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
        Err(Failure::new(
            code::USAGE,
            "the ledger must be sqlite:///path or redis://…",
        ))
    }

    /// Where it is, for people and for the JSON report (no password).
    pub(crate) fn location(&self) -> Location {
        match self {
            LedgerSpec::Sqlite { path } => Location::Sqlite { path: path.clone() },
            LedgerSpec::Redis { prefix, .. } => Location::Redis {
                prefix: prefix.clone(),
            },
        }
    }
}

/// Where a ledger is, as the report shows it.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Location {
    /// `{"sqlite": {"path": …}}`: table `account(id, balance, fence)`.
    Sqlite {
        /// The file.
        path: PathBuf,
    },
    /// `{"redis": {"prefix": …}}`: keys `{prefix}balance:{i}` on the first store.
    Redis {
        /// The key prefix.
        prefix: String,
    },
}

/// What the ledger did with a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Written {
    /// Both balances were written.
    Applied,
    /// Refused as stale: an account had been written with a higher token.
    Refused,
}

/// An open ledger.
#[derive(Debug)]
pub(crate) struct Ledger {
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
/// workers of round 1 all write at once.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The schema of an SQLite ledger: `fence` is the highest token that wrote the row
/// (only the fenced ledger uses it).
const SQLITE_SCHEMA: &str = "
    CREATE TABLE account (
        id      INTEGER PRIMARY KEY,
        balance INTEGER NOT NULL,
        fence   INTEGER NOT NULL DEFAULT 0
    );";

/// A fenced update of one account: `?1` the balance, `?2` the writer's token, `?3` the
/// account. The library's condition makes a stale writer update zero rows.
static SQL_FENCED_UPDATE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE account SET balance = ?1, fence = ?2 WHERE id = ?3 AND {SQL_FENCED_UPDATE_CONDITION}"
    )
});

/// A fenced write of both accounts of a transfer, in one script: the library's
/// single-key script, called for each account after both fences were checked, so the
/// pair is written together or not at all.
///
/// KEYS: balance a, fence a, balance b, fence b. ARGV: balance a, balance b, token.
/// Returns 1 when written, 0 when refused.
static REDIS_FENCED_PAIR: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(&format!(
        "local function fenced_set(KEYS, ARGV)\n{REDIS_FENCED_SET}\nend\n\
         local token = tonumber(ARGV[3])\n\
         for _, fence in ipairs({{KEYS[2], KEYS[4]}}) do\n\
           if token < tonumber(redis.call('GET', fence) or '0') then return 0 end\n\
         end\n\
         return fenced_set({{KEYS[1], KEYS[2]}}, {{ARGV[1], ARGV[3]}})\n\
              * fenced_set({{KEYS[3], KEYS[4]}}, {{ARGV[2], ARGV[3]}})\n"
    ))
});

impl Ledger {
    /// Creates a ledger of `accounts` accounts holding `balance` each (the driver, once
    /// per round), and returns it open.
    ///
    /// # Errors
    ///
    /// The file cannot be created, or the server does not answer.
    pub(crate) async fn create(
        spec: &LedgerSpec,
        accounts: u32,
        balance: i64,
    ) -> Result<Ledger, Failure> {
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
                    .map_err(|e| redis_failure("create the ledger", &e))?;
            }
        }
        Ok(ledger)
    }

    /// Opens an existing ledger (a worker).
    ///
    /// # Errors
    ///
    /// The file does not exist or cannot be opened, or the server does not answer.
    pub(crate) async fn open(spec: &LedgerSpec) -> Result<Ledger, Failure> {
        Ledger::open_inner(spec, false).await
    }

    async fn open_inner(spec: &LedgerSpec, create: bool) -> Result<Ledger, Failure> {
        let backend = match spec {
            LedgerSpec::Sqlite { path } => {
                let path = path.clone();
                let conn = tokio::task::spawn_blocking(move || open_sqlite(&path, create))
                    .await
                    .map_err(|e| Failure::new(code::SOFTWARE, format!("ledger: {e}")))??;
                Backend::Sqlite(Arc::new(Mutex::new(conn)))
            }
            LedgerSpec::Redis { url, prefix } => Backend::Redis {
                conn: redis_connect(url).await?,
                prefix: prefix.clone(),
            },
        };
        Ok(Ledger { backend })
    }

    /// Reads the balances of `from` and `to`.
    ///
    /// # Errors
    ///
    /// An account is missing, or the ledger does not answer.
    pub(crate) async fn read(&self, from: u32, to: u32) -> Result<(i64, i64), Failure> {
        match &self.backend {
            Backend::Sqlite(conn) => {
                let rows = blocking(conn, "read balances", move |c| {
                    let mut stmt =
                        c.prepare_cached("SELECT id, balance FROM account WHERE id IN (?1, ?2)")?;
                    stmt.query_map(params![from, to], |r| {
                        Ok((r.get::<_, u32>(0)?, r.get::<_, i64>(1)?))
                    })?
                    .collect::<rusqlite::Result<HashMap<u32, i64>>>()
                })
                .await?;
                let get = |id| {
                    rows.get(&id).copied().ok_or_else(|| {
                        Failure::new(code::SOFTWARE, format!("ledger: no account {id}"))
                    })
                };
                Ok((get(from)?, get(to)?))
            }
            Backend::Redis { conn, prefix } => {
                let values = redis_balances(conn, prefix, &[from, to]).await?;
                match values[..] {
                    [a, b] => Ok((a, b)),
                    _ => Err(Failure::new(code::SOFTWARE, "ledger: MGET answered oddly")),
                }
            }
        }
    }

    /// Writes the new balances of both accounts of a transfer: plainly (`token` none),
    /// or fenced by `token`, in which case the ledger refuses both writes if either
    /// account was written with a higher token.
    ///
    /// # Errors
    ///
    /// An account is missing, or the ledger does not answer.
    pub(crate) async fn write(
        &self,
        (from, from_balance): (u32, i64),
        (to, to_balance): (u32, i64),
        token: Option<FencingToken>,
    ) -> Result<Written, Failure> {
        match &self.backend {
            Backend::Sqlite(conn) => {
                blocking(conn, "write balances", move |c| {
                    sqlite_write(c, [(from, from_balance), (to, to_balance)], token)
                })
                .await?
            }
            Backend::Redis { conn, prefix } => {
                let mut conn = conn.clone();
                match token {
                    None => {
                        redis::cmd("MSET")
                            .arg(balance_key(prefix, from))
                            .arg(from_balance)
                            .arg(balance_key(prefix, to))
                            .arg(to_balance)
                            .query_async::<()>(&mut conn)
                            .await
                            .map_err(|e| redis_failure("write balances", &e))?;
                        Ok(Written::Applied)
                    }
                    Some(token) => {
                        let written: i64 = REDIS_FENCED_PAIR
                            .key(balance_key(prefix, from))
                            .key(fence_key(prefix, from))
                            .key(balance_key(prefix, to))
                            .key(fence_key(prefix, to))
                            .arg(from_balance)
                            .arg(to_balance)
                            .arg(token.get())
                            .invoke_async(&mut conn)
                            .await
                            .map_err(|e| redis_failure("write balances (fenced)", &e))?;
                        Ok(if written == 1 {
                            Written::Applied
                        } else {
                            Written::Refused
                        })
                    }
                }
            }
        }
    }

    /// Every balance, by account number (the driver's independent read).
    ///
    /// # Errors
    ///
    /// An account is missing, or the ledger does not answer.
    pub(crate) async fn balances(&self, accounts: u32) -> Result<Vec<i64>, Failure> {
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
            return Err(Failure::new(
                code::SOFTWARE,
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
fn open_sqlite(path: &Path, create: bool) -> Result<Connection, Failure> {
    let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    if create {
        flags |= OpenFlags::SQLITE_OPEN_CREATE;
    }
    let fail = |e: rusqlite::Error| {
        Failure::new(
            code::CONFIG,
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

/// Both updates in one immediate transaction; fenced, a row that refuses the token
/// rolls the whole transfer back.
fn sqlite_write(
    c: &mut Connection,
    rows: [(u32, i64); 2],
    token: Option<FencingToken>,
) -> rusqlite::Result<Result<Written, Failure>> {
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
            // Zero rows: refused by the fence, or no such account. Tell them apart so a
            // missing account is never reported as a fencing success.
            let exists: bool = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM account WHERE id = ?1)",
                [id],
                |r| r.get(0),
            )?;
            // Dropping `tx` rolls back the other row's update.
            return Ok(if exists && token.is_some() {
                Ok(Written::Refused)
            } else {
                Err(Failure::new(
                    code::SOFTWARE,
                    format!("ledger: no account {id}"),
                ))
            });
        }
    }
    tx.commit()?;
    Ok(Ok(Written::Applied))
}

/// Runs `f` on the connection on tokio's blocking pool.
async fn blocking<T: Send + 'static>(
    conn: &Arc<Mutex<Connection>>,
    what: &'static str,
    f: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
) -> Result<T, Failure> {
    let conn = conn.clone();
    tokio::task::spawn_blocking(move || {
        let mut c = conn.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut c)
    })
    .await
    .map_err(|e| Failure::new(code::SOFTWARE, format!("ledger: cannot {what}: {e}")))?
    .map_err(|e| {
        let busy = matches!(
            e.sqlite_error_code(),
            Some(rusqlite::ErrorCode::DatabaseBusy)
        );
        Failure::new(
            if busy {
                code::UNAVAILABLE
            } else {
                code::SOFTWARE
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

/// Connects to a Redis server for the ledger or the clean-up.
async fn redis_connect(url: &str) -> Result<redis::aio::MultiplexedConnection, Failure> {
    let client = redis::Client::open(url).map_err(|e| redis_failure("open the ledger", &e))?;
    client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| redis_failure("connect to the ledger's server", &e))
}

/// The balances of `ids`, in order; a missing or non-numeric one is an error.
async fn redis_balances(
    conn: &redis::aio::MultiplexedConnection,
    prefix: &str,
    ids: &[u32],
) -> Result<Vec<i64>, Failure> {
    let keys: Vec<String> = ids.iter().map(|&id| balance_key(prefix, id)).collect();
    let values: Vec<Option<String>> = redis::cmd("MGET")
        .arg(&keys)
        .query_async(&mut conn.clone())
        .await
        .map_err(|e| redis_failure("read balances", &e))?;
    if values.len() != ids.len() {
        return Err(Failure::new(code::SOFTWARE, "ledger: MGET answered oddly"));
    }
    ids.iter()
        .zip(values)
        .map(|(id, v)| {
            v.and_then(|s| s.parse().ok()).ok_or_else(|| {
                Failure::new(
                    code::SOFTWARE,
                    format!("ledger: account {id} is missing or not a number"),
                )
            })
        })
        .collect()
}

/// Deletes every key under `prefix` on the server at `url` (the run's clean-up).
/// Returns how many were deleted.
///
/// # Errors
///
/// The server does not answer.
pub(crate) async fn delete_prefix(url: &str, prefix: &str) -> Result<u64, Failure> {
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
            .map_err(|e| redis_failure("list the demo's keys", &e))?;
        if !keys.is_empty() {
            deleted += redis::cmd("DEL")
                .arg(&keys)
                .query_async::<u64>(&mut conn)
                .await
                .map_err(|e| redis_failure("delete the demo's keys", &e))?;
        }
        if next == 0 {
            return Ok(deleted);
        }
        cursor = next;
    }
}

/// A Redis error as a failure: "cannot reach" is `UNAVAILABLE`, the rest a surprise.
/// redis-rs never puts the password in its messages.
fn redis_failure(what: &str, e: &redis::RedisError) -> Failure {
    let down = e.is_io_error() || e.is_connection_refusal() || e.is_timeout();
    Failure::new(
        if down {
            code::UNAVAILABLE
        } else {
            code::SOFTWARE
        },
        format!("ledger: cannot {what}: {e}"),
    )
}
