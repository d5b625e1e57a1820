//! W6 — a mixed fleet: fencelock on the same key as the `redlock` npm package and
//! redis-py's `Lock`, as in a fleet that moves to fencelock one service at a time.
//!
//! Those clients publish nothing when they release, so a fencelock waiter refused by
//! one polls (every `silent_holder_poll`, 150–225 ms by default) besides listening for
//! fencelock's own release notices. Measured here:
//!
//! - **Shares.** Two contenders loop on one key for a fixed time: acquire (waiting),
//!   hold [`HOLD`], release, rest [`REST`]. Each contest's share is the first
//!   contender's critical sections over both. The baseline is the same foreign client
//!   against itself (npm at its default retry settings: 200 ms ± 100 ms; redis-py at
//!   its default 100 ms sleep), so "fair" means "the share one of them gets against
//!   another", not a hard 50 %. npm retrying every 20 ms is shown too.
//! - **Foreign hand-off.** A foreign client holds the key ([`FOREIGN_HOLD`]) with a long
//!   TTL and releases it; a fencelock waiter that was refused meanwhile gets the key
//!   this long after the release (the client prints its wall clock right after the
//!   release resolved; the bench takes its own when `acquire` returns).
//! - **Requests while waiting.** `EVALSHA` calls per node per second sent by that
//!   waiter during the foreign hold (`INFO commandstats`; the foreign client's own
//!   acquire and release are subtracted).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use fencelock::{AcquireOptions, Locker};

use crate::Plan;
use crate::servers::{self, Nodes};
use crate::stats::Summary;

/// How long every contender holds the key per critical section.
pub const HOLD: Duration = Duration::from_millis(5);
/// How long every contender rests between a release and its next acquire.
pub const REST: Duration = Duration::from_millis(5);
/// The silent-holder poll of [`Contender::FencelockEager`].
pub const EAGER_POLL: Duration = Duration::from_millis(40);
/// How long the foreign holder keeps the key in the hand-off measurement.
pub const FOREIGN_HOLD: Duration = Duration::from_millis(1000);

/// A contender of a contest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Contender {
    /// fencelock (the library, in this process), default options.
    Fencelock,
    /// fencelock polling a silent holder every [`EAGER_POLL`] instead of the default:
    /// the trade-off between noticing a foreign release sooner and a fair share.
    FencelockEager,
    /// The `redlock` npm package with its default retry settings (200 ± 100 ms).
    NpmDefault,
    /// The `redlock` npm package retrying every 20 ± 10 ms.
    NpmFast,
    /// redis-py's `Lock` with its default 100 ms sleep (one node only).
    RedisPy,
}

impl Contender {
    /// The name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Contender::Fencelock => "fencelock",
            Contender::FencelockEager => "fencelock, 40 ms silent-holder poll",
            Contender::NpmDefault => "redlock npm (default retry)",
            Contender::NpmFast => "redlock npm (20 ms retry)",
            Contender::RedisPy => "redis-py Lock",
        }
    }
}

/// One contest's result over the runs.
#[derive(Clone, Debug)]
pub struct Contest {
    /// How many nodes.
    pub nodes: usize,
    /// The contender whose share is reported, and its rival.
    pub pair: (Contender, Contender),
    /// The first contender's share of the critical sections, in percent.
    pub share: Summary,
    /// Critical sections per second, both together.
    pub total_per_s: Summary,
}

/// The hand-off from a silent foreign holder to a fencelock waiter.
#[derive(Clone, Debug)]
pub struct ForeignHandoff {
    /// How many nodes.
    pub nodes: usize,
    /// The foreign holder.
    pub holder: Contender,
    /// Milliseconds from the foreign release to fencelock's `acquire` returning.
    pub ms: Summary,
    /// `EVALSHA` per node per second sent by the waiter while refused.
    pub requests_per_node_s: Summary,
}

/// W6's results.
#[derive(Clone, Debug, Default)]
pub struct W6 {
    /// Every contest.
    pub contests: Vec<Contest>,
    /// Every hand-off measurement.
    pub handoffs: Vec<ForeignHandoff>,
}

/// The foreign client's command line for `mode` on `key`.
fn foreign(who: Contender, nodes: &Nodes, key: &str, args: &[String]) -> anyhow::Result<Command> {
    let dir = fencelock_testkit::foreign::interop_dir();
    let mut cmd = match who {
        Contender::NpmDefault | Contender::NpmFast => {
            if !dir.join("node_modules/redlock/package.json").is_file() {
                bail!(
                    "tests/interop/node_modules has no redlock: run `scripts/test` (or `npm ci` \
                     in tests/interop) first"
                );
            }
            let (delay, jitter) = if who == Contender::NpmDefault {
                ("200", "100")
            } else {
                ("20", "10")
            };
            let mut c = Command::new("node");
            c.arg(dir.join("redlock-client.js"))
                .args(["--urls", &nodes.urls().join(","), "--key", key])
                .args(["--retry-delay-ms", delay, "--retry-jitter-ms", jitter]);
            c
        }
        Contender::RedisPy => {
            if nodes.len() != 1 {
                bail!("redis-py's Lock takes one node");
            }
            let mut c = Command::new(
                fencelock_testkit::foreign::redis_py_python().map_err(anyhow::Error::msg)?,
            );
            c.arg(dir.join("redis_py_lock.py"))
                .args(["--url", &nodes.urls()[0], "--key", key]);
            c
        }
        Contender::Fencelock | Contender::FencelockEager => {
            bail!("fencelock runs in this process")
        }
    };
    cmd.args(args)
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    Ok(cmd)
}

