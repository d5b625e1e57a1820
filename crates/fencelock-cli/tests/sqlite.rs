//! The CLI against the embedded SQLite store (the default), in a temp file.

mod support;

use support::scenarios::{self, Setup};

macro_rules! on_sqlite {
    ($($name:ident),* $(,)?) => {
        $(#[test] fn $name() {
            let dir = tempfile::tempdir().expect("temp dir");
            scenarios::$name(&Setup::new(vec![support::sqlite_url(dir.path())]));
        })*
    };
}

on_sqlite!(
    exit_status_passes_through,
    env_reaches_the_command,
    not_acquired,
    sigterm_reaches_the_command,
    interrupted_while_waiting,
    runs_never_overlap,
    acquire_extend_release_script,
    status_shows_the_holder,
    status_lists_keys_under_prefix,
    command_cannot_run,
    prefix_separates_namespaces,
    hold_at_least_runs_a_job_once,
    max_runtime_stops_an_overrunning_job,
    once_per_runs_a_job_once_per_slot,
);

/// With no --store and no FENCELOCK_STORE, the host-wide file is used: a directory
/// every user may create files in (1777, as /tmp), and a lock file every user may
/// write (0666), whatever the umask.
#[test]
fn default_store_is_host_wide() {
    use std::os::unix::fs::PermissionsExt;
    let state = tempfile::tempdir().expect("temp dir");
    let key = format!("host-wide-{}", std::process::id());
    let out = support::run(state.path(), &["-v", "run", &key, "--", "true"]);
    out.expect_code(0);
    let file = std::path::Path::new("/run/lock/fencelock/locks.db");
    assert!(
        out.stderr
            .contains(&format!("stores: sqlite://{}", file.display())),
        "{out:#?}"
    );
    let mode = |p: &std::path::Path| std::fs::metadata(p).expect("stat").permissions().mode();
    assert_eq!(mode(file.parent().unwrap()) & 0o7777, 0o1777);
    assert_eq!(mode(file) & 0o777, 0o666);
    assert!(!state.path().join("fencelock").exists(), "{out:#?}");
}

#[test]
fn unusable_sqlite_file_is_a_config_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("garbage.db");
    std::fs::write(&file, vec![b'x'; 8192]).expect("write");
    let t = Setup::new(vec![format!("sqlite://{}", file.display())]);
    t.run(&["run", "-n", "k", "--", "true"])
        .expect_code(78)
        .expect_one_error_line();
    t.run(&["run", "k", "--", "true"])
        .expect_code(78)
        .expect_one_error_line();
}
