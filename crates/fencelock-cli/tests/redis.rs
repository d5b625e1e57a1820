//! The CLI against real `redis-server` processes: one node, and a 3-node Redlock
//! cluster (with nodes frozen to make a lease lost).

mod support;

use std::time::Duration;

use nix::sys::signal::Signal;
use support::scenarios::{self, Setup};
use support::{Cluster, alive, finish, wait_bounded, wait_for_file};

macro_rules! on_cluster {
    ($($name:ident),* $(,)?) => {
        mod three_nodes {
            use super::*;
            $(#[test] fn $name() {
                let cluster = Cluster::start(3);
                scenarios::$name(&Setup::new(cluster.urls()));
            })*
        }
        mod one_node {
            use super::*;
            $(#[test] fn $name() {
                let cluster = Cluster::start(1);
                scenarios::$name(&Setup::new(cluster.urls()));
            })*
        }
    };
}

on_cluster!(
    exit_status_passes_through,
    env_reaches_the_command,
    not_acquired,
    sigterm_reaches_the_command,
    interrupted_while_waiting,
    runs_never_overlap,
    acquire_extend_release_script,
    status_shows_the_holder,
    status_lists_keys_under_prefix,
    command_cannot_run,
    prefix_separates_namespaces,
    hold_at_least_runs_a_job_once,
    max_runtime_stops_an_overrunning_job,
    once_per_runs_a_job_once_per_slot,
);

/// Freezes two of three nodes while `run` holds a short lease: renewal cannot reach a
/// majority, so the lease is lost, the command gets SIGTERM, and fencelock exits 75.
#[test]
fn lease_lost_stops_the_command() {
    let cluster = Cluster::start(3);
    let t = Setup::new(cluster.urls());
    let ready = t.path("ready");
    let got = t.path("got");
    let script = format!(
        "trap 'echo TERM > \"{}\"; exit 0' TERM; touch '{}'; while :; do sleep 0.05; done",
        got.display(),
        ready.display()
    );
    let child = t.spawn(&[
        "run",
        "--ttl",
        "1s",
        "--kill-after",
        "10s",
        "lost",
        "-c",
        &script,
    ]);
    wait_for_file(&ready);
    cluster.pause(0);
    cluster.pause(1);
    let out = finish(child);
    cluster.resume(0);
    cluster.resume(1);
    assert_eq!(out.code, Some(75), "{out:#?}\n{}", cluster.logs());
    assert!(out.stderr.contains("lost"), "{out:#?}");
    assert_eq!(std::fs::read_to_string(&got).expect("trap ran"), "TERM\n");
}

