//! Example operator `sort`.

use xcs_guest::Error;

/// Sorts a list of strings (by Unicode scalar values).
#[xcs_guest::operator(deterministic)]
fn sort(mut items: Vec<String>) -> Result<Vec<String>, Error> {
    items.sort_unstable();
    Ok(items)
}
