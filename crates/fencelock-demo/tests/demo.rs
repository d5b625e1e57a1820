//! The demo (`cargo run --release -- demo`), run as users run it: the built binary,
//! real worker processes, a real SQLite file or three real `redis-server` processes.
//!
//! What is asserted is what the demo promises: rounds 2 and 4 conserve the money and
//! count every transfer (the exit code says so), and every round's numbers are the
//! ledger's. Rounds 1 and 3 are checked for *honest reporting* (the reported total is
//! what an independent read of the ledger finds), not for damage: a tiny run may not
//! hit the race.

use std::path::{Path, PathBuf};
use std::time::Duration;

use fencelock_testkit::{Cluster, free_port};
use serde_json::Value;

/// Small numbers: the whole demo in a few seconds, even in a debug build.
const SMALL: [&str; 6] = ["--workers", "3", "--accounts", "5", "--transfers", "20"];

/// `fencelock-demo demo …` with a clean environment: no store from the caller's shell, and
/// temporary files under `tmp`.
fn demo(tmp: &Path) -> assert_cmd::Command {
    let mut cmd = assert_cmd::cargo::cargo_bin_cmd!("fencelock-demo");
    cmd.env_remove("FENCELOCK_STORE")
        .env("TMPDIR", tmp)
        .timeout(Duration::from_secs(120))
        .arg("demo");
    cmd
}

/// Runs the demo with `--json --keep` and returns the report; asserts exit 0.
fn run_json(tmp: &Path, extra: &[&str]) -> Value {
    let out = demo(tmp)
        .args(SMALL)
        .args(["--json", "--keep"])
        .args(extra)
        .output()
        .expect("run the demo");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "demo failed ({}):\n{stderr}",
        out.status
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}):\n{}\nstderr:\n{stderr}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn int(v: &Value, field: &str) -> i64 {
    v[field]
        .as_i64()
        .unwrap_or_else(|| panic!("{field} is not an integer in {v}"))
}

/// The checks every run gets, given each round's balances as read independently.
fn check_report(report: &Value, mut balances_of: impl FnMut(&Value) -> Vec<i64>) {
    assert_eq!(report["ok"], true, "{report}");
    let accounts = int(report, "accounts");
    let start = accounts * int(report, "initial_balance");
    let rounds = report["rounds"].as_array().expect("rounds");
    assert_eq!(rounds.len(), 4);
    for round in rounds {
        let balances = balances_of(round);
        assert_eq!(balances.len() as i64, accounts, "{round}");
        let total: i64 = balances.iter().sum();
        // Honest reporting, every round: the numbers are the ledger's.
        assert_eq!(int(round, "total_before"), start, "{round}");
        assert_eq!(int(round, "total_after"), total, "{round}");
        assert_eq!(int(round, "money_delta"), total - start, "{round}");
        if round["must_conserve"] == true {
            assert_eq!(total, start, "money lost in {round}");
            assert_eq!(int(round, "accounts_off"), 0, "{round}");
            assert_eq!(round["ok"], true, "{round}");
        }
    }
    let by_id = |id: &str| {
        rounds
            .iter()
            .find(|r| r["id"] == id)
            .unwrap_or_else(|| panic!("no round {id}"))
    };
    // Every locked transfer of round 2 went through (none was refused or lost).
    let workers = int(report, "workers");
    let per_worker = int(report, "transfers_per_worker");
    let locked = by_id("fencelock");
    assert_eq!(
        int(locked, "transfers") + int(locked, "declined"),
        workers * per_worker
    );
    // The stall was staged both times; only the fenced ledger refused the late write,
    // and the stalled holder's next read.
    let unfenced = by_id("stall_unfenced");
    let fenced = by_id("stall_fenced");
    for r in [unfenced, fenced] {
        let stall = &r["stall"];
        assert!(
            stall["overtaken_by_token"].as_u64() > stall["token"].as_u64(),
            "{r}"
        );
        assert!(stall["stopped_ms"].as_u64() >= Some(100), "{r}");
    }
    assert_eq!(unfenced["stall"]["late_write"], "applied", "{unfenced}");
    assert_eq!(unfenced["stall"]["next_read"], "accepted", "{unfenced}");
    assert_eq!(int(unfenced, "stale_writes_refused"), 0);
    assert_eq!(int(unfenced, "stale_reads_refused"), 0);
    assert_eq!(fenced["stall"]["late_write"], "refused", "{fenced}");
    assert_eq!(fenced["stall"]["next_read"], "refused", "{fenced}");
    assert_eq!(int(fenced, "stale_writes_refused"), 1);
    assert_eq!(int(fenced, "stale_reads_refused"), 1);
    // No other transfer's read or write was refused: rounds 1 to 3 refuse nothing.
    for r in rounds.iter().filter(|r| r["id"] != "stall_fenced") {
        assert_eq!(int(r, "stale_writes_refused"), 0, "{r}");
        assert_eq!(int(r, "stale_reads_refused"), 0, "{r}");
    }
}

