//! # fencelock-chaos
//!
//! Faults on purpose. Runs W worker **processes** (this crate's binary re-invoked in
//! worker mode) that take a fencelock lease over and over on N real `redis-server`
//! nodes and do a read-modify-write on a protected resource under each lease, injects
//! faults on a schedule, records a history, and checks it.
//!
//! The point is not to show that nothing breaks — it is to show that the checker
//! *sees* breakage when it must (negative controls: a node restarted empty under the
//! holder's quorum, a holder paused past its TTL, a node clock jumped forward), and
//! that with fencing the resource still refuses every stale write in exactly those
//! runs. See `docs/reliability.md` for the table and the guarantees.
//!
//! ## Layout
//!
//! - [`scenario`]: scenarios (cluster, workload, fault schedule, expectations) and
//!   the runner.
//! - [`workload`]: the worker process — acquire, read, think, write, release.
//! - [`resource`]: the protected resource, fenced and unfenced copies side by side,
//!   logging every operation in its own order; each copy is the workspace's one fenced
//!   ledger (`fencelock_demo::ledger`, shared with the demo).
//! - [`history`]: the recorded events and their files.
//! - [`checker`]: the properties and their counter-examples.
//! - [`node`]: a `redis-server` process we own (pause, crash, restart), on the
//!   workspace's one fixture, `fencelock-testkit`.
//! - [`faults`]: network namespaces + iptables, the TCP proxy, the clock shim.
//! - [`report`]: the scenario table.
//! - [`clock`]: `CLOCK_MONOTONIC`, the one clock all processes agree on.
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub, missing_debug_implementations)]

pub mod checker;
pub mod clock;
pub mod faults;
pub mod history;
pub mod node;
pub mod report;
pub mod resource;
pub mod scenario;
pub mod workload;

/// The workspace README's examples, compiled and run as doctests. They live here, in
/// an unpublished crate, because that README is not inside any published package
/// (`fencelock`'s doctests run its own README, which is).
#[doc = include_str!("../../../README.md")]
#[cfg(doctest)]
pub struct WorkspaceReadmeDoctests;

/// `docs/semaphore.md`'s examples, compiled and run as doctests (here for the same
/// reason as the README's: `docs/` is in no published package).
#[doc = include_str!("../../../docs/semaphore.md")]
#[cfg(doctest)]
pub struct SemaphoreDocDoctests;
