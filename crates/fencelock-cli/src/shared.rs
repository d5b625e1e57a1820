//! SQLite lock files that every local user can lock in: the host-wide default store,
//! and explicit `sqlite://` files shared by several users.
//!
//! A `flock(1)` user expects "one at a time on this host" to mean every user: root's
//! cron job and an operator's shell must exclude each other. So the default store is
//! not under a home directory but in a host-wide place, `/run/lock/fencelock/locks.db`
//! (FHS: "lock files shared by programs"; `/var/lock`, then `/tmp` where there is no
//! `/run/lock`). It lives on a tmpfs: locks vanish on reboot as flock's do, and the
//! fencing counters restart from the clock, above every earlier token.
//!
//! Permissions are what make it shared:
//!
//! - The directory is created with mode 1777, like `/tmp`: every user may create files
//!   in it, and the sticky bit stops anyone but a file's owner from deleting or
//!   replacing it — so nobody can swap root's lock file for a symlink, and the kernel's
//!   `protected_symlinks` applies.
//! - SQLite needs to *write* the file (and its `-wal` and `-shm` companions) to lock.
//!   Whoever creates the directory creates all three with mode 0666 (never a symlink:
//!   `O_CREAT|O_EXCL`), so that they share the directory's owner.
//! - Hosts with `fs.protected_regular=1` (systemd's default) refuse `O_CREAT` — which
//!   SQLite uses on every open of the companions — on a file in a sticky
//!   world-writable directory owned by neither the opener nor the directory's owner.
//!   So the companions must never be deleted and re-created by whoever comes next: the
//!   library keeps them for good (it never lets SQLite checkpoint-and-delete them when
//!   the last connection closes), and they stay the directory owner's. Missing ones
//!   (an older fencelock deleted them) are created again beside the lock file, and
//!   root hands companions another user re-created back to the lock file's owner (see
//!   [`adopt_companions`]).
//!
//! An explicit `sqlite:///path` file that does not exist yet is created the same way
//! (0666, with its companions) when its directory exists; an existing file's mode is
//! never changed, so a root-only store is simply a file (or a directory) only root can
//! write. In a sticky shared directory, the directory's owner must create it (see the
//! threat model in `docs/cli.md`).

use std::fs::{DirBuilder, OpenOptions, Permissions};
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::unistd::{AccessFlags, access};

use crate::exit::{CONFIG, Failure};

/// The places the host-wide directory goes in, first existing one wins.
const BASES: [&str; 3] = ["/run/lock", "/var/lock", "/tmp"];

/// The host-wide directory's name in its base.
const DIR: &str = "fencelock";

/// The lock file's name, and its companions' suffixes (SQLite's WAL mode).
const FILE: &str = "locks.db";
const COMPANIONS: [&str; 2] = ["-wal", "-shm"];

/// The URL of the host-wide default store, after making sure every local user can
/// lock in it.
///
/// # Errors
///
/// [`CONFIG`] when the place cannot be used, saying what to do about it.
pub fn default_url() -> Result<String, Failure> {
    default_url_in(&BASES.map(Path::new))
}

/// [`default_url`] with the first existing directory of `bases` as the host-wide
/// place (the unit tests give a temporary one).
fn default_url_in(bases: &[&Path]) -> Result<String, Failure> {
    let base = bases.iter().copied().find(|p| p.is_dir()).ok_or_else(|| {
        Failure::new(
            CONFIG,
            "no host-wide place for the default store (none of /run/lock, /var/lock, \
                 /tmp is a directory); name a store with --store or FENCELOCK_STORE",
        )
    })?;
    let dir = base.join(DIR);
    let file = dir.join(FILE);
    let advice = |what: String| {
        Failure::new(
            CONFIG,
            format!(
                "{what}; as root, run `install -d -m 1777 {0}` (and `chmod 0666 {0}/{FILE}*` \
                 if the files exist), or name a store of your own with --store \
                 sqlite:///path/locks.db",
                dir.display()
            ),
        )
    };
    match DirBuilder::new().mode(0o1777).create(&dir) {
        Ok(()) => {
            // The mode given to mkdir is cut by the umask.
            std::fs::set_permissions(&dir, Permissions::from_mode(0o1777)).map_err(|e| {
                advice(format!(
                    "cannot open up the host-wide lock directory {}: {e}",
                    dir.display()
                ))
            })?;
        }
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
        Err(e) => {
            return Err(advice(format!(
                "cannot create the host-wide lock directory {}: {e}",
                dir.display()
            )));
        }
    };
    let meta = std::fs::symlink_metadata(&dir)
        .map_err(|e| advice(format!("cannot look at {}: {e}", dir.display())))?;
    if !meta.is_dir() {
        return Err(advice(format!(
            "{} is not a directory (a symlink?); it is not safe to lock in",
            dir.display()
        )));
    }
    create_shared(&file).map_err(|e| {
        advice(format!(
            "cannot create the host-wide lock file {}: {e}",
            file.display()
        ))
    })?;
    create_companions(&file);
    adopt_companions(&file);
    refuse_protected(&file)?;
    if access(&file, AccessFlags::R_OK | AccessFlags::W_OK).is_err() {
        let meta = std::fs::metadata(&file).ok();
        return Err(advice(format!(
            "the host-wide lock file {} is not writable by you (owner uid {}, mode {:o})",
            file.display(),
            meta.as_ref().map_or(0, MetadataExt::uid),
            meta.as_ref().map_or(0, |m| m.mode() & 0o7777)
        )));
    }
    Ok(format!("sqlite://{}", file.display()))
}

