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
    /// The lock's key.
    pub key: String,

    /// The value printed by `fencelock acquire` (the proof of ownership).
    #[arg(
        long,
        value_name = "VALUE",
        env = "FENCELOCK_VALUE",
        hide_env_values = true
    )]
    pub value: String,
}

/// Releases; see the module docs.
///
/// # Errors
///
/// [`exit::EXPIRED`], [`exit::OTHER_OWNER`], or as [`Failure::from_lib`].
pub async fn run(args: Args, global: &Global) -> Outcome {
    if args.value.is_empty() {
        return Err(Failure::usage("the value is empty"));
    }
    let locker = stores::locker(global, None)?;
    let outcome = adopt::release(&locker, &args.key, &args.value).await?;
    match outcome {
        ReleaseOutcome::Released => Ok(0),
        ReleaseOutcome::Expired => Err(Failure::new(
            exit::EXPIRED,
            format!(
                "lock {:?} had already expired (nothing to release)",
                args.key
            ),
        )),
        ReleaseOutcome::OwnedByOther => Err(Failure::new(
            exit::OTHER_OWNER,
            format!(
                "lock {:?} is held by another owner now (left alone)",
                args.key
            ),
        )),
        // The outcome list is non-exhaustive; an unknown one is not a success.
        other => Err(Failure::new(
            exit::SOFTWARE,
            format!("release of lock {:?} found {other:?}", args.key),
        )),
    }
}
