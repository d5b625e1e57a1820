//! `fencelock run KEY -- COMMAND…`: run a command while holding a lock.
//!
//! The life of a run: acquire (waiting as asked, Ctrl-C aborts cleanly), turn on
//! automatic renewal, start the command in its own process group under the guard
//! (`guard.rs`: it dies with fencelock and waits for the whole group), then wait for
//! whichever comes first:
//!
//! - the command (and all of its group) is done: release the lock — or, with
//!   `--hold-at-least`, leave it to expire — and exit with the command's status;
//! - a signal arrives: forward it to the command's process group and keep waiting
//!   (so Ctrl-C stops the command, and fencelock still releases the lock after it); a
//!   second SIGINT/SIGTERM kills the group;
//! - the job is suspended (Ctrl-Z, `jobs.rs`): suspend fencelock too; when continued,
//!   renew the lease if it is still valid, else kill the command and exit with
//!   [`exit::LOST`];
//! - `--max-runtime` runs out: stop the command as on a loss, exit with
//!   [`exit::TIMED_OUT`];
//! - the lease is lost (renewal could not reach a majority in time, or another owner
//!   appeared): the command no longer holds the lock, so it must stop before anyone
//!   else can take it — SIGTERM to its group at once, SIGKILL after `--kill-after`,
//!   but never later than the end of the lease's proven validity. Then exit with
//!   [`exit::LOST`].
//!
//! The command runs in its own process group so that stopping it reaches everything it
//! started (a shell's pipeline, a build's compilers), not just the direct child.

use std::process::ExitStatus;
use std::time::{Duration, Instant};

use fencelock::{Lease, Locker, ReleaseOutcome};
use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use crate::cli::{Global, TtlArg, WaitArgs};
use crate::duration::{self, millis, short};
use crate::exit::{self, Failure, Outcome};
use crate::holder::Holder;
use crate::signals::Signals;
use crate::stores;
use crate::wait::{self, SHUTDOWN_GRACE};

/// Options of `fencelock run`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The lock's key: the name of the shared resource.
    #[arg(value_parser = crate::cli::parse_key)]
    pub key: String,

    #[command(flatten)]
    pub ttl: TtlArg,

    #[command(flatten)]
    pub wait: WaitArgs,

    /// How `status` and waiters name the holder [default: the program's name, never
    /// its arguments, which may hold secrets].
    #[arg(long, value_name = "TEXT", value_parser = crate::holder::parse_label)]
    pub holder: Option<String>,

    /// Exit code when the lock is not acquired (held, with -n; or the -w wait ran out).
    #[arg(short = 'E', long, value_name = "N", default_value_t = exit::CONFLICT)]
    pub conflict_exit_code: u8,

    /// If the lease is lost, how long the command gets between SIGTERM and SIGKILL —
    /// never longer than the lease is still proven valid.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = duration::parse)]
    pub kill_after: Duration,

    /// Scheduled jobs: keep the lock at least this long from when it was taken, even if
    /// the command ends sooner (ShedLock's lockAtLeastFor), so that the same job fired
    /// on several hosts at once runs once. fencelock does not stay: it leaves the key
    /// to expire at the end of the hold. Held whatever the command's status.
    #[arg(long, value_name = "DURATION", value_parser = parse_hold)]
    pub hold_at_least: Option<Duration>,

    /// Scheduled jobs: run at most once per SLOT across hosts. SLOT is a duration (1d,
    /// 1h: slots of that length in UTC, by the stores' clock) or a name of your own
    /// (2026-W49). A run that succeeds records the slot in the stores; every other run
    /// in that slot is skipped with exit 6 and prints nothing (-v says why). A failed
    /// run records nothing, so the job is tried again.
    #[arg(long, value_name = "SLOT", value_parser = crate::once::parse)]
    pub once_per: Option<crate::once::Slot>,

    /// Stop the command when it has run this long (SIGTERM, then SIGKILL after
    /// --kill-after), release the lock and exit 124, as timeout(1) does.
    #[arg(long, value_name = "DURATION", value_parser = duration::parse_ttl)]
    pub max_runtime: Option<Duration>,

    /// A shell command line, run with `sh -c` instead of a command and arguments.
    #[arg(
        short = 'c',
        long = "shell",
        value_name = "SHELL-COMMAND",
        conflicts_with = "command",
        help = "Run SHELL-COMMAND with `sh -c` instead of COMMAND [ARGS]..."
    )]
    pub shell: Option<String>,

    /// The command to run and its arguments (no shell is involved). Its environment
    /// gets FENCELOCK_KEY, FENCELOCK_TOKEN (the fencing token), FENCELOCK_VALID_MS (how
    /// long the lease was proven valid at start) and FENCELOCK_TTL_MS.
    #[arg(
        value_name = "COMMAND",
        trailing_var_arg = true,
        num_args = 1..,
        required_unless_present = "shell"
    )]
    pub command: Vec<String>,
}

