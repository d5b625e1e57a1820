//! `fencelock run` against three real `redis-server` nodes with one of them silent
//! (SIGSTOPped): the job runs to the end, exclusive throughout, as Redlock promises.
//! Outcomes only — the exit code, the job's own marker files, a rival refused — never
//! how long anything took.

mod support;

use std::time::Duration;

use support::{Cluster, finish, spawn, store_args, wait_for_file};

#[test]
fn a_paused_node_of_three_does_not_kill_a_running_job() {
    let cluster = Cluster::start(3);
    let state = tempfile::tempdir().expect("state dir");
    let work = tempfile::tempdir().expect("work dir");
    let started = work.path().join("started");
    let finished = work.path().join("finished");
    let stores = store_args(&cluster.urls());
    let script = format!(
        "touch '{}'; sleep 9; touch '{}'",
        started.display(),
        finished.display()
    );
    let mut args: Vec<&str> = stores.iter().map(String::as_str).collect();
    args.extend([
        "run",
        "--ttl",
        "3s",
        "minority-job",
        "--",
        "sh",
        "-c",
        &script,
    ]);
    let job = spawn(state.path(), &args);
    wait_for_file(&started);
    // One node stops answering (a pause, a partition, a swapping host) two seconds in:
    // several renewals of the 3 s lease must go through on the other two.
    std::thread::sleep(Duration::from_secs(2));
    cluster.pause(2);
    // The lock is still held throughout: a rival is refused, not admitted. (The rival
    // itself needs only the two healthy nodes to be told so.)
    let mut rival: Vec<&str> = stores.iter().map(String::as_str).collect();
    rival.extend(["run", "-n", "minority-job", "--", "true"]);
    let refused = finish(spawn(state.path(), &rival));
    assert_eq!(refused.code, Some(1), "{refused:#?}");
    let done = finish(job);
    assert_eq!(
        done.code,
        Some(0),
        "the job was not left to finish: {done:#?}"
    );
    assert!(
        finished.exists(),
        "the job was stopped before its end: {done:#?}"
    );
    cluster.resume(2);
}

#[test]
fn a_paused_node_of_three_does_not_fail_a_short_job() {
    let cluster = Cluster::start(3);
    cluster.pause(0);
    let state = tempfile::tempdir().expect("state dir");
    let stores = store_args(&cluster.urls());
    let mut args: Vec<&str> = stores.iter().map(String::as_str).collect();
    args.extend(["run", "-n", "short-job", "--", "true"]);
    for _ in 0..3 {
        let out = finish(spawn(state.path(), &args));
        assert_eq!(out.code, Some(0), "{out:#?}");
    }
    cluster.resume(0);
}
