//! A ledger that refuses stale reads and writes: the pattern behind the demo
//! (`cargo run --release -- demo`, crates/fencelock-demo), in library code to copy.
//!
//! ```text
//! cargo run -p fencelock --example ledger
//! ```
//!
//! A lock keeps two *live* holders apart. It cannot stop a holder that was paused (a GC
//! pause, a swapped-out process, a stopped VM) past its lease from waking up and
//! writing what it computed before the pause — by then another holder has the lock.
//! Only the resource can stop that write, by checking the lease's **fencing token**:
//! every account row remembers the highest token that read or wrote it, and an access
//! that carries a lower one is refused. Both rows of a transfer are written in one
//! transaction, so a stale transfer is refused whole, never half-applied.
//!
//! **Reads are fenced too**, not only writes. A transfer is a read-modify-write: with
//! only the write fenced, a stale holder's write can land *after* the new holder read
//! but *before* it wrote. Every token is then in order, so the stale write is accepted,
//! and the new holder's write, computed from a read that did not see it, wipes it out:
//! a lost update. A fenced read raises the rows' fence to the reader's token, so the
//! stale write is refused as soon as the new holder has read. The example plays both
//! cases; `docs/reliability.md` has the argument.
//!
//! The example runs with no server: locks in a `memory://` store, the ledger in an
//! SQLite file in a temporary directory. With Redis as the ledger, the same checks are
//! Lua scripts: `fencelock::fence::REDIS_FENCED_SET` for one key, and
//! `crates/fencelock-node/examples/ledger.js` for a fenced read and transfer of two.

use std::time::Duration;

use fencelock::fence::SQL_FENCED_UPDATE_CONDITION;
use fencelock::{FencingToken, Lease, Locker};
use rusqlite::{Connection, TransactionBehavior, params};

/// `fence` holds the highest token that read or wrote the row.
const SCHEMA: &str = "
    CREATE TABLE account (
        id      TEXT PRIMARY KEY,
        balance INTEGER NOT NULL,
        fence   INTEGER NOT NULL DEFAULT 0
    );
    INSERT INTO account (id, balance) VALUES ('alice', 100), ('bob', 100);";

/// What the ledger answered to a fenced read.
#[derive(Debug, PartialEq, Eq)]
enum Read {
    Balances(i64, i64),
    /// A higher token already read or wrote one of the accounts: this reader's lease
    /// is stale.
    RefusedStale,
}

/// What the ledger did with a transfer.
#[derive(Debug, PartialEq, Eq)]
enum Transfer {
    Applied,
    /// A higher token already read or wrote one of the accounts: this writer's lease
    /// is stale.
    RefusedStale,
}

/// Reads both balances fenced by `token`: the "read" of a read-modify-write.
///
/// One transaction raises both rows' fence to `token` and then reads the balances.
/// `SQL_FENCED_UPDATE_CONDITION` is `fence <= ?2`, the statement's `?2` the token: a
/// stale reader matches fewer than both rows, and we roll back and refuse the read.
fn read_fenced(
    db: &mut Connection,
    from: &str,
    to: &str,
    token: FencingToken,
) -> rusqlite::Result<Read> {
    let raise = format!(
        "UPDATE account SET fence = ?2 WHERE id IN (?1, ?3) AND {SQL_FENCED_UPDATE_CONDITION}"
    );
    // IMMEDIATE: take the write lock first, so no write slips between check and read.
    let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if tx.execute(&raise, params![from, token.as_i64(), to])? != 2 {
        // Dropping `tx` rolls back the fence raised on the other row. (In real code,
        // tell "stale" from "no such account" here.)
        return Ok(Read::RefusedStale);
    }
    let balance = |id: &str| {
        tx.query_row("SELECT balance FROM account WHERE id = ?1", [id], |r| {
            r.get(0)
        })
    };
    let read = Read::Balances(balance(from)?, balance(to)?);
    tx.commit()?;
    Ok(read)
}

