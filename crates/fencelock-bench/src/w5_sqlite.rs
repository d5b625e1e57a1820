//! W5 — the SQLite store: W1 in one process, and a hot key shared by 8 processes.
//!
//! Floor: raw rusqlite on a file with the same pragmas as fencelock's (WAL,
//! `synchronous = FULL`), doing the same conditional put in one `BEGIN IMMEDIATE`
//! transaction (`INSERT … ON CONFLICT (key) DO UPDATE … WHERE expired`) and the
//! compare-and-delete in another, with no fencing counter. The hot-key floor retries
//! the put without sleeping (SQLite's own busy handler still sleeps while another
//! process holds the write lock).
//!
//! The 8 processes are this binary in its hidden worker mode ([`worker`]). They start
//! together at an agreed wall-clock instant and print one line per critical section
//! (`cs <granted_ns> <releasing_ns>`, Unix-epoch nanoseconds, one host so one clock);
//! this process merges them, checks that no two intervals overlap, and computes the
//! hand-off figures.

use std::io::Write;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use fencelock::{AcquireOptions, Locker};
use rusqlite::{Connection, TransactionBehavior, params};

use crate::Plan;
use crate::stats::{self, Summary};
use crate::w1_latency::{self, TTL};

/// Processes on the hot key.
pub const PROCESSES: usize = 8;
const HOT_KEY: &str = "bench:w5:hot";

/// W5's figures.
#[derive(Clone, Debug)]
pub struct W5 {
    /// W1 on the SQLite store.
    pub latency_fencelock: w1_latency::Side,
    /// W1 with raw rusqlite.
    pub latency_raw: w1_latency::Side,
    /// fencelock pairs per run that failed as `Unavailable` (a commit slower than the
    /// 250 ms request timeout).
    pub latency_timeouts: Summary,
    /// The 8-process hot key, fencelock.
    pub hot_fencelock: Hot,
    /// The 8-process hot key, raw rusqlite spinning.
    pub hot_raw: Hot,
}

/// Hot-key figures of one side.
#[derive(Clone, Debug, Default)]
pub struct Hot {
    /// Critical sections per second.
    pub cs_per_s: Summary,
    /// Hand-off p50, µs.
    pub handoff_p50: Summary,
    /// Hand-off p99, µs.
    pub handoff_p99: Summary,
    /// Fraction of critical sections whose holder changed.
    pub handoff_share: Summary,
    /// The busiest process's fraction.
    pub busiest_share: Summary,
}

/// The two clients a worker can be.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Client {
    /// fencelock's `sqlite://` store.
    Fencelock,
    /// Raw rusqlite.
    Raw,
}

/// Runs W5.
///
/// # Errors
///
/// When a file cannot be made, a request fails, a worker fails, or two critical
/// sections overlapped.
pub async fn run(plan: &Plan) -> anyhow::Result<W5> {
    let dir = tempfile::tempdir().context("temporary directory for SQLite files")?;
    let fl_url = format!("sqlite://{}", dir.path().join("fencelock.db").display());
    let raw_path = dir.path().join("raw.db");
    let locker = Locker::builder().store(fl_url.as_str()).build()?;
    let (mut fl, mut rw) = (Vec::new(), Vec::new());
    latency_fencelock(&locker, "warm", 50).await?;
    latency_raw(&raw_path, "warm", 50).await?;
    for run in 0..plan.runs {
        let first_fl = run % 2 == 0;
        for side in 0..2 {
            if (side == 0) == first_fl {
                fl.push(latency_fencelock(&locker, &format!("f{run}"), plan.w5_ops).await?);
            } else {
                rw.push(latency_raw(&raw_path, &format!("r{run}"), plan.w5_ops).await?);
            }
        }
    }
    locker.shutdown().await;
    let fl_timeouts = Summary::of(
        &fl.iter()
            .map(|x: &(f64, f64, f64, f64)| x.3)
            .collect::<Vec<_>>(),
    );
    let side = |v: &[(f64, f64, f64, f64)]| w1_latency::Side {
        p50: Summary::of(&v.iter().map(|x| x.0).collect::<Vec<_>>()),
        p99: Summary::of(&v.iter().map(|x| x.1).collect::<Vec<_>>()),
        ops: Summary::of(&v.iter().map(|x| x.2).collect::<Vec<_>>()),
        server_us: Summary::default(),
        client_us: Summary::default(),
    };
    let (mut hot_fl, mut hot_rw) = (Vec::new(), Vec::new());
    for run in 0..plan.runs {
        let first_fl = run % 2 == 0;
        for side in 0..2 {
            if (side == 0) == first_fl {
                hot_fl.push(
                    hot(
                        Client::Fencelock,
                        &dir.path().join("fencelock.db"),
                        plan.w5_time,
                    )
                    .await?,
                );
            } else {
                hot_rw.push(hot(Client::Raw, &raw_path, plan.w5_time).await?);
            }
        }
    }
    Ok(W5 {
        latency_fencelock: side(&fl),
        latency_raw: side(&rw),
        latency_timeouts: fl_timeouts,
        hot_fencelock: summarize(&hot_fl),
        hot_raw: summarize(&hot_rw),
    })
}

