//! Test support: real `redis-server` processes (the workspace's one fixture,
//! crates/fencelock-testkit, re-exported here), the `fencelock` binary, and waiting
//! with generous timeouts (only to avoid hangs: no test asserts on timing).
//!
//! Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

pub mod previous;
pub mod scenarios;

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

#[allow(unused_imports)]
pub use fencelock_testkit::{Certs, Cluster, RedisCluster, Server};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// How long anything may take before a test gives up (a hang guard, not a threshold).
pub const PATIENCE: Duration = Duration::from_secs(30);

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
