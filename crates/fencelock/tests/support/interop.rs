//! Interop with the `redlock` npm package (v5, on ioredis).
//!
//! `tests/interop/redlock-client.js` (at the workspace root) is a small node
//! program that takes a lock with redlock. Tests run it next to a fencelock
//! client on the same key; both append `<who> enter <seq>` / `<who> exit <seq>`
//! lines to one log file, and [`assert_exclusive`] checks that no two critical
//! sections overlapped. See the script's header for its command line.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::{ErrorKind, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;

/// `<workspace>/tests/interop`.
pub fn interop_dir() -> PathBuf {
    fencelock_testkit::foreign::interop_dir()
        .canonicalize()
        .expect("tests/interop should exist at the workspace root")
}

/// Path of the node program.
pub fn redlock_client_script() -> PathBuf {
    interop_dir().join("redlock-client.js")
}

/// Makes sure `tests/interop/node_modules` holds redlock and ioredis, running
/// `npm ci` (from the committed package-lock.json) if not. `scripts/test` does
/// this before the tests; this covers a bare `cargo test`.
///
/// Panics with npm's output if npm is missing or fails.
pub fn ensure_node_modules() {
    // Tests of one binary run in parallel threads: let one of them install.
    static INSTALL: Mutex<()> = Mutex::new(());
    let _guard = INSTALL.lock().unwrap_or_else(|p| p.into_inner());

    let dir = interop_dir();
    let installed = ["redlock", "ioredis"].iter().all(|pkg| {
        dir.join("node_modules")
            .join(pkg)
            .join("package.json")
            .is_file()
    });
    if installed {
        return;
    }
    let output = match Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(&dir)
        .stdin(Stdio::null())
        .output()
    {
        Ok(output) => output,
        Err(e) if e.kind() == ErrorKind::NotFound => panic!(
            "`npm` is not installed (not found on PATH); the interop tests need node \
             and npm to run the redlock npm client. Install node 18+ and run `scripts/test`."
        ),
        Err(e) => panic!("running `npm ci` in {}: {e}", dir.display()),
    };
    assert!(
        output.status.success(),
        "`npm ci` in {} failed ({}):\n--- stdout ---\n{}\n--- stderr ---\n{}",
        dir.display(),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
}

/// `node tests/interop/redlock-client.js ARGS…`, after [`ensure_node_modules`].
/// stdin is closed; stdout and stderr are left for the caller to set (convert
/// with `tokio::process::Command::from` for async tests).
pub fn redlock_client_command<I, S>(args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    ensure_node_modules();
    let mut cmd = Command::new("node");
    cmd.arg(redlock_client_script())
        .args(args)
        .current_dir(interop_dir())
        .stdin(Stdio::null());
    cmd
}

/// Spawns the redlock client with stdout and stderr piped (read `stdout` for
/// `acquired …` / `released` in hold mode; see [`wait_success`] for the rest).
pub fn spawn_redlock_client<I, S>(args: I) -> Child
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut cmd = redlock_client_command(args);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    match cmd.spawn() {
        Ok(child) => child,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            panic!("`node` is not installed (not found on PATH); the interop tests need node 18+")
        }
        Err(e) => panic!("spawning the redlock client ({cmd:?}): {e}"),
    }
}

/// Waits for a child up to `timeout`, collecting its output; panics (quoting
/// stdout and stderr) if it fails or is still running then, after killing it.
pub fn wait_success(child: Child, timeout: Duration) -> Output {
    let pid = Pid::from_raw(i32::try_from(child.id()).expect("PIDs fit in i32"));
    let (tx, rx) = mpsc::channel();
    // wait_with_output reads both pipes concurrently, so a chatty child cannot
    // block on a full pipe; it runs on a thread so that we can time out.
    thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let output = match rx.recv_timeout(timeout) {
        Ok(result) => result.expect("waiting for the redlock client"),
        Err(_) => {
            // Killing it closes its pipes, which lets the waiting thread finish.
            let _ = signal::kill(pid, Signal::SIGKILL);
            let output = rx
                .recv_timeout(Duration::from_secs(5))
                .ok()
                .and_then(Result::ok);
            let (stdout, stderr) = output
                .map(|o| {
                    (
                        String::from_utf8_lossy(&o.stdout).into_owned(),
                        String::from_utf8_lossy(&o.stderr).into_owned(),
                    )
                })
                .unwrap_or_default();
            panic!(
                "redlock client (PID {pid}) still running after {timeout:?}; killed it\n\
                 --- stdout ---\n{stdout}\n--- stderr ---\n{stderr}"
            );
        }
    };
    assert!(
        output.status.success(),
        "redlock client failed ({})\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    output
}

/// Appends one whole line to a critical-section log the way the node client
/// does: O_APPEND and a single write, so concurrent writers never mix lines.
pub fn append_line(path: &Path, line: &str) {
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("opening {} for append: {e}", path.display()));
    file.write_all(format!("{line}\n").as_bytes())
        .unwrap_or_else(|e| panic!("appending to {}: {e}", path.display()));
}

