//! Example operator `wait`: an operator that needs a capability.

use xcs_guest::Error;

/// The `xcs:examples/latency` import. The embedder must grant it by name,
/// or loading the operator fails with a `capability` error.
#[allow(
    unsafe_code,
    reason = "the canonical-ABI glue that wit-bindgen generates is unsafe by nature"
)]
mod capabilities {
    xcs_guest::wit_bindgen::generate!({
        path: "wit/latency.wit",
        world: "wait-capabilities",
        runtime_path: "::xcs_guest::wit_bindgen::rt",
    });
}

/// Sleeps for `ms` milliseconds through the embedder's latency capability, then returns `ms`.
#[xcs_guest::operator]
fn wait(ms: u32) -> Result<u32, Error> {
    capabilities::xcs::examples::latency::sleep(ms);
    Ok(ms)
}
