//! The command line: global options, the subcommands, and the options they share.
//!
//! Each subcommand's own options live beside its code in `cmd/`; what several share
//! (TTL, how long to wait) is here so that it reads and behaves the same everywhere.

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Args, Parser, Subcommand};

use crate::{cmd, duration, exit};

/// Run commands under a distributed lock, or take, extend and release locks from
/// scripts.
#[derive(Debug, Parser)]
#[command(
    name = "fencelock",
    version,
    long_about = "Run commands under a distributed lock, or take, extend and release locks from \
                  scripts.\n\n\
                  Locks live in an embedded SQLite file on this host by default, or in one or \
                  several Redis servers (Redlock) with --store. Every holder gets a fencing \
                  token larger than every earlier holder's.",
    after_help = exit::help(None),
    subcommand_required = true,
    arg_required_else_help = true
)]
pub struct Cli {
    /// Options every command takes.
    #[command(flatten)]
    pub global: Global,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes (they may also come after the command name).
#[derive(Debug, Args)]
#[command(next_help_heading = "Global options")]
pub struct Global {
    /// The stores' URLs (the help text is given as `help`: it has brackets that
    /// rustdoc would read as links).
    #[arg(
        long = "store",
        help = "Store URL: redis://[user@]host:port[/db], rediss://… (TLS, see --ca-cert), \
                redis+cluster://host:port[,host:port…] (one Redis Cluster, which counts as \
                one Redlock node), or sqlite:///path/file.db. Repeat it with several \
                independent Redis servers for a Redlock quorum. Give Redis passwords with FENCELOCK_PASSWORD or \
                --password-file rather than in the URL, which `ps` shows. \
                [default: sqlite:///run/lock/fencelock/locks.db, shared by every local \
                user]",
        value_name = "URL",
        env = "FENCELOCK_STORE",
        value_delimiter = ',',
        // The variable may hold passwords: never show its value in --help.
        hide_env_values = true,
        global = true
    )]
    pub stores: Vec<String>,

    /// A prefix put before every key (none by default: keys are used as given, like
    /// other Redlock clients do).
    #[arg(
        long,
        value_name = "PREFIX",
        env = "FENCELOCK_PREFIX",
        hide_env_values = true,
        value_parser = parse_key,
        global = true
    )]
    pub prefix: Option<String>,

    /// A PEM file of CA certificates to trust for rediss:// stores, instead of the
    /// system's (a URL's own ?ca= wins). Used by every command.
    #[arg(
        long,
        value_name = "PATH",
        env = "FENCELOCK_CA_CERT",
        hide_env_values = true,
        global = true
    )]
    pub ca_cert: Option<PathBuf>,

    /// Read the Redis password from the first line of this file (a mounted secret),
    /// for every store whose URL has none. FENCELOCK_PASSWORD gives it directly; both
    /// keep it out of `ps`.
    #[arg(
        long,
        value_name = "PATH",
        env = "FENCELOCK_PASSWORD_FILE",
        hide_env_values = true,
        global = true
    )]
    pub password_file: Option<PathBuf>,

    /// How much longer Redis nodes keep a key's fencing counter than the token
    /// guarantee needs (default 0: dropped once the key is free and the node's clock
    /// has reached it). Tolerates a node clock stepping back by up to this much, at
    /// about 100 bytes per key released within it; see docs/fencing.md, "Counter
    /// retention". E.g. 10m, 24h (the old behaviour); at most 30 days.
    #[arg(
        long,
        value_name = "DURATION",
        env = "FENCELOCK_COUNTER_RETENTION",
        hide_env_values = true,
        value_parser = crate::duration::parse,
        global = true
    )]
    pub counter_retention: Option<Duration>,

    /// More log output on stderr (-v info, -vv debug, -vvv trace). RUST_LOG overrides.
    #[arg(short, long, action = ArgAction::Count, global = true)]
    pub verbose: u8,

    /// Only errors on stderr, and no progress spinner.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a command while holding a lock (renewed while it runs, released when it
    /// exits).
    ///
    /// The command runs in its own process group, under a small guard process that
    /// kills the whole group if fencelock dies (kill -9, the OOM killer): the command
    /// never runs without the lock. When the command exits, the lock is held until
    /// nothing is left in its group (background jobs it started), as flock(1) holds
    /// the lock while the lock file is open.
    ///
    /// SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 sent to fencelock are
    /// forwarded to the group (SIGINT, SIGTERM, SIGHUP and SIGQUIT followed by SIGCONT,
    /// so a stopped command gets them too); a second SIGINT or SIGTERM kills the group.
    /// Ctrl-Z suspends the job and gives the shell its prompt back; nothing renews the
    /// lease meanwhile. On fg the lease is renewed if it is still valid, else the
    /// command is killed and fencelock exits with 75. If the lease is lost while the
    /// command runs, the group gets SIGTERM at once and SIGKILL after --kill-after (or
    /// when the lease's proven validity ends, if sooner), and fencelock exits with 75.
    #[command(
        override_usage = "fencelock run [OPTIONS] <KEY> -- <COMMAND> [ARGS]...\n       \
                          fencelock run [OPTIONS] <KEY> -c <SHELL-COMMAND>",
        after_help = after("run", &[
            "fencelock run nightly-report -- ./make-report --date today",
            "fencelock run -n backup -c 'pg_dump app | gzip > /backups/app.gz'",
            "FENCELOCK_STORE=redis://10.0.0.1,redis://10.0.0.2,redis://10.0.0.3 \\\n    \
             fencelock run -w 5m ledger:42 -- ./rebalance",
        ])
    )]
    Run(cmd::run::Args),

    /// Take a lock and print its value, fencing token and validity; it stays held
    /// until its TTL runs out unless extended or released.
    #[command(after_help = after("acquire", &[
            "eval \"$(fencelock acquire deploy --ttl 10m)\" || exit",
            "./deploy --fencing-token \"$FENCELOCK_TOKEN\"",
            "fencelock acquire -n deploy --format json | jq -r .value",
        ]))]
    Acquire(cmd::acquire::Args),

    /// Extend a lock taken with `acquire`, by key and value.
    #[command(after_help = after("extend", &[
            "fencelock extend deploy --value \"$FENCELOCK_VALUE\" --ttl 10m",
            "eval \"$(fencelock extend deploy --value \"$FENCELOCK_VALUE\" --ttl 5m)\"",
        ]))]
    Extend(cmd::extend::Args),

    /// Release a lock taken with `acquire`, by key and value.
    #[command(after_help = after("release", &[
            "fencelock release deploy --value \"$FENCELOCK_VALUE\"",
            "FENCELOCK_VALUE=$v fencelock release deploy || echo \"lost: exit $?\"",
        ]))]
    Release(cmd::release::Args),

    /// Show whether keys are held, by whom, for how long, and their last fencing
    /// token.
    #[command(after_help = after("status", &[
            "fencelock status deploy",
            "fencelock --prefix app: status --format json",
            "if fencelock status --held deploy; then echo busy; fi",
        ]))]
    Status(cmd::status::Args),

    /// Check that the stores are fit for locking: per node its version, role,
    /// persistence, eviction policy, clock offset, round trip and ACL permissions, then
    /// a probe lock. Exit 0 only when all is well.
    #[command(after_help = after("doctor", &[
            "fencelock doctor",
            "fencelock --store rediss://10.0.0.1:6380 --ca-cert ca.pem doctor --ttl 10s",
            "FENCELOCK_PASSWORD_FILE=/run/secrets/redis fencelock doctor --strict",
        ]))]
    Doctor(cmd::doctor::Args),
}

