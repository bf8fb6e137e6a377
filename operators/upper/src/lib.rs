//! Example operator `upper`.

use xcs_guest::Error;

/// Upper-cases a text.
#[xcs_guest::operator(deterministic)]
fn upper(text: String) -> Result<String, Error> {
    Ok(text.to_uppercase())
}
