//! Bad input never reaches a store: one `fencelock: …` line and exit 2 (usage), and
//! `--help` is what `tests/snapshots/help.txt` says (regenerate the file with
//! `UPDATE_SNAPSHOTS=1 cargo test -p fencelock-cli --test usage`).

mod support;

use assert_cmd::Command;
use predicates::prelude::*;

/// `fencelock` with a clean environment and an unreachable store, so that a test that
/// wrongly got past validation fails with 69 instead of touching anything.
fn fencelock(state: &tempfile::TempDir) -> Command {
    let mut cmd = Command::from_std(support::fencelock(state.path()));
    cmd.args(["--store", "redis://127.0.0.1:1"]);
    cmd
}

fn one_usage_line() -> impl Predicate<str> {
    predicate::str::starts_with("fencelock: ")
        .and(predicate::function(|s: &str| s.lines().count() == 1))
        .and(predicate::str::contains("panicked").not())
}

#[test]
fn bad_input_is_a_usage_error() {
    let state = tempfile::tempdir().expect("temp dir");
    let cases: &[&[&str]] = &[
        &["run", "--frobnicate", "k", "--", "true"],
        &["frobnicate"],
        &["run", "k"],
        &["run", "--ttl", "abc", "k", "--", "true"],
        &["run", "--ttl", "0", "k", "--", "true"],
        &["run", "--ttl", "0s", "k", "--", "true"],
        &["run", "-w", "soon", "k", "--", "true"],
        &["run", "--kill-after", "x", "k", "--", "true"],
        &["run", "-E", "300", "k", "--", "true"],
        &["run", "-n", "-w", "1s", "k", "--", "true"],
        &["run", "", "--", "true"],
        &["run", "k", "--", ""],
        &["run", "-c", "true", "k", "--", "true"],
        &["acquire", ""],
        &["acquire", "--ttl", "-1", "k"],
        &["status", ""],
        &["extend", "k"],
        &["extend", "k", "--value", ""],
        // No default TTL: a default could shorten a long lease by accident.
        &["extend", "k", "--value", "v"],
        &["release", "k"],
        &["release", "k", "--value", ""],
        &["release", "a:fencelock:fence", "--value", "v"],
    ];
    for args in cases {
        fencelock(&state)
            .args(*args)
            .assert()
            .code(2)
            .stdout("")
            .stderr(one_usage_line());
    }
}

#[test]
fn bad_store_urls_are_usage_errors_without_passwords() {
    let state = tempfile::tempdir().expect("temp dir");
    for url in [
        "nonsense",
        "http://u:secret@h:1",
        "redis://u:secret@h:1/notadb",
        "redis://u:secret@",
        "sqlite://",
    ] {
        Command::from_std(support::fencelock(state.path()))
            .args(["--store", url, "run", "k", "--", "true"])
            .assert()
            .code(2)
            .stderr(one_usage_line().and(predicate::str::contains("secret").not()));
    }
    Command::from_std(support::fencelock(state.path()))
        .env(
            "FENCELOCK_STORE",
            "redis://u:secret@h:1/x,redis://127.0.0.1:1",
        )
        .args(["status", "k"])
        .assert()
        .code(2)
        .stderr(one_usage_line().and(predicate::str::contains("secret").not()));
}

#[test]
fn help_and_version() {
    let state = tempfile::tempdir().expect("temp dir");
    fencelock(&state)
        .arg("--version")
        .assert()
        .success()
        .stdout(predicate::str::starts_with("fencelock "));
    // No command at all: the help, on stderr, and a usage exit code.
    Command::from_std(support::fencelock(state.path()))
        .assert()
        .code(2)
        .stderr(predicate::str::contains("Usage: fencelock"));
}

#[test]
fn help_matches_the_snapshot() {
    let state = tempfile::tempdir().expect("temp dir");
    let mut text = String::new();
    for args in [
        &["--help"][..],
        &["run", "--help"],
        &["acquire", "--help"],
        &["extend", "--help"],
        &["release", "--help"],
        &["status", "--help"],
    ] {
        let out = Command::from_std(support::fencelock(state.path()))
            .args(args)
            .env("FENCELOCK_STORE", "redis://user:hidden@h:1")
            .env("FENCELOCK_PREFIX", "hidden")
            .output()
            .expect("run");
        assert!(out.status.success(), "{args:?}: {out:?}");
        text.push_str(&format!("$ fencelock {}\n", args.join(" ")));
        text.push_str(&String::from_utf8_lossy(&out.stdout));
        text.push('\n');
    }
    // Environment values (they may hold passwords) are never shown.
    assert!(!text.contains("hidden"), "{text}");
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots/help.txt");
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, &text).expect("write snapshot");
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        expected == text,
        "--help changed; if that is intended, run with UPDATE_SNAPSHOTS=1 and commit \
         {}\n--- got:\n{text}",
        path.display()
    );
}

