//! The CLI against one Redis Cluster of three primaries, named by
//! `--store redis+cluster://h:p1,h:p2,h:p3` (clap splits the value at its commas; the
//! CLI joins the seeds back).

mod support;

use support::RedisCluster;
use support::scenarios::{self, Setup};

macro_rules! on_redis_cluster {
    ($($name:ident),* $(,)?) => {
        $(#[test] fn $name() {
            let cluster = RedisCluster::start();
            scenarios::$name(&Setup::new(vec![cluster.url()]));
        })*
    };
}

on_redis_cluster!(
    exit_status_passes_through,
    not_acquired,
    runs_never_overlap,
    acquire_extend_release_script,
    status_shows_the_holder,
    status_lists_keys_under_prefix,
    prefix_separates_namespaces,
    hold_at_least_runs_a_job_once,
    once_per_runs_a_job_once_per_slot,
);

/// The same cluster named through `FENCELOCK_STORE` (comma-separated too) by a
/// single seed: the other primaries are discovered.
#[test]
fn one_seed_in_the_environment_is_enough() {
    let cluster = RedisCluster::start();
    let url = cluster.url();
    let one_seed = url.split(',').next().expect("a seed").to_string();
    let dir = tempfile::tempdir().expect("temp dir");
    for key in ["a", "b", "c", "d", "e", "f"] {
        for store in [&url, &one_seed] {
            let out = support::fencelock(dir.path())
                .env("FENCELOCK_STORE", store)
                .args(["run", key, "--", "true"])
                .output()
                .expect("fencelock runs");
            assert!(out.status.success(), "{key} over {store}: {out:?}");
        }
    }
}
