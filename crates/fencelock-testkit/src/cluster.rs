//! [`Cluster`]: a handful of independent `redis-server` processes for tests.
//!
//! Each node is a [`RedisProcess`]: bound to 127.0.0.1 only, persistence off unless
//! asked for, its own temporary directory, fault controls acting on its PID only, and
//! killed and reaped on drop (its log tail printed if the test is failing).
//!
//! The helpers that read server state (`keys`, `get`, `pttl`, `command_calls` …) use a
//! plain synchronous redis-rs connection per call: they are for assertions, they must
//! not share anything with the code under test, and blocking a test thread for a
//! loopback round trip is harmless.
//!
//! Every method panics on failure (these are tests), and every panic message quotes
//! the tail of the node's server log, which is usually where the reason is.

use std::fmt::Write as _;
use std::process::Command;
use std::time::Duration;

use redis::{Connection, FromRedisValue};

use crate::process::{ProcessOptions, RedisProcess};

/// Connect/read/write timeout of the helper connections. Generous, because a timeout
/// here is a broken test, not a measurement.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// A set of independent `redis-server` processes (not a Redis Cluster: Redlock wants
/// independent nodes). Share it between tasks with `Arc<Cluster>`; every method takes
/// `&self`.
#[derive(Debug)]
pub struct Cluster {
    nodes: Vec<RedisProcess>,
}

impl Cluster {
    /// Starts `n` nodes on free loopback ports and waits until each is ready.
    ///
    /// Panics if `redis-server` is not installed (run `scripts/test`, which installs
    /// it) or a node does not come up within 10 s.
    pub fn start(n: usize) -> Cluster {
        Cluster::start_with_options(n, &ProcessOptions::new())
    }

    /// `start`, with extra `redis-server` arguments for every node (kept across
    /// restarts), e.g. `["--requirepass", "pw"]` or `--cluster-enabled yes` for the
    /// nodes of a [`RedisCluster`](crate::RedisCluster).
    pub fn start_with_args(n: usize, extra: &[&str]) -> Cluster {
        Cluster::start_with_options(n, &ProcessOptions::new().args(extra))
    }

    /// `start`, every node with `options` (e.g. [`Persistence::AofAlways`] for nodes
    /// that come back from a restart with their data); each node is named
    /// `redis node I`.
    ///
    /// [`Persistence::AofAlways`]: crate::Persistence::AofAlways
    pub fn start_with_options(n: usize, options: &ProcessOptions) -> Cluster {
        assert!(
            n > 0,
            "Cluster::start(0): a cluster needs at least one node"
        );
        let mut cluster = Cluster {
            nodes: Vec::with_capacity(n),
        };
        for index in 0..n {
            // Pushed one by one so that a panic below still drops (kills) the nodes
            // already running.
            let opts = options.clone().name(format!("redis node {index}"));
            match RedisProcess::start(opts) {
                Ok(node) => cluster.nodes.push(node),
                Err(e) => panic!("starting redis node {index}: {e}"),
            }
        }
        cluster
    }

    /// Number of nodes (running or not).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Always false: `start` refuses to build an empty cluster.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The process of node `i`, for what the helpers here do not cover.
    pub fn process(&self, i: usize) -> &RedisProcess {
        self.nodes.get(i).unwrap_or_else(|| {
            panic!(
                "node index {i} out of range: the cluster has {} nodes",
                self.nodes.len()
            )
        })
    }

    /// `redis://127.0.0.1:PORT` of every node, in index order.
    pub fn urls(&self) -> Vec<String> {
        (0..self.len()).map(|i| self.url(i)).collect()
    }

    /// `redis://127.0.0.1:PORT` of node `i`.
    pub fn url(&self, i: usize) -> String {
        self.process(i).url()
    }

    /// `redis://:PASSWORD@127.0.0.1:PORT` of node `i` (for `--requirepass` nodes).
    pub fn url_with_password(&self, i: usize, password: &str) -> String {
        format!("redis://:{password}@127.0.0.1:{}", self.port(i))
    }

    /// `redis://USER:PASSWORD@127.0.0.1:PORT` of node `i`, for an ACL user.
    pub fn url_for_user(&self, i: usize, user: &str, password: &str) -> String {
        format!("redis://{user}:{password}@127.0.0.1:{}", self.port(i))
    }

    /// The TCP port of node `i`; it stays the same across `restart`.
    pub fn port(&self, i: usize) -> u16 {
        self.process(i).port()
    }

