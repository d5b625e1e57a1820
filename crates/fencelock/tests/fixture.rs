//! Tests of the integration-test fixture itself (`tests/support`): if the fixture
//! lies about the servers' state, every other integration test is worthless.
//!
//! These use only redis-rs, std, tempfile and nix, never fencelock.

mod support;

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::panic::{self, AssertUnwindSafe};
use std::path::Path;
use std::time::{Duration, Instant};

use support::Cluster;
use support::interop;

/// Whether the process with this PID is gone. A PID could in theory be reused
/// by an unrelated process; only a redis-server on the same port counts as ours.
fn process_gone(pid: u32, port: u16) -> bool {
    match std::fs::read(format!("/proc/{pid}/cmdline")) {
        Err(_) => true,
        Ok(cmdline) => {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            !(cmdline.contains("redis-server") && cmdline.contains(&port.to_string()))
        }
    }
}

/// The panic message of `f`, which must panic.
fn panic_message(f: impl FnOnce()) -> String {
    let payload = panic::catch_unwind(AssertUnwindSafe(f)).expect_err("expected a panic");
    if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else {
        "<non-string panic payload>".to_owned()
    }
}

/// PING with client-side connect/read/write timeouts; `Err` on any failure.
fn ping(url: &str, timeout: Duration) -> redis::RedisResult<String> {
    let client = redis::Client::open(url)?;
    let mut con = client.get_connection_with_timeout(timeout)?;
    con.set_read_timeout(Some(timeout))?;
    con.set_write_timeout(Some(timeout))?;
    redis::cmd("PING").query(&mut con)
}

#[test]
fn starts_independent_nodes_and_reads_their_state() {
    let cluster = Cluster::start(3);
    assert_eq!(cluster.len(), 3);
    let urls = cluster.urls();
    assert_eq!(urls.len(), 3);
    let mut ports: Vec<u16> = (0..3).map(|i| cluster.port(i)).collect();
    for (i, url) in urls.iter().enumerate() {
        assert_eq!(*url, format!("redis://127.0.0.1:{}", cluster.port(i)));
        assert_eq!(cluster.url(i), *url);
        assert!(cluster.is_running(i));
        assert!(!cluster.is_paused(i));
        assert_eq!(ping(url, Duration::from_secs(2)).expect("PING"), "PONG");
        assert!(cluster.keys(i).is_empty(), "node {i} starts empty");
        assert!(cluster.log(i).contains("Ready to accept connections"));
    }
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), 3, "every node has its own port");

    // Nodes are independent: a write to one is invisible on the others.
    cluster.set(0, "lock:a", "v0", 10_000);
    cluster.set(0, "counter", "7", 0);
    assert_eq!(cluster.get(0, "lock:a").as_deref(), Some("v0"));
    assert_eq!(cluster.get(1, "lock:a"), None);
    assert_eq!(
        cluster.keys(0),
        vec!["counter".to_owned(), "lock:a".to_owned()]
    );
    assert_eq!(
        cluster.keys_matching(0, "lock:*"),
        vec!["lock:a".to_owned()]
    );
    assert!(cluster.keys(1).is_empty());

    let pttl = cluster.pttl(0, "lock:a");
    assert!(0 < pttl && pttl <= 10_000, "pttl {pttl}");
    assert_eq!(cluster.pttl(0, "counter"), -1, "no expiry");
    assert_eq!(cluster.pttl(0, "missing"), -2, "no key");

    // assert_no_keys_left: a prefix, a pattern, and the report names node and key.
    cluster.assert_no_keys_left("other:");
    let msg = panic_message(|| cluster.assert_no_keys_left("lock:"));
    assert!(msg.contains("node 0") && msg.contains("lock:a"), "{msg}");
    assert!(
        !msg.contains("counter"),
        "prefix lock: must not match counter: {msg}"
    );
    let msg = panic_message(|| cluster.assert_no_keys_left("*"));
    assert!(msg.contains("counter") && msg.contains("lock:a"), "{msg}");

    cluster.flushall(0);
    assert!(cluster.keys(0).is_empty());
    cluster.assert_no_keys_left("*");
}

