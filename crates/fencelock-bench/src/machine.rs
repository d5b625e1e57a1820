//! Facts about the machine, for the report.

use std::process::Command;

/// What the report says about where it ran.
#[derive(Clone, Debug, Default)]
pub struct Machine {
    /// Logical CPUs.
    pub cores: usize,
    /// `model name` from /proc/cpuinfo.
    pub cpu: String,
    /// Memory from /proc/meminfo.
    pub memory: String,
    /// `redis-server --version`.
    pub redis: String,
    /// `rustc --version`.
    pub rustc: String,
    /// UTC start time.
    pub started: String,
    /// UTC end time.
    pub finished: String,
    /// /proc/loadavg at the start.
    pub load_start: String,
    /// /proc/loadavg at the end.
    pub load_end: String,
}

fn output(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

fn now() -> String {
    output("date", &["-u", "+%Y-%m-%d %H:%M UTC"])
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

impl Machine {
    /// Reads everything but the end time.
    pub fn read() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        let memory = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                let kb: u64 = m
                    .lines()
                    .find_map(|l| l.strip_prefix("MemTotal:"))?
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse()
                    .ok()?;
                Some(format!("{:.1} GiB", kb as f64 / 1024.0 / 1024.0))
            })
            .unwrap_or_else(|| "unknown".into());
        let redis = output("redis-server", &["--version"]);
        Machine {
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu,
            memory,
            redis: redis
                .split_whitespace()
                .find_map(|w| w.strip_prefix("v="))
                .map(|v| format!("redis-server {v}"))
                .unwrap_or(redis),
            rustc: output("rustc", &["--version"]),
            started: now(),
            finished: String::new(),
            load_start: loadavg(),
            load_end: String::new(),
        }
    }

    /// Adds the end time and load.
    pub fn finish(mut self) -> Machine {
        self.finished = now();
        self.load_end = loadavg();
        self
    }
}
