//! Benchmark operator `burn`: CPU work without memory or capabilities.

use std::hint::black_box;
use xcs_guest::Error;

/// Runs `iterations` rounds of xorshift and multiply mixing, returning the final state.
#[xcs_guest::operator(deterministic)]
fn burn(iterations: u64) -> Result<u64, Error> {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    for round in 0..iterations {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state = state
            .wrapping_mul(0x2545_f491_4f6c_dd1d)
            .wrapping_add(round);
        // `black_box` keeps the optimiser from folding the loop into a formula.
        state = black_box(state);
    }
    Ok(state)
}
