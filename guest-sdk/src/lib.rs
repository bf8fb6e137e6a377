//! Write an xcs operator as one Rust function.
//!
//! An operator is a WebAssembly component that targets the `operator` world
//! of the xcs contract (`wit/operator.wit`): it exports `metadata()` and one
//! typed entry point, `invoke`. With this crate an operator crate is one
//! function and one attribute:
//!
//! ```
//! use xcs_guest::Error;
//!
//! /// Counts the words in a text.
//! #[xcs_guest::operator(deterministic)]
//! fn word_count(text: String) -> Result<u32, Error> {
//!     let count = text.split_whitespace().count();
//!     u32::try_from(count).map_err(|_| Error::invalid_input("too many words"))
//! }
//! # fn main() {
//! #     // On the native target the function is still an ordinary function.
//! #     assert_eq!(word_count("to be or not".to_owned()), Ok(4));
//! # }
//! ```
//!
//! The crate is a `cdylib` that depends on `xcs-guest` only, built with
//! `cargo build --release --target wasm32-wasip2`; the `.wasm` file it
//! produces is the component. Its world is
//!
//! ```wit
//! world operator-implementation {
//!     include xcs:operator/operator@0.1.0;
//!     use xcs:operator/types@0.1.0.{error};
//!     export invoke: func(text: string) -> result<u32, error>;
//! }
//! ```
//!
//! and `metadata()` returns `{ name: "word-count", version: "0.1.0",
//! description: "Counts the words in a text.", deterministic: true }`.
//!
//! # The attribute
//!
//! `#[operator(...)]` takes these arguments, all optional, in any order:
//!
//! | argument | meaning | default |
//! |---|---|---|
//! | `name = "..."` | the operator's kebab-case name | the crate's package name (`_` → `-`) |
//! | `version = "..."` | semver version | the crate's package version |
//! | `description = "..."` | one line saying what it does | the first paragraph of the function's doc comment, else the package description |
//! | `deterministic`, `deterministic = true\|false` | the result depends only on the input, so the host may cache it | `false` |
//! | `types = "..."` | WIT definitions of the records, variants, enums and flags the signature uses | none |
//! | `panic_hook = false` | in a lean build, leave out the hook that carries panic messages to the host (see below) | `true` |
//!
//! Only *deterministic* operators may be cached or deduplicated by the host:
//! leave it off for anything that reads randomness, clocks or capabilities.
//!
//! # Rust and WIT types
//!
//! The signature is read as WIT. Parameter names become kebab-case
//! (`failure_percent` → `failure-percent`), and each type maps as follows:
//!
//! | Rust | WIT |
//! |---|---|
//! | `bool` | `bool` |
//! | `u8`, `u16`, `u32`, `u64` | `u8`, `u16`, `u32`, `u64` |
//! | `i8`, `i16`, `i32`, `i64` | `s8`, `s16`, `s32`, `s64` |
//! | `f32`, `f64` | `f32`, `f64` |
//! | `char` | `char` |
//! | `String` | `string` |
//! | `Vec<T>` | `list<T>` |
//! | `Option<T>` | `option<T>` |
//! | `(A, B, ...)` | `tuple<A, B, ...>` |
//! | `Result<T, E>` (inside a parameter or the `Ok` value) | `result<T, E>`, `()` → `_` |
//! | `FooBar` (declared in `types`) | `foo-bar` |
//!
//! The return type must be `Result<T, xcs_guest::Error>` (`Result<T, Error>`
//! with `Error` imported is the same); it becomes `result<T, error>`, and
//! `Result<(), Error>` becomes `result<_, error>`. Parameters and results are
//! owned values: `String`, not `&str`. References, generics, `self`,
//! `async`, `usize`, arrays and any other type are compile errors that say
//! what to write instead.
//!
//! # Records and other named types
//!
//! WIT records, variants, enums and flags are declared in WIT, in the
//! `types` argument. The bindings generated for them are brought into the
//! function's module under their UpperCamelCase names, so the function uses
//! them like any Rust type:
//!
//! ```
//! use xcs_guest::Error;
//!
//! /// Summarises a list of numbers.
//! #[xcs_guest::operator(
//!     deterministic,
//!     types = "record stats { count: u32, mean: f64, min: f64, max: f64 }"
//! )]
//! fn stats(xs: Vec<f64>) -> Result<Stats, Error> {
//!     if xs.is_empty() {
//!         return Err(Error::invalid_input("stats of an empty list"));
//!     }
//!     let count = u32::try_from(xs.len()).map_err(|_| Error::invalid_input("too many numbers"))?;
//!     let sum: f64 = xs.iter().sum();
//!     Ok(Stats {
//!         count,
//!         mean: sum / f64::from(count),
//!         min: xs.iter().copied().fold(f64::INFINITY, f64::min),
//!         max: xs.iter().copied().fold(f64::NEG_INFINITY, f64::max),
//!     })
//! }
//! # fn main() {
//! #     let summary = stats(vec![1.0, 2.0, 6.0]).unwrap();
//! #     assert_eq!((summary.count, summary.mean, summary.min, summary.max), (3, 3.0, 1.0, 6.0));
//! # }
//! ```
//!
//! A type named in the signature must be declared in `types`; names that
//! clash with the crate's own items are errors. Resources are not allowed:
//! `invoke` takes and returns plain values.
//!
//! # Errors, logs and panics
//!
//! Return an [`Error`] for a failure the operator expects: the host reports
//! it with its code and message and retries it only if it is
//! [retryable](Error::retryable). Log through the host with [`log`] and the
//! [`info!`]-style macros. A panic needs nothing from this crate: Rust's
//! default hook writes the message to stderr, which the host captures, and
//! the call fails with a `trap`.
//!
//! # Lean builds
//!
//! An operator that uses no WASI interface (no stdio, clocks, randomness,
//! environment or files) can be built for `wasm32-unknown-unknown` and made
//! a component with `wasm-tools component new`: no WASI adapter, no WASI
//! imports, a third of the core instances, so a fresh call costs less (the
//! README's benchmarks: `upper` 1.2× faster, `noop` 1.7×). On that target this crate
//! allocates from the free end of the initial memory before growing it,
//! and installs a panic hook that sends the panic message to the host's log
//! at error level, which the `trap` error quotes. The hook's import costs
//! two more core modules (a shim for the lowered `log`); an operator that
//! cannot panic can leave it out with `panic_hook = false` and be one core
//! module. Without WASI, `print!` writes nowhere: log with [`log`].
//!
//! # Capabilities
//!
//! Anything an operator imports beyond the contract is a capability the
//! embedder must grant by name. Declare one with a second, separate
//! `generate!` of a world that only imports it, through this crate's
//! re-export of [`wit_bindgen`] (so the operator needs no direct dependency):
//!
//! ```
//! mod capabilities {
//!     xcs_guest::wit_bindgen::generate!({
//!         // A real operator keeps this in a file: `path: "wit/latency.wit"`.
//!         inline: "
//!             package xcs:examples@0.1.0;
//!             interface latency { sleep: func(ms: u32); }
//!             world wait-capabilities { import latency; }
//!         ",
//!         world: "wait-capabilities",
//!         runtime_path: "::xcs_guest::wit_bindgen::rt",
//!     });
//! }
//!
//! /// Sleeps through the embedder's latency capability.
//! #[xcs_guest::operator]
//! fn wait(ms: u32) -> Result<u32, xcs_guest::Error> {
//!     capabilities::xcs::examples::latency::sleep(ms);
//!     Ok(ms)
//! }
//! # fn main() {}
//! ```
//!
//! WASI interfaces (random, clocks) are imported the usual way, e.g. with
//! the `wasip2` crate; the host virtualises them.
//!
//! # Composites
//!
//! An operator may call other operators by name through [`compose`]: each
//! call returns a [`compose::Deferred`] at once, which can be an argument
//! of further calls, forced with `get`, or returned. A function that
//! returns `Result<Deferred<T>, Error>` is a composite whose result is
//! what that call produces; its WIT result is `T`'s. See [`compose`].
//!
//! # What the attribute generates
//!
//! The function stays as written. Beside it, a private module calls
//! `wit_bindgen::generate!` once, on `wit/operator.wit` (embedded in the
//! macro when it is compiled, so the contract has one source) plus the
//! operator's world; implements the generated `Guest` trait (`metadata()`
//! from the arguments, `invoke` calling the function and converting
//! [`Error`]); and exports it. The component's only exports are `metadata`
//! and `invoke`. One crate holds one operator.

