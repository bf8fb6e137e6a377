//! Test operator `quitter`: exits the process (WASI `exit`) instead of
//! returning from `invoke`; the host reports what happened.

use xcs_guest::Error;

/// Calls `exit(code)`.
#[xcs_guest::operator]
fn quitter(code: u8) -> Result<u32, Error> {
    std::process::exit(i32::from(code))
}
