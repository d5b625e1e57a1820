//! Handing the terminal to `run`'s command while it runs.
//!
//! The command runs in its own process group (so that a lost lease can stop all of
//! it). A process group that is not the terminal's foreground group is stopped by
//! SIGTTIN the moment it reads the terminal — an editor, a password prompt, `psql`
//! would hang. So, like a shell starting a job, fencelock makes the command's group
//! the foreground group for as long as it runs, and takes the terminal back after.
//! Terminal-generated signals (Ctrl-C, Ctrl-\) then reach the command directly.

use std::io::IsTerminal;

use nix::sys::signal::{SigSet, SigmaskHow, Signal, killpg, pthread_sigmask};
use nix::unistd::{Pid, getpgrp, tcgetpgrp, tcsetpgrp};

/// The terminal, lent to the command's process group; given back on drop.
#[derive(Debug)]
pub struct Lent {
    ours: Pid,
}

/// Lends the terminal on stdin to `group` if it is ours to lend: stdin is a terminal
/// and fencelock is in its foreground group (a `fencelock run … &` leaves it alone).
pub fn lend(group: Pid) -> Option<Lent> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return None;
    }
    let ours = getpgrp();
    if tcgetpgrp(&stdin).ok()? != ours {
        return None;
    }
    if let Err(e) = tcsetpgrp(&stdin, group) {
        tracing::debug!("cannot hand the terminal to the command: {e}");
        return None;
    }
    // The command may have touched the terminal before it was its own, and been
    // stopped for it: wake it (harmless otherwise).
    let _ = killpg(group, Signal::SIGCONT);
    Some(Lent { ours })
}

impl Drop for Lent {
    fn drop(&mut self) {
        // fencelock is a background group now: taking the terminal back would stop
        // it with SIGTTOU, unless that signal is blocked for the call.
        let mut ttou = SigSet::empty();
        ttou.add(Signal::SIGTTOU);
        let mut old = SigSet::empty();
        if pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&ttou), Some(&mut old)).is_ok() {
            if let Err(e) = tcsetpgrp(std::io::stdin(), self.ours) {
                tracing::debug!("cannot take the terminal back: {e}");
            }
            let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
        }
    }
}
