//! The value codec: arbitrary JSON against a signature with every WIT type
//! family.
//!
//! Property: a call never panics, and since the guest ignores its input and
//! returns `ok`, every outcome is either `null` (the input was a valid value
//! and was lowered into the guest) or a `validation` error.

#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use xcs::{ErrorKind, Operator};

/// `invoke(all: all) -> result<_, error>`, `all` a record with a field of
/// every WIT value type family (shared with the integration tests).
const EVERY_FAMILY_WAT: &str = include_str!("../../tests/wat/every-family.wat");

static EVERY_FAMILY: LazyLock<Operator> = LazyLock::new(|| {
    let wasm = wat::parse_str(EVERY_FAMILY_WAT).expect("the fixture is valid WAT");
    xcs_fuzz::block_on(xcs_fuzz::host().load_bytes(wasm, "every_family.wasm"))
        .expect("the fixture loads")
});

fuzz_target!(|data: &[u8]| {
    let Ok(input) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let operator = &*EVERY_FAMILY;
    match xcs_fuzz::block_on(operator.call(&input, &xcs_fuzz::limits())) {
        Ok(output) => {
            xcs_fuzz::trace("call", &output);
            assert_eq!(output, Value::Null, "the guest returns ok with no payload");
        }
        Err(error) => xcs_fuzz::check_error("call", &error, |kind| kind == ErrorKind::Validation),
    }
});
