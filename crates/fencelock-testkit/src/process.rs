//! [`RedisProcess`]: one `redis-server` process we spawned, and its whole lifecycle.
//!
//! Everything else in this crate (and the chaos suite's and the benchmarks' nodes) is
//! built on it, so the rules live here once:
//!
//! - **Our own process only.** Every signal goes to the PID of the child we spawned;
//!   nothing else on the machine is ever touched. `Drop` kills (SIGKILL, which also
//!   ends a SIGSTOPped process) and reaps it, so no server outlives its owner.
//! - **Loopback only.** The server binds 127.0.0.1 with protected mode on. The one
//!   exception is a server started inside a network namespace
//!   ([`ProcessOptions::namespace`], the chaos suite's partitions), which binds the
//!   namespace's address.
//! - **A free port, checked.** Unless a port is given, a port the kernel says is free
//!   is picked; if someone takes it before the server binds it, the server exits with
//!   "Address already in use" and another port is tried.
//! - **Ready means ours.** A start returns once *this* process wrote "Ready to accept
//!   connections" to *its own* log file (after binding its ports and loading its
//!   AOF), so a stranger answering on a reused port is never mistaken for our server,
//!   and TLS, password and namespaced servers are waited for the same way.
//! - **A clear failure.** A missing `redis-server` says to run `scripts/test`, which
//!   installs it; every other error quotes the tail of the server's log, which is
//!   usually where the reason is.
//!
//! The API returns [`Error`] rather than panicking: the chaos suite and the benchmarks
//! are programs, not tests. The test-facing types ([`crate::Cluster`],
//! [`crate::Server`]) turn errors into panics.

use std::ffi::OsString;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind};
use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use tempfile::TempDir;

/// The server binary, looked up on `PATH`.
const REDIS_SERVER: &str = "redis-server";
/// How many fresh ports to try when a port picked as free was taken meanwhile.
const START_ATTEMPTS: usize = 5;
/// How long SIGSTOP / SIGCONT may take to show in `/proc/PID/stat`.
const SIGNAL_DEADLINE: Duration = Duration::from_secs(2);
/// Lines of server log quoted in error messages.
pub(crate) const LOG_TAIL_LINES: usize = 30;
/// What the server logs once its ports are bound and its data is loaded.
const READY: &str = "Ready to accept connections";
/// What the server logs when its port is taken.
const PORT_IN_USE: &str = "Address already in use";

/// Why something went wrong with a server; the message quotes its log tail.
#[derive(Debug, Clone)]
pub struct Error {
    message: String,
    /// The server could not bind its port (someone took it after we picked it).
    port_in_use: bool,
}

