//! Example operator `word-count`.

use xcs_guest::Error;

/// Counts the whitespace-separated words in a text.
#[xcs_guest::operator(deterministic)]
fn word_count(text: String) -> Result<u32, Error> {
    let words = text.split_whitespace().count();
    u32::try_from(words).map_err(|_| Error::invalid_input("more than u32::MAX words"))
}