/// Runs the command under the lock; see the module docs.
///
/// # Errors
///
/// Not acquired: `-E` (default 1). Lease lost: [`exit::LOST`]. Command not found or
/// not executable: 127/126. Store errors as [`Failure::from_lib`].
pub async fn run(args: Args, global: &Global, signals: &mut Signals) -> Outcome {
    let argv = match &args.shell {
        Some(script) => vec!["sh".to_string(), "-c".to_string(), script.clone()],
        None => args.command.clone(),
    };
    let Some((program, program_args)) = argv.split_first().filter(|(p, _)| !p.is_empty()) else {
        return Err(Failure::usage("the command to run is empty"));
    };
    let locker = stores::locker(
        global,
        Some(Holder::for_run(program, args.holder.as_deref()).to_json()),
    )?;
    let ttl = args.ttl.ttl;
    // `--once-per`: skip at once when the slot is done; looked at again below, once
    // the lock is ours (the host that held it may have just done the job).
    let record = match &args.once_per {
        Some(slot) => {
            let record = crate::once::record(&locker, &args.key, slot).await?;
            if crate::once::done(&locker, &record).await? {
                return Err(crate::once::skipped(&record));
            }
            Some(record)
        }
        None => None,
    };
    let lease = wait::acquire(
        &locker,
        &args.key,
        ttl,
        &args.wait,
        signals,
        args.conflict_exit_code,
        global.quiet,
    )
    .await?;
    let acquired_at = Instant::now();
    if let Some(record) = &record {
        match crate::once::done(&locker, record).await {
            Ok(false) => {}
            Ok(true) => {
                finish(&locker, lease).await;
                return Err(crate::once::skipped(record));
            }
            Err(failure) => {
                finish(&locker, lease).await;
                return Err(failure);
            }
        }
    }
    lease.set_auto_renew(true);
    tracing::info!(
        key = args.key,
        token = lease.token().get(),
        valid_ms = millis(lease.remaining()),
        "acquired"
    );

    // The command runs under the guard (see `guard.rs`): fencelock itself, started
    // again as the leader of the command's process group. Spawned from this thread —
    // the main thread, which lives as long as fencelock — because the guard's
    // parent-death signal fires when the spawning *thread* exits.
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            finish(&locker, lease).await;
            return Err(Failure::new(
                exit::OS_ERROR,
                format!("cannot find fencelock's own executable to start the command: {e}"),
            ));
        }
    };
    // Before the command starts, so that no stop is missed.
    let stops = crate::jobs::Stops::install();
    let mut command = tokio::process::Command::new(exe);
    command
        .args(crate::guard::args(std::process::id()))
        .arg(program)
        .args(program_args)
        .process_group(0)
        .env("FENCELOCK_KEY", &args.key)
        .env("FENCELOCK_TOKEN", lease.token().to_string())
        .env("FENCELOCK_VALID_MS", millis(lease.remaining()).to_string())
        .env("FENCELOCK_TTL_MS", millis(ttl).to_string());
    if args.wait.permits.permits.is_some() {
        // The permit's own lock key: its tokens are numbered per permit.
        command.env("FENCELOCK_PERMIT", &lease.keys()[0]);
    }
    let child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            finish(&locker, lease).await;
            return Err(Failure::new(
                exit::OS_ERROR,
                format!("cannot start the command {program:?}: {e}"),
            ));
        }
    };
    let after = After {
        acquired_at,
        record,
    };
    supervise(child, lease, &locker, &args, signals, stops, after).await
}

