//! Example composite `refine`: it forces a value and decides from it what
//! to call next, so a dry trace stops at the force, and a run is staged.

use xcs_guest::Error;
use xcs_guest::compose::{self, Args, Deferred};

/// Shouts a text of more than `threshold` words; otherwise picks its most
/// common word.
#[xcs_guest::operator(deterministic)]
fn refine(text: String, threshold: u32) -> Result<Deferred<String>, Error> {
    let count = compose::call::<u32>("word-count", Args::new().arg("text", &text));
    if count.get()? > threshold {
        Ok(compose::call("upper", Args::new().arg("text", &text)))
    } else {
        let words: Vec<String> = text.split_whitespace().map(str::to_owned).collect();
        Ok(compose::call(
            "most-common",
            Args::new().arg("votes", &words),
        ))
    }
}