/// Checks a log of `<who> enter <seq>` / `<who> exit <seq>` lines (extra words
/// after `<seq>` are ignored): every enter must be followed by the exit of the
/// same `<who> <seq>` before any other enter. Panics on an overlap, a stray or
/// missing exit, or a malformed line, quoting the lines around the problem.
///
/// Returns how many complete critical sections each writer had, so the caller
/// can check that all of them really ran (and that the test was a contest).
pub fn assert_exclusive(path: &Path) -> BTreeMap<String, usize> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("reading critical-section log {}: {e}", path.display()));
    let lines: Vec<&str> = text.lines().collect();
    let context = |n: usize| -> String {
        let from = n.saturating_sub(4);
        let to = (n + 3).min(lines.len());
        (from..to)
            .map(|k| {
                format!(
                    "{}{:>6}: {}",
                    if k == n { ">" } else { " " },
                    k + 1,
                    lines[k]
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let mut inside: Option<(String, String, usize)> = None;
    let mut counts = BTreeMap::new();
    for (n, line) in lines.iter().enumerate() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let (who, event, seq) = match words.as_slice() {
            [who, event @ ("enter" | "exit"), seq, ..] => (*who, *event, *seq),
            _ => panic!(
                "{}:{}: malformed line {line:?} (want `<who> enter|exit <seq>`)\n{}",
                path.display(),
                n + 1,
                context(n)
            ),
        };
        match (event, &inside) {
            ("enter", None) => inside = Some((who.to_owned(), seq.to_owned(), n)),
            ("enter", Some((holder, holder_seq, since))) => panic!(
                "{}:{}: mutual exclusion violated: `{who}` entered (seq {seq}) while \
                 `{holder}` (seq {holder_seq}, since line {}) was inside\n{}",
                path.display(),
                n + 1,
                since + 1,
                context(n)
            ),
            ("exit", Some((holder, holder_seq, _))) if holder == who && holder_seq == seq => {
                *counts.entry(who.to_owned()).or_insert(0) += 1;
                inside = None;
            }
            ("exit", _) => panic!(
                "{}:{}: `{who}` exit (seq {seq}) does not match the section in progress \
                 ({inside:?})\n{}",
                path.display(),
                n + 1,
                context(n)
            ),
            _ => unreachable!("event is enter or exit"),
        }
    }
    if let Some((holder, seq, since)) = inside {
        panic!(
            "{}: `{holder}` entered (seq {seq}, line {}) and never exited\n{}",
            path.display(),
            since + 1,
            context(since)
        );
    }
    counts
}

/// The Python with redis-py: `$FENCELOCK_TEST_PYTHON` (set by `scripts/test` to its
/// venv), else the venv `scripts/test` makes at the workspace root. Panics with how to
/// get one when neither has redis-py: a test is never skipped for a missing client.
pub fn redis_py_python() -> PathBuf {
    fencelock_testkit::foreign::redis_py_python().unwrap_or_else(|e| panic!("{e}"))
}

/// Spawns `tests/interop/redis_py_lock.py ARGS…` (a redis-py `Lock` client; see its
/// header) with stdout and stderr piped.
pub fn spawn_redis_py_client<I, S>(args: I) -> Child
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut cmd = Command::new(redis_py_python());
    cmd.arg(interop_dir().join("redis_py_lock.py"))
        .args(args)
        .current_dir(interop_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.spawn()
        .unwrap_or_else(|e| panic!("spawning the redis-py client ({cmd:?}): {e}"))
}

/// Reads the child's stdout up to its first line and returns it; panics if the
/// child closed stdout first (quoting nothing: its stderr is read by [`wait_success`]).
pub fn first_line(child: &mut Child) -> String {
    use std::io::BufRead as _;
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.as_mut().expect("stdout is piped"))
        .read_line(&mut line)
        .expect("reading the client's stdout");
    assert!(!line.is_empty(), "the client closed stdout without a line");
    line.trim_end().to_owned()
}
