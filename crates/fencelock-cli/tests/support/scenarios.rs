//! Behaviours every store must show through the CLI; `redis.rs` and `sqlite.rs` run
//! each of them against their store.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tempfile::TempDir;

use super::{Finished, PATIENCE, finish, send, wait_bounded, wait_for_file};

/// A private directory (state, scratch files) and the stores under test.
pub struct Setup {
    pub dir: TempDir,
    pub stores: Vec<String>,
    store_args: Vec<String>,
}

impl Setup {
    pub fn new(stores: Vec<String>) -> Setup {
        Setup {
            dir: tempfile::tempdir().expect("temp dir"),
            store_args: super::store_args(&stores),
            stores,
        }
    }

    /// An SQLite store in the private directory.
    pub fn sqlite() -> Setup {
        let dir = tempfile::tempdir().expect("temp dir");
        let stores = vec![super::sqlite_url(dir.path())];
        Setup {
            store_args: super::store_args(&stores),
            stores,
            dir,
        }
    }

    /// A file in the private directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn args<'a>(&'a self, rest: &[&'a str]) -> Vec<&'a str> {
        self.store_args
            .iter()
            .map(String::as_str)
            .chain(rest.iter().copied())
            .collect()
    }

    /// Runs `fencelock <stores> <rest>` to completion.
    pub fn run(&self, rest: &[&str]) -> Finished {
        super::run(self.dir.path(), &self.args(rest))
    }

    /// Starts `fencelock <stores> <rest>` in the background.
    pub fn spawn(&self, rest: &[&str]) -> Child {
        super::spawn(self.dir.path(), &self.args(rest))
    }

    /// Starts `fencelock run KEY` holding the lock with a command that signals
    /// readiness and then sleeps; returns once the command runs.
    pub fn hold(&self, key: &str) -> Child {
        let ready = self.path(&format!("{key}.held"));
        let script = format!("touch '{}'; exec sleep 60", ready.display());
        let child = self.spawn(&["run", key, "-c", &script]);
        wait_for_file(&ready);
        child
    }
}

/// Stops a holder started by [`Setup::hold`]: SIGTERM is forwarded to its `sleep`.
pub fn stop(mut holder: Child) {
    send(&holder, Signal::SIGTERM);
    let status = wait_bounded(&mut holder);
    assert_eq!(status.code(), Some(128 + 15), "holder: {status:?}");
}

