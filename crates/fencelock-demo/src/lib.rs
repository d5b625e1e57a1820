//! # fencelock-demo
//!
//! The ledger story, told by running it: `cargo run --release -- demo` at the
//! workspace root (this crate is the workspace's default member) runs worker processes
//! that move money between the accounts of one shared ledger, in four rounds — no
//! lock, fencelock, a holder stalled past its lease with a ledger that ignores tokens,
//! and the same stall with a ledger that fences reads and writes. The binary's own
//! documentation (`src/main.rs`) tells the story; `--help` lists the options.
//!
//! The library part is the **fenced ledger** ([`ledger`]): the protected resource of
//! the demo and of the chaos suite (`fencelock-chaos`), which both use this one copy.
//!
//! Not published: a demonstration and a test resource. The published `fencelock-cli`
//! stays a small command.
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub, missing_debug_implementations)]

pub mod ledger;
