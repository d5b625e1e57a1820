//! Acting on a lock by key and value, without the `Lease` that took it.
//!
//! `fencelock acquire` exits with the lock held, so `extend` and `release` run in other
//! processes that only have the key and the value printed by `acquire`. The library
//! offers that as `Locker::extend_value` / `Locker::release_value`; this module is the
//! one place the CLI calls them, so that a change of their signatures touches nothing
//! else.

use std::time::Duration;

use fencelock::{Locker, ReleaseOutcome, Result};

use crate::exit::Failure;

/// The arguments naming a lock taken by `fencelock acquire`: its key and the value it
/// printed (shared by `extend` and `release`).
#[derive(Debug, clap::Args)]
pub struct Held {
    /// The lock's key.
    #[arg(value_parser = crate::cli::parse_key)]
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

impl Held {
    /// Refuses an empty value (it could never match, and is surely a script's mistake).
    ///
    /// # Errors
    ///
    /// A usage error for an empty value.
    pub fn check(&self) -> std::result::Result<(), Failure> {
        if self.value.is_empty() {
            return Err(Failure::usage("the value is empty"));
        }
        Ok(())
    }
}

/// Extends the lock on `key` to `ttl` from now, if it still holds `value`; returns
/// how long it is now proven valid.
///
/// # Errors
///
/// `Lost` when the lock expired or another owner holds it; `Unavailable` when too few
/// stores answered; `InvalidInput` for a bad key or TTL.
pub async fn extend(locker: &Locker, key: &str, value: &str, ttl: Duration) -> Result<Duration> {
    locker.extend_value([key], value, ttl).await
}

/// Releases the lock on `key` if it holds `value`, and says what it found.
///
/// # Errors
///
/// `Unavailable` when too few stores answered to know; `InvalidInput` for a bad key.
pub async fn release(locker: &Locker, key: &str, value: &str) -> Result<ReleaseOutcome> {
    locker.release_value([key], value).await
}
