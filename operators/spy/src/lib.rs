//! Test composite `spy`: it reaches for a capability, which a dry trace
//! must refuse (and say so), and a host that does not grant it must not
//! load.

use xcs_guest::Error;
use xcs_guest::compose::{self, Args, Deferred};

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

/// Upper-cases a text after sleeping `ms` through the latency capability.
#[xcs_guest::operator]
fn spy(text: String, ms: u32) -> Result<Deferred<String>, Error> {
    let loud = compose::call("upper", Args::new().arg("text", &text));
    capabilities::xcs::examples::latency::sleep(ms);
    Ok(loud)
}