#![deny(missing_docs)]

pub mod compose;
mod error;
pub mod log;

pub use error::Error;
pub use log::Level;
pub use xcs_guest_macros::operator;

#[cfg(all(
    target_arch = "wasm32",
    target_os = "unknown",
    not(target_feature = "atomics")
))]
mod alloc;

/// Lean builds (`wasm32-unknown-unknown`, no WASI) allocate from the free
/// end of the initial memory before growing it (see `alloc.rs`).
#[cfg(all(
    target_arch = "wasm32",
    target_os = "unknown",
    not(target_feature = "atomics")
))]
#[global_allocator]
static ALLOCATOR: alloc::Lean = alloc::Lean::new();

/// The `wit-bindgen` runtime and `generate!` macro that `#[operator]` uses,
/// re-exported for declaring capability imports (see the crate docs).
pub use wit_bindgen;

/// Items that the code generated by `#[operator]` refers to. Not public API.
#[doc(hidden)]
pub mod __private {
    /// The code, message and retryable flag of `error`.
    pub fn into_parts(error: crate::Error) -> (String, String, bool) {
        error.into_parts()
    }

    /// Runs first in every export of an `#[operator]`. In a lean component
    /// (built for `wasm32-unknown-unknown`, no WASI) there is no stderr for
    /// Rust's default panic hook to write to: a hook that sends the panic
    /// message to the host's log at error level takes its place, and the
    /// host quotes it in the `trap` error as it quotes stderr. Elsewhere
    /// this does nothing.
    #[inline]
    pub fn enter() {
        #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
        {
            static HOOKED: std::sync::Once = std::sync::Once::new();
            HOOKED.call_once(|| {
                std::panic::set_hook(Box::new(|info| {
                    crate::log::error(&format!("{info}"));
                }));
            });
        }
    }
}

