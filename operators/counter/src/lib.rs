//! Adversarial fixture `counter`: proves that no state survives a call.

use std::sync::atomic::{AtomicU32, Ordering};
use xcs_guest::Error;

static CALLS: AtomicU32 = AtomicU32::new(0);

/// Increments a global counter and returns it; a fresh instance per call always returns 1.
#[xcs_guest::operator]
fn counter() -> Result<u32, Error> {
    Ok(CALLS.fetch_add(1, Ordering::Relaxed) + 1)
}
