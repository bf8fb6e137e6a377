//! Example operator `sum`.

use xcs_guest::Error;

/// Sums a list of integers; fails with `invalid-input` on overflow.
#[xcs_guest::operator(deterministic)]
fn sum(xs: Vec<i64>) -> Result<i64, Error> {
    xs.iter().try_fold(0_i64, |total, &x| {
        total
            .checked_add(x)
            .ok_or_else(|| Error::invalid_input("the sum overflows a 64-bit integer"))
    })
}
