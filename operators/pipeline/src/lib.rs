//! Example composite `pipeline`: `examples/pipeline.toml`'s shape as code,
//! a chain (sort) feeding a fan-out (word counts, one call per document)
//! feeding a join (statistics).

use xcs_guest::Error;
use xcs_guest::compose::{self, Args, Deferred};

/// Statistics of the word counts of `documents`.
#[xcs_guest::operator(
    deterministic,
    types = "record stats { count: u32, mean: f64, min: f64, max: f64 }"
)]
fn pipeline(documents: Vec<String>) -> Result<Deferred<Stats>, Error> {
    let sorted = compose::call::<Vec<String>>("sort", Args::new().arg("items", &documents));
    let counts = compose::map::<u32>("word-count", "text", Args::new().arg("text", &sorted));
    Ok(compose::call("stats", Args::new().arg("xs", &counts)))
}
