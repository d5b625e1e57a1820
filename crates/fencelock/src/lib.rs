//! # fencelock
//!
//! Distributed locks that say what they mean: Redlock over one or several independent
//! Redis servers (wire-compatible with the `redlock` npm package and redsync), or an
//! embedded SQLite file on one host — with **fencing tokens** that stay unique across
//! holders, leases that **renew themselves and signal the moment they are lost**,
//! hand-off to a waiter on the holder's release notice instead of a polling interval,
//! and errors that tell "someone holds it" from "Redis is down".
//!
//! ## Example: run work under a lock
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), fencelock::Error> {
//! use std::time::Duration;
//! use fencelock::Locker;
//!
//! // "redis://10.0.0.1:6379", several for Redlock, or "sqlite:///var/lib/app/locks.db".
//! let locker = Locker::builder().store("memory://crate-doc").build()?;
//!
//! let lease = locker.acquire("invoice:2024-11", Duration::from_secs(30)).await?;
//! // Every write to the protected resource carries the token; the resource refuses a
//! // token lower than one it has seen (see the `fence` module).
//! let token = lease.token();
//! lease.release().await?;
//!
//! // Or scoped: renewed while the work runs, stopped if the lease is lost, always released.
//! let next = locker
//!     .with_lock("invoice:2024-11", Duration::from_secs(30), async |lease| lease.token())
//!     .await
//!     .into_result()?;
//! assert!(next > token);
//!
//! // Before the program ends: a lease dropped without release() is released by the
//! // locker's background task, which only runs while the runtime does.
//! locker.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! ## Example: tell "held" from "down"
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), fencelock::Error> {
//! # use std::time::Duration;
//! # let locker = fencelock::Locker::builder().store("memory://crate-doc-2").build()?;
//! let _held = locker.acquire("report", Duration::from_secs(30)).await?;
//! match locker.try_acquire("report", Duration::from_secs(30)).await {
//!     Err(e) if e.is_contended() => println!("busy, free in {:?}", e.retry_after()),
//!     Err(e) if e.is_unavailable() => println!("stores down: {e}"),
//!     other => { other?; }
//! }
//! # Ok(()) }
//! ```
//!
//! ## Layout
//!
//! Each file builds only on the files below it in this list (no import circle:
//! `tests/module_graph.rs`), so the protocol reads from the bottom up.
//!
//! - [`LockerBuilder`] (`builder.rs`): stores and options, building the [`Locker`].
//! - [`Locker`] (`locker.rs`): the public face — checks its input and hands over to
//!   the protocol files below.
//! - [`Semaphore`] (`semaphore.rs`): `N` permits on a key, each an ordinary lock on
//!   one of `N` slot keys taken by the same attempt, so each permit is a [`Lease`]
//!   with the lock's guarantees (`docs/semaphore.md`).
//! - [`Report`] (`checks.rs`): the start-up checks run beside a locker's first
//!   acquire (replicas, eviction policy, duplicate servers, clocks, round trip, ACL)
//!   and the deeper diagnosis behind `fencelock doctor`.
//! - [`KeyStatus`] (`status.rs`): what every node knows about a key (`fencelock status`).
//! - `wait.rs`: the one wait loop of a lock's acquire and of a semaphore's (each a
//!   `Goal`: what one round of attempts is) — between rounds a release notice, a
//!   poll, a back-off, or after a split vote a quick retry, until the deadline; the
//!   hand-off to a waiter.
//! - `renew.rs`: the locker's background task; it only schedules — renewal rounds,
//!   the `lost()` timers, the extend of a lease taken on a hand-off notice, releases
//!   of dropped leases and cancelled acquires.
//! - `attempt.rs`: one attempt — the request to every node, the verdict, the fencing
//!   commit round, the undo of a failed attempt.
//! - [`Scoped`] (`scoped.rs`): work under a lease (`with_lock`, `with_permit`).
//! - [`Lease`] (`lease.rs`): keys, value, token, validity, `lost()`; extend, release.
//! - `extend.rs`: extend — a lease's, a lock's by value, a hand-off's, and the batched
//!   renewal round.
//! - [`ReleaseOutcome`] (`release.rs`): release — a lease's, a lock's by value, the
//!   background task's.
//! - `core.rs`: what one locker's parts share — nodes, options, the background task's
//!   handle, the start-up checks.
//! - `background.rs`: that handle — the messages the task takes, the new leases
//!   waiting for it.
//! - `lease_state.rs`: a live lease's shared state — validity, renewal schedule, the
//!   floors of late extends, the `lost()` signal.
//! - `fanout.rs`: the node fan-out every path uses — one request per node under its
//!   own time-out, decided at the first majority, the rest finishing in the background.
//! - `quorum.rs`: the pure rules — quorum, drift, the one validity computation
//!   (`valid_until`), the acquire tally and the one "held on a majority" tally
//!   (`HoldTally`) that renewal, extend and release share.
//! - `jitter.rs`: randomised timing (retry jitter, back-off, renewal spread, the
//!   pause of a refused waiter).
//! - [`AcquireOptions`] (`options.rs`): one acquire's options, and the locker's with
//!   their rules (TTL limits, the per-node request time-out).
//! - `value.rs`: lock values and waiter ids, the waiter line's ticket.
//! - `interleavings.rs` (tests only): the deterministic validity check under paused
//!   time (`docs/fencing.md`, "Validity").
//! - [`fence`] (`fence.rs`): [`FencingToken`] and the resource side of fencing.
//! - `keys.rs`: [`IntoKeys`] and key validation.
//! - `store/`: the `Store` trait — one node-level operation in one round trip — with
//!   the capabilities a store may declare (release notices, waiter lines, a health
//!   probe) and the table of URL schemes (`mod.rs`); the per-key counter and expiry
//!   rules every store follows (`rules.rs`); the implementations `redis.rs` (Lua
//!   scripts in `store/redis/*.lua`, key layout in `store/redis/layout.rs`, pub/sub
//!   release notices in `store/redis/notify.rs`), `sqlite.rs`, `memory.rs`; `url.rs`
//!   parses and redacts Redis URLs; `probe.rs` is what a node tells the start-up
//!   checks; `kit.rs` (tests only), the conformance kit every store runs, and
//!   `test_store.rs` (tests only), a store added as `docs/stores.md` says. What they
//!   write on a Redis node — keys, values, scripts, notices, the wire protocol
//!   version — is `docs/protocol.md`.
//! - `tls.rs`: TLS set-up for `rediss://` (custom CA, the loudly named insecure mode);
//!   `secret.rs`: passwords that never print.
//! - [`Error`] (`error.rs`): one opaque error with [`ErrorKind`] and `is_*()` questions.
//!
//! Nothing above `store/` knows which kind of store it talks to.
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub, missing_debug_implementations)]

