//! The {{name}} operator, an xcs operator in Rust (written by `xcs new`).
//!
//! `#[xcs_guest::operator]` makes the function the operator's `invoke`: its
//! parameters and `Ok` type are the WIT signature, its doc comment the
//! description, the crate's name and version the metadata (the
//! function's own name is not used).

use xcs_guest::Error;

/// Upper-cases a text.
#[xcs_guest::operator(deterministic)]
fn upper(text: String) -> Result<String, Error> {
    if text.is_empty() {
        return Err(Error::new("empty", "the text is empty"));
    }
    Ok(text.to_uppercase())
}
