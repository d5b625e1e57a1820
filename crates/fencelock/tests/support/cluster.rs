//! `Cluster`: a handful of real `redis-server` processes for integration tests.
//!
//! Each node is a `redis-server` we spawn ourselves, bound to 127.0.0.1 only, with
//! persistence off and its own temporary directory (working dir and log file). All
//! fault controls act on the PID of the process we spawned, never on anything else
//! on the machine, and `Drop` kills and reaps every node so no server outlives a
//! test.
//!
//! The helpers that read server state (`keys`, `get`, `pttl`, `command_calls` …)
//! use a plain synchronous redis-rs connection per call: they are for assertions,
//! they must not share anything with the library under test, and blocking a test
//! thread for a loopback round trip is harmless.
//!
//! Every method panics on failure (these are tests) and every panic message
//! quotes the tail of the node's server log, which is usually where the reason is.

use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use redis::{Connection, FromRedisValue};
use tempfile::TempDir;

/// The server binary, looked up on `PATH`.
const REDIS_SERVER: &str = "redis-server";
/// How long a node may take to answer PING after being spawned.
const START_DEADLINE: Duration = Duration::from_secs(10);
/// How many fresh ports to try when a port picked as free was taken meanwhile.
const START_ATTEMPTS: usize = 5;
/// Connect/read/write timeout of the helper connections. Generous, because a
/// timeout here is a broken test, not a measurement.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// How long SIGSTOP / SIGCONT may take to show in `/proc/PID/stat`.
const SIGNAL_DEADLINE: Duration = Duration::from_secs(2);
/// Lines of server log quoted in panic messages.
const LOG_TAIL_LINES: usize = 30;

/// A set of independent `redis-server` processes (not a Redis Cluster: Redlock
/// wants independent nodes). Share it between tasks with `Arc<Cluster>`; every
/// method takes `&self`.
pub struct Cluster {
    nodes: Vec<Node>,
}

/// One server: a fixed port (kept across restarts) and its own directory.
struct Node {
    index: usize,
    port: u16,
    /// Extra `redis-server` arguments (kept across restarts).
    extra: Vec<String>,
    dir: TempDir,
    proc: Mutex<Proc>,
}

/// The process currently serving a node, if any.
struct Proc {
    /// `None` once killed (and reaped) and before a restart.
    child: Option<Child>,
    /// Set by `pause`, cleared by `resume`, `kill`, `restart`.
    paused: bool,
}

/// Why a spawn did not give us a server answering PING.
struct LaunchError {
    /// The server could not bind its port: someone took it after we picked it.
    port_in_use: bool,
    message: String,
}

impl Cluster {
    /// Starts `n` nodes on free loopback ports and waits until each answers PING
    /// (identifying itself by our child's PID, so a stranger on a reused port is
    /// not mistaken for our node).
    ///
    /// Panics if `redis-server` is not installed (run `scripts/test`, which
    /// installs it) or a node does not come up within 10 s.
    pub fn start(n: usize) -> Cluster {
        Cluster::start_with_args(n, &[])
    }

