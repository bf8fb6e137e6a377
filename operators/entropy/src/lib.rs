//! Adversarial fixture `entropy`: everything a sandbox must virtualise.

use std::time::{SystemTime, UNIX_EPOCH};
use xcs_guest::Error;

/// Returns 16 random bytes and the wall-clock and monotonic-clock readings, all from WASI.
#[xcs_guest::operator(
    types = "record entropy-sample { random: list<u8>, wall-clock-ns: u64, monotonic-ns: u64 }"
)]
fn entropy() -> Result<EntropySample, Error> {
    let wall_clock_ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|_| Error::internal("the wall clock is before 1970"))?
        .as_nanos();
    Ok(EntropySample {
        random: wasip2::random::random::get_random_bytes(16),
        wall_clock_ns: u64::try_from(wall_clock_ns)
            .map_err(|_| Error::internal("the wall clock is past the year 2554"))?,
        monotonic_ns: wasip2::clocks::monotonic_clock::now(),
    })
}
