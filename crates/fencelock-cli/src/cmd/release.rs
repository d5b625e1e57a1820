//! `fencelock release KEY --value V`: free a lock taken with `acquire`.
//!
//! Tells apart the three things a release can find, by exit code: released (0), it
//! had already expired (3: the lock is free, but the work after the expiry was not
//! protected), another owner holds it now (4: their lock is left alone).

use fencelock::ReleaseOutcome;

use crate::cli::Global;
use crate::exit::{self, Failure, Outcome};
use crate::{adopt, stores};

/// Options of `fencelock release`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub held: adopt::Held,
}

/// Releases; see the module docs.
///
/// # Errors
///
/// [`exit::EXPIRED`], [`exit::OTHER_OWNER`], or as [`Failure::from_lib`].
pub async fn run(args: Args, global: &Global) -> Outcome {
    let held = args.held;
    held.check()?;
    let locker = stores::locker(global, None)?;
    let outcome = adopt::release(&locker, &held.key, &held.value).await?;
    match outcome {
        ReleaseOutcome::Released => Ok(0),
        ReleaseOutcome::Expired => Err(Failure::new(
            exit::EXPIRED,
            format!(
                "lock {:?} had already expired (nothing to release)",
                held.key
            ),
        )),
        ReleaseOutcome::OwnedByOther => Err(Failure::new(
            exit::OTHER_OWNER,
            format!(
                "lock {:?} is held by another owner now (left alone)",
                held.key
            ),
        )),
        // The outcome list is non-exhaustive; an unknown one is not a success.
        other => Err(Failure::new(
            exit::SOFTWARE,
            format!("release of lock {:?} found {other:?}", held.key),
        )),
    }
}
