//! The `fencelock` binary of an earlier version, built from this repository's history,
//! for the rolling-upgrade test: a fleet never upgrades every host at once, so the
//! version before a wire change and the version after it share keys for a while.
//!
//! The build goes to its own target directory (`target/upgrade-from/<commit>/`), so it
//! neither waits for the lock of the `cargo test` that runs it nor replaces this
//! version's `target/debug/fencelock`; it is kept there, and later runs reuse it. The
//! first run compiles that version's dependencies once (a few minutes on two cores).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// The last commit before issue #17's wire changes: lock values without the `fl:` mark,
/// a refusal without the `silent` flag, fencing counters kept 24 h, no Redis Cluster
/// layout — the wire protocol 2 fencelock a fleet runs when this version rolls out.
pub const BEFORE_ISSUE_17: &str = "08bcaa34c2cf37fc4c02b7932d8141f7f329152c";

/// The `fencelock` binary built from `BEFORE_ISSUE_17`, built on first use.
///
/// Panics (failing the test, loudly) when the commit is not in this clone's history
/// (a shallow clone: `git fetch --unshallow`) or the build fails.
pub fn fencelock_before_issue_17() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| build(BEFORE_ISSUE_17))
}

fn build(commit: &str) -> PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let home = repo.join("target/upgrade-from").join(commit);
    let bin = home.join("fencelock");
    if bin.is_file() {
        return bin;
    }
    let src = home.join("src");
    let _ = std::fs::remove_dir_all(&src);
    std::fs::create_dir_all(&src).expect("create the source directory");
    // `git archive | tar -x`: the tree of that commit, nothing of this one.
    let mut archive = Command::new("git")
        .arg("-C")
        .arg(&repo)
        .args(["archive", "--format=tar", commit])
        .stdout(Stdio::piped())
        .spawn()
        .expect("git is installed");
    let unpacked = Command::new("tar")
        .arg("-x")
        .arg("-C")
        .arg(&src)
        .stdin(archive.stdout.take().expect("git archive's output"))
        .status()
        .expect("tar is installed");
    let archived = archive.wait().expect("wait for git archive");
    assert!(
        archived.success() && unpacked.success(),
        "could not unpack commit {commit} of {}: the rolling-upgrade test needs this \
         repository's history (in a shallow clone: git fetch --unshallow)",
        repo.display()
    );
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let built = Command::new(cargo)
        .args(["build", "--locked", "-p", "fencelock-cli"])
        .arg("--manifest-path")
        .arg(src.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(home.join("target"))
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTFLAGS")
        .status()
        .expect("run cargo");
    assert!(built.success(), "building fencelock at {commit} failed");
    std::fs::copy(home.join("target/debug/fencelock"), &bin).expect("keep the binary");
    bin
}