/// Parses `--hold-at-least`: a TTL the stores accept (at most a week, the library's
/// longest), since the hold is the key's TTL once fencelock has gone.
fn parse_hold(text: &str) -> Result<Duration, String> {
    let d = duration::parse_ttl(text)?;
    if d > fencelock::DEFAULT_MAX_TTL {
        return Err(format!(
            "at most {} (the longest TTL a lock may have)",
            humantime::format_duration(fencelock::DEFAULT_MAX_TTL)
        ));
    }
    Ok(d)
}

/// What a successful run leaves behind: the hold, counted from `acquired_at`, and
/// the `--once-per` record.
#[derive(Debug)]
struct After {
    acquired_at: Instant,
    record: Option<crate::once::Record>,
}

/// Waits for the command, forwarding signals and stopping it if the lease is lost.
async fn supervise(
    mut child: tokio::process::Child,
    lease: Lease,
    locker: &Locker,
    args: &Args,
    signals: &mut Signals,
    mut stops: crate::jobs::Stops,
    after: After,
) -> Outcome {
    // A child that has not been waited for always has an id; 0 would address our
    // own process group, so refuse it rather than ever signal ourselves.
    let group = match child.id().and_then(|id| i32::try_from(id).ok()) {
        Some(id) if id > 0 => Pid::from_raw(id),
        _ => {
            finish(locker, lease).await;
            return Err(Failure::new(
                exit::SOFTWARE,
                "the command started but has no process id",
            ));
        }
    };
    let mut terminal = crate::terminal::lend(group);
    stops.watch(group);
    let lost = lease.lost();
    tokio::pin!(lost);
    // `valid_until` is cut to "now" when the lease is lost, so remember the last value
    // seen before: that is how long the old holder could still be trusted, and so the
    // latest the command may be killed.
    let mut proven_until = lease.valid_until();
    let mut refresh = tokio::time::interval(
        (lease.ttl() / 10).clamp(Duration::from_millis(10), Duration::from_millis(250)),
    );
    let mut lost_at: Option<Instant> = None;
    // Set when fencelock stopped the command because the lock was no longer its own
    // (lost while running, or expired while the job was suspended).
    let mut stopped_for_loss = false;
    let mut kill_at: Option<tokio::time::Instant> = None;
    // Terminating signals received so far: the second one escalates to SIGKILL.
    let mut terminations = 0u32;
    // `--max-runtime`: when the command must be stopped, and whether it was.
    let mut deadline = args.max_runtime.map(|d| tokio::time::Instant::now() + d);
    let mut overran = false;
    let status = loop {
        let runtime_timer = async move {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let kill_timer = async move {
            match kill_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            status = child.wait() => break status,
            sig = signals.recv() => {
                if crate::signals::terminates(sig) {
                    terminations += 1;
                }
                if terminations >= 2 && crate::signals::terminates(sig) {
                    tracing::warn!("{sig} again: killing the command (SIGKILL)");
                    signal_group(group, Signal::SIGKILL);
                } else {
                    tracing::debug!("forwarding {sig} to the command");
                    forward(group, sig);
                }
            }
            () = &mut lost, if lost_at.is_none() => {
                // `lost()` also fires when a lease ends; only a real loss stops the command.
                if lease.is_lost() {
                    let now = Instant::now();
                    let grace = args.kill_after.min(proven_until.saturating_duration_since(now));
                    tracing::warn!(
                        "lease on {:?} lost: stopping the command (SIGTERM now, SIGKILL in {})",
                        args.key,
                        short(grace)
                    );
                    forward(group, Signal::SIGTERM);
                    stopped_for_loss = true;
                    kill_at = Some(tokio::time::Instant::now() + grace);
                }
                lost_at = Some(Instant::now());
            }
            () = runtime_timer => {
                tracing::warn!(
                    "the command ran longer than --max-runtime: stopping it (SIGTERM now, \
                     SIGKILL in {})",
                    short(args.kill_after)
                );
                forward(group, Signal::SIGTERM);
                overran = true;
                deadline = None;
                if kill_at.is_none() {
                    kill_at = Some(tokio::time::Instant::now() + args.kill_after);
                }
            }
            () = kill_timer => {
                tracing::warn!("the command outlived its grace: SIGKILL");
                signal_group(group, Signal::SIGKILL);
                kill_at = None;
            }
            why = stops.next() => {
                // The job is suspended (Ctrl-Z, or a read of the terminal from the
                // background): suspend fencelock with it, so the shell gets its prompt
                // back, and check the lease when it is resumed.
                drop(terminal.take());
                crate::jobs::suspend(why, group);
                if lost_at.is_none() && resumable(&lease).await {
                    terminal = crate::terminal::lend(group);
                    if terminal.is_none() {
                        // Resumed in the background (`bg`): let it run there.
                        signal_group(group, Signal::SIGCONT);
                    }
                } else if !stopped_for_loss {
                    tracing::warn!(
                        "lease on {:?} expired while the job was suspended: killing the command",
                        args.key
                    );
                    signal_group(group, Signal::SIGKILL);
                    stopped_for_loss = true;
                    lost_at = lost_at.or(Some(Instant::now()));
                }
            }
            _ = refresh.tick(), if lost_at.is_none() => {
                if !lease.is_lost() {
                    proven_until = lease.valid_until();
                }
            }
        }
    };
    drop(terminal);
    let status = status
        .map_err(|e| Failure::new(exit::OS_ERROR, format!("cannot wait for the command: {e}")))?;
    let code = status_code(status);

    if stopped_for_loss {
        // The guard is gone, but what the command started may live on in its group:
        // none of it may outlive the grace.
        stop_group(group, kill_at).await;
        finish(locker, lease).await;
        return Err(Failure::new(
            exit::LOST,
            format!(
                "lease on {:?} lost while the command ran; the command was stopped ({})",
                args.key,
                describe_status(status)
            ),
        ));
    }
    if overran {
        stop_group(group, kill_at).await;
        finish(locker, lease).await;
        return Err(Failure::new(
            exit::TIMED_OUT,
            format!(
                "the command ran longer than --max-runtime {} and was stopped ({}); lock {:?} released",
                short(args.max_runtime.unwrap_or_default()),
                describe_status(status),
                args.key
            ),
        ));
    }
    // The guard waits for its group where the system lets it (Linux); elsewhere what
    // the command left behind may still run: the lock is held until it is gone.
    wait_group(group, signals).await;
    // Recorded while the lock is still ours: a host waiting for it must find the
    // record when it gets the lock.
    if let Some(record) = after.record.as_ref().filter(|_| code == 0) {
        crate::once::write(locker, record).await;
    }
    match args.hold_at_least {
        Some(hold) => hold_or_finish(locker, lease, after.acquired_at + hold, &args.key).await,
        None => finish(locker, lease).await,
    }
    Ok(code)
}

/// `--hold-at-least`: instead of releasing, sets the key to expire at `until` and
/// leaves it there (fencelock exits; nothing renews it any more). Releases as usual
/// when the hold is already over or the lease cannot be extended.
async fn hold_or_finish(locker: &Locker, lease: Lease, until: Instant, key: &str) {
    let left = until.saturating_duration_since(Instant::now());
    if left < fencelock::MIN_TTL || lease.is_lost() {
        return finish(locker, lease).await;
    }
    lease.set_auto_renew(false);
    match tokio::time::timeout(SHUTDOWN_GRACE, lease.extend(left)).await {
        Ok(Ok(())) => {
            tracing::info!(
                "holding lock {key:?} for {} more (--hold-at-least); it expires by itself",
                short(left)
            );
            // Dropping a lease releases it: this one must outlive the process.
            std::mem::forget(lease);
        }
        _ => {
            tracing::warn!("cannot keep lock {key:?} for --hold-at-least; releasing it");
            finish(locker, lease).await;
        }
    }
}

/// After the job was resumed: is the lock still ours? Renews it at once if its proven
/// validity has not run out (so the job continues with a full TTL ahead), else no.
async fn resumable(lease: &Lease) -> bool {
    if lease.is_lost() || !lease.is_valid() {
        return false;
    }
    match lease.extend(lease.ttl()).await {
        Ok(()) => {
            tracing::info!("resumed: lease renewed");
            true
        }
        Err(e) => {
            tracing::debug!("resumed, but the lease cannot be renewed: {e}");
            false
        }
    }
}

/// Forwards `sig` to the command's group; a signal that asks it to end is followed by
/// SIGCONT, so that it also reaches a command that is stopped (a stopped process only
/// acts on SIGKILL and SIGCONT).
fn forward(group: Pid, sig: Signal) {
    signal_group(group, sig);
    if crate::signals::terminates(sig) {
        signal_group(group, Signal::SIGCONT);
    }
}

/// After the command's normal exit: waits until nothing is left in its process group,
/// still forwarding signals (a second SIGINT/SIGTERM kills what is left).
async fn wait_group(group: Pid, signals: &mut Signals) {
    let mut terminations = 0u32;
    let mut said = false;
    loop {
        if killpg(group, None) == Err(Errno::ESRCH) {
            return;
        }
        if !said {
            tracing::warn!(
                "the command exited, but processes it started still run in its group: holding the lock until they end"
            );
            said = true;
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(50)) => {}
            sig = signals.recv() => {
                terminations += u32::from(crate::signals::terminates(sig));
                if terminations >= 2 {
                    signal_group(group, Signal::SIGKILL);
                } else {
                    forward(group, sig);
                }
            }
        }
    }
}

