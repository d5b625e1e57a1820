//! Job control: Ctrl-Z on `fencelock run` suspends the job and gives the shell its
//! prompt back; `fg` resumes it after checking the lease.
//!
//! The command runs in a process group of its own, which is the terminal's foreground
//! group while it runs (see `terminal.rs`), so Ctrl-Z stops the command — and not
//! fencelock, which the shell is waiting for as its job: without help the shell would
//! wait forever, and fencelock would keep renewing the lock of a job nobody can reach.
//! So fencelock does what a shell does for its jobs: it watches the command's group
//! for a job-control stop (SIGTSTP, SIGTTIN, SIGTTOU — not a SIGSTOP sent by a
//! debugger or a supervisor), takes the terminal back, and stops its own process
//! group with the same signal. The shell sees its job stopped.
//!
//! While suspended nothing renews the lease, which expires with its TTL: a suspended
//! job does not keep a lock from everyone else. On `fg` (or `bg`) fencelock continues
//! first, and `run` decides: still valid → renewed, the terminal lent again, the
//! command continued; expired or lost → the command is killed and `run` exits 75.
//!
//! Seeing a child *stop* needs `waitid(WSTOPPED)`, which this is written for on Linux;
//! elsewhere the watcher never fires and Ctrl-Z stops the command only (as before).

use nix::sys::signal::Signal;
use nix::unistd::Pid;

/// Watches the command's group leader (the guard) for job-control stops.
#[derive(Debug)]
pub struct Stops {
    #[cfg(target_os = "linux")]
    inner: Option<(Pid, tokio::signal::unix::Signal)>,
}

impl Stops {
    /// Watches `leader` when fencelock runs under a terminal (with no terminal there
    /// is no job control to take part in).
    #[cfg(target_os = "linux")]
    pub fn watch(leader: Pid) -> Stops {
        use std::io::IsTerminal;
        let inner = if std::io::stdin().is_terminal() {
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child())
                .ok()
                .map(|stream| (leader, stream))
        } else {
            None
        };
        Stops { inner }
    }

    #[cfg(not(target_os = "linux"))]
    pub fn watch(_leader: Pid) -> Stops {
        Stops {}
    }

    /// The next job-control stop of the command: the signal that stopped it. Never
    /// completes when there is nothing to watch.
    #[cfg(target_os = "linux")]
    pub async fn next(&mut self) -> Signal {
        use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
        let Some((leader, stream)) = self.inner.as_mut() else {
            return std::future::pending().await;
        };
        loop {
            if stream.recv().await.is_none() {
                return std::future::pending().await;
            }
            // WSTOPPED alone: only stops are reported (and consumed); an exit is left
            // for tokio's own wait to collect.
            let flags = WaitPidFlag::WSTOPPED | WaitPidFlag::WNOHANG;
            match waitid(Id::Pid(*leader), flags) {
                Ok(WaitStatus::Stopped(_, sig))
                    if matches!(sig, Signal::SIGTSTP | Signal::SIGTTIN | Signal::SIGTTOU) =>
                {
                    return sig;
                }
                Ok(_) => {}
                // The leader is gone (reaped): nothing more to watch.
                Err(_) => return std::future::pending().await,
            }
        }
    }

    #[cfg(not(target_os = "linux"))]
    pub async fn next(&mut self) -> Signal {
        std::future::pending().await
    }
}

/// Stops fencelock's own process group (the shell's job: fencelock and whatever it
/// is piped with) with `sig`; returns once the job is continued. In an orphaned
/// process group the kernel discards job-control stops, and this returns at once.
pub fn suspend_self(sig: Signal) {
    tracing::debug!("the command was stopped by {sig}: suspending the job");
    // A signal sent to one's own group is delivered before `killpg` returns, so the
    // stop happens here and the call returns after SIGCONT.
    if let Err(e) = nix::sys::signal::killpg(nix::unistd::getpgrp(), sig) {
        tracing::warn!("cannot suspend fencelock with its command: {e}");
    }
}
