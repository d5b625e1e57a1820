//! One `redis-server` process the harness owns: start, SIGSTOP/SIGCONT, `kill -9`,
//! restart — optionally inside a network namespace, with AOF persistence, or under
//! the clock shim.
//!
//! Only the processes started here are ever signalled, by the pid we spawned.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::faults::clock::ClockShim;
use crate::faults::partition::Netns;

/// How a node keeps its data across a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persistence {
    /// `--save "" --appendonly no`: a restart comes back empty.
    None,
    /// `--appendonly yes --appendfsync always`: every write is on disk before the reply.
    AofAlways,
}

/// How to run one node.
#[derive(Debug, Clone, Default)]
pub struct NodeOptions {
    /// Persistence (default none).
    pub persistence: Option<Persistence>,
    /// Run inside this namespace (for partitions).
    pub netns: Option<Arc<Netns>>,
    /// Run under this clock shim (for clock jumps).
    pub clock: Option<Arc<ClockShim>>,
}

/// A `redis-server` the harness started.
#[derive(Debug)]
pub struct RedisNode {
    /// Index in the scenario (the resource node is `usize::MAX`).
    pub index: usize,
    dir: PathBuf,
    host: String,
    port: u16,
    opts: NodeOptions,
    child: Option<Child>,
}

impl RedisNode {
    /// Starts a node in `dir` and waits until it answers PING.
    ///
    /// # Errors
    ///
    /// When it cannot be spawned or does not answer within 5 s (with its log).
    pub fn start(index: usize, dir: &Path, opts: NodeOptions) -> Result<Self, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let host = opts
            .netns
            .as_ref()
            .map_or_else(|| "127.0.0.1".to_string(), |n| n.node_ip().to_string());
        let port = if opts.netns.is_some() {
            6379
        } else {
            free_port()?
        };
        let mut node = RedisNode {
            index,
            dir: dir.to_path_buf(),
            host,
            port,
            opts,
            child: None,
        };
        node.spawn()?;
        Ok(node)
    }

    fn spawn(&mut self) -> Result<(), String> {
        let log = self.dir.join("redis.log");
        let mut cmd = match &self.opts.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns.name(), "redis-server"]);
                c
            }
            None => Command::new("redis-server"),
        };
        cmd.arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", &self.host])
            // Inside a namespace the clients are not on loopback.
            .args(["--protected-mode", "no"])
            .args(["--save", ""])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(&log)
            .args(["--daemonize", "no"]);
        match self.opts.persistence.unwrap_or(Persistence::None) {
            Persistence::None => {
                cmd.args(["--appendonly", "no"]);
            }
            Persistence::AofAlways => {
                cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
            }
        }
        if let Some(shim) = &self.opts.clock {
            cmd.env("LD_PRELOAD", shim.library())
                .env(crate::faults::clock::OFFSET_FILE_ENV, shim.offset_file());
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start redis-server for node {}: {e}", self.index))?;
        self.child = Some(child);
        self.wait_ready()
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if let Some(c) = &mut self.child
                && let Ok(Some(status)) = c.try_wait()
            {
                return Err(format!(
                    "redis node {} exited at start ({status})\n{}",
                    self.index,
                    self.log_tail()
                ));
            }
            if ping(&self.host, self.port) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!(
            "redis node {} did not answer PING on {}:{} within 5 s\n{}",
            self.index,
            self.host,
            self.port,
            self.log_tail()
        ))
    }

    /// `redis://host:port`.
    pub fn url(&self) -> String {
        format!("redis://{}:{}", self.host, self.port)
    }

    /// `host:port`.
    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The namespace the node runs in, if any.
    pub fn netns(&self) -> Option<&Arc<Netns>> {
        self.opts.netns.as_ref()
    }

    /// The clock shim the node runs under, if any.
    pub fn clock(&self) -> Option<&Arc<ClockShim>> {
        self.opts.clock.as_ref()
    }

    fn pid(&self) -> Result<Pid, String> {
        let c = self
            .child
            .as_ref()
            .ok_or_else(|| format!("node {} is not running", self.index))?;
        Ok(Pid::from_raw(i32::try_from(c.id()).unwrap_or(i32::MAX)))
    }

    /// SIGSTOP: the node keeps its sockets but answers nothing.
    ///
    /// # Errors
    ///
    /// When the node is not running.
    pub fn pause(&self) -> Result<(), String> {
        kill(self.pid()?, Signal::SIGSTOP).map_err(|e| format!("SIGSTOP node {}: {e}", self.index))
    }

    /// SIGCONT.
    ///
    /// # Errors
    ///
    /// When the node is not running.
    pub fn resume(&self) -> Result<(), String> {
        kill(self.pid()?, Signal::SIGCONT).map_err(|e| format!("SIGCONT node {}: {e}", self.index))
    }

    /// `kill -9` and reap.
    pub fn crash(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the node again in the same directory: empty without persistence, from
    /// its AOF with it.
    ///
    /// # Errors
    ///
    /// As [`RedisNode::start`].
    pub fn restart(&mut self) -> Result<(), String> {
        self.crash();
        self.spawn()
    }

    /// A blocking connection (for the controller's probes).
    ///
    /// # Errors
    ///
    /// When the node does not accept within 1 s.
    pub fn connection(&self) -> Result<redis::Connection, String> {
        let client = redis::Client::open(self.url()).map_err(|e| e.to_string())?;
        let con = client
            .get_connection_with_timeout(Duration::from_secs(1))
            .map_err(|e| format!("node {}: {e}", self.index))?;
        con.set_read_timeout(Some(Duration::from_secs(2)))
            .map_err(|e| e.to_string())?;
        con.set_write_timeout(Some(Duration::from_secs(2)))
            .map_err(|e| e.to_string())?;
        Ok(con)
    }

    /// The value of `key` (None: absent or the node did not answer).
    pub fn get(&self, key: &str) -> Option<String> {
        let mut con = self.connection().ok()?;
        redis::cmd("GET").arg(key).query(&mut con).ok()?
    }

    /// The last lines of the server log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let from = lines.len().saturating_sub(15);
        format!(
            "--- redis node {} log tail ---\n{}",
            self.index,
            lines[from..].join("\n")
        )
    }
}

impl Drop for RedisNode {
    fn drop(&mut self) {
        // SIGKILL reaches a stopped process too; SIGCONT first only matters if the
        // kill fails, so a paused node is never left behind frozen.
        if let Ok(pid) = self.pid() {
            let _ = kill(pid, Signal::SIGCONT);
        }
        self.crash();
    }
}

/// A port that was free a moment ago on 127.0.0.1.
///
/// # Errors
///
/// When no port can be bound.
pub fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port: {e}"))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

/// One raw `PING`, so readiness does not depend on the client library.
fn ping(host: &str, port: u16) -> bool {
    let Ok(addr) = format!("{host}:{port}").parse() else {
        return false;
    };
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 7];
    s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}
