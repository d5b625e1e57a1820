//! The driver: runs the workers of one round, stages the stall, checks the ledger.
//!
//! Every round gets a fresh ledger with the same balances. The driver reads its total
//! before, collects every transfer the workers report, and reads every balance after.
//! Then it *replays* the applied transfers on the starting balances: a correct ledger
//! ends exactly there. That catches lost updates even when the total happens to be
//! conserved (a transfer overwritten by another between the same two accounts).
//!
//! # The stall (rounds 3 and 4)
//!
//! To make the late write happen every time, not by luck:
//!
//! 1. worker 0 takes the lock on accounts 0 and 1 with a short TTL and no renewal,
//!    reads both balances, and says so (`Stalled`); it then waits for a line on stdin;
//! 2. the driver stops its process (SIGSTOP), as a long GC pause or a frozen VM would;
//! 3. the other workers start; worker 1's first transfer moves money from account 2 to
//!    account 1, so it waits for the stalled lease to expire, then writes account 1;
//! 4. once the TTL has passed *and* another worker has written account 0 or 1, the
//!    driver resumes worker 0 (SIGCONT) and lets it go on: it writes the balances it
//!    computed before the pause.
//!
//! Without fencing that write overwrites account 1 and the money worker 1 moved is
//! gone from the ledger (or appears twice, depending on direction). With fencing the
//! ledger has seen worker 1's larger token on account 1 (its read raised the fence
//! already, its write kept it there) and refuses the whole write. Worker 0 then reads
//! both accounts again with the same token: the fenced ledger refuses that read too.

use std::path::PathBuf;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::process::Command;
use tokio::sync::mpsc;

use super::events::{Access, Event, Outcome as Written, Transfer, now_ns};
use super::process::{
    Message, STAGE_TIMEOUT, WorkerProcess, finish_failed, start_together, wait_for_stall,
};
use super::worker::STALL_PAIR;
use super::{DemoArgs, Failure, Mode, WORKER_SUBCOMMAND, code};
use fencelock_demo::ledger::{self, Ledger, LedgerSpec, Location};

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

/// Every account starts with this balance.
pub(crate) const INITIAL_BALANCE: i64 = 1_000;

/// The TTL of the leases of workers that do not stall. Far above one transfer; the
/// lease is renewed anyway while the transfer runs (`with_lock`).
const TTL: Duration = Duration::from_secs(5);

/// The four rounds, in the order of the story.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Round {
    /// No lock at all.
    NoLock,
    /// fencelock, nobody stalls.
    Locked,
    /// fencelock, one holder stalls past its TTL, the ledger ignores tokens.
    StallUnfenced,
    /// fencelock, one holder stalls past its TTL, the ledger checks tokens.
    StallFenced,
}

impl Round {
    /// All rounds, in order.
    pub(crate) const ALL: [Round; 4] = [
        Round::NoLock,
        Round::Locked,
        Round::StallUnfenced,
        Round::StallFenced,
    ];

    /// The round's name in the table.
    pub(crate) fn title(self) -> &'static str {
        match self {
            Round::NoLock => "no lock",
            Round::Locked => "fencelock",
            Round::StallUnfenced => "fencelock + stall, unfenced ledger",
            Round::StallFenced => "fencelock + stall, fenced ledger",
        }
    }

    /// A short machine name for the JSON.
    pub(crate) fn id(self) -> &'static str {
        match self {
            Round::NoLock => "no_lock",
            Round::Locked => "fencelock",
            Round::StallUnfenced => "stall_unfenced",
            Round::StallFenced => "stall_fenced",
        }
    }

    /// Whether one worker stalls past its TTL.
    pub(crate) fn stalls(self) -> bool {
        matches!(self, Round::StallUnfenced | Round::StallFenced)
    }

    /// Whether the ledger checks fencing tokens.
    pub(crate) fn fenced(self) -> bool {
        self == Round::StallFenced
    }

    /// Whether the round must conserve money and count every transfer: the rounds
    /// where fencelock promises it. A failure there fails the demo.
    pub(crate) fn must_conserve(self) -> bool {
        matches!(self, Round::Locked | Round::StallFenced)
    }

    fn mode(self) -> Mode {
        match self {
            Round::NoLock => Mode::Unlocked,
            _ => Mode::Locked,
        }
    }
}

