//! Local `redis-server` processes for the benchmarks.
//!
//! Each node is the workspace's one fixture, [`fencelock_testkit::RedisProcess`]:
//! 127.0.0.1 only, a free port, persistence off (`--save ""`, no AOF), killed by PID
//! when dropped. The PIDs are also kept in a process-wide list that the Ctrl-C handler
//! of `main` kills ([`kill_all_started`]), and written to `--pid-dir` so that
//! `scripts/bench` can kill them even if this process dies without unwinding.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context;
use fencelock_testkit::{ProcessOptions, RedisProcess};
use redis::aio::MultiplexedConnection;

/// PIDs of every server started by this process and not yet stopped.
static STARTED: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// Kills every server still running (for the Ctrl-C handler).
pub fn kill_all_started() {
    let pids = std::mem::take(&mut *STARTED.lock().unwrap_or_else(|p| p.into_inner()));
    for pid in pids {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// One `redis-server` process: the workspace's one fixture
/// ([`fencelock_testkit::RedisProcess`]), plus the bookkeeping that lets an
/// interrupted run kill it.
#[derive(Debug)]
pub struct Node {
    process: RedisProcess,
    pid_file: Option<PathBuf>,
}

impl Node {
    /// Starts a node on a free port and waits until it is ready.
    ///
    /// # Errors
    ///
    /// When `redis-server` cannot be run or is not ready within 5 s (the server's log
    /// is quoted).
    pub fn start(pid_dir: Option<&Path>) -> anyhow::Result<Node> {
        let process = RedisProcess::start(
            ProcessOptions::new()
                .name("benchmark redis-server")
                .start_deadline(Duration::from_secs(5)),
        )?;
        let pid = process
            .pid()
            .context("the benchmark redis-server died at once")?;
        STARTED.lock().unwrap_or_else(|p| p.into_inner()).push(pid);
        let mut node = Node {
            process,
            pid_file: None,
        };
        if let Some(d) = pid_dir {
            let f = d.join(format!("redis-{pid}.pid"));
            std::fs::write(&f, pid.to_string())
                .with_context(|| format!("writing {}", f.display()))?;
            node.pid_file = Some(f);
        }
        Ok(node)
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        self.process.url()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // The process is killed and reaped when `process` drops, right after.
        if let Some(pid) = self.process.pid() {
            STARTED
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|&p| p != pid);
        }
        if let Some(f) = self.pid_file.take() {
            let _ = std::fs::remove_file(f);
        }
    }
}

/// A set of independent nodes (a Redlock quorum when more than one).
#[derive(Debug)]
pub struct Nodes {
    nodes: Vec<Node>,
}

impl Nodes {
    /// Starts `n` nodes.
    ///
    /// # Errors
    ///
    /// As [`Node::start`].
    pub fn start(n: usize, pid_dir: Option<&Path>) -> anyhow::Result<Nodes> {
        let nodes = (0..n)
            .map(|_| Node::start(pid_dir))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Nodes { nodes })
    }

    /// How many nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Their URLs.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(Node::url).collect()
    }

    /// One admin connection per node.
    ///
    /// # Errors
    ///
    /// When a node does not accept a connection.
    pub async fn admin(&self) -> anyhow::Result<Vec<MultiplexedConnection>> {
        let mut out = Vec::new();
        for url in self.urls() {
            let c = redis::Client::open(url.as_str())?
                .get_multiplexed_async_connection()
                .await
                .with_context(|| format!("connecting to {url}"))?;
            out.push(c);
        }
        Ok(out)
    }

    /// `FLUSHALL` and `CONFIG RESETSTAT` on every node.
    ///
    /// # Errors
    ///
    /// When a node refuses.
    pub async fn reset(&self) -> anyhow::Result<()> {
        for mut c in self.admin().await? {
            redis::cmd("FLUSHALL")
                .query_async::<()>(&mut c)
                .await
                .context("FLUSHALL")?;
            reset_stats(&mut c).await?;
        }
        Ok(())
    }
}

/// `CONFIG RESETSTAT` on one node.
///
/// # Errors
///
/// When the node refuses.
pub async fn reset_stats(c: &mut MultiplexedConnection) -> anyhow::Result<()> {
    redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async::<()>(c)
        .await
        .context("CONFIG RESETSTAT")
}

/// Calls per command since the last `CONFIG RESETSTAT`, from `INFO commandstats`
/// (`info` and `config`, the measurement's own commands, left out).
///
/// # Errors
///
/// When the node refuses or the reply is not the expected text.
pub async fn command_calls(c: &mut MultiplexedConnection) -> anyhow::Result<HashMap<String, u64>> {
    Ok(command_stats(c)
        .await?
        .into_iter()
        .map(|(k, (calls, _))| (k, calls))
        .collect())
}

