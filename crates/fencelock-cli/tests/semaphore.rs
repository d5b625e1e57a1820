//! `fencelock run --permits N` and `acquire --permits N`: up to N commands at once,
//! on the embedded SQLite store and on three real redis-server processes.

mod support;

use std::process::{Child, Command, Stdio};

use support::finish;
use support::scenarios::Setup;

/// Five runs of a command that records how many are inside the resource (a directory
/// of marker files) with 2 permits: never more than 2 inside. Each command counts the
/// markers after making its own, so of any 3 inside at once the last one in sees 3.
fn permits_cap_concurrent_runs(t: &Setup) {
    let inside = t.path("inside");
    std::fs::create_dir(&inside).expect("dir");
    let log = t.path("counts.log");
    let script = format!(
        "touch '{dir}/'$$; ls '{dir}' | wc -l >> '{log}'; \
         test -n \"$FENCELOCK_PERMIT\" || echo no-permit-env >> '{log}'; \
         sleep 0.3; rm '{dir}/'$$",
        dir = inside.display(),
        log = log.display()
    );
    let children: Vec<Child> = (0..5)
        .map(|_| t.spawn(&["run", "--permits", "2", "-w", "120s", "api", "-c", &script]))
        .collect();
    for child in children {
        let out = finish(child);
        assert_eq!(out.code, Some(0), "{out:#?}");
    }
    let counts: Vec<String> = std::fs::read_to_string(&log)
        .expect("log")
        .lines()
        .map(|l| l.trim().to_string())
        .collect();
    assert_eq!(counts.len(), 5, "{counts:?}");
    for c in &counts {
        let n: u32 = c.parse().unwrap_or_else(|_| panic!("{counts:?}"));
        assert!(
            (1..=2).contains(&n),
            "{n} commands inside at once: {counts:?}"
        );
    }
}

/// Both permits held: a third run is not acquired (exit 1, one error line); a run
/// naming another number of permits, 0, or too many is refused as bad usage; and
/// `acquire --permits` prints the permit it got.
fn full_semaphore_and_bad_numbers(t: &Setup) {
    let holders: Vec<Child> = (0..2)
        .map(|i| {
            let ready = t.path(&format!("held.{i}"));
            let script = format!("touch '{}'; exec sleep 60", ready.display());
            let child = t.spawn(&["run", "--permits", "2", "full", "-c", &script]);
            support::wait_for_file(&ready);
            child
        })
        .collect();
    let out = t.run(&["run", "-n", "--permits", "2", "full", "--", "true"]);
    out.expect_code(1).expect_one_error_line();
    assert!(out.stderr.contains("every permit"), "{out:#?}");
    t.run(&["acquire", "-n", "--permits", "2", "full"])
        .expect_code(1)
        .expect_one_error_line();
    let mixed = t.run(&["run", "-n", "--permits", "3", "full", "--", "true"]);
    mixed.expect_code(2).expect_one_error_line();
    assert!(mixed.stderr.contains("has 2 permits, not 3"), "{mixed:#?}");
    for bad in ["0", "65", "-1", "many"] {
        let out = t.run(&["run", "--permits", bad, "full", "--", "true"]);
        out.expect_code(2);
    }
    for holder in holders {
        support::scenarios::stop(holder);
    }
    let out = t.run(&["acquire", "--permits", "2", "--ttl", "5s", "free"]);
    out.expect_code(0);
    assert!(
        out.stdout.contains("FENCELOCK_PERMIT=") && out.stdout.contains("permit:"),
        "{out:#?}"
    );
}

