//! `fencelock-demo`: the ledger story, told by running it. At the workspace root:
//!
//! ```text
//! cargo run --release -- demo [--workers N] [--accounts N] [--store URL …] [--json] …
//! ```
//!
//! Several worker *processes* move money between the accounts of one shared ledger.
//! Each transfer is a read-modify-write done in the application (read both balances,
//! compute, write both), the way real code often is. Four rounds show, with numbers:
//!
//! 1. **no lock**: concurrent read-modify-writes overwrite each other; money is lost or
//!    invented;
//! 2. **fencelock**: each transfer holds the lock on its two accounts; the total is
//!    conserved and every transfer is counted;
//! 3. **a holder stalls past its TTL** (the driver stops its process with SIGSTOP, as a
//!    long GC pause would) and the ledger does not check tokens: its late write lands
//!    after another holder's and corrupts the ledger. No lock can prevent that;
//! 4. **the same stall, but the ledger checks fencing tokens on every read and write**
//!    (`fencelock_demo::ledger`): the late write carries an old token and is refused,
//!    and so is the stale holder's next read; the total is conserved.
//!
//! The demo is also a check: it exits non-zero when round 2 or 4 loses money or a
//! transfer.
//!
//! ## Layout
//!
//! - `main.rs`: the command line (`demo`, and the hidden `worker` the driver spawns),
//!   the two entry points, set-up and clean-up of the run, exit codes.
//! - `ledger.rs` (the library, shared with the chaos suite): the ledger, in SQLite or
//!   Redis; plain and fenced reads and writes.
//! - `worker.rs`: one worker process: its transfers, with or without the lock.
//! - `events.rs`: what workers tell the driver (JSON lines on stdout), with timestamps
//!   on the host's monotonic clock.
//! - `rounds.rs`: the driver: runs the workers of one round, stages the stall, and
//!   checks the ledger against what the workers did.
//! - `process.rs`: a worker process seen from the driver: its pipes, its go-ahead,
//!   SIGSTOP/SIGCONT, its exit.
//! - `report.rs`: the verdicts, the table and the JSON.
#![forbid(unsafe_code)]

mod events;
mod process;
mod report;
mod rounds;
mod worker;

use std::fmt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use clap::builder::TypedValueParser;
use fencelock_demo::ledger;

use rounds::{LedgerSite, Round, Setup};

/// The name of the hidden worker subcommand, as the driver spawns it. It must match
/// [`Command::Worker`], which clap spells `worker`.
pub(crate) const WORKER_SUBCOMMAND: &str = "worker";

// The command line: `fencelock-demo demo …`, so that `cargo run --release -- demo` at
// the workspace root runs the story.
#[derive(Debug, Parser)]
#[command(
    name = "fencelock-demo",
    version,
    about = "fencelock's demo: what a lock does, and what only a fencing token does, on a \
             shared ledger (`demo`)",
    subcommand_required = true,
    arg_required_else_help = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    #[command(after_help = "Examples:\n  \
                            cargo run --release -- demo\n  \
                            cargo run --release -- demo --workers 8 --accounts 3\n  \
                            cargo run --release -- demo --store redis://127.0.0.1:6379 --json --keep")]
    Demo(DemoArgs),

    #[command(hide = true)]
    Worker(WorkerArgs),
}

fn main() -> ExitCode {
    // clap prints help and version on stdout (exit 0) and usage errors on stderr
    // (exit 2, the demo's `USAGE`).
    let cli = Cli::parse();
    match cli.command {
        Command::Demo(args) => run(&args),
        Command::Worker(args) => worker(args),
    }
}

