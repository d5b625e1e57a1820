//! Production hardening against real `redis-server` processes: TLS with a CA the test
//! makes, ACL users confined to a key prefix, passwords from the environment or a file
//! and never printed, the start-up checks (replica, same server twice, eviction policy,
//! even node count), and one typed, named error per failure a node can answer with.

mod support;

use std::time::Duration;

use fencelock::{Locker, NodeErrorKind, ReleaseOutcome, Severity};
use fencelock_testkit::{Certs, Server};
use support::Cluster;

const TTL: Duration = Duration::from_secs(5);
/// The TTL of a lease a waiter waits for. The waiter gives up after `NOTICE_WAIT`, half
/// of it, so only the holder's release notice can hand it the lock: the key would still
/// live for a long time. No tight timing: the margins are tens of seconds.
const HELD: Duration = Duration::from_secs(60);
const NOTICE_WAIT: Duration = Duration::from_secs(30);

/// A waiter for `key` that gives up after [`NOTICE_WAIT`].
fn spawn_waiter(
    locker: &Locker,
    key: &'static str,
) -> tokio::task::JoinHandle<fencelock::Result<fencelock::Lease>> {
    let locker = locker.clone();
    tokio::spawn(async move {
        locker
            .acquire_with(
                key,
                TTL,
                &fencelock::AcquireOptions::default().max_wait(NOTICE_WAIT),
            )
            .await
    })
}

const PASSWORD: &str = "s3cret-Pa55word-never-printed";

fn builder() -> fencelock::LockerBuilder {
    Locker::builder()
        .request_timeout(Duration::from_millis(1000))
        .connect_timeout(Duration::from_secs(2))
        .max_wait(Some(Duration::from_secs(2)))
}

// ----- TLS ----------------------------------------------------------------------------

#[tokio::test]
async fn tls_with_the_ca_works() {
    let certs = Certs::generate();
    let server = Server::start_tls(&certs, &[]);
    let url = format!("{}?ca={}", server.url(), certs.ca.display());
    let locker = builder().store(&url).build().expect("locker");
    let lease = locker
        .try_acquire("tls:a", TTL)
        .await
        .expect("acquire over TLS");
    lease.extend(TTL).await.expect("extend over TLS");
    assert_eq!(lease.release().await.unwrap(), ReleaseOutcome::Released);

    // The same through the builder option, with a hand-off through pub/sub over TLS.
    let locker = builder()
        .store(server.url())
        .ca_cert(&certs.ca)
        .build()
        .expect("locker");
    let held = locker.try_acquire("tls:b", HELD).await.expect("acquire");
    let waiter = spawn_waiter(&locker, "tls:b");
    tokio::time::sleep(Duration::from_millis(200)).await;
    held.release().await.unwrap();
    // Only the release notice, delivered over TLS, can have woken it (see `HELD`).
    let next = waiter.await.unwrap().expect("waiter gets the lock");
    next.release().await.unwrap();
}

#[tokio::test]
async fn tls_without_the_ca_is_a_config_error_naming_the_node() {
    let certs = Certs::generate();
    let server = Server::start_tls(&certs, &[]);
    let with_password = format!("rediss://user:{PASSWORD}@127.0.0.1:{}", server.port());
    for (what, locker) in [
        (
            "platform roots",
            builder().store(&with_password).build().unwrap(),
        ),
        (
            "another CA",
            builder()
                .store(&with_password)
                .ca_cert(&certs.other_ca)
                .build()
                .unwrap(),
        ),
    ] {
        let e = locker.try_acquire("tls:x", TTL).await.unwrap_err();
        let text = e.to_string();
        assert!(e.is_config(), "{what}: {e:?}");
        assert!(
            text.contains(&format!("127.0.0.1:{}", server.port())),
            "{what}: the node is named: {text}"
        );
        assert!(text.contains("certificate"), "{what}: says why: {text}");
        assert!(!text.contains(PASSWORD), "{what}: {text}");
        assert!(!format!("{e:?}").contains(PASSWORD), "{what}: {e:?}");
        assert_eq!(e.node_errors()[0].kind(), NodeErrorKind::Tls, "{what}");
    }
}