impl Error {
    fn new(message: impl Into<String>) -> Error {
        Error {
            message: message.into(),
            port_in_use: false,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// How a server keeps its data across a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Persistence {
    /// `--save "" --appendonly no`, and any data file removed before a restart: a
    /// killed or restarted server comes back empty, the failure the fencing-counter
    /// design must survive.
    #[default]
    None,
    /// `--appendonly yes --appendfsync always`: every write is on disk before the
    /// reply, and a restart reloads it.
    AofAlways,
}

/// The files of a TLS-only server: it presents `cert`/`key` and does not ask clients
/// for certificates.
#[derive(Debug, Clone)]
struct TlsFiles {
    cert: PathBuf,
    key: PathBuf,
    ca: PathBuf,
}

/// How to start a [`RedisProcess`]. The defaults: 127.0.0.1 on a free port, no
/// persistence, a temporary directory, 10 s to become ready.
#[derive(Debug, Clone)]
pub struct ProcessOptions {
    name: String,
    args: Vec<String>,
    persistence: Persistence,
    tls: Option<TlsFiles>,
    env: Vec<(String, OsString)>,
    namespace: Option<(String, IpAddr)>,
    port: Option<u16>,
    dir: Option<PathBuf>,
    start_deadline: Duration,
}

impl Default for ProcessOptions {
    fn default() -> Self {
        ProcessOptions {
            name: "redis-server".to_owned(),
            args: Vec::new(),
            persistence: Persistence::None,
            tls: None,
            env: Vec::new(),
            namespace: None,
            port: None,
            dir: None,
            start_deadline: Duration::from_secs(10),
        }
    }
}

impl ProcessOptions {
    /// The defaults.
    pub fn new() -> ProcessOptions {
        ProcessOptions::default()
    }

    /// What error messages call the server (e.g. `"redis node 2"`).
    #[must_use]
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Extra `redis-server` arguments, after the fixture's own (so they override
    /// them), kept across restarts: e.g. `["--requirepass", "pw"]` (the helper
    /// connections then authenticate with it) or `["--cluster-enabled", "yes"]`.
    /// Leave `--logfile` and `--loglevel` alone: readiness is read from the log.
    #[must_use]
    pub fn args<S: AsRef<str>>(mut self, args: &[S]) -> Self {
        self.args.extend(args.iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// How the server keeps its data across a crash (default: not at all).
    #[must_use]
    pub fn persistence(mut self, persistence: Persistence) -> Self {
        self.persistence = persistence;
        self
    }

    /// A TLS-only server (`--port 0 --tls-port P`) presenting `cert`/`key`, with `ca`
    /// as its CA file, not asking clients for certificates. Its URL is `rediss://`.
    #[must_use]
    pub fn tls(mut self, cert: &Path, key: &Path, ca: &Path) -> Self {
        self.tls = Some(TlsFiles {
            cert: cert.to_owned(),
            key: key.to_owned(),
            ca: ca.to_owned(),
        });
        self
    }

    /// An environment variable for the server (e.g. `LD_PRELOAD` of a clock shim).
    #[must_use]
    pub fn env(mut self, key: impl Into<String>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Runs the server inside the network namespace `name` (`ip netns exec`, which
    /// execs in place, so the PID is still the server's), bound to the namespace's
    /// address `ip` with protected mode off (its clients are not on loopback). Set a
    /// [`port`](Self::port): a free port of this namespace means nothing there.
    #[must_use]
    pub fn namespace(mut self, name: impl Into<String>, ip: IpAddr) -> Self {
        self.namespace = Some((name.into(), ip));
        self
    }

    /// A fixed port instead of a free one.
    #[must_use]
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// The server's working directory (data files, `redis.log`, `stdio.log`),
    /// created if missing and kept; by default a temporary directory removed on drop.
    #[must_use]
    pub fn dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }

    /// How long a start may take to become ready (default 10 s): a hang guard, not
    /// a measurement.
    #[must_use]
    pub fn start_deadline(mut self, deadline: Duration) -> Self {
        self.start_deadline = deadline;
        self
    }

    /// The `--requirepass` among the extra arguments (the last one wins, as in
    /// redis-server), for the helper connections.
    fn password(&self) -> Option<&str> {
        self.args
            .iter()
            .zip(self.args.iter().skip(1))
            .filter(|(flag, _)| flag.as_str() == "--requirepass")
            .map(|(_, value)| value.as_str())
            .next_back()
    }

    fn host(&self) -> IpAddr {
        self.namespace
            .as_ref()
            .map_or(IpAddr::V4(Ipv4Addr::LOCALHOST), |(_, ip)| *ip)
    }
}

/// Where the server's files live.
#[derive(Debug)]
enum Dir {
    Temp(TempDir),
    Given(PathBuf),
}

impl Dir {
    fn path(&self) -> &Path {
        match self {
            Dir::Temp(t) => t.path(),
            Dir::Given(p) => p,
        }
    }
}

/// The process currently serving, if any.
#[derive(Debug)]
struct State {
    /// `None` once killed (and reaped) and before a restart.
    child: Option<Child>,
    /// Set by `pause`, cleared by `resume`, `kill`, `restart`.
    paused: bool,
}

/// One `redis-server` we spawned: a fixed port (kept across restarts) and its own
/// directory. Every method takes `&self`, so it can be shared between threads.
#[derive(Debug)]
pub struct RedisProcess {
    opts: ProcessOptions,
    port: u16,
    dir: Dir,
    state: Mutex<State>,
}

impl RedisProcess {
    /// Starts a server and waits until it is ready (see the module docs).
    ///
    /// # Errors
    ///
    /// When `redis-server` is not installed (the message says to run
    /// `scripts/test`), its directory cannot be made, every port tried was taken, or
    /// it exits or is not ready within the start deadline (quoting its log).
    pub fn start(opts: ProcessOptions) -> Result<RedisProcess, Error> {
        let dir = match &opts.dir {
            Some(path) => {
                fs::create_dir_all(path)
                    .map_err(|e| Error::new(format!("{}: {e}", path.display())))?;
                Dir::Given(path.clone())
            }
            None => Dir::Temp(
                tempfile::Builder::new()
                    .prefix("fencelock-redis-")
                    .tempdir()
                    .map_err(|e| {
                        Error::new(format!("a temporary directory for {}: {e}", opts.name))
                    })?,
            ),
        };
        let mut failures = Vec::new();
        for _ in 0..START_ATTEMPTS {
            let port = match opts.port {
                Some(port) => port,
                None => free_port()?,
            };
            match launch(&opts, dir.path(), port) {
                Ok(child) => {
                    return Ok(RedisProcess {
                        opts,
                        port,
                        dir,
                        state: Mutex::new(State {
                            child: Some(child),
                            paused: false,
                        }),
                    });
                }
                Err(e) if e.port_in_use && opts.port.is_none() => {
                    failures.push(format!("port {port}: {e}"));
                }
                Err(e) => return Err(e),
            }
        }
        Err(Error::new(format!(
            "starting {}: every port tried was taken:\n{}",
            opts.name,
            failures.join("\n")
        )))
    }

    /// What error messages call it.
    pub fn name(&self) -> &str {
        &self.opts.name
    }

    /// The address it binds: 127.0.0.1, or the namespace's address.
    pub fn host(&self) -> IpAddr {
        self.opts.host()
    }

    /// Its port (the TLS port of a TLS server); the same across restarts.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `host:port`.
    pub fn addr(&self) -> String {
        format!("{}:{}", self.host(), self.port)
    }

    /// `redis://host:port`, or `rediss://host:port` for a TLS server.
    pub fn url(&self) -> String {
        let scheme = if self.opts.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://{}", self.addr())
    }

    /// Its working directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The options it was started with.
    pub fn options(&self) -> &ProcessOptions {
        &self.opts
    }

    /// PID of the process serving now; `None` after `kill` or if it died.
    pub fn pid(&self) -> Option<u32> {
        let mut state = self.lock();
        if is_alive(&mut state) {
            state.child.as_ref().map(Child::id)
        } else {
            None
        }
    }

    /// Whether it has a live process (a paused server counts as running).
    pub fn is_running(&self) -> bool {
        is_alive(&mut self.lock())
    }

    /// Whether it is paused by [`pause`](Self::pause) and not yet resumed.
    pub fn is_paused(&self) -> bool {
        self.lock().paused
    }

    /// SIGSTOP, and wait until the kernel reports it stopped. A paused server still
    /// accepts TCP connections (the kernel completes the handshake) but answers
    /// nothing: requests hang until the client's own timeout.
    ///
    /// # Errors
    ///
    /// When it is not running or the signal fails.
    pub fn pause(&self) -> Result<(), Error> {
        let mut state = self.lock();
        let pid = self.running_pid(&mut state, "pause")?;
        self.signal(pid, Signal::SIGSTOP, "pause")?;
        self.wait_proc_state(pid, true, "pause")?;
        state.paused = true;
        Ok(())
    }

    /// SIGCONT, and wait until it is no longer stopped. Requests sent while it was
    /// paused are then answered (if their clients still wait).
    ///
    /// # Errors
    ///
    /// When it is not running or the signal fails.
    pub fn resume(&self) -> Result<(), Error> {
        let mut state = self.lock();
        let pid = self.running_pid(&mut state, "resume")?;
        self.signal(pid, Signal::SIGCONT, "resume")?;
        self.wait_proc_state(pid, false, "resume")?;
        state.paused = false;
        Ok(())
    }

    /// SIGKILL and reap (also a paused server). Without persistence its data is gone.
    ///
    /// # Errors
    ///
    /// When it is not running (quoting its log), or killing fails.
    pub fn kill(&self) -> Result<(), Error> {
        let mut state = self.lock();
        let Some(mut child) = state.child.take() else {
            return Err(Error::new(format!(
                "kill: {} is not running{}",
                self.opts.name,
                self.log_tail_msg()
            )));
        };
        state.paused = false;
        kill_and_reap(&mut child)
            .map_err(|e| Error::new(format!("kill: {e}{}", self.log_tail_msg())))
    }

    /// Starts it again on the same port and waits until ready: empty without
    /// persistence (its data files are removed first), from its AOF with
    /// [`Persistence::AofAlways`]. A running (or paused) server is killed first, so
    /// this is also "crash and come back". Its port may be held by another process
    /// for a moment: the start is retried until the start deadline.
    ///
    /// # Errors
    ///
    /// When killing the old process fails or the new one is not ready in time.
    pub fn restart(&self) -> Result<(), Error> {
        let mut state = self.lock();
        if let Some(mut child) = state.child.take() {
            kill_and_reap(&mut child).map_err(|e| {
                Error::new(format!(
                    "restart: killing the old process of {}: {e}{}",
                    self.opts.name,
                    self.log_tail_msg()
                ))
            })?;
        }
        state.paused = false;
        if self.opts.persistence == Persistence::None {
            let _ = fs::remove_file(self.dir().join("dump.rdb"));
            let _ = fs::remove_dir_all(self.dir().join("appendonlydir"));
        }
        let deadline = Instant::now() + self.opts.start_deadline;
        loop {
            match launch(&self.opts, self.dir(), self.port) {
                Ok(child) => {
                    state.child = Some(child);
                    return Ok(());
                }
                Err(e) if e.port_in_use && Instant::now() < deadline => {
                    thread::sleep(Duration::from_millis(100));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// A synchronous connection with `timeout` for connect, read and write,
    /// authenticated with the server's `--requirepass` if it has one. Refused up
    /// front when the server is down or paused, rather than failing after a timeout
    /// with a vaguer error.
    ///
    /// # Errors
    ///
    /// When the server is down or paused, is a TLS server (connect to those through
    /// the code under test), or does not accept within `timeout`.
    pub fn connect(&self, timeout: Duration) -> Result<redis::Connection, Error> {
        {
            let mut state = self.lock();
            if !is_alive(&mut state) {
                return Err(Error::new(format!(
                    "{} is not running{}",
                    self.opts.name,
                    self.log_tail_msg()
                )));
            }
            if state.paused {
                return Err(Error::new(format!(
                    "{} is paused; resume it before reading its state",
                    self.opts.name
                )));
            }
        }
        if self.opts.tls.is_some() {
            return Err(Error::new(format!(
                "{} speaks TLS only: the fixture's helper connections are plain",
                self.opts.name
            )));
        }
        let url = match self.opts.password() {
            Some(password) => format!("redis://:{password}@{}", self.addr()),
            None => self.url(),
        };
        let connect = || -> redis::RedisResult<redis::Connection> {
            let con = redis::Client::open(url.as_str())?.get_connection_with_timeout(timeout)?;
            con.set_read_timeout(Some(timeout))?;
            con.set_write_timeout(Some(timeout))?;
            Ok(con)
        };
        connect().map_err(|e| {
            Error::new(format!(
                "connecting to {} ({}): {e}{}",
                self.opts.name,
                self.addr(),
                self.log_tail_msg()
            ))
        })
    }

    /// Everything it logged (all its runs, including restarts), plus anything it
    /// printed on stdout/stderr before its log file was open.
    pub fn log(&self) -> String {
        read_logs(self.dir())
    }

    /// The last `lines` lines of [`log`](Self::log).
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log(), lines)
    }

    /// "\n--- NAME (port P) log tail ---\n…", to append to error messages.
    pub(crate) fn log_tail_msg(&self) -> String {
        format!(
            "\n--- {} (port {}) log tail ---\n{}",
            self.opts.name,
            self.port,
            self.log_tail(LOG_TAIL_LINES)
        )
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the state usable; keep going so
        // Drop can still kill the process.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// PID of the running process, or an error explaining that there is none.
    fn running_pid(&self, state: &mut State, what: &str) -> Result<Pid, Error> {
        if !is_alive(state) {
            return Err(Error::new(format!(
                "{what}: {} is not running{}",
                self.opts.name,
                self.log_tail_msg()
            )));
        }
        let child = state.child.as_ref().expect("is_alive checked the child");
        Ok(Pid::from_raw(
            i32::try_from(child.id()).expect("PIDs fit in i32"),
        ))
    }

    fn signal(&self, pid: Pid, sig: Signal, what: &str) -> Result<(), Error> {
        signal::kill(pid, sig).map_err(|e| {
            Error::new(format!(
                "{what}: sending {sig} to {} (PID {pid}): {e}{}",
                self.opts.name,
                self.log_tail_msg()
            ))
        })
    }

    /// Signals are asynchronous; wait until `/proc` shows the process stopped
    /// (state `T`) or running again, so the caller's next step sees the fault.
    fn wait_proc_state(&self, pid: Pid, stopped: bool, what: &str) -> Result<(), Error> {
        let deadline = Instant::now() + SIGNAL_DEADLINE;
        loop {
            let state = proc_state(pid);
            if state.is_some_and(|s| (s == 'T') == stopped) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::new(format!(
                    "{what}: {} (PID {pid}) still in state {state:?} after {SIGNAL_DEADLINE:?}{}",
                    self.opts.name,
                    self.log_tail_msg()
                )));
            }
            thread::sleep(Duration::from_millis(1));
        }
    }
}

impl Drop for RedisProcess {
    /// Kill (SIGKILL, which also ends a stopped process) and reap. If the thread is
    /// panicking (a failing test), print the log tail first: a temporary directory
    /// holding the log is deleted right after.
    fn drop(&mut self) {
        let mut state = self.lock();
        if let Some(mut child) = state.child.take() {
            // Errors are ignored: nothing useful to do in Drop, and a panic here
            // while unwinding would abort the whole test binary.
            let _ = kill_and_reap(&mut child);
        }
        state.paused = false;
        drop(state);
        if thread::panicking() {
            eprintln!(
                "--- {} (port {}) log tail ---\n{}",
                self.opts.name,
                self.port,
                self.log_tail(LOG_TAIL_LINES)
            );
        }
    }
}

fn is_alive(state: &mut State) -> bool {
    match state.child.as_mut().map(Child::try_wait) {
        None => false,
        Some(Ok(None)) => true,
        Some(Ok(Some(_status))) => false,
        // try_wait fails only on a child that is not ours; report it as gone.
        Some(Err(_)) => false,
    }
}

/// Spawns `redis-server` in `dir` on `port` and waits until it logs that it is ready.
/// On failure the process is killed and reaped before returning.
fn launch(opts: &ProcessOptions, dir: &Path, port: u16) -> Result<Child, Error> {
    let log_file = dir.join("redis.log");
    // Where this run's lines start: the log is appended across restarts.
    let log_start = fs::metadata(&log_file).map_or(0, |m| m.len());
    // Output before the log file is open (bad arguments, a missing library) goes to
    // stdout/stderr; keep it next to the log, appended across restarts.
    let stdio = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("stdio.log"))
        .map_err(|e| Error::new(format!("opening {}/stdio.log: {e}", dir.display())))?;
    let stdio_err = stdio
        .try_clone()
        .map_err(|e| Error::new(format!("duplicating the stdio.log handle: {e}")))?;

    let (program, mut cmd) = match &opts.namespace {
        Some((ns, _)) => {
            let mut cmd = Command::new("ip");
            cmd.args(["netns", "exec", ns, REDIS_SERVER]);
            ("ip", cmd)
        }
        None => (REDIS_SERVER, Command::new(REDIS_SERVER)),
    };
    let port_s = port.to_string();
    match &opts.tls {
        Some(tls) => {
            cmd.args(["--port", "0", "--tls-port", &port_s])
                .arg("--tls-cert-file")
                .arg(&tls.cert)
                .arg("--tls-key-file")
                .arg(&tls.key)
                .arg("--tls-ca-cert-file")
                .arg(&tls.ca)
                .args(["--tls-auth-clients", "no"]);
        }
        None => {
            cmd.args(["--port", &port_s]);
        }
    }
    cmd.arg("--bind").arg(opts.host().to_string());
    let protected = if opts.namespace.is_some() {
        "no"
    } else {
        "yes"
    };
    cmd.args(["--protected-mode", protected])
        .args(["--daemonize", "no"])
        .args(["--save", ""]);
    match opts.persistence {
        Persistence::None => {
            cmd.args(["--appendonly", "no"]);
        }
        Persistence::AofAlways => {
            cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
        }
    }
    cmd.arg("--dir")
        .arg(dir)
        .arg("--logfile")
        .arg(&log_file)
        .args(["--loglevel", "notice"])
        // DEBUG SLEEP and friends, from loopback only, for slow-node tests.
        .args(["--enable-debug-command", "local"])
        .args(&opts.args)
        .envs(opts.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::from(stdio))
        .stderr(Stdio::from(stdio_err))
        .current_dir(dir);
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Err(Error::new(format!(
                "`{program}` is not installed (not found on PATH). Tests, the chaos suite \
                 and the benchmarks need real Redis servers: run `scripts/test`, which \
                 installs redis-server (apt-get install redis-server) and the rest."
            )));
        }
        Err(e) => return Err(Error::new(format!("spawning {program}: {e}"))),
    };

    let our_pid = child.id();
    let this_run = || -> String {
        let text = read_file(&log_file);
        let start = usize::try_from(log_start).unwrap_or(0);
        text.get(start..).unwrap_or_default().to_owned()
    };
    let deadline = Instant::now() + opts.start_deadline;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                let run = this_run();
                return Err(Error {
                    port_in_use: run.contains(PORT_IN_USE),
                    message: format!(
                        "{} exited during startup ({status})\n--- log ---\n{}",
                        opts.name,
                        tail(&read_logs(dir), LOG_TAIL_LINES)
                    ),
                });
            }
            Ok(None) => {}
            Err(e) => {
                let _ = kill_and_reap(&mut child);
                return Err(Error::new(format!(
                    "waiting on {} (PID {our_pid}): {e}",
                    opts.name
                )));
            }
        }
        if this_run().contains(READY) {
            return Ok(child);
        }
        if Instant::now() > deadline {
            let _ = kill_and_reap(&mut child);
            return Err(Error::new(format!(
                "{} (PID {our_pid}, port {port}) was not ready within {:?}\n--- log ---\n{}",
                opts.name,
                opts.start_deadline,
                tail(&read_logs(dir), LOG_TAIL_LINES)
            )));
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// A port the kernel considers free on 127.0.0.1 right now. Another process may take
/// it before the server binds it; [`RedisProcess::start`] notices and retries.
///
/// # Errors
///
/// When no port can be bound.
pub fn free_port() -> Result<u16, Error> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| Error::new(format!("binding 127.0.0.1:0 to find a free port: {e}")))
}

/// SIGKILL works on stopped (SIGSTOPped) processes too; `wait` reaps it so no zombie
/// is left and the PID disappears from `/proc`.
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
    // "PID (comm) S …": comm may contain spaces and parentheses, so split after the
    // last ')'.
    let after = &stat[stat.rfind(')')? + 1..];
    after.trim_start().chars().next()
}

fn read_file(path: &Path) -> String {
    match File::open(path).and_then(io::read_to_string) {
        Ok(text) => text,
        Err(e) if e.kind() == ErrorKind::NotFound => String::new(),
        Err(e) => format!("<cannot read {}: {e}>\n", path.display()),
    }
}

fn read_logs(dir: &Path) -> String {
    let mut log = read_file(&dir.join("redis.log"));
    let stdio = read_file(&dir.join("stdio.log"));
    if !stdio.trim().is_empty() {
        log.push_str("--- stdout/stderr ---\n");
        log.push_str(&stdio);
    }
    log
}

pub(crate) fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    if all.is_empty() {
        return "<empty log>".to_owned();
    }
    all[all.len().saturating_sub(lines)..].join("\n")
}