/// For an explicit `sqlite://` URL: creates the file (mode 0666) if it is missing
/// and its directory exists, so that a file shared by several users is not created
/// root-only by whoever happens to be first. Anything else is left to the store,
/// which reports it.
///
/// # Errors
///
/// [`CONFIG`] when the kernel will refuse to open a file of the store for this user
/// (see [`refuse_protected`]), saying what to do, instead of SQLite's "read-only".
pub fn prepare_explicit(url: &str) -> Result<(), Failure> {
    let Some(path) = url.strip_prefix("sqlite://") else {
        return Ok(());
    };
    let path = Path::new(path);
    if path.parent().is_some_and(Path::is_dir) && create_shared(path).is_ok() {
        create_companions(path);
        refuse_protected(path)?;
    }
    Ok(())
}

/// Where the kernel's `fs.protected_regular` setting is read.
const PROTECTED_REGULAR: &str = "/proc/sys/fs/protected_regular";

/// Fails, saying what to do, when the kernel will refuse this user to open a file of
/// the store at `file` with `O_CREAT` — which SQLite does for every one of them — because
/// of `fs.protected_regular`: the file is in a sticky directory that others may write,
/// and is owned by neither this user nor the directory's owner. (SQLite would only say
/// the database is read-only.) Left behind by an older fencelock, which let SQLite
/// delete and re-create the companions.
fn refuse_protected(file: &Path) -> Result<(), Failure> {
    let level = std::fs::read_to_string(PROTECTED_REGULAR)
        .ok()
        .and_then(|s| s.trim().parse::<u8>().ok())
        .unwrap_or(0);
    let Some(dir) = file.parent() else {
        return Ok(());
    };
    let Ok(dir_meta) = std::fs::metadata(dir) else {
        return Ok(());
    };
    let me = nix::unistd::geteuid().as_raw();
    for path in std::iter::once(file.to_path_buf()).chain(COMPANIONS.map(|s| companion(file, s))) {
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_file() && refused(level, dir_meta.mode(), dir_meta.uid(), meta.uid(), me) {
            return Err(Failure::new(
                CONFIG,
                format!(
                    "{} is owned by uid {}, neither you (uid {me}) nor the owner of its sticky \
                     directory {} (uid {}), and this host's fs.protected_regular={level} makes \
                     the kernel refuse to open it for locking; as root, run `chown \
                     --reference={} {}*`, or keep a shared lock file in a directory without the \
                     sticky bit (see docs/cli.md)",
                    path.display(),
                    meta.uid(),
                    dir.display(),
                    dir_meta.uid(),
                    dir.display(),
                    file.display()
                ),
            ));
        }
    }
    Ok(())
}

/// The kernel's rule (`may_create_in_sticky`): with `fs.protected_regular` at `level`,
/// opening with `O_CREAT` an existing regular file owned by `file_uid`, in a directory
/// of mode `dir_mode` owned by `dir_uid`, is refused to `opener` — root included —
/// when the directory is sticky and world-writable (or, at level 2, group-writable)
/// and the file is owned by neither the opener nor the directory's owner.
fn refused(level: u8, dir_mode: u32, dir_uid: u32, file_uid: u32, opener: u32) -> bool {
    let open_to_others = dir_mode & 0o002 != 0 || (level >= 2 && dir_mode & 0o020 != 0);
    level > 0
        && dir_mode & 0o1000 != 0
        && open_to_others
        && file_uid != dir_uid
        && file_uid != opener
}

