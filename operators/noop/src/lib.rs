//! Example operator `noop`: the smallest possible operator.
//!
//! Built lean (see its `Cargo.toml`) and without the SDK's panic hook,
//! which a function that cannot panic does not need: the component is one
//! core module with no imports to lower, the cheapest shape to instantiate.

use xcs_guest::Error;

/// Takes nothing, does nothing, returns nothing.
#[xcs_guest::operator(deterministic, panic_hook = false)]
fn noop() -> Result<(), Error> {
    Ok(())
}
