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
//! fencelock itself catches SIGTSTP (Ctrl-Z when the terminal is not lent to the
//! command, as in `producer | fencelock run …`, or `kill -TSTP`): it stops the
//! command's group first, then itself, and the same check follows on SIGCONT — the
//! command never runs on while nobody renews its lease.
//!
//! Seeing a child *stop* needs `waitid(WSTOPPED)`, which this is written for on Linux;
//! elsewhere Ctrl-Z at the terminal stops the command only (as before).

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use tokio::signal::unix::{SignalKind, signal};

/// Why the job is being suspended.
#[derive(Debug, Clone, Copy)]
pub enum Suspend {
    /// The command was stopped by this job-control signal (Ctrl-Z at the terminal,
    /// or a read of the terminal from the background): fencelock follows it.
    Command(Signal),
    /// fencelock itself got SIGTSTP (Ctrl-Z when the terminal was not lent to the
    /// command, or `kill -TSTP`): the command must stop with it, or it would run on
    /// while nobody renews the lease.
    Fencelock,
}

/// Watches for a reason to suspend the job.
#[derive(Debug)]
pub struct Stops {
    /// fencelock's own SIGTSTP (caught, so that the command is stopped first).
    tstp: Option<tokio::signal::unix::Signal>,
    /// SIGCHLD, and the group leader (the guard) to ask about it, once known.
    #[cfg(target_os = "linux")]
    child: Option<(tokio::signal::unix::Signal, Option<Pid>)>,
}

impl Stops {
    /// Installs the handlers; call before the command starts, so that no stop is
    /// missed. SIGCHLD is only watched under a terminal (no terminal, no job control
    /// to take part in).
    pub fn install() -> Stops {
        #[cfg(target_os = "linux")]
        let child = {
            use std::io::IsTerminal;
            if std::io::stdin().is_terminal() {
                signal(SignalKind::child()).ok().map(|s| (s, None))
            } else {
                None
            }
        };
        Stops {
            tstp: signal(SignalKind::from_raw(Signal::SIGTSTP as i32)).ok(),
            #[cfg(target_os = "linux")]
            child,
        }
    }

    /// The command's group leader, once it runs.
    pub fn watch(&mut self, leader: Pid) {
        #[cfg(target_os = "linux")]
        if let Some((_, who)) = self.child.as_mut() {
            *who = Some(leader);
        }
        #[cfg(not(target_os = "linux"))]
        let _ = leader;
    }

    /// The next reason to suspend the job. Never completes when there is none to
    /// watch for.
    pub async fn next(&mut self) -> Suspend {
        // Each future borrows its own field.
        let tstp_stream = &mut self.tstp;
        let tstp = async move {
            match tstp_stream {
                Some(s) => match s.recv().await {
                    Some(()) => Suspend::Fencelock,
                    None => std::future::pending().await,
                },
                None => std::future::pending().await,
            }
        };
        #[cfg(target_os = "linux")]
        let child_stream = &mut self.child;
        #[cfg(target_os = "linux")]
        let child = async move {
            match child_stream.as_mut() {
                Some((stream, Some(leader))) => command_stopped(stream, *leader).await,
                _ => std::future::pending().await,
            }
        };
        #[cfg(not(target_os = "linux"))]
        let child = std::future::pending::<Suspend>();
        tokio::select! {
            why = tstp => why,
            why = child => why,
        }
    }
}

/// Waits for a job-control stop of `leader`. Looks first (a stop may have happened
/// before this was called), then at every SIGCHLD.
#[cfg(target_os = "linux")]
async fn command_stopped(stream: &mut tokio::signal::unix::Signal, leader: Pid) -> Suspend {
    use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
    loop {
        // WSTOPPED alone: only stops are reported (and consumed); an exit is left for
        // tokio's own wait to collect.
        let flags = WaitPidFlag::WSTOPPED | WaitPidFlag::WNOHANG;
        match waitid(Id::Pid(leader), flags) {
            Ok(WaitStatus::Stopped(_, sig))
                if matches!(sig, Signal::SIGTSTP | Signal::SIGTTIN | Signal::SIGTTOU) =>
            {
                return Suspend::Command(sig);
            }
            Ok(_) => {}
            // The leader is gone (reaped): nothing more to watch.
            Err(_) => return std::future::pending().await,
        }
        if stream.recv().await.is_none() {
            return std::future::pending().await;
        }
    }
}

/// Suspends the job: the command's group (unless it is stopped already) and then
/// fencelock. Returns once fencelock is continued (`fg`, `bg`, SIGCONT).
///
/// When the command stopped by job control, fencelock stops its own process group
/// (the shell's job: fencelock and whatever it is piped with) with the same signal.
/// When fencelock got SIGTSTP, the command's group gets SIGSTOP first and fencelock
/// stops itself alone with SIGSTOP (SIGTSTP is caught here, so it cannot be used).
/// In an orphaned process group the kernel discards job-control stops, and this
/// returns at once.
pub fn suspend(why: Suspend, group: Pid) {
    use nix::sys::signal::{kill, killpg};
    tracing::debug!("suspending the job ({why:?})");
    // A signal sent to oneself is delivered before `kill` returns, so the stop happens
    // inside these calls, which return after SIGCONT.
    let result = match why {
        Suspend::Command(sig) => killpg(nix::unistd::getpgrp(), sig),
        Suspend::Fencelock => killpg(group, Signal::SIGSTOP)
            .and_then(|()| kill(nix::unistd::getpid(), Signal::SIGSTOP)),
    };
    if let Err(e) = result {
        tracing::warn!("cannot suspend the job: {e}");
    }
}
