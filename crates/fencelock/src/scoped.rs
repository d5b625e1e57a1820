//! Work under a lease: [`Scoped`], the body of
//! [`Locker::with_lock`](crate::Locker::with_lock) and
//! [`Semaphore::with_permit`](crate::Semaphore::with_permit) — renewed while the work runs,
//! dropped if the lease is lost, always released.

use crate::error::Result;
use crate::lease::Lease;
use crate::lease_state::lost_error;
use crate::release::ReleaseOutcome;

/// The result of [`Locker::with_lock`](crate::Locker::with_lock): the work's own result and
/// the release's, both kept so that neither hides the other.
#[derive(Debug)]
#[must_use]
#[non_exhaustive]
pub struct Scoped<T> {
    /// What the work returned, or why it did not complete (lease lost, not acquired).
    pub work: Result<T>,
    /// What the release at the end found (`None` when nothing was acquired).
    pub release: Option<Result<ReleaseOutcome>>,
}

impl<T> Scoped<T> {
    /// The work's result. A release that failed after the work completed does not turn
    /// a completed work into an error (the lease expires by its TTL); it is logged.
    ///
    /// # Errors
    ///
    /// The error that kept the work from completing: not acquired, or lease lost.
    pub fn into_result(self) -> Result<T> {
        if let Some(Err(e)) = &self.release {
            tracing::warn!("release after the work failed: {e}");
        }
        self.work
    }
}

/// The body of [`Locker::with_lock`](crate::Locker::with_lock) once the acquire is done (also
/// `Semaphore::with_permit`): renewed while `work` runs, the work dropped if the lease
/// is lost, always released.
pub(crate) async fn scoped<T>(
    lease: Result<Lease>,
    work: impl AsyncFnOnce(&Lease) -> T,
) -> Scoped<T> {
    let lease = match lease {
        Ok(l) => l,
        Err(e) => {
            return Scoped {
                work: Err(e),
                release: None,
            };
        }
    };
    lease.set_auto_renew(true);
    let lost = lease.lost();
    let result = tokio::select! {
        biased;
        output = work(&lease) => Ok(output),
        _ = lost => Err(()),
    };
    let work = match result {
        Ok(output) if !lease.is_lost() => Ok(output),
        _ => Err(lost_error(
            lease.state(),
            "the work was stopped because the lease could no longer be proven valid",
        )),
    };
    let release = Some(lease.release().await);
    Scoped { work, release }
}