#[test]
fn sqlite_demo_reports_what_the_ledger_holds() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let report = run_json(tmp.path(), &["--stall-ttl", "200ms"]);
    let dir = PathBuf::from(report["kept"]["dir"].as_str().expect("kept dir"));
    assert!(dir.starts_with(tmp.path()), "{}", dir.display());
    check_report(&report, |round| {
        let path = round["ledger"]["sqlite"]["path"]
            .as_str()
            .expect("ledger path");
        sqlite_balances(Path::new(path))
    });
    // The accounts-off count is the ledger's too: replay the transfers the workers
    // logged, on the starting balances, and compare.
    for (i, round) in report["rounds"]
        .as_array()
        .expect("rounds")
        .iter()
        .enumerate()
    {
        let path = round["ledger"]["sqlite"]["path"].as_str().expect("path");
        let balances = sqlite_balances(Path::new(path));
        let mut expected = vec![int(&report, "initial_balance"); balances.len()];
        let log = std::fs::read_to_string(dir.join(format!("round-{}-events.jsonl", i + 1)))
            .expect("events log");
        for line in log.lines() {
            let t: Value = serde_json::from_str(line).expect("event line");
            if t["outcome"] == "applied" {
                expected[t["from"].as_u64().expect("from") as usize] -= int(&t, "amount");
                expected[t["to"].as_u64().expect("to") as usize] += int(&t, "amount");
            }
        }
        let off = expected
            .iter()
            .zip(&balances)
            .filter(|(e, b)| e != b)
            .count();
        assert_eq!(int(round, "accounts_off"), off as i64, "{round}");
    }
    // Round 4: the account the taker wrote carries its token, above the stalled one.
    let fenced = &report["rounds"][3];
    let path = fenced["ledger"]["sqlite"]["path"].as_str().expect("path");
    let db = rusqlite::Connection::open(path).expect("open ledger");
    let fence: i64 = db
        .query_row("SELECT fence FROM account WHERE id = 1", [], |r| r.get(0))
        .expect("fence");
    assert!(fence > int(&fenced["stall"], "token"), "{fence} {fenced}");
}

#[test]
fn redis_demo_on_three_nodes_conserves_and_cleans_up() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let nodes = Cluster::start(3);
    let stores: Vec<String> = nodes
        .urls()
        .into_iter()
        .flat_map(|url| ["--store".to_string(), url])
        .collect();
    let stores: Vec<&str> = stores.iter().map(String::as_str).collect();

    let report = run_json(tmp.path(), &stores);
    assert!(report["kept"]["redis_prefix"].is_string(), "{report}");
    let mut first = nodes.connection(0);
    check_report(&report, |round| {
        let prefix = round["ledger"]["redis"]["prefix"]
            .as_str()
            .expect("ledger prefix");
        let keys: Vec<String> = (0..int(&report, "accounts"))
            .map(|i| format!("{prefix}balance:{i}"))
            .collect();
        let values: Vec<Option<i64>> = redis::cmd("MGET")
            .arg(&keys)
            .query(&mut first)
            .expect("MGET");
        values
            .into_iter()
            .map(|v| v.expect("every account has a balance"))
            .collect()
    });

    // Without --keep, nothing of the run is left on any node.
    for i in 0..nodes.len() {
        nodes.flushall(i);
    }
    demo(tmp.path())
        .args(SMALL)
        .args(&stores)
        .assert()
        .success();
    for i in 0..nodes.len() {
        assert_eq!(nodes.keys(i), Vec::<String>::new(), "keys left on node {i}");
    }
}

#[test]
fn table_is_the_default_output_and_the_temp_dir_is_removed() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = demo(tmp.path()).args(SMALL).output().expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    for row in [
        "1 no lock",
        "2 fencelock",
        "3 stall, unfenced",
        "4 stall, fenced",
    ] {
        assert!(stdout.contains(row), "no row {row:?} in:\n{stdout}");
    }
    // It fits an 80-column terminal without wrapping.
    for line in stdout.lines() {
        assert!(
            line.chars().count() <= 80,
            "{} columns: {line}\n{stdout}",
            line.chars().count()
        );
    }
    assert!(
        stdout.contains("late write and next read refused"),
        "{stdout}"
    );
    assert!(stdout.contains("and so was its next read"), "{stdout}");
    assert_eq!(
        stderr.matches("fencelock-demo: round").count(),
        4,
        "one progress line per round:\n{stderr}"
    );
    let left: Vec<_> = std::fs::read_dir(tmp.path()).expect("tmp").collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn bad_input_is_a_usage_error_not_a_panic() {
    let tmp = tempfile::tempdir().expect("tempdir");
    for args in [
        &["--workers", "1"][..],
        &["--workers", "many"],
        &["--workers", "-3"],
        &["--accounts", "2"],
        &["--transfers", "0"],
        &["--stall-ttl", "5ms"],
        &["--stall-ttl", "soon"],
        &["--store", "memory://"],
        &["--store", "bogus://host"],
        &["--store", "redis://"],
    ] {
        let out = demo(tmp.path()).args(args).output().expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(!stderr.trim().is_empty(), "{args:?}: no message");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
    let left: Vec<_> = std::fs::read_dir(tmp.path()).expect("tmp").collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn a_store_that_is_down_says_so() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let url = format!("redis://127.0.0.1:{}", free_port().expect("a free port"));
    let out = demo(tmp.path())
        .args(SMALL)
        .args(["--store", &url])
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(69), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// Every balance of an SQLite ledger, read with our own connection.
fn sqlite_balances(path: &Path) -> Vec<i64> {
    let db = rusqlite::Connection::open(path).expect("open ledger");
    let mut stmt = db
        .prepare("SELECT balance FROM account ORDER BY id")
        .expect("prepare");
    stmt.query_map([], |r| r.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("balances")
}
