//! Network partitions: a node in its own network namespace, reached over a veth pair,
//! cut off by an iptables rule *inside that namespace*.
//!
//! The host side only gains one veth end with an address we chose (10.213.x.y/30);
//! the host's firewall and routes are never edited (the /30 route appears and goes
//! with the link). Deleting the namespace destroys both veth ends. Namespaces are
//! named `flchaos-<pid>-<n>`, so a later run can remove those of a run that died
//! (its pid is gone) without touching anyone else's.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// How a cut node's packets are treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// Silently dropped: the client sees a timeout (the worst case for Redlock).
    Drop,
    /// Refused with a TCP reset: the client sees an error at once.
    Reject,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A network namespace with one veth pair to the host.
#[derive(Debug)]
pub struct Netns {
    name: String,
    host_if: String,
    node_ip: String,
}

fn run(args: &[&str]) -> Result<String, String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| {
            format!(
                "cannot run {}: {e} (is iproute2/iptables installed?)",
                args.join(" ")
            )
        })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`{}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Netns {
    /// Creates a namespace and a veth pair, host end `10.213.a.4k+1/30`, namespace
    /// end `10.213.a.4k+2/30`, with `a` from our pid and `k` a counter (an address
    /// already on the host is skipped).
    ///
    /// # Errors
    ///
    /// When `ip netns add` or the veth set-up fails — in a sandbox without network
    /// namespaces, or not as root. The message says which command failed.
    pub fn create() -> Result<Netns, String> {
        sweep_dead();
        let pid = std::process::id();
        let existing = run(&["ip", "-4", "-o", "addr", "show"]).unwrap_or_default();
        let (mut a, mut k);
        loop {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            a = (pid + n / 63) % 250;
            k = n % 63;
            if !existing.contains(&format!("10.213.{a}.{}/30", 4 * k + 1)) {
                break;
            }
            if n > 10_000 {
                return Err("no free 10.213.x.y/30 block".into());
            }
        }
        let seq = NEXT.load(Ordering::Relaxed);
        let name = format!("flchaos-{pid}-{seq}");
        let host_if = format!("fch{}x{}", pid % 100_000, seq % 100);
        let host_ip = format!("10.213.{a}.{}", 4 * k + 1);
        let node_ip = format!("10.213.{a}.{}", 4 * k + 2);
        run(&["ip", "netns", "add", &name]).map_err(|e| {
            format!("cannot create a network namespace (needs root and netns support): {e}")
        })?;
        // From here on, Drop cleans up whatever was made.
        let ns = Netns {
            name,
            host_if,
            node_ip,
        };
        run(&[
            "ip",
            "link",
            "add",
            &ns.host_if,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &ns.name,
        ])?;
        run(&[
            "ip",
            "addr",
            "add",
            &format!("{host_ip}/30"),
            "dev",
            &ns.host_if,
        ])?;
        run(&["ip", "link", "set", &ns.host_if, "up"])?;
        run(&[
            "ip",
            "-n",
            &ns.name,
            "addr",
            "add",
            &format!("{}/30", ns.node_ip),
            "dev",
            "eth0",
        ])?;
        run(&["ip", "-n", &ns.name, "link", "set", "eth0", "up"])?;
        run(&["ip", "-n", &ns.name, "link", "set", "lo", "up"])?;
        // Prove the firewall works in here before any scenario relies on it.
        ns.iptables(&["-L", "INPUT", "-n"]).map_err(|e| {
            format!("iptables does not work inside the namespace (install the Debian package `iptables`): {e}")
        })?;
        Ok(ns)
    }

    /// The namespace's name (for `ip netns exec`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The address of the namespace end (where a node inside listens).
    pub fn node_ip(&self) -> &str {
        &self.node_ip
    }

    fn iptables(&self, args: &[&str]) -> Result<String, String> {
        let mut v = vec!["ip", "netns", "exec", &self.name, "iptables", "-w"];
        v.extend_from_slice(args);
        run(&v)
    }

    fn rule(how: Cut) -> Vec<&'static str> {
        match how {
            Cut::Drop => vec!["-p", "tcp", "-j", "DROP"],
            Cut::Reject => vec!["-p", "tcp", "-j", "REJECT", "--reject-with", "tcp-reset"],
        }
    }

    /// Cuts the namespace off: every TCP packet in is dropped or refused.
    ///
    /// # Errors
    ///
    /// When iptables fails.
    pub fn cut(&self, how: Cut) -> Result<(), String> {
        let mut args = vec!["-I", "INPUT"];
        args.extend(Self::rule(how));
        self.iptables(&args).map(drop)
    }

    /// Heals a cut made with `how`.
    ///
    /// # Errors
    ///
    /// When iptables fails (for example, no such cut).
    pub fn heal(&self, how: Cut) -> Result<(), String> {
        let mut args = vec!["-D", "INPUT"];
        args.extend(Self::rule(how));
        self.iptables(&args).map(drop)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Nodes inside were stopped by their own Drop (they hold an Arc to us). The
        // veth pair goes with the namespace; delete the host end too in case a
        // straggler keeps the namespace alive.
        let _ = run(&["ip", "netns", "del", &self.name]);
        let _ = run(&["ip", "link", "del", &self.host_if]);
    }
}

/// Deletes namespaces left by earlier runs of this harness whose process is gone
/// (a SIGKILLed test binary cannot run its Drop). Processes still inside one were
/// started by that run; they are stopped by pid.
fn sweep_dead() {
    let Ok(list) = run(&["ip", "netns", "list"]) else {
        return;
    };
    for line in list.lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix("flchaos-") else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        if std::path::Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        if let Ok(pids) = run(&["ip", "netns", "pids", name]) {
            for p in pids
                .split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok())
            {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(p),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        let _ = run(&["ip", "netns", "del", name]);
    }
}