/// Exit codes, the `fencelock` command's (see `docs/cli.md`), so scripts read the demo
/// the same.
mod code {
    /// The demo's check failed: round 2 or 4 lost money or a transfer.
    pub(super) const CHECK_FAILED: u8 = 1;
    /// Bad usage: a bad flag value, a store the demo cannot use.
    pub(super) const USAGE: u8 = 2;
    /// `EX_IOERR`: the report could not be written (stdout closed or full).
    pub(super) const OUTPUT: u8 = 74;
    /// `EX_UNAVAILABLE`: a store did not answer.
    pub(super) const UNAVAILABLE: u8 = 69;
    /// `EX_SOFTWARE`: a bug, or a worker that failed in a way the demo did not expect.
    pub(super) const SOFTWARE: u8 = 70;
    /// `EX_OSERR`: the OS refused something (a temp dir, a process, a signal).
    pub(super) const OS_ERROR: u8 = 71;
    /// `EX_CONFIG`: a store that cannot be opened as configured.
    pub(super) const CONFIG: u8 = 78;
    /// Interrupted by Ctrl-C (128 + SIGINT), like a shell reports it.
    pub(super) const INTERRUPTED: u8 = 130;
}

/// Show what a lock does, and what only a fencing token does, on a shared ledger.
//
// (The doc comment above is the command's one-line help; `long_about` the long one.)
#[derive(Debug, clap::Args)]
#[command(
    long_about = "Show what a distributed lock does, and what only a fencing token does.\n\n\
                  Worker processes move money between the accounts of a shared ledger, with \
                  read-modify-write transfers, in four rounds: without a lock (money is lost \
                  or invented), with fencelock (the total is conserved), with one holder \
                  stopped past its TTL (its late write corrupts the ledger) and the same \
                  with a ledger that checks fencing tokens (the late write is refused).\n\n\
                  The fenced ledger refuses every read and write whose token is older than \
                  one it has seen: the stalled holder's late write, and its next read.\n\n\
                  The locks and the ledger live in a fresh SQLite file in a temporary \
                  directory, or with --store redis://… under a key prefix unique to the run \
                  (the ledger on the first server); everything is removed at the end. Exits \
                  1 if round 2 or 4 loses money."
)]
pub(crate) struct DemoArgs {
    /// Lock stores: redis://host:port (repeat it for a Redlock quorum; the ledger goes
    /// on the first) or sqlite:///path/file.db [default: a fresh SQLite file in a
    /// temporary directory, never the `fencelock` command's default store].
    #[arg(
        long = "store",
        value_name = "URL",
        env = "FENCELOCK_STORE",
        value_delimiter = ',',
        // The variable may hold passwords: never show its value in --help.
        hide_env_values = true
    )]
    stores: Vec<String>,

    /// Worker processes per round (2 to 64; the stall rounds need one to stall and one
    /// to take over).
    #[arg(long, value_name = "N", default_value_t = 4,
          value_parser = clap::value_parser!(u32).range(2..=64))]
    workers: u32,

    /// Accounts in the ledger (3 to 10000). Fewer accounts, more contention.
    #[arg(long, value_name = "N", default_value_t = 8,
          value_parser = clap::value_parser!(u32).range(3..=10_000))]
    accounts: u32,

    /// Transfers per worker and round (1 to 100000).
    #[arg(long, value_name = "N", default_value_t = 200,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    transfers: u32,

    /// Print the rounds as JSON on stdout instead of the table.
    #[arg(long)]
    json: bool,

    /// Keep the ledgers (the temporary directory, or the Redis keys) and say where they
    /// are, to check the numbers independently.
    #[arg(long)]
    keep: bool,

    /// Seed of the workers' random choices of accounts and amounts (the interleaving of
    /// the processes still varies from run to run) [default: random].
    #[arg(long, value_name = "N")]
    seed: Option<u64>,

    /// The TTL of the lease that stalls in rounds 3 and 4 (10ms to 10s); the stall lasts
    /// until it has run out and another worker has written.
    #[arg(long, value_name = "DURATION", default_value = "300ms",
          value_parser = clap::builder::StringValueParser::new().try_map(parse_stall_ttl))]
    stall_ttl: Duration,
}