    /// `start`, with extra `redis-server` arguments for every node (kept across
    /// restarts), e.g. `--cluster-enabled yes` for the nodes of a Redis Cluster
    /// (`support::redis_cluster`).
    pub fn start_with_args(n: usize, extra: &[&str]) -> Cluster {
        assert!(
            n > 0,
            "Cluster::start(0): a cluster needs at least one node"
        );
        let mut cluster = Cluster {
            nodes: Vec::with_capacity(n),
        };
        for index in 0..n {
            // Pushed one by one so that a panic below still drops (kills) the
            // nodes already running.
            let node = Node::start_fresh(index, extra);
            cluster.nodes.push(node);
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

    /// `redis://127.0.0.1:PORT` of every node, in index order.
    pub fn urls(&self) -> Vec<String> {
        (0..self.len()).map(|i| self.url(i)).collect()
    }

    /// `redis://127.0.0.1:PORT` of node `i`.
    pub fn url(&self, i: usize) -> String {
        format!("redis://127.0.0.1:{}", self.node(i).port)
    }

    /// The TCP port of node `i`; it stays the same across `restart`.
    pub fn port(&self, i: usize) -> u16 {
        self.node(i).port
    }

    /// PID of the process serving node `i`; `None` after `kill` or if it died.
    pub fn pid(&self, i: usize) -> Option<u32> {
        let node = self.node(i);
        let mut proc = node.lock();
        if node.is_alive(&mut proc) {
            proc.child.as_ref().map(Child::id)
        } else {
            None
        }
    }

    // ----- fault controls -------------------------------------------------------

    /// SIGKILL node `i` and reap it. Its dataset is gone (no persistence). Also
    /// works on a paused node: SIGKILL is delivered to stopped processes.
    pub fn kill(&self, i: usize) {
        let node = self.node(i);
        let mut proc = node.lock();
        let Some(mut child) = proc.child.take() else {
            panic!("kill({i}): node {i} is not running{}", node.log_tail_msg());
        };
        proc.paused = false;
        if let Err(e) = kill_and_reap(&mut child) {
            panic!("kill({i}): {e}{}", node.log_tail_msg());
        }
    }

    /// SIGSTOP node `i` and wait until the kernel reports it stopped. A paused
    /// node still accepts TCP connections (the kernel completes the handshake)
    /// but answers nothing: requests hang until the client's own timeout.
    pub fn pause(&self, i: usize) {
        let node = self.node(i);
        let mut proc = node.lock();
        let pid = node.running_pid(&mut proc, "pause");
        node.signal(pid, Signal::SIGSTOP, "pause");
        node.wait_proc_state(pid, true, "pause");
        proc.paused = true;
    }

    /// SIGCONT node `i` and wait until it is no longer stopped. Requests that
    /// were sent while it was paused are then answered (if their clients still
    /// wait).
    pub fn resume(&self, i: usize) {
        let node = self.node(i);
        let mut proc = node.lock();
        let pid = node.running_pid(&mut proc, "resume");
        node.signal(pid, Signal::SIGCONT, "resume");
        node.wait_proc_state(pid, false, "resume");
        proc.paused = false;
    }

    /// Start node `i` again on the same port with an empty dataset, and wait for
    /// PING. If it is still running (or paused) it is killed first, so this is
    /// also "crash and come back".
    pub fn restart(&self, i: usize) {
        let node = self.node(i);
        let mut proc = node.lock();
        if let Some(mut child) = proc.child.take()
            && let Err(e) = kill_and_reap(&mut child)
        {
            panic!(
                "restart({i}): killing the old process: {e}{}",
                node.log_tail_msg()
            );
        }
        proc.paused = false;
        proc.child = Some(node.start_on_own_port());
    }

    /// Whether node `i` has a live process (a paused node counts as running).
    pub fn is_running(&self, i: usize) -> bool {
        let node = self.node(i);
        let mut proc = node.lock();
        node.is_alive(&mut proc)
    }

    /// Whether node `i` is paused by `pause` and not yet resumed.
    pub fn is_paused(&self, i: usize) -> bool {
        self.node(i).lock().paused
    }

    // ----- state helpers ----------------------------------------------------------

    /// A fresh synchronous connection to node `i`, with 5 s connect/read/write
    /// timeouts. For commands the other helpers do not cover.
    pub fn connection(&self, i: usize) -> Connection {
        self.node(i).connect("connection")
    }

    /// All keys on node `i`, sorted.
    pub fn keys(&self, i: usize) -> Vec<String> {
        self.keys_matching(i, "*")
    }

    /// Keys on node `i` matching the glob `pattern` (SCAN MATCH), sorted.
    pub fn keys_matching(&self, i: usize, pattern: &str) -> Vec<String> {
        let node = self.node(i);
        let mut con = node.connect("keys");
        let mut keys = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, batch): (u64, Vec<String>) = node.query(
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
        let node = self.node(i);
        let mut con = node.connect("get");
        node.query(&mut con, redis::cmd("GET").arg(key), "GET")
    }

    /// `PTTL key` on node `i`: milliseconds left, -1 without expiry, -2 if the
    /// key does not exist.
    pub fn pttl(&self, i: usize, key: &str) -> i64 {
        let node = self.node(i);
        let mut con = node.connect("pttl");
        node.query(&mut con, redis::cmd("PTTL").arg(key), "PTTL")
    }

    /// `SET key value PX px_ms` on node `i`, as another client would write a
    /// lock; `px_ms == 0` sets the key without expiry.
    pub fn set(&self, i: usize, key: &str, value: &str, px_ms: u64) {
        let node = self.node(i);
        let mut con = node.connect("set");
        let mut cmd = redis::cmd("SET");
        cmd.arg(key).arg(value);
        if px_ms > 0 {
            cmd.arg("PX").arg(px_ms);
        }
        let _: () = node.query(&mut con, &cmd, "SET");
    }

    /// How many times `command` (e.g. `"pexpire"`, `"evalsha"`) ran on node `i`
    /// since start or the last `reset_stats`, from `INFO commandstats`. Commands
    /// run by Lua scripts (`redis.call`) are counted too. 0 if it never ran.
    pub fn command_calls(&self, i: usize, command: &str) -> u64 {
        let node = self.node(i);
        let mut con = node.connect("command_calls");
        let info: String = node.query(
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
                    node.log_tail_msg()
                ),
            }
        }
        0
    }

