//! Paths of the operator components built for the tests and benchmarks.
//!
//! `build.rs` builds every crate under `operators/` for wasm32-wasip2 and
//! generates one constant per operator (`UPPER`, `WORD_COUNT`, ...) and the
//! `foreach_operator!` macro.

include!(concat!(env!("OUT_DIR"), "/operators.rs"));
