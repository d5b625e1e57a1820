//! Tests of the interop support (`tests/support/interop.rs`): the `redlock` npm
//! client the wire-compatibility tests drive, and the checker of the critical-section
//! logs both clients write. (The tests of the redis-server fixture itself are in
//! crates/fencelock-testkit/tests/fixture.rs.)
//!
//! These use only redis-rs, std, tempfile and the fixture, never fencelock.

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::time::Duration;

use fencelock_testkit::panic_message;
use support::Cluster;
use support::interop;

fn write_log(dir: &Path, lines: &[&str]) -> std::path::PathBuf {
    let path = dir.join("sections.log");
    let _ = std::fs::remove_file(&path);
    for line in lines {
        interop::append_line(&path, line);
    }
    path
}

#[test]
fn assert_exclusive_accepts_sequential_sections_and_rejects_overlaps() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ok = write_log(
        dir.path(),
        &[
            "npm enter 0",
            "npm exit 0",
            "fl enter 0 tok=5",
            "fl exit 0",
            "npm enter 1",
            "npm exit 1",
        ],
    );
    let counts = interop::assert_exclusive(&ok);
    assert_eq!(counts.get("npm"), Some(&2));
    assert_eq!(counts.get("fl"), Some(&1));

    let overlap = write_log(
        dir.path(),
        &["npm enter 0", "fl enter 0", "npm exit 0", "fl exit 0"],
    );
    let msg = panic_message(|| {
        interop::assert_exclusive(&overlap);
    });
    assert!(
        msg.contains("mutual exclusion violated") && msg.contains(":2:"),
        "{msg}"
    );

    let wrong_exit = write_log(dir.path(), &["npm enter 0", "npm exit 1"]);
    let msg = panic_message(|| {
        interop::assert_exclusive(&wrong_exit);
    });
    assert!(msg.contains("does not match"), "{msg}");

    let unterminated = write_log(dir.path(), &["fl enter 3"]);
    let msg = panic_message(|| {
        interop::assert_exclusive(&unterminated);
    });
    assert!(msg.contains("never exited"), "{msg}");

    let malformed = write_log(dir.path(), &["npm enter"]);
    let msg = panic_message(|| {
        interop::assert_exclusive(&malformed);
    });
    assert!(msg.contains("malformed"), "{msg}");
}

#[test]
fn redlock_npm_clients_exclude_each_other() {
    let cluster = Cluster::start(3);
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("sections.log");
    let urls = cluster.urls().join(",");
    let key = "interop:fixture";
    let spawn = |name: &str| {
        interop::spawn_redlock_client([
            "--urls",
            &urls,
            "--key",
            key,
            "--ttl-ms",
            "2000",
            "--iterations",
            "15",
            "--hold-ms",
            "3",
            "--name",
            name,
            "--log",
            log.to_str().expect("utf-8 path"),
        ])
    };
    let a = spawn("a");
    let b = spawn("b");
    interop::wait_success(a, Duration::from_secs(60));
    interop::wait_success(b, Duration::from_secs(60));
    let counts = interop::assert_exclusive(&log);
    assert_eq!(counts.get("a"), Some(&15), "{counts:?}");
    assert_eq!(counts.get("b"), Some(&15), "{counts:?}");
    cluster.assert_no_keys_left(key);
}

#[test]
fn redlock_npm_hold_mode_reports_its_lock() {
    let cluster = Cluster::start(3);
    let key = "interop:hold";
    let mut child = interop::spawn_redlock_client([
        "--mode",
        "hold",
        "--urls",
        &cluster.urls().join(","),
        "--key",
        key,
        "--ttl-ms",
        "5000",
        "--hold-ms",
        "500",
    ]);
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let first = lines
        .next()
        .expect("an `acquired` line")
        .expect("reading the client's stdout");
    let value = first
        .strip_prefix("acquired ")
        .unwrap_or_else(|| panic!("expected `acquired <value>`, got {first:?}"));
    assert_eq!(
        value.len(),
        32,
        "redlock values are 16 random bytes in hex: {value:?}"
    );

    // Held: the lock key holds the client's value with a PX ttl on a majority.
    let holding: Vec<usize> = (0..3)
        .filter(|&i| cluster.get(i, key).as_deref() == Some(value))
        .collect();
    assert!(holding.len() >= 2, "value on nodes {holding:?} only");
    for &i in &holding {
        let pttl = cluster.pttl(i, key);
        assert!(0 < pttl && pttl <= 5000, "pttl {pttl} on node {i}");
    }

    let second = lines
        .next()
        .expect("a `released` line")
        .expect("reading the client's stdout");
    assert!(
        second
            .strip_prefix("released ")
            .is_some_and(|ms| ms.parse::<f64>().is_ok()),
        "want `released <wall clock ms>`, got {second:?}"
    );
    interop::wait_success(child, Duration::from_secs(10));
    cluster.assert_no_keys_left(key);
}