/// (p50 µs, p99 µs, pairs/s)
async fn latency_fencelock(
    locker: &Locker,
    tag: &str,
    n: usize,
) -> anyhow::Result<(f64, f64, f64, f64)> {
    let mut h = stats::histogram();
    let mut timeouts = 0u64;
    let start = Instant::now();
    for i in 0..n {
        let t = Instant::now();
        let k = w1_latency::key(tag, i);
        let lease = match locker.try_acquire(k.as_str(), TTL).await {
            Ok(l) => l,
            // A commit (fsync) slower than the 250 ms request timeout: counted, and the
            // pair is left out of the latencies.
            Err(e) if e.is_unavailable() => {
                timeouts += 1;
                continue;
            }
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("fencelock (SQLite) try_acquire of free key {k}"));
            }
        };
        match lease.release().await {
            Ok(_) => stats::record(&mut h, t.elapsed()),
            Err(e) if e.is_unavailable() => timeouts += 1,
            Err(e) => return Err(e).context("fencelock (SQLite) release"),
        }
    }
    let elapsed = start.elapsed();
    Ok((
        stats::percentile_us(&h, 50.0),
        stats::percentile_us(&h, 99.0),
        n as f64 / elapsed.as_secs_f64(),
        timeouts as f64,
    ))
}

async fn latency_raw(path: &Path, tag: &str, n: usize) -> anyhow::Result<(f64, f64, f64, f64)> {
    let path = path.to_path_buf();
    let tag = tag.to_string();
    tokio::task::spawn_blocking(move || {
        let mut db = RawDb::open(&path)?;
        let mut h = stats::histogram();
        let start = Instant::now();
        for i in 0..n {
            let t = Instant::now();
            let k = w1_latency::key(&tag, i);
            let v = crate::raw::value(7, i as u64);
            if !db.acquire(&k, &v, TTL)? {
                bail!("raw SQLite put refused the free key {k}");
            }
            db.release(&k, &v)?;
            stats::record(&mut h, t.elapsed());
        }
        let elapsed = start.elapsed();
        Ok((
            stats::percentile_us(&h, 50.0),
            stats::percentile_us(&h, 99.0),
            n as f64 / elapsed.as_secs_f64(),
            0.0,
        ))
    })
    .await
    .context("raw SQLite latency thread panicked")?
}

/// The floor's lock file.
struct RawDb {
    conn: Connection,
}