/// `status` lists the permits in use with their holders (it refused the permit keys'
/// reserved names before), and `status --permits N KEY` shows each permit.
fn status_shows_permits(t: &Setup) {
    let ready = t.path("held");
    let script = format!("touch '{}'; exec sleep 60", ready.display());
    let holder = t.spawn(&[
        "run",
        "--permits",
        "2",
        "--holder",
        "report-job",
        "reports",
        "-c",
        &script,
    ]);
    support::wait_for_file(&ready);
    let all = t.run(&["status"]);
    all.expect_code(0);
    assert!(all.stdout.contains(":fencelock:c:permit:"), "{all:#?}");
    assert!(all.stdout.contains("report-job"), "{all:#?}");
    let each = t.run(&["status", "--permits", "2", "reports"]);
    each.expect_code(0);
    assert!(each.stdout.contains("permit:0: "), "{each:#?}");
    assert!(each.stdout.contains("permit:1: "), "{each:#?}");
    let permits = |state: &str| {
        each.stdout
            .lines()
            .filter(|l| l.contains(":permit:") && l.ends_with(state))
            .count()
    };
    assert_eq!(permits(": held"), 1, "{each:#?}");
    assert_eq!(permits(": free"), 1, "{each:#?}");
    assert!(each.stdout.contains("report-job"), "{each:#?}");
    support::scenarios::stop(holder);
}

/// Under `--prefix`, `status` without keys lists the permits in use too, with their
/// holders: a semaphore key without a hash tag has its permits at `{PREFIX+KEY}:…`,
/// outside the prefix, and they were missing. A lock under the prefix is listed beside
/// them, and the permits of another prefix are not.
fn status_under_a_prefix_shows_permits(t: &Setup) {
    let ready = t.path("prefixed.held");
    let script = format!("touch '{}'; exec sleep 60", ready.display());
    let holder = t.spawn(&[
        "--prefix",
        "team-a:",
        "run",
        "--permits",
        "2",
        "--holder",
        "nightly-export",
        "exports",
        "-c",
        &script,
    ]);
    support::wait_for_file(&ready);
    t.run(&[
        "--prefix",
        "team-a:",
        "acquire",
        "--ttl",
        "20s",
        "plain-lock",
    ])
    .expect_code(0);
    let all = t.run(&["--prefix", "team-a:", "status"]);
    all.expect_code(0);
    assert!(
        all.stdout.contains("{team-a:exports}:fencelock:c:permit:"),
        "{all:#?}"
    );
    assert!(all.stdout.contains("nightly-export"), "{all:#?}");
    assert!(all.stdout.contains("plain-lock: held"), "{all:#?}");
    let other = t.run(&["--prefix", "team-b:", "status"]);
    other.expect_code(0);
    assert!(!other.stdout.contains("permit:"), "{other:#?}");
    support::scenarios::stop(holder);
}

#[test]
fn status_under_a_prefix_shows_permits_on_sqlite() {
    status_under_a_prefix_shows_permits(&Setup::sqlite());
}

#[test]
fn status_under_a_prefix_shows_permits_on_three_redis_nodes() {
    let cluster = support::Cluster::start(3);
    status_under_a_prefix_shows_permits(&Setup::new(cluster.urls()));
}

/// `run --fair --permits 1`: a fair waiter in line gets the permit the holder frees
/// (exit 0 of the waiting run); `--fair` without `--permits` is bad usage.
fn fair_run_gets_the_freed_permit(t: &Setup) {
    let ready = t.path("fair.held");
    let script = format!("touch '{}'; sleep 1", ready.display());
    let holder = t.spawn(&["run", "--fair", "--permits", "1", "fair-key", "-c", &script]);
    support::wait_for_file(&ready);
    let waiter = t.run(&[
        "run",
        "--fair",
        "--permits",
        "1",
        "-w",
        "60s",
        "fair-key",
        "--",
        "true",
    ]);
    waiter.expect_code(0);
    let holder = finish(holder);
    assert_eq!(holder.code, Some(0), "{holder:#?}");
    t.run(&["run", "--fair", "fair-key", "--", "true"])
        .expect_code(2);
}

#[test]
fn fair_run_gets_the_freed_permit_on_sqlite() {
    fair_run_gets_the_freed_permit(&Setup::sqlite());
}

#[test]
fn fair_run_gets_the_freed_permit_on_three_redis_nodes() {
    let cluster = support::Cluster::start(3);
    fair_run_gets_the_freed_permit(&Setup::new(cluster.urls()));
}

