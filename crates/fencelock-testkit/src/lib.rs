//! # fencelock-testkit
//!
//! The one fixture for real `redis-server` processes, shared by fencelock's
//! integration tests, the CLI's tests, the chaos suite and the benchmarks. Not
//! published: the published crates name it as a path dev-dependency without a
//! version, which `cargo package` strips.
//!
//! ## Layout
//!
//! - [`process`]: [`RedisProcess`], one server we spawned and its lifecycle (start on
//!   a free loopback port, pause, resume, kill, restart empty or from its AOF, drop),
//!   with [`ProcessOptions`] for TLS, persistence, extra arguments, a network
//!   namespace or an environment. Returns errors; everything else builds on it.
//! - [`cluster`]: [`Cluster`], N independent nodes for tests (a Redlock quorum), with
//!   fault controls and helpers that read the servers' state behind the code under
//!   test's back. Panics on failure.
//! - [`redis_cluster`]: [`RedisCluster`], three primaries joined into a real Redis
//!   Cluster (`redis-cli --cluster create`), with slot moves.
//! - [`server`]: [`Server`], one server with whatever arguments a test needs (TLS,
//!   ACL users, replicas), and [`Certs`], a throw-away CA made with `openssl`.
//! - [`foreign`]: where the foreign clients of the interop tests are (`tests/interop`,
//!   the redis-py venv).
//! - [`panic_message`]: what a helper that must panic said (the fixture's own tests,
//!   and tests of other test helpers).
//!
//! The rules every server here follows (loopback only, our own PID only, cleanup on
//! drop, a clear failure when `redis-server` is missing) are in [`process`]. Nothing
//! here uses fencelock itself, so the fixture can be trusted when the library is
//! wrong.
#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations)]

pub mod cluster;
pub mod foreign;
pub mod process;
pub mod redis_cluster;
pub mod server;

pub use cluster::Cluster;
pub use process::{Error, Persistence, ProcessOptions, RedisProcess, free_port};
pub use redis_cluster::RedisCluster;
pub use server::{Certs, Server};

/// The panic message of `f`, which must panic: for tests that check a helper fails
/// clearly (the fixture's "node is paused", a checker's "mutual exclusion violated").
///
/// Panics if `f` returns normally.
pub fn panic_message(f: impl FnOnce()) -> String {
    let payload =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).expect_err("expected a panic");
    if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else {
        "<non-string panic payload>".to_owned()
    }
}
