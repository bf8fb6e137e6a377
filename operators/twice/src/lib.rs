//! Test composite `twice`: makes the same calls twice, to a deterministic
//! operator (`guess`, which the host merges into one call) and to a
//! non-deterministic one (`wait`, which it never merges).

use xcs_guest::Error;
use xcs_guest::compose::{self, Args, Deferred};

/// Calls `guess` twice and `wait` twice, each pair with equal arguments;
/// the two waits' results.
#[xcs_guest::operator]
fn twice(ms: u32) -> Result<Deferred<Vec<u32>>, Error> {
    let guess = || {
        let args = Args::new()
            .arg("text", "one two")
            .arg("variant", &1u32)
            .arg("wait-ms", &ms);
        compose::call::<String>("guess", args)
    };
    let (_first, _second) = (guess(), guess());
    let waits = [
        compose::call::<u32>("wait", Args::new().arg("ms", &ms)),
        compose::call::<u32>("wait", Args::new().arg("ms", &ms)),
    ];
    Ok(compose::gather(&waits))
}
