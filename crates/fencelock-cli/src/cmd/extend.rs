//! `fencelock extend KEY --value V`: keep a lock taken with `acquire` alive longer.
//!
//! Prints `valid_ms=…` (how long the lock is now proven valid) and `ttl_ms=…`, in the
//! same form as `acquire`, so a script can plan its next extension.

use std::time::Duration;

use crate::cli::Global;
use crate::duration::{self, millis};
use crate::exit::Outcome;
use crate::{adopt, stores};

/// Options of `fencelock extend`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub held: adopt::Held,

    /// The new TTL, counted from now.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = duration::parse_ttl)]
    pub ttl: Duration,
}

/// Extends; see the module docs.
///
/// # Errors
///
/// The lock expired or is held by another owner: [`crate::exit::LOST`] (it cannot be
/// extended any more). Otherwise as [`crate::exit::Failure::from_lib`].
pub async fn run(args: Args, global: &Global) -> Outcome {
    let Args { held, ttl } = args;
    held.check()?;
    let locker = stores::locker(global, None)?;
    let valid = adopt::extend(&locker, &held.key, &held.value, ttl).await?;
    println!("valid_ms={}\nttl_ms={}", millis(valid), millis(ttl));
    Ok(0)
}