/// What one round did, as measured by the driver.
#[derive(Debug, Clone)]
pub(crate) struct Outcome {
    /// Which round.
    pub(crate) round: Round,
    /// Where its ledger is.
    pub(crate) ledger: Location,
    /// The ledger's total before and after (read by the driver).
    pub(crate) total_before: i64,
    /// See `total_before`.
    pub(crate) total_after: i64,
    /// Transfers the ledger accepted.
    pub(crate) applied: u64,
    /// Writes the fenced ledger refused as stale.
    pub(crate) refused: u64,
    /// Reads the fenced ledger refused as stale (the stalled worker's next read, and
    /// the reads of transfers it refused whole).
    pub(crate) reads_refused: u64,
    /// Transfers not attempted (the debited account was empty).
    pub(crate) declined: u64,
    /// Accounts whose balance is not what replaying the applied transfers gives:
    /// updates lost (or doubled) even where the total looks right.
    pub(crate) accounts_off: u32,
    /// Lock hand-offs (a release to the next grant of one of its accounts to another
    /// worker that was waiting), in nanoseconds, sorted.
    pub(crate) handoffs_ns: Vec<u64>,
    /// From the first request to the last release, in nanoseconds.
    pub(crate) span_ns: u64,
    /// The staged stall, in rounds 3 and 4.
    pub(crate) stall: Option<Stall>,
}

/// What happened to the stalled worker.
#[derive(Debug, Clone)]
pub(crate) struct Stall {
    /// Its lease's token.
    pub(crate) token: u64,
    /// How long its process was stopped.
    pub(crate) stopped: Duration,
    /// The token of the first transfer by another worker that wrote one of its
    /// accounts while it was stopped (`None`: staging timed out and nobody did).
    pub(crate) overtaken_by: Option<u64>,
    /// What the ledger did with its late write.
    pub(crate) outcome: Written,
    /// What the ledger did with its next read, after the late write.
    pub(crate) next_read: Option<Access>,
}

/// Everything the rounds share: the binary, the stores, the sizes.
#[derive(Debug)]
pub(crate) struct Setup {
    exe: PathBuf,
    lock_stores: Vec<String>,
    /// The lock stores without passwords, for the report.
    pub(crate) lock_stores_redacted: Vec<String>,
    lock_prefix: String,
    ledger: LedgerSite,
    workers: u32,
    accounts: u32,
    transfers: u32,
    /// The seed the workers derive their random transfers from.
    pub(crate) seed: u64,
    stall_ttl: Duration,
}

impl Setup {
    /// Checks the store URLs (by building a locker over them) and finds the binary to
    /// re-invoke as workers.
    ///
    /// # Errors
    ///
    /// A bad URL (`USAGE`), a store that cannot be opened (`CONFIG`), no path to the
    /// running binary (`OS_ERROR`).
    pub(crate) fn new(
        lock_stores: Vec<String>,
        lock_prefix: String,
        ledger: LedgerSite,
        args: &DemoArgs,
        seed: u64,
    ) -> Result<Setup, Failure> {
        let locker = fencelock::Locker::builder()
            .stores(lock_stores.iter().cloned())
            .build()
            .map_err(|e| Failure::locking("cannot use the store", &e))?;
        let exe = std::env::current_exe()
            .map_err(|e| Failure::os("cannot find the fencelock binary to run workers", &e))?;
        Ok(Setup {
            exe,
            lock_stores_redacted: locker.stores(),
            lock_stores,
            lock_prefix,
            ledger,
            workers: args.workers,
            accounts: args.accounts,
            transfers: args.transfers,
            seed,
            stall_ttl: args.stall_ttl,
        })
    }

