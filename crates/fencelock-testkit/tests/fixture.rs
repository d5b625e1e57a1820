//! Tests of the fixture itself: if it lies about the servers' state, every test,
//! chaos run and benchmark built on it is worthless.
//!
//! These use only redis-rs, std, tempfile and the fixture, never fencelock.

use std::net::TcpStream;
use std::time::{Duration, Instant};

use fencelock_testkit::{
    Certs, Cluster, Persistence, ProcessOptions, RedisCluster, RedisProcess, Server, panic_message,
};

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

#[test]
fn an_aof_node_comes_back_from_a_crash_with_its_data() {
    let cluster = Cluster::start_with_options(
        2,
        &ProcessOptions::new().persistence(Persistence::AofAlways),
    );
    cluster.set(0, "kept", "v", 0);
    let port = cluster.port(0);
    cluster.kill(0);
    cluster.restart(0);
    assert_eq!(cluster.port(0), port);
    assert_eq!(cluster.get(0, "kept").as_deref(), Some("v"), "AOF reloaded");
    // restart() of a running node (a crash without a kill first) keeps it too.
    cluster.restart(0);
    assert_eq!(cluster.get(0, "kept").as_deref(), Some("v"));
}

#[test]
fn a_password_node_is_read_with_its_password() {
    let cluster = Cluster::start_with_args(1, &["--requirepass", "s3cret"]);
    // Without the password a client is refused; the helpers authenticate.
    let err = ping(&cluster.url(0), Duration::from_secs(2)).expect_err("NOAUTH");
    assert!(err.to_string().contains("NOAUTH"), "{err}");
    cluster.set(0, "k", "v", 0);
    assert_eq!(cluster.get(0, "k").as_deref(), Some("v"));
    assert_eq!(
        ping(
            &cluster.url_with_password(0, "s3cret"),
            Duration::from_secs(2)
        )
        .expect("PING"),
        "PONG"
    );
    // redis-cli speaks for itself (no password: refused, and says so in its output).
    assert!(cluster.redis_cli(0, &["PING"]).contains("NOAUTH"));
}

#[test]
fn a_tls_server_speaks_tls_only() {
    let certs = Certs::generate();
    let server = Server::start_tls(&certs, &[]);
    assert_eq!(
        server.url(),
        format!("rediss://127.0.0.1:{}", server.port())
    );
    assert!(server.log().contains("Ready to accept connections"));
    // A plain-text PING gets no PONG from a TLS port.
    assert!(
        ping(
            &format!("redis://127.0.0.1:{}", server.port()),
            Duration::from_millis(500)
        )
        .is_err()
    );
    let pid = server.process().pid().expect("running");
    let port = server.port();
    drop(server);
    assert!(process_gone(pid, port), "TLS server outlived its Server");
}

#[test]
fn a_plain_server_runs_commands() {
    let server = Server::start(&["--maxmemory-policy", "noeviction"]);
    assert_eq!(
        server.run(&["CONFIG", "GET", "maxmemory-policy"]),
        redis::Value::Array(vec![
            redis::Value::BulkString(b"maxmemory-policy".to_vec()),
            redis::Value::BulkString(b"noeviction".to_vec()),
        ])
    );
    assert_eq!(server.url(), format!("redis://127.0.0.1:{}", server.port()));
}

#[test]
fn a_fixed_port_that_is_taken_is_a_clear_error() {
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = squatter.local_addr().expect("addr").port();
    let err = RedisProcess::start(ProcessOptions::new().port(port).name("squatted"))
        .expect_err("the port is taken");
    let msg = err.to_string();
    assert!(
        msg.contains("squatted") && msg.contains("Address already in use"),
        "{msg}"
    );
}

#[test]
fn a_redis_cluster_forms_and_routes_keys() {
    let cluster = RedisCluster::start();
    assert!(cluster.url().starts_with("redis+cluster://127.0.0.1:"));
    for i in 0..3 {
        let key = cluster.key_on(i, "k");
        assert_eq!(cluster.owner_of(&key), i);
        cluster.set(&key, "v", 0);
        assert_eq!(cluster.get(&key).as_deref(), Some("v"));
        assert_eq!(cluster.nodes().get(i, &key).as_deref(), Some("v"));
    }
    assert_eq!(cluster.all_keys().len(), 3);
}
