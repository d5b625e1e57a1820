//! Exit codes, and the one-line failure every command returns.
//!
//! Scripts branch on these codes, so they are part of the interface: they never change
//! meaning. Where a BSD `sysexits.h` code fits, it is used (69, 74, 75, 78), so that
//! supervisors that already know those codes (systemd, daemontools) read them right.
//!
//! [`CODES`] is the one table of them: each command's `--help` ends with the rows that
//! concern it ([`help`]), and the table in `docs/cli.md` is [`markdown`] — a unit test
//! fails when the file drifts from it (`UPDATE_SNAPSHOTS=1` rewrites it).

use std::fmt;

/// The lock was held by someone else (`-n`) or the wait (`-w`) ran out. The default
/// of `run -E` and the code of `acquire`; `1` like `flock(1)`. `doctor`: not healthy.
pub const CONFLICT: u8 = 1;
/// Bad usage: unknown flag, bad duration, zero TTL, empty key, bad store URL, missing
/// command.
pub const USAGE: u8 = 2;
/// `release`: the lock had already expired (nobody holds it now).
pub const EXPIRED: u8 = 3;
/// `release`: the lock is held by another owner (ours expired and someone else took
/// it).
pub const OTHER_OWNER: u8 = 4;
/// `status --held`: some key is free (or not held by a majority of stores).
pub const NOT_HELD: u8 = 5;
/// `run --once-per`: the job is already done in this slot (skipped, quietly).
pub const DONE: u8 = 6;
/// `EX_UNAVAILABLE`: no quorum of stores answered (down, unreachable, timed out).
pub const UNAVAILABLE: u8 = 69;
/// `EX_SOFTWARE`: a bug, or an error kind this version does not know.
pub const SOFTWARE: u8 = 70;
/// `EX_OSERR`: the operating system refused something fencelock needs (signal
/// handlers, the async runtime, waiting for the command).
pub const OS_ERROR: u8 = 71;
/// `EX_IOERR`: the answer could not be written (stdout closed or full).
pub const OUTPUT: u8 = 74;
/// `EX_TEMPFAIL`: the lease was lost while the command ran (`run`: the command was
/// stopped), or it could not be extended because it is lost (`extend`).
pub const LOST: u8 = 75;
/// `EX_CONFIG`: a store refused in a way retrying cannot fix (wrong password, missing
/// ACL permission, an untrusted TLS certificate, a read-only replica, an unusable
/// SQLite file), or no store could be determined.
pub const CONFIG: u8 = 78;
/// `run --max-runtime`: the command ran too long and was stopped (as `timeout(1)`).
pub const TIMED_OUT: u8 = 124;
/// `run`: the command was found but could not be executed (as in POSIX shells).
pub const CANNOT_EXECUTE: u8 = 126;
/// `run`: the command was not found (as in POSIX shells).
pub const NOT_FOUND: u8 = 127;

/// One row of the exit-code table.
#[derive(Debug)]
pub struct Code {
    /// The code as shown: `0`, `N`, `126/127`.
    pub code: &'static str,
    /// The commands that can end with it (`*`: every command).
    pub commands: &'static [&'static str],
    /// What it means, in one line of plain text.
    pub meaning: &'static str,
}

/// Every exit code, in order. The constants above are the codes; this is their
/// documentation, shown by `--help` and copied into `docs/cli.md`.
pub const CODES: &[Code] = &[
    Code {
        code: "0",
        commands: &["*"],
        meaning: "success (run: the command succeeded; status --held: every key is held)",
    },
    Code {
        code: "N",
        commands: &["run"],
        meaning: "the command's own exit status; 128+S if it was killed by signal S",
    },
    Code {
        code: "1",
        commands: &["run", "acquire", "doctor"],
        meaning: "not acquired: held by another owner (-n) or the wait ran out (-w); \
                  run -E picks another code. doctor: the stores are not healthy",
    },
    Code {
        code: "2",
        commands: &["*"],
        meaning: "usage error: bad flag, duration, key, empty or bad store setting, \
                  missing command or value",
    },
    Code {
        code: "3",
        commands: &["release"],
        meaning: "the lock had already expired (nothing to release)",
    },
    Code {
        code: "4",
        commands: &["release"],
        meaning: "another owner holds the lock now (left alone)",
    },
    Code {
        code: "5",
        commands: &["status"],
        meaning: "status --held: some key is free",
    },
    Code {
        code: "6",
        commands: &["run"],
        meaning: "--once-per: the job is already done in this slot; skipped (nothing printed)",
    },
    Code {
        code: "69",
        commands: &["run", "acquire", "extend", "release", "status"],
        meaning: "stores unavailable: no quorum answered (down, unreachable, timed out)",
    },
    Code {
        code: "70",
        commands: &["*"],
        meaning: "internal error",
    },
    Code {
        code: "71",
        commands: &["run", "acquire"],
        meaning: "operating-system error (signal handlers, runtime, waiting for the command)",
    },
    Code {
        code: "74",
        commands: &["acquire", "extend", "status", "doctor"],
        meaning: "the answer could not be written (stdout closed); acquire released the lock",
    },
    Code {
        code: "75",
        commands: &["run", "extend"],
        meaning: "lease lost: run stopped the command (SIGTERM, then SIGKILL); \
                  extend: the lock expired or another owner holds it",
    },
    Code {
        code: "78",
        commands: &["run", "acquire", "extend", "release", "status", "doctor"],
        meaning: "configuration error: wrong password, missing ACL permission, untrusted \
                  TLS certificate, replica, unusable SQLite file, no place for the default store",
    },
    Code {
        code: "124",
        commands: &["run"],
        meaning: "--max-runtime: the command ran too long and was stopped; the lock was released",
    },
    Code {
        code: "126/127",
        commands: &["run"],
        meaning: "the command could not be executed / was not found",
    },
    Code {
        code: "130/143",
        commands: &["run", "acquire"],
        meaning: "interrupted (SIGINT/SIGTERM) while waiting for the lock; 128+S for others",
    },
];