    /// `CONFIG RESETSTAT` on node `i`: zeroes `command_calls`.
    pub fn reset_stats(&self, i: usize) {
        let node = self.node(i);
        let mut con = node.connect("reset_stats");
        let _: () = node.query(
            &mut con,
            redis::cmd("CONFIG").arg("RESETSTAT"),
            "CONFIG RESETSTAT",
        );
    }

    /// Number of subscribers of `channel` on node `i` (`PUBSUB NUMSUB`), to see
    /// that waiters subscribe, share a connection, and unsubscribe.
    pub fn numsub(&self, i: usize, channel: &str) -> u64 {
        let node = self.node(i);
        let mut con = node.connect("numsub");
        let (_channel, count): (String, u64) = node.query(
            &mut con,
            redis::cmd("PUBSUB").arg("NUMSUB").arg(channel),
            "PUBSUB NUMSUB",
        );
        count
    }

    /// `FLUSHALL` on node `i`.
    pub fn flushall(&self, i: usize) {
        let node = self.node(i);
        let mut con = node.connect("flushall");
        let _: () = node.query(&mut con, &redis::cmd("FLUSHALL"), "FLUSHALL");
    }

    /// Panics, listing them per node, if any running node still has keys matching
    /// `prefix_or_pattern`. Without glob characters (`*?[`) the argument is a key
    /// prefix (`"job:"` checks `job:*`); otherwise it is used as the glob pattern.
    /// Killed nodes are skipped (they have no data); a paused node is an error,
    /// since its keys cannot be read.
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

    /// Everything node `i` logged (all its runs, including restarts), plus
    /// anything it printed on stdout/stderr before its log file was open.
    pub fn log(&self, i: usize) -> String {
        self.node(i).log()
    }

    /// The node, or a panic naming the valid range.
    fn node(&self, i: usize) -> &Node {
        self.nodes.get(i).unwrap_or_else(|| {
            panic!(
                "node index {i} out of range: the cluster has {} nodes",
                self.nodes.len()
            )
        })
    }
}

