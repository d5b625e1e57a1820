//! "One at a time on this host" means every local user, as with flock(1) on a shared
//! file: root and `nobody` (through `runuser`) exclude each other through the default
//! store and through an explicit shared file.
// Linux only: uses runuser(1) and /run/lock.
#![cfg(target_os = "linux")]

mod support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use support::scenarios::{Setup, stop};
use support::{Finished, finish, wait_for_file};

/// `fencelock ARGS` as the user `nobody`, with a clean environment.
fn as_nobody(args: &[&str]) -> Finished {
    as_user("nobody", args)
}

/// `fencelock ARGS` as `user`, with a clean environment.
fn as_user(user: &str, args: &[&str]) -> Finished {
    finish(spawn_as(user, args))
}

/// Starts `fencelock ARGS` as `user` with a clean environment; its stdout and stderr
/// are piped.
fn spawn_as(user: &str, args: &[&str]) -> Child {
    let mut cmd = Command::new("runuser");
    cmd.args(["-u", user, "--", env!("CARGO_BIN_EXE_fencelock")])
        .args(args)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.spawn().expect("runuser is installed")
}

/// Waits until `ready` exists, panicking with the holder's stderr if it ends first.
fn wait_until_ready(ready: &Path, holder: &mut Child, who: &str) {
    let deadline = std::time::Instant::now() + support::PATIENCE;
    while !ready.exists() {
        if let Ok(Some(status)) = holder.try_wait() {
            let mut err = String::new();
            if let Some(mut e) = holder.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            panic!("{who}'s holder ended ({status}) before it held the lock: {err}");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{who}'s holder never held the lock"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// A directory every user may create files in (as /run/lock is), inside a temp dir.
fn shared_dir(t: &Setup) -> std::path::PathBuf {
    std::fs::set_permissions(t.dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let dir = t.path("shared");
    std::fs::create_dir(&dir).expect("mkdir");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777)).expect("chmod");
    dir
}

/// A holder as root that signals readiness in a place `nobody` need not reach.
fn hold_as_root(t: &Setup, global: &[&str], key: &str) -> std::process::Child {
    let ready = t.path(&format!("{key}.ready"));
    let script = format!("touch '{}'; exec sleep 60", ready.display());
    let mut cmd = support::fencelock(t.dir.path());
    cmd.env_remove("XDG_STATE_HOME")
        .args(global)
        .args(["run", key, "-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().expect("spawn");
    wait_for_file(&ready);
    child
}

/// A process run as another user through runuser(1), stopped (SIGTERM, which runuser
/// passes on) when dropped, so that a failing test leaves no holder behind to keep its
/// key for another minute.
struct AsUser {
    child: Child,
    who: &'static str,
}

impl AsUser {
    /// Starts `fencelock ARGS` as `who`.
    fn spawn(who: &'static str, args: &[&str]) -> AsUser {
        AsUser {
            child: spawn_as(who, args),
            who,
        }
    }

    /// Waits until `ready` exists — the outcome, not a guess at how long it takes —
    /// panicking with the process's stderr if it ends first.
    fn wait_until_ready(&mut self, ready: &Path) {
        wait_until_ready(ready, &mut self.child, self.who);
    }
}

impl Drop for AsUser {
    /// SIGTERM goes to fencelock itself, runuser's child, not to runuser: runuser
    /// answers a SIGTERM by passing it on, sleeping two seconds and then SIGKILLing its
    /// child, which on a loaded machine can kill fencelock before it released (the
    /// lock then stays held for its TTL, and the next step of the test fails). Told
    /// nothing, runuser waits for fencelock to exit and exits with it.
    fn drop(&mut self) {
        let runuser = self.child.id();
        let mut targets = children_of(runuser);
        if targets.is_empty() {
            // runuser has not started fencelock yet: it passes the signal on.
            targets.push(runuser);
        }
        for pid in targets {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let _ = support::wait_bounded(&mut self.child);
    }
}

/// The processes whose parent is `pid`, from /proc/*/stat.
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|candidate| {
            let stat =
                std::fs::read_to_string(format!("/proc/{candidate}/stat")).unwrap_or_default();
            // "pid (comm) state ppid …": the command name may hold spaces and parentheses.
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok())
                == Some(pid)
        })
        .collect()
}

/// Root and `nobody` exclude each other on `key` through the stores in `global`, each
/// way round. `shared` is a directory both may write (for readiness files).
///
/// Every step waits on an outcome: a holder is known to hold once its command has run
/// (it touches a file only the command writes), and only then is the other user's
/// attempt made. (An earlier version polled `status --held` until it said "held", and
/// took every other exit — a store error, nobody's run having failed — for "not yet".)
fn exclude_each_other(t: &Setup, global: &[&str], key: &str, shared: &Path) {
    let holder = hold_as_root(t, global, key);
    let mut args: Vec<&str> = global.to_vec();
    args.extend(["run", "-n", key, "--", "true"]);
    let out = as_nobody(&args);
    out.expect_code(1);
    stop(holder);
    as_nobody(&args).expect_code(0);
    // And the other way round: nobody holds, root is refused.
    let ready = shared.join(format!("{key}.nobody-ready"));
    let script = format!("touch '{}'; exec sleep 60", ready.display());
    let mut hold: Vec<&str> = global.to_vec();
    hold.extend(["run", key, "-c", &script]);
    let mut nobody = AsUser::spawn("nobody", &hold);
    nobody.wait_until_ready(&ready);
    let mut status: Vec<&str> = global.to_vec();
    status.extend(["status", "--held", key]);
    support::run(t.dir.path(), &status).expect_code(0);
    let mut root_try: Vec<&str> = global.to_vec();
    root_try.extend(["run", "-n", key, "--", "true"]);
    let mut cmd = support::fencelock(t.dir.path());
    cmd.env_remove("XDG_STATE_HOME")
        .args(&root_try)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    finish(cmd.spawn().expect("root")).expect_code(1);
    drop(nobody);
}

/// Switching to `nobody` needs root and runuser(1). Without them these tests fail,
/// saying what is missing: nothing is skipped (`scripts/test` runs as root in CI, as
/// the chaos suite needs too).
fn can_switch_users() -> bool {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the multi-user tests need root (they run a second user with runuser): run them as root"
    );
    assert!(
        Path::new("/usr/sbin/runuser").exists(),
        "the multi-user tests need /usr/sbin/runuser (Debian package util-linux)"
    );
    true
}

#[test]
fn the_default_store_serves_every_local_user() {
    if !can_switch_users() {
        return;
    }
    let t = Setup::sqlite();
    let shared = shared_dir(&t);
    let key = format!("multiuser-default-{}", std::process::id());
    exclude_each_other(&t, &[], &key, &shared);
}

#[test]
fn an_explicit_shared_file_serves_every_local_user() {
    if !can_switch_users() {
        return;
    }
    let t = Setup::sqlite();
    let dir = shared_dir(&t);
    let url = format!("sqlite://{}", dir.join("locks.db").display());
    // Created by root first: the file must not come out root-only.
    support::run(t.dir.path(), &["--store", &url, "run", "k", "--", "true"]).expect_code(0);
    exclude_each_other(&t, &["--store", &url], "k", &dir);
    assert!(Path::new(&dir.join("locks.db")).exists());
}

/// Two non-root users, neither of whom owns the directory or the other's files, share
/// one explicit file in a sticky world-writable directory (as /run/lock), in turn and
/// while the other holds the lock.
///
/// Under `fs.protected_regular=1` (systemd's default) the kernel refuses `O_CREAT` —
/// which SQLite uses for `locks.db-wal` and `-shm` — on a file in such a directory
/// owned by neither the opener nor the directory's owner. So every file of the store
/// must stay owned by the directory's owner: SQLite must never delete the companions
/// for the next user to re-create as their own. Checked by owner on any host, and by
/// the refusal itself where the sysctl is on.
#[test]
fn two_non_root_users_share_an_explicit_file() {
    if !can_switch_users() {
        return;
    }
    let t = Setup::sqlite();
    let dir = shared_dir(&t);
    let owner = std::fs::metadata(&dir).expect("stat").uid();
    let url = format!("sqlite://{}", dir.join("locks.db").display());
    // The directory's owner (root) creates the store, as docs/cli.md says to.
    support::run(t.dir.path(), &["--store", &url, "run", "k", "--", "true"]).expect_code(0);
    for (holder, other) in [
        ("nobody", "daemon"),
        ("daemon", "nobody"),
        ("nobody", "daemon"),
    ] {
        let ready = dir.join(format!("{holder}.ready"));
        let script = format!("touch '{}'; exec sleep 60", ready.display());
        let mut held = AsUser::spawn(holder, &["--store", &url, "run", "k", "-c", &script]);
        held.wait_until_ready(&ready);
        for name in ["locks.db", "locks.db-wal", "locks.db-shm"] {
            let meta = std::fs::symlink_metadata(dir.join(name))
                .unwrap_or_else(|e| panic!("{name} while {holder} holds k: {e}"));
            assert_eq!(
                meta.uid(),
                owner,
                "{name} is owned by uid {}, not by the directory's owner, while {holder} holds k",
                meta.uid()
            );
        }
        as_user(other, &["--store", &url, "run", "-n", "k", "--", "true"]).expect_code(1);
        drop(held);
        std::fs::remove_file(&ready).expect("remove ready file");
        as_user(other, &["--store", &url, "run", "-n", "k", "--", "true"]).expect_code(0);
    }
}

/// A shared file created by a user who does not own its sticky directory is, under
/// `fs.protected_regular`, refused to every other user by the kernel: the refusal says
/// so and what to do (exit 78), instead of SQLite's "read-only". Where the sysctl is
/// off, the other user simply locks.
#[test]
fn a_stranger_owned_shared_file_is_refused_with_what_to_do() {
    if !can_switch_users() {
        return;
    }
    let t = Setup::sqlite();
    let dir = shared_dir(&t);
    let url = format!("sqlite://{}", dir.join("locks.db").display());
    as_user("nobody", &["--store", &url, "run", "k", "--", "true"]).expect_code(0);
    let protected = std::fs::read_to_string("/proc/sys/fs/protected_regular")
        .ok()
        .and_then(|s| s.trim().parse::<u8>().ok())
        .unwrap_or(0);
    let out = as_user("daemon", &["--store", &url, "run", "-n", "k", "--", "true"]);
    if protected == 0 {
        out.expect_code(0);
    } else {
        out.expect_code(78).expect_one_error_line();
        assert!(
            out.stderr.contains("fs.protected_regular") && out.stderr.contains("chown"),
            "{out:#?}"
        );
    }
}
