//! The Node.js peers: `tests/interop/bench-peer.js` run against the bench's own nodes.
//!
//! The script measures itself (its latencies with the same definitions as the Rust
//! side, see its header) and reports one line of JSON. The bench starts it, waits for
//! its `ready` (connected, warmed up), resets the nodes' command statistics, says go,
//! and reads the figures and the commands the run sent.

use std::collections::HashMap;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use redis::aio::MultiplexedConnection;
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

use crate::servers::{self, Nodes};

/// The Node.js packages a peer run needs, under `tests/interop/node_modules`.
const PACKAGES: [&str; 3] = ["ioredis", "redlock", "redis-semaphore"];

/// How long a peer process may take from its start to its figures (its own run time
/// comes on top).
const SLACK: Duration = Duration::from_secs(60);

/// What `bench-peer.js` reports (fields of the workloads that do not fill them are
/// absent or null).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct Report {
    /// W1, W2: acquire+release pairs done (W2: within the time).
    pub pairs: Option<f64>,
    /// W3H, sem: grants within the time.
    pub grants: Option<f64>,
    /// W3H, sem: critical sections run (those after the stop too).
    pub executed: Option<f64>,
    /// Seconds from go to the stop (W1: to the last pair).
    pub elapsed_s: f64,
    /// W1: p50 of acquire+release, µs.
    pub p50_us: Option<f64>,
    /// W1: p99 of acquire+release, µs.
    pub p99_us: Option<f64>,
    /// W3H, sem: hand-off p50, µs.
    pub handoff_p50_us: Option<f64>,
    /// W3H, sem: hand-off p99, µs.
    pub handoff_p99_us: Option<f64>,
    /// W3H, sem: wait p50, µs.
    pub wait_p50_us: Option<f64>,
    /// W3H, sem: wait p99, µs.
    pub wait_p99_us: Option<f64>,
    /// W3H, sem: the longest wait, µs.
    pub wait_max_us: Option<f64>,
    /// W3H, sem: the fraction of grants whose holder differs from the previous one.
    pub handoff_share: Option<f64>,
    /// W3H, sem: the busiest contender's fraction of the grants.
    pub busiest_share: Option<f64>,
    /// W3H, sem: the most holders inside at once (at the resource).
    pub max_inside: Option<f64>,
    /// sem: the fraction of grants that went to a contender already asking when the
    /// matched release started (a hand-off, not a newcomer finding a free permit).
    pub waiter_share: Option<f64>,
}

/// An optional figure as a number (NaN when absent: "n/a" in the report).
pub fn num(x: Option<f64>) -> f64 {
    x.unwrap_or(f64::NAN)
}

/// One run of `bench-peer.js`: `--client client --workload workload` on `nodes`, with
/// `args` besides. Returns its report and the Redis commands (all nodes, by name)
/// sent between go and its figures.
///
/// # Errors
///
/// A missing `node` or npm package (with what to run), a script that fails or
/// reports something else than its figures.
pub async fn run(
    client: &str,
    workload: &str,
    nodes: &Nodes,
    admin: &mut [MultiplexedConnection],
    args: &[String],
    run_time: Duration,
) -> anyhow::Result<(Report, HashMap<String, u64>)> {
    let dir = fencelock_testkit::foreign::interop_dir();
    for p in PACKAGES {
        if !dir
            .join("node_modules")
            .join(p)
            .join("package.json")
            .is_file()
        {
            bail!(
                "tests/interop/node_modules has no {p}: run `npm ci` in tests/interop \
                 (scripts/bench and scripts/test do when it is missing)"
            );
        }
    }
    let mut child = Command::new("node")
        .arg(dir.join("bench-peer.js"))
        .args(["--client", client, "--workload", workload])
        .args(["--urls", &nodes.urls().join(",")])
        .args(args)
        .current_dir(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        // Also on an error or Ctrl-C: the peer never outlives the bench's nodes.
        .kill_on_drop(true)
        .spawn()
        .context("starting `node tests/interop/bench-peer.js` (is Node.js installed?)")?;
    let mut lines = BufReader::new(child.stdout.take().context("the peer's stdout")?).lines();
    let mut stdin = child.stdin.take().context("the peer's stdin")?;
    let what = format!("Node.js peer {client} {workload}");
    let ready = tokio::time::timeout(SLACK, lines.next_line())
        .await
        .with_context(|| format!("{what}: no `ready` within {SLACK:?}"))??
        .with_context(|| format!("{what}: ended before `ready`"))?;
    if ready != "ready" {
        bail!("{what} said {ready:?} instead of `ready`");
    }
    servers::reset_all(admin).await?;
    stdin
        .write_all(b"go\n")
        .await
        .with_context(|| format!("{what}: telling it to go"))?;
    stdin.flush().await?;
    let line = tokio::time::timeout(SLACK + run_time, lines.next_line())
        .await
        .with_context(|| format!("{what}: no figures within {:?}", SLACK + run_time))??
        .with_context(|| format!("{what}: ended without its figures"))?;
    let calls = servers::calls_all(admin).await?;
    let report: Report =
        serde_json::from_str(&line).with_context(|| format!("{what}: figures {line:?}"))?;
    let status = child.wait().await?;
    if !status.success() {
        bail!("{what} exited with {status}");
    }
    Ok((report, calls))
}
