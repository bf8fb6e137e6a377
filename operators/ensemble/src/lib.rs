//! Example composite `ensemble`: fans one input out to `n` analyzers and
//! votes on their answers. It never forces a value, so it traces
//! completely: the host learns the whole graph without running anything.

use xcs_guest::Error;
use xcs_guest::compose::{self, Args, Deferred};

/// The most common of `n` guesses at a word of `text` (each waiting
/// `wait_ms` on the latency capability).
#[xcs_guest::operator(deterministic)]
fn ensemble(text: String, n: u32, wait_ms: u32) -> Result<Deferred<String>, Error> {
    let guesses: Vec<Deferred<String>> = (0..n)
        .map(|variant| {
            let args = Args::new()
                .arg("text", &text)
                .arg("variant", &variant)
                .arg("wait-ms", &wait_ms);
            compose::call("guess", args)
        })
        .collect();
    let votes = compose::gather(&guesses);
    Ok(compose::call(
        "most-common",
        Args::new().arg("votes", &votes),
    ))
}
