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
);

/// With no --store and no FENCELOCK_STORE, the file under $XDG_STATE_HOME is used
/// (created with its directory), and two runs exclude each other through it.
#[test]
fn default_store_is_the_state_file() {
    let state = tempfile::tempdir().expect("temp dir");
    let out = support::run(state.path(), &["run", "dflt", "--", "true"]);
    out.expect_code(0);
    assert!(state.path().join("fencelock/locks.db").exists(), "{out:#?}");
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