#[test]
fn a_key_expires_after_its_px() {
    let cluster = Cluster::start(1);
    cluster.set(0, "short", "v", 50);
    let deadline = Instant::now() + Duration::from_secs(2);
    while cluster.get(0, "short").is_some() {
        assert!(
            Instant::now() < deadline,
            "key with PX 50 still there after 2 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(cluster.pttl(0, "short"), -2);
}

#[test]
fn pause_makes_requests_time_out_until_resume() {
    let cluster = Cluster::start(3);
    cluster.set(1, "k", "before", 0);
    cluster.pause(1);
    assert!(cluster.is_paused(1));
    assert!(cluster.is_running(1), "a paused node is still running");

    // The kernel still completes TCP handshakes for a stopped process, so this
    // is a timeout, not a refusal.
    let err = ping(&cluster.url(1), Duration::from_millis(300))
        .expect_err("PING to a paused node must fail");
    assert!(
        err.is_timeout(),
        "expected a time-out, not a refusal: {err}"
    );

    // Other nodes are unaffected.
    assert_eq!(
        ping(&cluster.url(0), Duration::from_secs(2)).expect("PING node 0"),
        "PONG"
    );
    assert_eq!(cluster.get(2, "k"), None);

    // The state helpers refuse a paused node at once instead of timing out.
    let msg = panic_message(|| {
        cluster.get(1, "k");
    });
    assert!(msg.contains("paused"), "{msg}");

    cluster.resume(1);
    assert!(!cluster.is_paused(1));
    assert_eq!(
        ping(&cluster.url(1), Duration::from_secs(2)).expect("PING after resume"),
        "PONG"
    );
    assert_eq!(
        cluster.get(1, "k").as_deref(),
        Some("before"),
        "data survives a pause"
    );
}

#[test]
fn kill_then_restart_comes_back_empty_on_the_same_port() {
    let cluster = Cluster::start(3);
    let port = cluster.port(0);
    let old_pid = cluster.pid(0).expect("node 0 runs");
    cluster.set(0, "k", "v", 0);

    cluster.kill(0);
    assert!(!cluster.is_running(0));
    assert_eq!(cluster.pid(0), None);
    assert!(
        process_gone(old_pid, port),
        "PID {old_pid} still exists after kill"
    );
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "port {port} still accepts connections after kill"
    );
    assert!(ping(&cluster.url(0), Duration::from_millis(300)).is_err());
    // The other nodes keep running.
    assert!(cluster.is_running(1) && cluster.is_running(2));

    // Helpers and fault controls on a dead node fail clearly, quoting the log.
    let msg = panic_message(|| {
        cluster.keys(0);
    });
    assert!(msg.contains("not running"), "{msg}");
    let msg = panic_message(|| cluster.kill(0));
    assert!(
        msg.contains("not running") && msg.contains("Ready to accept connections"),
        "panic should quote the server log: {msg}"
    );

    cluster.restart(0);
    assert!(cluster.is_running(0));
    assert_eq!(cluster.port(0), port, "restart keeps the port");
    let new_pid = cluster.pid(0).expect("node 0 runs again");
    assert_ne!(new_pid, old_pid);
    assert!(
        cluster.keys(0).is_empty(),
        "restart comes back empty: {:?}",
        cluster.keys(0)
    );
    assert_eq!(
        ping(&cluster.url(0), Duration::from_secs(2)).expect("PING"),
        "PONG"
    );
    // The log keeps every run.
    assert_eq!(
        cluster
            .log(0)
            .matches("Ready to accept connections")
            .count(),
        2
    );

    // restart() of a running node is a crash and a comeback.
    cluster.set(0, "k2", "v", 0);
    cluster.restart(0);
    assert!(process_gone(new_pid, port));
    assert!(cluster.keys(0).is_empty());

    // kill() works on a paused node (SIGKILL ends stopped processes).
    let paused_pid = cluster.pid(1).expect("node 1 runs");
    cluster.pause(1);
    cluster.kill(1);
    assert!(!cluster.is_running(1) && !cluster.is_paused(1));
    assert!(process_gone(paused_pid, cluster.port(1)));
    cluster.restart(1);
    assert_eq!(
        ping(&cluster.url(1), Duration::from_secs(2)).expect("PING"),
        "PONG"
    );
}

#[test]
fn command_stats_count_direct_and_scripted_calls() {
    let cluster = Cluster::start(1);
    cluster.reset_stats(0);
    assert_eq!(cluster.command_calls(0, "pexpire"), 0, "never called");

    cluster.set(0, "k", "v", 10_000);
    let mut con = cluster.connection(0);
    for _ in 0..3 {
        let _: i64 = redis::cmd("PEXPIRE")
            .arg("k")
            .arg(20_000)
            .query(&mut con)
            .expect("PEXPIRE");
    }
    // Renewal runs PEXPIRE inside Lua: those calls must be counted too.
    let script = redis::Script::new("return redis.call('pexpire', KEYS[1], ARGV[1])");
    for _ in 0..2 {
        let _: i64 = script
            .key("k")
            .arg(30_000)
            .invoke(&mut con)
            .expect("script PEXPIRE");
    }
    assert_eq!(cluster.command_calls(0, "pexpire"), 5);
    assert_eq!(cluster.command_calls(0, "PEXPIRE"), 5, "case-insensitive");
    assert!(cluster.command_calls(0, "evalsha") + cluster.command_calls(0, "eval") >= 2);
    assert_eq!(cluster.command_calls(0, "set"), 1);

    cluster.reset_stats(0);
    assert_eq!(cluster.command_calls(0, "pexpire"), 0);
    assert_eq!(cluster.command_calls(0, "set"), 0);
}

#[test]
fn numsub_counts_subscribers() {
    let cluster = Cluster::start(1);
    assert_eq!(cluster.numsub(0, "fencelock:released"), 0);
    let mut con = cluster.connection(0);
    {
        let mut pubsub = con.as_pubsub();
        pubsub.subscribe("fencelock:released").expect("SUBSCRIBE");
        assert_eq!(cluster.numsub(0, "fencelock:released"), 1);
        assert_eq!(cluster.numsub(0, "other"), 0);
        pubsub
            .unsubscribe("fencelock:released")
            .expect("UNSUBSCRIBE");
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    while cluster.numsub(0, "fencelock:released") != 0 {
        assert!(
            Instant::now() < deadline,
            "still subscribed after UNSUBSCRIBE"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn drop_kills_every_node_even_paused_or_killed() {
    let cluster = Cluster::start(3);
    let nodes: Vec<(u32, u16)> = (0..3)
        .map(|i| (cluster.pid(i).expect("running"), cluster.port(i)))
        .collect();
    cluster.pause(1);
    cluster.kill(2);
    drop(cluster);
    for (pid, port) in nodes {
        assert!(
            process_gone(pid, port),
            "redis-server PID {pid} outlived the Cluster"
        );
        assert!(
            TcpStream::connect(("127.0.0.1", port)).is_err(),
            "port {port} still accepts connections after drop"
        );
    }
}

#[test]
fn drop_while_a_test_panics_still_kills_the_nodes() {
    let mut seen = Vec::new();
    let msg = panic_message(|| {
        let cluster = Cluster::start(2);
        seen = (0..2)
            .map(|i| (cluster.pid(i).expect("running"), cluster.port(i)))
            .collect();
        cluster.pause(0);
        panic!("the test failed");
    });
    assert_eq!(msg, "the test failed");
    assert_eq!(seen.len(), 2);
    for (pid, port) in seen {
        assert!(
            process_gone(pid, port),
            "PID {pid} outlived a panicking test"
        );
    }
}

// ----- interop support ------------------------------------------------------------

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

#[test]
fn restart_waits_out_a_port_held_by_another_process() {
    let cluster = Cluster::start(1);
    let port = cluster.port(0);
    cluster.kill(0);
    // Someone else grabs the port; restart must see its server fail to bind
    // ("Address already in use") and retry instead of talking to the squatter.
    let squatter =
        std::net::TcpListener::bind(("127.0.0.1", port)).expect("binding the freed port");
    std::thread::scope(|scope| {
        // The squatter lets go only once a restart attempt has failed on its port, so
        // the test sees the retry however slowly the machine runs.
        scope.spawn(|| {
            // (Bounded, so a restart that panics cannot leave this thread spinning;
            // the log assertion below then says what went wrong.)
            for _ in 0..3000 {
                if cluster.log(0).contains("Address already in use") {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            drop(squatter);
        });
        cluster.restart(0);
    });
    assert_eq!(cluster.port(0), port);
    assert_eq!(
        ping(&cluster.url(0), Duration::from_secs(2)).expect("PING"),
        "PONG"
    );
    assert!(
        cluster.log(0).contains("Address already in use"),
        "the failed attempts should be in the log"
    );
}

#[test]
fn a_cluster_can_be_shared_between_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Cluster>();

    let cluster = std::sync::Arc::new(Cluster::start(2));
    let faults = {
        let cluster = std::sync::Arc::clone(&cluster);
        std::thread::spawn(move || {
            cluster.pause(0);
            std::thread::sleep(Duration::from_millis(100));
            cluster.resume(0);
            cluster.kill(1);
        })
    };
    faults.join().expect("fault-injection thread");
    assert!(!cluster.is_paused(0) && cluster.is_running(0));
    assert!(!cluster.is_running(1));
}