/// Signatures that `#[operator]` must reject, checked as doc tests.
///
/// ```compile_fail
/// #[xcs_guest::operator]
/// fn borrowed(text: &str) -> Result<u32, xcs_guest::Error> { Ok(0) }
/// # fn main() {}
/// ```
///
/// ```compile_fail
/// #[xcs_guest::operator]
/// fn wrong_error(text: String) -> Result<u32, String> { Ok(0) }
/// # fn main() {}
/// ```
///
/// ```compile_fail
/// #[xcs_guest::operator]
/// fn no_result(text: String) -> u32 { 0 }
/// # fn main() {}
/// ```
///
/// ```compile_fail
/// #[xcs_guest::operator]
/// fn generic<T>(value: T) -> Result<u32, xcs_guest::Error> { Ok(0) }
/// # fn main() {}
/// ```
///
/// ```compile_fail
/// #[xcs_guest::operator]
/// fn pointer_sized(len: usize) -> Result<u32, xcs_guest::Error> { Ok(0) }
/// # fn main() {}
/// ```
///
/// ```compile_fail
/// #[xcs_guest::operator]
/// async fn later() -> Result<u32, xcs_guest::Error> { Ok(0) }
/// # fn main() {}
/// ```
///
/// ```compile_fail
/// #[xcs_guest::operator]
/// fn undeclared(point: Point) -> Result<u32, xcs_guest::Error> { Ok(0) }
/// # fn main() {}
/// ```
///
/// ```compile_fail
/// #[xcs_guest::operator(colour = "blue")]
/// fn unknown_argument() -> Result<u32, xcs_guest::Error> { Ok(0) }
/// # fn main() {}
/// ```
///
/// ```compile_fail
/// #[xcs_guest::operator(types = "record point { x: u32")]
/// fn bad_wit(point: Point) -> Result<u32, xcs_guest::Error> { Ok(point.x) }
/// # fn main() {}
/// ```
#[cfg(doctest)]
struct CompileErrors;
