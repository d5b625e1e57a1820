//! The signals fencelock catches: to abort a wait cleanly, and to forward to `run`'s
//! command.
//!
//! Handlers are installed before anything else happens, so there is no window in which
//! Ctrl-C kills fencelock with the default action — which would skip the clean-up of
//! an acquire in flight, or orphan a running command.

use nix::sys::signal::Signal;
use tokio::signal::unix::{SignalKind, signal};

use crate::exit::{Failure, OS_ERROR};

/// The signals forwarded to `run`'s command (the ones a terminal, a supervisor or a
/// user sends to ask a process to stop, reload or report).
const FORWARDED: [Signal; 6] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

/// Whether `sig` asks a process to end (as opposed to reload or report): these are
/// followed by SIGCONT when forwarded, and a second one escalates to SIGKILL.
pub fn terminates(sig: Signal) -> bool {
    matches!(
        sig,
        Signal::SIGINT | Signal::SIGTERM | Signal::SIGHUP | Signal::SIGQUIT
    )
}

/// Streams of the caught signals.
#[derive(Debug)]
pub struct Signals {
    streams: Vec<(Signal, tokio::signal::unix::Signal)>,
}

impl Signals {
    /// Installs the handlers (replacing the default "terminate" action).
    ///
    /// # Errors
    ///
    /// [`OS_ERROR`] when the handlers cannot be installed.
    pub fn install() -> Result<Signals, Failure> {
        Signals::catch(&FORWARDED)
    }

    /// Installs handlers for `signals` (the guard catches SIGCHLD too). Caught, not
    /// blocked: a caught signal is reset to its default in an exec'd child, while a
    /// blocked one would stay blocked in it (std does not reset the mask).
    ///
    /// # Errors
    ///
    /// [`OS_ERROR`] when the handlers cannot be installed.
    pub fn catch(signals: &[Signal]) -> Result<Signals, Failure> {
        let mut streams = Vec::with_capacity(signals.len());
        for &sig in signals {
            let stream = signal(SignalKind::from_raw(sig as i32)).map_err(|e| {
                Failure::new(OS_ERROR, format!("cannot install a {sig} handler: {e}"))
            })?;
            streams.push((sig, stream));
        }
        Ok(Signals { streams })
    }

    /// Waits for the next caught signal. Never completes if the streams are closed.
    pub async fn recv(&mut self) -> Signal {
        let polls = self.streams.iter_mut().map(|(sig, stream)| {
            let sig = *sig;
            Box::pin(async move {
                match stream.recv().await {
                    Some(()) => sig,
                    None => std::future::pending().await,
                }
            })
        });
        first_of(polls).await
    }
}

/// The output of whichever future completes first (`futures::future::select_all` in
/// a few lines, to keep the dependency list short).
async fn first_of<F: Future + Unpin>(futures: impl IntoIterator<Item = F>) -> F::Output {
    let mut futures: Vec<F> = futures.into_iter().collect();
    std::future::poll_fn(move |cx| {
        for f in futures.iter_mut() {
            if let std::task::Poll::Ready(out) = std::pin::Pin::new(f).poll(cx) {
                return std::task::Poll::Ready(out);
            }
        }
        std::task::Poll::Pending
    })
    .await
}
