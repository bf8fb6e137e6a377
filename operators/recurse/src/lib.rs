//! Example composite `recurse`: it calls itself with a smaller input, so
//! deep inputs meet the host's bound on nesting (`max_depth`).

use xcs_guest::Error;
use xcs_guest::compose::{self, Args, Deferred};

/// Calls itself `depth` times, then counts the words of an empty text (0).
#[xcs_guest::operator(deterministic)]
fn recurse(depth: u32) -> Result<Deferred<u32>, Error> {
    if depth == 0 {
        return Ok(compose::call("word-count", Args::new().arg("text", "")));
    }
    Ok(compose::call(
        "recurse",
        Args::new().arg("depth", &(depth - 1)),
    ))
}