/// Writes the new balances of both accounts, fenced by `token`, in one transaction.
///
/// The statement also sets `fence = ?2`, so the row remembers the highest token that
/// wrote it. A stale writer updates zero rows; we then roll back the other row too.
fn write_fenced(
    db: &mut Connection,
    (from, from_balance): (&str, i64),
    (to, to_balance): (&str, i64),
    token: FencingToken,
) -> rusqlite::Result<Transfer> {
    let update = format!(
        "UPDATE account SET balance = ?1, fence = ?2 WHERE id = ?3 AND {SQL_FENCED_UPDATE_CONDITION}"
    );
    // IMMEDIATE: no other connection can slip a write between the two updates.
    let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
    for (id, balance) in [(from, from_balance), (to, to_balance)] {
        if tx.execute(&update, params![balance, token.as_i64(), id])? == 0 {
            // Dropping `tx` rolls back: the transfer is refused whole.
            return Ok(Transfer::RefusedStale);
        }
    }
    tx.commit()?;
    Ok(Transfer::Applied)
}

/// One transfer under a lease: read, compute, write, both fenced with the lease's token.
fn transfer(
    db: &mut Connection,
    lease: &Lease,
    from: &str,
    to: &str,
    amount: i64,
) -> rusqlite::Result<Transfer> {
    match read_fenced(db, from, to, lease.token())? {
        Read::Balances(a, b) => {
            write_fenced(db, (from, a - amount), (to, b + amount), lease.token())
        }
        Read::RefusedStale => Ok(Transfer::RefusedStale),
    }
}

/// A holder's read that must be admitted (the holder's lease is the newest).
fn read_admitted(
    db: &mut Connection,
    lease: &Lease,
) -> Result<(i64, i64), Box<dyn std::error::Error>> {
    match read_fenced(db, "alice", "bob", lease.token())? {
        Read::Balances(a, b) => Ok((a, b)),
        Read::RefusedStale => Err("the newest holder's read was refused".into()),
    }
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

    // 2. A holder that stalls: it reads under a short lease that is not renewed (a
    //    paused process could not renew it anyway) ...
    let stale = locker.acquire(accounts, Duration::from_millis(100)).await?;
    stale.set_auto_renew(false);
    let (a, b) = read_admitted(&mut db, &stale)?;
    //    ... meanwhile another holder gets the lock once that lease ran out, with a
    //    larger token, and moves money.
    let next = locker.acquire(accounts, Duration::from_secs(10)).await?;
    let outcome = transfer(&mut db, &next, "bob", "alice", 50)?;
    println!("transfer with token {}: {outcome:?}", next.token());
    //    The stalled holder wakes up and writes what it computed before the pause. Its
    //    lease has expired, but it does not know — checking `stale.is_valid()` first
    //    would only narrow the window, not close it. The ledger closes it.
    let late = write_fenced(&mut db, ("alice", a - 10), ("bob", b + 10), stale.token())?;
    println!(
        "late write with token {} (after {} wrote): {late:?}",
        stale.token(),
        next.token()
    );
    assert_eq!(late, Transfer::RefusedStale);
    // Releasing an expired lease is not an error; it says what it found.
    println!("release of the stale lease: {:?}", stale.release().await?);
    next.release().await?;

    // 3. The case only fenced reads catch: the stale holder's late write lands after
    //    the next holder has *read*, but before it writes.
    let stale = locker.acquire(accounts, Duration::from_millis(100)).await?;
    stale.set_auto_renew(false);
    let (a, b) = read_admitted(&mut db, &stale)?;
    let next = locker.acquire(accounts, Duration::from_secs(10)).await?;
    let (next_a, next_b) = read_admitted(&mut db, &next)?;
    //    With only writes fenced this write would be accepted (no higher token has
    //    *written*), and the next holder's write below, computed from its read, would
    //    wipe it out. The next holder's read raised the fence: refused.
    let late = write_fenced(&mut db, ("alice", a - 10), ("bob", b + 10), stale.token())?;
    println!(
        "late write with token {} (after {} read): {late:?}",
        stale.token(),
        next.token()
    );
    assert_eq!(late, Transfer::RefusedStale);
    let outcome = write_fenced(
        &mut db,
        ("alice", next_a - 20),
        ("bob", next_b + 20),
        next.token(),
    )?;
    println!("write with token {}: {outcome:?}", next.token());
    assert_eq!(outcome, Transfer::Applied);
    println!("release of the stale lease: {:?}", stale.release().await?);
    next.release().await?;

    // The ledger's own look (not a holder's read): only the three transfers applied.
    let (alice, bob): (i64, i64) = db.query_row(
        "SELECT (SELECT balance FROM account WHERE id = 'alice'),
                (SELECT balance FROM account WHERE id = 'bob')",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    println!(
        "balances: alice {alice}, bob {bob}, total {} (was 200)",
        alice + bob
    );
    assert_eq!((alice, bob), (100, 100));
    Ok(())
}
