//! One worker process of one round: random transfers on the shared ledger.
//!
//! A transfer is a read-modify-write done in the application on purpose — read both
//! balances, compute, write both — because that is how real code often looks, and it
//! is exactly what goes wrong without a lock. Each transfer is reported to the driver
//! as one line on stdout (see `events.rs`).
//!
//! In the stall rounds, worker 0 makes a single transfer and stops half-way: it holds
//! the lease and has read the balances, and waits for a line on stdin while the driver
//! keeps its process stopped past the lease's TTL. Then it writes what it computed
//! before the pause, as a program waking up from a long GC pause would, and goes on
//! with its job: it reads the two balances again, with the same lease.
//!
//! In the fenced round every read and every write carries the lease's token, so the
//! ledger refuses both the stalled worker's late write and its next read.

use std::time::Duration;

use fencelock::{AcquireOptions, FencingToken, Locker, ReleaseOutcome};

use fencelock_demo::ledger::{Ledger, LedgerSpec, Read, Written};

use super::events::{self, Access, Event, Outcome, Transfer, now_ns};
use super::{Failure, Mode, WorkerArgs, code};

/// The most a transfer moves (at most the balance of the account it debits).
const MAX_AMOUNT: i64 = 100;

/// How long a worker waits for the lock before it gives up (and the round fails). Far
/// above any wait of a healthy round, including the stall.
const MAX_WAIT: Duration = Duration::from_secs(30);

/// The accounts the stalling worker reads. The driver has another worker touch account
/// `STALL_PAIR.1` while it is stopped.
pub(crate) const STALL_PAIR: (u32, u32) = (0, 1);