/// The `Exit codes:` block at the end of `--help`: every row for the top level
/// (`command` `None`), else the rows that concern `command`.
pub fn help(command: Option<&str>) -> String {
    let mut out = String::from("Exit codes:\n");
    for c in CODES.iter().filter(|c| concerns(c, command)) {
        out.push_str(&format!("  {:<8} {}\n", c.code, c.meaning));
    }
    out.pop();
    out
}

fn concerns(code: &Code, command: Option<&str>) -> bool {
    match command {
        None => true,
        Some(name) => code.commands.iter().any(|c| *c == "*" || *c == name),
    }
}

/// The table of `docs/cli.md`'s "Exit codes" section (only the test that keeps the
/// file in step needs it).
#[cfg(test)]
pub fn markdown() -> String {
    let mut out = String::from("| code | commands | meaning |\n|---|---|---|\n");
    for c in CODES {
        let commands = if c.commands == ["*"] {
            "all".to_string()
        } else {
            c.commands.join(", ")
        };
        out.push_str(&format!("| {} | {commands} | {} |\n", c.code, c.meaning));
    }
    out
}

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

    /// A failure that prints nothing: the exit code says it all (a skipped
    /// `--once-per` run, quiet by default so that cron mails nothing).
    pub fn quiet(code: u8) -> Self {
        Failure::new(code, "")
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
        // The library reports "no quorum answered" as unavailable even when the nodes'
        // own answers say that retrying cannot help (an untrusted certificate, a missing
        // ACL permission): those are configuration errors for an operator.
        let for_good = error.node_errors().iter().any(|e| {
            e.is_permanent()
                || matches!(
                    e.kind(),
                    fencelock::NodeErrorKind::Tls | fencelock::NodeErrorKind::Storage
                )
        });
        let code = if error.is_contended() || error.is_timeout() {
            conflict
        } else if error.is_unavailable() && for_good {
            CONFIG
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `docs/cli.md` carries [`markdown`] between two markers; rewrite it with
    /// `UPDATE_SNAPSHOTS=1 cargo test -p fencelock-cli --bin fencelock`.
    #[test]
    fn docs_table_is_the_code_table() {
        const BEGIN: &str =
            "<!-- exit-codes: generated from crates/fencelock-cli/src/exit.rs -->\n";
        const END: &str = "<!-- exit-codes: end -->";
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/cli.md");
        let doc = std::fs::read_to_string(&path).expect("docs/cli.md");
        let start = doc.find(BEGIN).expect("begin marker") + BEGIN.len();
        let end = doc.find(END).expect("end marker");
        let table = markdown();
        if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
            let updated = format!("{}{table}{}", &doc[..start], &doc[end..]);
            std::fs::write(&path, updated).expect("write docs/cli.md");
            return;
        }
        assert_eq!(
            &doc[start..end],
            table,
            "docs/cli.md's exit codes differ from exit::CODES; run with UPDATE_SNAPSHOTS=1"
        );
    }

    /// Every documented code is produced by some test scenario (a black-box test that
    /// runs fencelock and checks for it), except those no test can provoke on purpose.
    #[test]
    fn every_code_is_produced_by_a_test() {
        /// 70: only a bug produces it. 71: the OS refusing signal handlers or a runtime.
        const UNPROVOKED: [&str; 2] = ["70", "71"];
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
        let mut text = String::new();
        let mut dirs = vec![dir];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).expect("tests/").flatten() {
                let path = entry.path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    text.push_str(&std::fs::read_to_string(&path).expect("read"));
                }
            }
        }
        for code in CODES.iter().flat_map(|c| c.code.split('/')) {
            if code == "N" || UNPROVOKED.contains(&code) {
                continue;
            }
            let shapes = [
                format!("expect_code({code})"),
                format!(".code({code})"),
                format!("Some({code})"),
                format!("-eq {code} "),
                format!("RC={code}"),
                format!(", {code})]"),
                format!(", {code}),"),
            ];
            assert!(
                shapes.iter().any(|s| text.contains(s.as_str())),
                "no test checks for exit code {code}"
            );
        }
    }

    /// Every constant has its row, and no row is listed twice.
    #[test]
    fn every_code_is_in_the_table() {
        let shown: Vec<&str> = CODES.iter().flat_map(|c| c.code.split('/')).collect();
        for code in [
            0,
            CONFLICT,
            USAGE,
            EXPIRED,
            OTHER_OWNER,
            NOT_HELD,
            UNAVAILABLE,
            SOFTWARE,
            OS_ERROR,
            OUTPUT,
            LOST,
            CONFIG,
            CANNOT_EXECUTE,
            NOT_FOUND,
            130,
            143,
        ] {
            let code = code.to_string();
            assert_eq!(shown.iter().filter(|c| **c == code).count(), 1, "{code}");
        }
    }
}
