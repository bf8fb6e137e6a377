//! Test composite `hoard`: hostile ways to make the host keep things while
//! it records, each of which the host must refuse with an `analysis`
//! error, staying healthy.

use serde_json::Value;
use xcs_guest::Error;
use xcs_guest::compose::{self, Args};

/// Tries `mode`: `double` (gathers of gathers, doubling 40 times), `nest`
/// (gathers nested 100,000 deep), `calls` (calls without end), `handles`
/// (deferreds without end), `bytes` (1 MiB arguments without end).
#[xcs_guest::operator]
fn hoard(mode: String) -> Result<u32, Error> {
    let seed =
        || compose::call::<u32>("word-count", Args::new().arg("text", "seed")).cast::<Value>();
    match mode.as_str() {
        "double" => {
            let mut hoard = seed();
            for _ in 0..40 {
                hoard = compose::gather_each([&hoard, &hoard]).cast();
            }
        }
        "nest" => {
            let mut hoard = seed();
            for _ in 0..100_000 {
                hoard = compose::gather_each([&hoard]).cast();
            }
        }
        "calls" => {
            for n in 0u64.. {
                let text = n.to_string();
                compose::call::<u32>("word-count", Args::new().arg("text", &text));
            }
        }
        "handles" => {
            let seed = seed();
            let mut kept = Vec::new();
            for _ in 0..10_000_000 {
                kept.push(compose::gather_each([&seed]));
            }
        }
        "bytes" => {
            let big = "x".repeat(1 << 20);
            for n in 0..1_000u32 {
                let text = format!("{n} {big}");
                compose::call::<u32>("word-count", Args::new().arg("text", &text));
            }
        }
        _ => return Err(Error::invalid_input(format!("no mode `{mode}`"))),
    }
    Ok(0)
}
