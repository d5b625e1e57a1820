//! The faults, one kind per file. Each is verified to work here (as root, no
//! Docker); a fault that cannot be set up is an error that names what is missing,
//! never a silent skip.
//!
//! - `process`-level faults (SIGSTOP/SIGCONT/`kill -9`/restart of nodes and workers)
//!   live on [`crate::node::RedisNode`] and in [`crate::scenario`];
//! - [`partition`]: a node in its own network namespace, cut off with iptables inside
//!   that namespace;
//! - [`proxy`]: a userspace TCP proxy that delays, blackholes-then-releases, or resets;
//! - [`clock`]: an `LD_PRELOAD` shim that moves one node's wall clock.

pub mod clock;
pub mod partition;
pub mod proxy;