mod attempt;
mod background;
mod builder;
mod checks;
mod core;
pub mod error;
mod extend;
mod fanout;
pub mod fence;
#[cfg(test)]
mod interleavings;
mod jitter;
mod keys;
mod lease;
mod lease_state;
mod locker;
mod options;
mod quorum;
mod release;
mod renew;
mod scoped;
mod secret;
mod semaphore;
mod status;
mod store;
mod tls;
mod value;
mod wait;

pub use builder::LockerBuilder;
pub use checks::{Finding, MINIMUM_ACL, NodeReport, PROBE_KEY, Report, Severity};
pub use error::{Error, ErrorKind, NodeError, NodeErrorKind, Result};
pub use fence::FencingToken;
pub use keys::IntoKeys;
pub use lease::Lease;
pub use locker::Locker;
pub use options::{
    AcquireOptions, DEFAULT_COUNTER_RETENTION, DEFAULT_MAX_TTL, MAX_COUNTER_RETENTION, MIN_TTL,
};
pub use release::ReleaseOutcome;
pub use scoped::Scoped;
pub use semaphore::{MAX_PERMITS, PERMITS_RECORD_TTL, Semaphore};
pub use status::{KeyStatus, NodeStatus};

// Entry points of the cargo-fuzz targets in `fuzz/`; not part of the API.
#[doc(hidden)]
pub use store::redis::fuzz_decode_reply;
#[doc(hidden)]
pub use store::url::fuzz_parse_store_url;

/// The crate README's examples (the crates.io page), compiled and run as doctests.
/// The README travels in the package, so the published crate's doctests build too.
/// The workspace README's examples are run by the unpublished `fencelock-chaos` crate.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
