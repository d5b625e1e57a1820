//! Test support: real `redis-server` processes, the `fencelock` binary, and waiting
//! with generous timeouts (only to avoid hangs: no test asserts on timing).
//!
//! Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

pub mod previous;
pub mod scenarios;
pub mod tls;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tempfile::TempDir;

/// How long anything may take before a test gives up (a hang guard, not a threshold).
pub const PATIENCE: Duration = Duration::from_secs(30);

/// N independent `redis-server` processes on free loopback ports, killed on drop.
pub struct Cluster {
    nodes: Vec<Node>,
    dir: TempDir,
}

struct Node {
    child: Child,
    port: u16,
    log: PathBuf,
    paused: bool,
}

impl Cluster {
    /// Starts `n` nodes without persistence and waits until each answers PING.
    pub fn start(n: usize) -> Cluster {
        Cluster::start_with(n, &[])
    }

    /// As [`Cluster::start`], with extra `redis-server` arguments for every node
    /// (e.g. `["--requirepass", "s3cret"]`).
    pub fn start_with(n: usize, extra: &[&str]) -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut nodes = Vec::new();
        for i in 0..n {
            nodes.push(start_node(dir.path(), i, extra));
        }
        Cluster { nodes, dir }
    }

    /// Three primaries joined into one Redis Cluster (`redis-cli --cluster create`, no
    /// replicas); returns once every node says `cluster_state:ok`. Name it with
    /// [`Cluster::cluster_url`].
    pub fn start_redis_cluster() -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut nodes = Vec::new();
        for i in 0..3 {
            let conf = format!("nodes-{i}.conf");
            nodes.push(start_node(
                dir.path(),
                i,
                &["--cluster-enabled", "yes", "--cluster-config-file", &conf],
            ));
        }
        let cluster = Cluster { nodes, dir };
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(
                cluster
                    .nodes
                    .iter()
                    .map(|n| format!("127.0.0.1:{}", n.port)),
            )
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli is installed");
        assert!(out.status.success(), "redis-cli --cluster create: {out:?}");
        let deadline = Instant::now() + PATIENCE;
        while !(0..3).all(|i| {
            cluster
                .command(i, &["CLUSTER", "INFO"])
                .contains("cluster_state:ok")
        }) {
            assert!(
                Instant::now() < deadline,
                "the cluster never formed\n{}",
                cluster.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        cluster
    }

    /// `redis+cluster://127.0.0.1:P1,127.0.0.1:P2,…`: every node as a seed.
    pub fn cluster_url(&self) -> String {
        let seeds: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        format!("redis+cluster://{}", seeds.join(","))
    }

    /// `redis://127.0.0.1:PORT` of every node.
    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("redis://127.0.0.1:{}", n.port))
            .collect()
    }

    /// The URL of one node with a password.
    pub fn url_with_password(&self, i: usize, password: &str) -> String {
        format!("redis://:{password}@127.0.0.1:{}", self.nodes[i].port)
    }

    /// Runs one command on node `i` with `redis-cli` and returns its output.
    pub fn command(&self, i: usize, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &self.nodes[i].port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli is installed");
        assert!(out.status.success(), "redis-cli {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The URL of node `i` for an ACL user (`redis://user:password@…`).
    pub fn url_for_user(&self, i: usize, user: &str, password: &str) -> String {
        format!("redis://{user}:{password}@127.0.0.1:{}", self.nodes[i].port)
    }

    /// Freezes node `i` (SIGSTOP): it keeps its connections but answers nothing.
    pub fn pause(&mut self, i: usize) {
        signal(&self.nodes[i].child, Signal::SIGSTOP);
        self.nodes[i].paused = true;
    }

    /// Thaws node `i` (SIGCONT).
    pub fn resume(&mut self, i: usize) {
        signal(&self.nodes[i].child, Signal::SIGCONT);
        self.nodes[i].paused = false;
    }

    /// Kills node `i` (SIGKILL), waits `down`, and starts a new, empty one on the same
    /// port: a node that lost everything, fencing counters included, as after a crash
    /// without persistence. Redlock stays safe only if such a node stays down for the
    /// longest TTL in use (a delayed restart), so callers pass at least that.
    pub fn restart_empty(&mut self, i: usize, down: Duration) {
        let node = &mut self.nodes[i];
        let _ = node.child.kill();
        let _ = node.child.wait();
        std::thread::sleep(down);
        let port = node.port;
        let log = self.dir.path().join(format!("redis-{i}-restarted.log"));
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(&log)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        *node = Node {
            child,
            port,
            log,
            paused: false,
        };
        let deadline = Instant::now() + PATIENCE;
        while !answers_ping(port) {
            assert!(Instant::now() < deadline, "node {i} did not restart");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Every node's log, for failure messages.
    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| {
                format!(
                    "--- {}:\n{}",
                    n.port,
                    std::fs::read_to_string(&n.log).unwrap_or_default()
                )
            })
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if n.paused {
                signal(&n.child, Signal::SIGCONT);
            }
            let _ = n.child.kill();
            let _ = n.child.wait();
        }
        let _ = &self.dir;
    }
}

fn signal(child: &Child, sig: Signal) {
    kill(Pid::from_raw(child.id() as i32), sig).expect("signal redis-server");
}

