//! `fencelock extend KEY --value V`: keep a lock taken with `acquire` alive longer.
//!
//! Prints `FENCELOCK_VALID_MS=…` (how long the lock is now proven valid) and
//! `FENCELOCK_TTL_MS=…`, in the same form as `acquire`, so a script can plan its next
//! extension.

use std::time::Duration;

use crate::cli::Global;
use crate::duration::{self, millis};
use crate::exit::Outcome;
use crate::output::{self, Format};
use crate::{adopt, stores};

/// Options of `fencelock extend`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub held: adopt::Held,

    /// The new TTL, counted from now (required: a default would silently shorten a
    /// lease taken for longer, e.g. a 10-minute lease cut to 30 s).
    #[arg(long, value_name = "DURATION", required = true, value_parser = duration::parse_ttl)]
    pub ttl: Duration,

    /// How to print the answer: `shell` assignments (FENCELOCK_VALID_MS,
    /// FENCELOCK_TTL_MS) for `eval`, or one `json` object.
    #[arg(long, value_enum, default_value_t = Format::Shell)]
    pub format: Format,
}

/// Extends; see the module docs.
///
/// # Errors
///
/// The lock expired or is held by another owner: [`crate::exit::LOST`] (it cannot be
/// extended any more). Otherwise as [`crate::exit::Failure::from_lib`].
pub async fn run(args: Args, global: &Global) -> Outcome {
    let Args { held, ttl, format } = args;
    held.check()?;
    let locker = stores::locker(global, None)?;
    let valid = adopt::extend(&locker, &held.key, &held.value, ttl).await?;
    let (valid_ms, ttl_ms) = (millis(valid), millis(ttl));
    let text = match format {
        Format::Shell => output::assignments(&[
            ("FENCELOCK_VALID_MS", valid_ms.to_string()),
            ("FENCELOCK_TTL_MS", ttl_ms.to_string()),
        ]),
        Format::Json => format!(
            "{}\n",
            serde_json::json!({ "key": held.key, "valid_ms": valid_ms, "ttl_ms": ttl_ms })
        ),
    };
    output::emit(&text)?;
    Ok(0)
}
