//! Adversarial fixture `panic`.

use xcs_guest::Error;

/// Always panics; the host must report a guest panic, not crash.
#[xcs_guest::operator]
fn panic() -> Result<(), Error> {
    panic!("panic fixture: this operator always panics")
}
