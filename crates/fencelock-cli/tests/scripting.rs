//! The CLI as shell scripts use it: `eval "$(fencelock acquire …)"`, JSON for
//! programs, and hostile keys. Against the embedded SQLite store in a temp file (the
//! quoting does not depend on the store).

mod support;

use std::process::{Command, Stdio};

use support::scenarios::Setup;
use support::{Finished, finish};

fn sqlite() -> Setup {
    Setup::sqlite()
}

/// Runs a `sh` script with `$FL` the binary and the test's store in the environment.
fn script(t: &Setup, text: &str, args: &[&str]) -> Finished {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(text)
        .arg("sh")
        .args(args)
        .env("FL", env!("CARGO_BIN_EXE_fencelock"))
        .env("FENCELOCK_STORE", t.stores.join(","))
        .env("XDG_STATE_HOME", t.dir.path())
        .env_remove("FENCELOCK_VALUE")
        .env_remove("FENCELOCK_PREFIX")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    finish(cmd.spawn().expect("sh"))
}

/// The README's pattern with keys that would inject commands or split words if the
/// output were not quoted: the eval sets exactly the prefixed variables, runs nothing,
/// and the value it sets releases the lock.
#[test]
fn eval_of_acquire_is_safe_whatever_the_key_holds() {
    let t = sqlite();
    let marker = t.path("pwned");
    let marker = support::s(&marker);
    for key in [
        format!("y; touch {marker}"),
        format!("$(touch {marker})"),
        format!("`touch {marker}`"),
        "two words".to_string(),
        "it's".to_string(),
        "ünïcode ✓".to_string(),
        "*".to_string(),
    ] {
        let out = script(
            &t,
            r#"
            key=mine; value=mine
            eval "$("$FL" acquire "$1" --ttl 20s)" || exit 10
            [ "$key" = mine ] && [ "$value" = mine ] || exit 11
            printf '%s\n' "$FENCELOCK_KEY"
            case "$FENCELOCK_TOKEN" in ''|*[!0-9]*) exit 12;; esac
            case "$FENCELOCK_VALID_MS" in ''|*[!0-9]*) exit 13;; esac
            "$FL" release "$1" --value "$FENCELOCK_VALUE" || exit 14
            "#,
            &[&key],
        );
        assert_eq!(out.code, Some(0), "{key:?}: {out:#?}");
        assert_eq!(out.stdout, format!("{key}\n"), "{key:?}: {out:#?}");
        assert!(
            !std::path::Path::new(marker).exists(),
            "{key:?} injected a command"
        );
    }
}

/// A newline could start a forged line (`FENCELOCK_VALUE=…`) for a reader that splits
/// lines; an escape sequence could repaint a terminal. Such keys are refused by every
/// command before any store is asked.
#[test]
fn keys_with_control_characters_are_refused() {
    let t = sqlite();
    for key in [
        "a\nFENCELOCK_VALUE=x",
        "tab\there",
        "esc\u{1b}[2J",
        "nul\u{7f}",
    ] {
        for args in [
            &["acquire", key][..],
            &["run", key, "--", "true"],
            &["status", key],
            &["extend", key, "--value", "v", "--ttl", "5s"],
            &["release", key, "--value", "v"],
        ] {
            let out = t.run(args);
            out.expect_code(2).expect_one_error_line();
            assert!(out.stderr.contains("control character"), "{out:#?}");
            assert_eq!(out.stdout, "", "{out:#?}");
        }
    }
    t.run(&["--prefix", "p\n", "status", "k"])
        .expect_code(2)
        .expect_one_error_line();
    // Nothing was locked on the way.
    let listed = t.run(&["status"]);
    listed.expect_code(0);
    assert_eq!(listed.stdout, "no keys locked recently\n", "{listed:#?}");
}