#[tokio::test]
async fn insecure_tls_is_refused_unless_asked_for_by_name() {
    let certs = Certs::generate();
    let server = Server::start_tls(&certs, &[]);
    let url = format!("{}#insecure", server.url());
    let e = builder().store(&url).build().unwrap_err();
    assert!(e.is_config(), "{e:?}");
    assert!(e.to_string().contains("danger_accept_invalid_certs"), "{e}");

    let locker = builder()
        .store(&url)
        .danger_accept_invalid_certs(true)
        .build()
        .expect("allowed by name");
    let lease = locker
        .try_acquire("tls:insecure", TTL)
        .await
        .expect("acquire");
    lease.release().await.unwrap();
}

#[tokio::test]
async fn a_bad_ca_file_is_reported_at_build() {
    let dir = tempfile::tempdir().unwrap();
    let not_pem = dir.path().join("not.pem");
    std::fs::write(&not_pem, "hello").unwrap();
    for path in [dir.path().join("missing.pem"), not_pem] {
        let e = builder()
            .store("rediss://127.0.0.1:1")
            .ca_cert(&path)
            .build()
            .unwrap_err();
        assert!(e.is_config(), "{e:?}");
        assert!(e.to_string().contains(&*path.to_string_lossy()), "{e}");
    }
}

// ----- ACL users and passwords ------------------------------------------------------------

/// The minimum ACL of docs/security.md, for user `app` confined to `app:*`.
fn add_app_user(server: &Server, extra: &[&str]) {
    let mut args = vec!["ACL", "SETUSER", "app", "reset", "on"];
    let pass = format!(">{PASSWORD}");
    args.push(&pass);
    for rule in fencelock::MINIMUM_ACL.split_whitespace().skip(2) {
        args.push(rule);
    }
    args.extend_from_slice(extra);
    server.run(&args);
}

#[tokio::test]
async fn acl_user_confined_to_a_prefix_can_do_everything() {
    let server = Server::start(&[]);
    add_app_user(&server, &[]);
    let url = format!("redis://app:{PASSWORD}@127.0.0.1:{}", server.port());
    let locker = builder().store(&url).prefix("app:").build().unwrap();

    let lease = locker.try_acquire("job", HELD).await.expect("acquire");
    lease.extend(HELD).await.expect("extend");
    let status = locker.status(["job"]).await.expect("status");
    assert!(status[0].is_held());
    // A waiter woken by the release notice (SUBSCRIBE on &app:*).
    let waiter = spawn_waiter(&locker, "job");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(lease.release().await.unwrap(), ReleaseOutcome::Released);
    // Only the release notice (on a channel under the user's `&app:*`) can have woken
    // it (see `HELD`).
    let next = waiter.await.unwrap().expect("waiter");
    next.release().await.unwrap();
    // Auto-renewal (the batched extend pipeline) under the ACL: the lease's validity
    // moves on by itself, and it is never lost.
    let renewed = locker.try_acquire("job", TTL).await.expect("acquire");
    let first = renewed.valid_until();
    support::eventually("a renewal", || renewed.valid_until() > first).await;
    assert!(
        !renewed.is_lost(),
        "renewal failed under the ACL: {renewed:?}"
    );
    assert!(locker.status(["job"]).await.expect("status")[0].is_held());
    renewed.release().await.unwrap();
    let fair = locker
        .acquire_with("job", TTL, &fencelock::AcquireOptions::default().fair())
        .await
        .expect("fair acquire");
    fair.release().await.unwrap();

    // The checks pass; the doctor's deeper look sees the user (ACL WHOAMI granted).
    locker.check().await.expect("check");
    let report = locker.diagnose(TTL).await;
    let node = &report.nodes[0];
    assert_eq!(node.user.as_deref(), Some("app"), "{report:#?}");
    assert!(node.role.is_some(), "INFO is granted: {report:#?}");
}

#[tokio::test]
async fn outside_its_prefix_the_user_gets_a_clear_permission_error() {
    let server = Server::start(&[]);
    add_app_user(&server, &[]);
    let url = format!("redis://app:{PASSWORD}@127.0.0.1:{}", server.port());
    let locker = builder().store(&url).build().unwrap();
    let e = locker.try_acquire("elsewhere", TTL).await.unwrap_err();
    assert!(e.is_config(), "{e:?}");
    let node = &e.node_errors()[0];
    assert_eq!(node.kind(), NodeErrorKind::Auth, "{e}");
    assert!(node.message().contains("permissions"), "{e}");
    assert!(node.message().contains("docs/security.md"), "{e}");
    assert!(!e.to_string().contains(PASSWORD) && !format!("{e:?}").contains(PASSWORD));
}

