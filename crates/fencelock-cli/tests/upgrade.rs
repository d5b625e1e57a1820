//! A rolling upgrade on real `redis-server` nodes: `fencelock run` of the version before
//! issue #17's wire changes (built from this repository's history, see
//! `support/previous.rs`) and of this version loop on the same key — on one node, and on
//! three while one node is paused and later another is restarted empty (after staying
//! down for longer than the TTL, as Redlock requires). Checked at the resource — a log the
//! jobs append to — never by the locks' own view: no two jobs ever inside at once, and
//! the fencing tokens the jobs were given only ever go up.
//!
//! What changed between the two (docs/protocol.md, CHANGELOG): lock values carry an
//! `fl:` mark, a refusal says whether the holder is silent (and waiters then poll),
//! fencing counters are no longer kept 24 h but retired once the node's clock has
//! passed them. Outcomes only; nothing here measures time.

mod support;

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use support::previous::fencelock_before_issue_17;
use support::{Cluster, PATIENCE, fencelock_at, store_args};

/// Critical sections to run after the last fault (and on one node, in all).
const AFTER_FAULTS: usize = 24;
/// A bound on each worker's runs, should the test's schedule never stop them.
const MAX_ROUNDS: usize = 500;
/// Every run's `--ttl`.
const TTL: Duration = Duration::from_secs(2);

/// One node: a release with a waiter in line hands the key straight to it (the
/// one-node hand-off), here between versions both ways. No faults: a lone node restarted
/// empty frees a held lock, as Redlock on one node must.
#[test]
fn one_node_old_and_new_never_overlap_and_tokens_only_go_up() {
    rolling_upgrade(1);
}

/// Three nodes, with a node paused for a stretch and then another restarted empty.
#[test]
fn three_nodes_old_and_new_never_overlap_and_tokens_only_go_up() {
    rolling_upgrade(3);
}

fn rolling_upgrade(nodes: usize) {
    let old = fencelock_before_issue_17().to_path_buf();
    let new = Path::new(env!("CARGO_BIN_EXE_fencelock")).to_path_buf();
    let cluster = Cluster::start(nodes);
    let stores = store_args(&cluster.urls());
    let state = tempfile::tempdir().expect("state dir");
    let log = state.path().join("resource.log");

    // Two workers of each version, each running jobs one after the other until told
    // to stop.
    let failed = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = [("old", &old), ("new", &new), ("old", &old), ("new", &new)]
        .into_iter()
        .enumerate()
        .map(|(i, (version, bin))| {
            let (bin, stores, state, log, failed, stop) = (
                bin.clone(),
                stores.clone(),
                state.path().to_path_buf(),
                log.clone(),
                failed.clone(),
                stop.clone(),
            );
            let tag = format!("{version}{i}");
            std::thread::spawn(move || {
                let job = format!(
                    "echo \"start $FENCELOCK_TOKEN {tag}\" >> '{0}'; sleep 0.02; \
                     echo \"end $FENCELOCK_TOKEN {tag}\" >> '{0}'",
                    log.display()
                );
                for _ in 0..MAX_ROUNDS {
                    if failed.load(Ordering::SeqCst) || stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let mut child = fencelock_at(&bin, &state)
                        .args(&stores)
                        .args(["run", "--wait", "60s", "--ttl"])
                        .arg(format!("{}ms", TTL.as_millis()))
                        .args(["upgrade", "--"])
                        .args(["sh", "-c", &job])
                        .stdin(Stdio::null())
                        .stdout(Stdio::null())
                        .stderr(Stdio::inherit())
                        .spawn()
                        .expect("spawn fencelock");
                    let status = wait_bounded_long(&mut child);
                    if !status.success() {
                        failed.store(true, Ordering::SeqCst);
                        panic!("{tag}: fencelock run ended with {status}");
                    }
                }
            })
        })
        .collect();

    // Faults while they take turns: a node paused for a stretch, then another one
    // restarted empty (its counters gone: tokens must still go up).
    let sections_so_far = || finished_sections(&log);
    let after = |n: usize| wait_for_sections(&log, n, &failed);
    if nodes == 3 {
        after(8);
        cluster.pause(2);
        after(16);
        cluster.resume(2);
        after(24);
        // Down for longer than the TTL, as Redlock requires of a node that restarts
        // empty (a "delayed restart"): sooner, a holder left on a bare majority that
        // included it could be joined by a second one, whatever the versions.
        cluster.kill(1);
        std::thread::sleep(TTL + Duration::from_secs(1));
        cluster.restart(1);
    }
    after(sections_so_far() + AFTER_FAULTS);
    stop.store(true, Ordering::SeqCst);

    for w in workers {
        w.join().expect("a worker failed");
    }
    let text = std::fs::read_to_string(&log).expect("the resource's log");
    let sections = check(&text);
    // Both versions held the lock, and the lock passed between them both ways.
    let versions: Vec<&str> = sections.iter().map(|s| &s.1[..3]).collect();
    let passed = |a: &str, b: &str| versions.windows(2).any(|w| w[0] == a && w[1] == b);
    assert!(passed("old", "new") && passed("new", "old"), "{text}");
}

/// The resource's view: each job's `start` is followed by its own `end` before any
/// other line (nobody else inside), and every job's token is above the one before.
/// Returns (token, tag) per critical section.
fn check(text: &str) -> Vec<(u64, String)> {
    let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split(' ').collect()).collect();
    let mut sections: Vec<(u64, String)> = Vec::new();
    for pair in lines.chunks(2) {
        let [start, end] = pair else {
            panic!("a job started and never ended:\n{text}");
        };
        assert!(
            start[0] == "start" && end[0] == "end" && start[1..] == end[1..],
            "two jobs inside at once ({start:?} then {end:?}):\n{text}"
        );
        let token: u64 = start[1].parse().expect("a token");
        if let Some((previous, _)) = sections.last() {
            assert!(
                token > *previous,
                "token {token} after {previous}: went backwards\n{text}"
            );
        }
        sections.push((token, start[2].to_string()));
    }
    sections
}

/// How many critical sections the log shows finished.
fn finished_sections(log: &Path) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("end "))
        .count()
}

/// Waits until the log holds `n` finished critical sections (or a worker failed).
fn wait_for_sections(log: &Path, n: usize, failed: &AtomicBool) {
    let deadline = Instant::now() + 4 * PATIENCE;
    loop {
        let ends = finished_sections(log);
        if ends >= n || failed.load(Ordering::SeqCst) {
            return;
        }
        assert!(Instant::now() < deadline, "only {ends} of {n} jobs ran");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits for a run that may stand in line behind every other worker (a hang guard).
fn wait_bounded_long(child: &mut std::process::Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + 4 * PATIENCE;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("fencelock run {} did not finish", child.id());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
