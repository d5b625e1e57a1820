//! One `redis-server` process the harness owns: start, SIGSTOP/SIGCONT, `kill -9`,
//! restart — optionally inside a network namespace, with AOF persistence, or under
//! the clock shim.
//!
//! The process itself is the workspace's one fixture, [`fencelock_testkit::RedisProcess`]
//! (free port, readiness, signals to the PID we spawned only, cleanup on drop); what
//! is chaos-only is here: the namespace and clock shim of a node, and the
//! `Result<_, String>` face the scenarios use.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub use fencelock_testkit::Persistence;
use fencelock_testkit::{ProcessOptions, RedisProcess};

use crate::faults::clock::ClockShim;
use crate::faults::partition::Netns;

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
    /// Index in the scenario (the resource node is 99).
    pub index: usize,
    opts: NodeOptions,
    process: RedisProcess,
}

impl RedisNode {
    /// Starts a node in `dir` and waits until it is ready.
    ///
    /// # Errors
    ///
    /// When it cannot be spawned or is not ready within 5 s (with its log).
    pub fn start(index: usize, dir: &Path, opts: NodeOptions) -> Result<Self, String> {
        let mut options = ProcessOptions::new()
            .name(format!("redis node {index}"))
            .dir(dir)
            .persistence(opts.persistence.unwrap_or(Persistence::None))
            .start_deadline(Duration::from_secs(5));
        if let Some(ns) = &opts.netns {
            let ip = ns
                .node_ip()
                .parse()
                .map_err(|e| format!("namespace address {:?}: {e}", ns.node_ip()))?;
            options = options.namespace(ns.name(), ip).port(6379);
        }
        if let Some(shim) = &opts.clock {
            options = options
                .env("LD_PRELOAD", shim.library())
                .env(crate::faults::clock::OFFSET_FILE_ENV, shim.offset_file());
        }
        let process = RedisProcess::start(options).map_err(|e| e.to_string())?;
        Ok(RedisNode {
            index,
            opts,
            process,
        })
    }

    /// `redis://host:port`.
    pub fn url(&self) -> String {
        self.process.url()
    }

    /// `host:port`.
    pub fn addr(&self) -> String {
        self.process.addr()
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.process.port()
    }

    /// The namespace the node runs in, if any.
    pub fn netns(&self) -> Option<&Arc<Netns>> {
        self.opts.netns.as_ref()
    }

    /// The clock shim the node runs under, if any.
    pub fn clock(&self) -> Option<&Arc<ClockShim>> {
        self.opts.clock.as_ref()
    }

    /// SIGSTOP: the node keeps its sockets but answers nothing.
    ///
    /// # Errors
    ///
    /// When the node is not running.
    pub fn pause(&self) -> Result<(), String> {
        self.process.pause().map_err(|e| e.to_string())
    }

    /// SIGCONT.
    ///
    /// # Errors
    ///
    /// When the node is not running.
    pub fn resume(&self) -> Result<(), String> {
        self.process.resume().map_err(|e| e.to_string())
    }

    /// `kill -9` and reap; nothing to do if it is not running.
    pub fn crash(&mut self) {
        if self.process.is_running() {
            // Its only failure is "not running", which is what we want.
            let _ = self.process.kill();
        }
    }

    /// Starts the node again in the same directory: empty without persistence, from
    /// its AOF with it.
    ///
    /// # Errors
    ///
    /// As [`RedisNode::start`].
    pub fn restart(&mut self) -> Result<(), String> {
        self.process.restart().map_err(|e| e.to_string())
    }

    /// A blocking connection (for the controller's probes).
    ///
    /// # Errors
    ///
    /// When the node does not accept within 1 s.
    pub fn connection(&self) -> Result<redis::Connection, String> {
        let con = self
            .process
            .connect(Duration::from_secs(1))
            .map_err(|e| e.to_string())?;
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
        format!(
            "--- redis node {} log tail ---\n{}",
            self.index,
            self.process.log_tail(15)
        )
    }
}