#[tokio::test]
async fn each_grant_of_the_minimum_acl_is_needed() {
    // The experiment behind docs/security.md: take one command away at a time, run
    // every kind of operation (held key → PTTL; fair mode → the Z* commands; script
    // cache flushed → SCRIPT LOAD; fresh counter → TIME; release → DEL; release with
    // someone in line → PUBLISH: with nobody in line a release publishes nothing), and
    // see a permission error naming the node. (SUBSCRIBE is not in the list: without
    // it waiters fall back to polling, which is slower but not an error.)
    let server = Server::start(&[]);
    let url = format!("redis://app:{PASSWORD}@127.0.0.1:{}", server.port());
    for command in [
        "get",
        "set",
        "del",
        "pexpire",
        "pttl",
        "time",
        "publish",
        "evalsha",
        "script|load",
        "zadd",
        "zrange",
        "zrangebyscore",
        "zrem",
        "zscore",
    ] {
        server.run(&["FLUSHALL"]);
        server.run(&["SCRIPT", "FLUSH"]);
        server.run(&["SET", "app:held", "someone-else", "PX", "60000"]);
        // Another fair waiter first in line for `queued` (deadline far ahead).
        server.run(&["ZADD", "app:queued:fencelock:queue", "0", "w0"]);
        server.run(&[
            "ZADD",
            "app:queued:fencelock:queue-deadline",
            "99999999999999",
            "w0",
        ]);
        // A waiter in line for `lined` (which is free): its release tells that waiter.
        server.run(&["ZADD", "app:lined:fencelock:queue", "0", "w1"]);
        server.run(&[
            "ZADD",
            "app:lined:fencelock:queue-deadline",
            "99999999999999",
            "w1",
        ]);
        add_app_user(&server, &[&format!("-{command}")]);
        let locker = builder()
            .store(&url)
            .prefix("app:")
            .holder("test")
            .max_wait(Some(Duration::from_millis(300)))
            .build()
            .unwrap();
        let mut errors = Vec::new();
        if let Err(e) = locker.try_acquire("held", TTL).await {
            errors.push(e);
        }
        let fair = fencelock::AcquireOptions::default()
            .fair()
            .max_wait(Duration::from_millis(300));
        if let Err(e) = locker.acquire_with("held", TTL, &fair).await {
            errors.push(e);
        }
        for key in ["queued", "free"] {
            match locker.acquire_with(key, TTL, &fair).await {
                Ok(lease) => {
                    if let Err(e) = lease.release().await {
                        errors.push(e);
                    }
                }
                Err(e) => errors.push(e),
            }
        }
        match locker.try_acquire("lined", TTL).await {
            Ok(lease) => {
                if let Err(e) = lease.release().await {
                    errors.push(e);
                }
            }
            Err(e) => errors.push(e),
        }
        match locker.try_acquire("exp", TTL).await {
            Ok(lease) => {
                if let Err(e) = lease.extend(TTL).await {
                    errors.push(e);
                }
                if let Err(e) = lease.release().await {
                    errors.push(e);
                }
            }
            Err(e) => errors.push(e),
        }
        let status_errors: Vec<_> = match locker.status(["exp"]).await {
            Ok(st) => st[0].nodes.iter().filter_map(|n| n.error.clone()).collect(),
            Err(e) => e.node_errors().to_vec(),
        };
        let denied = errors
            .iter()
            .flat_map(|e| e.node_errors().iter().cloned())
            .chain(status_errors)
            .any(|n| n.kind() == NodeErrorKind::Auth && n.message().contains("docs/security.md"));
        assert!(
            denied,
            "without {command} no operation was refused: {:?}",
            errors.iter().map(ToString::to_string).collect::<Vec<_>>()
        );
    }
}

#[tokio::test]
async fn wrong_password_is_a_config_error_without_the_password() {
    let server = Server::start(&["--requirepass", PASSWORD]);
    let wrong = "Wr0ng-Passw0rd-also-secret";
    let url = format!("redis://:{wrong}@127.0.0.1:{}", server.port());
    let locker = builder().store(&url).build().unwrap();
    let e = locker.try_acquire("k", TTL).await.unwrap_err();
    assert!(e.is_config(), "{e:?}");
    assert_eq!(e.node_errors()[0].kind(), NodeErrorKind::Auth);
    for text in [e.to_string(), format!("{e:?}"), format!("{locker:?}")] {
        assert!(!text.contains(wrong), "{text}");
    }

    // No password at all: NOAUTH, with the hint where to put one.
    let locker = builder().store(server.url()).build().unwrap();
    let e = locker.try_acquire("k", TTL).await.unwrap_err();
    assert!(e.is_config(), "{e:?}");
    assert!(e.to_string().contains("FENCELOCK_PASSWORD"), "{e}");
}