fn ms(d: Duration) -> String {
    d.as_millis().to_string()
}

/// Loops fencelock on `key` until `end`, appending to `log`; returns its count.
async fn fencelock_loop(
    locker: &Locker,
    key: &str,
    end: Instant,
    log: &Path,
) -> anyhow::Result<u64> {
    let mut n = 0;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(n);
        }
        let lease = match locker
            .acquire_with(
                key,
                Duration::from_secs(2),
                &AcquireOptions::default().max_wait(left),
            )
            .await
        {
            Ok(l) => l,
            Err(e) if e.is_contended() || e.kind() == fencelock::ErrorKind::Timeout => {
                return Ok(n);
            }
            Err(e) => return Err(e).context("fencelock acquire"),
        };
        n += 1;
        append(log, &format!("fencelock enter {n}"))?;
        tokio::time::sleep(HOLD).await;
        append(log, &format!("fencelock exit {n}"))?;
        lease.release().await.context("fencelock release")?;
        tokio::time::sleep(REST).await;
    }
}

fn append(log: &Path, line: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    f.write_all(format!("{line}\n").as_bytes())?;
    Ok(())
}

/// Reads a child's stdout to the end and returns its `done <count>`.
fn done_count(child: Child) -> anyhow::Result<u64> {
    let out = child.wait_with_output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("foreign contender failed ({}): {text}", out.status);
    }
    text.lines()
        .find_map(|l| l.strip_prefix("done ")?.trim().parse().ok())
        .with_context(|| format!("no `done <count>` from the foreign contender: {text:?}"))
}

/// Checks that the log's critical sections never overlap (a contest that broke
/// exclusion must not report a share).
fn check_exclusive(log: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut inside: Option<&str> = None;
    for (n, line) in text.lines().enumerate() {
        match (line.split_whitespace().nth(1), inside) {
            (Some("enter"), None) => inside = Some(line),
            (Some("enter"), Some(other)) => {
                bail!(
                    "line {}: {line:?} entered while {other:?} was inside",
                    n + 1
                )
            }
            (Some("exit"), _) => inside = None,
            _ => bail!("line {}: malformed {line:?}", n + 1),
        }
    }
    Ok(())
}

/// One contest of `a` against `b` for `time`: (a's count, b's count).
async fn contest(
    nodes: &Nodes,
    a: Contender,
    b: Contender,
    time: Duration,
    round: usize,
) -> anyhow::Result<(u64, u64)> {
    let dir = tempfile::tempdir()?;
    let log = dir.path().join("cs.log");
    let key = format!("w6:{}:{round}:{:?}:{:?}", nodes.len(), a, b);
    let end = Instant::now() + time;
    let spawn = |who: Contender, name: &str| -> anyhow::Result<Child> {
        let mut args: Vec<String> = vec![
            "--mode".into(),
            "loop".into(),
            "--log".into(),
            log.display().to_string(),
            "--name".into(),
            name.into(),
            "--hold-ms".into(),
            ms(HOLD),
            "--rest-ms".into(),
            ms(REST),
            "--duration-ms".into(),
            ms(time),
            "--ttl-ms".into(),
            "2000".into(),
        ];
        if who != Contender::RedisPy {
            args.extend(["--iterations".into(), "1".into()]);
        }
        Ok(foreign(who, nodes, &key, &args)?.spawn()?)
    };
    let (na, nb) = match (a, b) {
        (Contender::FencelockEager, other) => {
            let child = spawn(other, "b")?;
            let locker = Locker::builder()
                .stores(nodes.urls())
                .silent_holder_poll(EAGER_POLL)
                .build()?;
            let na = fencelock_loop(&locker, &key, end, &log).await?;
            locker.shutdown().await;
            let nb = tokio::task::spawn_blocking(move || done_count(child)).await??;
            (na, nb)
        }
        (Contender::Fencelock, other) => {
            let child = spawn(other, "b")?;
            let locker = Locker::builder().stores(nodes.urls()).build()?;
            let na = fencelock_loop(&locker, &key, end, &log).await?;
            locker.shutdown().await;
            let nb = tokio::task::spawn_blocking(move || done_count(child)).await??;
            (na, nb)
        }
        (x, y) => {
            let ca = spawn(x, "a")?;
            let cb = spawn(y, "b")?;
            let na = tokio::task::spawn_blocking(move || done_count(ca));
            let nb = tokio::task::spawn_blocking(move || done_count(cb));
            (na.await??, nb.await??)
        }
    };
    check_exclusive(&log).with_context(|| format!("{a:?} vs {b:?} broke mutual exclusion"))?;
    Ok((na, nb))
}