/// Parses a lock key for clap: any text without control characters.
///
/// A key is echoed into shell assignments (`acquire`), log lines and `status`
/// output; a newline or an escape sequence in it could forge a line a script reads or
/// repaint the operator's terminal, and no sane resource name has one. Empty and
/// reserved keys are left to the library, which knows its own rules.
///
/// # Errors
///
/// A message naming the first control character and where it is.
pub fn parse_key(text: &str) -> Result<String, String> {
    match text.char_indices().find(|(_, c)| c.is_control()) {
        Some((at, c)) => Err(format!(
            "the key has a control character (U+{:04X} at byte {at}); keys must be printable text",
            u32::from(c)
        )),
        None => Ok(text.to_string()),
    }
}

/// What ends a command's `--help`: a few examples, then the exit codes that concern
/// it (see [`exit::help`]).
fn after(command: &str, examples: &[&str]) -> String {
    let mut text = String::from("Examples:\n");
    for e in examples {
        text.push_str("  ");
        text.push_str(e);
        text.push('\n');
    }
    text.push('\n');
    text.push_str(&exit::help(Some(command)));
    text
}

/// The lease's TTL, as `run` and `acquire` take it.
#[derive(Debug, Args)]
pub struct TtlArg {
    /// How long the lock lives without renewal: 30s, 1m30s, 250ms, or seconds. Under
    /// `run` it is renewed while the command runs, so this is only how long a crashed
    /// holder blocks others.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = duration::parse_ttl)]
    pub ttl: Duration,
}

/// A semaphore instead of a lock, as `run` and `acquire` take it.
#[derive(Debug, Args)]
pub struct PermitsArg {
    /// Up to N holders of KEY at once instead of one (a semaphore): each holder gets
    /// one of N permits, a lock of its own with its own fencing token (the command's
    /// FENCELOCK_PERMIT names it). Every caller of a KEY must give the same N; at most
    /// 64. See docs/semaphore.md.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=i64::from(fencelock::MAX_PERMITS)))]
    pub permits: Option<u32>,

    /// With --permits: wait in line. Once this caller has been refused by every
    /// permit, no fair caller that came later gets a permit before it; a waiter that
    /// dies holds the line up at most the permits' TTL plus a few seconds. See
    /// docs/semaphore.md, "Fair mode".
    #[arg(long, requires = "permits")]
    pub fair: bool,
}

/// How long to wait for a held lock, as `run` and `acquire` take it.
#[derive(Debug, Args)]
pub struct WaitArgs {
    /// Wait at most this long for the lock [default: until it is free].
    #[arg(short, long, value_name = "DURATION", value_parser = duration::parse)]
    pub wait: Option<Duration>,

    /// Do not wait: fail at once if the lock is held (a split vote among contenders that came at the same moment is tried again, a few times, soon).
    #[arg(short = 'n', long, conflicts_with = "wait")]
    pub no_wait: bool,

    /// What is waited for: the lock, or one of N permits.
    #[command(flatten)]
    pub permits: PermitsArg,
}

impl WaitArgs {
    /// As the library's per-call options.
    pub fn options(&self) -> fencelock::AcquireOptions {
        let mut options = fencelock::AcquireOptions::default();
        if self.permits.fair {
            options = options.fair();
        }
        match (self.no_wait, self.wait) {
            (true, _) => options.no_wait(),
            (false, Some(d)) => options.max_wait(d),
            (false, None) => options.wait_forever(),
        }
    }
}