    /// Takes and releases one lock, so that a store that is down fails the demo at
    /// once with the library's message, not in the middle of round 2.
    ///
    /// # Errors
    ///
    /// The stores do not answer, or refuse.
    pub(crate) async fn check_stores(&self) -> Result<(), Failure> {
        let locker = fencelock::Locker::builder()
            .stores(self.lock_stores.iter().cloned())
            .prefix(self.lock_prefix.clone())
            .build()
            .map_err(|e| Failure::locking("cannot use the store", &e))?;
        let lease = locker
            .try_acquire("probe", Duration::from_secs(5))
            .await
            .map_err(|e| Failure::locking("the lock store does not work", &e))?;
        lease
            .release()
            .await
            .map_err(|e| Failure::locking("the lock store does not work", &e))?;
        locker.shutdown().await;
        Ok(())
    }

    /// Where the ledgers are, in words.
    pub(crate) fn ledger_description(&self) -> String {
        match &self.ledger {
            LedgerSite::Sqlite { dir } => format!("SQLite files in {}", dir.display()),
            LedgerSite::Redis { prefix, .. } => format!(
                "Redis keys {prefix}* on {}",
                self.lock_stores_redacted
                    .first()
                    .map_or("the first store", String::as_str)
            ),
        }
    }

    /// The run's Redis key prefix (locks and ledgers), when on Redis.
    pub(crate) fn redis_prefix(&self) -> Option<String> {
        matches!(self.ledger, LedgerSite::Redis { .. }).then(|| self.lock_prefix.clone())
    }

    /// Deletes the run's keys on every Redis store: the ledgers (first store) and the
    /// locks' keys, counters and holder records (every store), all under the run's
    /// prefix. Returns warnings for what could not be deleted.
    pub(crate) async fn remove_redis_keys(&self) -> Vec<String> {
        let Some(prefix) = self.redis_prefix() else {
            return Vec::new();
        };
        let mut warnings = Vec::new();
        for (url, name) in self.lock_stores.iter().zip(&self.lock_stores_redacted) {
            if let Err(e) = ledger::delete_prefix(url, &prefix).await {
                warnings.push(format!("cannot delete the keys {prefix}* on {name}: {e}"));
            }
        }
        warnings
    }

    /// Runs round number `number`.
    ///
    /// # Errors
    ///
    /// A worker failed (its stderr is quoted), or the ledger could not be read.
    pub(crate) async fn round(&self, round: Round, number: usize) -> Result<Outcome, Failure> {
        let spec = self.ledger.for_round(number);
        let ledger = Ledger::create(&spec, self.accounts, INITIAL_BALANCE).await?;
        let total_before: i64 = ledger.balances(self.accounts).await?.iter().sum();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut workers = Vec::new();
        let mut staged = None;
        if round.stalls() {
            let mut staller = self.spawn(round, &spec, 0, Mode::Stall, None, &tx)?;
            let stalled = wait_for_stall(&mut rx, &mut staller).await;
            workers.push(staller);
            let (token, granted_ns) = match stalled {
                Ok(s) => s,
                Err(e) => return Err(finish_failed(workers, e).await),
            };
            let stopped_at = tokio::time::Instant::now();
            if let Err(e) = workers[0].signal(Signal::SIGSTOP) {
                return Err(finish_failed(workers, e).await);
            }
            staged = Some(Staged {
                token,
                resume_after_ns: granted_ns + duration_ns(self.stall_ttl),
                stopped_at,
                overtaken_by: None,
            });
        }
        let first_id = u32::from(round.stalls());
        for id in first_id..self.workers {
            // In a stall round, worker 1 first moves money from account 2 into the
            // stalled worker's second account: it must wait for the stalled lease,
            // and its write is the one the late write will clobber.
            let first = (round.stalls() && id == 1).then_some((2, STALL_PAIR.1));
            match self.spawn(round, &spec, id, round.mode(), first, &tx) {
                Ok(w) => workers.push(w),
                Err(e) => return Err(finish_failed(workers, e).await),
            }
        }
        drop(tx);
        if let Err(e) = start_together(&mut rx, &mut workers[first_id as usize..]).await {
            return Err(finish_failed(workers, e).await);
        }
        let collected = self.collect(&mut rx, &mut workers, staged).await;
        let (records, stall) = match collected {
            Ok(c) => c,
            Err(e) => return Err(finish_failed(workers, e).await),
        };
        for w in workers {
            w.wait().await?;
        }
        self.save_events(number, &records);
        let balances = ledger.balances(self.accounts).await?;
        self.outcome(round, &spec, total_before, &balances, &records, stall)
    }

