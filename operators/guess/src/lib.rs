//! Example operator `guess`: one analyzer of an ensemble.

use xcs_guest::Error;

/// The `xcs:examples/latency` import: the embedder must grant it.
#[allow(
    unsafe_code,
    reason = "the canonical-ABI glue that wit-bindgen generates is unsafe by nature"
)]
mod capabilities {
    xcs_guest::wit_bindgen::generate!({
        path: "wit/latency.wit",
        world: "wait-capabilities",
        runtime_path: "::xcs_guest::wit_bindgen::rt",
    });
}

/// Word number `variant` (modulo the word count) of a text, after waiting
/// `wait_ms` milliseconds on the embedder's latency capability.
#[xcs_guest::operator(deterministic)]
fn guess(text: String, variant: u32, wait_ms: u32) -> Result<String, Error> {
    if wait_ms > 0 {
        capabilities::xcs::examples::latency::sleep(wait_ms);
    }
    let words: Vec<&str> = text.split_whitespace().collect();
    if words.is_empty() {
        return Err(Error::invalid_input("no words to guess from"));
    }
    let index = usize::try_from(variant).unwrap_or(usize::MAX) % words.len();
    Ok(words[index].to_owned())
}