/// Runs one worker to the end.
///
/// # Errors
///
/// The ledger or the lock stores failed, or the driver went away.
pub(crate) async fn run(args: WorkerArgs) -> Result<(), Failure> {
    let spec = LedgerSpec::from_args(&args.ledger, &args.ledger_prefix)?;
    let ledger = Ledger::open(&spec).await?;
    let mut rng = Rng::new(args.seed ^ u64::from(args.id).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let worker = Worker {
        id: args.id,
        ledger,
        fenced: args.fenced,
        ttl: args.ttl,
    };
    let pairs = |rng: &mut Rng, i: u32| match (i, args.first) {
        (0, Some(pair)) => pair,
        _ => rng.pair(args.accounts),
    };
    let locker = match args.mode {
        Mode::Unlocked => None,
        Mode::Locked | Mode::Stall => Some(locker(&args)?),
    };
    // The driver starts the stalling worker alone; the others start together, once
    // every one of them is set up, so that they really run at the same time.
    if args.mode != Mode::Stall {
        events::emit(&Event::Ready).map_err(|e| Failure::os("cannot report to the driver", &e))?;
        wait_for_driver().await?;
    }
    match &locker {
        None => {
            for i in 0..args.transfers {
                let (from, to) = pairs(&mut rng, i);
                report(&worker.unlocked(from, to, &mut rng).await?)?;
            }
        }
        Some(locker) if args.mode == Mode::Stall => {
            report(&worker.stalled(locker, &mut rng).await?)?;
        }
        Some(locker) => {
            for i in 0..args.transfers {
                let (from, to) = pairs(&mut rng, i);
                report(&worker.locked(locker, from, to, &mut rng).await?)?;
            }
        }
    }
    if let Some(locker) = locker {
        locker.shutdown().await;
    }
    Ok(())
}

/// The lock keys of an account. One lock per account, and a transfer locks both of its
/// accounts at once (all or nothing), so transfers on other accounts run in parallel.
fn account_key(id: u32) -> String {
    format!("account:{id}")
}

fn locker(args: &WorkerArgs) -> Result<Locker, Failure> {
    Locker::builder()
        .stores(args.lock_stores.iter().cloned())
        .prefix(args.lock_prefix.clone())
        .max_wait(Some(MAX_WAIT))
        .build()
        .map_err(|e| Failure::locking("cannot open the lock stores", &e))
}

fn report(transfer: &Transfer) -> Result<(), Failure> {
    events::emit(&Event::Transfer(transfer.clone()))
        .map_err(|e| Failure::os("cannot report to the driver", &e))
}

/// What every transfer of this worker shares.
struct Worker {
    id: u32,
    ledger: Ledger,
    fenced: bool,
    ttl: Duration,
}

/// The ledger's answer to one transfer.
struct Moved {
    amount: i64,
    outcome: Outcome,
}

impl Worker {
    /// Round 1: read, compute, write, with nothing to keep another worker out between
    /// the read and the write.
    async fn unlocked(&self, from: u32, to: u32, rng: &mut Rng) -> Result<Transfer, Failure> {
        let start = now_ns();
        let moved = self.read_modify_write(from, to, rng, None).await?;
        let end = now_ns();
        Ok(self.transfer(from, to, &moved, None, [start, start, end, end], false))
    }

    /// Rounds 2–4: the same read-modify-write under the lock on both accounts, renewed
    /// while it runs and released at the end (`with_lock`). Fenced, the read and the
    /// write carry the lease's token.
    async fn locked(
        &self,
        locker: &Locker,
        from: u32,
        to: u32,
        rng: &mut Rng,
    ) -> Result<Transfer, Failure> {
        let requested = now_ns();
        let mut granted = requested;
        let mut releasing = requested;
        let scoped = locker
            .with_lock(
                [account_key(from), account_key(to)],
                self.ttl,
                async |lease| {
                    granted = now_ns();
                    let token = lease.token();
                    let fence = self.fenced.then_some(token);
                    let moved = self.read_modify_write(from, to, rng, fence).await;
                    releasing = now_ns();
                    moved.map(|m| (m, token))
                },
            )
            .await;
        let (moved, token) = scoped
            .work
            .map_err(|e| Failure::locking("transfer under the lock", &e))??;
        let released = matches!(scoped.release, Some(Ok(ReleaseOutcome::Released)));
        Ok(self.transfer(
            from,
            to,
            &moved,
            Some(token),
            [requested, granted, releasing, releasing],
            released,
        ))
    }

    /// Rounds 3 and 4, worker 0: acquire with a short TTL and no renewal, read, tell the
    /// driver, wait (stopped by the driver), then write what was computed before, and
    /// read again.
    async fn stalled(&self, locker: &Locker, rng: &mut Rng) -> Result<Transfer, Failure> {
        let (from, to) = STALL_PAIR;
        let requested = now_ns();
        // `acquire` does not renew the lease (only `with_lock` and `set_auto_renew`
        // do); a stopped process could not renew it anyway.
        let lease = locker
            .acquire_with(
                [account_key(from), account_key(to)],
                self.ttl,
                &AcquireOptions::default().max_wait(MAX_WAIT),
            )
            .await
            .map_err(|e| Failure::locking("acquire (the stalling worker)", &e))?;
        let granted = now_ns();
        let fence = self.fenced.then_some(lease.token());
        // The lease is new: a fenced read cannot be refused yet.
        let balances = match self.ledger.read(from, to, fence).await? {
            Read::Balances(a, b) => (a, b),
            Read::Refused => {
                return Err(Failure::new(
                    code::SOFTWARE,
                    "the ledger refused the stalling worker's first read",
                ));
            }
        };
        events::emit(&Event::Stalled {
            token: lease.token().get(),
            granted_ns: granted,
            from,
            to,
        })
        .map_err(|e| Failure::os("cannot report to the driver", &e))?;
        wait_for_driver().await?;
        // Here the lease has expired and another worker has written. Checking
        // `lease.is_valid()` now would catch *this* pause, but not one that strikes
        // between that check and the write: only the ledger's fence closes the gap.
        let moved = self.write(from, to, balances, rng, fence).await?;
        // The job goes on with the same lease: its next step starts with a read.
        let next_read = match self.ledger.read(from, to, fence).await? {
            Read::Balances(..) => Access::Accepted,
            Read::Refused => Access::Refused,
        };
        let releasing = now_ns();
        let token = lease.token();
        let released = matches!(lease.release().await, Ok(ReleaseOutcome::Released));
        let held_until = if released {
            releasing
        } else {
            granted.saturating_add(u64::try_from(self.ttl.as_nanos()).unwrap_or(u64::MAX))
        };
        let mut transfer = self.transfer(
            from,
            to,
            &moved,
            Some(token),
            [requested, granted, releasing, held_until],
            released,
        );
        transfer.next_read = Some(next_read);
        Ok(transfer)
    }

    /// Reads both balances (fenced by `fence` when given), computes, and writes them.
    async fn read_modify_write(
        &self,
        from: u32,
        to: u32,
        rng: &mut Rng,
        fence: Option<FencingToken>,
    ) -> Result<Moved, Failure> {
        match self.ledger.read(from, to, fence).await? {
            Read::Balances(a, b) => self.write(from, to, (a, b), rng, fence).await,
            Read::Refused => Ok(Moved {
                amount: 0,
                outcome: Outcome::ReadRefused,
            }),
        }
    }

    /// Computes the new balances from the ones read, and writes them.
    async fn write(
        &self,
        from: u32,
        to: u32,
        (from_balance, to_balance): (i64, i64),
        rng: &mut Rng,
        fence: Option<FencingToken>,
    ) -> Result<Moved, Failure> {
        if from_balance <= 0 {
            return Ok(Moved {
                amount: 0,
                outcome: Outcome::Declined,
            });
        }
        let amount = rng.between(1, MAX_AMOUNT.min(from_balance));
        let written = self
            .ledger
            .write(
                (from, from_balance - amount),
                (to, to_balance + amount),
                fence,
            )
            .await?;
        Ok(Moved {
            amount,
            outcome: match written {
                Written::Applied => Outcome::Applied,
                Written::Refused => Outcome::Refused,
            },
        })
    }

    fn transfer(
        &self,
        from: u32,
        to: u32,
        moved: &Moved,
        token: Option<FencingToken>,
        [requested_ns, granted_ns, releasing_ns, held_until_ns]: [u64; 4],
        released: bool,
    ) -> Transfer {
        Transfer {
            worker: self.id,
            from,
            to,
            amount: moved.amount,
            token: token.map(FencingToken::get),
            requested_ns,
            granted_ns,
            releasing_ns,
            held_until_ns,
            outcome: moved.outcome,
            next_read: None,
            released,
        }
    }
}

/// Waits for the driver's go-ahead: one line on stdin (to start, or to go on after the
/// stall). End of input means the driver
/// is gone, and the worker must not write anything.
async fn wait_for_driver() -> Result<(), Failure> {
    // std's stdin on the blocking pool: tokio's own needs a feature the demo does not
    // otherwise use.
    let n = tokio::task::spawn_blocking(|| std::io::stdin().read_line(&mut String::new()))
        .await
        .map_err(|e| Failure::new(code::SOFTWARE, format!("reading stdin: {e}")))?
        .map_err(|e| Failure::os("cannot read from the driver", &e))?;
    if n == 0 {
        return Err(Failure::new(
            code::SOFTWARE,
            "the driver closed stdin before the go-ahead",
        ));
    }
    Ok(())
}

/// SplitMix64: a tiny, good-enough generator for picking accounts and amounts, seeded
/// by the driver so that a run can be repeated (`--seed`). Not for anything secret.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `lo..=hi` (`lo <= hi`); the modulo bias is irrelevant here.
    fn between(&mut self, lo: i64, hi: i64) -> i64 {
        let span = u64::try_from(hi - lo).unwrap_or(0) + 1;
        lo + i64::try_from(self.next() % span).unwrap_or(0)
    }

    /// Two different accounts among `accounts` (at least 2).
    fn pair(&mut self, accounts: u32) -> (u32, u32) {
        let n = u64::from(accounts.max(2));
        let a = self.next() % n;
        let b = (a + 1 + self.next() % (n - 1)) % n;
        (u32::try_from(a).unwrap_or(0), u32::try_from(b).unwrap_or(1))
    }
}

#[cfg(test)]
mod tests {
    use super::Rng;

    #[test]
    fn pairs_are_two_different_accounts_in_range() {
        let mut rng = Rng::new(7);
        for _ in 0..10_000 {
            let (a, b) = rng.pair(3);
            assert!(a < 3 && b < 3 && a != b);
            let x = rng.between(1, 5);
            assert!((1..=5).contains(&x));
        }
    }
}