    /// Writes the round's transfers, as the workers reported them, next to its SQLite
    /// ledger (`round-N-events.jsonl`), for whoever keeps the run to study it. Best
    /// effort: the demo does not depend on it.
    fn save_events(&self, number: usize, records: &[Transfer]) {
        let LedgerSite::Sqlite { dir } = &self.ledger else {
            return;
        };
        let mut text = String::new();
        for t in records {
            if let Ok(line) = serde_json::to_string(t) {
                text.push_str(&line);
                text.push('\n');
            }
        }
        let path = dir.join(format!("round-{number}-events.jsonl"));
        if let Err(e) = std::fs::write(&path, text) {
            eprintln!(
                "fencelock-demo: warning: cannot write {}: {e}",
                path.display()
            );
        }
    }

    /// Starts one worker process.
    fn spawn(
        &self,
        round: Round,
        spec: &LedgerSpec,
        id: u32,
        mode: Mode,
        first: Option<(u32, u32)>,
        tx: &mpsc::UnboundedSender<Message>,
    ) -> Result<WorkerProcess, Failure> {
        let (ledger_url, ledger_prefix) = spec.to_args();
        let ttl = if mode == Mode::Stall {
            self.stall_ttl
        } else {
            TTL
        };
        let mut cmd = Command::new(&self.exe);
        cmd.arg(WORKER_SUBCOMMAND)
            .args(["--lock-prefix", &self.lock_prefix])
            .args(["--ledger-prefix", &ledger_prefix])
            .args(["--mode", mode_arg(mode)])
            .args(["--id", &id.to_string()])
            .args(["--accounts", &self.accounts.to_string()])
            .args(["--transfers", &self.transfers.to_string()])
            .args([
                "--seed",
                &self.seed.wrapping_add(number_of(round)).to_string(),
            ])
            .args(["--ttl", &format!("{}ms", ttl.as_millis())]);
        if round.fenced() {
            cmd.arg("--fenced");
        }
        if let Some((a, b)) = first {
            cmd.args(["--first", &format!("{a}:{b}")]);
        }
        // URLs go through the environment: they may hold passwords, and command
        // lines are visible to every user of the host.
        cmd.env("FENCELOCK_DEMO_LOCK_STORES", self.lock_stores.join("\n"))
            .env("FENCELOCK_DEMO_LEDGER", ledger_url)
            .env_remove("FENCELOCK_STORE");
        WorkerProcess::start(id, cmd, tx)
    }