/// How a worker takes part in a round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Mode {
    /// Transfers without any lock (round 1).
    Unlocked,
    /// Each transfer under the lock on its two accounts (rounds 2–4).
    Locked,
    /// One transfer whose lease expires while the process is stopped (rounds 3, 4).
    Stall,
}

/// One worker process of the demo (internal; spawned by the demo itself).
//
// Hidden: its interface may change with any release.
#[derive(Debug, clap::Args)]
pub(crate) struct WorkerArgs {
    /// The lock stores. Passed in the environment, not on the command line, because a
    /// Redis URL may hold a password and command lines are public on a host.
    #[arg(
        long = "lock-store",
        env = "FENCELOCK_DEMO_LOCK_STORES",
        value_delimiter = '\n',
        hide_env_values = true,
        required = true
    )]
    lock_stores: Vec<String>,

    /// The prefix of this run's lock keys.
    #[arg(long)]
    lock_prefix: String,

    /// Where the ledger is: `sqlite:///path` or a Redis URL (in the environment, as the
    /// lock stores).
    #[arg(long, env = "FENCELOCK_DEMO_LEDGER", hide_env_values = true)]
    ledger: String,

    /// The prefix of the ledger's keys (Redis only).
    #[arg(long, default_value = "")]
    ledger_prefix: String,

    /// Without the lock, with it, or stalling.
    #[arg(long, value_enum)]
    mode: Mode,

    /// Read and write with the lease's token (the ledger refuses stale tokens).
    #[arg(long)]
    fenced: bool,

    /// This worker's number (0 stalls in the stall rounds).
    #[arg(long)]
    id: u32,

    /// Accounts in the ledger.
    #[arg(long, value_parser = clap::value_parser!(u32).range(3..))]
    accounts: u32,

    /// Transfers to make.
    #[arg(long)]
    transfers: u32,

    /// Seed of the random transfers.
    #[arg(long)]
    seed: u64,

    /// The lease TTL.
    #[arg(long, value_parser = humantime::parse_duration)]
    ttl: Duration,

    /// The accounts of the first transfer, `FROM:TO` (the driver makes one worker of a
    /// stall round touch an account the stalled holder read).
    #[arg(long, value_parser = parse_pair)]
    first: Option<(u32, u32)>,
}

/// `--stall-ttl`: a duration the lease can live with, short enough for a quick demo.
fn parse_stall_ttl(s: String) -> Result<Duration, String> {
    let d = humantime::parse_duration(&s).map_err(|e| format!("{e} (try 300ms or 1s)"))?;
    if d < Duration::from_millis(10) || d > Duration::from_secs(10) {
        return Err(format!("{s} is outside 10ms..=10s"));
    }
    Ok(d)
}

/// `--first FROM:TO`.
fn parse_pair(s: &str) -> Result<(u32, u32), String> {
    let bad = || format!("{s:?} is not FROM:TO (two account numbers)");
    let (a, b) = s.split_once(':').ok_or_else(bad)?;
    let pair = (
        a.trim().parse().map_err(|_| bad())?,
        b.trim().parse().map_err(|_| bad())?,
    );
    if pair.0 == pair.1 {
        return Err(format!("{s:?} names the same account twice"));
    }
    Ok(pair)
}

/// A failure that ends the demo: an exit code and one line for stderr.
#[derive(Debug)]
pub(crate) struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    fn new(code: u8, message: impl Into<String>) -> Self {
        Failure {
            code,
            message: message.into(),
        }
    }

    /// Wraps a library error with what the demo was doing, keeping the library's
    /// classification (bad input, store down …) in the exit code.
    fn locking(context: &str, e: &fencelock::Error) -> Self {
        let code = match e.kind() {
            fencelock::ErrorKind::InvalidInput => code::USAGE,
            fencelock::ErrorKind::Unavailable | fencelock::ErrorKind::Timeout => code::UNAVAILABLE,
            fencelock::ErrorKind::Config => code::CONFIG,
            _ => code::SOFTWARE,
        };
        Failure::new(code, format!("{context}: {e}"))
    }

    fn os(context: &str, e: &std::io::Error) -> Self {
        Failure::new(code::OS_ERROR, format!("{context}: {e}"))
    }
}

