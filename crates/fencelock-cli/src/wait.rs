//! Acquiring with the user watching: a spinner, Ctrl-C, and a clear "not acquired".
//!
//! Shared by `run` and `acquire`. The acquire future is raced against the caught
//! signals: on SIGINT/SIGTERM (or any other caught signal) it is dropped — the library
//! then releases whatever the attempt in flight may have set — and
//! [`Locker::shutdown`] waits for that clean-up before fencelock exits with 128+signal.

use std::time::Duration;

use fencelock::{Lease, Locker};

use crate::cli::WaitArgs;
use crate::duration::short;
use crate::exit::{self, Failure};
use crate::holder::Holder;
use crate::signals::Signals;
use crate::spinner::Line;

/// The longest fencelock waits for the stores on its way out (clean-up after an
/// interrupted wait, a final release). Past it the keys expire with their TTL.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Acquires `key` for `ttl` — or, with `wait.permits`, one of the permits of the
/// semaphore `key` — waiting as `wait` says.
///
/// # Errors
///
/// Not acquired (held, or the wait ran out): `conflict`, with the holder named when
/// known. Interrupted by a signal: 128+signal. Everything else as
/// [`Failure::from_lib`].
pub async fn acquire(
    locker: &Locker,
    key: &str,
    ttl: Duration,
    wait: &WaitArgs,
    signals: &mut Signals,
    conflict: u8,
    quiet: bool,
) -> Result<Lease, Failure> {
    // Beside the acquire, not before it: the status asks every store, and one that
    // hangs (paused, partitioned) answers only at its time-out, while a majority that
    // answers is all the acquire needs (`run` on three nodes with one paused spent
    // half a second here before every job).
    let preflight = async {
        if !wait.no_wait && wait.wait.is_none() {
            preflight(locker, key).await?;
        }
        std::future::pending::<Result<std::convert::Infallible, Failure>>().await
    };
    let options = wait.options();
    let semaphore = match wait.permits.permits {
        Some(n) => Some(
            locker
                .semaphore(key, n)
                .map_err(|e| Failure::from_lib(&e, conflict))?,
        ),
        None => None,
    };
    let acquire = async {
        match &semaphore {
            Some(s) => s.acquire_with(ttl, &options).await,
            None => locker.acquire_with(key, ttl, &options).await,
        }
    };
    let line = Line::default();
    let spinner = async {
        if Line::wanted(quiet) {
            line.spin(locker, key, wait.permits.permits).await;
        }
        std::future::pending::<std::convert::Infallible>().await
    };
    let result = tokio::select! {
        result = acquire => result,
        sig = signals.recv() => {
            drop(line);
            tracing::info!("{sig} while waiting for the lock: giving up");
            // The acquire future is gone; let the library finish its clean-up.
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, locker.shutdown()).await;
            return Err(Failure::new(
                exit::for_signal(sig as i32),
                format!("interrupted by {sig} while waiting for lock {key:?}"),
            ));
        }
        never = spinner => match never {},
        Err(failure) = preflight => {
            drop(line);
            // As after a signal: the abandoned acquire's clean-up, then the error.
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, locker.shutdown()).await;
            return Err(failure);
        }
    };
    drop(line);
    match result {
        Ok(lease) => Ok(lease),
        Err(e) if e.is_contended() || e.is_timeout() => {
            let mut failure = Failure::from_lib(&e, conflict);
            if semaphore.is_none()
                && let Some(who) = holder_of(locker, key).await
            {
                failure.message = format!("{e}; held by {who}");
            }
            Err(failure)
        }
        Err(e) => Err(Failure::from_lib(&e, conflict)),
    }
}

/// While waiting without a deadline: are the stores there at all?
///
/// The library retries unavailable stores until the acquire's deadline, and "wait
/// forever" has none — so `fencelock run` against a mistyped host would hang instead
/// of saying so. One read-only status round trip, beside the acquire, tells "down"
/// (exit 69) or "refused for good" (78); an outage that starts later is waited
/// out like the lock itself.
async fn preflight(locker: &Locker, key: &str) -> Result<(), Failure> {
    let statuses = locker.status(key).await?;
    match crate::stores::unanswered(&statuses) {
        Some(failure) => Err(failure),
        None => Ok(()),
    }
}

/// Who holds `key`, for the "not acquired" message (best effort, bounded).
async fn holder_of(locker: &Locker, key: &str) -> Option<String> {
    let statuses = tokio::time::timeout(Duration::from_secs(1), locker.status(key))
        .await
        .ok()?
        .ok()?;
    let text = statuses.first()?.holder()?.to_string();
    Some(match Holder::parse(&text) {
        Some(h) => format!("{} for {}", h.describe(), short(h.age())),
        None => format!("{text:?}"),
    })
}
