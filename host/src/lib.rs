//! Run untrusted WebAssembly operators under hard limits.
//!
//! An *operator* is a WebAssembly component that targets the `operator`
//! world of the `xcs:operator` WIT package (see `wit/operator.wit`): it
//! exports `metadata()` and one typed `invoke` function whose result is
//! `result<T, error>`. Write one in Rust with the `xcs-guest` crate, or in
//! any language that builds components.
//!
//! A [`Host`] loads operators and runs each call in a fresh, isolated
//! sandbox: no state survives between calls, nothing outside is reachable
//! unless the embedder grants it as a [`Capability`], clocks and randomness
//! are virtual and seeded, and every call has a wall-clock deadline, an
//! optional fuel budget and a memory cap ([`Limits`]). Every failure is an
//! [`Error`] with a stable [`ErrorKind`]; nothing a guest does can panic the
//! host.
//!
//! ```
//! use std::time::Duration;
//! use serde_json::json;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let double_wasm = wat::parse_str(xcs::__doc_fixture::DOUBLE_WAT)?;
//! let host = xcs::Host::builder().build()?;
//! // `double_wasm` holds the bytes of a component, e.g. read from a `.wasm` file
//! // (`host.load(path)` does that for you).
//! let double = host.load_bytes(double_wasm, "double.wasm").await?;
//! assert_eq!(double.metadata().name, "double");
//! assert_eq!(double.signature().to_string(), "func(x: u32) -> result<u32, error>");
//!
//! let limits = xcs::Limits::default().timeout(Duration::from_millis(500));
//! assert_eq!(double.call(&json!({ "x": 21 }), &limits).await?, json!(42));
//!
//! // Inputs are checked against the signature before any guest code runs.
//! let error = double.call(&json!({ "x": "21" }), &limits).await.unwrap_err();
//! assert_eq!(error.kind(), xcs::ErrorKind::Validation);
//! assert_eq!(error.to_string(), r#"double: $.x: expected u32, found string "21""#);
//!
//! // Rust embedders can call with typed values.
//! let doubled: u32 = double.call_typed(&(4u32,), &limits).await?;
//! assert_eq!(doubled, 8);
//! # Ok(())
//! # }
//! ```

#![deny(missing_docs)]

// Layers, bottom up (see DESIGN.md; `tests/all/layers.rs` checks that every
// `use crate::` points down this list):
// vocabulary
mod error;
mod grants;
mod limits;
mod types;
// mechanisms
mod codec;
mod disk_cache;
mod metrics;
pub mod policy;
mod slots;
mod turns;
// store, capability, runtime, sandbox
mod capability;
mod runtime;
mod sandbox;
mod store;
// operator, call
mod call;
mod operator;
// graph
pub mod graph;
// façade
mod host;

pub use capability::{Capability, CapabilityParams, CapabilityResults};
pub use disk_cache::CACHE_KEY_FILE_ENV;
pub use error::{BoxError, Error, ErrorKind, SharedError};
pub use grants::{
    DEFAULT_HTTP_TIMEOUT, DEFAULT_MAX_REQUESTS, DEFAULT_MAX_RESPONSE_BYTES, Grants, GrantsTable,
    HttpGrant,
};
pub use host::{CACHE_DIR_ENV, Host, HostBuilder};
pub use limits::{DEFAULT_SEED, Limits, LoadLimits, MAX_DURATION, parse_size};
pub use metrics::{MetricsSnapshot, OperatorMetrics};
pub use operator::{CallOutput, Metadata, Operator};
pub use runtime::MemoryReset;
pub use sandbox::CallStats;
pub use store::{LogLevel, LogRecord};
pub use types::{
    MAX_OPERATOR_NAME_BYTES, Param, Signature, TypeDefinition, WIT_KEYWORDS, WitType,
    is_operator_name,
};

#[doc(hidden)]
pub mod __doc_fixture {
    //! Hand-written components for the crate's doc example, and the WAT
    //! pieces the workspace's tests and fuzz targets build theirs from.

    /// The contract's types (`metadata`, `error`), imported the way
    /// wit-bindgen components do; a fragment of a `(component ...)`.
    macro_rules! types_import {
        () => {
            r#"
  (import "xcs:operator/types@0.1.0" (instance $types
    (type $metadata (record (field "name" string) (field "version" string)
                            (field "description" string) (field "deterministic" bool)))
    (export "metadata" (type (eq $metadata)))
    (type $error (record (field "code" string) (field "message" string) (field "retryable" bool)))
    (export "error" (type (eq $error)))))
  (alias export $types "metadata" (type $metadata))
  (alias export $types "error" (type $error))
"#
        };
    }

    /// `types_import!()` as a constant, for fixtures built with `format!`.
    pub const TYPES_IMPORT: &str = types_import!();

    /// `double(x: u32) -> result<u32, error>`, with metadata.
    pub const DOUBLE_WAT: &str = concat!(
        "(component",
        types_import!(),
        r#"  (core module $m
    (memory (export "memory") 1)
    (data (i32.const 16) "double")
    (data (i32.const 32) "0.1.0")
    (data (i32.const 48) "Doubles numbers.")
    (func (export "metadata") (result i32)
      (i32.store (i32.const 64) (i32.const 16)) (i32.store (i32.const 68) (i32.const 6))
      (i32.store (i32.const 72) (i32.const 32)) (i32.store (i32.const 76) (i32.const 5))
      (i32.store (i32.const 80) (i32.const 48)) (i32.store (i32.const 84) (i32.const 16))
      (i32.store8 (i32.const 88) (i32.const 1))
      (i32.const 64))
    (func (export "invoke") (param i32) (result i32)
      (i32.store8 (i32.const 128) (i32.const 0))
      (i32.store (i32.const 132) (i32.mul (local.get 0) (i32.const 2)))
      (i32.const 128))
    (func (export "realloc") (param i32 i32 i32 i32) (result i32) unreachable))
  (core instance $i (instantiate $m))
  (func (export "metadata") (result $metadata)
    (canon lift (core func $i "metadata") (memory (core memory $i "memory")) (realloc (core func $i "realloc"))))
  (func (export "invoke") (param "x" u32) (result (result u32 (error $error)))
    (canon lift (core func $i "invoke") (memory (core memory $i "memory")) (realloc (core func $i "realloc")))))
"#
    );
}
