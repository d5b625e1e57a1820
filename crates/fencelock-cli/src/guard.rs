//! The guard: a small process between `fencelock run` and its command, so that the
//! command never runs without the lock.
//!
//! `run` starts `fencelock __guard PARENT-PID COMMAND [ARGS]…` as the leader of a new
//! process group; the guard starts the command in that group and waits. It exists for
//! three things fencelock cannot do from outside:
//!
//! - **Dying with fencelock.** If fencelock is killed (`kill -9`, the OOM killer, a
//!   supervisor) nobody renews the lease any more, and it expires with its TTL: the
//!   command must not outlive that. On Linux the guard asks for `PR_SET_PDEATHSIG` and
//!   kills its whole process group (the command and everything it started there) with
//!   SIGKILL the moment fencelock is gone. (The signal fires when the *thread* that
//!   spawned the guard exits, not the process: `run` spawns it from the main thread,
//!   which lives as long as fencelock; and the guard checks `getppid()` before acting,
//!   so a stray signal is never mistaken for a death.) Elsewhere a thread polls
//!   `getppid()` once a second.
//! - **Waiting for the whole group.** On Linux the guard is a child subreaper: when the
//!   command exits and leaves background processes behind (`cmd &`), they become the
//!   guard's children, and the guard waits for every one of them that is still in its
//!   process group before it exits — so fencelock keeps (and renews) the lock until
//!   nothing of the command runs any more, as `flock(1)` does while any process holds
//!   the lock file open. Processes that left the group (`setsid` daemons) are not
//!   waited for.
//! - **Surviving the signals meant for the command.** Ctrl-C from the terminal and the
//!   signals fencelock forwards reach the whole group; the guard catches them and keeps
//!   waiting, so that fencelock learns the command's own exit status rather than the
//!   guard's. (Caught, not blocked: exec resets a caught signal to its default in the
//!   command, but std would leave a blocked one blocked there.)
//!
//! The guard exits with the command's status (128+S when it died of signal S). It
//! never touches the terminal, and it stops with its group on Ctrl-Z (the stop signals
//! keep their default action), which is how `run` sees that the job was suspended.
//!
//! The guard opens no store and reads no option but its arguments; a one-thread
//! runtime only delivers its signals.

use std::ffi::OsString;
use std::process::ExitCode;

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{Pid, getpgrp, getppid};

/// The hidden first argument that makes `fencelock` the guard.
pub const ARG: &str = "__guard";

/// The signals the guard catches instead of dying of them: the ones forwarded to the
/// group (SIGHUP is also the parent-death signal), and SIGCHLD (a child changed
/// state).
const WAITED: [Signal; 7] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGCHLD,
];

/// The arguments `run` gives the guard, before the command's own.
pub fn args(parent: u32) -> [String; 2] {
    [ARG.to_string(), parent.to_string()]
}

/// The guard's `main`: `args` are the process's arguments after `__guard`.
pub fn main(args: Vec<OsString>) -> ExitCode {
    match guard(args) {
        Ok(code) => ExitCode::from(code),
        Err((code, message)) => {
            eprintln!("fencelock: {message}");
            ExitCode::from(code)
        }
    }
}

type Failed = (u8, String);

fn guard(args: Vec<OsString>) -> Result<u8, Failed> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| (crate::exit::OS_ERROR, format!("guard: cannot start: {e}")))?;
    runtime.block_on(supervise(args))
}

async fn supervise(args: Vec<OsString>) -> Result<u8, Failed> {
    let mut args = args.into_iter();
    let parent = args
        .next()
        .and_then(|p| p.to_str().and_then(|p| p.parse::<i32>().ok()))
        .map(Pid::from_raw)
        .ok_or((
            crate::exit::USAGE,
            "the guard needs its parent's pid".into(),
        ))?;
    let program = args
        .next()
        .ok_or((crate::exit::USAGE, "the guard needs a command".into()))?;
    let os = |what: &str, e: Errno| (crate::exit::OS_ERROR, format!("guard: {what}: {e}"));

    // Caught before anything can arrive.
    let mut signals = crate::signals::Signals::catch(&WAITED).map_err(|f| (f.code, f.message))?;
    watch_parent(parent).map_err(|e| os("cannot watch fencelock", e))?;
    if getppid() != parent {
        // fencelock died before the guard could watch it: the command must not start.
        return Err((crate::exit::LOST, "fencelock is gone; not starting".into()));
    }

    let child = match std::process::Command::new(&program).args(args).spawn() {
        Ok(child) => child,
        Err(e) => {
            let code = if e.kind() == std::io::ErrorKind::NotFound {
                crate::exit::NOT_FOUND
            } else {
                crate::exit::CANNOT_EXECUTE
            };
            return Err((code, format!("cannot run {program:?}: {e}")));
        }
    };
    let command = Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
    // Children in our group only: a child that left it (a `setsid` daemon handed to us
    // as subreaper) is not the command's any more.
    let group = Pid::from_raw(-getpgrp().as_raw());
    let mut status: Option<u8> = None;
    loop {
        let sig = signals.recv().await;
        if sig != Signal::SIGCHLD {
            if getppid() != parent {
                // fencelock is gone and the lease with it: stop everything at once.
                let _ = killpg(getpgrp(), Signal::SIGKILL);
            }
            // Otherwise it was sent to the whole group, the command included.
            continue;
        }
        // SIGCHLDs coalesce: collect every child that has changed.
        loop {
            match waitpid(group, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) if pid == command => {
                    status = Some(u8::try_from(code & 0xff).unwrap_or(u8::MAX));
                }
                Ok(WaitStatus::Signaled(pid, sig, _)) if pid == command => {
                    status = Some(crate::exit::for_signal(sig as i32));
                }
                Ok(WaitStatus::StillAlive) => break,
                Ok(_) | Err(Errno::EINTR) => {}
                Err(Errno::ECHILD) => match status {
                    Some(code) => return Ok(code),
                    None => break,
                },
                Err(e) => return Err(os("waitpid", e)),
            }
        }
    }
}

/// Arranges to hear of fencelock's death as a caught SIGHUP: on Linux the
/// parent-death signal, and the subreaper bit so that what the
/// command leaves behind becomes ours to wait for.
#[cfg(target_os = "linux")]
fn watch_parent(_parent: Pid) -> nix::Result<()> {
    nix::sys::prctl::set_pdeathsig(Signal::SIGHUP)?;
    nix::sys::prctl::set_child_subreaper(true)
}

/// Without `PR_SET_PDEATHSIG`: a thread looks at `getppid()` once a second and sends
/// the guard SIGHUP when fencelock is gone.
#[cfg(not(target_os = "linux"))]
fn watch_parent(parent: Pid) -> nix::Result<()> {
    let me = nix::unistd::getpid();
    std::thread::Builder::new()
        .name("parent-watch".into())
        .spawn(move || {
            while getppid() == parent {
                std::thread::sleep(std::time::Duration::from_secs(1));
            }
            let _ = nix::sys::signal::kill(me, Signal::SIGHUP);
        })
        .map(drop)
        .map_err(|_| Errno::EAGAIN)
}