/// Releases the lease and waits (bounded) for the library's clean-up. Failures are
/// reported but do not change the exit code: the command's result is what matters,
/// and the keys expire with their TTL anyway.
async fn finish(locker: &Locker, lease: Lease) {
    let was_lost = lease.is_lost();
    match tokio::time::timeout(SHUTDOWN_GRACE, lease.release()).await {
        Ok(Ok(ReleaseOutcome::Released)) => tracing::debug!("released"),
        Ok(Ok(ReleaseOutcome::Expired)) if !was_lost => {
            tracing::warn!("the lease had expired before the command finished")
        }
        Ok(Ok(ReleaseOutcome::OwnedByOther)) if !was_lost => {
            tracing::warn!("the lock was taken by another owner before the command finished")
        }
        Ok(Ok(_)) => {}
        // After a loss the stores are often the reason: saying so again is noise.
        Ok(Err(e)) if was_lost => tracing::debug!("release after the loss: {e}"),
        Err(_) if was_lost => tracing::debug!("release after the loss timed out"),
        Ok(Err(e)) => tracing::warn!("release not confirmed: {e}"),
        Err(_) => tracing::warn!(
            "release not confirmed within {}; the lock expires with its TTL",
            short(SHUTDOWN_GRACE)
        ),
    }
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, locker.shutdown()).await;
}

