//! Adversarial fixture `deep`: recursion without a bound.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use xcs_guest::Error;

/// A depth that is never reached. The base case keeps the compiler from
/// treating `descend` as never returning (and so from turning the call into
/// a jump); nothing is `black_box`ed inside the recursion, because that would
/// spill to the shadow stack in linear memory and fault there instead: the
/// frames must land on the wasm call stack, which the host bounds.
static NEVER: AtomicU64 = AtomicU64::new(u64::MAX);

/// Recurses until the wasm call stack overflows.
#[xcs_guest::operator]
fn deep() -> Result<u64, Error> {
    Ok(black_box(descend(black_box(0))))
}

#[inline(never)]
fn descend(depth: u64) -> u64 {
    if depth == NEVER.load(Ordering::Relaxed) {
        return depth;
    }
    // Work after the call (rotate is not an accumulator LLVM can fold into
    // a loop) keeps this from becoming a tail call.
    descend(depth + 1).rotate_left(1) ^ depth
}
