//! Logging through the host's `log` import.
//!
//! Messages go to the host, which tags them with the operator's name and
//! forwards them to its own logs. The host bounds how much one call may log:
//! past its budget, messages are counted and dropped, so logging never
//! blocks and never fails.
//!
//! ```
//! xcs_guest::log::info("starting");
//! let count = 3;
//! xcs_guest::debug!("counted {count} words");
//! ```
//!
//! Outside WebAssembly (in native unit tests and doc tests) messages are
//! written to stderr instead.

/// Severity of a log message; the WIT enum `level`, in the same order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Very detailed tracing.
    Trace,
    /// Diagnostics for developers.
    Debug,
    /// Normal progress.
    Info,
    /// Something unexpected that the operator recovered from.
    Warn,
    /// A failure.
    Error,
}

/// Sends `message` to the host at `level`.
pub fn log(level: Level, message: &str) {
    imp::log(level, message);
}

/// Logs at [`Level::Trace`].
pub fn trace(message: &str) {
    log(Level::Trace, message);
}

/// Logs at [`Level::Debug`].
pub fn debug(message: &str) {
    log(Level::Debug, message);
}

/// Logs at [`Level::Info`].
pub fn info(message: &str) {
    log(Level::Info, message);
}

/// Logs at [`Level::Warn`].
pub fn warn(message: &str) {
    log(Level::Warn, message);
}

/// Logs at [`Level::Error`].
pub fn error(message: &str) {
    log(Level::Error, message);
}

#[cfg(target_arch = "wasm32")]
mod imp {
    #![allow(
        unsafe_code,
        reason = "calling a core-wasm import is an FFI call; this is the SDK's one raw import"
    )]

    use super::Level;

    // The lowered form of `xcs:operator/host@0.1.0#log` under the canonical
    // ABI: the enum's discriminant, then the string as (pointer, length)
    // into this module's memory. wit-component matches this core import to
    // the `host` interface of the `operator` world, whose description the
    // `#[operator]` expansion embeds in the same binary.
    #[link(wasm_import_module = "xcs:operator/host@0.1.0")]
    unsafe extern "C" {
        #[link_name = "log"]
        fn host_log(level: i32, message_ptr: *const u8, message_len: usize);
    }

    pub(super) fn log(level: Level, message: &str) {
        // SAFETY: the pointer and length describe a live, valid UTF-8 string
        // in linear memory for the whole call; the host copies it out and
        // keeps no reference. The discriminant is in range by construction.
        unsafe { host_log(level as i32, message.as_ptr(), message.len()) }
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod imp {
    use super::Level;

    pub(super) fn log(level: Level, message: &str) {
        eprintln!("[{level:?}] {message}");
    }
}

/// Logs a `format!`-style message at [`Level::Trace`].
#[macro_export]
macro_rules! trace {
    ($($arg:tt)+) => { $crate::log::trace(&::std::format!($($arg)+)) };
}

/// Logs a `format!`-style message at [`Level::Debug`].
#[macro_export]
macro_rules! debug {
    ($($arg:tt)+) => { $crate::log::debug(&::std::format!($($arg)+)) };
}

/// Logs a `format!`-style message at [`Level::Info`].
#[macro_export]
macro_rules! info {
    ($($arg:tt)+) => { $crate::log::info(&::std::format!($($arg)+)) };
}

/// Logs a `format!`-style message at [`Level::Warn`].
#[macro_export]
macro_rules! warn {
    ($($arg:tt)+) => { $crate::log::warn(&::std::format!($($arg)+)) };
}

/// Logs a `format!`-style message at [`Level::Error`].
#[macro_export]
macro_rules! error {
    ($($arg:tt)+) => { $crate::log::error(&::std::format!($($arg)+)) };
}
