//! Exit codes, and the one-line failure every command returns.
//!
//! Scripts branch on these codes, so they are part of the interface: they are listed in
//! `fencelock --help` (see [`TABLE`]) and in `docs/cli.md`, and they never change
//! meaning. Where a BSD `sysexits.h` code fits, it is used (69, 75, 78), so that
//! supervisors that already know those codes (systemd, daemontools) read them right.

use std::fmt;

/// The lock was held by someone else (`-n`) or the wait (`-w`) ran out. The default
/// of `run -E` and the code of `acquire`; `1` like `flock(1)`.
pub const CONFLICT: u8 = 1;
/// Bad usage: unknown flag, bad duration, zero TTL, empty key, bad store URL, missing
/// command.
pub const USAGE: u8 = 2;
/// `extend`/`release`: the lock had already expired (nobody holds it now).
pub const EXPIRED: u8 = 3;
/// `extend`/`release`: the lock is held by another owner (ours expired and someone
/// else took it).
pub const OTHER_OWNER: u8 = 4;
/// `EX_UNAVAILABLE`: no quorum of stores answered (down, unreachable, timed out).
pub const UNAVAILABLE: u8 = 69;
/// `EX_SOFTWARE`: a bug, or an error kind this version does not know.
pub const SOFTWARE: u8 = 70;
/// `EX_OSERR`: the operating system refused something fencelock needs (signal
/// handlers, the async runtime, a state directory).
pub const OS_ERROR: u8 = 71;
/// `EX_IOERR`: the answer could not be written (stdout closed or full).
pub const OUTPUT: u8 = 74;
/// `EX_TEMPFAIL`: the lease was lost while the command ran (`run`: the command was
/// stopped), or it could not be extended because it is lost (`extend`).
pub const LOST: u8 = 75;
/// `EX_CONFIG`: a store refused in a way retrying cannot fix (wrong password, a
/// read-only replica, an unusable SQLite file), or no store could be determined.
pub const CONFIG: u8 = 78;
/// `run`: the command was found but could not be executed (as in POSIX shells).
pub const CANNOT_EXECUTE: u8 = 126;
/// `run`: the command was not found (as in POSIX shells).
pub const NOT_FOUND: u8 = 127;

/// The exit-code table shown at the end of `fencelock --help` (kept next to the
/// constants so that the two cannot drift apart unnoticed).
pub const TABLE: &str = "\
Exit codes:
  0        success (run: the command succeeded)
  N        run: the command's own exit status; 128+S if it was killed by signal S
  1        not acquired: held by another owner (-n) or the wait ran out (-w); see run -E
  2        usage error: bad flag, duration, key, store URL, missing command
  3        extend/release: the lock had already expired
  4        extend/release: the lock is held by another owner
  69       stores unavailable: no quorum answered (down, unreachable, timed out)
  70       internal error
  71       operating-system error (signals, runtime, state directory)
  75       lease lost: run stopped the command (SIGTERM, then SIGKILL); extend: lost
  78       configuration error: wrong password, replica, unusable SQLite file
  126/127  run: the command could not be executed / was not found
  130/143  interrupted (SIGINT/SIGTERM) while waiting for the lock";

/// Why a command ends with a non-zero code: the code, and the line to print.
///
/// Commands return this instead of printing and exiting themselves, so that `main`
/// is the one place that writes `fencelock: …` and picks the process exit code.
#[derive(Debug)]
pub struct Failure {
    /// The process exit code.
    pub code: u8,
    /// One line for stderr, without the `fencelock: ` prefix.
    pub message: String,
}

impl Failure {
    /// A failure with a message.
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        Failure {
            code,
            message: message.into(),
        }
    }

    /// A usage error (exit 2).
    pub fn usage(message: impl Into<String>) -> Self {
        Failure::new(USAGE, message)
    }

    /// Maps a library error to its exit code. `conflict` is the code for "not
    /// acquired" (contended, or the wait ran out), which `run -E` lets the user choose.
    ///
    /// The library's messages name stores by their redacted address only, so they are
    /// safe to print as they are.
    pub fn from_lib(error: &fencelock::Error, conflict: u8) -> Self {
        let code = if error.is_contended() || error.is_timeout() {
            conflict
        } else if error.is_unavailable() {
            UNAVAILABLE
        } else if error.is_lost() {
            LOST
        } else if error.is_invalid_input() {
            USAGE
        } else if error.is_config() {
            CONFIG
        } else {
            // `ErrorKind` is non-exhaustive: a kind added later is not a usage error.
            SOFTWARE
        };
        Failure::new(code, error.to_string())
    }
}

impl From<fencelock::Error> for Failure {
    fn from(error: fencelock::Error) -> Self {
        Failure::from_lib(&error, CONFLICT)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (exit {})", self.message, self.code)
    }
}

/// The result of a command: the exit code to end with on success (0, or a child's
/// status), or a [`Failure`].
pub type Outcome = Result<u8, Failure>;

/// The shell convention for a process that died of signal `signal`.
pub fn for_signal(signal: i32) -> u8 {
    u8::try_from(128 + signal.clamp(0, 127)).unwrap_or(255)
}