/// A script takes a permit with `acquire --permits`, extends and releases it by the
/// permit key and value it was given (`extend`/`release` refused the permit key's
/// reserved name before), as it would a lock.
fn script_extends_and_releases_a_permit(t: &Setup) {
    let script = r#"
        set -x
        out=$("$FL" acquire --permits 2 --ttl 20s jobs) || exit 10
        eval "$out"
        [ -n "$FENCELOCK_PERMIT" ] && [ -n "$FENCELOCK_VALUE" ] || exit 11
        other=$("$FL" acquire --permits 2 --ttl 20s jobs) || exit 12
        "$FL" acquire -n --permits 2 jobs >/dev/null 2>&1; [ $? -eq 1 ] || exit 13
        ext=$("$FL" extend "$FENCELOCK_PERMIT" --value "$FENCELOCK_VALUE" --ttl 30s) || exit 14
        printf '%s\n' "$ext" | grep -q '^FENCELOCK_TTL_MS=30000$' || exit 15
        "$FL" status "$FENCELOCK_PERMIT" | grep -q ': held' || exit 16
        "$FL" release "$FENCELOCK_PERMIT" --value "$FENCELOCK_VALUE" || exit 17
        "$FL" release "$FENCELOCK_PERMIT" --value "$FENCELOCK_VALUE"; [ $? -eq 3 ] || exit 18
        "$FL" acquire -n --permits 2 jobs >/dev/null || exit 19
        "$FL" acquire jobs:fencelock:permit:0 >/dev/null 2>&1; [ $? -eq 2 ] || exit 20
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

#[test]
fn script_extends_and_releases_a_permit_on_sqlite() {
    script_extends_and_releases_a_permit(&Setup::sqlite());
}

#[test]
fn script_extends_and_releases_a_permit_on_three_redis_nodes() {
    let cluster = support::Cluster::start(3);
    script_extends_and_releases_a_permit(&Setup::new(cluster.urls()));
}

/// Holders killed with SIGKILL (nothing releases their permits) hold them until their
/// TTL runs out on the stores; then a waiting run gets one.
fn killed_holders_permits_come_back(t: &Setup) {
    let holders: Vec<Child> = (0..2)
        .map(|i| {
            let ready = t.path(&format!("dead.{i}"));
            let script = format!("touch '{}'; exec sleep 60", ready.display());
            let child = t.spawn(&[
                "run",
                "--permits",
                "2",
                "--ttl",
                "2s",
                "dead",
                "-c",
                &script,
            ]);
            support::wait_for_file(&ready);
            child
        })
        .collect();
    for mut holder in holders {
        holder.kill().expect("SIGKILL");
        let _ = support::wait_bounded(&mut holder);
    }
    let out = t.run(&["run", "-w", "60s", "--permits", "2", "dead", "--", "true"]);
    out.expect_code(0);
}

#[test]
fn killed_holders_permits_come_back_on_sqlite() {
    killed_holders_permits_come_back(&Setup::sqlite());
}

#[test]
fn killed_holders_permits_come_back_on_three_redis_nodes() {
    let cluster = support::Cluster::start(3);
    killed_holders_permits_come_back(&Setup::new(cluster.urls()));
}

#[test]
fn status_shows_permits_on_sqlite() {
    status_shows_permits(&Setup::sqlite());
}

#[test]
fn status_shows_permits_on_three_redis_nodes() {
    let cluster = support::Cluster::start(3);
    status_shows_permits(&Setup::new(cluster.urls()));
}

#[test]
fn permits_cap_concurrent_runs_on_sqlite() {
    permits_cap_concurrent_runs(&Setup::sqlite());
}

#[test]
fn permits_cap_concurrent_runs_on_three_redis_nodes() {
    let cluster = support::Cluster::start(3);
    permits_cap_concurrent_runs(&Setup::new(cluster.urls()));
}

#[test]
fn full_semaphore_and_bad_numbers_on_sqlite() {
    full_semaphore_and_bad_numbers(&Setup::sqlite());
}

#[test]
fn full_semaphore_and_bad_numbers_on_three_redis_nodes() {
    let cluster = support::Cluster::start(3);
    full_semaphore_and_bad_numbers(&Setup::new(cluster.urls()));
}