/// (calls, µs spent) per command since the last `CONFIG RESETSTAT`, from
/// `INFO commandstats` (`info` and `config` left out).
///
/// # Errors
///
/// When the node refuses or the reply is not the expected text.
pub async fn command_stats(
    c: &mut MultiplexedConnection,
) -> anyhow::Result<HashMap<String, (u64, u64)>> {
    let text: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(c)
        .await
        .context("INFO commandstats")?;
    let mut out = HashMap::new();
    for line in text.lines() {
        // cmdstat_evalsha:calls=12,usec=...
        let Some(rest) = line.strip_prefix("cmdstat_") else {
            continue;
        };
        let (name, fields) = rest
            .split_once(':')
            .with_context(|| format!("INFO commandstats line without ':': {line}"))?;
        if name == "info" || name.starts_with("config") {
            continue;
        }
        let field = |f: &str| {
            fields
                .split(',')
                .find_map(|x| x.strip_prefix(f))
                .and_then(|v| v.parse::<u64>().ok())
                .with_context(|| format!("INFO commandstats line without {f}: {line}"))
        };
        out.insert(name.to_string(), (field("calls=")?, field("usec=")?));
    }
    Ok(out)
}

/// Resets the command statistics on every node of `admin`.
///
/// # Errors
///
/// When a node refuses.
pub async fn reset_all(admin: &mut [MultiplexedConnection]) -> anyhow::Result<()> {
    for c in admin.iter_mut() {
        reset_stats(c).await?;
    }
    Ok(())
}

/// Calls per command summed over every node of `admin`.
///
/// # Errors
///
/// When a node refuses.
pub async fn calls_all(
    admin: &mut [MultiplexedConnection],
) -> anyhow::Result<HashMap<String, u64>> {
    let mut sum = HashMap::new();
    for c in admin.iter_mut() {
        for (k, v) in command_calls(c).await? {
            *sum.entry(k).or_insert(0) += v;
        }
    }
    Ok(sum)
}

/// CPU seconds (user+system, main thread and all) the nodes of `admin` have used so
/// far, summed, from `INFO cpu`.
///
/// # Errors
///
/// When a node refuses or the reply lacks the fields.
pub async fn cpu_all(admin: &mut [MultiplexedConnection]) -> anyhow::Result<f64> {
    let mut sum = 0.0;
    for c in admin.iter_mut() {
        let text: String = redis::cmd("INFO")
            .arg("cpu")
            .query_async(c)
            .await
            .context("INFO cpu")?;
        for f in ["used_cpu_user:", "used_cpu_sys:"] {
            sum += text
                .lines()
                .find_map(|l| l.strip_prefix(f))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .with_context(|| format!("INFO cpu without {f}"))?;
        }
    }
    Ok(sum)
}

/// Connections the nodes of `admin` have accepted so far, summed, from `INFO stats`
/// (`total_connections_received`): a client that reconnects shows up here.
///
/// # Errors
///
/// When a node refuses or the reply lacks the field.
pub async fn connections_all(admin: &mut [MultiplexedConnection]) -> anyhow::Result<u64> {
    let mut sum = 0;
    for c in admin.iter_mut() {
        let text: String = redis::cmd("INFO")
            .arg("stats")
            .query_async(c)
            .await
            .context("INFO stats")?;
        sum += text
            .lines()
            .find_map(|l| l.strip_prefix("total_connections_received:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .context("INFO stats without total_connections_received")?;
    }
    Ok(sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `scripts/bench` kills what the pid files name if a run dies without unwinding:
    /// a node must name itself there while it runs, and take its file away (and its
    /// PID off the Ctrl-C list) when it stops.
    #[test]
    fn nodes_keep_their_pid_files_while_they_run() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let nodes = Nodes::start(2, Some(dir.path())).expect("two nodes");
        assert!(
            nodes
                .urls()
                .iter()
                .all(|url| url.starts_with("redis://127.0.0.1:"))
        );
        let files = std::fs::read_dir(dir.path()).expect("pid dir").count();
        assert_eq!(files, 2, "one pid file per node");
        assert_eq!(STARTED.lock().expect("STARTED").len(), 2);
        drop(nodes);
        let files = std::fs::read_dir(dir.path()).expect("pid dir").count();
        assert_eq!(files, 0, "pid files removed with their nodes");
        assert!(STARTED.lock().expect("STARTED").is_empty());
    }
}