#[tokio::test]
async fn password_from_the_environment_or_a_file() {
    let server = Server::start(&["--requirepass", PASSWORD]);
    // SAFETY-free: the variable name is unique to this test.
    unsafe { std::env::set_var("FENCELOCK_TEST_PASSWORD_HARDENING", PASSWORD) };
    let b = builder()
        .store(server.url())
        .password_from_env("FENCELOCK_TEST_PASSWORD_HARDENING");
    assert!(!format!("{b:?}").contains(PASSWORD), "{b:?}");
    let locker = b.build().unwrap();
    locker
        .try_acquire("env", TTL)
        .await
        .expect("env password")
        .release()
        .await
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("password");
    std::fs::write(&file, format!("{PASSWORD}\n")).unwrap();
    let locker = builder()
        .store(server.url())
        .password_file(&file)
        .build()
        .unwrap();
    locker
        .try_acquire("file", TTL)
        .await
        .expect("file password")
        .release()
        .await
        .unwrap();

    let e = builder()
        .store(server.url())
        .password_from_env("FENCELOCK_TEST_UNSET_VARIABLE")
        .build()
        .unwrap_err();
    assert!(
        e.is_config() && e.to_string().contains("FENCELOCK_TEST_UNSET_VARIABLE"),
        "{e}"
    );
    let e = builder()
        .store(server.url())
        .password_file(dir.path().join("nope"))
        .build()
        .unwrap_err();
    assert!(e.is_config(), "{e}");
}

#[tokio::test]
async fn debug_output_never_shows_lock_values_or_passwords() {
    let cluster = Cluster::start(1);
    let url = format!("redis://:{PASSWORD}@127.0.0.1:{}", cluster.port(0));
    cluster.connection(0);
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg(PASSWORD)
        .query(&mut cluster.connection(0))
        .unwrap();
    let b = builder().store(&url).holder("host-1");
    assert!(!format!("{b:?}").contains(PASSWORD), "{b:?}");
    let locker = b.build().unwrap();
    let lease = locker.try_acquire("dbg", TTL).await.unwrap();
    let value = lease.value().to_string();
    for text in [format!("{lease:?}"), format!("{locker:?}")] {
        assert!(!text.contains(&value), "lock value in Debug: {text}");
        assert!(!text.contains(PASSWORD), "password in Debug: {text}");
    }
    lease.release().await.unwrap();
}

// ----- start-up checks ------------------------------------------------------------------

#[tokio::test]
async fn a_replica_is_refused() {
    let primary = Cluster::start(1);
    let port = primary.port(0).to_string();
    let replica = Server::start(&["--replicaof", "127.0.0.1", &port]);
    let locker = builder().store(replica.url()).build().unwrap();
    let e = locker.try_acquire("r", TTL).await.unwrap_err();
    assert!(e.is_config(), "{e:?}");
    assert_eq!(e.node_errors()[0].kind(), NodeErrorKind::ReadOnly, "{e}");
    assert!(e.to_string().contains("replica"), "{e}");
    // Even one that accepts writes (replica-read-only no) and would lose them.
    let replica = Server::start(&[
        "--replicaof",
        "127.0.0.1",
        &port,
        "--replica-read-only",
        "no",
    ]);
    let locker = builder().store(replica.url()).build().unwrap();
    assert!(locker.try_acquire("r", TTL).await.unwrap_err().is_config());
}

#[tokio::test]
async fn the_same_server_twice_is_an_error() {
    let cluster = Cluster::start(2);
    let a = cluster.url(0);
    let twin = format!("redis://localhost:{}/1", cluster.port(0));
    let locker = builder()
        .stores([a.clone(), twin, cluster.url(1)])
        .build()
        .unwrap();
    let e = locker.check().await.unwrap_err();
    assert!(e.is_config(), "{e:?}");
    assert!(e.to_string().contains("same server"), "{e}");
    let report = locker.diagnose(TTL).await;
    assert_eq!(report.worst(), Some(Severity::Error));
}

