//! Adversarial fixture `flaky`: a transient failure the host can reproduce.

use xcs_guest::Error;

/// Returns `key`, or fails transiently when hash(key, WASI random) % 100 < failure-percent.
#[xcs_guest::operator]
fn flaky(key: u64, failure_percent: u8) -> Result<u64, Error> {
    // The host seeds each attempt's randomness, so the outcome is a
    // deterministic function of (input, seed), yet differs between attempts.
    let draw = wasip2::random::random::get_random_u64();
    if mix(key ^ mix(draw)) % 100 < u64::from(failure_percent) {
        return Err(Error::transient(format!(
            "flaky: simulated transient failure for key {key}"
        )));
    }
    Ok(key)
}

/// The splitmix64 finaliser: a fixed, well-spread 64-bit hash.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
