//! `fencelock doctor` as a black box: a healthy set of servers exits 0 with a report
//! per node; a broken one (the same server twice, an ACL user missing a grant, an
//! unreachable node, a bad URL) exits non-zero and says why — never printing a password.

mod support;

use std::net::TcpListener;
use std::path::Path;
use std::time::Duration;

use predicates::prelude::*;
use support::Server;

const PASSWORD: &str = "doctor-Secret-never-shown";

fn doctor(dir: &Path) -> assert_cmd::Command {
    let mut cmd = assert_cmd::Command::cargo_bin("fencelock").expect("binary");
    cmd.arg("doctor")
        .env_remove("FENCELOCK_STORE")
        .env_remove("FENCELOCK_PASSWORD")
        .env_remove("FENCELOCK_PASSWORD_FILE")
        .env("XDG_STATE_HOME", dir)
        .timeout(Duration::from_secs(60));
    cmd
}

#[test]
fn healthy_three_nodes_exit_zero_with_a_report_per_node() {
    let nodes: Vec<Server> = (0..3).map(|_| Server::start(&[])).collect();
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = doctor(dir.path());
    for n in &nodes {
        cmd.args(["--store", &n.url()]);
    }
    cmd.assert()
        .success()
        .stdout(predicate::str::contains("role          primary").count(3))
        .stdout(predicate::str::contains("eviction      noeviction"))
        .stdout(predicate::str::contains("clock offset"))
        .stdout(predicate::str::contains("all needed commands granted"))
        .stdout(predicate::str::contains("probe lock: ok"))
        .stdout(predicate::str::contains("delayed restart"))
        .stdout(predicate::str::contains("verdict: healthy"));
    // The probe lock left nothing behind, not even its fencing counter.
    for n in &nodes {
        let client = redis::Client::open(n.url()).unwrap();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("fencelock-doctor-*")
            .query(&mut client.get_connection().unwrap())
            .unwrap();
        assert!(keys.is_empty(), "{keys:?}");
    }
}

/// `doctor` takes a probe lock (acquire, extend, release) and then forgets it: no key
/// naming the probe is left on any Redis node, no row in an SQLite file — so nothing
/// of it shows in `status`, and repeated runs leave nothing to pile up.
#[test]
fn the_probe_lock_leaves_no_record_behind() {
    let cluster = support::Cluster::start(3);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("locks.db");
    let sqlite = format!("sqlite://{}", file.display());
    for _ in 0..2 {
        let mut cmd = doctor(dir.path());
        for url in cluster.urls() {
            cmd.args(["--store", &url]);
        }
        cmd.assert()
            .success()
            .stdout(predicate::str::contains("probe lock: ok"));
        for i in 0..3 {
            let left = cluster.redis_cli(i, &["--scan", "--pattern", "*fencelock-doctor-probe*"]);
            assert_eq!(
                left.trim(),
                "",
                "node {i} keeps {left:?}\n{}",
                cluster.logs()
            );
        }
        doctor(dir.path())
            .args(["--store", &sqlite])
            .assert()
            .success()
            .stdout(predicate::str::contains("probe lock: ok"));
        let db = rusqlite::Connection::open(&file).unwrap();
        for table in ["fencelock_lock", "fencelock_counter"] {
            let rows: i64 = db
                .query_row(
                    &format!(
                        "SELECT count(*) FROM {table} WHERE key LIKE '%fencelock-doctor-probe%'"
                    ),
                    [],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(rows, 0, "{table} keeps the probe in {}", file.display());
        }
    }
}

/// A user confined to its prefix with exactly the documented minimum ACL can forget
/// the probe too (the forget script uses no command beyond it): healthy, nothing left.
#[test]
fn a_minimum_acl_user_leaves_no_probe_record_behind() {
    let r = Server::start(&[]);
    let pass = format!(">{PASSWORD}");
    let mut args = vec!["ACL", "SETUSER", "app", "reset", "on", &pass];
    args.extend(fencelock::MINIMUM_ACL.split_whitespace().skip(2));
    r.run(&args);
    let dir = tempfile::tempdir().unwrap();
    doctor(dir.path())
        .args(["--store", &format!("redis://app@127.0.0.1:{}", r.port())])
        .args(["--prefix", "app:"])
        .env("FENCELOCK_PASSWORD", PASSWORD)
        .assert()
        .success()
        .stdout(predicate::str::contains("released, forgotten"));
    let client = redis::Client::open(r.url()).unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query(&mut client.get_connection().unwrap())
        .unwrap();
    assert!(keys.is_empty(), "{keys:?}");
}

#[test]
fn the_default_sqlite_store_is_healthy() {
    let dir = tempfile::tempdir().unwrap();
    doctor(dir.path())
        .assert()
        .success()
        .stdout(predicate::str::contains("sqlite://"))
        .stdout(predicate::str::contains("probe lock: ok"));
}

#[test]
fn the_same_server_twice_fails() {
    let a = Server::start(&[]);
    let b = Server::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = doctor(dir.path());
    cmd.args([
        "--store",
        &a.url(),
        "--store",
        &format!("redis://localhost:{}/2", a.port()),
    ])
    .args(["--store", &b.url()]);
    cmd.assert()
        .code(1)
        .stdout(predicate::str::contains("same server"))
        .stdout(predicate::str::contains("verdict: NOT HEALTHY"));
}

#[test]
fn a_user_missing_a_grant_fails_without_showing_its_password() {
    let r = Server::start(&[]);
    let pass = format!(">{PASSWORD}");
    let mut args = vec!["ACL", "SETUSER", "app", "reset", "on", &pass];
    args.extend(
        fencelock::MINIMUM_ACL
            .split_whitespace()
            .skip(2)
            .filter(|rule| *rule != "+publish"),
    );
    r.run(&args);
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = doctor(dir.path());
    cmd.args(["--store", &format!("redis://app@127.0.0.1:{}", r.port())])
        .args(["--prefix", "app:"])
        .env("FENCELOCK_PASSWORD", PASSWORD);
    cmd.assert()
        .code(1)
        .stdout(predicate::str::contains("user          app"))
        .stdout(predicate::str::contains("probe lock: FAILED"))
        .stdout(predicate::str::contains("docs/security.md"))
        .stdout(predicate::str::contains(PASSWORD).not())
        .stderr(predicate::str::contains(PASSWORD).not());
}

#[test]
fn an_unreachable_node_and_a_bad_url_fail() {
    let a = Server::start(&[]);
    let closed = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = doctor(dir.path());
    cmd.args([
        "--store",
        &a.url(),
        "--store",
        &format!("redis://127.0.0.1:{closed}"),
    ])
    .arg("--no-probe");
    cmd.assert()
        .code(1)
        .stdout(predicate::str::contains("NOT CHECKED"))
        .stdout(predicate::str::contains("probe lock: skipped"));

    let mut cmd = doctor(dir.path());
    cmd.args([
        "--store",
        &format!("redis://u:{PASSWORD}@127.0.0.1:1/notadb"),
    ]);
    cmd.assert()
        .code(2)
        .stderr(predicate::str::contains("invalid store URL"))
        .stderr(predicate::str::contains(PASSWORD).not());
}