#[tokio::test]
async fn a_healthy_set_passes_with_notes_only() {
    let cluster = Cluster::start(3);
    let locker = builder().stores(cluster.urls()).build().unwrap();
    let report = locker.check().await.expect("healthy");
    assert_eq!(report.nodes.len(), 3);
    for n in &report.nodes {
        assert!(n.error.is_none(), "{report:#?}");
        assert_eq!(n.role.as_deref(), Some("master"));
        assert!(
            n.version.as_deref().is_some_and(|v| v.starts_with('7')),
            "{n:?}"
        );
        assert_eq!(
            n.persistence,
            Some(false),
            "the fixture runs without persistence"
        );
        assert!(n.clock_offset_ms.is_some_and(|o| o.abs() < 1000), "{n:?}");
        assert_eq!(
            n.missing_permissions, None,
            "check() does not ask the ACL: {n:?}"
        );
    }
    // The doctor's deeper look asks the ACL too.
    let deep = locker.diagnose(TTL).await;
    for n in &deep.nodes {
        assert_eq!(n.missing_permissions.as_deref(), Some(&[][..]), "{n:?}");
        assert_eq!(n.user.as_deref(), Some("default"), "{n:?}");
    }
    assert!(deep.is_healthy(), "{deep:#?}");
    assert_eq!(report.worst(), Some(Severity::Note), "{report:#?}");
    assert!(report.is_healthy());
    assert!(
        report
            .findings
            .iter()
            .any(|f| f.message.contains("delayed restart"))
    );
}

#[tokio::test]
async fn evicting_policy_and_even_count_warn_and_strict_refuses() {
    let cluster = Cluster::start(2);
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory-policy")
        .arg("volatile-lru")
        .query(&mut cluster.connection(1))
        .unwrap();
    let locker = builder().stores(cluster.urls()).build().unwrap();
    let report = locker.check().await.expect("warnings only");
    let warnings: Vec<String> = report
        .of(Severity::Warning)
        .map(ToString::to_string)
        .collect();
    assert!(
        warnings.iter().any(|w| w.contains("volatile-lru")),
        "{warnings:?}"
    );
    assert!(
        warnings.iter().any(|w| w.contains("even number")),
        "{warnings:?}"
    );
    assert!(!report.is_healthy());

    let strict = builder()
        .stores(cluster.urls())
        .strict_checks(true)
        .build()
        .unwrap();
    let e = strict.check().await.unwrap_err();
    assert!(
        e.is_config() && e.to_string().contains("volatile-lru"),
        "{e}"
    );
}

#[tokio::test]
async fn ttl_too_short_for_the_round_trip_is_an_error() {
    let cluster = Cluster::start(1);
    let locker = builder().stores(cluster.urls()).build().unwrap();
    // A loopback round trip takes tens of microseconds; a 30 µs TTL allows a per-node
    // timeout of 10 µs. (The builder refuses such a TTL for locking; the doctor takes
    // any, to answer "would this TTL work here?".)
    let report = locker.diagnose(Duration::from_micros(30)).await;
    assert!(
        report
            .of(Severity::Error)
            .any(|f| f.message.contains("round trip")),
        "{report:#?}"
    );
    let report = locker.diagnose(Duration::from_secs(30)).await;
    assert!(
        !report
            .findings
            .iter()
            .any(|f| f.message.contains("round trip")),
        "{report:#?}"
    );
}

// ----- typed errors ---------------------------------------------------------------------

/// The string at `key`, `None` when there is none.
fn get(conn: &mut redis::Connection, key: &str) -> Option<String> {
    redis::cmd("GET").arg(key).query(conn).unwrap()
}

/// Makes `key` a hash: another program's data where fencelock expects a string or a set.
fn make_hash(conn: &mut redis::Connection, key: &str) {
    let _: () = redis::cmd("HSET")
        .arg(key)
        .arg("f")
        .arg("v")
        .query(conn)
        .unwrap();
}