/// An empty or blank store setting is a mistake (an unset variable in a deploy
/// script), never a silent fall back to the local file.
#[test]
fn empty_store_settings_are_usage_errors() {
    let state = tempfile::tempdir().expect("temp dir");
    for value in ["", " ", ",", " , ", "redis://127.0.0.1:1,"] {
        Command::from_std(support::fencelock(state.path()))
            .env("FENCELOCK_STORE", value)
            .args(["run", "k", "--", "true"])
            .assert()
            .code(2)
            .stdout("")
            .stderr(one_usage_line().and(predicate::str::contains("store")));
    }
    for args in [
        &["--store", "", "run", "k", "--", "true"][..],
        &["--store", " ", "status"],
        &["--store", "redis://127.0.0.1:1", "--store", "", "status"],
    ] {
        Command::from_std(support::fencelock(state.path()))
            .args(args)
            .assert()
            .code(2)
            .stderr(one_usage_line().and(predicate::str::contains("store")));
    }
    // Nothing fell back to the default file.
    assert!(!state.path().join("fencelock").exists());
}

/// A memory store lives and dies with one process: each fencelock command is its own
/// process, so it would exclude nothing.
#[test]
fn memory_store_is_refused_with_the_reason() {
    let state = tempfile::tempdir().expect("temp dir");
    for args in [
        &["--store", "memory://", "run", "k", "--", "true"][..],
        &["--store", "memory://", "acquire", "k"],
    ] {
        Command::from_std(support::fencelock(state.path()))
            .args(args)
            .assert()
            .code(2)
            .stderr(
                one_usage_line()
                    .and(predicate::str::contains("memory://"))
                    .and(predicate::str::contains("process")),
            );
    }
}

/// `-v` says which stores are in use, without their passwords.
#[test]
fn verbose_names_the_stores() {
    let state = tempfile::tempdir().expect("temp dir");
    Command::from_std(support::fencelock(state.path()))
        .args([
            "-v",
            "--store",
            "redis://:topsecret@127.0.0.1:1",
            "status",
            "k",
        ])
        .assert()
        .code(69)
        .stderr(
            predicate::str::contains("stores: redis://")
                .and(predicate::str::contains("127.0.0.1:1"))
                .and(predicate::str::contains("topsecret").not()),
        );
    Command::from_std(support::fencelock(state.path()))
        .args([
            "-v",
            "run",
            &format!("verbose-{}", std::process::id()),
            "--",
            "true",
        ])
        .assert()
        .code(0)
        .stderr(predicate::str::contains("stores: sqlite://"));
}

/// Every command's help shows a few examples, and its own exit codes.
#[test]
fn every_command_has_examples() {
    let state = tempfile::tempdir().expect("temp dir");
    for command in ["run", "acquire", "extend", "release", "status", "doctor"] {
        let out = Command::from_std(support::fencelock(state.path()))
            .args([command, "--help"])
            .output()
            .expect("run");
        let help = String::from_utf8_lossy(&out.stdout);
        let examples = help
            .split("Examples:\n")
            .nth(1)
            .unwrap_or_else(|| panic!("{command}: no examples in\n{help}"));
        let shown = examples
            .lines()
            .take_while(|l| !l.is_empty())
            .filter(|l| l.contains("fencelock "))
            .count();
        assert!(
            (2..=4).contains(&shown),
            "{command}: {shown} examples\n{help}"
        );
        assert!(help.contains("Exit codes:"), "{command}:\n{help}");
    }
}

/// clap's multi-line errors read as one sentence on one line.
#[test]
fn errors_read_as_one_sentence() {
    let state = tempfile::tempdir().expect("temp dir");
    for args in [&["run", "k"][..], &["extend", "k"], &["run"]] {
        fencelock(&state).args(args).assert().code(2).stderr(
            one_usage_line()
                .and(predicate::str::contains(":;").not())
                .and(predicate::str::contains("  ").not()),
        );
    }
}
