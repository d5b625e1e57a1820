//! The command never runs without the lock, and the lock is never released while a
//! process of the command still runs: `run` and the life of its command's process
//! group (against the embedded SQLite store).
// Linux only: reads process states from /proc and relies on PR_SET_PDEATHSIG.
#![cfg(target_os = "linux")]

mod support;

use std::path::Path;
use std::time::Instant;

use nix::sys::signal::Signal;
use support::scenarios::{Setup, wait_until_catching};
use support::{PATIENCE, alive, finish, send, state, wait_bounded, wait_for_file, wait_stopped};

/// The pids a script wrote on one line.
fn pids(path: &Path) -> Vec<i32> {
    wait_for_file(path);
    let deadline = Instant::now() + PATIENCE;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.ends_with('\n') {
            return text
                .split_whitespace()
                .map(|p| p.parse().expect("pid"))
                .collect();
        }
        assert!(
            Instant::now() < deadline,
            "no complete line in {}",
            path.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Waits until `pid` is gone (or a zombie waiting for its reaper).
fn wait_gone(pid: i32) {
    let deadline = Instant::now() + PATIENCE;
    while alive(pid) && state(pid) != Some('Z') {
        assert!(Instant::now() < deadline, "process {pid} survived");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// If fencelock is killed (`kill -9`, the OOM killer) nobody renews the lease: the
/// command and everything in its process group die with it.
#[test]
fn the_job_dies_with_fencelock() {
    let t = Setup::sqlite();
    let file = t.path("pids");
    let script = format!("sleep 60 & echo $$ $! > '{}'; wait", file.display());
    let mut child = t.spawn(&["run", "k", "-c", &script]);
    let pids = pids(&file);
    send(&child, Signal::SIGKILL);
    wait_bounded(&mut child);
    for pid in pids {
        wait_gone(pid);
    }
}

/// When the command exits but left processes in its group (`cmd &`), fencelock holds
/// the lock until they are gone, as flock(1) does while the lock file is open.
#[test]
fn a_normal_exit_waits_for_the_rest_of_the_group() {
    let t = Setup::sqlite();
    let done = t.path("done");
    // Its output elsewhere: the test must not wait for the pipes, only for fencelock.
    let script = format!(
        "(sleep 0.5; touch '{}') >/dev/null 2>&1 & exit 0",
        done.display()
    );
    t.run(&["run", "k", "-c", &script]).expect_code(0);
    assert!(
        done.exists(),
        "fencelock released the lock before the background job ended"
    );
    t.run(&["run", "-n", "k", "--", "true"]).expect_code(0);
}

/// A forwarded SIGTERM is followed by SIGCONT, so it also reaches a stopped command.
#[test]
fn a_forwarded_signal_reaches_a_stopped_command() {
    let t = Setup::sqlite();
    let file = t.path("pid");
    let got = t.path("got");
    let script = format!(
        "trap 'echo TERM > \"{}\"; exit 7' TERM; echo $$ > '{}'; kill -STOP $$; \
         while :; do sleep 0.05; done",
        got.display(),
        file.display()
    );
    let mut child = t.spawn(&["run", "k", "-c", &script]);
    let pid = pids(&file)[0];
    wait_stopped(pid, true);
    wait_until_catching(child.id(), Signal::SIGTERM);
    send(&child, Signal::SIGTERM);
    let status = wait_bounded(&mut child);
    assert_eq!(status.code(), Some(7), "{:#?}", finish(child));
    assert_eq!(std::fs::read_to_string(&got).expect("trap ran"), "TERM\n");
}

/// A command that ignores SIGTERM is killed by the second SIGTERM (or SIGINT).
#[test]
fn a_second_termination_signal_kills_the_command() {
    let t = Setup::sqlite();
    let ready = t.path("ready");
    let log = t.path("log");
    let script = format!(
        "trap 'echo got >> \"{}\"' TERM INT; touch '{}'; while :; do sleep 0.05; done",
        log.display(),
        ready.display()
    );
    let mut child = t.spawn(&["run", "k", "-c", &script]);
    wait_for_file(&ready);
    wait_until_catching(child.id(), Signal::SIGTERM);
    send(&child, Signal::SIGTERM);
    wait_for_file(&log);
    send(&child, Signal::SIGINT);
    let status = wait_bounded(&mut child);
    let out = finish(child);
    assert_eq!(status.code(), Some(128 + 9), "{out:#?}");
    // The lock was released after the kill.
    t.run(&["run", "-n", "k", "--", "true"]).expect_code(0);
}

/// The command starts as if run by a shell: no signal blocked or caught because
/// fencelock (or its guard) handles them.
#[test]
fn the_command_starts_with_default_signal_handling() {
    let t = Setup::sqlite();
    let out = t.run(&[
        "run",
        "k",
        "--",
        "grep",
        "-E",
        "^Sig(Blk|Ign)",
        "/proc/self/status",
    ]);
    out.expect_code(0);
    let field = |name: &str| {
        out.stdout
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| u64::from_str_radix(v.trim(), 16).expect("hex"))
            .expect("field")
    };
    assert_eq!(field("SigBlk:"), 0, "{out:#?}");
    // SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGPIPE, SIGCHLD are not ignored.
    for sig in [2, 15, 1, 3, 13, 17] {
        assert_eq!(
            field("SigIgn:") & (1 << (sig - 1)),
            0,
            "signal {sig}: {out:#?}"
        );
    }
}

/// fencelock stopped by SIGTSTP (Ctrl-Z when the terminal is not lent to the command,
/// or `kill -TSTP`) stops the command too — it must not run on while nobody renews
/// the lease — and SIGCONT resumes both while the lease is valid.
#[test]
fn sigtstp_to_fencelock_stops_the_command_too() {
    let t = Setup::sqlite();
    let file = t.path("pid");
    let script = format!(
        "echo $$ > '{}'; while :; do sleep 0.05; done",
        file.display()
    );
    let mut child = t.spawn(&["run", "--ttl", "30s", "k", "-c", &script]);
    let pid = pids(&file)[0];
    let fencelock = child.id() as i32;
    // The handler is in place before the command starts (it wrote its pid).
    send(&child, Signal::SIGTSTP);
    wait_stopped(fencelock, true);
    wait_stopped(pid, true);
    send(&child, Signal::SIGCONT);
    wait_stopped(pid, false);
    t.run(&["status", "--held", "k"]).expect_code(0);
    send(&child, Signal::SIGTERM);
    let status = wait_bounded(&mut child);
    assert_eq!(status.code(), Some(128 + 15), "{:#?}", finish(child));
}

/// Continued after the lease expired: the command is killed, and fencelock exits 75.
#[test]
fn sigcont_after_the_lease_expired_kills_the_command() {
    let t = Setup::sqlite();
    let file = t.path("pid");
    let script = format!(
        "echo $$ > '{}'; while :; do sleep 0.05; done",
        file.display()
    );
    let mut child = t.spawn(&["run", "--ttl", "1s", "k", "-c", &script]);
    let pid = pids(&file)[0];
    send(&child, Signal::SIGTSTP);
    wait_stopped(child.id() as i32, true);
    wait_stopped(pid, true);
    let deadline = Instant::now() + PATIENCE;
    while t.run(&["status", "--held", "k"]).code != Some(5) {
        assert!(Instant::now() < deadline, "the stopped job kept the lock");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    send(&child, Signal::SIGCONT);
    let status = wait_bounded(&mut child);
    assert_eq!(status.code(), Some(75), "{:#?}", finish(child));
    wait_gone(pid);
}