#[tokio::test]
async fn wrongtype_is_a_config_error_and_the_foreign_key_is_kept() {
    let cluster = Cluster::start(1);
    let mut conn = cluster.connection(0);
    make_hash(&mut conn, "typed:fencelock:fence");
    let locker = builder().stores(cluster.urls()).build().unwrap();
    let e = locker.try_acquire("typed", TTL).await.unwrap_err();
    assert!(e.is_config(), "{e:?}");
    assert_eq!(e.node_errors()[0].kind(), NodeErrorKind::WrongType, "{e}");
    let kind: String = redis::cmd("TYPE")
        .arg("typed:fencelock:fence")
        .query(&mut conn)
        .unwrap();
    assert_eq!(kind, "hash");
    // Nothing half-done: the lock key is not left set.
    assert_eq!(
        get(&mut conn, "typed"),
        None,
        "the failed acquire left its lock key set"
    );
    // Two keys at once (the script's general path): neither is left set.
    let e = locker
        .try_acquire(vec!["typed2", "typed"], TTL)
        .await
        .unwrap_err();
    assert_eq!(e.node_errors()[0].kind(), NodeErrorKind::WrongType, "{e}");
    for key in ["typed2", "typed"] {
        assert_eq!(
            get(&mut conn, key),
            None,
            "the failed acquire left {key} set"
        );
    }
}

/// A counter key that holds something other than a token fencelock could have written
/// (another program's data, a hand edit) fails the acquire with an error naming it, and
/// the acquire leaves nothing behind: the lock key stays free and the counter as it was.
/// Tokens are whole numbers below 2^53 (exact in a script's Lua numbers), so `1e300`,
/// `inf`, `-5`, `12.5` and 2^53 + 1 are refused like `abc`: a bigger one could not go
/// up by one, a negative or fractional one was never a token. Before: `1e300` and `inf`
/// failed only after the lock key was set (left held for its TTL), `-5` and `12.5` were
/// granted with tokens -4 and 14, and 2^53 + 1 granted a token equal to the counter.
#[tokio::test]
async fn a_counter_that_is_not_a_token_fails_the_acquire_and_leaves_nothing() {
    let cluster = Cluster::start(1);
    let locker = builder().stores(cluster.urls()).build().unwrap();
    let mut conn = cluster.connection(0);
    for (i, bad) in ["abc", "1e300", "inf", "-5", "12.5", "9007199254740993"]
        .into_iter()
        .enumerate()
    {
        // One key alone (the script's fast path), and two at once (its general path).
        for keys in [
            vec![format!("bad{i}")],
            vec![format!("bad{i}a"), format!("bad{i}b")],
        ] {
            let last = keys.last().unwrap().clone();
            let counter = format!("{last}:fencelock:fence");
            let _: () = redis::cmd("SET")
                .arg(&counter)
                .arg(bad)
                .query(&mut conn)
                .unwrap();
            let e = locker.try_acquire(keys.clone(), TTL).await.unwrap_err();
            assert!(
                e.to_string().contains("is not a number"),
                "counter {bad}: {e}"
            );
            for key in &keys {
                assert_eq!(
                    get(&mut conn, key),
                    None,
                    "counter {bad}: {key} was left set"
                );
            }
            assert_eq!(
                get(&mut conn, &counter).as_deref(),
                Some(bad),
                "counter {bad} was changed"
            );
        }
    }
}

/// The same for a waiter's line keys: an acquire that waits takes a free key and leaves
/// its line in one script, and a line key of another type must not leave that grant
/// half-done (the lock key and counter written, the script failed).
#[tokio::test]
async fn a_line_key_of_another_type_leaves_nothing_behind() {
    let cluster = Cluster::start(1);
    let locker = builder().stores(cluster.urls()).build().unwrap();
    let mut conn = cluster.connection(0);
    for (key, kind) in [("lined", "queue"), ("lined2", "queue-deadline")] {
        let line = format!("{key}:fencelock:{kind}");
        make_hash(&mut conn, &line);
        let e = locker.acquire(key, TTL).await.unwrap_err();
        assert_eq!(e.node_errors()[0].kind(), NodeErrorKind::WrongType, "{e}");
        assert_eq!(
            get(&mut conn, key),
            None,
            "the failed acquire left {key} set ({kind})"
        );
        assert_eq!(
            get(&mut conn, &format!("{key}:fencelock:fence")),
            None,
            "the failed acquire wrote {key}'s counter ({kind})"
        );
        let kept: String = redis::cmd("TYPE").arg(&line).query(&mut conn).unwrap();
        assert_eq!(kept, "hash");
        // Two keys at once (the script's general path).
        let other = format!("{key}-other");
        let e = locker
            .acquire(vec![other.as_str(), key], TTL)
            .await
            .unwrap_err();
        assert_eq!(e.node_errors()[0].kind(), NodeErrorKind::WrongType, "{e}");
        for k in [other.as_str(), key] {
            assert_eq!(
                get(&mut conn, k),
                None,
                "the failed acquire left {k} set ({kind}, two keys)"
            );
        }
    }
}