impl From<ledger::Error> for Failure {
    fn from(e: ledger::Error) -> Self {
        let code = match e.kind() {
            ledger::ErrorKind::Usage => code::USAGE,
            ledger::ErrorKind::Unavailable => code::UNAVAILABLE,
            ledger::ErrorKind::Config => code::CONFIG,
            _ => code::SOFTWARE,
        };
        Failure::new(code, e.to_string())
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Runs the demo. Its stores are the ones the user named (`--store`,
/// `FENCELOCK_STORE`); with none, the demo uses a fresh SQLite file of its own, so that
/// it never touches real locks.
fn run(args: &DemoArgs) -> ExitCode {
    match block_on(demo(args)) {
        Ok(code) => ExitCode::from(code),
        Err(f) => {
            eprintln!("fencelock-demo: {f}");
            ExitCode::from(f.code)
        }
    }
}

/// Runs the hidden worker command (one worker process of one round).
fn worker(args: WorkerArgs) -> ExitCode {
    match block_on(worker::run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("fencelock-demo worker: {f}");
            ExitCode::from(f.code)
        }
    }
}

/// Runs `fut` to completion on a fresh current-thread runtime: a driver waits on its
/// workers' pipes, a worker on its lock and its ledger; one thread is plenty.
fn block_on<T>(fut: impl Future<Output = Result<T, Failure>>) -> Result<T, Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::os("cannot start the async runtime", &e))?
        .block_on(fut)
}

/// The whole demo: set up, four rounds, report, clean up. Returns the exit code.
async fn demo(args: &DemoArgs) -> Result<u8, Failure> {
    let started = Instant::now();
    let run = Run::prepare(args).await?;
    let outcome = tokio::select! {
        outcome = run.rounds(args) => outcome,
        // Ctrl-C: dropping the rounds kills the workers (a stopped one too: SIGKILL
        // ends stopped processes), then the clean-up below removes the ledgers.
        _ = tokio::signal::ctrl_c() => Err(Failure::new(code::INTERRUPTED, "interrupted")),
    };
    let kept = run.finish(args.keep).await;
    let results = outcome?;
    let report = report::Report {
        stores: &run.setup.lock_stores_redacted,
        ledger: run.setup.ledger_description(),
        workers: args.workers,
        accounts: args.accounts,
        transfers_per_worker: args.transfers,
        seed: run.setup.seed,
        kept: kept.as_ref(),
        rounds: &results,
        elapsed: started.elapsed(),
    };
    let text = if args.json {
        format!("{}\n", report.json())
    } else {
        report.table()
    };
    // A closed stdout (`fencelock-demo demo | head -3`) is an I/O error, not a panic.
    {
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        out.write_all(text.as_bytes())
            .and_then(|()| out.flush())
            .map_err(|e| Failure::new(code::OUTPUT, format!("cannot write the report: {e}")))?;
    }
    Ok(if report.passed() {
        0
    } else {
        code::CHECK_FAILED
    })
}

/// One run of the demo: where its locks and ledgers live, and what to remove after.
struct Run {
    setup: Setup,
    /// The temporary directory (SQLite files), removed at the end unless kept.
    dir: Option<PathBuf>,
}

/// Where a kept run's ledgers are, for the report (and for tests that check the numbers).
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct Kept {
    /// The temporary directory, when there is one.
    dir: Option<PathBuf>,
    /// The Redis key prefix of the run (locks and ledgers), when on Redis.
    redis_prefix: Option<String>,
}