    /// PID of the process serving node `i`; `None` after `kill` or if it died.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.process(i).pid()
    }

    // ----- fault controls -------------------------------------------------------

    /// SIGKILL node `i` and reap it. Its dataset is gone (without persistence). Also
    /// works on a paused node: SIGKILL is delivered to stopped processes.
    pub fn kill(&self, i: usize) {
        if let Err(e) = self.process(i).kill() {
            panic!("kill({i}): {e}");
        }
    }

    /// SIGSTOP node `i` and wait until the kernel reports it stopped. A paused node
    /// still accepts TCP connections (the kernel completes the handshake) but answers
    /// nothing: requests hang until the client's own timeout.
    pub fn pause(&self, i: usize) {
        if let Err(e) = self.process(i).pause() {
            panic!("pause({i}): {e}");
        }
    }

    /// SIGCONT node `i` and wait until it is no longer stopped. Requests that were
    /// sent while it was paused are then answered (if their clients still wait).
    pub fn resume(&self, i: usize) {
        if let Err(e) = self.process(i).resume() {
            panic!("resume({i}): {e}");
        }
    }

    /// Start node `i` again on the same port and wait until it is ready: with an
    /// empty dataset (or from its AOF, with `Persistence::AofAlways`). If it is still
    /// running (or paused) it is killed first, so this is also "crash and come back".
    pub fn restart(&self, i: usize) {
        if let Err(e) = self.process(i).restart() {
            panic!("restart({i}): {e}");
        }
    }

    /// Whether node `i` has a live process (a paused node counts as running).
    pub fn is_running(&self, i: usize) -> bool {
        self.process(i).is_running()
    }

    /// Whether node `i` is paused by `pause` and not yet resumed.
    pub fn is_paused(&self, i: usize) -> bool {
        self.process(i).is_paused()
    }

    // ----- state helpers ----------------------------------------------------------

    /// A fresh synchronous connection to node `i`, with 5 s connect/read/write
    /// timeouts (authenticated with its `--requirepass`, if any). For commands the
    /// other helpers do not cover.
    pub fn connection(&self, i: usize) -> Connection {
        self.connect(i, "connection")
    }

    /// All keys on node `i`, sorted.
    pub fn keys(&self, i: usize) -> Vec<String> {
        self.keys_matching(i, "*")
    }

    /// Keys on node `i` matching the glob `pattern` (SCAN MATCH), sorted.
    pub fn keys_matching(&self, i: usize, pattern: &str) -> Vec<String> {
        let mut con = self.connect(i, "keys");
        let mut keys = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, batch): (u64, Vec<String>) = self.query(
                i,
                &mut con,
                redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(pattern)
                    .arg("COUNT")
                    .arg(1000),
                "SCAN",
            );
            keys.extend(batch);
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        // SCAN may return a key more than once.
        keys.sort();
        keys.dedup();
        keys
    }

    /// `GET key` on node `i`.
    pub fn get(&self, i: usize, key: &str) -> Option<String> {
        let mut con = self.connect(i, "get");
        self.query(i, &mut con, redis::cmd("GET").arg(key), "GET")
    }

    /// `PTTL key` on node `i`: milliseconds left, -1 without expiry, -2 if the key
    /// does not exist.
    pub fn pttl(&self, i: usize, key: &str) -> i64 {
        let mut con = self.connect(i, "pttl");
        self.query(i, &mut con, redis::cmd("PTTL").arg(key), "PTTL")
    }

    /// `SET key value PX px_ms` on node `i`, as another client would write a lock;
    /// `px_ms == 0` sets the key without expiry.
    pub fn set(&self, i: usize, key: &str, value: &str, px_ms: u64) {
        let mut con = self.connect(i, "set");
        let mut cmd = redis::cmd("SET");
        cmd.arg(key).arg(value);
        if px_ms > 0 {
            cmd.arg("PX").arg(px_ms);
        }
        let () = self.query(i, &mut con, &cmd, "SET");
    }

    /// How many times `command` (e.g. `"pexpire"`, `"evalsha"`) ran on node `i` since
    /// start or the last `reset_stats`, from `INFO commandstats`. Commands run by Lua
    /// scripts (`redis.call`) are counted too. 0 if it never ran.
    pub fn command_calls(&self, i: usize, command: &str) -> u64 {
        let mut con = self.connect(i, "command_calls");
        let info: String = self.query(
            i,
            &mut con,
            redis::cmd("INFO").arg("commandstats"),
            "INFO commandstats",
        );
        let prefix = format!("cmdstat_{}:", command.to_ascii_lowercase());
        for line in info.lines() {
            let Some(fields) = line.trim().strip_prefix(&prefix) else {
                continue;
            };
            // cmdstat_pexpire:calls=3,usec=12,usec_per_call=4.00,rejected_calls=0,failed_calls=0
            let calls = fields
                .split(',')
                .find_map(|field| field.strip_prefix("calls="))
                .and_then(|n| n.parse().ok());
            match calls {
                Some(calls) => return calls,
                None => panic!(
                    "command_calls({i}, {command:?}): cannot parse {line:?}{}",
                    self.process(i).log_tail_msg()
                ),
            }
        }
        0
    }

    /// `CONFIG RESETSTAT` on node `i`: zeroes `command_calls`.
    pub fn reset_stats(&self, i: usize) {
        let mut con = self.connect(i, "reset_stats");
        let () = self.query(
            i,
            &mut con,
            redis::cmd("CONFIG").arg("RESETSTAT"),
            "CONFIG RESETSTAT",
        );
    }

    /// Number of subscribers of `channel` on node `i` (`PUBSUB NUMSUB`), to see that
    /// waiters subscribe, share a connection, and unsubscribe.
    pub fn numsub(&self, i: usize, channel: &str) -> u64 {
        let mut con = self.connect(i, "numsub");
        let (_channel, count): (String, u64) = self.query(
            i,
            &mut con,
            redis::cmd("PUBSUB").arg("NUMSUB").arg(channel),
            "PUBSUB NUMSUB",
        );
        count
    }

    /// `FLUSHALL` on node `i`.
    pub fn flushall(&self, i: usize) {
        let mut con = self.connect(i, "flushall");
        let () = self.query(i, &mut con, &redis::cmd("FLUSHALL"), "FLUSHALL");
    }

    /// Runs `redis-cli -p PORT ARGS…` against node `i` and returns its stdout, for
    /// what is easiest said in redis-cli's words (`--scan --pattern …`, ACL rules).
    /// Panics, quoting its output, if redis-cli fails.
    pub fn redis_cli(&self, i: usize, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port(i).to_string()])
            .args(args)
            .output()
            .unwrap_or_else(|e| {
                panic!("running redis-cli (is it installed? scripts/test installs it): {e}")
            });
        assert!(
            out.status.success(),
            "redis-cli {args:?} on node {i} failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Panics, listing them per node, if any running node still has keys matching
    /// `prefix_or_pattern`. Without glob characters (`*?[`) the argument is a key
    /// prefix (`"job:"` checks `job:*`); otherwise it is used as the glob pattern.
    /// Killed nodes are skipped (they have no data); a paused node is an error, since
    /// its keys cannot be read.
    pub fn assert_no_keys_left(&self, prefix_or_pattern: &str) {
        let pattern = if prefix_or_pattern.contains(['*', '?', '[']) {
            prefix_or_pattern.to_owned()
        } else {
            format!("{prefix_or_pattern}*")
        };
        let mut report = String::new();
        for i in 0..self.len() {
            if !self.is_running(i) {
                continue;
            }
            let left = self.keys_matching(i, &pattern);
            if !left.is_empty() {
                let _ = writeln!(report, "  node {i} ({}): {left:?}", self.url(i));
            }
        }
        assert!(
            report.is_empty(),
            "keys matching {pattern:?} left behind:\n{report}"
        );
    }

    /// Everything node `i` logged (all its runs, including restarts), plus anything
    /// it printed on stdout/stderr before its log file was open.
    pub fn log(&self, i: usize) -> String {
        self.process(i).log()
    }

    /// Every node's log, headed by its index and port, for failure messages.
    pub fn logs(&self) -> String {
        let mut all = String::new();
        for (i, node) in self.nodes.iter().enumerate() {
            let _ = writeln!(all, "--- redis node {i} (port {}):", node.port());
            all.push_str(&node.log());
        }
        all
    }

    fn connect(&self, i: usize, what: &str) -> Connection {
        self.process(i)
            .connect(IO_TIMEOUT)
            .unwrap_or_else(|e| panic!("{what}({i}): {e}"))
    }

    fn query<T: FromRedisValue>(
        &self,
        i: usize,
        con: &mut Connection,
        cmd: &redis::Cmd,
        what: &str,
    ) -> T {
        match cmd.query(con) {
            Ok(value) => value,
            Err(e) => panic!(
                "{what} on redis node {i} (port {}) failed: {e}{}",
                self.port(i),
                self.process(i).log_tail_msg()
            ),
        }
    }
}
