//! Adversarial fixture `hog`: a guest that wants all the memory there is.

use std::hint::black_box;
use xcs_guest::Error;

const CHUNK_BYTES: usize = 1 << 20;

/// Allocates and touches 1 MiB chunks until an allocation is refused.
#[xcs_guest::operator]
fn hog() -> Result<u64, Error> {
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    loop {
        // A non-zero fill writes every page, so the memory is really used
        // rather than merely reserved.
        let chunk = vec![0xA5_u8; CHUNK_BYTES];
        chunks.push(black_box(chunk));
        black_box(&chunks);
    }
}
