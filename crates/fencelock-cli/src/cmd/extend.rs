//! `fencelock extend KEY --value V`: keep a lock taken with `acquire` alive longer.
//!
//! Prints `valid_ms=…` (how long the lock is now proven valid) and `ttl_ms=…`, in the
//! same form as `acquire`, so a script can plan its next extension.

use std::time::Duration;

use crate::cli::Global;
use crate::duration::{self, millis};
use crate::exit::{Failure, Outcome};
use crate::{adopt, stores};

/// Options of `fencelock extend`.
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

    /// The new TTL, counted from now.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = duration::parse_ttl)]
    pub ttl: Duration,
}

/// Extends; see the module docs.
///
/// # Errors
///
/// The lock expired or is held by another owner: [`crate::exit::LOST`] (it cannot be
/// extended any more). Otherwise as [`Failure::from_lib`].
pub async fn run(args: Args, global: &Global) -> Outcome {
    if args.value.is_empty() {
        return Err(Failure::usage("the value is empty"));
    }
    let locker = stores::locker(global, None)?;
    let valid = adopt::extend(&locker, &args.key, &args.value, args.ttl).await?;
    println!("valid_ms={}\nttl_ms={}", millis(valid), millis(args.ttl));
    Ok(0)
}