/// Sends `sig` to the command's process group. A group that is already gone is not
/// an error (the command may have exited a moment ago).
fn signal_group(group: Pid, sig: Signal) {
    match killpg(group, sig) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(e) => tracing::warn!("cannot send {sig} to the command: {e}"),
    }
}

/// After a loss: waits until nothing is left in the command's process group, sending
/// SIGKILL at `kill_at` if it has not been sent yet.
async fn stop_group(group: Pid, kill_at: Option<tokio::time::Instant>) {
    loop {
        // Signal 0 only asks whether anyone is left in the group.
        if killpg(group, None) == Err(Errno::ESRCH) {
            return;
        }
        match kill_at {
            Some(at) if tokio::time::Instant::now() < at => {
                tokio::time::sleep(Duration::from_millis(20).min(at - tokio::time::Instant::now()))
                    .await;
            }
            _ => {
                signal_group(group, Signal::SIGKILL);
                return;
            }
        }
    }
}

/// The shell convention: the exit code, or 128+signal.
fn status_code(status: ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => u8::try_from(code & 0xff).unwrap_or(u8::MAX),
        (None, Some(sig)) => exit::for_signal(sig),
        (None, None) => exit::SOFTWARE,
    }
}

fn describe_status(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    let name = |sig: i32| match Signal::try_from(sig) {
        Ok(s) => s.to_string(),
        Err(_) => format!("signal {sig}"),
    };
    match (status.code(), status.signal()) {
        // The guard reports a command killed by signal S as status 128+S.
        (Some(code), _) if (129..=128 + 64).contains(&code) => {
            format!("it was ended by {} (status {code})", name(code - 128))
        }
        (Some(code), _) => format!("it exited with status {code}"),
        (None, Some(sig)) => format!("killed by {}", name(sig)),
        (None, None) => "it ended".into(),
    }
}