fn start_node(dir: &Path, i: usize, extra: &[&str]) -> Node {
    // A free port can be taken by someone else before redis binds it: retry.
    let mut last_log = String::new();
    for attempt in 0..5 {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let log = dir.join(format!("redis-{i}-{attempt}.log"));
        let mut child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir)
            .arg("--logfile")
            .arg(&log)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            if answers_ping(port) {
                return Node {
                    child,
                    port,
                    log,
                    paused: false,
                };
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        last_log = std::fs::read_to_string(&log).unwrap_or_default();
    }
    panic!("redis-server did not start; last log:\n{last_log}");
}

/// Whether something on `port` answers PING (`+PONG`, or `-NOAUTH` with a password).
fn answers_ping(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(n) => buf[..n].starts_with(b"+PONG") || buf[..n].starts_with(b"-NOAUTH"),
        Err(_) => false,
    }
}

/// A `fencelock` command with a clean environment: no `FENCELOCK_*` from the caller,
/// and a private state directory so the default store is never the user's.
pub fn fencelock(state: &Path) -> Command {
    fencelock_at(Path::new(env!("CARGO_BIN_EXE_fencelock")), state)
}

/// As [`fencelock`], for the `fencelock` binary at `bin` (e.g. an earlier version's).
pub fn fencelock_at(bin: &Path, state: &Path) -> Command {
    let mut cmd = Command::new(bin);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("FENCELOCK_") {
            cmd.env_remove(&k);
        }
    }
    cmd.env("XDG_STATE_HOME", state)
        .env("HOME", state)
        .env_remove("RUST_LOG");
    cmd
}

/// `--store URL` for each URL.
pub fn store_args(urls: &[String]) -> Vec<String> {
    urls.iter()
        .flat_map(|u| ["--store".to_string(), u.clone()])
        .collect()
}

/// A finished `fencelock`: exit code, stdout, stderr.
#[derive(Debug)]
pub struct Finished {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    /// Panics, showing everything, unless the exit code is `code`.
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(self.code, Some(code), "unexpected exit: {self:#?}");
        self
    }

    /// Panics unless stderr is exactly one `fencelock: …` line (the error contract).
    pub fn expect_one_error_line(&self) -> &Self {
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "expected one stderr line: {self:#?}");
        assert!(lines[0].starts_with("fencelock: "), "{self:#?}");
        assert!(!self.stderr.contains("panicked"), "{self:#?}");
        self
    }
}

/// Runs `fencelock` with `args` to completion (bounded by [`PATIENCE`]).
pub fn run(state: &Path, args: &[&str]) -> Finished {
    let child = fencelock(state)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn fencelock");
    finish(child)
}

/// Waits for a spawned `fencelock` with piped output (bounded by [`PATIENCE`]).
pub fn finish(mut child: Child) -> Finished {
    let status = wait_bounded(&mut child);
    let mut stdout = String::new();
    let mut stderr = String::new();
    if let Some(mut o) = child.stdout.take() {
        let _ = o.read_to_string(&mut stdout);
    }
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut stderr);
    }
    Finished {
        code: status.code(),
        stdout,
        stderr,
    }
}

/// Waits for `child`, killing it and panicking after [`PATIENCE`].
pub fn wait_bounded(child: &mut Child) -> ExitStatus {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("process {} did not finish within {PATIENCE:?}", child.id());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Starts `fencelock` in the background; its stdout and stderr are piped.
pub fn spawn(state: &Path, args: &[&str]) -> Child {
    fencelock(state)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn fencelock")
}

/// Waits until `path` exists (bounded by [`PATIENCE`]).
pub fn wait_for_file(path: &Path) {
    let deadline = Instant::now() + PATIENCE;
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} did not appear within {PATIENCE:?}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Sends `sig` to a process.
pub fn send(child: &Child, sig: Signal) {
    kill(Pid::from_raw(child.id() as i32), sig).expect("signal");
}

/// Whether process `pid` still exists.
pub fn alive(pid: i32) -> bool {
    kill(Pid::from_raw(pid), None).is_ok()
}

/// The state letter of process `pid` from `/proc` (`T`: stopped, `Z`: zombie).
pub fn state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit(')').next()?.trim_start().chars().next()
}

/// The children of process `pid` (every thread's), from `/proc`.
fn children(pid: i32) -> Vec<i32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|c| {
            c.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<i32>>()
        })
        .collect()
}

/// Whether process `pid` is stopped: in state `T` — or waiting in state `D` for a child
/// that is stopped. A shell that starts commands with `vfork` (dash does) waits
/// uninterruptibly until its child calls `exec`; when a stop of the whole process group
/// lands between the two (likelier on a loaded machine), the shell shows `D`, not `T`,
/// and runs nothing until the group is continued.
pub fn is_stopped(pid: i32) -> bool {
    match state(pid) {
        Some('T') => true,
        Some('D') => children(pid).into_iter().any(|c| state(c) == Some('T')),
        _ => false,
    }
}

/// Waits until process `pid` is stopped (`stopped`) or running again (`!stopped`).
pub fn wait_stopped(pid: i32, stopped: bool) {
    let deadline = Instant::now() + PATIENCE;
    while is_stopped(pid) != stopped {
        assert!(
            Instant::now() < deadline,
            "process {pid} never {}: state {:?}",
            if stopped { "stopped" } else { "continued" },
            state(pid)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A `sqlite:///…/locks.db` URL in `dir`.
pub fn sqlite_url(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("locks.db").display())
}

/// A path as `&str` for argument lists (temp paths are UTF-8 here).
pub fn s(path: &Path) -> &str {
    path.to_str().expect("UTF-8 temp path")
}
