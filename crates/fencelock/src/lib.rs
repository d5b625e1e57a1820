//! fencelock (skeleton in progress; see DESIGN.md)
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub, missing_debug_implementations)]

pub mod error;
pub(crate) mod quorum;
pub(crate) mod store;

pub use error::{Error, ErrorKind, NodeError, NodeErrorKind, Result};
