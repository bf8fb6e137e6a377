//! Adversarial fixture `panic-lean`: `panic`, built without WASI.

use xcs_guest::Error;

/// Logs far past its log budget at error level, then panics; a lean
/// component has no stderr, so the message must reach the host through
/// the SDK's panic hook, and the flood before it must not crowd it out.
#[xcs_guest::operator]
fn panic_lean() -> Result<(), Error> {
    for line in 0..5_000 {
        xcs_guest::log::error(&format!("error line {line} of a flood before the panic"));
    }
    panic!("panic fixture: this lean operator always panics")
}