/// Waits until `pid` catches `sig` (its handler is installed), read from /proc.
pub fn wait_until_catching(pid: u32, sig: Signal) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let caught = status
            .lines()
            .find_map(|l| l.strip_prefix("SigCgt:"))
            .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
            .unwrap_or(0);
        if caught & (1 << (sig as i32 - 1)) != 0 {
            return;
        }
        assert!(Instant::now() < deadline, "{pid} never caught {sig}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

pub fn exit_status_passes_through(t: &Setup) {
    t.run(&["run", "pass", "--", "true"]).expect_code(0);
    t.run(&["run", "pass", "--", "sh", "-c", "exit 42"])
        .expect_code(42);
    t.run(&["run", "pass", "-c", "exit 3"]).expect_code(3);
    // Death by signal reads as 128+signal, as in shells.
    t.run(&["run", "pass", "-c", "kill -KILL $$"])
        .expect_code(128 + 9);
    // The command's stdout is its own.
    let out = t.run(&["run", "pass", "--", "echo", "hello", "--not-a-flag"]);
    out.expect_code(0);
    assert_eq!(out.stdout, "hello --not-a-flag\n");
}

pub fn env_reaches_the_command(t: &Setup) {
    let out = t.run(&[
        "run",
        "envkey",
        "--ttl",
        "10s",
        "-c",
        r#"echo "$FENCELOCK_KEY $FENCELOCK_TOKEN $FENCELOCK_VALID_MS $FENCELOCK_TTL_MS""#,
    ]);
    out.expect_code(0);
    let fields: Vec<&str> = out.stdout.split_whitespace().collect();
    assert_eq!(fields.len(), 4, "{out:#?}");
    assert_eq!(fields[0], "envkey");
    let token: u64 = fields[1].parse().expect("token");
    let valid: u64 = fields[2].parse().expect("valid ms");
    assert!(token > 0);
    assert!(valid > 0 && valid <= 10_000, "{valid}");
    assert_eq!(fields[3], "10000");

    // A later holder gets a larger token.
    let again = t.run(&["run", "envkey", "-c", "echo $FENCELOCK_TOKEN"]);
    let later: u64 = again.stdout.trim().parse().expect("token");
    assert!(later > token, "{later} <= {token}");
}

pub fn not_acquired(t: &Setup) {
    let holder = t.hold("busy");
    let out = t.run(&["run", "-n", "busy", "--", "true"]);
    out.expect_code(1).expect_one_error_line();
    assert!(out.stderr.contains("held"), "{out:#?}");
    // The holder is named (pid of the holding `fencelock run`).
    assert!(
        out.stderr.contains(&format!("pid {}", holder.id())),
        "{out:#?}"
    );
    t.run(&["run", "-n", "-E", "9", "busy", "--", "true"])
        .expect_code(9)
        .expect_one_error_line();
    t.run(&["run", "-w", "300ms", "busy", "--", "true"])
        .expect_code(1)
        .expect_one_error_line();
    t.run(&["run", "--wait", "0.2", "-E", "0", "busy", "--", "false"])
        .expect_code(0);
    t.run(&["acquire", "-n", "busy"])
        .expect_code(1)
        .expect_one_error_line();
    stop(holder);
    // Released when the holder's command ended.
    t.run(&["run", "-n", "busy", "--", "true"]).expect_code(0);
}

pub fn sigterm_reaches_the_command(t: &Setup) {
    let ready = t.path("term.ready");
    let got = t.path("term.got");
    let script = format!(
        "trap 'echo TERM > \"{}\"; exit 7' TERM; touch '{}'; while :; do sleep 0.05; done",
        got.display(),
        ready.display()
    );
    let mut child = t.spawn(&["run", "term", "-c", &script]);
    wait_for_file(&ready);
    send(&child, Signal::SIGTERM);
    let status = wait_bounded(&mut child);
    assert_eq!(status.code(), Some(7), "{:#?}", finish(child));
    assert_eq!(std::fs::read_to_string(&got).expect("trap ran"), "TERM\n");
    // fencelock released the lock after the command exited.
    t.run(&["run", "-n", "term", "--", "true"]).expect_code(0);
}

pub fn interrupted_while_waiting(t: &Setup) {
    let holder = t.hold("queue");
    for (sig, code) in [(Signal::SIGINT, 130), (Signal::SIGTERM, 143)] {
        let mut waiter = t.spawn(&["run", "queue", "--", "touch", "never"]);
        wait_until_catching(waiter.id(), sig);
        send(&waiter, sig);
        let status = wait_bounded(&mut waiter);
        let out = finish(waiter);
        assert_eq!(status.code(), Some(code), "{sig}: {out:#?}");
        assert!(out.stderr.contains("interrupted"), "{out:#?}");
    }
    assert!(!t.path("never").exists());
    // The interrupted waiters left nothing behind: the holder still holds, and once
    // it stops the lock is free.
    t.run(&["run", "-n", "queue", "--", "true"]).expect_code(1);
    stop(holder);
    t.run(&["run", "-n", "queue", "--", "true"]).expect_code(0);
}

pub fn runs_never_overlap(t: &Setup) {
    let log = t.path("overlap.log");
    let script = format!(
        "echo start >> '{0}'; sleep 0.1; echo end >> '{0}'",
        log.display()
    );
    let children: Vec<Child> = (0..4)
        .map(|_| t.spawn(&["run", "-w", "60s", "shared", "-c", &script]))
        .collect();
    for child in children {
        let out = finish(child);
        assert_eq!(out.code, Some(0), "{out:#?}");
    }
    let lines: Vec<String> = std::fs::read_to_string(&log)
        .expect("log")
        .lines()
        .map(String::from)
        .collect();
    let expected: Vec<String> = (0..4)
        .flat_map(|_| ["start".into(), "end".into()])
        .collect();
    assert_eq!(lines, expected, "two commands ran at once");
}

pub fn acquire_extend_release_script(t: &Setup) {
    // `set -x`: on failure, stderr shows which step and what it printed.
    let script = r#"
        set -x
        out=$("$FL" acquire job --ttl 20s) || exit 10
        eval "$out"
        value=$FENCELOCK_VALUE
        token=$FENCELOCK_TOKEN
        [ -n "$value" ] && [ -n "$token" ] || exit 11
        printf '%s\n' "$out" | grep -q '^FENCELOCK_VALID_MS=[1-9]' || exit 12
        "$FL" run -n job -- true; [ $? -eq 1 ] || exit 13
        ext=$("$FL" extend job --value "$value" --ttl 30s) || exit 14
        printf '%s\n' "$ext" | grep -q '^FENCELOCK_VALID_MS=[1-9]' || exit 25
        printf '%s\n' "$ext" | grep -q '^FENCELOCK_TTL_MS=30000$' || exit 26
        "$FL" status job | grep -q '^job: held' || exit 15
        "$FL" release job --value "$value" || exit 16
        "$FL" release job --value "$value"; [ $? -eq 3 ] || exit 17
        "$FL" extend job --value "$value" --ttl 5s >/dev/null 2>&1; [ $? -eq 75 ] || exit 18
        out2=$("$FL" acquire job --format json) || exit 19
        value2=$(printf '%s' "$out2" | sed -n 's/.*"value":"\([^"]*\)".*/\1/p')
        token2=$(printf '%s' "$out2" | sed -n 's/.*"token":\([0-9]*\).*/\1/p')
        [ "$token2" -gt "$token" ] || exit 20
        "$FL" release job --value "$value"; [ $? -eq 4 ] || exit 21
        "$FL" extend job --value "$value" --ttl 5s >/dev/null 2>&1; [ $? -eq 75 ] || exit 22
        FENCELOCK_VALUE="$value2" "$FL" release job || exit 23
        "$FL" status job | grep -q '^job: free' || exit 24
        echo ok
    "#;
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(script)
        .env("FL", env!("CARGO_BIN_EXE_fencelock"))
        .env("FENCELOCK_STORE", t.stores.join(","))
        .env("XDG_STATE_HOME", t.dir.path())
        .env_remove("FENCELOCK_VALUE")
        .env_remove("FENCELOCK_PREFIX")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = finish(cmd.spawn().expect("sh"));
    assert_eq!(out.code, Some(0), "script step failed: {out:#?}");
    assert_eq!(out.stdout, "ok\n");
}

/// `status` without keys lists the keys locked recently under `--prefix`: held ones,
/// and released ones while their counter is kept — a day on SQLite; on Redis as long
/// as `--counter-retention` says (by default a released key drops out at once).
pub fn status_lists_keys_under_prefix(t: &Setup) {
    let holder = t.hold("app:listed");
    t.run(&["--counter-retention", "1h", "run", "app:done", "--", "true"])
        .expect_code(0);
    t.run(&["run", "app:gone", "--", "true"]).expect_code(0);
    t.run(&["run", "elsewhere", "--", "true"]).expect_code(0);
    let redis = t.stores[0].starts_with("redis");
    let deadline = Instant::now() + Duration::from_secs(10);
    let out = loop {
        let out = t.run(&["--prefix", "app:", "status"]);
        out.expect_code(0);
        // Redis retires the counter within a millisecond or so of the release.
        if !redis || !out.stdout.contains("gone") || Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(out.stdout.starts_with("done: free\n"), "{out:#?}");
    assert!(out.stdout.contains("listed: held\n"), "{out:#?}");
    assert_eq!(out.stdout.contains("gone: free\n"), !redis, "{out:#?}");
    assert!(!out.stdout.contains("elsewhere"), "{out:#?}");
    stop(holder);
}

pub fn status_shows_the_holder(t: &Setup) {
    let holder = t.hold("shown");
    let out = t.run(&["status", "shown", "other"]);
    out.expect_code(0);
    assert!(out.stdout.starts_with("shown: held\n"), "{out:#?}");
    assert!(
        out.stdout
            .contains(&format!("holder: sh (pid {} on ", holder.id())),
        "{out:#?}"
    );
    assert!(out.stdout.contains("via run"), "{out:#?}");
    assert!(out.stdout.contains("other: free\n"), "{out:#?}");

    let json = t.run(&["status", "--json", "shown"]);
    json.expect_code(0);
    let v: serde_json::Value = serde_json::from_str(&json.stdout).expect("JSON");
    let key = &v["keys"][0];
    assert_eq!(key["key"], "shown");
    assert_eq!(key["state"], "held");
    assert_eq!(key["holder"]["pid"], holder.id());
    assert_eq!(key["holder"]["via"], "run");
    assert!(key["last_token"].as_u64().is_some_and(|t| t > 0), "{v}");
    let nodes = key["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), t.stores.len());
    assert!(
        nodes
            .iter()
            .all(|n| n["held"] == true && n["ttl_ms"].as_u64().is_some_and(|ms| ms > 0)),
        "{v}"
    );
    stop(holder);
    let after = t.run(&["status", "shown"]);
    assert!(after.stdout.starts_with("shown: free\n"), "{after:#?}");
}

pub fn command_cannot_run(t: &Setup) {
    t.run(&["run", "exec", "--", "/nonexistent/command"])
        .expect_code(127)
        .expect_one_error_line();
    let not_exec = t.path("not-executable");
    std::fs::write(&not_exec, "data").expect("write");
    t.run(&["run", "exec", "--", super::s(&not_exec)])
        .expect_code(126)
        .expect_one_error_line();
    // Released after the failed start.
    t.run(&["run", "-n", "exec", "--", "true"]).expect_code(0);
}

pub fn prefix_separates_namespaces(t: &Setup) {
    let ready = t.path("prefixed.held");
    let script = format!("touch '{}'; exec sleep 60", ready.display());
    let holder = t.spawn(&["--prefix", "team-a:", "run", "k", "-c", &script]);
    wait_for_file(&ready);
    t.run(&["run", "-n", "--prefix", "team-a:", "k", "--", "true"])
        .expect_code(1);
    t.run(&["run", "-n", "--prefix", "team-b:", "k", "--", "true"])
        .expect_code(0);
    t.run(&["run", "-n", "k", "--", "true"]).expect_code(0);
    // The prefix is applied to the full key: "team-a:k" is the same lock.
    t.run(&["run", "-n", "team-a:k", "--", "true"])
        .expect_code(1);
    stop(holder);
}

/// Scheduled jobs: `--hold-at-least` keeps the lock after a short job, so that the
/// same job fired at once on several hosts (processes here) runs once; the key then
/// expires on its own, with fencelock long gone.
pub fn hold_at_least_runs_a_job_once(t: &Setup) {
    let log = t.path("hold.log");
    let script = format!("echo ran >> '{}'", log.display());
    let hosts: Vec<Child> = (0..4)
        .map(|_| {
            t.spawn(&[
                "run",
                "-n",
                "--hold-at-least",
                "60s",
                "nightly",
                "-c",
                &script,
            ])
        })
        .collect();
    let mut codes: Vec<Option<i32>> = hosts.into_iter().map(|h| finish(h).code).collect();
    codes.sort();
    assert_eq!(codes, [Some(0), Some(1), Some(1), Some(1)], "{codes:?}");
    assert_eq!(std::fs::read_to_string(&log).expect("log"), "ran\n");
    // Every fencelock has exited, and the lock is still held.
    t.run(&["status", "--held", "nightly"]).expect_code(0);
    t.run(&["run", "-n", "nightly", "-c", &script])
        .expect_code(1);

    // A short hold runs out by itself.
    t.run(&["run", "--hold-at-least", "300ms", "short", "--", "true"])
        .expect_code(0);
    let deadline = Instant::now() + PATIENCE;
    while t.run(&["status", "--held", "short"]).code != Some(5) {
        assert!(Instant::now() < deadline, "the hold never ended");
        std::thread::sleep(Duration::from_millis(20));
    }
    t.run(&["run", "-n", "short", "--", "true"]).expect_code(0);
}

/// `--max-runtime` stops an overrunning job (SIGTERM, SIGKILL after --kill-after),
/// releases the lock and exits 124, as timeout(1) does.
pub fn max_runtime_stops_an_overrunning_job(t: &Setup) {
    let out = t.run(&[
        "run",
        "--max-runtime",
        "300ms",
        "overrun",
        "--",
        "sleep",
        "60",
    ]);
    out.expect_code(124);
    // A warning when it happens, then the reason for the exit code.
    let last = out.stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("fencelock: the command ran longer than --max-runtime"),
        "{out:#?}"
    );
    t.run(&["run", "-n", "overrun", "--", "true"])
        .expect_code(0);
    // A job that ignores SIGTERM is killed.
    t.run(&[
        "run",
        "--max-runtime",
        "300ms",
        "--kill-after",
        "200ms",
        "overrun",
        "-c",
        "trap '' TERM; while :; do sleep 0.05; done",
    ])
    .expect_code(124);
    t.run(&["run", "-n", "overrun", "--", "true"])
        .expect_code(0);
    // A job that finishes in time is not touched.
    t.run(&["run", "--max-runtime", "60s", "overrun", "-c", "exit 3"])
        .expect_code(3);
}

/// `--once-per`: the job fired on several hosts (processes) at once runs once in the
/// slot; later runs in the slot are skipped (exit 6, silent); a failed run records
/// nothing; named slots work the same way.
pub fn once_per_runs_a_job_once_per_slot(t: &Setup) {
    let log = t.path("once.log");
    let script = format!("echo ran >> '{}'", log.display());
    // Weekly slots: a slot boundary during the test is as unlikely as it gets.
    let once = ["--once-per", "7d"];
    let hosts: Vec<Child> = (0..4)
        .map(|_| {
            let mut args = vec!["run", "-w", "60s"];
            args.extend(once);
            args.extend(["weekly", "-c", &script]);
            t.spawn(&args)
        })
        .collect();
    let mut outs: Vec<Finished> = hosts.into_iter().map(finish).collect();
    outs.sort_by_key(|o| o.code);
    let codes: Vec<Option<i32>> = outs.iter().map(|o| o.code).collect();
    assert_eq!(codes, [Some(0), Some(6), Some(6), Some(6)], "{outs:#?}");
    assert!(outs.iter().all(|o| o.stderr.is_empty()), "{outs:#?}");
    assert_eq!(std::fs::read_to_string(&log).expect("log"), "ran\n");
    // Later in the slot: skipped, silently; -v says why.
    let out = t.run(&["run", "--once-per", "7d", "weekly", "-c", &script]);
    out.expect_code(6);
    assert_eq!(out.stderr, "", "{out:#?}");
    let out = t.run(&["-v", "run", "--once-per", "7d", "weekly", "-c", &script]);
    out.expect_code(6);
    assert!(out.stderr.contains("already done"), "{out:#?}");
    assert_eq!(std::fs::read_to_string(&log).expect("log"), "ran\n");
    // The record is a key of its own, beside the job's.
    let listed = t.run(&["status"]);
    assert!(listed.stdout.contains("weekly:once:7days:"), "{listed:#?}");

    // A failed run records nothing: the next one runs.
    t.run(&["run", "--once-per", "retry-1", "flaky", "-c", "exit 3"])
        .expect_code(3);
    t.run(&["run", "--once-per", "retry-1", "flaky", "--", "true"])
        .expect_code(0);
    t.run(&["run", "--once-per", "retry-1", "flaky", "--", "true"])
        .expect_code(6);
    t.run(&["run", "--once-per", "retry-2", "flaky", "--", "true"])
        .expect_code(0);
}