/// A release frees the lock whatever another program put at its siblings: a lock
/// taken without waiting never reads its line, so a line key of another type (or a
/// counter turned into one while the lock is held) must not make its release fail
/// with the lock key left set, or fail after deleting it. The foreign keys stay.
#[tokio::test]
async fn a_release_frees_the_lock_beside_foreign_siblings() {
    let cluster = Cluster::start(1);
    let locker = builder().stores(cluster.urls()).build().unwrap();
    let mut conn = cluster.connection(0);
    for kind in ["queue", "queue-deadline", "fence"] {
        let key = format!("foreign-{kind}");
        let sibling = format!("{key}:fencelock:{kind}");
        let lease = locker.try_acquire(key.as_str(), TTL).await.unwrap();
        let _: () = redis::cmd("DEL").arg(&sibling).query(&mut conn).unwrap();
        make_hash(&mut conn, &sibling);
        let outcome = lease.release().await;
        assert!(
            matches!(outcome, Ok(ReleaseOutcome::Released)),
            "{kind}: {outcome:?}"
        );
        assert_eq!(
            get(&mut conn, &key),
            None,
            "{kind}: the lock key was left set"
        );
        let kept: String = redis::cmd("TYPE").arg(&sibling).query(&mut conn).unwrap();
        assert_eq!(kept, "hash", "{kind}");
    }
}

/// A line entry without a deadline (a torn write: the two `ZADD`s of a join are one
/// script, so only another program or a hand edit leaves one) is dropped by the release
/// that finds it at the head of the line, as an expired entry is; the waiter behind it
/// is told. (Reading a key of another type as absent must not read a missing deadline
/// the same way: that kept the torn entry at the head for good.)
#[tokio::test]
async fn a_release_drops_a_line_entry_without_a_deadline() {
    let cluster = Cluster::start(1);
    let locker = builder().stores(cluster.urls()).build().unwrap();
    let mut conn = cluster.connection(0);
    let lease = locker.try_acquire("torn", TTL).await.unwrap();
    let _: () = redis::cmd("ZADD")
        .arg("torn:fencelock:queue")
        .arg(0)
        .arg("no-deadline")
        .query(&mut conn)
        .unwrap();
    let outcome = lease.release().await;
    assert!(
        matches!(outcome, Ok(ReleaseOutcome::Released)),
        "{outcome:?}"
    );
    let line: Vec<String> = redis::cmd("ZRANGE")
        .arg("torn:fencelock:queue")
        .arg(0)
        .arg(-1)
        .query(&mut conn)
        .unwrap();
    assert!(line.is_empty(), "the torn entry stayed in line: {line:?}");
}

#[tokio::test]
async fn out_of_memory_is_unavailable_with_the_node_named() {
    let cluster = Cluster::start(1);
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg("1")
        .query(&mut cluster.connection(0))
        .unwrap();
    let locker = builder().stores(cluster.urls()).build().unwrap();
    let e = locker.try_acquire("oom", TTL).await.unwrap_err();
    assert!(e.is_unavailable(), "{e:?}");
    assert_eq!(e.node_errors()[0].kind(), NodeErrorKind::OutOfMemory, "{e}");
    assert!(e.to_string().contains(&cluster.url(0)), "{e}");
}