/// The foreign hand-off: `reps` holds by `holder`, each released to a fencelock waiter
/// with default options.
async fn handoff(nodes: &Nodes, holder: Contender, reps: usize) -> anyhow::Result<ForeignHandoff> {
    let mut admin = nodes.admin().await?;
    let locker = Locker::builder().stores(nodes.urls()).build()?;
    let mut lat = Vec::new();
    let mut rates = Vec::new();
    for rep in 0..reps {
        let key = format!("w6:handoff:{}:{rep}", nodes.len());
        let args: Vec<String> = [
            "--mode",
            "hold",
            "--ttl-ms",
            "30000",
            "--hold-ms",
            &ms(FOREIGN_HOLD),
        ]
        .iter()
        .map(|s| (*s).to_string())
        .collect();
        let mut child = foreign(holder, nodes, &key, &args)?.spawn()?;
        let stdout = child.stdout.take().context("stdout")?;
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let recv = |what: &str| -> anyhow::Result<String> {
            rx.recv_timeout(Duration::from_secs(30))
                .with_context(|| format!("the foreign holder never said `{what}`"))
        };
        let first = recv("acquired")?;
        if !first.starts_with("acquired") {
            bail!("the foreign holder said {first:?}");
        }
        servers::reset_all(&mut admin).await?;
        let waiting = Instant::now();
        let lease = locker
            .acquire_with(
                key.as_str(),
                Duration::from_secs(5),
                &AcquireOptions::default().max_wait(Duration::from_secs(20)),
            )
            .await
            .context("the waiter never got the key")?;
        let got_ms = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs_f64() * 1000.0;
        let waited = waiting.elapsed();
        let calls = servers::calls_all(&mut admin).await?;
        lease.release().await?;
        let released = recv("released")?;
        let released_ms: f64 = released
            .strip_prefix("released ")
            .and_then(|s| s.trim().parse().ok())
            .with_context(|| format!("want `released <ms>`, got {released:?}"))?;
        tokio::task::spawn_blocking(move || child.wait()).await??;
        lat.push(got_ms - released_ms);
        // The holder's own release (one EVALSHA per node) is in the count; its
        // acquire came before the reset.
        let evalsha = calls.get("evalsha").copied().unwrap_or(0) as f64;
        let n = nodes.len() as f64;
        rates.push(((evalsha - n).max(0.0) / n) / waited.as_secs_f64());
    }
    locker.shutdown().await;
    Ok(ForeignHandoff {
        nodes: nodes.len(),
        holder,
        ms: Summary::of(&lat),
        requests_per_node_s: Summary::of(&rates),
    })
}

/// Runs W6 on `nodes`.
///
/// # Errors
///
/// A foreign client that is missing or fails, or a contest that broke exclusion.
pub async fn run(plan: &Plan, nodes: &Nodes) -> anyhow::Result<W6> {
    use Contender::*;
    let mut pairs = vec![
        (NpmDefault, NpmDefault),
        (Fencelock, NpmDefault),
        (FencelockEager, NpmDefault),
        (Fencelock, NpmFast),
        (NpmFast, NpmFast),
    ];
    if nodes.len() == 1 {
        pairs.extend([(RedisPy, RedisPy), (Fencelock, RedisPy)]);
    }
    if plan.w6_fair_share_only {
        pairs = vec![(NpmDefault, NpmDefault), (Fencelock, NpmDefault)];
    }
    let mut w6 = W6::default();
    for &(a, b) in &pairs {
        let mut shares = Vec::new();
        let mut totals = Vec::new();
        for round in 0..plan.runs {
            let (na, nb) = contest(nodes, a, b, plan.w6_time, round).await?;
            let all = (na + nb) as f64;
            shares.push(if all > 0.0 {
                100.0 * na as f64 / all
            } else {
                f64::NAN
            });
            totals.push(all / plan.w6_time.as_secs_f64());
            eprintln!("  W6 {} nodes: {a:?} {na} vs {b:?} {nb}", nodes.len());
        }
        w6.contests.push(Contest {
            nodes: nodes.len(),
            pair: (a, b),
            share: Summary::of(&shares),
            total_per_s: Summary::of(&totals),
        });
    }
    let mut holders = vec![NpmDefault];
    if nodes.len() == 1 {
        holders.push(RedisPy);
    }
    if plan.w6_fair_share_only {
        holders.clear();
    }
    for holder in holders {
        w6.handoffs
            .push(handoff(nodes, holder, plan.w6_handoffs).await?);
    }
    Ok(w6)
}
