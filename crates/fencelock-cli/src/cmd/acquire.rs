//! `fencelock acquire KEY`: take a lock for a script, and leave it held.
//!
//! Prints the lock's value (the proof of ownership that `extend` and `release` need),
//! its fencing token and how long it is proven valid, then exits with the lock still
//! held: it lives until its TTL runs out unless the script extends or releases it.
use serde::Serialize;

use crate::cli::{Global, TtlArg, WaitArgs};
use crate::duration::millis;
use crate::exit::{self, Outcome};
use crate::holder::Holder;
use crate::output::{self, Format};
use crate::signals::Signals;
use crate::{stores, wait};

/// Options of `fencelock acquire`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The lock's key: the name of the shared resource.
    #[arg(value_parser = crate::cli::parse_key)]
    pub key: String,

    #[command(flatten)]
    pub ttl: TtlArg,

    #[command(flatten)]
    pub wait: WaitArgs,

    /// How `status` and waiters name the holder [default: the program's name, never
    /// its arguments, which may hold secrets].
    #[arg(long, value_name = "TEXT", value_parser = crate::holder::parse_label)]
    pub holder: Option<String>,

    /// How to print the answer: `shell` assignments (FENCELOCK_KEY, FENCELOCK_VALUE,
    /// FENCELOCK_TOKEN, FENCELOCK_VALID_MS, FENCELOCK_TTL_MS), quoted so that
    /// `eval "$(fencelock acquire KEY)"` is safe whatever the key holds, or one `json`
    /// object.
    #[arg(long, value_enum, default_value_t = Format::Shell)]
    pub format: Format,

    /// Same as --format json (kept for older scripts).
    #[arg(long, hide = true, conflicts_with = "format")]
    pub json: bool,
}

/// What `acquire` prints.
#[derive(Debug, Serialize)]
struct Acquired<'a> {
    key: &'a str,
    /// With --permits: the permit's own lock key (tokens are numbered per permit).
    #[serde(skip_serializing_if = "Option::is_none")]
    permit: Option<&'a str>,
    value: &'a str,
    token: u64,
    valid_ms: u64,
    ttl_ms: u64,
}

/// Acquires and prints; see the module docs.
///
/// # Errors
///
/// Not acquired: [`exit::CONFLICT`]; otherwise as [`crate::exit::Failure::from_lib`].
pub async fn run(args: Args, global: &Global, signals: &mut Signals) -> Outcome {
    let locker = stores::locker(
        global,
        Some(Holder::for_acquire(args.holder.as_deref()).to_json()),
    )?;
    let lease = wait::acquire(
        &locker,
        &args.key,
        args.ttl.ttl,
        &args.wait,
        signals,
        exit::CONFLICT,
        global.quiet,
    )
    .await?;
    let answer = Acquired {
        key: &args.key,
        permit: args.wait.permits.permits.map(|_| lease.keys()[0].as_str()),
        value: lease.value(),
        token: lease.token().get(),
        valid_ms: millis(lease.remaining()),
        ttl_ms: millis(lease.ttl()),
    };
    let text = if args.json || args.format == Format::Json {
        format!("{}\n", serde_json::to_string(&answer).unwrap_or_default())
    } else {
        let mut pairs = vec![
            ("FENCELOCK_KEY", answer.key.to_string()),
            ("FENCELOCK_VALUE", answer.value.to_string()),
            ("FENCELOCK_TOKEN", answer.token.to_string()),
            ("FENCELOCK_VALID_MS", answer.valid_ms.to_string()),
            ("FENCELOCK_TTL_MS", answer.ttl_ms.to_string()),
        ];
        if let Some(permit) = answer.permit {
            pairs.push(("FENCELOCK_PERMIT", permit.to_string()));
        }
        output::assignments(&pairs)
    };
    if let Err(mut failure) = output::emit(&text) {
        // Nobody learnt the value, so nobody can use or release this lock: free it now
        // rather than block every other holder for the whole TTL.
        let released = tokio::time::timeout(wait::SHUTDOWN_GRACE, lease.release()).await;
        let _ = tokio::time::timeout(wait::SHUTDOWN_GRACE, locker.shutdown()).await;
        failure.message = match released {
            Ok(Ok(_)) => format!("{}; lock {:?} released", failure.message, args.key),
            _ => format!(
                "{}; lock {:?} not confirmed released, it expires with its TTL",
                failure.message, args.key
            ),
        };
        return Err(failure);
    }
    // Dropping a `Lease` releases the lock, and this lock must outlive the process:
    // the script that ran us owns it now, by its value. So the lease is never dropped;
    // process exit then leaves the keys in the stores until their TTL (or until
    // `fencelock extend`/`release`). Nothing else leaks: the process ends right after.
    std::mem::forget(lease);
    Ok(0)
}
