//! Shared support for fencelock's integration tests.
//!
//! Every test file pulls this in with `mod support;`. It provides:
//!
//! - [`cluster::Cluster`]: real `redis-server` processes on loopback with fault
//!   injection (kill, pause, resume, restart) and synchronous helpers that read the
//!   servers' state behind the library's back;
//! - [`interop`]: the `redlock` npm client used by the wire-compatibility tests and
//!   a checker for the critical-section logs both clients write.
//!
//! Nothing here uses fencelock itself, so the fixture can be trusted when the
//! library is wrong.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

pub mod cluster;
pub mod interop;

pub use cluster::Cluster;
