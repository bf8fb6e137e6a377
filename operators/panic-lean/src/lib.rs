//! Adversarial fixture `panic-lean`: `panic`, built without WASI.

use xcs_guest::Error;

/// Always panics; a lean component has no stderr, so the message must
/// reach the host through the SDK's panic hook.
#[xcs_guest::operator]
fn panic_lean() -> Result<(), Error> {
    panic!("panic fixture: this lean operator always panics")
}