/// `--format json` on the commands whose answer a program reads.
#[test]
fn json_answers() {
    let t = sqlite();
    let out = t.run(&["acquire", "j s\"on", "--ttl", "20s", "--format", "json"]);
    out.expect_code(0);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("acquire JSON");
    assert_eq!(v["key"], "j s\"on");
    assert_eq!(v["ttl_ms"], 20_000);
    assert!(v["token"].as_u64().is_some_and(|t| t > 0), "{v}");
    let value = v["value"].as_str().expect("value").to_string();

    let ext = t.run(&[
        "extend", "j s\"on", "--value", &value, "--ttl", "30s", "--format", "json",
    ]);
    ext.expect_code(0);
    let e: serde_json::Value = serde_json::from_str(&ext.stdout).expect("extend JSON");
    assert_eq!(e["ttl_ms"], 30_000);
    assert!(e["valid_ms"].as_u64().is_some_and(|ms| ms > 0), "{e}");

    let st = t.run(&["status", "--format", "json", "j s\"on"]);
    st.expect_code(0);
    let s: serde_json::Value = serde_json::from_str(&st.stdout).expect("status JSON");
    assert_eq!(s["keys"][0]["state"], "held");
    assert_eq!(s["keys"][0]["key"], "j s\"on");

    t.run(&["release", "j s\"on", "--value", &value])
        .expect_code(0);
}

/// Runs `fencelock` with its stdout a pipe whose reading end is already closed (as in
/// `fencelock acquire k | head -0`, or a reader that died).
fn with_closed_stdout(t: &Setup, args: &[&str]) -> Finished {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let mut cmd = support::fencelock(t.dir.path());
    cmd.args(support::store_args(&t.stores))
        .args(args)
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(Stdio::piped());
    finish(cmd.spawn().expect("spawn"))
}

/// A lock taken by a command that cannot report it is of use to no one: `acquire`
/// releases it and says so by its exit code, with no panic.
#[test]
fn acquire_with_a_closed_stdout_releases_the_lock() {
    let t = sqlite();
    let out = with_closed_stdout(&t, &["acquire", "piped", "--ttl", "60s"]);
    out.expect_code(74).expect_one_error_line();
    assert!(out.stderr.contains("released"), "{out:#?}");
    // Free at once, not after the 60 s TTL.
    t.run(&["run", "-n", "piped", "--", "true"]).expect_code(0);

    let out = with_closed_stdout(&t, &["status", "piped"]);
    out.expect_code(74).expect_one_error_line();
}

/// The holder record names the program and host, never the arguments (which may hold
/// secrets, as in `mysql -pSECRET`); `--holder` replaces the name.
#[test]
fn holder_record_has_no_arguments() {
    let t = sqlite();
    let ready = t.path("ready");
    let script = format!("touch '{}'; exec sleep 60", ready.display());
    let holder = t.spawn(&["run", "k", "--", "sh", "-c", &script, "sh", "-pSECRET"]);
    support::wait_for_file(&ready);
    let text = t.run(&["status", "k"]);
    let json = t.run(&["status", "--format", "json", "k"]);
    support::scenarios::stop(holder);
    for out in [&text, &json] {
        out.expect_code(0);
        assert!(!out.stdout.contains("SECRET"), "{out:#?}");
    }
    let v: serde_json::Value = serde_json::from_str(&json.stdout).expect("JSON");
    assert_eq!(v["keys"][0]["holder"]["name"], "sh", "{v}");

    // `acquire` records its parent, by name only.
    let out = script_with(
        &t,
        r#""$FL" acquire k2 --ttl 20s >/dev/null && "$FL" status --format json k2 # SECRET"#,
    );
    out.expect_code(0);
    assert!(!out.stdout.contains("SECRET"), "{out:#?}");
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
    assert_eq!(v["keys"][0]["holder"]["name"], "sh", "{v}");

    // --holder names the holder instead.
    let ready = t.path("ready2");
    let script = format!("touch '{}'; exec sleep 60", ready.display());
    let holder = t.spawn(&["run", "--holder", "nightly report", "k3", "-c", &script]);
    support::wait_for_file(&ready);
    let out = t.run(&["status", "k3"]);
    support::scenarios::stop(holder);
    assert!(out.stdout.contains("nightly report"), "{out:#?}");
}

fn script_with(t: &Setup, text: &str) -> Finished {
    script(t, text, &[])
}

/// `doctor`'s probe lock leaves nothing that `status` lists.
#[test]
fn doctor_leaves_no_probe_keys() {
    let t = sqlite();
    t.run(&["doctor"]).expect_code(0);
    t.run(&["doctor"]).expect_code(0);
    let out = t.run(&["status"]);
    out.expect_code(0);
    assert_eq!(out.stdout, "no keys locked recently\n", "{out:#?}");
}