/// Creates the `-wal` and `-shm` companions of `file` (mode 0666) where they are
/// missing, so that whoever creates the lock file creates them too: the store keeps
/// them for good once they exist (it never lets SQLite delete them on close), so they
/// stay owned by the lock file's creator, who under `fs.protected_regular` must be
/// the directory's owner for every other user to open them. Best effort: SQLite
/// creates a missing one anyway, with the lock file's mode.
fn create_companions(file: &Path) {
    for suffix in COMPANIONS {
        let _ = create_shared(&companion(file, suffix));
    }
}

/// Creates `path` with mode 0666 whatever the umask, unless it exists (a symlink
/// counts as existing: `O_EXCL` never follows one).
fn create_shared(path: &Path) -> std::io::Result<()> {
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o666)
        .open(path)
    {
        Ok(file) => file.set_permissions(Permissions::from_mode(0o666)),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

fn companion(file: &Path, suffix: &str) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// As root: gives the `-wal`/`-shm` companions back to the lock file's owner when
/// another user re-created them. With `fs.protected_regular=1` nobody — root
/// included — may open with `O_CREAT` a file in a sticky directory owned by neither
/// the opener nor the directory's owner, which SQLite does. (`lchown`: a symlink is
/// never followed.) Other users cannot, and need not for their own files.
fn adopt_companions(file: &Path) {
    if !nix::unistd::geteuid().is_root() {
        return;
    }
    let Ok(owner) = std::fs::symlink_metadata(file) else {
        return;
    };
    for suffix in COMPANIONS {
        let path = companion(file, suffix);
        if let Ok(meta) = std::fs::symlink_metadata(&path)
            && meta.is_file()
            && (meta.uid(), meta.gid()) != (owner.uid(), owner.gid())
        {
            let _ = std::os::unix::fs::lchown(&path, Some(owner.uid()), Some(owner.gid()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An unusable host-wide place is a configuration error that says what to do.
    #[test]
    fn an_unusable_place_says_what_to_do() {
        let base = tempfile::tempdir().expect("temp dir");
        // Something that is not a directory where the directory should be.
        std::fs::write(base.path().join(DIR), "not a directory").expect("write");
        let failure = default_url_in(&[base.path()]).expect_err("refused");
        assert_eq!(failure.code, CONFIG);
        assert!(
            failure.message.contains("install -d -m 1777"),
            "{}",
            failure.message
        );
        assert!(failure.message.contains("--store"), "{}", failure.message);
    }

    /// The kernel's protected_regular rule, case by case.
    #[test]
    fn protected_regular_refuses_only_a_stranger_in_a_sticky_shared_directory() {
        let (dir_owner, file_owner, other) = (0, 65534, 1);
        // nobody's file in root's /tmp-like directory: refused to a third user …
        assert!(refused(1, 0o1777, dir_owner, file_owner, other));
        // … not to its owner, nor when the directory owner owns it, nor when off.
        assert!(!refused(1, 0o1777, dir_owner, file_owner, file_owner));
        assert!(!refused(1, 0o1777, dir_owner, dir_owner, other));
        assert!(!refused(0, 0o1777, dir_owner, file_owner, other));
        // Not sticky, or not writable by others: the rule does not apply.
        assert!(!refused(1, 0o0777, dir_owner, file_owner, other));
        assert!(!refused(1, 0o1775, dir_owner, file_owner, other));
        // Group-writable sticky directories count from level 2 on.
        assert!(!refused(1, 0o1770, dir_owner, file_owner, other));
        assert!(refused(2, 0o1770, dir_owner, file_owner, other));
    }

    /// Created fresh: a sticky world-writable directory and world-writable files.
    #[test]
    fn a_fresh_place_is_open_to_every_user() {
        let base = tempfile::tempdir().expect("temp dir");
        let url = default_url_in(&[base.path()]).expect("usable");
        let dir = base.path().join(DIR);
        assert_eq!(url, format!("sqlite://{}", dir.join(FILE).display()));
        let mode = |p: &Path| std::fs::metadata(p).expect("stat").mode() & 0o7777;
        assert_eq!(mode(&dir), 0o1777);
        for name in ["locks.db", "locks.db-wal", "locks.db-shm"] {
            assert_eq!(mode(&dir.join(name)), 0o666, "{name}");
        }
    }
}