impl Drop for Cluster {
    /// Kill (SIGKILL, which also ends a stopped process) and reap every node. If
    /// the test is failing, print each node's log tail first: the temporary
    /// directories holding the logs are deleted right after.
    fn drop(&mut self) {
        let panicking = thread::panicking();
        for node in &self.nodes {
            let mut proc = node.lock();
            if let Some(mut child) = proc.child.take() {
                // Errors are ignored: nothing useful to do in Drop, and a panic
                // here while unwinding would abort the whole test binary.
                let _ = kill_and_reap(&mut child);
            }
            proc.paused = false;
            if panicking {
                eprintln!(
                    "--- redis node {} (port {}) log tail ---\n{}",
                    node.index,
                    node.port,
                    tail(&node.log(), LOG_TAIL_LINES)
                );
            }
        }
    }
}

impl Node {
    /// Spawns a node on a port that was free a moment ago; if someone takes the
    /// port before the server binds it, tries again with another port.
    fn start_fresh(index: usize, extra: &[&str]) -> Node {
        let extra: Vec<String> = extra.iter().map(|a| (*a).to_string()).collect();
        let dir = tempfile::Builder::new()
            .prefix(&format!("fencelock-redis-{index}-"))
            .tempdir()
            .expect("creating a temporary directory for a redis node");
        let mut errors = Vec::new();
        for _ in 0..START_ATTEMPTS {
            let port = free_port();
            match launch(dir.path(), port, &extra) {
                Ok(child) => {
                    return Node {
                        index,
                        port,
                        extra,
                        dir,
                        proc: Mutex::new(Proc {
                            child: Some(child),
                            paused: false,
                        }),
                    };
                }
                Err(e) if e.port_in_use => errors.push(format!("port {port}: {}", e.message)),
                Err(e) => panic!("starting redis node {index} on port {port}: {}", e.message),
            }
        }
        panic!(
            "starting redis node {index}: every port tried was taken:\n{}",
            errors.join("\n")
        );
    }

