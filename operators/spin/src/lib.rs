//! Adversarial fixture `spin`: a guest that never returns on its own.

use std::hint::black_box;
use xcs_guest::Error;

/// Loops forever, so that only the host's deadline or fuel budget can stop it.
#[xcs_guest::operator]
fn spin() -> Result<u64, Error> {
    let mut iterations = 0_u64;
    loop {
        // `black_box` keeps the optimiser from proving the loop has no effect.
        iterations = black_box(iterations.wrapping_add(1));
    }
}