/// A command that ignores SIGTERM is killed, with everything in its process group,
/// no later than the end of the lease's validity (--kill-after is longer).
#[test]
fn lease_lost_kills_a_stubborn_command() {
    let cluster = Cluster::start(3);
    let t = Setup::new(cluster.urls());
    let pids = t.path("pids");
    let script = format!(
        "trap '' TERM; sleep 60 & echo $$ $! > '{}'; while :; do sleep 0.05; done",
        pids.display()
    );
    let mut child = t.spawn(&[
        "run",
        "--ttl",
        "1s",
        "--kill-after",
        "60s",
        "stubborn",
        "-c",
        &script,
    ]);
    wait_for_file(&pids);
    std::thread::sleep(Duration::from_millis(50));
    let pids: Vec<i32> = std::fs::read_to_string(&pids)
        .expect("pids")
        .split_whitespace()
        .map(|p| p.parse().expect("pid"))
        .collect();
    cluster.pause(1);
    cluster.pause(2);
    let status = wait_bounded(&mut child);
    cluster.resume(1);
    cluster.resume(2);
    let out = finish(child);
    assert_eq!(status.code(), Some(75), "{out:#?}");
    for pid in pids {
        // Reaped by init soon after the kill; give it a moment.
        let deadline = std::time::Instant::now() + support::PATIENCE;
        while alive(pid) && !is_zombie(pid) {
            assert!(std::time::Instant::now() < deadline, "{pid} survived");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .is_some_and(|r| r.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// Stores that cannot be reached: exit 69 with one line, never a hang (even when
/// waiting for the lock without a deadline), never the password.
#[test]
fn unreachable_and_down_stores() {
    let t = Setup::new(vec!["redis://:secret@127.0.0.1:1".into()]);
    for args in [
        &["run", "k", "--", "true"][..],
        &["run", "-n", "k", "--", "true"],
        &["run", "-w", "1s", "k", "--", "true"],
        &["acquire", "k"],
        &["status", "k"],
    ] {
        let out = t.run(args);
        out.expect_code(69).expect_one_error_line();
        assert!(!out.stderr.contains("secret"), "{out:#?}");
    }

    // Two of three nodes down: no quorum.
    let cluster = Cluster::start(1);
    let mut urls = cluster.urls();
    urls.push("redis://127.0.0.1:1".into());
    urls.push("redis://127.0.0.1:2".into());
    Setup::new(urls)
        .run(&["run", "-n", "k", "--", "true"])
        .expect_code(69)
        .expect_one_error_line();
}

#[test]
fn wrong_password_is_a_config_error() {
    let cluster = Cluster::start_with_args(1, &["--requirepass", "right"]);
    let t = Setup::new(vec![cluster.url_with_password(0, "wrong")]);
    for args in [
        &["run", "k", "--", "true"][..],
        &["run", "-n", "k", "--", "true"],
    ] {
        let out = t.run(args);
        out.expect_code(78).expect_one_error_line();
        assert!(!out.stderr.contains("wrong"), "password printed: {out:#?}");
    }
    Setup::new(vec![cluster.url_with_password(0, "right")])
        .run(&["run", "k", "--", "true"])
        .expect_code(0);
}

#[test]
fn sigint_is_forwarded_and_fencelock_waits_for_the_command() {
    let cluster = Cluster::start(1);
    let t = Setup::new(cluster.urls());
    let ready = t.path("ready");
    let done = t.path("done");
    // The command takes its time to finish after Ctrl-C; fencelock must wait for it.
    let script = format!(
        "trap 'sleep 0.2; echo cleaned > \"{}\"; exit 130' INT; touch '{}'; while :; do sleep 0.05; done",
        done.display(),
        ready.display()
    );
    let mut child = t.spawn(&["run", "ctrlc", "-c", &script]);
    wait_for_file(&ready);
    support::send(&child, Signal::SIGINT);
    let status = wait_bounded(&mut child);
    assert_eq!(status.code(), Some(130), "{:#?}", finish(child));
    assert!(done.exists(), "fencelock exited before its command");
    t.run(&["run", "-n", "ctrlc", "--", "true"]).expect_code(0);
}

/// A user with the minimum ACL may lock but not list keys (no SCAN): `status` without
/// keys is refused for good, a configuration error (78) and not "unavailable" (69),
/// since retrying cannot help.
#[test]
fn missing_acl_permission_is_a_config_error() {
    let cluster = Cluster::start(1);
    let mut args = vec!["ACL", "SETUSER", "app", "reset"];
    args.extend(
        fencelock::MINIMUM_ACL
            .split_whitespace()
            .map(|rule| if rule == ">PASSWORD" { ">pw-42" } else { rule }),
    );
    cluster.redis_cli(0, &args);
    let t = Setup::new(vec![cluster.url_for_user(0, "app", "pw-42")]);
    t.run(&["--prefix", "app:", "run", "k", "--", "true"])
        .expect_code(0);
    let out = t.run(&["--prefix", "app:", "status"]);
    out.expect_code(78).expect_one_error_line();
    assert!(!out.stderr.contains("pw-42"), "{out:#?}");
}

/// `status --held` answers "is it held?" by its exit code, printing nothing.
#[test]
fn status_held_is_an_exit_code() {
    let cluster = Cluster::start(3);
    let t = Setup::new(cluster.urls());
    let holder = t.hold("busy");
    let out = t.run(&["status", "--held", "busy"]);
    out.expect_code(0);
    assert_eq!(out.stdout, "", "{out:#?}");
    t.run(&["status", "--held", "free"])
        .expect_code(5)
        .expect_one_error_line();
    t.run(&["status", "--held", "busy", "free"]).expect_code(5);
    scenarios::stop(holder);
    t.run(&["status", "--held", "busy"]).expect_code(5);
    // The stores cannot tell: not "free".
    Setup::new(vec!["redis://127.0.0.1:1".into()])
        .run(&["status", "--held", "busy"])
        .expect_code(69);
}

/// Issue #17's report, as a user saw it: a redis-py `Lock` holds the key with a long
/// TTL and releases it after a second; `fencelock run --wait` started meanwhile must
/// get the key in the gap before an intruder takes it with `SET NX` eight seconds
/// later — not when the redis-py TTL (60 s) or its own wait (20 s) runs out.
#[test]
fn run_notices_a_redis_py_release() {
    use std::io::BufRead as _;
    let cluster = Cluster::start(1);
    let t = Setup::new(cluster.urls());
    let interop = fencelock_testkit::foreign::interop_dir();
    let python = fencelock_testkit::foreign::redis_py_python().unwrap_or_else(|e| panic!("{e}"));
    let mut py = std::process::Command::new(&python)
        .arg(interop.join("redis_py_lock.py"))
        .args(["--url", &cluster.urls()[0], "--key", "shared"])
        .args(["--ttl-ms", "60000", "--hold-ms", "1000"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running {}: {e}", python.display()));
    // Kept open until the client is done: it prints `released` at the end.
    let mut said = std::io::BufReader::new(py.stdout.take().expect("stdout"));
    let mut line = String::new();
    said.read_line(&mut line).expect("read");
    assert!(line.starts_with("acquired"), "redis-py said {line:?}");
    let url = cluster.urls()[0].clone();
    let intruder = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(8));
        let mut con = redis::Client::open(url)
            .and_then(|c| c.get_connection())
            .expect("connect");
        let taken: Option<String> = redis::cmd("SET")
            .arg("shared")
            .arg("intruder")
            .arg("NX")
            .arg("PX")
            .arg(60_000)
            .query(&mut con)
            .expect("SET NX");
        taken.is_some()
    });
    let out = t.run(&["run", "--wait", "20s", "shared", "--", "sleep", "9"]);
    out.expect_code(0);
    assert!(
        !intruder.join().expect("intruder"),
        "the intruder got the key while `fencelock run` should have held it"
    );
    line.clear();
    said.read_line(&mut line).expect("read");
    assert!(line.starts_with("released"), "redis-py said {line:?}");
    assert!(py.wait().expect("redis-py client").success());
}

/// `--counter-retention` / `FENCELOCK_COUNTER_RETENTION` reach the library: without it
/// a released key's counter is gone within a millisecond or so; with 10m it stays about
/// ten minutes; more than 30 days is a usage error.
#[test]
fn counter_retention_from_the_command_line() {
    let cluster = Cluster::start(1);
    let t = Setup::new(cluster.urls());
    t.run(&["run", "plain", "--", "true"]).expect_code(0);
    t.run(&["--counter-retention", "10m", "run", "kept", "--", "true"])
        .expect_code(0);
    let pttl = |key: &str| -> i64 {
        cluster
            .redis_cli(0, &["PTTL", &format!("{key}:fencelock:fence")])
            .trim()
            .parse()
            .expect("PTTL")
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while pttl("plain") != -2 {
        assert!(
            std::time::Instant::now() < deadline,
            "counter never retired"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let kept = pttl("kept");
    assert!(
        kept > 60_000 && kept <= 600_000,
        "counter PTTL {kept} ms with --counter-retention 10m"
    );
    let refused = t.run(&["--counter-retention", "31d", "run", "x", "--", "true"]);
    assert_ne!(refused.code, Some(0), "{refused:?}");
    assert!(
        refused.stderr.contains("counter retention"),
        "{}",
        refused.stderr
    );
}

/// `status` without keys lists the locks a majority holds while a node of three is
/// paused, and says which node it could not ask: before, it listed what the others
/// knew and said nothing of the missing node ("no keys locked recently" with every
/// lock gone from view would have looked the same).
#[test]
fn status_listing_names_a_node_that_did_not_answer() {
    let cluster = Cluster::start(3);
    let t = Setup::new(cluster.urls());
    let held = t.run(&["acquire", "listed", "--ttl", "60s"]);
    held.expect_code(0);
    cluster.pause(2);
    let out = t.run(&["status"]);
    cluster.resume(2);
    out.expect_code(0);
    assert!(out.stdout.contains("listed"), "{out:#?}");
    let paused = &cluster.urls()[2];
    assert!(
        out.stderr.contains("warning") && out.stderr.contains(paused.as_str()),
        "no word of the paused node {paused}: {out:#?}"
    );
}