impl Run {
    /// Picks the stores, creates the temporary directory, checks that the stores answer.
    async fn prepare(args: &DemoArgs) -> Result<Run, Failure> {
        let stores: Vec<String> = args
            .stores
            .iter()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        if stores.iter().any(|s| s.starts_with("memory:")) {
            return Err(Failure::new(
                code::USAGE,
                "the demo's workers are separate processes and a memory:// store lives in one \
                 process; use sqlite:///path or redis://host:port, or no --store",
            ));
        }
        let run_id = format!("{:016x}", random_u64());
        let on_redis = stores
            .first()
            .is_some_and(|s| s.starts_with("redis://") || s.starts_with("rediss://"));
        let dir = if on_redis {
            None
        } else {
            Some(make_temp_dir(&run_id)?)
        };
        let lock_stores = match (&dir, stores.is_empty()) {
            (Some(d), true) => vec![format!("sqlite://{}", d.join("locks.db").display())],
            _ => stores,
        };
        let site = match &dir {
            Some(d) => LedgerSite::Sqlite { dir: d.clone() },
            None => LedgerSite::Redis {
                url: lock_stores[0].clone(),
                prefix: format!("fencelock-demo:{run_id}:ledger:"),
            },
        };
        let setup = Setup::new(
            lock_stores,
            format!("fencelock-demo:{run_id}:"),
            site,
            args,
            args.seed.unwrap_or_else(random_u64),
        );
        let setup = match setup {
            Ok(s) => s,
            Err(f) => {
                if let Some(d) = &dir {
                    let _ = std::fs::remove_dir_all(d);
                }
                return Err(f);
            }
        };
        let run = Run { setup, dir };
        if let Err(f) = run.setup.check_stores().await {
            // Nothing reached the stores: only the directory needs removing.
            run.remove_dir();
            return Err(f);
        }
        Ok(run)
    }

    /// The four rounds, in order, with a progress line each on stderr.
    async fn rounds(&self, args: &DemoArgs) -> Result<Vec<rounds::Outcome>, Failure> {
        let mut results = Vec::with_capacity(Round::ALL.len());
        for (i, round) in Round::ALL.into_iter().enumerate() {
            eprintln!(
                "fencelock-demo: round {}/{}: {} ({} workers × {} transfers{}) …",
                i + 1,
                Round::ALL.len(),
                round.title(),
                args.workers,
                args.transfers,
                if round.stalls() { ", one stalls" } else { "" }
            );
            results.push(self.setup.round(round, i + 1).await?);
        }
        Ok(results)
    }

    /// Removes the run's ledgers and lock keys, or says where they were kept. Clean-up
    /// failures are warnings: the demo's result does not depend on them.
    async fn finish(&self, keep: bool) -> Option<Kept> {
        let kept = Kept {
            dir: self.dir.clone(),
            redis_prefix: self.setup.redis_prefix(),
        };
        if keep {
            if let Some(d) = &kept.dir {
                eprintln!("fencelock-demo: kept the ledgers in {}", d.display());
            }
            if let Some(p) = &kept.redis_prefix {
                eprintln!("fencelock-demo: kept the Redis keys {p}*");
            }
            return Some(kept);
        }
        for warning in self.setup.remove_redis_keys().await {
            eprintln!("fencelock-demo: warning: {warning}");
        }
        self.remove_dir();
        None
    }

    fn remove_dir(&self) {
        if let Some(d) = &self.dir
            && let Err(e) = std::fs::remove_dir_all(d)
        {
            eprintln!(
                "fencelock-demo: warning: cannot remove {}: {e}",
                d.display()
            );
        }
    }
}

/// A fresh directory for this run's SQLite files. `create_dir` (not `_all`) fails if it
/// exists, so a run never shares files with another.
fn make_temp_dir(run_id: &str) -> Result<PathBuf, Failure> {
    let dir = std::env::temp_dir().join(format!("fencelock-demo-{run_id}"));
    std::fs::create_dir(&dir)
        .map_err(|e| Failure::os(&format!("cannot create {}", dir.display()), &e))?;
    Ok(dir)
}

/// 64 random bits from the OS, without a dependency: std's `RandomState` is seeded from
/// the OS's random source. Good for seeds and run ids, not for secrets.
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(u64::from(std::process::id()));
    h.finish()
}
