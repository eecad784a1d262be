//! Fuzz target bodies, as plain functions so that the same code runs under
//! cargo-fuzz (`tests/fuzz/`) and replays the committed corpus in a plain
//! `cargo test` on the stable toolchain (`tests/fuzz_corpus.rs`).
//!
//! Not part of the public API: hidden from the docs, no stability promise.
//! Each function panics on a broken invariant; that panic is the finding.

pub mod fastcgi;
pub mod stream;