impl RawDb {
    fn open(path: &Path) -> anyhow::Result<RawDb> {
        let conn = Connection::open(path).with_context(|| format!("opening {}", path.display()))?;
        conn.busy_timeout(Duration::from_secs(5))?;
        let _: String = conn.pragma_update_and_check(None, "journal_mode", "wal", |r| r.get(0))?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS lock (
                 key TEXT PRIMARY KEY NOT NULL,
                 value TEXT NOT NULL,
                 expires_ms INTEGER NOT NULL
             ) WITHOUT ROWID;",
        )?;
        Ok(RawDb { conn })
    }

    fn acquire(&mut self, key: &str, value: &str, ttl: Duration) -> anyhow::Result<bool> {
        let now = unix_ms();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .context("raw SQLite BEGIN IMMEDIATE")?;
        let changed = tx
            .prepare_cached(
                "INSERT INTO lock (key, value, expires_ms) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value, \
                 expires_ms = excluded.expires_ms WHERE lock.expires_ms <= ?4",
            )?
            .execute(params![key, value, now + ttl.as_millis() as i64, now])
            .context("raw SQLite conditional put")?;
        tx.commit().context("raw SQLite commit")?;
        Ok(changed == 1)
    }

    fn release(&mut self, key: &str, value: &str) -> anyhow::Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .context("raw SQLite BEGIN IMMEDIATE")?;
        tx.prepare_cached("DELETE FROM lock WHERE key = ?1 AND value = ?2")?
            .execute(params![key, value])
            .context("raw SQLite delete")?;
        tx.commit().context("raw SQLite commit")?;
        Ok(())
    }
}

fn unix_ms() -> i64 {
    (unix_ns() / 1_000_000) as i64
}

fn unix_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// One critical section: (process, granted ns, releasing ns).
type Section = (usize, u128, u128);