    /// Restarts this node on its own port. Redis binds with SO_REUSEADDR, so the
    /// port of a killed server is free at once; a brief retry covers the rare
    /// case of another process grabbing it in between.
    fn start_on_own_port(&self) -> Child {
        remove_data_files(self.dir.path());
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            match launch(self.dir.path(), self.port, &self.extra) {
                Ok(child) => return child,
                Err(e) if e.port_in_use && Instant::now() < deadline => {
                    thread::sleep(Duration::from_millis(100));
                }
                Err(e) => panic!(
                    "restarting redis node {} on port {}: {}",
                    self.index, self.port, e.message
                ),
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, Proc> {
        // A panic while holding the lock leaves the state usable; keep going so
        // Drop can still kill the process.
        self.proc
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn is_alive(&self, proc: &mut Proc) -> bool {
        match proc.child.as_mut().map(Child::try_wait) {
            None => false,
            Some(Ok(None)) => true,
            Some(Ok(Some(_status))) => false,
            Some(Err(e)) => panic!("waiting on redis node {}: {e}", self.index),
        }
    }

    /// PID of the running process, or a panic explaining that there is none.
    fn running_pid(&self, proc: &mut Proc, what: &str) -> Pid {
        if !self.is_alive(proc) {
            panic!(
                "{what}({}): node {} is not running{}",
                self.index,
                self.index,
                self.log_tail_msg()
            );
        }
        let child = proc.child.as_ref().expect("is_alive checked the child");
        Pid::from_raw(i32::try_from(child.id()).expect("PIDs fit in i32"))
    }

    fn signal(&self, pid: Pid, sig: Signal, what: &str) {
        if let Err(e) = signal::kill(pid, sig) {
            panic!(
                "{what}({}): sending {sig} to PID {pid}: {e}{}",
                self.index,
                self.log_tail_msg()
            );
        }
    }

    /// Signals are asynchronous; wait until `/proc` shows the process stopped
    /// (state `T`) or running again, so the caller's next step sees the fault.
    fn wait_proc_state(&self, pid: Pid, stopped: bool, what: &str) {
        let deadline = Instant::now() + SIGNAL_DEADLINE;
        loop {
            let state = proc_state(pid);
            if state.is_some_and(|s| (s == 'T') == stopped) {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "{what}({}): PID {pid} still in state {state:?} after {SIGNAL_DEADLINE:?}{}",
                    self.index,
                    self.log_tail_msg()
                );
            }
            thread::sleep(Duration::from_millis(1));
        }
    }

    /// A connection with timeouts; refuses up front if the node is down or
    /// paused, rather than failing after a timeout with a vaguer error.
    fn connect(&self, what: &str) -> Connection {
        {
            let mut proc = self.lock();
            if !self.is_alive(&mut proc) {
                panic!(
                    "{what}({}): node {} is not running{}",
                    self.index,
                    self.index,
                    self.log_tail_msg()
                );
            }
            if proc.paused {
                panic!(
                    "{what}({}): node {} is paused; resume it before reading its state",
                    self.index, self.index
                );
            }
        }
        match connect(self.port, IO_TIMEOUT) {
            Ok(con) => con,
            Err(e) => panic!(
                "{what}({}): connecting to 127.0.0.1:{}: {e}{}",
                self.index,
                self.port,
                self.log_tail_msg()
            ),
        }
    }

    fn query<T: FromRedisValue>(&self, con: &mut Connection, cmd: &redis::Cmd, what: &str) -> T {
        match cmd.query(con) {
            Ok(value) => value,
            Err(e) => panic!(
                "{what} on redis node {} (port {}) failed: {e}{}",
                self.index,
                self.port,
                self.log_tail_msg()
            ),
        }
    }

    fn log(&self) -> String {
        read_logs(self.dir.path())
    }

    /// "\n--- server log tail ---\n…", to append to panic messages.
    fn log_tail_msg(&self) -> String {
        format!(
            "\n--- redis node {} (port {}) log tail ---\n{}",
            self.index,
            self.port,
            tail(&self.log(), LOG_TAIL_LINES)
        )
    }
}

/// Spawns `redis-server` in `dir` on `port` and waits until it answers PING as
/// itself. On failure the process is killed and reaped before returning.
fn launch(dir: &Path, port: u16, extra: &[String]) -> Result<Child, LaunchError> {
    let log_file = dir.join("redis.log");
    // Output before the log file is open (bad arguments, a missing library)
    // goes to stdout/stderr; keep it next to the log, appended across restarts.
    let stdio = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("stdio.log"))
        .expect("opening the redis node's stdio.log");
    let stdio_err = stdio.try_clone().expect("duplicating the stdio.log handle");
    let spawned = Command::new(REDIS_SERVER)
        .arg("--port")
        .arg(port.to_string())
        .args(["--bind", "127.0.0.1"])
        .args(["--protected-mode", "yes"])
        .args(["--daemonize", "no"])
        // No persistence: a killed or restarted node comes back empty, which is
        // exactly the failure mode the fencing-counter design must survive.
        .args(["--save", ""])
        .args(["--appendonly", "no"])
        .arg("--dir")
        .arg(dir)
        .arg("--logfile")
        .arg(&log_file)
        .args(["--loglevel", "notice"])
        // DEBUG SLEEP and friends, from loopback only, for slow-node tests.
        .args(["--enable-debug-command", "local"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::from(stdio))
        .stderr(Stdio::from(stdio_err))
        .current_dir(dir)
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) if e.kind() == ErrorKind::NotFound => panic!(
            "`{REDIS_SERVER}` is not installed (not found on PATH). The integration \
             tests need real Redis servers: run `scripts/test`, which installs \
             redis-server (apt-get install redis-server) and then runs the tests."
        ),
        Err(e) => panic!("spawning {REDIS_SERVER}: {e}"),
    };

