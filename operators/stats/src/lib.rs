//! Example operator `stats`: shows a record result declared with `types`.

use xcs_guest::Error;

/// Count, mean, minimum and maximum of a non-empty list of numbers.
#[xcs_guest::operator(
    deterministic,
    types = "record stats { count: u32, mean: f64, min: f64, max: f64 }"
)]
fn stats(xs: Vec<f64>) -> Result<Stats, Error> {
    if xs.is_empty() {
        return Err(Error::invalid_input("stats of an empty list"));
    }
    let count =
        u32::try_from(xs.len()).map_err(|_| Error::invalid_input("more than u32::MAX numbers"))?;
    let sum: f64 = xs.iter().sum();
    Ok(Stats {
        count,
        mean: sum / f64::from(count),
        min: xs.iter().copied().fold(f64::INFINITY, f64::min),
        max: xs.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    })
}
