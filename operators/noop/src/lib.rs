//! Example operator `noop`: the smallest possible operator.

use xcs_guest::Error;

/// Takes nothing, does nothing, returns nothing.
#[xcs_guest::operator(deterministic)]
fn noop() -> Result<(), Error> {
    Ok(())
}