    /// Collects the workers' transfers until every one has closed its stdout, and
    /// resumes the stalled worker at the right moment.
    async fn collect(
        &self,
        rx: &mut mpsc::UnboundedReceiver<Message>,
        workers: &mut [WorkerProcess],
        mut staged: Option<Staged>,
    ) -> Result<(Vec<Transfer>, Option<Stall>), Failure> {
        let mut records = Vec::new();
        let mut stall = None;
        let started = tokio::time::Instant::now();
        loop {
            // While the stall is pending, wake up now and then to check the clock.
            let received = if staged.is_some() {
                tokio::select! {
                    m = rx.recv() => Some(m),
                    () = tokio::time::sleep(Duration::from_millis(5)) => None,
                }
            } else {
                Some(rx.recv().await)
            };
            match received {
                None | Some(Some(Message::Closed(_))) => {}
                Some(None) => break,
                Some(Some(Message::Event(id, Event::Transfer(t)))) => {
                    if let Some(s) = staged.as_mut() {
                        s.observe(id, &t);
                    }
                    records.push(t);
                }
                Some(Some(Message::Event(id, e @ (Event::Stalled { .. } | Event::Ready)))) => {
                    return Err(Failure::new(
                        code::SOFTWARE,
                        format!("worker {id} said {e:?} out of turn"),
                    ));
                }
                Some(Some(Message::Garbled(id, e))) => {
                    return Err(Failure::new(
                        code::SOFTWARE,
                        format!("worker {id} said something odd: {e}"),
                    ));
                }
            }
            if let Some(s) = staged.take_if(|s| s.ready() || started.elapsed() > STAGE_TIMEOUT) {
                if s.overtaken_by.is_none() {
                    eprintln!(
                        "fencelock-demo: warning: nobody overtook the stalled worker in \
                         {STAGE_TIMEOUT:?}; resuming it anyway"
                    );
                }
                let staller = workers
                    .iter_mut()
                    .find(|w| w.id == 0)
                    .ok_or_else(|| Failure::new(code::SOFTWARE, "no stalled worker"))?;
                staller.resume().await?;
                stall = Some(Stall {
                    token: s.token,
                    stopped: s.stopped_at.elapsed(),
                    overtaken_by: s.overtaken_by,
                    outcome: Written::Declined,
                    next_read: None,
                });
            }
        }
        // The stalled worker reports its transfer after it was resumed.
        if let Some(s) = stall.as_mut()
            && let Some(t) = records.iter().find(|t| t.worker == 0)
        {
            s.outcome = t.outcome;
            s.next_read = t.next_read;
        }
        Ok((records, stall))
    }

    /// The round's numbers, from the ledger and the workers' reports.
    fn outcome(
        &self,
        round: Round,
        spec: &LedgerSpec,
        total_before: i64,
        balances: &[i64],
        records: &[Transfer],
        stall: Option<Stall>,
    ) -> Result<Outcome, Failure> {
        let mut expected = vec![INITIAL_BALANCE; self.accounts as usize];
        let (mut applied, mut refused, mut declined) = (0, 0, 0);
        let mut reads_refused = 0;
        for t in records {
            if t.next_read == Some(Access::Refused) {
                reads_refused += 1;
            }
            match t.outcome {
                Written::Applied => {
                    applied += 1;
                    let (Some(from), Some(to)) = (
                        expected.get(t.from as usize).copied(),
                        expected.get(t.to as usize).copied(),
                    ) else {
                        return Err(Failure::new(
                            code::SOFTWARE,
                            format!("a worker reported accounts {} and {}", t.from, t.to),
                        ));
                    };
                    expected[t.from as usize] = from - t.amount;
                    expected[t.to as usize] = to + t.amount;
                }
                Written::Refused => refused += 1,
                Written::ReadRefused => reads_refused += 1,
                Written::Declined => declined += 1,
            }
        }
        let accounts_off = expected
            .iter()
            .zip(balances)
            .filter(|(e, b)| e != b)
            .count();
        let start = records.iter().map(|t| t.requested_ns).min().unwrap_or(0);
        let end = records.iter().map(|t| t.releasing_ns).max().unwrap_or(0);
        Ok(Outcome {
            round,
            ledger: spec.location(),
            total_before,
            total_after: balances.iter().sum(),
            applied,
            refused,
            reads_refused,
            declined,
            accounts_off: u32::try_from(accounts_off).unwrap_or(u32::MAX),
            handoffs_ns: handoffs(records, self.accounts),
            span_ns: end.saturating_sub(start),
            stall,
        })
    }
}