    let deadline = Instant::now() + START_DEADLINE;
    let our_pid = child.id();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                let log = read_logs(dir);
                return Err(LaunchError {
                    port_in_use: log.contains("Address already in use"),
                    message: format!(
                        "redis-server exited during startup ({status})\n--- log ---\n{}",
                        tail(&log, LOG_TAIL_LINES)
                    ),
                });
            }
            Ok(None) => {}
            Err(e) => panic!("waiting on redis-server PID {our_pid}: {e}"),
        }
        let last_error = match ping_pid(port) {
            // Someone else's server may answer on a port we thought free; ours
            // will then fail to bind and exit, which the next round sees.
            Ok(pid) if pid == our_pid => return Ok(child),
            Ok(pid) => format!("port {port} is answered by PID {pid}, not ours"),
            Err(e) => e.to_string(),
        };
        if Instant::now() > deadline {
            let _ = kill_and_reap(&mut child);
            let log = read_logs(dir);
            return Err(LaunchError {
                port_in_use: log.contains("Address already in use"),
                message: format!(
                    "redis-server (PID {our_pid}) did not answer PING within \
                     {START_DEADLINE:?}; last error: {last_error}\n--- log ---\n{}",
                    tail(&log, LOG_TAIL_LINES)
                ),
            });
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// PING the server on `port`, then ask for its PID (`INFO server`).
fn ping_pid(port: u16) -> redis::RedisResult<u32> {
    let mut con = connect(port, Duration::from_millis(500))?;
    let pong: String = redis::cmd("PING").query(&mut con)?;
    if pong != "PONG" {
        return Err(io::Error::other(format!("PING answered {pong:?}")).into());
    }
    let info: String = redis::cmd("INFO").arg("server").query(&mut con)?;
    info.lines()
        .find_map(|l| l.trim().strip_prefix("process_id:"))
        .and_then(|pid| pid.parse().ok())
        .ok_or_else(|| io::Error::other("INFO server has no process_id").into())
}

fn connect(port: u16, timeout: Duration) -> redis::RedisResult<Connection> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}"))?;
    let con = client.get_connection_with_timeout(timeout)?;
    con.set_read_timeout(Some(timeout))?;
    con.set_write_timeout(Some(timeout))?;
    Ok(con)
}

/// A port the kernel considers free right now. Another process may take it
/// before redis binds it; `launch` notices and `start_fresh` retries.
fn free_port() -> u16 {
    let listener =
        TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0 to find a free port");
    listener
        .local_addr()
        .expect("local address of a bound listener")
        .port()
}

/// SIGKILL works on stopped (SIGSTOPped) processes too; `wait` reaps it so no
/// zombie is left and the PID disappears from `/proc`.
fn kill_and_reap(child: &mut Child) -> io::Result<()> {
    match child.kill() {
        Ok(()) => {}
        // Already exited (and reaped by an earlier try_wait): nothing to kill.
        Err(e) if e.kind() == ErrorKind::InvalidInput => {}
        Err(e) => return Err(e),
    }
    child.wait().map(|_status| ())
}

/// The state letter of `/proc/PID/stat` (`R`, `S`, `T` stopped, `Z` zombie…).
fn proc_state(pid: Pid) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "PID (comm) S …": comm may contain spaces and parentheses, so split after
    // the last ')'.
    let after = &stat[stat.rfind(')')? + 1..];
    after.trim_start().chars().next()
}

/// Persistence is off, but make "empty after restart" independent of that.
fn remove_data_files(dir: &Path) {
    let _ = fs::remove_file(dir.join("dump.rdb"));
    let _ = fs::remove_dir_all(dir.join("appendonlydir"));
}

fn read_logs(dir: &Path) -> String {
    let read = |name: &str| -> String {
        let path: PathBuf = dir.join(name);
        match File::open(&path).and_then(io::read_to_string) {
            Ok(text) => text,
            Err(e) if e.kind() == ErrorKind::NotFound => String::new(),
            Err(e) => format!("<cannot read {}: {e}>\n", path.display()),
        }
    };
    let mut log = read("redis.log");
    let stdio = read("stdio.log");
    if !stdio.trim().is_empty() {
        log.push_str("--- stdout/stderr ---\n");
        log.push_str(&stdio);
    }
    log
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    if all.is_empty() {
        return "<empty log>".to_owned();
    }
    all[all.len().saturating_sub(lines)..].join("\n")
}
