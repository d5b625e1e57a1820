//! Holder metadata: who holds a lock, stored beside the key for `fencelock status`.
//!
//! The library stores an opaque string (`LockerBuilder::holder`); the CLI writes JSON
//! so that `status` can show name, host, pid and age, and so that other tools can read
//! it. Foreign or older descriptions that are not this JSON are shown verbatim.
//!
//! The record names the *program*, never its arguments: anyone who may run `status`
//! can read it, and command lines carry secrets (`mysql -pSECRET`, tokens in URLs).
//! `--holder TEXT` names the holder instead, for a label that means more to the
//! people who read `status` ("nightly report, cron on web-3").

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Who holds (or held) a lock.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Holder {
    /// The program's name (no path, no arguments), or the `--holder` text. Older
    /// records called it `command`.
    #[serde(alias = "command")]
    pub name: String,
    /// The host name.
    pub host: String,
    /// The process that holds the lock: `fencelock run` itself, or for `acquire` (which
    /// exits at once) its parent — the script that will extend and release it.
    pub pid: u32,
    /// When the lock was taken, in milliseconds since the Unix epoch.
    pub since_ms: u64,
    /// Which fencelock command took it: `run` or `acquire`.
    pub via: String,
}

impl Holder {
    /// The holder for `fencelock run … -- <program> …`: the program's name, unless
    /// `label` (`--holder`) is given.
    pub fn for_run(program: &str, label: Option<&str>) -> Holder {
        Holder {
            name: label.map_or_else(|| program_name(program), str::to_string),
            host: hostname(),
            pid: std::process::id(),
            since_ms: now_ms(),
            via: "run".into(),
        }
    }

    /// The holder for `fencelock acquire`: the parent process, which outlives us.
    pub fn for_acquire(label: Option<&str>) -> Holder {
        let ppid = u32::try_from(nix::unistd::getppid().as_raw()).unwrap_or(0);
        Holder {
            name: label.map_or_else(
                || process_name(ppid).unwrap_or_else(|| "unknown".into()),
                str::to_string,
            ),
            host: hostname(),
            pid: ppid,
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

    /// `make (pid 4242 on ci-3)` for messages.
    pub fn describe(&self) -> String {
        format!(
            "{} (pid {} on {})",
            shorten(&self.name, 60),
            self.pid,
            self.host
        )
    }
}

/// Parses `--holder` for clap: printable text (it is shown in other people's
/// terminals by `status`).
///
/// # Errors
///
/// Empty text, or text with a control character.
pub fn parse_label(text: &str) -> Result<String, String> {
    if text.trim().is_empty() {
        return Err("the holder text is empty".into());
    }
    if text.chars().any(char::is_control) {
        return Err("the holder text has a control character; it must be printable".into());
    }
    Ok(text.to_string())
}

/// The last path component of a program as given (`/usr/bin/pg_dump` → `pg_dump`).
fn program_name(program: &str) -> String {
    let name = std::path::Path::new(program)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| program.to_string());
    name.chars().filter(|c| !c.is_control()).collect()
}

/// A running process's program name: its `argv[0]` without path or arguments, from
/// `/proc` (Linux); `None` elsewhere or when it cannot be read.
#[cfg(target_os = "linux")]
fn process_name(pid: u32) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let argv0 = raw.split(|b| *b == 0).next().filter(|a| !a.is_empty())?;
    Some(program_name(&String::from_utf8_lossy(argv0)))
}

#[cfg(not(target_os = "linux"))]
fn process_name(_pid: u32) -> Option<String> {
    None
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
    fn names_without_arguments() {
        let h = Holder::for_run("/usr/bin/mysql", None);
        assert_eq!(h.name, "mysql");
        assert_eq!(Holder::parse(&h.to_json()), Some(h));
        assert_eq!(Holder::for_run("x", Some("nightly")).name, "nightly");
        assert_eq!(Holder::parse("not json"), None);
        // Records written by older versions still read.
        let old = r#"{"host":"h","pid":1,"command":"make all","since_ms":0,"via":"run"}"#;
        assert_eq!(Holder::parse(old).map(|h| h.name), Some("make all".into()));
    }
}