#[tokio::test]
async fn busy_node_is_unavailable_then_recovers() {
    let cluster = Cluster::start(1);
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("busy-reply-threshold")
        .arg("50")
        .query(&mut cluster.connection(0))
        .unwrap();
    let port = cluster.port(0);
    let script = std::thread::spawn(move || {
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap();
        let mut con = client.get_connection().unwrap();
        let _: redis::RedisResult<redis::Value> = redis::cmd("EVAL")
            .arg("while true do end")
            .arg(0)
            .query(&mut con);
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let locker = builder().stores(cluster.urls()).build().unwrap();
    let e = locker.try_acquire("busy", TTL).await.unwrap_err();
    assert!(e.is_unavailable(), "{e:?}");
    assert_eq!(e.node_errors()[0].kind(), NodeErrorKind::Busy, "{e}");
    assert!(e.to_string().contains("SCRIPT KILL"), "{e}");
    let _: () = redis::cmd("SCRIPT")
        .arg("KILL")
        .query(&mut cluster.connection(0))
        .unwrap();
    script.join().unwrap();
    locker
        .try_acquire("busy", TTL)
        .await
        .expect("after SCRIPT KILL")
        .release()
        .await
        .unwrap();
}

#[tokio::test]
/// A Redis Cluster node named by a standalone `redis://` URL is refused with a pointer
/// to `redis+cluster://`, which then works through the same node.
async fn a_cluster_node_as_a_standalone_url_is_a_config_error_naming_the_cluster_scheme() {
    let a = Server::start(&[
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        "nodes-a.conf",
    ]);
    let b = Server::start(&[
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        "nodes-b.conf",
    ]);
    b.run(&["CLUSTER", "ADDSLOTSRANGE", "0", "16383"]);
    a.run(&["CLUSTER", "MEET", "127.0.0.1", &b.port().to_string()]);
    // Wait until a knows b serves every slot, so it answers MOVED.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let reply = redis::cmd("GET")
            .arg("k")
            .query::<redis::Value>(&mut a.connection());
        if reply.as_ref().is_err_and(|e| e.code() == Some("MOVED")) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no MOVED yet: {reply:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Either node, the one that redirects and the one that serves the slot.
    for url in [a.url(), b.url()] {
        let locker = builder().store(url).build().unwrap();
        let e = locker.try_acquire("k", TTL).await.unwrap_err();
        assert!(e.is_config(), "{e:?}");
        assert_eq!(e.node_errors()[0].kind(), NodeErrorKind::Cluster, "{e}");
        assert!(e.to_string().contains("redis+cluster://"), "{e}");
        assert!(e.to_string().contains("one Redlock node"), "{e}");
    }
    assert_eq!(
        b.run(&["DBSIZE"]),
        redis::Value::Int(0),
        "a refused node was written to"
    );
    let cluster = format!("redis+cluster://127.0.0.1:{}", a.port());
    let locker = builder().store(cluster).build().unwrap();
    let lease = locker
        .try_acquire("k", TTL)
        .await
        .expect("through redis+cluster://");
    lease.release().await.expect("release");
}

#[tokio::test]
async fn lost_script_cache_is_reloaded_for_every_operation() {
    let cluster = Cluster::start(1);
    let locker = builder().stores(cluster.urls()).build().unwrap();
    let lease = locker.try_acquire("noscript", TTL).await.unwrap();
    for _ in 0..2 {
        let _: () = redis::cmd("SCRIPT")
            .arg("FLUSH")
            .query(&mut cluster.connection(0))
            .unwrap();
        lease.extend(TTL).await.expect("extend reloads its script");
    }
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query(&mut cluster.connection(0))
        .unwrap();
    assert_eq!(lease.release().await.unwrap(), ReleaseOutcome::Released);
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query(&mut cluster.connection(0))
        .unwrap();
    locker
        .try_acquire("noscript", TTL)
        .await
        .expect("acquire reloads")
        .release()
        .await
        .unwrap();
}

// ----- holding limits -------------------------------------------------------------------

#[tokio::test]
async fn max_hold_lets_an_auto_renewed_lease_go() {
    let cluster = Cluster::start(1);
    let ttl = Duration::from_secs(1);
    let max_hold = Duration::from_secs(3);
    let locker = builder()
        .stores(cluster.urls())
        .max_hold(Some(max_hold))
        .build()
        .unwrap();
    let acquired = std::time::Instant::now();
    let observer = async {
        // Renewed past its TTL: the key is still there one and a half TTLs in (and
        // before max_hold plus a TTL could have let it go).
        tokio::time::sleep(ttl + ttl / 2).await;
        let seen_at = acquired.elapsed();
        (cluster.get(0, "held-forever"), seen_at)
    };
    let (result, (seen, seen_at)) = tokio::join!(
        async {
            tokio::time::timeout(
                Duration::from_secs(60),
                locker.with_lock("held-forever", ttl, async |_lease| {
                    // Work that never ends: only the limit stops it.
                    std::future::pending::<()>().await
                }),
            )
            .await
            .expect("max_hold never stopped the work")
        },
        observer
    );
    let e = result.work.unwrap_err();
    assert!(e.is_lost(), "{e:?}");
    assert!(e.to_string().contains("max_hold"), "{e}");
    if seen_at < max_hold {
        assert!(
            seen.is_some(),
            "not renewed: the key was gone at {seen_at:?}"
        );
    }
}
