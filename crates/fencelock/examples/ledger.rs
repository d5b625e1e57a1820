//! A ledger that refuses stale writes: the pattern behind the demo
//! (`cargo run --release -- demo`, crates/fencelock-demo), in library code to copy.
//!
//! ```text
//! cargo run -p fencelock --example ledger
//! ```
//!
//! A lock keeps two *live* holders apart. It cannot stop a holder that was paused (a GC
//! pause, a swapped-out process, a stopped VM) past its lease from waking up and
//! writing what it computed before the pause — by then another holder has written.
//! Only the resource can stop that write, by checking the lease's **fencing token**:
//! every account row remembers the highest token that wrote it, and an `UPDATE` that
//! carries a lower one matches no row. Both rows of a transfer are written in one
//! transaction, so a stale transfer is refused whole, never half-applied.
//!
//! The example runs with no server: locks in a `memory://` store, the ledger in an
//! SQLite file in a temporary directory. With Redis as the ledger, the same check is
//! `fencelock::fence::REDIS_FENCED_SET` (one Lua script per write; for two keys at
//! once, check both fences first in the same script).

use std::time::Duration;

use fencelock::fence::SQL_FENCED_UPDATE_CONDITION;
use fencelock::{FencingToken, Lease, Locker};
use rusqlite::{Connection, TransactionBehavior, params};

/// `fence` holds the highest token that wrote the row.
const SCHEMA: &str = "
    CREATE TABLE account (
        id      TEXT PRIMARY KEY,
        balance INTEGER NOT NULL,
        fence   INTEGER NOT NULL DEFAULT 0
    );
    INSERT INTO account (id, balance) VALUES ('alice', 100), ('bob', 100);";

/// What the ledger did with a transfer.
#[derive(Debug, PartialEq, Eq)]
enum Transfer {
    Applied,
    /// A higher token already wrote one of the accounts: this writer's lease is stale.
    RefusedStale,
}

/// Reads both balances: the "read" of a read-modify-write done in the application.
fn balances(db: &Connection, from: &str, to: &str) -> rusqlite::Result<(i64, i64)> {
    let read = |id: &str| {
        db.query_row("SELECT balance FROM account WHERE id = ?1", [id], |r| {
            r.get(0)
        })
    };
    Ok((read(from)?, read(to)?))
}

/// Writes the new balances of both accounts, fenced by `token`, in one transaction.
///
/// `SQL_FENCED_UPDATE_CONDITION` is `fence <= ?2`: the statement's `?2` is the token
/// and it also sets `fence = ?2`, so the row remembers the highest token that wrote
/// it. A stale writer updates zero rows; we then roll back the other row too.
fn write_fenced(
    db: &mut Connection,
    (from, from_balance): (&str, i64),
    (to, to_balance): (&str, i64),
    token: FencingToken,
) -> rusqlite::Result<Transfer> {
    let update = format!(
        "UPDATE account SET balance = ?1, fence = ?2 WHERE id = ?3 AND {SQL_FENCED_UPDATE_CONDITION}"
    );
    // IMMEDIATE: take the write lock before the first check, so no other connection
    // can slip a write between the two updates.
    let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
    for (id, balance) in [(from, from_balance), (to, to_balance)] {
        if tx.execute(&update, params![balance, token.as_i64(), id])? == 0 {
            // Dropping `tx` rolls back: the transfer is refused whole. (In real code,
            // tell "stale" from "no such account" here; both accounts exist in this
            // example.)
            return Ok(Transfer::RefusedStale);
        }
    }
    tx.commit()?;
    Ok(Transfer::Applied)
}

/// One transfer under a lease: read, compute, write with the lease's token.
fn transfer(
    db: &mut Connection,
    lease: &Lease,
    from: &str,
    to: &str,
    amount: i64,
) -> rusqlite::Result<Transfer> {
    let (a, b) = balances(db, from, to)?;
    write_fenced(db, (from, a - amount), (to, b + amount), lease.token())
}

fn total(db: &Connection) -> rusqlite::Result<i64> {
    db.query_row("SELECT SUM(balance) FROM account", [], |r| r.get(0))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let mut db = Connection::open(dir.path().join("ledger.db"))?;
    db.execute_batch(SCHEMA)?;
    // A per-process store for the example; in production "sqlite:///var/lib/app/locks.db"
    // on one host, or one or several "redis://…" URLs.
    let locker = Locker::builder().store("memory://ledger-example").build()?;
    // Lock both accounts, all or nothing: transfers on other accounts run in parallel.
    let accounts = ["account:alice", "account:bob"];

    // 1. The normal case: hold the lock, read, compute, write with the token.
    let lease = locker.acquire(accounts, Duration::from_secs(10)).await?;
    let outcome = transfer(&mut db, &lease, "alice", "bob", 30)?;
    println!("transfer with token {}: {outcome:?}", lease.token());
    lease.release().await?;

    // 2. A holder that stalls: it reads under a short lease ...
    let stale = locker.acquire(accounts, Duration::from_millis(100)).await?;
    let (a, b) = balances(&db, "alice", "bob")?;
    // ... and is paused past its TTL (`acquire` does not renew; a paused process could
    // not renew anyway).
    tokio::time::sleep(Duration::from_millis(150)).await;

    // Meanwhile another holder gets the lock, with a larger token, and moves money.
    let next = locker.acquire(accounts, Duration::from_secs(10)).await?;
    let outcome = transfer(&mut db, &next, "bob", "alice", 50)?;
    let next_token = next.token();
    println!("transfer with token {next_token}: {outcome:?}");
    next.release().await?;

    // The stalled holder wakes up and writes what it computed before the pause. Its
    // lease has expired, but it does not know — checking `stale.is_valid()` first
    // would only narrow the window, not close it. The ledger closes it.
    let late = write_fenced(&mut db, ("alice", a - 10), ("bob", b + 10), stale.token())?;
    println!(
        "late write with token {} (after {next_token} wrote): {late:?}",
        stale.token()
    );
    assert_eq!(late, Transfer::RefusedStale);
    // Releasing an expired lease is not an error; it says what it found.
    println!("release of the stale lease: {:?}", stale.release().await?);

    let total = total(&db)?;
    println!("total: {total} (was 200)");
    assert_eq!(total, 200);
    let (alice, bob) = balances(&db, "alice", "bob")?;
    assert_eq!((alice, bob), (120, 80));
    Ok(())
}
