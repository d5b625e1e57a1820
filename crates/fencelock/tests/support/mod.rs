//! Shared support for fencelock's integration tests.
//!
//! Every test file pulls this in with `mod support;`. It provides:
//!
//! - [`cluster::Cluster`]: real `redis-server` processes on loopback with fault
//!   injection (kill, pause, resume, restart) and synchronous helpers that read the
//!   servers' state behind the library's back;
//! - [`redis_cluster::RedisCluster`]: a real Redis Cluster of three primaries;
//! - [`interop`]: the `redlock` npm client used by the wire-compatibility tests and
//!   a checker for the critical-section logs both clients write.
//!
//! The first two are the workspace's one redis-server fixture, crates/fencelock-testkit
//! (also home of the TLS `Server` and `Certs` of the hardening tests), re-exported
//! under the paths the tests have always used.
//!
//! Nothing here uses fencelock itself, so the fixture can be trusted when the
//! library is wrong.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

pub mod interop;

/// The fixture's independent nodes, under the path the tests have always used.
pub mod cluster {
    #[allow(unused_imports)]
    pub use fencelock_testkit::Cluster;
}

/// The fixture's Redis Cluster, under the path the tests have always used.
pub mod redis_cluster {
    #[allow(unused_imports)]
    pub use fencelock_testkit::RedisCluster;
}

#[allow(unused_imports)]
pub use cluster::Cluster;

/// Polls `check` every 10 ms until it holds, for at most 10 s: for what the library
/// finishes in the background (an operation decides at the first majority; the last
/// node's answer may still be on its way). Asserts the outcome, not how fast it came.
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}
