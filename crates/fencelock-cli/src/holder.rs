//! Holder metadata: who holds a lock, stored beside the key for `fencelock status`.
//!
//! The library stores an opaque string (`LockerBuilder::holder`); the CLI writes JSON
//! so that `status` can show host, pid, command and age, and so that other tools can
//! read it. Foreign or older descriptions that are not this JSON are shown verbatim.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Who holds (or held) a lock.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Holder {
    /// The host name.
    pub host: String,
    /// The process that holds the lock: `fencelock run` itself, or for `acquire` (which
    /// exits at once) its parent — the script that will extend and release it.
    pub pid: u32,
    /// That process's command line (best effort), or the command `run` runs.
    pub command: String,
    /// When the lock was taken, in milliseconds since the Unix epoch.
    pub since_ms: u64,
    /// Which fencelock command took it: `run` or `acquire`.
    pub via: String,
}

impl Holder {
    /// The holder for `fencelock run … -- <command>`.
    pub fn for_run(command: &[String]) -> Holder {
        Holder {
            host: hostname(),
            pid: std::process::id(),
            command: join_command(command),
            since_ms: now_ms(),
            via: "run".into(),
        }
    }

    /// The holder for `fencelock acquire`: the parent process, which outlives us.
    pub fn for_acquire() -> Holder {
        let ppid = u32::try_from(nix::unistd::getppid().as_raw()).unwrap_or(0);
        Holder {
            host: hostname(),
            pid: ppid,
            command: cmdline(ppid).unwrap_or_default(),
            since_ms: now_ms(),
            via: "acquire".into(),
        }
    }

    /// As stored: one line of JSON.
    pub fn to_json(&self) -> String {
        // Serializing a struct of strings and integers cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reads a stored description, if it is ours.
    pub fn parse(text: &str) -> Option<Holder> {
        serde_json::from_str(text).ok()
    }

    /// How long ago the lock was taken (zero if the clocks disagree).
    pub fn age(&self) -> Duration {
        Duration::from_millis(now_ms().saturating_sub(self.since_ms))
    }

    /// `pid 4242 on ci-3 (make release)` for messages.
    pub fn describe(&self) -> String {
        let mut s = format!("pid {} on {}", self.pid, self.host);
        if !self.command.is_empty() {
            s.push_str(&format!(" ({})", shorten(&self.command, 60)));
        }
        s
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(crate::duration::millis)
        .unwrap_or(0)
}

/// The host name from the kernel (no extra dependency for a best-effort label).
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// A process's command line from `/proc` (Linux), arguments joined by spaces.
fn cmdline(pid: u32) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<String> = raw
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    (!args.is_empty()).then(|| join_command(&args))
}

/// Joins a command for display, quoting arguments that need it.
fn join_command(args: &[String]) -> String {
    args.iter()
        .map(|a| {
            if !a.is_empty()
                && a.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let cut: String = s.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_quoting() {
        let h = Holder::for_run(&["sh".into(), "-c".into(), "echo 'hi' there".into()]);
        assert_eq!(h.command, r"sh -c 'echo '\''hi'\'' there'");
        assert_eq!(Holder::parse(&h.to_json()), Some(h));
        assert_eq!(Holder::parse("not json"), None);
    }
}