/// The stall in progress: worker 0 is stopped until its TTL has passed and another
/// worker has written one of its accounts.
struct Staged {
    token: u64,
    resume_after_ns: u64,
    stopped_at: tokio::time::Instant,
    overtaken_by: Option<u64>,
}

impl Staged {
    /// Notes a transfer that wrote one of the stalled worker's accounts after it was
    /// granted (so with a larger token).
    fn observe(&mut self, id: u32, t: &Transfer) {
        let touches = [t.from, t.to]
            .iter()
            .any(|a| *a == STALL_PAIR.0 || *a == STALL_PAIR.1);
        if id != 0 && touches && t.outcome == Written::Applied && self.overtaken_by.is_none() {
            self.overtaken_by = t.token;
        }
    }

    fn ready(&self) -> bool {
        self.overtaken_by.is_some() && now_ns() >= self.resume_after_ns
    }
}

/// Hand-off latencies: for each grant, the most recent end of a hold on one of its
/// accounts, counted only if it was a release by *another* worker and the grantee was
/// already waiting then (so it measures hand-off, not idle time). A lease that expired
/// (the stalled one) ended by its TTL, not by a release: the grants that waited for it
/// are left out.
///
/// Measured from the start of the release (the holder is done) to the grant returned
/// to the next holder: what an application sees. O(n log n) over the transfers.
fn handoffs(records: &[Transfer], accounts: u32) -> Vec<u64> {
    // Per account: (end of hold, worker, released), sorted.
    let mut ends: Vec<Vec<(u64, u32, bool)>> = vec![Vec::new(); accounts as usize];
    for t in records.iter().filter(|t| t.token.is_some()) {
        for a in [t.from, t.to] {
            if let Some(e) = ends.get_mut(a as usize) {
                e.push((t.held_until_ns, t.worker, t.released));
            }
        }
    }
    for e in &mut ends {
        e.sort_unstable();
    }
    let mut out = Vec::new();
    for t in records.iter().filter(|t| t.token.is_some()) {
        let latest = [t.from, t.to]
            .iter()
            .filter_map(|&a| {
                let e = ends.get(a as usize)?;
                let i = e.partition_point(|&(at, _, _)| at <= t.granted_ns);
                i.checked_sub(1).map(|i| e[i])
            })
            .max();
        if let Some((at, by, true)) = latest
            && by != t.worker
            && t.requested_ns <= at
        {
            out.push(t.granted_ns - at);
        }
    }
    out.sort_unstable();
    out
}

fn mode_arg(mode: Mode) -> &'static str {
    match mode {
        Mode::Unlocked => "unlocked",
        Mode::Locked => "locked",
        Mode::Stall => "stall",
    }
}

/// The round's number, to vary the seed between rounds.
fn number_of(round: Round) -> u64 {
    Round::ALL
        .iter()
        .position(|r| *r == round)
        .map_or(0, |i| i as u64)
}

fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(worker: u32, from: u32, to: u32, times: [u64; 3]) -> Transfer {
        Transfer {
            worker,
            from,
            to,
            amount: 1,
            token: Some(1),
            requested_ns: times[0],
            granted_ns: times[1],
            releasing_ns: times[2],
            held_until_ns: times[2],
            outcome: Written::Applied,
            next_read: None,
            released: true,
        }
    }

    #[test]
    fn handoff_counts_waiters_of_another_worker_only() {
        let records = [
            t(0, 0, 1, [0, 10, 20]),
            // Waited since 5 for account 1: a hand-off of 3.
            t(1, 1, 2, [5, 23, 30]),
            // Its own previous release: not a hand-off.
            t(1, 1, 2, [31, 32, 40]),
            // Asked after the last release of its accounts: idle, not a hand-off.
            t(0, 3, 4, [50, 51, 60]),
        ];
        assert_eq!(handoffs(&records, 5), vec![3]);
    }
}
