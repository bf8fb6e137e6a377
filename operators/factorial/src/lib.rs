//! Example operator `factorial`.

use xcs_guest::Error;

/// n!, computed recursively; fails with `invalid-input` when it overflows a u64.
#[xcs_guest::operator(deterministic)]
fn factorial(n: u64) -> Result<u64, Error> {
    recursive_factorial(n)
        .ok_or_else(|| Error::invalid_input(format!("{n}! overflows a 64-bit integer")))
}

/// Recursive on purpose: the host's tests use it as a well-behaved
/// recursive workload, next to the `deep` fixture that never stops.
fn recursive_factorial(n: u64) -> Option<u64> {
    if n <= 1 {
        Some(1)
    } else {
        recursive_factorial(n - 1)?.checked_mul(n)
    }
}