/// One 8-process run: critical sections/s, hand-off p50/p99 µs, hand-off share,
/// busiest share.
async fn hot(client: Client, db: &Path, time: Duration) -> anyhow::Result<[f64; 5]> {
    let exe = std::env::current_exe().context("finding the bench binary to re-invoke")?;
    let start = unix_ns() + 1_500_000_000;
    let end = start + time.as_nanos();
    let mut children = Vec::new();
    for id in 0..PROCESSES {
        let child = tokio::process::Command::new(&exe)
            .arg("worker")
            .arg("--client")
            .arg(match client {
                Client::Fencelock => "fencelock",
                Client::Raw => "raw",
            })
            .arg("--db")
            .arg(db)
            .args(["--id", &id.to_string()])
            .args([
                "--start-ns",
                &start.to_string(),
                "--end-ns",
                &end.to_string(),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env("RUST_LIB_BACKTRACE", "0")
            .env("RUST_BACKTRACE", "0")
            .kill_on_drop(true)
            .spawn()
            .context("starting a W5 worker process")?;
        children.push(child);
    }
    let mut sections: Vec<Section> = Vec::new();
    for (id, child) in children.into_iter().enumerate() {
        let out = child
            .wait_with_output()
            .await
            .with_context(|| format!("waiting for W5 worker {id}"))?;
        if !out.status.success() {
            bail!(
                "W5 worker {id} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let mut f = line.split_whitespace();
            let (Some("cs"), Some(g), Some(r)) = (f.next(), f.next(), f.next()) else {
                bail!("W5 worker {id} printed an unexpected line: {line:?}");
            };
            let parse = |s: &str| {
                s.parse::<u128>()
                    .with_context(|| format!("W5 worker {id}: bad number in {line:?}"))
            };
            sections.push((id, parse(g)?, parse(r)?));
        }
    }
    sections.sort_by_key(|s| s.1);
    let mut h = stats::histogram();
    let (mut per, mut handoffs) = (vec![0u64; PROCESSES], 0u64);
    for (i, s) in sections.iter().enumerate() {
        per[s.0] += 1;
        if i == 0 {
            continue;
        }
        let prev = sections[i - 1];
        if s.1 < prev.2 {
            bail!(
                "W5 ({client:?}): process {} was granted at {} while process {} held the lock until {}",
                s.0,
                s.1,
                prev.0,
                prev.2
            );
        }
        if s.0 != prev.0 {
            handoffs += 1;
            stats::record(&mut h, Duration::from_nanos((s.1 - prev.2) as u64));
        }
    }
    let total = sections.len().max(1) as f64;
    Ok([
        sections.len() as f64 / time.as_secs_f64(),
        stats::percentile_us(&h, 50.0),
        stats::percentile_us(&h, 99.0),
        handoffs as f64 / total,
        per.iter().copied().max().unwrap_or(0) as f64 / total,
    ])
}

fn summarize(runs: &[[f64; 5]]) -> Hot {
    let col = |i: usize| Summary::of(&runs.iter().map(|r| r[i]).collect::<Vec<_>>());
    Hot {
        cs_per_s: col(0),
        handoff_p50: col(1),
        handoff_p99: col(2),
        handoff_share: col(3),
        busiest_share: col(4),
    }
}

/// The hidden worker mode: contend for the hot key from `start_ns` to `end_ns`
/// (Unix-epoch nanoseconds) and print one line per critical section.
///
/// # Errors
///
/// When the file cannot be opened or a request fails.
pub async fn worker(
    client: Client,
    db: &Path,
    id: usize,
    start_ns: u128,
    end_ns: u128,
) -> anyhow::Result<()> {
    let mut lines: Vec<(u128, u128)> = Vec::new();
    let wait_until = |t: u128| async move {
        let now = unix_ns();
        if t > now {
            tokio::time::sleep(Duration::from_nanos((t - now) as u64)).await;
        }
    };
    // Bounded however the clock behaves: never longer than the run plus a minute.
    let hard_stop = Instant::now()
        + Duration::from_nanos(end_ns.saturating_sub(unix_ns()) as u64)
        + Duration::from_secs(60);
    match client {
        Client::Fencelock => {
            let url = format!("sqlite://{}", db.display());
            let locker = Locker::builder().store(url.as_str()).build()?;
            let warm = format!("bench:w5:warm:{id}");
            // 8 processes opening one file at once can keep it busy past the request
            // timeout: the warm-up waits (and retries) instead of failing.
            let warm_opts = AcquireOptions::default().max_wait(Duration::from_secs(30));
            locker
                .acquire_with(warm.as_str(), TTL, &warm_opts)
                .await?
                .release()
                .await?;
            wait_until(start_ns).await;
            let opts = AcquireOptions::default().max_wait(Duration::from_secs(30));
            while unix_ns() < end_ns && Instant::now() < hard_stop {
                let lease = locker
                    .acquire_with(HOT_KEY, TTL, &opts)
                    .await
                    .with_context(|| format!("worker {id}: acquire"))?;
                let granted = unix_ns();
                let releasing = unix_ns();
                lines.push((granted, releasing));
                match lease.release().await {
                    Ok(_) => {}
                    // A commit slower than the request timeout: the locker's background
                    // task finishes the release.
                    Err(e) if e.is_unavailable() => {}
                    Err(e) => return Err(e).with_context(|| format!("worker {id}: release")),
                }
            }
            locker.shutdown().await;
        }
        Client::Raw => {
            let db = db.to_path_buf();
            lines = tokio::task::spawn_blocking(move || {
                let mut raw = RawDb::open(&db)?;
                let mut lines = Vec::new();
                let now = unix_ns();
                if start_ns > now {
                    std::thread::sleep(Duration::from_nanos((start_ns - now) as u64));
                }
                let mut i = 0u64;
                while unix_ns() < end_ns && Instant::now() < hard_stop {
                    i += 1;
                    let v = crate::raw::value(id as u64, i);
                    if raw.acquire(HOT_KEY, &v, TTL)? {
                        let granted = unix_ns();
                        let releasing = unix_ns();
                        lines.push((granted, releasing));
                        raw.release(HOT_KEY, &v)?;
                    }
                }
                anyhow::Ok(lines)
            })
            .await
            .context("raw worker thread panicked")??;
        }
    }
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for (g, r) in lines {
        // Only sections that began inside the measured interval count.
        if g >= start_ns && g < end_ns {
            writeln!(out, "cs {g} {r}")?;
        }
    }
    out.flush()?;
    Ok(())
}
