//! TLS and password options reach every command, not only `doctor`.

mod support;

use support::scenarios::Setup;
use support::{Certs, Cluster, Server, s};

/// `--ca-cert` / `FENCELOCK_CA_CERT` is used by every command that talks to the
/// stores; without it an untrusted certificate is a configuration error (78).
#[test]
fn the_ca_certificate_reaches_every_command() {
    let certs = Certs::generate();
    let redis = Server::start_tls(&certs, &[]);
    let t = Setup::new(vec![redis.url()]);
    let ca = s(&certs.ca);

    let out = t.run(&["run", "-n", "k", "--", "true"]);
    out.expect_code(78).expect_one_error_line();
    assert!(out.stderr.contains("certificate"), "{out:#?}");

    t.run(&["--ca-cert", ca, "run", "-n", "k", "--", "true"])
        .expect_code(0);
    let acquired = t.run(&["acquire", "k", "--ca-cert", ca, "--format", "json"]);
    acquired.expect_code(0);
    let v: serde_json::Value = serde_json::from_str(&acquired.stdout).expect("JSON");
    let value = v["value"].as_str().expect("value");
    t.run(&[
        "--ca-cert",
        ca,
        "extend",
        "k",
        "--value",
        value,
        "--ttl",
        "9s",
    ])
    .expect_code(0);
    t.run(&["--ca-cert", ca, "status", "--held", "k"])
        .expect_code(0);

    // The same through the environment.
    let mut release = support::fencelock(t.dir.path());
    release
        .args(["--store", &redis.url(), "release", "k", "--value", value])
        .env("FENCELOCK_CA_CERT", ca);
    let status = release.status().expect("release");
    assert_eq!(status.code(), Some(0));
}

/// `--password-file` / `FENCELOCK_PASSWORD_FILE` and `FENCELOCK_PASSWORD` keep the
/// password out of `ps`, for every command.
#[test]
fn passwords_from_a_file_or_the_environment() {
    let cluster = Cluster::start_with_args(1, &["--requirepass", "file-pw"]);
    let t = Setup::new(cluster.urls());
    let file = t.path("password");
    std::fs::write(&file, "file-pw\n").expect("write");
    t.run(&["run", "-n", "k", "--", "true"]).expect_code(78);
    t.run(&["--password-file", s(&file), "run", "-n", "k", "--", "true"])
        .expect_code(0);
    t.run(&["status", "k", "--password-file", s(&file)])
        .expect_code(0);
    let mut with_env = support::fencelock(t.dir.path());
    with_env
        .args(support::store_args(&t.stores))
        .args(["status", "--held", "k"])
        .env("FENCELOCK_PASSWORD", "file-pw");
    assert_eq!(with_env.status().expect("status").code(), Some(5));
}
